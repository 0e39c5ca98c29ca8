"""A full disk under data.dir (a small tmpfs; root only: skipped where mount is refused).

Store writes answered 500 store_error "... retry" without Retry-After, "check disk space" was
only in the log, once per failed batch (a flood), and /v1/health said the store was ok. Now they
answer 507 storage_full with Retry-After, the store is degraded ("writes failing: disk full")
until a commit succeeds, and the log says so once in a while with a count.

A reply whose commit failed for the full disk ran again after the visibility timeout (5 minutes),
out of order, its LLM called twice. Now its commit is tried again in the process for a while:
freed within seconds, the reply lands promptly, once."""

import os
import subprocess
import time

import pytest

from e2e_util import history, http, post_message, wait_until

pytestmark = pytest.mark.store_neutral  # (SQLite whatever the run's store: store.url= below)


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if cp.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (root needed): {cp.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path):
    """Writes path until the disk is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def _store(srv):
    return http().get(f"{srv.url}/v1/health").json()["services"]["store"]


def _post_until_refused(srv, sid, n=400):
    for i in range(n):
        r = http().post(f"{srv.url}/v1/session/message", json={"session_id": sid, "message": f"{i} " + "x" * 4000})
        if r.status_code != 200:
            return r
    raise AssertionError("no write was refused on a full disk")


def test_disk_full_answers_507_and_degrades_the_store(small_disk, soma):  # (soma stops first)
    srv = soma("store.url=", "health.interval_ms=200", data_dir=small_disk / "data")
    sid = post_message(srv, "before")["session_id"]
    _fill(small_disk / "filler")
    r = _post_until_refused(srv, sid)
    assert r.status_code == 507, r.text
    assert r.json()["error"]["code"] == "storage_full" and "disk is full" in r.json()["error"]["message"], r.text
    assert int(r.headers["retry-after"]) > 0, r.headers
    wait_until(lambda: _store(srv)["status"] == "degraded", 5, interval=0.1, what="the store to be degraded")
    assert "disk full" in _store(srv)["detail"], _store(srv)
    for _ in range(20):  # more failed batches: no more log lines
        assert http().post(f"{srv.url}/v1/session/message", json={"session_id": sid, "message": "y" * 4000}).status_code == 507
    full_lines = [o for o in srv.logs_quiet() if o.get("level") == "error" and "full" in o.get("msg", "")]
    assert len(full_lines) <= 2, full_lines
    os.unlink(small_disk / "filler")
    post_message(srv, "after", session_id=sid)
    wait_until(lambda: _store(srv)["status"] == "ok", 15, interval=0.2, what="the store to be ok again")
    srv.stop()


def test_a_reply_whose_commit_met_a_full_disk_lands_once_space_is_freed(small_disk, soma, llm):
    srv = soma("store.url=", data_dir=small_disk / "data")
    llm.control(delay_ms=250, chunks=12)  # a reply of ~3 s
    sid = post_message(srv, "answer me")["session_id"]
    time.sleep(0.8)  # its first delta opened the reply
    _fill(small_disk / "filler")
    r = _post_until_refused(srv, "other")  # (and the WAL grows to the end of the disk)
    assert r.status_code in (500, 507), r.text
    time.sleep(4)  # the reply is done meanwhile, its commit failing
    os.unlink(small_disk / "filler")
    t0 = time.monotonic()
    evs = wait_until(lambda: [e for e in history(srv, sid) if e["type"] in ("assistant.final", "assistant.error")],
                     20, interval=0.2, what="the reply to land after space was freed")
    assert time.monotonic() - t0 < 15
    assert [e["type"] for e in evs] == ["assistant.final"], evs
    assert llm.stats()["requests"] == 1, llm.stats()
    srv.stop()
