"""A database migrated by a newer somaagent (a schema_migrations row above the highest migration
this binary has) is refused by `migrate`, `run` and `keys` with exit 1 and a line naming both
versions, on SQLite and on PostgreSQL: its tables may mean what this binary does not know."""

from e2e_util import describe, free_port, run_cli, store_exec


def test_newer_schema_refused(tmp_path):
    data = tmp_path / "data"
    cp = run_cli(["migrate", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    latest = int(cp.stdout.rsplit(" ", 1)[1])
    store_exec(data, f"INSERT INTO schema_migrations VALUES ({latest + 1}, '{latest + 1:04d}_future.sql', 0)")
    want = f"was migrated by a newer somaagent (schema {latest + 1}, this binary knows {latest})"

    cp = run_cli(["migrate", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 1 and want in cp.stderr, describe(cp)
    cp = run_cli(["keys", "list", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 1 and want in cp.stderr, describe(cp)
    cp = run_cli(["run", "--set", f"data.dir={data}", "--set", f"http.listen=127.0.0.1:{free_port()}"], tmp_path)
    assert cp.returncode == 1 and want in cp.stderr, describe(cp)
