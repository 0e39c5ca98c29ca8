#!/usr/bin/env python3
"""bench/memory_turn.py - what memory adds to a conversation turn, for bench/memory.sh (stdlib only).

    memory_turn.py --on H:P --off H:P --brain H:P [-n 1000] [--sessions 10] [--warmup 5]
                   [--json FILE] [--trace FILE]

Two somaagent servers run side by side against the same fake LLM and the same fake SomaBrain
(answering remember and recall after a fixed delay): `on` recalls memory.recall_top_k memories
into every turn's context, `off` has memory.recall_top_k=0. Both write every turn to the memory
outbox (the remember half: an outbox row committed with the event, delivered later by the relay).
Turns alternate between the two servers, one at a time, each in one of `sessions` sessions whose
event stream stays open. A turn's latency is from sending POST /v1/session/message to receiving
its assistant.final on the stream. After each pair of turns the fake SomaBrain's own recall
latency is measured directly, as a client on loopback sees it, so that it is sampled under the
same conditions as the turns (the relays' remember writes still arriving) and the fake's share
of what memory adds can be read beside it. Prints p50/p99/mean of each and what memory adds (on
minus off). A p99 of n samples is the (n/100)th slowest: with n=300 it rests on 3 turns.

Raw sockets, keep-alive; timestamps are time.perf_counter() (CLOCK_MONOTONIC) right after each
recv; --trace writes each turn's start and end in ns of that clock, to set beside server-side
timestamps.
"""
import argparse
import json
import select
import socket
import sys
import time
import uuid

perf = time.perf_counter
FINAL = b'"assistant.final"'


