"""The instrument of the crash-consistency tests (test_chaos*.py): steady chat load from client
threads that records every acknowledged message, and the invariants checked afterwards from the
store through the API.

Load: each thread POSTs /v1/session/message to a session drawn from a fixed set, on a gateway
drawn from the fleet, with a text never sent before ("c<thread>-<n>"). A 200 is an
acknowledgement: its session, text, event id, seq and task id are recorded. Anything else (a
refused connection while the node is down, a 503, a timeout) is not: that message may or may not
have been stored, but at most once.

Invariants (check_sessions), per session, from GET /v1/sessions/{id}/history:
- seqs are 1..n with no gap and no repeat, and no event id repeats;
- no text is stored twice, and every stored text was sent by the load;
- every acknowledged message is stored exactly once, with the event id and seq its 200 gave;
- every stored user message has exactly one reply (assistant.final or assistant.error): replies
  are as many as messages, no two replies carry the same generation id (the task id), every
  acknowledged message's task id has its reply, after the message.
And for the fleet (check_drained): the queues hold nothing queued, delayed or reserved, and no
task was dead-lettered."""

import random
import threading
import time
from collections import Counter

import httpx

from e2e_util import TERMINAL, history, http, wait_until


class Load:
    """Client threads posting chat messages until stop(). urls: a callable returning the gateway
    base URLs to use now (a list). Not started until start()."""

    def __init__(self, urls, sids, threads, seed, pause=(0.05, 0.3)):
        self.urls = urls
        self.sids = list(sids)
        self.pause = pause
        self.seed = seed
        self.lock = threading.Lock()
        self.acked = []  # {sid, text, event_id, seq, task_id}
        self.sent = set()  # every text sent, acknowledged or not
        self.refused = Counter()  # status code or exception name -> count
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "a load thread did not stop"

    def acked_count(self):
        with self.lock:
            return len(self.acked)

    def _run(self, i):
        rng = random.Random(self.seed * 1000 + i)
        client = httpx.Client(timeout=10)
        n = 0
        try:
            while not self.done.is_set():
                sid, url = rng.choice(self.sids), rng.choice(self.urls())
                text = f"c{i}-{n}"
                n += 1
                with self.lock:
                    self.sent.add(text)
                try:
                    r = client.post(url + "/v1/session/message", json={"session_id": sid, "message": text})
                    why = r.status_code
                    if why == 200:
                        out = r.json()
                        with self.lock:
                            self.acked.append(dict(out, sid=sid, text=text))
                except httpx.HTTPError as e:
                    why = type(e).__name__
                if why != 200:
                    with self.lock:
                        self.refused[why] += 1
                self.done.wait(rng.uniform(*self.pause))
        finally:
            client.close()


def full_history(srv, sid):
    evs = history(srv, sid, limit=1000)
    assert len(evs) < 1000, f"session {sid} outgrew one history page"
    return evs


