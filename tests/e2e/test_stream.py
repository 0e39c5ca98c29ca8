"""The session event stream (GET /v1/sessions/{id}/events?stream=true): a message's reply as
user -> assistant.thinking -> assistant.delta* -> assistant.final, fan-out to several
subscribers, resuming with Last-Event-ID / ?after= without gap or repeat, keepalives."""

import json
import signal
import time

import httpx


from e2e_util import (bearer, create_key, http, check_envelope, check_increasing, check_reply, history, open_stream, parse_cursor,
                      post_message, read_reply, wait_terminal)


def _data_frames(stream):
    return [(f.id, f.data) for f in stream.frames_read if f.data is not None]


def test_message_reply_on_the_stream(soma, llm):
    srv = soma()
    out = post_message(srv, "hi there")
    sid = out["session_id"]
    with open_stream(srv, sid, after=0) as s:
        frames = read_reply(s)
    fid, user = frames[0]
    assert user["type"] == "user" and user["role"] == "user", user
    assert (user["event_id"], user["seq"], user["message"]) == (out["event_id"], out["seq"], "hi there"), user
    assert fid == str(out["seq"]), fid
    final = check_reply(frames, sid)
    assert final["message"].endswith("You said: hi there"), final
    # the history keeps the committed events only, identical to what the stream sent
    hist = history(srv, sid)
    assert [e["type"] for e in hist] == ["user", "assistant.final"], hist
    assert hist == [frames[0][1], frames[-1][1]]
    # the provider got the system prompt and the message
    req = llm.stats()["last_request"]
    assert req["model"] == "fake-model" and req["stream"] is True, req
    assert [m["role"] for m in req["messages"]] == ["system", "user"], req
    assert req["messages"][-1]["content"] == "hi there"


