"""Celery's tooling sees our workers (queue.driver=redis): `celery inspect ping` from Debian's
celery lists the node; the pidbox answers stats, active, active_queues, registered, revoked and
conf; worker heartbeats and task events on celeryev carry Celery 5.2's fields and drive
celery.events.state.State to SUCCESS; `control revoke` and POST /v1/tasks/{id}/revoke keep a
queued task from running (REVOKED); GET /v1/workers shows every node's workers.

Reference: shared/reference/interop.md sections 1.9 (events) and 1.10 (pidbox)."""

import json
import subprocess
import threading
import time

import pytest

from e2e_util import clean_env, http, wait_until
from servers import RedisServer

STANDARD = {"type", "hostname", "timestamp", "utcoffset", "pid", "clock"}
WORKER = STANDARD | {"freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"}
TASK_FIELDS = {
    "task-received": {"uuid", "name", "args", "kwargs", "root_id", "parent_id", "retries", "eta", "expires"},
    "task-started": {"uuid"},
    "task-succeeded": {"uuid", "result", "runtime"},
    "task-failed": {"uuid", "exception", "traceback"},
    "task-retried": {"uuid", "exception", "traceback"},
    "task-revoked": {"uuid", "terminated", "signum", "expired"},
}

# events, the pidbox and revoke broadcasts live in Redis: the store plays no part
pytestmark = pytest.mark.store_neutral


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as r:
        yield r


@pytest.fixture
def node(soma, redis_server, tmp_path):
    """start(name="soma@e2e-a", *sets) -> a server on the redis driver with that nodename."""
    redis_server.client().flushdb()

    def start(name="soma@e2e-a", *sets, **kw):
        return soma("queue.driver=redis", f"redis.url={redis_server.url()}", f"celery.nodename={name}", *sets,
                    data_dir=tmp_path / name.replace("@", "-"), **kw)
    return start


@pytest.fixture
def app(redis_server):
    from celery import Celery
    a = Celery("e2e", broker=redis_server.url(), backend=redis_server.url())
    yield a
    a.close()


def celery_cli(redis_server, *args, timeout=30):
    return subprocess.run(["/usr/bin/python3", "-m", "celery", "-b", redis_server.url(), *args],
                          capture_output=True, text=True, timeout=timeout, env=clean_env())


class Capture:
    """A celeryev receiver (as `celery events` / Flower run one) in a thread, feeding State."""

    def __init__(self, app):
        self.app = app
        self.events = []
        self.state = app.events.State()
        self.conn = app.connection()
        self.recv = app.events.Receiver(self.conn, handlers={"*": self._on})
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        time.sleep(1.0)  # the PSUBSCRIBE is in place

    def _on(self, ev):
        self.events.append(dict(ev))  # as received (State adds keys to the dict it is given)
        self.state.event(ev)

    def _run(self):
        try:
            self.recv.capture(limit=None, timeout=60, wakeup=False)
        except Exception:
            pass

    def of(self, type_, **match):
        return [e for e in self.events if e["type"] == type_ and all(e.get(k) == v for k, v in match.items())]

    def close(self):
        self.recv.should_stop = True
        self.thread.join(5)
        self.conn.release()


def test_celery_inspect_ping_lists_our_worker(node, redis_server):
    node("soma@e2e-a")
    cp = celery_cli(redis_server, "inspect", "ping", "--timeout", "3")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "soma@e2e-a: OK" in cp.stdout and "pong" in cp.stdout, cp.stdout
    # addressed to another node: ours stays silent
    cp = celery_cli(redis_server, "inspect", "ping", "--timeout", "1.5", "-d", "celery@elsewhere")
    assert "soma@e2e-a" not in cp.stdout, cp.stdout


def test_inspect_answers(node, app):
    node("soma@e2e-a")
    i = app.control.inspect(timeout=3, destination=["soma@e2e-a"])
    stats = i.stats()["soma@e2e-a"]
    assert stats["pid"] > 0 and stats["pool"]["max-concurrency"] >= 2 and isinstance(stats["total"], dict)
    assert i.active() == {"soma@e2e-a": []}
    registered = i.registered()["soma@e2e-a"]
    assert {"conversation.process", "soma.echo", "soma.noop", "soma.sleep", "soma.fail", "soma.tool"} <= set(
        registered) and registered == sorted(registered), registered
    queues = {q["name"] for q in i.active_queues()["soma@e2e-a"]}
    assert {"celery", "conversation"} <= queues
    assert i.conf()["soma@e2e-a"]["task_default_queue"] == "celery"
    assert i.revoked() == {"soma@e2e-a": []}
    assert app.control.ping(timeout=2) == [{"soma@e2e-a": {"ok": "pong"}}]


