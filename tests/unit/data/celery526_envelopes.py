# tests/unit/data/celery526_envelopes.py PORT > celery526_envelopes.jsonl - the envelopes Debian's Celery 5.2.6 /
# kombu 5.2.4 LPUSHes for a spread of calls (eta, expires, retries, time limits, chain, link/link_error,
# group, chord, unicode and escapes, priorities, custom headers), one per line, as popped from a
# redis-server on PORT (flushed first). Used by tests/unit/test_celery_scan.c.
import sys, json, datetime, redis
from celery import Celery, chain, chord, group, signature
port = int(sys.argv[1])
app = Celery("gen", broker=f"redis://127.0.0.1:{port}/0", backend=f"redis://127.0.0.1:{port}/0")
r = redis.Redis(port=port)
r.flushall()
def grab():
    out = []
    for k in r.keys("*"):
        if r.type(k) == b"list":
            while True:
                m = r.rpop(k)
                if m is None: break
                out.append(m)
    return out
now = datetime.datetime(2026, 11, 27, 10, 56, 49, 461034, tzinfo=datetime.timezone.utc)
add = app.signature("proj.add")
app.send_task("proj.add", args=(2, 3), priority=5)
app.send_task("proj.add", args=(2, 3), kwargs={"x": "caf\u00e9 \U0001F600 \"quoted\" back\\slash\nnl\ttab \u2028"}, task_id="id-\u00e9-\"q\"")
app.send_task("proj.eta", args=[1], eta=now, expires=now + datetime.timedelta(hours=1), retries=3)
app.send_task("proj.eta", args=[1], countdown=30, expires=600, time_limit=30, soft_time_limit=12.5)
app.send_task("proj.naive", args=[], eta=datetime.datetime(2026, 11, 27, 10, 56, 49))
chain(app.signature("proj.a", args=(1,)), app.signature("proj.b", args=(2,)), app.signature("proj.c", immutable=True)).apply_async()
app.signature("proj.a", args=(1,), link=app.signature("proj.cb"), link_error=app.signature("proj.eb")).apply_async()
group(app.signature("proj.g", args=(i,)) for i in range(2)).apply_async()
chord([app.signature("proj.m", args=(i,)) for i in range(2)], app.signature("proj.sum")).apply_async()
app.send_task("proj.big", args=[list(range(50)), {"nested": {"a": [1.5, -2, None, True, False]}}], kwargs={"k": 1e-7, "n": 12345678901234})
app.send_task("proj.prio", args=[], priority=9, queue="other", routing_key="other")
app.send_task("proj.noid", args=[], shadow="shadowname", headers={"custom": {"x": [1]}})
for m in grab():
    sys.stdout.write(m.decode() + "\n")
