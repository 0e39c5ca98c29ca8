"""PostgreSQL only: a stress of the writes that touch several sessions or rows in one transaction,
run at once from many clients on two nodes sharing one database: messages (the message lanes),
replies (the writer), DELETE /v1/sessions/{id}, resets, pauses, messages naming a shared file, and
the retention sweep of idle sessions (retention.sessions_idle_s=1, a sweep a second on each node),
on an overlapping pool of sessions. Every request must get its documented answer (no 500, no
503), PostgreSQL must count no deadlock, and once the clients stop nothing is left half done:
every reply ends, no file is bound to or named by a session that is gone, no session's events
run past its last seq.

It found one cycle (a 503 store_busy about one run in four): a delete (or a sweep) locked its
session's files, then waited for a queued task of the session that another node's writer batch had
just reserved; that batch then waited to bind one of those files. A delete now takes its queued
tasks SKIP LOCKED, and a batch or lane group the deadlock detector still cancels runs again
(test_pg_lock_waits.py forces both). On failure it prints the nodes' store lines and PostgreSQL's
error lines (a deadlock's DETAIL names both statements)."""

import random
import threading
import time

import httpx
import pytest

import e2e_util
from e2e_util import store_query, store_url, wait_until

pytestmark = pytest.mark.postgres_only

SECONDS = 12
POOL = [f"race-{i:03d}" for i in range(120)]


def deadlocks(data):
    return store_query(data, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")[0][0]


def diagnosis(nodes):
    """What to read when it fails: each node's store warnings and errors, and PostgreSQL's log
    lines of errors (a deadlock names both transactions' statements in its DETAIL)."""
    out = []
    for i, n in enumerate(nodes):
        lines = [ln for ln in n.log_lines() if '"store"' in ln or "PostgreSQL" in ln]
        out.append(f"node {i} store lines ({len(lines)}):\n" + "\n".join(lines[-30:]))
    try:
        with open(e2e_util.PG.log, errors="replace") as f:
            pg = [ln.rstrip() for ln in f if any(w in ln for w in ("ERROR", "DETAIL", "HINT", "CONTEXT",
                                                                  "STATEMENT", "Process ", "FATAL"))]
        out.append("PostgreSQL's log:\n" + "\n".join(pg[-60:]))
    except OSError as e:
        out.append(f"PostgreSQL's log: {e}")
    return "\n\n".join(out)


def upload(url, name):
    r = httpx.post(f"{url}/v1/uploads", files=[("files", (name, f"{name}\n".encode(), "text/plain"))], timeout=30)
    assert r.status_code == 200, r.text
    return r.json()[0]["id"]


def test_concurrent_deletes_resets_sweeps_and_replies_neither_deadlock_nor_fail(soma, llm, tmp_path):
    llm.control(chunks=2)
    data = tmp_path / "data"
    db = store_url(data)
    sets = (f"store.url={db}", "retention.sessions_idle_s=1", "retention.sweep_interval_s=1")
    nodes = [soma(*sets), soma(*sets)]
    before = deadlocks(data)
    files = [upload(nodes[0].url, f"shared-{i}.txt") for i in range(4)]  # newest last
    bad, counts, stop = [], {}, time.monotonic() + SECONDS
    lock = threading.Lock()

    def note(what, r, ok):
        with lock:
            counts[what] = counts.get(what, 0) + 1
            if r.status_code not in ok:
                bad.append((what, r.status_code, r.text[:200]))

    def messages(k):
        rnd = random.Random(k)
        with httpx.Client(timeout=60) as c:
            while time.monotonic() < stop:
                url = rnd.choice(nodes).url
                body = {"session_id": rnd.choice(POOL), "message": f"m{k}"}
                if rnd.random() < 0.1:  # a new file and a recent one, maybe another session's
                    new = upload(url, f"f{k}-{rnd.random()}.txt")
                    with lock:
                        files.append(new)
                        body["attachments"] = [new, rnd.choice(files[-8:-1])]
                r = c.post(url + "/v1/session/message", json=body)
                if r.status_code == 404 and "attachments" in body and "attachment " in r.text:
                    note("message naming a file gone with its session (documented)", r, {404})
                else:
                    note("message", r, {200})

    def admin(k):
        rnd = random.Random(100 + k)
        with httpx.Client(timeout=60) as c:
            while time.monotonic() < stop:
                url, sid, x = rnd.choice(nodes).url, rnd.choice(POOL), rnd.random()
                if x < 0.45:
                    note("delete", c.delete(f"{url}/v1/sessions/{sid}"), {200, 404})
                elif x < 0.8:
                    note("reset", c.post(f"{url}/v1/sessions/{sid}/reset"), {200, 404})
                elif x < 0.9:
                    note("pause", c.post(f"{url}/v1/sessions/{sid}/pause", json={"paused": False}), {200, 404})
                else:
                    note("history", c.get(f"{url}/v1/sessions/{sid}/history"), {200, 404})

    threads = [threading.Thread(target=messages, args=(k,)) for k in range(12)]
    threads += [threading.Thread(target=admin, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert counts.get("message", 0) > 100 and counts.get("delete", 0) > 20, counts
    assert not bad, f"{len(bad)} wrong answers of {counts}: {bad[:10]}\n{diagnosis(nodes)}"
    for n in nodes:
        assert "deadlock detected" not in n.log_text(), diagnosis(nodes)
    assert deadlocks(data) == before, f"PostgreSQL broke {deadlocks(data) - before} deadlock(s)\n{diagnosis(nodes)}"
    # nothing half done: every reply ends, no file or reference outlives its session, no event
    # past its session's seq
    wait_until(lambda: not store_query(data, "SELECT 1 FROM tasks WHERE state IN ('queued', 'reserved', "
                                       "'relaying') LIMIT 1"), 30, what="every reply to end")
    assert store_query(data, "SELECT id, session_id FROM attachments a WHERE session_id IS NOT NULL AND NOT "
                       "EXISTS (SELECT 1 FROM sessions s WHERE s.id = a.session_id)") == []
    assert store_query(data, "SELECT attachment_id, session_id FROM attachment_refs r WHERE NOT EXISTS "
                       "(SELECT 1 FROM sessions s WHERE s.id = r.session_id)") == []
    assert store_query(data, "SELECT s.id FROM sessions s JOIN events e ON e.session_id = s.id "
                       "GROUP BY s.id, s.last_seq HAVING max(e.seq) > s.last_seq") == []
    for n in nodes:
        for sid in random.Random(7).sample(POOL, 10):
            r = httpx.get(f"{n.url}/v1/sessions/{sid}/history", timeout=10)
            assert r.status_code in (200, 404), r.text

