"""A stream open while its session is reset is told (src/gateway/stream.c, bus_session_reset in
src/bus): an unnumbered `session.reset` event, so a client showing the old events (the web UI)
knows to reload them; the stream stays open and the session's seqs go on, so what follows comes
on it. Before, the stream said nothing and a tab kept showing the removed messages, mixed with
the new ones. Runs with the local bus and with the redis bus (the marker goes through Redis), and
across two gateways: the reset made on A reaches B's stream."""

import json
import socket
import time

import pytest

from e2e_util import check_reply, http, open_stream, post_message, read_reply, wait_terminal
from servers import RedisServer


def _next_event(s, timeout=10):
    """The next frame that is not a keepalive, as (id, event); fails at the end or after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            f = s.next_frame(timeout=max(left, 0.01)) if left > 0 else False
        except socket.timeout:
            f = False
        assert f, f"no event within {timeout} s (or the stream ended: {f!r})"
        if f.data and '"system.keepalive"' not in f.data:
            return f.id, json.loads(f.data)


def _reset_then_go_on(srv_reset, srv_stream, llm, sid):
    post_message(srv_stream, "before the reset", session_id=sid)
    wait_terminal(srv_stream, sid)
    with open_stream(srv_stream, sid, after=0, timeout=10) as s:
        assert read_reply(s)[-1][0] == "2"
        assert http().post(f"{srv_reset.url}/v1/sessions/{sid}/reset", timeout=5).status_code == 200
        fid, ev = _next_event(s)
        assert fid is None, f"the notice carries no id (the client's last id stays good): {fid}"
        assert ev == {"type": "session.reset", "session_id": sid, "version": "sa01-v1"}, ev
        llm.control(text="after the reset")
        assert post_message(srv_reset, "after the reset", session_id=sid)["seq"] == 3
        got = read_reply(s, timeout=20)  # on the same stream: it did not end
    assert got[0][0] == "3" and got[0][1]["message"] == "after the reset", got[0]
    assert check_reply(got, sid)["message"] == "after the reset"


@pytest.mark.parametrize("bus", ["local", "redis"])
def test_a_reset_tells_the_open_stream_and_it_goes_on(soma, llm, bus):
    redis = RedisServer() if bus == "redis" else None
    try:
        srv = soma(*(("bus.driver=redis", f"redis.url={redis.url()}") if redis else ()))
        _reset_then_go_on(srv, srv, llm, f"reset-while-followed-{bus}")
    finally:
        if redis:
            redis.close()
