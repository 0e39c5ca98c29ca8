"""Helpers for the end-to-end tests: the binary, a clean environment, free ports, a running
server, raw HTTP/1.1 over sockets, a strict Prometheus text parser.

Standard library only (plus httpx in the tests); runs under Debian's /usr/bin/python3.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SOMA_BIN") or str(REPO / "build-san" / "somaagent")

# Well-known names the config module also reads (CONTRACTS.md section 5).
ALIAS_ENV = ("DATABASE_URL", "REDIS_URL", "GROQ_API_KEY", "OPENAI_API_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT")

UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
TOKEN_RE = re.compile(r"^sa01_[0-9a-f]{16}_[0-9a-f]{40}$")


# Which store the servers of this run use (make e2e runs the suite once per store): "sqlite" (the
# embedded default) or "postgres" (conftest.py starts one PostgreSQL for the session and sets PG;
# every data dir then maps to a database of its own, so a restart on the same dir finds its data).
STORE = os.environ.get("SOMA_E2E_STORE", "sqlite")
PG = None  # the session's servers.PostgresServer when STORE == "postgres"
_PG_DATABASES = set()


def store_url(data_dir):
    """The store.url of the database that belongs to data_dir (created on first use); "" on SQLite."""
    if PG is None:
        return ""
    import hashlib
    name = "d_" + hashlib.sha1(str(Path(data_dir).resolve()).encode()).hexdigest()[:24]
    if name not in _PG_DATABASES:
        PG._ensure_db(name)
        _PG_DATABASES.add(name)
    return PG.database_url(name)


def store_sets(data_dir):
    """The --set values that point a server or CLI run at data_dir's store: () on SQLite."""
    url = store_url(data_dir)
    return (f"store.url={url}",) if url else ()


def store_dump(data_dir):
    """Every byte the store holds for data_dir: the SQLite files, or on PostgreSQL the text of
    every row of every table of its database (to check that secrets are not stored in clear)."""
    if PG is None:
        return b"".join(p.read_bytes() for p in Path(data_dir).glob("somaagent.db*"))
    conn = PG.connect(store_url(data_dir).rsplit("/", 1)[1])
    try:
        cur = conn.cursor()
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        out = []
        for (table,) in cur.fetchall():
            cur.execute(f'SELECT t::text FROM "{table}" t')
            out += [row[0] for row in cur.fetchall()]
        return "\n".join(out).encode()
    finally:
        conn.close()


def store_exec(data_dir, sql):
    """Runs one SQL statement on data_dir's store and commits; the driver's exception on error."""
    if PG is None:
        import sqlite3
        db = sqlite3.connect(f"{data_dir}/somaagent.db")
        try:
            db.execute(sql)
            db.commit()
        finally:
            db.close()
        return
    conn = PG.connect(store_url(data_dir).rsplit("/", 1)[1])
    try:
        conn.cursor().execute(sql)
        conn.commit()
    finally:
        conn.close()


def store_user_event(srv, sid, tenant, seq, message, tag):
    """A user event with seq stored directly, as if another node committed it and its publish never
    reached this one (the session's last_seq follows); event_id "<tag>-<sid>-<seq>". Its JSON text."""
    def q(text):
        return "'" + text.replace("'", "''") + "'"

    event_id = f"{tag}-{sid}-{seq}"
    body = json.dumps({"type": "user", "role": "user", "session_id": sid, "seq": seq, "message": message,
                       "event_id": event_id, "metadata": {}, "version": "sa01-v1"}, separators=(",", ":"))
    store_exec(srv.data_dir, "INSERT INTO events(session_id, seq, event_id, tenant, type, body, created_ms) "
               f"VALUES ({q(sid)}, {seq}, {q(event_id)}, {q(tenant)}, 'user', {q(body)}, {int(time.time() * 1000)})")
    store_exec(srv.data_dir, f"UPDATE sessions SET last_seq = {seq} WHERE id = {q(sid)}")
    return body


