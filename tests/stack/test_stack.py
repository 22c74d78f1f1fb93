"""The docker-compose stack, started for real under a container engine.

The stack comes up with the README's command, ``docker compose up -d`` (with
``--env-file deploy/offline-images.env`` where ``deploy/build-images.sh`` wrote one: the
images built without a registry), as project ``stream-ae-stack-test`` so that a user's own
stack and its volumes are left alone. Every service but Grafana starts (Grafana where its
image is on the machine). The tests then check what a user relies on:

* start-up order and health, each milestone timed: Kafka healthy, the topics created, the
  trainer done, the detector healthy, the replayer started, Prometheus healthy;
* the main job: one pass of the replayer (``STREAM_AE_REPLAY_LOOPS=1``) over the card
  subset's held-out rows plus a few malformed records produced from the host; every event
  in is scored or dead-lettered (none lost, duplicates counted), alerts reach the alerts
  topic, and the streamed scores (``STREAM_AE_SCORES_TOPIC``) give AUC-ROC >= 0.95 against
  the replayed ``label`` headers;
* a host folder as the model store, for a non-root container user (``STREAM_AE_USER``);
* Prometheus scrapes every detector replica (``up == 1``) by DNS, and its counters agree
  with the topics;
* ``--scale detector=3``: three replicas, each scraped, share the input partitions in one
  consumer group; while a replay pass flows through them every query of the Grafana
  dashboard returns data from the stack's Prometheus, every alert rule evaluates, none fires;
* faults on the running stack: a replica SIGKILLed mid-pass, and the Kafka container
  restarted mid-pass; every event is scored at least once (duplicates counted) and the stack
  recovers by itself (the replica restarts, a later pass is scored whole);
* ``down`` then ``up`` keeps the trained checkpoint (the trainer skips) and the thresholds
  (the detector restores every partition's state).

The tests run in this order on one stack, each starting from where the last left it.
The broker is read from the host at ``localhost:29092`` (the stack's HOST listener) and
Prometheus at ``127.0.0.1:9090``, the ports ``docker-compose.yml`` publishes. Skipped, saying
why, where there is no ``docker`` CLI with ``compose`` or no engine answers
(``bash scripts/container-engine.sh`` sets one up on Debian); failed instead with
``STREAM_AE_REQUIRE_STACK=1``, as CI runs them. Where ``../shared/data`` is
absent the stack trains on and replays synthetic transactions, as it does for a user with no
dataset. Logs of every service are printed when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from sklearn.metrics import roc_auc_score

from stream_ae.kafka.options import Connection
from stream_ae.kafka.topics import read_topic
from stream_ae.pipeline.alerts import REASON_HEADER, SOURCE_HEADER, record_key
from stream_ae.tools.replay import LABEL_HEADER
from tests.deploy.dashboard import assert_dashboard_has_data
from tests.helpers import produce_to, wait_for

REPO = Path(__file__).resolve().parents[2]
PROJECT = "stream-ae-stack-test"
ENV_FILE = REPO / "deploy" / "offline-images.env"
DATA_DIR = REPO.parent / "shared" / "data"   # docker-compose.yml's default STREAM_AE_DATA_DIR
TRAIN_FILE = "creditcard/creditcard_subset.parquet"
HOST_KAFKA = Connection("localhost:29092")
PROMETHEUS = "http://127.0.0.1:9090"
INPUT, ALERTS, DEAD_LETTER, SCORES = "events", "alerts", "events-dead-letter", "scores"
GROUP = "stream-ae"   # consumer.group_id in deploy/config.yaml
MALFORMED = [b"not json", b"[1, 2, 3]", b'{"id": "bad-missing"}', b""] * 3
"""Records the detector must dead-letter (invalid_json, not_an_object, missing_field, empty)."""

MILESTONES = {
    "kafka healthy": ("kafka", lambda c: c["Health"] == "healthy"),
    "topics created": ("topics", lambda c: c["State"] == "exited" and c["ExitCode"] == 0),
    "trainer done": ("trainer", lambda c: c["State"] == "exited" and c["ExitCode"] == 0),
    "detector healthy": ("detector", lambda c: c["Health"] == "healthy"),
    "replayer started": ("replayer", lambda c: c["State"] == "running" or (c["State"] == "exited"
                                                                           and c["ExitCode"] == 0)),
    "prometheus healthy": ("prometheus", lambda c: c["Health"] == "healthy"),
}


def _poll(condition: Callable[[], object], timeout_s: float, what: str, every_s: float = 1.0) -> None:
    """:func:`~tests.helpers.wait_for` at a pace that leaves the stack's containers the CPU."""
    def paced() -> bool:
        if condition():
            return True
        time.sleep(every_s)
        return False

    wait_for(paced, timeout_s, what)


