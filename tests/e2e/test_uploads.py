"""POST /v1/uploads and GET /v1/attachments/{id}: multipart files typed by their bytes, stored
content-addressed under data.dir, limits with their 4xx envelopes, tenant isolation."""

import hashlib
import os

import httpx
import pytest

from e2e_util import check_envelope, create_key, post_message, start_server, wait_until

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108020000009077"
    "53de0000000c49444154789c63f8cfc00000030101 00c9fe92ef0000000049454e44ae426082".replace(" ", ""))


def upload(srv, files, data=None, headers=None):
    return httpx.post(f"{srv.url}/v1/uploads", files=files, data=data or {}, headers=headers or {}, timeout=10)


def blob_files(data_dir):
    out = []
    for root, _dirs, names in os.walk(os.path.join(data_dir, "blobs")):
        out += [os.path.join(root, n) for n in names if not n.startswith(".tmp")]
    return out


def test_upload_stores_files_typed_by_content(soma):
    srv = soma()
    post_message(srv, "hello", session_id="s-up-1")
    r = upload(srv, [("files", ("photo.jpg", PNG, "image/jpeg")),  # the client's type is a lie
                     ("files", ("notes.txt", b"hello notes\n", "application/octet-stream"))],
               data={"session_id": "s-up-1"})
    assert r.status_code == 200, r.text
    items = r.json()
    assert [i["filename"] for i in items] == ["photo.jpg", "notes.txt"]
    png, txt = items
    assert png["mime"] == "image/png" and txt["mime"] == "text/plain"
    assert png["size"] == len(PNG) and png["sha256"] == hashlib.sha256(PNG).hexdigest()
    for it in items:
        assert it["status"] == "stored" and it["session_id"] == "s-up-1"
        assert it["path"] == f"/v1/attachments/{it['id']}"
        assert it["created_at"].endswith("Z")
    # content-addressed on disk, named by the hash, never by the client's name
    names = sorted(os.path.basename(p) for p in blob_files(srv.data_dir))
    assert names == sorted([png["sha256"], txt["sha256"]])

    g = httpx.get(f"{srv.url}{png['path']}")
    assert g.status_code == 200 and g.content == PNG
    assert g.headers["content-type"] == "image/png"
    assert g.headers["x-content-type-options"] == "nosniff"
    assert g.headers["content-disposition"] == 'inline; filename="photo.jpg"'
    g = httpx.get(f"{srv.url}{txt['path']}")
    assert g.content == b"hello notes\n" and g.headers["content-disposition"].startswith("attachment;")


def test_same_bytes_are_stored_once(soma):
    srv = soma()
    a = upload(srv, [("files", ("a.txt", b"same bytes", "text/plain"))]).json()[0]
    b = upload(srv, [("files", ("b.txt", b"same bytes", "text/plain"))]).json()[0]
    assert a["id"] != b["id"] and a["sha256"] == b["sha256"]
    assert len(blob_files(srv.data_dir)) == 1


def test_client_file_name_never_becomes_a_path(soma):
    srv = soma()
    r = upload(srv, [("files", ('../../../evil"\r\nname.txt', b"x", "text/plain"))])
    assert r.status_code == 200, r.text
    name = r.json()[0]["filename"]
    assert "/" not in name and '"' not in name and "\r" not in name and "\n" not in name
    assert not os.path.exists(os.path.join(os.path.dirname(srv.data_dir), "evil"))
    g = httpx.get(f"{srv.url}{r.json()[0]['path']}")
    assert "\r" not in g.headers["content-disposition"]