def store_query(data_dir, sql, params=()):
    """Rows of one read-only query on data_dir's store; `?` placeholders on either driver."""
    if PG is None:
        import sqlite3
        db = sqlite3.connect(f"file:{data_dir}/somaagent.db?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()
    conn = PG.connect(store_url(data_dir).rsplit("/", 1)[1])
    try:
        cur = conn.cursor()
        cur.execute(sql.replace("?", "%s"), params)
        return cur.fetchall()
    finally:
        conn.close()


def _cli_store_sets(args, cwd, env):
    """run_cli: the store of the data dir a store-using command names (or ./data), unless the
    test chose a store itself."""
    if PG is None or not args or args[0] not in ("run", "keys", "migrate", "backup", "restore") or args[-1] == "--set":
        return []
    if any(str(a).startswith("store.url=") for a in args) or env and ({"DATABASE_URL", "SOMA_STORE_URL"} & set(env)):
        return []
    data_dir = Path(cwd) / "data"
    for a in args:
        if str(a).startswith("data.dir="):
            data_dir = Path(cwd) / str(a)[len("data.dir="):]
    return ["--set", store_sets(data_dir)[0]]


def clean_env(extra=None):
    """The test runner's environment without SOMA_* or alias variables, plus sanitizer options."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOMA_") and k not in ALIAS_ENV}
    env["ASAN_OPTIONS"] = "detect_leaks=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    env.update(extra or {})
    return env


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_cli(args, cwd, env=None, timeout=20, input=None):
    """Runs `somaagent ARGS` to completion; a hang (e.g. a server that should have refused to
    start) fails the test instead of blocking the suite."""
    proc = subprocess.Popen(
        [BIN, *args, *_cli_store_sets(args, cwd, env)],
        cwd=str(cwd),
        env=clean_env(env),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(input=input.encode() if isinstance(input, str) else input, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"somaagent {' '.join(args)} did not exit within {timeout} s\n"
            f"stdout:\n{out.decode(errors='replace')}\nstderr:\n{err.decode(errors='replace')}"
        )
    cp = subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(errors="replace"),
                                     err.decode(errors="replace"))
    check_sanitizers(cp.stderr, f"somaagent {' '.join(args)}")
    return cp


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer")


def check_sanitizers(stderr_text, what):
    for mark in SANITIZER_MARKS:
        assert mark not in stderr_text, f"{what}: sanitizer report on stderr:\n{stderr_text}"


def describe(cp):
    return f"exit {cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"


def create_key(data_dir, cwd, tenant, scope=None):
    """`somaagent keys create`; returns the token printed on stdout."""
    args = ["keys", "create", "--tenant", tenant, "--set", f"data.dir={data_dir}"]
    if scope:
        args += ["--scope", scope]
    cp = run_cli(args, cwd)
    assert cp.returncode == 0, describe(cp)
    token = cp.stdout.strip()
    assert TOKEN_RE.match(token), f"token {token!r} is not sa01_<16 hex>_<40 hex>"
    return token


def wait_until(pred, timeout, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ---- a running server ---------------------------------------------------------------------


class Server:
    def __init__(self, proc, port, data_dir, log_path, host="127.0.0.1"):
        self.proc = proc
        self.port = port
        self.host = host
        self.data_dir = data_dir
        self.log_path = log_path
        self.url = f"http://{host}:{port}"
        self.checked = False  # the test took care of the exit status itself

    def log_text(self):
        return Path(self.log_path).read_text(errors="replace")

    def log_lines(self):
        return [ln for ln in self.log_text().splitlines() if ln.strip()]

    def json_logs(self):
        """Every stderr line parsed as JSON; a line that is not JSON fails the test."""
        out = []
        for ln in self.log_lines():
            try:
                obj = json.loads(ln)
            except ValueError:
                raise AssertionError(f"stderr line is not JSON: {ln!r}\nwhole log:\n{self.log_text()}")
            assert isinstance(obj, dict), f"stderr line is not a JSON object: {ln!r}"
            out.append(obj)
        return out

    def logs_quiet(self):
        """JSON log objects, skipping lines that do not parse (for searching only)."""
        out = []
        for ln in self.log_lines():
            try:
                obj = json.loads(ln)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def wait_log(self, pred, timeout=5, what="a log line"):
        def find():
            for obj in self.logs_quiet():
                if pred(obj):
                    return obj
            return None

        return wait_until(find, timeout, what=f"{what}; log so far:\n{self.log_text()}")

    def connect(self, timeout=5):
        return RawConn(self.host, self.port, timeout)

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"somaagent did not exit within {timeout} s; log:\n{self.log_text()}")
        check_sanitizers(self.log_text(), "somaagent run")
        return rc

    def stop(self, timeout=15, expect=0):
        """SIGTERM, wait, check the exit status (ASan leak reports make it non-zero)."""
        self.checked = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"somaagent did not exit within {timeout} s of SIGTERM; log:\n{self.log_text()}")
        rc = self.proc.returncode
        check_sanitizers(self.log_text(), "somaagent run")
        if expect is not None:
            assert rc == expect, f"somaagent exited {rc}, expected {expect}; log:\n{self.log_text()}"
        return rc


def start_server(tmp, sets=(), env=None, role=None, args=(), data_dir=None, listen_host="127.0.0.1",
                 connect_host="127.0.0.1", port=None, wait=True, timeout=10, preexec_fn=None):
    """Starts `somaagent run` with stderr in a file; waits until /v1/health answers. preexec_fn
    runs in the child before the exec (e.g. to lower a resource limit)."""
    tmp = Path(tmp)
    port = port or free_port()
    data_dir = Path(data_dir) if data_dir else tmp / "data"
    log_path = tmp / f"somaagent-{port}.log"
    cmd = [BIN, "run", "--set", f"http.listen={listen_host}:{port}", "--set", f"data.dir={data_dir}"]
    if role:
        cmd += ["--role", role]
    if not any(str(s).startswith("store.url=") for s in sets) and not (env and "DATABASE_URL" in env):
        sets = tuple(store_sets(data_dir)) + tuple(sets)  # the test's own --set comes later and wins
    for s in sets:
        cmd += ["--set", s]
    cmd += list(args)
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=str(tmp), env=clean_env(env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=logf, preexec_fn=preexec_fn)
    srv = Server(proc, port, data_dir, log_path, host=connect_host)
    if wait:
        wait_healthy(srv, timeout)
    return srv


def wait_healthy(srv, timeout=10):
    """Waits until /v1/health answers 200 (it answers 503 while services are starting)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        rc = srv.proc.poll()
        if rc is not None:
            srv.checked = True
            raise AssertionError(f"somaagent exited with {rc} during start-up; log:\n{srv.log_text()}")
        try:
            with socket.create_connection((srv.host, srv.port), timeout=1) as s:
                s.settimeout(2)
                s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                got = s.recv(12)
                if got.startswith(b"HTTP/1.1 200"):
                    return
                last = got.decode("latin-1") or "connection closed"
        except OSError as e:
            last = repr(e)
        if time.monotonic() >= deadline:
            raise AssertionError(f"/v1/health did not answer 200 within {timeout} s (last: {last}); "
                                 f"log:\n{srv.log_text()}")
        time.sleep(0.02)


# ---- raw HTTP/1.1 ---------------------------------------------------------------------------


class Response:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) as received
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:300]!r}>"


