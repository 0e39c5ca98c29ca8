"""Messages that wait for a worker: each reply answers its own message. The task of a message read
its context after the next message of the session had committed, and answered that one instead:
the first message went unanswered and the second got two replies."""

import time

from e2e_util import history, post_message, wait_terminal


def test_each_queued_message_gets_its_own_answer(soma, llm):
    srv = soma("queue.conversation.concurrency=1")
    llm.control(chunks=4, delay_ms=200, first_delay_ms=200)
    post_message(srv, "keeps the only worker busy")  # about a second
    time.sleep(0.2)
    sid = post_message(srv, "What is 2+2? (AAA)")["session_id"]
    post_message(srv, "And the capital of France? (BBB)", session_id=sid)
    wait_terminal(srv, sid, timeout=30, count=2)
    finals = [e["message"] for e in history(srv, sid) if e["type"] == "assistant.final"]
    assert len(finals) == 2, finals
    assert "(AAA)" in finals[0] and "(BBB)" not in finals[0], finals
    assert "(BBB)" in finals[1], finals
    for m in llm.stats()["last_request"]["messages"]:  # OpenAI's message shape, nothing of ours
        assert set(m) == {"role", "content"}, m
