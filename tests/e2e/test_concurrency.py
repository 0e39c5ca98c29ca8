"""Several io threads and concurrent clients: every request answered and counted exactly once."""

import threading

from e2e_util import find_samples, parse_metrics

THREADS, PER_THREAD = 8, 40


def test_concurrent_keep_alive_clients(soma):
    srv = soma("http.io_threads=3", "log.access=false")
    srv.wait_log(lambda o: "3 io thread(s)" in o.get("msg", ""), timeout=2, what="the io thread count")
    errors = []

    def client(n):
        try:
            with srv.connect(timeout=10) as c:
                for i in range(PER_THREAD):
                    rid = f"c{n}-{i}"
                    c.send(f"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: {rid}\r\n\r\n".encode())
                    r = c.read_response()
                    if r.status != 200 or r.header("x-request-id") != rid:
                        errors.append((rid, r))
                        return
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((n, repr(e)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    with srv.connect() as c:
        c.send(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        text = c.read_response().body.decode()
    _, samples = parse_metrics(text)
    got = find_samples(samples, "soma_http_requests_total", route="/v1/health", method="GET", status="200")
    # the fixture's readiness probe may add a request or two
    assert got and THREADS * PER_THREAD <= got[0][1] <= THREADS * PER_THREAD + 50, got
