"""The SQLite store's files changed under the server or before its start.

data.dir removed (rm -rf) under a running server: SQLite went on writing into the files it had
open, so messages got 200 and read back, /v1/health said ok, a second run started on the same
data.dir (the lock file went too), and at shutdown everything acknowledged was lost. Now the
store's health notices: store down (503 /v1/health), writes refused with 503 data_dir_removed,
an error logged.

A damaged WAL header at start: SQLite took the WAL for an empty one, so a crashed small install
(its data only in the WAL) started on a new empty database - sessions gone, API keys gone (so
loopback anonymous access reopened). Now the start refuses (exit 2) naming the files; and a quiet
writer's WAL is checkpointed, so its data reaches the main file."""

import shutil
import signal
import sqlite3

import pytest

from e2e_util import http, post_message, start_server, wait_until

pytestmark = pytest.mark.store_neutral  # (SQLite whatever the run's store: store.url= below)


def test_data_dir_removed_under_the_server_takes_the_store_down(soma):
    srv = soma("store.url=", "health.interval_ms=200")
    sid = post_message(srv, "before")["session_id"]
    shutil.rmtree(srv.data_dir)

    def store_down():
        r = http().get(f"{srv.url}/v1/health")
        return r if r.status_code == 503 and r.json()["services"]["store"]["status"] == "down" else None

    r = wait_until(store_down, 5, interval=0.1, what="/v1/health to say the store is down")
    assert "removed" in r.json()["services"]["store"]["detail"], r.text
    r = http().post(f"{srv.url}/v1/session/message", json={"session_id": sid, "message": "after"})
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "data_dir_removed" and "data.dir" in err["message"], r.text
    srv.wait_log(lambda o: o.get("level") == "error" and "removed" in o.get("msg", ""), what="the error line")
    srv.stop()


def _wal_db(srv):
    return srv.data_dir / "somaagent.db", srv.data_dir / "somaagent.db-wal"


def test_a_damaged_wal_header_refuses_to_start(soma, tmp_path):
    srv = soma("store.url=")
    sid = post_message(srv, "kept in the WAL")["session_id"]
    srv.signal(signal.SIGKILL)  # a crash: the WAL stays
    srv.proc.wait()
    srv.checked = True
    db, wal = _wal_db(srv)
    assert wal.stat().st_size > 0
    with open(wal, "r+b") as f:
        f.write(b"\0" * 8)
    (tmp_path / "again").mkdir()
    again = start_server(tmp_path / "again", sets=("store.url=",), data_dir=srv.data_dir, wait=False)
    try:
        rc = again.wait_exit(timeout=15)
    finally:
        if again.proc.poll() is None:  # (it started on an empty database)
            again.proc.kill()
            again.proc.wait()
    again.checked = True
    log = again.log_text()
    assert rc == 2, f"exit {rc}; log:\n{log}"
    assert str(wal) in log and "header is damaged" in log and "backup" in log, log
    assert "migration" not in log, log
    assert wal.read_bytes()[:8] == b"\0" * 8, "the damaged WAL was touched"
    assert sid


def test_a_quiet_writer_checkpoints_its_wal(soma):
    srv = soma("store.url=")
    sid = post_message(srv, "to the main file")["session_id"]
    db, wal = _wal_db(srv)

    def in_main_file():  # read the main file alone: a copy without the WAL
        copy = srv.data_dir.parent / "copy.db"
        shutil.copyfile(db, copy)
        try:
            con = sqlite3.connect(copy)
            try:
                return con.execute("SELECT count(*) FROM sessions WHERE id = ?", (sid,)).fetchone()[0] == 1
            except sqlite3.DatabaseError:
                return False
            finally:
                con.close()
        finally:
            copy.unlink()

    wait_until(in_main_file, 6, interval=0.2, what="the session to reach somaagent.db (a checkpoint)")
    srv.stop()
