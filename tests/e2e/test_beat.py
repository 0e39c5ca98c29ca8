"""Beat: schedules from beat.schedule_file, published under deterministic task ids through the
store; GET /v1/schedules; one leader across nodes sharing Redis, and a leader killed with
SIGKILL replaced by the other node with no missed and no doubled run.

The nodes here use the embedded queue (each its own SQLite store) and share Redis for beat's
lock and watermarks, so every run is counted by its id in the two stores: each due time in the
window must be in exactly one of them."""

import json
import signal
import time

import pytest

from e2e_util import http, store_query, wait_until
from servers import RedisServer


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as r:
        yield r


def schedule_file(tmp_path, entries):
    path = tmp_path / "schedules.json"
    path.write_text(json.dumps(entries))
    return path


def schedules(srv):
    r = http().get(srv.url + "/v1/schedules", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def run_ids(data_dir, name):
    """Due times (unix s) of the runs of schedule `name` found in a node's store."""
    rows = store_query(data_dir, "SELECT id FROM tasks WHERE id LIKE ? UNION ALL "
                       "SELECT task_id FROM task_results WHERE task_id LIKE ?", (f"beat-{name}-%", f"beat-{name}-%"))
    return [int(r[0].rsplit("-", 1)[1]) for r in rows]


def test_local_beat_runs_each_due_time_once(soma, tmp_path):
    path = schedule_file(tmp_path, [
        {"name": "tick", "task": "soma.echo", "every_s": 1, "args": [7], "kwargs": {"k": "v"}},
        {"name": "nightly", "task": "soma.noop", "cron": "30 2 * * *"},
    ])
    srv = soma(f"beat.schedule_file={path}")
    listed = schedules(srv)  # from the start: not an empty list until beat's first tick
    assert [s["name"] for s in listed["schedules"]] == ["tick", "nightly"], listed
    first = wait_until(lambda: (s := schedules(srv))["schedules"][0]["last_run_at"] and s, 5, interval=0.1,
                       what="a first run")
    assert first["schedules"][1]["last_run_at"] is None, "the cron schedule has not run"
    assert first["lock"] == "local" and first["is_leader"] is True and first["leader"] == first["node"]
    tick, nightly = first["schedules"]
    assert tick["every_s"] == 1 and tick["task"] == "soma.echo" and tick["queue"] == "celery"
    assert nightly["cron"] == "30 2 * * *" and nightly["next_run_at"].endswith("T02:30:00.000Z")
    time.sleep(2.5)
    due = int(time.time()) - 1
    r = http().get(f"{srv.url}/v1/tasks/beat-tick-{due}", timeout=5)
    assert r.status_code == 200, r.text
    wait_until(lambda: http().get(f"{srv.url}/v1/tasks/beat-tick-{due}").json()["status"] == "SUCCESS", 5)
    assert http().get(f"{srv.url}/v1/tasks/beat-tick-{due}").json()["result"] == {"args": [7], "kwargs": {"k": "v"}}
    srv.stop()
    ids = run_ids(srv.data_dir, "tick")
    assert len(ids) == len(set(ids)) and len(ids) >= 3
    assert sorted(ids) == list(range(min(ids), max(ids) + 1)), "a due time was skipped"


def test_bad_schedule_file_stops_start(soma, tmp_path):
    path = schedule_file(tmp_path, [{"name": "x y", "task": "soma.noop", "every_s": 1}])
    with pytest.raises(AssertionError, match="schedule 1 needs a name"):
        soma(f"beat.schedule_file={path}")
    path = schedule_file(tmp_path, [{"name": "c", "task": "soma.noop", "cron": "61 * * * *"}])
    with pytest.raises(AssertionError, match="cron field minute"):
        soma(f"beat.schedule_file={path}")


def published(srv, name):
    """Due times of the runs a node's beat published (its log, which survives a kill -9)."""
    prefix = f"published beat-{name}-"
    return [int(o["msg"][len(prefix):].split()[0]) for o in srv.logs_quiet()
            if o.get("service") == "beat" and o.get("msg", "").startswith(prefix)]


def ran(data_dirs, redis_client, name, due):
    """The run due at `due` reached a queue: a row in a node's store, or a result in Redis."""
    return (any(due in run_ids(d, name) for d in data_dirs) or
            redis_client.get(f"celery-task-meta-beat-{name}-{due}") is not None)


@pytest.mark.parametrize("driver", ["local", "redis"])
def test_two_nodes_one_leader_failover_no_missed_or_doubled_run(soma, tmp_path, redis_server, driver):
    """Every due time in the window is published exactly once (counted in both nodes' logs) and
    its task reached a queue (the embedded store of the node that published it, or Redis)."""
    rc = redis_server.client()
    rc.flushdb()
    path = schedule_file(tmp_path, [{"name": "pulse", "task": "soma.noop", "every_s": 1}])
    sets = (f"beat.schedule_file={path}", f"redis.url={redis_server.url()}", "beat.lock_ttl_ms=2000",
            f"queue.driver={driver}")
    a = soma(*sets, "celery.nodename=soma@beat-a", data_dir=tmp_path / "a")
    b = soma(*sets, "celery.nodename=soma@beat-b", data_dir=tmp_path / "b")
    sa = wait_until(lambda: (s := schedules(a))["leader"] and s["schedules"][0]["last_run_at"] and s, 10,
                    interval=0.1, what="a beat leader")
    sb = schedules(b)
    assert sa["lock"] == "redis" and sa["leader"] == sb["leader"], (sa, sb)
    assert [sa["is_leader"], sb["is_leader"]].count(True) == 1, (sa, sb)
    leader, follower = (a, b) if sa["is_leader"] else (b, a)
    time.sleep(3)
    start = min(published(leader, "pulse"))
    leader.checked = True
    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait()
    wait_until(lambda: schedules(follower)["is_leader"], 6, interval=0.1, what="the follower to take over")
    time.sleep(3)
    end = int(time.time()) - 1
    runs = published(a, "pulse") + published(b, "pulse")
    window = [t for t in runs if start <= t <= end]
    doubled = sorted({t for t in window if window.count(t) > 1})
    missed = sorted(set(range(start, end + 1)) - set(window))
    assert not doubled and not missed, f"doubled {doubled}, missed {missed} in {start}..{end}"
    assert len(published(follower, "pulse")) >= 3, "the follower published nothing after the takeover"
    time.sleep(1)
    lost = [t for t in range(start, end + 1) if not ran([tmp_path / "a", tmp_path / "b"], rc, "pulse", t)]
    assert not lost, f"published but in no queue: {lost}"
    follower.stop()
