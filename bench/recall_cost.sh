#!/usr/bin/env bash
# bench/recall_cost.sh - instructions of one built-in recall (POST /v1/memory/recall, top_k 4 as a
# chat message's) against memory indexes of several sizes, counted by valgrind's callgrind.
#   bench/recall_cost.sh [sizes] [binary...]
# sizes: memories per database, e.g. "1000 10000 50000" (the default). For each size a database is
# filled once through the first binary's own API (bench/recall_post.py fill: varied words, written
# in the server's own batches, so its FTS5 index has a real one's segments) and kept in
# $DBDIR/<size> (default /tmp/recall-db) for later runs. Each binary then runs under callgrind on a
# copy of it, is left idle until its index stops changing (a binary that merges the index's
# segments while idle does it then; the count it is measured with is printed), gets WARM (default
# 50) recalls, has its counters zeroed, runs Q (default 200) recalls of new words, and dumps:
# prints instructions per recall in all (HTTP included), inside store_sql_memory_search, and in
# its parts (counting words, the query's steps, payloads), and the
# TOP (default 12) functions by own instructions. COMPARE=1 then runs the binaries natively side by
# side on copies of each database and compares their results on CQ (default 300) recalls
# (bench/recall_post.py compare; the first two binaries).
source "$(dirname "$0")/lib.sh"
SIZES=${1:-1000 10000 50000}
shift 1 2>/dev/null || shift $#
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$BIN")
PY=/usr/bin/python3
DBDIR=${DBDIR:-/tmp/recall-db}
OUT=${OUT:-/tmp/recall-cost-$(date -u +%H%M%S)}
mkdir -p "$OUT" "$DBDIR"
Q=${Q:-200}

serve() { # BINARY DATADIR PORT [wrapper...] -> pid in SPID
  local b=$1 d=$2 p=$3
  shift 3
  "$@" "$b" run --set http.listen=127.0.0.1:"$p" --set data.dir="$d" --set log.access=false \
    --set log.level=warn --set shutdown.grace_s=2 2>>"$d.log" &
  SPID=$!
  PIDS+=("$SPID")
  for _ in $(seq 1 900); do curl -fsS -o /dev/null "http://127.0.0.1:$p/v1/health" 2>/dev/null && return 0; sleep 0.1; done
  echo "bench: server on $p did not come up" >&2
  return 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

segments() { # DB -> the FTS5 index's segment count (segment ids of its %_data rows)
  sqlite3 "$1" "SELECT count(DISTINCT id >> 37) FROM memories_fts_data WHERE id >= 1 << 37" 2>/dev/null || echo '?'
}
settle() { # DB: waits (up to SETTLE_S, default 300 s) until the server's writer stops merging its
  # memory index while idle (sqlite_exec.c, sq_idle): the index's rows unchanged for 2 s
  local last='' now
  for _ in $(seq 1 "$((${SETTLE_S:-300} / 2))"); do
    now=$(sqlite3 "$1" "SELECT count(*), sum(length(block)) FROM memories_fts_data" 2>/dev/null || echo '?')
    [ "$now" = "$last" ] && return 0
    last=$now
    sleep 2
  done
  echo "bench: the index of $1 was still changing after ${SETTLE_S:-300} s" >&2
}

cg_rows() { # as bench/msg_cost.sh
  callgrind_annotate --threshold=100 "$@" 2>/dev/null |
    awk '/^ *[0-9,]+ \([ 0-9.]+%\)  / && !/PROGRAM TOTALS/ { c=$1; gsub(",", "", c); f=$0
      sub(/^ *[0-9,]+ \([ 0-9.]+%\)  /, "", f); sub(/ \[.*$/, "", f); sub(/^.*:/, "", f); print c, f }'
}

echo "bench/recall_cost.sh: sizes $SIZES, $Q recalls, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
for n in $SIZES; do
  if [ ! -f "$DBDIR/$n/somaagent.db" ]; then
    rm -rf "${DBDIR:?}/$n"
    port=$(free_port)
    serve "${BINS[0]}" "$DBDIR/$n" "$port"
    t0=$(date +%s)
    "$PY" "$ROOT/bench/recall_post.py" fill --port "$port" --memories "$n"
    stop "$SPID"
    echo "  filled $DBDIR/$n: $n memories in $(($(date +%s) - t0)) s"
  fi
  segs=$(segments "$DBDIR/$n/somaagent.db")
  echo "== $n memories ($(sqlite3 "$DBDIR/$n/somaagent.db" 'SELECT count(*) FROM memories'), ~$segs segments)"
  for i in "${!BINS[@]}"; do
    b=${BINS[$i]}
    dir="$OUT/n$n-b$i"
    rm -rf "$dir" && mkdir -p "$dir" && cp -r "$DBDIR/$n" "$dir/data"
    port=$(free_port)
    serve "$b" "$dir/data" "$port" valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out"
    settle "$dir/data/somaagent.db"
    "$PY" "$ROOT/bench/recall_post.py" query --port "$port" --queries "${WARM:-50}" --seed 99
    callgrind_control -z "$SPID" >/dev/null
    "$PY" "$ROOT/bench/recall_post.py" query --port "$port" --queries "$Q" --out "$dir/results.jsonl"
    callgrind_control -d "$SPID" >/dev/null
    stop "$SPID"
    f=$dir/cg.out.1
    all=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
    echo "-- binary $i: $b ($(segments "$dir/data/somaagent.db") segments when measured)"
    echo "  instructions per recall: $((all / Q)) (all threads)"
    cg_rows --inclusive=yes "$f" | awk -v q="$Q" '
      $2 ~ /^(store_sql_memory_search|fts_words|store_sql_memory_term_rows|term_count|sqlite3_step|memory_payload_read|soma_rank|fts5SegIterNext|fts5MultiIterNext|fts5DataRead|sqlite3Fts5IndexQuery|fts5ChunkIterate)$/ && !seen[$2]++ {
        printf "    %-28s %9.0f per recall (inclusive)\n", $2, $1 / q }'
    echo "  top functions, own instructions per recall:"
    { cg_rows "$f" || true; } | awk '$2 !~ /^(start_thread|clone|event_base_dispatch|event_base_loop|.*_main|serve|main|__libc_start_main.*)$/ && $0 !~ /below main/' |
      awk -v top="${TOP:-12}" 'NR <= top' | awk -v q="$Q" '{ c=$1; $1=""; printf "    %9.0f %s\n", c / q, $0 }'
  done
  if [ "${COMPARE:-0}" = 1 ] && [ ${#BINS[@]} -ge 2 ]; then
    ports=()
    spids=()
    for i in 0 1; do
      rm -rf "$OUT/cmp$i" && cp -r "$DBDIR/$n" "$OUT/cmp$i"
      port=$(free_port)
      serve "${BINS[$i]}" "$OUT/cmp$i" "$port"
      ports+=("$port")
      spids+=("$SPID")
    done
    "$PY" "$ROOT/bench/recall_post.py" compare --ports "${ports[0]},${ports[1]}" --queries "${CQ:-300}" |
      tee "$OUT/compare-$n.txt" | tail -"${CMP_LINES:-20}"
    for p in "${spids[@]}"; do stop "$p"; done
  fi
done
echo "callgrind files: $OUT"
