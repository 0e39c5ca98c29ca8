"""A client that sends a request and then half-closes (shutdown(SHUT_WR)) - at once, or once its
call or stream has begun - on /v1/llm/invoke, /v1/chat/completions and a session's event stream:
every such request writes its access line (log.access), with its request id and duration; one
that ends because the client left is logged 499 (as nginx logs "client closed request"); one
refused before its call began answers 400 client_closed. No crash, whatever the timing."""

import json
import socket
import time

from e2e_util import post_message, wait_until

MESSAGES = [{"role": "user", "content": "hello"}]
ROUNDS = 8


def _half_close(port, head, body, rid, wait_s):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head.replace(b"\r\n\r\n", b"\r\nX-Request-Id: " + rid.encode() + b"\r\n\r\n", 1) + body)
    if wait_s:
        time.sleep(wait_s)
    s.shutdown(socket.SHUT_WR)
    raw = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            raw += d
    except OSError:
        pass
    s.close()
    return raw


def _post(path, obj):
    data = json.dumps(obj).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode(), data


def test_every_half_closed_request_has_an_access_line(soma, llm):
    srv = soma("log.access=true")
    sid = post_message(srv, "a session to stream")["session_id"]
    llm.control(chunks=4, delay_ms=150, first_delay_ms=300)  # calls long enough to leave in the middle
    asks = {
        "invoke": _post("/v1/llm/invoke", {"messages": MESSAGES}),
        "chat": _post("/v1/chat/completions", {"model": "m", "messages": MESSAGES}),
        "stream": ((f"GET /v1/sessions/{sid}/events?stream=true HTTP/1.1\r\nHost: localhost\r\n"
                    f"Accept: text/event-stream\r\n\r\n").encode(), b""),
    }
    sent = {}
    for i in range(ROUNDS):
        for name, (head, body) in asks.items():
            wait_s = 0 if i % 2 == 0 else 0.15  # at once, or after the call or stream began
            rid = f"half-{name}-{i}"
            sent[rid] = _half_close(srv.port, head, body, rid, wait_s)
    assert srv.proc.poll() is None, srv.log_text()

    def lines():
        return {o.get("request_id"): o for o in srv.logs_quiet()
                if o.get("svc", o.get("service")) == "http" and str(o.get("request_id", "")).startswith("half-")}

    wait_until(lambda: set(lines()) >= set(sent), 10, what="an access line for every request")
    got = lines()
    for rid, raw in sent.items():
        line = got[rid]
        assert "duration_ms" in line, line
        if raw.startswith(b"HTTP/1.1 400") and b"client_closed" in raw:
            assert line["status"] == 400, (rid, line)
        elif not raw.startswith(b"HTTP/1.1 "):  # no answer: the client left before one was ready
            assert line["status"] == 499, (rid, line)
    assert any(o["status"] == 499 for o in got.values()), got
