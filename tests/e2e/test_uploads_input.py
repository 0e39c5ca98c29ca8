"""POST /v1/uploads with awkward input: file names that are not UTF-8 or are cut mid-character,
an empty body, an over-long session_id, a padded boundary line. Each is either stored and listed, or refused with a 4xx;
never a 200 that leaves a file out, never a 503 "busy" for a request that cannot succeed."""

import httpx

from e2e_util import check_envelope, post_message, raw_request
from test_uploads import blob_files

BOUNDARY = b"soma-test-boundary"


def _multipart(parts):
    """parts: [(field, filename bytes or None, data bytes)] -> body bytes."""
    out = b""
    for field, filename, data in parts:
        out += b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"" + field + b"\""
        if filename is not None:
            out += b"; filename=\"" + filename + b"\"\r\nContent-Type: text/plain"
        out += b"\r\n\r\n" + data + b"\r\n"
    return out + b"--" + BOUNDARY + b"--\r\n"


def _post(srv, body, length=True):
    head = (b"POST /v1/uploads HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n")
    if length:
        head += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    return raw_request(srv, head + b"\r\n" + body, timeout=10)


def _stored(srv, item, data):
    g = httpx.get(f"{srv.url}{item['path']}", timeout=5)
    assert g.status_code == 200, g.text
    assert g.content == data


def test_file_names_that_are_not_utf8_are_stored_and_listed(soma):
    srv = soma()
    latin1 = _post(srv, _multipart([(b"files", b"caf\xe9.txt", b"latin-1 name\n")]))
    assert latin1.status == 200, latin1
    items = latin1.json()
    assert len(items) == 1, items
    assert items[0]["filename"] == "caf_.txt", items
    _stored(srv, items[0], b"latin-1 name\n")

    # 1 + 150 x 2 bytes: a cut at exactly 200 bytes would split an "é" in two
    long_name = "a" + "é" * 150 + ".txt"
    r = _post(srv, _multipart([(b"files", long_name.encode(), b"long name\n"),
                               (b"files", b"ok.txt", b"second file\n")]))
    assert r.status == 200, r
    items = r.json()
    assert [i["filename"] for i in items] == ["a" + "é" * 99, "ok.txt"], items
    for it, data in zip(items, (b"long name\n", b"second file\n")):
        _stored(srv, it, data)

    bad = _post(srv, _multipart([(b"files", b"\xff\xfe\xc0\xaf\xed\xa0\x80", b"only invalid bytes\n")]))
    assert bad.status == 200, bad
    name = bad.json()[0]["filename"]
    assert name and set(name) == {"_"}, name


def test_empty_body_is_a_bad_request_not_busy(soma):
    srv = soma()
    for length in (True, False):
        r = _post(srv, b"", length=length)
        check_envelope(r, 400, "invalid_multipart")
        assert r.header("retry-after") is None, r


def test_over_long_session_id_is_refused_not_cut(soma):
    srv = soma()
    sid = "s" * 70  # valid characters: cut at 64 it would be a different, valid id
    r = _post(srv, _multipart([(b"session_id", None, sid.encode()), (b"files", b"a.txt", b"x\n")]))
    check_envelope(r, 400, "invalid_session_id")
    assert blob_files(srv.data_dir) == [], "nothing is kept from a refused upload"
    post_message(srv, "hello", session_id="s" * 64)  # the caller's session: the files are bound to it
    ok = _post(srv, _multipart([(b"session_id", None, b"s" * 64), (b"files", b"a.txt", b"x\n")]))
    assert ok.status == 200 and ok.json()[0]["session_id"] == "s" * 64, ok


def test_padding_after_a_boundary_and_a_lookalike_parameter(soma):
    """RFC 2046 lets a sender pad a boundary line with spaces; `xboundary=` is not the boundary."""
    srv = soma()
    body = _multipart([(b"files", b"pad.txt", b"padded\n")]).replace(BOUNDARY + b"\r\n", BOUNDARY + b"  \r\n", 1)
    r = _post(srv, body)
    assert r.status == 200 and r.json()[0]["filename"] == "pad.txt", r
    head = (b"POST /v1/uploads HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; xboundary=zz; boundary=" + BOUNDARY + b"\r\n")
    body = _multipart([(b"files", b"x.txt", b"x\n")])
    r = raw_request(srv, head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body, timeout=10)
    assert r.status == 200, r
