"""memory.driver=somabrain without memory.somabrain_url (state `down`, reason `unconfigured`,
operations.md "Memory"): writes wait in the outbox, and every view of it says so - /v1/health
components.memory_outbox (degraded, with the count), /v1/metrics/system's backlog, and /metrics'
soma_outbox_* and soma_somabrain_state - as in any other `down` state."""

import re

from e2e_util import http, wait_until
from test_memory import health, outbox, remember


def _metric(srv, name):
    text = http().get(srv.url + "/metrics", timeout=5).text
    m = re.search(r"^" + re.escape(name) + r"(\{[^}]*\})? ([0-9.e+-]+)$", text, re.M)
    return float(m.group(2)) if m else None


def test_unconfigured_somabrain_publishes_the_outbox(soma):
    srv = soma("memory.driver=somabrain")
    assert _metric(srv, "soma_somabrain_state") == 2  # down
    for i in range(2):
        assert remember(srv, {"content": f"kept {i}"})["status"] == "queued"
    assert outbox(srv)["pending"] == 2
    wait_until(lambda: health(srv)["components"]["memory_outbox"]["pending"] == 2, 15,
               what="components.memory_outbox to count the waiting writes")
    box = health(srv)["components"]["memory_outbox"]
    assert box["status"] == "degraded" and box["somabrain_state"] == "down", box
    mem = health(srv)["services"]["memory"]
    assert mem["status"] == "down" and "memory.somabrain_url" in mem["detail"], mem
    sb = http().get(srv.url + "/v1/metrics/system", timeout=5).json()["components"]["somabrain"]
    assert sb["backlog"] == 2 and sb["state"] == "down" and sb["reason"] == "unconfigured", sb
    assert _metric(srv, "soma_outbox_pending") == 2
    assert _metric(srv, "soma_outbox_oldest_age_seconds") is not None
