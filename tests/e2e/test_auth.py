"""Identity: loopback default tenant, API keys (create/list/revoke), admin scope, admin token."""

import json
import secrets
from pathlib import Path

import httpx

from e2e_util import check_envelope, create_key, describe, run_cli, store_dump, wait_until

ADMIN_TOKEN = "adm-" + secrets.token_hex(20)  # 44 characters


def _bearer(token):
    return {"Authorization": f"Bearer {token}"}


def _db_bytes(data_dir):
    out = store_dump(data_dir)  # the SQLite database and any -wal / -journal, or the PostgreSQL rows
    assert out, f"no database under {data_dir}"
    return out


def test_loopback_without_keys_runs_as_default(server):
    r = httpx.get(server.url + "/v1/runtime-config", timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["auth"]["tenant"] == "default", body
    assert body["auth"]["required"] is False, body
    warn = server.wait_log(lambda o: o.get("level") == "warn" and 'tenant "default"' in o.get("msg", ""),
                           timeout=2, what='the start-up warning about tenant "default"')
    assert "keys create" in warn["msg"]


def test_auth_require_on_loopback(soma):
    srv = soma("auth.require=true")
    r = httpx.get(srv.url + "/v1/runtime-config", timeout=5)
    check_envelope(r, 401)
    assert httpx.get(srv.url + "/v1/health", timeout=5).status_code == 200


def test_api_keys(soma, tmp_path):
    srv = soma("auth.key_refresh_ms=200")
    data = srv.data_dir
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        assert c.get("/v1/runtime-config").status_code == 200  # anonymous while no key exists

        acme = create_key(data, tmp_path, "acme")
        admin = create_key(data, tmp_path, "ops", scope="admin")

        # the key cache picks the keys up: anonymous access ends
        wait_until(lambda: c.get("/v1/runtime-config").status_code == 401, 3,
                   what="401 without credentials once keys exist")
        # both keys may not be in the same cache refresh
        wait_until(lambda: c.get("/v1/runtime-config", headers=_bearer(admin)).status_code == 200, 3,
                   what="the second key to be picked up")
        r = c.get("/v1/runtime-config")
        check_envelope(r, 401, "unauthorized")
        assert r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers

        # wrong tokens
        for bad in ("nonsense", "sa01_" + "0" * 16 + "_" + "0" * 40, acme[:-1] + ("0" if acme[-1] != "0" else "1")):
            r = c.get("/v1/runtime-config", headers=_bearer(bad))
            check_envelope(r, 401)
            assert r.headers.get("www-authenticate", "").startswith("Bearer")
        r = c.get("/v1/runtime-config", headers={"Authorization": "Basic " + acme})
        check_envelope(r, 401)

        # the token resolves the tenant
        r = c.get("/v1/runtime-config", headers=_bearer(acme))
        assert r.status_code == 200, r.text
        assert r.json()["auth"]["tenant"] == "acme"
        assert r.json()["auth"]["required"] is True
        r = c.get("/v1/runtime-config", headers=_bearer(admin))
        assert r.status_code == 200 and r.json()["auth"]["tenant"] == "ops"

        # admin scope
        r = c.get("/v1/admin/config", headers=_bearer(acme))
        check_envelope(r, 403)
        r = c.get("/v1/admin/config", headers=_bearer(admin))
        assert r.status_code == 200, r.text
        cfg = r.json()["config"]
        assert cfg["auth.key_refresh_ms"]["value"] == 200 and cfg["auth.key_refresh_ms"]["source"] == "flag"
        assert cfg["http.max_body"]["source"] == "default"

        # public routes stay public
        assert c.get("/v1/health").status_code == 200
        assert c.get("/metrics").status_code == 200

        # keys list: both keys, never a token
        cp = run_cli(["keys", "list", "--json", "--set", f"data.dir={data}"], tmp_path)
        assert cp.returncode == 0, describe(cp)
        keys = json.loads(cp.stdout)
        by_tenant = {k["tenant"]: k for k in keys}
        assert set(by_tenant) == {"acme", "ops"}, keys
        assert "admin" in by_tenant["ops"]["scopes"] and "admin" not in by_tenant["acme"]["scopes"]
        for k in keys:
            assert "token" not in k and "token_hash" not in k, k
            assert k["id"] in (acme + admin)
        assert acme not in cp.stdout and admin not in cp.stdout
        assert acme[22:] not in cp.stdout and admin[22:] not in cp.stdout  # the secret parts
        cp = run_cli(["keys", "list", "--set", f"data.dir={data}"], tmp_path)
        assert cp.returncode == 0 and by_tenant["acme"]["id"] in cp.stdout and acme[22:] not in cp.stdout

        # the database holds hashes only
        db = _db_bytes(data)
        for tok in (acme, admin):
            assert tok.encode() not in db, "token stored in the database"
            assert tok[22:].encode() not in db, "token secret stored in the database"

        # revoke: the key stops working within the refresh interval
        cp = run_cli(["keys", "revoke", by_tenant["acme"]["id"], "--set", f"data.dir={data}"], tmp_path)
        assert cp.returncode == 0, describe(cp)
        wait_until(lambda: c.get("/v1/runtime-config", headers=_bearer(acme)).status_code == 401, 2,
                   what="the revoked key to be refused")
        check_envelope(c.get("/v1/runtime-config", headers=_bearer(acme)), 401)
        assert c.get("/v1/runtime-config", headers=_bearer(admin)).status_code == 200
        cp = run_cli(["keys", "list", "--json", "--set", f"data.dir={data}"], tmp_path)
        revoked = {k["tenant"]: k for k in json.loads(cp.stdout)}
        assert revoked["acme"].get("revoked_at") and not revoked["ops"].get("revoked_at"), revoked

        # revoking an unknown key fails
        cp = run_cli(["keys", "revoke", "0123456789abcdef", "--set", f"data.dir={data}"], tmp_path)
        assert cp.returncode != 0 and "0123456789abcdef" in cp.stderr


def test_admin_token_and_redaction(soma, tmp_path):
    data = tmp_path / "data"
    admin = create_key(data, tmp_path, "ops", scope="admin")
    srv = soma(f"auth.admin_token={ADMIN_TOKEN}")
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        check_envelope(c.get("/v1/admin/config"), 401)
        r = c.get("/v1/admin/config", headers=_bearer(ADMIN_TOKEN))
        assert r.status_code == 200, r.text
        assert ADMIN_TOKEN not in r.text
        assert r.json()["config"]["auth.admin_token"]["value"] == "<redacted>"
        assert r.json()["config"]["auth.admin_token"]["source"] == "flag"
        r = c.get("/v1/admin/config", headers=_bearer(admin))
        assert r.status_code == 200 and ADMIN_TOKEN not in r.text
        assert r.json()["config"]["auth.admin_token"]["value"] == "<redacted>"
        r = c.get("/v1/runtime-config", headers=_bearer(ADMIN_TOKEN))
        assert r.status_code == 200 and r.json()["auth"]["tenant"] == "default"
        check_envelope(c.get("/v1/runtime-config", headers=_bearer(ADMIN_TOKEN[:-1])), 401)
    assert ADMIN_TOKEN not in srv.log_text()


def test_keys_create_validation(tmp_path):
    data = tmp_path / "data"
    cp = run_cli(["keys", "create", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 2 and "--tenant" in cp.stderr, describe(cp)
    cp = run_cli(["keys", "create", "--tenant", "bad tenant!", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 2 and "--tenant" in cp.stderr, describe(cp)
    cp = run_cli(["keys", "frobnicate", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 2, describe(cp)
    cp = run_cli(["keys", "create", "--tenant", "acme", "--json", "--set", f"data.dir={data}"], tmp_path)
    assert cp.returncode == 0, describe(cp)
    made = json.loads(cp.stdout)
    assert made["tenant"] == "acme" and made["token"].startswith(f"sa01_{made['id']}_")
