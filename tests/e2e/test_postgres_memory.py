"""Long-term memory on PostgreSQL only (run with SOMA_E2E_STORE=postgres) (src/store/pg_memory.c, pg_memory_search.c): the built-in
recall on a tsvector column, and the memory outbox claimed by several nodes sharing one database.

Each behaviour: recall ranks by relevance with English stemming, stays within its tenant and
namespace, and a text of stop words finds nothing (not every memory); two processes draining one
outbox never deliver a row twice and keep each session's order; a node killed while delivering
hands its `sending` rows to a node still running, without a restart; the audit table refuses
UPDATE and DELETE in the database itself."""

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from e2e_util import describe, http, run_cli, start_server, wait_until
from test_memory import FakeSomaBrain, outbox, recall, remember


pytestmark = pytest.mark.postgres_only


@pytest.fixture
def db(store_server, request):
    """A fresh database of the session's PostgreSQL for this test (shared by the nodes it starts);
    its store.url."""
    return store_server.new_database("m_" + request.node.name.lower()[:50])


@pytest.fixture
def brain(tmp_path):
    b = FakeSomaBrain(tmp_path)
    yield b
    b.stop()


def _start(tmp_path, name, db, *sets, llm=None):
    d = tmp_path / name
    (d / "data").mkdir(parents=True, exist_ok=True)
    base = (f"store.url={db}",) + (tuple(llm.sets()) if llm else ())
    return start_server(d, sets=base + sets, timeout=20)


def _key(srv, tmp_path, db, tenant, scope=None):
    """`somaagent keys create` against the same database; returns the token."""
    args = ["keys", "create", "--tenant", tenant, "--set", f"data.dir={srv.data_dir}", "--set", f"store.url={db}"]
    cp = run_cli(args + (["--scope", scope] if scope else []), tmp_path)
    assert cp.returncode == 0, describe(cp)
    return cp.stdout.strip()


def test_recall_on_tsvector_ranks_stems_and_stays_in_scope(tmp_path, db, llm):
    srv = _start(tmp_path, "a", db, llm=llm)
    try:
        a = _key(srv, tmp_path, db, "acme")
        b = _key(srv, tmp_path, db, "beta")
        wait_until(lambda: all(http().get(srv.url + "/v1/memory/outbox", headers={"Authorization": f"Bearer {t}"},
                                          timeout=5).status_code == 200 for t in (a, b)), 10,
                   what="the keys to be picked up")
        remember(srv, {"content": "Whales are the largest animals on earth"}, a)
        remember(srv, {"content": "a whale was seen near the harbour"}, a)
        remember(srv, {"content": "paris is the capital of france"}, a)
        remember(srv, {"content": "the whale notes of another namespace"}, a, namespace="other")
        remember(srv, {"content": "beta keeps its own whale facts"}, b)
        wait_until(lambda: outbox(srv, a)["pending"] == 0 and outbox(srv, b)["pending"] == 0, 15,
                   what="the outbox to drain")
        got = recall(srv, "the largest whale", a, top_k=5)["results"]
        contents = [r["payload"]["content"] for r in got]
        # stemming: "whale" finds "Whales"; the memory matching more words ranks first
        assert contents == ["Whales are the largest animals on earth", "a whale was seen near the harbour"], got
        assert all(r["source"] == "builtin" and r["score"] > 0 and r["key"] for r in got), got
        assert got[0]["score"] > got[1]["score"], got
        # the namespace and the tenant bound the search
        other = recall(srv, "whale", a, namespace="other")["results"]
        assert [r["payload"]["content"] for r in other] == ["the whale notes of another namespace"], other
        assert [r["payload"]["content"] for r in recall(srv, "whale", b)["results"]] == [
            "beta keeps its own whale facts"]
        # stop words only: no query, so nothing (never every memory of the scope)
        assert recall(srv, "the is of and", a)["results"] == []
        assert recall(srv, "zzz nothing", a)["results"] == []
        # top_k and the per-memory key (the idempotency key of the write)
        assert len(recall(srv, "whale animals harbour", a, top_k=1)["results"]) == 1
    finally:
        srv.stop()


