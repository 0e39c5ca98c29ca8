"""A live stream never drops a committed event that reaches the bus out of seq order (issues 3
and 4). On PostgreSQL a user message is published by a message lane and a worker's event by the
writer, and across nodes each node's bus publisher sends its own queue: seq N + 1 can reach a
stream before seq N. The stream must then fill the gap from the store (N, then N + 1), send
nothing twice, and likewise for a delta whose cursor counts from a seq it has not seen yet.

The test drives the production path with the redis bus: it stores events in the session's store
without publishing them (as if their publish were still on its way) and PUBLISHes a later
committed record (and a delta) on the gateway's bus channel in the bus's own framing
(src/bus/redis.c): "<kind> <keylen> <textlen> <seq> <minor>\\n<key><text>". Before the fix the
stream sent seq N + 1 alone and seq N never."""

import json

from e2e_util import http, open_stream, post_message, read_reply, store_query, store_user_event, wait_terminal
from servers import RedisServer


def _publish(redis, kind, key, seq, minor, text):
    k, t = key.encode(), text.encode()
    redis.client(db=0).publish("soma:bus:0", f"{kind} {len(k)} {len(t)} {seq} {minor}\n".encode() + k + t)


def _until_message(stream, message, timeout=10):
    return stream.events(lambda e: e.get("message") == message, timeout=timeout)


def test_committed_events_published_out_of_order_are_filled_from_the_store(soma, llm):
    with RedisServer() as redis:
        srv = soma("bus.driver=redis", f"redis.url={redis.url(db=0)}")
        sid = post_message(srv, "first words")["session_id"]
        wait_terminal(srv, sid)
        (tenant, n), = store_query(srv.data_dir, "SELECT tenant, last_seq FROM sessions WHERE id = ?", (sid,))
        key = f"{tenant}/{sid}"
        with open_stream(srv, sid, timeout=10) as s:
            # seq n+1 and n+2 are committed; only n+2's publish has arrived
            store_user_event(srv, sid, tenant, n + 1, "gap one", "gap")
            two = store_user_event(srv, sid, tenant, n + 2, "gap two", "gap")
            _publish(redis, "c", key, n + 2, 0, two)
            got = _until_message(s, "gap two")
            assert [(i, e.get("message")) for i, e in got] == [(str(n + 1), "gap one"), (str(n + 2), "gap two")], \
                f"the stream did not fill the gap before seq {n + 2}: {got}"
            # the late publish of n+1 is not sent again; a delta counting from n+3, whose committed
            # event has not been published yet, comes after it
            one = store_query(srv.data_dir, "SELECT body FROM events WHERE session_id = ? AND seq = ?",
                              (sid, n + 1))[0][0]
            _publish(redis, "c", key, n + 1, 0, one)
            store_user_event(srv, sid, tenant, n + 3, "gap three", "gap")
            delta = json.dumps({"type": "assistant.delta", "role": "assistant", "session_id": sid,
                                "message": "early delta", "metadata": {}, "version": "sa01-v1"})
            _publish(redis, "e", key, n + 3, 1, delta)
            got = _until_message(s, "early delta")
            assert [(i, e.get("message")) for i, e in got] == [(str(n + 3), "gap three"),
                                                                (f"{n + 3}.1", "early delta")], got
            # and the stream goes on live, in order, nothing repeated
            llm.control(text="after the gap")
            post_message(srv, "last words", session_id=sid)
            got = read_reply(s)
            ids = [i for i, _ in got]
            assert got[0][1].get("message") == "last words" and got[0][0] == str(n + 4), got[:2]
            assert got[-1][1]["type"] == "assistant.final" and got[-1][1]["message"] == "after the gap", got[-1]
            assert len(ids) == len(set(ids)), f"repeated ids: {ids}"


def _setup(soma, redis):
    srv = soma("bus.driver=redis", f"redis.url={redis.url(db=0)}")
    sid = post_message(srv, "first words")["session_id"]
    wait_terminal(srv, sid)
    (tenant, n), = store_query(srv.data_dir, "SELECT tenant, last_seq FROM sessions WHERE id = ?", (sid,))
    return srv, sid, f"{tenant}/{sid}", n


def _user(sid, seq, message):
    return json.dumps({"type": "user", "role": "user", "session_id": sid, "seq": seq, "message": message,
                       "metadata": {}, "version": "sa01-v1"})


def test_a_gap_the_store_cannot_fill_does_not_stop_the_stream(soma, llm):
    """A committed record past anything the store holds (it was deleted, or a stale bus state): the
    gap is read once, comes back empty, and the message goes out; the stream does not loop."""
    with RedisServer() as redis:
        srv, sid, key, n = _setup(soma, redis)
        with open_stream(srv, sid, timeout=10) as s:
            _publish(redis, "c", key, n + 3, 0, _user(sid, n + 3, "from nowhere"))
            got = _until_message(s, "from nowhere")
            assert [i for i, _ in got] == [str(n + 3)], got


def test_a_gap_in_a_deleted_session_ends_the_stream(soma, llm):
    """The gap's store read fails (the session was deleted meanwhile): the stream ends, as on any
    error of a stream already open, and its client resumes by its last id."""
    with RedisServer() as redis:
        srv, sid, key, n = _setup(soma, redis)
        with open_stream(srv, sid, timeout=10) as s:
            assert http().delete(f"{srv.url}/v1/sessions/{sid}").status_code == 200
            _publish(redis, "c", key, n + 2, 0, _user(sid, n + 2, "after the delete"))
            frames = []
            while True:
                f = s.next_frame(timeout=10)
                if f is None:
                    break
                if f.data and '"system.keepalive"' not in f.data:
                    frames.append(f)
                    break
            assert frames == [], f"the stream sent {[(f.id, f.data) for f in frames]} instead of ending"
