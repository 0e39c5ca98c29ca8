"""An upload whose body cannot be spooled to disk (data.dir/tmp) is 500 spool_failed whose message
says why: "check free space" only for a full disk; any other cause (here the directory is gone)
is named, and logged with its errno."""

import shutil

import httpx

from e2e_util import check_envelope


def test_spool_failure_names_its_cause(soma):
    srv = soma()
    shutil.rmtree(srv.data_dir / "tmp")
    r = httpx.post(f"{srv.url}/v1/uploads", files=[("files", ("a.txt", b"hello\n", "text/plain"))], timeout=10)
    err = check_envelope(r, 500, "spool_failed")
    assert "free space" not in err["message"], err
    assert "No such file or directory" in err["message"], err
    log = srv.log_text()
    assert "spooling a request body failed" in log and "errno 2" in log, log[-2000:]
