#!/usr/bin/env python3
"""A stand-in for an OpenTelemetry collector's OTLP/HTTP receiver (JSON only), for tests.
Standard library only.

    server.py --port P

    POST /v1/traces   an ExportTraceServiceRequest as OTLP JSON (interop.md 6.1). The body is
                      checked: Content-Type application/json, keys lowerCamelCase (no '_'),
                      traceId 32 and spanId/parentSpanId 16 hex digits, kind and status.code
                      integers, *UnixNano decimal strings, intValue a decimal string. A body that
                      fails answers 400 (and is recorded with its problems); else it answers {}.
Control (test side):
    POST /_control {"mode": "ok|400|500|429|503|hang", "times": N, "retry_after": S}
        the next N export requests (default 1; -1: until changed) behave as mode; 429 and 503
        send Retry-After: S (default 1); hang reads the request and never answers (until /_reset).
    GET  /_received -> {"requests": [{"status", "problems", "content_type", "body"}...]}
        every export request in arrival order, with the status it was answered (0: hung)
    GET  /_spans    -> {"spans": [span + {"serviceName"}...]} of the requests answered 200
    POST /_reset    -> everything forgotten, mode ok, hung requests released (they get 503)
"""
import argparse
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
state = {}
release = threading.Event()

HEX = re.compile(r"^[0-9a-fA-F]+$")
DIGITS = re.compile(r"^-?[0-9]+$")


def reset():
    global release
    with lock:
        old = release
        release = threading.Event()
        state.clear()
        state.update({"queue": [], "sticky": None, "requests": []})
    old.set()


def next_mode():
    with lock:
        if state["queue"]:
            return state["queue"].pop(0)
        return state["sticky"] or ("ok", 1)


def check_keys(v, where, problems):
    if isinstance(v, dict):
        for k, x in v.items():
            if "_" in k:
                problems.append(f"{where}: key {k!r} is not lowerCamelCase")
            check_keys(x, f"{where}.{k}", problems)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            check_keys(x, f"{where}[{i}]", problems)


def check_id(span, key, n, problems, optional=False):
    v = span.get(key)
    if optional and (v is None or v == ""):
        return
    if not isinstance(v, str) or len(v) != n or not HEX.match(v) or set(v) == {"0"}:
        problems.append(f"span {span.get('name')!r}: {key} {v!r} is not {n} hex digits")


def check_value(v, where, problems):
    if not isinstance(v, dict) or len(v) != 1:
        problems.append(f"{where}: an AnyValue has exactly one member, got {v!r}")
        return
    (k, x), = v.items()
    if k == "intValue" and not (isinstance(x, str) and DIGITS.match(x)):
        problems.append(f"{where}: intValue {x!r} is not a decimal string")
    elif k == "stringValue" and not isinstance(x, str):
        problems.append(f"{where}: stringValue {x!r} is not a string")
    elif k not in ("intValue", "stringValue", "boolValue", "doubleValue", "arrayValue", "kvlistValue",
                   "bytesValue"):
        problems.append(f"{where}: unknown AnyValue member {k!r}")


def check_span(s, problems):
    check_id(s, "traceId", 32, problems)
    check_id(s, "spanId", 16, problems)
    check_id(s, "parentSpanId", 16, problems, optional=True)
    if not isinstance(s.get("name"), str) or not s["name"]:
        problems.append(f"span without a name: {s!r}")
    if not isinstance(s.get("kind"), int) or not 0 <= s["kind"] <= 5:
        problems.append(f"span {s.get('name')!r}: kind {s.get('kind')!r} is not an integer 0..5")
    for k in ("startTimeUnixNano", "endTimeUnixNano"):
        if not (isinstance(s.get(k), str) and DIGITS.match(s[k])):
            problems.append(f"span {s.get('name')!r}: {k} {s.get(k)!r} is not a decimal string")
    if isinstance(s.get("startTimeUnixNano"), str) and isinstance(s.get("endTimeUnixNano"), str) and \
            DIGITS.match(s["startTimeUnixNano"]) and DIGITS.match(s["endTimeUnixNano"]) and \
            int(s["endTimeUnixNano"]) < int(s["startTimeUnixNano"]):
        problems.append(f"span {s.get('name')!r} ends before it starts")
    for a in s.get("attributes", []):
        check_value(a.get("value"), f"span {s.get('name')!r} attribute {a.get('key')!r}", problems)
    st = s.get("status", {})
    if "code" in st and not isinstance(st["code"], int):
        problems.append(f"span {s.get('name')!r}: status.code {st['code']!r} is not an integer")


def check(body, problems):
    check_keys(body, "request", problems)
    rs = body.get("resourceSpans") if isinstance(body, dict) else None
    if not isinstance(rs, list) or not rs:
        problems.append("resourceSpans is missing or empty")
        return []
    out = []
    for r in rs:
        names = [a["value"].get("stringValue") for a in r.get("resource", {}).get("attributes", [])
                 if a.get("key") == "service.name"]
        if len(names) != 1:
            problems.append("the resource has no service.name attribute")
        for ss in r.get("scopeSpans", []):
            for s in ss.get("spans", []):
                check_span(s, problems)
                out.append(dict(s, serviceName=names[0] if names else None))
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with lock:
            if self.path == "/_received":
                self.send_json(200, {"requests": state["requests"]})
            elif self.path == "/_spans":
                spans = [s for r in state["requests"] if r["status"] == 200 for s in r["spans"]]
                self.send_json(200, {"spans": spans})
            else:
                self.send_json(404, {"code": 5, "message": "not found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if self.path == "/_reset":
            reset()
            self.send_json(200, {"ok": True})
            return
        if self.path == "/_control":
            ctl = json.loads(raw or b"{}")
            mode = (ctl.get("mode", "ok"), ctl.get("retry_after", 1))
            with lock:
                if ctl.get("times", 1) < 0:
                    state["sticky"] = None if mode[0] == "ok" else mode
                else:
                    state["queue"].extend([mode] * ctl.get("times", 1))
            self.send_json(200, {"ok": True})
            return
        if self.path != "/v1/traces":
            self.send_json(404, {"code": 5, "message": f"no receiver at {self.path}"})
            return
        problems = []
        ctype = self.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip() != "application/json":
            problems.append(f"Content-Type {ctype!r} is not application/json")
        try:
            body = json.loads(raw)
        except ValueError as e:
            body, spans = None, []
            problems.append(f"not JSON: {e}")
        else:
            spans = check(body, problems)
        mode, retry_after = next_mode()
        status = 400 if problems else {"ok": 200, "hang": 0}.get(mode, int(mode) if mode.isdigit() else 200)
        rec = {"status": status, "problems": problems, "content_type": ctype, "body": body, "spans": spans}
        with lock:
            state["requests"].append(rec)
            ev = release
        if status == 0:
            ev.wait(120)
            rec["status"] = 503
            self.send_json(503, {"code": 14, "message": "released"})
        elif status == 200:
            self.send_json(200, {})
        else:
            headers = {"Retry-After": str(retry_after)} if status in (429, 503) else None
            self.send_json(status, {"code": 3 if status == 400 else 14, "message": "; ".join(problems) or mode},
                           headers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    reset()
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()
