"""Configuration: errors (exit 2, one line naming key, source, expected form), precedence,
`config show [--json]`, `config check`, secret redaction, `config docs`."""

import json

import pytest

from e2e_util import REPO, describe, free_port, run_cli

# store_neutral: config parsing, precedence and `config` subcommands: no store is opened
pytestmark = pytest.mark.store_neutral

SECRET = "s3cret-" + "q" * 40


def _run(tmp_path, *args, env=None):
    """`somaagent run` with a free port and a temp data dir, which must fail to start."""
    port = free_port()
    return run_cli(["run", "--set", f"http.listen=127.0.0.1:{port}", "--set", f"data.dir={tmp_path / 'data'}",
                    *args], tmp_path, env=env, timeout=10)


def _one_error_line(cp):
    assert cp.returncode == 2, describe(cp)
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got:\n{cp.stderr}"
    return lines[0]


def test_flag_bad_integer(tmp_path):
    line = _one_error_line(_run(tmp_path, "--set", "http.io_threads=abc"))
    assert "http.io_threads" in line and "--set" in line and "integer" in line, line


def test_env_out_of_bounds(tmp_path):
    line = _one_error_line(_run(tmp_path, env={"SOMA_HTTP_IO_THREADS": "999"}))
    assert "SOMA_HTTP_IO_THREADS" in line and "http.io_threads" in line, line
    assert "0" in line and "64" in line, f"bounds missing: {line}"


