"""A client of a streamed proxy reply that stops reading: what the server holds for it is bounded
(stream.max_buffer), the provider call is stopped (its connection closed, its slot freed) and the
client's stream ends with an in-band error. /v1/chat/completions and /v1/llm/invoke/stream, over
both provider paths (a literal address: our HTTP/1.1 client; a host name: libcurl)."""

import json
import socket
import time

import httpx
import pytest

MESSAGES = [{"role": "user", "content": "hello proxy"}]
REPLY_BYTES = 30_000_000  # the provider's stream: ~30 MB more than anything we may hold


def rss_kb(srv):
    with open(f"/proc/{srv.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/llm/invoke/stream"])
@pytest.mark.parametrize("provider_host", ["127.0.0.1", "localhost"])
def test_a_client_that_stops_reading_is_cut_off(soma, llm, provider_host, path):
    llm.control(reply_bytes=REPLY_BYTES, chunks=20000)
    srv = soma(f"llm.base_url=http://{provider_host}:{llm.port}/v1", "stream.max_buffer=262144", "llm.proxy_stall_s=2",
               "llm.proxy_concurrency=1")
    before = rss_kb(srv)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", srv.port))
    body = json.dumps({"messages": MESSAGES, "stream": True}).encode()
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert s.recv(512).startswith(b"HTTP/1.1 200")  # then it reads no more
    deadline = time.monotonic() + 20
    peak = 0
    while llm.stats()["aborted"] == 0 and time.monotonic() < deadline:
        peak = max(peak, rss_kb(srv) - before)
        time.sleep(0.1)
    peak = max(peak, rss_kb(srv) - before)
    assert llm.stats()["aborted"] == 1, f"the provider call went on for a client that reads nothing (+{peak} kB)"
    assert peak < 20_000, f"the server's RSS grew by {peak} kB for a client that reads nothing"
    # the slot (llm.proxy_concurrency=1) was freed while that client is still connected
    llm.control(reply_bytes=0)
    r = httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=10)
    assert r.status_code == 200 and r.json()["content"].endswith("You said: hello proxy"), r.text
    # what was queued ends with the in-band error, then the stream's end
    rest = b""
    while not rest.endswith(b"0\r\n\r\n"):
        d = s.recv(1 << 20)
        if not d:
            break
        rest += d
    s.close()
    assert b'"code":"llm_client_too_slow"' in rest[-2000:], rest[-600:]
    assert rest.endswith(b"0\r\n\r\n"), rest[-200:]
