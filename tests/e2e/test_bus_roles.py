"""A split node on the local bus (operations.md, "Several nodes"): a `--role gateway` or `--role
worker` node with bus.driver=local sees only its own process's events, so a gateway's streams never
show a reply made on a worker node. Such a node says so: a warning at start naming bus.driver=redis,
and its `bus` service in /v1/health is `degraded` with that advice; an all-in-one node stays ok."""

import pytest

from e2e_util import http, wait_until


def _bus(srv):
    body = http().get(srv.url + "/v1/health", timeout=5).json()
    return body, body["services"]["bus"]


@pytest.mark.parametrize("role", ["gateway", "worker"])
def test_split_role_on_local_bus_is_degraded_and_logged(soma, role):
    srv = soma("bus.driver=local", role=role)
    # a service reads "started" until the health poll's first pass, a moment after start on a busy machine
    wait_until(lambda: _bus(srv)[1]["detail"] != "started", 10, what="the first health poll")
    body, bus = _bus(srv)
    assert bus["status"] == "degraded", bus
    assert "bus.driver=redis" in bus["detail"] and "other nodes" in bus["detail"], bus
    assert body["status"] == "degraded", body
    warned = [o for o in srv.logs_quiet() if o.get("level") in ("warn", "warning") and "bus.driver=redis" in o.get("msg", "")]
    assert warned, srv.log_text()


def test_all_in_one_on_local_bus_is_ok(soma):
    srv = soma()
    body, bus = _bus(srv)
    assert bus["status"] == "ok", bus
    assert not [o for o in srv.logs_quiet() if "bus.driver=redis" in o.get("msg", "")], srv.log_text()
