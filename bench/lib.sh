# Shared helpers for the bench scripts (sourced). Servers go on loopback, on free ports, in temp
# dirs, and are stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${SOMA_BIN:-$ROOT/build/somaagent}
unset SOMA_BIN # BIN has it; somaagent refuses SOMA_* variables that name no setting
TMP=$(mktemp -d /tmp/soma-bench.XXXXXX)
chmod 755 "$TMP" # nginx workers run as an unprivileged user
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # url
  for _ in $(seq 1 500); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.01
  done
  echo "bench: $1 did not come up" >&2; cat "$TMP"/nginx/logs/error.log "$TMP"/soma.log 2>/dev/null | tail -5 >&2
  return 1
}

# wrk_run URL SECONDS -> prints "rps p50_ms p99_ms"
wrk_run() {
  local out
  out=$(wrk -t2 -c64 -d"$2"s --latency "$1")
  echo "$out" >> "$TMP/wrk.log"
  local rps p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}

to_ms() { # wrk latency like 512.00us / 1.20ms / 1.01s -> ms
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "%s", v }'
}

nginx_conf() { # NAME PORT LOCATION-BODY [HTTP-BLOCK-EXTRA, e.g. an upstream block]
  mkdir -p "$TMP/$1/logs"
  cat > "$TMP/$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $TMP/$1/nginx.pid;
error_log $TMP/$1/logs/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $TMP/$1/body;
  proxy_temp_path $TMP/$1/proxy;
  fastcgi_temp_path $TMP/$1/fastcgi;
  uwsgi_temp_path $TMP/$1/uwsgi;
  scgi_temp_path $TMP/$1/scgi;
  ${4:-}
  server {
    listen 127.0.0.1:$2;
    location / { $3 }
  }
}
CONF
  nginx -c "$TMP/$1/nginx.conf" -p "$TMP/$1" &
  PIDS+=($!)
}

# The fast fake LLM: nginx answers every request with one fixed streamed completion. Sets fake_port.
# FAKE_WORDS (default 2) is the number of content chunks ("Hello ", "world." then "word N ").
start_llm_fake() {
  C='"id":"c1","object":"chat.completion.chunk","created":1,"model":"bench"'
  SSE="data: {$C,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
  SSE+="data: {$C,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \"},\"finish_reason\":null}]}\n\n"
  SSE+="data: {$C,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"world.\"},\"finish_reason\":null}]}\n\n"
  # nginx takes at most 4 KiB per parameter: the words go in variables of 20 chunks each
  local sets="" parts="" group="" w
  for ((w = 3; w <= ${FAKE_WORDS:-2}; w++)); do
    group+="data: {$C,\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word $w\"},\"finish_reason\":null}]}\n\n"
    if (((w - 2) % 20 == 0 || w == ${FAKE_WORDS:-2})); then
      sets+="set \$w$w '$group'; "
      parts+="\$w$w"
      group=""
    fi
  done
  local END="data: {$C,\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
  END+="data: {$C,\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n"
  END+="data: [DONE]\n\n"
  fake_port=$(free_port)
  if [ -z "$parts" ]; then
    nginx_conf nginx-fake "$fake_port" "default_type text/event-stream; return 200 '$SSE$END';"
  else
    nginx_conf nginx-fake "$fake_port" "default_type text/event-stream; set \$head '$SSE'; set \$end '$END'; $sets return 200 \"\$head$parts\$end\";"
  fi
  wait_http "http://127.0.0.1:$fake_port/v1/chat/completions"
}

# ---- PostgreSQL for the ingest benches (bench/ingest_pg.sh, bench/ingest_cost.sh) ----------------
# postgres runs as the postgres user in $PG_DATA; pg_use installs the exit trap that stops it (fast
# shutdown) before cleanup removes TMP
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_DATA=$TMP/pg/data
stop_pg() {
  local pid
  pid=$(head -1 "$PG_DATA/postmaster.pid" 2>/dev/null) || return 0
  [ -n "$pid" ] || return 0
  kill -INT "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
pg_use() { trap 'stop_pg; cleanup' EXIT; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# cg_top_functions FILE N UNIT: the TOP (default 25) functions of a callgrind dump by their own
# instructions per UNIT (N of them), the threads' base frames left out (a dump taken while they run
# lists their whole cost as their own)
cg_top_functions() {
  local all
  all=$(awk '/^(summary|totals):/ { print $2; exit }' "$1")
  echo "  top functions, own instructions per $3:"
  callgrind_annotate --threshold=100 "$1" 2>/dev/null |
    awk '/^ *[0-9,]+ \([ 0-9.]+%\)  / && !/PROGRAM TOTALS/ { c=$1; gsub(",", "", c); f=$0
      sub(/^ *[0-9,]+ \([ 0-9.]+%\)  /, "", f); sub(/ \[.*$/, "", f); sub(/^.*:/, "", f)
      if (f !~ /^(clone|start_thread|main|__libc_start_main.*|\(below|event_base_dispatch|event_base_loop|[a-z_]*_main)$/) print c, f }' |
    awk -v top="${TOP:-25}" 'NR <= top' | awk -v n="$2" -v all="$all" '{ c=$1; $1=""; printf "    %9.0f %4.1f %% %s\n", c / n, 100 * c / all, $0 }'
}
