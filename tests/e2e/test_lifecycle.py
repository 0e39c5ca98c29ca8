"""Lifecycle: graceful SIGTERM with a request in flight, the grace limit, a second signal,
and a critical service failing to start."""

import signal
import socket
import time

import httpx
import pytest

from e2e_util import TS_RE, check_envelope, free_port, start_server

START_ORDER = ["store", "bus", "auth", "disk", "policy", "memory", "llm", "queue", "workers", "http"]

# a POST whose body is only half sent: the request is in flight until the rest arrives
HEAD = b"POST /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: inflight-1\r\nContent-Length: 10\r\n\r\n"


def _stop_order(srv):
    return [o["msg"].split()[-1] for o in srv.logs_quiet() if o.get("msg", "").startswith("stopping service ")]


def _begin_in_flight(srv):
    c = srv.connect(timeout=5)
    c.send(HEAD + b"12345")
    # whether the server has read our bytes is not observable from outside; a request answered
    # on a second connection shows it is serving, and the pause lets its io thread read them
    with srv.connect() as probe:
        probe.send(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert probe.read_response().status == 200
    time.sleep(0.1)
    return c


def _sigterm_and_wait_drain(srv):
    srv.signal(signal.SIGTERM)
    t0 = time.monotonic()
    srv.wait_log(lambda o: o.get("msg") == "stopping service http", timeout=3, what="the drain to begin")
    return t0


def test_sigterm_lets_the_in_flight_request_finish(soma):
    srv = soma("shutdown.grace_s=5")
    c = _begin_in_flight(srv)
    t0 = _sigterm_and_wait_drain(srv)
    time.sleep(0.3)
    assert srv.proc.poll() is None, "exited while a request was in flight"
    c.send(b"67890")
    r = c.read_response(timeout=3)
    check_envelope(r, 405)
    assert r.header("x-request-id") == "inflight-1"
    assert (r.header("connection") or "").lower() == "close", "a response during the drain must close"
    assert c.closed_by_peer(timeout=3)
    c.close()
    rc = srv.wait_exit(timeout=max(0.5, 5 - (time.monotonic() - t0)))
    srv.checked = True
    assert rc == 0, srv.log_text()
    assert time.monotonic() - t0 < 5, "took longer than shutdown.grace_s"
    assert _stop_order(srv) == list(reversed(START_ORDER)), srv.log_text()
    msgs = [o.get("msg", "") for o in srv.logs_quiet()]
    assert any(m.startswith("received SIGTERM") for m in msgs)
    assert msgs.index("stopping service http") < msgs.index("stopping service store")
    assert "shutdown complete" in msgs


def test_new_connections_refused_during_drain(soma):
    srv = soma("shutdown.grace_s=5")
    c = _begin_in_flight(srv)
    _sigterm_and_wait_drain(srv)
    time.sleep(0.2)
    refused = False
    try:
        with srv.connect(timeout=2) as n:
            n.send(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            try:
                refused = n.closed_by_peer(timeout=1.0)
            except AssertionError as e:  # bytes came back: the drain is serving new connections
                pytest.fail(f"a new connection was served during the drain: {e}")
            except (BrokenPipeError, ConnectionResetError):
                refused = True
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        refused = True
    finally:
        c.send(b"67890")  # let the drain end either way
        c.read_response(timeout=3)
        c.close()
    rc = srv.wait_exit(timeout=5)
    srv.checked = True
    assert refused, "a new connection during the drain was neither refused nor closed within 1 s (it hangs)"
    assert rc == 0, srv.log_text()


def test_grace_period_expires(soma):
    srv = soma("shutdown.grace_s=1")
    c = _begin_in_flight(srv)  # never completed
    srv.signal(signal.SIGTERM)
    t0 = time.monotonic()
    rc = srv.wait_exit(timeout=6)
    elapsed = time.monotonic() - t0
    srv.checked = True
    assert rc == 0, srv.log_text()
    assert 0.8 <= elapsed <= 4.0, f"exited {elapsed:.2f} s after SIGTERM with shutdown.grace_s=1"
    assert c.closed_by_peer(timeout=2)
    c.close()
    assert _stop_order(srv) == list(reversed(START_ORDER))
    assert any(o.get("level") == "warn" and o.get("service") == "http" for o in srv.logs_quiet()), (
        "no warning about connections cut off after the grace period"
    )


def test_second_signal_exits_at_once(soma):
    srv = soma("shutdown.grace_s=30")
    c = _begin_in_flight(srv)
    _sigterm_and_wait_drain(srv)
    time.sleep(1.1)  # (a repeat within a second is the same stop delivered twice: ignored)
    srv.signal(signal.SIGTERM)
    t0 = time.monotonic()
    rc = srv.wait_exit(timeout=3)
    srv.checked = True
    assert time.monotonic() - t0 < 1.5
    assert rc == 128 + signal.SIGTERM, f"exit {rc}; log:\n{srv.log_text()}"
    c.close()


def test_second_signal_log_line_is_a_full_log_line(soma):
    srv = soma("shutdown.grace_s=30")
    c = _begin_in_flight(srv)
    _sigterm_and_wait_drain(srv)
    time.sleep(1.1)
    srv.signal(signal.SIGINT)
    rc = srv.wait_exit(timeout=3)
    srv.checked = True
    c.close()
    assert rc == 128 + signal.SIGINT
    last = srv.json_logs()[-1]
    assert "second signal" in last.get("msg", ""), last
    assert TS_RE.match(last.get("ts", "")), f"log line without ts: {last}"


def test_a_stop_delivered_twice_at_once_is_still_graceful(soma):
    """`make run` stopped through its process group: make forwards the SIGTERM the group got, so
    somaagent gets a second one moments after the first. That is one stop, not a user's second ask."""
    srv = soma("shutdown.grace_s=5")
    c = _begin_in_flight(srv)
    _sigterm_and_wait_drain(srv)
    srv.signal(signal.SIGTERM)  # the forwarded copy, moments after the first
    time.sleep(0.3)
    assert srv.proc.poll() is None, "the repeated signal cut the graceful stop short"
    c.close()
    assert srv.wait_exit(timeout=10) == 0, srv.log_text()
    srv.checked = True


def test_sighup_is_graceful(soma):
    """A closed terminal or ssh session (SIGHUP) stops the server as SIGTERM does: it used to kill
    it at once (exit 129), cutting running tasks and replies."""
    srv = soma()
    srv.signal(signal.SIGHUP)
    assert srv.wait_exit(timeout=10) == 0, srv.log_text()
    srv.checked = True
    assert any(o.get("msg", "").startswith("received SIGHUP") for o in srv.logs_quiet())


def test_sighup_ignored_at_start_is_left_alone(soma):
    """Under nohup (SIGHUP ignored when the server starts) the terminal's hangup is not a stop."""
    srv = soma(preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    srv.signal(signal.SIGHUP)
    time.sleep(1)
    assert srv.proc.poll() is None, "a server started under nohup stopped on SIGHUP"
    assert httpx.get(srv.url + "/v1/health", timeout=5).status_code == 200


def test_sigint_is_graceful(soma):
    srv = soma()
    srv.signal(signal.SIGINT)
    assert srv.wait_exit(timeout=10) == 0, srv.log_text()
    srv.checked = True
    assert any(o.get("msg", "").startswith("received SIGINT") for o in srv.logs_quiet())
    assert _stop_order(srv) == list(reversed(START_ORDER))
    assert _start_order(srv) == START_ORDER, srv.log_text()


def test_critical_service_start_failure(tmp_path):
    port = free_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        srv = start_server(tmp_path, port=port, wait=False)
        t0 = time.monotonic()
        rc = srv.wait_exit(timeout=10)
        srv.checked = True
    finally:
        blocker.close()
    assert rc == 1, f"exit {rc}; log:\n{srv.log_text()}"
    assert time.monotonic() - t0 < 5
    text = srv.log_text()
    assert "http" in text and "in use" in text, text
    plain = [ln for ln in srv.log_lines() if not ln.startswith("{")]
    assert any("http" in ln and "in use" in ln for ln in plain + srv.log_lines()), text
    # everything before http started; it is stopped in reverse order
    assert _stop_order(srv) == list(reversed(START_ORDER[:-1])), text
    msgs = [o.get("msg", "") for o in srv.logs_quiet()]
    assert not any(" ready in " in m for m in msgs), "claimed to be ready"


def _start_order(srv):
    out = []
    for o in srv.logs_quiet():
        m = o.get("msg", "")
        if m.startswith("service ") and " started in " in m:
            out.append(m.split()[1])
    return out


@pytest.mark.parametrize("role,services", [
    ("gateway", ["store", "bus", "auth", "disk", "policy", "memory", "queue", "http"]),
    ("worker", START_ORDER),
])
def test_role_start_and_stop_order(soma, role, services):
    import httpx

    srv = soma(role=role)
    body = httpx.get(srv.url + "/v1/health", timeout=5).json()
    assert list(body["services"]) == services or set(body["services"]) == set(services), body
    assert _start_order(srv) == services, srv.log_text()
    srv.stop()
    assert _stop_order(srv) == list(reversed(services)), srv.log_text()
