#!/usr/bin/env bash
# bench/msg_cost.sh - server instructions per chat message (ingest + its reply), counted by
# valgrind's callgrind: repeatable whatever the machine's load, so fit for A/B of CPU cost.
#   bench/msg_cost.sh [messages] [binary...]
# Defaults: 1000 messages, $SOMA_BIN or build/somaagent. Each binary runs under callgrind on SQLite,
# the local queue and the nginx fake LLM (a fixed SSE body, as bench/chat_ingest.sh), is warmed up
# with WARM (default 40) messages, has its counters zeroed, then gets the messages (CLIENTS=8
# keep-alive connections over SESSIONS=20 sessions, bench/msg_cost_post.py), waits until every
# reply's final is committed, and dumps. Prints instructions per message in all and per thread
# (named by the thread's entry function), and the TOP (default 25) functions by their own
# instructions. The callgrind files stay in $OUT (default /tmp/msg-cost-<time>) for
# callgrind_annotate. SOMA_SET="k=v k=v" adds --set options. Under callgrind the threads run one at
# a time, so batch sizes differ from a native run: compare binaries with the same settings only.
# MIX=SEED posts varied words instead (msg_cost_post.py --mix; the warm-up uses SEED+1).
source "$(dirname "$0")/lib.sh"
N=${1:-1000}
shift 1 2>/dev/null || shift $#
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$BIN")
PY=/usr/bin/python3
OUT=${OUT:-/tmp/msg-cost-$(date -u +%H%M%S)}
mkdir -p "$OUT"
SETS=()
for kv in ${SOMA_SET:-}; do SETS+=(--set "$kv"); done
unset SOMA_SET # read: somaagent refuses SOMA_* variables that name no setting

start_llm_fake # -> fake_port (lib.sh)

# callgrind_annotate [opts] FILE -> "count function" lines (count without commas, function
# without its file and object)
cg_rows() {
  callgrind_annotate --threshold=100 "$@" 2>/dev/null |
    awk '/^ *[0-9,]+ \([ 0-9.]+%\)  / && !/PROGRAM TOTALS/ { c=$1; gsub(",", "", c); f=$0
      sub(/^ *[0-9,]+ \([ 0-9.]+%\)  /, "", f); sub(/ \[.*$/, "", f); sub(/^.*:/, "", f); print c, f }'
}

echo "bench/msg_cost.sh: $N messages, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in "${!BINS[@]}"; do
  b=${BINS[$i]}
  dir="$OUT/b$i"
  rm -rf "$dir" && mkdir -p "$dir"
  port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$b" run --set llm.provider=custom --set llm.base_url=http://127.0.0.1:$fake_port/v1 \
    --set llm.api_key=x "${SETS[@]}" --set http.listen=127.0.0.1:"$port" --set data.dir="$TMP/d$i" \
    --set log.access=false --set log.level=warn --set shutdown.grace_s=2 2>"$dir/server.log" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 600); do curl -fsS -o /dev/null "http://127.0.0.1:$port/v1/health" 2>/dev/null && break; sleep 0.1; done
  "$PY" "$ROOT/bench/msg_cost_post.py" --port "$port" --messages "${WARM:-40}" --sessions 4 --clients 2 \
    ${MIX:+--mix $((MIX + 1))}
  callgrind_control -z "$pid" >/dev/null
  "$PY" "$ROOT/bench/msg_cost_post.py" --port "$port" --messages "$N" --sessions "${SESSIONS:-20}" \
    --clients "${CLIENTS:-8}" ${MIX:+--mix $MIX} || echo "  posting FAILED"
  callgrind_control -d "$pid" >/dev/null
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "-- binary $i: $b"
  f=$dir/cg.out.1 # the dump: from the zeroing to the last final
  all=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
  echo "  instructions per message: $((all / N)) (all threads, $all in all)"
  # a thread's cost is the inclusive count of its entry function
  cg_rows --inclusive=yes "$f" | awk -v n="$N" -v all="$all" '
    $2 ~ /^(writer_main|reader_main|worker_main|thread_main|checkpoint_main|pool_main|relay_main|lane_main|serve|beat_main|pidbox_main|publisher_main)$/ && !seen[$2]++ {
      printf "    thread %-16s %9.0f per message (%4.1f %%)\n", $2, $1 / n, 100 * $1 / all }' || true
  # (a thread's entry and event loop show their inclusive count as their own after the zeroing:
  # left out)
  echo "  top functions, own instructions per message:"
  { cg_rows "$f" || true; } | awk '$2 !~ /^(start_thread|clone|event_base_dispatch|event_base_loop|.*_main|serve|main|__libc_start_main.*)$/ && $0 !~ /below main/' |
    awk -v top="${TOP:-25}" 'NR <= top' | awk -v n="$N" -v all="$all" '{ c=$1; $1=""; printf "    %9.0f %4.1f %% %s\n", c / n, 100 * c / all, $0 }'
  grep -E '"level":"(error|fatal)"' "$dir/server.log" | head -3 | sed 's/^/  !! log: /' || true
done
echo "callgrind files: $OUT"
