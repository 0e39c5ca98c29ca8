"""Fixtures for the end-to-end tests of the somaagent binary (env SOMA_BIN, default
<repo>/build-san/somaagent). Each server gets a free loopback port and its own data dir; on
teardown it gets SIGTERM and must exit 0 within 15 s (an ASan leak report fails that).

The suite runs on the store SOMA_E2E_STORE names: "sqlite" (default) or "postgres", for which one
PostgreSQL serves the session and each server's data dir gets a database of its own (e2e_util
store_url); tests marked sqlite_only (they read the SQLite file itself) are skipped there.

One fake LLM provider (tests/fakes/llm/server.py) serves the whole session; the `llm` fixture
resets it for each test. Servers are configured to use it unless started with llm=False."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# httpx honours proxy variables; the tests talk to loopback only
for _var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
    os.environ.pop(_var, None)

import e2e_util  # noqa: E402
from e2e_util import BIN, STORE, FakeLLM, Server, start_server  # noqa: E402


def pytest_configure(config):
    if not os.access(BIN, os.X_OK):
        raise pytest.UsageError(f"somaagent binary not found at {BIN}; build it or set SOMA_BIN")
    if STORE not in ("sqlite", "postgres"):
        raise pytest.UsageError(f"SOMA_E2E_STORE={STORE!r}: expected sqlite or postgres")
    config.addinivalue_line("markers", "sqlite_only: reads the SQLite database file itself (skipped on postgres)")
    config.addinivalue_line("markers", "postgres_only: needs the PostgreSQL store (skipped on sqlite)")
    config.addinivalue_line("markers", "own_store: starts its own PostgreSQL whatever the run's store (so it runs "
                            "in the sqlite pass only: the postgres pass would repeat it unchanged)")
    config.addinivalue_line("markers", "store_neutral: what it checks does not involve the store beyond what the "
                            "rest of the suite covers on both (Celery peers, Redis recovery, the memory relay at "
                            "scale): it runs in the sqlite pass only, to keep `make test` short")


def pytest_report_header(config):
    return f"somaagent store: {STORE}"


def pytest_collection_modifyitems(config, items):
    skip = "sqlite_only" if STORE == "postgres" else "postgres_only"
    for item in items:
        if item.get_closest_marker(skip):
            item.add_marker(pytest.mark.skip(reason=f"{skip}: this run uses the {STORE} store"))
        elif STORE == "postgres" and item.get_closest_marker("own_store"):
            item.add_marker(pytest.mark.skip(reason="own_store: already ran, on its own PostgreSQL, in the sqlite pass"))
        elif STORE == "postgres" and item.get_closest_marker("store_neutral"):
            item.add_marker(pytest.mark.skip(reason="store_neutral: ran in the sqlite pass"))


def _memory_tmp(need=6 << 30):
    """/dev/shm when it has room for the session's PostgreSQL, else None (the default temp dir).
    Every data dir of the pass is a database of its own (~11 MB each, a few GB in all): on a disk,
    creating them cost ~0.5 s a test and removing them at the end over a minute."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) and st.f_bavail * st.f_frsize >= need else None


@pytest.fixture(scope="session", autouse=True)
def store_server():
    """On SOMA_E2E_STORE=postgres, the session's PostgreSQL (servers.PostgresServer); else None."""
    if STORE != "postgres":
        yield None
        return
    from servers import PostgresServer
    pg = PostgresServer(tmp_root=_memory_tmp())
    e2e_util.PG = pg
    yield pg
    e2e_util.PG = None
    pg.close()


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


@pytest.fixture(scope="session")
def fake_llm_session(tmp_path_factory):
    fake = FakeLLM(tmp_path_factory.mktemp("fake-llm"))
    yield fake
    fake.stop()


@pytest.fixture
def llm(fake_llm_session) -> FakeLLM:
    """The fake LLM provider, reset to its defaults (ok, 12 chunks, no delay) for this test."""
    assert fake_llm_session.proc.poll() is None, "the fake LLM died"
    fake_llm_session.reset()
    yield fake_llm_session
    fake_llm_session.reset()  # e.g. a sticky "hang" must not outlive its test


def _llm_sets(fake, llm_on):
    return tuple(fake.sets()) if llm_on else ()


@pytest.fixture
def soma(tmp_path, llm):
    """start(*sets, env=None, role=None, llm=True, ...) -> Server, run in tmp_path (cwd and data
    dir). llm=True points the server at the fake LLM (later --set values override); llm=False
    leaves the LLM unconfigured."""
    servers = []

    def start(*sets, llm=True, **kw):
        srv = start_server(tmp_path, sets=_llm_sets(llm_fake, llm) + tuple(sets), **kw)
        servers.append(srv)
        return srv

    llm_fake = llm
    yield start
    _teardown(servers)


@pytest.fixture(scope="module")
def module_soma(tmp_path_factory, fake_llm_session):
    """Like soma, shared by the tests of one module (each call starts a server)."""
    servers = []

    def start(*sets, llm=True, **kw):
        tmp = tmp_path_factory.mktemp("srv")
        srv = start_server(tmp, sets=_llm_sets(fake_llm_session, llm) + tuple(sets), **kw)
        servers.append(srv)
        return srv

    yield start
    _teardown(servers)


@pytest.fixture
def server(soma) -> Server:
    """A server on the defaults."""
    return soma()
