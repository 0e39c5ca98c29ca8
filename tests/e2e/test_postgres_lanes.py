"""The message lanes of the PostgreSQL store (src/store/pg_lanes.c, pg_lane_txn.c): chat messages
commit on their own connections, each with its thread. A lane whose session the server ended
(pg_terminate_backend) before a transaction's COMMIT ran connects again at once and sends it again
(nothing of it was applied), so no message is refused; one that cannot reconnect answers 503
(nothing acknowledged is lost), its sessions move to a lane that is up, and it reconnects by
itself; a session's seqs stay 1..n throughout."""

import signal
import threading
import time

import httpx
import pytest

from e2e_util import history, post_message, wait_terminal, wait_until
from servers import PostgresServer

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def pg():
    server = PostgresServer(fsync=True)
    yield server
    server.close()


def crash_postgres(pg, srv, down_s):
    """Stops PostgreSQL at once (immediate shutdown: no checkpoint, recovery from the WAL), keeps
    it down for down_s, starts it again and waits until srv's /v1/health says 200."""
    pg.proc.send_signal(signal.SIGQUIT)
    pg.proc.wait(timeout=15)
    time.sleep(down_s)
    pg.start()
    wait_until(lambda: httpx.get(srv.url + "/v1/health", timeout=5).status_code == 200, 20,
               what="/v1/health to recover after PostgreSQL came back")


def kill_lanes(pg, dbname):
    """Terminates every message lane's session; returns how many."""
    conn = pg.connect(dbname)
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'somaagent message lane' AND datname = current_database()")
        return cur.fetchone()[0]
    finally:
        conn.close()


def test_message_lanes_ended_under_load_take_every_message_and_heal(pg, soma):
    """Four clients post while every lane's session is ended three times: each message is answered
    200 (the lane sends a transaction the end aborted again on a new session), none is lost, seqs
    stay 1..n and both lanes are back. Before, the messages a lane held when it met the end were
    answered 503."""
    db = pg.new_database("lanes")
    srv = soma(f"store.url={db}", "store.message_connections=2", role="gateway")
    sids = [post_message(srv, f"open {i}")["session_id"] for i in range(6)]
    acked, refused, errors = [], [], []
    stop = threading.Event()

    def load(k):
        with httpx.Client(timeout=10) as c:
            n = 0
            while not stop.is_set():
                n += 1
                text = f"w{k} m{n}"
                try:
                    r = c.post(srv.url + "/v1/session/message", json={"session_id": sids[n % 6], "message": text})
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                    continue
                if r.status_code == 200:
                    acked.append((text, r.json()["event_id"], r.json()["session_id"]))
                elif r.status_code == 503:
                    assert r.headers.get("Retry-After"), r.headers
                    refused.append(text)
                else:
                    errors.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 30, 15, what="acknowledged messages before the lanes are cut")
        killed = 0
        for _ in range(3):  # each time while messages are in flight: the lanes find out on their next send
            killed += kill_lanes(pg, "lanes")
            before = len(acked)
            wait_until(lambda: len(acked) >= before + 20, 15, what="messages acknowledged after the lanes were cut")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
    assert killed >= 3, killed
    assert not errors, errors[:5]
    assert not refused, f"{len(refused)} message(s) answered 503: {refused[:5]}"
    # both lanes are back (the one that had no traffic reconnects by itself too)
    conn = pg.connect("lanes")
    # each check its own transaction: within one, PostgreSQL answers pg_stat_activity from the
    # snapshot of its first read, so a lane that reconnected after that read was never seen
    conn.autocommit = True
    try:
        cur = conn.cursor()
        def lanes_up():
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'somaagent message lane'")
            return cur.fetchone()[0] == 2

        wait_until(lanes_up, 15, what="both message lanes to reconnect")
        for sid in sids:
            cur.execute("SELECT count(*), count(DISTINCT seq), max(seq) FROM events WHERE session_id = %s", (sid,))
            count, distinct, top = cur.fetchone()
            assert count == distinct == top, (sid, count, distinct, top)  # seq 1..n: no gap, no repeat
        cur.execute("SELECT event_id, body::json->>'message' FROM events")
        stored = dict(cur.fetchall())
    finally:
        conn.close()
    missing = [(m, e) for m, e, _ in acked if stored.get(e) != m]
    assert not missing, f"{len(missing)} acknowledged message(s) lost: {missing[:5]}"
    last, _, sid = acked[-1]
    assert any(e.get("message") == last for e in history(srv, sid, limit=500))


