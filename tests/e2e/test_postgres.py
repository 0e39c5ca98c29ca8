"""The PostgreSQL store driver (store.url): a restart of PostgreSQL under load heals by itself and
loses nothing acknowledged; two processes on one database serve the same sessions and share the
local queue; migrations run once; a bad store.url fails start-up with a clear message.

Each test here starts its own PostgreSQL (servers.PostgresServer) so that restarting it disturbs
no other test; they run in the postgres pass of `make e2e` only."""

import subprocess
import threading
import time

import httpx
import pytest

from e2e_util import (BIN, check_sanitizers, clean_env, describe, free_port, history, post_message, run_cli,
                      wait_terminal, wait_until)
from servers import PostgresServer

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def pg():
    server = PostgresServer(fsync=True)  # synchronous_commit=on as in production: acknowledged = durable
    yield server
    server.close()


def health(srv):
    try:
        r = httpx.get(srv.url + "/v1/health", timeout=5)
    except httpx.HTTPError:
        return None, {}
    return r.status_code, r.json()


def test_postgres_restart_under_load_loses_nothing_acknowledged(pg, soma):
    db = pg.new_database("restart")
    srv = soma(f"store.url={db}")
    sid = post_message(srv, "before the restart")["session_id"]
    acked, refused, errors = [], [], []
    stop = threading.Event()

    def load():
        with httpx.Client(timeout=10) as c:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    r = c.post(srv.url + "/v1/session/message", json={"session_id": sid, "message": f"m{n}"})
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                    continue
                if r.status_code == 200:
                    acked.append((f"m{n}", r.json()["event_id"]))
                elif r.status_code == 503:
                    assert r.headers.get("Retry-After"), r.headers
                    refused.append(f"m{n}")
                    time.sleep(0.02)
                else:
                    errors.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 20, 10, what="acknowledged messages before the restart")
    pg.stop()  # fast shutdown: every session is terminated mid-flight
    wait_until(lambda: health(srv)[0] == 503, 10, what="/v1/health to report the store down")
    assert health(srv)[1]["services"]["store"]["status"] == "down"
    time.sleep(1)
    pg.start()
    wait_until(lambda: health(srv)[0] == 200, 15, what="/v1/health to recover after PostgreSQL came back")
    before = len(acked)
    wait_until(lambda: len(acked) >= before + 20, 15, what="messages acknowledged again after the restart")
    stop.set()
    for t in threads:
        t.join(timeout=15)
    assert not errors, errors[:5]
    assert refused, "no request saw the outage: the test did not exercise it"
    # every acknowledged message is in the session, once, in order of its seq
    stored = {}
    conn = pg.connect("restart")
    try:
        cur = conn.cursor()
        cur.execute("SELECT event_id, body::json->>'message', seq FROM events WHERE session_id = %s", (sid,))
        for event_id, message, seq in cur.fetchall():
            stored[event_id] = message
        cur.execute("SELECT count(*), count(DISTINCT seq), max(seq) FROM events WHERE session_id = %s", (sid,))
        count, distinct, top = cur.fetchone()
        assert count == distinct == top, (count, distinct, top)  # seq 1..n, no gaps, no repeats
    finally:
        conn.close()
    missing = [(m, e) for m, e in acked if stored.get(e) != m]
    assert not missing, f"{len(missing)} acknowledged message(s) lost: {missing[:5]}"
    assert any(e["message"] == acked[-1][0] for e in history(srv, sid, limit=200))


