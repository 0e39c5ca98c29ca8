"""The follow-ups of a canvas (the next chain link, the chord join and the chord's body) meet a
Redis that fails under them, and are written again until Redis takes them, exactly once in effect.

Three ways Redis fails here: an outage (a durable redis-server stopped while the task runs and
started again), a BUSY window (a script runs past busy-reply-threshold; LOADING after a restart is
the same case), and a cut proxy: our server reaches Redis through a TCP proxy (CutProxy) that cuts
the one connection that sends a given pattern, either before Redis sees those commands or after
Redis ran them (the replies never arrive: the worker cannot tell, and writes them again). The
later links and the chord bodies run on a real Python Celery worker that records every run, so a
follow-up written twice shows as a task run twice."""

import json
import socket
import threading
import time

import pytest

from celery_util import DurableRedis, PyWorker, redis_sets, wait_task, write_app
from e2e_util import http, wait_until
from servers import RedisServer

PY_TASKS = '''

import json as _json


@app.task(name="py.record", bind=True)
def py_record(self, *args):
    with open(os.path.join(os.path.dirname(__file__), "py-record.log"), "a") as f:
        f.write(_json.dumps({"id": self.request.id, "args": list(args)}) + "\\n")
    return list(args)
'''


class CutProxy:
    """A TCP proxy in front of redis-server. arm(pattern, after) cuts, once, the connection whose
    client sends pattern: after=False drops those bytes (Redis never runs the commands in them),
    after=True forwards them and drops what Redis answers (Redis runs them; the client never
    learns it). Either way the client's connection is then closed."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.rule = None
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def arm(self, pattern, after):
        with self.lock:
            self.rule = (pattern, after)

    def close(self):
        self.closed = True
        self.lsock.close()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                c.close()
                continue
            pair = {"swallow": False}
            threading.Thread(target=self._up, args=(c, u, pair), daemon=True).start()
            threading.Thread(target=self._down, args=(c, u, pair), daemon=True).start()

    def _take(self, data):
        with self.lock:
            if self.rule and self.rule[0] in data:
                rule, self.rule = self.rule, None
                return rule
        return None

    def _up(self, c, u, pair):
        while True:
            try:
                data = c.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                break
            rule = self._take(data)
            if rule and not rule[1]:  # before: Redis never sees these commands
                break
            if rule:  # after: Redis runs them; their replies are dropped
                pair["swallow"] = True
            try:
                u.sendall(data)
            except OSError:
                break
            if rule:
                time.sleep(0.5)
                break
        for s, how in ((c, socket.SHUT_RDWR), (u, socket.SHUT_WR)):
            try:
                s.shutdown(how)
            except OSError:
                pass
        c.close()

    def _down(self, c, u, pair):
        while True:  # read Redis to the end, so closing never resets a connection with unread data
            try:
                data = u.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                break
            if not pair["swallow"]:
                try:
                    c.sendall(data)
                except OSError:
                    pair["swallow"] = True
        u.close()


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


@pytest.fixture
def durable_redis():
    with DurableRedis() as r:
        yield r


def py_worker(tmp_path, redis):
    path = write_app(tmp_path, redis.url())
    with open(path, "a") as f:
        f.write(PY_TASKS)
    py = PyWorker(tmp_path, queues="py")
    return py


def runs(tmp_path):
    path = tmp_path / "py-record.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def post(srv, path, body):
    r = http().post(srv.url + path, json=body, timeout=10)
    assert r.status_code == 202, r.text
    return r.json()


SETS = ("queue.visibility_timeout_s=120", "queue.routes=py.*=py")
# The slow task's outcome must meet the fault, which starts once the test has seen it running:
# long enough for a loaded CI machine (2 s once finished before a BUSY script had begun).
SLOW_S = 4
SLEPT = {"slept": float(SLOW_S)}


def chain_body():
    return {"tasks": [{"task": "soma.sleep", "kwargs": {"seconds": SLOW_S}},
                      {"task": "py.record", "args": ["second"], "queue": "py"},
                      {"task": "py.record", "args": ["third"], "queue": "py"}]}


def chord_body():
    # the quick member joins first; the slow one, whose outcome meets the fault, completes the chord
    return {"header": [{"task": "soma.echo", "args": [1]},
                       {"task": "soma.sleep", "kwargs": {"seconds": SLOW_S}}],
            "body": {"task": "py.record", "args": ["body"], "queue": "py"}}


def drained(redis):
    """Every queue empty and nothing unacked: each message sent has run and been acked (a copy
    sent by a replay is sent before the task after it can finish)."""
    c = redis.client()
    wait_until(lambda: not any(c.llen(k) for k in c.keys("py*") + c.keys("celery*") if c.type(k) == b"list")
               and c.hlen("unacked") == 0, 30, interval=0.1, what="the queues to drain")


def assert_chain_done(srv, tmp_path, redis, out):
    ids = out["task_ids"]
    last = wait_task(srv, ids[2], {"SUCCESS"}, timeout=60)
    assert last["result"] == [[SLEPT, "second"], "third"], last
    drained(redis)  # a second copy of a link, had one been sent, has run by now
    got = runs(tmp_path)
    assert sorted(r["id"] for r in got) == sorted(ids[1:]), got  # each later link ran exactly once
    second = next(r for r in got if r["id"] == ids[1])
    assert second["args"] == [SLEPT, "second"], second
    third = next(r for r in got if r["id"] == ids[2])
    assert third["args"] == [[SLEPT, "second"], "third"], third


def assert_chord_done(srv, tmp_path, redis, out):
    body = wait_task(srv, out["task_id"], {"SUCCESS"}, timeout=60)
    want = [[{"args": [1], "kwargs": {}}, SLEPT], "body"]
    assert body["result"] == want, body
    drained(redis)  # a second copy of the body, had one been sent, has run by now
    got = runs(tmp_path)
    assert [r["id"] for r in got] == [out["task_id"]], got  # the body ran exactly once
    assert got[0]["args"] == want, got
    assert not redis.client().exists(f"celery-taskset-meta-{out['group_id']}.j")


def quick_joined(redis, out):
    j = f"celery-taskset-meta-{out['group_id']}.j"
    wait_until(lambda: redis.client().zcard(j) == 1, 20, what="the quick member to join")
    # the entry must be the slow member's: the quick member's own entry stays until its ack is
    # written, and the slow one may not even be published yet (seen: BUSY began before that
    # publish, so the slow member never ran and no outcome met the fault)
    wait_until(lambda: unacked_tasks(redis) == ["soma.sleep"], 10, what="the worker to run the slow member")


def unacked_tasks(redis):
    """The task names of the messages taken and not acked yet (kombu's `unacked` hash holds
    [message, exchange, routing_key] per delivery tag)."""
    return sorted(json.loads(v)[0]["headers"]["task"] for v in redis.client().hvals("unacked"))


def logged(srv, text):
    return any(text in ln for ln in srv.log_lines())


def wait_logged(srv, text, what):
    """Waits for a log line; on a timeout the failure shows the server's last log lines (what happened
    instead: e.g. the outcome written before the fault began)."""
    try:
        wait_until(lambda: logged(srv, text), 30, interval=0.1, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; the server's last log lines:\n" + "\n".join(srv.log_lines()[-20:])) from None


def outage(srv, redis):
    redis.stop()  # until the sleeping task has finished and its worker met the outage
    wait_logged(srv, "waits for it", "the outcome to wait for Redis")
    redis.start()


def busy(srv, redis):
    redis.client().config_set("busy-reply-threshold", 50)

    def spin():
        try:
            redis.client().eval("while true do end", 0)
        except Exception:  # killed below
            pass

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:  # until the sleeping task has finished and its worker met the BUSY replies
        wait_logged(srv, "cannot take writes yet", "a BUSY reply")
    finally:
        _end_spin(redis, t)


def _end_spin(redis, t):
    """Kills the spinning script until its thread has returned: a SCRIPT KILL sent before the
    script began answers NOTBUSY, and the script then ran on, leaving the Redis of this xdist
    worker BUSY for the next test (seen: a chord test whose tasks could not even be published)."""
    deadline = time.monotonic() + 10
    while t.is_alive() and time.monotonic() < deadline:
        try:
            redis.client().script_kill()
        except Exception:  # NOTBUSY: not started yet, or already killed
            pass
        t.join(0.2)
    assert not t.is_alive(), "the spinning script could not be killed"


@pytest.mark.parametrize("fault", ["outage", "busy"])
def test_a_chain_link_that_finishes_while_redis_fails_sends_the_next_link_once(soma, tmp_path, fault, request):
    r = request.getfixturevalue("durable_redis" if fault == "outage" else "redis")
    srv = soma(*redis_sets(r, *SETS))
    out = post(srv, "/v1/tasks/chain", chain_body())
    wait_until(lambda: r.client().hlen("unacked") == 1, 10, what="the worker to take the first link")
    (outage if fault == "outage" else busy)(srv, r)
    py = py_worker(tmp_path, r)  # afterwards: a BUSY reply stops a Python worker (kombu raises it)
    try:
        assert_chain_done(srv, tmp_path, r, out)
    finally:
        py.stop()


@pytest.mark.parametrize("fault", ["outage", "busy"])
def test_a_chord_part_that_finishes_while_redis_fails_fires_the_body_once(soma, tmp_path, fault, request):
    r = request.getfixturevalue("durable_redis" if fault == "outage" else "redis")
    srv = soma(*redis_sets(r, *SETS))
    out = post(srv, "/v1/tasks/chord", chord_body())
    quick_joined(r, out)
    (outage if fault == "outage" else busy)(srv, r)
    py = py_worker(tmp_path, r)
    try:
        assert_chord_done(srv, tmp_path, r, out)
    finally:
        py.stop()


@pytest.fixture
def proxied(redis):
    p = CutProxy(redis.port)
    yield p
    p.close()


@pytest.mark.parametrize("after", [False, True], ids=["before_redis_runs_it", "after_redis_ran_it"])
def test_a_chain_link_publish_cut_is_written_again_once(soma, redis, proxied, tmp_path, after):
    py = py_worker(tmp_path, redis)
    try:
        srv = soma("queue.driver=redis", f"redis.url={proxied.url()}", *SETS)
        py.wait_ready()
        out = post(srv, "/v1/tasks/chain", chain_body())
        wait_until(lambda: redis.client().hlen("unacked") == 1, 10, what="the worker to take the first link")
        # the next link's message names the first link as its parent; nothing else sends that
        proxied.arm(f'"parent_id":"{out["task_ids"][0]}"'.encode(), after)
        assert_chain_done(srv, tmp_path, redis, out)
        assert proxied.rule is None, "the proxy never cut"
        assert logged(srv, "writing them again"), "the cut went unnoticed"
    finally:
        py.stop()


@pytest.mark.parametrize("where", ["join_after_redis_ran_it", "body_before_redis_runs_it",
                                   "body_after_redis_ran_it"])
def test_a_chord_join_or_body_cut_is_written_again_once(soma, redis, proxied, tmp_path, where):
    py = py_worker(tmp_path, redis)
    try:
        srv = soma("queue.driver=redis", f"redis.url={proxied.url()}", *SETS)
        py.wait_ready()
        out = post(srv, "/v1/tasks/chord", chord_body())
        quick_joined(redis, out)
        if where.startswith("join"):  # the last member's join: it completes the chord
            proxied.arm(f"celery-taskset-meta-{out['group_id']}.j".encode(), True)
        else:  # the body's message names the last member as its parent
            proxied.arm(f'"parent_id":"{out["task_ids"][1]}"'.encode(), where.endswith("ran_it"))
        assert_chord_done(srv, tmp_path, redis, out)
        assert proxied.rule is None, "the proxy never cut"
        assert logged(srv, "writing them again"), "the cut went unnoticed"
        assert redis.client().zcard(f"celery-taskset-meta-{out['group_id']}.j") == 0
    finally:
        py.stop()


def test_a_failed_chord_join_cut_after_redis_ran_it_still_fails_the_body(soma, redis, proxied):
    # the last member fails; its join runs in Redis and completes the chord, but the worker never
    # hears of it: written again, the join must still fail the body (ChordError), once
    # one worker thread: the members run in order, so the failed one is the last to join
    srv = soma("queue.driver=redis", f"redis.url={proxied.url()}", "queue.celery.concurrency=1", *SETS)
    proxied.arm(b'","FAILURE",{"exc_type"', True)  # a chord member's failed result, as joined
    out = post(srv, "/v1/tasks/chord", {"header": [{"task": "soma.echo", "args": [1]},
                                                   {"task": "soma.fail", "kwargs": {"message": "nope"}}],
                                        "body": {"task": "soma.echo"}})
    c = redis.client()

    def body_meta():
        raw = c.get(f"celery-task-meta-{out['task_id']}")
        return raw and json.loads(raw)

    meta = wait_until(lambda: (m := body_meta()) and m["status"] == "FAILURE" and m, 60, interval=0.1,
                      what="the chord body to fail")
    assert meta["result"]["exc_type"] == "ChordError" and "Dependency" in str(meta["result"]), meta
    assert proxied.rule is None, "the proxy never cut"
    assert logged(srv, "writing them again"), "the cut went unnoticed"
    drained(redis)
    assert not c.exists(f"celery-taskset-meta-{out['group_id']}.j")
