"""tool_script.py - the tool calls the fake LLM (server.py) answers with, as OpenAI writes them.

A test scripts them: POST /_control {"tool_script": [step, ...]} queues steps; each completion
request takes the next one:
    {"tool_calls": [{"name": "echo", "arguments": {..} or "raw text", "id": "call_x"?}, ...]}
        a reply of those calls (finish_reason "tool_calls") - when the request offers tools (and
        tool_choice is not "none"); otherwise the step's "text" or the usual text
    {"text": "..."}  a text reply; "{tool}" in it is replaced by the content of the request's last
        message when that is a tool message (the tool's result, quoted)
Without a script (or past its end): a request offering tools with tool_choice absent, "required"
or a named function is answered with a call of the first tool, arguments {"echo": the user's last
words} (as before); with tool_choice "auto" (the model chose not to call) or "none", and without
tools, the usual text.
"""
import itertools
import json

_ids = itertools.count(1)


def _quoted(req):
    msgs = req.get("messages") or []
    last = msgs[-1] if msgs and isinstance(msgs[-1], dict) else {}
    return last.get("content") if last.get("role") == "tool" else None


def _offers(req):
    return bool(req.get("tools")) and req.get("tool_choice") != "none"


def _call(name, arguments, call_id=None):
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {"id": call_id or f"call_{next(_ids)}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def reply(req, user, state):
    """(calls, text): the reply's tool calls ([] for none) and the text that replaces the usual
    reply (None: the usual). state is the server's, its lock held by the caller."""
    script = state.get("tool_script") or []
    tool = _quoted(req)
    if script:
        step = script.pop(0)
        if step.get("tool_calls") and _offers(req):
            return [_call(c["name"], c.get("arguments", {}), c.get("id")) for c in step["tool_calls"]], None
        text = step.get("text")
        if text is not None:
            return [], text.replace("{tool}", tool if tool is not None else "")
    choice = req.get("tool_choice")
    if _offers(req) and choice != "auto":
        name = (req["tools"][0].get("function") or {}).get("name", "tool")
        return [_call(name, {"echo": str(user)[:50]}, "call_fake_1")], None
    return [], None
