"""Out of file descriptors: the gateway rests its listener instead of spinning on accept().

On EMFILE the pending connection stays in the kernel's backlog, so the listening socket stays
readable; a listener left enabled fires again at once, forever (a full core, a log line per try).
"""

import os
import resource
import socket
import time

import pytest

from e2e_util import wait_until

# store_neutral: the listener and the process's fd limit, below any route that reads the store
pytestmark = pytest.mark.store_neutral

FD_LIMIT = 128  # soft and hard: the server cannot raise it


def _low_fd_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def _cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _health_ok(srv):
    try:
        with socket.create_connection((srv.host, srv.port), timeout=2) as s:
            s.settimeout(2)
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def test_out_of_fds_rests_the_listener_then_serves_again(soma):
    srv = soma("http.io_threads=2", "http.idle_timeout_s=60", preexec_fn=_low_fd_limit)
    pid = srv.proc.pid
    used = len(os.listdir(f"/proc/{pid}/fd"))
    assert used < FD_LIMIT - 10, f"the server already holds {used} of {FD_LIMIT} fds"
    clients = []
    try:
        for _ in range(FD_LIMIT - used + 40):  # more connections than the server has fds left
            clients.append(socket.create_connection((srv.host, srv.port), timeout=5))
        srv.wait_log(lambda o: "accept failed" in o.get("msg", ""), timeout=5, what="the accept failure")
        time.sleep(0.3)
        cpu0, log0 = _cpu_s(pid), os.path.getsize(srv.log_path)
        time.sleep(2.0)
        cpu = _cpu_s(pid) - cpu0
        grown = os.path.getsize(srv.log_path) - log0
        assert cpu < 0.5, f"the server used {cpu:.2f} s of CPU in 2 s while out of fds (spinning on accept)"
        assert grown < 4096, f"the log grew by {grown} bytes in 2 s while out of fds"
        failures = [o for o in srv.logs_quiet() if "accept failed" in o.get("msg", "")]
        assert len(failures) <= 2, f"{len(failures)} accept-failure lines: one per thread per 10 s expected"
        assert srv.proc.poll() is None, srv.log_text()
    finally:
        for c in clients:
            c.close()
    wait_until(lambda: _health_ok(srv), timeout=10, what="/v1/health 200 once the clients closed")
