"""PostgreSQL only: the retention sweep and the tasks that keep a session (src/store/pg_retention.c).

- Each tenant's statement of a sweep batch read the whole list of the sessions having a queued,
  reserved or relaying task (one JSON parameter, read once per batch): tenants x queued tasks on
  the writer thread (2,000 tenants and 20,000 queued tasks: 19 s per batch, every write of the node
  waiting). Now each statement asks the tasks' partial indexes for its own candidates: the test
  logs every plan of the store's database (auto_explain) and counts the rows each pick of idle
  sessions touched, which must not grow with the queued tasks of the others.
- That list was a snapshot of the batch's start: a dead letter requeued by another node while the
  batch walked the tenants was deleted with its session (the requeue answered 200, the task was
  gone). The test holds the sessions table so that the batch waits after its start, requeues, lets
  it go on, and checks that the task is kept.
- A requeue committed after the sweep had locked the session was deleted by the session's delete:
  it now locks the session first (and answers 404 once it is gone). The test holds a file of
  another idle session so that the sweep waits between its pick and its deletes."""

import json
import threading
import time

import httpx
import pytest

import e2e_util
from e2e_util import store_query, store_url, wait_until

pytestmark = pytest.mark.postgres_only

TASK_COLS = ("INSERT INTO tasks(id, queue, name, tenant, session_id, payload, state, max_retries, available_ms, "
             "created_ms, updated_ms, worker, reserved_until_ms, attempts, last_error) ")


def hold(data):
    """A connection of the test's own, in a transaction, that never is the deadlock's victim."""
    conn = e2e_util.PG.connect(store_url(data).rsplit("/", 1)[1])
    cur = conn.cursor()
    cur.execute("SET deadlock_timeout = '60s'")
    return conn, cur


def sessions_and_dead_letter(cur, idle_ms):
    """'first' (tenant t-a, the walk's first) and 'victim' (tenant t-z) with the dead letter dl-1 on
    a queue no worker serves (requeued, it stays queued)."""
    cur.execute("INSERT INTO sessions(id, tenant, subject, created_ms, updated_ms) VALUES "
                "('first', 't-a', 'x', 0, %s), ('victim', 't-z', 'x', 0, %s)", (idle_ms, idle_ms))
    cur.execute(TASK_COLS + "VALUES ('dl-1', 'zz-nobody', 'soma.echo', 't-z', 'victim', '{}', 'dead', 3, 0, 0, 0, "
                "'', 0, 4, 'boom')")


def waiting(data, like):
    return store_query(data, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE ?",
                       (like,))


def requeue_in_thread(url, answer):
    t = threading.Thread(target=lambda: answer.update(r=httpx.post(f"{url}/v1/dead-letters/dl-1/requeue",
                                                                   timeout=60)))
    t.start()
    return t


def check_kept(data, answer):
    task = store_query(data, "SELECT state FROM tasks WHERE id = 'dl-1'")
    r = answer["r"]
    if r.status_code == 200:
        assert task == [("queued",)], f"the requeue answered {r.text} but the task is {task}"
    else:  # refused: the session was gone, its dead letter is left as it was
        assert r.status_code == 404, r.text
        assert task == [("dead",)], task


def requeue_and_release(url, data, conn, deleted):
    """Requeues dl-1 on url while the test's connection conn holds its locks, until the requeue has
    answered or waits; then releases them, lets the sweep delete session `deleted` and checks dl-1."""
    answer = {}
    try:
        t = requeue_in_thread(url, answer)
        wait_until(lambda: "r" in answer or len(waiting(data, "%")) >= 2, 20, interval=0.05,
                   what="the requeue to answer or wait")
    finally:
        conn.commit()
        conn.close()
    t.join(60)
    wait_until(lambda: not store_query(data, "SELECT 1 FROM sessions WHERE id = ?", (deleted,)), 20,
               what=f"the sweep to delete session {deleted}")
    check_kept(data, answer)


def test_a_dead_letter_requeued_while_a_sweep_batch_walks_is_kept(soma, tmp_path):
    data = tmp_path / "data"
    url = store_url(data)
    srv = soma(f"store.url={url}", "retention.sessions_idle_s=3600", "retention.sweep_interval_s=1")
    other = soma(f"store.url={url}", data_dir=tmp_path / "node2")  # no sweep of its own
    conn, cur = hold(data)
    try:
        now = int(time.time() * 1000)
        sessions_and_dead_letter(cur, now)  # not idle yet
        conn.commit()
        # the batch's pick of idle sessions waits for the table: it started before the requeue
        cur.execute("LOCK TABLE sessions IN EXCLUSIVE MODE")
        cur.execute("UPDATE sessions SET updated_ms = 0 WHERE id IN ('first', 'victim')")
        wait_until(lambda: waiting(data, "%FROM sessions WHERE tenant%FOR UPDATE SKIP LOCKED%"), 20,
                   interval=0.05, what="a sweep batch to wait for the sessions table")
    except BaseException:
        conn.close()
        raise
    requeue_and_release(other.url, data, conn, deleted="first")


