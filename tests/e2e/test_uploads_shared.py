"""Files named by several sessions of a tenant: deleting a session deletes a file (and the sweep
its bytes) only when no other session of the tenant still names it; otherwise the file stays, now
the file of a session that names it, and goes with the last of them. Both stores."""

import os
import time

import httpx

from e2e_util import STORE, check_envelope, post_message, store_exec, wait_until

SWEEP = ("uploads.sweep_interval_s=1", "uploads.orphan_grace_s=0", "health.interval_ms=200")


def upload(srv, name, body, session_id=None):
    data = {"session_id": session_id} if session_id else {}
    r = httpx.post(f"{srv.url}/v1/uploads", files=[("files", (name, body, "text/plain"))], data=data, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()[0]


def blobs(data_dir):
    out = []
    for root, _dirs, names in os.walk(os.path.join(data_dir, "blobs")):
        out += [n for n in names if not n.startswith(".tmp")]
    return sorted(out)


def delete(srv, sid):
    assert httpx.delete(f"{srv.url}/v1/sessions/{sid}", timeout=10).status_code == 200


def named_in(srv, sid):
    hist = httpx.get(f"{srv.url}/v1/sessions/{sid}/history", timeout=10).json()
    return [a for e in hist["events"] for a in e.get("attachments") or []]


def still_there(srv, f, body):
    r = httpx.get(f"{srv.url}{f['path']}", timeout=10)
    assert r.status_code == 200 and r.content == body, (r.status_code, r.text[:200])
    time.sleep(2.5)  # two sweeps: its bytes stay too
    assert f["sha256"] in blobs(srv.data_dir)


def gone(srv, f):
    check_envelope(httpx.get(f"{srv.url}{f['path']}", timeout=10), 404)
    wait_until(lambda: f["sha256"] not in blobs(srv.data_dir), 10, what="the file's bytes swept")


def test_deleting_the_first_session_naming_a_file_keeps_it_for_the_other(soma):
    srv = soma(*SWEEP)
    body = b"shared by two chats\n"
    f = upload(srv, "shared.txt", body)
    post_message(srv, "first", session_id="sh-a", attachments=[f["id"]])
    post_message(srv, "second", session_id="sh-b", attachments=[f["id"]])
    delete(srv, "sh-a")
    assert named_in(srv, "sh-b") == [f["id"]]
    still_there(srv, f, body)
    delete(srv, "sh-b")  # the last session naming it
    gone(srv, f)


def test_a_file_uploaded_into_a_session_and_named_in_another(soma):
    srv = soma(*SWEEP)
    body = b"uploaded into a, named in b\n"
    post_message(srv, "hello", session_id="up-a")
    f = upload(srv, "into-a.txt", body, session_id="up-a")
    assert f["session_id"] == "up-a"
    post_message(srv, "see", session_id="up-b", attachments=[f["id"]])
    delete(srv, "up-a")
    still_there(srv, f, body)
    delete(srv, "up-b")
    gone(srv, f)


def test_a_file_one_session_names_goes_with_it(soma):
    srv = soma(*SWEEP)
    f = upload(srv, "one.txt", b"named once\n")
    post_message(srv, "one", session_id="one-a", attachments=[f["id"]])
    post_message(srv, "again", session_id="one-a", attachments=[f["id"]])
    delete(srv, "one-a")
    gone(srv, f)


def test_a_reset_session_names_no_file(soma):
    """A reset deletes the history, not the files; a session whose history is gone no longer
    keeps another session's file."""
    srv = soma(*SWEEP)
    body = b"named by a reset chat\n"
    f = upload(srv, "reset.txt", body)
    post_message(srv, "first", session_id="rs-a", attachments=[f["id"]])
    post_message(srv, "second", session_id="rs-b", attachments=[f["id"]])
    assert httpx.post(f"{srv.url}/v1/sessions/rs-a/reset", timeout=10).status_code == 200
    assert httpx.get(f"{srv.url}{f['path']}", timeout=10).content == body  # still rs-a's
    assert httpx.post(f"{srv.url}/v1/sessions/rs-b/reset", timeout=10).status_code == 200
    delete(srv, "rs-a")  # rs-b's history is gone: nothing names it any more
    gone(srv, f)


def test_messages_stored_before_the_migration_keep_their_files(soma):
    """The migration that adds the references fills them from the messages stored before it."""
    srv = soma(*SWEEP)
    body = b"named before the upgrade\n"
    f = upload(srv, "old.txt", body)
    post_message(srv, "first", session_id="mg-a", attachments=[f["id"]])
    post_message(srv, "second", session_id="mg-b", attachments=[f["id"]])
    srv.stop()
    # the store as the build before left it: no reference table, its migration not applied
    store_exec(srv.data_dir, "DROP TABLE attachment_refs")
    # (the references' migration: SQLite 0013, PostgreSQL 0009; those after it run again too)
    first = 9 if STORE == "postgres" else 13
    store_exec(srv.data_dir, f"DELETE FROM schema_migrations WHERE version >= {first}")
    srv = soma(*SWEEP, data_dir=srv.data_dir)
    delete(srv, "mg-a")
    still_there(srv, f, body)
    delete(srv, "mg-b")
    gone(srv, f)
