"""Early start (test_chat_early.py) when the conversation goes away under an early reply: the
session is deleted, or reset, after the message committed but before the worker's context is
right. The worker must stop - no endless calls to the provider, no reply into nothing, no
context without the user's message - and the server must still stop when asked.

The sequence (the write lock holds both commits back): "second" and "third" are posted to a
session that has a first turn; both are handed to idle workers, which read the context before
their messages commit and call the provider early. Then the session is deleted (or reset) and the
lock released: "third"'s context missed "second", so its worker reads again - after the delete."""

import time

from e2e_util import history, http, open_stream, post_message, wait_terminal, wait_until
from test_chat_early import WriteLock, _post_in_background


def idle_conversation_workers(srv):
    workers = http().get(srv.url + "/v1/workers", timeout=5).json()["workers"]
    return sum(1 for w in workers if w["queue"] == "conversation" and w["state"] == "idle")


def two_early_replies_then(srv, llm, sid, action):
    """Posts "second" and "third" while the store's writes are held, lets both reach the provider
    early, then runs action (a request that goes through once the lock is released)."""
    wait_until(lambda: idle_conversation_workers(srv) >= 2, 10, what="two idle conversation workers")
    llm.control(first_delay_ms=60000)  # the early calls wait at the provider until cancelled
    requests = llm.stats()["requests"]
    lock = WriteLock(srv.data_dir)
    threads = []
    try:
        for n, text in enumerate(("second", "third"), 1):
            threads.append(_post_in_background(srv, text, sid)[0])
            wait_until(lambda: llm.stats()["requests"] == requests + n, 10, what=f"{text}'s early call")
            time.sleep(0.3)
        threads.append(action())
        time.sleep(0.5)
    finally:
        lock.release()
    llm.control(first_delay_ms=0)  # a call made from now on answers at once
    for t in threads:
        t.join(30)


def background(fn):
    import threading

    t = threading.Thread(target=fn)
    t.start()
    return t


def provider_quiet(llm, seconds=2.0):
    """The provider's request count stays where it is for `seconds`."""
    before = llm.stats()["requests"]
    time.sleep(seconds)
    return llm.stats()["requests"] - before


def settled(srv, llm, sid):
    """Waits until the workers let go of the session and every message left in it has its reply
    (a message that committed after the delete or reset is owed one: its task runs again), then
    checks that the provider is no longer called."""
    wait_until(lambda: idle_conversation_workers(srv) >= 2, 10, what="the workers to let go of the session")
    r = http().get(f"{srv.url}/v1/sessions/{sid}", timeout=5)
    if r.status_code == 200:
        users = sum(e["type"] == "user" for e in history(srv, sid))
        if users:
            wait_terminal(srv, sid, count=users, timeout=30)
    else:
        assert r.status_code == 404, r.text
    assert provider_quiet(llm) == 0, "the provider is still being called"
    return r.status_code


def a_session_with_one_turn(srv):
    sid = post_message(srv, "first")["session_id"]
    wait_terminal(srv, sid)
    return sid


def test_a_session_deleted_under_an_early_reply_stops_it(soma, llm):
    srv = soma()
    sid = a_session_with_one_turn(srv)
    two_early_replies_then(srv, llm, sid, lambda: background(
        lambda: http().delete(f"{srv.url}/v1/sessions/{sid}", timeout=30)))
    settled(srv, llm, sid)  # (deleted, or made anew by a message that committed after the delete)
    srv.stop()  # exit status 0 within 15 s (a worker looping on the deleted session held it)


def test_a_session_reset_under_an_early_reply_sends_no_context_without_the_message(soma, llm):
    srv = soma()
    sid = a_session_with_one_turn(srv)
    two_early_replies_then(srv, llm, sid, lambda: background(
        lambda: http().post(f"{srv.url}/v1/sessions/{sid}/reset", timeout=30)))
    settled(srv, llm, sid)
    assert llm.stats()["without_user"] == 0, "a context without the user's message went to the provider"


def test_a_reply_stopped_before_its_first_delta_leaves_no_thinking_to_replay(soma, llm):
    """Early start: assistant.thinking went out as the message committed (the gate's hook), then
    the user stopped the reply before any delta. The generation still ends in the resume log, so
    after stream.resume_window_s a resumed stream replays the final, not the old thinking (it was
    kept for good: the end was skipped for a reply that had only been opened by the hook)."""
    srv = soma("stream.resume_window_s=1")
    sid = a_session_with_one_turn(srv)
    wait_until(lambda: idle_conversation_workers(srv) >= 1, 10, what="an idle conversation worker")
    llm.control(first_delay_ms=60000)
    with open_stream(srv, sid) as s:
        seq = post_message(srv, "second", session_id=sid)["seq"]
        s.events(lambda e: e["type"] == "assistant.thinking", timeout=20)
    wait_until(lambda: llm.stats()["requests"] == 2, 10, what="the early provider call")
    r = http().post(f"{srv.url}/v1/sessions/{sid}/cancel", timeout=10)
    assert r.status_code in (200, 202), r.text
    wait_terminal(srv, sid, count=2)
    llm.control(first_delay_ms=0)
    time.sleep(2.5)  # past the resume window
    with open_stream(srv, sid, last_event_id=str(seq)) as s:
        frames = s.events(lambda e: e["type"].startswith("assistant.") and e["type"] != "assistant.thinking"
                          and e["type"] != "assistant.delta", timeout=10)
    assert [e["type"] for _, e in frames] == ["assistant.final"], frames
