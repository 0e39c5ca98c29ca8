#!/usr/bin/env python3
"""bench/chat_sse.py - streamed POST /v1/chat/completions timings for bench/chat.sh (stdlib only).

    chat_sse.py latency --direct H:P --through H:P [-n 50] --out FILE
        time to first content delta and inter-delta gaps, directly against a (slow) fake LLM
        and through somaagent, requests alternating; prints quantiles and through-minus-direct.
    chat_sse.py proxy --direct H:P --soma H:P --nginx H:P [-n 1000] --out FILE
        total time of a streamed request directly, through somaagent and through nginx
        proxy_pass, rounds rotating the order; prints quantiles, added latencies and their ratio.
    chat_sse.py session --direct H:P --through H:P [-n 400] [--sessions 4] [--fake-keepalive] --out FILE
        a chat reply: time from sending POST /v1/session/message to the first assistant.delta on
        the session's open stream (GET /v1/sessions/{id}/events?stream=true), versus the first
        content delta of the fake LLM called directly; requests alternating, sessions in turn.
    chat_sse.py session-ab --direct H:P --a H:P --b H:P [-n 400] [--sessions 4] --out FILE
        the same for two somaagent builds A and B at once (each with the keep-alive fake as its
        provider) and the fake directly, each round in a rotating order: an A/B comparison in
        which both builds meet the same load, for a busy machine.

Raw sockets and a minimal HTTP/1.1 reader (Content-Length, chunked, or until close);
timestamps are time.perf_counter() taken right after each recv, events are parsed afterwards.
"""
import argparse
import json
import selectors
import socket
import sys
import time
import uuid

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
    paired = {"somaagent": [], "nginx": []}  # per round: through minus direct, same round
    for i in range(a.n + warm):
        order = names[i % 3:] + names[:i % 3]
        this_round = {}
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
                this_round[name] = (t_end - t0) * 1000
                nev[name].add(len(events))
        if len(this_round) == 3:
            for k in paired:
                paired[k].append(this_round[k] - this_round["direct"])
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
    # The same, from each round's own difference (through minus direct, measured moments apart):
    # a tail of the added time itself, not a difference of two tails.
    if paired["somaagent"]:
        for p in (0.5, 0.99):
            tag = "p50" if p == 0.5 else "p99"
            sa, na = quantile(paired["somaagent"], p), quantile(paired["nginx"], p)
            res[f"paired_soma_added_{tag}"], res[f"paired_nginx_added_{tag}"] = sa, na
            res[f"paired_ratio_{tag}"] = sa / na if na > 0 else None
        print(f"  per-round added time ({len(paired['somaagent'])} rounds): somaagent p50 "
              f"{res['paired_soma_added_p50']:.3f} p99 {res['paired_soma_added_p99']:.3f} ms, nginx p50 "
              f"{res['paired_nginx_added_p50']:.3f} p99 {res['paired_nginx_added_p99']:.3f} ms; ratio p50 "
              + ", p99 ".join(f"{r:.2f}" if r is not None else "n/a"
                              for r in (res["paired_ratio_p50"], res["paired_ratio_p99"])))
    res["ok"] = True
    json.dump(res, open(a.out, "w"))
    return 0


DELTA_MARK = b'"type":"assistant.delta"'
END_MARKS = (b'"type":"assistant.final"', b'"type":"assistant.error"')