def test_upload_limits_and_bad_requests(soma):
    srv = soma("uploads.max_mb=1", "uploads.max_files=2")
    big = upload(srv, [("files", ("big.bin", b"\0" * (1024 * 1024 + 1), "application/octet-stream"))])
    check_envelope(big, 413, "file_too_large")
    many = upload(srv, [("files", (f"f{i}.txt", b"x", "text/plain")) for i in range(3)])
    check_envelope(many, 413, "too_many_files")
    # more than max_files x max_mb in total is refused from the header, before the body
    huge = httpx.post(f"{srv.url}/v1/uploads", content=b"x" * (4 * 1024 * 1024),
                      headers={"content-type": "multipart/form-data; boundary=zz"})
    check_envelope(huge, 413, "body_too_large")
    check_envelope(httpx.post(f"{srv.url}/v1/uploads", content=b"x", headers={"content-type": "text/plain"}), 415)
    check_envelope(upload(srv, [("note", (None, "no files"))]), 400, "no_files")
    bad = httpx.post(f"{srv.url}/v1/uploads", content=b"not multipart at all",
                     headers={"content-type": "multipart/form-data; boundary=abc"})
    check_envelope(bad, 400, "invalid_multipart")
    check_envelope(upload(srv, [("files", ("a.txt", b"x", "text/plain"))], data={"session_id": "bad id!"}), 400)
    assert blob_files(srv.data_dir) == [], "nothing is kept from refused uploads"
    assert not [n for n in os.listdir(os.path.join(srv.data_dir, "tmp"))], "spool files are removed"


def test_allowed_types(soma):
    srv = soma("uploads.allowed_types=image/*")
    check_envelope(upload(srv, [("files", ("a.txt", b"plain text", "image/png"))]), 415, "unsupported_type")
    assert upload(srv, [("files", ("p.png", PNG, "text/plain"))]).status_code == 200


def test_attachments_are_tenant_scoped(soma, tmp_path):
    data = tmp_path / "shared-data"
    ta = create_key(str(data), str(tmp_path), "tenant-a")
    tb = create_key(str(data), str(tmp_path), "tenant-b")
    srv = soma(data_dir=str(data))
    ha, hb = {"authorization": f"Bearer {ta}"}, {"authorization": f"Bearer {tb}"}
    item = upload(srv, [("files", ("a.txt", b"secret of a", "text/plain"))], headers=ha).json()[0]
    assert httpx.get(f"{srv.url}{item['path']}", headers=ha).content == b"secret of a"
    check_envelope(httpx.get(f"{srv.url}{item['path']}", headers=hb), 404)
    check_envelope(httpx.get(f"{srv.url}/v1/attachments/no-such-id", headers=ha), 404)
    # b cannot name a's attachment in a message: 404, and nothing is stored
    r = httpx.post(f"{srv.url}/v1/session/message", headers=hb,
                   json={"message": "look", "attachments": [item["id"]]})
    check_envelope(r, 404)
    assert httpx.get(f"{srv.url}/v1/sessions", headers=hb).json()["sessions"] == []
    # a can
    r = httpx.post(f"{srv.url}/v1/session/message", headers=ha,
                   json={"message": "look", "attachments": [item["id"]]})
    assert r.status_code == 200, r.text
    hist = httpx.get(f"{srv.url}/v1/sessions/{r.json()['session_id']}/history", headers=ha).json()
    assert hist["events"][0]["attachments"] == [item["id"]]


def test_deleting_a_session_deletes_the_files_its_messages_named(soma):
    """The UI's flow: upload (no session yet, or the id of a chat not started), then a message
    naming the files. DELETE /v1/sessions/{id} removes them, and the sweep their bytes."""
    srv = soma("uploads.sweep_interval_s=1", "uploads.orphan_grace_s=0", "health.interval_ms=200")
    loose = upload(srv, [("files", ("loose.txt", b"uploaded without a session\n", "text/plain"))]).json()[0]
    early = upload(srv, [("files", ("early.txt", b"uploaded before the chat began\n", "text/plain"))],
                   data={"session_id": "del-s1"}).json()[0]
    post_message(srv, "see these", session_id="del-s1", attachments=[loose["id"], early["id"]])
    # a file first named in del-s2 is del-s2's; del-s1 naming it later does not take it
    other = upload(srv, [("files", ("other.txt", b"first named by another session\n", "text/plain"))]).json()[0]
    post_message(srv, "mine", session_id="del-s2", attachments=[other["id"]])
    post_message(srv, "and this", session_id="del-s1", attachments=[other["id"]])
    assert httpx.delete(f"{srv.url}/v1/sessions/del-s1", timeout=10).status_code == 200
    for it in (loose, early):
        check_envelope(httpx.get(f"{srv.url}{it['path']}", timeout=10), 404)
    assert httpx.get(f"{srv.url}{other['path']}", timeout=10).content == b"first named by another session\n"
    assert early["session_id"] is None, "the session did not exist yet: nothing was tied to the id"
    wait_until(lambda: sorted(os.path.basename(p) for p in blob_files(srv.data_dir)) == [other["sha256"]], 10,
               what="the deleted session's files removed from data.dir")


