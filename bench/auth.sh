#!/usr/bin/env bash
# bench/auth.sh - what authentication and policy cost per request: the same route,
# GET /v1/runtime-config, on two servers in the same run: one in the loopback single-user mode
# (no keys: no credential check; the policy still asks) and one where an API key is required
# and sent (key verification, identity, policy). Then a JWT (HS256) on the second server.
# Two measures: one connection, one request at a time (the p50 difference is the added latency
# per request), and 64 connections (CPU per request = 2 cores / requests/s); /v1/health (public:
# no credential, no policy) on the same server for reference. runtime-config is not policy-
# checked, so the cost of one builtin policy decision is timed apart by build/policy_bench
# (the median of 21 rounds of 200,000 decisions) and added.
# Usage: bench/auth.sh [seconds per measurement, default 2]   (release build at build/somaagent; SOMA_BIN overrides)
source "$(dirname "$0")/lib.sh"
SECS=${1:-2}
SECRET=bench-jwt-secret-0123456789abcdef0123456789

start() { # NAME PORT [--set ...]
  local name=$1 port=$2
  shift 2
  "$BIN" run --set http.listen=127.0.0.1:"$port" --set data.dir="$TMP/$name" --set log.access=false \
    --set log.level=warn "$@" 2>"$TMP/$name.log" &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/v1/health"
}

open_port=$(free_port)
start open "$open_port"
key_port=$(free_port)
mkdir -p "$TMP/keyed"
token=$("$BIN" keys create --tenant bench --set data.dir="$TMP/keyed" 2>/dev/null)
start keyed "$key_port" --set auth.jwt_secret="$SECRET"
jwt=$(/usr/bin/python3 - "$SECRET" <<'PY'
import base64, hashlib, hmac, json, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": "bench", "tenant": "bench", "exp": int(time.time()) + 3600}).encode())
sig = b64(hmac.new(sys.argv[1].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
PY
)
URL_OPEN="http://127.0.0.1:$open_port/v1/runtime-config"
URL_KEY="http://127.0.0.1:$key_port/v1/runtime-config"
for h in "Authorization: Bearer $token" "Authorization: Bearer $jwt"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "$h" "$URL_KEY")
  [ "$code" = 200 ] || { echo "bench/auth.sh: the credential was refused ($code)"; exit 1; }
done

one() { # URL [HEADER] -> "p50_ms"
  local out
  if [ -n "${2:-}" ]; then out=$(wrk -t1 -c1 -d"$SECS"s --latency -H "$2" "$1"); else out=$(wrk -t1 -c1 -d"$SECS"s --latency "$1"); fi
  to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')"
}
many() { # URL [HEADER] -> "rps"
  local out
  if [ -n "${2:-}" ]; then out=$(wrk -t2 -c64 -d"$SECS"s -H "$2" "$1"); else out=$(wrk -t2 -c64 -d"$SECS"s "$1"); fi
  echo "$out" | awk '/Requests\/sec/ {print $2}'
}
wrk -t2 -c64 -d2s "$URL_OPEN" >/dev/null
wrk -t2 -c64 -d2s -H "Authorization: Bearer $token" "$URL_KEY" >/dev/null

# five interleaved rounds (the machine is shared: a slow moment hits every variant alike); the
# median round of each variant is reported
median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
declare -A P R
for round in 1 2 3 4 5; do
  P[h]+="$(one "http://127.0.0.1:$key_port/v1/health") "; R[h]+="$(many "http://127.0.0.1:$key_port/v1/health") "
  P[o]+="$(one "$URL_OPEN") "; R[o]+="$(many "$URL_OPEN") "
  P[k]+="$(one "$URL_KEY" "Authorization: Bearer $token") "; R[k]+="$(many "$URL_KEY" "Authorization: Bearer $token") "
  P[j]+="$(one "$URL_KEY" "Authorization: Bearer $jwt") "; R[j]+="$(many "$URL_KEY" "Authorization: Bearer $jwt") "
done
for v in h o k j; do
  declare "${v}1=$(echo "${P[$v]}" | median)" "${v}2=$(echo "${R[$v]}" | median)"
done
printf '%-40s %12s %14s %12s\n' "GET /v1/runtime-config" "p50 ms (c1)" "requests/s c64" "us CPU/req"
for row in "GET /v1/health (public, for reference):$h1:$h2" "no credential (loopback default):$o1:$o2" "API key:$k1:$k2" "JWT HS256:$j1:$j2"; do
  IFS=: read -r name p rps <<<"$row"
  printf '%-40s %12s %14s %12s\n' "$name" "$p" "$rps" "$(awk -v r="$rps" 'BEGIN { printf "%.1f", 2e6 / r }')"
done
ninja -C "$(dirname "$BIN")" policy_bench >/dev/null 2>&1 || true
policy_us=$("$(dirname "$BIN")/policy_bench" 2>/dev/null || echo 0)
awk -v o="$o1" -v k="$k1" -v j="$j1" -v ro="$o2" -v rk="$k2" -v rj="$j2" -v p="$policy_us" 'BEGIN {
  printf "one builtin policy decision: %.3f us (median of 21 x 200,000)\n", p
  printf "added by auth + policy, median per request: API key %.1f us, JWT %.1f us (target <= 20 us)\n",
    (k - o) * 1000 + p, (j - o) * 1000 + p
  printf "added CPU per request at 64 connections: API key %.1f us, JWT %.1f us\n", 2e6 / rk - 2e6 / ro, 2e6 / rj - 2e6 / ro }'
