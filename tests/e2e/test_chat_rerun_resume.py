"""A reply interrupted by a restart runs again in the new process. A client that resumes with the
Last-Event-ID it had from the first attempt must get the new attempt from its start: the new
process numbered its deltas' cursors from 1 again, so the resume skipped the new attempt's first
deltas and the client's text was the first attempt's start glued to the second's end."""

from e2e_util import open_stream, post_message, read_reply, wait_terminal


def test_a_resume_after_a_restart_gets_the_new_attempt_whole(soma, llm):
    srv = soma("shutdown.grace_s=1")
    sid = post_message(srv, "warm")["session_id"]
    wait_terminal(srv, sid)
    llm.control(text="A" * 40, chunks=40, delay_ms=150)
    with open_stream(srv, sid, timeout=20) as s:
        post_message(srv, "go", session_id=sid)
        part = s.events(lambda e: e["type"] == "assistant.delta" and e["metadata"]["stream_index"] >= 9, timeout=20)
    srv.signal()  # SIGTERM: the reply is cut at the grace's end and its task given back
    srv.wait_exit(30)
    srv.checked = True
    llm.control(text="B" * 40, chunks=40, delay_ms=20)
    srv2 = soma("shutdown.grace_s=1", data_dir=srv.data_dir)
    with open_stream(srv2, sid, last_event_id=part[-1][0], timeout=30) as s2:
        rest = read_reply(s2, timeout=30)
    final = rest[-1][1]
    assert final["type"] == "assistant.final" and final["message"] == "B" * 40, final
    again = [e for _, e in rest if e["type"] in ("assistant.thinking", "assistant.delta")]
    assert again and again[0]["type"] == "assistant.thinking", [e["type"] for e in again[:3]]
    deltas = [e for e in again if e["type"] == "assistant.delta"]
    assert [d["metadata"]["stream_index"] for d in deltas] == list(range(len(deltas))), "the new attempt from its start"
    assert "".join(d["message"] for d in deltas) == final["message"]
