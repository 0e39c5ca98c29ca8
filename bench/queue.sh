#!/usr/bin/env bash
# bench/queue.sh - the redis queue against Debian's Python Celery 5.2, side by side on one
# redis-server (issue 4, section 9):
#   1. enqueue: our direct publisher (bench/queue_bench.c: the driver's envelope + pipelined LPUSH),
#      our transactional outbox (N tasks committed into the store, fsync'd group commits, then
#      published by the relay), and Celery's producer (app.send_task in a loop)
#   2. drain N soma.noop tasks with acks_late and results stored: our worker
#      (`somaagent run --role worker`, queue.celery.concurrency=2) vs a Celery worker
#      (`celery -A benchapp worker -c 2`, prefork) -> tasks/s of each and the ratio
# Usage: bench/queue.sh [N]   (release build; SOMA_BIN overrides build/somaagent)
#   QUEUE_BENCH_ONLY=ours     only our drain (no enqueue phase, no Celery): for A/B rounds
#   QUEUE_BENCH_PERF=FILE     perf record (QUEUE_BENCH_PERF_OPTS, default -g) of our worker during its drain into FILE, and Redis's
#                             INFO commandstats of the drain into FILE.redis, perf record of
#                             redis-server into FILE.redis-perf
source "$(dirname "$0")/lib.sh"
N=${1:-20000}
PY=/usr/bin/python3
QB=${QUEUE_BENCH:-$ROOT/build/queue_bench}
[ -x "$QB" ] || ninja -C "$ROOT/build" queue_bench >/dev/null
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --dir "$TMP" \
  >"$TMP/redis.log" 2>&1 &
rpid=$!
PIDS+=($rpid)
URL="redis://127.0.0.1:$rport/0"
for _ in $(seq 1 300); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.01; done
rc() { redis-cli -p "$rport" "$@"; }

cat >"$TMP/benchapp.py" <<EOF
from celery import Celery
app = Celery("benchapp", broker="$URL", backend="$URL")
app.conf.update(task_acks_late=True, worker_hijack_root_logger=False)

@app.task(name="soma.noop")
def noop():
    return None
EOF

# waits for the first message to be taken, then for the queue and unacked to be empty and N
# results to exist; prints "ready" once connected, then "seconds rate results". With a pid file
# (read when the drain starts) it adds the CPU the drain cost, which a loaded machine does not
# inflate as it does the wall time: "worker_us redis_us" per task (the worker's utime+stime from
# /proc, 10 ms ticks; redis-server's used_cpu_sys+user from INFO cpu)
drain_watch() {
  "$PY" - "$rport" "$N" "${1:-}" <<'EOF'
import os, sys, time, redis
r = redis.Redis(port=int(sys.argv[1])); n = int(sys.argv[2]); pidfile = sys.argv[3]
r.ping(); print("ready", flush=True)
def cpu():
    info = r.info("cpu")
    rc = info["used_cpu_sys"] + info["used_cpu_user"]
    if not pidfile: return 0.0, rc
    while not os.path.exists(pidfile): time.sleep(0.001)
    f = open(f"/proc/{open(pidfile).read().strip()}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"), rc
deadline = time.monotonic() + 600
while r.llen("celery") >= n and time.monotonic() < deadline: time.sleep(0.002)
t0 = time.monotonic(); w0, r0 = cpu()
while (r.llen("celery") or r.hlen("unacked")) and time.monotonic() < deadline: time.sleep(0.002)
t1 = time.monotonic(); w1, r1 = cpu()
results = sum(1 for _ in r.scan_iter("celery-task-meta-*", count=5000))
extra = f" {(w1 - w0) * 1e6 / n:.1f} {(r1 - r0) * 1e6 / n:.1f}" if pidfile else ""
print(f"{t1 - t0:.3f} {n / (t1 - t0):.0f} {results}{extra}")
EOF
}

