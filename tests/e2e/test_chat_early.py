"""Early start of a chat reply (queue.early_start, queue.driver=local): the message's task is
handed to an idle conversation worker, which calls the LLM while the message commits and
publishes nothing before the commit is confirmed.

The commit is held back for real: the test takes the store's write lock (SQLite: BEGIN
IMMEDIATE on the database file; PostgreSQL: LOCK TABLE sessions IN EXCLUSIVE MODE, which the
message's session upsert waits for while reads go on). A commit that fails for real: SQLite's
writer gives up after its 10 s busy timeout; on PostgreSQL the blocked statement is cancelled
(pg_cancel_backend), so the message lane's transaction fails and the message is not acknowledged
(503). (Not pg_terminate_backend: a lane sends a transaction the end of its session aborted again
on a new one, src/store/pg_lane_txn.c, and the message would wait for the lock again.)"""

import threading
import time

import e2e_util
from e2e_util import (STORE, bearer, check_envelope, check_reply, create_key, find_samples, history, http,
                      open_stream, parse_metrics, post_message, read_reply, store_query, store_url, wait_terminal, wait_until)


class WriteLock:
    """Holds the store's write lock from outside the server until released."""

    def __init__(self, data_dir):
        if STORE == "postgres":
            self.conn = e2e_util.PG.connect(store_url(data_dir).rsplit("/", 1)[1])
            self.conn.cursor().execute("LOCK TABLE sessions IN EXCLUSIVE MODE")
        else:
            import sqlite3
            self.conn = sqlite3.connect(f"{data_dir}/somaagent.db", timeout=5, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")

    def fail_blocked_writer(self):
        """PostgreSQL: cancels the statement that waits for the lock (its commit fails)."""
        cur = self.conn.cursor()

        def waiting():
            # (this connection is inside the transaction that holds the lock, and PostgreSQL answers
            # pg_stat_activity from a snapshot kept for the transaction: clear it before each look)
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
            return cur.fetchone()[0] >= 1

        wait_until(waiting, 10, what="the message's statement waiting for the lock")
        cur.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND pid <> pg_backend_pid()")

    def release(self):
        if STORE == "postgres":
            self.conn.rollback()
        else:
            self.conn.execute("ROLLBACK")
        self.conn.close()


def _post_in_background(srv, text, sid):
    out = {}

    def run():
        r = http().post(f"{srv.url}/v1/session/message", json={"session_id": sid, "message": text}, timeout=30)
        out["status"], out["body"] = r.status_code, r.json()

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _handed(srv):
    text = http().get(srv.url + "/metrics", timeout=5).text
    return sum(v for _, v in find_samples(parse_metrics(text)[1], "soma_tasks_handed_total"))


def test_reply_starts_while_the_message_commits(soma, llm):
    """The LLM is called before the message's commit; the stream still shows user, thinking, the
    deltas and the final in that order, the deltas make the final, and the provider got the
    message once, after the earlier turns. (Fails on the code before the early start: no provider
    call can happen while the message is uncommitted.)"""
    srv = soma()  # the pool grows to two workers with the first reply: one of them waits idle
    sid = post_message(srv, "first")["session_id"]
    wait_terminal(srv, sid)
    with open_stream(srv, sid) as s:
        lock = WriteLock(srv.data_dir)
        try:
            t, out = _post_in_background(srv, "second", sid)
            wait_until(lambda: llm.stats()["requests"] == 2, 10, what="the provider call before the commit")
        finally:
            lock.release()
        t.join(30)
        assert out["status"] == 200, out
        frames = read_reply(s)
    assert frames[0][1]["type"] == "user" and frames[0][1]["message"] == "second", frames[0]
    assert int(frames[0][0]) == out["body"]["seq"] == 3, frames[0]
    final = check_reply(frames, sid)
    assert final["metadata"]["generation_id"] == out["body"]["task_id"], final
    msgs = llm.stats()["last_request"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"], msgs
    assert msgs[1]["content"] == "first" and msgs[3]["content"] == "second", msgs
    assert [e["type"] for e in history(srv, sid)] == ["user", "assistant.final"] * 2
    assert _handed(srv) >= 1  # this one (the first message may have found its worker not idle yet)
    assert store_query(srv.data_dir, "SELECT count(*) FROM tasks")[0][0] == 0
    srv.stop(expect=0)


def test_an_early_reply_leaves_the_next_context_as_stored(soma, llm):
    """An early start that reads the context before its message commits adds the message to the
    rows it got, and those rows may be the store's context cache's own: the next reply's context
    must hold each turn once. (Failed on the code before: the message was inserted into the cached
    rows in place, so the next provider call got "second" twice; with other workers reading the
    same rows, ASan saw a heap overflow in the browser suite.)"""
    srv = soma()  # the pool grows to two workers with the first reply: one of them waits idle
    sid = post_message(srv, "first")["session_id"]
    wait_terminal(srv, sid)
    lock = WriteLock(srv.data_dir)
    try:
        t, out = _post_in_background(srv, "second", sid)
        wait_until(lambda: llm.stats()["requests"] == 2, 10, what="the provider call before the commit")
    finally:
        lock.release()
    t.join(30)
    assert out["status"] == 200, out
    wait_until(lambda: len(history(srv, sid)) == 4, 20, what="the second reply")
    post_message(srv, "third", session_id=sid)
    wait_until(lambda: len(history(srv, sid)) == 6, 20, what="the third reply")
    msgs = llm.stats()["last_request"]["messages"]
    assert [m["content"] for m in msgs if m["role"] == "user"] == ["first", "second", "third"], msgs
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"], msgs
    srv.stop(expect=0)


def test_commit_that_fails_drops_the_early_reply(soma, llm):
    """The message's commit fails after its task was handed over and the LLM call began: the call
    is aborted, nothing of that generation is published or stored, no task row is left, and the
    worker takes the next message. (Fails on the code before the early start: the provider is
    never called for a message that does not commit.)"""
    srv = soma()  # the pool grows to two workers with the first reply: one of them waits idle
    sid = post_message(srv, "first")["session_id"]
    wait_terminal(srv, sid)
    llm.control(first_delay_ms=60000)  # the call stays in flight until it is aborted
    with open_stream(srv, sid) as s:
        lock = WriteLock(srv.data_dir)
        try:
            t, out = _post_in_background(srv, "doomed", sid)
            wait_until(lambda: llm.stats()["requests"] == 2, 10, what="the provider call before the commit")
            if STORE == "postgres":
                lock.fail_blocked_writer()
            t.join(30)  # SQLite: the writer's busy timeout (10 s) ends it
        finally:
            lock.release()
        assert not t.is_alive()
        assert out["status"] in (500, 503), out
        wait_until(lambda: llm.stats()["aborted"] == 1, 10, what="the aborted provider call")
        llm.control(first_delay_ms=0)
        ok = post_message(srv, "after", session_id=sid)
        frames = read_reply(s)
    # the stream's first frame is the next message: nothing of the failed one came before it
    assert frames[0][1]["type"] == "user" and frames[0][1]["message"] == "after", frames
    final = check_reply(frames, sid)
    assert final["metadata"]["generation_id"] == ok["task_id"]
    assert all(e.get("metadata", {}).get("generation_id") in (None, ok["task_id"]) for _, e in frames), frames
    evs = history(srv, sid)
    assert [e["message"] for e in evs if e["type"] == "user"] == ["first", "after"], evs
    assert [e["type"] for e in evs] == ["user", "assistant.final"] * 2, evs
    assert store_query(srv.data_dir, "SELECT count(*) FROM tasks")[0][0] == 0
    assert llm.stats()["requests"] == 3, llm.stats()
    srv.stop(expect=0)


def test_thinking_comes_when_the_message_commits(soma, llm):
    """An early-started reply whose provider is still silent: assistant.thinking follows the
    user's event as soon as the message has committed (the commit gate's hook publishes it), not
    with the first delta. (Fails on the code before: the early start published thinking together
    with the first delta, which this provider holds back for a minute.)"""
    srv = soma()  # the pool grows to two workers with the first reply: one of them waits idle
    sid = post_message(srv, "first")["session_id"]
    wait_terminal(srv, sid)
    wait_until(lambda: any(w["queue"] == "conversation" and w["state"] == "idle"
                           for w in http().get(srv.url + "/v1/workers", timeout=5).json()["workers"]),
               10, what="an idle conversation worker")
    handed = _handed(srv)
    llm.control(first_delay_ms=60000)  # the head now, the first delta in a minute
    with open_stream(srv, sid) as s:
        post_message(srv, "second", session_id=sid)
        frames = s.events(lambda e: e["type"] != "user", timeout=20)
        assert [e["type"] for _, e in frames] == ["user", "assistant.thinking"], frames
        assert frames[0][1]["message"] == "second", frames
        assert _handed(srv) == handed + 1  # this reply started early
        # and its provider call is in flight, silent (thinking is published at the commit, which
        # on a loaded machine can come before the handed worker has sent its request)
        wait_until(lambda: llm.stats()["requests"] == 2, 10, what="the early provider call")
    assert http().delete(f"{srv.url}/v1/sessions/{sid}", timeout=10).status_code in (200, 204)
    wait_until(lambda: llm.stats()["aborted"] == 1, 10, what="the cancelled provider call")
    llm.control(first_delay_ms=0)
    srv.stop(expect=0)

def test_a_refused_message_costs_no_provider_call(soma, tmp_path, llm):
    """A message to another tenant's session is refused (404) by its commit; its task was handed
    over early all the same, but the worker's read finds no session of that tenant and waits for
    the commit, so the provider is never called. (Failed on the first early start: each refused
    message reached the provider before its commit failed.)"""
    data = tmp_path / "data"
    ka = create_key(data, tmp_path, "a")
    kb = create_key(data, tmp_path, "b")
    srv = soma()  # the pool grows to two workers with the first reply: one of them waits idle
    sid = post_message(srv, "first", token=ka)["session_id"]
    wait_terminal(srv, sid, token=ka)
    before, handed = llm.stats()["requests"], _handed(srv)
    for i in range(5):
        r = http().post(f"{srv.url}/v1/session/message", json={"session_id": sid, "message": f"intrude {i}"},
                        headers=bearer(kb), timeout=10)
        check_envelope(r, 404)
    # (a message finding both workers busy is not handed over; most are)
    wait_until(lambda: _handed(srv) > handed, 10, what="a refused message's task to be handed over")
    time.sleep(0.5)  # a provider call, had there been one, is made by now
    assert llm.stats()["requests"] == before, llm.stats()
    assert [e["type"] for e in history(srv, sid, token=ka)] == ["user", "assistant.final"]
    assert store_query(srv.data_dir, "SELECT count(*) FROM tasks")[0][0] == 0
    srv.stop(expect=0)


def test_early_start_off(soma, llm):
    """queue.early_start=false: no task is handed over; the reply comes as before."""
    srv = soma("queue.early_start=false")
    sid = post_message(srv, "hello")["session_id"]
    evs = wait_terminal(srv, sid)
    assert [e["type"] for e in evs] == ["user", "assistant.final"], evs
    assert _handed(srv) == 0
    srv.stop(expect=0)
