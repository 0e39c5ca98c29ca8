#!/usr/bin/env bash
# bench/chat.sh - chat end to end: ingest, end-to-end rate, stream latency, LLM proxy overhead
# and many SSE subscribers. Every comparison is measured in the same run, back to back or
# interleaved (the machine is shared and noisy), and printed with its ratio or difference.
#   1. ingest      wrk (2 threads, 64 connections) POST /v1/session/message to `run` (role all)
#                  whose LLM is nginx returning a fixed SSE body; then finals committed per
#                  second (soma_tasks_total, from /metrics) and how long the backlog takes to drain
#   2. stream      (a) a chat reply: time from POST /v1/session/message to the first assistant.delta
#                  on the session's open stream (GET /v1/sessions/{id}/events?stream=true) versus the
#                  fake LLM's first content delta called directly (8 chunks 5 ms apart), alternating,
#                  once with the fake closing every stream (a new upstream connection per reply)
#                  and once with the fake keeping connections (steady state, as OpenAI/Groq do);
#                  (b) time to first content delta and inter-delta gaps of a streamed
#                  /v1/chat/completions, directly against the python fake LLM (20 chunks, 20 ms
#                  apart) and through somaagent, alternating
#   3. proxy       total time of a streamed /v1/chat/completions against the nginx fake: directly,
#                  through somaagent, through nginx proxy_pass (proxy_buffering off)
#   4. streams     1000/5000/10000 SSE subscribers of /v1/sessions/{id}/events over 100 sessions
#                  (role gateway), 50 messages/s posted: delivery latency and RSS
# Usage: bench/chat.sh [seconds]   (wrk and posting duration, default 10; release build expected at
# build/somaagent, SOMA_BIN overrides). Takes about 7-8 minutes at the default (part 2a: ~2.5 min).
# CHAT_PARTS picks the parts to run, e.g. CHAT_PARTS="2 3" (default: all four); CHAT_SESSION_N sets
# the replies per side of part 2a (default 400), CHAT_STREAM_N the requests per side of 2b (default 50),
# CHAT_STREAMS_NS the stream counts of part 4 (default "1000 5000 10000"); CHAT_SESSION_FAKES="keepalive"
# runs 2a with the keep-alive fake only, CHAT_STREAM_N=0 skips 2b; 2a runs once with the fake's first content
# delta at once and once CHAT_FIRST_DELAY_MS (default 50) after the response's head, as a provider's time to
# first token (the direct side waits for it too: the difference is what somaagent adds); CHAT_PROXY_N the
# rounds of part 3 (default 1000: a p99 of 1000 samples moves by +-50 % between runs; use 5000+ to compare builds);
# CHAT_NGINX_KEEPALIVE=1 gives part 3's nginx an upstream keepalive pool (by default it opens a connection to
# the fake per request, where somaagent reuses its own). FAKE_WORDS=N gives the nginx fake's reply N content
# chunks (default 2: five events and [DONE]; a real reply has hundreds).
source "$(dirname "$0")/lib.sh"
SECS=${1:-10}
PARTS=${CHAT_PARTS:-1 2 3 4}
STREAM_N=${CHAT_STREAM_N:-50}
SESSION_N=${CHAT_SESSION_N:-400}
part() { [[ " $PARTS " == *" $1 "* ]]; }
PY=/usr/bin/python3
B=$ROOT/bench
T_START=$(date +%s)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

echo "bench/chat.sh: $("$BIN" version 2>/dev/null | head -1), $(nproc) cores, open-files limit $(ulimit -n)," \
  "wrk/posting ${SECS}s, $(date -u +%FT%TZ)"

