"""Two replies of one session running at once (two messages a moment apart, two conversation
workers): the first one ending must not expire the deltas the second has streamed so far. A
stream resumed in the middle of the second reply, after the first reply's final and the resume
window, gets the second reply's deltas from its first one (local bus: each generation's entries
expired with the session's first end)."""

import time

from e2e_util import http, open_stream, post_message, wait_terminal, wait_until


def test_one_reply_ending_keeps_the_deltas_of_another_still_running(soma, llm):
    srv = soma("stream.resume_window_s=1")
    sid = post_message(srv, "warm up")["session_id"]
    wait_terminal(srv, sid)
    wait_until(lambda: sum(1 for w in http().get(srv.url + "/v1/workers", timeout=5).json()["workers"]
                           if w["queue"] == "conversation") >= 2, 10, what="two conversation workers")
    llm.control(chunks=12, delay_ms=100)  # the first reply: ~1.2 s
    post_message(srv, "first", session_id=sid)
    wait_until(lambda: llm.stats()["requests"] == 2, 10, what="the first reply's call")
    llm.control(chunks=60, delay_ms=100)  # the second: ~6 s, still running when we resume
    second = post_message(srv, "second", session_id=sid)
    wait_terminal(srv, sid, count=2, timeout=20)  # the first reply's final
    time.sleep(2.0)  # past the resume window after that final, the second reply running on
    assert len([e for e in http().get(f"{srv.url}/v1/sessions/{sid}/history", timeout=5).json()["events"]
                if e["type"] == "assistant.final"]) == 2, "the second reply ended too early for the test"
    with open_stream(srv, sid, last_event_id=str(second["seq"]), timeout=20) as s:
        frames = s.events(lambda e: e["type"] == "assistant.final" and e["metadata"].get("generation_id")
                          == second["task_id"], timeout=20)
    deltas = [e for _, e in frames if e["type"] == "assistant.delta"
              and e["metadata"].get("generation_id") == second["task_id"]]
    indexes = [e["metadata"]["stream_index"] for e in deltas]
    assert indexes and indexes[0] == 0 and indexes == list(range(len(indexes))), indexes[:10]
    final = frames[-1][1]
    assert "".join(e["message"] for e in deltas) == final["message"]
