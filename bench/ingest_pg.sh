#!/usr/bin/env bash
# bench/ingest_pg.sh - distributed ingest on PostgreSQL + Redis (issue 4, section 9): wrk POST
# /v1/session/message to `somaagent run --role gateway` (store = PostgreSQL, queue and bus = Redis)
# against pgbench running one INSERT of an event-sized row per transaction (the ceiling), in one
# run on the same PostgreSQL (fsync=on, synchronous_commit=on: every acknowledged message durable).
#   1. pgbench -c 20 -j 2 -n -f bench/ingest_pg_insert.sql (a table shaped like `events`)
#   2. wrk -t2 -c20, then -c64, --latency -s bench/chat_post.lua: 600 sessions (300 per wrk thread); the worker
#      role is off (--role gateway), so only ingest is measured: a message is stored (one statement:
#      session seq upsert + event row + memory outbox row + task outbox row, pipelined with the rest
#      of its group commit: src/store/pg_batch.c) and its task is relayed to the Redis queue, where
#      it stays (the built-in memory's relay delivers its memory row in the same process)
#   3. pgbench again (the machine is shared and noisy: the ceiling before and after)
# Prints requests/s, p50, p99 and non-2xx of each side and the ratio ours / mean pgbench
# (target >= 0.7, our p99 <= 10 ms) at both concurrencies: -c20 is the like-for-like reading (pgbench
# runs 20 clients; by Little's law 64 requests in flight at ~3,000/s are ~20 ms each whatever the
# server does), -c64 the heavier load, shown as well. Usage: bench/ingest_pg.sh [seconds] [rounds]
# (default 10 s, 1 round; with several rounds pgbench and ours alternate - pgbench, ours, pgbench,
# ours, ..., pgbench - each round is compared with the pgbench runs on either side of it, and the
# medians are printed: the machine is shared and noisy; release build expected at build/somaagent,
# SOMA_BIN overrides).
# INGEST_TRACE=DIR keeps a timeline of every wrk run in DIR, to find where the tail comes from:
# PostgreSQL logs checkpoints, every autovacuum and statements over 20 ms (postgres.log, with ms
# timestamps and application names: the lanes are "somaagent message lane"); metrics-<S>-c<N>-r<R>.txt
# has, each second, our request-duration histogram of POST /v1/session/message (cumulative bucket
# counts: per-second deltas give the seconds with slow requests); waits-<S>-c<N>-r<R>.txt samples every
# 100 ms what each busy backend of the soma database waits on (pg_stat_activity); statements-<S>.txt
# has the 15 statements with the most time (pg_stat_statements: calls, rows, buffers, WAL records);
# redis-<S>-c<N>-r<R>.txt is Redis's INFO commandstats over that wrk run (calls and usec per command).
# Each wrk run also prints the CPU time per request of ours, PostgreSQL and Redis, and each pgbench
# run PostgreSQL's CPU time per transaction: on the shared 2-core machine the CPU is saturated, so
# the rate ratio is mostly CPU per message (ours + PostgreSQL + Redis) against pgbench's per
# transaction, and these figures compare builds even when the load moves the rates.
# After each wrk run the script waits until that build's outbox is empty (drain_outbox; it says
# when the relay lagged), so that the next run's CPU figures are its own.
# SOMA_BIN_B=PATH: an A/B of two builds in one run (S above: A is SOMA_BIN, B this one). Each round
# runs both, A first in odd rounds and B first in even ones, each wrk run between two pgbench runs;
# each build has its own server and database, both up throughout (the idle one idle); the summary
# gives each build's median ratio and p99 and B's ratio over A's per round.
# INGEST_CONNS="20" runs only -c20 (default "20 64").
# INGEST_SQL_A / INGEST_SQL_B: SQL run on that build's database once its server has migrated it
# (a schema variant tried by hand: e.g. an index dropped on one side of the same-run A/B).
source "$(dirname "$0")/lib.sh"
SECS=${1:-10}
ROUNDS=${2:-1}
BIN_B=${SOMA_BIN_B:-}
unset SOMA_BIN_B
CONNS=(${INGEST_CONNS:-20 64})
SIDES=(A)
[ -z "$BIN_B" ] || SIDES=(A B)
B=$ROOT/bench
ulimit -n 65536 2>/dev/null || true

