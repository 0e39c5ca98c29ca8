"""Session endpoints: list pagination, get, JSON event pages, history, delete, reset, pause;
tenant isolation; and bad input, each answered with its 4xx envelope and changing nothing."""

import json

import pytest

from e2e_util import (http, bearer, check_envelope, create_key, history, open_stream, post_message, raw_request,
                      wait_terminal)

MAX_BODY = 1024


# ---- a shared server for the bad-input tests ----------------------------------------------------


@pytest.fixture(scope="module")
def srv(module_soma):
    return module_soma(f"http.max_body={MAX_BODY}")


@pytest.fixture(scope="module")
def baseline(srv):
    """A session with one finished exchange."""
    sid = post_message(srv, "baseline")["session_id"]
    wait_terminal(srv, sid)
    return sid


def _state(srv, sid):
    r = http().get(srv.url + "/v1/sessions?limit=200", timeout=5)
    assert r.status_code == 200, r.text
    s = http().get(f"{srv.url}/v1/sessions/{sid}", timeout=5)
    assert s.status_code == 200, s.text
    return r.json(), s.json(), history(srv, sid)


def _post_raw(srv, path, body, ctype="application/json"):
    return http().post(srv.url + path, content=body, headers={"Content-Type": ctype}, timeout=5)


def _nested(depth):
    """A message body whose metadata makes the whole body `depth` levels deep."""
    inner = "1"
    for i in range(depth - 2):
        inner = "[" + inner + "]"
    return ('{"message":"deep","metadata":{"k":' + inner + "}}").encode()


BAD_MESSAGES = [
    ("malformed", b'{"message": "hi"', 400, "invalid_json"),
    ("not_json", b"message=hi", 400, "invalid_json"),
    ("empty_body", b"", 400, None),
    ("array", b'[{"message": "hi"}]', 400, "invalid_json"),
    ("string", b'"hi"', 400, "invalid_json"),
    ("null", b"null", 400, "invalid_json"),
    ("message_number", b'{"message": 5}', 400, "invalid_message"),
    ("message_null", b'{"message": null}', 400, "invalid_message"),
    ("message_object", b'{"message": {"text": "hi"}}', 400, "invalid_message"),
    ("message_empty", b'{"message": ""}', 400, "invalid_message"),
    ("message_whitespace", b'{"message": " \\n\\t\\r  "}', 400, "invalid_message"),
    ("message_missing", b'{"metadata": {}}', 400, "invalid_message"),
    ("message_nul", b'{"message": "a\\u0000b"}', 400, None),
    ("attachments_string", b'{"message": "hi", "attachments": "x"}', 400, "invalid_attachments"),
    ("attachments_numbers", b'{"message": "hi", "attachments": [1]}', 400, "invalid_attachments"),
    ("attachments_bad_id", b'{"message": "hi", "attachments": ["../etc"]}', 400, "invalid_attachments"),
    ("metadata_array", b'{"message": "hi", "metadata": []}', 400, "invalid_metadata"),
    ("metadata_string", b'{"message": "hi", "metadata": "m"}', 400, "invalid_metadata"),
    ("persona_number", b'{"message": "hi", "persona_id": 5}', 400, "invalid_persona_id"),
    ("session_id_slash", b'{"message": "hi", "session_id": "a/b"}', 400, "invalid_session_id"),
    ("session_id_space", b'{"message": "hi", "session_id": "a b"}', 400, "invalid_session_id"),
    ("session_id_dots", b'{"message": "hi", "session_id": ".."}', 400, "invalid_session_id"),
    ("session_id_unicode", '{"message": "hi", "session_id": "s\u00e9"}'.encode(), 400, "invalid_session_id"),
    ("session_id_long", b'{"message": "hi", "session_id": "' + b"a" * 65 + b'"}', 400, "invalid_session_id"),
    ("session_id_empty", b'{"message": "hi", "session_id": ""}', 400, "invalid_session_id"),
    ("session_id_number", b'{"message": "hi", "session_id": 7}', 400, "invalid_session_id"),
    ("invalid_utf8", b'{"message": "caf\xc3"}', 400, "invalid_json"),
    ("invalid_utf8_overlong", b'{"message": "\xc0\xaf"}', 400, "invalid_json"),
    ("invalid_utf8_surrogate", b'{"message": "\xed\xa0\x80"}', 400, "invalid_json"),
    ("lone_surrogate_escape", b'{"message": "\\ud800"}', 400, "invalid_json"),
    ("duplicate_keys", b'{"message": "a", "message": "b"}', 400, "invalid_json"),
    ("too_deep", _nested(33), 400, "invalid_json"),
    ("too_deep_in_string_not_counted_but_bad_json", b'{"message": "[[[[", ', 400, "invalid_json"),
    ("unknown_attachment", b'{"message": "hi", "attachments": ["no-such-attachment"]}', 404, "not_found"),
]


