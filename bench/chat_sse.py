#!/usr/bin/env python3
"""bench/chat_sse.py - streamed POST /v1/chat/completions timings for bench/chat.sh (stdlib only).

    chat_sse.py latency --direct H:P --through H:P [-n 50] --out FILE
        time to first content delta and inter-delta gaps, directly against a (slow) fake LLM
        and through somaagent, requests alternating; prints quantiles and through-minus-direct.
    chat_sse.py proxy --direct H:P --soma H:P --nginx H:P [-n 1000] --out FILE
        total time of a streamed request directly, through somaagent and through nginx
        proxy_pass, rounds rotating the order; prints quantiles, added latencies and their ratio.

Raw sockets and a minimal HTTP/1.1 reader (Content-Length, chunked, or until close);
timestamps are time.perf_counter() taken right after each recv, events are parsed afterwards.
"""
import argparse
import json
import socket
import sys
import time

perf = time.perf_counter


def quantile(xs, q):
    """Nearest-rank quantile (q in 0..1) of a non-empty list."""
    s = sorted(xs)
    i = min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))
    return s[i]


def dechunk(pieces):
    """Decodes chunked framing over [(t, bytes)]; returns ([(t, payload)], complete)."""
    out, buf, state, left = [], b"", "size", 0
    for t, d in pieces:
        buf += d
        payload = []
        while True:
            if state == "size":
                i = buf.find(b"\r\n")
                if i < 0:
                    break
                left = int(buf[:i].split(b";")[0], 16)
                buf = buf[i + 2:]
                state = "data" if left else "end"
            elif state == "data":
                if not buf:
                    break
                take = buf[:left]
                payload.append(take)
                buf = buf[len(take):]
                left -= len(take)
                if left == 0:
                    state = "crlf"
            elif state == "crlf":
                if len(buf) < 2:
                    break
                buf = buf[2:]
                state = "size"
            else:  # end: trailers then CRLF
                if buf.startswith(b"\r\n"):
                    if payload:
                        out.append((t, b"".join(payload)))
                    return out, True
                break
        if payload:
            out.append((t, b"".join(payload)))
    return out, False


def sse_events(pieces):
    """Splits [(t, payload)] into SSE events [(t, event bytes)], t = when its blank line arrived."""
    events, buf = [], b""
    for t, d in pieces:
        buf += d
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            events.append((t, ev))
    return events


