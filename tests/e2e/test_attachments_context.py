"""Files attached to a message reach the LLM: the user turn names each file (name, type, size)
and, for text, carries its text, bounded by llm.attachment_max_bytes per message and by half of
the context budget the system prompt and the newest text leave (the cut marked); other types are
named only; a file gone since the message is named as unavailable. The room left for the tool
rounds (tools are offered) counts like the system prompt.
Asserted on the exact messages the fake LLM received (nothing of the stored rows leaks)."""

import os

import httpx

from e2e_util import http, post_message, wait_terminal

SYSTEM = {"role": "system", "content": "You are SomaAgent, a helpful assistant."}
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108020000009077"
    "53de0000000c49444154789c63f8cfc0000003010100c9fe92ef0000000049454e44ae426082")


def upload(srv, name, data, mime="application/octet-stream"):
    r = httpx.post(f"{srv.url}/v1/uploads", files=[("files", (name, data, mime))], timeout=10)
    assert r.status_code == 200, r.text
    return r.json()[0]


def test_text_attachment_reaches_the_llm_and_stays_in_the_context(soma, llm):
    srv = soma()
    it = upload(srv, "notes.txt", b"The launch code is ZEBRA-42.", "text/plain")
    assert it["mime"] == "text/plain"
    q = "What is the launch code in my file?"
    sid = post_message(srv, q, attachments=[it["id"]])["session_id"]
    final = wait_terminal(srv, sid)[-1]
    assert final["type"] == "assistant.final", final
    turn = {"role": "user", "content": q + "\n\n[Attached file: notes.txt (text/plain, 28 bytes)]\n"
            "The launch code is ZEBRA-42.\n[End of notes.txt]"}
    assert llm.stats()["last_request"]["messages"] == [SYSTEM, turn]
    # the next message's context still carries the file (the history is not rewritten)
    post_message(srv, "And again?", session_id=sid)
    second = wait_terminal(srv, sid, count=2)[-1]
    assert second["type"] == "assistant.final", second
    assert llm.stats()["last_request"]["messages"] == [
        SYSTEM, turn, {"role": "assistant", "content": final["message"]}, {"role": "user", "content": "And again?"}]
    # the stored event is unchanged: the file's text is only in what the provider receives
    hist = http().get(f"{srv.url}/v1/sessions/{sid}/history", timeout=5).json()["events"]
    assert hist[0]["message"] == q and hist[0]["attachments"] == [it["id"]]


def test_binary_named_text_cut_and_missing_file(soma, llm):
    srv = soma("llm.attachment_max_bytes=40")
    png = upload(srv, "pic.png", PNG, "image/png")
    a = upload(srv, "a.txt", b"alpha " * 5, "text/plain")  # 30 bytes: whole
    b = upload(srv, "b.txt", b"bravo " * 5, "text/plain")  # 30 bytes: 10 left of the 40
    gone = upload(srv, "gone.txt", b"this file will vanish", "text/plain")
    os.remove(os.path.join(srv.data_dir, "blobs", gone["sha256"][:2], gone["sha256"]))
    sid = post_message(srv, "Look", attachments=[png["id"], a["id"], b["id"], gone["id"]])["session_id"]
    final = wait_terminal(srv, sid)[-1]
    assert final["type"] == "assistant.final", final  # a missing file never fails the reply
    content = ("Look\n\n"
               f"[Attached file: pic.png (image/png, {len(PNG)} bytes): not text, its content is not included]\n\n"
               "[Attached file: a.txt (text/plain, 30 bytes)]\n" + "alpha " * 5 + "\n[End of a.txt]\n\n"
               "[Attached file: b.txt (text/plain, 30 bytes)]\nbravo brav\n"
               "[Cut: only the first 10 of 30 bytes of b.txt are included (llm.attachment_max_bytes)]\n\n"
               "[Attached file: gone.txt (text/plain, 21 bytes): its stored content was not found, so it is not "
               "included]")
    assert llm.stats()["last_request"]["messages"] == [SYSTEM, {"role": "user", "content": content}]
    # the operator learns which file and where it was looked for (a worker without data.dir/blobs)
    blob = os.path.join(srv.data_dir, "blobs", gone["sha256"][:2], gone["sha256"])
    assert any(gone["id"] in line and blob in line for line in srv.log_lines()), srv.log_text()


def test_attachment_counts_in_the_context_budget(soma, llm):
    """A large file takes the room of older turns (llm.max_context_tokens, 4 characters a token),
    at most half of what the system prompt, the tool rounds' room (a quarter of the context, tools
    being offered) and the newest text leave: (1600 - 39 - 400 - 7) / 2 = 577."""
    srv = soma("llm.max_context_tokens=400", "llm.attachment_max_bytes=1200")
    sid = post_message(srv, "first message " * 50)["session_id"]  # 700 characters
    wait_terminal(srv, sid)
    it = upload(srv, "big.txt", b"word " * 240, "text/plain")  # 1200 bytes
    post_message(srv, "Read it", session_id=sid, attachments=[it["id"]])
    wait_terminal(srv, sid, count=2)
    msgs = llm.stats()["last_request"]["messages"]
    assert not any(m["content"].startswith("first message") for m in msgs), msgs  # no room left for it
    assert msgs[-1]["content"].startswith("Read it\n\n[Attached file: big.txt (text/plain, 1200 bytes)]\nword ")
    assert msgs[-1]["content"].endswith(
        "\n[Cut: only the first 577 of 1200 bytes of big.txt are included (llm.max_context_tokens)]"), msgs[-1]


def test_a_large_file_with_the_defaults_is_cut_marked_and_stays_in_later_turns(soma, llm):
    """With the default settings llm.attachment_max_bytes (32768) is more than the whole context
    (8000 tokens): the file's share of the context bounds it, the cut is marked, and the next
    message's context keeps the file's turn instead of dropping it."""
    srv = soma()
    llm.control(text="OK. ")
    data = b"".join(b"line %05d of the report: value=%d\n" % (i, i * 7) for i in range(1000))
    assert len(data) > 32000
    it = upload(srv, "report.txt", data, "text/plain")
    q = "Please read my report."
    sid = post_message(srv, q, attachments=[it["id"]])["session_id"]
    assert wait_terminal(srv, sid)[-1]["type"] == "assistant.final"
    share = (8000 * 4 - len(SYSTEM["content"]) - 8000 - len(q)) // 2  # 8000: the tool rounds' room
    first = llm.stats()["last_request"]["messages"]
    turn = first[-1]["content"]
    assert turn.startswith(q + f"\n\n[Attached file: report.txt (text/plain, {len(data)} bytes)]\nline 00000 ")
    assert turn.endswith(f"\n[Cut: only the first {share} of {len(data)} bytes of report.txt are included "
                         "(llm.max_context_tokens)]"), turn[-200:]
    post_message(srv, "What is the value on line 00003?", session_id=sid)
    assert wait_terminal(srv, sid, count=2)[-1]["type"] == "assistant.final"
    msgs = llm.stats()["last_request"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"], [m["content"][:60] for m in msgs]
    assert "[Attached file: report.txt" in msgs[1]["content"] and "line 00003 " in msgs[1]["content"]
    assert msgs[1]["content"].startswith(q) and "[Cut: only the first " in msgs[1]["content"]
    assert sum(len(m["content"]) for m in msgs) <= 8000 * 4