def check_sessions(srv, load, where):
    """Asserts the invariants above for every session of load on srv; returns (messages, errors):
    the user messages stored and the assistant.error replies among their replies."""
    acked = {}
    for a in load.acked:
        assert a["text"] not in acked, f"{where}: the load acknowledged one text twice: {a}"
        acked[a["text"]] = a
    stored_total = errors = 0
    for sid in load.sids:
        evs = full_history(srv, sid)
        seqs = [e["seq"] for e in evs]
        assert seqs == list(range(1, len(evs) + 1)), f"{where}: session {sid}: seqs not 1..n: {seqs}"
        ids = Counter(e["event_id"] for e in evs)
        assert max(ids.values(), default=1) == 1, f"{where}: session {sid}: an event id repeats: " \
            f"{[i for i, c in ids.items() if c > 1]}"
        users = [e for e in evs if e["type"] == "user"]
        texts = Counter(e["message"] for e in users)
        twice = [t for t, c in texts.items() if c > 1]
        assert not twice, f"{where}: session {sid}: messages stored twice: {twice}"
        strange = [t for t in texts if t not in load.sent and not t.startswith("open-")]
        assert not strange, f"{where}: session {sid}: messages nobody sent: {strange}"
        by_text = {e["message"]: e for e in users}
        mine = [a for a in load.acked if a["sid"] == sid]
        lost = [a["text"] for a in mine if a["text"] not in by_text]
        assert not lost, f"{where}: session {sid}: acknowledged messages lost: {lost}"
        for a in mine:
            e = by_text[a["text"]]
            assert (e["event_id"], e["seq"]) == (a["event_id"], a["seq"]), \
                f"{where}: session {sid}: {a['text']} stored as {e['event_id']} seq {e['seq']}, acknowledged as {a}"
        replies = [e for e in evs if e["type"] in TERMINAL]
        gens = Counter(e["metadata"].get("generation_id") for e in replies)
        doubled = [g for g, c in gens.items() if c > 1]
        assert not doubled, f"{where}: session {sid}: tasks that replied twice: {doubled}"
        assert len(replies) == len(users), \
            f"{where}: session {sid}: {len(users)} messages but {len(replies)} replies: " \
            f"{[(e['seq'], e['type'], e['message'][:20]) for e in evs]}"
        seq_of_gen = {e["metadata"].get("generation_id"): e["seq"] for e in replies}
        for a in mine:
            assert a["task_id"] in seq_of_gen, f"{where}: session {sid}: no reply to acknowledged {a}"
            assert seq_of_gen[a["task_id"]] > a["seq"], f"{where}: session {sid}: reply before its message {a}"
        stored_total += len(users)
        errors += sum(1 for e in replies if e["type"] == "assistant.error")
    return stored_total, errors


def replies_settled(srv, load):
    """True when every session has as many replies as messages (the drain is over)."""
    for sid in load.sids:
        evs = full_history(srv, sid)
        if sum(e["type"] == "user" for e in evs) != sum(e["type"] in TERMINAL for e in evs):
            return False
    return True


def queues_idle(srv):
    """GET /v1/queues says nothing is queued, delayed or reserved anywhere."""
    r = http().get(srv.url + "/v1/queues", timeout=5)
    assert r.status_code == 200, r.text
    return all(q["depth"] == 0 and q["delayed"] == 0 and q["reserved"] == 0 for q in r.json()["queues"])


def unreplied(srv, load):
    """Task ids of acknowledged messages that have no reply yet."""
    out = []
    for sid in load.sids:
        gens = {e["metadata"].get("generation_id") for e in full_history(srv, sid) if e["type"] in TERMINAL}
        out += [a["task_id"] for a in load.acked if a["sid"] == sid and a["task_id"] not in gens]
    return out


def drain_report(srv, load, probe=None):
    """What is still waiting: the queues, and per session the messages without a reply; probe(task
    ids), when given, adds what it knows of the unreplied tasks (a string)."""
    lines = ["queues: " + http().get(srv.url + "/v1/queues", timeout=5).text]
    if probe:
        lines.append(probe(unreplied(srv, load)))
    for sid in load.sids:
        evs = full_history(srv, sid)
        gens = {e["metadata"].get("generation_id") for e in evs if e["type"] in TERMINAL}
        users = [e for e in evs if e["type"] == "user"]
        tasks = {a["text"]: a["task_id"] for a in load.acked if a["sid"] == sid}
        open_ = [(e["seq"], e["message"], tasks[e["message"]]) for e in users
                 if e["message"] in tasks and tasks[e["message"]] not in gens]
        if open_ or len(gens) != len(users):
            lines.append(f"session {sid}: {len(users)} messages, {len(gens)} replies; "
                         f"acknowledged without a reply (seq, text, task id): {open_}")
    return "\n".join(lines)


def check_drained(srv, load, where, timeout, probe=None):
    """Waits until every message has its reply and the queues are idle; then asserts that nothing
    was dead-lettered. probe: see drain_report."""
    try:
        wait_until(lambda: replies_settled(srv, load) and queues_idle(srv), timeout, interval=0.5,
                   what=f"{where}: the drain (every message replied, the queues idle)")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{drain_report(srv, load, probe)}") from None
    time.sleep(1.0)  # a late duplicate, had there been one, would be stored by now
    assert queues_idle(srv), f"{where}: work appeared after the drain"
    r = http().get(srv.url + "/v1/dead-letters", timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == [], f"{where}: dead letters: {r.text}"
