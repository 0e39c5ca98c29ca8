#!/usr/bin/env python3
"""bench/chat_streams.py - many SSE subscribers of /v1/sessions/{id}/events, for bench/chat.sh.

    chat_streams.py --port P --pid PID -n N [--sessions 100] [--rate 50] [--seconds 10] --out FILE

Creates the sessions (one message each), opens N streams spread evenly over them (asyncio
protocols on one event loop, at most 200 connects in flight), then posts messages round-robin
to the sessions at a steady rate and records when each `user` event arrives on each stream.
Delivery latency = arrival time (the kernel's receive timestamp of the socket data, SO_TIMESTAMPNS:
when the server's write reached this socket, so this client's own scheduling is not counted;
the time the client read it is reported beside it) minus the event's
created_at (RFC 3339, ms, set by the server when it accepted the message; same machine clock).
created_at is truncated to the ms, so figures read up to 1 ms high. The same latency measured
from the moment the client sent the POST is printed too. RSS is VmRSS of PID.
Events are parsed after the run, so parsing does not delay the timestamps.
"""
import argparse
import asyncio
import datetime
import gc
import json
import socket
import struct
import sys
import time

from chat_sse import dechunk, quantile, sse_events

MARK = b'"type":"user"'


def rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


SO_TIMESTAMPNS = 35  # Linux; Python's socket module does not name it
SCM_TIMESTAMPNS = SO_TIMESTAMPNS


