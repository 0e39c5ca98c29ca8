"""The edges of a connection's flow control and of a client's EOF (test_connection_flow.py has the
main cases): a request held while the output drains survives the idle timeout; a paid call or a
stream is not started for a client that closed its side first; a connection whose file response
cannot be sent (the file shrank) is freed."""

import glob
import json
import os
import socket
import time

import httpx

from e2e_util import create_key
from test_connection_flow import _responses
from test_llm_proxy import MESSAGES, raw_post
from test_policy import opa, opa_session  # noqa: F401 (fixtures)


def _upload(srv, token, content, mime):
    r = httpx.post(f"{srv.url}/v1/uploads", files={"files": ("a.bin", content, mime)},
                   headers={"Authorization": f"Bearer {token}"}, timeout=20)
    assert r.status_code == 200, r.text
    return r.json()[0]["id"]


def _sockets(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def test_a_request_held_while_a_large_answer_drains_outlives_the_idle_timeout(soma, tmp_path):
    token = create_key(tmp_path / "data", tmp_path, "acme")
    srv = soma("http.idle_timeout_s=2", "http.request_timeout_s=30")
    att = _upload(srv, token, b"A" * (4 << 20), "text/plain")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(b"GET /v1/attachments/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
              % (att.encode(), token.encode()))
    time.sleep(0.3)
    s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Request-Id: second\r\n\r\n")
    raw, deadline = b"", time.monotonic() + 30
    s.settimeout(30)
    while time.monotonic() < deadline:  # a slow reader (~1 MB/s): longer than the idle timeout
        b = s.recv(16384)
        if not b:
            break
        raw += b
        time.sleep(0.016)
        if raw.count(b"HTTP/1.1 ") >= 2 and raw.endswith(b"}"):
            break
    s.close()
    resp = _responses(raw) if raw.count(b"HTTP/1.1 ") >= 2 else []
    assert len(resp) == 2 and resp[1][1]["x-request-id"] == "second", "the held request got no answer"


def test_no_provider_call_for_a_client_that_left_while_policy_was_asked(soma, llm, opa):
    opa.control(table=[{"input": {}, "result": True}])
    srv = soma("policy.engine=opa", f"policy.opa_url={opa.url}", "policy.opa_timeout_ms=5000",
               "policy.cache_ttl_ms=0")
    assert httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=20).status_code == 200
    before = llm.stats()["requests"]
    opa.control(mode="slow", delay_ms=1500)
    for _ in range(3):
        s = raw_post(srv.port, "/v1/llm/invoke", {"messages": MESSAGES})
        time.sleep(0.2)
        s.close()  # gone while OPA is asked
    time.sleep(3)
    assert llm.stats()["requests"] == before, "the provider was called for clients that had left"


def test_no_provider_call_for_a_call_pipelined_by_a_client_that_left(soma, llm):
    srv = soma()
    before = llm.stats()["requests"]
    data = json.dumps({"messages": MESSAGES}).encode()
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"GET /v1/sessions HTTP/1.1\r\nHost: localhost\r\n\r\n"
                  b"POST /v1/llm/invoke HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
        s.close()  # gone at once, reading nothing
    time.sleep(2)
    assert llm.stats()["requests"] == before, "the provider was called for clients that had left"


def test_a_connection_whose_file_shrank_while_queued_is_freed(soma, tmp_path):
    token = create_key(tmp_path / "data", tmp_path, "acme")
    srv = soma("http.idle_timeout_s=3", "http.request_timeout_s=3")
    content = os.urandom(4 << 20)
    att = _upload(srv, token, content, "application/octet-stream")
    time.sleep(0.5)
    base = _sockets(srv.proc.pid)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(b"GET /v1/attachments/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
              % (att.encode(), token.encode()))
    time.sleep(0.5)
    blobs = [p for p in glob.glob(str(tmp_path / "data" / "blobs" / "*" / "*")) if os.path.getsize(p) == len(content)]
    assert blobs
    os.truncate(blobs[0], 1 << 20)  # sendfile then writes nothing: an EOF on the write side
    s.settimeout(5)
    try:
        while s.recv(65536):
            pass
    except socket.timeout:
        pass
    s.close()
    time.sleep(8)  # past the idle, request and write timeouts
    assert _sockets(srv.proc.pid) <= base, "the connection was never freed"
