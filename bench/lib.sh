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
