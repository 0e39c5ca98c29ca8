"""deploy/monitoring/ (Prometheus rules, their promtool tests, the Grafana dashboard) checked
against promtool and the real binary (`make deploy-check`, part of `make test`).

- `promtool check rules` accepts alerts.yaml and `promtool test rules` passes alerts_test.yaml,
  which has for every alert a case where it fires and one where it must not;
- every alert has a severity, a summary, a description and a runbook link to a real section of
  docs/operations.md;
- every metric name in alerts.yaml and in every dashboard panel's expressions, and every label
  name they match on, group by or show, is in the /metrics of real servers: a single SQLite node
  (fake LLM, fake SomaBrain, OTLP collector unreachable, a limit hit) and a gateway plus a
  worker over Redis and PostgreSQL with the OPA engine (fake OPA); only `up`, which Prometheus
  itself writes, and the rules' own recorded names are allowed besides;
- the dashboard is JSON whose panels all have a datasource (${DS_PROMETHEUS}) and a target.

DESIGN: PromQL is read by a small tokenizer (names, strings, [ranges], {matchers}, by/on lists),
not a full parser: enough to find selectors and label names in the expressions we write.
`check_exprs` is also run on a misspelled copy to show the check catches a wrong name."""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MON = REPO / "deploy" / "monitoring"
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from e2e_util import PYTHON, FakeLLM, free_port, parse_metrics, start_server  # noqa: E402
from opa_fake import FakeOPA  # noqa: E402
from servers import PostgresServer, RedisServer  # noqa: E402

# written by Prometheus, not by somaagent: name -> label names
SYNTHETIC = {"up": {"job", "instance"}}
TARGET_LABELS = {"job", "instance"}  # added to every scraped series by Prometheus
KEYWORDS_WITH_LIST = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan",  # and the aggregations (sum by (x) (...))
            "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
            "quantile"}
TOKEN = re.compile(r'\s+|"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`|\[[^\]]*\]|\$\{?\w+\}?'
                   r'|[A-Za-z_:][A-Za-z0-9_:]*|[0-9][0-9A-Za-z_.]*|=~|!~|!=|==|>=|<=|.', re.S)


def tokens(expr):
    return [t for t in TOKEN.findall(expr) if not t.isspace()]


def parse_promql(expr):
    """([(metric, [matcher label names])], [grouping label names]) of a PromQL expression."""
    toks, selectors, grouping, i = tokens(expr), [], [], 0
    while i < len(toks):
        t, nxt = toks[i], toks[i + 1] if i + 1 < len(toks) else ""
        if t in KEYWORDS_WITH_LIST and nxt == "(":
            j = toks.index(")", i)
            grouping += [x for x in toks[i + 2:j] if x != ","]
            i = j + 1
            continue
        if not re.match(r"[A-Za-z_:]", t) or t.lower() in KEYWORDS or nxt == "(":
            i += 1  # punctuation, a number, a string, a range, a keyword or a function
            continue
        labels = []
        i += 1
        if nxt == "{":
            j = toks.index("}", i)
            labels = [x for k, x in enumerate(toks[i + 1:j]) if k % 4 == 0]  # name op "value" ,
            i = j + 1
        selectors.append((t, labels))
    return selectors, grouping


def recorded_labels(rules):
    """Recording rule name -> the labels its result keeps (the by() list, else its inputs')."""
    out = {}
    for r in rules:
        if "record" in r:
            sels, grouping = parse_promql(r["expr"])
            out[r["record"]] = set(grouping) or {lbl for _, ls in sels for lbl in ls} | TARGET_LABELS
    return out


def check_exprs(exprs, exposed, recorded, legends=()):
    """Problems (strings) with the metric and label names of exprs: [(where, expr)]."""
    known = {**SYNTHETIC, **{n: set(ls) | TARGET_LABELS for n, ls in exposed.items()}, **recorded}
    problems = []
    for where, expr in exprs:
        sels, grouping = parse_promql(expr)
        assert sels, f"{where}: no metric in {expr!r}"
        available = set(TARGET_LABELS)
        for name, labels in sels:
            if name not in known:
                problems.append(f"{where}: metric {name} is not in /metrics")
                continue
            available |= known[name]
            problems += [f"{where}: {name} has no label {lbl}" for lbl in labels if lbl not in known[name]]
        missing = set(grouping) - available
        for lf in legends:
            missing |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", lf)) - available - set(grouping)
        problems += [f"{where}: label {lbl} is on none of its metrics" for lbl in sorted(missing)]
    return problems


# ---- the files ----------------------------------------------------------------------------------

