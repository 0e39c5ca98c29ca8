"""The local queue counts a run whose process died as an attempt: a task that kills its worker
process each time it runs (here: the process is SIGKILLed mid-run) is dead-lettered once it has
used max_retries + 1 attempts, instead of being reserved again forever. On SQLite the rows of a
dead process come back at the next start; on PostgreSQL once their visibility timeout passes."""

from celery_util import get_task, post_task
from e2e_util import http, wait_until

SETS = ("queue.visibility_timeout_s=5",)


def running(srv, tid):
    workers = http().get(srv.url + "/v1/workers", timeout=5).json()["workers"]
    return any(w.get("task_id") == tid for w in workers)


def kill(srv):
    srv.checked = True
    srv.proc.kill()
    srv.proc.wait()


def test_a_task_whose_process_keeps_dying_is_dead_lettered_after_max_retries(soma, tmp_path):
    data = str(tmp_path / "data")
    srv = soma(*SETS, data_dir=data)
    tid = post_task(srv, task="soma.sleep", args=[120], max_retries=1)["task_id"]
    for attempt in (1, 2):  # max_retries + 1 runs, each ended by the death of its process
        wait_until(lambda: running(srv, tid), 15, what=f"attempt {attempt} to run")
        kill(srv)
        srv = soma(*SETS, data_dir=data)

    def settled():
        got = get_task(srv, tid)
        if got["status"] == "FAILURE":
            return got
        assert not running(srv, tid), f"the task ran a third time (max_retries 1): {got}"
        return None

    got = wait_until(settled, 15, interval=0.1, what="the task to be dead-lettered")
    assert got["dead_letter"] is True and "worker stopped" in got["error"], got
    dead = http().get(srv.url + "/v1/dead-letters", timeout=5).json()["items"]
    assert [d["task_id"] for d in dead] == [tid], dead
