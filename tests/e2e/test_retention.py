"""Retention (src/orchestrator/retention.c): sessions idle longer than retention.sessions_idle_s are
deleted as DELETE /v1/sessions/{id} deletes them (history 404, their open streams end, the files
only they named leave data.dir/blobs, a file a kept session names stays), audit rows older than
retention.audit_s and dead letters older than retention.dead_letters_s are deleted, 0 keeps each
forever, and a session a message reaches while the sweep runs is not deleted under it. Ages are
made by moving the rows' timestamps back in the store. Runs on both stores."""

import concurrent.futures
import hashlib
import os
import time

import httpx

from test_stream_delete import _until_end
from e2e_util import (find_samples, history, http, open_stream, parse_metrics, post_message, read_reply,
                      store_exec, store_query, wait_terminal, wait_until)

DAY_MS = 86400 * 1000


def _upload(srv, sid, name, data):
    r = httpx.post(f"{srv.url}/v1/uploads", files=[("files", (name, data, "text/plain"))],
                   data={"session_id": sid}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()[0]["id"]


def _blob(srv, data):
    sha = hashlib.sha256(data).hexdigest()
    return os.path.join(srv.data_dir, "blobs", sha[:2], sha)


def _age_session(srv, sid, days=2):
    store_exec(srv.data_dir, f"UPDATE sessions SET updated_ms = updated_ms - {days * DAY_MS} WHERE id = '{sid}'")


def _status(srv, sid):
    return http().get(f"{srv.url}/v1/sessions/{sid}/history", timeout=5).status_code


def _audit(srv):
    r = http().get(srv.url + "/v1/admin/audit", params={"limit": 200}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _old_audit_row(srv, action, days=2):
    store_exec(srv.data_dir, "INSERT INTO audit(tenant, subject, action, decision, created_ms) VALUES "
               f"('default', 'test', '{action}', 'done', {int(time.time() * 1000) - days * DAY_MS})")


def _dead_letter(srv, days=2):
    tid = http().post(srv.url + "/v1/tasks", json={"task": "soma.fail"}, timeout=5).json()["task_id"]
    wait_until(lambda: store_query(srv.data_dir, "SELECT 1 FROM tasks WHERE id = ? AND state = 'dead'", (tid,)),
               10, what="the task to be dead-lettered")
    if days:
        store_exec(srv.data_dir, f"UPDATE tasks SET updated_ms = updated_ms - {days * DAY_MS} WHERE id = '{tid}'")
    return tid


def _deleted(srv, kind):
    _, samples = parse_metrics(http().get(srv.url + "/metrics", timeout=5).text)
    return sum(v for _, v in find_samples(samples, "soma_retention_deleted_total", kind=kind))




def test_idle_sessions_go_as_a_delete_takes_them_and_recent_ones_stay(soma):
    srv = soma("retention.sessions_idle_s=86400", "retention.sweep_interval_s=1", "uploads.orphan_grace_s=0")
    secret, shared = b"only the idle session names this\n" * 20, b"both sessions name this\n" * 20
    for sid in ("ret-old", "ret-kept"):
        post_message(srv, "hello", session_id=sid)
        wait_terminal(srv, sid)
    _upload(srv, "ret-old", "secret.txt", secret)
    _upload(srv, "ret-old", "shared.txt", shared)
    _upload(srv, "ret-kept", "shared.txt", shared)
    with open_stream(srv, "ret-old", after=0, timeout=10) as s:
        read_reply(s)
        _age_session(srv, "ret-old")
        frames = _until_end(s, timeout=15)  # the sweep deleted it: its stream ends as on a delete
    assert [(f.id, f.data) for f in frames] == [("0", None)], [(f.id, f.data) for f in frames]
    assert _status(srv, "ret-old") == 404
    assert _status(srv, "ret-kept") == 200 and history(srv, "ret-kept")
    wait_until(lambda: not os.path.exists(_blob(srv, secret)), 10, what="the idle session's own file removed")
    assert os.path.exists(_blob(srv, shared)), "a file a kept session names stays"
    # the counter and the sweep's audit row come after the batch's commit (the audit row is written
    # without waiting): a moment later on a loaded machine
    wait_until(lambda: _deleted(srv, "sessions") >= 1, 10, what="the sweep counted")
    assert _deleted(srv, "sessions") == 1
    wait_until(lambda: [r for r in _audit(srv) if r["action"] == "retention.sweep"], 10, what="the sweep's audit row")
    rows = [r for r in _audit(srv) if r["action"] == "retention.sweep"]
    assert len(rows) == 1 and rows[0]["subject"] == "system:retention", rows
    assert "sessions=1 " in rows[0]["detail"], rows
    assert "retention sweep deleted sessions=1" in srv.log_text()


def test_idle_sessions_of_every_tenant_go(soma):
    # the sweep walks the tenants (sqlite_retention.c, pg_retention.c): one before and others after
    # "default", one with nothing idle, one with more idle sessions than a batch (50)
    srv = soma("retention.sessions_idle_s=86400", "retention.sweep_interval_s=1")
    post_message(srv, "hello", session_id="ret-t-default")
    wait_terminal(srv, "ret-t-default")
    now = int(time.time() * 1000)
    idle = [("ret-t-acme", f"ret-t-acme-{i}") for i in range(2)] + \
        [("ret-t-big", f"ret-t-big-{i}") for i in range(60)] + [("ret-t-zed", "ret-t-zed-0")]
    kept = [("ret-t-acme", "ret-t-acme-new"), ("ret-t-busy", "ret-t-busy-new"), ("ret-t-zed", "ret-t-zed-new")]
    values = [f"('{sid}', '{t}', {now - 3 * DAY_MS}, {now - 2 * DAY_MS - i})" for i, (t, sid) in enumerate(idle)]
    values += [f"('{sid}', '{t}', {now}, {now})" for t, sid in kept]
    store_exec(srv.data_dir, "INSERT INTO sessions(id, tenant, created_ms, updated_ms) VALUES " + ", ".join(values))
    _age_session(srv, "ret-t-default")
    wait_until(lambda: _deleted(srv, "sessions") >= len(idle) + 1, 20, what="every tenant's idle sessions swept")
    left = {r[0] for r in store_query(srv.data_dir, "SELECT id FROM sessions WHERE id LIKE ?", ("ret-t-%",))}
    assert left == {sid for _, sid in kept}, sorted(left)
    assert _deleted(srv, "sessions") == len(idle) + 1
    assert _status(srv, "ret-t-default") == 404


def test_old_audit_rows_and_dead_letters_go(soma):
    srv = soma("retention.audit_s=86400", "retention.dead_letters_s=86400", "retention.sweep_interval_s=1")
    for i in range(3):
        _old_audit_row(srv, f"test.old{i}")
    old_dead, new_dead = _dead_letter(srv), _dead_letter(srv, days=0)
    wait_until(lambda: _deleted(srv, "dead_letters") >= 1 and _deleted(srv, "audit") >= 3, 15,
               what="the sweep of audit rows and dead letters")
    actions = [r["action"] for r in _audit(srv)]
    assert not [a for a in actions if a.startswith("test.old")], actions
    assert "retention.sweep" in actions, actions
    dead = {r[0] for r in store_query(srv.data_dir, "SELECT id FROM tasks WHERE state = 'dead'")}
    assert old_dead not in dead and new_dead in dead, dead
    # the audit trail is still append-only for everything but the sweep
    try:
        store_exec(srv.data_dir, "DELETE FROM audit")
        raise AssertionError("a plain DELETE of audit rows was allowed")
    except AssertionError:
        raise
    except Exception as e:  # the trigger refuses it
        assert "append-only" in str(e), e


def test_zero_keeps_everything(soma):
    # only audit rows expire here: old sessions and dead letters stay (their settings are 0)
    srv = soma("retention.audit_s=86400", "retention.sweep_interval_s=1")
    post_message(srv, "hello", session_id="ret-zero")
    wait_terminal(srv, "ret-zero")
    _age_session(srv, "ret-zero", days=3650)
    dead = _dead_letter(srv, days=3650)
    _old_audit_row(srv, "test.old")
    wait_until(lambda: _deleted(srv, "audit") >= 1, 15, what="a sweep")
    time.sleep(1.5)  # another sweep
    assert _status(srv, "ret-zero") == 200
    assert store_query(srv.data_dir, "SELECT 1 FROM tasks WHERE id = ? AND state = 'dead'", (dead,))
    assert _deleted(srv, "sessions") == 0 and _deleted(srv, "dead_letters") == 0


def test_without_retention_nothing_is_swept(soma):
    srv = soma()
    post_message(srv, "hello", session_id="ret-none")
    wait_terminal(srv, "ret-none")
    _age_session(srv, "ret-none", days=3650)
    _old_audit_row(srv, "test.none", days=3650)
    time.sleep(2)
    assert _status(srv, "ret-none") == 200
    assert [r for r in _audit(srv) if r["action"] == "test.none"]
    health = http().get(srv.url + "/v1/health", timeout=5).json()
    assert "retention" not in health["services"], health["services"].keys()


def test_a_session_a_message_reaches_during_the_sweep_stays(soma):
    n = 300
    srv = soma("retention.sessions_idle_s=86400", "retention.sweep_interval_s=1")
    sids = [f"ret-race-{i}" for i in range(n)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda sid: post_message(srv, "first", session_id=sid), sids))
    for sid in sids[::50]:
        wait_terminal(srv, sid, timeout=30)
    time.sleep(1)
    # every session idle at once; the sweep (batches of 100) races with a message to each of them
    store_exec(srv.data_dir, f"UPDATE sessions SET updated_ms = updated_ms - {2 * DAY_MS} "
               "WHERE id LIKE 'ret-race-%'")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        acked = list(pool.map(lambda sid: post_message(srv, f"second {sid}", session_id=sid), sids))
    wait_until(lambda: not store_query(srv.data_dir, "SELECT 1 FROM sessions WHERE updated_ms < ?",
                                       (int(time.time() * 1000) - DAY_MS,)), 20, what="the sweep to settle")
    time.sleep(1.5)
    lost = []
    for sid, out in zip(sids, acked):
        r = http().get(f"{srv.url}/v1/sessions/{sid}/history", timeout=5)
        ids = [e.get("event_id") for e in r.json()["events"]] if r.status_code == 200 else []
        if out["event_id"] not in ids:
            lost.append(sid)
    assert not lost, f"{len(lost)} acknowledged message(s) lost to the sweep: {lost[:5]}"
    swept = _deleted(srv, "sessions")
    print(f"sessions swept before their message: {swept} of {n}")
