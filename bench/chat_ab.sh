#!/usr/bin/env bash
# bench/chat_ab.sh - an A/B of the chat reply's time to first delta (bench/chat.sh part 2a) for
# two builds on a busy, shared machine: both builds run at once against one keep-alive fake LLM,
# and every round of chat_sse.py session-ab measures the fake directly, build A and build B in a
# rotating order, so the load of the moment falls on the three alike (run-by-run interleaving
# left minutes between the sides, and the load of this machine moves by several-fold in minutes).
# Usage: bench/chat_ab.sh OLD_BIN NEW_BIN [first-delay-ms (default 50)] [rounds (3)] [n (400)]
# Prints each round's table (A = OLD_BIN, B = NEW_BIN) with the time and the load.
# A_SET / B_SET: extra "key=value ..." settings for one side (e.g. the same build twice with
# B_SET="queue.worker_nice=0" measures one config key).
source "$(dirname "$0")/lib.sh"
A_BIN=${1:?usage: bench/chat_ab.sh OLD_BIN NEW_BIN [first-delay-ms] [rounds] [n]}
B_BIN=${2:?usage: bench/chat_ab.sh OLD_BIN NEW_BIN [first-delay-ms] [rounds] [n]}
FD=${3:-50}
ROUNDS=${4:-3}
N=${5:-400}
PY=/usr/bin/python3

fport=$(free_port)
"$PY" "$ROOT/tests/fakes/llm/server.py" --port "$fport" --chunks 8 --delay-ms 5 --first-delay-ms "$FD" --keep-alive \
  >"$TMP/fake.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$fport/v1/models"
ports=()
for side in A B; do
  bin=$A_BIN
  extra=${A_SET:-}
  [ "$side" = B ] && bin=$B_BIN && extra=${B_SET:-}
  sets=()
  for kv in $extra; do sets+=(--set "$kv"); done
  port=$(free_port)
  "$bin" run --set http.listen=127.0.0.1:"$port" --set data.dir="$TMP/$side" --set log.access=false \
    --set log.level=warn --set shutdown.grace_s=2 --set llm.provider=custom \
    --set llm.base_url=http://127.0.0.1:"$fport"/v1 --set llm.api_key=x "${sets[@]}" 2>"$TMP/$side.log" &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/v1/health" || { echo "  !! build $side ($bin) did not start" >&2; exit 1; }
  ports+=("$port")
done
echo "bench/chat_ab.sh: A = $A_BIN, B = $B_BIN; fake's first content delta ${FD} ms after its head," \
  "8 chunks 5 ms apart, keep-alive; $N rounds per run, $(nproc) cores"
for r in $(seq 1 "$ROUNDS"); do
  echo
  echo "== run $r, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
  "$PY" "$ROOT/bench/chat_sse.py" session-ab --direct 127.0.0.1:"$fport" --a 127.0.0.1:"${ports[0]}" \
    --b 127.0.0.1:"${ports[1]}" -n "$N" --out "$TMP/run$r.json" || echo "  run $r FAILED"
  echo "   (load after: $(cut -d' ' -f1-3 /proc/loadavg))"
done