def quantile(xs, q):
    """Nearest-rank quantile (q in 0..1) of a non-empty list."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


def connect(hostport):
    h, p = hostport.rsplit(":", 1)
    s = socket.create_connection((h, int(p)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Poster:
    """POSTs JSON on one keep-alive connection."""

    def __init__(self, hostport):
        self.hostport = hostport
        self.sock = connect(hostport)
        self.buf = b""

    def send(self, path, obj):
        body = json.dumps(obj).encode()
        self.sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {self.hostport}\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n").encode() + body)

    def feed(self):
        """Reads what is there; returns (status, body) once a whole answer arrived, else None."""
        d = self.sock.recv(65536)
        if not d:
            raise ConnectionError(f"{self.hostport} closed the connection")
        self.buf += d
        return self.answer()

    def answer(self):
        if b"\r\n\r\n" not in self.buf:
            return None
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
        n = int(hdrs.get("content-length", "-1"))
        if n < 0 or len(rest) < n:
            return None
        self.buf = rest[n:]
        return int(lines[0].split()[1]), rest[:n]

    def call(self, path, obj):
        self.send(path, obj)
        while True:
            got = self.feed()
            if got:
                return got


class Stream:
    """GET /v1/sessions/{id}/events?stream=true&after=0 (from the start: a stream without a cursor starts
    at the present and would miss a reply that came first); counts the assistant.final events."""

    def __init__(self, hostport, sid):
        self.sock = connect(hostport)
        self.sock.sendall(f"GET /v1/sessions/{sid}/events?stream=true&after=0 HTTP/1.1\r\nHost: {hostport}\r\n"
                          "Accept: text/event-stream\r\n\r\n".encode())
        self.tail = b""
        self.finals = 0

    def feed(self):
        d = self.sock.recv(262144)
        if not d:
            raise ConnectionError("the event stream closed")
        data = self.tail + d
        self.finals += data.count(FINAL)
        self.tail = data[-(len(FINAL) - 1):]

    def wait_finals(self, n, timeout=30):
        end = perf() + timeout
        while self.finals < n:
            if not select.select([self.sock], [], [], max(0.0, end - perf()))[0]:
                raise TimeoutError(f"no assistant.final #{n} within {timeout} s")
            self.feed()


class Server:
    def __init__(self, name, hostport, sessions):
        self.name, self.poster, self.turns, self.spans = name, Poster(hostport), [], []
        self.sessions = []
        for _ in range(sessions):  # one turn each, then the stream stays open
            sid = str(uuid.uuid4())
            st, body = self.poster.call("/v1/session/message", {"session_id": sid, "message": "hello"})
            assert st == 200, body
            stream = Stream(hostport, sid)
            stream.wait_finals(1)
            self.sessions.append([sid, stream])

    def turn(self, i):
        sid, stream = self.sessions[i % len(self.sessions)]
        want = stream.finals + 1
        t0 = perf()
        self.poster.send("/v1/session/message", {"session_id": sid, "message": f"fact{i % 100} zz{i}"})
        answered = False
        end = t0 + 30
        t = None  # when the turn's assistant.final arrived (the POST's answer may come after it)
        while not answered or stream.finals < want:
            socks = [stream.sock] + ([] if answered else [self.poster.sock])
            ready = select.select(socks, [], [], max(0.0, end - perf()))[0]
            if not ready:
                raise TimeoutError(f"{self.name}: turn {i} did not finish within 30 s")
            for s in ready:
                if s is stream.sock:
                    stream.feed()
                    if t is None and stream.finals >= want:
                        t = perf()
                else:
                    got = self.poster.feed()
                    if got:
                        assert got[0] == 200, got
                        answered = True
        self.turns.append((t - t0) * 1000.0)
        self.spans.append((t0, t))


class Direct:
    """SomaBrain's (the fake's) own recall latency in ms, as a client on loopback sees it."""

    def __init__(self, brain):
        self.poster, self.times = Poster(brain), []

    def recall(self, i):
        t0 = perf()
        st, _ = self.poster.call("/memory/recall", {"tenant": "default", "namespace": "wm",
                                                    "query": f"fact{i % 100} zz{i}", "top_k": 4})
        self.times.append((perf() - t0) * 1000.0)
        assert st == 200


def line(name, xs):
    return (f"{name:<38} p50 {quantile(xs, 0.5):7.2f}  p90 {quantile(xs, 0.9):7.2f}  p99 {quantile(xs, 0.99):7.2f}"
            f"  mean {sum(xs) / len(xs):7.2f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--on", required=True)
    ap.add_argument("--off", required=True)
    ap.add_argument("--brain", required=True)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--trace", help="also write each turn here: server, start and end (CLOCK_MONOTONIC ns)")
    a = ap.parse_args()
    # memories for the turns to find: each turn asks for one of 100 facts with words no other
    # message shares, so the fake's recall (through its word index) stays as quick as it is
    # configured to be however many turns have been remembered
    p = Poster(a.brain)
    for j in range(100):
        st, body = p.call("/memory/remember", {"tenant": "default", "namespace": "wm", "key": f"bench-{j}",
                                               "value": {"content": f"fact{j}: a whale eats four tons of krill a day"}})
        assert st == 200, body
    on, off = Server("memory on", a.on, a.sessions), Server("memory off", a.off, a.sessions)
    direct = Direct(a.brain)
    for i in range(a.warmup):
        on.turn(i), off.turn(i), direct.recall(i)
    on.turns.clear(), off.turns.clear(), on.spans.clear(), off.spans.clear(), direct.times.clear()
    for i in range(a.n):  # alternating, the first of each pair swapped every turn
        first, second = (on, off) if i % 2 == 0 else (off, on)
        first.turn(i)
        second.turn(i)
        direct.recall(i)
    brain = direct.times
    print("  " + line("SomaBrain recall, direct (between turns)", brain))
    print("  " + line("turn, memory off (recall_top_k=0)", off.turns))
    print("  " + line("turn, memory on (recall_top_k=3)", on.turns))
    d50 = quantile(on.turns, 0.5) - quantile(off.turns, 0.5)
    d99 = quantile(on.turns, 0.99) - quantile(off.turns, 0.99)
    print(f"  memory adds: p50 {d50:+.2f} ms, p99 {d99:+.2f} ms over {a.n} turns each (p99: the "
          f"{max(1, a.n // 100)}th slowest; target p99 <= +2 ms); the fake's own recall p50 "
          f"{quantile(brain, 0.5):.2f}, p99 {quantile(brain, 0.99):.2f} ms")
    if a.trace:
        with open(a.trace, "w") as f:
            for srv in (on, off):
                for t0, t1 in srv.spans:
                    f.write(f"{srv.name.split()[1]} {int(t0 * 1e9)} {int(t1 * 1e9)}\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"brain_p50": quantile(brain, 0.5), "brain_p99": quantile(brain, 0.99),
                       "off_p50": quantile(off.turns, 0.5), "off_p99": quantile(off.turns, 0.99),
                       "on_p50": quantile(on.turns, 0.5), "on_p99": quantile(on.turns, 0.99),
                       "add_p50": d50, "add_p99": d99, "n": a.n,
                       "on": on.turns, "off": off.turns, "brain": brain}, f)


if __name__ == "__main__":
    sys.exit(main())
