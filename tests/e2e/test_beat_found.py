"""Beat: bugs found by review, each a reproduction that failed before its fix.

- beat.max_catchup=0 published nothing: the on-time run was counted as a late one;
- catch-up published the oldest missed runs and skipped the newest (the docs say older are skipped);
- a schedule whose timing was edited between restarts published every slot since its old watermark;
- a cron that never fires (30 February) was accepted at start with next_run_at null;
- a leader cut off from Redis kept publishing while its lock looked valid: the next leader
  published the same run again;
- two replicas with the same celery.nodename and PID (PID 1 in containers) could both lead."""

import calendar
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import e2e_util
from e2e_util import start_server, wait_until
from servers import RedisServer
from test_beat import published, run_ids, schedule_file, schedules


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as r:
        yield r


def test_max_catchup_zero_publishes_the_newest_run(soma, tmp_path):
    path = schedule_file(tmp_path, [{"name": "tick", "task": "soma.noop", "every_s": 1}])
    srv = soma(f"beat.schedule_file={path}", "beat.max_catchup=0")
    wait_until(lambda: schedules(srv)["schedules"][0]["last_run_at"], 10, interval=0.1,
               what="a run with beat.max_catchup=0")
    srv.stop()
    assert run_ids(srv.data_dir, "tick")


def test_catchup_publishes_the_newest_missed_runs(soma, tmp_path):
    path = schedule_file(tmp_path, [{"name": "tick", "task": "soma.noop", "every_s": 1}])
    d = tmp_path / "node"
    srv = soma(f"beat.schedule_file={path}", "beat.max_catchup=2", data_dir=d)
    wait_until(lambda: schedules(srv)["schedules"][0]["last_run_at"], 5, interval=0.1)
    srv.stop()
    before = set(run_ids(d, "tick"))
    time.sleep(6)  # six or more runs are missed while no node runs
    srv2 = soma(f"beat.schedule_file={path}", "beat.max_catchup=2", data_dir=d)
    started = int(time.time())
    wait_until(lambda: published(srv2, "tick"), 5, interval=0.1, what="the catch-up")
    first = min(published(srv2, "tick"))
    srv2.stop()
    after = sorted(set(run_ids(d, "tick")) - before)
    assert max(before) + 1 not in after, f"the oldest missed run was published: {after}"
    assert first >= started - 3, f"the catch-up started at {first}, not at the newest runs (started {started})"
    assert after == list(range(after[0], after[-1] + 1)), f"a run between the newest ones was skipped: {after}"


def test_edited_schedule_starts_from_now(soma, tmp_path):
    """The watermark a daily job (cron 0 3 * * *) left, the job edited to every 5 minutes: no burst
    of every 5-minute slot since 03:00."""
    now = int(time.time())
    t = time.gmtime(now)
    last3 = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 3, 0, 0))
    if last3 > now - 3600:
        last3 -= 86400
    d = tmp_path / "node"
    d.mkdir()
    (d / "beat-state.json").write_text(json.dumps({"job": last3, "job@ran": last3}))
    path = schedule_file(tmp_path, [{"name": "job", "task": "soma.noop", "cron": "*/5 * * * *"}])
    srv = soma(f"beat.schedule_file={path}", data_dir=d)
    wait_until(lambda: json.loads((d / "beat-state.json").read_text())["job"] != last3, 5, interval=0.1,
               what="the edited schedule's new watermark")
    time.sleep(1)  # a burst would go on in the next ticks
    srv.stop()
    ids = run_ids(d, "job")
    assert len(ids) <= 1, f"{len(ids)} runs of the edited schedule published at once"
    assert json.loads((d / "beat-state.json").read_text())["job"] >= now


def test_cron_that_never_fires_stops_start(soma, tmp_path):
    path = schedule_file(tmp_path, [{"name": "feb30", "task": "soma.noop", "cron": "0 0 30 2 *"}])
    with pytest.raises(AssertionError, match="schedule \"feb30\" has a cron .* that never fires"):
        soma(f"beat.schedule_file={path}")