class RawConn:
    """A client socket that can read several responses from one stream (pipelining)."""

    def __init__(self, host, port, timeout=5):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buf += chunk

    def read_response(self, head_request=False, timeout=None):
        if timeout is not None:
            self.sock.settimeout(timeout)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"^HTTP/1\.1 (\d{3}) (.*)$", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        headers = []
        for ln in lines[1:]:
            name, _, value = ln.partition(":")
            headers.append((name.strip(), value.strip()))
        resp = Response(int(m.group(1)), m.group(2), headers, b"", head)
        if head_request or resp.status in (100, 204, 304):
            return resp
        cl = resp.header("content-length")
        assert cl is not None, f"response without Content-Length: {head!r}"
        n = int(cl)
        while len(self.buf) < n:
            self._fill()
        resp.body, self.buf = self.buf[:n], self.buf[n:]
        return resp

    def closed_by_peer(self, timeout=2):
        """True when the server closes the connection (EOF or reset) within timeout with no
        further bytes; False on timeout; AssertionError if more data arrives."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        assert chunk == b"" and self.buf == b"", f"unexpected bytes after the response: {self.buf + chunk!r}"
        return True

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def raw_request(srv, data, timeout=5, head_request=False):
    """Sends data on a fresh connection and reads one response."""
    with srv.connect(timeout) as c:
        c.send(data)
        return c.read_response(head_request=head_request)


def header(resp, name):
    """A header of a raw Response or an httpx.Response."""
    return resp.header(name) if isinstance(resp, Response) else resp.headers.get(name)


def check_envelope(resp, status, code=None):
    """The JSON error envelope of CONTRACTS.md section 1, with request_id == X-Request-Id."""
    got = resp.status if isinstance(resp, Response) else resp.status_code
    assert got == status, f"expected {status}, got {got}: {resp.headers} {resp.content if not isinstance(resp, Response) else resp.body!r}"
    ctype = header(resp, "content-type")
    assert ctype and ctype.startswith("application/json"), f"error Content-Type {ctype!r}"
    body = resp.json()
    assert set(body) == {"error"}, f"envelope has keys {sorted(body)}: {body}"
    err = body["error"]
    assert set(err) >= {"code", "message", "request_id"}, f"error object lacks fields: {err}"
    assert isinstance(err["code"], str) and re.match(r"^[a-z][a-z0-9_]*$", err["code"]), err
    assert isinstance(err["message"], str) and err["message"].strip(), err
    rid = header(resp, "x-request-id")
    assert rid, "error response without X-Request-Id"
    assert err["request_id"] == rid, f"body request_id {err['request_id']!r} != header {rid!r}"
    if code:
        assert err["code"] == code, err
    return err


# ---- Prometheus text format -----------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
_SAMPLE_RE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*,?)?\}})? (\S+)(?: -?\d+)?$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"')


def _unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def parse_metrics(text):
    """Strict parse of the text exposition format 0.0.4. Returns (types, samples) where samples
    is a list of (name, {label: value}, float)."""
    types, samples = {}, []
    assert text.endswith("\n"), "exposition must end with a newline"
    for ln in text.split("\n")[:-1]:
        if ln.startswith("# TYPE "):
            parts = ln.split(" ")
            assert len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), ln
            assert parts[2] not in types, f"duplicate TYPE for {parts[2]}"
            types[parts[2]] = parts[3]
            continue
        if ln.startswith("#") or ln == "":
            assert ln == "" or ln.startswith("# HELP ") or ln.startswith("# "), ln
            continue
        m = _SAMPLE_RE.match(ln)
        assert m, f"malformed sample line: {ln!r}"
        labels = {k: _unescape(v) for k, v in _LABEL_RE.findall(m.group(2) or "")}
        val = m.group(3)
        value = float(val.replace("Inf", "inf")) if val not in ("NaN",) else float("nan")
        samples.append((m.group(1), labels, value))
    return types, samples


def find_samples(samples, name, **labels):
    return [(lbl, v) for n, lbl, v in samples if n == name and all(lbl.get(k) == x for k, x in labels.items())]


# ---- the fake LLM provider (tests/fakes/llm/server.py) ---------------------------------------

FAKE_LLM = REPO / "tests" / "fakes" / "llm" / "server.py"
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else "python3"


class FakeLLM:
    """An OpenAI-compatible fake on a free loopback port; control(), stats(), reset()."""

    def __init__(self, log_dir, chunks=12, delay_ms=0):
        self.log_path = Path(log_dir) / "fake-llm.log"
        for _ in range(5):
            self.port = free_port()
            with open(self.log_path, "wb") as logf:
                self.proc = subprocess.Popen(
                    [PYTHON, str(FAKE_LLM), "--port", str(self.port), "--chunks", str(chunks),
                     "--delay-ms", str(delay_ms)],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
            self.url = f"http://127.0.0.1:{self.port}"
            if self._wait_up(10):
                return
            self.stop()
        raise AssertionError(f"the fake LLM did not start; log:\n{self.log_path.read_text(errors='replace')}")

    def _wait_up(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # e.g. the port was taken meanwhile
            try:
                if self._call("GET", "/_stats", timeout=1)[0] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    @property
    def base_url(self):
        return self.url + "/v1"

    def sets(self, api_key="test-key", model="fake-model"):
        """--set values that point somaagent at this fake."""
        return ["llm.provider=custom", f"llm.base_url={self.base_url}", f"llm.api_key={api_key}",
                f"llm.model={model}"]

    def _call(self, method, path, body=None, timeout=5):
        import http.client

        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def control(self, **kw):
        status, body = self._call("POST", "/_control", kw)
        assert status == 200, body

    def reset(self):
        status, body = self._call("POST", "/_reset", {})
        assert status == 200, body

    def stats(self):
        status, body = self._call("GET", "/_stats")
        assert status == 200, body
        return json.loads(body)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- Server-Sent Events over a raw socket ----------------------------------------------------


class SSEFrame:
    def __init__(self, id, data, retry, comments):
        self.id = id  # None when the frame had no id line
        self.data = data  # the data lines joined by "\n", or None when there were none
        self.retry = retry
        self.comments = comments

    def json(self):
        return json.loads(self.data)

    def __repr__(self):
        return f"<SSEFrame id={self.id!r} data={(self.data or '')[:200]!r}>"


class SSEStream:
    """GET <path> as an event stream: checks the head (200, text/event-stream, chunked), then
    parses the chunked body into frames (id, data, retry) per the SSE rules: lines end in LF,
    CRLF or CR, a blank line ends a frame, ":" lines are comments, one leading space after the
    colon is dropped, several data lines join with LF."""

    def __init__(self, srv, path, headers=None, timeout=10, rcvbuf=None):
        if rcvbuf:  # a small receive buffer makes a reader that does not read slow quickly
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect((srv.host, srv.port))
        else:
            self.sock = socket.create_connection((srv.host, srv.port), timeout=timeout)
        self.sock.settimeout(timeout)
        host = f"[{srv.host}]" if ":" in srv.host else srv.host
        hdrs = {"Host": f"{host}:{srv.port}", "Accept": "text/event-stream"}
        hdrs.update(headers or {})
        req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        self.sock.sendall(req.encode())
        self.raw = b""  # undecoded bytes from the socket
        self.body = b""  # de-chunked body bytes not yet parsed into lines
        self.text_lines = []  # lines of the current frame
        self.eof = False
        self.frames_read = []
        self.response = None  # a Response when the server answered something else than a stream
        self._read_head()

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.raw += chunk

    def _read_head(self):
        while b"\r\n\r\n" not in self.raw:
            self._recv()
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"^HTTP/1\.1 (\d{3}) (.*)$", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        headers = [(n.strip(), v.strip()) for n, _, v in (ln.partition(":") for ln in lines[1:])]
        self.head = Response(int(m.group(1)), m.group(2), headers, b"", head)
        if self.head.status != 200:
            n = int(self.head.header("content-length") or 0)
            while len(self.raw) < n:
                self._recv()
            self.head.body = self.raw[:n]
            self.response = self.head
            return
        ctype = self.head.header("content-type") or ""
        assert ctype.startswith("text/event-stream"), f"stream Content-Type {ctype!r}"
        te = (self.head.header("transfer-encoding") or "").lower()
        assert te == "chunked", f"stream is not chunked: {self.head.headers}"
        assert self.head.header("content-length") is None, "a stream must not carry Content-Length"

    def _dechunk_some(self):
        """Moves complete chunks from raw to body; reads the socket when none is complete."""
        while True:
            progressed = False
            while b"\r\n" in self.raw:
                size_line, rest = self.raw.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    self.eof = True
                    self.raw = b""
                    return
                if len(rest) < size + 2:
                    break
                assert rest[size:size + 2] == b"\r\n", f"bad chunk framing: {rest[:size + 10]!r}"
                self.body += rest[:size]
                self.raw = rest[size + 2:]
                progressed = True
            if progressed:
                return
            self._recv()

    def next_frame(self, timeout=None):
        """The next frame with at least one field; None at the end of the stream."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        frame_fields = {"id": None, "data": [], "retry": None, "comments": [], "any": False}
        while True:
            # split complete lines off the body (LF, CRLF or CR; a trailing CR may precede an LF)
            m = re.search(rb"\r\n|\n|\r(?!$)", self.body)
            if m is None:
                if self.eof:
                    return None
                try:
                    self._dechunk_some()
                except EOFError:
                    self.eof = True
                continue
            line = self.body[:m.start()].decode("utf-8")
            self.body = self.body[m.end():]
            if line == "":
                if frame_fields["any"]:
                    f = SSEFrame(frame_fields["id"], "\n".join(frame_fields["data"]) if frame_fields["data"] else None,
                                 frame_fields["retry"], frame_fields["comments"])
                    self.frames_read.append(f)
                    return f
                continue
            if line.startswith(":"):
                frame_fields["comments"].append(line[1:])
                continue
            name, colon, value = line.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            frame_fields["any"] = True
            if name == "id":
                frame_fields["id"] = value
            elif name == "data":
                frame_fields["data"].append(value)
            elif name == "retry":
                frame_fields["retry"] = value

    def events(self, until, timeout=10, keepalives=False):
        """Frames with data, parsed as JSON, up to and including the first for which until(event)
        holds; returns [(id, event)]. Keepalives are skipped unless keepalives=True."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s; events so far: {out}")
            try:
                f = self.next_frame(timeout=left)
            except socket.timeout:
                raise AssertionError(f"no frame for {timeout} s; events so far: {out}")
            if f is None:
                raise AssertionError(f"the stream ended; events so far: {out}")
            if f.data is None:
                continue
            ev = f.json()
            if ev.get("type") == "system.keepalive" and not keepalives:
                continue
            out.append((f.id, ev))
            if until(ev):
                return out

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def parse_cursor(c):
    """'12' -> (12, 0, False), '12.3' -> (12, 3, True); asserts the format."""
    m = re.match(r"^(\d+)(?:\.(\d+))?$", c or "")
    assert m, f"bad cursor {c!r}"
    return int(m.group(1)), int(m.group(2) or 0), m.group(2) is not None


# ---- chat helpers -----------------------------------------------------------------------------

TERMINAL = ("assistant.final", "assistant.error")
_CLIENT = None


def http():
    """One shared httpx.Client (keep-alive; creating a client per call costs ~20 ms)."""
    global _CLIENT
    if _CLIENT is None:
        import httpx

        _CLIENT = httpx.Client(timeout=10)
    return _CLIENT


def bearer(token):
    return {"Authorization": f"Bearer {token}"} if token else {}


def post_message(srv, message, token=None, **fields):
    """POST /v1/session/message; asserts 200 and the answer's shape; returns it."""
    body = dict(fields, message=message)
    r = http().post(srv.url + "/v1/session/message", json=body, headers=bearer(token), timeout=10)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"session_id", "event_id", "seq", "task_id"}, out
    assert isinstance(out["seq"], int) and out["seq"] >= 1, out
    if "session_id" in fields:
        assert out["session_id"] == fields["session_id"], out
    return out