def test_reads_are_answered_as_soon_as_postgresql_is_back(pg, soma):
    """A read changes nothing, so once PostgreSQL is back (and /v1/health says so) reads must be
    answered at once: a reader that waited out a long outage does not sit in its backoff for up to 5 s
    more answering 503, and a reader whose session the restart ended does not fail a request on it.
    One reader (store.pool_size=1), so every GET below goes through it."""
    db = pg.new_database("reads")
    srv = soma(f"store.url={db}", "store.pool_size=1")
    sid = post_message(srv, "before the restart")["session_id"]
    url = f"{srv.url}/v1/sessions/{sid}/history"
    assert httpx.get(url, timeout=5).status_code == 200
    pg.stop()
    # reads during the outage are refused with Retry-After; each failed reconnect doubles the
    # reader's backoff, up to its 5 s cap
    until = time.monotonic() + 7
    while time.monotonic() < until:
        r = httpx.get(url, timeout=10)
        assert r.status_code == 503 and r.headers.get("Retry-After"), r.text
        time.sleep(0.05)
    pg.start()
    wait_until(lambda: health(srv)[0] == 200, 20, what="/v1/health to recover after PostgreSQL came back")
    for _ in range(3):
        r = httpx.get(url, timeout=10)
        assert r.status_code == 200, r.text
        assert [e["message"] for e in r.json()["events"]][:1] == ["before the restart"]


def test_two_processes_share_one_database(pg, soma, llm):
    db = pg.new_database("shared")
    a = soma(f"store.url={db}")
    b = soma(f"store.url={db}")
    out = post_message(a, "hello from A")
    sid = out["session_id"]
    evs = wait_terminal(b, sid, timeout=15)  # B reads what A stored (and either ran the task)
    assert [e["type"] for e in evs] == ["user", "assistant.final"], evs
    assert evs[0]["event_id"] == out["event_id"]
    assert history(a, sid) == evs
    # both append to one session: seqs stay 1..n without a gap or a repeat
    for i in range(6):
        post_message(a if i % 2 else b, f"turn {i}", session_id=sid)
    evs = wait_terminal(a, sid, timeout=30, count=7)
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    finals = [e for e in evs if e["type"] == "assistant.final"]
    assert len(finals) == 7, [e["type"] for e in evs]  # each task ran exactly once across the two nodes
    # the session list and the session itself read the same from either node
    ra = httpx.get(f"{a.url}/v1/sessions/{sid}", timeout=5).json()
    rb = httpx.get(f"{b.url}/v1/sessions/{sid}", timeout=5).json()
    assert ra == rb, (ra, rb)


def test_tasks_reserved_once_across_nodes(pg, soma, llm):
    """Several nodes reserve from one queue table (FOR UPDATE SKIP LOCKED): 30 messages posted
    to two nodes each get exactly one reply."""
    db = pg.new_database("queue")
    nodes = [soma(f"store.url={db}"), soma(f"store.url={db}")]
    sids = [post_message(nodes[i % 2], f"q{i}")["session_id"] for i in range(30)]
    for i, sid in enumerate(sids):
        evs = wait_terminal(nodes[(i + 1) % 2], sid, timeout=30)
        time.sleep(0)
        assert [e["type"] for e in evs] == ["user", "assistant.final"], evs
    time.sleep(0.5)
    conn = pg.connect("queue")
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM events WHERE type = 'assistant.final'")
        assert cur.fetchone()[0] == 30
        cur.execute("SELECT count(*) FROM tasks")
        assert cur.fetchone()[0] == 0
    finally:
        conn.close()


def test_a_failing_message_fails_alone(pg, soma):
    """Messages are written in pipelines (each writer connection's share of a batch is one
    transaction): a message whose statement fails gets its own error, every other message of its
    batch commits, and its session's seqs keep no gap."""
    db = pg.new_database("poison")
    srv = soma(f"store.url={db}", role="gateway")
    sids = [post_message(srv, f"open {i}")["session_id"] for i in range(3)]
    conn = pg.connect("poison")
    conn.autocommit = True
    try:
        conn.cursor().execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.body LIKE '%poison%' THEN RAISE EXCEPTION 'poisoned message'; END IF; RETURN NEW; END $$; "
            "CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison()")
    finally:
        conn.close()
    jobs = [(sids[n % 3], f"{'poison' if n % 7 == 3 else 'fine'} {n}") for n in range(90)]

    def send(job):
        with httpx.Client(timeout=30) as c:
            r = c.post(srv.url + "/v1/session/message", json={"session_id": job[0], "message": job[1]})
            return job, r.status_code

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=30) as ex:
        results = list(ex.map(send, jobs))
    for (sid, text), status in results:
        assert status == (200 if text.startswith("fine") else 500), (text, status)
    for i, sid in enumerate(sids):
        evs = history(srv, sid, limit=200)
        assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)), [e["seq"] for e in evs]
        got = sorted(e["message"] for e in evs if e["type"] == "user")
        want = sorted([f"open {i}"] + [t for s, t in jobs if s == sid and t.startswith("fine")])
        assert got == want, (got, want)


