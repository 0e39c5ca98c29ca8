#!/usr/bin/env bash
# bench/proxy_cost.sh - server instructions per proxied LLM call: a streamed POST
# /v1/chat/completions relayed to the nginx fake LLM (a fixed SSE body), counted by valgrind's
# callgrind, so builds compare whatever the machine's load (the proxy part of bench/chat.sh
# measures time, which the load moves).
#   bench/proxy_cost.sh [requests] [binary...]
# Defaults: 2000 requests, $SOMA_BIN or build/somaagent. Each binary runs `--role gateway` under
# callgrind, gets WARM (default 100) requests, has its counters zeroed, gets the requests over
# CLIENTS (default 4) keep-alive connections, and dumps. Prints instructions per request in all
# and per thread, and the TOP (default 25) functions by their own instructions. The files stay in
# $OUT (default /tmp/proxy-cost-<time>) for callgrind_annotate. USAGE=1 asks for the usage chunk
# (stream_options.include_usage, as bench/chat.sh's proxy part does: chunks pass unread).
source "$(dirname "$0")/lib.sh"
N=${1:-2000}
shift 1 2>/dev/null || shift $#
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$BIN")
PY=/usr/bin/python3
OUT=${OUT:-/tmp/proxy-cost-$(date -u +%H%M%S)}
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
  echo "  top functions, own instructions per request:"
  # Own (self) cost read from the callgrind file itself: callgrind_annotate 3.19 reports the
  # frames still on a thread's stack at a callgrind_control dump (clone, start_thread,
  # thread_main, event_base_dispatch, main) with their inclusive cost as if it were their own.
  # Cost lines right after a calls= line are a call's inclusive cost; every other is the own.
  "$PY" - "$f" "$N" "$all" "${TOP:-25}" <<'PY'
import collections, re, sys
path, n, total, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
own, names, fn, after_call = collections.Counter(), {}, None, False
for line in open(path, errors="replace"):
    if line.startswith(("fn=", "cfn=")):
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
        if m and m.group(2):
            names[m.group(1)] = m.group(2)
        if line.startswith("fn=") and m:
            fn = names.get(m.group(1), m.group(1))
        continue
    if line.startswith("calls="):
        after_call = True
        continue
    if line[:1].isdigit() or line[:1] in "+-*":
        if after_call:
            after_call = False
            continue
        parts = line.split()
        if len(parts) >= 2 and fn:
            own[fn] += int(parts[1])
for name, c in own.most_common(top):
    print(f"    {c / n:9.0f} {100 * c / total:4.1f} % {name}")
PY
  grep -E '"level":"(error|fatal)"' "$dir/server.log" | head -3 | sed 's/^/  !! log: /' || true
done
echo "callgrind files: $OUT"
