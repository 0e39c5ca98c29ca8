"""PostgreSQL only: message lanes and the writer take sessions rows in one order (by id), so they
never deadlock. Before, a lane committing messages of sessions Y then X while the writer committed
replies of X then Y waited on each other until PostgreSQL's deadlock detector cancelled one a second
later: a 503 for a message, or a reply rolled back and its LLM call made again (about once a second
with 24 clients posting to 6 sessions)."""

import threading
import time

import httpx
import pytest

from e2e_util import store_query

pytestmark = pytest.mark.postgres_only

SESSIONS = [f"lock-{i}" for i in range(6)]


def deadlocks(srv):
    return store_query(srv.data_dir, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")[0][0]


def test_lanes_and_the_writer_never_deadlock_on_sessions(soma, llm):
    llm.control(chunks=2)
    srv = soma()
    before = deadlocks(srv)
    statuses, stop = [], time.monotonic() + 12

    def client(k):
        with httpx.Client(timeout=30) as c:
            i = 0
            while time.monotonic() < stop:
                r = c.post(srv.url + "/v1/session/message",
                           json={"session_id": SESSIONS[(k + i) % len(SESSIONS)], "message": f"m{k}-{i}"})
                statuses.append(r.status_code)
                i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) > 100, len(statuses)
    assert all(s == 200 for s in statuses), {s: statuses.count(s) for s in set(statuses)}
    assert "deadlock detected" not in srv.log_text()
    assert deadlocks(srv) == before