class Conn:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closed it."""

    def __init__(self, hostport):
        h, p = hostport.rsplit(":", 1)
        self.addr = (h, int(p))
        self.sock = None

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def request(self, path, body, headers=(), keepalive=True):
        """POSTs body; returns (status, t_start, t_end, [(t, sse_event_bytes)])."""
        if self.sock is None:
            self.sock = socket.create_connection(self.addr)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = [f"POST {path} HTTP/1.1", f"Host: {self.addr[0]}:{self.addr[1]}",
                "Content-Type: application/json", "Accept: text/event-stream", f"Content-Length: {len(body)}"]
        head += list(headers)
        if not keepalive:
            head.append("Connection: close")
        req = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        sock = self.sock
        recv = sock.recv
        t0 = perf()
        sock.sendall(req)
        pieces = []  # (t, raw bytes) as received
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = recv(65536)
            if not d:
                raise ConnectionError("closed before the response head")
            buf += d
            pieces.append((perf(), d))
        hlen = buf.index(b"\r\n\r\n") + 4
        lines = buf[:hlen].decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                hdrs[k.strip().lower()] = v.strip().lower()
        # body: collect raw pieces (with their recv times) until the framing says it ended
        body_pieces = []
        rest = buf[hlen:]
        t_head = pieces[-1][0]
        if rest:
            body_pieces.append((t_head, rest))
        mode = "chunked" if "chunked" in hdrs.get("transfer-encoding", "") else (
            "length" if "content-length" in hdrs else "close")
        need = int(hdrs.get("content-length", "0"))
        got = len(rest)
        done = False
        tail = rest[-16:]
        while True:
            if mode == "length" and got >= need:
                break
            if mode == "chunked" and tail.endswith(b"0\r\n\r\n") and dechunk(body_pieces)[1]:
                break
            d = recv(65536)
            t = perf()
            if not d:
                done = True
                break
            body_pieces.append((t, d))
            got += len(d)
            tail = (tail + d)[-16:]
        t_end = body_pieces[-1][0] if body_pieces else t_head
        if mode == "close" or hdrs.get("connection") == "close" or not keepalive or done:
            self.close()
        events = sse_events(dechunk(body_pieces)[0] if mode == "chunked" else body_pieces)
        return status, t0, t_end, events


def content_deltas(events):
    """Times of the SSE events carrying non-empty choices[0].delta.content."""
    out = []
    for t, ev in events:
        for line in ev.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                continue
            try:
                obj = json.loads(data)
            except ValueError:
                continue
            ch = obj.get("choices") or []
            if ch and (ch[0].get("delta") or {}).get("content"):
                out.append(t)
    return out


def fmt(ms):
    return f"{ms:9.3f}"


def cmd_latency(a):
    body = json.dumps({"model": "fake-model", "stream": True, "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "bench stream latency"}]}).encode()
    targets = {"direct": (a.direct, ["Authorization: Bearer x"]), "through": (a.through, [])}
    ttfd = {"direct": [], "through": []}
    gaps = {"direct": [], "through": []}
    ndeltas = {"direct": set(), "through": set()}
    errors = []
    for i in range(a.n + 2):  # the first round warms up both and is not counted
        order = ["direct", "through"] if i % 2 == 0 else ["through", "direct"]
        for name in order:
            hostport, hdrs = targets[name]
            c = Conn(hostport)
            try:
                status, t0, t_end, events = c.request("/v1/chat/completions", body, hdrs, keepalive=False)
            except OSError as e:
                errors.append(f"{name}: {e}")
                continue
            finally:
                c.close()
            if status != 200:
                errors.append(f"{name}: HTTP {status}")
                continue
            ts = content_deltas(events)
            if not ts:
                errors.append(f"{name}: no content delta")
                continue
            if i < 2:
                continue
            ndeltas[name].add(len(ts))
            ttfd[name].append((ts[0] - t0) * 1000)
            gaps[name].extend((b - x) * 1000 for x, b in zip(ts, ts[1:]))
    res = {"n": a.n, "errors": errors[:20], "error_count": len(errors),
           "deltas_per_reply": {k: sorted(v) for k, v in ndeltas.items()}}
    ok = all(len(ttfd[k]) > 0 for k in ttfd) and all(len(gaps[k]) > 0 for k in gaps)
    print(f"  requests: {len(ttfd['direct'])} direct, {len(ttfd['through'])} through somaagent "
          f"(alternating); content deltas per reply: direct {sorted(ndeltas['direct'])}, "
          f"through {sorted(ndeltas['through'])}; errors: {len(errors)}")
    for e in errors[:5]:
        print(f"    error: {e}")
    if not ok:
        res["ok"] = False
        json.dump(res, open(a.out, "w"))
        print("  FAILED: no complete measurements")
        return 1
    head = f"ms (p99 of {a.n} samples" + (" = the slowest)" if a.n <= 100 else ")")
    print(f"  {head:38s} {'p50':>9s} {'p99':>9s}")
    for label, dist in (("time to first delta", ttfd), ("inter-delta gap", gaps)):
        row = {}
        for name in ("direct", "through"):
            row[name] = {q: quantile(dist[name], q) for q in (0.5, 0.99)}
            print(f"  {label + ' ' + name:38s} {fmt(row[name][0.5])} {fmt(row[name][0.99])}")
        added = {q: row["through"][q] - row["direct"][q] for q in (0.5, 0.99)}
        print(f"  {label + ' added':38s} {fmt(added[0.5])} {fmt(added[0.99])}")
        key = "ttfd" if label.startswith("time") else "gap"
        res[key] = {"direct": row["direct"][0.5], "direct_p99": row["direct"][0.99],
                    "through": row["through"][0.5], "through_p99": row["through"][0.99],
                    "added_p50": added[0.5], "added_p99": added[0.99]}
    res["ok"] = True
    json.dump(res, open(a.out, "w"))
    return 0


def cmd_proxy(a):
    # include_usage: somaagent always asks the provider for usage and drops it unless the client
    # asked too; asking makes all three replies the same six events
    body = json.dumps({"model": "bench", "stream": True, "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "bench proxy"}]}).encode()
    names = ["direct", "somaagent", "nginx"]
    conns = {"direct": Conn(a.direct), "somaagent": Conn(a.soma), "nginx": Conn(a.nginx)}
    hdrs = {"direct": ["Authorization: Bearer x"], "somaagent": [], "nginx": ["Authorization: Bearer x"]}
    times = {k: [] for k in names}
    nev = {k: set() for k in names}
    errors = []
    warm = max(20, a.n // 10)
    for i in range(a.n + warm):
        order = names[i % 3:] + names[:i % 3]
        for name in order:
            try:
                status, t0, t_end, events = conns[name].request("/v1/chat/completions", body, hdrs[name])
            except OSError as e:
                conns[name].close()
                errors.append(f"{name}: {e}")
                continue
            if status != 200 or not events or not events[-1][1].startswith(b"data: [DONE]"):
                errors.append(f"{name}: HTTP {status}, {len(events)} events, last "
                              f"{events[-1][1][:40] if events else b''!r}")
                continue
            if i >= warm:
                times[name].append((t_end - t0) * 1000)
                nev[name].add(len(events))
    for c in conns.values():
        c.close()
    res = {"n": a.n, "errors": errors[:20], "error_count": len(errors)}
    print(f"  rounds: {a.n} (+{warm} warm-up), keep-alive client connections, order rotating; "
          f"SSE events per reply: " + ", ".join(f"{k} {sorted(v)}" for k, v in nev.items()) +
          f"; errors: {len(errors)}")
    for e in errors[:5]:
        print(f"    error: {e}")
    if not all(times[k] for k in names):
        res["ok"] = False
        json.dump(res, open(a.out, "w"))
        print("  FAILED: no complete measurements")
        return 1
    q = {k: {p: quantile(times[k], p) for p in (0.5, 0.99)} for k in names}
    print(f"  {'total request time, ms':32s} {'p50':>9s} {'p99':>9s} {'added p50':>10s} {'added p99':>10s}")
    for k, label in (("direct", "direct to the fake (nginx)"), ("somaagent", "through somaagent"),
                     ("nginx", "through nginx proxy_pass")):
        add = "" if k == "direct" else f" {q[k][0.5] - q['direct'][0.5]:10.3f} {q[k][0.99] - q['direct'][0.99]:10.3f}"
        print(f"  {label:32s} {fmt(q[k][0.5])} {fmt(q[k][0.99])}{add}")
    for p in (0.5, 0.99):
        sa, na = q["somaagent"][p] - q["direct"][p], q["nginx"][p] - q["direct"][p]
        tag = "p50" if p == 0.5 else "p99"
        res[f"soma_added_{tag}"], res[f"nginx_added_{tag}"] = sa, na
        res[f"ratio_{tag}"] = sa / na if na > 0 else None
    r50, r99 = res["ratio_p50"], res["ratio_p99"]
    print("  ratio somaagent added / nginx added: p50 " + (f"{r50:.2f}" if r50 is not None else "n/a") +
          ", p99 " + (f"{r99:.2f}" if r99 is not None else "n/a") + " (target <= 1.2)")
    res["ok"] = True
    json.dump(res, open(a.out, "w"))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--direct", required=True)
    lat.add_argument("--through", required=True)
    lat.add_argument("-n", type=int, default=50)
    lat.add_argument("--out", required=True)
    px = sub.add_parser("proxy")
    px.add_argument("--direct", required=True)
    px.add_argument("--soma", required=True)
    px.add_argument("--nginx", required=True)
    px.add_argument("-n", type=int, default=1000)
    px.add_argument("--out", required=True)
    a = ap.parse_args()
    return cmd_latency(a) if a.cmd == "latency" else cmd_proxy(a)


if __name__ == "__main__":
    sys.exit(main())
