"""Prometheus configuration, alert rules and the Grafana dashboard, against a real Prometheus.

``promtool check config`` / ``check rules`` validate ``deploy/prometheus``. The integration
test then starts the real thing: the local Kafka-protocol broker, a detector in a thread
(metrics on a free port), a producer thread sending synthetic events with a malformed
record every second or so (so that dead-letter series move), and a Prometheus server
(Debian's binary, on 127.0.0.1, a free port) whose configuration is
``deploy/prometheus/prometheus.yml`` with two changes only: the ``stream-ae`` job scrapes
the test detector by a static target instead of Docker DNS, and the scrape and rule
evaluation intervals are 1 s. It also loads ``deploy/prometheus/alerts.yml`` unchanged.

While events flow, every PromQL expression is read from the files themselves (never a
copied list) and evaluated through ``/api/v1/query``:

* dashboard: every ``targets[].expr`` of every panel (rows included), with Grafana's
  variables replaced the way Grafana would for this scrape interval (``$__rate_interval``
  → 10s, ``$__interval`` → 2s, ``$__range`` → 1m) and each template variable by its "All"
  value (``.*``); each must return at least one sample with a finite value. Template
  variable queries (``label_values(selector, label)``) must return series carrying the label.
* alert rules: a rule's full expression is normally *empty* (nothing is wrong), so "returns
  data" is checked on its parts. The expression is split at top-level ``and``/``or``/
  ``unless``, and each operand at its top-level comparison (``>``, ``==``, ...); the left
  side (the signal the rule compares, e.g. the p99 latency or the dead-letter ratio) must
  return finite data. Every metric selector (``name{...}``) in the rule must return data
  too, which proves the names and labels match what the detector exports. The full
  expression must evaluate without error, and Prometheus's own rule manager must report
  every rule loaded and healthy (``/api/v1/rules``).

Skipped, saying so, where ``prometheus`` or ``promtool`` is not installed
(``apt-get install prometheus``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from stream_ae.kafka.kafka_python.sink import KafkaSink
from stream_ae.kafka.local_broker import free_port
from stream_ae.kafka.topics import ensure_topics
from stream_ae.model.datasets import synthetic_transactions
from stream_ae.pipeline.codec import encode_event
from stream_ae.tools.daemon_thread import DaemonThread
from tests.deploy.dashboard import assert_dashboard_has_data, assert_every_query_has_data, substitute
from tests.helpers import detector_settings, wait_for

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
JOB = "stream-ae"

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus server is not installed (apt-get install prometheus)")

# What Grafana substitutes for its built-in variables, for a 1 s scrape interval
GRAFANA_BUILTINS = {"__rate_interval": "10s", "__interval": "2s", "__range": "1m",
                    "__range_s": "60", "__interval_ms": "2000"}
MALFORMED = [b"this is not json", b"", b"[1, 2, 3]", b'{"id": "bad-1"}', b"\xff\xfe\xfa",
             b'{"id": "bad-2", "V1": "x"}']
EVENTS_PER_SECOND = 300


# -- promtool ----------------------------------------------------------------------------------
@needs_promtool
@pytest.mark.parametrize("what, path", [("config", PROMETHEUS_DIR / "prometheus.yml"), ("rules", RULES)])
def test_promtool_check(what, path):
    result = subprocess.run([PROMTOOL, "check", what, str(path)], capture_output=True, text=True,
                            timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output


# -- reading expressions out of the files ------------------------------------------------------
def _scan(expr: str):
    """Yield ``(index, char)`` of the characters at parenthesis/brace/bracket depth 0, outside strings."""
    depth, quote, i = 0, None, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            yield i, c
        i += 1


def split_set_operators(expr: str) -> list[str]:
    """Operands of the top-level ``and`` / ``or`` / ``unless`` (PromQL's lowest precedence)."""
    cuts, operands, start = [], [], 0
    for i, _ in _scan(expr):
        match = re.match(r"(and|or|unless)\b", expr[i:])
        if match and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] == "_")):
            cuts.append((i, match.end()))
    for at, length in cuts:
        operands.append(expr[start:at])
        start = at + length
    operands.append(expr[start:])
    # drop vector-matching modifiers that follow the operator: on(...), ignoring(...), group_x(...)
    modifier = re.compile(r"^\s*(on|ignoring|group_left|group_right)\s*(\([^)]*\))?")
    cleaned = []
    for operand in operands:
        while modifier.match(operand):
            operand = modifier.sub("", operand, count=1)
        cleaned.append(operand.strip())
    return cleaned


