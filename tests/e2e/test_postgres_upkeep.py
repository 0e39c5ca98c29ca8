"""PostgreSQL only: the memory index's pending list is merged in the background
(src/store/pg_upkeep.c). memories_tsv is a GIN index with fastupdate; without the upkeep its
pending list grows until an insert finds it over gin_pending_list_limit (4 MB) and merges it inside
a message's transaction, holding up every message behind it. With the upkeep the list is merged
within a moment of the messages that filled it, on the upkeep's own connection."""

import pytest

from e2e_util import post_message, store_exec, store_query, wait_until

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