class Proxy:
    """TCP proxy to Redis that can be cut (every connection dropped, new ones closed at once)."""

    def __init__(self, target_port):
        self.target = target_port
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.up = True
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            if not self.up:
                c.close()
                continue
            u = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [c, u]
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _pump(self, a, b):
        try:
            while self.up:
                r, _, _ = select.select([a, b], [], [], 0.2)
                for s in r:
                    d = s.recv(65536)
                    if not d:
                        raise OSError
                    (b if s is a else a).sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        self.up = False
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_leader_cut_from_redis_stops_publishing(soma, tmp_path, redis_server):
    """The leader's link to Redis is cut while its lock (10 s) still looks valid: it publishes
    nothing more, so the node that takes over publishes no run a second time (each node has its
    own store here, so a run published twice would be two tasks)."""
    rc = redis_server.client()
    rc.flushdb()
    port = int(redis_server.url().rsplit(":", 1)[1].split("/")[0])
    px = Proxy(port)
    path = schedule_file(tmp_path, [{"name": "pulse", "task": "soma.noop", "every_s": 1}])
    sets = (f"beat.schedule_file={path}", "beat.lock_ttl_ms=10000", "queue.driver=local")
    a = soma(*sets, f"redis.url=redis://127.0.0.1:{px.port}/0", "celery.nodename=soma@beat-a",
             data_dir=tmp_path / "a")
    wait_until(lambda: schedules(a)["is_leader"], 10, interval=0.1, what="a leads")
    b = soma(*sets, f"redis.url={redis_server.url()}", "celery.nodename=soma@beat-b", data_dir=tmp_path / "b")
    wait_until(lambda: published(a, "pulse"), 5, interval=0.1, what="a publishes")
    assert not schedules(b)["is_leader"]
    px.cut()
    wait_until(lambda: schedules(b)["is_leader"], 20, interval=0.1, what="b takes over")
    wait_until(lambda: len(published(b, "pulse")) >= 2, 5, interval=0.1, what="b publishes")
    runs = published(a, "pulse") + published(b, "pulse")
    doubled = sorted({t for t in runs if runs.count(t) > 1})
    a.stop()
    b.stop()
    both = set(run_ids(tmp_path / "a", "pulse")) & set(run_ids(tmp_path / "b", "pulse"))
    assert not doubled and not both, f"published by both nodes: {doubled} {sorted(both)}"


def can_unshare():
    return shutil.which("unshare") and subprocess.run(["unshare", "-pf", "--kill-child", "true"],
                                                      capture_output=True).returncode == 0


@pytest.mark.skipif(not can_unshare(), reason="needs unshare -p (PID namespaces)")
def test_same_nodename_same_pid_one_leader(tmp_path, redis_server, llm):
    """Two replicas with the same celery.nodename, each PID 1 in its own PID namespace: after the
    leader stalls past the lock's expiry the other takes over, and the stalled one, resumed, does
    not renew the other's lock as its own (both would lead and publish every run twice)."""
    rc = redis_server.client()
    rc.flushdb()
    wrapper = tmp_path / "wrap.sh"
    wrapper.write_text(f"#!/bin/sh\nexec unshare -pf --kill-child {e2e_util.BIN} \"$@\"\n")
    wrapper.chmod(0o755)
    path = schedule_file(tmp_path, [{"name": "pulse", "task": "soma.noop", "every_s": 1}])
    sets = (f"beat.schedule_file={path}", f"redis.url={redis_server.url()}", "queue.driver=local",
            "celery.nodename=soma@worker", "beat.lock_ttl_ms=2000")
    old = e2e_util.BIN
    srvs = []
    try:
        e2e_util.BIN = str(wrapper)
        for n in ("a", "b"):
            srvs.append(start_server(tmp_path, sets=sets, data_dir=tmp_path / n))
    finally:
        e2e_util.BIN = old

    def child(s):
        return int(open(f"/proc/{s.proc.pid}/task/{s.proc.pid}/children").read().split()[0])

    try:
        st = wait_until(lambda: (x := [schedules(s) for s in srvs]) and any(y["is_leader"] for y in x) and x, 10,
                        interval=0.1, what="a leader")
        assert st[0]["node"].split(":")[:2] == st[1]["node"].split(":")[:2], "same nodename and pid"
        leader, other = (srvs[0], srvs[1]) if st[0]["is_leader"] else (srvs[1], srvs[0])
        os.kill(child(leader), signal.SIGSTOP)
        wait_until(lambda: schedules(other)["is_leader"], 10, interval=0.1, what="the other takes over")
        os.kill(child(leader), signal.SIGCONT)
        wait_until(lambda: not schedules(leader)["is_leader"], 10, interval=0.1, what="the stalled one steps down")
        n = len(published(other, "pulse"))
        wait_until(lambda: len(published(other, "pulse")) >= n + 2, 10, interval=0.1, what="two more runs")
        assert not schedules(leader)["is_leader"]
    finally:
        for s in srvs:
            s.checked = True
            os.kill(child(s), signal.SIGTERM)
            s.proc.wait(15)
    a, b = set(run_ids(tmp_path / "a", "pulse")), set(run_ids(tmp_path / "b", "pulse"))
    assert not (a & b), f"runs published by both: {sorted(a & b)}"