def test_migrate_twice_is_a_no_op_and_concurrent_starts_migrate_once(tmp_path, pg):
    db = pg.new_database("mig")
    cp = run_cli(["migrate", "--set", f"store.url={db}", "--set", f"data.dir={tmp_path / 'data'}"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    first = int(cp.stdout.split("applied ")[1].split()[0])
    assert first >= 1, cp.stdout
    cp = run_cli(["migrate", "--set", f"store.url={db}", "--set", f"data.dir={tmp_path / 'data'}"], tmp_path)
    assert cp.returncode == 0 and "applied 0 migration" in cp.stdout, describe(cp)
    assert "NOTICE" not in cp.stderr, cp.stderr
    # several processes migrating one fresh database at once: the advisory lock lets one apply
    db2 = pg.new_database("mig2")
    procs = [subprocess.Popen([BIN, "migrate", "--set", f"store.url={db2}", "--set",
                               f"data.dir={tmp_path / f'd{i}'}"], cwd=str(tmp_path), env=clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    outs = [p.communicate(timeout=30) for p in procs]
    for p, (out, err) in zip(procs, outs):
        check_sanitizers(err, "somaagent migrate")
        assert p.returncode == 0, (out, err)
    applied = sorted(int(out.split("applied ")[1].split()[0]) for out, _ in outs)
    assert applied == [0, 0, 0, first], outs


def test_bad_store_url_fails_start_up(tmp_path, pg):
    # not a PostgreSQL URL: a configuration error naming the key (exit 2)
    cp = run_cli(["run", "--set", f"http.listen=127.0.0.1:{free_port()}", "--set", "store.url=mysql://x/y",
                  "--set", f"data.dir={tmp_path / 'a'}"], tmp_path)
    assert cp.returncode == 2 and "store.url" in cp.stderr, describe(cp)
    # nothing listens there: a runtime failure naming the server and the key (exit 1), at once
    port = free_port()
    url = f"postgresql://soma:secret-pw@127.0.0.1:{port}/nothing"
    t0 = time.monotonic()
    cp = run_cli(["run", "--set", f"http.listen=127.0.0.1:{free_port()}", "--set", f"store.url={url}",
                  "--set", f"data.dir={tmp_path / 'b'}"], tmp_path)
    assert cp.returncode == 1, describe(cp)
    assert time.monotonic() - t0 < 15
    assert f"127.0.0.1:{port}" in cp.stderr and "store.url" in cp.stderr, describe(cp)
    assert "secret-pw" not in cp.stderr + cp.stdout, "the password was printed"
    # a database that does not exist on a running server
    url = pg.database_url("no_such_database")
    cp = run_cli(["migrate", "--set", f"store.url={url}", "--set", f"data.dir={tmp_path / 'c'}"], tmp_path)
    assert cp.returncode == 1 and "no_such_database" in cp.stderr, describe(cp)


def test_key_changes_reach_every_node(pg, soma, tmp_path):
    """The key cache of each node polls store_data_version: a key created or revoked through
    one node (or the CLI) is honoured by the other within the refresh interval."""
    db = pg.new_database("keys")
    sets = (f"store.url={db}", "auth.require=true", "auth.key_refresh_ms=200")
    a, b = soma(*sets), soma(*sets)
    cp = run_cli(["keys", "create", "--tenant", "acme", "--set", f"store.url={db}", "--set",
                  f"data.dir={tmp_path / 'cli'}"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    token = cp.stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    for node in (a, b):
        wait_until(lambda: httpx.get(node.url + "/v1/sessions", headers=auth, timeout=5).status_code == 200, 5,
                   what="the new key to be honoured")
    cp = run_cli(["keys", "revoke", token.split("_")[1], "--set", f"store.url={db}", "--set",
                  f"data.dir={tmp_path / 'cli'}"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    for node in (a, b):
        wait_until(lambda: httpx.get(node.url + "/v1/sessions", headers=auth, timeout=5).status_code == 401, 5,
                   what="the revoked key to be refused")


def test_builtin_memory_row_commits_with_its_message(pg, soma):
    """memory.driver=builtin (the default): the sink is this database, so a message's memory is its
    `memories` row, committed in the message's transaction (no outbox row, nothing left to relay):
    it is there when the 200 comes. A memory that cannot be written fails its message, nothing of
    that message is stored, and the session's next message takes the next seq (no gap)."""
    db = pg.new_database("memdirect")
    srv = soma(f"store.url={db}", role="gateway")
    first = post_message(srv, "the harbour whale sings at dawn")
    conn = pg.connect("memdirect")
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute("SELECT namespace, session_id, content FROM memories WHERE key = %s", (first["event_id"],))
        assert cur.fetchall() == [("wm", first["session_id"], "the harbour whale sings at dawn")]
        cur.execute("SELECT count(*) FROM memory_outbox")
        assert cur.fetchone() == (0,)
        cur.execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.content LIKE '%poison%' THEN RAISE EXCEPTION 'poisoned memory'; END IF; RETURN NEW; END $$; "
            "CREATE TRIGGER poison BEFORE INSERT ON memories FOR EACH ROW EXECUTE FUNCTION poison()")
        r = httpx.post(srv.url + "/v1/session/message", json={"session_id": first["session_id"],
                                                               "message": "a poison pill"}, timeout=10)
        assert r.status_code == 500 and r.json()["error"]["code"], r.text
        cur.execute("SELECT count(*) FROM events WHERE body LIKE '%%poison pill%%'")
        assert cur.fetchone() == (0,)
        after = post_message(srv, "after the pill", session_id=first["session_id"])
        assert after["seq"] == first["seq"] + 1, (first, after)
        cur.execute("SELECT content FROM memories ORDER BY id")
        assert [row[0] for row in cur.fetchall()] == ["the harbour whale sings at dawn", "after the pill"]
    finally:
        conn.close()


def test_relay_publishes_again_a_row_whose_lease_ran_out(pg, soma):
    """queue.driver=redis: a task row a dead relay left `relaying` is claimed again once its lease
    has run out, published to Redis and removed from the outbox; a row whose lease still runs
    (another relay is publishing it) is left alone."""
    from celery_util import redis_sets
    from servers import RedisServer
    with RedisServer() as redis:
        db = pg.new_database("lease")
        srv = soma(f"store.url={db}", *redis_sets(redis, "queue.routes=soma.echo=parked"), role="gateway")
        conn = pg.connect("lease")
        conn.autocommit = True
        try:
            now = int(time.time() * 1000)
            cur = conn.cursor()
            for tid, lease in (("t-lease-over", now - 1000), ("t-lease-runs", now + 600000)):
                cur.execute("INSERT INTO tasks(id, queue, name, tenant, payload, state, available_ms, "
                            "reserved_until_ms, created_ms, updated_ms) VALUES (%s, 'parked', 'soma.echo', "
                            "'default', '{}', 'relaying', %s, %s, %s, %s)", (tid, now, lease, now, now))
            c = redis.client()

            def published():
                return b"".join(m for k in c.keys("*") if c.type(k) == b"list" for m in c.lrange(k, 0, -1))

            wait_until(lambda: b"t-lease-over" in published(), 15, what="the row whose lease ran out to be published")
            wait_until(lambda: (cur.execute("SELECT id FROM tasks ORDER BY id"), cur.fetchall())[1] == [
                ("t-lease-runs",)], 10, what="the published row to leave the outbox")
            assert b"t-lease-runs" not in published()
        finally:
            conn.close()
            srv.stop()
