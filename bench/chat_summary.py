#!/usr/bin/env python3
"""bench/chat_summary.py DIR [PARTS] [STREAM_NS] - the summary table of bench/chat.sh from the parts' JSON files in DIR.

PARTS ("1 2 3 4" by default) names the parts that ran; a part that ran but whose file is missing or
says ok=false is reported as FAILED, never with a figure.
"""
import json
import os
import sys

d = sys.argv[1]
parts = (sys.argv[2] if len(sys.argv) > 2 else "1 2 3 4").split()
stream_ns = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "1000 5000 10000").split()]


def load(name):
    try:
        r = json.load(open(os.path.join(d, name)))
        return r if r.get("ok") else None
    except (OSError, ValueError):
        return None


rows = []


def row(name, figure, target, verdict):
    rows.append((name, figure, target, verdict))


def yes(ok):
    return "meets" if ok else "MISSES"


FAILED = "FAILED, see its section"

ing = load("ingest.json")
if "1" not in parts:
    pass
elif ing:
    row("ingest POST /v1/session/message", f"{ing['rps']:,.0f} msg/s, p50 {ing['p50']:.2f} ms, p99 {ing['p99']:.2f} ms",
        ">= 30,000 msg/s, p99 <= 5 ms", yes(ing["rps"] >= 30000 and ing["p99"] <= 5))
    share = ing["e2e_rate"] / ing["ingest_rate"] if ing["ingest_rate"] else 0
    drain = (f"drained in {ing['drain_s']:.0f} s" if ing["drained"]
             else f"{ing['left']} left after {ing['drain_s']:.0f} s wait")
    row("end to end (finals committed)", f"{ing['e2e_rate']:,.0f}/s = {share * 100:.0f}% of {ing['ingest_rate']:,.0f}/s "
        f"accepted; backlog {ing['backlog']} at stop, {drain}", "keeps up (finals/s >= 95% of accepted/s)",
        yes(share >= 0.95))
else:
    row("ingest POST /v1/session/message", FAILED, ">= 30,000 msg/s, p99 <= 5 ms", "FAILED")
    row("end to end (finals committed)", FAILED, "keeps up", "FAILED")

for ka, label in (("close", "fake closes each stream"), ("keepalive", "fake keeps connections")):
    se = load(f"session-{ka}.json")
    if "2" not in parts or not os.path.exists(os.path.join(d, f"session-{ka}.json")) and ka not in os.environ.get(
            "CHAT_SESSION_FAKES", "close keepalive"):
        pass
    elif se:
        row(f"chat reply: added time to first delta ({label})",
            f"p50 {se['added_p50']:+.3f} ms, p90 {se['added_p90']:+.3f} ms, p99 {se['added_p99']:+.3f} ms "
            f"({len(se['through'])} replies)", "<= 1 ms p99", yes(se["added_p99"] <= 1))
    else:
        row(f"chat reply: added time to first delta ({label})", FAILED, "<= 1 ms p99", "FAILED")

lat = load("latency.json")
if "2" not in parts or os.environ.get("CHAT_STREAM_N") == "0":
    pass
elif lat:
    t, g = lat["ttfd"], lat["gap"]
    row("proxy stream: added time to first delta", f"p50 {t['added_p50']:+.3f} ms, p99 {t['added_p99']:+.3f} ms",
        "<= 1 ms p99", yes(t["added_p99"] <= 1))
    row("proxy stream: added inter-delta latency", f"p50 {g['added_p50']:+.3f} ms, p99 {g['added_p99']:+.3f} ms",
        "(no target)", "-")
else:
    row("proxy stream: added time to first delta", FAILED, "<= 1 ms p99", "FAILED")

px = load("proxy.json")
if "3" not in parts:
    pass
elif px:
    def r(x):
        return f"{x:.2f}" if x is not None else "n/a"
    ok = all(px[k] is not None and px[k] <= 1.2 for k in ("ratio_p50", "ratio_p99"))
    row("proxy: added latency vs nginx", f"somaagent +{px['soma_added_p50']:.3f}/+{px['soma_added_p99']:.3f} ms, "
        f"nginx +{px['nginx_added_p50']:.3f}/+{px['nginx_added_p99']:.3f} ms (p50/p99); "
        f"ratio p50 {r(px['ratio_p50'])}, p99 {r(px['ratio_p99'])}", "ratio <= 1.2", yes(ok))
else:
    row("proxy: added latency vs nginx", FAILED, "ratio <= 1.2", "FAILED")

for n in stream_ns if "4" in parts else ():
    st = load(f"streams-{n}.json")
    target = "p99 <= 10 ms, RSS <= 64 MB" if n == 10000 else "(reported)"
    if st:
        rss = st["rss_end_kb"] / 1024 if st["rss_end_kb"] else float("nan")
        fig = (f"p50 {st['p50']:.2f} ms, p99 {st['p99']:.2f} ms (as read by the client: p99 "
               f"{st.get('read_p99', float('nan')):.2f}), {st['delivered']}/{st['expected']} delivered, RSS {rss:.1f} MB")
        complete = st["delivered"] == st["expected"] and st["connected"] == n
        if not complete:
            fig += f" ({st['connected']} of {n} streams open)"
        verdict = yes(complete and st["p99"] <= 10 and rss <= 64) if n == 10000 else "-"
        row(f"streams: {n} SSE subscribers", fig, target, verdict)
    else:
        row(f"streams: {n} SSE subscribers", FAILED, target, "FAILED")

w = [max(len(x[i]) for x in rows + [("benchmark", "measured (this run)", "target", "verdict")]) for i in range(4)]
fmtrow = "  {:<%d}  {:<%d}  {:<%d}  {}" % (w[0], w[1], w[2])
print(fmtrow.format("benchmark", "measured (this run)", "target", "verdict"))
print(fmtrow.format("-" * w[0], "-" * w[1], "-" * w[2], "-" * w[3]))
for x in rows:
    print(fmtrow.format(*x))
