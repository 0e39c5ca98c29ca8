"""The web UI's files as served by somaagent (the browser suite in tests/browser drives the UI
itself): public routes, types, security headers, ETag revalidation with a proper 304 status line,
the 404 envelope; and /v1/runtime-config carrying the limits the UI checks before an upload."""

import pytest

from e2e_util import check_envelope, http, raw_request

# store_neutral: static UI files and /v1/runtime-config: no store access
pytestmark = pytest.mark.store_neutral


def test_pages_and_assets(soma, tmp_path):
    srv = soma("auth.require=true")  # the UI itself needs no key: it asks for one
    for path, ctype in (("/", "text/html"), ("/ops", "text/html"), ("/assets/chat.js", "javascript"),
                        ("/assets/app.css", "text/css"), ("/assets/favicon.svg", "image/svg+xml")):
        r = http().get(srv.url + path, timeout=5)
        assert r.status_code == 200, (path, r.text[:200])
        assert ctype in r.headers["content-type"], (path, r.headers)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers.get("etag"), path
    page = http().get(srv.url + "/", timeout=5)
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp.replace("style-src", ""), csp
    etag = http().get(srv.url + "/assets/chat.js", timeout=5).headers["etag"]
    r = raw_request(srv, f"GET /assets/chat.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n".encode())
    assert (r.status, r.reason) == (304, "Not Modified") and r.body == b"", r
    check_envelope(http().get(srv.url + "/assets/nope.js", timeout=5), 404)
    check_envelope(http().get(srv.url + "/assets/..%2Fsomaagent.db", timeout=5), 404)


def test_runtime_config_has_the_upload_and_stream_settings(soma):
    srv = soma("uploads.max_mb=3", "uploads.max_files=4", "uploads.allowed_types=image/*,text/plain",
               "stream.keepalive_s=7")
    body = http().get(srv.url + "/v1/runtime-config", timeout=5).json()
    assert body["uploads"] == {"max_mb": 3, "max_files": 4, "allowed_types": "image/*,text/plain"}, body
    assert body["stream"] == {"keepalive_s": 7, "retry_ms": 2000}, body