def comparison_signal(operand: str) -> str | None:
    """The left side of the operand's top-level comparison, or None when it compares nothing."""
    for i, c in _scan(operand):
        if c in "<>" or (c in "=!" and operand[i + 1:i + 2] == "="):
            return operand[:i].strip()
    return None


def metric_selectors(expr: str) -> list[str]:
    """Every ``metric{matchers}`` in the expression (the rules write each with matchers)."""
    return [m.group(0) for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*\{[^}]*\}", expr)]


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_expression_helpers():
    """The splitting used below, on the shapes the rules use."""
    expr = ('sum by (topic) (max by (topic, partition) (x{job="a"})) > 10000 and on (topic) '
            'sum by (topic) (deriv(x{job="a"}[10m])) > 0')
    parts = split_set_operators(expr)
    assert len(parts) == 2 and parts[1].startswith("sum by (topic) (deriv")
    assert comparison_signal(parts[0]) == 'sum by (topic) (max by (topic, partition) (x{job="a"}))'
    assert comparison_signal('a{x!="1", y=~"b|c"} / b{z="2"} >= 0.5') == 'a{x!="1", y=~"b|c"} / b{z="2"}'
    assert comparison_signal("absent(up{job=\"a\"})") is None
    assert metric_selectors('rate(a_total{job="x"}[5m]) / b{}') == ['a_total{job="x"}', "b{}"]
    assert substitute("rate(a{i=~\"$i\"}[$__rate_interval]) ${i:regex}", {"i": ".*", "__rate_interval": "5s"}) \
        == 'rate(a{i=~".*"}[5s]) .*'


