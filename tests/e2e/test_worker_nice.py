"""queue.worker_nice: the worker threads run at a lower priority (a higher nice) than the rest of
the process, so the io threads and the store writer are not pre-empted by a woken worker; 0
leaves them at the process's priority. Read from /proc/<pid>/task/*/stat (Linux)."""

from pathlib import Path

from e2e_util import post_message, wait_terminal


def _nice_by_thread(pid):
    """{thread name: set of nice values} of the process's threads."""
    out = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        text = stat.read_text()
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        out.setdefault(name, set()).add(int(fields[16]))  # field 19: nice
    return out


def _workers_and_io(srv):
    threads = _nice_by_thread(srv.proc.pid)
    workers = {n for name, v in threads.items() if name.startswith("soma-w-") for n in v}
    io = {n for name, v in threads.items() if name == "soma-io" for n in v}
    return workers, io


def test_workers_run_below_the_io_threads_by_default(soma):
    srv = soma()
    wait_terminal(srv, post_message(srv, "hello")["session_id"])  # the workers have served a reply
    workers, io = _workers_and_io(srv)
    assert len(io) == 1
    assert workers == {min(19, next(iter(io)) + 5)}


def test_worker_nice_zero_keeps_one_priority(soma):
    srv = soma("queue.worker_nice=0")
    workers, io = _workers_and_io(srv)
    assert len(io) == 1 and workers == io


def test_worker_nice_is_set_per_value(soma):
    srv = soma("queue.worker_nice=12")
    workers, io = _workers_and_io(srv)
    assert workers == {min(19, next(iter(io)) + 12)}
