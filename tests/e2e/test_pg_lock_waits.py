"""PostgreSQL only: what a write does when another transaction holds the rows it needs, made
deterministic by holding the row locks from the test's own connection (psycopg2).

- A session's delete does not wait for one of its queued tasks that another transaction holds (a
  reserve or a relay's claim, which take them SKIP LOCKED): waiting closed a cycle with the
  session's file locks (test_pg_races.py: a 503 about one run in four).
- A writer batch that PostgreSQL's deadlock detector cancels (40P01) is rolled back and run
  again, so the client gets its answer, not 503 store_busy: the test holds the delete's file, lets
  the delete lock the session and wait for it, then waits for the session itself."""

import threading
import time

import httpx
import pytest

import e2e_util
from e2e_util import store_query, store_url, wait_until

pytestmark = pytest.mark.postgres_only


def hold(data):
    """A connection of the test's own, in a transaction, that never is the deadlock's victim."""
    conn = e2e_util.PG.connect(store_url(data).rsplit("/", 1)[1])
    cur = conn.cursor()
    cur.execute("SET deadlock_timeout = '60s'")
    return conn, cur


def message(url, sid, attachments=()):
    body = {"session_id": sid, "message": "hello"}
    if attachments:
        body["attachments"] = list(attachments)
    r = httpx.post(f"{url}/v1/session/message", json=body, timeout=30)
    assert r.status_code == 200, r.text


def test_a_delete_does_not_wait_for_a_queued_task_another_transaction_holds(soma, llm, tmp_path):
    data = tmp_path / "data"
    srv = soma(f"store.url={store_url(data)}")
    message(srv.url, "held-task")
    wait_until(lambda: not store_query(data, "SELECT 1 FROM tasks WHERE state <> 'done' LIMIT 1"), 30,
               what="the reply to end")
    tenant = store_query(data, "SELECT tenant FROM sessions WHERE id = 'held-task'")[0][0]
    conn, cur = hold(data)
    try:  # a task of the session, queued far ahead (no worker takes it), locked as a reserve does
        now = int(time.time() * 1000)
        cur.execute("INSERT INTO tasks(id, queue, name, tenant, session_id, payload, state, max_retries, "
                    "available_ms, created_ms, updated_ms, worker, reserved_until_ms, attempts) VALUES "
                    "('held-1', 'chat', 'conversation.process', %s, 'held-task', '{}', 'queued', 3, %s, %s, "
                    "%s, '', 0, 0)", (tenant, now + 3600_000, now, now))
        conn.commit()
        cur.execute("SELECT 1 FROM tasks WHERE id = 'held-1' FOR UPDATE")
        t0 = time.monotonic()
        try:
            r = httpx.delete(f"{srv.url}/v1/sessions/held-task", timeout=5)
        except httpx.TimeoutException:
            pytest.fail("the delete waited for the task row the test holds")
        assert r.status_code == 200, r.text
        assert time.monotonic() - t0 < 3
    finally:
        conn.rollback()
        conn.close()
    assert store_query(data, "SELECT 1 FROM sessions WHERE id = 'held-task'") == []


def test_a_writer_batch_cancelled_by_the_deadlock_detector_runs_again(soma, llm, tmp_path):
    data = tmp_path / "data"
    srv = soma(f"store.url={store_url(data)}")
    r = httpx.post(f"{srv.url}/v1/uploads", files=[("files", ("a.txt", b"a\n", "text/plain"))], timeout=30)
    assert r.status_code == 200, r.text
    file_id = r.json()[0]["id"]
    message(srv.url, "crossed", [file_id])  # binds the file to the session (the writer's path)
    wait_until(lambda: not store_query(data, "SELECT 1 FROM tasks WHERE state <> 'done' LIMIT 1"), 30,
               what="the reply to end")
    conn, cur = hold(data)
    answer = {}
    try:
        cur.execute("SELECT 1 FROM attachments WHERE id = %s FOR UPDATE", (file_id,))
        t = threading.Thread(target=lambda: answer.update(
            r=httpx.delete(f"{srv.url}/v1/sessions/crossed", timeout=30)))
        t.start()
        # the delete holds the session and waits for the file the test holds
        wait_until(lambda: store_query(data, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                       "AND query LIKE ?", ("%FROM attachments a%",)), 10, what="the delete to wait")
        # the test now waits for the session: a cycle; the server's side is cancelled after 1 s
        cur.execute("SELECT 1 FROM sessions WHERE id = 'crossed' FOR UPDATE")
        time.sleep(0.3)  # the batch runs again and waits for the test's locks
        conn.commit()
        t.join(30)
    finally:
        conn.rollback()
        conn.close()
    assert answer["r"].status_code == 200, answer["r"].text
    assert store_query(data, "SELECT 1 FROM sessions WHERE id = 'crossed'") == []
    srv.wait_log(lambda o: "40P01" in o.get("msg", ""), 5, what="the deadlock's warning naming its SQLSTATE")