def rules():
    return [r for g in yaml.safe_load((MON / "alerts.yaml").read_text())["groups"] for r in g["rules"]]


def dashboard():
    return json.loads((MON / "grafana-dashboard.json").read_text())


def panels(d):
    for p in d["panels"]:
        if p["type"] == "row":
            yield from p.get("panels", [])
        else:
            yield p


def dashboard_exprs(d):
    """[(where, expr, legends)] of every panel target and of the template variables' metrics."""
    out = []
    for p in panels(d):
        for t in p["targets"]:
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"], [t.get("legendFormat", "")]))
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.*), *(\w+)\)", v["query"]["query"])
            assert m, v
            out.append((f"variable {v['name']}", f"max by ({m.group(2)}) ({m.group(1)})", []))
    return out


def promtool():
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: install Debian's prometheus package (scripts/deps.sh)"
    return tool


def test_promtool_checks_the_rules():
    cp = subprocess.run([promtool(), "check", "rules", "alerts.yaml"], cwd=MON, capture_output=True, text=True)
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_promtool_unit_tests_pass_and_cover_every_alert_both_ways():
    cp = subprocess.run([promtool(), "test", "rules", "alerts_test.yaml"], cwd=MON, capture_output=True, text=True)
    assert cp.returncode == 0 and "SUCCESS" in cp.stdout, cp.stdout + cp.stderr
    fires, quiet = set(), set()
    for t in yaml.safe_load((MON / "alerts_test.yaml").read_text())["tests"]:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert len(alerts) >= 15
    assert alerts <= fires, f"no test where these fire: {alerts - fires}"
    assert alerts <= quiet, f"no test where these must not fire: {alerts - quiet}"


def github_anchor(heading):
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_says_how_bad_and_what_to_do():
    doc = (REPO / "docs" / "operations.md").read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.*)$", doc, re.M)}
    for r in rules():
        if "alert" not in r:
            continue
        name = r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning", "info"), name
        assert "for" in r, f"{name}: no for:"
        ann = r["annotations"]
        assert ann["summary"] and len(ann["description"]) > 60, name
        links = re.findall(r"docs/operations\.md#([a-z0-9_-]+)", ann["description"] + " " + ann["runbook_url"])
        assert links, f"{name}: no link to docs/operations.md"
        assert set(links) <= anchors, f"{name}: no such section in docs/operations.md: {set(links) - anchors}"


def test_dashboard_parses_and_every_panel_has_a_datasource_and_a_target():
    d = dashboard()
    assert d["__inputs"][0]["name"] == "DS_PROMETHEUS"
    assert any(v["name"] == "DS_PROMETHEUS" and v["type"] == "datasource" for v in d["templating"]["list"])
    ps = list(panels(d))
    assert len(ps) >= 20
    for p in ps:
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], f"panel {p['title']!r} has no target"
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
    assert len({p["id"] for p in d["panels"]}) == len(d["panels"])


def test_the_servicemonitor_scrapes_gateways_and_workers_under_job_somaagent():
    docs = {d["kind"]: d for d in yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "servicemonitor.yaml").read_text())}
    svc, mon = docs["Service"], docs["ServiceMonitor"]
    assert mon["apiVersion"] == "monitoring.coreos.com/v1"
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert re.fullmatch(r"somaagent.*", svc["metadata"]["labels"][mon["spec"]["jobLabel"]])  # the rules' job
    port = {p["name"]: p for p in svc["spec"]["ports"]}[mon["spec"]["endpoints"][0]["port"]]
    assert mon["spec"]["endpoints"][0]["path"] == "/metrics"
    for role in ("gateway", "worker"):
        deploy = next(d for f in (REPO / "deploy" / "kubernetes").glob(f"{role}.yaml") for d in yaml.safe_load_all(f.read_text())
                      if d and d["kind"] == "Deployment")
        pod = deploy["spec"]["template"]
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), role
        assert port["targetPort"] in {p["name"] for p in pod["spec"]["containers"][0]["ports"]}, role
    kust = yaml.safe_load((REPO / "deploy" / "kubernetes" / "kustomization.yaml").read_text())
    assert "servicemonitor.yaml" not in kust["resources"]  # needs the operator's CRDs


# ---- the names, against real servers -----------------------------------------------------------

