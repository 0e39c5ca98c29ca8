"""`somaagent config check` and `run --dry-run` load beat.schedule_file as `run` does: a missing
file or a bad schedule is exit 2 with the message `run` stops with, and a bad schedule is named by
its `name` (its position when it has none) with the field at fault (operations.md, "Beat")."""

import json

import pytest

from e2e_util import describe, free_port, run_cli


def _file(tmp_path, entries):
    path = tmp_path / "schedules.json"
    path.write_text(json.dumps(entries))
    return path


def _both(tmp_path, path):
    sets = ["--set", f"beat.schedule_file={path}", "--set", f"data.dir={tmp_path / 'data'}",
            "--set", f"http.listen=127.0.0.1:{free_port()}"]
    return [run_cli(["config", "check", *sets], tmp_path, timeout=10),
            run_cli(["run", "--dry-run", *sets], tmp_path, timeout=10)]


@pytest.mark.parametrize("entries,says", [
    (None, "schedules.json"),
    ([{"name": "pulse", "task": "soma.noop", "every_s": 60, "cron": "* * * * *"}],
     'schedule "pulse" needs exactly one of every_s'),
    ([{"task": "soma.noop", "every_s": 60}], "schedule 1 needs a name"),
    ([{"name": "ok", "task": "soma.noop", "every_s": 60}, {"name": "c", "task": "soma.noop", "cron": "61 * * * *"}],
     'schedule "c" has a bad cron'),
])
def test_check_and_dry_run_refuse_a_bad_schedule_file(tmp_path, entries, says):
    path = tmp_path / "schedules.json" if entries is None else _file(tmp_path, entries)
    for cp in _both(tmp_path, path):
        assert cp.returncode == 2, describe(cp)
        assert "beat.schedule_file" in cp.stderr and says in cp.stderr, describe(cp)


def test_check_and_dry_run_accept_a_good_schedule_file(tmp_path):
    path = _file(tmp_path, [{"name": "pulse", "task": "soma.noop", "every_s": 60}])
    for cp in _both(tmp_path, path):
        assert cp.returncode == 0, describe(cp)
