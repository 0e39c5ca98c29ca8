"""An open stream outlives a Redis outage of the redis bus (src/bus/redis_sub.c, redis.c,
src/gateway/stream_replay.c). When the bus may have lost messages (its subscriber reconnected
after Redis came back, or another node's records reached only that node's streams meanwhile), it
sends the stream a gap marker; the stream fills what it missed from the store (and the Redis log)
and carries on: no committed event lost, none sent twice, and the connection stays open. Before,
the marker ended the stream and its client had to reconnect."""

import time

import pytest

from e2e_util import (STORE, check_increasing, history, http, open_stream, post_message, read_reply,
                      store_query, store_url, store_user_event, wait_terminal, wait_until)
from servers import RedisServer


def _bus(srv):
    return http().get(srv.url + "/v1/health", timeout=5).json()["services"]["bus"]


def _committed(frames):
    """[(seq, type)] of the committed events among [(id, event)]."""
    return [(int(i), e["type"]) for i, e in frames if "." not in i]


def _outage(redis, nodes, during):
    redis.kill()
    for srv in nodes:
        wait_until(lambda: _bus(srv)["status"] == "degraded", 10, what=f"bus degraded on {srv.url}")
    during()
    redis.start()
    for srv in nodes:
        wait_until(lambda: _bus(srv)["status"] == "ok", 20, what=f"bus ok again on {srv.url}")


def test_a_stream_carries_on_across_a_redis_restart(soma, llm):
    """One node: its own events reach its streams while Redis is away; an event committed
    elsewhere meanwhile (stored here without a publish) is filled from the store, in seq order,
    and the same connection then carries the next reply."""
    with RedisServer() as redis:
        srv = soma("bus.driver=redis", f"redis.url={redis.url()}")
        sid = post_message(srv, "before the outage")["session_id"]
        wait_terminal(srv, sid)
        (tenant, n), = store_query(srv.data_dir, "SELECT tenant, last_seq FROM sessions WHERE id = ?", (sid,))
        with open_stream(srv, sid, after=0, timeout=10) as s:
            got = read_reply(s)

            def during():
                llm.control(text="reply in the outage")
                post_message(srv, "during the outage", session_id=sid)
                got.extend(read_reply(s))  # this node's own events: delivered locally
                store_user_event(srv, sid, tenant, n + 3, "committed elsewhere", "outage")

            _outage(redis, [srv], during)
            time.sleep(1)  # the subscriber is back: the marker came (the old stream ended here)
            llm.control(text="reply after the outage")
            post_message(srv, "after the outage", session_id=sid)
            got += read_reply(s, timeout=20)
        ids = [i for i, _ in got]
        check_increasing(ids)
        stored = [(e["seq"], e["type"]) for e in history(srv, sid, limit=50)]
        assert _committed(got) == stored, f"stream {_committed(got)} != store {stored}"
        assert ("user", "committed elsewhere") in [(e["type"], e.get("message")) for _, e in got], got
        assert got[-1][1]["message"] == "reply after the outage", got[-1]


@pytest.mark.skipif(STORE != "postgres", reason="two nodes share one store: PostgreSQL only")
def test_events_of_another_node_during_an_outage_are_filled_without_a_reconnect(soma, llm, tmp_path):
    """Gateway A holds the stream; node B takes a message and replies while Redis is down (its
    records reach only B's streams). Once Redis is back, A's stream fills them from the store,
    on the same connection, before anything new happens in the session."""
    with RedisServer() as redis:
        url = store_url(tmp_path / "a")
        sets = (f"store.url={url}", "bus.driver=redis", f"redis.url={redis.url()}")
        a = soma(*sets, role="gateway", data_dir=tmp_path / "a")
        b = soma(*sets, data_dir=tmp_path / "b")
        sid = post_message(a, "hello from a")["session_id"]
        wait_terminal(a, sid)
        with open_stream(a, sid, after=0, timeout=10) as s:
            got = read_reply(s)

            def during():
                llm.control(text="reply while redis was down")
                post_message(b, "posted on b in the outage", session_id=sid)
                wait_terminal(b, sid, count=2, timeout=20)

            _outage(redis, [a, b], during)
            got += read_reply(s, timeout=20)  # nothing new is posted: filled by the resync
            assert got[-1][1]["message"] == "reply while redis was down", got[-1]
            llm.control(text="reply after the outage")
            post_message(a, "after the outage", session_id=sid)
            got += read_reply(s, timeout=20)
        check_increasing([i for i, _ in got])
        stored = [(e["seq"], e["type"]) for e in history(a, sid, limit=50)]
        assert _committed(got) == stored, f"stream {_committed(got)} != store {stored}"
