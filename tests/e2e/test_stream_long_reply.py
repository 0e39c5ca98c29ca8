"""A reply of more provider chunks than the bus's resume log holds (BUS_LOG_MAX = 4096 entries per
session, local ring or the Redis list) must still resume with no gap and no repeat: long code
answers stream 4-8k chunks. The reply here is 6,000 chunks, streamed fast; a stream notes the id
of its third delta and leaves; once the reply is over (within stream.resume_window_s), or in its
middle past 4,096 chunks (redis bus: the snapshot from Redis, then live), a stream resumed with Last-Event-ID = that id must bring the rest, so that the deltas before and after
together are the final's message, their stream_index 0..n-1 with none missing, and the final's
metadata.deltas is n. Before the fix the log kept only the last 4096 deltas: the resumed stream
started ~1,900 deltas later (a gap in the text).
The producer now publishes the first 1,024 chunks one delta each and merges the rest into one
delta every 100 ms (src/tasks/conversation_delta.c)."""

import pytest

from e2e_util import history, http, open_stream, post_message, wait_terminal
from servers import RedisServer

CHUNKS = 6000


def _resume_in_long_reply(srv, llm, during):
    text = "".join(f"w{i:04d} " for i in range(CHUNKS))  # 6 bytes a chunk: a gap shows in the text
    llm.control(chunks=CHUNKS, delay_ms=0.3 if during else 0, text=text)  # during: ~3 s (a sleep per write)
    sid = post_message(srv, "warm up")["session_id"]  # (the default reply: 12 chunks)
    wait_terminal(srv, sid)
    with open_stream(srv, sid, timeout=10) as s:
        sent = post_message(srv, "a long answer please", session_id=sid)
        gid = sent["task_id"]
        frames = s.events(lambda e: e.get("type") == "assistant.delta" and e["metadata"].get("stream_index") == 2,
                          timeout=15)
        before = [(i, e) for i, e in frames
                  if e["type"] == "assistant.delta" and e["metadata"]["generation_id"] == gid]
        assert [e["metadata"]["stream_index"] for _, e in before] == [0, 1, 2], before
        if during:  # read on, well past 4,096 chunks (the text says how far), and leave before the end
            s.events(lambda e: e.get("type") in ("assistant.delta", "assistant.final")
                     and (e["type"] == "assistant.final" or "w4300 " in e["message"]), timeout=15)
    last_id = before[-1][0]
    if during:
        assert not [e for e in history(srv, sid) if e["type"] == "assistant.final"
                    and e["metadata"].get("generation_id") == gid], "the reply ended too early for the test"
    else:
        wait_terminal(srv, sid, count=2, timeout=15)
    with open_stream(srv, sid, last_event_id=last_id, timeout=10) as s:
        frames = s.events(lambda e: e.get("type") in ("assistant.final", "assistant.error")
                          and e["metadata"].get("generation_id") == gid, timeout=15)
    final = frames[-1][1]
    assert final["type"] == "assistant.final" and final["message"] == text, final["type"]
    after = [e for _, e in frames if e["type"] == "assistant.delta" and e["metadata"]["generation_id"] == gid]
    deltas = [e for _, e in before] + after
    indexes = [e["metadata"]["stream_index"] for e in deltas]
    missing = sorted(set(range(len(indexes))) - set(indexes))
    assert indexes == list(range(len(indexes))), f"{len(deltas)} deltas; missing {missing[:3]}..{missing[-3:]}"
    got = "".join(e["message"] for e in deltas)
    assert got == final["message"], f"the deltas give {len(got)} bytes of {len(final['message'])}"
    assert final["metadata"]["deltas"] == len(deltas), (final["metadata"]["deltas"], len(deltas))


@pytest.mark.parametrize("bus,when", [("local", "after"), ("redis", "after"), ("redis", "during")])
def test_a_reply_longer_than_the_resume_log_resumes_with_no_gap(soma, llm, bus, when):
    if bus == "local":
        _resume_in_long_reply(soma(), llm, when == "during")
        return
    with RedisServer() as redis:
        _resume_in_long_reply(soma("bus.driver=redis", f"redis.url={redis.url(db=0)}"), llm, when == "during")


def test_a_long_reply_stopped_keeps_all_its_text_in_its_deltas(soma, llm):
    """Stopped while chunks are held (past the first 1,024): the held text goes out before the
    cancelled final, which is the deltas' text, and metadata.deltas counts them."""
    srv = soma()
    text = "".join(f"w{i:04d} " for i in range(CHUNKS))
    llm.control(chunks=CHUNKS, delay_ms=0.3, text=text)
    sid = post_message(srv, "warm up")["session_id"]
    wait_terminal(srv, sid)
    with open_stream(srv, sid, timeout=10) as s:
        gid = post_message(srv, "a long answer please", session_id=sid)["task_id"]
        frames = s.events(lambda e: e.get("type") == "assistant.delta" and "w2000 " in e["message"], timeout=15)
        r = http().post(f"{srv.url}/v1/sessions/{sid}/cancel", timeout=5)
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        frames += s.events(lambda e: e.get("type") in ("assistant.final", "assistant.error"), timeout=15)
    final = frames[-1][1]
    assert final["type"] == "assistant.final" and final["metadata"]["status"] == "cancelled", final["type"]
    deltas = [e for _, e in frames if e["type"] == "assistant.delta" and e["metadata"]["generation_id"] == gid]
    assert [e["metadata"]["stream_index"] for e in deltas] == list(range(len(deltas)))
    assert len(deltas) > 1024 and len(final["message"]) < len(text), (len(deltas), len(final["message"]))
    assert "".join(e["message"] for e in deltas) == final["message"]
    assert final["metadata"]["deltas"] == len(deltas)
