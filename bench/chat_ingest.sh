#!/usr/bin/env bash
# bench/chat_ingest.sh - part 1 of bench/chat.sh alone (ingest, then finals/s and the drain), for
# same-window comparisons of several builds: each round runs every binary once, in turn, each on a
# fresh data dir against the same nginx fake LLM (a fixed SSE body).
#   bench/chat_ingest.sh [seconds] [rounds] [binary...]
# Defaults: 10 s of wrk, 3 rounds, $SOMA_BIN or build/somaagent. SOMA_SET="k=v k=v" adds --set
# options to every server. Each run also prints the server's CPU time per message (ingest
# through drain), which other load on the machine moves far less than the rates. PERF=1 records
# `perf record --call-graph dwarf` of the server for PERF_SECS (default: the wrk phase; longer
# covers the drain too) into $PERF_DIR/perf-r<round>-b<n>.data.
source "$(dirname "$0")/lib.sh"
SECS=${1:-10}
ROUNDS=${2:-3}
shift 2 2>/dev/null || shift $#
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$BIN")
PY=/usr/bin/python3
ulimit -n 65536 2>/dev/null || true

start_llm_fake # -> fake_port (lib.sh)

cpu_ticks() { # PID -> utime + stime of the process (all threads), in clock ticks
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}
SETS=()
for kv in ${SOMA_SET:-}; do SETS+=(--set "$kv"); done
unset SOMA_SET # read: somaagent refuses SOMA_* variables that name no setting
echo "bench/chat_ingest.sh: wrk ${SECS}s, $ROUNDS round(s), $(nproc) cores, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  for i in "${!BINS[@]}"; do
    b=${BINS[$i]}
    name="r$r-b$i"
    port=$(free_port)
    "$b" run --set llm.provider=custom --set llm.base_url=http://127.0.0.1:$fake_port/v1 --set llm.api_key=x \
      "${SETS[@]}" --set http.listen=127.0.0.1:"$port" --set data.dir="$TMP/$name" --set log.access=false \
      --set log.level=warn --set shutdown.grace_s=2 2>"$TMP/$name.log" &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$port/v1/health"
    echo "-- round $r, binary $i: $b (load $(cut -d' ' -f1 /proc/loadavg))"
    perf_pid=
    if [ "${PERF:-0}" = 1 ]; then
      perf record -F ${PERF_FREQ:-499} --call-graph ${PERF_CG:-dwarf,8192} -o "${PERF_DIR:-/tmp}/perf-$name.data" -p "$pid" -- sleep "${PERF_SECS:-$SECS}" >/dev/null 2>&1 &
      perf_pid=$!
    fi
    cpu0=$(cpu_ticks "$pid")
    sys0=$(awk '{ print $15 }' "/proc/$pid/stat")
    "$PY" "$ROOT/bench/chat_ingest.py" --port "$port" --lua "$ROOT/bench/chat_post.lua" --seconds "$SECS" \
      --drain-timeout 90 --out "$TMP/$name.json" || echo "  ingest FAILED"
    cpu1=$(cpu_ticks "$pid")
    sys1=$(awk '{ print $15 }' "/proc/$pid/stat")
    # the server's CPU per message, ingest through drain: the figure least moved by other load
    "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); n=r.get("accepted",0); t=(int(sys.argv[3])-int(sys.argv[2]))/int(sys.argv[4])
k=(int(sys.argv[6])-int(sys.argv[5]))/int(sys.argv[4])
print(f"  server CPU, wrk + drain: {t:.1f} s for {n} messages = {t/n*1e6 if n else 0:.0f} us per message ({k/t*100 if t else 0:.0f} % in the kernel)")' \
      "$TMP/$name.json" "$cpu0" "$cpu1" "$(getconf CLK_TCK)" "$sys0" "$sys1"
    [ -n "$perf_pid" ] && wait "$perf_pid" || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    grep -E '"level":"(error|fatal)"' "$TMP/$name.log" | head -3 | sed 's/^/  !! log: /' || true
    rm -rf "${TMP:?}/$name"
  done
done
