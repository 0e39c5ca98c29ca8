"""Tools (CONTRACTS.md section 3 "Tools and agents", docs/api.md Tools): GET /v1/tools lists the
enabled tools; POST /v1/tools/{name}/run {args} -> 202 {task_id}, and the tool's result (or its
error) is read at GET /v1/tasks/{id}, tenant-scoped. fetch_page passes the SSRF guard: a page on a
local HTTP server (loopback) is refused by default and read when tools.fetch.allowed_hosts names
127.0.0.1; a redirect to a refused address, a larger page than tools.fetch.max_bytes and a
non-text type are refused; HTML comes back as text. Memory tools stay within the tenant; unknown
tool 404, bad args 400, policy deny 403, all before anything is published. On both stores, and on
queue.driver=redis."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from celery_util import redis_sets
from e2e_util import bearer, check_envelope, create_key, http, wait_until
from servers import RedisServer

REPO = Path(__file__).resolve().parents[2]
HTML = (b"<html><head><title>Tool page</title><script>var hidden = 'script text';</script>"
        b"<style>body{color:red}</style></head><body><h1>Heading</h1><p>Some <b>bold</b> words.</p></body></html>")


class Pages(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        port = self.server.server_address[1]
        routes = {
            "/page.html": (200, "text/html; charset=utf-8", HTML),
            "/plain.txt": (200, "text/plain", b"plain text, as it is\n"),
            "/latin1.html": (200, 'text/html; charset="iso-8859-1"', b"<p>caf\xe9</p>"),
            "/big.txt": (200, "text/plain", b"x" * 5000),
            "/image.png": (200, "image/png", b"\x89PNG\r\n\x1a\n"),
            "/missing": (404, "text/plain", b"no"),
            "/unavailable": (503, "text/plain", b"down"),
            "/latin1.txt": (200, "text/plain; charset=iso-8859-1", b"caf\xe9 cr\xe8me"),
            "/unknown-charset.txt": (200, "text/plain; charset=x-no-such-charset", b"caf\xc3\xa9"),
        }
        redirects = {
            "/to-page": f"http://127.0.0.1:{port}/page.html",
            "/to-localhost": f"http://localhost:{port}/page.html",  # listed by name, a loopback address
            "/to-metadata": "http://169.254.169.254/latest/meta-data/",
        }
        if self.path in redirects:
            self.send_response(302)
            self.send_header("Location", redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, ctype, body = routes.get(self.path, (404, "text/plain", b"no"))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def pages():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def run(srv, name, args, token=None, expect=202):
    r = http().post(f"{srv.url}/v1/tools/{name}/run", json={"args": args},
                    headers=bearer(token) if token else {}, timeout=10)
    assert r.status_code == expect, r.text
    return r


def outcome(srv, tid, token=None, timeout=20):
    def done():
        r = http().get(f"{srv.url}/v1/tasks/{tid}", headers=bearer(token) if token else {}, timeout=10)
        assert r.status_code in (200, 503), r.text
        return r.status_code == 200 and r.json()["status"] in ("SUCCESS", "FAILURE") and r.json()

    return wait_until(done, timeout, interval=0.05, what=f"tool task {tid} to finish")


def run_tool(srv, name, args, token=None):
    return outcome(srv, run(srv, name, args, token).json()["task_id"], token)


def test_list_and_echo(soma):
    srv = soma()
    r = http().get(srv.url + "/v1/tools", timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    names = [t["name"] for t in body["tools"]]
    assert names == ["fetch_page", "memory_recall", "memory_remember", "echo"] and body["count"] == 4
    echo = body["tools"][3]
    assert echo["parameters"]["type"] == "object" and echo["parameters"]["required"] == ["text"]
    assert echo["description"]
    fetch, remember = body["tools"][0], body["tools"][2]
    assert "unless the operator allowed them" in fetch["description"], fetch
    key = remember["parameters"]["properties"]["key"]["description"]
    assert "the first write with a key is kept" in key and "replaces" not in key, key
    r = run(srv, "echo", {"text": "hello tools"})
    assert set(r.json()) >= {"task_id"}
    out = outcome(srv, r.json()["task_id"])
    assert out["status"] == "SUCCESS" and out["result"] == {"text": "hello tools"}, out
    assert out["task"] == "soma.tool"


def test_enabled_list_unknown_tool_and_bad_args(soma):
    srv = soma("tools.enabled=echo,memory_recall")
    assert [t["name"] for t in http().get(srv.url + "/v1/tools", timeout=5).json()["tools"]] == \
        ["memory_recall", "echo"]
    check_envelope(run(srv, "fetch_page", {"url": "http://example.com/"}, expect=404), 404, "unknown_tool")
    check_envelope(run(srv, "nope", {}, expect=404), 404, "unknown_tool")
    r = run(srv, "echo", {}, expect=400)
    check_envelope(r, 400, "invalid_args")
    assert "args.text is required" in r.json()["error"]["message"]
    r = run(srv, "echo", {"text": 5}, expect=400)
    assert "args.text must be a string" in r.json()["error"]["message"]
    r = run(srv, "echo", {"text": "x", "other": 1}, expect=400)
    assert "args.other is not a parameter" in r.json()["error"]["message"]
    r = run(srv, "echo", [1], expect=400)
    assert "args must be an object" in r.json()["error"]["message"]
    tasks = http().get(srv.url + "/v1/queues", timeout=5)
    assert tasks.status_code == 200


def test_fetch_refused_by_default_then_allowed(soma, pages):
    srv = soma()
    out = run_tool(srv, "fetch_page", {"url": pages + "/page.html"})
    assert out["status"] == "FAILURE" and "SSRF guard" in out["error"] and "loopback" in out["error"], out
    assert "IP address listed in tools.fetch.allowed_hosts" in out["error"], out  # the way out
    out = run_tool(srv, "fetch_page", {"url": "file:///etc/passwd"})
    assert out["status"] == "FAILURE" and "only http and https" in out["error"], out


def test_fetch_allowed_host_html_text_limits_and_redirects(soma, pages):
    srv = soma("tools.fetch.allowed_hosts=127.0.0.1,localhost", "tools.fetch.max_bytes=1024")
    out = run_tool(srv, "fetch_page", {"url": pages + "/page.html"})
    assert out["status"] == "SUCCESS", out
    res = out["result"]
    assert res["text"] == "Tool page\n\nHeading\nSome bold words." and res["content_type"] == "text/html", res
    assert res["status"] == 200 and res["truncated"] is False and res["url"] == pages + "/page.html"
    out = run_tool(srv, "fetch_page", {"url": pages + "/latin1.html"})  # the header's charset, quoted
    assert out["result"]["text"] == "caf\u00e9", out
    out = run_tool(srv, "fetch_page", {"url": pages + "/plain.txt", "max_chars": 5})
    assert out["result"]["text"] == "plain" and out["result"]["truncated"] is True, out
    out = run_tool(srv, "fetch_page", {"url": pages + "/to-page"})  # a redirect within the allowed host
    assert out["status"] == "SUCCESS" and out["result"]["url"] == pages + "/page.html", out
    out = run_tool(srv, "fetch_page", {"url": pages + "/to-localhost"})
    assert out["status"] == "FAILURE" and "SSRF guard" in out["error"] and "loopback" in out["error"], out
    out = run_tool(srv, "fetch_page", {"url": pages + "/to-metadata"})
    assert out["status"] == "FAILURE" and "169.254.169.254 is not in tools.fetch.allowed_hosts" in out["error"], out
    out = run_tool(srv, "fetch_page", {"url": pages + "/big.txt"})
    assert out["status"] == "FAILURE" and "larger than tools.fetch.max_bytes" in out["error"], out
    out = run_tool(srv, "fetch_page", {"url": pages + "/image.png"})
    assert out["status"] == "FAILURE" and "image/png, not text" in out["error"], out
    out = run_tool(srv, "fetch_page", {"url": pages + "/missing"})
    assert out["status"] == "FAILURE" and "HTTP 404" in out["error"], out
    out = run_tool(srv, "fetch_page", {"url": "http://example.com/"})
    assert out["status"] == "FAILURE" and "not in tools.fetch.allowed_hosts" in out["error"], out


def test_memory_tools_and_tasks_stay_within_the_tenant(soma, tmp_path):
    srv = soma("auth.key_refresh_ms=200", data_dir=tmp_path / "data")
    ka = create_key(tmp_path / "data", tmp_path, "tools-a")
    kb = create_key(tmp_path / "data", tmp_path, "tools-b")
    wait_until(lambda: all(http().get(srv.url + "/v1/tools", headers=bearer(k), timeout=5).status_code == 200
                           for k in (ka, kb)), 5, what="both keys to be picked up")
    r = run(srv, "memory_remember", {"key": "fact-1", "text": "the zebra password is violet"}, token=ka)
    tid = r.json()["task_id"]
    out = outcome(srv, tid, token=ka)
    assert out["status"] == "SUCCESS" and out["result"] == {"key": "fact-1", "status": "queued"}, out
    assert http().get(f"{srv.url}/v1/tasks/{tid}", headers=bearer(kb), timeout=5).status_code == 404

    def recalled(token):
        res = run_tool(srv, "memory_recall", {"query": "zebra password"}, token=token)
        assert res["status"] == "SUCCESS", res
        return res["result"]["results"]

    wait_until(lambda: recalled(ka), 15, interval=0.2, what="a's memory to be delivered")
    assert "violet" in json.dumps(recalled(ka))
    assert recalled(kb) == []


def test_policy_deny_is_403_before_publishing(soma, tmp_path):
    rules = json.loads((REPO / "policy/default.json").read_text())
    rules["soma_policy"]["tenants"]["*"]["tools"] = ["echo"]
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(rules))
    srv = soma(f"policy.file={path}")
    r = run(srv, "fetch_page", {"url": "http://example.com/"}, expect=403)
    check_envelope(r, 403, "policy_denied")
    assert r.json()["error"]["reason"] == "tool_not_allowed"
    assert outcome(srv, run(srv, "echo", {"text": "ok"}).json()["task_id"])["status"] == "SUCCESS"
    # the same task sent through the task API is checked again by the worker
    r = http().post(srv.url + "/v1/tasks", json={"task": "soma.tool", "kwargs": {"tool": "fetch_page", "args": {
        "url": "http://example.com/"}}}, timeout=5)
    assert r.status_code == 202, r.text
    out = outcome(srv, r.json()["task_id"])
    assert out["status"] == "FAILURE" and "tool_not_allowed" in out["error"], out


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def test_tools_on_the_redis_queue(soma, redis, pages):
    srv = soma(*redis_sets(redis, "tools.fetch.allowed_hosts=127.0.0.1"))
    out = run_tool(srv, "echo", {"text": "over redis"})
    assert out["status"] == "SUCCESS" and out["result"] == {"text": "over redis"}, out
    out = run_tool(srv, "fetch_page", {"url": pages + "/plain.txt"})
    assert out["status"] == "SUCCESS" and out["result"]["text"] == "plain text, as it is\n", out
    check_envelope(run(srv, "echo", {}, expect=400), 400, "invalid_args")
