#!/usr/bin/env python3
"""bench/retention_sweep.py - does a retention sweep stall chat? (SQLite has one writer.)

    SOMA_BIN=build/somaagent /usr/bin/python3 bench/retention_sweep.py [--sessions 10000] [--events 4]

Seeds SESSIONS idle sessions (EVENTS events each, two days old) straight into a fresh SQLite store,
then, in the same run: (1) a server without retention takes message POSTs for a few seconds: the
baseline; (2) a server with retention.sessions_idle_s=86400 and retention.sweep_interval_s=1 takes
the same POSTs while its sweep deletes those sessions (the POSTs sent between the first session gone
and the last, as polled, count). Prints the p50/p99 of the POSTs of each
phase and the ratio of the p99s (reported, not asserted), and how long the sweep took.
"""
import argparse
import http.client
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from e2e_util import start_server  # noqa: E402

DAY_MS = 86400 * 1000


def seed(db_path, n, events):
    now = int(time.time() * 1000)
    old = now - 2 * DAY_MS
    db = sqlite3.connect(db_path)
    db.execute("BEGIN")
    for i in range(n):
        sid = f"idle-{i:06d}"
        db.execute("INSERT INTO sessions(id, tenant, created_ms, updated_ms, last_seq) VALUES (?, 'default', ?, ?, ?)",
                   (sid, old, old, events))
        for seq in range(1, events + 1):
            body = json.dumps({"type": "user", "message": "x" * 200, "event_id": f"{sid}-{seq}", "seq": seq})
            db.execute("INSERT INTO events(session_id, seq, event_id, tenant, type, body, created_ms) "
                       "VALUES (?, ?, ?, 'default', 'user', ?, ?)", (sid, seq, f"{sid}-{seq}", body, old))
    db.commit()
    db.close()


def idle_left(db_path):
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT count(*) FROM sessions WHERE id LIKE 'idle-%'").fetchone()[0]
    finally:
        db.close()


def post_loop(port, stop, lat, tag):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    i = 0
    while not stop.is_set():
        body = json.dumps({"message": f"hello {i}", "session_id": f"live-{tag}-{i % 20}"})
        t0 = time.perf_counter()
        c.request("POST", "/v1/session/message", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        lat.append((t0, (time.perf_counter() - t0) * 1000))
        if r.status != 200:
            raise SystemExit(f"POST answered {r.status}")
        i += 1
        time.sleep(0.005)
    c.close()


def measure(port, until, clients=2):
    stop, lat, threads = threading.Event(), [], []
    for k in range(clients):
        t = threading.Thread(target=post_loop, args=(port, stop, lat, k))
        t.start()
        threads.append(t)
    until()
    stop.set()
    for t in threads:
        t.join()
    return lat


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--events", type=int, default=4)
    ap.add_argument("--baseline-s", type=float, default=5.0)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="soma-retention-bench-"))
    db_path = tmp / "data" / "somaagent.db"
    srv = start_server(tmp)
    srv.stop()
    t0 = time.monotonic()
    seed(db_path, a.sessions, a.events)
    print(f"seeded {a.sessions} idle sessions x {a.events} events in {time.monotonic() - t0:.1f} s")

    srv = start_server(tmp)
    base = sorted(ms for _, ms in measure(srv.port, lambda: time.sleep(a.baseline_s)))
    srv.stop()

    srv = start_server(tmp, sets=("retention.sessions_idle_s=86400", "retention.sweep_interval_s=1"))
    window = {}

    def until_swept():  # the sweep's window: from the first session gone to the last
        while (left := idle_left(db_path)) > 0:
            if left < a.sessions and "start" not in window:
                window["start"] = time.perf_counter() - 0.05
            time.sleep(0.02)
        window["end"] = time.perf_counter()
        window.setdefault("start", window["end"] - 0.05)

    timed = measure(srv.port, until_swept)
    during = sorted(ms for t0, ms in timed if window["start"] <= t0 <= window["end"])
    took = window["end"] - window["start"]
    lines = [ln for ln in srv.log_text().splitlines() if "retention sweep deleted" in ln]
    srv.stop()
    print(f"without a sweep: {len(base)} POSTs, p50 {pct(base, .5):.1f} ms, p99 {pct(base, .99):.1f} ms")
    print(f"during the sweep: {len(during)} POSTs, p50 {pct(during, .5):.1f} ms, p99 {pct(during, .99):.1f} ms")
    print(f"p99 ratio (during / without): {pct(during, .99) / pct(base, .99):.2f}")
    print(f"sweep of {a.sessions} sessions took about {took:.2f} s (as polled)")
    for ln in lines:
        print("  " + ln)


if __name__ == "__main__":
    main()
