"""GET /v1/attachments/{id} never serves active content: an uploaded SVG (libmagic calls it
image/svg+xml, and it may hold <script>) or HTML would run on the UI's origin if a browser
rendered it. Only png, jpeg, gif and webp are inline; everything is sent with nosniff and
`Content-Security-Policy: default-src 'none'; sandbox`, error answers included."""

import httpx

from e2e_util import check_envelope
from test_uploads import PNG, upload

CSP = "default-src 'none'; sandbox"
SVG = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
       b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       b'<script>fetch("/v1/admin/keys")</script><rect width="10" height="10"/></svg>\n')
HTML = b"<!DOCTYPE html>\n<html><head><title>x</title></head><body><script>alert(1)</script></body></html>\n"
GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")


def _get(srv, item, method="GET"):
    return httpx.request(method, f"{srv.url}{item['path']}", timeout=10)


def test_svg_and_html_are_downloads_under_a_sandbox(soma):
    srv = soma()
    r = upload(srv, [("files", ("pic.svg", SVG, "image/svg+xml")), ("files", ("page.html", HTML, "text/html"))])
    assert r.status_code == 200, r.text
    svg, html = r.json()
    assert svg["mime"] == "image/svg+xml", svg
    for item, body in ((svg, SVG), (html, HTML)):
        for method in ("GET", "HEAD"):
            g = _get(srv, item, method)
            assert g.status_code == 200
            assert g.headers["content-security-policy"] == CSP, (item, method)
            assert g.headers["x-content-type-options"] == "nosniff"
            assert g.headers["content-disposition"] == f'attachment; filename="{item["filename"]}"', (item, method)
        assert _get(srv, item).content == body


def test_raster_images_stay_inline_with_the_policy(soma):
    srv = soma()
    r = upload(srv, [("files", ("a.png", PNG, "image/png")), ("files", ("b.gif", GIF, "image/gif")),
                     ("files", ("c.jpg", JPEG, "image/jpeg"))])
    assert r.status_code == 200, r.text
    assert [i["mime"] for i in r.json()] == ["image/png", "image/gif", "image/jpeg"]
    for item in r.json():
        g = _get(srv, item)
        assert g.headers["content-type"] == item["mime"]
        assert g.headers["content-disposition"] == f'inline; filename="{item["filename"]}"'
        assert g.headers["content-security-policy"] == CSP
        assert g.headers["x-content-type-options"] == "nosniff"


def test_error_answers_carry_the_policy_too(soma):
    srv = soma()
    for path in ("/v1/attachments/no-such-id", "/v1/attachments/bad%20id"):
        g = httpx.get(f"{srv.url}{path}", timeout=10)
        check_envelope(g, 404)
        assert g.headers["content-security-policy"] == CSP
        assert g.headers["x-content-type-options"] == "nosniff"
