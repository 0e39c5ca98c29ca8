#!/usr/bin/env python3
"""A stand-in for an OpenAI-compatible LLM provider (Groq, OpenAI), for tests and benchmarks.

Speaks POST /v1/chat/completions (streamed and not) and GET /v1/models like the real APIs, and
misbehaves on demand. Standard library only.

    server.py --port P [--chunks 12] [--delay-ms 0] [--first-delay-ms 0] [--keep-alive]

--first-delay-ms is the time between the response's head (status, headers, the role chunk) and
the first content delta, as a real provider's time to first token (100-500 ms); a client that
goes away meanwhile is counted as aborted at once.

A streamed reply ends by closing the connection (as some providers do), or with --keep-alive is
sent with chunked transfer encoding and the connection stays open for the next request (as
OpenAI and Groq do: a client that keeps connections pays no connect per reply).

Control (test side):
    POST /_control {"mode": "ok|400|429|500|401|hang|cut|garbage", "times": N, "retry_after": S,
                    "chunks": N, "delay_ms": MS, "first_delay_ms": MS, "text": "...",
                    "keep_alive": true|false, "drop_idle": true|false, "drop_reused": true|false,
                    "tool_content": "null|absent", "answer_before_body": N,
                    "after_done": "hang|close|junk", "odd_events": true|false,
                    "groq_usage": true|false, "reply_bytes": N}
        the next N requests (default 1; -1 = until changed) behave as `mode` ("garbage" answers
        bytes that are not HTTP and closes); chunks/delay/text change the replies from now on;
        keep_alive overrides --keep-alive; drop_idle closes every connection right after its
        answer while that answer says it stays open (as a load balancer that drops idle
        connections silently); drop_reused closes a connection that served a request before as
        soon as the next request on it arrives, unanswered (a server's idle timeout racing the
        client's reuse: the client must send it again on a new connection); answer_before_body
        answers the next N completion requests 401 as soon as their head is read, then reads
        and drops their body on a connection said to stay open (as nginx's key check in front of a
        provider does): a client that stopped sending the body at the answer must not send its next
        request on that connection (it would be read as the rest of the old body). after_done: after
        `data: [DONE]` the stream hangs with its body unfinished ("hang"), closes without the last
        chunk ("close"), or sends one more (junk) event ("junk"); odd_events puts a `data: ping`
        event and a chunk whose value spans several data: lines (content "+") in the stream; mode
        "408" answers 408; "404" answers OpenAI's 404 model_not_found; "error_first" / "error_mid" stream an error event (`data: {"error":
        {"message": ..}}`) as the first event / after the role and first content chunks, then
        [DONE], as vLLM does; "200_error" answers a 200 application/json error body; "200_empty" a 200 event
        stream closed before any event; retry_after may be any string (an HTTP-date); groq_usage streams usage as
        Groq does: in `x_groq.usage` of the last chunk (the one with finish_reason), with no usage
        chunk whatever stream_options asked. reply_bytes makes the reply N bytes of "x" (0: the usual
        text), in `chunks` deltas: a big stream, for a client that stops reading.
    GET  /_stats -> {"requests": n, "last_request": {...}, "modes": [mode of each request],
                     "aborted": streams whose client went away before the end,
                     "traceparents": [the traceparent header of each completion request, or null],
                     "dropped": requests drop_reused left unanswered,
                     "connections": connections accepted since the reset, the test's own included,
                     "without_user": completion requests with no user message among their messages}
    POST /_reset -> back to defaults

Replies stream as SSE `data: <chat.completion.chunk>` events and end with a usage chunk (when
stream_options.include_usage) and `data: [DONE]`. With `tools` in the request (and tool_choice
not "none") the reply may be tool calls instead of text, streamed as tool_calls deltas: scripted
with "tool_script" (see tool_script.py), else a call of the first tool unless tool_choice is "auto".
GET /_stats also gives "recent": the bodies of the last 20 completion requests, oldest first.
The bytes of the stream are written in pieces whose boundaries fall anywhere, inside lines and
inside UTF-8 sequences, as real networks do.
"""
import argparse
import json
import random
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import tool_script

DEFAULT_TEXT = "Hello from the fake model: héllo wörld ✓ 🚀 — streaming works. "

state_lock = threading.RLock()
state = {}


