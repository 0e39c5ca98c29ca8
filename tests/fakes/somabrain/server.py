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

    server.py --port P [--delay-ms N]   (N: remember and recall answer N ms after they arrived, as /_control)

Control (test side):
    POST /_control {"mode": "ok|down|5xx|429|not_ready|drop|garbage", "delay_ms": N, "poison": "TEXT",
                    "poison_status": N, "status": N, "recall_results": [...]}
        down: every request (health included) answers 503; 5xx: remember/recall answer 500,
        health stays ok; not_ready: health says ready=false (calls still work); drop: the
        connection is closed without an answer (a transport error); garbage: every request gets 200
        with an HTML body; 429: remember/recall are rate limited. delay_ms: remember and
        recall are answered this long after their request line arrived (the fake's own work is
        inside the delay, so a 1 ms SomaBrain answers in 1 ms, not 1 ms plus Python; /health stays
        quick). poison: a remember whose value contains TEXT gets poison_status (default 400).
        status: remember/recall answer this HTTP status (e.g. 401, 404; health stays ok); null
        to stop. recall_results: a recall answers these results as they are (null: the stored ones).
    GET  /_stats -> {requests, remembers, stored, duplicates, duplicate_keys, order:[[tenant,
                     key]...], recalls, last_headers (of the last remember or recall), last_recall,
                     recall_traceparents (the traceparent header of each recall, null when none; the
                     last 100), mode, delay_ms}
    GET  /_count -> {remembers, stored, duplicates} (cheap to poll)
    POST /_reset -> empty, mode ok
