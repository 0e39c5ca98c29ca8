"""GET /v1/health (CONTRACTS.md section 3 Operations)."""

import datetime
import time

import httpx

from e2e_util import TS_RE, run_cli

# name -> critical, for the default role "all"
EXPECTED = {"store": True, "bus": True, "auth": True, "disk": False, "policy": False, "memory": False, "llm": False,
            "queue": True, "workers": True, "http": True}


def _version(tmp_path):
    cp = run_cli(["version"], tmp_path)
    assert cp.returncode == 0
    return cp.stdout.split()[-1]


def test_health_ok(server, tmp_path):
    r = httpx.get(server.url + "/v1/health", timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("x-request-id"), "X-Request-Id missing on /v1/health"
    body = r.json()
    assert body["status"] == "ok", body
    assert body["version"] == _version(tmp_path)
    assert isinstance(body["uptime_s"], int) and 0 <= body["uptime_s"] < 60, body
    assert set(body["services"]) == set(EXPECTED), body["services"]
    now = datetime.datetime.now(datetime.timezone.utc)
    for name, svc in body["services"].items():
        assert set(svc) >= {"status", "critical", "detail", "since"}, svc
        assert svc["status"] == "ok", (name, svc)
        assert svc["critical"] is EXPECTED[name], (name, svc)
        assert isinstance(svc["detail"], str) and svc["detail"], (name, svc)
        assert TS_RE.match(svc["since"]), (name, svc["since"])
        since = datetime.datetime.strptime(svc["since"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
        assert abs((now - since).total_seconds()) < 120, (name, svc["since"])


def test_health_head(server):
    r = httpx.head(server.url + "/v1/health", timeout=5)
    assert r.status_code == 200
    assert int(r.headers["content-length"]) > 0
    assert r.content == b""


def test_health_degraded_when_disk_low(soma):
    srv = soma("data.min_free_mb=1000000000")
    r = httpx.get(srv.url + "/v1/health", timeout=5)
    assert r.status_code == 200, "degraded must still answer 200"
    body = r.json()
    assert body["status"] == "degraded", body
    disk = body["services"]["disk"]
    assert disk["status"] == "degraded", disk
    assert disk["critical"] is False
    assert "free" in disk["detail"], disk
    for name in EXPECTED:
        if name != "disk":
            assert body["services"][name]["status"] == "ok", body
    # a degraded non-critical service is still up
    m = httpx.get(srv.url + "/metrics", timeout=5).text
    assert 'soma_service_up{service="disk"} 1' in m, m


def test_health_degraded_without_llm_key(soma):
    """No LLM API key: the llm service is "unconfigured", the whole is degraded but serving."""
    srv = soma(llm=False)
    r = httpx.get(srv.url + "/v1/health", timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "degraded", body
    llm = body["services"]["llm"]
    assert llm["status"] == "unconfigured", llm
    assert llm["critical"] is False, llm
    assert "llm.api_key" in llm["detail"], llm
    for name in EXPECTED:
        if name != "llm":
            assert body["services"][name]["status"] == "ok", body


def test_health_503_while_starting(tmp_path, llm):
    """Before every service is up, /v1/health answers 503 with status "down" (or the starting
    envelope); it turns 200 once the start completes. Polled from the moment the port opens."""
    from e2e_util import start_server, wait_healthy

    srv = start_server(tmp_path, sets=llm.sets(), wait=False)
    try:
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                r = httpx.get(srv.url + "/v1/health", timeout=2)
            except httpx.TransportError:
                time.sleep(0.005)
                continue
            seen.append(r.status_code)
            if r.status_code == 200:
                break
            assert r.status_code == 503, r.text
            assert r.headers["content-type"].startswith("application/json")
            body = r.json()
            assert body.get("status") == "down" or body.get("error", {}).get("code") == "starting", body
            time.sleep(0.005)
        assert seen and seen[-1] == 200, seen
        wait_healthy(srv)
    finally:
        srv.stop()


def test_custom_provider_without_a_model_is_unconfigured(soma, llm):
    srv = soma("llm.model=")
    h = httpx.get(f"{srv.url}/v1/health").json()
    assert h["status"] == "degraded"
    assert h["services"]["llm"]["status"] == "unconfigured"
    assert "llm.model" in h["services"]["llm"]["detail"]


def test_health_shows_the_provider_without_its_credentials(soma, llm):
    """/v1/health is public: the LLM's base URL is shown without a user or password and without a
    query string (where some providers take their key)."""
    url = f"http://someone:pass@word-secret@127.0.0.1:{llm.port}/v1?key=query-secret"  # an @ in the password
    srv = soma("llm.provider=custom", f"llm.base_url={url}", "llm.api_key=k", "llm.model=m")
    r = httpx.get(srv.url + "/v1/health", timeout=5)
    assert r.status_code == 200, r.text
    assert "secret" not in r.text and "someone" not in r.text, r.text
    assert f"m at http://127.0.0.1:{llm.port}/v1" in r.text, r.text


def test_redis_queue_is_down_while_its_broker_does_not_answer(soma):
    """queue.driver=redis: the critical `queue` service says whether Redis answers (tasks published
    meanwhile wait in the outbox, none runs), and is ok again once it is back."""
    from celery_util import redis_sets
    from e2e_util import wait_until
    from servers import RedisServer

    with RedisServer() as redis:
        srv = soma(*redis_sets(redis))

        def queue_svc(want):
            r = httpx.get(srv.url + "/v1/health", timeout=5)
            svc = r.json()["services"]["queue"]
            return (r, svc) if svc["status"] == want else None

        r, svc = wait_until(lambda: queue_svc("ok"), 10, what="the queue service to be ok")
        assert svc["critical"] is True, svc
        redis.kill()
        r, svc = wait_until(lambda: queue_svc("down"), 15, what="the queue service to say its Redis is down")
        assert r.status_code == 503 and r.json()["status"] == "down", r.text
        assert f"redis at 127.0.0.1:{redis.port} unreachable" in svc["detail"] and "redis.url" in svc["detail"], svc
        redis.start()
        wait_until(lambda: queue_svc("ok"), 15, what="the queue service to be ok again")


def test_a_redis_queue_without_an_append_only_file_is_said_so(soma):
    """queue.driver=redis on a Redis that keeps no append-only file: the tasks it holds are
    acknowledged and no longer in the store, so a Redis restart loses them. The log and the queue
    service's detail say so (once asked); with appendonly yes they do not."""
    from celery_util import redis_sets
    from e2e_util import wait_until
    from servers import RedisServer

    with RedisServer() as redis:
        srv = soma(*redis_sets(redis))
        def risk_named():
            svc = httpx.get(srv.url + "/v1/health", timeout=5).json()["services"]["queue"]
            return svc if "append-only" in svc["detail"] else None

        svc = wait_until(risk_named, 10, what="the detail to name the risk")
        assert svc["status"] == "ok" and "appendonly yes" in svc["detail"], svc
        assert any("keeps no append-only file" in o.get("msg", "") for o in srv.logs_quiet())
        srv.stop()
        redis.client().config_set("appendonly", "yes")
        srv = soma(*redis_sets(redis), data_dir=srv.data_dir)
        wait_until(lambda: httpx.get(srv.url + "/v1/health", timeout=5).json()["services"]["queue"]["status"] == "ok",
                   10, what="the queue service")
        time.sleep(1.5)  # (past a health poll)
        detail = httpx.get(srv.url + "/v1/health", timeout=5).json()["services"]["queue"]["detail"]
        assert "append-only" not in detail, detail
