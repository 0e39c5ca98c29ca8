"""`somaagent health [--url URL]`: the probe of container health checks (deploy/Dockerfile's
HEALTHCHECK). Exit 0 when /v1/health answers 200 with status ok or degraded, 1 for anything else
(503 down, a closed port, an answer that is not the health JSON), 2 for a usage error."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from e2e_util import describe, free_port, run_cli


def test_health_exits_0_against_a_running_server(soma, tmp_path):
    srv = soma()
    cp = run_cli(["health", "--url", f"http://127.0.0.1:{srv.port}"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    assert f"http://127.0.0.1:{srv.port}/v1/health" in cp.stdout and ("ok" in cp.stdout or "degraded" in cp.stdout)


def test_health_without_url_probes_http_listen(soma, tmp_path):
    """No --url: the configured http.listen, a wildcard host probed on loopback (as in the image)."""
    port = free_port()
    soma(listen_host="0.0.0.0", port=port, env={"SOMA_AUTH_ADMIN_TOKEN": "t" * 40})
    cp = run_cli(["health"], tmp_path, env={"SOMA_HTTP_LISTEN": f"0.0.0.0:{port}"})
    assert cp.returncode == 0, describe(cp)
    assert f"http://127.0.0.1:{port}/v1/health" in cp.stdout


def test_health_exits_1_on_a_closed_port(tmp_path):
    port = free_port()
    cp = run_cli(["health", "--url", f"http://127.0.0.1:{port}/v1/health"], tmp_path)
    assert cp.returncode == 1, describe(cp)
    assert f"127.0.0.1:{port}" in cp.stderr


class _Canned(BaseHTTPRequestHandler):
    answers = {}  # path -> (status, body)

    def do_GET(self):  # noqa: N802 (http.server's name)
        status, body = self.answers.get(self.path, (404, b"{}"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def canned():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    _Canned.answers = {
        "/down": (503, json.dumps({"status": "down"}).encode()),
        "/degraded": (200, json.dumps({"status": "degraded", "services": {}}).encode()),
        "/garbage": (200, b"<html>not health</html>"),
        "/v1/health": (200, json.dumps({"status": "ok"}).encode()),
    }
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("path,rc", [("/down", 1), ("/degraded", 0), ("/garbage", 1), ("", 0)])
def test_health_reads_the_status(canned, tmp_path, path, rc):
    cp = run_cli(["health", "--url", canned + path], tmp_path)
    assert cp.returncode == rc, describe(cp)


@pytest.mark.parametrize("url", ["https://127.0.0.1:1/", "127.0.0.1:8080", "http://", "http://[::1/x"])
def test_health_refuses_a_url_it_cannot_probe(tmp_path, url):
    cp = run_cli(["health", "--url", url], tmp_path)
    assert cp.returncode == 2 and "--url" in cp.stderr, describe(cp)


@pytest.mark.parametrize("port", ["99999", "65536", "0"])
def test_health_refuses_a_port_out_of_range(tmp_path, port):
    cp = run_cli(["health", "--url", f"http://127.0.0.1:{port}/"], tmp_path)
    assert cp.returncode == 2 and "--url" in cp.stderr, describe(cp)