def reset(args=None):
    with state_lock:
        state.clear()
        state.update({
            "queue": [],            # [(mode, retry_after)] for the next requests
            "sticky": None,         # (mode, retry_after) until changed
            "chunks": args.chunks if args else 12,
            "delay_ms": args.delay_ms if args else 0,
            "first_delay_ms": args.first_delay_ms if args else 0,
            "text": DEFAULT_TEXT,
            "requests": 0,
            "last_request": None,
            "modes": [],
            "aborted": 0,
            "traceparents": [],     # the traceparent header of each completion request (None: absent)
            "without_user": 0,      # completion requests whose messages hold no user message
            "keep_alive": args.keep_alive if args else False,
            "drop_idle": False,
            "drop_reused": False,
            "answer_before_body": 0,  # completion requests answered 401 before their body is read
            "tool_content": "null",  # a whole reply's tool-call message: content null, or "absent"
            "tool_script": [],      # scripted replies (tool_script.py)
            "recent": [],           # the last 20 completion request bodies
            "dropped": 0,           # requests dropped unanswered by drop_reused
            "connections": 0,       # connections accepted (control and stats calls included)
        })


def next_mode():
    with state_lock:
        state["requests"] += 1
        if state["queue"]:
            mode = state["queue"].pop(0)
        elif state["sticky"]:
            mode = state["sticky"]
        else:
            mode = ("ok", 0)
        state["modes"].append(mode[0])
        return mode, state["chunks"], (state["delay_ms"], state["first_delay_ms"]), state["text"]


