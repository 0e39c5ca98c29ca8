"""What our worker stores as Celery 5.2 does, against the real python3-celery: a message sent with
ignore_result gets no SUCCESS meta (a failure is still stored: store_errors_even_if_ignored), and
a chord whose header failed fails its body with Celery's ChordError text, "Dependency <id> raised
Exception('m5')" (the member's exception as Python prints it)."""

import json
import subprocess
import time

import celery
import pytest

from celery_util import load_app, redis_sets, write_app
from e2e_util import clean_env, wait_until
from servers import RedisServer


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def meta(redis, tid):
    raw = redis.client().get(f"celery-task-meta-{tid}")
    return json.loads(raw) if raw else None


def test_ignore_result_stores_no_success_but_stores_a_failure(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    soma(*redis_sets(redis))
    ok = app.send_task("soma.echo", args=[1], ignore_result=True)
    bad = app.send_task("soma.fail", kwargs={"message": "kept"}, ignore_result=True)
    after = app.send_task("soma.echo", args=[2])  # ran after both (one queue, in order)
    assert after.get(timeout=20)["args"] == [2]
    wait_until(lambda: meta(redis, bad.id), 10, what="the failure's meta")
    assert meta(redis, bad.id)["status"] == "FAILURE"
    wait_until(lambda: redis.client().hlen("unacked") == 0, 10, what="every message acked")
    time.sleep(0.5)
    assert meta(redis, ok.id) is None


def test_chord_error_names_the_failed_member_as_celery_does(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    soma(*redis_sets(redis))
    r = celery.chord([app.signature("soma.fail", kwargs={"message": "m5"}), app.signature("soma.echo", args=[1])],
                     app.signature("soma.echo", args=["body"])).apply_async()
    got = wait_until(lambda: (m := meta(redis, r.id)) and m["status"] == "FAILURE" and m, 30, what="the body's meta")
    failed = r.parent.results[0].id
    assert got["result"]["exc_type"] == "ChordError", got
    assert got["result"]["exc_message"] == [f"Dependency {failed} raised Exception('m5')"], got


def test_a_task_id_over_255_characters_fails_instead_of_hanging(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    soma(*redis_sets(redis))
    r = app.send_task("soma.echo", args=[1], task_id="L" * 300)
    with pytest.raises(Exception, match="at most 255"):
        r.get(timeout=15)
    assert r.state == "FAILURE"
    wait_until(lambda: redis.client().hlen("unacked") == 0, 10, what="the message acked")


def test_celery_result_traceback_prints_the_failure(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    soma(*redis_sets(redis))
    bad = app.send_task("soma.fail", kwargs={"message": "tbtext"})
    with pytest.raises(Exception, match="tbtext"):
        bad.get(timeout=15)
    cp = subprocess.run(["/usr/bin/python3", "-m", "celery", "-A", "proj", "result", "--traceback", bad.id],
                        cwd=str(tmp_path), env=dict(clean_env(), PYTHONPATH=str(tmp_path)), capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 0 and "Exception: tbtext" in cp.stdout, cp.stdout + cp.stderr