def test_inspect_stats_names_the_broker_and_the_prefetch(node, redis_server):
    """`celery inspect stats` reports the broker as a Python worker does (kombu's Connection.info
    without the password): the host, port and db (virtual_host) of redis.url, and prefetch_count
    as Celery's: the prefetch multiplier times the node's concurrency."""
    from celery import Celery
    url = f"redis://default:s3cret@127.0.0.1:{redis_server.port}/2"
    node("soma@e2e-a", f"redis.url={url}", "queue.prefetch=3")
    a = Celery("e2e", broker=url, backend=url)
    try:
        stats = a.control.inspect(timeout=3, destination=["soma@e2e-a"]).stats()["soma@e2e-a"]
    finally:
        a.close()
    broker = stats["broker"]
    assert (broker["hostname"], broker["port"], broker["virtual_host"], broker["transport"]) == (
        "127.0.0.1", redis_server.port, "2", "redis"), broker
    assert broker["userid"] == "default" and "password" not in broker and "s3cret" not in json.dumps(stats), broker
    python_worker = {"alternates", "connect_timeout", "failover_strategy", "heartbeat", "hostname", "insist",
                     "login_method", "port", "ssl", "transport", "transport_options", "uri_prefix", "userid",
                     "virtual_host"}  # Celery 5.2's worker on redis (/tmp/rev43/out/mixed.txt)
    assert set(broker) == python_worker, broker
    assert stats["prefetch_count"] == 3 * stats["pool"]["max-concurrency"], stats


def test_inspect_active_lists_args_and_start_time(node, app):
    """`celery inspect active` shows a running task as Celery 5.2's Request.info(safe) does: the
    arguments as values (their reprs with safe), and when the worker took it (unix s)."""
    node("soma@e2e-a")
    t0 = time.time()
    res = app.send_task("soma.sleep", args=[30], kwargs={"note": "x"})

    def listed(safe=None):
        got = app.control.inspect(timeout=1, destination=["soma@e2e-a"]).active(safe=safe) or {}
        return [t for t in got.get("soma@e2e-a", []) if t["id"] == res.id]
    (info,) = wait_until(listed, 10, interval=0.2, what="the task in inspect active")
    assert (info["name"], info["type"], info["hostname"]) == ("soma.sleep", "soma.sleep", "soma@e2e-a"), info
    assert (info["args"], info["kwargs"]) == ([30], {"note": "x"}), info
    assert isinstance(info["time_start"], float) and info["time_start"] >= t0 - 1, info
    assert info["acknowledged"] is True and info["delivery_info"]["routing_key"] == "celery", info
    (safe,) = listed(safe=True)
    assert (safe["args"], safe["kwargs"]) == ("[30]", "{'note': 'x'}"), safe


def test_heartbeats_and_task_events(node, app):
    cap = Capture(app)
    srv = node("soma@e2e-a", "celery.events=true")
    try:
        wait_until(lambda: cap.of("worker-heartbeat", hostname="soma@e2e-a"), 5, what="a heartbeat")
        (online,) = cap.of("worker-online", hostname="soma@e2e-a")
        hb = cap.of("worker-heartbeat")[0]
        for ev in (online, hb):
            assert set(ev) - {"local_received"} == WORKER, ev
        assert hb["freq"] == 2.0 and hb["pid"] == srv.proc.pid and len(hb["loadavg"]) == 3
        assert hb["sw_ident"] == "somaagent" and isinstance(hb["processed"], int) and hb["utcoffset"] == 0
        r = http().post(srv.url + "/v1/tasks", json={"task": "soma.echo", "args": [2, 3]}, timeout=5)
        assert r.status_code == 202, r.text
        tid = r.json()["task_id"]
        wait_until(lambda: cap.of("task-succeeded", uuid=tid), 10, what="task-succeeded")
        for t in ("task-received", "task-started", "task-succeeded"):
            (ev,) = cap.of(t, uuid=tid)
            assert set(ev) - {"local_received"} == STANDARD | TASK_FIELDS[t], ev
            assert ev["hostname"] == "soma@e2e-a"
        assert cap.of("task-received", uuid=tid)[0]["name"] == "soma.echo"
        clocks = [e["clock"] for e in cap.events if e["hostname"] == "soma@e2e-a"]
        assert clocks == sorted(clocks) and len(set(clocks)) == len(clocks), clocks
        task = cap.state.tasks[tid]
        assert task.state == "SUCCESS" and task.name == "soma.echo" and task.worker.hostname == "soma@e2e-a"
        assert cap.state.workers["soma@e2e-a"].alive
        srv.stop()
        wait_until(lambda: cap.of("worker-offline", hostname="soma@e2e-a"), 5, what="worker-offline")
        assert not cap.state.workers["soma@e2e-a"].alive
    finally:
        cap.close()


