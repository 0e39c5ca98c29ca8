"""deploy/: the image, compose, Kubernetes and systemd files checked against the real binary
(`make deploy-check`, part of `make test`; seconds, no network, no container runtime).

- every file parses; every variable given to somaagent is a real setting (`config docs`'s
  environment column) and `config show` says it came from the environment;
- the Dockerfile's runtime packages exist and, with their dependencies, provide every library
  `ldd somaagent` needs and the libcurl soname src/llm/curl_dl.c dlopen()s;
- the probes of compose and Kubernetes, and the Dockerfile's HEALTHCHECK, answer on a gateway
  and a worker started with the manifests' environment (over a real Redis and PostgreSQL);
  SIGTERM stops them within the grace the manifests give; `somaagent health` fails on a closed port;
- `systemd-analyze verify` accepts the unit.
The real image build is deploy/build-local.sh (minutes and the network: not part of this)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = os.environ.get("SOMA_BIN") or str(REPO / "build-san" / "somaagent")
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from servers import PostgresServer, RedisServer, free_port  # noqa: E402

SANITIZER_LIBS = ("libasan", "libubsan", "libtsan", "liblsan")  # the test build's, not the image's


def clean_env(extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SOMA_") and k not in ("DATABASE_URL", "REDIS_URL", "GROQ_API_KEY", "OPENAI_API_KEY")}
    env.update({"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "halt_on_error=1"})
    env.update(extra)
    return env


def soma(args, env, timeout=20):
    return subprocess.run([BIN, *args], env=clean_env(env), capture_output=True, text=True, timeout=timeout,
                          cwd=env.get("SOMA_DATA_DIR", "/"))


@pytest.fixture(scope="module")
def known_env():
    """Every environment variable the binary reads -> its key, from `config docs`' table."""
    docs = subprocess.run([BIN, "config", "docs"], capture_output=True, text=True, check=True).stdout
    names = {}
    for line in docs.splitlines():
        cols = line.split(" | ")
        if line.startswith("| `") and len(cols) >= 5:
            key = cols[0].strip("| `")
            names.update({var: key for var in re.findall(r"`([A-Z][A-Z0-9_]+)`", cols[3])})
    assert names.get("SOMA_HTTP_LISTEN") == "http.listen" and "DATABASE_URL" in names, "config docs changed shape"
    return names


def load_yaml(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def compose():
    return load_yaml(DEPLOY / "docker-compose.yaml")[0]


def k8s(kind, name=None):
    for f in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in load_yaml(f):
            if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name):
                return doc
    raise AssertionError(f"no {kind} {name or ''} in deploy/kubernetes")


def soma_services():
    """Compose services that run our image: name -> service."""
    return {n: s for n, s in compose()["services"].items() if s.get("image", "").startswith("somaagent")}


def compose_env(svc, fill):
    """A compose service's environment with ${VAR:?...} / ${VAR:-...} replaced by fill[VAR]."""
    def sub(v):
        return re.sub(r"\$\{([A-Z0-9_]+)(:[-?][^}]*)?\}", lambda m: fill.get(m.group(1), ""), str(v))
    return {k: sub(v) for k, v in svc["environment"].items()}


def k8s_env(deploy):
    """The environment a Deployment's container gets from its ConfigMap and the example Secret."""
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            env.update(k8s("ConfigMap", src["configMapRef"]["name"])["data"])
        if "secretRef" in src:
            env.update(k8s("Secret", src["secretRef"]["name"])["stringData"])
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return {k: str(v) for k, v in env.items()}


def dockerfile_stages():
    return re.split(r"^FROM ", (DEPLOY / "Dockerfile").read_text(), flags=re.M)[1:]


# ---- the files parse, and name real settings --------------------------------------------------

def test_every_yaml_file_parses():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 7, files
    for f in files:
        assert load_yaml(f), f"{f} is empty"
    kust = load_yaml(DEPLOY / "kubernetes" / "kustomization.yaml")[0]
    for r in kust["resources"]:
        assert (DEPLOY / "kubernetes" / r).exists(), r


def test_every_variable_given_to_somaagent_is_a_setting(known_env):
    given = {}
    for name, svc in soma_services().items():
        given.update({k: f"compose {name}" for k in svc["environment"]})
    for comp in ("somaagent-gateway", "somaagent-worker"):
        given.update({k: f"kubernetes {comp}" for k in k8s_env(k8s("Deployment", comp))})
    for m in re.finditer(r"\b(SOMA_[A-Z0-9_]+)=", (DEPLOY / "Dockerfile").read_text()):
        given[m.group(1)] = "Dockerfile ENV"
    unit = (DEPLOY / "systemd" / "somaagent.service").read_text()
    given.update({m.group(1): "systemd unit" for m in re.finditer(r"^Environment=([A-Z0-9_]+)=", unit, re.M)})
    unknown = {k: where for k, where in given.items() if k not in known_env}
    assert not unknown, f"not a setting of somaagent (config docs): {unknown}"
    assert {"DATABASE_URL", "REDIS_URL", "SOMA_AUTH_ADMIN_TOKEN"} <= set(given)


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_config_show_reads_each_variable_from_the_environment(where, known_env, tmp_path):
    if where == "compose":
        env = compose_env(soma_services()["gateway"], {"SOMA_AUTH_ADMIN_TOKEN": "t" * 40, "GROQ_API_KEY": "k"})
    else:
        env = k8s_env(k8s("Deployment", "somaagent-gateway"))
    env["SOMA_DATA_DIR"] = str(tmp_path)
    cp = soma(["config", "show", "--json"], env)
    assert cp.returncode == 0, cp.stderr
    shown = json.loads(cp.stdout)
    for var, value in env.items():
        key = known_env[var]
        assert shown[key]["source"] == "env", f"{var} -> {key}: {shown[key]}"


