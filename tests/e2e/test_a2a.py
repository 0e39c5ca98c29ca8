"""A2A (Agent2Agent) over JSON-RPC at POST /a2a, spec 0.3 and 1.0 (reference/interop.md §3): the
agent card, blocking and non-blocking sends, tasks/get, tasks/cancel, streams (event order, ids),
and the context as a chat session."""

import time

import pytest

from a2a_util import error, msg03, msg10, result, rpc, stream
from e2e_util import http, history, wait_until


@pytest.fixture(scope="module")
def srv(module_soma):
    return module_soma()


@pytest.mark.parametrize("path", ["/.well-known/agent-card.json", "/.well-known/agent.json"])
def test_card_is_hybrid_v10_and_v03(srv, path):
    r = http().get(srv.url + path, headers={"A2A-Version": "1.0"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    c = r.json()
    host = srv.url.split("://", 1)[1]
    assert c["url"] == f"http://{host}/a2a" and c["preferredTransport"] == "JSONRPC", c
    assert c["protocolVersion"] == "0.3.0"
    assert c["supportedInterfaces"] == [{"url": f"http://{host}/a2a", "protocolBinding": "JSONRPC",
                                         "protocolVersion": "1.0"}], c
    assert c["name"] == "SomaAgent01" and c["description"] and c["version"]
    assert c["capabilities"]["streaming"] is True and c["capabilities"]["pushNotifications"] is False
    assert [s["id"] for s in c["skills"]] == ["chat"] and c["skills"][0]["tags"]
    assert c["defaultInputModes"] == ["text/plain"] and c["defaultOutputModes"] == ["text/plain"]


def test_card_names_come_from_config(module_soma):
    s = module_soma("a2a.name=Helper", "a2a.description=Helps.", "a2a.public_url=https://agent.example.com/")
    c = http().get(s.url + "/.well-known/agent-card.json").json()
    assert (c["name"], c["description"]) == ("Helper", "Helps.")
    assert c["url"] == "https://agent.example.com/a2a" == c["supportedInterfaces"][0]["url"]


def _completed_03(task, text):
    assert task["kind"] == "task" and task["status"]["state"] == "completed", task
    reply = task["status"]["message"]
    assert reply["kind"] == "message" and reply["role"] == "agent" and reply["taskId"] == task["id"], reply
    assert f"You said: {text}" in reply["parts"][0]["text"], reply
    assert task["artifacts"][0]["parts"] == [{"kind": "text", "text": reply["parts"][0]["text"]}], task
    assert task["history"][0]["role"] == "user" and task["history"][0]["parts"][0]["text"] == text, task
    return reply["parts"][0]["text"]


def test_v03_blocking_send_answers_the_completed_task(srv):
    task = result(srv, "message/send", msg03("hello a2a", mid="mid-7"), id="req-1")
    _completed_03(task, "hello a2a")
    assert task["history"][0]["messageId"] == "mid-7"
    # the context is a chat session: the exchange is in its history
    evs = history(srv, task["contextId"])
    assert [e["type"] for e in evs] == ["user", "assistant.final"], evs
    assert evs[0]["metadata"]["a2a"]["message_id"] == "mid-7"
    # tasks/get reads it back, the same
    again = result(srv, "tasks/get", {"id": task["id"]}, id=2)
    assert again == task


def test_v10_blocking_send_is_wrapped_with_v10_enums(srv):
    out = result(srv, "SendMessage", msg10("hi ten"), id=5)
    task = out["task"]
    assert "kind" not in task and task["status"]["state"] == "TASK_STATE_COMPLETED", out
    reply = task["status"]["message"]
    assert reply["role"] == "ROLE_AGENT" and "You said: hi ten" in reply["parts"][0]["text"], reply
    assert task["history"][0]["role"] == "ROLE_USER"
    got = result(srv, "GetTask", {"id": task["id"]}, id=6)
    assert got["status"]["state"] == "TASK_STATE_COMPLETED" and got["id"] == task["id"]


def test_context_id_continues_the_session(srv):
    first = result(srv, "message/send", msg03("one"))
    second = result(srv, "message/send", msg03("two", contextId=first["contextId"]))
    assert second["contextId"] == first["contextId"] and second["id"] != first["id"]
    types = [e["type"] for e in history(srv, first["contextId"])]
    assert types == ["user", "assistant.final"] * 2, types


def test_non_blocking_send_answers_at_once_then_get_completes(srv, llm):
    llm.control(delay_ms=100, chunks=6)
    t0 = time.monotonic()
    task = result(srv, "message/send", dict(msg03("later"), configuration={"blocking": False}))
    assert time.monotonic() - t0 < 0.5
    assert task["status"]["state"] in ("submitted", "working"), task
    done = wait_until(lambda: (t := result(srv, "tasks/get", {"id": task["id"]}))["status"]["state"] == "completed"
                      and t, 10, what="the task to complete")
    _completed_03(done, "later")
    out = result(srv, "SendMessage", dict(msg10("later ten"), configuration={"returnImmediately": True}))
    assert out["task"]["status"]["state"] in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING"), out


def test_v03_stream_event_order_and_ids(srv):
    headers, evs = stream(srv, "message/stream", msg03("stream me"), id="s-1")
    assert headers["content-type"].startswith("text/event-stream")
    assert all(e["jsonrpc"] == "2.0" and e["id"] == "s-1" and "result" in e for e in evs), evs
    kinds = [e["result"]["kind"] for e in evs]
    assert kinds[0] == "task" and evs[0]["result"]["status"]["state"] == "submitted", kinds
    assert kinds[1] == "status-update" and evs[1]["result"]["status"]["state"] == "working"
    assert evs[1]["result"]["final"] is False
    arts = [e["result"] for e in evs if e["result"]["kind"] == "artifact-update"]
    assert len(arts) >= 3 and kinds[2:-1] == ["artifact-update"] * len(arts), kinds
    assert arts[0]["append"] is False and all(a["append"] is True for a in arts[1:])
    last = evs[-1]["result"]
    assert last["kind"] == "status-update" and last["final"] is True and last["status"]["state"] == "completed"
    text = "".join(a["artifact"]["parts"][0]["text"] for a in arts)
    assert text == last["status"]["message"]["parts"][0]["text"] and text.endswith("You said: stream me")
    task_id = evs[0]["result"]["id"]
    assert all((e["result"].get("taskId") or e["result"].get("id")) == task_id for e in evs)


def test_v10_stream_wraps_events(srv):
    _, evs = stream(srv, "SendStreamingMessage", msg10("ten stream"), id=44)
    assert all(e["id"] == 44 for e in evs)
    keys = [next(iter(e["result"])) for e in evs]
    assert keys[0] == "task" and keys[1] == "statusUpdate" and keys[-1] == "statusUpdate", keys
    assert set(keys[2:-1]) == {"artifactUpdate"}, keys
    assert evs[-1]["result"]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert "final" not in evs[-1]["result"]["statusUpdate"]


def test_resubscribe_to_a_finished_task_gives_the_task_and_ends(srv):
    task = result(srv, "message/send", msg03("done already"))
    _, evs = stream(srv, "tasks/resubscribe", {"id": task["id"]}, id=9)
    assert len(evs) == 1 and evs[0]["id"] == 9 and evs[0]["result"]["status"]["state"] == "completed", evs


def test_resubscribe_follows_a_running_task(srv, llm):
    llm.control(delay_ms=150, chunks=6)
    task = result(srv, "SendMessage", dict(msg10("follow"), configuration={"returnImmediately": True}))["task"]
    _, evs = stream(srv, "SubscribeToTask", {"id": task["id"]}, id=10)
    assert next(iter(evs[0]["result"])) == "task"
    assert evs[-1]["result"]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED", evs[-1]


def test_cancel_a_running_task_then_a_finished_one(srv, llm):
    llm.control(delay_ms=300, chunks=20)
    task = result(srv, "message/send", dict(msg03("cancel me"), configuration={"blocking": False}))
    wait_until(lambda: any(e["type"] == "user" for e in history(srv, task["contextId"])), 5)
    time.sleep(0.8)  # the reply is being generated
    out = result(srv, "tasks/cancel", {"id": task["id"]}, id=3)
    assert out["id"] == task["id"] and out["status"]["state"] == "canceled", out
    # (on a loaded machine the reply may not have started yet: the task is still submitted, and the
    # cancel is kept for the worker that takes it)
    got = wait_until(lambda: (t := result(srv, "tasks/get", {"id": task["id"]}))["status"]["state"]
                     not in ("working", "submitted") and t, 10, what="the cancelled reply to be stored")
    assert got["status"]["state"] == "canceled", got
    again = error(srv, "tasks/cancel", {"id": task["id"]}, id=4)
    assert again["id"] == 4 and again["error"]["code"] == -32002, again
    llm.reset()
    done = result(srv, "message/send", msg03("finished"))
    assert error(srv, "CancelTask", {"id": done["id"]})["error"]["code"] == -32002


def test_blocking_send_answers_working_at_the_timeout(module_soma, llm):
    s = module_soma("a2a.blocking_timeout_s=1")
    llm.control(delay_ms=400, chunks=10)
    t0 = time.monotonic()
    task = result(s, "message/send", msg03("slow"))
    assert 0.9 <= time.monotonic() - t0 < 3, time.monotonic() - t0
    assert task["status"]["state"] == "working" and "artifacts" not in task, task
    done = wait_until(lambda: (t := result(s, "tasks/get", {"id": task["id"]}))["status"]["state"] == "completed"
                      and t, 15, what="the task to complete")
    _completed_03(done, "slow")
