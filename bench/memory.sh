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
#                (bench/memory_turn.py); p50/p99 of each and what memory adds.
# Usage: bench/memory.sh [seconds] [rounds]   (defaults 3 and 3; release build at
# build/somaagent, SOMA_BIN overrides). Takes about 1-2 minutes at the defaults.
source "$(dirname "$0")/lib.sh"
unset SOMA_BIN # BIN has it; somaagent refuses SOMA_* variables that name no setting
SECS=${1:-3}
ROUNDS=${2:-3}
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

# ---- 1. outage and drain --------------------------------------------------------------------------
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
echo "  drain median $DRAIN writes/s (target >= 5,000/s, 0 duplicates); the fake's ceiling $CEIL req/s"

# ---- 2. what memory adds to a turn ----------------------------------------------------------------
echo "== 2. turn latency, memory on vs off side by side, SomaBrain answering in 1 ms (fake LLM, 12 chunks)"
start_brain --delay-ms 1
llm=$(free_port)
"$PY" "$ROOT/tests/fakes/llm/server.py" --port "$llm" >"$TMP/llm.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$llm/_stats"
llm_sets=(--set llm.provider=custom --set llm.base_url="http://127.0.0.1:$llm/v1" --set llm.api_key=k
  --set llm.model=fake-model)
on=$(free_port)
start_soma "$on" "${llm_sets[@]}" --set memory.recall_top_k=3
off=$(free_port)
start_soma "$off" "${llm_sets[@]}" --set memory.recall_top_k=0
adds=()
for r in $(seq 1 "$ROUNDS"); do
  echo "  round $r:"
  "$PY" "$ROOT/bench/memory_turn.py" --on 127.0.0.1:"$on" --off 127.0.0.1:"$off" --brain 127.0.0.1:"$BRAIN" \
    -n 300 --warmup 40 --json "$TMP/turn$r.json" | sed 's/^/  /'
  adds+=("$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.2f %.2f %.2f %.2f %.2f %.2f" % (d["add_p99"], d["add_p50"], d["on_p99"], d["off_p99"], d["brain_p50"], d["brain_p99"]))' "$TMP/turn$r.json")")
done
printf '%s\n' "${adds[@]}" | awk '{ print $1 }' | median >"$TMP/m99"
printf '%s\n' "${adds[@]}" | awk '{ print $2 }' | median >"$TMP/m50"
echo "  memory adds (median of $ROUNDS rounds): p99 $(cat "$TMP/m99") ms, p50 $(cat "$TMP/m50") ms (target p99 <= +2 ms)"
