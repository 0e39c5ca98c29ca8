"""The fake OPA (tests/fakes/opa/server.py) for e2e tests: FakeOPA runs it on a free loopback port
loaded with the decision table (policy_table.json); the fixtures `opa_session` (one per module)
and `opa` (reset around each test) hand it to tests that import them."""

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from e2e_util import PYTHON, free_port

HERE = Path(__file__).resolve().parent
TABLE_PATH = HERE / "policy_table.json"
FAKE_OPA = HERE.parent / "fakes" / "opa" / "server.py"


class FakeOPA:
    """tests/fakes/opa/server.py on a free loopback port, loaded with the decision table."""

    def __init__(self, log_dir):
        self.log_path = Path(log_dir) / "fake-opa.log"
        for _ in range(5):
            self.port = free_port()
            with open(self.log_path, "wb") as logf:
                self.proc = subprocess.Popen([PYTHON, str(FAKE_OPA), "--port", str(self.port), "--table",
                                              str(TABLE_PATH)], stdin=subprocess.DEVNULL, stdout=logf,
                                             stderr=subprocess.STDOUT)
            self.url = f"http://127.0.0.1:{self.port}"
            if self._wait_up(10):
                return
            self.stop()
        raise AssertionError(f"the fake OPA did not start; log:\n{self.log_path.read_text(errors='replace')}")

    def _wait_up(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/_stats", timeout=1).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return False

    def control(self, **kw):
        assert httpx.post(self.url + "/_control", json=kw, timeout=5).status_code == 200

    def reset(self):
        assert httpx.post(self.url + "/_reset", json={}, timeout=5).status_code == 200

    def stats(self):
        return httpx.get(self.url + "/_stats", timeout=5).json()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def opa_session(tmp_path_factory):
    fake = FakeOPA(tmp_path_factory.mktemp("fake-opa"))
    yield fake
    fake.stop()


@pytest.fixture
def opa(opa_session):
    assert opa_session.proc.poll() is None, "the fake OPA died"
    opa_session.reset()
    yield opa_session
    opa_session.reset()