pg_use # postgres as the postgres user, stopped at exit (lib.sh)

echo "bench/ingest_pg.sh: $("$BIN" version 2>/dev/null | head -1), $(nproc) cores, ${SECS}s per side," \
  "$(date -u +%FT%TZ)"
[ -z "$BIN_B" ] || echo "  A: $BIN, B: $BIN_B"
echo "  load before: $(uptime | sed 's/.*load average/load average/')"

# ---- servers -------------------------------------------------------------------------------------
mkdir -p "$TMP/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$TMP/pg"
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U soma -A trust -E UTF8 --no-sync --locale=C >"$TMP/initdb.log" 2>&1
pport=$(free_port)
TRACE_PG=()
if [ -n "${INGEST_TRACE:-}" ]; then
  mkdir -p "$INGEST_TRACE"
  TRACE_PG=(-c log_checkpoints=on -c log_autovacuum_min_duration=0 -c log_min_duration_statement=20
    -c "log_line_prefix=%m [%p] %a " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all)
fi
as_pg "$PG_BIN/postgres" -D "$PG_DATA" -p "$pport" -k "$TMP/pg" -c listen_addresses=127.0.0.1 \
  -c max_connections=300 -c fsync=on -c synchronous_commit=on "${TRACE_PG[@]}" >"$TMP/pg/postgres.log" 2>&1 &
PIDS+=($!)
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pport" -U soma)
for _ in $(seq 1 300); do "${PSQL[@]}" -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.05; done
"${PSQL[@]}" -d postgres -c 'CREATE DATABASE soma' -c 'CREATE DATABASE soma_b' -c 'CREATE DATABASE pgb'
echo "  postgres: $("${PSQL[@]}" -d postgres -Atc 'SHOW server_version'), fsync=$("${PSQL[@]}" -d postgres -Atc \
  'SHOW fsync'), synchronous_commit=$("${PSQL[@]}" -d postgres -Atc 'SHOW synchronous_commit')"

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --dir "$TMP" \
  >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=($!)
for _ in $(seq 1 300); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.01; done

# the pgbench table: events' shape (src/store/migrations/postgres/0001_core.sql), 300 sessions
"${PSQL[@]}" -d pgb <<'SQL'
CREATE TABLE sessions_bench (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, created_ms BIGINT NOT NULL);
CREATE TABLE events_bench (
  session_id TEXT NOT NULL REFERENCES sessions_bench(id) ON DELETE CASCADE,
  seq        BIGINT NOT NULL,
  event_id   TEXT NOT NULL UNIQUE,
  tenant     TEXT NOT NULL,
  type       TEXT NOT NULL,
  body       TEXT NOT NULL,
  created_ms BIGINT NOT NULL,
  PRIMARY KEY (session_id, seq));
CREATE SEQUENCE events_bench_seq;
INSERT INTO sessions_bench SELECT 'pgb-' || i, 'default', 0 FROM generate_series(0, 299) i;
SQL

