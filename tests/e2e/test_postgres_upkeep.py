"""PostgreSQL only: the memory index's pending list is merged in the background
(src/store/pg_upkeep.c). memories_tsv is a GIN index with fastupdate; without the upkeep its
pending list grows until an insert finds it over gin_pending_list_limit (4 MB) and merges it inside
a message's transaction, holding up every message behind it. With the upkeep the list is merged
within a moment of the messages that filled it, on the upkeep's own connection."""

import pytest

from e2e_util import post_message, start_server, store_exec, store_query, wait_until

pytestmark = pytest.mark.postgres_only


def pending_tuples(srv):
    return store_query(srv.data_dir, "SELECT pending_tuples FROM pgstatginindex('memories_tsv')")[0][0]


def test_the_memory_index_pending_list_is_merged_in_the_background(soma):
    srv = soma(role="gateway")  # no replies: only the messages' own memories rows
    store_exec(srv.data_dir, "CREATE EXTENSION IF NOT EXISTS pgstattuple")
    for i in range(30):
        post_message(srv, f"whales and dolphins number {i}")
    assert store_query(srv.data_dir, "SELECT count(*) FROM memories")[0][0] == 30
    # 30 rows are far below the 4 MB at which an insert would merge the list itself
    wait_until(lambda: pending_tuples(srv) == 0, 10, interval=0.1, what="the pending list to be merged")
    hits = store_query(srv.data_dir, "SELECT count(*) FROM memories WHERE tsv @@ to_tsquery('english', 'whale')")
    assert hits[0][0] == 30


def test_a_role_that_does_not_own_the_index_warns_once_and_messages_go_on(tmp_path, store_server, request):
    """The merge needs the owner of the index: a node whose role only has the rights to read and
    write the tables (the owner ran the migrations: start-up needs no DDL then) says so once, and
    its messages are stored as before (their inserts merge the list themselves)."""
    import psycopg2

    db = store_server.new_database("m_" + request.node.name.lower()[:50])
    for name in ("owner", "other"):
        (tmp_path / name / "data").mkdir(parents=True)
    owner = start_server(tmp_path / "owner", sets=(f"store.url={db}",), timeout=20)  # runs the migrations
    owner.stop()
    role = "soma_not_owner"
    conn = psycopg2.connect(db)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
                f"CREATE ROLE {role} LOGIN; END IF; END $$")
    cur.execute(f"GRANT USAGE ON SCHEMA public TO {role}")  # no CREATE: the schema is up to date
    cur.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
    cur.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
    conn.close()
    url = db.replace("postgresql://soma@", f"postgresql://{role}@")
    srv = start_server(tmp_path / "other", sets=(f"store.url={url}",), role="gateway", timeout=20)
    try:
        for i in range(5):
            post_message(srv, f"whales number {i}")
        warning = "cannot merge the memory index's pending list in the background"
        wait_until(lambda: any(warning in ln for ln in srv.log_lines()), 10, interval=0.1,
                   what="the warning of a role that does not own the index")
        for i in range(5, 10):
            post_message(srv, f"whales number {i}")  # still stored
        assert sum(warning in ln for ln in srv.log_lines()) == 1, "warned once"
        conn = psycopg2.connect(db)
        try:
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM memories")
            assert cur.fetchone()[0] == 10
        finally:
            conn.close()
    finally:
        srv.stop()