def open_stream(srv, sid, after=None, last_event_id=None, token=None, timeout=10, expect=200, rcvbuf=None):
    """GET /v1/sessions/{sid}/events?stream=true[&after=]; with expect=200 checks that the first
    frame is `retry: 2000`."""
    path = f"/v1/sessions/{sid}/events?stream=true"
    if after is not None:
        path += f"&after={after}"
    headers = bearer(token)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    s = SSEStream(srv, path, headers=headers, timeout=timeout, rcvbuf=rcvbuf)
    if expect != 200:
        assert s.response is not None and s.response.status == expect, f"expected {expect}: {s.head!r}"
        s.close()
        return s.response
    assert s.response is None, f"stream refused: {s.head!r}"
    first = s.next_frame(timeout=timeout)
    assert first is not None and first.retry == "2000" and first.data is None and first.id is None, first
    return s


def read_reply(stream, timeout=15):
    """[(id, event)] up to and including the next assistant.final or assistant.error."""
    return stream.events(lambda e: e.get("type") in TERMINAL, timeout=timeout)


def history(srv, sid, token=None, limit=None):
    q = f"?limit={limit}" if limit else ""
    r = http().get(f"{srv.url}/v1/sessions/{sid}/history{q}", headers=bearer(token), timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["session_id"] == sid and isinstance(body["events"], list), body
    return body["events"]


def wait_terminal(srv, sid, token=None, timeout=10, count=1):
    """Polls the history until it holds `count` assistant.final/error events; returns it."""
    def done():
        evs = history(srv, sid, token)
        return evs if sum(e["type"] in TERMINAL for e in evs) >= count else None

    return wait_until(done, timeout, interval=0.05, what=f"{count} reply(ies) in the history of {sid}")


def cursor_key(c):
    seq, minor, _ = parse_cursor(c)
    return (seq, minor)


def check_increasing(ids):
    """Every frame has an id, and the ids strictly increase as cursors."""
    assert all(i is not None for i in ids), f"a frame without id: {ids}"
    keys = [cursor_key(i) for i in ids]
    assert all(a < b for a, b in zip(keys, keys[1:])), f"cursors do not strictly increase: {ids}"
    assert len(set(ids)) == len(ids), f"an id repeats: {ids}"


def check_reply(frames, sid, model="fake-model"):
    """The frames of one generation (from assistant.thinking or before, to the final): deltas in
    order whose concatenation is the final's message, ephemeral cursors for thinking/deltas and
    the stored seq as the id of committed events. Returns the final event."""
    ids = [i for i, _ in frames]
    check_increasing(ids)
    types = [e["type"] for _, e in frames]
    assert types[-1] == "assistant.final", types
    assert "assistant.thinking" in types, types
    t = types.index("assistant.thinking")
    deltas = [e for _, e in frames if e["type"] == "assistant.delta"]
    assert deltas, f"no deltas: {types}"
    assert types[t + 1:-1] == ["assistant.delta"] * len(deltas), f"thinking, deltas, final expected: {types}"
    final = frames[-1][1]
    for fid, ev in frames:
        assert ev["session_id"] == sid, ev
        _, _, ephemeral = parse_cursor(fid)
        if ev["type"] in ("assistant.thinking", "assistant.delta"):
            assert ephemeral, f"{ev['type']} with a committed cursor {fid}"
            assert ev["role"] == "assistant"
        else:
            assert not ephemeral and int(fid) == ev["seq"], f"committed event {ev['type']} id {fid} seq {ev.get('seq')}"
    assert [d["metadata"]["stream_index"] for d in deltas] == list(range(len(deltas))), deltas
    gen = final["metadata"]["generation_id"]
    assert all(e["metadata"].get("generation_id") == gen for _, e in frames[t:]), "generation_id differs"
    assert "".join(d["message"] for d in deltas) == final["message"], (deltas, final["message"])
    meta = final["metadata"]
    assert final["role"] == "assistant" and meta["status"] == "completed", final
    assert meta["model"] == model, meta
    usage = meta["usage"]
    assert isinstance(usage["input_tokens"], int) and usage["input_tokens"] > 0, usage
    assert isinstance(usage["output_tokens"], int) and usage["output_tokens"] > 0, usage
    return final
