"""What OPA is told (CONTRACTS.md section 6): a canvas (chain, group, chord) names the queue each
task is published to, as POST /v1/tasks does, so a rule on context.queue holds for both; and
input.degraded.somabrain says, on every decision, whether the memory service is degraded."""

import subprocess

import httpx
import pytest

from e2e_util import PYTHON, REPO, check_envelope, free_port, wait_until
from opa_fake import opa, opa_session  # noqa: F401 - the fixtures
from servers import RedisServer

DENY_RESTRICTED = [
    {"input": {"action": "task.run", "context": {"queue": "restricted"}},
     "result": {"allow": False, "reason": "queue_restricted"}},
    {"input": {"action": "task.run"}, "result": True},
]
CANVAS = {
    "chain": {"tasks": [{"task": "soma.echo", "args": [1]}, {"task": "soma.echo", "queue": "restricted"}]},
    "group": {"tasks": [{"task": "soma.echo", "args": [1]}, {"task": "soma.echo", "queue": "restricted"}]},
    "chord": {"header": [{"task": "soma.echo", "args": [1]}], "body": {"task": "soma.echo", "queue": "restricted"}},
    "chord-header": {"header": [{"task": "soma.echo", "queue": "restricted"}], "body": {"task": "soma.echo"}},
}


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def opa_sets(opa, *more):
    return ("policy.engine=opa", f"policy.opa_url={opa.url}", "policy.opa_timeout_ms=2000",
            "policy.cache_ttl_ms=0") + more


@pytest.mark.parametrize("kind", sorted(CANVAS))
def test_a_canvas_asks_with_the_queue_each_task_goes_to(soma, opa, redis, kind):
    opa.control(table=DENY_RESTRICTED)
    srv = soma(*opa_sets(opa, "queue.driver=redis", f"redis.url={redis.url()}", "queue.queues=restricted=1"))
    r = httpx.post(srv.url + "/v1/tasks", json={"task": "soma.echo", "queue": "restricted"}, timeout=10)
    assert check_envelope(r, 403, "policy_denied")["reason"] == "queue_restricted"
    path = "/v1/tasks/" + kind.split("-")[0]
    r = httpx.post(srv.url + path, json=CANVAS[kind], timeout=10)
    assert check_envelope(r, 403, "policy_denied")["reason"] == "queue_restricted", r.text
    asked = [i["context"]["queue"] for i in opa.stats()["inputs"] if i["action"] == "task.run"]
    assert "restricted" in asked[1:], asked
    # without the restricted task the same canvas is accepted
    ok = {k: ([{"task": "soma.echo"}] if isinstance(v, list) else {"task": "soma.echo"}) for k, v in CANVAS[kind].items()}
    assert httpx.post(srv.url + path, json=ok, timeout=10).status_code == 202


class FakeSomaBrain:
    def __init__(self, log_dir):
        self.port = free_port()
        self.log = open(log_dir / "fake-somabrain.log", "wb")
        self.proc = subprocess.Popen([PYTHON, str(REPO / "tests" / "fakes" / "somabrain" / "server.py"), "--port",
                                      str(self.port)], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(self._up, 10, what="the fake SomaBrain to listen")

    def _up(self):
        try:
            return httpx.get(self.url + "/_stats", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def control(self, **kw):
        assert httpx.post(self.url + "/_control", json=kw, timeout=5).status_code == 200

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=5)
        self.log.close()


@pytest.fixture
def brain(tmp_path):
    b = FakeSomaBrain(tmp_path)
    yield b
    b.stop()


def test_every_decision_says_whether_somabrain_is_degraded(soma, opa, brain):
    opa.control(table=[
        {"input": {"action": "conversation.send", "degraded": {"somabrain": True}},
         "result": {"allow": False, "reason": "memory_degraded"}},
        {"input": {"action": "<any>"}, "result": True},
    ])
    srv = soma(*opa_sets(opa, "memory.driver=somabrain", f"memory.somabrain_url={brain.url}",
                         "memory.health_interval_ms=100", "memory.timeout_ms=1000",
                         "memory.breaker_open_ms=300", "memory.retry_backoff_ms=50"))

    def send():
        return httpx.post(srv.url + "/v1/session/message", json={"session_id": "d1", "message": "hi"}, timeout=10)

    wait_until(lambda: send().status_code == 200, 5, what="a message allowed while SomaBrain is up")
    brain.control(mode="down")
    r = wait_until(lambda: (lambda r: r if r.status_code == 403 else None)(send()), 5,
                   what="conversation.send denied while SomaBrain is down")
    assert check_envelope(r, 403, "policy_denied")["reason"] == "memory_degraded", r.text
    httpx.get(srv.url + "/v1/sessions", timeout=5)
    reads = [i for i in opa.stats()["inputs"] if i["action"] == "session.read"]
    assert reads and reads[-1]["degraded"] == {"somabrain": True}, reads[-1:]
    brain.control(mode="ok")
    wait_until(lambda: send().status_code == 200, 10, what="a message allowed again once SomaBrain is back")