# cpu_us PID... -> CPU time (user + system) in microseconds of those processes, their reaped children
# and, for PostgreSQL's postmaster, its live children (the backends): PG's share of a run is the
# difference of two readings, its exited backends included
cpu_us() {
  local pids=("$@") p
  for p in "$@"; do pids+=($(ps -o pid= --ppid "$p" 2>/dev/null || true)); done
  for p in "${pids[@]}"; do cat "/proc/$p/stat" 2>/dev/null || true; done |
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); t += $12 + $13 + $14 + $15 } END { printf "%.0f", t * 1e6 / hz }'
}
pg_pid() { head -1 "$PG_DATA/postmaster.pid"; }
# pgbench_run N -> "tps p50_ms p99_ms failed n pg_cpu_us_per_tx" (per-transaction latencies from --log)
pgbench_run() {
  local dir=$TMP/pgbench-$1 out c0
  mkdir -p "$dir"
  c0=$(cpu_us "$(pg_pid)")
  out=$(cd "$dir" && "$PG_BIN/pgbench" -h 127.0.0.1 -p "$pport" -U soma -n -c 20 -j 2 -T "$SECS" \
    -f "$B/ingest_pg_insert.sql" --log --log-prefix=tx pgb 2>&1) || { echo "$out" >&2; return 1; }
  echo "$out" >"$dir/pgbench.out"
  local tps failed pgcpu=$(($(cpu_us "$(pg_pid)") - c0))
  tps=$(echo "$out" | awk '/^tps/ {printf "%.0f", $3}')
  failed=$(echo "$out" | awk '/number of failed transactions/ {print $5}')
  # log line: client_id transaction_no time_us script_no epoch epoch_us
  cat "$dir"/tx.* | awk '{print $3}' | sort -n | awk -v tps="$tps" -v f="${failed:-0}" -v cpu="$pgcpu" \
    '{ a[NR] = $1 } END { printf "%s %.3f %.3f %s %d %.0f\n", tps, a[int(NR * 0.5)] / 1000, a[int(NR * 0.99)] / 1000, f, NR, cpu / NR }'
}

# trace_start NAME / trace_stop: INGEST_TRACE's samplers around one wrk run (see the top)
TRACE_PIDS=()
trace_start() {
  [ -n "${INGEST_TRACE:-}" ] || return 0
  local url="http://127.0.0.1:${PORT[$side]}/metrics"
  (while :; do
    echo "t=$(date +%s.%N | cut -c1-14) $(curl -s "$url" | awk '/^soma_http_request_duration_seconds_bucket/ &&
      /session\/message/ { sub(/.*le="/, ""); sub(/"}/, ""); printf "%s=%s ", $1, $2 }')"
    sleep 1
  done) >"$INGEST_TRACE/metrics-$1.txt" 2>/dev/null &
  TRACE_PIDS=($!)
  "${PSQL[@]}" -d "${DB[$side]}" -At -F ' ' >"$INGEST_TRACE/waits-$1.txt" 2>/dev/null <<'SQL' &
SELECT to_char(clock_timestamp(), 'HH24:MI:SS.MS'), count(*) FILTER (WHERE state = 'active'),
  string_agg(coalesce(wait_event_type || ':' || wait_event, 'cpu') || '/' || left(application_name, 12) || '/'
    || left(regexp_replace(query, '\s+', ' ', 'g'), 24), ' | ')
  FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()
\watch 0.1
SQL
  TRACE_PIDS+=($!)
}
trace_stop() {
  for p in "${TRACE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  TRACE_PIDS=()
}

