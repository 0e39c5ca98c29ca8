"""The list settings (queue.queues, queue.routes, queue.rate_limits): spaces around '=' and ','
are trimmed, and a malformed item, a rate unit Celery does not know or a queue defined twice
stops `config check` and `run` with exit 2 and a line naming the setting and the item."""

import pytest

from celery_util import post_task, wait_task
from e2e_util import describe, free_port, http, run_cli, wait_until

BAD = [
    ("queue.routes=garbage", "garbage"),
    ("queue.routes=soma.echo=", "soma.echo="),
    ("queue.routes=a=b=c", "a=b=c"),
    ("queue.routes=soma.echo=ops,,x=y", '""'),
    ("queue.queues=ops", "ops"),
    ("queue.queues=ops=two", "ops=two"),
    ("queue.queues=ops=0", "ops=0"),
    ("queue.queues=my queue=2", "my queue=2"),
    ("queue.queues=celery=3", "celery"),
    ("queue.queues=conversation=3", "conversation"),
    ("queue.queues=ops=2, ops = 3", "ops"),
    ("queue.rate_limits=soma.noop=1/d", "soma.noop=1/d"),
    ("queue.rate_limits=soma.noop=1", "soma.noop=1"),
    ("queue.rate_limits=soma.noop=x/s", "soma.noop=x/s"),
    ("queue.rate_limits=soma.noop=0/s", "soma.noop=0/s"),
    ("queue.rate_limits=soma.noop", "soma.noop"),
    ("queue.rate_limits=a=1/s, a=2/m", "a"),
]


@pytest.mark.parametrize("setting,item", BAD)
def test_bad_list_refused(tmp_path, setting, item):
    key = setting.split("=", 1)[0]
    cp = run_cli(["config", "check", "--set", setting], tmp_path)
    assert cp.returncode == 2, describe(cp)
    assert key in cp.stderr and item in cp.stderr, describe(cp)
    assert "valid" not in cp.stdout, describe(cp)
    port = free_port()
    cp = run_cli(["run", "--set", "data.dir=data", "--set", f"http.listen=127.0.0.1:{port}", "--set", setting],
                 tmp_path)
    assert cp.returncode == 2 and key in cp.stderr, describe(cp)


@pytest.mark.parametrize("setting", [
    "queue.queues=ops=2, reports = 2",
    "queue.routes=soma.echo = reports , py.* = py,",
    "queue.rate_limits=soma.noop = 1/m, soma.echo=1.5/h,x=20/s",
])
def test_spaced_list_valid(tmp_path, setting):
    cp = run_cli(["config", "check", "--set", setting], tmp_path)
    assert cp.returncode == 0 and "valid" in cp.stdout, describe(cp)


def test_spaced_lists_applied(soma):
    """Spaces around '=' and ',' name the same queues and routes as without them (the old build
    served a queue named "reports " and never matched the route "soma.echo ")."""
    srv = soma("queue.queues=ops=2, reports = 2", "queue.routes=soma.echo = parked , py.* = py")
    queues = lambda: {q["name"]: q for q in http().get(srv.url + "/v1/queues", timeout=5).json()["queues"]}
    names = list(queues())
    assert {"reports", "ops"} <= set(names) and not [n for n in names if " " in n], names
    tid = post_task(srv, task="soma.noop", queue="reports")["task_id"]
    wait_task(srv, tid, ("SUCCESS",))
    post_task(srv, task="soma.echo", args=[1])  # routed to parked, which no worker serves here
    wait_until(lambda: queues().get("parked", {}).get("depth") == 1, 10, what="soma.echo to wait in parked")
    post_task(srv, task="soma.noop", queue="py")  # a routes target is a queue one may name