def test_task_received_repeats_the_headers_a_python_producer_sent(node, app):
    """Celery 5.2's worker sends root_id, parent_id, eta, expires and the args/kwargs reprs of
    task-received from the message headers (worker/strategy.py): Flower and State link a chain's
    children to their parent and root by them. A revoke that kills nothing says signum None."""
    from celery.signals import before_task_publish
    sent = {}

    def record(headers=None, **_):
        sent[headers["id"]] = dict(headers)
    before_task_publish.connect(record, weak=False)
    cap = Capture(app)
    node("soma@e2e-a", "celery.events=true")
    try:
        wait_until(lambda: cap.of("worker-heartbeat", hostname="soma@e2e-a"), 5, what="a heartbeat")
        res = app.send_task("soma.echo", args=[1, "a"], kwargs={"k": 2}, root_id="ROOT-1",
                            parent_id="PARENT-1", countdown=1, expires=600)
        wait_until(lambda: cap.of("task-succeeded", uuid=res.id), 15, what="task-succeeded")
        (rec,) = cap.of("task-received", uuid=res.id)
        h = sent[res.id]
        assert h["eta"] and h["expires"], h
        assert (rec["root_id"], rec["parent_id"]) == ("ROOT-1", "PARENT-1"), rec
        assert (rec["eta"], rec["expires"]) == (h["eta"], h["expires"]), (rec, h)
        assert (rec["args"], rec["kwargs"]) == (h["argsrepr"], h["kwargsrepr"]) == ("[1, 'a']", "{'k': 2}"), rec
        task = cap.state.tasks[res.id]
        assert (task.root_id, task.parent_id) == ("ROOT-1", "PARENT-1")
        assert task.state == "SUCCESS" and task.eta == h["eta"] and task.expires == h["expires"]
        # a plain task: root is itself, no parent, no eta, no expiry (null, as Celery sends them)
        plain = app.send_task("soma.noop")
        wait_until(lambda: cap.of("task-received", uuid=plain.id), 15, what="task-received")
        (rec,) = cap.of("task-received", uuid=plain.id)
        assert (rec["root_id"], rec["parent_id"], rec["eta"], rec["expires"]) == (plain.id, None, None, None), rec
        assert (rec["args"], rec["kwargs"]) == ("()", "{}"), rec
        # revoked before it ran: not terminated, so no signal number (None, not False)
        late = app.send_task("soma.noop", countdown=3)
        app.control.revoke(late.id)
        wait_until(lambda: cap.of("task-revoked", uuid=late.id), 15, what="task-revoked")
        (rv,) = cap.of("task-revoked", uuid=late.id)
        assert (rv["terminated"], rv["signum"], rv["expired"]) == (False, None, False), rv
    finally:
        before_task_publish.disconnect(record)
        cap.close()


def test_enable_events_by_remote_control(node, app):
    srv = node("soma@e2e-a")  # celery.events off: heartbeats only
    cap = Capture(app)
    try:
        r = http().post(srv.url + "/v1/tasks", json={"task": "soma.noop"}, timeout=5)
        quiet = r.json()["task_id"]
        wait_until(lambda: http().get(f"{srv.url}/v1/tasks/{quiet}").json()["status"] == "SUCCESS", 10)
        assert app.control.enable_events(reply=True, timeout=2) == [{"soma@e2e-a": {"ok": "task events enabled"}}]
        r = http().post(srv.url + "/v1/tasks", json={"task": "soma.noop"}, timeout=5)
        loud = r.json()["task_id"]
        wait_until(lambda: cap.of("task-succeeded", uuid=loud), 10, what="task events after enable_events")
        assert not cap.of("task-succeeded", uuid=quiet)
    finally:
        cap.close()


def test_control_revoke_keeps_a_queued_task_from_running(node, app):
    srv = node("soma@e2e-a")
    r = http().post(srv.url + "/v1/tasks", json={"task": "soma.echo", "countdown": 3}, timeout=5)
    tid = r.json()["task_id"]
    app.control.revoke(tid)
    wait_until(lambda: tid in app.control.inspect(timeout=1).revoked().get("soma@e2e-a", []), 5,
               what="the revoke to reach the node")
    wait_until(lambda: http().get(f"{srv.url}/v1/tasks/{tid}").json()["status"] == "REVOKED", 10,
               interval=0.2, what="REVOKED")
    time.sleep(0.5)
    assert http().get(f"{srv.url}/v1/tasks/{tid}").json()["status"] == "REVOKED"


