"""Policy (docs/security.md, Policy; CONTRACTS.md section 6): one decision table
(policy_table.json) through the real endpoints on the builtin engine and on OPA (tests/fakes/opa
answering the same table), fail closed when OPA is down, slow, failing or undefined, the 403
envelope, the policy.denied event on the stream, the metric, the audit row, the worker's re-check
of queued work, the OPA cache and the policy service in /v1/health."""

import json
import socket
import time
import zlib
from pathlib import Path

import httpx
import pytest

from e2e_util import (check_envelope, create_key, describe, find_samples, free_port, open_stream,
                      parse_metrics, run_cli, wait_terminal, wait_until)
from opa_fake import opa, opa_session  # noqa: F401 - the fixtures

HERE = Path(__file__).resolve().parent
TABLE_PATH = HERE / "policy_table.json"
TABLE = json.loads(TABLE_PATH.read_text())
TENANTS = ("acme", "readonly", "nomodel", "ops", "zeta", "root")
SCOPES = {"ops": "admin", "root": "admin"}


def engine_sets(engine, tmp_path, opa=None, ttl_ms=1000):
    if engine == "builtin":
        path = tmp_path / "policy.json"
        path.write_text(json.dumps(TABLE["policy"]))
        return [f"policy.file={path}"]
    return ["policy.engine=opa", f"policy.opa_url={opa.url}", "policy.opa_timeout_ms=2000",
            f"policy.cache_ttl_ms={ttl_ms}"]


def keys_for(tmp_path, data):
    return {t: create_key(str(data), str(tmp_path), t, scope=SCOPES.get(t)) for t in TENANTS}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def png(size=0):
    """A valid 1x1 PNG, padded after IEND to size bytes (libmagic still says image/png)."""
    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    img = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", bytes.fromhex("0000000100000001080200000000"[:26]))
           + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))
    return img + b"\x00" * max(0, size - len(img))


