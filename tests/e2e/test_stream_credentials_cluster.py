"""A key revoked on one node ends the streams opened with it on another (src/gateway/stream.c,
src/identity/auth_cache.c): the revocation reaches the other node with its key cache's refresh
(auth.key_refresh_ms, when the shared store changed), which moves the cache's revocation counter;
the streams there check it on their io thread and end with `credentials_revoked`, and nothing
published after the refresh reaches them. Two gateways and a worker on one PostgreSQL and one
Redis, as in test_cluster.py. Before, the stream on the other node went on delivering."""

import pytest

from e2e_util import bearer, http, open_stream, post_message, wait_terminal, wait_until
from servers import PostgresServer, RedisServer
from test_stream_credentials import ADMIN, _check_ended, _key, _rest, _revoke

pytestmark = pytest.mark.own_store


def test_a_key_revoked_on_a_ends_its_stream_on_b(soma, llm, tmp_path):
    with PostgresServer() as pg, RedisServer() as redis:
        url = pg.new_database("revoke_across_nodes")
        common = (f"store.url={url}", "bus.driver=redis", f"redis.url={redis.url()}", "queue.driver=local",
                  f"auth.admin_token={ADMIN}", "auth.key_refresh_ms=200")
        a = soma(*common, role="gateway", data_dir=tmp_path / "a")
        b = soma(*common, role="gateway", data_dir=tmp_path / "b")
        soma(*common, role="worker", data_dir=tmp_path / "w")
        other, k3 = _key(a, "ta"), _key(a, "ta")

        def status_on_b(token):
            return http().get(f"{b.url}/v1/sessions", headers=bearer(token), timeout=5).status_code

        wait_until(lambda: status_on_b(k3["token"]) == 200, 10, what="node b to know the new key")
        sid = post_message(a, "before", token=other["token"])["session_id"]
        wait_terminal(a, sid, token=other["token"])
        with open_stream(b, sid, token=k3["token"], timeout=10) as s:
            _revoke(a, k3)
            wait_until(lambda: status_on_b(k3["token"]) == 401, 10, what="node b to refuse the revoked key")
            llm.control(text="reply after the revoke")
            post_message(a, "secret after the revoke", token=other["token"], session_id=sid)
            leaked = _check_ended(_rest(s, 5), "credentials_revoked", sid)
        assert leaked == [], f"events after the revocation reached the stream: {[f.data for f in leaked]}"
        wait_terminal(a, sid, token=other["token"], count=2)
