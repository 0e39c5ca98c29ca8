"""Stop, delete and A2A cancel across nodes: on the cluster of test_cluster.py (two `--role gateway`
nodes and one `--role worker` node on PostgreSQL and Redis), the reply runs on the worker while
the request reaches gateway A, which runs no workers. The cancel must reach the worker all the
same: the reply ends at once (Stop and A2A cancel keep the text so far as a `cancelled` final), and
the provider's stream is abandoned (the fake counts it aborted), not run to its end. Before, the
cancel only reached the workers of the gateway's own process: Stop answered `idle`, A2A cancel
"not running on this node; retry", and the reply ran on (and was billed) to its end."""

import time

import pytest

from a2a_util import error, msg03, result
from e2e_util import history, http, open_stream, post_message, wait_terminal, wait_until
from test_cluster import QUEUES, backends, cluster  # noqa: F401 (fixtures)

pytestmark = pytest.mark.own_store

CHUNKS, DELAY_MS = 60, 100  # a whole reply takes about six seconds
FULL = "Hello from the fake model"


def _first_delta(srv, sid):
    with open_stream(srv, sid, after=0, timeout=20) as s:
        s.events(lambda e: e.get("type") == "assistant.delta", timeout=20)


def _aborted(llm, timeout=3):
    wait_until(lambda: llm.stats()["aborted"] >= 1, timeout, what="the provider's stream abandoned")


@QUEUES
def test_stop_on_a_gateway_stops_the_reply_on_the_worker_node(cluster, llm):
    a, b, _, _ = cluster
    llm.control(chunks=CHUNKS, delay_ms=DELAY_MS)
    sid = post_message(a, "stop me from afar")["session_id"]
    _first_delta(a, sid)
    r = http().post(f"{a.url}/v1/sessions/{sid}/cancel", timeout=5)
    assert r.status_code == 200, r.text
    assert r.json() == {"session_id": sid, "status": "cancelling"}, r.text  # the worker is elsewhere
    stopped = time.monotonic()
    evs = wait_terminal(b, sid, timeout=20)
    assert time.monotonic() - stopped < 3, "the reply ran on after the Stop"
    final = evs[-1]
    assert final["type"] == "assistant.final" and final["metadata"]["status"] == "cancelled", final
    assert len(final["message"]) < 200, final  # the text so far, not the whole reply
    _aborted(llm)
    assert llm.stats()["requests"] == 1


@QUEUES
def test_delete_on_a_gateway_stops_the_generation_on_the_worker_node(cluster, llm):
    a, _, _, _ = cluster
    llm.control(chunks=CHUNKS, delay_ms=DELAY_MS)
    sid = post_message(a, "delete me from afar")["session_id"]
    _first_delta(a, sid)
    assert http().delete(f"{a.url}/v1/sessions/{sid}", timeout=5).status_code in (200, 204)
    _aborted(llm)
    assert http().get(f"{a.url}/v1/sessions/{sid}", timeout=5).status_code == 404
    assert llm.stats()["requests"] == 1


@QUEUES
def test_a2a_cancel_on_a_gateway_stops_the_task_on_the_worker_node(cluster, llm):
    a, b, _, _ = cluster
    llm.control(chunks=CHUNKS, delay_ms=DELAY_MS)
    task = result(a, "message/send", dict(msg03("cancel me from afar"), configuration={"blocking": False}))
    _first_delta(a, task["contextId"])
    assert result(a, "tasks/cancel", {"id": task["id"]})["status"]["state"] == "canceled"
    _aborted(llm)
    wait_until(lambda: result(b, "tasks/get", {"id": task["id"]})["status"]["state"] == "canceled", 10,
               what="the task canceled")
    finals = [e for e in history(b, task["contextId"]) if e["type"] == "assistant.final"]
    assert [f["metadata"]["status"] for f in finals] == ["cancelled"], finals
    assert not finals[0]["message"].startswith(FULL) or len(finals[0]["message"]) < 200, finals


def test_stop_of_an_idle_session_on_a_gateway(cluster, llm):
    """Nothing runs: the notice goes out all the same (the gateway cannot know), and nothing
    is stopped: the next message is answered in full."""
    a, b, _, _ = cluster
    llm.control(chunks=3, delay_ms=0)
    sid = post_message(a, "first")["session_id"]
    wait_terminal(b, sid, timeout=20)
    r = http().post(f"{a.url}/v1/sessions/{sid}/cancel", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "cancelling", r.text
    post_message(a, "second", session_id=sid)
    evs = wait_terminal(b, sid, timeout=20, count=2)
    assert evs[-1]["metadata"].get("status", "completed") == "completed", evs[-1]


def test_stop_and_a2a_cancel_while_redis_is_down_say_so(cluster, llm):
    """Redis gone: the gateway cannot tell the worker's node. The Stop answers 503 bus_unavailable
    and the A2A cancel -32002 saying why, at once (no request waits for Redis)."""
    a, _, _, redis = cluster
    llm.control(chunks=CHUNKS, delay_ms=DELAY_MS)
    task = result(a, "message/send", dict(msg03("out of reach"), configuration={"blocking": False}))
    sid = task["contextId"]
    _first_delta(a, sid)
    redis.kill()
    try:
        def refused():
            t = time.monotonic()
            r = http().post(f"{a.url}/v1/sessions/{sid}/cancel", timeout=5)
            assert time.monotonic() - t < 2, "the Stop waited for Redis"
            return r if r.status_code == 503 else None
        r = wait_until(refused, 10, interval=0.3, what="the Stop refused while Redis is down")
        err = r.json()["error"]
        assert err["code"] == "bus_unavailable" and "Redis" in err["message"] and err["request_id"], err
        out = error(a, "tasks/cancel", {"id": task["id"]})["error"]
        assert out["code"] == -32002 and "Redis does not answer" in out["message"], out
    finally:
        redis.start()