class FakeSomaBrain:
    """tests/fakes/somabrain/server.py on a free loopback port (it answers every call: ok)."""

    def __init__(self, log_dir):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(log_dir / "fake-somabrain.log", "wb")
        self.proc = subprocess.Popen([PYTHON, str(REPO / "tests" / "fakes" / "somabrain" / "server.py"), "--port",
                                      self.url.rsplit(":", 1)[1]], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._up():
            assert self.proc.poll() is None and time.monotonic() < deadline, "the fake SomaBrain did not start"
            time.sleep(0.05)

    def _up(self):
        try:
            return httpx.get(self.url + "/_stats", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def sets(self):
        return ["memory.driver=somabrain", f"memory.somabrain_url={self.url}"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=5)
        self.log.close()


def scrape(srv, into):
    _, samples = parse_metrics(httpx.get(srv.url + "/metrics", timeout=5).text)
    for name, labels, _ in samples:
        into.setdefault(name, set()).update(labels)


def wait_metric(srv, name, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        got = {}
        scrape(srv, got)
        if name in got or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def exercise(url):
    """What makes the lazily created series appear: a chat turn, a memory write, a decision."""
    r = httpx.post(url + "/v1/session/message", json={"message": "hello"}, timeout=10)
    assert r.status_code == 200, r.text
    r = httpx.post(url + "/v1/memory/remember", json={"value": {"content": "the sky is blue"}}, timeout=10)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def exposed(tmp_path_factory):
    """Metric name -> label names, from the /metrics of a single node and a gateway + worker."""
    got = {}
    tmp = tmp_path_factory.mktemp("mon")
    llm, brain = FakeLLM(tmp), FakeSomaBrain(tmp)
    nowhere = f"http://127.0.0.1:{free_port()}"  # the OTLP collector: down
    servers = []
    for d in ("single", "gateway", "worker"):
        (tmp / d).mkdir()
    try:
        beat = tmp / "schedules.json"  # beat runs (soma_beat_leader), its task due in an hour
        beat.write_text(json.dumps([{"name": "hourly", "task": "soma.echo", "every_s": 3600}]))
        single = start_server(tmp / "single", [*llm.sets(), *brain.sets(), "limits.llm_tokens_per_day=1",
                                                f"otel.endpoint={nowhere}", f"beat.schedule_file={beat}"],
                              timeout=30)
        servers.append(single)
        exercise(single.url)
        for name in ("soma_tasks_total", "soma_outbox_delivered_total", "soma_queue_depth", "soma_beat_leader"):
            wait_metric(single, name)
        # the reply used the day's budget of 1 token: the next call is refused (soma_limits_*)
        msgs = {"messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(single.url + "/v1/llm/invoke", json=msgs, timeout=10).status_code == 429
        scrape(single, got)
        with RedisServer() as redis, PostgresServer() as pg:
            opa = FakeOPA(tmp)
            try:
                opa.control(table=[{"input": {}, "result": True}])  # allow everything
                shared = [*llm.sets(), f"store.url={pg.new_database('monitoring')}", f"redis.url={redis.url(0)}",
                          "queue.driver=redis", "policy.engine=opa", f"policy.opa_url={opa.url}"]
                for role in ("gateway", "worker"):
                    servers.append(start_server(tmp / role, shared, role=role, timeout=30))
                exercise(servers[1].url)
                wait_metric(servers[2], "soma_tasks_total")
                for name in ("soma_queue_depth", "soma_redis_aof_enabled"):  # scrape-time figures, health poll
                    wait_metric(servers[1], name)
                for srv in servers[1:]:
                    scrape(srv, got)
            finally:
                for srv in servers[1:]:
                    srv.stop()
                opa.stop()
    finally:
        for srv in servers[:1]:
            srv.stop()
        llm.stop()
        brain.stop()
    return got


def test_every_name_the_alerts_use_is_exposed(exposed):
    rs = rules()
    exprs = [(r.get("alert") or r["record"], r["expr"]) for r in rs]
    problems = check_exprs(exprs, exposed, recorded_labels(rs))
    assert not problems, "\n".join(problems)


def test_every_name_the_dashboard_uses_is_exposed(exposed):
    problems = []
    for where, expr, legends in dashboard_exprs(dashboard()):
        problems += check_exprs([(where, expr)], exposed, {}, legends)
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_misspelled_metric_or_label(exposed):
    rs = rules()
    expr = next(r["expr"] for r in rs if r.get("alert") == "SomaAgentOpaCircuitOpen")
    assert not check_exprs([("ok", expr)], exposed, {})
    bad = [("metric", expr.replace("soma_policy_opa_circuit_open", "soma_policy_opa_circuit_opened")),
           ("label", 'soma_service_up{servcie="store"} == 0'),
           ("by", "sum by (rout) (rate(soma_http_requests_total[5m]))")]
    problems = check_exprs(bad, exposed, {})
    assert len(problems) == 3, problems
    assert "soma_policy_opa_circuit_opened is not in /metrics" in problems[0]