# wrk_post CONNS -> "rps p50_ms p99_ms requests non2xx" (socket errors, if any, to stderr)
# CPU per request of ours, PostgreSQL and Redis to stderr (the run's CPU time over its requests)
wrk_post() {
  local out c0 c1
  trace_start "$side-c$1-r$round"
  [ -z "${INGEST_TRACE:-}" ] || redis-cli -p "$rport" config resetstat >/dev/null
  c0="$(cpu_us "${PIDOF[$side]}") $(cpu_us "$(pg_pid)") $(cpu_us "$REDIS_PID")"
  out=$(wrk -t2 -c"$1" -d"$SECS"s --latency -s "$B/chat_post.lua" "http://127.0.0.1:${PORT[$side]}/v1/session/message")
  c1="$(cpu_us "${PIDOF[$side]}") $(cpu_us "$(pg_pid)") $(cpu_us "$REDIS_PID")"
  trace_stop
  [ -z "${INGEST_TRACE:-}" ] || redis-cli -p "$rport" info commandstats >"$INGEST_TRACE/redis-$side-c$1-r$round.txt"
  echo "$c0 $c1 $(echo "$out" | awk '/requests in/ {print $1}')" | awk '{ printf "  CPU per request -c'"$1"': ours %.0f us, PostgreSQL %.0f us, Redis %.0f us\n", ($4 - $1) / $7, ($5 - $2) / $7, ($6 - $3) / $7 }' >&2
  echo "$out" >"$TMP/wrk-c$1.log"
  drain_outbox >&2
  echo "$out" | awk '/Socket errors/ {print "  !! wrk -c'"$1"': " $0}' >&2
  echo "$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')" \
    "$(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')")" "$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")" \
    "$(echo "$out" | awk '/requests in/ {print $1}')" "$(echo "$out" | awk '/Non-2xx/ {print $NF}' | grep . || echo 0)"
}
# drain_outbox: waits (at most 60 s) until this build's relay has published every task of the run,
# so that no run is charged the PostgreSQL CPU of a relay still catching up on an earlier one
# (an old build's relay left 5,000-11,000 rows behind at -c64 and claimed them during the other
# build's run); prints how long it took when it was not at once
drain_outbox() {
  local t0=$SECONDS left
  for _ in $(seq 1 600); do
    left=$("${PSQL[@]}" -d "${DB[$side]}" -Atc 'SELECT count(*) FROM tasks')
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  [ "$left" = 0 ] && [ $((SECONDS - t0)) -lt 1 ] || echo "  outbox: $left tasks left after $((SECONDS - t0)) s of waiting for the relay"
}
# pgbench_print N: runs pgbench and appends its tx/s to PG_TPS
PG_TPS=()
pgbench_print() {
  local tps p50 p99 fail n cpu
  read -r tps p50 p99 fail n cpu < <(pgbench_run "$1")
  PG_TPS+=("$tps")
  printf '  pgbench:  %6s tx/s  p50 %7.3f ms  p99 %7.3f ms  (%s transactions, %s failed; PostgreSQL CPU %s us/tx)\n' \
    "$tps" "$p50" "$p99" "$n" "$fail" "$cpu"
}
declare -A PORT PIDOF DB EV0 SBIN
DB[A]=soma DB[B]=soma_b SBIN[A]=$BIN SBIN[B]=$BIN_B
start_soma() { # SIDE
  PORT[$1]=$(free_port)
  "${SBIN[$1]}" run --role gateway --set http.listen=127.0.0.1:"${PORT[$1]}" --set data.dir="$TMP/soma-$1" \
    --set store.url="postgresql://soma@127.0.0.1:$pport/${DB[$1]}" --set queue.driver=redis \
    --set redis.url="redis://127.0.0.1:$rport/$([ "$1" = A ] && echo 0 || echo 1)" --set bus.driver=redis \
    --set log.access=false --set log.level=warn --set shutdown.grace_s=2 2>"$TMP/soma-$1.log" &
  PIDOF[$1]=$!
  PIDS+=("${PIDOF[$1]}")
  wait_http "http://127.0.0.1:${PORT[$1]}/v1/health"
  EV0[$1]=$("${PSQL[@]}" -d "${DB[$1]}" -Atc 'SELECT count(*) FROM events')
  local sql_var="INGEST_SQL_$1"
  [ -z "${!sql_var:-}" ] || "${PSQL[@]}" -d "${DB[$1]}" -c "${!sql_var}"
}