ONLY=${QUEUE_BENCH_ONLY:-}
PERF_OUT=${QUEUE_BENCH_PERF:-}
if [ "$ONLY" != ours ]; then
echo "== 1. enqueue $N soma.noop tasks"
out=$("$QB" publish "$URL" "$N" soma.noop)
ours_pub=$(echo "$out" | sed -n 's/.*rate=\([0-9]*\).*/\1/p')
echo "  ours, direct publisher (pipelined LPUSH):        $ours_pub tasks/s"
rc FLUSHALL >/dev/null
out=$("$QB" relay "$URL" "$N" soma.noop "$TMP/store")
commit=$(echo "$out" | awk -F'rate=' '/phase=commit /{print $2}')
relay=$(echo "$out" | awk -F'rate=' '/phase=relay /{print $2}')
both=$(echo "$out" | awk -F'rate=' '/phase=commit\+relay /{print $2}')
echo "  ours, outbox: commit (fsync'd group commits)     $commit tasks/s"
echo "  ours, outbox: relay store -> redis               $relay tasks/s"
echo "  ours, outbox: commit + relay end to end          $both tasks/s"
rc FLUSHALL >/dev/null
celery_pub=$(cd "$TMP" && "$PY" -c "
import time, benchapp
n = $N; t0 = time.monotonic()
for _ in range(n): benchapp.app.send_task('soma.noop')
print(f'{n / (time.monotonic() - t0):.0f}')" 2>/dev/null)
echo "  Celery 5.2 producer (send_task loop):            $celery_pub tasks/s"

echo "== 2. drain $N soma.noop (acks_late, results stored), 2 cores"
(cd "$TMP" && PYTHONPATH="$TMP" exec setsid "$PY" -m celery -A benchapp worker -c 2 -P prefork -Q celery --loglevel=WARNING \
  --without-gossip --without-mingle --without-heartbeat -n "bench@%h" >"$TMP/celery.log" 2>&1) &
cpid=$!
read -r c_s c_rate c_res < <(drain_watch | tail -1)
# Celery runs in a session of its own (pgid = cpid): TERM to the group, and our drain starts
# only once no other client is on Redis (a Celery still connected drains part of our tasks at
# its own rate, which was then measured as ours); KILL to the group after 60 s
kill -TERM -- -"$cpid" 2>/dev/null || true
for _ in $(seq 1 1200); do [ "$(rc CLIENT LIST | wc -l)" -le 1 ] && break; sleep 0.05; done
if [ "$(rc CLIENT LIST | wc -l)" -gt 1 ]; then
  kill -KILL -- -"$cpid" 2>/dev/null || true
  for _ in $(seq 1 200); do [ "$(rc CLIENT LIST | wc -l)" -le 1 ] && break; sleep 0.05; done
fi
wait "$cpid" 2>/dev/null || true
echo "  Celery worker -c 2 (prefork):  $c_rate tasks/s ($c_s s, $c_res results)"
rc FLUSHALL >/dev/null
fi
"$QB" publish "$URL" "$N" soma.noop >/dev/null
wport=$(free_port)
# the watcher is up before the worker starts: a loaded machine may start Python slower than the
# worker drains N tasks. The worker does not inherit SOMA_BIN: it refuses to start on an SOMA_*
# variable that names no setting (the drain then waited for its deadline)
[ -n "$PERF_OUT" ] && rc CONFIG RESETSTAT >/dev/null
drain_watch "$TMP/spid" >"$TMP/watch.out" &
watchpid=$!
until grep -q ready "$TMP/watch.out" 2>/dev/null; do sleep 0.01; done
env -u SOMA_BIN "$BIN" run --role worker --set http.listen=127.0.0.1:"$wport" --set data.dir="$TMP/wdata" --set log.access=false \
  --set log.level=warn --set queue.driver=redis --set redis.url="$URL" --set queue.celery.concurrency=2 \
  2>"$TMP/soma.log" &
spid=$!
echo "$spid" >"$TMP/spid"
PIDS+=($spid)
if [ -n "$PERF_OUT" ]; then # once the drain runs: perf -p does not follow threads started later
  while [ "$(rc LLEN celery)" -ge "$N" ]; do sleep 0.005; done
  perf record ${QUEUE_BENCH_PERF_OPTS:--g} -o "$PERF_OUT" -p "$spid" 2>"$TMP/perf.log" &
  perfpid=$!
  perf record -g -o "$PERF_OUT.redis-perf" -p "$rpid" 2>"$TMP/perf-redis.log" &
  rperfpid=$!
fi
wait "$watchpid" || true
read -r s_s s_rate s_res s_wcpu s_rcpu < <(tail -1 "$TMP/watch.out")
if [ -n "$PERF_OUT" ]; then
  kill -INT "$perfpid" "$rperfpid" 2>/dev/null || true
  wait "$perfpid" "$rperfpid" 2>/dev/null || true
  rc INFO commandstats >"$PERF_OUT.redis"
fi
kill -TERM "$spid" 2>/dev/null || true
echo "  ours (queue.celery.concurrency=2): $s_rate tasks/s ($s_s s, $s_res results; CPU per task: worker $s_wcpu us, redis $s_rcpu us)"
[ "$s_res" = "$N" ] || { echo "bench: the worker did not store $N results; its log:" >&2; tail -20 "$TMP/soma.log" >&2; }
[ "$ONLY" = ours ] && exit 0
"$PY" -c "print(f'  ratio ours / Celery: {$s_rate / $c_rate:.1f}x (target 20x, >= 30,000 tasks/s)')"
"$PY" -c "print(f'  enqueue ratio ours (direct) / Celery: {$ours_pub / $celery_pub:.1f}x (target >= 50,000 tasks/s)')"
