"""Logs: JSON lines on stderr (ts, level, msg, service), one access-log line per request."""

import datetime
import json

import httpx

from e2e_util import TS_RE

LEVELS = {"debug", "info", "warn", "error"}


def _requests(srv, ids):
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        assert c.get("/v1/health", headers={"X-Request-Id": ids[0]}).status_code == 200
        assert c.get("/nope?x=1", headers={"X-Request-Id": ids[1]}).status_code == 404
        assert c.post("/v1/health", headers={"X-Request-Id": ids[2]}).status_code == 405


def test_every_line_is_json_and_access_logged(soma):
    srv = soma()
    ids = ["log-a", "log-b", "log-c"]
    _requests(srv, ids)
    srv.stop(expect=0)  # every line is written once the process has exited
    logs = srv.json_logs()
    assert len(logs) >= 5
    now = datetime.datetime.now(datetime.timezone.utc)
    for o in logs:
        assert TS_RE.match(o.get("ts", "")), o
        ts = datetime.datetime.strptime(o["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
        assert abs((now - ts).total_seconds()) < 120, o
        assert o.get("level") in LEVELS, o
        assert isinstance(o.get("msg"), str) and o["msg"], o
        assert isinstance(o.get("service"), str) and o["service"], o
    expected = {"log-a": ("GET", "/v1/health", 200), "log-b": ("GET", "/nope", 404), "log-c": ("POST", "/v1/health", 405)}
    for rid, (method, path, status) in expected.items():
        lines = [o for o in logs if o.get("request_id") == rid]
        assert len(lines) == 1, f"{len(lines)} access-log lines for {rid}: {lines}"
        a = lines[0]
        assert a["method"] == method and a["path"] == path and a["status"] == status, a
        assert isinstance(a["duration_ms"], (int, float)) and 0 <= a["duration_ms"] < 5000, a
        assert a["level"] == "info"
    services = {o["service"] for o in logs}
    assert {"orchestrator", "http"} <= services, services


def test_access_log_can_be_disabled(soma):
    srv = soma("log.access=false")
    _requests(srv, ["q-a", "q-b", "q-c"])
    srv.stop(expect=0)
    logs = srv.json_logs()
    assert not [o for o in logs if "request_id" in o], "access-log lines despite log.access=false"
    assert any(o.get("msg", "").startswith("stopping service") for o in logs)


def test_log_level_filters(soma):
    srv = soma("log.level=warn")
    _requests(srv, ["w-a", "w-b", "w-c"])
    srv.stop(expect=0)
    logs = srv.json_logs()
    assert logs, "the warning about tenant default is expected"
    assert all(o["level"] in ("warn", "error") for o in logs), logs


def test_text_format(soma):
    srv = soma("log.format=text")
    _requests(srv, ["t-a", "t-b", "t-c"])
    srv.stop(expect=0)
    lines = srv.log_lines()
    assert lines
    for ln in lines:
        try:
            json.loads(ln)
        except ValueError:
            continue
        raise AssertionError(f"JSON line with log.format=text: {ln}")
    assert any("t-b" in ln and "/nope" in ln and "404" in ln for ln in lines), lines
    assert all(TS_RE.match(ln.split(" ", 1)[0]) for ln in lines), lines
