"""Function calling in conversations (llm.tools, llm.max_tool_rounds; docs/api.md "Tool events"):
the request offers the enabled tools with tool_choice auto; a reply of tool calls (the fake LLM,
scripted: tests/fakes/llm/tool_script.py) runs each call as the task's sender, commits tool.start
and tool.result (role tool), and calls the model again with the assistant's tool_calls message and
one tool message per call (exact shapes asserted); the final quotes the result, its usage summed
over the rounds. A call denied by policy, an unknown tool, arguments that do not fit or are no
JSON: the error is the call's answer (the reply goes on). The round bound ends with a call without
tools; llm.tools=false offers none. On both stores."""

import json
import time
from pathlib import Path

from opa_fake import opa, opa_session  # noqa: F401 - the fixtures
from e2e_util import (check_increasing, history, http, open_stream, post_message, read_reply, wait_terminal,
                      wait_until)

REPO = Path(__file__).resolve().parents[2]


def _types(evs):
    return [e["type"] for e in evs]


def _prompt_tokens(req):  # the fake's count (server.py)
    return sum(len(str(m.get("content", ""))) for m in req["messages"]) // 4 + 1


def _run(srv, llm, text, script):
    llm.control(tool_script=script)
    sid = post_message(srv, text)["session_id"]
    evs = wait_terminal(srv, sid, timeout=15)
    return sid, evs


def test_a_scripted_echo_call_runs_and_the_final_quotes_it(soma, llm):
    srv = soma()
    llm.control(tool_script=[{"tool_calls": [{"name": "echo", "arguments": {"text": "hi tools"}, "id": "call_abc"}]},
                             {"text": "Echo gave {tool}"}])
    sid = post_message(srv, "please echo")["session_id"]
    with open_stream(srv, sid, after=0) as s:
        frames = read_reply(s, timeout=15)
    check_increasing([i for i, _ in frames])
    types = [e["type"] for _, e in frames]
    deltas = [e for _, e in frames if e["type"] == "assistant.delta"]
    assert types == ["user", "assistant.thinking", "tool.start", "tool.result"] + ["assistant.delta"] * len(deltas) + [
        "assistant.final"], types
    assert "".join(d["message"] for d in deltas) == frames[-1][1]["message"]
    assert [d["metadata"]["stream_index"] for d in deltas] == list(range(len(deltas)))

    evs = history(srv, sid)
    assert _types(evs) == ["user", "tool.start", "tool.result", "assistant.final"], evs
    start, result, final = evs[1:]
    gen = final["metadata"]["generation_id"]
    assert start["role"] == "tool" and result["role"] == "tool"
    assert start["metadata"] == {"tool": "echo", "call_id": "call_abc", "args": {"text": "hi tools"},
                                 "generation_id": gen}, start
    assert result["metadata"] == {"tool": "echo", "call_id": "call_abc", "ok": True, "result": {"text": "hi tools"},
                                  "generation_id": gen}, result
    assert "echo" in start["message"] and "echo" in result["message"]
    assert final["message"] == 'Echo gave {"text":"hi tools"}', final
    assert final["metadata"]["status"] == "completed" and final["metadata"]["finish_reason"] == "stop"

    st = llm.stats()
    assert st["requests"] == 2, st
    first, second = st["recent"][-2:]
    assert first["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in first["tools"]] == ["fetch_page", "memory_recall", "memory_remember",
                                                               "echo"]
    assert all(t["type"] == "function" and t["function"]["parameters"]["type"] == "object" for t in first["tools"])
    assert second["messages"][:-2] == first["messages"]
    assert second["messages"][-2:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "echo", "arguments": '{"text": "hi tools"}'}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": '{"text":"hi tools"}'}]
    assert second["tools"] == first["tools"] and second["tool_choice"] == "auto"
    assert final["metadata"]["usage"]["input_tokens"] == _prompt_tokens(first) + _prompt_tokens(second)