def test_api_revoke_broadcasts_to_celery(node, app, redis_server):
    srv = node("soma@e2e-a")
    r = http().post(srv.url + "/v1/tasks", json={"task": "soma.echo", "countdown": 5}, timeout=5)
    tid = r.json()["task_id"]
    r = http().post(f"{srv.url}/v1/tasks/{tid}/revoke", timeout=5)
    assert r.status_code == 202 and r.json() == {"task_id": tid, "status": "REVOKED", "revoked": True}, r.text
    assert tid in app.control.inspect(timeout=2).revoked()["soma@e2e-a"]
    assert app.AsyncResult(tid).state == "REVOKED"  # the result backend says so for Python clients
    assert http().get(f"{srv.url}/v1/tasks/{tid}").json()["status"] == "REVOKED"


def test_workers_cluster_view(node):
    a = node("soma@e2e-a")
    node("soma@e2e-b", role="worker")

    def both():
        body = http().get(a.url + "/v1/workers", timeout=5).json()
        return ({n["node"] for n in body["nodes"]} == {"soma@e2e-a", "soma@e2e-b"} and
                {w["node"] for w in body["workers"]} == {"soma@e2e-a", "soma@e2e-b"} and body)
    body = wait_until(both, 8, interval=0.2, what="both nodes in /v1/workers")
    assert body["scope"] == "cluster"
    assert {w["node"] for w in body["workers"]} == {"soma@e2e-a", "soma@e2e-b"}
    assert all({"id", "queue", "state"} <= set(w) for w in body["workers"])
    n = body["nodes"][0]
    assert {"node", "pid", "last_heartbeat_at", "active", "processed", "queues"} <= set(n)


def test_api_revoke_checks_owner_and_outcome_in_redis(node, redis_server, tmp_path, app):
    from e2e_util import create_key
    alice = create_key(tmp_path / "soma-e2e-a", tmp_path, "alice")
    srv = node("soma@e2e-a")
    r = redis_server.client()
    r.set("soma-task-owner-t-bob", "bob")  # as the relay records a task of tenant bob
    r.set("soma-task-owner-t-done", "alice")
    r.set("celery-task-meta-t-done", json.dumps({"status": "SUCCESS", "result": 1, "task_id": "t-done"}))
    hdr = {"Authorization": f"Bearer {alice}"}
    got = http().post(f"{srv.url}/v1/tasks/t-bob/revoke", headers=hdr, timeout=5)
    assert got.status_code == 404, got.text
    # an id with no owner (a Python producer's task, a beat run not yet due) is not a tenant's to
    # revoke: a REVOKED result stored ahead would cancel it when it comes
    got = http().post(f"{srv.url}/v1/tasks/beat-nightly-1795943340/revoke", headers=hdr, timeout=5)
    assert got.status_code == 404, got.text
    assert not r.exists("celery-task-meta-beat-nightly-1795943340")
    got = http().post(f"{srv.url}/v1/tasks/t-done/revoke", headers=hdr, timeout=5)
    assert got.status_code == 409 and got.json()["error"]["code"] == "task_finished", got.text
    assert json.loads(r.get("celery-task-meta-t-done"))["status"] == "SUCCESS"
    r.set("soma-task-owner-t-mine", "alice")
    got = http().post(f"{srv.url}/v1/tasks/t-mine/revoke", headers=hdr, timeout=5)
    assert got.status_code == 202 and got.json()["status"] == "REVOKED", got.text
    meta = json.loads(r.get("celery-task-meta-t-mine"))
    assert meta["status"] == "REVOKED" and meta["result"]["exc_type"] == "TaskRevokedError"
    assert not r.exists("celery-task-meta-t-bob")
    revoked = wait_until(lambda: (got := app.control.inspect(timeout=1).revoked()) and
                         "t-mine" in got["soma@e2e-a"] and got["soma@e2e-a"], 5, what="t-mine revoked")
    assert "t-bob" not in revoked and "t-done" not in revoked, revoked


