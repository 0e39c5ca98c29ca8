"""PostgreSQL only: two nodes deleting two sessions that name one file at once. File X bound to A
and named by A and B: deleting A hands X to B while the delete of B commits meanwhile. Before, the
hand-over read B's reference in its own snapshot and committed after B was gone: the attachment
stayed, bound to a session that no longer existed and named by none (its row and its bytes leaked).
Now a delete locks its session first, then the files it is bound to or names (by id): the two
deletes of a shared file run one after the other (pg_chat.c, op_session_delete).

The interleaving is forced: the test holds A's session row, so the delete of A waits (before, at
its last statement, the hand-over done; now, at its first), and the delete of B runs meanwhile."""

import threading

import httpx
import pytest

import e2e_util
from e2e_util import post_message, store_query, store_url, wait_until

pytestmark = pytest.mark.postgres_only


def upload(srv, name, body):
    r = httpx.post(f"{srv.url}/v1/uploads", files=[("files", (name, body, "text/plain"))], timeout=10)
    assert r.status_code == 200, r.text
    return r.json()[0]


def lock_waits(db):
    return store_query(db, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database()")[0][0]


def test_deleting_two_sessions_sharing_a_file_at_once_leaves_no_orphan(soma, tmp_path):
    data = tmp_path / "data"
    db = store_url(data)
    a, b = soma(f"store.url={db}", role="gateway"), soma(f"store.url={db}", role="gateway")
    f = upload(a, "shared.txt", b"shared by two chats\n")
    post_message(a, "first", session_id="race-a", attachments=[f["id"]])
    post_message(b, "second", session_id="race-b", attachments=[f["id"]])
    assert store_query(data, "SELECT session_id FROM attachments WHERE id = ?", (f["id"],)) == [("race-a",)]

    hold = e2e_util.PG.connect(db.rsplit("/", 1)[1])  # a transaction holding A's session row
    try:
        hold.cursor().execute("SELECT 1 FROM sessions WHERE id = 'race-a' FOR UPDATE")
        statuses = {}
        t = threading.Thread(target=lambda: statuses.update(
            a=httpx.delete(f"{a.url}/v1/sessions/race-a", timeout=30).status_code))
        t.start()
        wait_until(lambda: lock_waits(data) >= 1, 10, what="the delete of A waiting on its row")
        statuses["b"] = httpx.delete(f"{b.url}/v1/sessions/race-b", timeout=30).status_code
    finally:
        hold.rollback()
        hold.close()
    t.join(30)
    assert statuses == {"a": 200, "b": 200}, statuses
    assert store_query(data, "SELECT id FROM sessions WHERE id IN ('race-a', 'race-b')") == []
    left = store_query(data, "SELECT id, session_id FROM attachments WHERE id = ?", (f["id"],))
    assert left == [], f"an attachment of no session: {left}"
    assert store_query(data, "SELECT * FROM attachment_refs") == []
    r = httpx.get(f"{a.url}{f['path']}", timeout=10)
    assert r.status_code == 404, r.status_code
