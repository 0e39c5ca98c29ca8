"""Anonymous mode (loopback listener, no API keys) serves requests made on this machine only
(src/http/local_request.c): a web page of another site that reaches 127.0.0.1 from the user's
browser - by DNS rebinding (its Host) or a cross-site form or fetch (its Origin) - and clients
behind a reverse proxy (its forwarding headers) get 401 and change nothing; with a key, those
headers do not matter."""

import httpx
import pytest

from e2e_util import check_envelope


def sessions_listed(srv, headers):
    return httpx.get(srv.url + "/v1/sessions", headers=headers, timeout=5)


@pytest.mark.parametrize("headers", [
    {"Host": "attacker.example"},
    {"Host": "attacker.example:8080"},
    {"Host": "127.0.0.1.attacker.example"},
    {"Host": "localhost.attacker.example"},
    {"Origin": "http://attacker.example"},
    {"Origin": "null"},
    {"X-Forwarded-For": "203.0.113.9"},
    {"Forwarded": "for=203.0.113.9"},
    {"X-Real-IP": "203.0.113.9"},
], ids=lambda h: "-".join(f"{k}={v}" for k, v in h.items()))
def test_a_request_not_made_on_this_machine_is_refused(soma, headers):
    srv = soma()
    r = sessions_listed(srv, headers)
    check_envelope(r, 401)
    assert "made on this machine" in r.json()["error"]["message"], r.text


def test_a_cross_site_page_cannot_create_an_admin_key_or_post(soma):
    srv = soma()
    site = {"Origin": "http://attacker.example", "Content-Type": "text/plain"}
    r = httpx.post(srv.url + "/v1/keys", content=b'{"tenant":"pwn","scopes":"admin"}', headers=site, timeout=5)
    check_envelope(r, 401)
    r = httpx.post(srv.url + "/v1/session/message", content=b'{"session_id":"csrf","message":"x"}',
                   headers=site, timeout=5)
    check_envelope(r, 401)
    assert httpx.get(srv.url + "/v1/sessions/csrf", timeout=5).status_code == 404  # nothing was made
    keys = httpx.get(srv.url + "/v1/keys", timeout=5)
    assert keys.status_code == 200 and not keys.json()["keys"], keys.text


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:{port}", "127.0.0.1:{port}", "127.1.2.3", "[::1]:{port}"])
def test_local_names_and_origins_are_served(soma, host):
    srv = soma()
    h = host.format(port=srv.port)
    r = sessions_listed(srv, {"Host": h, "Origin": f"http://{h}"})
    assert r.status_code == 200, r.text


def test_the_health_check_is_public_whatever_the_host(soma):
    srv = soma()
    assert httpx.get(srv.url + "/v1/health", headers={"Host": "lb.example"}, timeout=5).status_code == 200


def test_with_a_key_the_host_and_origin_do_not_matter(soma):
    srv = soma()
    made = httpx.post(srv.url + "/v1/keys", json={"tenant": "acme"}, timeout=5)  # local: anonymous admin
    assert made.status_code == 201, made.text
    key = made.json()["token"]
    r = sessions_listed(srv, {"Authorization": f"Bearer {key}", "Host": "agents.example.com",
                              "Origin": "https://app.example.com", "X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 200, r.text


def test_revoking_the_last_key_does_not_bring_anonymous_back(soma):
    """The first key ends anonymous mode for good: a rotation that revokes before it creates, or
    a leaked key revoked, must not reopen the server to every local caller as admin."""
    srv = soma()
    made = httpx.post(srv.url + "/v1/keys", json={"tenant": "acme", "scopes": ["admin"]}, timeout=5)
    assert made.status_code == 201, made.text
    key, key_id = made.json()["token"], made.json()["id"]
    assert httpx.get(srv.url + "/v1/keys", timeout=5).status_code == 401
    gone = httpx.delete(srv.url + f"/v1/keys/{key_id}", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    assert gone.status_code == 200, gone.text
    r = httpx.get(srv.url + "/v1/keys", timeout=5)
    assert r.status_code == 401, r.text
    r = httpx.post(srv.url + "/v1/keys", json={"tenant": "victim", "scopes": ["admin"]}, timeout=5)
    assert r.status_code == 401, r.text
    assert sessions_listed(srv, {}).status_code == 401
