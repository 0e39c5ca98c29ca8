#!/usr/bin/env python3
"""bench/chat_ingest.py - ingest and end-to-end rate of somaagent, for bench/chat.sh (stdlib only).

    chat_ingest.py --port P --lua bench/chat_post.lua --seconds S [--drain-timeout 60] --out FILE

Runs wrk (2 threads, 64 connections) POSTing /v1/session/message for S seconds while sampling
GET /metrics every 0.5 s, then waits (bounded) until every accepted message has its final:
    accepted = growth of soma_http_requests_total{route="/v1/session/message",status="200"}
               (the server's count, so requests still in flight when wrk stops are included)
    finals   = growth of soma_tasks_total{task="conversation.process",outcome="success"}
"""
import argparse
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request

LINE = re.compile(r'^(\w+)(?:\{([^}]*)\})?\s+(\S+)$')
STORE = ("soma_store_batch_seconds_sum", "soma_store_batch_seconds_count", "soma_store_batch_ops_sum")


def scrape(port):
    t = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {"t": t, "success": 0.0, "tasks_other": {}, "accepted": 0.0, "rejected": {}}
    for ln in text.splitlines():
        m = LINE.match(ln)
        if not m:
            continue
        name, labels, val = m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")), float(m.group(3))
        if name in STORE:
            out[name] = val
        if name == "soma_tasks_total" and labels.get("task") == "conversation.process":
            if labels.get("outcome") == "success":
                out["success"] = val
            else:
                out["tasks_other"][labels.get("outcome", "?")] = val
        elif name == "soma_http_requests_total" and labels.get("route") == "/v1/session/message":
            if labels.get("status") == "200":
                out["accepted"] += val
            else:
                out["rejected"][labels.get("status", "?")] = val
    return out


def to_ms(v):
    for suf, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 60e3)):
        if v.endswith(suf):
            return float(v[:-len(suf)]) * f
    return float(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--lua", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--drain-timeout", type=float, default=60)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = {"ok": False}

    samples, stop = [], threading.Event()

    def sampler():
        while not stop.wait(0.5):
            try:
                samples.append(scrape(a.port))
            except OSError as e:
                samples.append({"t": time.monotonic(), "error": str(e)})

    m0 = scrape(a.port)
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    cmd = ["wrk", "-t2", "-c64", f"-d{a.seconds}s", "--latency", "-s", a.lua,
           f"http://127.0.0.1:{a.port}/v1/session/message"]
    t_start = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    t_stop = time.monotonic()
    m1 = scrape(a.port)
    stop.set()
    th.join()
    out = p.stdout
    rps = re.search(r"Requests/sec:\s+(\S+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if p.returncode != 0 or not (rps and p50 and p99):
        print(f"  FAILED: wrk exited {p.returncode}: {(p.stderr or out).strip()[:400]}")
        json.dump(res, open(a.out, "w"))
        return 1
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sockerr = re.search(r"Socket errors:.*", out)
    total = re.search(r"(\d+) requests in", out)
    res.update(rps=float(rps.group(1)), p50=to_ms(p50.group(1)), p99=to_ms(p99.group(1)),
               wrk_requests=int(total.group(1)), non2xx=int(non2xx.group(1)) if non2xx else 0,
               socket_errors=sockerr.group(0) if sockerr else "")
    window = t_stop - t_start
    accepted = int(m1["accepted"] - m0["accepted"])
    done_at_stop = int(m1["success"] - m0["success"])
    backlog = accepted - done_at_stop
    print(f"  wrk {a.seconds}s, 2 threads, 64 connections, 600 sessions: {res['rps']:.0f} requests/s, "
          f"p50 {res['p50']:.3f} ms, p99 {res['p99']:.3f} ms; {res['wrk_requests']} responses, "
          f"non-2xx {res['non2xx']}" + (f", {res['socket_errors']}" if res["socket_errors"] else ""))
    rejected = {k: int(v - m0["rejected"].get(k, 0)) for k, v in m1["rejected"].items()
                if v - m0["rejected"].get(k, 0) > 0}
    if rejected:
        print(f"  server-side non-200 answers by status: {rejected}")
    # finals per second over the wrk window, from the 0.5 s samples (per whole second)
    per_s, prev = [], (t_start, m0["success"])
    for s in samples:
        if "error" in s or s["t"] > t_stop:
            continue
        if s["t"] - prev[0] >= 0.99:
            per_s.append((s["success"] - prev[1]) / (s["t"] - prev[0]))
            prev = (s["t"], s["success"])
    scrape_errors = [s["error"] for s in samples if "error" in s]
    ingest_rate = accepted / window
    e2e_rate = done_at_stop / window
    print(f"  accepted (server count of 200s): {accepted} = {ingest_rate:.0f}/s over the {window:.1f} s window; "
          f"finals committed in the window: {done_at_stop} = {e2e_rate:.0f}/s "
          f"({e2e_rate / ingest_rate * 100 if ingest_rate else 0:.0f}% of the ingest rate)")
    if per_s:
        print("  finals/s during wrk, per second: " + " ".join(f"{x:.0f}" for x in per_s))
    if scrape_errors:
        print(f"  /metrics scrapes that failed during wrk: {len(scrape_errors)} ({scrape_errors[0]})")
    nb = m1.get(STORE[1], 0) - m0.get(STORE[1], 0)
    if nb > 0:
        print(f"  store commits during wrk: {nb:.0f} batches, {(m1.get(STORE[2], 0) - m0.get(STORE[2], 0)) / nb:.1f} ops "
              f"and {(m1.get(STORE[0], 0) - m0.get(STORE[0], 0)) / nb * 1000:.1f} ms per batch on average")
    print(f"  backlog when wrk stopped: {backlog} messages without a final")
    # drain, bounded
    t_d0 = time.monotonic()
    last, drain_samples = m1, [m1]
    while last["success"] - m0["success"] < accepted and time.monotonic() - t_d0 < a.drain_timeout:
        time.sleep(0.25)
        try:
            last = scrape(a.port)
        except OSError as e:
            print(f"  /metrics failed while draining: {e}")
            break
        if last["t"] - drain_samples[-1]["t"] >= 5:
            drain_samples.append(last)
    drain_s = time.monotonic() - t_d0
    left = accepted - int(last["success"] - m0["success"])
    drained = left <= 0
    drain_rate = (last["success"] - m1["success"]) / drain_s if drain_s > 0 else 0
    if len(drain_samples) > 2:
        print("  finals/s while draining, per 5 s: " + " ".join(
            f"{(b['success'] - x['success']) / (b['t'] - x['t']):.0f}" for x, b in zip(drain_samples, drain_samples[1:])))
    if drained:
        print(f"  backlog drained in {drain_s:.1f} s ({drain_rate:.0f} finals/s while draining)")
    else:
        print(f"  backlog NOT drained after {drain_s:.1f} s: {left} messages still without a final "
              f"({drain_rate:.0f} finals/s while draining; at that rate ~{left / drain_rate if drain_rate else float('inf'):.0f} s more)")
    other = {k: int(v - m0["tasks_other"].get(k, 0)) for k, v in last["tasks_other"].items()
             if v - m0["tasks_other"].get(k, 0) > 0}
    if other:
        print(f"  conversation.process outcomes other than success: {other}")
    res.update(ok=True, accepted=accepted, window_s=window, ingest_rate=ingest_rate, e2e_rate=e2e_rate,
               backlog=backlog, drained=drained, drain_s=drain_s, left=left, other_outcomes=other,
               rejected=rejected)
    json.dump(res, open(a.out, "w"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
