"""The visibility sweep restoring a message whose envelope holds what Python's json.dumps writes
for a str with U+0000 or a lone surrogate ("\\u0000", "\\ud800") in a header: the message our
worker took (it reads such JSON) and was killed running is put back on its queue and runs again;
it was deleted from unacked without the push back (the sweep read the entry with strict JSON),
a lost task whose caller waited forever."""

import time

import pytest

from celery_util import load_app, redis_sets, write_app
from e2e_util import wait_until
from servers import RedisServer

pytestmark = pytest.mark.store_neutral  # unacked recovery, all in Redis


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


@pytest.mark.parametrize("note", ["a\x00b", "\ud800"])
def test_a_killed_task_with_an_odd_header_is_restored_and_runs(soma, redis, tmp_path, note):
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    sets = ("queue.visibility_timeout_s=5",)
    srv = soma(*redis_sets(redis, *sets))
    r = app.send_task("soma.sleep", kwargs={"seconds": 3}, headers={"note": note})
    wait_until(lambda: redis.client().hlen("unacked") == 1, 20, what="our worker to take the task")
    time.sleep(1.5)
    srv.proc.kill()
    srv.proc.wait()
    srv.checked = True
    after = soma(*redis_sets(redis, *sets), data_dir=srv.data_dir)
    assert r.get(timeout=25)["slept"] == 3, after.log_text()
    assert r.state == "SUCCESS"
    wait_until(lambda: redis.client().hlen("unacked") == 0, 10, what="the rerun acked")


def test_an_unacked_entry_nobody_can_read_is_left_not_deleted(soma, redis):
    c = redis.client()
    c.hset("unacked", "bad-tag", '[{"headers": oops}, "", "celery"]')
    c.zadd("unacked_index", {"bad-tag": time.time() - 3600})
    srv = soma(*redis_sets(redis, "queue.visibility_timeout_s=5"))
    wait_until(lambda: "cannot restore unacked message bad-tag" in srv.log_text(), 20,
               what="the sweep to meet the entry")
    assert c.hget("unacked", "bad-tag") == b'[{"headers": oops}, "", "celery"]'
    assert c.llen("celery") == 0