class SessionStream:
    """An open GET /v1/sessions/{id}/events?stream=true on a raw socket. Finds markers in the raw
    bytes (event JSON is compact; a marker cut by a recv boundary is found with the next recv)."""

    def __init__(self, hostport, sid):
        h, p = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((h, int(p)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(f"GET /v1/sessions/{sid}/events?stream=true HTTP/1.1\r\nHost: {h}\r\n"
                          f"Accept: text/event-stream\r\n\r\n".encode())
        head = b""
        while b"retry:" not in head:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("stream closed before its first frame")
            head += d
        if not head.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(f"stream refused: {head[:60]!r}")
        self.tail = b""

    def feed(self, d, t, out):
        """Scans received bytes; sets out['delta'] / out['end'] to t when a marker is first seen."""
        buf = self.tail + d
        if "delta" not in out and DELTA_MARK in buf:
            out["delta"] = t
        if any(m in buf for m in END_MARKS):
            out["end"] = t
        self.tail = buf[-64:]


def post_message(conn, sid, text):
    """Sends POST /v1/session/message on conn (a Conn); returns the socket (answer read later)."""
    if conn.sock is None:
        conn.sock = socket.create_connection(conn.addr)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = json.dumps({"session_id": sid, "message": text}).encode()
    conn.sock.sendall((f"POST /v1/session/message HTTP/1.1\r\nHost: {conn.addr[0]}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    return conn.sock


def read_answer(sock, buf):
    """Reads one Content-Length answer from sock given bytes buf already read; returns (status,
    complete, buf)."""
    if b"\r\n\r\n" not in buf:
        return None, False, buf
    hlen = buf.index(b"\r\n\r\n") + 4
    head = buf[:hlen].decode("latin-1").lower()
    n = int(head.split("content-length:")[1].split("\r\n")[0]) if "content-length:" in head else 0
    if len(buf) < hlen + n:
        return None, False, buf
    return int(head.split()[1]), True, buf[hlen + n:]


def session_reply(conn, stream, sid, text, timeout=30):
    """One message through somaagent: returns ms from sending the POST to the first delta on the
    stream; waits for the reply's end and the POST's answer. Raises on failure."""
    sel = selectors.DefaultSelector()
    t0 = perf()
    psock = post_message(conn, sid, text)
    sel.register(psock, selectors.EVENT_READ, "post")
    sel.register(stream.sock, selectors.EVENT_READ, "stream")
    out, pbuf, status = {}, b"", None
    try:
        while "end" not in out or status is None:
            ready = sel.select(timeout)
            if not ready:
                raise TimeoutError(f"no reply in {timeout} s (delta {'delta' in out}, answer {status})")
            for key, _ in ready:
                d = key.fileobj.recv(65536)
                t = perf()
                if not d:
                    raise ConnectionError(f"{key.data} connection closed")
                if key.data == "stream":
                    stream.feed(d, t, out)
                else:
                    pbuf += d
                    st, done, pbuf = read_answer(psock, pbuf)
                    if done:
                        status = st
                        sel.unregister(psock)
        if status != 200:
            raise ConnectionError(f"POST /v1/session/message: HTTP {status}")
        if "delta" not in out:
            raise ConnectionError("the reply ended without a delta")
        return (out["delta"] - t0) * 1000
    finally:
        sel.close()


def direct_first_delta(conn, body, keepalive):
    status, t0, t_end, events = conn.request("/v1/chat/completions", body, ["Authorization: Bearer x"],
                                             keepalive=keepalive)
    if status != 200:
        raise ConnectionError(f"direct: HTTP {status}")
    ts = content_deltas(events)
    if not ts:
        raise ConnectionError("direct: no content delta")
    return (ts[0] - t0) * 1000


def failed(errors, complete, res, path):
    """Prints the first errors; when the measurements are not complete, writes res as failed to
    path, says so and returns True."""
    for e in errors[:5]:
        print(f"    error: {e}")
    if complete:
        return False
    res["ok"] = False
    json.dump(res, open(path, "w"))
    print("  FAILED: no complete measurements")
    return True


def cmd_session(a):
    through = Conn(a.through)
    sids = []
    for k in range(a.sessions):  # each session gets a first turn before any stream is opened
        sid = str(uuid.uuid4())
        http_json(a.through, "/v1/session/message", {"session_id": sid, "message": f"bench session {k}"})
        sids.append(sid)
    time.sleep(0.5)
    streams = [SessionStream(a.through, sid) for sid in sids]
    direct = Conn(a.direct)
    body = json.dumps({"model": "fake-model", "stream": True, "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "bench first delta"}]}).encode()
    res_d, res_t, errors = [], [], []
    warm = 10
    for i in range(a.n + warm):
        k = i % len(sids)
        for name in (("direct", "through") if i % 2 == 0 else ("through", "direct")):
            try:
                if name == "direct":
                    ms = direct_first_delta(direct, body, a.fake_keepalive)
                else:
                    ms = session_reply(through, streams[k], sids[k], f"bench first delta {i}")
            except (OSError, ValueError) as e:
                errors.append(f"{name}: {e}")
                (direct if name == "direct" else through).close()
                continue
            finally:
                if not a.fake_keepalive and name == "direct":
                    direct.close()
            if i >= warm:
                (res_d if name == "direct" else res_t).append(ms)
    for s in streams:
        s.sock.close()
    through.close()
    direct.close()
    res = {"n": a.n, "errors": errors[:20], "error_count": len(errors), "fake_keepalive": a.fake_keepalive}
    print(f"  samples: {len(res_d)} direct, {len(res_t)} through somaagent (alternating, {len(sids)} sessions); "
          f"fake {'keeps connections' if a.fake_keepalive else 'closes each stream'}; errors: {len(errors)}")
    if failed(errors, res_d and res_t, res, a.out):
        return 1
    qs = (0.5, 0.9, 0.99)
    print(f"  {'time to first delta, ms':38s} {'p50':>9s} {'p90':>9s} {'p99':>9s}")
    rows = {}
    for name, xs in (("direct (fake LLM)", res_d), ("through somaagent (session stream)", res_t)):
        rows[name] = [quantile(xs, q) for q in qs]
        print(f"  {name:38s} " + " ".join(fmt(v) for v in rows[name]))
    added = [t - d for d, t in zip(*rows.values())]
    print(f"  {'added':38s} " + " ".join(fmt(v) for v in added))
    res.update({"direct_p50": rows["direct (fake LLM)"][0], "direct_p99": rows["direct (fake LLM)"][2],
                "added_p50": added[0], "added_p90": added[1], "added_p99": added[2], "ok": True,
                "through": sorted(res_t), "direct": sorted(res_d)})
    json.dump(res, open(a.out, "w"))
    return 0


def cmd_session_ab(a):
    """Two somaagent builds (A, B) and the fake LLM called directly, each round in a rotating
    order, so the load of the moment falls on the three alike (a busy, shared machine). Prints
    each one's time to first delta and A's and B's added time (p(through) - p(direct), as
    `session` does), and the per-round added time (A_i - direct_i) quantiles."""
    targets = {"A": a.a, "B": a.b}
    sids = {}
    for t, hp in targets.items():
        sids[t] = [str(uuid.uuid4()) for _ in range(a.sessions)]
        for k, sid in enumerate(sids[t]):  # a first turn before any stream is opened
            http_json(hp, "/v1/session/message", {"session_id": sid, "message": f"bench session {k}"})
    time.sleep(0.5)
    streams = {t: [SessionStream(targets[t], sid) for sid in sids[t]] for t in targets}
    conns = {t: Conn(hp) for t, hp in targets.items()}
    direct = Conn(a.direct)
    body = json.dumps({"model": "fake-model", "stream": True, "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "bench first delta"}]}).encode()
    orders = [("direct", "A", "B"), ("A", "B", "direct"), ("B", "direct", "A"),
              ("direct", "B", "A"), ("B", "A", "direct"), ("A", "direct", "B")]
    res = {"direct": [], "A": [], "B": []}
    per_round = {"A": [], "B": []}
    errors, warm = [], 10
    for i in range(a.n + warm):
        k, row = i % a.sessions, {}
        for name in orders[i % len(orders)]:
            try:
                if name == "direct":
                    row[name] = direct_first_delta(direct, body, True)
                else:
                    row[name] = session_reply(conns[name], streams[name][k], sids[name][k], f"bench first delta {i}")
            except (OSError, ValueError) as e:
                errors.append(f"{name}: {e}")
                (direct if name == "direct" else conns[name]).close()
        if i < warm:
            continue
        for name, ms in row.items():
            res[name].append(ms)
        for t in per_round:
            if t in row and "direct" in row:
                per_round[t].append(row[t] - row["direct"])
    for t in targets:
        for st in streams[t]:
            st.sock.close()
        conns[t].close()
    direct.close()
    out = {"n": a.n, "errors": errors[:20], "error_count": len(errors), "a": a.a, "b": a.b}
    print(f"  samples: direct {len(res['direct'])}, A {len(res['A'])}, B {len(res['B'])} (rotating order, "
          f"{a.sessions} sessions each); errors: {len(errors)}")
    if failed(errors, all(res.values()), out, a.out):
        return 1
    qs = (0.5, 0.9, 0.99)
    print(f"  {'time to first delta, ms':38s} {'p50':>9s} {'p90':>9s} {'p99':>9s}")
    rows = {name: [quantile(xs, q) for q in qs] for name, xs in res.items()}
    for name in ("direct", "A", "B"):
        print(f"  {name:38s} " + " ".join(fmt(v) for v in rows[name]))
    for t in ("A", "B"):
        added = [x - d for x, d in zip(rows[t], rows["direct"])]
        each = [quantile(per_round[t], q) for q in qs]
        print(f"  {t + ' added (p(through) - p(direct))':38s} " + " ".join(fmt(v) for v in added))
        print(f"  {t + ' added per round (quantiles)':38s} " + " ".join(fmt(v) for v in each))
        out[t] = {"added": added, "per_round": each, "p": rows[t]}
    out["direct"] = rows["direct"]
    out["ok"] = True
    json.dump(out, open(a.out, "w"))
    return 0


def http_json(hostport, path, obj):
    c = Conn(hostport)
    try:
        sock = post_message(c, obj["session_id"], obj["message"])
        buf = b""
        while True:
            st, done, rest = read_answer(sock, buf)
            if done:
                break
            d = sock.recv(65536)
            if not d:
                raise ConnectionError("closed")
            buf += d
        if st != 200:
            raise ConnectionError(f"HTTP {st}: {buf[:200]!r}")
        return buf[buf.index(b"\r\n\r\n") + 4:len(buf) - len(rest)]
    finally:
        c.close()


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
    se = sub.add_parser("session")
    se.add_argument("--direct", required=True)
    se.add_argument("--through", required=True)
    se.add_argument("-n", type=int, default=400)
    se.add_argument("--sessions", type=int, default=4)
    se.add_argument("--fake-keepalive", action="store_true")
    se.add_argument("--out", required=True)
    ab = sub.add_parser("session-ab")
    ab.add_argument("--direct", required=True)
    ab.add_argument("--a", required=True)
    ab.add_argument("--b", required=True)
    ab.add_argument("-n", type=int, default=400)
    ab.add_argument("--sessions", type=int, default=4)
    ab.add_argument("--out", required=True)
    a = ap.parse_args()
    return {"latency": cmd_latency, "proxy": cmd_proxy, "session": cmd_session,
            "session-ab": cmd_session_ab}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