def test_idle_lanes_whose_sessions_were_ended_reconnect_by_themselves(pg, soma):
    """An idle lane reads its session now and then (src/store/pg_lanes.c, lane_wait_idle): when
    the server ended it, the lane reconnects without waiting for a message, so no request meets the
    lost session (a 503). Before, an idle lane learned only from its next message."""
    db = pg.new_database("idle")
    srv = soma(f"store.url={db}", "store.message_connections=2", role="gateway")
    post_message(srv, "before")
    conn = pg.connect("idle")
    conn.autocommit = True
    try:
        cur = conn.cursor()

        def lanes():
            cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'somaagent message lane' "
                        "AND datname = current_database()")
            return {r[0] for r in cur.fetchall()}

        wait_until(lambda: len(lanes()) == 2, 15, what="both message lanes connected")
        old = lanes()
        assert kill_lanes(pg, "idle") == 2
        wait_until(lambda: len(lanes()) == 2 and not (lanes() & old), 15,
                   what="both idle lanes to reconnect with no message sent")
    finally:
        conn.close()
    for i in range(4):  # and every message is taken: none meets a lost session
        r = httpx.post(srv.url + "/v1/session/message", json={"message": f"after {i}"}, timeout=10)
        assert r.status_code == 200, r.text


def test_a_message_that_meets_a_session_the_server_just_ended_is_sent_again_on_a_new_one(pg, soma):
    """A message sent on a lane whose session the server has just ended (pg_terminate_backend),
    before the lane's idle read saw it, meets the end: PostgreSQL answers its pipeline with 57P01
    or the socket is closed under it. Nothing of it was applied, so the lane connects again and
    sends it at once (src/store/pg_lanes.c, group_run): each message is answered 200 with the next
    seq, and the log says the lane sends its messages again (before, that requests answer 503). Before, it was answered 503 (the idle read runs once a second; the flake of the idle test
    above: a lane still connected in pg_stat_activity's view took a message after its end)."""
    db = pg.new_database("resend")
    srv = soma(f"store.url={db}", "store.message_connections=2", role="gateway")
    sid = post_message(srv, "open")["session_id"]
    with httpx.Client(timeout=10) as c:
        for i in range(12):
            assert kill_lanes(pg, "resend") >= 1
            r = c.post(srv.url + "/v1/session/message", json={"session_id": sid, "message": f"m {i}"})
            assert r.status_code == 200, (i, r.status_code, r.text)
            assert r.json()["seq"] == i + 2, (i, r.json())
    evs = history(srv, sid, limit=100)
    assert [e["message"] for e in evs if e["type"] == "user"] == ["open"] + [f"m {i}" for i in range(12)]
    # the log says what happened: the lane sent them again; before, it said requests answer 503
    lost = [line for line in srv.log_text().splitlines() if "connection (message lane) lost" in line]
    assert lost, srv.log_text()[-2000:]
    assert not [line for line in lost if "503 until" in line], lost[:2]
    assert all("sends its messages again" in line for line in lost), lost[:2]


def test_a_crash_of_postgresql_after_relaying_runs_each_task_once(pg, soma):
    """queue.driver=redis: the relay's claim and delete commit without waiting for their WAL flush
    (src/store/pg_writer.c). A crash of PostgreSQL (immediate shutdown: no checkpoint, recovery from
    the WAL) may lose them; the tasks they covered are then published again (queued rows at once,
    relaying ones when their lease runs out) and the workers' dedupe runs each once: every message
    gets exactly one reply, and the outbox empties."""
    from celery_util import redis_sets
    from servers import RedisServer
    with RedisServer() as redis:
        db = pg.new_database("crash")
        srv = soma(f"store.url={db}", *redis_sets(redis))
        sids = [post_message(srv, f"crash {i}")["session_id"] for i in range(20)]
        crash_postgres(pg, srv, down_s=0.5)  # right behind the relay
        for sid in sids:
            wait_terminal(srv, sid, timeout=90)
        conn = pg.connect("crash")
        conn.autocommit = True
        try:
            cur = conn.cursor()

            def outbox_empty():
                cur.execute("SELECT count(*) FROM tasks WHERE state IN ('queued', 'relaying')")
                return cur.fetchone()[0] == 0

            wait_until(outbox_empty, 60, what="the task outbox to empty after the crash")
        finally:
            conn.close()
        time.sleep(1)  # a copy published again would have run by now
        for sid in sids:
            evs = history(srv, sid, limit=50)
            types = [e["type"] for e in evs]
            assert types.count("user") == 1 and types.count("assistant.final") == 1, (sid, types)
            assert "assistant.error" not in types, (sid, types)


