"""GET /metrics: Prometheus text format 0.0.4, the required families, promtool."""

import math
import shutil
import subprocess
import time

import httpx
import pytest

from e2e_util import find_samples, parse_metrics, raw_request, run_cli

PROMTOOL = shutil.which("promtool")


def _scrape(srv):
    r = httpx.get(srv.url + "/metrics", timeout=5)
    assert r.status_code == 200
    return r


def _promtool(text):
    if not PROMTOOL:
        pytest.skip("promtool not installed (Debian package prometheus)")
    cp = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert cp.returncode == 0, f"promtool check metrics failed:\n{cp.stdout.decode()}{cp.stderr.decode()}\n---\n{text}"


def test_metrics_families(server, tmp_path):
    with httpx.Client(base_url=server.url, timeout=5) as c:
        for _ in range(3):
            assert c.get("/v1/health").status_code == 200
        assert c.get("/no/such/route").status_code == 404
        assert c.post("/v1/health").status_code == 405
    r = _scrape(server)
    ctype = r.headers["content-type"]
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    types, samples = parse_metrics(r.text)

    assert types.get("soma_http_requests_total") == "counter"
    ok = find_samples(samples, "soma_http_requests_total", route="/v1/health", method="GET", status="200")
    assert ok and ok[0][1] >= 3, ok
    nf = find_samples(samples, "soma_http_requests_total", route="unmatched", method="GET", status="404")
    assert nf and nf[0][1] == 1, f"404 not counted under route=unmatched: {nf}"
    assert find_samples(samples, "soma_http_requests_total", method="POST", status="405"), "405 not counted"
    for name, labels, _ in samples:
        if name.startswith("soma_http_"):
            assert "/no/such/route" not in labels.values(), "raw path used as a label value"
            if name == "soma_http_requests_total":
                assert set(labels) == {"route", "method", "status"}, labels

    assert types.get("soma_http_request_duration_seconds") == "histogram"
    buckets = find_samples(samples, "soma_http_request_duration_seconds_bucket", route="/v1/health", method="GET")
    assert buckets, "no duration buckets for /v1/health"
    inf = [v for lbl, v in buckets if lbl["le"] == "+Inf"]
    assert inf and inf[0] >= 3
    les = [float(lbl["le"]) for lbl, _ in buckets if lbl["le"] != "+Inf"]
    vals = [v for lbl, v in buckets]
    assert les == sorted(les) and vals == sorted(vals), "buckets must be cumulative in le order"
    cnt = find_samples(samples, "soma_http_request_duration_seconds_count", route="/v1/health", method="GET")
    sm = find_samples(samples, "soma_http_request_duration_seconds_sum", route="/v1/health", method="GET")
    assert cnt and cnt[0][1] == inf[0] and sm and 0 < sm[0][1] < 10

    assert find_samples(samples, "soma_service_up", service="http") == [({"service": "http"}, 1.0)]
    for svc in ("store", "auth", "disk"):
        assert find_samples(samples, "soma_service_up", service=svc), svc
    version = run_cli(["version"], tmp_path).stdout.split()[-1]
    assert find_samples(samples, "soma_build_info", version=version) == [({"version": version}, 1.0)]

    def one(name):
        s = find_samples(samples, name)
        assert len(s) == 1, f"{name}: {s}"
        assert not math.isnan(s[0][1])
        return s[0][1]

    assert one("process_resident_memory_bytes") > 1024 * 1024
    assert one("process_cpu_seconds_total") >= 0
    assert types.get("process_cpu_seconds_total") == "counter"
    assert one("process_open_fds") >= 3
    start = one("process_start_time_seconds")
    assert abs(start - time.time()) < 60, f"process_start_time_seconds {start} is not about now"


def test_metrics_promtool(server):
    with httpx.Client(base_url=server.url, timeout=5) as c:
        c.get("/v1/health")
        c.get("/nope")
    _promtool(_scrape(server).text)


def test_metrics_promtool_after_odd_requests(server):
    odd = [
        b"GET /a%22b HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b'GET /a"b\\c HTTP/1.1\r\nHost: localhost\r\n\r\n',
        b"X|'~ /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n",  # a legal but odd method
        b"GE\\T /x HTTP/1.1\r\nHost: localhost\r\n\r\n",  # illegal method characters: 400
        b'GE"T /x HTTP/1.1\r\nHost: localhost\r\n\r\n',
    ]
    for req in odd:
        r = raw_request(server, req)
        assert r.status in (400, 404, 405), r
    text = _scrape(server).text
    parse_metrics(text)
    _promtool(text)