# ---- servers -------------------------------------------------------------------------------------
SOMA_PID=
start_soma() { # NAME PORT [--role R] [--set k=v ...] -> SOMA_PID
  local name=$1 port=$2
  shift 2
  "$BIN" run "$@" --set http.listen=127.0.0.1:"$port" --set data.dir="$TMP/$name" \
    --set log.access=false --set log.level=warn --set shutdown.grace_s=2 2>"$TMP/$name.log" &
  SOMA_PID=$!
  PIDS+=("$SOMA_PID")
  wait_http "http://127.0.0.1:$port/v1/health" || {
    echo "  !! somaagent ($name) did not answer /v1/health; last log lines:" >&2
    tail -5 "$TMP/$name.log" | sed 's/^/     /' >&2
    return 1
  }
}
# Stops somaagent PID (NAME for messages); says so when it had died or did not stop cleanly.
stop_soma() { # PID NAME
  local pid=$1 name=$2 rc=0 t0
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" || rc=$?
    echo "  !! somaagent ($name) had exited by itself with status $rc; last log lines:"
    tail -5 "$TMP/$name.log" | sed 's/^/     /'
    return 0
  fi
  t0=$(date +%s.%N)
  kill "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "  !! somaagent ($name) still running 15 s after SIGTERM; killing it"
    kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" || rc=$?
  if [ "$rc" != 0 ]; then
    echo "  !! somaagent ($name) exited with status $rc after SIGTERM" \
      "($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s); last log lines:"
    tail -5 "$TMP/$name.log" | sed 's/^/     /'
  fi
  grep -E '"level":"(error|fatal)"|ERROR|FATAL' "$TMP/$name.log" 2>/dev/null | sort | uniq -c | sort -rn | head -5 |
    sed "s/^/  !! log ($name): /" || true
}