def test_an_outage_longer_than_the_retries_still_gets_each_message_its_reply(pg, soma, llm):
    """queue.driver=redis: a conversation whose reply commit or context read meets an outage of
    PostgreSQL retries without using up queue.max_retries (task_ctx.outage). With one retry after
    50 ms, a 3 s outage used to exhaust it: the task went to the dead letters (or, with the dead
    letter itself unstorable, waited out the 300 s visibility timeout) and the message, already
    acknowledged, never got its reply."""
    from celery_util import redis_sets
    from servers import RedisServer
    with RedisServer() as redis:
        db = pg.new_database("outage")
        srv = soma(f"store.url={db}", *redis_sets(redis, "queue.max_retries=1", "queue.retry_backoff_ms=50",
                                                  "queue.visibility_timeout_s=300"))
        llm.control(delay_ms=100)  # ~1.2 s a reply: each ends while PostgreSQL is down
        sids = [post_message(srv, f"outage {i}")["session_id"] for i in range(3)]
        wait_until(lambda: redis.client().hlen("unacked") == 3, 20, what="the workers to take the messages")
        crash_postgres(pg, srv, down_s=3)
        for sid in sids:
            evs = wait_terminal(srv, sid, timeout=60)
            types = [e["type"] for e in evs]
            assert types.count("assistant.final") == 1 and "assistant.error" not in types, (sid, types)
        dead = httpx.get(srv.url + "/v1/dead-letters", timeout=10).json()["items"]
        assert dead == [], dead


def test_message_tasks_committed_while_redis_is_down_are_published_once_it_is_back(pg, soma):
    """queue.driver=redis: a lane stores a message's task already claimed for this node's relay and
    hands it over after the COMMIT (src/queue/relay.c). Messages acknowledged while Redis is down
    keep their tasks in the outbox; once Redis is back every task is in the queue once and the
    outbox is empty."""
    from celery_util import DurableRedis, redis_sets
    with DurableRedis() as redis:
        db = pg.new_database("handoff")
        srv = soma(f"store.url={db}", *redis_sets(redis), "bus.driver=redis", role="gateway")
        conn = pg.connect("handoff")
        conn.autocommit = True
        try:
            ids = [post_message(srv, "before the outage")["task_id"]]
            c = redis.client()
            wait_until(lambda: c.llen("conversation") == 1, 15, what="the first task in Redis")
            redis.stop()
            ids += [post_message(srv, f"during {i}")["task_id"] for i in range(20)]
            time.sleep(1.5)  # the relay tries, fails and keeps the rows
            redis.start()
            c = redis.client()
            wait_until(lambda: c.llen("conversation") >= len(ids), 30, what="every task in Redis")
            cur = conn.cursor()
            wait_until(lambda: (cur.execute("SELECT count(*) FROM tasks"), cur.fetchone())[1] == (0,), 15,
                       what="the outbox to empty")
            queued = b"".join(c.lrange("conversation", 0, -1))
            assert c.llen("conversation") == len(ids)
            assert all(queued.count(t.encode()) >= 1 for t in ids), ids
        finally:
            conn.close()
            srv.stop()


def test_a_stop_right_behind_the_messages_leaves_none_of_their_tasks_in_the_outbox(pg, soma):
    """queue.driver=redis: the relay deletes the rows a lane handed it with its next claim (one runs
    at least every second), not in a transaction per batch it publishes (src/queue/relay.c); a stop
    before that claim deletes them itself. So a graceful stop right behind acknowledged messages
    leaves every task in Redis once and none in the outbox (a row left there would be published a
    second time once its lease ran out)."""
    from celery_util import DurableRedis, redis_sets
    with DurableRedis() as redis:
        db = pg.new_database("stopped")
        srv = soma(f"store.url={db}", *redis_sets(redis), "bus.driver=redis", role="gateway")
        ids = [post_message(srv, f"message {i}")["task_id"] for i in range(30)]
        c = redis.client()
        wait_until(lambda: c.llen("conversation") == len(ids), 15, what="every task in Redis")
        srv.stop()  # at once: the relay's next claim, which would delete them, is up to a second away
        assert srv.proc.returncode == 0, srv.proc.returncode
        conn = pg.connect("stopped")
        try:
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM tasks")
            assert cur.fetchone()[0] == 0
        finally:
            conn.close()
        queued = b"".join(c.lrange("conversation", 0, -1))
        assert c.llen("conversation") == len(ids)
        assert all(queued.count(t.encode()) >= 1 for t in ids), ids  # (an envelope names its id more than once)
