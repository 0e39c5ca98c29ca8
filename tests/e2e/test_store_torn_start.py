"""A power cut during the very first commit (src/store/sqlite_wal_check.c).

SQLite spills a big transaction's pages to the WAL before it commits; a crash then leaves a WAL of
uncommitted frames on an empty database. The start refused it (exit 2, "data and API keys lost")
though nothing was ever committed. Now it starts (nothing to lose: SQLite ignores those frames);
only a WAL holding at least one valid commit frame on a database without tables is refused."""

import os
import subprocess
import sys

import pytest

from e2e_util import http, post_message, start_server

pytestmark = pytest.mark.store_neutral  # (SQLite whatever the run's store: store.url= below)


def _crash_writing(d, commit):
    """A process that writes 1.5 MB in one transaction (spilled to the WAL), commits it or not, and
    dies without a checkpoint."""
    os.makedirs(d)
    code = f"""
import sqlite3, os
c = sqlite3.connect({str(d / 'somaagent.db')!r}, isolation_level=None)
c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA cache_size=10')
c.execute('BEGIN'); c.execute('CREATE TABLE t(x)')
for i in range(3000): c.execute('INSERT INTO t VALUES (?)', ('y'*500,))
if {commit!r}: c.execute('COMMIT')
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torn_first_start_starts_again(tmp_path):
    d = tmp_path / "data"
    _crash_writing(d, commit=False)  # the power cut: the transaction never commits
    assert (d / "somaagent.db-wal").stat().st_size > 100000, "the WAL holds the spilled, uncommitted pages"
    srv = start_server(tmp_path, sets=("store.url=",), data_dir=d, timeout=20)  # raises on an exit
    try:
        sid = post_message(srv, "after a torn first start")["session_id"]
        assert http().get(f"{srv.url}/v1/sessions/{sid}/history", timeout=5).status_code == 200
        assert "no committed tables" not in srv.log_text()
    finally:
        srv.stop()


def test_a_committed_wal_beside_a_database_without_our_tables_is_refused(tmp_path):
    d = tmp_path / "data"
    _crash_writing(d, commit=True)  # committed data that lives in the WAL alone
    srv = start_server(tmp_path, sets=("store.url=",), data_dir=d, wait=False)
    try:
        rc = srv.wait_exit(timeout=15)
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
    srv.checked = True
    log = srv.log_text()
    assert rc == 2 and "no committed tables" in log, f"exit {rc}; log:\n{log}"
