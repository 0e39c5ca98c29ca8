#!/usr/bin/env python3
"""bench/recall_post.py - fills a server's built-in memory and runs recalls against it (stdlib only).

    recall_post.py fill --port P --memories N [--seed S] [--clients 8]
    recall_post.py query --port P --queries Q [--seed S] [--out FILE]
    recall_post.py compare --ports P1,P2 --queries Q [--seed S]

For bench/recall_cost.sh. fill: POST /v1/memory/remember of N memories of varied words (the
messages of msg_cost_post.py --mix, user and reply alike, as a conversation memory's payload),
from CLIENTS keep-alive connections, so the server writes them in its own batches and its FTS5
index has the segments a real one would. query: Q recalls (top_k 4, as a chat message's: recall_top_k
3 + 1) of new messages of the same words (seed S + 1000), results saved as JSON lines to FILE.
compare: the same recalls on two servers holding copies of one database, each query sent to one
then at once to the other (the scores' age factor then differs by ~1e-9), and their results
compared: keys in order and scores (relative 1e-6); prints every difference, with the scores of
the rows involved (a swap of two rows whose scores tie is an exact tie, not a change).
"""
import argparse
import http.client
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from msg_cost_post import mixed_texts  # noqa: E402


def post(c, path, body):
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        raise SystemExit(f"{path}: HTTP {r.status}: {data[:200]!r}")
    return json.loads(data)


def fill(a):
    texts = mixed_texts(a.memories, a.seed)
    jobs = [[] for _ in range(a.clients)]
    for i, t in enumerate(texts):
        value = {"id": f"m{a.seed}-{i}", "type": "conversation_event", "role": "user" if i % 2 == 0 else "assistant",
                 "content": t, "session_id": f"s{i // 20 % 50}", "persona_id": None,
                 "metadata": {"tenant": "default"}, "created_at": "2026-11-28T12:00:00.000Z"}
        jobs[i % a.clients].append({"key": value["id"], "value": value, "tags": ["conversation"]})

    def run(js):
        c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=300)
        for j in js:
            post(c, "/v1/memory/remember", j)
        c.close()

    ts = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def queries(a):
    return mixed_texts(a.queries, a.seed + 1000)


def recall(c, q):
    return post(c, "/v1/memory/recall", {"query": q, "top_k": 4})["results"]


def query(a):
    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=600)
    out = open(a.out, "w") if a.out else None
    for q in queries(a):
        res = recall(c, q)
        if out:
            out.write(json.dumps({"q": q, "r": [[r["key"], r["score"]] for r in res]}) + "\n")
    if out:
        out.close()


def close(x, y):
    return abs(x - y) <= 1e-6 * max(abs(x), abs(y), 1e-300)


def compare(a):
    p1, p2 = (int(p) for p in a.ports.split(","))
    c1 = http.client.HTTPConnection("127.0.0.1", p1, timeout=600)
    c2 = http.client.HTTPConnection("127.0.0.1", p2, timeout=600)
    same = differ = ties = 0
    for q in queries(a):
        r1, r2 = recall(c1, q), recall(c2, q)
        k1, k2 = [r["key"] for r in r1], [r["key"] for r in r2]
        s1, s2 = [r["score"] for r in r1], [r["score"] for r in r2]
        if k1 == k2 and all(close(x, y) for x, y in zip(s1, s2)):
            same += 1
            continue
        # the same scores in order, the keys differing only among rows of one score: an exact tie
        if len(s1) == len(s2) and all(close(x, y) for x, y in zip(s1, s2)) and \
                sorted(zip(s1, k1)) == sorted(zip(s2, k2)):
            ties += 1
            continue
        differ += 1
        print(f"DIFF {q!r}\n  A {list(zip(k1, s1))}\n  B {list(zip(k2, s2))}")
    print(f"compare: {same} same, {ties} differ only in the order of tied rows, {differ} differ "
          f"(of {same + ties + differ} recalls)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["fill", "query", "compare"])
    ap.add_argument("--port", type=int)
    ap.add_argument("--ports")
    ap.add_argument("--memories", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--out")
    a = ap.parse_args()
    {"fill": fill, "query": query, "compare": compare}[a.cmd](a)


if __name__ == "__main__":
    main()