class Sub:
    """One SSE stream on a raw non-blocking socket read with recvmsg: keeps (time read, time the
    kernel queued the data, bytes) of everything received. The kernel's receive timestamp
    (SO_TIMESTAMPNS) is when the server's write landed in this socket (loopback delivers inside
    the server's send), so it does not include how late this client's event loop got to the
    socket; the read time does."""

    def __init__(self, run, sid, path):
        self.run, self.sid, self.path = run, sid, path
        self.pieces, self.head, self.status = [], b"", None  # pieces: (t_read, t_kernel or None, bytes)
        self.sock, self.lost = None, None
        self.loop = asyncio.get_running_loop()
        self.ready = self.loop.create_future()

    async def open(self, port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            await self.loop.sock_connect(sock, ("127.0.0.1", port))
            await self.loop.sock_sendall(sock, f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                               f"Accept: text/event-stream\r\n\r\n".encode())
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.loop.add_reader(sock.fileno(), self.readable)

    def readable(self):
        while True:
            try:
                d, anc, _, _ = self.sock.recvmsg(65536, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                d, anc = b"", []
            t = time.time()
            if not d:
                self.close()
                self.lost = t
                if not self.ready.done():
                    self.ready.set_result(-1)
                return
            kt = None
            for lvl, typ, data in anc:
                if lvl == socket.SOL_SOCKET and typ == SCM_TIMESTAMPNS and len(data) >= 16:
                    sec, ns = struct.unpack("qq", data[:16])
                    kt = sec + ns / 1e9
            self.pieces.append((t, kt, d))
            self.run.marks += d.count(MARK)
            if self.status is None:
                self.head += d
                if b"\r\n" in self.head:
                    try:
                        self.status = int(self.head.split(b" ", 2)[1])
                    except (IndexError, ValueError):
                        self.status = -1
                    if not self.ready.done():
                        self.ready.set_result(self.status)

    def close(self):
        if self.sock:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None


class Run:
    marks = 0


async def http_post(pool, path, obj):
    r, w = await pool.get()
    try:
        body = json.dumps(obj).encode()
        w.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        t = time.time()
        head = await r.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        n = 0
        for ln in head.split(b"\r\n"):
            if ln.lower().startswith(b"content-length:"):
                n = int(ln.split(b":", 1)[1])
        await r.readexactly(n)
        pool.put_nowait((r, w))
        return status, t
    except Exception:
        w.close()
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", pool.port))
        raise


_ts_cache = {}


def parse_ts(s):
    v = _ts_cache.get(s)
    if v is None:
        v = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        _ts_cache[s] = v
    return v


async def main_async(a):
    res = {"ok": False, "n": a.n}
    run = Run()
    loop = asyncio.get_running_loop()
    pool = asyncio.Queue()
    pool.port = a.port
    for _ in range(8):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", a.port))
    tag = f"{int(time.time() * 1000) % 10**8}"
    sids = [f"st-{tag}-{k}" for k in range(a.sessions)]
    created = await asyncio.gather(*(http_post(pool, "/v1/session/message", {"session_id": s, "message": "open"})
                                     for s in sids), return_exceptions=True)
    bad = [c for c in created if isinstance(c, Exception) or c[0] != 200]
    if bad:
        print(f"  N={a.n}: FAILED to create the sessions: {bad[:3]}")
        return res
    rss_idle = rss_kb(a.pid)

    # open the streams
    subs, sem, t_c0 = [], asyncio.Semaphore(200), time.monotonic()
    connect_errors = []

    async def open_one(i):
        sid = sids[i % a.sessions]
        async with sem:
            proto = Sub(run, sid, f"/v1/sessions/{sid}/events?stream=true")
            try:
                await proto.open(a.port)
            except OSError as e:
                connect_errors.append(str(e))
                return
            subs.append(proto)
            try:
                await asyncio.wait_for(asyncio.shield(proto.ready), 30)
            except asyncio.TimeoutError:
                pass

    await asyncio.gather(*(open_one(i) for i in range(a.n)))
    connect_s = time.monotonic() - t_c0
    ok_subs = [s for s in subs if s.status == 200 and s.lost is None]
    statuses = {}
    for s in subs:
        if s.status != 200:
            statuses[s.status] = statuses.get(s.status, 0) + 1
    per_session = {}
    for s in ok_subs:
        per_session[s.sid] = per_session.get(s.sid, 0) + 1
    rss_open = rss_kb(a.pid)
    await asyncio.sleep(0.5)

    # post at a steady rate
    gc.collect()
    gc.disable()
    total = a.rate * a.seconds
    sent, tasks, post_errors = {}, [], []

    async def post_one(i):
        try:
            status, t = await http_post(pool, "/v1/session/message",
                                        {"session_id": sids[i % a.sessions], "message": f"stream bench {i}"})
            if status == 200:
                sent[i] = t
            else:
                post_errors.append(f"HTTP {status}")
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            post_errors.append(repr(e))

    lags, stop_lag = [], asyncio.Event()

    async def lag_probe():  # how late this client's event loop runs: its own share of the latency
        while not stop_lag.is_set():
            t = loop.time()
            await asyncio.sleep(0.005)
            lags.append((loop.time() - t - 0.005) * 1000)

    probe = asyncio.create_task(lag_probe())
    cpu0 = time.process_time()
    t0 = time.monotonic()
    for i in range(total):
        delay = t0 + i / a.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post_one(i)))
    await asyncio.gather(*tasks)
    post_s = time.monotonic() - t0
    client_cpu = (time.process_time() - cpu0) / post_s
    stop_lag.set()
    await probe
    expected = sum(per_session.get(sids[i % a.sessions], 0) for i in sent)
    # let the last deliveries arrive (bounded)
    t_w = time.monotonic()
    while run.marks < expected and time.monotonic() - t_w < 5:
        await asyncio.sleep(0.05)
    rss_end = rss_kb(a.pid)
    lost_during = sum(1 for s in ok_subs if s.lost is not None)
    for s in subs:
        s.close()
    while not pool.empty():
        _, w = pool.get_nowait()
        w.close()
    gc.enable()

    # parse
    lat, lat_send, lat_read, delivered, dup, unknown, no_kts = [], [], [], 0, 0, 0, 0
    for s in ok_subs:
        raw = b"".join(d for _, _, d in s.pieces)
        hlen = raw.find(b"\r\n\r\n") + 4
        body, pos = [], 0
        for t, kt, d in s.pieces:  # drop the head, keep arrival times (kernel's, and when read)
            if pos + len(d) > hlen:
                body.append(((kt, t), d[max(0, hlen - pos):]))
            pos += len(d)
        seen = set()
        for (kt, t_read), ev in sse_events(dechunk(body)[0]):
            if kt is None:
                no_kts += 1
            t = kt if kt is not None else t_read
            if MARK not in ev:
                continue
            for line in ev.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                obj = json.loads(line[5:])
                msg = obj.get("message", "")
                if not msg.startswith("stream bench "):
                    continue
                i = int(msg.rsplit(" ", 1)[1])
                if i in seen:
                    dup += 1
                    continue
                seen.add(i)
                if i not in sent:
                    unknown += 1
                    continue
                delivered += 1
                lat.append((t - parse_ts(obj["created_at"])) * 1000)
                lat_send.append((t - sent[i]) * 1000)
                lat_read.append((t_read - parse_ts(obj["created_at"])) * 1000)
    res.update(ok=bool(lat), connected=len(ok_subs), connect_s=connect_s, connect_errors=len(connect_errors),
               bad_status=statuses, posted=len(sent), post_errors=len(post_errors), post_s=post_s,
               expected=expected, delivered=delivered, duplicates=dup, closed_by_server=lost_during,
               rss_idle_kb=rss_idle, rss_open_kb=rss_open, rss_end_kb=rss_end,
               client_cpu=client_cpu, loop_lag_p99=quantile(lags, 0.99) if lags else None)
    if lat:
        res.update(p50=quantile(lat, 0.5), p99=quantile(lat, 0.99), max=max(lat),
                   send_p50=quantile(lat_send, 0.5), send_p99=quantile(lat_send, 0.99),
                   read_p50=quantile(lat_read, 0.5), read_p99=quantile(lat_read, 0.99), no_kernel_ts=no_kts)
    mb = (lambda kb: f"{kb / 1024:.1f}" if kb else "?")
    if lat:
        print(f"  {a.n:6d} {len(ok_subs):7d} {connect_s:7.1f} {res['p50']:8.2f} {res['p99']:8.2f} {res['max']:8.1f}"
              f" {res['send_p50']:9.2f} {res['send_p99']:9.2f} {f'{delivered}/{expected}':>19s}"
              f" {mb(rss_idle):>8s} {mb(rss_open):>8s} {mb(rss_end):>8s}")
    else:
        print(f"  {a.n:6d} {len(ok_subs):7d} {connect_s:7.1f}   FAILED: no user event delivered "
              f"({len(sent)} posted, expected {expected} deliveries)")
    notes = [f"client: {client_cpu * 100:.0f}% of a core while posting, its event loop late by p50 "
             f"{quantile(lags, 0.5):.2f} / p99 {quantile(lags, 0.99):.2f} / max {max(lags):.1f} ms"] if lags else []
    if lat:
        notes.append(f"the same deliveries timed when this client read them (its own queueing included): "
                     f"p50 {res['read_p50']:.2f} / p99 {res['read_p99']:.2f} ms"
                     + (f"; {no_kts} without a kernel timestamp (read time used)" if no_kts else ""))
    if connect_errors:
        notes.append(f"{len(connect_errors)} connects failed ({connect_errors[0]})")
    if statuses:
        notes.append(f"streams not opened, by status: {statuses}")
    if post_errors:
        notes.append(f"{len(post_errors)} posts failed ({post_errors[0]})")
    if len(sent) and post_s > a.seconds * 1.2:
        notes.append(f"posting took {post_s:.1f} s instead of {a.seconds} s")
    if lost_during:
        notes.append(f"{lost_during} streams closed by the server during the run")
    if dup:
        notes.append(f"{dup} duplicate deliveries")
    if unknown:
        notes.append(f"{unknown} events of posts whose answer was not 200")
    for n in notes:
        print(f"         N={a.n}: {n}")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("-n", type=int, required=True)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--rate", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = asyncio.run(main_async(a))
    json.dump(res, open(a.out, "w"))
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