def upload_body(spec, session_id=None):
    data = png(spec["size"]) if spec["kind"] == "png" else (b"hello text\n" * 100)[:spec["size"]]
    b = "soma-test-boundary"
    parts = b""
    if session_id:
        parts += f'--{b}\r\nContent-Disposition: form-data; name="session_id"\r\n\r\n{session_id}\r\n'.encode()
    parts += (f'--{b}\r\nContent-Disposition: form-data; name="files"; filename="{spec["name"]}"\r\n'
              f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return parts, {"Content-Type": f"multipart/form-data; boundary={b}"}


def send(srv, token, req):
    headers = bearer(token)
    kw = {}
    if "json" in req:
        kw["json"] = req["json"]
    if "upload" in req:
        kw["content"], extra = upload_body(req["upload"])
        headers.update(extra)
    return httpx.request(req["method"], srv.url + req["path"], headers=headers, timeout=15, **kw)


def history(srv, token, sid):
    r = httpx.get(f"{srv.url}/v1/sessions/{sid}/history", headers=bearer(token), timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def check_denied(resp, reason):
    err = check_envelope(resp, 403, "policy_denied")
    assert err["reason"] == reason, err
    assert err["message"].startswith(reason + ": "), err
    return err


def run_requests(srv, keys):
    for req in TABLE["requests"]:
        token = keys[req["key"]]
        r = send(srv, token, req)
        what = f"{req['key']} {req['method']} {req['path']} {req.get('json') or req.get('upload') or ''}"
        assert r.status_code == req["status"], f"{what}: {r.status_code} {r.text}"
        if req["status"] == 403:
            check_denied(r, req["reason"])
        then = req.get("then") or {}
        if "reply" in then:
            evs = wait_terminal(srv, then["reply"], token)
            assert evs[-1]["type"] == "assistant.final", evs
        if "event" in then:
            want = then["event"]

            def denied():
                return [e for e in history(srv, token, want["session"]) if e["type"] == "policy.denied"]

            evs = wait_until(denied, 10, what=f"a policy.denied event on {want['session']}")
            assert evs[-1]["metadata"] == {"action": want["action"], "reason": want["reason"]}, evs
            assert evs[-1]["role"] == "system", evs


@pytest.mark.parametrize("engine", ["builtin", "opa"])
def test_decision_table_through_the_endpoints(soma, tmp_path, opa, engine):
    data = tmp_path / "data"
    keys = keys_for(tmp_path, data)
    srv = soma(*engine_sets(engine, tmp_path, opa), data_dir=str(data))
    run_requests(srv, keys)
    if engine == "opa":
        st = opa.stats()
        assert st["invalid"] == [], f"inputs that break CONTRACTS.md section 6: {st['invalid']}"
        assert st["unmatched"] == [], f"inputs the table does not know (so shaped unlike it): {st['unmatched']}"
        assert st["requests"] >= len(TABLE["requests"]), st["requests"]
    _, samples = parse_metrics(httpx.get(srv.url + "/metrics", timeout=5).text)
    deny = find_samples(samples, "soma_policy_decisions_total", engine=engine, action="llm.invoke", decision="deny")
    allow = find_samples(samples, "soma_policy_decisions_total", engine=engine, action="llm.invoke", decision="allow")
    assert deny and deny[0][1] >= 2 and allow and allow[0][1] >= 3, (deny, allow)


def test_deny_envelope_event_on_the_stream_metric_and_audit(soma, tmp_path):
    data = tmp_path / "data"
    keys = keys_for(tmp_path, data)
    srv = soma(*engine_sets("builtin", tmp_path), data_dir=str(data))
    acme = keys["acme"]
    r = httpx.post(srv.url + "/v1/session/message", headers=bearer(acme), json={"session_id": "s-ev", "message": "x"})
    assert r.status_code == 200, r.text
    wait_terminal(srv, "s-ev", acme)
    with open_stream(srv, "s-ev", token=acme) as stream:
        r = httpx.delete(srv.url + "/v1/sessions/s-ev", headers=bearer(acme), timeout=5)
        check_denied(r, "action_not_allowed")
        rid = r.headers["x-request-id"]
        _, ev = stream.events(lambda e: e.get("type") == "policy.denied", timeout=10)[-1]
    assert ev["role"] == "system" and ev["session_id"] == "s-ev", ev
    assert ev["metadata"] == {"action": "session.delete", "reason": "action_not_allowed"}, ev
    assert "session.delete" in ev["message"] and isinstance(ev["seq"], int), ev
    # a file refused for its type, with the session named in the form: the event goes there too
    body, headers = upload_body({"name": "n.txt", "size": 40, "kind": "text"}, session_id="s-ev")
    r = httpx.post(srv.url + "/v1/uploads", content=body, headers={**headers, **bearer(acme)}, timeout=10)
    check_denied(r, "upload_type_not_allowed")
    wait_until(lambda: any(e["type"] == "policy.denied" and e["metadata"]["action"] == "upload.create"
                           for e in history(srv, acme, "s-ev")), 10, what="the upload's policy.denied event")
    # no session: no event, still the 403 (and the session of another tenant is never touched)
    check_denied(httpx.delete(srv.url + "/v1/sessions/none-such", headers=bearer(acme), timeout=5),
                 "action_not_allowed")
    # the metric
    _, samples = parse_metrics(httpx.get(srv.url + "/metrics", timeout=5).text)
    got = find_samples(samples, "soma_policy_decisions_total", engine="builtin", action="session.delete",
                       decision="deny")
    assert got and got[0][1] == 2, got
    # the audit trail: who, what, which resource, the decision, the request id and the reason
    def audit_rows():
        r = httpx.get(srv.url + "/v1/admin/audit?tenant=acme", headers=bearer(keys["root"]), timeout=5)
        assert r.status_code == 200, r.text
        return [i for i in r.json()["items"] if i["action"] == "policy.denied:session.delete"]

    rows = wait_until(lambda: len(audit_rows()) == 2 and audit_rows(), 5, what="two audit rows")
    row = next(i for i in rows if i["request_id"] == rid)
    assert row["tenant"] == "acme" and row["decision"] == "deny" and row["resource"] == "session:s-ev", row
    assert row["detail"] == "action_not_allowed" and row["subject"].startswith("key:"), row


def test_worker_rechecks_queued_work_with_opa(soma, tmp_path, opa):
    """The gateway allows the message; the worker's llm.invoke is denied: a policy.denied event
    is committed instead of a reply."""
    opa.control(table=[
        {"input": {"action": "conversation.send"}, "result": True},
        {"input": {"action": "llm.invoke", "context": {"stream": True}},
         "result": {"allow": False, "reason": "no_models_on_sundays"}},
        {"input": {"action": "session.read"}, "result": True},
    ])
    srv = soma(*engine_sets("opa", tmp_path, opa))
    r = httpx.post(srv.url + "/v1/session/message", json={"session_id": "w1", "message": "hi"}, timeout=10)
    assert r.status_code == 200, r.text

    def denied():
        r = httpx.get(srv.url + "/v1/sessions/w1/history", timeout=5)
        return [e for e in r.json()["events"] if e["type"] == "policy.denied"] if r.status_code == 200 else None

    evs = wait_until(denied, 10, what="the worker's policy.denied event")
    assert evs[0]["metadata"] == {"action": "llm.invoke", "reason": "no_models_on_sundays"}, evs
    types = [e["type"] for e in httpx.get(srv.url + "/v1/sessions/w1/history", timeout=5).json()["events"]]
    assert types == ["user", "policy.denied"], types
    worker = [i for i in opa.stats()["inputs"] if i["context"].get("queued")]
    assert worker and worker[0]["resource"] == "session:w1" and worker[0]["subject"] == "anonymous", worker


def test_worker_rechecks_queued_tasks_with_opa(soma, tmp_path, opa):
    """POST /v1/tasks is allowed; when the worker picks the task up, task.run (asked again with
    context.queued) is denied: the task fails with the reason, runs nothing, and is audited."""
    opa.control(table=[
        {"input": {"action": "task.run", "context": {"queued": True}},
         "result": {"allow": False, "reason": "tasks_paused_by_ops"}},
        {"input": {"action": "task.run"}, "result": True},
        {"input": {"action": "admin.audit"}, "result": True},
    ])
    srv = soma(*engine_sets("opa", tmp_path, opa))
    r = httpx.post(srv.url + "/v1/tasks", json={"task": "soma.echo", "args": ["x"]}, timeout=10)
    assert r.status_code == 202, r.text
    tid = r.json()["task_id"]

    def failed():
        t = httpx.get(f"{srv.url}/v1/tasks/{tid}", timeout=5).json()
        return t if t["status"] == "FAILURE" else None

    t = wait_until(failed, 10, what="the queued task to be refused by the worker")
    assert t["result"] is None and "tasks_paused_by_ops" in t["error"], t
    worker = [i for i in opa.stats()["inputs"] if i["action"] == "task.run" and i["context"].get("queued")]
    assert worker and worker[0]["context"]["task"] == "soma.echo" and worker[0]["subject"] == "anonymous", worker
    rows = wait_until(lambda: [a for a in httpx.get(srv.url + "/v1/admin/audit", timeout=5).json()["items"]
                               if a["action"] == "policy.denied:task.run"], 5, what="the audit row")
    assert rows[0]["detail"] and "tasks_paused_by_ops" in rows[0]["detail"], rows


def _allow_default_reads(opa):
    opa.control(table=[{"input": {"tenant": "default", "action": "session.read"}, "result": True},
                       {"input": {"tenant": "default", "action": "llm.invoke"},
                        "result": {"allow": True, "reason": "allowed"}}])


@pytest.mark.parametrize("mode,reason", [
    ("down", "opa_unreachable"),
    ("slow", "opa_timeout"),
    ("500", "opa_error"),
    ("undefined", "opa_undefined"),
    ("unreachable", "opa_unreachable"),
])
def test_opa_fails_closed(soma, tmp_path, opa, mode, reason):
    _allow_default_reads(opa)
    url = f"http://127.0.0.1:{free_port()}" if mode == "unreachable" else opa.url
    # a 1 s timeout: the fake OPA (a Python thread) can take a few hundred ms to answer on a loaded
    # machine, and a late answer is a fail-closed 403 by design, not what the first half checks
    srv = soma("policy.engine=opa", f"policy.opa_url={url}", "policy.opa_timeout_ms=1000", "policy.cache_ttl_ms=0")
    if mode != "unreachable":
        # OPA answering: the route-level check waits for it off the io loop and resumes the request
        assert httpx.get(srv.url + "/v1/sessions", timeout=5).status_code == 200
        assert httpx.post(srv.url + "/v1/llm/invoke", json={"messages": [{"role": "user", "content": "x"}]},
                          timeout=10).status_code == 200
        opa.control(mode=mode, delay_ms=6000)
    t0 = time.monotonic()
    check_denied(httpx.get(srv.url + "/v1/sessions", timeout=15), reason)
    check_denied(httpx.post(srv.url + "/v1/llm/invoke", json={"messages": [{"role": "user", "content": "x"}]},
                            timeout=15), reason)
    # two requests: ~2 s with the timeout honoured, 12 s or more (the slow mode) without it
    assert time.monotonic() - t0 < 9, "a fail-closed answer must not wait beyond policy.opa_timeout_ms"
    # the io loop was never blocked: a public route answers while OPA is slow
    assert httpx.get(srv.url + "/v1/health", timeout=5).status_code == 200


def test_opa_results_as_objects_or_bare_booleans(soma, tmp_path, opa):
    opa.control(table=[{"input": {"tenant": "default", "action": "session.read"}, "result": True},
                       {"input": {"tenant": "default", "action": "session.delete"},
                        "result": {"allow": False, "reason": "keep_everything"}}])
    srv = soma(*engine_sets("opa", tmp_path, opa, ttl_ms=0))
    assert httpx.get(srv.url + "/v1/sessions", timeout=5).status_code == 200
    err = check_denied(httpx.delete(srv.url + "/v1/sessions/x", timeout=5), "keep_everything")
    assert "keep_everything" in err["message"], err
    opa.control(mode="bool")  # {"result": false} now
    check_denied(httpx.delete(srv.url + "/v1/sessions/x", timeout=5), "denied")
    assert httpx.get(srv.url + "/v1/sessions", timeout=5).status_code == 200
    check_denied(httpx.post(srv.url + "/v1/session/message", json={"message": "hi"}, timeout=5), "opa_undefined")


def test_opa_decisions_are_cached_for_the_ttl(soma, tmp_path, opa):
    _allow_default_reads(opa)
    srv = soma(*engine_sets("opa", tmp_path, opa, ttl_ms=60000))
    before = opa.stats()["requests"]
    for _ in range(5):
        assert httpx.get(srv.url + "/v1/sessions", timeout=5).status_code == 200
    assert opa.stats()["requests"] == before + 1, "one OPA query for five identical inputs"
    # a cached deny is reused too; a changed input is asked again
    check_denied(httpx.delete(srv.url + "/v1/sessions/a", timeout=5), "opa_undefined")
    check_denied(httpx.delete(srv.url + "/v1/sessions/a", timeout=5), "opa_undefined")
    check_denied(httpx.delete(srv.url + "/v1/sessions/b", timeout=5), "opa_undefined")
    assert opa.stats()["requests"] == before + 3


def test_policy_service_reports_opa_reachability(soma, tmp_path, opa):
    srv = soma(*engine_sets("opa", tmp_path, opa), "health.interval_ms=100")

    def policy_status(want):
        body = httpx.get(srv.url + "/v1/health", timeout=5)
        assert body.status_code == 200, "the policy service is not critical"
        svc = body.json()["services"]["policy"]
        return (body.json(), svc) if svc["status"] == want and svc["critical"] is False else None

    _, svc = wait_until(lambda: policy_status("ok"), 5, what="policy ok")
    opa.control(mode="down")
    health, svc = wait_until(lambda: policy_status("down"), 5, what="policy down while OPA is down")
    assert health["status"] == "degraded" and "unreachable" in svc["detail"], health
    assert opa.url.split("//")[1] in svc["detail"], svc
    opa.control(mode="ok")
    wait_until(lambda: policy_status("ok"), 5, what="policy ok again")


def test_health_names_the_builtin_rules(soma, tmp_path):
    srv = soma(*engine_sets("builtin", tmp_path))
    svc = httpx.get(srv.url + "/v1/health", timeout=5).json()["services"]["policy"]
    assert svc["status"] == "ok" and svc["critical"] is False, svc
    assert "policy.json" in svc["detail"] and "builtin" in svc["detail"], svc


@pytest.mark.parametrize("text,why", [(None, "cannot read"), ("{not json", "not valid JSON"),
                                      ('{"soma_policy": {"tenants": {"*": {"action": []}}}}', "unknown key")])
def test_a_policy_that_cannot_be_loaded_denies_everything(soma, tmp_path, text, why):
    path = tmp_path / "bad-policy.json"
    if text is not None:
        path.write_text(text)
    srv = soma(f"policy.file={path}", "health.interval_ms=100")
    body = httpx.get(srv.url + "/v1/health", timeout=5).json()
    assert body["status"] == "degraded", body
    svc = body["services"]["policy"]
    assert svc["status"] == "down" and why in svc["detail"] and str(path) in svc["detail"], svc
    check_denied(httpx.post(srv.url + "/v1/session/message", json={"message": "hi"}, timeout=5),
                 "policy_unavailable")
    check_denied(httpx.get(srv.url + "/v1/admin/config", timeout=5), "policy_unavailable")
    assert httpx.get(srv.url + "/metrics", timeout=5).status_code == 200, "public routes are not asked"


def test_opa_without_a_url_denies_everything(soma):
    srv = soma("policy.engine=opa")
    svc = httpx.get(srv.url + "/v1/health", timeout=5).json()["services"]["policy"]
    assert svc["status"] == "down" and "policy.opa_url" in svc["detail"], svc
    check_denied(httpx.get(srv.url + "/v1/sessions", timeout=5), "policy_unavailable")


def test_default_rules_keep_admin_for_admins_only(soma, tmp_path):
    data = tmp_path / "data"
    user = create_key(str(data), str(tmp_path), "t1")
    admin = create_key(str(data), str(tmp_path), "t1", scope="admin")
    srv = soma(data_dir=str(data))
    assert httpx.get(srv.url + "/v1/admin/config", headers=bearer(admin), timeout=5).status_code == 200
    assert httpx.get(srv.url + "/v1/queues", headers=bearer(admin), timeout=5).status_code == 200
    # without scope admin the auth step refuses first (403 forbidden), before policy
    check_envelope(httpx.get(srv.url + "/v1/admin/config", headers=bearer(user), timeout=5), 403, "forbidden")
    r = httpx.post(srv.url + "/v1/session/message", headers=bearer(user), json={"message": "hi"}, timeout=5)
    assert r.status_code == 200, r.text


def test_opa_credentials_in_its_url_reach_neither_health_nor_the_log(soma, tmp_path, opa):
    """/v1/health is public and logs are shipped: an OPA URL written with a user, a password or a
    query shows without them."""
    down = free_port()
    srv = soma("policy.engine=opa", f"policy.opa_url=http://ops:s3cr3t-pw@127.0.0.1:{down}/?token=t0ps3cr3t",
               "health.interval_ms=100")

    def policy_down():
        svc = httpx.get(srv.url + "/v1/health", timeout=5).json()["services"]["policy"]
        return svc if svc["status"] == "down" and "unreachable" in svc["detail"] else None

    svc = wait_until(policy_down, 10, what="policy down: OPA unreachable")
    check_denied(httpx.get(srv.url + "/v1/sessions", timeout=5), "opa_unreachable")
    assert f"http://127.0.0.1:{down}/" in svc["detail"], svc
    shown = httpx.get(srv.url + "/v1/health", timeout=5).text + srv.log_text()
    assert "s3cr3t-pw" not in shown and "t0ps3cr3t" not in shown and "ops:" not in shown, shown[-2000:]


URL_PW = "pw-" + "k7" * 12


def _url_sets(opa_port):
    """A password (and a query) in every URL-valued setting a server may hold unused."""
    return [f"memory.somabrain_url=http://brain:{URL_PW}@127.0.0.1:{free_port()}/?key={URL_PW}",
            f"otel.endpoint=http://otel:{URL_PW}@127.0.0.1:{free_port()}",
            f"policy.opa_url=http://ops:{URL_PW}@127.0.0.1:{opa_port}/?token={URL_PW}"]


def test_url_credentials_reach_no_config_view_nor_health(soma, tmp_path):
    """config show, run --dry-run, /v1/admin/config and /v1/health - also while OPA is not
    checked yet - show URL settings without user, password or query (the old build showed them
    whole in all four)."""
    sets = _url_sets(free_port()) + [f"llm.base_url=http://llm:{URL_PW}@127.0.0.1:{free_port()}/v1?k={URL_PW}"]
    flags = [a for s in sets for a in ("--set", s)]
    for args in (["config", "show"], ["config", "show", "--json"],
                 ["run", "--dry-run", "--set", f"data.dir={tmp_path / 'dry'}"]):
        cp = run_cli([*args, *flags], tmp_path)
        assert cp.returncode == 0 and "127.0.0.1" in cp.stdout, describe(cp)
        assert URL_PW not in cp.stdout + cp.stderr, (args, cp.stdout)

    admin_token = "admin-" + "t" * 40
    srv = soma(*_url_sets(free_port()), f"auth.admin_token={admin_token}")
    r = httpx.get(srv.url + "/v1/admin/config", headers=bearer(admin_token), timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["config"]["policy.opa_url"]["value"].startswith("http://127.0.0.1:"), r.text
    assert URL_PW not in r.text, r.text
    srv.stop()  # (a data.dir is one server's: the next one takes it)

    # an OPA that takes the connection and never answers: the policy service stays "not checked yet"
    hang = socket.socket()
    try:
        hang.bind(("127.0.0.1", 0))
        hang.listen(16)
        srv = soma("policy.engine=opa", "policy.opa_timeout_ms=8000", "health.interval_ms=100",
                   *_url_sets(hang.getsockname()[1]))
        seen = []
        for _ in range(10):
            seen.append(httpx.get(srv.url + "/v1/health", timeout=5).text)
            time.sleep(0.05)
        assert any("not checked yet" in t for t in seen), seen[-1]
        assert not any(URL_PW in t for t in seen), [t for t in seen if URL_PW in t][0]
    finally:
        hang.close()  # the probe's connection is reset: the server stops without waiting for it
    assert URL_PW not in srv.log_text()
