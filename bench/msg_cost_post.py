#!/usr/bin/env python3
"""bench/msg_cost_post.py - posts a fixed set of chat messages and waits for every reply (stdlib only).

    msg_cost_post.py --port P [--messages 1000] [--sessions 20] [--clients 8] [--timeout 600] [--mix SEED]
                     [--no-finals]

For bench/msg_cost.sh: CLIENTS threads, each on one keep-alive connection, post MESSAGES messages in
all, round-robin over SESSIONS sessions (the same bodies every run), then poll /metrics until
soma_tasks_total{task="conversation.process",outcome="success"} has grown by MESSAGES. Exits 1 if
a post is refused or the finals do not all arrive within TIMEOUT seconds (under valgrind the
server is ~50x slower than native, so the default is generous). --no-finals posts only (for
bench/ingest_cost.sh: a gateway, whose tasks no worker runs).
"""
import argparse
import http.client
import json
import re
import sys
import threading
import random
import time

FINALS = re.compile(r'^soma_tasks_total\{[^}]*task="conversation\.process"[^}]*outcome="success"[^}]*\}\s+(\S+)$', re.M)


def finals(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    m = FINALS.search(text)
    return float(m.group(1)) if m else 0.0


COMMON = ("the is a to and of i you it in that my what was for on with do can me this have be not "
          "are your how about we at".split())


def mixed_texts(n, seed):
    """n messages of varied words (--mix): stop words, and made-up words drawn with Zipf-like
    frequencies from a vocabulary of 5,000, 6 to 20 words each; the same for the same seed."""
    rng = random.Random(seed)
    syl = ["ka", "lo", "mi", "ser", "tan", "vo", "rel", "dun", "pe", "gri", "sho", "ba", "ten", "qui", "mar"]
    vocab = ["".join(rng.choice(syl) for _ in range(rng.randint(2, 4))) for _ in range(5000)]
    weights = [1.0 / (r + 1) for r in range(len(vocab))]
    out = []
    for _ in range(n):
        k = rng.randint(6, 20)
        words = [rng.choice(COMMON) if rng.random() < 0.4 else w for w in rng.choices(vocab, weights, k=k)]
        out.append(" ".join(words).capitalize() + "?")
    return out


def poster(port, jobs, errors):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    for sid, text in jobs:
        body = json.dumps({"session_id": sid, "message": text})
        c.request("POST", "/v1/session/message", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            errors.append(r.status)
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--mix", type=int, default=None, help="varied words from this seed (mixed_texts)")
    ap.add_argument("--no-finals", action="store_true", help="post only (a gateway with no worker)")
    a = ap.parse_args()
    base = 0.0 if a.no_finals else finals(a.port)
    jobs = [[] for _ in range(a.clients)]
    texts = mixed_texts(a.messages, a.mix) if a.mix is not None else None
    for i in range(a.messages):
        text = texts[i] if texts else f"hello, this is message number {i}"
        jobs[i % a.clients].append((f"cost-{i % a.sessions}", text))
    errors = []
    t0 = time.monotonic()
    ts = [threading.Thread(target=poster, args=(a.port, j, errors)) for j in jobs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    posted = time.monotonic() - t0
    done = float(a.messages) if a.no_finals else 0.0
    while not a.no_finals and time.monotonic() - t0 < a.timeout:
        done = finals(a.port) - base
        if done >= a.messages:
            break
        time.sleep(0.5)
    print(f"posted {a.messages} ({len(errors)} refused) in {posted:.1f} s; finals {done:.0f} after "
          f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
    sys.exit(0 if not errors and done >= a.messages else 1)


if __name__ == "__main__":
    main()
