"""The command line: version, help, unknown commands and options, migrate."""

import re

import pytest

from e2e_util import REPO, describe, run_cli


def test_version(tmp_path):
    cp = run_cli(["version"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    m = re.match(r"^somaagent (\d+\.\d+\.\d+\S*)\n$", cp.stdout)
    assert m, cp.stdout
    meson = (REPO / "meson.build").read_text()
    pv = re.search(r"version\s*:\s*'([^']+)'", meson)
    if pv:
        assert m.group(1) == pv.group(1)
    assert run_cli(["--version"], tmp_path).stdout == cp.stdout


def test_help(tmp_path):
    cp = run_cli(["help"], tmp_path)
    assert cp.returncode == 0 and "run" in cp.stdout and "keys" in cp.stdout, describe(cp)


def test_no_command(tmp_path):
    cp = run_cli([], tmp_path)
    assert cp.returncode == 2 and "usage" in cp.stderr, describe(cp)


def test_unknown_command(tmp_path):
    cp = run_cli(["frobnicate"], tmp_path)
    assert cp.returncode == 2, describe(cp)
    assert "frobnicate" in cp.stderr


def test_unknown_option(tmp_path):
    cp = run_cli(["run", "--dry-run", "--bogus"], tmp_path)
    assert cp.returncode == 2 and "--bogus" in cp.stderr, describe(cp)
    cp = run_cli(["run", "--set"], tmp_path)
    assert cp.returncode == 2 and "--set" in cp.stderr, describe(cp)


def test_unknown_config_subcommand(tmp_path):
    cp = run_cli(["config", "explode"], tmp_path)
    assert cp.returncode == 2 and "explode" in cp.stderr, describe(cp)


@pytest.mark.sqlite_only  # the database file itself; test_postgres.py migrates PostgreSQL
def test_migrate(tmp_path):
    data = tmp_path / "data"
    cp = run_cli(["migrate", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    m = re.search(r"applied (\d+) migration", cp.stdout)
    assert m and int(m.group(1)) >= 1, cp.stdout
    assert (data / "somaagent.db").exists()
    cp = run_cli(["migrate", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    assert re.search(r"applied 0 migration", cp.stdout), cp.stdout


def test_migrate_bad_config(tmp_path):
    cp = run_cli(["migrate", "--set", "data.dir="], tmp_path)
    assert cp.returncode == 2 and "data.dir" in cp.stderr, describe(cp)