def test_an_upload_names_only_a_session_of_the_caller(soma, tmp_path):
    data = tmp_path / "dd"
    ta = create_key(str(data), str(tmp_path), "tenant-a")
    tb = create_key(str(data), str(tmp_path), "tenant-b")
    srv = soma(data_dir=str(data))
    ha, hb = {"authorization": f"Bearer {ta}"}, {"authorization": f"Bearer {tb}"}
    post_message(srv, "hi", token=ta, session_id="sa-1")
    # another tenant's session: 404 before any file is kept
    r = upload(srv, [("files", ("b.txt", b"tenant b bytes\n", "text/plain"))], data={"session_id": "sa-1"}, headers=hb)
    check_envelope(r, 404, "not_found")
    assert blob_files(str(data)) == [], "a refused upload keeps no file"
    # an id nobody has yet: stored, bound to no session, so a's later session of that id is not b's
    r = upload(srv, [("files", ("f.txt", b"b's early file\n", "text/plain"))], data={"session_id": "future"}, headers=hb)
    assert r.status_code == 200 and r.json()[0]["session_id"] is None, r.text
    post_message(srv, "mine", token=ta, session_id="future")
    assert httpx.delete(f"{srv.url}/v1/sessions/future", headers=ha, timeout=10).status_code == 200
    assert httpx.get(f"{srv.url}{r.json()[0]['path']}", headers=hb, timeout=10).content == b"b's early file\n"


def test_more_files_than_64_and_the_part_limit(soma):
    srv = soma("uploads.max_files=100")
    r = upload(srv, [("files", (f"a{i}.txt", b"x%d\n" % i, "text/plain")) for i in range(65)])
    assert r.status_code == 200 and len(r.json()) == 65, r.text[:300]
    srv.stop()
    srv = soma()  # max_files=10: 65 parts are too many files, not a malformed body
    check_envelope(upload(srv, [("files", (f"a{i}.txt", b"x", "text/plain")) for i in range(65)]), 413,
                   "too_many_files")


def test_a_refused_upload_keeps_none_of_its_files(soma):
    srv = soma("uploads.allowed_types=text/*")
    r = upload(srv, [("files", ("ok.txt", b"a file that passes\n", "text/plain")), ("files", ("p.png", PNG, "image/png"))])
    check_envelope(r, 415, "unsupported_type")
    assert blob_files(srv.data_dir) == [], "the first file's bytes are not kept for a refused upload"


def test_a_blob_missing_on_this_node_says_to_share_data_dir_blobs(soma):
    srv = soma()
    it = upload(srv, [("files", ("a.txt", b"only on one node\n", "text/plain"))]).json()[0]
    for p in blob_files(srv.data_dir):
        os.remove(p)  # as on a node whose data.dir never saw the upload
    r = httpx.get(f"{srv.url}{it['path']}", timeout=10)
    check_envelope(r, 500, "blob_missing")
    msg = r.json()["error"]["message"]
    assert "this node's data.dir/blobs" in msg and "shared storage" in msg and "docs/operations.md" in msg, msg


@pytest.mark.postgres_only
def test_two_nodes_with_their_own_data_dir(tmp_path, store_server):
    """docs/operations.md: data.dir/blobs must be shared between nodes; when it is not, the node
    without the file says so (a 5xx naming what to do), it does not pretend the upload is gone."""
    db = store_server.new_database("u_two_nodes_blobs")
    nodes = []
    try:
        for name in ("n1", "n2"):
            (tmp_path / name / "data").mkdir(parents=True)
            nodes.append(start_server(tmp_path / name, sets=(f"store.url={db}",), timeout=20))
        it = upload(nodes[0], [("files", ("a.txt", b"hello cluster\n", "text/plain"))]).json()[0]
        assert httpx.get(f"{nodes[0].url}{it['path']}", timeout=10).content == b"hello cluster\n"
        r = httpx.get(f"{nodes[1].url}{it['path']}", timeout=10)
        check_envelope(r, 500, "blob_missing")
        assert "shared storage" in r.json()["error"]["message"], r.text
    finally:
        for n in nodes:
            n.stop()
