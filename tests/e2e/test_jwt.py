"""JWT bearer tokens against the real binary: HS256 with auth.jwt_secret, RS256 with a PEM key
(auth.jwt_public_key), ES256/RS256 from a JWKS (auth.jwt_jwks_url) served by a small static
http.server in this file, including key rotation; every refusal says why, never echoes the
token, and no token or secret reaches the log.

Tokens are made with PyJWT and keys with python3-cryptography (Debian packages, scripts/deps.sh).
"""

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from e2e_util import check_envelope, free_port, run_cli, wait_until

SECRET = "e2e-jwt-secret-0123456789abcdef0123456789"
ISSUER = "https://idp.example.test"
AUDIENCE = "somaagent"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_NEXT = ec.generate_private_key(ec.SECP256R1())


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def jwk(key, kid):
    pub = key.public_key()
    algo = jwt.algorithms.RSAAlgorithm if isinstance(pub, rsa.RSAPublicKey) else jwt.algorithms.ECAlgorithm
    out = json.loads(algo.to_jwk(pub))
    out.update(kid=kid, use="sig")
    return out


def claims(**over):
    now = int(time.time())
    c = {"sub": "alice", "tenant": "acme", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def hs256(**over):
    return jwt.encode(claims(**over), SECRET, algorithm="HS256")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(**over):
    head = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{b64(json.dumps(claims(**over)).encode())}."


def hmac_with(secret_bytes, **over):
    """An HS256 token signed with arbitrary bytes (PyJWT refuses a PEM as an HMAC secret)."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims(**over)).encode())
    sig = hmac.new(secret_bytes, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def refused(client, token, words, path="/v1/runtime-config"):
    """Asserts 401 with the RFC 6750 challenge and a message containing words; the token is not echoed."""
    r = client.get(path, headers=bearer(token))
    check_envelope(r, 401, "unauthorized")
    assert r.headers.get("www-authenticate") == 'Bearer error="invalid_token"', r.headers
    msg = r.json()["error"]["message"]
    assert words in msg, f"{words!r} not in {msg!r}"
    assert token not in r.text, "the token is echoed"
    sig = token.split(".")[-1]
    assert not sig or sig not in r.text, "the token's signature is echoed"
    return msg


# ---- a static JWKS on a local http.server --------------------------------------------------


class JWKS:
    """Serves one JSON document (or a status) at /jwks.json and counts the requests."""

    def __init__(self):
        self.doc = {"keys": []}
        self.status = 200
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.hits += 1
                body = json.dumps(outer.doc).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, *keys):
        self.doc = {"keys": list(keys)}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks():
    j = JWKS()
    yield j
    j.close()


def jwt_sets(*extra):
    return (f"auth.jwt_issuer={ISSUER}", f"auth.jwt_audience={AUDIENCE}", "auth.jwt_leeway_s=5") + extra


# ---- HS256 ---------------------------------------------------------------------------------


def test_hs256_tokens_and_every_refusal(soma):
    srv = soma(*jwt_sets(f"auth.jwt_secret={SECRET}"))
    used = []
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        check_envelope(c.get("/v1/runtime-config"), 401)  # JWTs configured: no anonymous access
        good = hs256(scope="chat")
        used.append(good)
        r = c.get("/v1/runtime-config", headers=bearer(good))
        assert r.status_code == 200, r.text
        assert r.json()["auth"]["tenant"] == "acme"
        assert c.get("/v1/runtime-config", headers=bearer(good)).status_code == 200  # cached

        now = int(time.time())
        cases = [
            (hs256(exp=now - 60), "expired"),
            (hs256(nbf=now + 120), "not valid yet"),
            (hs256(aud="someone-else"), "audience"),
            (hs256(aud=None), "audience"),
            (hs256(iss="https://evil.example"), "issuer"),
            (hs256(exp=None), "no exp"),
            (hs256(sub=None), "subject"),
            (hs256(tenant=None), "no tenant claim"),
            (hs256(tenant="not a tenant!"), "not a valid tenant id"),
            (jwt.encode(claims(), "not-the-secret-not-the-secret-0123", algorithm="HS256"), "signature is invalid"),
            (unsigned_token(), "alg none"),
            (jwt.encode(claims(), RSA_KEY, algorithm="RS256"), "auth.jwt_public_key"),
            ("eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln", "not a well-formed JWT"),
        ]
        for token, words in cases:
            used.append(token)
            refused(c, token, words)

        # leeway: 3 s past exp is still inside auth.jwt_leeway_s = 5
        recent = hs256(exp=now - 3)
        used.append(recent)
        assert c.get("/v1/runtime-config", headers=bearer(recent)).status_code == 200

    log = srv.log_text()
    assert SECRET not in log
    for token in used:
        assert token not in log, "a token reached the log"
        sig = token.split(".")[-1]
        if sig:
            assert sig not in log, "a token's signature reached the log"


def test_tenant_claim_list_and_scopes(soma):
    srv = soma(*jwt_sets(f"auth.jwt_secret={SECRET}", "auth.jwt_tenant_claims=org_id,tenant"))
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        r = c.get("/v1/runtime-config", headers=bearer(hs256(org_id="globex")))
        assert r.status_code == 200 and r.json()["auth"]["tenant"] == "globex", r.text
        r = c.get("/v1/runtime-config", headers=bearer(hs256()))
        assert r.json()["auth"]["tenant"] == "acme", "falls back to the next claim"

        # scope admin opens admin endpoints, from scope (string) or scp (array or string)
        check_envelope(c.get("/v1/admin/config", headers=bearer(hs256(scope="chat"))), 403, "forbidden")
        check_envelope(c.get("/v1/keys", headers=bearer(hs256())), 403, "forbidden")
        for admin in (hs256(scope="chat admin"), hs256(scp=["admin"]), hs256(scp="read admin")):
            r = c.get("/v1/admin/config", headers=bearer(admin))
            assert r.status_code == 200, r.text
        r = c.post("/v1/keys", json={"tenant": "globex"}, headers=bearer(hs256(scp=["admin"])))
        assert r.status_code == 201, r.text
        wait_until(lambda: any(a["action"] == "key.create" and a["subject"] == "jwt:alice" for a in
                               c.get("/v1/admin/audit", headers=bearer(hs256(scope="admin"))).json()["items"]),
                   3, interval=0.05, what="the key.create audit row of the JWT caller")


# ---- RS256 with a PEM key, and algorithm confusion ------------------------------------------


def test_rs256_with_a_pem_key_and_no_alg_confusion(soma, tmp_path):
    pem = tmp_path / "idp.pem"
    pem.write_bytes(public_pem(RSA_KEY))
    srv = soma(*jwt_sets(f"auth.jwt_public_key={pem}"))
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        good = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
        assert c.get("/v1/runtime-config", headers=bearer(good)).status_code == 200
        refused(c, jwt.encode(claims(), RSA_OTHER, algorithm="RS256"), "signature is invalid")
        refused(c, jwt.encode(claims(), EC_KEY, algorithm="ES256"), "does not fit")
        # the public key used as an HMAC secret: refused, there is no HS256 secret at all
        refused(c, hmac_with(public_pem(RSA_KEY)), "auth.jwt_secret")
        refused(c, hmac_with(pem.read_bytes().strip()), "auth.jwt_secret")
        health = c.get("/v1/health").json()["services"]["auth"]
        assert "PEM key (RSA)" in health["detail"], health


def test_alg_confusion_with_a_secret_configured_too(soma, tmp_path):
    pem = tmp_path / "idp.pem"
    pem.write_bytes(public_pem(RSA_KEY))
    srv = soma(*jwt_sets(f"auth.jwt_public_key={pem}", f"auth.jwt_secret={SECRET}"))
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        refused(c, hmac_with(public_pem(RSA_KEY)), "signature is invalid")
        assert c.get("/v1/runtime-config", headers=bearer(hs256())).status_code == 200
        assert c.get("/v1/runtime-config",
                     headers=bearer(jwt.encode(claims(), RSA_KEY, algorithm="RS256"))).status_code == 200


def test_bad_public_key_file_stops_start_up(tmp_path):
    cp = run_cli(["run", "--set", f"http.listen=127.0.0.1:{free_port()}", "--set", f"data.dir={tmp_path / 'data'}",
                  "--set", f"auth.jwt_public_key={tmp_path / 'missing.pem'}"], tmp_path)
    assert cp.returncode != 0
    assert "auth.jwt_public_key" in cp.stderr and "missing.pem" in cp.stderr, cp.stderr


# ---- JWKS: ES256 and RS256 by kid, rotation -------------------------------------------------


def test_jwks_keys_by_kid_and_rotation(soma, jwks):
    jwks.serve(jwk(EC_KEY, "ec-1"), jwk(RSA_KEY, "rsa-1"))
    srv = soma(*jwt_sets(f"auth.jwt_jwks_url={jwks.url}", "auth.jwt_jwks_refresh_s=300"))
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        assert jwks.hits == 1, "fetched once at start"
        es = jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})
        rs = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
        assert c.get("/v1/runtime-config", headers=bearer(es)).status_code == 200
        assert c.get("/v1/runtime-config", headers=bearer(rs)).status_code == 200
        refused(c, jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "rsa-1"}), "does not fit")
        refused(c, jwt.encode(claims(), EC_NEXT, algorithm="ES256", headers={"kid": "ec-1"}), "signature is invalid")
        health = c.get("/v1/health").json()["services"]["auth"]
        assert health["status"] == "ok" and "JWKS 2 key(s)" in health["detail"], health

        # the issuer rotates: a new kid appears, the old ones go
        jwks.serve(jwk(EC_NEXT, "ec-2"))
        fresh = jwt.encode(claims(), EC_NEXT, algorithm="ES256", headers={"kid": "ec-2"})
        refused(c, fresh, "unknown key id")  # answered at once; a refresh is asked for
        wait_until(lambda: c.get("/v1/runtime-config", headers=bearer(fresh)).status_code == 200, 5,
                   interval=0.1, what="the rotated-in key to be fetched")
        assert jwks.hits == 2
        refused(c, es, "unknown key id")  # the old key is gone, cached tokens included
        refused(c, jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "forged"}), "unknown key id")
        time.sleep(0.5)
        assert jwks.hits == 2, "unknown kids ask for at most one refresh per 10 s"
    log = srv.log_text()
    assert "ec-2" in log, "the new key set is logged (kids only)"
    for token in (es, rs, fresh):
        assert token not in log


def test_jwks_unreachable_degrades_auth_and_refuses_tokens(soma, jwks):
    jwks.status = 500
    srv = soma(*jwt_sets(f"auth.jwt_jwks_url={jwks.url}"))
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        auth = wait_until(lambda: (c.get("/v1/health").json()["services"]["auth"]
                                   if "HTTP status 500" in c.get("/v1/health").text else None),
                          5, interval=0.1, what="the JWKS failure in /v1/health")
        assert auth["status"] == "degraded", auth
        es = jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})
        refused(c, es, "unknown key id")
    srv.wait_log(lambda o: o.get("level") == "warn" and "auth.jwt_jwks_url" in o.get("msg", ""), timeout=2,
                 what="a warning naming auth.jwt_jwks_url")


def test_public_address_with_jwts_only_starts(soma):
    srv = soma(f"auth.jwt_secret={SECRET}", listen_host="0.0.0.0", connect_host="127.0.0.1")
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        check_envelope(c.get("/v1/runtime-config"), 401)
        r = c.get("/v1/runtime-config", headers=bearer(jwt.encode(claims(iss=None, aud=None), SECRET, "HS256")))
        assert r.status_code == 200 and r.json()["auth"]["tenant"] == "acme", r.text
    health = httpx.get(srv.url + "/v1/health", timeout=5).json()["services"]["auth"]
    assert health["detail"].endswith("JWT: HS secret"), health
