#!/usr/bin/env bash
# bench/proxy_cost.sh - server instructions per proxied LLM call: a streamed POST
# /v1/chat/completions relayed to the nginx fake LLM (a fixed SSE body), counted by valgrind's
# callgrind, so builds compare whatever the machine's load (the proxy part of bench/chat.sh
# measures time, which the load moves).
#   bench/proxy_cost.sh [requests] [binary...]
# Defaults: 2000 requests, $SOMA_BIN or build/somaagent. Each binary runs `--role gateway` under
# callgrind, gets WARM (default 100) requests, has its counters zeroed, gets the requests over
# CLIENTS (default 4) keep-alive connections, and dumps. Prints instructions per request in all
# and per thread, the STAGES' inclusive instructions, and the TOP (default 25) functions by their
# own instructions. The files stay in
# $OUT (default /tmp/proxy-cost-<time>) for callgrind_annotate. USAGE=1 asks for the usage chunk
# (stream_options.include_usage, as bench/chat.sh's proxy part does: chunks pass unread).
source "$(dirname "$0")/lib.sh"
N=${1:-2000}
shift 1 2>/dev/null || shift $#
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$BIN")
PY=/usr/bin/python3
OUT=${OUT:-/tmp/proxy-cost-$(date -u +%H%M%S)}
# Stages: depth=function, the proxied call's path through the io thread (inclusive counts).
STAGES=${STAGES:-"0=http_pipeline_run 1=gw_json_object 1=start_job 2=policy_gate_ask 2=llm_async_start \
0=curl_multi_socket_action 1=sse_parser_feed 2=llm_chunk_scan 2=relay_chunk 1=on_done 0=http_stream_writev"}
mkdir -p "$OUT"

start_llm_fake # -> fake_port (lib.sh)

post() { # PORT COUNT CLIENTS USAGE(0|1): streamed completions over keep-alive connections, all read to the end
  "$PY" - "$@" <<'PY'
import http.client, json, sys, threading
port, count, clients, usage = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
req = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "bench proxy"}]}
if usage:
    req["stream_options"] = {"include_usage": True}
body = json.dumps(req)
bad = []
def client(n):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(n):
        c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        if r.status != 200 or not data.rstrip().endswith(b"data: [DONE]"):
            bad.append(r.status)
ts = [threading.Thread(target=client, args=(count // clients + (i < count % clients),)) for i in range(clients)]
[t.start() for t in ts]
[t.join() for t in ts]
print(f"  posted {count}, failed {len(bad)}")
PY
}

echo "bench/proxy_cost.sh: $N requests, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in "${!BINS[@]}"; do
  b=${BINS[$i]}
  dir="$OUT/b$i"
  rm -rf "$dir" && mkdir -p "$dir"
  port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$b" run --role gateway --set llm.provider=custom --set llm.base_url=http://127.0.0.1:$fake_port/v1 \
    --set llm.api_key=x --set http.listen=127.0.0.1:"$port" --set data.dir="$TMP/d$i" \
    --set log.access=false --set log.level=warn --set shutdown.grace_s=2 2>"$dir/server.log" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 600); do curl -fsS -o /dev/null "http://127.0.0.1:$port/v1/health" 2>/dev/null && break; sleep 0.1; done
  post "$port" "${WARM:-100}" 2 "${USAGE:-0}" >/dev/null
  callgrind_control -z "$pid" >/dev/null
  post "$port" "$N" "${CLIENTS:-4}" "${USAGE:-0}"
  callgrind_control -d "$pid" >/dev/null
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "-- binary $i: $b"
  f=$dir/cg.out.1
  all=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
  echo "  instructions per request: $((all / N)) (all threads, $all in all)"
  callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null |
    awk -v n="$N" -v all="$all" '/ \(.*%\)  .*:(thread_main|writer_main|checkpoint_main|reader_main|relay_main) / {
      c=$1; gsub(",", "", c); f=$0; sub(/ \[.*$/, "", f); sub(/^.*:/, "", f)
      if (!seen[f]++) printf "    thread %-16s %9.0f per request (%4.1f %%)\n", f, c / n, 100 * c / all }'
  echo "  stages, inclusive instructions per request (a stage includes those indented under it):"
  callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null |
    awk -v n="$N" -v all="$all" -v list="$STAGES" 'BEGIN { k = split(list, s, " ")
      for (i = 1; i <= k; i++) { split(s[i], kv, "="); want[kv[2]] = i; name[i] = kv[2]; ind[i] = kv[1] } }
      / \(.*%\)  / { c=$1; gsub(",", "", c); f=$0; sub(/ \[.*$/, "", f); sub(/^.*:/, "", f)
      if (f in want && !(f in got)) got[f] = c }
      END { for (i = 1; i <= k; i++) printf "    %9.0f %4.1f %% %*s%s\n", got[name[i]] / n,
        100 * got[name[i]] / all, 2 * ind[i], "", name[i] }'
  cg_top_functions "$f" "$N" request
  grep -E '"level":"(error|fatal)"' "$dir/server.log" | head -3 | sed 's/^/  !! log: /' || true
done
echo "callgrind files: $OUT"
