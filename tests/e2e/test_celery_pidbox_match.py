"""Which pidbox broadcasts a node answers, as kombu 5.2.4's Node.handle_message decides: a
non-empty destination names the nodes; else a pattern with a matcher selects them (glob:
fnmatch; pcre: Python's re.match, anchored at the start); else every node answers. Found by
review: an empty destination list reached no node, and pcre matched anywhere in the name."""

import pytest

from test_celery_control import app, node, redis_server  # noqa: F401

pytestmark = pytest.mark.store_neutral


def test_destination_and_pattern_as_kombu(node, app):  # noqa: F811
    node("soma@e2e-a")
    ping = {"soma@e2e-a": {"ok": "pong"}}

    def bc(**kw):
        return app.control.broadcast("ping", reply=True, timeout=1.5, **kw)

    assert bc(destination=[]) == [ping], "an empty destination means every node"
    assert bc(destination=["soma@e2e-a"]) == [ping]
    assert bc(destination=["soma@other"]) == []
    assert bc(pattern="e2e", matcher="pcre") == [], "pcre is re.match: anchored at the start"
    assert bc(pattern="soma@e2e", matcher="pcre") == [ping]
    assert bc(pattern="soma@e2e", matcher="glob") == [], "glob matches the whole name"
    assert bc(pattern="soma@*", matcher="glob") == [ping]
    assert bc(pattern="nobody") == [ping], "a pattern without a matcher is ignored"