def test_unsupported_controls_answer_not_supported_and_query_task_answers(node, redis_server, app):
    """A control this node does not do gets kombu's error reply (the CLI said "No nodes replied",
    exit 69, as for a dead node); query_task lists a running task."""
    node("soma@e2e-a")
    cp = celery_cli(redis_server, "control", "rate_limit", "soma.echo", "10/m", "--timeout", "3")
    assert cp.returncode == 0 and "soma@e2e-a" in cp.stdout and "ERROR" in cp.stdout, cp.stdout + cp.stderr
    for method, args in [("time_limit", {"task_name": "soma.echo", "soft": 1}), ("add_consumer", {"queue": "x"}),
                         ("cancel_consumer", {"queue": "x"}), ("pool_grow", {"n": 1})]:
        (got,) = app.control.broadcast(method, arguments=args, reply=True, timeout=2, destination=["soma@e2e-a"])
        assert "not supported by this node" in got["soma@e2e-a"]["error"], (method, got)
    res = app.send_task("soma.sleep", args=[30])
    i = app.control.inspect(timeout=2, destination=["soma@e2e-a"])
    # taken and not started yet it is answered 'reserved' (as Celery does), then 'active'
    got = wait_until(lambda: (q := i.query_task([res.id])) and q["soma@e2e-a"].get(res.id, [""])[0] == "active" and q,
                     10, interval=0.2, what="query_task to list the running task")
    state, info = got["soma@e2e-a"][res.id]
    assert state == "active" and info["id"] == res.id and info["name"] == "soma.sleep", got
    cp = celery_cli(redis_server, "inspect", "query_task", res.id, "--timeout", "3")
    assert cp.returncode == 0 and res.id in cp.stdout, cp.stdout + cp.stderr
    app.control.revoke(res.id)


def test_task_events_name_the_shadow_and_repr_the_exception(node, app):
    """As Celery 5.2's Request: task-received names the shadow name when one was sent, and
    task-failed's exception is the safe_repr (Exception('evfail')) with the text we have as the
    traceback (it was the bare message and an empty traceback)."""
    cap = Capture(app)
    node("soma@e2e-a", "celery.events=true")
    try:
        shown = app.send_task("soma.echo", args=[1], shadow="shown.name")
        bad = app.send_task("soma.fail", kwargs={"message": "evfail"})
        wait_until(lambda: cap.of("task-failed", uuid=bad.id) and cap.of("task-succeeded", uuid=shown.id), 15,
                   what="the two outcomes' events")
        assert cap.of("task-received", uuid=shown.id)[0]["name"] == "shown.name"
        (failed,) = cap.of("task-failed", uuid=bad.id)
        assert failed["exception"] == "Exception('evfail')", failed
        assert "evfail" in failed["traceback"], failed
    finally:
        cap.close()


def test_inspect_scheduled_lists_a_task_held_for_its_eta(node, app):
    """`inspect scheduled` answered [] while the node held a countdown task; now each held task
    as Celery 5.2 lists a timer entry: {eta, priority, request: Request.info}."""
    node("soma@e2e-a")
    r = app.send_task("soma.echo", args=[7], kwargs={"k": 1}, countdown=30, priority=3)

    def listed():
        got = app.control.inspect(timeout=1, destination=["soma@e2e-a"]).scheduled() or {}
        return [e for e in got.get("soma@e2e-a", []) if e["request"]["id"] == r.id]
    (entry,) = wait_until(listed, 10, interval=0.3, what="the held task in inspect scheduled")
    req = entry["request"]
    assert entry["eta"] and entry["priority"] == 3, entry
    assert (req["name"], req["args"], req["kwargs"], req["acknowledged"]) == ("soma.echo", [7], {"k": 1}, False), req
    assert req["hostname"] == "soma@e2e-a" and req["delivery_info"]["routing_key"] == "celery", req
    app.control.revoke(r.id)


def test_task_received_is_sent_on_receipt_of_a_countdown_task(node, app):
    """Celery 5.2 sends task-received when the worker takes a countdown/eta message (with its eta),
    not when it becomes due; it was sent at dispatch. Once only: not again when it runs."""
    cap = Capture(app)
    node("soma@e2e-a", "celery.events=true")
    try:
        wait_until(lambda: cap.of("worker-heartbeat", hostname="soma@e2e-a"), 5, what="a heartbeat")
        sent = time.time()
        r = app.send_task("soma.echo", args=[5], countdown=4)
        (ev,) = wait_until(lambda: cap.of("task-received", uuid=r.id), 2.5, interval=0.1,
                           what="task-received before the countdown ends")
        assert ev["eta"] and ev["name"] == "soma.echo" and ev["timestamp"] < sent + 3, ev
        (started,) = wait_until(lambda: cap.of("task-started", uuid=r.id), 10, what="task-started")
        assert started["timestamp"] >= sent + 3.5, started
        wait_until(lambda: cap.of("task-succeeded", uuid=r.id), 10, what="task-succeeded")
        assert len(cap.of("task-received", uuid=r.id)) == 1, cap.of("task-received", uuid=r.id)
        assert cap.state.tasks[r.id].state == "SUCCESS"
    finally:
        cap.close()