"""
import argparse
import json
import socket
import socketserver
import threading
import time

lock = threading.Lock()
state = {}


def reset():
    with lock:
        state.clear()
        state.update({"mode": "ok", "delay_ms": 0, "poison": None, "poison_status": 400, "status": None,
                      "recall_results": None, "requests": 0, "remembers": 0,
                      "memories": {}, "order": [], "dup": {}, "recalls": 0, "last_headers": {},
                      "last_recall": None, "recall_traceparents": [], "index": {}, "seq": {}})


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


STATUS_TEXT = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
               405: "Method Not Allowed", 422: "Unprocessable Entity",
               429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


class Dropped(Exception):
    """The connection is to be closed without an answer."""


class Handler(socketserver.StreamRequestHandler):
    """HTTP/1.1 with keep-alive, one thread per connection. The request line and headers are
    parsed by hand and each answer goes out in one write: http.server's email-based header parser
    and its separate header and body writes cost more than half of the fake's time per request,
    and the fake must be faster than somaagent's relay for bench/memory.sh to measure the relay."""

    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self):
        try:
            while self.one_request():
                pass
        except (ConnectionError, Dropped, OSError):
            pass

    def one_request(self):
        line = self.rfile.readline(65537)
        self.arrived, self.deadline = time.monotonic(), None
        parts = line.split()
        if len(parts) != 3:
            return False
        self.method, self.path = parts[0].decode("latin-1"), parts[1].decode("latin-1")
        self.headers = {}
        while True:
            h = self.rfile.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            self.headers[k.strip().lower()] = v.strip()
        n = int(self.headers.get("content-length") or 0)
        self.raw = self.rfile.read(n) if n else b""
        self.keep = self.headers.get("connection", "").lower() != "close" and parts[2] == b"HTTP/1.1"
        if self.method == "GET":
            self.do_GET()
        elif self.method == "POST":
            self.do_POST()
        else:
            self.send_json(405, {"detail": "Method Not Allowed"})
        return self.keep

    def send_raw(self, status, ctype, data):
        if self.deadline is not None:  # a delayed answer goes out when it is due, not earlier
            time.sleep(max(0.0, self.deadline - time.monotonic()))
            self.deadline = None
        close = "" if self.keep else "Connection: close\r\n"
        head = (f"HTTP/1.1 {status} {STATUS_TEXT.get(status, 'Status')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(data)}\r\n{close}\r\n")
        self.request.sendall(head.encode() + data)

    def send_json(self, status, obj):
        self.send_raw(status, "application/json", json.dumps(obj).encode())

    def body(self):
        try:
            return json.loads(self.raw or b"{}")
        except ValueError:
            return None

    def misbehave(self, api):
        """True when the request was answered by the current mode (drop: Dropped is raised)."""
        with lock:
            state["requests"] += 1
            mode, delay, status = state["mode"], state["delay_ms"], state["status"]
            if api:  # a /health probe (no tenant) must not hide the last call's headers
                state["last_headers"] = dict(self.headers)
        if delay and api:
            self.deadline = self.arrived + delay / 1000.0
        if mode == "drop":
            time.sleep(max(0.0, self.deadline - time.monotonic()) if self.deadline else 0.0)
            self.request.shutdown(socket.SHUT_RDWR)
            raise Dropped()
        if mode == "down":
            self.send_json(503, {"detail": "service unavailable"})
            return True
        if mode == "garbage":
            self.send_raw(200, "text/html", b"<html>not json</html>")
            return True
        if mode == "429" and api:
            self.send_json(429, {"detail": "slow down"})
            return True
        if status and api:
            self.send_json(int(status), {"detail": f"status {status} on demand"})
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
                                     "recall_traceparents": state["recall_traceparents"], "mode": state["mode"],
                                     "delay_ms": state["delay_ms"]})
            return
        if self.path == "/_count":  # the counts alone: cheap to poll during a drain
            with lock:
                self.send_json(200, {"remembers": state["remembers"], "stored": len(state["memories"]),
                                     "duplicates": sum(state["dup"].values())})
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
            self.send_json(200, {"ok": True})
            return
        if self.path == "/_control":
            ctl = self.body() or {}
            with lock:
                for k in ("mode", "delay_ms", "poison", "poison_status", "status", "recall_results"):
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
            poison, poison_status = state["poison"], state["poison_status"]
        if poison and poison in json.dumps(body["value"]):
            self.send_json(int(poison_status), {"detail": "value rejected"})
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
                state["seq"][ident] = len(state["seq"])
                index = state["index"].setdefault(ident[:2], {})
                for w in words(body["value"].get("content", json.dumps(body["value"]))):
                    index.setdefault(w, []).append(ident)
        self.send_json(200, {"ok": True, "tenant": body["tenant"], "namespace": body["namespace"],
                             "coordinate": [0.0, 0.0, 0.0], "promoted_to_wm": True, "persisted_to_ltm": True,
                             "deduplicated": dup, "trace_id": None,
                             "request_id": self.headers.get("x-request-id"), "warnings": []})

    def recall(self):
        body = self.body()
        if self.misbehave(True):
            return
        if not isinstance(body, dict) or not body.get("tenant") or not body.get("query"):
            self.send_json(422, {"detail": "tenant and query are required"})
            return
        q = words(body["query"])
        top_k = int(body.get("top_k") or 3)
        overlap = {}  # through the word index: a recall costs what matches, not every memory
        with lock:
            state["recalls"] += 1
            state["last_recall"] = body
            state["recall_traceparents"] = (state["recall_traceparents"] + [self.headers.get("traceparent")])[-100:]
            index = state["index"].get((body["tenant"], body.get("namespace", "wm")), {})
            for w in q:
                for ident in index.get(w, ()):
                    overlap[ident] = overlap.get(ident, 0) + 1
            scored = [(n, state["seq"][ident], state["memories"][ident]) for ident, n in overlap.items()]
        scored.sort(key=lambda t: (-t[0], t[1]))  # best first, then in the order stored
        results = [{"layer": "wm", "score": float(s), "payload": v, "coordinate": None, "source": "wm"}
                   for s, _, v in scored[:top_k]]
        with lock:
            if state["recall_results"] is not None:
                results = state["recall_results"]
        self.send_json(200, {"tenant": body["tenant"], "namespace": body.get("namespace", "wm"),
                             "results": results, "wm_hits": len(results), "ltm_hits": 0, "duration_ms": 0.1,
                             "degraded": False})


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        pass  # a client that went away is no news


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--delay-ms", type=float, default=0, help="remember and recall answer after this long")
    args = ap.parse_args()
    reset()
    state["delay_ms"] = args.delay_ms
    srv = Server((args.host, args.port), Handler)
    print(f"fake somabrain listening on {args.host}:{args.port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
