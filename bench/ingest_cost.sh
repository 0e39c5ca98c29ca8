#!/usr/bin/env bash
# bench/ingest_cost.sh - our instructions per distributed message (issue 4): POST
# /v1/session/message to `somaagent run --role gateway` on PostgreSQL + Redis (as
# bench/ingest_pg.sh runs it), counted by valgrind's callgrind, so builds compare whatever the
# machine's load (ingest_pg.sh measures rates and CPU time, which the load moves).
#   bench/ingest_cost.sh [messages] [binary...]
# Defaults: 2000 messages, $SOMA_BIN or build/somaagent. One PostgreSQL and one Redis serve every
# binary (each its own database and Redis db). Each binary runs under callgrind, is warmed up with
# WARM (default 100) messages, has its counters zeroed, gets the messages (CLIENTS=8 keep-alive
# connections over SESSIONS=200 sessions, bench/msg_cost_post.py --no-finals), then the script waits
# until its relay has published every task (the tasks table empty) and dumps. Prints instructions
# per message in all and per thread, and the TOP (default 25) functions by their own instructions.
# The callgrind files stay in $OUT (default /tmp/ingest-cost-<time>) for callgrind_annotate.
# PostgreSQL's and Redis's own CPU are not counted here: bench/ingest_pg.sh prints them.
source "$(dirname "$0")/lib.sh"
N=${1:-2000}
shift 1 2>/dev/null || shift $#
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$BIN")
PY=/usr/bin/python3
OUT=${OUT:-/tmp/ingest-cost-$(date -u +%H%M%S)}
mkdir -p "$OUT"
pg_use # postgres as the postgres user, stopped at exit (lib.sh)

mkdir -p "$TMP/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$TMP/pg"
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U soma -A trust -E UTF8 --no-sync --locale=C >"$TMP/initdb.log" 2>&1
pport=$(free_port)
as_pg "$PG_BIN/postgres" -D "$PG_DATA" -p "$pport" -k "$TMP/pg" -c listen_addresses=127.0.0.1 \
  -c max_connections=100 -c fsync=on -c synchronous_commit=on >"$TMP/pg/postgres.log" 2>&1 &
PIDS+=($!)
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pport" -U soma)
for _ in $(seq 1 300); do "${PSQL[@]}" -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.05; done
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --dir "$TMP" \
  >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.01; done

echo "bench/ingest_cost.sh: $N messages, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in "${!BINS[@]}"; do
  b=${BINS[$i]}
  dir="$OUT/b$i"
  rm -rf "$dir" && mkdir -p "$dir"
  "${PSQL[@]}" -d postgres -c "CREATE DATABASE soma$i"
  port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$b" run --role gateway --set http.listen=127.0.0.1:"$port" --set data.dir="$TMP/d$i" \
    --set store.url="postgresql://soma@127.0.0.1:$pport/soma$i" --set queue.driver=redis \
    --set redis.url="redis://127.0.0.1:$rport/$i" --set bus.driver=redis \
    --set log.access=false --set log.level=warn --set shutdown.grace_s=2 2>"$dir/server.log" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 600); do curl -fsS -o /dev/null "http://127.0.0.1:$port/v1/health" 2>/dev/null && break; sleep 0.1; done
  drained() { # the relay has published every task
    for _ in $(seq 1 1200); do
      [ "$("${PSQL[@]}" -d "soma$i" -Atc 'SELECT count(*) FROM tasks')" = 0 ] && return 0
      sleep 0.1
    done
    echo "  !! the relay left tasks behind"
  }
  "$PY" "$ROOT/bench/msg_cost_post.py" --port "$port" --messages "${WARM:-100}" --sessions 20 --clients 2 --no-finals
  drained
  callgrind_control -z "$pid" >/dev/null
  "$PY" "$ROOT/bench/msg_cost_post.py" --port "$port" --messages "$N" --sessions "${SESSIONS:-200}" \
    --clients "${CLIENTS:-8}" --no-finals || echo "  posting FAILED"
  drained
  callgrind_control -d "$pid" >/dev/null
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "-- binary $i: $b"
  f=$dir/cg.out.1 # the dump: from the zeroing to the last task relayed
  all=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
  echo "  instructions per message: $((all / N)) (all threads, $all in all)"
  callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null |
    awk -v n="$N" -v all="$all" '/ \(.*%\)  .*:[a-z_]*_main / || / \(.*%\)  .*:thread_main / {
      c=$1; gsub(",", "", c); f=$0; sub(/ \[.*$/, "", f); sub(/^.*:/, "", f)
      if (!seen[f]++) printf "    thread %-16s %9.0f per message (%4.1f %%)\n", f, c / n, 100 * c / all }'
  cg_top_functions "$f" "$N" message
  grep -E '"level":"(error|fatal)"' "$dir/server.log" | head -3 | sed 's/^/  !! log: /' || true
done
echo "callgrind files: $OUT"
