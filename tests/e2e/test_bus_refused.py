"""A batch Redis refuses (it answers with an error: a read-only replica, out of memory) is not sent
again and again as if Redis did not answer: the node's own streams get the events at once from
the local bus. It used to reconnect and re-send every 50 ms for 3 s, holding each reply's events."""

import time

import pytest

from e2e_util import open_stream, post_message, read_reply, wait_terminal
from servers import RedisServer

pytestmark = pytest.mark.own_store


def sent_batches(c):
    """Scripts Redis was asked to run (run or refused), from INFO commandstats."""
    stats = c.info("commandstats")
    return sum(v.get("calls", 0) + v.get("rejected_calls", 0) + v.get("failed_calls", 0)
               for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


def test_a_refused_batch_degrades_at_once(soma, llm):
    with RedisServer() as redis:
        srv = soma("bus.driver=redis", f"redis.url={redis.url(db=1)}")
        sid = post_message(srv, "warm")["session_id"]
        wait_terminal(srv, sid)
        c = redis.client()
        c.execute_command("REPLICAOF", "127.0.0.1", "1")  # read-only: every batch is refused
        time.sleep(1)
        before = sent_batches(c)
        llm.control(chunks=3)
        with open_stream(srv, sid, timeout=60) as s:
            post_message(srv, "while refused", session_id=sid)
            final = read_reply(s, timeout=60)[-1][1]
        assert final["type"] == "assistant.final", final
        sent = sent_batches(c) - before
        assert sent < 20, f"{sent} batches sent for one reply: a refused batch was sent again and again"