def test_a_tool_denied_by_policy_is_the_calls_answer(soma, llm, tmp_path):
    rules = json.loads((REPO / "policy/default.json").read_text())
    rules["soma_policy"]["tenants"]["*"]["tools"] = ["fetch_page"]
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(rules))
    srv = soma(f"policy.file={path}")
    sid, evs = _run(srv, llm, "echo denied", [
        {"tool_calls": [{"name": "echo", "arguments": {"text": "x"}, "id": "call_d"}]}, {"text": "Got: {tool}"}])
    assert _types(evs) == ["user", "tool.start", "policy.denied", "tool.result", "assistant.final"], evs
    res = evs[3]["metadata"]
    assert res["ok"] is False and res["call_id"] == "call_d" and "tool_not_allowed" in res["error"], res
    assert "result" not in res
    sent = llm.stats()["last_request"]["messages"][-1]
    assert sent["role"] == "tool" and sent["tool_call_id"] == "call_d"
    assert json.loads(sent["content"]) == {"error": res["error"]}
    assert evs[-1]["message"] == "Got: " + sent["content"]


def test_unknown_tool_bad_args_and_args_that_are_no_json(soma, llm):
    srv = soma()
    sid, evs = _run(srv, llm, "three calls", [
        {"tool_calls": [{"name": "no_such_tool", "arguments": {}, "id": "c1"},
                        {"name": "echo", "arguments": {"nope": 1}, "id": "c2"},
                        {"name": "echo", "arguments": "{not json", "id": "c3"}]},
        {"text": "done"}])
    assert _types(evs) == ["user"] + ["tool.start", "tool.result"] * 3 + ["assistant.final"], evs
    starts, results = evs[1:7:2], evs[2:7:2]
    assert [e["metadata"]["call_id"] for e in starts] == ["c1", "c2", "c3"]
    assert starts[2]["metadata"]["args"] == "{not json"
    assert [r["metadata"]["ok"] for r in results] == [False, False, False]
    assert "no such tool" in results[0]["metadata"]["error"]
    assert "text" in results[1]["metadata"]["error"], results[1]
    assert "not valid JSON" in results[2]["metadata"]["error"]
    msgs = llm.stats()["last_request"]["messages"]
    assert [m["tool_call_id"] for m in msgs[-3:]] == ["c1", "c2", "c3"]
    assert [c["id"] for c in msgs[-4]["tool_calls"]] == ["c1", "c2", "c3"]
    assert msgs[-4]["tool_calls"][2]["function"]["arguments"] == "{not json"
    assert evs[-1]["message"] == "done" and evs[-1]["metadata"]["status"] == "completed"


def test_the_round_bound_ends_with_a_call_without_tools(soma, llm):
    srv = soma("llm.max_tool_rounds=2")
    call = {"tool_calls": [{"name": "echo", "arguments": {"text": "again"}}]}
    sid, evs = _run(srv, llm, "loop", [call] * 5)
    assert _types(evs) == ["user"] + ["tool.start", "tool.result"] * 2 + ["assistant.final"], evs
    st = llm.stats()
    assert st["requests"] == 3, st
    last = st["recent"][-1]
    assert "tools" not in last and "tool_choice" not in last, last
    assert [m["role"] for m in last["messages"][-4:]] == ["assistant", "tool", "assistant", "tool"]
    assert "You said: loop" in evs[-1]["message"]
    # a later turn's context has the turns, not the tool events
    llm.control(tool_script=[])
    post_message(srv, "next", session_id=sid)
    wait_terminal(srv, sid, timeout=15, count=2)
    roles = [m["role"] for m in llm.stats()["last_request"]["messages"]]
    assert roles == ["system", "user", "assistant", "user"], roles


def test_tools_off_sends_none(soma, llm):
    srv = soma("llm.tools=false")
    sid, evs = _run(srv, llm, "no tools", [{"tool_calls": [{"name": "echo", "arguments": {"text": "x"}}]}])
    assert _types(evs) == ["user", "assistant.final"], evs
    sent = llm.stats()["last_request"]
    assert "tools" not in sent and "tool_choice" not in sent, sent


def test_tools_on_by_default_and_the_model_may_answer_text(soma, llm):
    srv = soma()
    sid, evs = _run(srv, llm, "plain", [])
    assert _types(evs) == ["user", "assistant.final"] and "You said: plain" in evs[-1]["message"], evs
    assert llm.stats()["last_request"]["tool_choice"] == "auto"


