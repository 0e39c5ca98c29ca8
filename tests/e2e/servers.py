"""Real Redis and PostgreSQL servers for the tests, each on a free loopback port in its own temp
dir, stopped at the end. PostgreSQL refuses to run as root: as root the server runs as the
`postgres` user (its directory is handed to that user).

    with RedisServer() as r:      r.url(db=0), r.client(), r.restart(), r.kill()
    with PostgresServer() as pg:  pg.url, pg.new_database("name") -> URL, pg.restart(), pg.kill()
"""

import gc
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_port(port, proc, what, log, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{Path(log).read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s:\n{Path(log).read_text()[-3000:]}")


class RedisServer:
    """redis-server --save '' on a free port; restart() keeps the port (and loses the data)."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="soma-redis-")
        self.log = os.path.join(self.dir, "redis.log")
        self.proc = None
        self.start()

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--dir", self.dir],
                stdout=log, stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc, "redis-server", self.log)

    def url(self, db=0):
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db=0):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, db=db)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, down_s=0.0):
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self):
        # a Celery AsyncResult left in a reference cycle unsubscribes in __del__, with 20 one-second
        # reconnect attempts when its Redis is gone: collect it now, while the server still answers
        gc.collect()
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _as_postgres():
    """preexec_fn dropping root to the postgres user (no-op when not root)."""
    if os.geteuid() != 0:
        return None
    pw = pwd.getpwnam("postgres")

    def drop():
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return drop


class PostgresServer:
    """initdb + postgres on a free port, trust auth for user `soma` on loopback. fsync=False
    trades durability against power loss (irrelevant to tests) for speed; benches pass True."""

    def __init__(self, port=None, fsync=False, tmp_root=None):
        self.port = port or free_port()
        self.fsync = fsync
        self.dir = tempfile.mkdtemp(prefix="soma-pg-", dir=tmp_root)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        subprocess.run([str(PG_BIN / "initdb"), "-D", self.data, "-U", "soma", "-A", "trust", "-E", "UTF8",
                        "--no-sync", "--locale=C"], check=True, capture_output=True, preexec_fn=_as_postgres())
        self.proc = None
        for attempt in range(3):
            try:
                self.start()
                break
            except Exception:
                # free_port's port can be taken before postgres binds it (another test's server):
                # postgres then exits, and a first start may take another port; a restart may not
                if attempt == 2 or port is not None or self.proc is None or self.proc.poll() is None:
                    raise
                self.port = free_port()
        self.url = self.database_url("soma") if self._ensure_db("soma") else None

    def start(self):
        log = open(self.log, "ab")
        if os.geteuid() == 0:
            os.chown(self.log, pwd.getpwnam("postgres").pw_uid, -1)
        self.proc = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", self.data, "-p", str(self.port), "-k", self.dir,
             "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300",
             "-c", f"fsync={'on' if self.fsync else 'off'}",
             "-c", f"synchronous_commit={'on' if self.fsync else 'off'}"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_as_postgres())
        log.close()
        _wait_port(self.port, self.proc, "postgres", self.log)
        deadline = time.monotonic() + 15
        while True:  # listening is not accepting: wait until a query works
            try:
                self._admin().close()
                return
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def _admin(self):
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="soma", dbname="postgres")
        conn.autocommit = True
        return conn

    def _ensure_db(self, name):
        conn = self._admin()
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if not cur.fetchone():
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return True

    def database_url(self, name):
        return f"postgresql://soma@127.0.0.1:{self.port}/{name}"

    def new_database(self, name):
        """A fresh, empty database; returns its URL."""
        conn = self._admin()
        try:
            conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.cursor().execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.database_url(name)

    def connect(self, name="soma"):
        import psycopg2
        return psycopg2.connect(host="127.0.0.1", port=self.port, user="soma", dbname=name)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, down_s=0.0):
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
