"""One `somaagent run` per data.dir on the embedded store. A second run on the same directory (an
accidental second `make run`) requeued the first one's running tasks at its start, before it failed
on the port in use; on a free port both ran them (the LLM was paid twice). Now it refuses, naming the
process that holds the directory, and touches nothing."""

import pytest

from celery_util import post_task
from e2e_util import http, start_server, wait_until

pytestmark = pytest.mark.store_neutral  # (SQLite whatever the run's store: store.url= below)


def test_a_second_run_on_the_same_data_dir_refuses_and_touches_nothing(soma, tmp_path):
    first = soma("store.url=")  # (SQLite whatever the run's store)
    tid = post_task(first, task="soma.sleep", kwargs={"seconds": 3})["task_id"]
    wait_until(lambda: http().get(f"{first.url}/v1/tasks/{tid}").json()["status"] == "STARTED", 10,
               what="the task to start")
    (tmp_path / "second").mkdir()
    second = start_server(tmp_path / "second", sets=("store.url=",), data_dir=first.data_dir, wait=False)
    rc = second.wait_exit(timeout=10)
    second.checked = True
    log = second.log_text()
    assert rc == 1, f"exit {rc}; log:\n{log}"
    assert "in use by another somaagent" in log and f"pid {first.proc.pid}" in log, log
    assert "requeued" not in log, "the second run touched the first one's tasks"
    wait_until(lambda: http().get(f"{first.url}/v1/tasks/{tid}").json()["status"] == "SUCCESS", 15,
               what="the task to finish")
    assert http().get(f"{first.url}/v1/tasks/{tid}").json()["retries"] == 0, "the task ran twice"
    first.stop()
    (tmp_path / "again").mkdir()
    again = start_server(tmp_path / "again", sets=("store.url=",), data_dir=first.data_dir)  # free again
    again.stop()
