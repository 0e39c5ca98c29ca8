"""Fixtures for the end-to-end tests of the somaagent binary (env SOMA_BIN, default
<repo>/build-san/somaagent). Each server gets a free loopback port and its own data dir; on
teardown it gets SIGTERM and must exit 0 within 15 s (an ASan leak report fails that)."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# httpx honours proxy variables; the tests talk to loopback only
for _var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
    os.environ.pop(_var, None)

from e2e_util import BIN, Server, start_server  # noqa: E402


def pytest_configure(config):
    if not os.access(BIN, os.X_OK):
        raise pytest.UsageError(f"somaagent binary not found at {BIN}; build it or set SOMA_BIN")


def _teardown(servers):
    failures = []
    for srv in servers:
        if srv.checked:
            if srv.proc.poll() is None:  # a test that checked its own exit left nothing behind
                srv.proc.kill()
                srv.proc.wait()
            continue
        try:
            srv.stop(timeout=15, expect=0)
        except AssertionError as e:
            failures.append(str(e))
    if failures:
        pytest.fail("server teardown failed:\n" + "\n\n".join(failures), pytrace=False)


@pytest.fixture
def soma(tmp_path):
    """start(*sets, env=None, role=None, ...) -> Server, run in tmp_path (cwd and data dir)."""
    servers = []

    def start(*sets, **kw):
        srv = start_server(tmp_path, sets=sets, **kw)
        servers.append(srv)
        return srv

    yield start
    _teardown(servers)


@pytest.fixture(scope="module")
def module_soma(tmp_path_factory):
    """Like soma, shared by the tests of one module (each call starts a server)."""
    servers = []

    def start(*sets, **kw):
        tmp = tmp_path_factory.mktemp("srv")
        srv = start_server(tmp, sets=sets, **kw)
        servers.append(srv)
        return srv

    yield start
    _teardown(servers)


@pytest.fixture
def server(soma) -> Server:
    """A server on the defaults."""
    return soma()