@pytest.mark.parametrize("name,body,status,code", BAD_MESSAGES, ids=[b[0] for b in BAD_MESSAGES])
def test_bad_message_changes_nothing(srv, baseline, llm, name, body, status, code):
    before = _state(srv, baseline)
    r = _post_raw(srv, "/v1/session/message", body)
    check_envelope(r, status, code)
    # the same against an existing session
    if body.startswith(b"{") and b'"session_id"' not in body and name != "too_deep":
        with_sid = body[:-1] + f', "session_id": "{baseline}"}}'.encode() if body.endswith(b"}") else body
        r = _post_raw(srv, "/v1/session/message", with_sid)
        check_envelope(r, status, code)
    assert _state(srv, baseline) == before
    assert llm.stats()["requests"] == 0, "a rejected message reached the provider"


def test_nesting_limit_boundary(srv, llm):
    """32 levels are accepted, 33 are not (test_bad_message_changes_nothing)."""
    out = post_message(srv, "deep", metadata=json.loads(_nested(32))["metadata"])
    wait_terminal(srv, out["session_id"])


def test_oversized_body(srv, baseline):
    before = _state(srv, baseline)
    body = json.dumps({"message": "x" * (2 * MAX_BODY), "session_id": baseline}).encode()
    r = _post_raw(srv, "/v1/session/message", body)
    check_envelope(r, 413)
    r = raw_request(srv, b"POST /v1/session/message HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n")
    check_envelope(r, 413)
    assert _state(srv, baseline) == before


@pytest.mark.parametrize("body,code", [
    (b'{"action": "dance"}', "unknown_action"),
    (b'{"action": 5}', "unknown_action"),
    (b'{"action": ""}', "unknown_action"),
    (b'{}', "unknown_action"),
    (b'{"action": "SUMMARIZE"}', "unknown_action"),
    (b'[]', "invalid_json"),
    (b'{"action": "summarize", "session_id": "a/b"}', "invalid_session_id"),
    (b'{"action": "summarize", "metadata": []}', "invalid_metadata"),
])
def test_bad_action_changes_nothing(srv, baseline, llm, body, code):
    before = _state(srv, baseline)
    check_envelope(_post_raw(srv, "/v1/session/action", body), 400, code)
    assert _state(srv, baseline) == before
    assert llm.stats()["requests"] == 0


def test_unknown_session_is_404_everywhere(srv, baseline):
    before = _state(srv, baseline)
    base = srv.url + "/v1/sessions/no-such-session"
    for method, url, body in [
        ("GET", base, None),
        ("DELETE", base, None),
        ("GET", base + "/history", None),
        ("GET", base + "/events", None),
        ("GET", base + "/events?after=0&limit=5", None),
        ("POST", base + "/reset", None),
        ("POST", base + "/pause", {"paused": True}),
    ]:
        r = http().request(method, url, json=body, timeout=5)
        check_envelope(r, 404, "not_found")
    check_envelope(open_stream(srv, "no-such-session", expect=404), 404)
    # ids that cannot be session ids are not found either
    for bad in ("a%20b", "%2e%2e", "x" * 65, "a%2Fb"):
        r = http().get(f"{srv.url}/v1/sessions/{bad}", timeout=5)
        assert r.status_code in (400, 404), r.text
        check_envelope(r, r.status_code)
    assert _state(srv, baseline) == before


def test_unknown_route(srv, baseline):
    before = _state(srv, baseline)
    for method, path in [("POST", "/v1/session/messages"), ("GET", "/v1/sessionz"),
                         ("POST", "/v1/sessions/x/explode"), ("GET", "/v1/sessions/x/nothing-here"),
                         ("POST", "/v1/session")]:
        r = http().request(method, srv.url + path, json={"message": "hi"}, timeout=5)
        check_envelope(r, 404, "not_found")
    # a known route with another method
    r = http().get(srv.url + "/v1/session/message", timeout=5)
    check_envelope(r, 405)
    assert "POST" in r.headers.get("allow", ""), r.headers
    assert _state(srv, baseline) == before


