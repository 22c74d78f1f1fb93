"""Cluster faults, measured: a detector on a three-node Apache Kafka cluster loses nothing.

A three-node cluster (each node broker and controller; every topic replicated three times,
``min.insync.replicas=2``), a detector daemon as a real process, and a producer pacing
events (one in ``MALFORMED_EVERY`` malformed) into a 3-partition input topic while the
cluster is hurt:

- ``leader-kill``: SIGKILL the node leading the alerts partition, bring it back, then
  SIGKILL the node leading input partition 0 and bring it back;
- ``broker-stop-30s``: stop (SIGTERM) the node leading input partition 0 for 30 s;
- ``rolling-restart``: stop and restart each node in turn, waiting for every replica to be
  back in sync before the next, as an operator would.

Each run prints events produced, scored, dead-lettered, alerts expected (scores flagged as
anomalies) and received, duplicates (scores written more than once), the longest stall
(the longest gap between two score records the detector wrote) and the longest delay of
one event (detection time minus event time), and asserts that nothing was lost: every
record of the input topic scored or dead-lettered, every flagged score alerted, every
malformed record dead-lettered, every event the producer had acknowledged in the topic.
An event is lost when a record of the input topic was neither scored nor dead-lettered,
or when the producer had it acknowledged and no score carries its id. The module ends with
the table of all runs. Reproduce (about 3 minutes)::

    STREAM_AE_TEST_BROKER=apache python -m pytest -s -m cluster tests/reliability/test_cluster_faults.py
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import orjson
import pytest

from stream_ae.kafka.ends import DeliveryError
from stream_ae.kafka.kafka_python.sink import KafkaSink
from stream_ae.kafka.options import Connection
from stream_ae.kafka.topics import ensure_topics, read_topic
from stream_ae.model.datasets import CARD_FEATURES
from stream_ae.pipeline.alerts import SOURCE_HEADER
from stream_ae.pipeline.codec import encode_event
from stream_ae.service.config import Settings
from tests.apache_kafka import ApacheKafkaCluster
from tests.helpers import DATASET, DaemonProcess, broker_kind, committed_total, detector_settings, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

RATE_EPS = 400          # the paced producer's rate
CHUNK_S = 0.1           # it sends a chunk every 100 ms and waits for its acknowledgement
MALFORMED_EVERY = 200   # one record in 200 is not JSON
PARTITIONS = 3
BATCH = 250             # the detector's largest micro-batch
WARM_UP_S = 8.0         # steady flow before the first fault
COOL_DOWN_S = 6.0       # steady flow after the last one
DOWN_S = 8.0            # how long a killed node stays down in leader-kill
STOPPED_S = 30.0        # how long the stopped node stays down in broker-stop-30s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[ApacheKafkaCluster]:
    """Three Apache Kafka nodes for the module (each run restores all three before it ends)."""
    if broker_kind() != "apache":
        pytest.skip("the cluster-fault runs need Apache Kafka: set STREAM_AE_TEST_BROKER=apache")
    with ApacheKafkaCluster(nodes=3, log_dir=tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def report() -> Iterator[list[str]]:
    """Rows of the figures table, printed once every run of the module is done."""
    rows: list[str] = []
    yield rows
    header = (f"{'run':<16} {'produced':>8} {'scored':>7} {'dead':>5} {'alerts exp':>10} {'alerts rcv':>10} "
              f"{'dup scores':>10} {'dup alerts':>10} {'lost':>5} {'stall s':>7} {'max delay s':>11}")
    print("\n\ncluster faults (3 nodes, RF 3, min.insync.replicas 2, "
          f"{RATE_EPS} events/s, {PARTITIONS} input partitions)\n" + header + "\n" + "\n".join(rows))


class PacedProducer(threading.Thread):
    """Sends events at :data:`RATE_EPS` until stopped, a chunk every :data:`CHUNK_S` seconds
    through one sink, waiting for each chunk's acknowledgement; a refused chunk is sent again
    (so the topic may hold a record twice, never miss one).

    Attributes:
        acknowledged: events acknowledged so far; ``malformed``: how many of them are not JSON.
        resent: records sent again after a refused chunk.
    """

    def __init__(self, connection: Connection, topic: str) -> None:
        super().__init__(daemon=True)
        self.connection, self.topic = connection, topic
        self.acknowledged = self.malformed = self.resent = 0
        self.stopping = threading.Event()
        self.rows = np.random.default_rng(16).integers(0, len(DATASET.values), 1_000_000)

    def value(self, index: int) -> bytes:
        if index % MALFORMED_EVERY == MALFORMED_EVERY - 1:
            return f"not json {index}".encode()
        return encode_event(DATASET.values[self.rows[index]], CARD_FEATURES, False, f"e{index}")

    def run(self) -> None:
        sink = KafkaSink(self.connection, topics=[self.topic])
        chunk = int(RATE_EPS * CHUNK_S)
        next_at = time.monotonic()
        try:
            while not self.stopping.is_set():
                values = [self.value(self.acknowledged + i) for i in range(chunk)]
                while True:
                    for value in values:
                        sink.send(self.topic, None, value)
                    try:
                        sink.seal().wait()
                        break
                    except DeliveryError:
                        self.resent += len(values)
                self.acknowledged += chunk
                self.malformed += sum(value.startswith(b"not json") for value in values)
                next_at += CHUNK_S
                time.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            sink.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(120)
        assert not self.is_alive(), "the producer did not finish"


@dataclass
class Figures:
    """What one run measured (see the module docstring)."""

    produced: int
    scored: int
    dead_lettered: int
    alerts_expected: int
    alerts_received: int
    duplicate_scores: int
    duplicate_alerts: int
    lost: int
    missing_alerts: int
    longest_stall_s: float
    longest_delay_s: float

    def row(self, name: str) -> str:
        return (f"{name:<16} {self.produced:>8} {self.scored:>7} {self.dead_lettered:>5} "
                f"{self.alerts_expected:>10} {self.alerts_received:>10} {self.duplicate_scores:>10} "
                f"{self.duplicate_alerts:>10} {self.lost:>5} {self.longest_stall_s:>7.1f} "
                f"{self.longest_delay_s:>11.1f}")


def measure(settings: Settings, producer: PacedProducer) -> Figures:
    """Read every topic back and count (see the module docstring)."""
    connection = settings.kafka.connection()
    source = read_topic(connection, settings.topics.input[0], None, 120)
    scores = read_topic(connection, settings.topics.scores, None, 120)
    alerts = read_topic(connection, settings.topics.alerts, None, 120)
    dead = read_topic(connection, settings.topics.dead_letter, None, 120)
    source_keys = {f"{r.topic}-{r.partition}-{r.offset}" for r in source}
    scored = {r.key.decode() for r in scores}
    dead_lettered = {dict(r.headers)[SOURCE_HEADER].decode() for r in dead}
    values = [orjson.loads(r.value) for r in scores]
    flagged = {value["key"] for value in values if value["anomaly"]}
    alerted = {r.key.decode() for r in alerts}
    acknowledged_ids = {f"e{i}" for i in range(producer.acknowledged) if i % MALFORMED_EVERY != MALFORMED_EVERY - 1}
    scored_ids = {value["event_id"] for value in values}
    written_at = sorted(r.timestamp for r in scores)
    return Figures(
        produced=len(source), scored=len(scored), dead_lettered=len(dead_lettered),
        alerts_expected=len(flagged), alerts_received=len(alerted),
        duplicate_scores=len(scores) - len(scored), duplicate_alerts=len(alerts) - len(alerted),
        lost=len(source_keys - scored - dead_lettered) + len(acknowledged_ids - scored_ids),
        missing_alerts=len(flagged - alerted),
        longest_stall_s=float(np.diff(written_at).max()) / 1000 if len(written_at) > 1 else 0.0,
        longest_delay_s=max(value["detected_at_ms"] - value["event_timestamp_ms"] for value in values) / 1000)


def run_with_faults(cluster: ApacheKafkaCluster, topic_names, checkpoint_path, tmp_path,
                    faults: Callable[[ApacheKafkaCluster, Settings], int], report: list[str], name: str) -> None:
    """A detector fed by the paced producer while ``faults`` hurts the cluster (it returns how
    many faults it caused); adds the run's row to ``report``, then checks that nothing was
    lost. Every node is running again when this returns."""
    settings = detector_settings(cluster, topic_names, checkpoint_path, consumer={"max_batch_size": BATCH},
                                 topics={"state": topic_names("state")})
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: PARTITIONS, settings.topics.alerts: 1,
                                                settings.topics.dead_letter: 1, settings.topics.scores: PARTITIONS})
    daemon = DaemonProcess(settings, tmp_path).start().wait_ready()
    producer = PacedProducer(settings.kafka.connection(), topic)
    try:
        producer.start()
        time.sleep(WARM_UP_S)
        count = faults(cluster, settings)
        time.sleep(COOL_DOWN_S)
        producer.stop()
        in_topic = producer.acknowledged
        wait_for(lambda: committed_total(settings, topic, PARTITIONS) >= in_topic, 180,
                 f"the {in_topic} events produced to be committed")
        assert daemon.terminate() == 0
    finally:
        producer.stopping.set()
        daemon.kill()
        for node in cluster.node_ids:
            if node not in cluster.processes:
                cluster.restart(node)
    figures = measure(settings, producer)
    report.append(figures.row(name))
    print(f"\n{figures} producer resent={producer.resent}")
    assert figures.lost == 0
    assert figures.missing_alerts == 0
    assert figures.dead_lettered == producer.malformed
    assert figures.produced >= producer.acknowledged
    # a fault re-reads at most what was past the last landed commit: three batches per
    # partition (the batch being handled, the one awaiting its acknowledgement, the one
    # whose commit was on its way), as with a SIGKILLed detector
    assert figures.duplicate_scores <= count * 3 * BATCH * PARTITIONS


def leader_kill(cluster: ApacheKafkaCluster, settings: Settings) -> int:
    for topic in (settings.topics.alerts, settings.topics.input[0]):
        node = cluster.leader(topic, 0)
        print(f"\nSIGKILL node {node}, leader of {topic}[0]")
        cluster.kill(node)
        time.sleep(DOWN_S)
        cluster.restart(node)
        cluster.wait_in_sync([settings.topics.input[0], settings.topics.alerts])
    return 2


def broker_stop(cluster: ApacheKafkaCluster, settings: Settings) -> int:
    node = cluster.leader(settings.topics.input[0], 0)
    print(f"\nstop node {node}, leader of {settings.topics.input[0]}[0], for {STOPPED_S:.0f} s")
    cluster.stop_node(node)
    time.sleep(STOPPED_S)
    cluster.restart(node)
    return 1


def rolling_restart(cluster: ApacheKafkaCluster, settings: Settings) -> int:
    topics = [settings.topics.input[0], settings.topics.alerts, settings.topics.scores, settings.topics.dead_letter]
    for node in cluster.node_ids:
        cluster.stop_node(node)
        cluster.restart(node)
        cluster.wait_in_sync(topics)
    return len(cluster.node_ids)


@pytest.mark.parametrize("faults", [leader_kill, broker_stop, rolling_restart],
                         ids=["leader-kill", "broker-stop-30s", "rolling-restart"])
def test_a_detector_loses_nothing_while_the_cluster_is_hurt(cluster, topic_names, synthetic_checkpoint,
                                                            tmp_path, report, faults, request):
    _, path = synthetic_checkpoint
    run_with_faults(cluster, topic_names, path, tmp_path, faults, report, request.node.callspec.id)
