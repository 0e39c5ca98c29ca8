"""The files of deleted attachments leave data.dir (src/gateway/blob_sweep.c): deleting a session
deletes its attachment rows, and the sweep removes each stored file no attachment names any more
once it is older than uploads.orphan_grace_s - a file another session still names stays, and
the deleted file is not served. Runs on both stores."""

import hashlib
import os
import time

import httpx

from e2e_util import post_message, wait_until


def upload(srv, session_id, name, data):
    r = httpx.post(f"{srv.url}/v1/uploads", files=[("files", (name, data, "text/plain"))],
                   data={"session_id": session_id}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()[0]["id"]


def blob_path(srv, data):
    sha = hashlib.sha256(data).hexdigest()
    return os.path.join(srv.data_dir, "blobs", sha[:2], sha)


def test_a_deleted_session_s_files_leave_data_dir(soma):
    srv = soma("uploads.sweep_interval_s=1", "uploads.orphan_grace_s=0", "health.interval_ms=200")
    secret, shared = b"private notes of s1 only\n" * 20, b"a file both sessions hold\n" * 20
    for sid in ("sweep-s1", "sweep-s2"):
        post_message(srv, "hello", session_id=sid)
    upload(srv, "sweep-s1", "secret.txt", secret)
    upload(srv, "sweep-s1", "shared.txt", shared)
    kept = upload(srv, "sweep-s2", "shared.txt", shared)
    assert os.path.exists(blob_path(srv, secret)) and os.path.exists(blob_path(srv, shared))
    time.sleep(1.5)  # sweeps ran: every file is named by an attachment, none goes
    assert os.path.exists(blob_path(srv, secret)) and os.path.exists(blob_path(srv, shared))
    r = httpx.delete(f"{srv.url}/v1/sessions/sweep-s1", timeout=10)
    assert r.status_code == 200, r.text
    wait_until(lambda: not os.path.exists(blob_path(srv, secret)), 10, what="the deleted session's file removed")
    assert os.path.exists(blob_path(srv, shared)), "a file another session names stays"
    r = httpx.get(f"{srv.url}/v1/attachments/{kept}", timeout=10)
    assert r.status_code == 200 and r.content == shared, r.status_code
    assert "removed 1 upload file" in srv.log_text()


def test_a_file_younger_than_the_grace_stays(soma):
    srv = soma("uploads.sweep_interval_s=1", "health.interval_ms=200")  # grace: the default hour
    data = b"kept for the grace period\n" * 10
    post_message(srv, "hello", session_id="grace-s1")
    upload(srv, "grace-s1", "a.txt", data)
    assert httpx.delete(f"{srv.url}/v1/sessions/grace-s1", timeout=10).status_code == 200
    time.sleep(2.5)  # two sweeps at least
    assert os.path.exists(blob_path(srv, data)), "an unnamed file within the grace stays"