@pytest.mark.parametrize("path", [
    "/v1/sessions?limit=0", "/v1/sessions?limit=-1", "/v1/sessions?limit=abc", "/v1/sessions?limit=",
    "/v1/sessions?limit=201", "/v1/sessions?limit=1.5", "/v1/sessions?limit=99999999999999999999",
    "/v1/sessions?cursor=garbage", "/v1/sessions?cursor=1:", "/v1/sessions?cursor=" + "9" * 300,
    "/v1/sessions/{sid}/events?limit=0", "/v1/sessions/{sid}/events?limit=1001", "/v1/sessions/{sid}/events?limit=x",
    "/v1/sessions/{sid}/events?after=-1", "/v1/sessions/{sid}/events?after=x", "/v1/sessions/{sid}/events?after=",
    "/v1/sessions/{sid}/events?after=1.5",
    "/v1/sessions/{sid}/history?limit=0", "/v1/sessions/{sid}/history?limit=1001",
    "/v1/sessions/{sid}/history?limit=ten",
])
def test_bad_limit_and_cursor(srv, baseline, path):
    r = http().get(srv.url + path.format(sid=baseline), timeout=5)
    check_envelope(r, 400)


def test_pause(srv, baseline):
    url = f"{srv.url}/v1/sessions/{baseline}/pause"
    before = _state(srv, baseline)
    for body in ({"paused": "x"}, {"paused": 1}, {"paused": None}, {}, []):
        check_envelope(http().post(url, json=body, timeout=5), 400)
    check_envelope(http().post(url, content=b"{", timeout=5), 400)
    assert _state(srv, baseline) == before
    r = http().post(url, json={"paused": True}, timeout=5)
    assert r.status_code == 200, r.text
    assert r.json() == {"session_id": baseline, "status": "paused"}
    assert http().get(f"{srv.url}/v1/sessions/{baseline}", timeout=5).json()["paused"] is True
    r = http().post(url, json={"paused": False}, timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "resumed", r.text
    assert http().get(f"{srv.url}/v1/sessions/{baseline}", timeout=5).json()["paused"] is False
    assert history(srv, baseline) == before[2]


# ---- servers of their own -------------------------------------------------------------------------


def test_session_get_and_event_pages(soma):
    srv = soma()
    out = post_message(srv, "one", persona_id="helper", metadata={"k": "v"})
    sid = out["session_id"]
    wait_terminal(srv, sid)
    post_message(srv, "two", session_id=sid)
    hist = wait_terminal(srv, sid, count=2)
    assert [e["type"] for e in hist] == ["user", "assistant.final"] * 2, hist
    assert [e["seq"] for e in hist] == [1, 2, 3, 4]
    assert hist[0]["persona_id"] == "helper" and hist[0]["metadata"] == {"k": "v"}, hist[0]
    s = http().get(f"{srv.url}/v1/sessions/{sid}", timeout=5).json()
    assert s["session_id"] == sid and s["persona_id"] == "helper" and s["paused"] is False, s
    assert s["last_seq"] == 4, s
    # JSON pages of committed events follow next_cursor to the end
    got, after, pages = [], None, 0
    while True:
        q = "?limit=3" + (f"&after={after}" if after is not None else "")
        r = http().get(f"{srv.url}/v1/sessions/{sid}/events{q}", timeout=5)
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {"session_id", "events", "next_cursor"} and page["session_id"] == sid, page
        got += page["events"]
        pages += 1
        after = page["next_cursor"]
        if after is None:
            break
        assert after == str(page["events"][-1]["seq"]), page
        assert pages < 5
    assert got == hist
    r = http().get(f"{srv.url}/v1/sessions/{sid}/events?after=2", timeout=5).json()
    assert [e["seq"] for e in r["events"]] == [3, 4] and r["next_cursor"] is None, r
    assert history(srv, sid, limit=2) == hist[2:], "history?limit= keeps the newest events"


def test_client_chosen_session_id_and_burst(soma):
    """A client may name a new session; ten concurrent messages to it all get distinct seqs and
    replies."""
    import concurrent.futures

    srv = soma()
    sid = "client-Chosen_id-1"
    outs = [post_message(srv, "first", session_id=sid)]
    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        outs += list(ex.map(lambda i: post_message(srv, f"burst {i}", session_id=sid), range(9)))
    assert {o["session_id"] for o in outs} == {sid}
    seqs = [o["seq"] for o in outs]
    assert len(set(seqs)) == 10, seqs
    evs = wait_terminal(srv, sid, count=10, timeout=20)
    assert len(evs) == 20, [e["type"] for e in evs]
    assert [e["seq"] for e in evs] == list(range(1, 21)), [e["seq"] for e in evs]
    users = {e["seq"]: e for e in evs if e["type"] == "user"}
    assert set(seqs) <= set(users), (seqs, sorted(users))
    assert sum(e["type"] == "assistant.final" for e in evs) == 10


def test_sessions_list_pagination(soma):
    srv = soma()
    created = []
    for i in range(5):
        sid = post_message(srv, f"session {i}")["session_id"]
        wait_terminal(srv, sid)  # the reply updates the session: wait so the order is fixed
        created.append(sid)
    seen, cursor, pages = [], None, []
    while True:
        q = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        r = http().get(srv.url + "/v1/sessions" + q, timeout=5)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"sessions", "next_cursor"}, body
        assert len(body["sessions"]) <= 2
        pages.append(len(body["sessions"]))
        seen += [s["session_id"] for s in body["sessions"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor, body
        assert len(pages) < 10, "next_cursor never ends"
    assert pages == [2, 2, 1], pages
    assert len(seen) == len(set(seen)), f"duplicates: {seen}"
    assert seen == list(reversed(created)), "not all sessions, or not newest first"
    full = http().get(srv.url + "/v1/sessions", timeout=5).json()
    assert [s["session_id"] for s in full["sessions"]] == seen and full["next_cursor"] is None
    updated = [s["updated_at"] for s in full["sessions"]]
    assert updated == sorted(updated, reverse=True), updated


def test_delete_and_reset(soma):
    srv = soma()
    keep = post_message(srv, "keep me")["session_id"]
    gone = post_message(srv, "delete me")["session_id"]
    wait_terminal(srv, keep)
    wait_terminal(srv, gone)
    keep_hist = history(srv, keep)

    r = http().post(f"{srv.url}/v1/sessions/{keep}/reset", timeout=5)
    assert r.status_code == 200 and r.json() == {"session_id": keep, "status": "reset"}, r.text
    assert history(srv, keep) == [], "reset must remove the events"
    s = http().get(f"{srv.url}/v1/sessions/{keep}", timeout=5)
    assert s.status_code == 200 and s.json()["session_id"] == keep, s.text
    assert http().get(f"{srv.url}/v1/sessions/{keep}/events?after=0", timeout=5).json()["events"] == []
    # the conversation goes on after a reset, without the old turns as context
    post_message(srv, "fresh start", session_id=keep)
    evs = wait_terminal(srv, keep)
    assert [e["message"] for e in evs][0] == "fresh start" and len(evs) == 2, evs
    assert not {e["event_id"] for e in evs} & {e["event_id"] for e in keep_hist}

    r = http().delete(f"{srv.url}/v1/sessions/{gone}", timeout=5)
    assert r.status_code == 200 and r.json() == {"session_id": gone, "status": "deleted"}, r.text
    for path in ("", "/history", "/events"):
        check_envelope(http().get(f"{srv.url}/v1/sessions/{gone}{path}", timeout=5), 404)
    check_envelope(http().delete(f"{srv.url}/v1/sessions/{gone}", timeout=5), 404)
    ids = [s["session_id"] for s in http().get(srv.url + "/v1/sessions", timeout=5).json()["sessions"]]
    assert ids == [keep], ids


def test_tenants_are_isolated(soma, tmp_path, llm):
    data = tmp_path / "data"
    ka = create_key(data, tmp_path, "a")
    kb = create_key(data, tmp_path, "b")
    srv = soma()
    out = post_message(srv, "secret of a", token=ka)
    sid = out["session_id"]
    wait_terminal(srv, sid, token=ka)
    hist_a = history(srv, sid, token=ka)
    requests_before = llm.stats()["requests"]

    hb = bearer(kb)
    base = f"{srv.url}/v1/sessions/{sid}"
    for method, url, body in [
        ("GET", base, None),
        ("GET", base + "/history", None),
        ("GET", base + "/events", None),
        ("GET", base + "/events?after=0", None),
        ("POST", base + "/pause", {"paused": True}),
        ("POST", base + "/reset", None),
        ("DELETE", base, None),
        ("POST", srv.url + "/v1/session/message", {"session_id": sid, "message": "let me in"}),
        ("POST", srv.url + "/v1/session/action", {"session_id": sid, "action": "summarize"}),
    ]:
        r = http().request(method, url, json=body, headers=hb, timeout=5)
        check_envelope(r, 404)
        assert sid not in r.text or "not found" in r.text, r.text
        assert "secret" not in r.text
    r = open_stream(srv, sid, token=kb, expect=404)
    check_envelope(r, 404)
    r = open_stream(srv, sid, token=kb, after=0, expect=404)
    check_envelope(r, 404)
    lst = http().get(srv.url + "/v1/sessions", headers=hb, timeout=5)
    assert lst.status_code == 200 and lst.json()["sessions"] == [], lst.text
    # b's own session works and a does not see it
    sb = post_message(srv, "b's own", token=kb)["session_id"]
    wait_terminal(srv, sb, token=kb)
    la = http().get(srv.url + "/v1/sessions", headers=bearer(ka), timeout=5).json()["sessions"]
    assert [s["session_id"] for s in la] == [sid], la
    assert la[0]["tenant"] == "a"
    # nothing b did changed a's session
    assert history(srv, sid, token=ka) == hist_a
    assert http().get(base, headers=bearer(ka), timeout=5).json()["paused"] is False
    assert llm.stats()["requests"] == requests_before + 1  # only b's own message
    # without a key nothing at all
    check_envelope(http().get(base, timeout=5), 401)


def test_foreign_attachment_is_404(soma, tmp_path, llm):
    data = tmp_path / "data"
    ka = create_key(data, tmp_path, "a")
    kb = create_key(data, tmp_path, "b")
    srv = soma()
    r = http().post(srv.url + "/v1/uploads", files={"files": ("note.txt", b"hello attachments", "text/plain")},
                   headers=bearer(ka), timeout=10)
    assert r.status_code == 200, r.text
    att = r.json()[0]["id"]
    r = http().post(srv.url + "/v1/session/message", json={"message": "see file", "attachments": [att]},
                   headers=bearer(kb), timeout=5)
    check_envelope(r, 404, "not_found")
    assert http().get(srv.url + "/v1/sessions", headers=bearer(kb), timeout=5).json()["sessions"] == []
    # the owner can use it
    out = post_message(srv, "see file", token=ka, attachments=[att])
    evs = wait_terminal(srv, out["session_id"], token=ka)
    assert evs[0]["attachments"] == [att], evs[0]
    srv.stop(timeout=15, expect=0)  # after an upload too


def test_message_field_limits(soma, llm):
    """Exactly at each limit is accepted, one past it is not (on the default http.max_body)."""
    srv = soma()
    big = "\u00e9" * (128 * 1024)  # 256 KiB of UTF-8
    out = post_message(srv, big)
    evs = wait_terminal(srv, out["session_id"], timeout=15)
    assert evs[0]["message"] == big and evs[1]["type"] == "assistant.final", evs[1]
    assert llm.stats()["requests"] == 1
    sid64 = "s" * 64
    post_message(srv, "named", session_id=sid64)
    persona = post_message(srv, "persona", persona_id="p" * 64)["session_id"]
    wait_terminal(srv, sid64)
    assert wait_terminal(srv, persona)[0]["persona_id"] == "p" * 64
    before = http().get(srv.url + "/v1/sessions?limit=200").json()
    for body, code in [
        ({"message": big + "x"}, "invalid_message"),
        ({"message": "hi", "session_id": "s" * 65}, "invalid_session_id"),
        ({"message": "hi", "persona_id": "p" * 65}, "invalid_persona_id"),
        ({"message": "hi", "attachments": ["a"] * 33}, "invalid_attachments"),
    ]:
        check_envelope(http().post(srv.url + "/v1/session/message", json=body), 400, code)
    assert http().get(srv.url + "/v1/sessions?limit=200").json() == before
