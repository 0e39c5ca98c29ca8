"""`somaagent keys create|list --json` give a key in the shape of the API's (GET/POST /v1/keys,
docs/api.md): scopes as an array, a status, created_at and revoked_at; create adds the token."""

import json
import secrets

from e2e_util import bearer, describe, http, run_cli

ADMIN_TOKEN = "adm-" + secrets.token_hex(20)


def _cli(tmp_path, *args):
    cp = run_cli(["keys", *args, "--set", f"data.dir={tmp_path / 'data'}"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    return cp


def test_cli_json_is_the_api_shape(soma, tmp_path):
    made = json.loads(_cli(tmp_path, "create", "--tenant", "acme", "--scope", "chat,admin", "--name", "ci",
                           "--json").stdout)
    assert isinstance(made["scopes"], list) and sorted(made["scopes"]) == ["admin", "chat"], made
    assert made["status"] == "active" and made["token"].startswith("sa01_"), made
    other = json.loads(_cli(tmp_path, "create", "--tenant", "acme", "--json").stdout)
    assert other["scopes"] == [], other
    _cli(tmp_path, "revoke", other["id"])
    listed = {k["id"]: k for k in json.loads(_cli(tmp_path, "list", "--json").stdout)}
    srv = soma(f"auth.admin_token={ADMIN_TOKEN}", data_dir=tmp_path / "data")
    r = http().get(srv.url + "/v1/keys", headers=bearer(ADMIN_TOKEN), timeout=5)
    assert r.status_code == 200, r.text
    api = {k["id"]: k for k in r.json()["keys"]}
    assert set(api) == set(listed) == {made["id"], other["id"]}, (api, listed)
    for kid, k in api.items():
        assert listed[kid] == k, (listed[kid], k)  # the same fields, types and values
    assert api[other["id"]]["status"] == "revoked" and api[other["id"]]["revoked_at"]
    created = {k: v for k, v in made.items() if k != "token"}
    assert created == api[made["id"]], (created, api[made["id"]])