def _engine_fault() -> str | None:
    """Why the stack cannot be started here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI (install Docker, or run scripts/container-engine.sh for podman)"
    for command, what in ((["docker", "compose", "version"], "docker compose"), (["docker", "info"], "an engine")):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return f"{' '.join(command)} did not answer in 30 s"
        if done.returncode != 0:
            return (f"no {what} ({' '.join(command)}: {(done.stderr or done.stdout).strip()[:200]}); "
                    "bash scripts/container-engine.sh, then export DOCKER_HOST=unix:///run/podman/podman.sock")
    return None


_FAULT = _engine_fault()
REQUIRED = os.environ.get("STREAM_AE_REQUIRE_STACK") == "1"
"""CI sets STREAM_AE_REQUIRE_STACK=1: there a missing engine fails the tests instead of skipping them."""
pytestmark = pytest.mark.skipif(_FAULT is not None and not REQUIRED, reason=f"no container engine: {_FAULT}")


@dataclass
class Stack:
    """The compose project under test: its environment and each milestone's time (s from ``up``)."""

    env: dict[str, str]
    services: list[str]
    milestones: dict[str, float] = field(default_factory=dict)
    dataset: str = TRAIN_FILE

    @staticmethod
    def command(*args: str) -> list[str]:
        """The ``docker compose`` command line on this project, as the README runs it."""
        env_file = ["--env-file", str(ENV_FILE)] if ENV_FILE.is_file() else []
        return ["docker", "compose", "--project-name", PROJECT, "--file", str(REPO / "docker-compose.yml"),
                *env_file, *args]

    def compose(self, *args: str, timeout_s: float = 600, check: bool = True,
                **env: str) -> subprocess.CompletedProcess:
        """Run :meth:`command` (``env``: variables to add)."""
        done = subprocess.run(self.command(*args), cwd=REPO, env=self.env | env, capture_output=True, text=True,
                              timeout=timeout_s)
        if check and done.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} exited {done.returncode}: {done.stderr[-3000:]}")
        return done

    def containers(self) -> list[dict]:
        """``docker compose ps -a`` as dicts (Service, State, Health, ExitCode, ...)."""
        text = self.compose("ps", "--all", "--format", "json").stdout.strip()
        if text.startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def of(self, service: str) -> list[dict]:
        """The containers of one service."""
        return [c for c in self.containers() if c["Service"] == service]

    def logs(self, tail: int = 60) -> str:
        """The last lines each service logged."""
        return self.compose("logs", "--no-color", "--tail", str(tail), check=False).stdout


def _grafana_image_present(env: dict[str, str]) -> bool:
    done = subprocess.run(["docker", "image", "inspect", "grafana/grafana:11.6.0"], capture_output=True, env=env)
    return done.returncode == 0


