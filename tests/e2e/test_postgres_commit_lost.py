"""PostgreSQL only: a message lane whose connection is cut after it sent a transaction, before
PostgreSQL's answer (COMMIT's included) came back, does not know whether it committed. It asks
again on a new connection: a message whose event row is there is answered 200 with its seq (before:
503 though committed, so the client's retry stored the turn twice and the model answered twice)."""

import time
import uuid
from urllib.parse import urlparse

import httpx
import pytest

from e2e_util import wait_terminal
from test_canvas_outage import CutProxy

pytestmark = pytest.mark.postgres_only


def test_a_message_whose_commit_answer_was_lost_is_found_committed(soma, request):
    import e2e_util
    db = e2e_util.PG.new_database("lost_" + uuid.uuid4().hex[:12])
    upstream = urlparse(db).port
    proxy = CutProxy(upstream)
    request.addfinalizer(proxy.close)
    srv = soma("store.url=" + db.replace(f":{upstream}/", f":{proxy.port}/"), "queue.visibility_timeout_s=5")
    marker = "cut-" + uuid.uuid4().hex
    proxy.arm(marker.encode(), True)  # PostgreSQL runs the lane's transaction; its answer is dropped
    r = httpx.post(srv.url + "/v1/session/message", json={"session_id": "lost-s1", "message": marker}, timeout=30)
    assert r.status_code == 200, r.text
    assert proxy.rule is None, "the cut happened"
    events = wait_terminal(srv, "lost-s1", timeout=30)
    users = [e for e in events if e["type"] == "user"]
    assert len(users) == 1 and users[0]["seq"] == r.json()["seq"], events
    time.sleep(6)  # past the visibility timeout: the reply is not made twice
    events = httpx.get(srv.url + "/v1/sessions/lost-s1/history", timeout=10).json()["events"]
    assert sum(e["type"] == "assistant.final" for e in events) == 1, [e["type"] for e in events]
