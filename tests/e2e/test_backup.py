"""`somaagent backup` / `restore` on the embedded store: a backup taken while chat messages and
uploads keep arriving, restored into a fresh data.dir, serves every message acknowledged before the
backup began and every file byte for byte, and the restored server answers a new message. A file
the database names but data.dir lacks fails the backup (exit 1, listed; no manifest), a non-empty
DEST is refused (exit 2), and so is a restore of a newer schema or into a data.dir in use.
On PostgreSQL both commands refuse (exit 2) and name pg_dump / pg_restore."""

import hashlib
import json
import os
import sqlite3
import threading
import time

import httpx
import pytest

import e2e_util
from e2e_util import describe, history, post_message, run_cli, wait_terminal, wait_until

sqlite_only = pytest.mark.sqlite_only


class Load:
    """Messages and uploads posted from two threads until stop(); what was acknowledged, when."""

    def __init__(self, srv):
        self.srv = srv
        self.acked = []  # (monotonic time of the answer, kind, details)
        self.errors = []
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._chat, self._uploads)]
        for t in self.threads:
            t.start()

    def _note(self, kind, item):
        with self.lock:
            self.acked.append((time.monotonic(), kind, item))

    def _chat(self):
        i = 0
        with httpx.Client(timeout=10) as c:
            while not self.halt.is_set():
                sid = f"load-{i % 4}"
                r = c.post(f"{self.srv.url}/v1/session/message", json={"session_id": sid, "message": f"m{i}"})
                if r.status_code != 200:
                    self.errors.append(r.text)
                else:
                    self._note("message", (sid, r.json()["event_id"]))
                i += 1

    def _uploads(self):
        i = 0
        with httpx.Client(timeout=10) as c:
            while not self.halt.is_set():
                body = os.urandom(2000 + i * 37)
                r = c.post(f"{self.srv.url}/v1/uploads", files=[("files", (f"f{i}.bin", body, "application/zip"))])
                if r.status_code != 200:
                    self.errors.append(r.text)
                else:
                    f = r.json()[0]
                    sid = f"up-{i % 3}"
                    r = c.post(f"{self.srv.url}/v1/session/message",
                               json={"session_id": sid, "message": f"file {i}", "attachments": [f["id"]]})
                    self._note("file", (f["path"], body))
                    if r.status_code == 200:
                        self._note("message", (sid, r.json()["event_id"]))
                i += 1

    def before(self, t):
        with self.lock:
            return [(kind, item) for when, kind, item in self.acked if when < t]

    def stop(self):
        self.halt.set()
        for t in self.threads:
            t.join(20)
        assert not self.errors, self.errors[:3]


def backup(data, dest, cwd):
    return run_cli(["backup", str(dest), "--set", f"data.dir={data}"], cwd, timeout=60)


def restore(src, data, cwd):
    return run_cli(["restore", str(src), "--set", f"data.dir={data}"], cwd, timeout=60)


@sqlite_only
def test_online_backup_restores_every_acknowledged_message_and_file(soma, llm, tmp_path):
    srv = soma()
    load = Load(srv)
    try:
        wait_until(lambda: len(load.before(time.monotonic())) >= 40, 30, what="some load acknowledged")
        started = time.monotonic()
        cp = backup(srv.data_dir, tmp_path / "bk", tmp_path)
        assert cp.returncode == 0, describe(cp)
        time.sleep(0.3)  # the load goes on after the backup too
    finally:
        load.stop()
    wanted = load.before(started)
    assert len(load.before(time.monotonic())) > len(wanted)  # acknowledged while the backup ran, or after
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["driver"] == "sqlite" and manifest["binary_version"]
    files = [item for kind, item in wanted if kind == "file"]
    assert manifest["blobs"]["count"] >= len(files) > 0
    assert manifest["blobs"]["linked"] == manifest["blobs"]["count"]  # the same filesystem: hard links
    assert manifest["counts"]["events"] >= sum(kind == "message" for kind, _ in wanted)
    assert srv.proc.poll() is None  # the server ran throughout; its data.dir lock was not taken
    srv.stop()

    fresh = tmp_path / "restored"
    cp = restore(tmp_path / "bk", fresh, tmp_path)
    assert cp.returncode == 0, describe(cp)
    srv2 = soma(data_dir=fresh)
    seen = {}
    for kind, (sid, event_id) in ((k, i) for k, i in wanted if k == "message"):
        if sid not in seen:
            seen[sid] = {e.get("event_id") for e in history(srv2, sid, limit=1000)}
        assert event_id in seen[sid], f"{event_id} of {sid}, acknowledged before the backup, is not in its history"
    for path, body in files:
        r = httpx.get(srv2.url + path, timeout=10)
        assert r.status_code == 200 and r.content == body, (path, r.status_code)
    sid = post_message(srv2, "are you there after the restore?")["session_id"]
    assert wait_terminal(srv2, sid)[-1]["type"] == "assistant.final"