def test_a_provider_error_in_the_second_round_ends_with_assistant_error(soma, llm):
    srv = soma()
    llm.control(mode="ok", times=1)
    llm.control(mode="400", times=1)
    sid, evs = _run(srv, llm, "fail later", [{"tool_calls": [{"name": "echo", "arguments": {"text": "x"}}]}])
    assert _types(evs) == ["user", "tool.start", "tool.result", "assistant.error"], evs
    assert evs[-1]["metadata"]["error"]["code"] == "llm_bad_request", evs[-1]
    assert llm.stats()["modes"] == ["ok", "400"]


def test_stop_in_the_second_round_keeps_the_tool_events_and_the_text_so_far(soma, llm):
    srv = soma()
    llm.control(delay_ms=100, chunks=30, tool_script=[
        {"tool_calls": [{"name": "echo", "arguments": {"text": "x"}, "id": "call_s"}]},
        {"text": "a long answer that streams slowly " * 4}])
    sid = post_message(srv, "stop me")["session_id"]
    wait_until(lambda: "tool.result" in _types(history(srv, sid)), timeout=15, what="the tool's result")
    time.sleep(0.6)
    r = http().post(f"{srv.url}/v1/sessions/{sid}/cancel", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    evs = wait_terminal(srv, sid, timeout=15)
    assert _types(evs) == ["user", "tool.start", "tool.result", "assistant.final"], evs
    final = evs[-1]
    assert final["metadata"]["status"] == "cancelled", final
    assert final["message"] and "a long answer".startswith(final["message"][:13]), final
    assert llm.stats()["requests"] == 2


def test_deleting_the_session_in_the_second_round_stops_the_reply(soma, llm):
    srv = soma()
    llm.control(delay_ms=100, chunks=30, tool_script=[
        {"tool_calls": [{"name": "echo", "arguments": {"text": "x"}, "id": "call_del"}]},
        {"text": "a long answer that streams slowly " * 4}])
    sid = post_message(srv, "delete me")["session_id"]
    wait_until(lambda: "tool.result" in _types(history(srv, sid)), timeout=15, what="the tool's result")
    time.sleep(0.4)
    assert http().delete(f"{srv.url}/v1/sessions/{sid}", timeout=5).status_code in (200, 204)
    wait_until(lambda: llm.stats()["aborted"] >= 1, timeout=10, what="the second call stopped")
    assert http().get(f"{srv.url}/v1/sessions/{sid}", timeout=5).status_code == 404
    assert llm.stats()["requests"] == 2


def test_a_model_call_asks_policy_with_the_tools_args_and_host(soma, llm, opa):  # noqa: F811
    """A rule on fetch_page's host holds for the model's calls as for the tools API: the policy input
    of a conversation's tool call carries {tool, args, host} (tools_policy_context)."""
    opa.control(table=[
        {"input": {"action": "tool.execute", "context": {"host": "allowed.example"}},
         "result": {"allow": True, "reason": "allowed"}},
        {"input": {"action": "tool.execute"}, "result": {"allow": False, "reason": "host_not_allowed"}},
        {"input": {}, "result": {"allow": True, "reason": "allowed"}}])
    srv = soma("policy.engine=opa", f"policy.opa_url={opa.url}", "policy.opa_timeout_ms=5000", "policy.cache_ttl_ms=0")
    args = {"url": "http://Other.EXAMPLE/x"}
    sid, evs = _run(srv, llm, "fetch it", [
        {"tool_calls": [{"name": "fetch_page", "arguments": args, "id": "call_h"}]}, {"text": "Got: {tool}"}])
    assert _types(evs) == ["user", "tool.start", "policy.denied", "tool.result", "assistant.final"], evs
    res = evs[3]["metadata"]
    assert res["ok"] is False and "host_not_allowed" in res["error"], res
    asked = [i for i in opa.stats()["inputs"] if i["action"] == "tool.execute"]
    assert len(asked) == 1 and asked[0]["resource"] == "tool:fetch_page", asked
    assert asked[0]["context"] == {"tool": "fetch_page", "args": args, "host": "other.example"}, asked