def test_a_requeue_waits_for_a_sweep_that_locked_its_session(soma, tmp_path):
    data = tmp_path / "data"
    url = store_url(data)
    srv = soma(f"store.url={url}", "retention.sessions_idle_s=3600", "retention.sweep_interval_s=1")
    other = soma(f"store.url={url}", data_dir=tmp_path / "node2")
    conn, cur = hold(data)
    try:
        sessions_and_dead_letter(cur, int(time.time() * 1000))
        cur.execute("INSERT INTO attachments(id, tenant, session_id, filename, mime, size, sha256, created_ms) "
                    "VALUES ('file-1', 't-a', 'first', 'a.txt', 'text/plain', 2, '00', 0)")
        conn.commit()
        # the sweep picks (locks) both sessions, then waits to delete the first one's file
        cur.execute("SELECT 1 FROM attachments WHERE id = 'file-1' FOR UPDATE")
        aging, c2 = hold(data)
        c2.execute("UPDATE sessions SET updated_ms = 0 WHERE id IN ('first', 'victim')")
        aging.commit()
        aging.close()
        wait_until(lambda: waiting(data, "%FROM attachments%FOR UPDATE%"), 20, interval=0.05,
                   what="the sweep to wait for the file")
        assert store_query(data, "SELECT 1 FROM sessions WHERE id = 'victim'")
    except BaseException:
        conn.close()
        raise
    requeue_and_release(other.url, data, conn, deleted="victim")


def logged_plans(log, since):
    """The auto_explain plans (JSON) logged after byte offset since of the server's log."""
    text = open(log, errors="replace").read()[since:]
    plans = []
    for part in text.split("plan:\n")[1:]:
        body = []
        for ln in part.splitlines():
            if not ln.startswith("\t"):
                break
            body.append(ln[1:])
        try:
            plans.append(json.loads("\n".join(body)))
        except ValueError:
            pass
    return plans


def nodes(plan):
    yield plan
    for p in plan.get("Plans", []):
        yield from nodes(p)


def test_each_tenants_pick_reads_its_own_sessions_tasks_not_the_whole_queue(soma, tmp_path):
    data = tmp_path / "data"
    url = store_url(data)
    db = url.rsplit("/", 1)[1]
    admin = e2e_util.PG.connect("postgres")
    admin.autocommit = True
    for setting in ("session_preload_libraries = 'auto_explain'", "auto_explain.log_min_duration = 0",
                    "auto_explain.log_analyze = on", "auto_explain.log_timing = off",
                    "auto_explain.log_format = 'json'"):
        admin.cursor().execute(f'ALTER DATABASE "{db}" SET {setting}')
    admin.close()
    tenants, queued = 20, 5000
    srv = soma(f"store.url={url}", "retention.sessions_idle_s=3600", "retention.sweep_interval_s=1")
    conn, cur = hold(data)
    # every tenant's session has a backlog of queued tasks (no worker serves their queue); the
    # last tenant's session has none: the sweep deletes it at the end of its walk
    cur.execute("INSERT INTO sessions(id, tenant, subject, created_ms, updated_ms) SELECT 's-' || i, "
                "'t-' || lpad(i::text, 3, '0'), 'x', 0, 0 FROM generate_series(1, %s) i", (tenants,))
    cur.execute(TASK_COLS + "SELECT 'q-' || g, 'zz-nobody', 'soma.echo', 't-' || lpad((1 + g %% %s)::text, 3, '0'), "
                "'s-' || (1 + g %% %s), '{}', 'queued', 3, 0, 0, 0, '', 0, 0, '' FROM generate_series(0, %s - 1) g",
                (tenants, tenants, queued))
    since = len(open(e2e_util.PG.log, errors="replace").read())
    cur.execute("INSERT INTO sessions(id, tenant, subject, created_ms, updated_ms) VALUES ('free', 't-zzz', 'x', 0, 0)")
    conn.commit()
    conn.close()
    wait_until(lambda: not store_query(data, "SELECT 1 FROM sessions WHERE id = 'free'"), 30,
               what="the sweep to walk every tenant")
    assert len(store_query(data, "SELECT 1 FROM sessions")) == tenants, "a session with queued tasks was swept"
    picks = [p for p in logged_plans(e2e_util.PG.log, since)
             if any(n["Node Type"] == "LockRows" for n in nodes(p["Plan"]))
             and any(n.get("Relation Name") == "sessions" and "Scan" in n["Node Type"] for n in nodes(p["Plan"]))
             and "tenant" in p.get("Query Text", "")]
    assert len(picks) >= tenants, f"{len(picks)} picks of idle sessions logged"
    for p in picks:
        touched = sum(n.get("Actual Rows", 0) * n.get("Actual Loops", 1) for n in nodes(p["Plan"]))
        seq = [n for n in nodes(p["Plan"]) if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "tasks"]
        assert touched < 200 and not seq, f"one tenant's pick touched {touched} rows:\n{json.dumps(p, indent=1)}"
