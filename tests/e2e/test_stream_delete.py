"""A stream open while its session is deleted ends (src/gateway/stream.c, bus_session_deleted in
src/bus): a session created again under the same id starts over at seq 1, which the old stream
would drop as already sent, so it must not follow it as if it were the old conversation. Its
last frame is `id: 0` with no data: an EventSource's automatic reconnect then sends
Last-Event-ID 0 and gets the new session from its first event (404 while there is none). Before,
the stream stayed open and silently dropped the new session's events up to the old last seq.
Runs with the local bus and with the redis bus (the marker goes through Redis to every node)."""

import socket
import time

import pytest

from e2e_util import check_reply, http, open_stream, post_message, read_reply, wait_terminal
from servers import RedisServer


def _until_end(s, timeout=10):
    """Every frame up to the end of the stream; fails if it does not end within timeout."""
    frames, deadline = [], time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            f = s.next_frame(timeout=max(left, 0.01)) if left > 0 else False
        except socket.timeout:
            f = False
        if f is False:
            raise AssertionError(f"the stream did not end within {timeout} s; frames: {frames}")
        if f is None:
            return frames
        if f.data and '"system.keepalive"' in f.data:
            continue
        frames.append(f)


@pytest.mark.parametrize("bus", ["local", "redis"])
def test_deleting_the_session_ends_its_stream_and_the_new_one_starts_at_1(soma, llm, bus):
    redis = RedisServer() if bus == "redis" else None
    try:
        sets = ("bus.driver=redis", f"redis.url={redis.url()}") if redis else ()
        srv = soma(*sets)
        sid = "deleted-while-followed"
        post_message(srv, "old one", session_id=sid)
        wait_terminal(srv, sid)
        post_message(srv, "old two", session_id=sid)
        wait_terminal(srv, sid, count=2)
        with open_stream(srv, sid, after=0, timeout=10) as s:
            read_reply(s)
            old = read_reply(s)
            assert old[-1][0] == "4", old[-1]  # the stream has sent up to seq 4
            assert http().delete(f"{srv.url}/v1/sessions/{sid}", timeout=5).status_code == 200
            llm.control(text="the new conversation")
            frames = _until_end(s)
        assert [(f.id, f.data) for f in frames] == [("0", None)], \
            f"expected only `id: 0` and the end: {[(f.id, f.data) for f in frames]}"

        # the client comes back with the id it was given: the new session from its first event
        assert post_message(srv, "new words", session_id=sid)["seq"] == 1
        with open_stream(srv, sid, last_event_id="0", timeout=10) as s:
            got = read_reply(s, timeout=20)
        assert got[0][0] == "1" and got[0][1]["message"] == "new words", got[0]
        assert check_reply(got, sid)["message"] == "the new conversation"
    finally:
        if redis:
            redis.close()


def test_a_stream_opened_as_its_session_is_deleted_is_404_or_ends(soma, llm):
    """No stream outlives the delete, whichever comes first."""
    srv = soma()
    sid = post_message(srv, "short lived")["session_id"]
    wait_terminal(srv, sid)
    s = open_stream(srv, sid, timeout=10)
    assert http().delete(f"{srv.url}/v1/sessions/{sid}", timeout=5).status_code == 200
    with s:
        assert [(f.id, f.data) for f in _until_end(s)] == [("0", None)]
    r = http().get(f"{srv.url}/v1/sessions/{sid}/events?stream=true", timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text


@pytest.mark.postgres_only
def test_a_delete_during_the_streams_first_read_answers_404(soma, llm):
    """The end marker comes while the stream's first store read is in flight (held here by a lock
    on the events table; the marker is a delete record published on the redis bus as another
    node would): the read's rows are of the deleted session, so the answer is 404, not a stream."""
    import threading

    import e2e_util

    with RedisServer() as redis:
        srv = soma("bus.driver=redis", f"redis.url={redis.url()}")
        sid = post_message(srv, "about to go")["session_id"]
        wait_terminal(srv, sid)
        key = f"default/{sid}".encode()
        conn = e2e_util.PG.connect(e2e_util.store_url(srv.data_dir).rsplit("/", 1)[1])
        try:
            cur = conn.cursor()
            cur.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")  # the stream's read waits
            status = {}

            def opener():
                try:
                    status["r"] = http().get(f"{srv.url}/v1/sessions/{sid}/events?stream=true", timeout=10)
                except Exception as e:  # e.g. a stream that began and never ends: a read timeout
                    status["r"] = e

            t = threading.Thread(target=opener, daemon=True)
            t.start()
            e2e_util.wait_until(lambda: _waiting_on_lock(e2e_util), 10, what="the stream's read to wait on the lock")
            redis.client().publish("soma:bus:0", f"f {len(key)} 0 1 0\n".encode() + key)
            time.sleep(0.5)  # the marker reaches the stream's io thread (ordering only, no assertion)
            conn.rollback()  # releases the lock: the read completes with the old rows
            t.join(20)
        finally:
            conn.close()
        assert "r" in status, "no answer: the stream began and did not end"
        r = status["r"]
        assert not isinstance(r, Exception), f"no answer: {r!r}"
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text


def _waiting_on_lock(e2e_util):
    conn = e2e_util.PG.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        return cur.fetchone()[0] > 0
    finally:
        conn.close()