def test_two_nodes_drain_one_outbox_once_and_in_order(tmp_path, db, llm, brain):
    brain.control(mode="down")
    sets = brain.sets("memory.relay_rate_per_s=2000")
    n1 = _start(tmp_path, "n1", db, *sets, llm=llm)
    n2 = _start(tmp_path, "n2", db, *sets, llm=llm)
    try:
        def sessions(w):  # 8 writers, 5 sessions each, one after the other; writes alternate nodes
            return [[remember(n1 if i % 2 else n2, {"content": f"shared {s} {i}"}, session_id=f"s{s}")["key"]
                     for i in range(12)] for s in range(w * 5, w * 5 + 5)]

        with ThreadPoolExecutor(8) as pool:
            per_session = [ks for w in pool.map(sessions, range(8)) for ks in w]
        keys = [k for ks in per_session for k in ks]
        assert outbox(n1)["pending"] == 480 and brain.stats()["remembers"] == 0
        brain.control(mode="ok", delay_ms=5)  # a batch takes a while: the other node claims meanwhile
        wait_until(lambda: outbox(n1)["pending"] == 0, 90, what="both relays to drain the outbox")
        st = brain.stats()
        assert st["stored"] == 480 and st["duplicates"] == 0, {k: v for k, v in st.items() if k != "order"}
        delivered = [k for _, k in st["order"]]
        assert sorted(delivered) == sorted(keys)
        for ks in per_session:
            mine = set(ks)
            assert [k for k in delivered if k in mine] == ks, "a session's memories arrived out of order"
        d1, d2 = _delivered_total(n1), _delivered_total(n2)
        # every row delivered by exactly one of the two relays that claimed from one table (which node
        # wins each claim is a race: a node's pipelined claim may take a whole round)
        assert d1 + d2 == 480, (d1, d2)
    finally:
        n1.stop()
        n2.stop()


def _delivered_total(srv):
    text = http().get(srv.url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('soma_outbox_delivered_total{sink="somabrain",result="delivered"}'):
            return int(float(line.split()[-1]))
    return 0


def test_node_killed_while_sending_hands_rows_to_a_live_node(tmp_path, db, llm, brain):
    # SomaBrain holds each answer far longer than a node takes to start under load, so the doomed
    # node's rows are still `sending` when the live node starts and when the doomed node dies
    brain.control(delay_ms=20000)
    sets = brain.sets("memory.timeout_ms=60000")
    doomed = _start(tmp_path, "doomed", db, *sets, llm=llm)
    live = None
    try:
        keys = [remember(doomed, {"content": f"handover {i}"}, session_id="h1")["key"] for i in range(4)]
        wait_until(lambda: outbox(doomed, state="sending")["items"], 10, what="a row to be sending")
        # a node starting beside a live one takes none of its rows (their backend is alive)
        live = _start(tmp_path, "live", db, *sets, llm=llm)
        time.sleep(1)
        assert outbox(live, state="sending")["items"], "the starting node took the live node's rows"
        assert not any("left sending" in o.get("msg", "") for o in live.logs_quiet())
        reached = brain.stats()["remembers"]  # delivered by the doomed node, not yet settled
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(timeout=5)
        doomed.checked = True
        brain.control(delay_ms=0)
        # the live node takes the dead node's rows back (their backend is gone) and delivers them
        wait_until(lambda: (lambda b: b["pending"] == 0 and not b["items"])(outbox(live, state="sending")), 20,
                   what="the live node to deliver the dead node's rows")
        st = brain.stats()
        assert sorted(set(k for _, k in st["order"])) == sorted(keys), st
        # sent again: what the doomed node delivered but had not settled, and the one in flight
        assert st["stored"] == 4 and st["duplicates"] <= reached + 1, st
        firsts = []
        for _, k in st["order"]:
            if k not in firsts:
                firsts.append(k)
        assert firsts == keys, "order per session"
    finally:
        if live:
            live.stop()
        if doomed.proc.poll() is None:
            doomed.proc.kill()
            doomed.proc.wait()
        doomed.checked = True


def test_audit_rows_are_append_only_in_the_database(tmp_path, db, llm):
    _start(tmp_path, "a", db, llm=llm).stop()  # applies the migrations
    import psycopg2
    conn = psycopg2.connect(db)
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO audit(tenant, subject, action, decision, created_ms) VALUES ('t', 's', 'a', 'd', 1)")
        for sql in ("UPDATE audit SET decision = 'allow'", "DELETE FROM audit", "TRUNCATE audit"):
            with pytest.raises(psycopg2.Error) as e:
                cur.execute(sql)
            assert "append-only" in str(e.value), sql
        cur.execute("SELECT count(*) FROM audit")
        assert cur.fetchone()[0] >= 1
    finally:
        conn.close()
