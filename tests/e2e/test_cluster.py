"""Cross-node streams (issue 4, section 7): three processes - two `--role gateway` nodes and one
`--role worker` node - on one PostgreSQL (store.url) and one Redis (bus.driver=redis), the tasks
going through the shared store (queue.driver=local) or Redis (queue.driver=redis, Celery). A message posted to gateway A is processed by the worker and
streamed complete to a subscriber on gateway B; a stream resumes on the other gateway with
Last-Event-ID (also after the first one was killed with SIGKILL) with no gap and no repeat; and
with Redis gone the bus says so in /v1/health and recovers by itself."""

import signal

import pytest

from e2e_util import (check_increasing, check_reply, history, http, open_stream, parse_cursor, post_message,
                      read_reply, wait_terminal, wait_until)
from servers import PostgresServer, RedisServer
from test_stream_delete import _until_end

# every node here runs on the test's own PostgreSQL, whatever SOMA_E2E_STORE says
pytestmark = pytest.mark.own_store


@pytest.fixture(scope="module")
def backends():
    with PostgresServer() as pg, RedisServer() as redis:
        yield pg, redis


@pytest.fixture
def cluster(soma, backends, tmp_path, request):
    """(gateway A, gateway B, worker, redis) on a fresh database of the module's PostgreSQL; the
    queue driver is the test's parameter (local: over the shared store), or local."""
    pg, redis = backends
    queue = getattr(request, "param", "local")
    url = pg.new_database("c_" + "".join(ch for ch in request.node.name.lower() if ch.isalnum())[:40])
    redis.client(db=1).flushdb()
    common = (f"store.url={url}", "bus.driver=redis", f"redis.url={redis.url(db=1)}", f"queue.driver={queue}")
    a = soma(*common, role="gateway", data_dir=tmp_path / "a")
    b = soma(*common, role="gateway", data_dir=tmp_path / "b")
    w = soma(*common, role="worker", data_dir=tmp_path / "w")
    return a, b, w, redis


# the queue between the nodes: the local one (a table of the shared PostgreSQL) or Redis (Celery)
QUEUES = pytest.mark.parametrize("cluster", ["local", "redis"], indirect=True)


def _bus(srv):
    r = http().get(srv.url + "/v1/health", timeout=5)
    return r.json()["services"]["bus"]


def _deltas_read(s):
    return sum(1 for f in s.frames_read if f.data and '"assistant.delta"' in f.data)


@QUEUES
def test_message_on_a_streams_complete_on_b(cluster, llm):
    a, b, w, _ = cluster
    for srv in (a, b, w):
        bus = _bus(srv)
        assert bus["status"] == "ok" and bus["critical"] is False and "redis at" in bus["detail"], bus
    llm.control(chunks=20, delay_ms=10)
    sid = post_message(a, "warm up")["session_id"]
    wait_terminal(b, sid, timeout=20)  # the worker took it from the shared store
    with open_stream(b, sid) as s:  # no cursor: the present, then live
        out = post_message(a, "hello from A", session_id=sid)
        frames = read_reply(s, timeout=20)
    fid, user = frames[0]
    assert user["type"] == "user" and user["message"] == "hello from A" and fid == str(out["seq"]), frames[0]
    final = check_reply(frames, sid)  # thinking, deltas concatenating to the final, the final
    assert final["message"].endswith("You said: hello from A"), final
    assert len(frames) >= 20, [e["type"] for _, e in frames]
    # the same reply replayed on A from the start: committed events from the store, deltas from Redis
    with open_stream(a, sid, after=out["seq"] - 1) as s:
        replay = read_reply(s, timeout=20)
    assert replay == frames, "gateway A replays a different reply than gateway B streamed"


def _part_on(srv, sid):
    """Reads a stream of sid on srv from the start until three deltas arrived; the frames read."""
    s = open_stream(srv, sid, after=0, timeout=20)
    part = s.events(lambda e: _deltas_read(s) >= 3, timeout=20)
    return s, part


