"""The command line refuses what a command does not take (exit 2, a line saying what is expected)
instead of ignoring it: an extra word, an option of another command, a single-value option
given twice."""

import pytest

from e2e_util import describe, run_cli

REFUSED = [
    (["run", "worker", "--dry-run"], "worker", "run [--role"),
    (["run", "--dry-run", "--json"], "--json", "run [--role"),
    (["migrate", "now"], "now", "migrate"),
    (["config", "check", "show"], "show", "config check"),
    (["config", "show", "--json", "extra"], "extra", "config show"),
    (["config", "docs", "--tenant", "t1"], "--tenant", "config docs"),
    (["keys", "revoke", "a", "b"], "b", "keys revoke ID"),
    (["keys", "list", "--scope", "admin"], "--scope", "keys list"),
    (["keys", "create", "--tenant", "t1", "--scope", "admin", "--scope", "chat"], "--scope", "given twice"),
    (["keys", "create", "--tenant", "t1", "--tenant", "t2"], "--tenant", "given twice"),
    (["run", "--role", "worker", "--role", "gateway", "--dry-run"], "--role", "given twice"),
]


@pytest.mark.parametrize("args,word,expected", REFUSED)
def test_refused(tmp_path, args, word, expected):
    cp = run_cli([*args, "--set", "data.dir=data"], tmp_path)
    assert cp.returncode == 2, describe(cp)
    assert word in cp.stderr and expected in cp.stderr, describe(cp)
    assert not (tmp_path / "data").exists(), "nothing ran"


def test_accepted(tmp_path):
    cp = run_cli(["run", "--role", "worker", "--dry-run"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    cp = run_cli(["config"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    cp = run_cli(["keys", "create", "--tenant", "t1", "--scope", "admin chat", "--json", "--set", "data.dir=data"],
                 tmp_path)
    assert cp.returncode == 0 and "admin" in cp.stdout and "chat" in cp.stdout, describe(cp)
