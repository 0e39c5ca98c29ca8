"""Long sessions: the history and the JSON event pages of a session whose messages add up to more
than a request's arena (about http.max_header + http.max_body + 64 KB) are served whole, and an
event page past its byte budget (8 MiB) ends early with a cursor to the rest, never empty."""

from e2e_util import http, post_message

BIG = 200 * 1024


def _text(i, size):
    return (f"message {i} " + "x" * size)[:size]


def _user_messages(events):
    return [e["message"] for e in events if e["type"] == "user"]


def _all_pages(srv, sid, limit):
    """Every page of GET /events?limit= from the start, following next_cursor: [events...] per page."""
    pages, after = [], 0
    while True:
        r = http().get(f"{srv.url}/v1/sessions/{sid}/events?after={after}&limit={limit}", timeout=30)
        assert r.status_code == 200, r.text[:500]
        body = r.json()
        assert body["session_id"] == sid, body.keys()
        pages.append(body["events"])
        if body["next_cursor"] is None:
            return pages
        assert body["events"], f"an empty page with next_cursor {body['next_cursor']}"
        assert body["next_cursor"] == str(body["events"][-1]["seq"]), body["next_cursor"]
        after = int(body["next_cursor"])
        assert len(pages) < 100, "the pages do not end"


def test_history_and_events_of_a_long_session(soma):
    srv = soma()
    sent = [_text(0, BIG)]
    sid = post_message(srv, sent[0])["session_id"]
    for i in range(1, 6):
        sent.append(_text(i, BIG))
        post_message(srv, sent[i], session_id=sid)
    r = http().get(f"{srv.url}/v1/sessions/{sid}/history?limit=200", timeout=30)
    assert r.status_code == 200, r.text[:500]
    assert _user_messages(r.json()["events"]) == sent
    r = http().get(f"{srv.url}/v1/sessions/{sid}/events?limit=200", timeout=30)
    assert r.status_code == 200, r.text[:500]
    assert _user_messages(r.json()["events"]) == sent
    seqs = [e["seq"] for e in r.json()["events"]]
    assert seqs == sorted(seqs), seqs


def test_event_page_past_its_byte_budget_continues_by_cursor(soma):
    srv = soma(llm=False)  # no replies to generate: only the user events matter here
    size = 250 * 1024  # a message holds at most 256 KB
    sent = [_text(0, size)]
    sid = post_message(srv, sent[0])["session_id"]
    for i in range(1, 40):  # ~10 MB of user messages: more than one 8 MiB page
        sent.append(_text(i, size))
        post_message(srv, sent[i], session_id=sid)
    pages = _all_pages(srv, sid, 1000)
    assert len(pages) >= 2, f"{len(pages)} page(s) for ~10 MB of events"
    events = [e for p in pages for e in p]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), f"events repeat or go back across pages: {seqs}"
    assert _user_messages(events) == sent
    r = http().get(f"{srv.url}/v1/sessions/{sid}/history?limit=200", timeout=30)
    assert r.status_code == 200, r.text[:500]
    assert _user_messages(r.json()["events"]) == sent
