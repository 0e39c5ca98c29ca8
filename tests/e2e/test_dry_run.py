"""`somaagent run --dry-run`: the plan as JSON, or exit 2 with the errors."""

import json
import socket

import pytest

from e2e_util import describe, free_port, run_cli

SECRET = "dry-run-secret-" + "z" * 30

# (name, order, critical) in start order
ALL = [("store", 10, True), ("bus", 15, True), ("auth", 20, True), ("disk", 30, False), ("policy", 35, False),
       ("memory", 40, False), ("llm", 50, False), ("queue", 55, True), ("workers", 60, True), ("http", 90, True)]
ROLE_SERVICES = {
    "all": [n for n, _, _ in ALL],
    "gateway": ["store", "bus", "auth", "disk", "policy", "memory", "queue", "http"],
    "worker": [n for n, _, _ in ALL],
}


def _dry(tmp_path, *extra, env=None):
    port = free_port()
    args = ["run", "--dry-run", "--set", f"http.listen=127.0.0.1:{port}", "--set", f"data.dir={tmp_path / 'data'}",
            *extra]
    return run_cli(args, tmp_path, env=env, timeout=10), port


def test_dry_run_plan(tmp_path):
    cp, port = _dry(tmp_path, "--set", f"auth.admin_token={SECRET}")
    assert cp.returncode == 0, describe(cp)
    plan = json.loads(cp.stdout)
    assert plan["role"] == "all"
    assert plan["listen"] == f"127.0.0.1:{port}"
    assert plan["services"] == [{"name": n, "order": o, "critical": c} for n, o, c in ALL], plan["services"]
    cfg = plan["config"]
    assert cfg["http.listen"] == f"127.0.0.1:{port}"
    assert cfg["http.max_body"] == 1048576
    assert cfg["auth.admin_token"] == "<redacted>"
    assert SECRET not in cp.stdout and SECRET not in cp.stderr
    # a dry run starts nothing: no database, no listener
    assert not (tmp_path / "data" / "somaagent.db").exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_dry_run_config_lists_every_key(tmp_path):
    cp, _ = _dry(tmp_path)
    assert cp.returncode == 0, describe(cp)
    plan = json.loads(cp.stdout)
    shown = run_cli(["config", "show", "--json"], tmp_path)
    assert set(plan["config"]) == set(json.loads(shown.stdout)), "dry-run config must list every key"
    assert plan["config"]["auth.admin_token"] == ""  # empty: nothing to redact


@pytest.mark.parametrize("role", ["gateway", "worker", "all"])
def test_dry_run_roles(tmp_path, role):
    cp, _ = _dry(tmp_path, "--role", role)
    assert cp.returncode == 0, describe(cp)
    plan = json.loads(cp.stdout)
    assert plan["role"] == role
    assert [s["name"] for s in plan["services"]] == ROLE_SERVICES[role], plan["services"]
    orders = [s["order"] for s in plan["services"]]
    assert orders == sorted(orders) and len(set(orders)) == len(orders), plan["services"]


def test_dry_run_bogus_role(tmp_path):
    cp, _ = _dry(tmp_path, "--role", "bogus")
    assert cp.returncode == 2, describe(cp)
    assert "bogus" in cp.stderr and "--role" in cp.stderr
    assert cp.stdout.strip() == ""


def test_dry_run_bad_value(tmp_path):
    cp, _ = _dry(tmp_path, "--set", "http.max_body=12")
    assert cp.returncode == 2, describe(cp)
    assert "http.max_body" in cp.stderr and "--set" in cp.stderr
    assert cp.stdout.strip() == "", "no plan may be printed for a bad config"


def test_dry_run_bad_env_value(tmp_path):
    cp, _ = _dry(tmp_path, env={"SOMA_LOG_LEVEL": "loud"})
    assert cp.returncode == 2, describe(cp)
    assert "log.level" in cp.stderr and "SOMA_LOG_LEVEL" in cp.stderr
