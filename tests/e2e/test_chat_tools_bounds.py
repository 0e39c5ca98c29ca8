"""Bounds of function calling in conversations (docs/api.md "Tools in conversations"): a tool's
result (and the arguments shown in tool.start) are cut to llm.max_tool_result_chars, on a UTF-8
boundary, marked truncated; calls and results that no longer fit llm.max_context_tokens leave the
largest results out (the last call then offers no tools), or end the reply with an assistant.error
llm_context_exceeded when even that does not fit; the tenant's token budget is asked before every
later call (assistant.error llm_budget_exceeded); a message that fills the context leaves room for
the tool rounds, older turns giving way first; stop and delete interrupt a running fetch_page at
once (stop commits its tool.result {ok: false, error: "stopped"}, delete none). On both stores."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from e2e_util import history, http, post_message, wait_terminal, wait_until


def _types(evs):
    return [e["type"] for e in evs]


class _Pages(BaseHTTPRequestHandler):
    """/big: 30000 bytes of text at once; /slow: 1000 bytes, one every 0.2 s (records when the
    client went away)."""
    gone = []

    def do_GET(self):
        if self.path == "/big":
            body = ("word " * 6000).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            _Pages.gone.append(time.time())

    def log_message(self, *a):
        pass


def _pages():
    _Pages.gone = []
    s = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return s


def test_a_huge_result_is_cut_for_the_model_and_the_events(soma, llm):
    srv = soma("llm.max_context_tokens=200000", "llm.max_tool_result_chars=2001")
    big = "\u00e9" * 50000  # 100000 bytes: a cut at an odd byte count falls inside a character
    llm.control(tool_script=[{"tool_calls": [{"name": "echo", "arguments": {"text": big}, "id": "c1"}]},
                             {"text": "ok {tool}"}])
    sid = post_message(srv, "big")["session_id"]
    evs = wait_terminal(srv, sid, timeout=30)
    assert _types(evs) == ["user", "tool.start", "tool.result", "assistant.final"], evs
    start, result = evs[1]["metadata"], evs[2]["metadata"]
    assert len(json.dumps(start["args"], ensure_ascii=False, separators=(",", ":")).encode()) <= 2001, start
    assert start["args"]["truncated"] is True and big.startswith(start["args"]["text"]), start
    assert result["ok"] is True and result["result"]["truncated"] is True, result
    assert big.startswith(result["result"]["text"]) and len(result["result"]["text"]) > 500, result
    assert "llm.max_tool_result_chars" in result["result"]["truncated_note"]
    sent = llm.stats()["last_request"]["messages"]
    tool = sent[-1]
    assert tool["role"] == "tool" and len(tool["content"].encode()) <= 2001, len(tool["content"])
    assert json.loads(tool["content"]) == result["result"]
    # the provider gets the call's real arguments
    assert json.loads(sent[-2]["tool_calls"][0]["function"]["arguments"]) == {"text": big}
    assert evs[-1]["metadata"]["status"] == "completed"


def test_calls_that_no_longer_fit_the_context_end_with_an_error(soma, llm):
    srv = soma()  # llm.max_context_tokens 8000: about 32000 bytes
    big = "A" * 100000
    llm.control(tool_script=[{"tool_calls": [{"name": "echo", "arguments": {"text": big}, "id": f"c{i}"}
                                             for i in range(3)]}, {"text": "ok"}])
    sid = post_message(srv, "big")["session_id"]
    evs = wait_terminal(srv, sid, timeout=30)
    assert _types(evs) == ["user"] + ["tool.start", "tool.result"] * 3 + ["assistant.error"], evs
    assert evs[-1]["metadata"]["error"]["code"] == "llm_context_exceeded", evs[-1]
    assert "llm.max_context_tokens" in evs[-1]["metadata"]["error"]["detail"]
    assert llm.stats()["requests"] == 1  # no 600 KB request
    assert all(len(json.dumps(e["metadata"])) < 20000 for e in evs[1:7]), [len(json.dumps(e["metadata"]))
                                                                          for e in evs]


def test_results_that_do_not_fit_are_left_out_and_the_model_answers(soma, llm):
    pages = _pages()
    srv = soma("tools.fetch.allowed_hosts=127.0.0.1", "llm.max_context_tokens=6000")
    url = f"http://127.0.0.1:{pages.server_port}/big"
    llm.control(tool_script=[{"tool_calls": [{"name": "fetch_page", "arguments": {"url": url}, "id": "p1"},
                                             {"name": "fetch_page", "arguments": {"url": url}, "id": "p2"}]},
                             {"text": "answered"}])
    sid = post_message(srv, "two pages")["session_id"]
    evs = wait_terminal(srv, sid, timeout=30)
    assert _types(evs) == ["user"] + ["tool.start", "tool.result"] * 2 + ["assistant.final"], evs
    assert all(e["metadata"]["result"]["truncated"] is True for e in evs[2:5:2])
    st = llm.stats()
    assert st["requests"] == 2, st
    last = st["last_request"]
    assert "tools" not in last, last  # the last call: the model answers with what it has
    contents = [m["content"] for m in last["messages"] if m["role"] == "tool"]
    assert sum(len(c) for c in contents) + len(json.dumps(last["messages"][:-2])) < 6000 * 4
    assert any("no room" in c for c in contents), contents
    assert evs[-1]["message"] == "answered" and evs[-1]["metadata"]["status"] == "completed"


def _echo_hi(llm, text="hi"):
    llm.control(tool_script=[{"tool_calls": [{"name": "echo", "arguments": {"text": text}, "id": "c1"}]},
                             {"text": "ok {tool}"}])


def test_a_message_that_fills_the_context_still_gets_its_tool_call_answered(soma, llm):
    srv = soma("llm.max_context_tokens=1000")
    _echo_hi(llm)
    sid = post_message(srv, "please summarise: " + "lorem ipsum " * 600)["session_id"]
    evs = wait_terminal(srv, sid, timeout=30)
    assert _types(evs) == ["user", "tool.start", "tool.result", "assistant.final"], evs
    assert "hi" in evs[-1]["message"] and evs[-1]["metadata"]["status"] == "completed", evs[-1]
    first = llm.stats()["last_request"]["messages"]
    assert "[Cut: only the first" in next(m["content"] for m in first if m["role"] == "user")
    assert llm.stats()["requests"] == 2


def test_a_long_history_gives_way_to_the_tool_round(soma, llm):
    srv = soma("llm.max_context_tokens=1000")
    sid = None
    for i in range(6):
        sid = post_message(srv, f"turn {i}: " + "some ordinary chat text " * 30,
                           **({"session_id": sid} if sid else {}))["session_id"]
        wait_until(lambda: sum(e["type"] == "assistant.final" for e in history(srv, sid)) == i + 1,
                   timeout=20, what="reply")
    said = "tool said " * 60  # 600 bytes: its call and result need more than a turn's slack
    _echo_hi(llm, said)
    post_message(srv, "now call a tool", session_id=sid)
    wait_until(lambda: sum(e["type"] in ("assistant.final", "assistant.error") for e in history(srv, sid)) == 7,
               timeout=30, what="the last reply")
    evs = history(srv, sid)
    assert _types(evs[-4:]) == ["user", "tool.start", "tool.result", "assistant.final"], evs[-4:]
    assert said in evs[-1]["message"] and evs[-1]["metadata"]["status"] == "completed", evs[-1]
    last = llm.stats()["last_request"]["messages"]
    assert sum(len(m["content"] or "") for m in last) <= 4000, last
    assert [m["role"] for m in last][-3:] == ["user", "assistant", "tool"], last


def test_the_token_budget_is_asked_before_every_later_call(soma, llm):
    srv = soma("limits.llm_tokens_per_day=2000", "llm.max_context_tokens=1000000")
    call = {"tool_calls": [{"name": "echo", "arguments": {"text": "B" * 40000}}]}
    llm.control(tool_script=[call] * 5)
    sid = post_message(srv, "spend")["session_id"]
    evs = wait_terminal(srv, sid, timeout=30)
    assert evs[-1]["type"] == "assistant.error", evs
    assert evs[-1]["metadata"]["error"]["code"] == "llm_budget_exceeded", evs[-1]
    # the second call (its prompt holds the first result) spent the budget: no third call
    assert llm.stats()["requests"] == 2, llm.stats()


def _slow_fetch(soma, llm):
    pages = _pages()
    srv = soma("tools.fetch.allowed_hosts=127.0.0.1", "tools.fetch.timeout_s=60")
    url = f"http://127.0.0.1:{pages.server_port}/slow"
    llm.control(tool_script=[{"tool_calls": [{"name": "fetch_page", "arguments": {"url": url}, "id": "f1"},
                                             {"name": "echo", "arguments": {"text": "after"}, "id": "f2"}]},
                             {"text": "done {tool}"}])
    sid = post_message(srv, "fetch it")["session_id"]
    wait_until(lambda: "tool.start" in _types(history(srv, sid)), timeout=15, what="tool.start")
    time.sleep(0.8)
    return srv, sid


def test_stop_interrupts_a_running_fetch(soma, llm):
    srv, sid = _slow_fetch(soma, llm)
    t0 = time.time()
    r = http().post(f"{srv.url}/v1/sessions/{sid}/cancel", timeout=5)
    assert r.status_code == 200, r.text
    evs = wait_terminal(srv, sid, timeout=30)
    assert time.time() - t0 < 4, time.time() - t0
    assert _types(evs) == ["user", "tool.start", "tool.result", "assistant.final"], evs
    assert evs[2]["metadata"]["ok"] is False and evs[2]["metadata"]["error"] == "stopped", evs[2]
    assert evs[2]["metadata"]["call_id"] == "f1"
    assert evs[-1]["metadata"]["status"] == "cancelled"
    wait_until(lambda: _Pages.gone, timeout=3, what="the fetch's connection closed")
    assert _Pages.gone[0] - t0 < 4
    assert llm.stats()["requests"] == 1


def test_delete_interrupts_a_running_fetch(soma, llm):
    srv, sid = _slow_fetch(soma, llm)
    t0 = time.time()
    assert http().delete(f"{srv.url}/v1/sessions/{sid}", timeout=5).status_code in (200, 204)
    wait_until(lambda: _Pages.gone, timeout=5, what="the fetch's connection closed")
    assert _Pages.gone[0] - t0 < 4
    time.sleep(0.5)
    assert llm.stats()["requests"] == 1
    assert http().get(f"{srv.url}/v1/sessions/{sid}", timeout=5).status_code == 404