def split_text(text, n):
    n = max(1, min(n, len(text)))
    size = max(1, len(text) // n)
    parts = [text[i:i + size] for i in range(0, len(text), size)]
    return parts


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        self.served = 0  # completion requests answered on this connection
        with state_lock:
            state["connections"] += 1
        # each piece of a stream goes out when written: without this, Nagle holds a piece back
        # until the previous one is acknowledged, and on a kept-alive connection the client's
        # delayed ACK makes that 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_json(self, status, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.drop_if_asked()

    def drop_if_asked(self):
        """drop_idle: close the connection although the answer said it stays open."""
        with state_lock:
            drop = state["drop_idle"]
        if drop and not self.path.startswith("/_"):
            self.wfile.flush()
            self.close_connection = True

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        if self.path == "/_stats":
            with state_lock:
                self.send_json(200, {"requests": state["requests"], "last_request": state["last_request"],
                                     "modes": state["modes"], "aborted": state["aborted"],
                                     "traceparents": state["traceparents"], "dropped": state["dropped"],
                                     "connections": state["connections"], "without_user": state["without_user"],
                                     "recent": state["recent"]})
        elif self.path.rstrip("/").endswith("/models"):
            self.send_json(200, {"object": "list", "data": [
                {"id": "fake-model", "object": "model", "created": 1700000000, "owned_by": "fake"}]})
        else:
            self.send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        if self.path.rstrip("/").endswith("/chat/completions"):
            with state_lock:
                early = state["answer_before_body"] > 0
                state["answer_before_body"] -= early
            if early:  # then the body is read and dropped, as nginx does, and the connection serves on
                self.send_json(401, {"error": {"message": "Invalid API Key", "type": "invalid_request_error",
                                               "code": "invalid_api_key"}})
                time.sleep(0.3)  # the client's socket fills meanwhile: it meets the answer mid-body
                left = int(self.headers.get("Content-Length") or 0)
                while left > 0:
                    got = self.rfile.read1(min(left, 65536))
                    if not got:
                        break
                    left -= len(got)
                return
        body = self.read_body()
        if self.path == "/_control":
            ctl = json.loads(body or b"{}")
            with state_lock:
                for k in ("chunks", "delay_ms", "first_delay_ms", "text", "keep_alive", "drop_idle", "drop_reused",
                          "tool_content", "answer_before_body", "after_done", "odd_events", "groq_usage",
                          "reply_bytes", "tool_script"):
                    if k in ctl:
                        state[k] = ctl[k]
                if "mode" in ctl:
                    mode = (ctl["mode"], ctl.get("retry_after", 1))
                    times = ctl.get("times", 1)
                    if times < 0:
                        state["sticky"] = None if mode[0] == "ok" else mode
                    else:
                        state["queue"].extend([mode] * times)
            self.send_json(200, {"ok": True})
            return
        if self.path == "/_reset":
            reset(self.server.args)
            self.send_json(200, {"ok": True})
            return
        if self.path.rstrip("/").endswith("/chat/completions"):
            with state_lock:
                drop = state["drop_reused"] and self.served > 0
                state["dropped"] += drop
            self.served += 1
            if drop:
                self.close_connection = True
                return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self.send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        try:
            req = json.loads(body)
        except ValueError:
            self.send_json(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
            return
        with state_lock:
            state["last_request"] = req
            state["recent"] = (state["recent"] + [req])[-20:]
            state["traceparents"].append(self.headers.get("traceparent"))
            state["without_user"] += not any(isinstance(m, dict) and m.get("role") == "user"
                                             for m in req.get("messages") or [])
        (mode, retry_after), chunks, delay_ms, text = next_mode()
        if self.headers.get("Authorization", "") in ("", "Bearer ", "Bearer bad-key") or mode == "401":
            self.send_json(401, {"error": {"message": "Invalid API Key", "type": "invalid_request_error",
                                           "code": "invalid_api_key"}})
            return
        if mode == "429":
            self.send_json(429, {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded"}},
                           {"Retry-After": str(retry_after)})
            return
        if mode == "404":  # OpenAI's answer for an unknown model
            self.send_json(404, {"error": {"message": f"The model `{req.get('model')}` does not exist",
                                           "type": "invalid_request_error", "param": "model",
                                           "code": "model_not_found"}})
            return
        if mode == "408":
            self.send_json(408, {"error": {"message": "Request timed out", "type": "timeout"}})
            return
        if mode == "500":
            self.send_json(500, {"error": {"message": "internal error", "type": "server_error"}})
            return
        if mode == "400":
            self.send_json(400, {"error": {"message": "Invalid schema for function 'f': 'x' is not valid",
                                           "type": "invalid_request_error", "param": "tools[0]"}})
            return
        if mode == "hang":
            time.sleep(3600)
            return
        if mode == "200_error":  # a 200 that is no event stream, as a provider's overload answer
            self.send_json(200, {"error": {"message": "model overloaded", "type": "server_error"}})
            return
        if mode == "200_empty" and req.get("stream"):  # an event stream that closes before any event
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            return
        if mode == "garbage":
            self.wfile.write(b"this is not HTTP\r\n\r\n")
            self.close_connection = True
            return
        model = req.get("model") or "fake-model"
        user = next((m.get("content", "") for m in reversed(req.get("messages", [])) if m.get("role") == "user"), "")
        reply = text if text != DEFAULT_TEXT else f"{DEFAULT_TEXT}You said: {user[:200]}"
        with state_lock:
            reply = "x" * state["reply_bytes"] if state.get("reply_bytes") else reply
            calls, said = tool_script.reply(req, user, state)
        reply = said if said is not None else reply
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in req.get("messages", [])) // 4 + 1
        completion_tokens = len(reply) // 4 + 1
        created = int(time.time())
        if not req.get("stream"):
            message = {"role": "assistant", "content": reply}
            if calls:
                message = {"role": "assistant", "content": None, "tool_calls": calls}
                with state_lock:
                    if state["tool_content"] == "absent":  # as some servers write a tool call
                        del message["content"]
            self.send_json(200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message,
                             "finish_reason": "tool_calls" if calls else "stop", "logprobs": None}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}})
            return
        self.stream(req, model, created, reply, calls, chunks, delay_ms, mode, prompt_tokens, completion_tokens)

    def stream(self, req, model, created, reply, calls, chunks, delay_ms, mode, prompt_tokens, completion_tokens):
        cut = mode == "cut"
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": None}
        events = [dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                       "finish_reason": None, "logprobs": None}])]
        for i, call in enumerate(calls):  # each call's head, then its arguments in pieces, as OpenAI streams them
            args = call["function"]["arguments"]
            head = dict(call, index=i, function={"name": call["function"]["name"], "arguments": ""})
            events.append(dict(base, choices=[{"index": 0, "delta": {"tool_calls": [head]},
                                               "finish_reason": None, "logprobs": None}]))
            for part in (split_text(args, chunks) if args else []):
                events.append(dict(base, choices=[{"index": 0, "delta": {"tool_calls": [
                    {"index": i, "function": {"arguments": part}}]}, "finish_reason": None, "logprobs": None}]))
        if not calls:
            for part in split_text(reply, chunks):
                events.append(dict(base, choices=[{"index": 0, "delta": {"content": part}, "finish_reason": None,
                                                   "logprobs": None}]))
        events.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls" if calls else "stop",
                                           "logprobs": None}]))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        with state_lock:
            groq = state.get("groq_usage")
        if groq:  # Groq: x_groq.id in the first and last chunk, x_groq.usage in the last only
            events[0]["x_groq"] = {"id": "req_fake"}
            events[-1]["x_groq"] = {"id": "req_fake", "usage": dict(usage, queue_time=0.01, total_time=0.02)}
        elif (req.get("stream_options") or {}).get("include_usage"):
            events.append(dict(base, choices=[], usage={"prompt_tokens": prompt_tokens,
                                                        "completion_tokens": completion_tokens,
                                                        "total_tokens": prompt_tokens + completion_tokens}))
        frames = [("data: " + json.dumps(e, ensure_ascii=False) + "\n\n").encode() for e in events]
        with state_lock:
            after_done, odd = state.get("after_done"), state.get("odd_events")
        if odd:  # legal SSE that is no chat chunk: a "ping", and a chunk's value over several data: lines
            lines = json.dumps(dict(base, choices=[{"index": 0, "delta": {"content": "+"}, "finish_reason": None,
                                                     "logprobs": None}]), indent=1).split("\n")
            frames[1:1] = [b"data: ping\n\n", ("".join(f"data: {ln}\n" for ln in lines) + "\n").encode()]
        if mode in ("error_first", "error_mid"):  # an error event in the stream, then [DONE] (as vLLM does)
            frames = (frames[:2] if mode == "error_mid" else []) + [
                b'data: {"error": {"message": "Internal server error", "type": "server_error", "code": 500}}\n\n']
        frames.append(b"data: [DONE]\n\n")
        if cut:
            frames = frames[:max(2, len(frames) // 2)]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        with state_lock:  # a cut chunked stream ends without its last chunk
            keep = state["keep_alive"]
        if keep:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        delay_ms, first_delay_ms = delay_ms
        data = b"".join(frames)
        pos, pieces = 0, max(1, len(frames))
        try:
            if first_delay_ms:  # the head and the role chunk now, the content after the first delay
                head = frames[0] if len(frames) > 2 else b""
                self.wfile.write(b"%x\r\n%s\r\n" % (len(head), head) if keep and head else head)
                self.wfile.flush()
                pos = len(head)
                if not self.wait_first(first_delay_ms / 1000.0):
                    raise ConnectionResetError("the client went away before the first delta")
            while pos < len(data):
                step = random.randint(1, max(2, 2 * len(data) // pieces))
                piece = data[pos:pos + step]
                if keep:  # one chunk per piece, so the piece boundaries stay where they were
                    piece = b"%x\r\n%s\r\n" % (len(piece), piece)
                self.wfile.write(piece)
                self.wfile.flush()
                pos += step
                if delay_ms:
                    time.sleep(delay_ms / 1000.0)
        except (BrokenPipeError, ConnectionResetError):
            with state_lock:
                state["aborted"] += 1
            return
        if after_done == "junk":  # one more event, in a write of its own after [DONE]
            time.sleep(0.3)
            junk = b'data: {"error": {"message": "junk after done"}}\n\n'
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(junk), junk) if keep else junk)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading at [DONE], as it may
        if after_done == "hang":  # the reply is whole, but the body never ends
            self.wait_first(30)
            self.close_connection = True
            return
        if after_done == "close":  # the connection closes without the body's last chunk
            self.close_connection = True
            return
        if keep and not cut:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            self.drop_if_asked()
            return
        self.close_connection = True


    def wait_first(self, seconds):
        """Sleeps up to seconds; False as soon as the client closes its end (EOF on a peek)."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return True
            ready, _, _ = select.select([self.connection], [], [], min(left, 0.01))
            if ready:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return False
                except OSError:
                    return False
                time.sleep(min(left, 0.01))  # a pipelined request is waiting: not a close


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--chunks", type=int, default=12)
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--first-delay-ms", type=int, default=0,
                    help="time from the response's head to its first content delta (time to first token)")
    ap.add_argument("--keep-alive", action="store_true",
                    help="streamed replies in chunked encoding on a connection that stays open")
    args = ap.parse_args()
    reset(args)
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.daemon_threads = True
    srv.args = args
    print(f"fake llm listening on {args.host}:{args.port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
