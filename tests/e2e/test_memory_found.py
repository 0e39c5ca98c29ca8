"""Memory bugs found by review, each reproduced against the fake SomaBrain
(tests/fakes/somabrain/server.py) and fixed; every test here failed on the build before its fix."""

import time

from e2e_util import create_key, http, wait_until

from test_memory import FakeSomaBrain, _auth, drained, memory_health, outbox, remember

import pytest


@pytest.fixture
def brain(tmp_path):
    b = FakeSomaBrain(tmp_path)
    yield b
    b.stop()


def test_key_never_reaches_a_header(soma, brain):
    """A memory key with CR LF once went out as the X-Request-ID header: it added an X-Tenant-ID
    of the client's choosing to the SomaBrain call. Keys are now [A-Za-z0-9._:/-] (422 otherwise)
    and a write's X-Request-ID is a fresh id, never the key."""
    srv = soma(*brain.sets())
    memory_health(srv, "ok")
    for bad in ("abc\r\nX-Tenant-ID: victim\r\nX-Evil: 1", "a b", "k\"y", "caf\u00e9", "a\tb"):
        r = http().post(srv.url + "/v1/memory/remember", json={"value": {"content": "hello"}, "key": bad},
                        timeout=5)
        assert r.status_code == 422, (bad, r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_key" and err["request_id"] and "A-Za-z0-9" in err["message"], err
    assert outbox(srv)["pending"] == 0
    # keys of the safe set (the original's tenant/namespace/... paths included) still work
    good = ["my-key_1.v2", "urn:x:1", "acme/wm/s1/user/2024-01-01T00:00:00Z/0123abcd"]
    for key in good:
        assert remember(srv, {"content": f"hello {key}"}, key=key) == {"key": key, "status": "queued"}
    drained(srv)
    st = brain.stats()
    assert sorted(k for _, k in st["order"]) == sorted(good), st
    hdr = st["last_headers"]
    assert hdr["x-tenant-id"] == "default" and "x-evil" not in hdr, hdr
    assert hdr["x-request-id"] and hdr["x-request-id"] not in good, hdr


def test_poison_row_answered_5xx_fails_after_max_attempts(soma, brain, tmp_path):
    """A row SomaBrain always answers 500 opened the breaker by its own third failure; from then on
    the state was down whenever it settled, so it never spent an attempt: pending for ever, the
    probe after every open period, memory down for every tenant. Now a row whose own failure
    opens the breaker spends its attempt and is `failed` after memory.max_attempts."""
    brain.control(poison="POISON", poison_status=500)
    srv = soma(*brain.sets("memory.max_attempts=3", "memory.breaker_failures=3"))
    user = create_key(srv.data_dir, tmp_path, "acme")
    other = create_key(srv.data_dir, tmp_path, "other")
    wait_until(lambda: http().get(srv.url + "/v1/memory/outbox", headers=_auth(other), timeout=5).status_code == 200,
               30, what="the keys to be picked up")
    memory_health(srv, "ok")
    bad = remember(srv, {"content": "POISON always 500"}, user, session_id="p1")["key"]
    box = wait_until(lambda: (lambda b: b if b["failed"] == 1 else None)(outbox(srv, user)), 10,
                     what="the poison row to fail (old build: pending for ever)")
    item = box["items"][0]
    assert item["key"] == bad and item["state"] == "failed" and item["attempts"] == 3, box
    assert "HTTP 500" in item["last_error"], item
    # the other tenant's writes go through and memory is normal again (the probe succeeds)
    keys = [remember(srv, {"content": f"fine {i}"}, other, session_id="p2")["key"] for i in range(3)]
    wait_until(lambda: outbox(srv, other)["pending"] == 0, 10, what="the other tenant's writes")
    assert [k for t, k in brain.stats()["order"] if t == "other"] == keys
    wait_until(lambda: outbox(srv, other)["state"] == "normal", 5, what="memory to be normal again")


def test_401_and_404_keep_the_rows_and_name_the_setting(soma, brain):
    """401/403/404/405 were REJECTED, the row's fault: a wrong API key or URL turned every write
    into `failed` while memory looked normal. Now they are an outage of the setup: rows wait,
    the state is degraded or down, and the log names the setting to check."""
    srv = soma(*brain.sets("memory.max_attempts=3"))
    memory_health(srv, "ok")
    keys = []
    for status, setting in ((401, "memory.somabrain_api_key"), (404, "memory.somabrain_url")):
        brain.control(status=status)
        keys.append(remember(srv, {"content": f"kept through {status}"})["key"])
        time.sleep(1)  # the old build failed the row within this (3 rejected attempts, 50 ms backoff)
        box = outbox(srv)
        assert box["failed"] == 0 and box["pending"] == 1 and box["state"] != "normal", box
        srv.wait_log(lambda o: f"HTTP {status}; check {setting}" in o.get("msg", ""), timeout=10,
                     what=f"a log line naming {setting}")
        brain.control(status=None)
        drained(srv)
    assert [k for _, k in brain.stats()["order"]] == keys


def test_one_key_in_two_namespaces_is_two_memories(soma, brain):
    """The outbox was unique on (tenant, key) while the built-in table and SomaBrain key by
    (tenant, namespace, key): k1 remembered in namespace a, then in b, while SomaBrain was down,
    answered `queued` twice and delivered one. Now both rows wait and both arrive."""
    brain.control(mode="down")
    srv = soma(*brain.sets())
    memory_health(srv, "degraded")
    for ns in ("a", "b"):
        assert remember(srv, {"content": f"k1 in {ns}"}, key="k1", namespace=ns) == {"key": "k1", "status": "queued"}
    assert remember(srv, {"content": "k1 in a again"}, key="k1", namespace="a")["status"] == "queued"
    box = outbox(srv)
    assert box["pending"] == 2 and sorted(i["namespace"] for i in box["items"]) == ["a", "b"], box
    brain.control(mode="ok")
    drained(srv)
    st = brain.stats()
    assert st["stored"] == 2 and st["order"] == [["default", "k1"], ["default", "k1"]], st


def test_tags_must_be_strings(server):
    """Tags that were not strings were stored and sent on: `[1, {"a": 2}, null]` answered 200."""
    for tags in ([1, {"a": 2}, None], ["ok", 2], [["nested"]], [True]):
        r = http().post(server.url + "/v1/memory/remember", json={"value": {"content": "t"}, "tags": tags}, timeout=5)
        assert r.status_code == 422, (tags, r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_tags" and err["request_id"] and "strings" in err["message"], err
    assert remember(server, {"content": "t"}, tags=["a", "b"])["status"] == "queued"
    assert remember(server, {"content": "t"}, tags=[])["status"] == "queued"


def test_recall_result_without_score_or_payload_leaks_nothing(soma, brain):
    """A SomaBrain result without score or payload got a new placeholder value with a second
    reference: one leak per such result (LeakSanitizer at exit, on the sanitizer build)."""
    srv = soma(*brain.sets())
    memory_health(srv, "ok")
    brain.control(recall_results=[{"layer": "wm"}, {"score": 0.5}, {"payload": {"content": "p"}}])
    for _ in range(3):
        r = http().post(srv.url + "/v1/memory/recall", json={"query": "anything", "top_k": 5}, timeout=5)
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [{"score": 0, "payload": {}, "source": "wm"},
                                       {"score": 0.5, "payload": {}, "source": "somabrain"},
                                       {"score": 0, "payload": {"content": "p"}, "source": "somabrain"}], r.text
    srv.stop()  # exit status and stderr: no leak report


def test_rate_of_one_per_second_delivers_while_degraded(soma, brain):
    """memory.relay_rate_per_s=1: degraded halves the rate to 0.5 and the token bucket was capped
    at that, below the one token a claim needs: nothing was delivered while degraded."""
    brain.control(mode="not_ready")  # /health says ready=false: degraded; calls still work
    srv = soma(*brain.sets("memory.relay_rate_per_s=1"))
    memory_health(srv, "degraded")
    keys = [remember(srv, {"content": f"slow {i}"}, session_id="r1")["key"] for i in range(2)]
    wait_until(lambda: outbox(srv)["pending"] == 0, 10, what="two writes at 0.5/s (old build: none)")
    assert [k for _, k in brain.stats()["order"]] == keys
    assert outbox(srv)["state"] == "degraded"