OURS=() # per wrk run: "SIDE rps20 p99_20 non2xx20 rps64 p99_64 non2xx64"
declare -A requests=([A]=0 [B]=0)
for round in $(seq 1 "$ROUNDS"); do
  order=("${SIDES[@]}")
  [ "${#SIDES[@]}" = 1 ] || [ $((round % 2)) = 1 ] || order=(B A) # each build goes first every other round
  for side in "${order[@]}"; do
    echo
    echo "== round $round of $ROUNDS${BIN_B:+, build $side}, load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "  1. pgbench: one INSERT of an event-sized row per transaction, -c 20 -j 2, ${SECS} s"
    pgbench_print "$round$side"
    echo "  2. ours${BIN_B:+ ($side)}: wrk -t2 -c${CONNS[*]}, POST /v1/session/message, 600 sessions, run --role gateway (no worker)"
    [ -n "${PIDOF[$side]:-}" ] || start_soma "$side" # the server stays up (idle) through the later runs
    line="$side"
    for c in 20 64; do
      if [[ " ${CONNS[*]} " == *" $c "* ]]; then
        read -r rps p50 p99 total non2xx < <(wrk_post "$c")
        printf '  ours -c%s: %6s req/s p50 %7.3f ms  p99 %7.3f ms  (%s requests, non-2xx %s)\n' \
          "$c" "$rps" "$p50" "$p99" "$total" "$non2xx"
        requests[$side]=$((requests[$side] + total))
      else
        rps=0 p99=0 non2xx=0
      fi
      line="$line $rps $p99 $non2xx"
    done
    OURS+=("$line")
  done
done
sleep 0.5 # the last responses' commits are done; count what was stored
for side in "${SIDES[@]}"; do
  db=${DB[$side]}
  ev1=$("${PSQL[@]}" -d "$db" -Atc 'SELECT count(*) FROM events')
  queued=$(redis-cli -p "$rport" -n "$([ "$side" = A ] && echo 0 || echo 1)" eval "local t = {} for _, k in ipairs(redis.call('keys', '*')) do
    if redis.call('type', k).ok == 'list' then t[#t + 1] = k .. '=' .. redis.call('llen', k) end end
    return table.concat(t, ' ')" 0)
  echo "  stored${BIN_B:+ ($side)}: $((ev1 - EV0[$side])) event rows in PostgreSQL for ${requests[$side]} requests; Redis lists (relayed tasks): ${queued:-none};" \
    "rows inserted per table (pg_stat, lags a little): $("${PSQL[@]}" -d "$db" -Atc "SELECT string_agg(relname || '=' || n_tup_ins, ' ' ORDER BY relname)
      FROM pg_stat_user_tables WHERE n_tup_ins > 0"); tasks left in the table (outbox not yet relayed):" \
    "$("${PSQL[@]}" -d "$db" -Atc 'SELECT count(*) FROM tasks')"
  kill "${PIDOF[$side]}" 2>/dev/null || true
  wait "${PIDOF[$side]}" 2>/dev/null || true
  grep -E '"level":"(error|fatal)"|ERROR|FATAL' "$TMP/soma-$side.log" | sort | uniq -c | sort -rn | head -5 | sed 's/^/  !! log: /' || true
done

if [ -n "${INGEST_TRACE:-}" ]; then # each database's statements by total time (statements.txt)
  for side in "${SIDES[@]}"; do
    "${PSQL[@]}" -d "${DB[$side]}" -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' -c "SELECT
      round(total_exec_time) AS total_ms, calls, rows, round((total_exec_time / calls)::numeric, 3) AS mean_ms,
      shared_blks_hit + shared_blks_read AS blks, wal_records, wal_bytes, left(regexp_replace(query, '\s+', ' ', 'g'), 140) AS query
      FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '${DB[$side]}'
      ORDER BY total_exec_time DESC LIMIT 15" >>"$INGEST_TRACE/statements-$side.txt" 2>&1 || true
  done
fi
echo
echo "== 3. pgbench again (the ceiling after)"
pgbench_print end

echo
echo "== summary (each round against the mean of the pgbench runs before and after it)"
/usr/bin/python3 "$B/ingest_pg_summary.py" "${PG_TPS[*]}" "${OURS[@]}"
echo "  load after: $(uptime | sed 's/.*load average/load average/')"
[ -z "${INGEST_TRACE:-}" ] || { cp "$TMP/pg/postgres.log" "$INGEST_TRACE/"; echo "  trace: $INGEST_TRACE"; }