def test_ini_unknown_key_names_file_and_line(tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text("[http]\nmax_body = 4096\nbogus_key = 1\n")
    line = _one_error_line(_run(tmp_path, "--config", str(ini)))
    assert f"{ini}:3" in line and "http.bogus_key" in line, line


def test_ini_bad_value(tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text("; comment\n[log]\nlevel = chatty\n")
    line = _one_error_line(_run(tmp_path, "--config", str(ini)))
    assert f"{ini}:3" in line and "log.level" in line and "debug" in line, line


def test_ini_syntax_error(tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text("[http]\nthis line is not ini\n")
    line = _one_error_line(_run(tmp_path, "--config", str(ini)))
    assert str(ini) in line, line


def test_ini_long_line_arrives_whole(tmp_path):
    # a space at byte 199 of the line: the old reader (libinih, 200-byte lines) took the piece from
    # there for a continuation, and config show said the value was only the tail
    prompt = "a" * 183 + " " + " ".join(["word"] * 60)
    ini = tmp_path / "long.ini"
    ini.write_text(f"[llm]\nsystem_prompt = {prompt}\n[http]\nmax_body = 4096\n")
    cp = run_cli(["config", "show", "--json", "--config", str(ini)], tmp_path)
    assert cp.returncode == 0, describe(cp)
    cfg = json.loads(cp.stdout)
    assert cfg["llm.system_prompt"]["value"] == prompt, cfg["llm.system_prompt"]
    assert cfg["llm.system_prompt"]["origin"] == f"{ini}:2", cfg["llm.system_prompt"]
    assert cfg["http.max_body"]["origin"] == f"{ini}:4", cfg["http.max_body"]
    ini.write_text("[llm]\nsystem_prompt = " + "x" * 70000 + "\n")
    line = _one_error_line(run_cli(["config", "check", "--config", str(ini)], tmp_path))
    assert f"{ini}:2" in line and "longer than" in line, line


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.ini"
    line = _one_error_line(_run(tmp_path, "--config", str(missing)))
    assert str(missing) in line and "--config" in line, line


def test_unknown_soma_env_variable(tmp_path):
    line = _one_error_line(_run(tmp_path, env={"SOMA_FOO_BAR": "1"}))
    assert "SOMA_FOO_BAR" in line, line


def test_kubernetes_service_links_are_not_unknown_variables(tmp_path):
    # what a pod sees for a Service named soma-gateway: refused as typos by the old build (exit 2)
    env = {"SOMA_GATEWAY_SERVICE_HOST": "10.96.12.7", "SOMA_GATEWAY_SERVICE_PORT": "8080",
           "SOMA_GATEWAY_PORT": "tcp://10.96.12.7:8080", "SOMA_GATEWAY_PORT_8080_TCP": "tcp://10.96.12.7:8080",
           "SOMA_GATEWAY_PORT_8080_TCP_PROTO": "tcp", "SOMA_GATEWAY_PORT_8080_TCP_PORT": "8080",
           "SOMA_GATEWAY_PORT_8080_TCP_ADDR": "10.96.12.7"}
    cp = run_cli(["config", "check"], tmp_path, env=env)
    assert cp.returncode == 0, describe(cp)
    cp = run_cli(["config", "check"], tmp_path, env={**env, "SOMA_HTTP_PORT": "8080"})
    assert cp.returncode == 2 and "SOMA_HTTP_PORT" in cp.stderr, describe(cp)


def test_unknown_flag_key_and_malformed_set(tmp_path):
    line = _one_error_line(_run(tmp_path, "--set", "http.nope=1"))
    assert "http.nope" in line and "--set" in line, line
    line = _one_error_line(_run(tmp_path, "--set", "http.listen"))
    assert "--set" in line and "key=value" in line, line


def test_bad_listen_value(tmp_path):
    line = _one_error_line(_run(tmp_path, "--set", "http.listen=localhost"))
    assert "http.listen" in line and "host:port" in line, line


def test_bad_secret_is_not_echoed(tmp_path):
    line = _one_error_line(_run(tmp_path, "--set", "auth.admin_token=too-short-secret"))
    assert "auth.admin_token" in line and "too-short-secret" not in line, line


def test_config_check(tmp_path):
    cp = run_cli(["config", "check"], tmp_path)
    assert cp.returncode == 0 and "valid" in cp.stdout, describe(cp)
    ini = tmp_path / "ok.ini"
    ini.write_text("[http]\nmax_body = 4096\n")
    cp = run_cli(["config", "check", "--config", str(ini)], tmp_path)
    assert cp.returncode == 0 and str(ini) in cp.stdout, describe(cp)
    cp = run_cli(["config", "check", "--set", "http.max_body=1"], tmp_path)
    assert cp.returncode == 2 and "http.max_body" in cp.stderr, describe(cp)


def test_precedence_default_file_env_flag(tmp_path):
    ini = tmp_path / "conf.ini"
    ini.write_text(
        "[http]\n"
        "max_header = 2048\n"          # line 2: file only
        "request_timeout_s = 5\n"      # line 3: file < env
        "idle_timeout_s = 7\n"         # line 4: file < env < flag
        "[log]\n"
        "access = false\n"             # line 6: bool from file
    )
    env = {"SOMA_HTTP_REQUEST_TIMEOUT_S": "6", "SOMA_HTTP_IDLE_TIMEOUT_S": "8", "SOMA_LOG_LEVEL": "warn",
           "SOMA_DATA_MIN_FREE_MB": "99"}
    cp = run_cli(["config", "show", "--json", "--config", str(ini), "--set", "http.idle_timeout_s=9",
                  "--set", "log.level=error"], tmp_path, env=env)
    assert cp.returncode == 0, describe(cp)
    cfg = json.loads(cp.stdout)

    def check(key, value, source, origin=None):
        assert cfg[key]["value"] == value and cfg[key]["source"] == source, (key, cfg[key])
        if origin is not None:
            assert cfg[key].get("origin", origin) == origin, (key, cfg[key])

    check("http.max_body", 1048576, "default")
    check("http.max_header", 2048, "file", f"{ini}:2")
    check("http.request_timeout_s", 6, "env", "SOMA_HTTP_REQUEST_TIMEOUT_S")
    check("http.idle_timeout_s", 9, "flag", "--set http.idle_timeout_s")
    check("log.access", False, "file", f"{ini}:6")
    check("log.level", "error", "flag")
    check("data.min_free_mb", 99, "env")
    check("log.format", "json", "default")
    for key, entry in cfg.items():
        assert set(entry) >= {"value", "source"}, entry
        assert entry["source"] in ("default", "file", "env", "flag"), (key, entry)


def test_somaagent_ini_in_cwd_is_read(tmp_path):
    (tmp_path / "somaagent.ini").write_text("[http]\nmax_body = 4096\n")
    cp = run_cli(["config", "show", "--json"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    entry = json.loads(cp.stdout)["http.max_body"]
    assert entry["value"] == 4096 and entry["source"] == "file", entry
    # an explicit --config replaces ./somaagent.ini
    other = tmp_path / "other.ini"
    other.write_text("[http]\nmax_header = 4096\n")
    cfg = json.loads(run_cli(["config", "show", "--json", "--config", str(other)], tmp_path).stdout)
    assert cfg["http.max_body"]["source"] == "default" and cfg["http.max_header"]["source"] == "file"


def test_config_show_text_lists_every_key_with_source(tmp_path):
    cp = run_cli(["config", "show", "--set", "http.max_body=4096", "--set", f"auth.admin_token={SECRET}"],
                 tmp_path, env={"SOMA_LOG_LEVEL": "debug"})
    assert cp.returncode == 0, describe(cp)
    keys = json.loads(run_cli(["config", "show", "--json"], tmp_path).stdout)
    lines = {ln.split()[0]: ln for ln in cp.stdout.splitlines() if ln.strip() and not ln.startswith("#")}
    assert set(keys) <= set(lines), f"keys missing from config show: {set(keys) - set(lines)}"
    assert "4096" in lines["http.max_body"] and "--set" in lines["http.max_body"]
    assert "debug" in lines["log.level"] and "SOMA_LOG_LEVEL" in lines["log.level"]
    assert "default" in lines["log.format"]
    assert "<redacted>" in lines["auth.admin_token"]
    assert SECRET not in cp.stdout and SECRET not in cp.stderr


def test_config_show_json_redacts_secrets(tmp_path):
    cp = run_cli(["config", "show", "--json"], tmp_path, env={"SOMA_AUTH_ADMIN_TOKEN": SECRET})
    assert cp.returncode == 0, describe(cp)
    entry = json.loads(cp.stdout)["auth.admin_token"]
    assert entry["value"] == "<redacted>" and entry["source"] == "env", entry
    assert SECRET not in cp.stdout


def test_config_docs_match_the_repo(tmp_path):
    doc = REPO / "docs" / "configuration.md"
    if not doc.exists():
        pytest.skip("docs/configuration.md does not exist yet (generate it with `make docs`)")
    cp = run_cli(["config", "docs"], tmp_path, env={"SOMA_LOG_LEVEL": "debug"})
    assert cp.returncode == 0, describe(cp)
    assert cp.stdout == doc.read_text(), "docs/configuration.md is stale: run `make docs`"


def test_config_docs_cover_every_key(tmp_path):
    cp = run_cli(["config", "docs"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    keys = json.loads(run_cli(["config", "show", "--json"], tmp_path).stdout)
    for key in keys:
        env = "SOMA_" + key.upper().replace(".", "_")
        assert f"`{key}`" in cp.stdout and env in cp.stdout, key