@QUEUES
def test_reconnect_to_the_other_gateway_mid_reply(cluster, llm):
    a, b, _, _ = cluster
    llm.control(chunks=30, delay_ms=60)  # the reply takes about two seconds
    sid = post_message(a, "take your time")["session_id"]
    s, part1 = _part_on(a, sid)
    s.close()
    last_id = part1[-1][0]
    assert parse_cursor(last_id)[2], f"the last frame read should be a delta: {part1[-1]}"
    assert [e["type"] for e in history(b, sid)] == ["user"], "the reply finished before the reconnect"
    with open_stream(b, sid, last_event_id=last_id, timeout=20) as s2:
        part2 = read_reply(s2, timeout=20)
    both = part1 + part2
    check_increasing([i for i, _ in both])  # no repeat
    final = check_reply(both, sid)  # no gap: the deltas concatenate to the final
    assert final["message"].endswith("You said: take your time")


@QUEUES
def test_kill_9_of_the_gateway_holding_the_stream(cluster, llm):
    a, b, _, _ = cluster
    llm.control(chunks=30, delay_ms=60)
    sid = post_message(b, "survive this")["session_id"]
    s, part1 = _part_on(a, sid)
    a.checked = True  # killed below: no clean exit expected
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    s.close()
    last_id = part1[-1][0]
    with open_stream(b, sid, last_event_id=last_id, timeout=20) as s2:
        part2 = read_reply(s2, timeout=20)
    both = part1 + part2
    check_increasing([i for i, _ in both])
    final = check_reply(both, sid)
    assert final["message"].endswith("You said: survive this")


def test_redis_down_degrades_the_bus_and_it_recovers(cluster, llm):
    a, b, w, redis = cluster
    redis.kill()
    wait_until(lambda: _bus(b)["status"] == "degraded", 10, what="bus degraded on gateway B")
    wait_until(lambda: _bus(w)["status"] == "degraded", 10, what="bus degraded on the idle worker")
    bus = _bus(b)
    assert "unreachable" in bus["detail"] and bus["critical"] is False, bus
    health = http().get(b.url + "/v1/health", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "degraded", health.text
    # streams keep working for the node's own events: a message posted to B shows on B
    sid = post_message(b, "while redis is down")["session_id"]
    with open_stream(b, sid, after=0, timeout=20) as s:
        frames = s.events(lambda e: e.get("type") == "user", timeout=10)
    assert frames[0][1]["message"] == "while redis is down", frames
    redis.start()
    for srv in (a, b, w):
        wait_until(lambda: _bus(srv)["status"] == "ok", 20, what=f"bus ok again on {srv.url}")
    # and the cluster streams again. B opens its stream only once part of the reply is out, so
    # the start comes from B's resume snapshot: its first round trip to the restarted Redis, on a
    # connection Redis closed (it was answered from B's local part alone: thinking and the first
    # deltas were missing)
    llm.control(chunks=10, delay_ms=150)
    sid = post_message(a, "after the outage")["session_id"]
    with open_stream(a, sid, after=0, timeout=20) as s:
        s.events(lambda e: e.get("type") == "assistant.delta" and e["metadata"]["stream_index"] >= 1, timeout=20)
        with open_stream(b, sid, after=0, timeout=20) as s2:
            frames = read_reply(s2, timeout=20)
    check_reply(frames, sid)


def test_a_delete_after_the_publisher_connection_died_reaches_the_other_gateway(cluster, llm):
    """Redis drops the gateways' idle connections (CLIENT KILL TYPE normal: pub/sub clients stay,
    as after a proxy's idle timeout), then the session is deleted on A: the delete still reaches
    the stream on B, which ends (before, A's first batch went out on the dead connection and the
    delete was applied on A only: B's stream stayed open)."""
    a, b, w, redis = cluster
    llm.control(chunks=3, delay_ms=0)
    sid = post_message(a, "hello")["session_id"]
    wait_terminal(b, sid, timeout=20)
    with open_stream(b, sid, after=0, timeout=20) as s:
        s.events(lambda e: e["type"] == "assistant.final", timeout=20)
        redis.client().client_kill_filter(_type="normal", skipme=True)
        assert http().delete(f"{a.url}/v1/sessions/{sid}", timeout=10).status_code in (200, 204)
        frames = _until_end(s, timeout=15)
    assert frames and frames[-1].id == "0", [(f.id, f.data) for f in frames]  # the end marker, then the end


def test_a_reset_on_a_reaches_the_stream_on_b(cluster, llm):
    """The reset marker goes through Redis: B's stream is told (a `session.reset` event, no id)
    and goes on with the session's next seqs (tests/e2e/test_stream_reset.py, on one node)."""
    from test_stream_reset import _reset_then_go_on

    a, b, w, _ = cluster
    _reset_then_go_on(a, b, llm, "reset-across-gateways")
