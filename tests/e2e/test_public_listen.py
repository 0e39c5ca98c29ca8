"""A public listen address without any credential is refused (exit 2, says how to fix)."""

import time

import httpx

from e2e_util import create_key, describe, free_port, run_cli, start_server


def test_public_address_without_keys_refused(tmp_path):
    port = free_port()
    t0 = time.monotonic()
    cp = run_cli(["run", "--set", f"http.listen=0.0.0.0:{port}", "--set", f"data.dir={tmp_path / 'empty'}"],
                 tmp_path, timeout=10)
    assert cp.returncode == 2, describe(cp)
    assert time.monotonic() - t0 < 5
    assert "keys create" in cp.stderr, cp.stderr
    assert "http.listen" in cp.stderr, cp.stderr
    # a container's operator sets environment variables, not --set: the message names the one to set
    assert "SOMA_AUTH_ADMIN_TOKEN" in cp.stderr, cp.stderr


def test_public_address_with_a_key_starts(soma, tmp_path):
    data = tmp_path / "data"
    token = create_key(data, tmp_path, "acme", scope="admin")
    srv = soma(listen_host="0.0.0.0", connect_host="127.0.0.1", data_dir=data)
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        assert c.get("/v1/health").status_code == 200
        assert c.get("/v1/runtime-config").status_code == 401  # no anonymous access, even from loopback
        r = c.get("/v1/runtime-config", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["auth"]["tenant"] == "acme"
    srv.stop(expect=0)


def test_public_address_with_admin_token_starts(tmp_path):
    srv = start_server(tmp_path, sets=["auth.admin_token=" + "t" * 40], listen_host="0.0.0.0")
    try:
        assert httpx.get(srv.url + "/v1/runtime-config", timeout=5).status_code == 401
    finally:
        srv.stop(expect=0)
