#!/usr/bin/env python3
"""A stand-in for SomaBrain (the memory service), for tests. Standard library only.

Speaks the part of SomaBrain's HTTP contract somaagent uses (CONTRACTS.md section 7; the
request/response models of somatechlat/somabrain):
    POST /memory/remember {tenant, namespace, key, value{}, universe?, tags?}
        -> {ok, tenant, namespace, coordinate, promoted_to_wm, persisted_to_ltm, deduplicated,
            trace_id, request_id, warnings}; 422 when a required field is missing
    POST /memory/recall {tenant, namespace, query, top_k, session_id?}
        -> {tenant, namespace, results:[{layer, score, payload, coordinate, source}], wm_hits,
            ltm_hits, duration_ms, degraded}
    GET  /health -> {ok, ready, memory_ok, components:{memory:{ok}}, namespace, ...}
It stores what it receives (by tenant, namespace, key: a key seen again is counted as a
duplicate and not stored twice, as SomaBrain deduplicates) and misbehaves on demand.

    server.py --port P

Control (test side):
    POST /_control {"mode": "ok|down|5xx|429|not_ready|drop|garbage", "delay_ms": N, "poison": "TEXT"}
        down: every request (health included) answers 503; 5xx: remember/recall answer 500,
        health stays ok; not_ready: health says ready=false (calls still work); drop: the
        connection is closed without an answer (a transport error); garbage: every request gets 200
        with an HTML body; 429: remember/recall are rate limited. delay_ms: remember and
        recall wait this long first (slow; /health stays quick). poison: a remember whose value contains TEXT gets 400.
    GET  /_stats -> {requests, remembers, stored, duplicates, duplicate_keys, order:[[tenant,
                     key]...], recalls, last_headers (of the last remember or recall), last_recall}
    POST /_reset -> empty, mode ok
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
state = {}


def reset():
    with lock:
        state.clear()
        state.update({"mode": "ok", "delay_ms": 0, "poison": None, "requests": 0, "remembers": 0,
                      "memories": {}, "order": [], "dup": {}, "recalls": 0, "last_headers": {},
                      "last_recall": None})


def words(text):
    out, cur = set(), []
    for ch in str(text).lower():
        if ch.isalnum():
            cur.append(ch)
        elif cur:
            out.add("".join(cur))
            cur = []
    if cur:
        out.add("".join(cur))
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as somaagent reuses its connection
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None

    def misbehave(self, api):
        """True when the request was answered (or dropped) by the current mode."""
        with lock:
            state["requests"] += 1
            mode, delay = state["mode"], state["delay_ms"]
            if api:  # a /health probe (no tenant) must not hide the last call's headers
                state["last_headers"] = {k.lower(): v for k, v in self.headers.items()}
        if delay and api:
            time.sleep(delay / 1000.0)
        if mode == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        if mode == "down":
            self.send_json(503, {"detail": "service unavailable"})
            return True
        if mode == "garbage":
            data = b"<html>not json</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return True
        if mode == "429" and api:
            self.send_json(429, {"detail": "slow down"})
            return True
        if mode == "5xx" and api:
            self.send_json(500, {"detail": "internal error"})
            return True
        return False

    def do_GET(self):
        if self.path == "/_stats":
            with lock:
                dups = {k: n for k, n in state["dup"].items() if n}
                self.send_json(200, {"requests": state["requests"], "remembers": state["remembers"],
                                     "stored": len(state["memories"]), "duplicates": sum(dups.values()),
                                     "duplicate_keys": sorted(dups), "order": state["order"],
                                     "recalls": state["recalls"], "last_headers": state["last_headers"],
                                     "last_recall": state["last_recall"],
                                     "mode": state["mode"]})
            return
        if self.path == "/health":
            if self.misbehave(False):
                return
            with lock:
                ready = state["mode"] != "not_ready"
                n = len(state["memories"])
            self.send_json(200, {"ok": True, "ready": ready, "memory_ok": True, "kafka_ok": True,
                                 "postgres_ok": True, "components": {"memory": {"ok": True, "ping_ms": 0.1}},
                                 "memory_items": n, "namespace": "wm"})
            return
        self.send_json(404, {"detail": "Not Found"})

    def do_POST(self):
        if self.path == "/_reset":
            reset()
            self.body()
            self.send_json(200, {"ok": True})
            return
        if self.path == "/_control":
            ctl = self.body() or {}
            with lock:
                for k in ("mode", "delay_ms", "poison"):
                    if k in ctl:
                        state[k] = ctl[k]
            self.send_json(200, {"ok": True})
            return
        if self.path == "/memory/remember":
            self.remember()
            return
        if self.path == "/memory/recall":
            self.recall()
            return
        self.send_json(404, {"detail": "Not Found"})

    def remember(self):
        body = self.body()
        if self.misbehave(True):
            return
        if not isinstance(body, dict) or not body.get("tenant") or not body.get("namespace") \
                or not body.get("key") or not isinstance(body.get("value"), dict):
            self.send_json(422, {"detail": "tenant, namespace, key and value{} are required"})
            return
        with lock:
            poison = state["poison"]
        if poison and poison in json.dumps(body["value"]):
            self.send_json(400, {"detail": "value rejected"})
            return
        ident = (body["tenant"], body["namespace"], body["key"])
        with lock:
            state["remembers"] += 1
            dup = ident in state["memories"]
            if dup:
                state["dup"][body["key"]] = state["dup"].get(body["key"], 0) + 1
            else:
                state["memories"][ident] = body["value"]
                state["order"].append([body["tenant"], body["key"]])
        self.send_json(200, {"ok": True, "tenant": body["tenant"], "namespace": body["namespace"],
                             "coordinate": [0.0, 0.0, 0.0], "promoted_to_wm": True, "persisted_to_ltm": True,
                             "deduplicated": dup, "trace_id": None,
                             "request_id": self.headers.get("X-Request-ID"), "warnings": []})

    def recall(self):
        body = self.body()
        if self.misbehave(True):
            return
        if not isinstance(body, dict) or not body.get("tenant") or not body.get("query"):
            self.send_json(422, {"detail": "tenant and query are required"})
            return
        q = words(body["query"])
        top_k = int(body.get("top_k") or 3)
        scored = []
        with lock:
            state["recalls"] += 1
            state["last_recall"] = body
            for (tenant, ns, key), value in state["memories"].items():
                if tenant != body["tenant"] or ns != body.get("namespace", "wm"):
                    continue
                overlap = len(q & words(value.get("content", json.dumps(value))))
                if overlap:
                    scored.append((overlap, key, value))
        scored.sort(key=lambda t: -t[0])
        results = [{"layer": "wm", "score": float(s), "payload": v, "coordinate": None, "source": "wm"}
                   for s, _, v in scored[:top_k]]
        self.send_json(200, {"tenant": body["tenant"], "namespace": body.get("namespace", "wm"),
                             "results": results, "wm_hits": len(results), "ltm_hits": 0, "duration_ms": 0.1,
                             "degraded": False})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()
    reset()
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.daemon_threads = True
    print(f"fake somabrain listening on {args.host}:{args.port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