start_llm_fake # -> fake_port (lib.sh)
LLM_FAST=(--set llm.provider=custom --set llm.base_url=http://127.0.0.1:$fake_port/v1 --set llm.api_key=x)

if part 1; then # (part 1 is left as it was: only wrapped)
# ---- 1. ingest and end-to-end rate ---------------------------------------------------------------
echo
echo "== 1. ingest: POST /v1/session/message (role all, LLM = nginx fixed SSE body), then finals/s"
port=$(free_port)
start_soma ingest "$port" "${LLM_FAST[@]}"
"$PY" "$B/chat_ingest.py" --port "$port" --lua "$B/chat_post.lua" --seconds "$SECS" --drain-timeout 60 \
  --out "$TMP/ingest.json" || echo "  ingest part FAILED"
stop_soma "$SOMA_PID" ingest

fi
# ---- 2. stream latency ---------------------------------------------------------------------------
if part 2; then
for ka in ${CHAT_SESSION_FAKES:-close keepalive}; do
for fd in 0 ${CHAT_FIRST_DELAY_MS:-50}; do # the fake's time to first token: none, and a realistic one
  [ "$fd" = 0 ] && tag=$ka || tag=$ka-first$fd
  echo
  echo "== 2a. chat reply, first delta: POST /v1/session/message -> first assistant.delta on the open session"
  echo "      stream, versus the fake LLM's first content delta called directly (8 chunks 5 ms apart,"
  echo "      first content delta ${fd} ms after the response's head);"
  echo "      fake: $([ $ka = close ] && echo "closes every stream (somaagent opens a new upstream connection per reply)" \
    || echo "keeps connections (chunked replies): steady state")"
  fport=$(free_port)
  "$PY" "$ROOT/tests/fakes/llm/server.py" --port "$fport" --chunks 8 --delay-ms 5 --first-delay-ms "$fd" \
    $([ $ka = keepalive ] && echo --keep-alive) >"$TMP/fake-$tag.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$fport/v1/models"
  port=$(free_port)
  start_soma "session-$tag" "$port" --set llm.provider=custom --set llm.base_url=http://127.0.0.1:$fport/v1 \
    --set llm.api_key=x
  "$PY" "$B/chat_sse.py" session --direct 127.0.0.1:"$fport" --through 127.0.0.1:"$port" -n "$SESSION_N" \
    $([ $ka = keepalive ] && echo --fake-keepalive) --out "$TMP/session-$tag.json" || echo "  chat reply part FAILED"
  stop_soma "$SOMA_PID" "session-$tag"
done
done
fi
if part 2 && [ "$STREAM_N" != 0 ]; then
echo
echo "== 2b. stream latency: POST /v1/chat/completions stream=true, fake LLM 20 chunks 20 ms apart,"
echo "      directly vs through somaagent, $STREAM_N requests each, alternating (through minus direct per quantile)"
echo "      (the fake ends each stream by closing the connection, so a request through somaagent also opens a"
echo "      new connection to it, which a direct one does not: a client connection is made before timing starts)"
slow_port=$(free_port)
"$PY" "$B/chat_fake_llm.py" --port "$slow_port" --chunks 20 --delay-ms 20 >"$TMP/fake-slow.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$slow_port/v1/models"
port=$(free_port)
start_soma latency "$port" --set llm.provider=custom --set llm.base_url=http://127.0.0.1:$slow_port/v1 \
  --set llm.api_key=x
"$PY" "$B/chat_sse.py" latency --direct 127.0.0.1:"$slow_port" --through 127.0.0.1:"$port" -n "$STREAM_N" \
  --out "$TMP/latency.json" || echo "  stream latency part FAILED"
stop_soma "$SOMA_PID" latency
fi

# ---- 3. proxy overhead versus nginx --------------------------------------------------------------
if part 3; then
echo
echo "== 3. proxy: streamed POST /v1/chat/completions against the nginx fake: directly, through"
echo "      somaagent, through nginx proxy_pass (proxy_buffering off; proxy_http_version 1.1)"
proxy_port=$(free_port)
if [ "${CHAT_NGINX_KEEPALIVE:-0}" = 1 ]; then
  # nginx keeping its upstream connections, as somaagent's libcurl does
  echo "      (nginx with upstream keepalive: CHAT_NGINX_KEEPALIVE=1)"
  nginx_conf nginx-proxy "$proxy_port" \
    "proxy_pass http://fake; proxy_buffering off; proxy_http_version 1.1; proxy_set_header Connection \"\";" \
    "upstream fake { server 127.0.0.1:$fake_port; keepalive 16; }"
else
  nginx_conf nginx-proxy "$proxy_port" \
    "proxy_pass http://127.0.0.1:$fake_port; proxy_buffering off; proxy_http_version 1.1;"
fi
wait_http "http://127.0.0.1:$proxy_port/v1/chat/completions"
port=$(free_port)
start_soma proxy "$port" "${LLM_FAST[@]}"
"$PY" "$B/chat_sse.py" proxy --direct 127.0.0.1:"$fake_port" --soma 127.0.0.1:"$port" \
  --nginx 127.0.0.1:"$proxy_port" -n "${CHAT_PROXY_N:-1000}" --out "$TMP/proxy.json" || echo "  proxy part FAILED"
stop_soma "$SOMA_PID" proxy
fi

# ---- 4. many SSE subscribers ---------------------------------------------------------------------
if part 4; then
echo
echo "== 4. streams: N SSE subscribers of /v1/sessions/{id}/events over 100 sessions (role gateway, a fresh"
echo "      process per N), 50 messages/s for ${SECS} s; delivery latency of the user events in ms"
echo "      (arrival - created_at, arrival = the kernel's receive timestamp on the client socket, so the python"
echo "      client's own queueing is not counted; POST = arrival - when the client sent the message); RSS in MB"
printf '  %6s %7s %7s %8s %8s %8s %9s %9s %19s %8s %8s %8s\n' N open "open s" p50 p99 max "POST p50" \
  "POST p99" "delivered/expected" "RSS idle" "RSS open" "RSS end"
for n in ${CHAT_STREAMS_NS:-1000 5000 10000}; do
  port=$(free_port)
  start_soma "streams-$n" "$port" --role gateway --set http.max_connections=65536
  (cd "$B" && "$PY" chat_streams.py --port "$port" --pid "$SOMA_PID" -n "$n" --sessions 100 --rate 50 \
    --seconds "$SECS" --out "$TMP/streams-$n.json") || echo "  streams N=$n FAILED"
  stop_soma "$SOMA_PID" "streams-$n"
done
fi

# ---- summary -------------------------------------------------------------------------------------
echo
echo "== summary (all figures from this run; $(($(date +%s) - T_START)) s)"
"$PY" "$B/chat_summary.py" "$TMP" "$PARTS" "${CHAT_STREAMS_NS:-1000 5000 10000}"
