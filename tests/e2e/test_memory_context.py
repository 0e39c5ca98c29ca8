"""Recalled memories reach the LLM whatever the shape of their value: the text the recall
searched (content, else text, else the whole value as JSON) is the text the system message
carries (built-in memory, on either store)."""

from e2e_util import post_message, wait_terminal
from test_memory import drained, recall, remember


def test_memory_without_content_reaches_the_context(soma, llm):
    srv = soma()
    remember(srv, {"text": "the secret code word is pumpernickel"})
    remember(srv, {"content": "the backup code word is sauerkraut"})
    remember(srv, {"word": "zwieback", "kind": "code word"})
    drained(srv)
    got = recall(srv, "code word pumpernickel sauerkraut zwieback", top_k=5)
    assert len(got["results"]) == 3, got
    sid = post_message(srv, "Which code word? pumpernickel sauerkraut zwieback")["session_id"]
    final = wait_terminal(srv, sid)[-1]
    assert final["metadata"]["memory"]["recalled"] == 3, final["metadata"]
    msgs = llm.stats()["last_request"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "system", "user"], msgs
    lines = msgs[1]["content"].split("\n")
    assert lines[0] == "Memories from earlier conversations (use them if relevant):"
    assert "- the secret code word is pumpernickel" in lines and "- the backup code word is sauerkraut" in lines
    # no text member: the value as JSON (PostgreSQL's jsonb may order its members otherwise)
    assert len(lines) == 4 and any(x.startswith('- {"') and '"word":"zwieback"' in x for x in lines), lines
