#!/usr/bin/env bash
# bench/memory.sh - the memory outbox against the fake SomaBrain (tests/fakes/somabrain):
#   1. outage and drain: SomaBrain down, wrk posts POST /v1/memory/remember for SECONDS (every
#      write is a committed outbox row before its 200), SomaBrain back up; then how fast the
#      relay drains the backlog (writes/s) and whether the fake saw any duplicate
# Usage: bench/memory.sh [seconds]   (release build at build/somaagent; SOMA_BIN overrides)
source "$(dirname "$0")/lib.sh"
SECS=${1:-5}
PY=/usr/bin/python3
brain_port=$(free_port)
"$PY" "$ROOT/tests/fakes/somabrain/server.py" --port "$brain_port" >"$TMP/brain.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$brain_port/health"
brain() { curl -fsS -X POST -d "$1" "http://127.0.0.1:$brain_port/_control" >/dev/null; }

port=$(free_port)
"$BIN" run --set http.listen=127.0.0.1:"$port" --set data.dir="$TMP/data" --set log.access=false \
  --set log.level=warn --set memory.driver=somabrain --set memory.somabrain_url="http://127.0.0.1:$brain_port" \
  --set memory.relay_rate_per_s=1000000 --set memory.health_interval_ms=200 --set memory.breaker_open_ms=500 \
  2>"$TMP/soma.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$port/v1/health"

echo "== 1. outage and drain: SomaBrain down, ${SECS} s of POST /v1/memory/remember (wrk 2 threads, 16 connections)"
brain '{"mode":"down"}'
sleep 1
wrk -t2 -c16 -d"$SECS"s -s "$ROOT/bench/memory_post.lua" "http://127.0.0.1:$port/v1/memory/remember" |
  grep -E "Requests/sec|Non-2xx" | sed 's/^/  /'
pending() { curl -fsS "http://127.0.0.1:$port/v1/memory/outbox?limit=1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["pending"])'; }
backlog=$(pending)
echo "  backlog while SomaBrain is down: $backlog writes"
t0=$(date +%s.%N)
brain '{"mode":"ok"}'
while [ "$(pending)" -gt 0 ]; do
  sleep 0.2
  [ "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print (b - a > 300) }')" = 1 ] && { echo "  NOT drained after 300 s"; break; }
done
t1=$(date +%s.%N)
stats=$(curl -fsS "http://127.0.0.1:$brain_port/_stats")
echo "$stats" | "$PY" -c '
import json, sys
s = json.load(sys.stdin)
backlog, t0, t1 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
stored, dups = s["stored"], s["duplicates"]
print(f"  drained {backlog} writes in {t1 - t0:.1f} s = {backlog / max(t1 - t0, 1e-9):,.0f} writes/s "
      f"(target >= 5,000/s); SomaBrain stored {stored}, duplicates {dups}")' "$backlog" "$t0" "$t1"