def test_stream_opened_before_the_message(soma, llm):
    """A stream without a cursor starts at the present: the next message and its reply only."""
    srv = soma()
    sid = post_message(srv, "first")["session_id"]
    wait_terminal(srv, sid)
    with open_stream(srv, sid) as s:
        out = post_message(srv, "second", session_id=sid)
        frames = read_reply(s)
    assert frames[0][1]["type"] == "user" and frames[0][1]["message"] == "second", frames[0]
    assert frames[0][0] == str(out["seq"]) == "3", frames[0]
    final = check_reply(frames, sid)
    assert final["seq"] == 4, final
    # the earlier turns went to the provider as context
    msgs = llm.stats()["last_request"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"], msgs
    assert msgs[1]["content"] == "first" and msgs[3]["content"] == "second", msgs
    assert msgs[2]["content"] == history(srv, sid)[1]["message"], msgs


def test_two_subscribers_see_the_same_sequence(soma, llm):
    llm.control(chunks=20, delay_ms=10)
    srv = soma()
    sid = post_message(srv, "warm up")["session_id"]
    wait_terminal(srv, sid)
    with open_stream(srv, sid) as a, open_stream(srv, sid) as b:
        post_message(srv, "to both", session_id=sid)
        fa, fb = read_reply(a), read_reply(b)
        check_reply(fa, sid)
        check_reply(fb, sid)
        assert _data_frames(a) == _data_frames(b), "the subscribers saw different frames"
        assert len(fa) >= 20, fa


def test_reconnect_mid_reply_without_gap_or_repeat(soma, llm):
    llm.control(chunks=20, delay_ms=30)  # the reply takes about a second
    srv = soma()
    sid = post_message(srv, "take your time")["session_id"]
    with open_stream(srv, sid, after=0) as s:
        part1 = s.events(lambda e: sum(1 for f in s.frames_read if f.data and '"assistant.delta"' in f.data) >= 3)
    last_id = part1[-1][0]
    assert parse_cursor(last_id)[2], f"the last frame read should be a delta: {part1[-1]}"
    # still mid-reply: nothing final stored yet
    assert [e["type"] for e in history(srv, sid)] == ["user"], "the reply finished before the reconnect"
    with open_stream(srv, sid, last_event_id=last_id) as s2:
        part2 = read_reply(s2)
    assert part2[0][0] != last_id
    both = part1 + part2
    check_increasing([i for i, _ in both])
    final = check_reply(both, sid)
    assert final["message"].endswith("You said: take your time")

    # after the final, resuming from a delta still replays the remaining deltas and the final
    k = next(i for i, (_, e) in enumerate(both) if e["type"] == "assistant.delta" and e["metadata"]["stream_index"] == 5)
    with open_stream(srv, sid, last_event_id=both[k][0]) as s3:
        replay = read_reply(s3)
    assert replay == both[k + 1:], "Last-Event-ID replay after the final differs"
    # the same with ?after=
    with open_stream(srv, sid, after=both[k][0]) as s4:
        replay = read_reply(s4)
    assert replay == both[k + 1:], "?after= replay after the final differs"
    # and from a committed cursor: everything after the user event
    with open_stream(srv, sid, last_event_id="1") as s5:
        replay = read_reply(s5)
    assert replay == both[1:]


def test_keepalive_frames(soma, llm):
    srv = soma("stream.keepalive_s=1")
    sid = post_message(srv, "hello")["session_id"]
    wait_terminal(srv, sid)
    with open_stream(srv, sid) as s:
        t0 = time.monotonic()
        for _ in range(2):
            f = s.next_frame(timeout=3)
            assert f is not None and f.id is None, f"a keepalive must carry no id: {f}"
            assert f.json() == {"type": "system.keepalive", "session_id": sid}, f
        assert 1.5 <= time.monotonic() - t0 <= 4, time.monotonic() - t0


def test_stream_errors(soma, llm):
    srv = soma()
    sid = post_message(srv, "hello")["session_id"]
    wait_terminal(srv, sid)
    check_envelope(open_stream(srv, "no-such-session", expect=404), 404)
    for bad in ("abc", "1.", ".1", "-1", "1.2.3", "1 2", "99999999999999999999"):
        r = open_stream(srv, sid, last_event_id=bad, expect=400)
        check_envelope(r, 400)
    r = open_stream(srv, sid, after="x", expect=400)
    check_envelope(r, 400)
    # the server is still fine
    assert http().get(srv.url + "/v1/health", timeout=5).json()["status"] == "ok"


def test_sigterm_ends_open_streams(soma, llm):
    srv = soma("shutdown.grace_s=5")
    sid = post_message(srv, "hello")["session_id"]
    wait_terminal(srv, sid)
    streams = [open_stream(srv, sid), open_stream(srv, sid, after=0)]
    try:
        read_reply(streams[1])
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        for s in streams:
            f = s.next_frame(timeout=6)
            assert f is None, f"a frame instead of the end of the stream: {f}"
        assert srv.wait_exit(timeout=6) == 0, srv.log_text()
        srv.checked = True
        assert time.monotonic() - t0 < 5, "open streams held the shutdown for the whole grace period"
    finally:
        for s in streams:
            s.close()


def test_head_on_the_stream_sends_no_body(soma, llm):
    """HEAD answers with the head of the GET and no content (RFC 9110 9.3.2): the next
    response on the connection must start right after it."""
    srv = soma()
    sid = post_message(srv, "hello")["session_id"]
    wait_terminal(srv, sid)
    for path in (f"/v1/sessions/{sid}/events?after=0", "/v1/sessions",
                 f"/v1/sessions/{sid}/events?stream=true&after=0"):
        with srv.connect(timeout=3) as c:
            c.send(f"HEAD {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
                   + b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: after-head\r\n\r\n")
            r = c.read_response(head_request=True)
            assert r.status == 200, r
            if (r.header("connection") or "").lower() == "close":
                assert c.closed_by_peer(timeout=2), f"HEAD {path}: bytes after the head"
                continue
            try:
                nxt = c.read_response(timeout=2)
            except (AssertionError, OSError) as e:
                raise AssertionError(f"HEAD {path}: content after the head of a HEAD response ({e}); "
                                     f"bytes: {c.buf[:120]!r}")
            assert nxt.status == 200 and nxt.header("x-request-id") == "after-head", nxt


def _collect(s, timeout):
    """Frames until a final/error or the timeout; never raises for a timeout."""
    try:
        read_reply(s, timeout=timeout)
    except AssertionError:
        pass
    return [f for f in s.frames_read if f.data is not None]


def test_recreated_session_streams_only_its_own_events(soma, llm):
    """A session deleted and created again under the same id starts over: its stream shows the
    new conversation only (nothing of the deleted one), and the reply arrives."""
    srv = soma()
    sid = "recycled-id"
    post_message(srv, "old words one", session_id=sid)
    wait_terminal(srv, sid)
    post_message(srv, "old words two", session_id=sid)
    wait_terminal(srv, sid, count=2)
    assert http().delete(f"{srv.url}/v1/sessions/{sid}").status_code == 200
    llm.control(text="brand new reply")
    out = post_message(srv, "new words", session_id=sid)
    assert out["seq"] == 1, out
    with open_stream(srv, sid, after=0, timeout=5) as s:
        frames = _collect(s, 3)
    text = "".join(json.loads(f.data)["message"] for f in frames)
    assert "old words" not in text, f"the deleted conversation's events were replayed: {text!r}"
    got = [(f.id, json.loads(f.data)) for f in frames]
    assert got and got[-1][1]["type"] == "assistant.final", f"no reply on the stream: {[(i, e['type']) for i, e in got]}"
    final = check_reply(got, sid)
    assert final["message"] == "brand new reply"
    # a live stream on the recreated session gets the next reply too
    llm.control(text="second new reply")
    with open_stream(srv, sid, timeout=5) as s:
        post_message(srv, "more new words", session_id=sid)
        frames = _collect(s, 3)
    got = [(f.id, json.loads(f.data)) for f in frames]
    assert got and got[-1][1]["type"] == "assistant.final", f"no live reply: {[(i, e['type']) for i, e in got]}"
    assert check_reply(got, sid)["message"] == "second new reply"


def test_deleted_session_events_do_not_reach_another_tenant(soma, tmp_path, llm):
    """Tenant a deletes a session; tenant b creates one under the same id (it is free now):
    b's stream must not carry anything of a's conversation."""
    data = tmp_path / "data"
    ka, kb = create_key(data, tmp_path, "a"), create_key(data, tmp_path, "b")
    srv = soma()
    sid = "shared-id"
    post_message(srv, "a-secret-7781", token=ka, session_id=sid)
    wait_terminal(srv, sid, token=ka)
    assert http().delete(f"{srv.url}/v1/sessions/{sid}", headers=bearer(ka)).status_code == 200
    post_message(srv, "hello from b", token=kb, session_id=sid)
    with open_stream(srv, sid, after=0, token=kb, timeout=5) as s:
        frames = _collect(s, 3)
    text = "".join(json.loads(f.data)["message"] for f in frames)
    assert "a-secret-7781" not in text, f"tenant b received tenant a's deleted reply: {text!r}"
    assert [json.loads(f.data)["type"] for f in frames][-1] == "assistant.final", frames


def test_reset_session_streams_nothing_of_before(soma, llm):
    """After a reset the stream from the start carries only what came after it."""
    srv = soma()
    sid = post_message(srv, "before the reset")["session_id"]
    wait_terminal(srv, sid)
    assert http().post(f"{srv.url}/v1/sessions/{sid}/reset").status_code == 200
    llm.control(text="after reset reply")
    post_message(srv, "after the reset", session_id=sid)
    with open_stream(srv, sid, after=0, timeout=5) as s:
        frames = _collect(s, 3)
    text = "".join(json.loads(f.data)["message"] for f in frames)
    assert "before the reset" not in text, f"the stream replayed events removed by the reset: {text!r}"
    got = [(f.id, json.loads(f.data)) for f in frames]
    assert got[0][1]["type"] == "user" and got[0][1]["message"] == "after the reset", got[0]
    assert check_reply(got, sid)["message"] == "after reset reply"


def test_slow_reader_is_cut_off_and_resumes(soma, llm):
    """A subscriber that does not read is disconnected once stream.max_buffer bytes wait for it
    (the server does not buffer without bound); it resumes from its last id with nothing lost."""
    text = "".join(f"{i:05d} " for i in range(40000))  # 240 KB of reply, in deltas of 6 KB
    llm.control(text=text, chunks=40)
    srv = soma("stream.max_buffer=4096")
    sid = post_message(srv, "a lot please")["session_id"]
    s = open_stream(srv, sid, after=0, rcvbuf=4096)
    try:
        wait_terminal(srv, sid, timeout=15)  # the reply is complete while the reader sleeps
        time.sleep(0.3)
        part1 = []
        while True:
            f = s.next_frame(timeout=5)
            if f is None:
                break
            if f.data is not None:
                part1.append((f.id, json.loads(f.data)))
    finally:
        s.close()
    assert part1 and part1[-1][1]["type"] != "assistant.final", (
        "the slow reader got the whole reply: the server buffered it all instead of ending the stream")
    # resume until the final; a replay bigger than max_buffer may be cut again, but every
    # connection must make progress
    frames, reconnects = list(part1), 0
    while frames[-1][1]["type"] != "assistant.final":
        reconnects += 1
        assert reconnects <= 1000, "no end to the reconnects"
        before = len(frames)
        with open_stream(srv, sid, last_event_id=frames[-1][0]) as s2:
            while True:
                f = s2.next_frame(timeout=10)
                if f is None:
                    break
                if f.data is not None:
                    frames.append((f.id, json.loads(f.data)))
                    if frames[-1][1]["type"] == "assistant.final":
                        break
        assert len(frames) > before, f"a resumed connection made no progress after {frames[-1][0]}"
    final = check_reply(frames, sid)
    assert final["message"] == text
    assert http().get(srv.url + "/v1/health").json()["status"] == "ok"


def test_overlapping_replies_in_one_session(soma, llm):
    """Two messages in quick succession: both replies are generated at once; the stream keeps
    strictly increasing ids and each generation's deltas add up to its own final."""
    llm.control(chunks=20, delay_ms=20)
    srv = soma()
    sid = post_message(srv, "warm up")["session_id"]
    wait_terminal(srv, sid)
    with open_stream(srv, sid) as s:
        post_message(srv, "first question", session_id=sid)
        post_message(srv, "second question", session_id=sid)
        finals = 0
        frames = []
        while finals < 2:
            got = read_reply(s, timeout=10)
            frames += got
            finals += sum(e["type"] == "assistant.final" for _, e in got)
    check_increasing([i for i, _ in frames])
    by_gen = {}
    for _, e in frames:
        if e["type"].startswith("assistant."):
            by_gen.setdefault(e["metadata"]["generation_id"], []).append(e)
    assert len(by_gen) == 2, list(by_gen)
    for gen, evs in by_gen.items():
        deltas = [e for e in evs if e["type"] == "assistant.delta"]
        final = [e for e in evs if e["type"] == "assistant.final"]
        assert len(final) == 1 and evs[0]["type"] == "assistant.thinking", [e["type"] for e in evs]
        assert [d["metadata"]["stream_index"] for d in deltas] == list(range(len(deltas)))
        assert "".join(d["message"] for d in deltas) == final[0]["message"], gen
    hist = history(srv, sid)
    assert [e["seq"] for e in hist] == [1, 2, 3, 4, 5, 6], hist
    # the same sequence replayed from the start after the fact
    with open_stream(srv, sid, after=2) as s:
        replay = []
        while sum(e["type"] == "assistant.final" for _, e in replay) < 2:
            replay += read_reply(s, timeout=5)
    assert replay == frames


def test_head_on_the_stream_of_an_unknown_session_is_404(soma):
    srv = soma()
    r = httpx.head(f"{srv.url}/v1/sessions/no-such-session/events?stream=true")
    assert r.status_code == 404 and r.content == b""


def test_long_replay_reaches_a_reading_client_in_one_connection(soma, llm):
    """A replay bigger than stream.max_buffer is paced by the client's reading (it waits for the
    output to drain) instead of ending the stream: a client that reads gets it all at once."""
    text = "".join(f"{i:05d} " for i in range(40000))  # 240 KB of reply, in deltas of 6 KB
    llm.control(text=text, chunks=40)
    srv = soma("stream.max_buffer=16384")
    sid = post_message(srv, "a lot please")["session_id"]
    wait_terminal(srv, sid, timeout=15)
    s = open_stream(srv, sid, after=0)
    frames = []
    try:
        while not frames or frames[-1]["type"] != "assistant.final":
            f = s.next_frame(timeout=5)
            assert f is not None, f"the stream ended after {len(frames)} events instead of pacing the replay"
            if f.data is not None:
                frames.append(json.loads(f.data))
    finally:
        s.close()
    deltas = "".join(e["message"] for e in frames if e["type"] == "assistant.delta")
    assert deltas == frames[-1]["message"] == text
