"""A session's updated_at (GET /v1/sessions lists newest first by it). On PostgreSQL a new event
moves it only when it is more than a second old, and never back (src/store/pg_int.h,
PG_TOUCHED): a busy session's seq bumps then leave every indexed column of its row as it was, so
PostgreSQL updates the row in place (HOT) instead of adding entries to the sessions indexes. What
the list promises - a session with a newer event (a second or more later) is listed first - holds
on both stores."""

import time

import pytest

from e2e_util import http, post_message, store_exec, store_query, wait_terminal, wait_until


def listed(srv):
    r = http().get(srv.url + "/v1/sessions", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["sessions"]


def test_a_session_with_a_later_event_is_listed_first(soma):
    srv = soma()
    a = post_message(srv, "first session")["session_id"]
    wait_terminal(srv, a)
    b = post_message(srv, "second session")["session_id"]
    wait_terminal(srv, b)
    assert [s["session_id"] for s in listed(srv)] == [b, a]
    time.sleep(1.2)  # past the second within which PostgreSQL leaves updated_at as it is
    post_message(srv, "the first again", session_id=a)
    wait_terminal(srv, a, count=2)
    sessions = listed(srv)
    assert [s["session_id"] for s in sessions] == [a, b], sessions
    assert sessions[0]["updated_at"] > sessions[1]["updated_at"], sessions


@pytest.mark.postgres_only
def test_updated_at_never_moves_back_and_seq_bumps_update_in_place(soma):
    srv = soma(role="gateway")  # no replies: only the messages below write the session
    sid = post_message(srv, "first")["session_id"]
    ahead = int(time.time() * 1000) + 3_600_000  # as another node whose clock is an hour ahead left it
    store_exec(srv.data_dir, f"UPDATE sessions SET updated_ms = {ahead} WHERE id = '{sid}'")

    def hot_updates():
        return store_query(srv.data_dir, "SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'sessions'")[0][0]

    hot0 = hot_updates()
    seqs = [post_message(srv, f"message {i}", session_id=sid)["seq"] for i in range(5)]
    assert seqs == [2, 3, 4, 5, 6], seqs
    assert store_query(srv.data_dir, "SELECT updated_ms, last_seq FROM sessions WHERE id = ?", (sid,)) == [(ahead, 6)]
    # the statistics reach pg_stat_user_tables when the lane's backend reports them (within seconds)
    wait_until(lambda: hot_updates() >= hot0 + 5, 30, interval=0.2, what="5 HOT updates of the session row")
