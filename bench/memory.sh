#!/usr/bin/env bash
# bench/memory.sh - the memory outbox and the per-turn cost of memory, against the fake SomaBrain
# (tests/fakes/somabrain) and the fake LLM (tests/fakes/llm). Each figure is measured ROUNDS times
# and the median printed (the machine is shared and noisy); comparisons are made in the same run.
#   0. ceiling   the fake SomaBrain's own rate: wrk POST /memory/remember with 4 connections (as
#                many as the relay's lanes), distinct keys. The relay cannot drain faster.
#   1. drain     SomaBrain down, wrk posts POST /v1/memory/remember for SECONDS (every write is a
#                committed outbox row before its 200), SomaBrain back up; how fast the relay
#                empties the outbox (writes/s) and whether the fake saw any duplicate. The rate
#                limit memory.relay_rate_per_s (default 2,000/s, so that a long backlog does not
#                flatten SomaBrain) is raised to 1,000,000 here to measure the relay itself.
#   2. turn      conversation turns (POST /v1/session/message -> assistant.final on the stream)
#                on two servers side by side, alternating: memory on (recall_top_k=3) and off
#                (recall_top_k=0), the fake SomaBrain answering remember and recall after 1 ms
#                (bench/memory_turn.py); p50/p99 of each and what memory adds, per round and over
#                all rounds' turns pooled, beside the fake SomaBrain's own recall latency sampled
#                between the turns (what of the addition is the fake's). Both servers share one
#                fake SomaBrain; BRAINS=own gives each its own (the fake runs one request at a
#                time under Python's GIL, so a shared one also answers the off server's remember
#                writes while the on server's recall waits; measured on 2026-11-28, 2 x 1000
#                turns each way, the difference was within the noise).
# Usage: bench/memory.sh [seconds] [rounds] [parts] [turns]   (defaults 3, 3, 012 and 1000: parts
# names the parts to run, e.g. 2 for the turn alone; turns per server per round of part 2, so a
# round's p99 rests on turns/100 samples; release build at build/somaagent, SOMA_BIN overrides).
# Takes about 3 minutes at the defaults.
source "$(dirname "$0")/lib.sh"
SECS=${1:-3}
ROUNDS=${2:-3}
PARTS=${3:-012}
TURNS=${4:-1000}
part() { [[ $PARTS == *"$1"* ]]; }
PY=/usr/bin/python3
echo "bench/memory.sh: $("$BIN" version 2>/dev/null | head -1), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "$ROUNDS rounds, $(date -u +%FT%TZ)"

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }

start_brain() { # [--delay-ms N] -> BRAIN (port)
  BRAIN=$(free_port)
  "$PY" "$ROOT/tests/fakes/somabrain/server.py" --port "$BRAIN" "$@" >>"$TMP/brain.log" 2>&1 &
  PIDS+=($!)
  BRAIN_PID=$!
  wait_http "http://127.0.0.1:$BRAIN/health"
}
brain() { curl -fsS -X POST -d "$1" "http://127.0.0.1:$BRAIN/_control" >/dev/null; }

SOMA_N=0
start_soma() { # PORT [--set k=v ...] -> SOMA_PID
  local port=$1
  shift
  SOMA_N=$((SOMA_N + 1))
  "$BIN" run --set http.listen=127.0.0.1:"$port" --set data.dir="$TMP/data$SOMA_N" --set log.access=false \
    --set log.level=warn --set memory.driver=somabrain --set memory.somabrain_url="http://127.0.0.1:$BRAIN" "$@" \
    2>"$TMP/soma$SOMA_N.log" &
  SOMA_PID=$!
  PIDS+=("$SOMA_PID")
  wait_http "http://127.0.0.1:$port/v1/health"
}

# ---- 0. the fake's ceiling ------------------------------------------------------------------------
if part 0; then
echo "== 0. the fake SomaBrain's own ceiling: wrk -t1 -c4 -d${SECS}s POST /memory/remember, distinct keys"
start_brain
ceil=()
for r in $(seq 1 "$ROUNDS"); do
  rps=$(wrk -t1 -c4 -d"$SECS"s -s "$ROOT/bench/memory_brain_post.lua" "http://127.0.0.1:$BRAIN/memory/remember" |
    awk '/Requests\/sec/ {printf "%d", $2}')
  ceil+=("$rps")
  curl -fsS -X POST "http://127.0.0.1:$BRAIN/_reset" >/dev/null
done
CEIL=$(printf '%s\n' "${ceil[@]}" | median)
echo "  rounds: ${ceil[*]} req/s; median $CEIL req/s"
kill "$BRAIN_PID" 2>/dev/null || true
fi

# ---- 1. outage and drain --------------------------------------------------------------------------
if part 1; then
echo "== 1. outage and drain: SomaBrain down, ${SECS} s of wrk (2 threads, 16 connections) POST" \
  "/v1/memory/remember, SomaBrain up; memory.relay_rate_per_s raised to 1,000,000 (default 2,000)"