@sqlite_only
def test_missing_file_fails_the_backup_and_dest_must_be_empty(soma, tmp_path):
    srv = soma()
    r = httpx.post(f"{srv.url}/v1/uploads", files=[("files", ("gone.txt", b"soon gone\n", "text/plain"))], timeout=10)
    assert r.status_code == 200, r.text
    f = r.json()[0]
    os.remove(os.path.join(srv.data_dir, "blobs", f["sha256"][:2], f["sha256"]))
    cp = backup(srv.data_dir, tmp_path / "bk", tmp_path)
    assert cp.returncode == 1 and f"missing: {f['sha256']}" in cp.stderr, describe(cp)
    assert not (tmp_path / "bk" / "manifest.json").exists()
    cp = restore(tmp_path / "bk", tmp_path / "fresh", tmp_path)  # an unfinished backup
    assert cp.returncode == 2 and "not a finished somaagent backup" in cp.stderr, describe(cp)

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    cp = backup(srv.data_dir, full, tmp_path)
    assert cp.returncode == 2 and "is not empty" in cp.stderr, describe(cp)
    assert os.listdir(full) == ["keep.txt"]


@sqlite_only
def test_offline_backup_restore_refusals(tmp_path):
    data = tmp_path / "data"
    cp = run_cli(["migrate", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    latest = int(cp.stdout.rsplit(" ", 1)[1])
    cp = backup(data, tmp_path / "bk", tmp_path)  # no server: the same
    assert cp.returncode == 0, describe(cp)
    # into a data.dir that has a database: refused, nothing touched
    cp = restore(tmp_path / "bk", data, tmp_path)
    assert cp.returncode == 2 and "already holds a database" in cp.stderr, describe(cp)
    # a backup of a newer schema: refused, data.dir left without a database
    db = sqlite3.connect(tmp_path / "bk" / "somaagent.db")
    db.execute(f"INSERT INTO schema_migrations VALUES ({latest + 1}, 'future.sql', 0)")
    db.commit()
    db.close()
    m = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    m["schema_version"] = latest + 1
    (tmp_path / "bk" / "manifest.json").write_text(json.dumps(m))
    cp = restore(tmp_path / "bk", tmp_path / "fresh", tmp_path)
    assert cp.returncode == 2 and f"schema {latest + 1}, newer than this binary knows ({latest})" in cp.stderr, \
        describe(cp)
    assert not (tmp_path / "fresh" / "somaagent.db").exists()


def test_postgres_is_refused_with_the_procedure(tmp_path):
    url = e2e_util.store_url(tmp_path / "data") or "postgresql://u@127.0.0.1:1/db"
    cp = run_cli(["backup", str(tmp_path / "bk"), "--set", f"store.url={url}"], tmp_path)
    assert cp.returncode == 2 and "pg_dump" in cp.stderr, describe(cp)
    cp = run_cli(["restore", str(tmp_path / "bk"), "--set", f"store.url={url}"], tmp_path)
    assert cp.returncode == 2 and "pg_restore" in cp.stderr, describe(cp)


def offline_backup(tmp_path, bodies):
    """A migrated data.dir whose attachments rows name bodies (stored in its blobs), backed up to
    tmp_path/bk without a server; the bodies' SHA-256s, in order."""
    data = tmp_path / "data"
    cp = run_cli(["migrate", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    db = sqlite3.connect(data / "somaagent.db")
    shas = []
    for i, body in enumerate(bodies):
        sha = hashlib.sha256(body).hexdigest()
        (data / "blobs" / sha[:2]).mkdir(parents=True, exist_ok=True)
        (data / "blobs" / sha[:2] / sha).write_bytes(body)
        db.execute("INSERT INTO attachments VALUES (?, 't', NULL, ?, 'text/plain', ?, ?, 0)",
                   (f"att-{i}", f"f{i}.txt", len(body), sha))
        shas.append(sha)
    db.commit()
    db.close()
    cp = backup(data, tmp_path / "bk", tmp_path)
    assert cp.returncode == 0, describe(cp)
    return shas


def written(data):
    """What a restore left in data: every file or symlink but the data.dir lock."""
    found = []
    for root, dirs, files in os.walk(data):
        found += [os.path.join(root, n) for n in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]]
    return sorted(f for f in found if os.path.basename(f) != "somaagent.lock")


@sqlite_only
@pytest.mark.parametrize("kind", ["absolute", "relative", "dir"])
def test_restore_refuses_a_symlinked_blob(tmp_path, kind):
    """A blob (or a blobs/<aa> directory) that is a symlink is refused: linked as it is, it would
    serve a host file as an upload, or resolve to other bytes from data.dir."""
    shas = offline_backup(tmp_path, [b"good\n"])
    bk, dst = tmp_path / "bk", tmp_path / "dst"
    dst.mkdir()
    if kind == "absolute":  # a host file, named by its own SHA-256
        (tmp_path / "outside.txt").write_bytes(b"secret\n")
        s = hashlib.sha256(b"secret\n").hexdigest()
        (bk / "blobs" / s[:2]).mkdir(exist_ok=True)
        os.symlink(tmp_path / "outside.txt", bk / "blobs" / s[:2] / s)
    elif kind == "relative":  # right bytes in the backup, others once moved into data.dir
        (bk / "good").write_bytes(b"good\n")
        (dst / "good").write_bytes(b"EVIL\n")
        os.remove(bk / "blobs" / shas[0][:2] / shas[0])
        os.symlink("../../good", bk / "blobs" / shas[0][:2] / shas[0])
    else:
        os.rename(bk / "blobs" / shas[0][:2], tmp_path / "elsewhere")
        os.symlink(tmp_path / "elsewhere", bk / "blobs" / shas[0][:2])
    cp = restore(bk, dst, tmp_path)
    assert cp.returncode == 1 and "symlink" in cp.stderr, describe(cp)
    assert written(dst) == ([str(dst / "good")] if kind == "relative" else []), written(dst)


@sqlite_only
def test_restore_checks_every_named_blob_before_writing_and_can_be_retried(tmp_path):
    """A blob the database names that is missing (a partial copy) or damaged fails the restore
    (exit 1, listed) before anything is written into data.dir; put right, the same restore works."""
    bodies = [b"first\n", b"second\n", b"third\n"]
    shas = offline_backup(tmp_path, bodies)
    bk, dst = tmp_path / "bk", tmp_path / "dst"
    gone = bk / "blobs" / shas[1][:2] / shas[1]
    os.remove(gone)
    (bk / "blobs" / shas[2][:2] / shas[2]).write_bytes(b"third, altered\n")
    cp = restore(bk, dst, tmp_path)
    assert cp.returncode == 1, describe(cp)
    assert f"missing: {shas[1]}" in cp.stderr and f"damaged: {shas[2]}" in cp.stderr, describe(cp)
    assert "see above" in cp.stderr and "File exists" not in cp.stderr, describe(cp)
    assert written(dst) == [], written(dst)

    gone.write_bytes(bodies[1])
    (bk / "blobs" / shas[2][:2] / shas[2]).write_bytes(bodies[2])
    cp = restore(bk, dst, tmp_path)
    assert cp.returncode == 0 and "3 upload file(s)" in cp.stdout, describe(cp)
    for sha, body in zip(shas, bodies):
        assert (dst / "blobs" / sha[:2] / sha).read_bytes() == body
    assert (dst / "somaagent.db").exists()


@sqlite_only
def test_a_restore_that_fails_while_writing_removes_what_it_wrote(tmp_path):
    """The blobs are in, then the database cannot be put (its temp name is taken by a directory):
    the blobs this run linked are removed, so the same restore can be run again."""
    shas = offline_backup(tmp_path, [b"one\n", b"two\n"])
    dst = tmp_path / "dst"
    (dst / "somaagent.db.restoring").mkdir(parents=True)
    cp = restore(tmp_path / "bk", dst, tmp_path)
    assert cp.returncode == 1 and "what it had written is removed" in cp.stderr, describe(cp)
    assert written(dst) == [] and not (dst / "blobs").exists(), written(dst)
    (dst / "somaagent.db.restoring").rmdir()
    cp = restore(tmp_path / "bk", dst, tmp_path)
    assert cp.returncode == 0, describe(cp)
    assert sorted(p.name for p in (dst / "blobs").glob("*/*")) == sorted(shas)