@pytest.fixture(scope="module")
def stack():
    """The stack, up; torn down with its volumes at the end."""
    if _FAULT is not None:
        pytest.fail(f"STREAM_AE_REQUIRE_STACK=1 but there is no container engine: {_FAULT}")
    env = dict(os.environ, STREAM_AE_REPLAY_LOOPS="1", STREAM_AE_SCORES_TOPIC=SCORES)
    dataset = TRAIN_FILE
    if not (DATA_DIR / TRAIN_FILE).is_file():
        empty = REPO / ".pytest_cache" / "no-data"
        empty.mkdir(parents=True, exist_ok=True)
        env["STREAM_AE_DATA_DIR"] = str(empty)
        dataset = "synthetic (no ../shared/data)"
    probe = Stack(env, [])
    names = probe.compose("config", "--services").stdout.split()
    services = [name for name in names if name != "grafana" or _grafana_image_present(env)]
    running = Stack(env, services, dataset=dataset)
    running.compose("down", "--volumes", "--remove-orphans", check=False)
    start = time.monotonic()
    up = subprocess.Popen(Stack.command("up", "--detach", *services), cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while len(running.milestones) < len(MILESTONES) and time.monotonic() - start < 600:
            for container in running.containers():
                for name, (service, reached) in MILESTONES.items():
                    if name not in running.milestones and container["Service"] == service and reached(container):
                        running.milestones[name] = time.monotonic() - start
            if up.poll() is not None and up.returncode != 0:
                break
            time.sleep(0.5)
        output, _ = up.communicate(timeout=600)
        assert up.returncode == 0, f"docker compose up exited {up.returncode}:\n{output[-3000:]}\n{running.logs()}"
        print(f"\nstack: up in {time.monotonic() - start:.0f} s; " +
              ", ".join(f"{name} at {seconds:.0f} s" for name, seconds in running.milestones.items()))
        yield running
    finally:
        if up.poll() is None:
            up.kill()
        running.compose("down", "--volumes", "--remove-orphans", timeout_s=300, check=False)


@pytest.fixture(autouse=True)
def _logs_on_failure(request, stack):
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(stack.logs())


def test_services_start_in_order_and_become_healthy(stack):
    assert set(stack.milestones) == set(MILESTONES), f"reached only {stack.milestones}:\n{stack.logs()}"
    at = stack.milestones
    assert at["kafka healthy"] <= at["topics created"] <= at["detector healthy"]
    assert at["trainer done"] <= at["detector healthy"] <= at["replayer started"]
    trainer = stack.compose("logs", "--no-color", "trainer").stdout
    assert "trainer: wrote /models/model.pt" in trainer
    assert ("synthetic transactions" in trainer) == stack.dataset.startswith("synthetic")


def _read(topic: str) -> list:
    return read_topic(HOST_KAFKA, topic, timeout_s=60)


def _end_offsets() -> dict[int, int]:
    """The input topic's next offset per partition: where the next events will land."""
    consumer = KafkaConsumer(**HOST_KAFKA.kafka_python(), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(INPUT, p) for p in sorted(consumer.partitions_for_topic(INPUT) or ())]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


@dataclass
class Accounting:
    """What became of the events from some offsets on: each is scored or dead-lettered at least once."""

    events: int
    scored: int
    dead_lettered: int
    lost: int
    duplicates: int
    score_of: dict[str, dict]
    labels: dict[str, int]
    reasons: set[str]

    def line(self) -> str:
        return (f"{self.events:,} events in, {self.scored:,} scored, {self.dead_lettered} dead-lettered, "
                f"{self.lost} lost, {self.duplicates} duplicates")


def _account(since: dict[int, int]) -> Accounting:
    """Read the input, scores and dead-letter topics back; count the events at or after ``since``
    (next offset per partition, as :func:`_end_offsets` gave it before they were produced)."""
    def new(partition: int, offset: int) -> bool:
        return offset >= since.get(partition, 0)

    events = [r for r in _read(INPUT) if new(r.partition, r.offset)]
    keys = {record_key(INPUT, r.partition, r.offset) for r in events}
    scores = [orjson.loads(r.value) for r in _read(SCORES)]
    scored = Counter(score["key"] for score in scores if score["key"] in keys)
    dead = [r for r in _read(DEAD_LETTER) if dict(r.headers)[SOURCE_HEADER].decode() in keys]
    dead_keys = Counter(dict(r.headers)[SOURCE_HEADER].decode() for r in dead)
    assert not set(scored) & set(dead_keys), "an event both scored and dead-lettered"
    return Accounting(
        events=len(keys), scored=len(scored), dead_lettered=len(dead_keys),
        lost=len(keys - set(scored) - set(dead_keys)),
        duplicates=sum(scored.values()) - len(scored) + sum(dead_keys.values()) - len(dead_keys),
        score_of={score["key"]: score for score in scores if score["key"] in keys},
        labels={record_key(INPUT, r.partition, r.offset): int(dict(r.headers)[LABEL_HEADER])
                for r in events if LABEL_HEADER in dict(r.headers)},
        reasons={dict(r.headers)[REASON_HEADER].decode() for r in dead})


def _all_handled(since: dict[int, int], timeout_s: float = 300) -> Accounting:
    """Wait until every event from ``since`` on is scored or dead-lettered; the accounting."""
    last: list[Accounting] = []

    def handled() -> bool:
        last[:] = [_account(since)]
        return last[0].lost == 0

    _poll(handled, timeout_s, "every event scored or dead-lettered")
    return last[0]


def _replay_pass(stack: Stack, rate: int) -> None:
    """One more pass of the stack's replayer over its rows, at ``rate`` events/s (the service,
    recreated; it runs in the background)."""
    stack.compose("up", "--detach", "--no-deps", "--force-recreate", "replayer", STREAM_AE_REPLAY_RATE=str(rate))
    _poll(lambda: any(c["State"] == "running" for c in stack.of("replayer")), 60, "the replayer to start")


def _replayer_done(stack: Stack, timeout_s: float = 300) -> None:
    """Wait until the replayer's pass has ended well (exit 0; a failed pass starts again, by the
    service's restart policy)."""
    _poll(lambda: all(c["State"] == "exited" and c["ExitCode"] == 0 for c in stack.of("replayer")), timeout_s,
          "the replayer's pass to end with exit code 0")


def test_every_replayed_event_is_scored_or_dead_lettered(stack):
    produce_to(HOST_KAFKA, INPUT, MALFORMED)
    _replayer_done(stack)
    tally = _all_handled({})
    print(f"\nstack main job ({stack.dataset}): {tally.line()}")
    assert tally.dead_lettered == len(MALFORMED) and tally.scored == tally.events - len(MALFORMED)
    assert tally.reasons == {"invalid_json", "not_an_object", "missing_field", "empty"}

    replayed = stack.compose("logs", "--no-color", "replayer").stdout
    assert f"replayed {len(tally.labels):,} events" in replayed
    keys = sorted(tally.labels)
    auc = roc_auc_score([tally.labels[key] for key in keys], [tally.score_of[key]["score"] for key in keys])
    alerts = [orjson.loads(record.value) for record in _read(ALERTS)]
    flagged = {key for key, score in tally.score_of.items() if score["anomaly"]}
    print(f"stack: AUC-ROC {auc:.4f} over {len(keys):,} labelled events ({sum(tally.labels.values())} anomalies); "
          f"{len(alerts):,} alerts, {len(flagged):,} flagged")
    assert auc >= 0.95
    assert alerts and {alert["key"] for alert in alerts} == flagged


def _run_once(stack: Stack, service: str, **env: str) -> subprocess.CompletedProcess:
    """``docker compose run --no-deps SERVICE`` with ``env`` added, then the container removed.
    Not ``run --rm``: podman 4.3's Docker API answers 0 for an auto-removed container's exit code."""
    name = f"{PROJECT}-{service}-once-{time.monotonic_ns()}"
    try:
        return stack.compose("run", "--no-deps", "--name", name, service, check=False, **env)
    finally:
        subprocess.run(["docker", "rm", "--force", name], env=stack.env, capture_output=True, timeout=60)


def test_a_host_folder_model_store_for_a_non_root_user(stack, tmp_path):
    """STREAM_AE_MODELS as a host folder: the trainer, running as the folder's owner
    (STREAM_AE_USER), writes the checkpoint there; as the image's uid it says what to set."""
    if os.geteuid() != 0:
        pytest.skip("giving the folder to another uid needs root")
    owner = 23456
    store = tmp_path / "models"
    store.mkdir()
    os.chown(store, owner, owner)
    refused = _run_once(stack, "trainer", STREAM_AE_MODELS=str(store))
    assert refused.returncode != 0
    assert "is not writable by uid 10001: set STREAM_AE_USER" in refused.stdout + refused.stderr
    written = _run_once(stack, "trainer", STREAM_AE_MODELS=str(store), STREAM_AE_USER=f"{owner}:{owner}")
    assert written.returncode == 0, written.stdout[-2000:] + written.stderr[-2000:]
    checkpoint = store / "model.pt"
    assert checkpoint.stat().st_size > 0 and checkpoint.stat().st_uid == owner
    assert not (store / "model.partial.pt").exists()


def _prometheus(query: str) -> dict:
    """An instant query against the stack's Prometheus; the API's ``data``."""
    url = f"{PROMETHEUS}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]


def _healthy_detectors(stack: Stack) -> list[dict]:
    return [c for c in stack.of("detector") if c["State"] == "running" and c["Health"] == "healthy"]


def _group_members() -> dict[str, list[int]]:
    """The detector's consumer group as Kafka sees it once stable: each member's address and the
    input partitions assigned to it (empty while the group rebalances)."""
    admin = KafkaAdminClient(**HOST_KAFKA.kafka_python())
    try:
        group = admin.describe_groups([GROUP])[GROUP]
    finally:
        admin.close()
    if group["group_state"] != "Stable":
        return {}
    owned = {}
    for member in group["members"]:
        assignment = member["member_assignment"]["assigned_partitions"]
        owned[member["client_host"].lstrip("/")] = sorted(
            p for assigned in assignment if assigned["topic"] == INPUT for p in assigned["partitions"])
    return owned


def _scraped_replicas() -> set[str]:
    """The addresses of the detector replicas Prometheus scrapes successfully (``up == 1``)."""
    return {series["metric"]["instance"].rsplit(":", 1)[0]
            for series in _prometheus('up{job="stream-ae"} == 1')["result"]}


def test_prometheus_scrapes_the_detector_and_agrees_with_the_topics(stack):
    def one_replica_up() -> bool:
        return (len(_prometheus('up{job="stream-ae"} == 1')["result"]) == 1
                and not _prometheus('up{job="stream-ae"} == 0')["result"])

    _poll(one_replica_up, 90, "up == 1 for the one detector replica, and no other target")
    scored = len(_read(SCORES))

    def counters_agree() -> bool:
        total = _prometheus('sum(stream_ae_events_scored_total{job="stream-ae"})')["result"]
        return bool(total) and float(total[0]["value"][1]) == scored

    _poll(counters_agree, 60, f"stream_ae_events_scored_total to reach the {scored} score records")


def test_scaled_out_replicas_share_the_input_partitions(stack):
    stack.compose("up", "--detach", "--no-deps", "--scale", "detector=3", "detector")
    _poll(lambda: len(_healthy_detectors(stack)) == 3, 240, "three healthy detector replicas")
    partitions = int(stack.env.get("STREAM_AE_INPUT_PARTITIONS", "6"))
    seen: list[tuple[dict, set]] = []

    def shared() -> bool:
        members, scraped = _group_members(), _scraped_replicas()
        seen[:] = [(members, scraped)]
        return (len(members) == 3 and all(members.values()) and set(members) == scraped
                and sorted(p for owned in members.values() for p in owned) == list(range(partitions)))

    try:
        _poll(shared, 120, f"three replicas sharing the {partitions} input partitions, each scraped")
    except pytest.fail.Exception:
        pytest.fail(f"after 120 s, group {GROUP} is {seen[-1][0] if seen else '?'} (address: partitions) and "
                    f"Prometheus has up == 1 for {seen[-1][1] if seen else '?'}")
    print(f"\nstack: partitions per replica {sorted(seen[-1][0].values())}, each replica scraped")


def test_the_dashboard_and_alert_rules_on_live_traffic(stack):
    """While a replay pass flows through the three replicas, every dashboard query returns data
    from the stack's Prometheus, every alert rule evaluates, and none fires."""
    since = _end_offsets()
    _replay_pass(stack, rate=200)

    def every_replica_scoring() -> bool:
        moving = _prometheus('increase(stream_ae_events_scored_total{job="stream-ae"}[20s]) > 0')["result"]
        return len(moving) == 3

    _poll(every_replica_scoring, 120, "events scored by every replica in the last 20 s")
    # what Grafana substitutes at the stack's 5 s scrape interval ($__rate_interval = 4 x scrape)
    assert_dashboard_has_data(_prometheus, {"__rate_interval": "20s", "__interval": "5s", "__range": "5m",
                                            "__range_s": "300", "__interval_ms": "5000"})
    with urllib.request.urlopen(f"{PROMETHEUS}/api/v1/rules", timeout=10) as answer:
        rules = [rule for group in json.load(answer)["data"]["groups"] for rule in group["rules"]]
    assert rules and all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]
    with urllib.request.urlopen(f"{PROMETHEUS}/api/v1/alerts", timeout=10) as answer:
        alerts = json.load(answer)["data"]["alerts"]
    assert [a["labels"]["alertname"] for a in alerts if a["state"] == "firing"] == []
    _replayer_done(stack)
    print(f"\nstack: {len(rules)} alert rules evaluated, none firing; replay pass over three replicas: "
          f"{_all_handled(since).line()}")


