#!/usr/bin/env python3
"""A stand-in for an Open Policy Agent server, for tests: OPA's Data API as somaagent uses it
(shared/reference/interop.md section 4.1), answering from a decision table, and misbehaving on demand.
Standard library only.

    server.py --port P [--table FILE]

Policy queries:
    POST /v1/data/soma/allow {"input": {...}}
        The input must have exactly the keys of CONTRACTS.md section 6 (tenant, subject, persona_id,
        scopes, action, resource, context, degraded.somabrain) with their types; otherwise 400
        {"code": "invalid_parameter", ...} (and the input is kept in stats "invalid").
        The first table entry whose "input" matches gives {"result": <entry "result">}; no match
        gives {} (an undefined decision). An entry matches when each of its keys matches the input's:
        "<any>" matches anything; {"$gt": n} / {"$lte": n} a number above n / up to n; an object
        matches an object holding (at least) its keys with matching values; anything else must be
        equal (and of the same JSON type).
    GET /health -> 200 {} (500 {"error": ...} in mode "unhealthy")

Table: a JSON list [{"input": {...}, "result": true | false | {"allow": b, "reason": s}}], or an
object with "cases": [{"input", "expect"}] (tests/e2e/policy_table.json): expect is the result.

Control (test side):
    POST /_control {"mode": "ok|down|slow|hang|500|undefined|unhealthy|bool", "delay_ms": MS,
                    "table": [...] or {"cases": [...]}}
        down: every connection is closed without an answer; slow: queries answer after delay_ms;
        hang: queries and /health are read and get no answer until the mode changes (a wedged OPA:
        the connection stays open; then they are answered as the new mode says);
        500: {"code": "internal_error"} with status 500; undefined: {} for every query;
        bool: the result of an {allow, reason} entry is sent as the bare boolean allow.
    GET  /_stats -> {"requests": n, "health_requests": n, "inputs": [...], "unmatched": [...],
                     "invalid": [...]}
    POST /_reset -> mode ok, the table given at start, stats cleared
"""
import argparse
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INPUT_KEYS = {"tenant", "subject", "persona_id", "scopes", "action", "resource", "context", "degraded"}

lock = threading.Lock()
state = {}
unhung = threading.Condition(lock)  # notified when the mode changes (mode "hang" waits on it)


def load_table(obj):
    if isinstance(obj, dict) and "cases" in obj:
        return [{"input": c["input"], "result": c["expect"]} for c in obj["cases"]]
    return list(obj or [])


def reset(initial):
    with lock:
        state.clear()
        state.update({"mode": "ok", "delay_ms": 0, "table": load_table(initial), "requests": 0,
                      "health_requests": 0, "inputs": [], "unmatched": [], "invalid": []})


def matches(pattern, value):
    if pattern == "<any>":
        return True
    if isinstance(pattern, dict) and pattern and all(k.startswith("$") for k in pattern):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and all((value > n) if op == "$gt" else (value <= n) if op == "$lte" else False
                              for op, n in pattern.items())
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and matches(v, value[k]) for k, v in pattern.items())
    return pattern == value and type(pattern) is type(value)


def problems(inp):
    """What makes an input differ from CONTRACTS.md section 6; [] when it is right."""
    if not isinstance(inp, dict):
        return ["input is not an object"]
    out = []
    if set(inp) != INPUT_KEYS:
        out.append(f"keys {sorted(inp)} != {sorted(INPUT_KEYS)}")
    for k in ("tenant", "subject", "action", "resource"):
        if not isinstance(inp.get(k), str):
            out.append(f"{k} is not a string")
    if not (inp.get("persona_id") is None or isinstance(inp.get("persona_id"), str)):
        out.append("persona_id is neither null nor a string")
    scopes = inp.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        out.append("scopes is not a list of strings")
    if not isinstance(inp.get("context"), dict):
        out.append("context is not an object")
    deg = inp.get("degraded")
    if not isinstance(deg, dict) or set(deg) != {"somabrain"} or not isinstance(deg["somabrain"], bool):
        out.append("degraded is not {somabrain: bool}")
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def hang_up(self):
        """Mode down: close without a byte (the client sees an empty reply / reset)."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.close_connection = True

    def do_GET(self):
        if self.path == "/_stats":
            with lock:
                self.send_json(200, {k: state[k] for k in ("requests", "health_requests", "inputs", "unmatched",
                                                            "invalid", "mode")})
            return
        if self.path.split("?")[0] == "/health":
            with lock:
                state["health_requests"] += 1
                unhung.wait_for(lambda: state["mode"] != "hang", timeout=120)
                mode = state["mode"]
            if mode == "down":
                return self.hang_up()
            if mode == "unhealthy":
                return self.send_json(500, {"error": "not ready"})
            return self.send_json(200, {})
        self.send_json(404, {"code": "undefined_document", "message": "not found"})

    def do_POST(self):
        raw = self.read_body()
        if self.path == "/_control":
            ctl = json.loads(raw or b"{}")
            with lock:
                for k in ("mode", "delay_ms"):
                    if k in ctl:
                        state[k] = ctl[k]
                if "table" in ctl:
                    state["table"] = load_table(ctl["table"])
                unhung.notify_all()
            return self.send_json(200, {"ok": True})
        if self.path == "/_reset":
            reset(self.server.initial_table)
            with lock:
                unhung.notify_all()
            return self.send_json(200, {"ok": True})
        if self.path != "/v1/data/soma/allow":
            return self.send_json(404, {"code": "undefined_document", "message": "not found"})
        with lock:
            state["requests"] += 1
            unhung.wait_for(lambda: state["mode"] != "hang", timeout=120)
            mode, delay_ms, table = state["mode"], state["delay_ms"], state["table"]
        if mode == "down":
            return self.hang_up()
        if mode == "slow":
            time.sleep(delay_ms / 1000.0)
        try:
            inp = json.loads(raw)["input"]
        except (ValueError, KeyError, TypeError):
            return self.send_json(400, {"code": "invalid_parameter", "message": "body must be {\"input\": ...}"})
        bad = problems(inp)
        with lock:
            state["inputs"].append(inp)
            del state["inputs"][:-500]
            if bad:
                state["invalid"].append({"input": inp, "problems": bad})
        if bad:
            return self.send_json(400, {"code": "invalid_parameter", "message": "; ".join(bad)})
        if mode == "500":
            return self.send_json(500, {"code": "internal_error", "message": "fake failure"})
        if mode == "undefined":
            return self.send_json(200, {})
        for entry in table:
            if matches(entry["input"], inp):
                result = entry["result"]
                if mode == "bool" and isinstance(result, dict):
                    result = bool(result.get("allow"))
                return self.send_json(200, {"result": result})
        with lock:
            state["unmatched"].append(inp)
        return self.send_json(200, {})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--table", help="decision table (JSON file)")
    args = ap.parse_args()
    initial = json.load(open(args.table)) if args.table else []
    reset(initial)
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.daemon_threads = True
    srv.initial_table = initial
    print(f"fake opa listening on {args.host}:{args.port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
