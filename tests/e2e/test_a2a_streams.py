"""A2A streams under load (reference/interop.md §3.3): a reader too slow for the catch-up of a
tasks/resubscribe is cut without the server touching the freed run (ASan), and a stream whose
model is slow to start gets SSE comment keepalives every stream.keepalive_s."""

import json
import socket
import time

from a2a_util import msg03, result
from e2e_util import bearer, http


def _raw_post(srv, body, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", srv.port))
    data = json.dumps(body).encode()
    s.sendall(b"POST /a2a HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(data) + data)
    return s


def test_slow_reader_cut_during_the_catch_up_of_a_resubscribe(soma, llm):
    srv = soma("stream.max_buffer=4096")
    llm.control(reply_bytes=400000, chunks=8000, delay_ms=1)
    task = result(srv, "message/send", dict(msg03("long"), configuration={"blocking": False}))
    time.sleep(4)  # saved deltas to replay
    for i in range(3):  # a reader that never reads: cut while the saved chunks are replayed
        s = _raw_post(srv, {"jsonrpc": "2.0", "id": i, "method": "tasks/resubscribe",
                            "params": {"id": task["id"]}}, rcvbuf=4096)
        time.sleep(1.5)
        s.close()
    time.sleep(0.5)
    log = srv.log_text()
    assert "AddressSanitizer" not in log, log[log.find("AddressSanitizer") - 200:][:4000]
    assert srv.proc.poll() is None, log[-3000:]
    # the server still answers
    assert result(srv, "tasks/get", {"id": task["id"]})["id"] == task["id"]


def _read_raw_stream(srv, method, params, until, timeout=20):
    """The raw bytes of a streaming call until `until` is in them (or the server closes)."""
    data = b""
    with http().stream("POST", srv.url + "/a2a", timeout=timeout,
                       json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                       headers={"Accept": "text/event-stream", **bearer(None)}) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            data += chunk
            if until in data:
                break
    return data.decode()


def test_stream_sends_comment_keepalives_while_the_model_is_slow(soma, llm):
    srv = soma("stream.keepalive_s=1")
    llm.control(first_delay_ms=3500)
    text = _read_raw_stream(srv, "message/stream", msg03("slow start"), b'"final":true')
    frames = text.split("\n\n")[:-1]
    comments = [f for f in frames if f.startswith(":")]
    assert len(comments) >= 2, text[:2000]
    assert all(f == ": keepalive" for f in comments), comments
    # the comments come before the first artifact: while the model is silent
    first_art = next(i for i, f in enumerate(frames) if "artifact-update" in f)
    assert any(f.startswith(":") for f in frames[:first_art]), frames[:first_art + 1]
    data = [json.loads(f[6:]) for f in frames if f.startswith("data: ")]
    assert data[-1]["result"]["final"] is True and data[-1]["result"]["status"]["state"] == "completed"


def test_resubscribe_sends_keepalives_too(soma, llm):
    srv = soma("stream.keepalive_s=1")
    llm.control(first_delay_ms=3500)
    task = result(srv, "message/send", dict(msg03("slow"), configuration={"blocking": False}))
    text = _read_raw_stream(srv, "tasks/resubscribe", {"id": task["id"]}, b'"final":true')
    assert "\n\n: keepalive\n\n" in text, text[:2000]