def test_a_replica_killed_mid_stream_loses_nothing(stack):
    since = _end_offsets()
    _replay_pass(stack, rate=300)
    _poll(lambda: sum(_end_offsets().values()) - sum(since.values()) > 1500, 60, "a quarter of the pass")
    victim = _healthy_detectors(stack)[0]
    # SIGKILL to the replica's process from the host, as the kernel's OOM killer or a crash ends
    # it: `docker kill` would count as a manual stop, which a restart policy leaves stopped
    pid = subprocess.run(["docker", "inspect", "--format", "{{.State.Pid}}", victim["ID"]], check=True,
                         env=stack.env, capture_output=True, text=True, timeout=60).stdout.strip()
    os.kill(int(pid), signal.SIGKILL)
    _replayer_done(stack)
    tally = _all_handled(since)
    _poll(lambda: len(_healthy_detectors(stack)) == 3, 180, "the killed replica back (restart: unless-stopped)")
    restarts = subprocess.run(["docker", "inspect", "--format", "{{.RestartCount}}", victim["ID"]], check=True,
                              env=stack.env, capture_output=True, text=True, timeout=60).stdout.strip()
    assert int(restarts) >= 1, "the killed replica was replaced, not restarted"
    print(f"\nstack: SIGKILL of {victim['Name']} mid-pass (restarted by its policy, {restarts} restart): "
          f"{tally.line()}")
    assert tally.lost == 0 and tally.scored == tally.events


