"""Helpers for the tests of the redis queue: a redis-server that survives restarts (AOF, fsync
always), a Python Celery app module written into the test's directory, and a real Python Celery
worker (`python3 -m celery -A <module> worker`) on that Redis. No conftest: the tests import this."""

import os
import signal
import subprocess
import sys
import time

from e2e_util import http, wait_until
from servers import RedisServer, _wait_port

CELERY = ["/usr/bin/python3", "-m", "celery"]  # the package ships no /usr/bin/celery here

APP = '''
import os, time
from celery import Celery

app = Celery("{name}", broker="{url}", backend="{url}")
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, result_expires=3600,
                # health_check_interval: the worker's event loop also wakes this often. With one
                # prefetched message (solo pool, acks_late) kombu stops its BRPOP while a task runs
                # and starts it again only when the loop next wakes: on its 10 s timer by default
                broker_transport_options={{"visibility_timeout": {vt}, "health_check_interval": 1}},
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name="proj.add")
def add(x, y):
    return x + y


@app.task(name="proj.noop")
def noop():
    return None


# the same names as the C worker's diagnostic tasks, so that either side can run them
@app.task(name="soma.sleep")
def sleep(seconds=1.0):
    with open(os.path.join(os.path.dirname(__file__), "py-ran.log"), "a") as f:
        f.write("start\\n")
    time.sleep(seconds)
    return {{"slept": seconds, "by": "python"}}
'''


class DurableRedis(RedisServer):
    """redis-server with appendonly yes + appendfsync always: restart() keeps the data."""

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no", "--dir", self.dir],
                stdout=log, stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc, "redis-server", self.log)
        # a restart reads its append-only file first, answering LOADING meanwhile: the test's own
        # client calls (llen, ...) must not meet that
        import redis
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.exceptions.BusyLoadingError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} still loading its data after 15 s")


def write_app(directory, url, name="proj", vt=5):
    path = os.path.join(str(directory), f"{name}.py")
    with open(path, "w") as f:
        f.write(APP.format(name=name, url=url, vt=vt))
    return path


def load_app(directory, name="proj"):
    sys.path.insert(0, str(directory))
    try:
        sys.modules.pop(name, None)
        mod = __import__(name)
    finally:
        sys.path.pop(0)
    # the test's own client: when a later test has stopped this Redis, an AsyncResult collected
    # then must not block that test for 20 one-second reconnect attempts (Celery's default)
    mod.app.conf.result_backend_transport_options = {
        "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}}
    return mod.app


class PyWorker:
    """celery -A proj worker -P solo|prefork -c N -Q queues, in directory."""

    def __init__(self, directory, queues="py", pool="solo", concurrency=1, name="proj", hostname=None):
        self.log = os.path.join(str(directory), f"celery-{queues.replace(',', '_')}-{time.time_ns()}.log")
        env = dict(os.environ, PYTHONPATH=str(directory))
        cmd = CELERY + ["-A", name, "worker", "-P", pool, "-c", str(concurrency), "-Q", queues,
               "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
               "-n", hostname or f"py{time.time_ns()}@%h"]
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(cmd, cwd=str(directory), env=env, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait_ready(self, timeout=30):
        wait_until(lambda: "ready." in self.text() or self.proc.poll() is not None, timeout,
                   what="the celery worker to be ready")
        assert self.proc.poll() is None, self.text()

    def kill9(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()


def redis_sets(redis, *more):
    return ("queue.driver=redis", f"redis.url={redis.url()}") + more


def post_task(srv, expect=202, **body):
    r = http().post(srv.url + "/v1/tasks", json=body, timeout=10)
    assert r.status_code == expect, r.text
    return r.json()


def get_task(srv, tid):
    r = http().get(f"{srv.url}/v1/tasks/{tid}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def wait_task(srv, tid, statuses, timeout=20):
    """Polls GET /v1/tasks/{id}; a 503 (Redis restarting) is waited out like a pending task."""
    def state():
        r = http().get(f"{srv.url}/v1/tasks/{tid}", timeout=10)
        assert r.status_code in (200, 503), r.text
        return r.status_code == 200 and r.json()["status"] in statuses and r.json()

    return wait_until(state, timeout, interval=0.05, what=f"task {tid} to reach {statuses}")


def queued_messages(client):
    """{list key: [raw message]} of every non-empty Redis list (the queues and their bands)."""
    out = {}
    for key in client.keys("*"):
        if client.type(key) == b"list" and client.llen(key):
            out[key] = client.lrange(key, 0, -1)
    return out