# ---- the image's runtime packages -------------------------------------------------------------

def runtime_packages():
    runtime = dockerfile_stages()[-1]
    m = re.search(r"apt-get install[^\n]*?--no-install-recommends\s*\\\n(.*?)\n\s*&&", runtime, re.S)
    assert m, "the runtime stage's apt-get install line changed shape"
    return m.group(1).replace("\\", " ").split()


def dpkg_depends_closure(roots):
    """The packages roots pull in (Depends, Pre-Depends), from this host's dpkg database."""
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        cp = subprocess.run(["dpkg-query", "-W", "-f", "${Depends}, ${Pre-Depends}", p], capture_output=True,
                            text=True)
        for alt in re.split(r",", cp.stdout):
            names = [a.strip().split(" ")[0].split(":")[0] for a in alt.split("|") if a.strip()]
            todo.extend(n for n in names[:1])  # the first alternative, as apt picks it
    return seen


def package_of(path):
    cp = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    if cp.returncode != 0:
        real = os.path.realpath(path)
        cp = subprocess.run(["dpkg", "-S", real], capture_output=True, text=True)
    assert cp.returncode == 0, f"no Debian package owns {path}"
    return cp.stdout.split(":")[0]


def test_runtime_packages_exist_and_provide_every_library():
    pkgs = runtime_packages()
    assert "ca-certificates" in pkgs
    for p in pkgs:
        cp = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", p], capture_output=True, text=True)
        if "install ok installed" not in cp.stdout:
            assert subprocess.run(["apt-cache", "show", p], capture_output=True).returncode == 0, \
                f"Dockerfile installs {p}, which Debian does not have"
    closure = dpkg_depends_closure(pkgs) | {"libc6"}  # libc6 is in every Debian image
    ldd = subprocess.run(["ldd", BIN], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"^\s*(\S+) => (/\S+)", ldd, re.M)
    assert len(libs) >= 8, ldd
    missing = {}
    for soname, path in libs:
        if soname.startswith(SANITIZER_LIBS):
            continue
        pkg = package_of(path)
        if pkg not in closure:
            missing[soname] = pkg
    # libcurl is dlopen()ed at the first provider call: ldd does not show it
    dl = re.search(r'dlopen\("([^"]+)"', (REPO / "src" / "llm" / "curl_dl.c").read_text()).group(1)
    ldconfig = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    path = re.search(rf"^\s*{re.escape(dl)} \(libc6,x86-64\) => (\S+)", ldconfig, re.M)
    assert path, f"{dl} (src/llm/curl_dl.c) is not installed here"
    if package_of(path.group(1)) not in closure:
        missing[dl] = package_of(path.group(1))
    assert not missing, f"add to deploy/Dockerfile's runtime stage: {missing}"


# ---- probes and stops, on the real binary -----------------------------------------------------

def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


@pytest.fixture(scope="module")
def backends():
    """A Redis and a PostgreSQL standing in for the manifests' `redis` and `postgres` hosts."""
    with RedisServer() as r, PostgresServer() as pg:
        yield r, pg


def start(role, env, tmp_path):
    port = free_port()
    data = tmp_path / f"data-{role}"
    data.mkdir()
    env = dict(env, SOMA_HTTP_LISTEN=f"0.0.0.0:{port}", SOMA_DATA_DIR=str(data))
    log = open(tmp_path / f"{role}.log", "wb")
    proc = subprocess.Popen([BIN, "run", "--role", role], env=clean_env(env), cwd=data, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while get(port, "/v1/health") != 200:
        assert proc.poll() is None, (tmp_path / f"{role}.log").read_text()
        assert time.monotonic() < deadline, (tmp_path / f"{role}.log").read_text()
        time.sleep(0.05)
    return proc, port, env


def stop_within(proc, seconds, log):
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=seconds)
    assert rc == 0, log.read_text()
    assert "shutdown complete" in log.read_text()
    return time.monotonic() - t0


