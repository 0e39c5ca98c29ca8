"""The admin API of identities over HTTP: API keys (POST/GET /v1/keys, DELETE /v1/keys/{id}) and
tenants (GET/POST /v1/tenants); scope admin required; the token is shown once and never stored,
logged or audited; keys made over HTTP and with `somaagent keys` are one set."""

import json
import re
import secrets
from pathlib import Path

import httpx

from e2e_util import TOKEN_RE, TS_RE, check_envelope, create_key, describe, run_cli, store_dump, wait_until

ADMIN_TOKEN = "adm-" + secrets.token_hex(20)
KEY_FIELDS = {"id", "tenant", "name", "scopes", "created_at", "revoked_at", "status"}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def admin_client(srv):
    return httpx.Client(base_url=srv.url, timeout=5, headers=bearer(ADMIN_TOKEN))


def db_bytes(data_dir):
    return store_dump(data_dir)  # the SQLite files, or the rows of the PostgreSQL database


def test_keys_create_list_revoke(soma, tmp_path):
    srv = soma(f"auth.admin_token={ADMIN_TOKEN}")
    made = []
    with admin_client(srv) as c:
        r = c.post("/v1/keys", json={"tenant": "acme", "scopes": ["chat", "memory.read"], "name": "ci bot"})
        assert r.status_code == 201, r.text
        key = r.json()
        assert set(key) == KEY_FIELDS | {"token"}, key
        assert TOKEN_RE.match(key["token"]) and key["token"].startswith(f"sa01_{key['id']}_"), key
        assert key["tenant"] == "acme" and key["scopes"] == ["chat", "memory.read"] and key["name"] == "ci bot"
        assert TS_RE.match(key["created_at"]) and key["revoked_at"] is None and key["status"] == "active"
        made.append(key["token"])

        # the new key works at once (no wait for the key refresh)
        r = httpx.get(srv.url + "/v1/runtime-config", headers=bearer(key["token"]), timeout=5)
        assert r.status_code == 200 and r.json()["auth"]["tenant"] == "acme", r.text

        # scopes as a string, defaults for the rest
        r = c.post("/v1/keys", json={"tenant": "globex", "scopes": "admin, chat"})
        assert r.status_code == 201 and r.json()["scopes"] == ["admin", "chat"] and r.json()["name"] == ""
        made.append(r.json()["token"])
        r = c.post("/v1/keys", json={"tenant": "acme"})
        assert r.status_code == 201 and r.json()["scopes"] == [], r.text
        made.append(r.json()["token"])

        # lists: newest first, never a token or hash; per tenant; paginated
        r = c.get("/v1/keys")
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"keys", "next_cursor"} and body["next_cursor"] is None, body
        assert [k["tenant"] for k in body["keys"]] == ["acme", "globex", "acme"], body
        for k in body["keys"]:
            assert set(k) == KEY_FIELDS, k
        for tok in made:
            assert tok not in r.text and tok[22:] not in r.text
        acme = c.get("/v1/keys", params={"tenant": "acme"}).json()["keys"]
        assert {k["tenant"] for k in acme} == {"acme"} and len(acme) == 2
        page1 = c.get("/v1/keys", params={"limit": 2}).json()
        assert len(page1["keys"]) == 2 and page1["next_cursor"], page1
        page2 = c.get("/v1/keys", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
        assert len(page2["keys"]) == 1 and page2["next_cursor"] is None, page2
        assert {k["id"] for k in page1["keys"] + page2["keys"]} == {k["id"] for k in body["keys"]}

        # revoke: the key stops at once; a second revoke is 404
        r = c.delete(f"/v1/keys/{key['id']}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "revoked" and TS_RE.match(r.json()["revoked_at"]), r.text
        assert "token" not in r.json()
        r = httpx.get(srv.url + "/v1/runtime-config", headers=bearer(key["token"]), timeout=5)
        check_envelope(r, 401, "unauthorized")
        assert "revoked" in r.json()["error"]["message"]
        check_envelope(c.delete(f"/v1/keys/{key['id']}"), 404, "not_found")
        check_envelope(c.delete("/v1/keys/0123456789abcdef"), 404, "not_found")
        check_envelope(c.delete("/v1/keys/not-a-key-id"), 404, "not_found")
        listed = {k["id"]: k for k in c.get("/v1/keys").json()["keys"]}
        assert listed[key["id"]]["status"] == "revoked"

        # the audit trail has the changes, with who made them, never a token
        def audit_rows():
            rows = c.get("/v1/admin/audit").json()["items"]
            return rows if sum(a["action"] in ("key.create", "key.revoke") for a in rows) >= 4 else None

        rows = wait_until(audit_rows, 3, interval=0.05, what="the key audit rows")
        mine = [a for a in rows if a["action"] in ("key.create", "key.revoke")]
        assert all(a["subject"] == "admin_token" and a["decision"] == "done" for a in mine), mine
        assert {a["resource"] for a in mine} >= {f"key:{key['id']}"}
        text = json.dumps(rows)
        for tok in made:
            assert tok not in text and tok[22:] not in text

    log = srv.log_text()
    db = db_bytes(srv.data_dir)
    for tok in made + [ADMIN_TOKEN]:
        assert tok not in log, "a token reached the server log"
        assert tok.encode() not in db, "a token reached the database"
    for tok in made:
        assert tok[22:] not in log and tok[22:].encode() not in db


def test_key_requests_are_validated(soma):
    srv = soma(f"auth.admin_token={ADMIN_TOKEN}")
    with admin_client(srv) as c:
        cases = [
            ({"scopes": ["chat"]}, 422, "invalid_tenant"),
            ({"tenant": "bad tenant!"}, 422, "invalid_tenant"),
            ({"tenant": 5}, 422, "invalid_tenant"),
            ({"tenant": "acme", "scopes": ["Chat!"]}, 422, "invalid_scopes"),
            ({"tenant": "acme", "scopes": [1]}, 422, "invalid_scopes"),
            ({"tenant": "acme", "scopes": {"a": 1}}, 422, "invalid_scopes"),
            ({"tenant": "acme", "scopes": ["s" * 200]}, 422, "invalid_scopes"),
            ({"tenant": "acme", "name": "n" * 65}, 422, "invalid_name"),
            ({"tenant": "acme", "name": 3}, 422, "invalid_name"),
        ]
        for body, status, code in cases:
            check_envelope(c.post("/v1/keys", json=body), status, code)
        check_envelope(c.post("/v1/keys", content=b"[1]"), 400, "invalid_json")
        check_envelope(c.post("/v1/keys", content=b"{"), 400, "invalid_json")
        check_envelope(c.get("/v1/keys", params={"tenant": "bad tenant"}), 400, "invalid_tenant")
        check_envelope(c.get("/v1/keys", params={"cursor": "nonsense"}), 400, "invalid_cursor")
        check_envelope(c.get("/v1/keys", params={"limit": 0}), 400, "invalid_limit")
        check_envelope(c.get("/v1/tenants", params={"limit": 5000}), 400, "invalid_limit")
        assert c.get("/v1/keys").json()["keys"] == [], "nothing was created"


def test_tenants(soma):
    srv = soma(f"auth.admin_token={ADMIN_TOKEN}")
    with admin_client(srv) as c:
        r = c.post("/v1/tenants", json={"id": "globex", "name": "Globex Corp."})
        assert r.status_code == 201, r.text
        t = r.json()
        assert t["id"] == "globex" and t["name"] == "Globex Corp." and TS_RE.match(t["created_at"]), t
        check_envelope(c.post("/v1/tenants", json={"id": "globex"}), 409, "conflict")
        check_envelope(c.post("/v1/tenants", json={"id": "no spaces"}), 422, "invalid_id")
        check_envelope(c.post("/v1/tenants", json={"name": "x"}), 422, "invalid_id")
        check_envelope(c.post("/v1/tenants", json={"id": "ok", "name": 7}), 422, "invalid_name")
        assert c.post("/v1/keys", json={"tenant": "acme"}).status_code == 201  # creates tenant acme
        assert c.post("/v1/tenants", json={"id": "a.b-c_d"}).status_code == 201
        tenants = c.get("/v1/tenants").json()
        assert [x["id"] for x in tenants["tenants"]] == ["a.b-c_d", "acme", "globex"], tenants
        by_id = {x["id"]: x for x in tenants["tenants"]}
        assert by_id["acme"]["active_keys"] == 1 and by_id["globex"]["active_keys"] == 0
        p1 = c.get("/v1/tenants", params={"limit": 2}).json()
        p2 = c.get("/v1/tenants", params={"limit": 2, "cursor": p1["next_cursor"]}).json()
        assert [x["id"] for x in p1["tenants"] + p2["tenants"]] == ["a.b-c_d", "acme", "globex"]
        assert p2["next_cursor"] is None
        wait_until(lambda: any(a["action"] == "tenant.create" and a["resource"] == "tenant:globex"
                               for a in c.get("/v1/admin/audit").json()["items"]),
                   3, interval=0.05, what="the tenant.create audit row")


def test_admin_scope_is_required(soma):
    srv = soma(f"auth.admin_token={ADMIN_TOKEN}")
    with admin_client(srv) as c:
        chat = c.post("/v1/keys", json={"tenant": "acme", "scopes": ["chat"]}).json()
        admin = c.post("/v1/keys", json={"tenant": "ops", "scopes": ["admin"]}).json()
    calls = [("GET", "/v1/keys", None), ("POST", "/v1/keys", {"tenant": "acme"}),
             ("DELETE", f"/v1/keys/{admin['id']}", None), ("GET", "/v1/tenants", None),
             ("POST", "/v1/tenants", {"id": "x"})]
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        for method, path, body in calls:
            check_envelope(c.request(method, path, json=body, headers=bearer(chat["token"])), 403, "forbidden")
            check_envelope(c.request(method, path, json=body), 401, "unauthorized")
        r = c.get("/v1/keys", headers=bearer(admin["token"]))
        assert r.status_code == 200 and len(r.json()["keys"]) == 2, r.text
        # an admin key may revoke itself; from then on it is refused
        assert c.delete(f"/v1/keys/{admin['id']}", headers=bearer(admin["token"])).status_code == 200
        check_envelope(c.get("/v1/keys", headers=bearer(admin["token"])), 401)
    log = srv.log_text()
    assert chat["token"] not in log and admin["token"] not in log


def test_http_and_cli_share_the_keys(soma, tmp_path):
    srv = soma(f"auth.admin_token={ADMIN_TOKEN}", "auth.key_refresh_ms=200")
    data = srv.data_dir
    with admin_client(srv) as c:
        api_key = c.post("/v1/keys", json={"tenant": "acme", "name": "from-http"}).json()
        cp = run_cli(["keys", "list", "--json", "--set", f"data.dir={data}"], tmp_path)
        assert cp.returncode == 0, describe(cp)
        listed = {k["id"]: k for k in json.loads(cp.stdout)}
        assert listed[api_key["id"]]["name"] == "from-http" and api_key["token"] not in cp.stdout

        cli_token = create_key(data, tmp_path, "globex", scope="chat")
        cli_id = re.match(r"^sa01_([0-9a-f]{16})_", cli_token).group(1)
        keys = {k["id"]: k for k in c.get("/v1/keys").json()["keys"]}
        assert keys[cli_id]["tenant"] == "globex" and keys[cli_id]["scopes"] == ["chat"]
        wait_until(lambda: httpx.get(srv.url + "/v1/runtime-config", headers=bearer(cli_token)).status_code == 200,
                   3, what="the CLI key to be picked up")

        cp = run_cli(["keys", "revoke", api_key["id"], "--set", f"data.dir={data}"], tmp_path)
        assert cp.returncode == 0, describe(cp)
        wait_until(lambda: httpx.get(srv.url + "/v1/runtime-config",
                                     headers=bearer(api_key["token"])).status_code == 401,
                   3, what="the key revoked by the CLI to be refused")
        assert c.get("/v1/keys", params={"tenant": "acme"}).json()["keys"][0]["status"] == "revoked"
        assert c.delete(f"/v1/keys/{cli_id}").status_code == 200
        cp = run_cli(["keys", "list", "--json", "--set", f"data.dir={data}"], tmp_path)
        assert {k["id"]: k for k in json.loads(cp.stdout)}[cli_id]["revoked_at"], cp.stdout


def test_a_key_change_is_audited_under_the_key_s_tenant(soma):
    """An admin of one tenant makes and revokes a key of another: the rows are the changed
    tenant's (as the CLI writes them), so ?tenant=victim finds them, with who made the change."""
    srv = soma(f"auth.admin_token={ADMIN_TOKEN}")
    with admin_client(srv) as c:
        ops = c.post("/v1/keys", json={"tenant": "ops", "scopes": ["admin"]}).json()
        made = c.post("/v1/keys", json={"tenant": "victim"}, headers=bearer(ops["token"]))
        assert made.status_code == 201, made.text
        gone = c.delete(f"/v1/keys/{made.json()['id']}", headers=bearer(ops["token"]))
        assert gone.status_code == 200, gone.text

        def victim_rows():
            rows = c.get("/v1/admin/audit", params={"tenant": "victim"}).json()["items"]
            return rows if len(rows) >= 2 else None

        rows = wait_until(victim_rows, 3, interval=0.05, what="victim's key audit rows")
        assert sorted(a["action"] for a in rows) == ["key.create", "key.revoke"], rows
        assert all(a["subject"] == f"key:{ops['id']}" and a["resource"] == f"key:{made.json()['id']}"
                   for a in rows), rows