def test_a_kafka_restart_loses_nothing(stack):
    since = _end_offsets()
    _replay_pass(stack, rate=300)
    _poll(lambda: sum(_end_offsets().values()) - sum(since.values()) > 1500, 60, "a quarter of the pass")
    started = time.monotonic()
    stack.compose("restart", "kafka", timeout_s=300)
    _poll(lambda: stack.of("kafka")[0]["Health"] == "healthy", 180, "Kafka healthy again")
    healthy_after = time.monotonic() - started
    _replayer_done(stack)
    restarts = subprocess.run(["docker", "inspect", "--format", "{{.RestartCount}}", stack.of("replayer")[0]["ID"]],
                              check=True, env=stack.env, capture_output=True, text=True, timeout=60).stdout.strip()
    tally = _all_handled(since)
    print(f"\nstack: Kafka restarted mid-pass (healthy again in {healthy_after:.0f} s; the replayer restarted "
          f"{restarts} times): {tally.line()}")
    assert tally.lost == 0 and tally.scored == tally.events
    # the stack goes on by itself: a new pass after the restart is scored whole
    since = _end_offsets()
    _replay_pass(stack, rate=1000)
    _replayer_done(stack)
    after = _all_handled(since)
    print(f"stack: the pass after the restart: {after.line()}")
    assert after.lost == 0 and after.events == len(after.labels) > 0
    _poll(lambda: len(_healthy_detectors(stack)) == 3, 120, "three healthy replicas after the restart")


