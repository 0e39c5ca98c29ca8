"""A blocking A2A send whose deadline (a2a.blocking_timeout_s) passes while a gap's re-read is out
(the redis bus says streams may have missed messages): the run is answered once the read is back,
never freed under it (ASan)."""

import threading
import time

from a2a_util import msg03, rpc
from servers import RedisServer


def test_deadline_during_a_gap_reread(soma, llm):
    with RedisServer() as redis:
        srv = soma("bus.driver=redis", f"redis.url={redis.url(db=0)}", "a2a.blocking_timeout_s=1")
        llm.control(delay_ms=200, chunks=30)
        stop = threading.Event()

        def gaps():  # resync records for every session: each starts a re-read of the task
            c = redis.client(db=0)
            while not stop.is_set():
                c.publish("soma:bus:0", b"r 0 0 0 0\n" * 50)

        t = threading.Thread(target=gaps)
        t.start()
        try:
            for i in range(4):
                r = rpc(srv, "message/send", msg03(f"slow {i}"), id=i)
                assert r.status_code == 200, r.text
                assert r.json()["result"]["status"]["state"] in ("submitted", "working", "completed"), r.text
        finally:
            stop.set()
            t.join()
        time.sleep(0.5)
        log = srv.log_text()
        assert "AddressSanitizer" not in log, log[log.find("AddressSanitizer") - 200:][:4000]
        assert srv.proc.poll() is None
