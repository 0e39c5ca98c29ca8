"""A database migrated by a newer somaagent (a schema_migrations row above the highest migration
this binary has: an older binary started after an upgrade, a rollback) is refused by `migrate`,
`run` and `keys` with exit 2 (a restart cannot fix it: systemd's RestartPreventExitStatus=2 stops
the restart loop) and a line naming both versions, on SQLite and on PostgreSQL, and nothing is
written to it: its tables may mean what this binary does not know."""

import hashlib
import os

import e2e_util
from e2e_util import describe, free_port, run_cli, store_exec, store_query


def fingerprint(data):
    """The SQLite files' names, bytes and mtimes; on PostgreSQL every schema_migrations row."""
    if e2e_util.PG is not None:
        return store_query(data, "SELECT version, name, applied_ms FROM schema_migrations ORDER BY version")
    out = []
    for name in sorted(os.listdir(data)):
        if name.startswith("somaagent.db"):
            p = os.path.join(data, name)
            out.append((name, hashlib.sha256(open(p, "rb").read()).hexdigest(), os.stat(p).st_mtime_ns))
    return out


def test_newer_schema_refused_without_writing(tmp_path):
    data = tmp_path / "data"
    cp = run_cli(["migrate", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    latest = int(cp.stdout.rsplit(" ", 1)[1])
    store_exec(data, f"INSERT INTO schema_migrations VALUES ({latest + 1}, '{latest + 1:04d}_future.sql', 0)")
    want = f"was migrated by a newer somaagent (schema {latest + 1}, this binary knows {latest})"
    before = fingerprint(data)
    assert before

    cp = run_cli(["migrate", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 2 and want in cp.stderr, describe(cp)
    cp = run_cli(["keys", "list", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 2 and want in cp.stderr, describe(cp)
    cp = run_cli(["run", "--set", f"data.dir={data}", "--set", f"http.listen=127.0.0.1:{free_port()}"], tmp_path)
    assert cp.returncode == 2 and want in cp.stderr, describe(cp)
    assert fingerprint(data) == before