def test_down_then_up_keeps_the_checkpoint_and_the_thresholds(stack):
    sha = {s["metric"]["checkpoint_sha256"] for s in _prometheus("stream_ae_model_info")["result"]}
    stack.compose("down", timeout_s=300)
    assert stack.containers() == []
    stack.compose("up", "--detach", *stack.services, timeout_s=600)
    trainer = stack.compose("logs", "--no-color", "trainer").stdout
    assert "training skipped" in trainer
    _poll(lambda: "state restored for" in stack.compose("logs", "--no-color", "detector").stdout, 120,
             "the detector to restore its state")
    restored = [line for line in stack.compose("logs", "--no-color", "detector").stdout.splitlines()
                if "state restored for" in line]
    partitions = int(stack.env.get("STREAM_AE_INPUT_PARTITIONS", "6"))
    assert f"state restored for {partitions} of {partitions}" in restored[-1], restored
    _poll(lambda: bool(_prometheus('up{job="stream-ae"} == 1')["result"]), 90, "the new replica scraped")
    _poll(lambda: {s["metric"]["checkpoint_sha256"] for s in _prometheus("stream_ae_model_info")["result"]} == sha,
             60, "the same checkpoint served")
    print(f"\nstack: after down and up: {trainer.strip().splitlines()[-1]}; {restored[-1].split('INFO ')[-1]}")