# -- the live stack ----------------------------------------------------------------------------
class Prometheus:
    """A Prometheus server process on 127.0.0.1 with its HTTP API."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def get(self, path: str, **params: str) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}" if params else f"{self.url}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def query(self, expr: str) -> dict:
        """``/api/v1/query`` at the current time; returns ``data`` or raises with the error."""
        try:
            body = self.get("/api/v1/query", query=expr)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{expr!r}: {exc.read().decode(errors='replace')}") from None
        assert body["status"] == "success", body
        return body["data"]

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"prometheus exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Producer(threading.Thread):
    """Sends synthetic events at a steady rate, and a malformed record every ~second."""

    def __init__(self, settings, topic: str) -> None:
        super().__init__(name="test-producer", daemon=True)
        self.settings, self.topic = settings, topic
        self.dataset = synthetic_transactions(rows=6000)
        self.stopping = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        sink = KafkaSink(self.settings.kafka.connection())
        rows = np.random.default_rng(0).permutation(len(self.dataset.values))
        tick, chunk, malformed = 0.1, EVENTS_PER_SECOND // 10, 0
        try:
            started = time.monotonic()
            while not self.stopping.is_set():
                for _ in range(chunk):
                    row = int(rows[self.sent % len(rows)])
                    sink.send(self.topic, None, encode_event(
                        self.dataset.values[row], self.dataset.feature_names, False, f"ev-{self.sent}"))
                    self.sent += 1
                if self.sent % EVENTS_PER_SECOND < chunk:
                    sink.send(self.topic, b"malformed", MALFORMED[malformed % len(MALFORMED)])
                    malformed += 1
                sink.flush()
                pause = started + (self.sent / EVENTS_PER_SECOND) - time.monotonic()
                if pause > 0:
                    time.sleep(min(pause, tick))
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            sink.close()


@pytest.fixture(scope="module")
def live_prometheus(broker, synthetic_checkpoint, tmp_path_factory):
    """A Prometheus scraping a detector that events keep flowing through; yields the server."""
    if PROMETHEUS is None:
        pytest.skip("the prometheus server is not installed (apt-get install prometheus)")
    checkpoint, checkpoint_path = synthetic_checkpoint
    workdir = tmp_path_factory.mktemp("prometheus")
    suffix = f"prom-{time.monotonic_ns()}"
    names = lambda base: f"{base}-{suffix}"  # noqa: E731
    settings = detector_settings(broker, names, checkpoint_path)
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: 3, settings.topics.alerts: 1,
                                   settings.topics.dead_letter: 1, settings.topics.scores: 3})

    with DaemonThread(settings, checkpoint) as running:
        detector = running.daemon
        wait_for(lambda: detector.server is not None, 30, "the metrics server")
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(RULES)]
        job = next(j for j in config["scrape_configs"] if j["job_name"] == JOB)
        job.pop("dns_sd_configs")
        job["static_configs"] = [{"targets": [f"127.0.0.1:{detector.server.port}"]}]
        config["scrape_configs"] = [job]
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))

        prometheus = Prometheus(config_path, workdir)
        producer = Producer(settings, topic)
        try:
            wait_for(prometheus.ready, 30, "prometheus to be ready")
            producer.start()

            def flowing() -> bool:
                assert producer.error is None, producer.error
                data = prometheus.query(
                    f'count_over_time(stream_ae_events_scored_total{{job="{JOB}"}}[1m]) >= 15'
                    f' and increase(stream_ae_events_scored_total{{job="{JOB}"}}[10s]) > 0')
                return bool(data["result"])

            wait_for(flowing, 60, "15 s of scrapes with events flowing")
            assert detector.metrics.totals()["dead_lettered"] > 0
            yield prometheus
        finally:
            producer.stopping.set()
            producer.join(30)
            prometheus.stop()


@needs_prometheus
def test_prometheus_loads_every_alert_rule(live_prometheus):
    wanted = {rule["alert"] for rule in alert_rules()}
    def evaluated() -> bool:
        groups = live_prometheus.get("/api/v1/rules")["data"]["groups"]
        rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
        return wanted <= set(rules) and all(
            not rules[name].get("lastEvaluation", "0001").startswith("0001") for name in wanted)
    wait_for(evaluated, 20, "every rule to be evaluated")
    groups = live_prometheus.get("/api/v1/rules")["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    for name in wanted:
        assert rules[name]["health"] == "ok", (name, rules[name].get("lastError"))
    # the detector is up and nothing is wrong: none of the alerts fires
    assert live_prometheus.query(f'up{{job="{JOB}"}}')["result"][0]["value"][1] == "1"
    firing = [alert["labels"]["alertname"] for alert in live_prometheus.get("/api/v1/alerts")["data"]["alerts"]
              if alert["state"] == "firing"]
    assert firing == []


@needs_prometheus
def test_every_dashboard_query_returns_data(live_prometheus):
    assert_dashboard_has_data(live_prometheus.query, GRAFANA_BUILTINS)


@needs_prometheus
def test_every_alert_rule_signal_returns_data(live_prometheus):
    checks = []
    for rule in alert_rules():
        name, expr = rule["alert"], " ".join(rule["expr"].split())
        live_prometheus.query(expr)  # the whole rule evaluates without error
        selectors = metric_selectors(expr)
        assert selectors, f"{name}: write every metric with a label matcher, e.g. {{job=\"{JOB}\"}}"
        checks += [(f"{name} selector", selector) for selector in selectors]
        checks += [(f"{name} signal", signal) for operand in split_set_operators(expr)
                   if (signal := comparison_signal(operand)) is not None]
    assert_every_query_has_data(live_prometheus.query, checks, "alert rule parts")
