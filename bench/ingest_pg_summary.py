"""bench/ingest_pg_summary.py - the summary of bench/ingest_pg.sh.

argv[1]: pgbench tx/s of every pgbench run, in order (one before each wrk run, one at the end);
argv[2:]: one "SIDE rps20 p99_20 non2xx20 rps64 p99_64 non2xx64" per wrk run (rps 0: not run).
Each wrk run is compared with the mean of the pgbench runs either side of it; with two builds
(sides A and B) each round also gives B's ratio over A's, the A/B of the same moment.
"""
import statistics
import sys

pg = [float(x) for x in sys.argv[1].split()]
runs = [r.split() for r in sys.argv[2:]]
sides = sorted({r[0] for r in runs})
ratios = {}
p99s = {}
for i, r in enumerate(runs):
    side = r[0]
    a, b = pg[i], pg[i + 1]
    ceil = (a + b) / 2
    vals = [float(x) for x in r[1:]]
    for conns, (rps, p99, non2xx) in ((20, vals[0:3]), (64, vals[3:6])):
        if rps == 0:
            continue
        ratio = rps / ceil
        ratios.setdefault((side, conns), []).append(ratio)
        p99s.setdefault((side, conns), []).append(p99)
        label = (f"run {i + 1} " if len(runs) > 1 else "") + (f"{side} " if len(sides) > 1 else "")
        print(f"  {label}-c{conns}: ours {rps:.0f} req/s vs pgbench -c 20"
              f" {ceil:.0f} tx/s (mean of {a:.0f} and {b:.0f}): ratio {ratio:.2f} (target >= 0.70:"
              f" {'met' if ratio >= 0.7 else 'MISSED'}); p99 {p99:.2f} ms (target <= 10 ms:"
              f" {'met' if p99 <= 10 else 'MISSED'}); non-2xx {non2xx:.0f}")
if len(runs) > 1:
    for (side, conns), rs in sorted(ratios.items()):
        name = f"build {side}, " if len(sides) > 1 else ""
        print(f"  median of {len(rs)} runs, {name}-c{conns}: ratio {statistics.median(rs):.2f},"
              f" p99 {statistics.median(p99s[(side, conns)]):.2f} ms")
if len(sides) == 2:
    for conns in (20, 64):
        a = ratios.get(("A", conns), [])
        b = ratios.get(("B", conns), [])
        pairs = [y / x for x, y in zip(a, b)]
        if pairs:
            print(f"  -c{conns} B/A per round: {' '.join(f'{x:.2f}' for x in pairs)};"
                  f" median {statistics.median(pairs):.2f}")