pending() { curl -fsS "http://127.0.0.1:$1/v1/memory/outbox?limit=1" | sed -E 's/.*"pending": *([0-9]+).*/\1/'; }
rates=()
for r in $(seq 1 "$ROUNDS"); do
  start_brain
  port=$(free_port)
  start_soma "$port" --set memory.relay_rate_per_s=1000000 --set memory.health_interval_ms=200 \
    --set memory.breaker_open_ms=500
  brain '{"mode":"down"}'
  sleep 1
  accepted=$(wrk -t2 -c16 -d"$SECS"s -s "$ROOT/bench/memory_post.lua" "http://127.0.0.1:$port/v1/memory/remember" |
    awk '/Requests\/sec/ {printf "%d", $2}')
  backlog=$(pending "$port")
  t0=$(date +%s.%N)
  brain '{"mode":"ok"}'
  while [ "$(pending "$port")" -gt 0 ]; do
    sleep 0.05
    [ "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print (b - a > 300) }')" = 1 ] && { echo "  NOT drained after 300 s"; break; }
  done
  t1=$(date +%s.%N)
  out=$(curl -fsS "http://127.0.0.1:$BRAIN/_count" | "$PY" -c '
import json, sys
s = json.load(sys.stdin)
backlog, t0, t1 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
ok = s["stored"] == backlog and s["duplicates"] == 0 and s["remembers"] == backlog
print("%.0f %.2f %d %d %s" % (backlog / max(t1 - t0, 1e-9), t1 - t0, s["stored"], s["duplicates"],
                              "exactly-once" if ok else "NOT-exactly-once"))
' "$backlog" "$t0" "$t1")
  read -r rate took stored dups verdict <<<"$out"
  echo "  round $r: accepted $accepted writes/s during the outage; backlog $backlog drained in $took s =" \
    "$rate writes/s; SomaBrain stored $stored, duplicates $dups ($verdict)"
  rates+=("$rate")
  kill "$SOMA_PID" "$BRAIN_PID" 2>/dev/null || true
  wait "$SOMA_PID" 2>/dev/null || true
done
DRAIN=$(printf '%s\n' "${rates[@]}" | median)
echo "  drain median $DRAIN writes/s (target >= 5,000/s, 0 duplicates); the fake's ceiling ${CEIL:-(part 0 not run)} req/s"
fi

# ---- 2. what memory adds to a turn ----------------------------------------------------------------
part 2 || exit 0
BRAINS=${BRAINS:-shared}
echo "== 2. turn latency, memory on vs off side by side, SomaBrain answering in 1 ms (fake LLM, 12 chunks);" \
  "fake SomaBrain: $BRAINS"
start_brain --delay-ms 1
BRAIN_ON=$BRAIN
[ "$BRAINS" = shared ] || start_brain --delay-ms 1 # the off server's (BRAIN now)
llm=$(free_port)
"$PY" "$ROOT/tests/fakes/llm/server.py" --port "$llm" >"$TMP/llm.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$llm/_stats"
llm_sets=(--set llm.provider=custom --set llm.base_url="http://127.0.0.1:$llm/v1" --set llm.api_key=k
  --set llm.model=fake-model)
on=$(free_port)
BRAIN_OFF=$BRAIN
BRAIN=$BRAIN_ON
start_soma "$on" "${llm_sets[@]}" --set memory.recall_top_k=3
BRAIN=$BRAIN_OFF
off=$(free_port)
start_soma "$off" "${llm_sets[@]}" --set memory.recall_top_k=0
for r in $(seq 1 "$ROUNDS"); do
  echo "  round $r ($TURNS turns on each server):"
  "$PY" "$ROOT/bench/memory_turn.py" --on 127.0.0.1:"$on" --off 127.0.0.1:"$off" --brain 127.0.0.1:"$BRAIN_ON" \
    -n "$TURNS" --warmup 40 --json "$TMP/turn$r.json" | sed 's/^/  /'
done
"$PY" - "$TMP"/turn*.json <<'PYEOF'
import json, statistics, sys
rounds = [json.load(open(f)) for f in sys.argv[1:]]
def q(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(p * len(s) + 0.5)) - 1))]
med = lambda k: statistics.median(d[k] for d in rounds)
print(f"  memory adds, median of {len(rounds)} rounds: p50 {med('add_p50'):+.2f} ms, p99 {med('add_p99'):+.2f} ms"
      f" (target p99 <= +2 ms); the fake's recall alone: p50 {med('brain_p50'):.2f}, p99 {med('brain_p99'):.2f} ms")
on = [x for d in rounds for x in d["on"]]
off = [x for d in rounds for x in d["off"]]
brain = [x for d in rounds for x in d["brain"]]
print(f"  all rounds pooled ({len(on)} turns each; p99 = the {len(on) // 100}th slowest): off p50 {q(off, .5):.2f} /"
      f" p99 {q(off, .99):.2f}, on p50 {q(on, .5):.2f} / p99 {q(on, .99):.2f}; memory adds p50"
      f" {q(on, .5) - q(off, .5):+.2f}, p99 {q(on, .99) - q(off, .99):+.2f} ms; the fake's recall p50"
      f" {q(brain, .5):.2f} / p99 {q(brain, .99):.2f} ms")
PYEOF
