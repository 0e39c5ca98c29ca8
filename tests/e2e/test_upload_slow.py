"""A large upload may take longer than http.request_timeout_s in all, as long as its body keeps
coming: the timer starts again with every 64 KiB received. A body that stalls still gets 408."""

import socket
import time

BOUNDARY = "slow-upload-boundary"


def head_and_body(size):
    part = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n'
            "Content-Type: text/plain\r\n\r\n").encode()
    body = part + b"x" * size + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST /v1/uploads HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head, body


def status_of(sock):
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1 ") else None


def test_an_upload_slower_than_the_request_timeout_in_all_is_stored(soma):
    srv = soma("http.request_timeout_s=2")
    head, body = head_and_body(1 << 20)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(head)
        start = time.monotonic()
        for i in range(0, len(body), 128 * 1024):  # 128 KiB every 0.4 s: ~3.5 s in all
            s.sendall(body[i:i + 128 * 1024])
            time.sleep(0.4)
        assert time.monotonic() - start > 3
        assert status_of(s) == 200


def test_an_upload_body_that_stalls_gets_408(soma):
    srv = soma("http.request_timeout_s=1")
    head, body = head_and_body(1 << 20)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(head + body[:100 * 1024])  # then nothing: less than 64 KiB in each second after
        start = time.monotonic()
        assert status_of(s) == 408
        assert time.monotonic() - start < 5