def deployment_probes(deploy):
    spec = deploy["spec"]["template"]["spec"]
    c = spec["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    probes = {}
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        h = c[kind]["httpGet"]
        probes[kind] = (ports.get(h["port"], h["port"]), h["path"])
    return spec, c, probes


@pytest.mark.parametrize("role", ["gateway", "worker"])
def test_kubernetes_probes_answer_and_sigterm_stops_within_the_grace(role, backends, tmp_path):
    redis, pg = backends
    deploy = k8s("Deployment", f"somaagent-{role}")
    spec, c, probes = deployment_probes(deploy)
    env = k8s_env(deploy)
    assert c["args"] == ["run", "--role", role]
    listen_port = int(env["SOMA_HTTP_LISTEN"].rsplit(":", 1)[1])
    assert env["SOMA_HTTP_LISTEN"].startswith("0.0.0.0:")
    assert all(port == listen_port for port, _ in probes.values()), (probes, listen_port)
    if role == "gateway":
        svc = k8s("Service", "somaagent")
        assert svc["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
        assert {p["name"]: p for p in c["ports"]}[svc["spec"]["ports"][0]["targetPort"]]["containerPort"] == listen_port
    # the data dir on a writable volume, uploads shared, the root read-only
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert env["SOMA_DATA_DIR"] in mounts and env["SOMA_DATA_DIR"] + "/blobs" in mounts
    assert c["securityContext"]["readOnlyRootFilesystem"] and spec["securityContext"]["runAsNonRoot"]
    env.update(DATABASE_URL=pg.new_database(f"deploy_{role}"), REDIS_URL=redis.url(1))
    proc, port, env = start(role, env, tmp_path)
    try:
        for kind, (_, path) in probes.items():
            assert get(port, path) == 200, f"{kind} {path}"
        grace = int(env["SOMA_SHUTDOWN_GRACE_S"])
        pre_stop = 5 if c.get("lifecycle") else 0
        assert spec["terminationGracePeriodSeconds"] >= pre_stop + grace + 2
        took = stop_within(proc, grace + 5, tmp_path / f"{role}.log")
        assert took < grace, f"an idle {role} took {took:.1f} s to stop"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_compose_and_image_healthchecks_pass_on_a_gateway_and_fail_on_a_closed_port(backends, tmp_path):
    redis, pg = backends
    svcs = soma_services()
    assert set(svcs) == {"gateway", "worker"}
    gw = svcs["gateway"]
    assert gw["command"] == ["run", "--role", "gateway"] and svcs["worker"]["command"] == ["run", "--role", "worker"]
    for name, svc in svcs.items():
        for dep in ("postgres", "redis"):
            assert svc["depends_on"][dep]["condition"] == "service_healthy", name
    redis_cmd = " ".join(compose()["services"]["redis"]["command"])
    assert "--appendonly yes" in redis_cmd  # the queue's tasks live in Redis once published
    env = compose_env(gw, {"SOMA_AUTH_ADMIN_TOKEN": "t" * 40})
    assert gw["ports"] == [f"8080:{env['SOMA_HTTP_LISTEN'].rsplit(':', 1)[1]}"]
    env.update(DATABASE_URL=pg.new_database("deploy_compose"), REDIS_URL=redis.url(2))
    proc, port, env = start("gateway", env, tmp_path)
    try:
        docker_hc = re.search(r'^HEALTHCHECK .*CMD (\[.*\])$', (DEPLOY / "Dockerfile").read_text(), re.M)
        for test in (gw["healthcheck"]["test"][1:], json.loads(docker_hc.group(1))):
            assert test[0] == "somaagent"
            cp = soma(test[1:], env)
            assert cp.returncode == 0, cp.stderr
        closed = dict(env, SOMA_HTTP_LISTEN=f"0.0.0.0:{free_port()}")
        assert soma(["health"], closed).returncode == 1
        grace = int(env["SOMA_SHUTDOWN_GRACE_S"])
        assert int(gw["stop_grace_period"].rstrip("s")) > grace
        stop_within(proc, grace + 5, tmp_path / "gateway.log")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_image_refuses_to_start_without_a_credential_and_says_which_variable(tmp_path):
    env = {"SOMA_HTTP_LISTEN": f"0.0.0.0:{free_port()}", "SOMA_DATA_DIR": str(tmp_path)}
    cp = soma(["run"], env, timeout=10)
    assert cp.returncode == 2 and "SOMA_AUTH_ADMIN_TOKEN" in cp.stderr, cp.stderr
    assert "SOMA_AUTH_ADMIN_TOKEN" in (DEPLOY / "Dockerfile").read_text()


# ---- systemd ----------------------------------------------------------------------------------

def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    unit = (DEPLOY / "systemd" / "somaagent.service").read_text()
    assert "ExecStart=/usr/local/bin/somaagent run" in unit and "ProtectSystem=strict" in unit
    assert "StateDirectory=somaagent" in unit and "Restart=on-failure" in unit
    # verify checks that ExecStart's binary exists: point it at the one under test
    (tmp_path / "somaagent.service").write_text(unit.replace("/usr/local/bin/somaagent", BIN))
    cp = subprocess.run([analyze, "verify", str(tmp_path / "somaagent.service")], capture_output=True, text=True)
    assert cp.returncode == 0 and "somaagent.service" not in cp.stderr, cp.stderr
