"""A group or a chord inside a Python chain, run by our worker: chain(a, group(b, c)) sends the
group as the link after a, and chain(a, group(b, c), d) a chord (Celery upgrades group | task).
Our worker applies them as Celery's worker does (the previous result first in each member's args;
group_id and group_index as frozen, the chord's size and body) instead of sending a
"celery.group"/"celery.chord" task no worker can run. Results read with Python's GroupResult."""

import celery
import pytest

from celery_util import load_app, redis_sets, write_app
from servers import RedisServer


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def echo(*args):
    return {"args": list(args), "kwargs": {}}


@pytest.fixture
def app(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    a = load_app(tmp_path)
    soma(*redis_sets(redis))
    return a


def test_chain_ending_with_a_group(app, redis):
    r = celery.chain(app.signature("soma.echo", args=[1]),
                     celery.group(app.signature("soma.echo", args=[2]),
                                  app.signature("soma.echo", args=[3]))).apply_async()
    assert isinstance(r, celery.result.GroupResult)
    assert r.get(timeout=30) == [echo(echo(1), 2), echo(echo(1), 3)]
    again = app.GroupResult(r.id, [app.AsyncResult(x.id) for x in r.results])
    assert again.get(timeout=5) == [echo(echo(1), 2), echo(echo(1), 3)]
    metas = [redis.client().get(f"celery-task-meta-{x.id}") for x in r.results]
    assert all(m and b'"SUCCESS"' in m for m in metas), metas


def test_chain_with_a_group_in_the_middle_then_more_links(app, redis):
    r = celery.chain(app.signature("soma.echo", args=[1]),
                     celery.group(app.signature("soma.echo", args=[2]), app.signature("soma.echo", args=[3])),
                     app.signature("soma.echo", args=["end"])).apply_async()
    members = [echo(echo(1), 2), echo(echo(1), 3)]
    assert r.get(timeout=30) == echo(members, "end")
    r = celery.chain(app.signature("soma.echo", args=[1]),
                     celery.group(app.signature("soma.echo", args=[2]), app.signature("soma.echo", args=[3])),
                     app.signature("soma.echo", args=["end"]),
                     app.signature("soma.echo", args=["more"])).apply_async()
    assert r.get(timeout=30) == echo(echo(members, "end"), "more")
    assert not [k for k in redis.client().keys("celery-taskset-meta-*.j")]  # the chord was joined and cleaned


def test_chain_with_a_chord_whose_header_holds_a_chain(app):
    r = celery.chain(app.signature("soma.echo", args=[1]),
                     celery.group(celery.chain(app.signature("soma.echo", args=[2]),
                                               app.signature("soma.echo", args=[3])),
                                  app.signature("soma.echo", args=[4])),
                     app.signature("soma.echo", args=["end"])).apply_async()
    assert r.get(timeout=30) == echo([echo(echo(echo(1), 2), 3), echo(echo(1), 4)], "end")


def test_unsupported_nesting_answers_with_an_error(app, redis):
    r = celery.chain(app.signature("soma.echo", args=[1]),
                     celery.group(app.signature("soma.echo", args=[2]),
                                  celery.chord([app.signature("soma.echo", args=[3])],
                                               app.signature("soma.echo", args=[4])))).apply_async()
    with pytest.raises(Exception) as ei:
        r.get(timeout=30)
    assert "not supported" in str(ei.value), ei.value
