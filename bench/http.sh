#!/usr/bin/env bash
# bench/http.sh - GET /v1/health on somaagent versus nginx serving a small static file, same run.
# wrk: 2 threads, 64 connections. Prints requests/s, p50, p99 for both and the ratio.
# Usage: bench/http.sh [seconds]   (release build expected at build/somaagent; SOMA_BIN overrides)
source "$(dirname "$0")/lib.sh"
SECS=${1:-10}

soma_port=$(free_port)
"$BIN" run --set http.listen=127.0.0.1:$soma_port --set data.dir="$TMP/data" \
  --set log.access=false --set log.level=warn 2>"$TMP/soma.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$soma_port/v1/health"

nginx_port=$(free_port)
mkdir -p "$TMP/nginx/www" "$TMP/nginx/logs"
printf '{"status":"ok"}\n' > "$TMP/nginx/www/health.json"
cat > "$TMP/nginx/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  server {
    listen 127.0.0.1:$nginx_port;
    root $TMP/nginx/www;
    location / { default_type application/json; }
  }
}
CONF
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" &
PIDS+=($!)
wait_http "http://127.0.0.1:$nginx_port/health.json"

# warm up both, then measure back to back
wrk -t2 -c64 -d2s "http://127.0.0.1:$soma_port/v1/health" >/dev/null
wrk -t2 -c64 -d2s "http://127.0.0.1:$nginx_port/health.json" >/dev/null
read -r s_rps s_p50 s_p99 < <(wrk_run "http://127.0.0.1:$soma_port/v1/health" "$SECS")
read -r n_rps n_p50 n_p99 < <(wrk_run "http://127.0.0.1:$nginx_port/health.json" "$SECS")
ratio=$(awk -v a="$s_rps" -v b="$n_rps" 'BEGIN { printf "%.2f", a / b }')

printf '%-28s %12s %10s %10s\n' "server" "requests/s" "p50 ms" "p99 ms"
printf '%-28s %12s %10s %10s\n' "somaagent GET /v1/health" "$s_rps" "$s_p50" "$s_p99"
printf '%-28s %12s %10s %10s\n' "nginx static file" "$n_rps" "$n_p50" "$n_p99"
echo "ratio somaagent/nginx: $ratio (target >= 0.80; p99 target <= 2 ms)"
