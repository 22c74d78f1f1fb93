"""Shared test helpers, in one place: every test module imports its non-fixture helpers
from here, never from another test module or a conftest (conftest files hold fixtures only).

Importable without a broker: nothing here connects at import time; the helpers that talk
to a broker take its settings (from the ``broker`` fixture) as an argument.

- plain-data records and scripted Kafka ends (no broker involved);
- the real datasets (skipped where absent), small synthetic data, a tiny checkpoint;
- the codec tests' feature layout;
- the test broker's kind (``STREAM_AE_TEST_BROKER``), settings for a detector on it, and
  waiting for a condition;
- producing to and reading from the test broker, committed offsets;
- the daemon as a real process (one may freeze itself after a given batch).

The scripted ends subclass the Kafka contracts (:mod:`stream_ae.kafka.ends`) explicitly,
so that mypy (run by ``.ci/run`` over this file) fails when one of them no longer
implements what the pipeline needs.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pytest
import torch
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stream_ae.kafka.ends import (
    BrokerUnreachableError,
    Delivery,
    DeliveryError,
    Refusal,
    Sink,
    Source,
    TransactionalSink,
)
from stream_ae.kafka.kafka_python.sink import KafkaSink
from stream_ae.kafka.local_broker import free_port
from stream_ae.kafka.options import Connection
from stream_ae.kafka.records import ConsumedBatch, PartitionKey, Record
from stream_ae.kafka.topics import read_topic
from stream_ae.model.autoencoders import build_model
from stream_ae.model.checkpoint import Checkpoint
from stream_ae.model.datasets import CARD_FEATURES, LabelledDataset, synthetic_transactions
from stream_ae.pipeline.codec import Batch, EventDecoder, Rejected, encode_event
from stream_ae.service.config import Settings, load_settings

if TYPE_CHECKING:
    from stream_ae.kafka.local_broker import LocalBroker
    from tests.apache_kafka import ApacheKafka

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("STREAM_AE_DATA_DIR", REPO.parent / "shared" / "data"))


# -- plain-data records and scripted Kafka ends ------------------------------------------------

@dataclass
class FakeRecord:
    """A consumed record as the codec sees it (plain data, no broker involved)."""

    value: bytes | None
    topic: str = "events"
    partition: int = 0
    offset: int = 0
    timestamp: int = 1_700_000_000_000
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=list)


class ScriptedSource(Source):
    """Hands out the given batches in turn (then empty ones); records commits and rewinds."""

    def __init__(self, batches: list[ConsumedBatch]) -> None:
        self.batches = batches
        self.commits: list[tuple[dict[PartitionKey, int], bool]] = []
        self.rewinds: list[dict[PartitionKey, int]] = []

    def poll_records(self) -> list[Record]:
        batch = self.poll_batch()
        return [batch.record(index) for index in range(len(batch))]

    def poll_batch(self) -> ConsumedBatch:
        return self.batches.pop(0) if self.batches else ConsumedBatch.from_records([])

    def commit(self, next_offsets: dict[PartitionKey, int], asynchronous: bool = False) -> bool:
        self.commits.append((dict(next_offsets), asynchronous))
        return True

    def rewind(self, first_offsets: dict[PartitionKey, int]) -> None:
        self.rewinds.append(dict(first_offsets))

    def group_metadata(self) -> object | None:
        return "scripted-membership"

    def lag(self) -> dict[PartitionKey, int]:
        return {}

    def connected(self) -> bool:
        return True

    def close(self) -> None:
        pass


class ScriptedSink(Sink):
    """Seals numbered batches; the deliveries numbered in ``refused`` fail when waited on
    (each of their records refused for good with ``refused_for_good``, when given; else
    failures that may pass); every delivery says it was acknowledged at ``acknowledged_at_s``."""

    def __init__(self, refused: set[int], answered_at_once: bool, acknowledged_at_s: float = 0.0,
                 refused_for_good: str | None = None) -> None:
        self.refused = refused
        self.answered_at_once = answered_at_once
        self.acknowledged_at_s = acknowledged_at_s
        self.refused_for_good = refused_for_good
        self.open: list[tuple[str, bytes | None]] = []
        self.sealed: list[list[tuple[str, bytes | None]]] = []
        self.acknowledged: list[tuple[str, bytes | None]] = []
        self.open_values: list[tuple[str, bytes | None, bytes | None]] = []
        self.acknowledged_values: list[tuple[str, bytes | None, bytes | None]] = []  # (topic, key, value)

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        self.open.append((topic, key))
        self.open_values.append((topic, key, value))

    def seal(self) -> Delivery:
        records, self.open = self.open, []
        values, self.open_values = self.open_values, []
        number = len(self.sealed)
        self.sealed.append(records)
        sink = self

        class ScriptedDelivery(Delivery):
            def done(self) -> bool:
                return sink.answered_at_once

            def wait(self) -> int:
                if number in sink.refused and sink.refused_for_good:
                    refusals = [Refusal(topic, sink.refused_for_good, "scripted") for topic, _ in records]
                    raise DeliveryError(f"batch {number} refused for good", refusals, transient=0)
                if number in sink.refused:
                    raise DeliveryError(f"batch {number} refused")
                sink.acknowledged.extend(records)
                sink.acknowledged_values.extend(values)
                return len(records)

            def acknowledged_at(self) -> float:
                return sink.acknowledged_at_s
        return ScriptedDelivery()

    def close(self) -> None:
        pass


class ScriptedTransactionalSink(ScriptedSink, TransactionalSink):
    """A :class:`ScriptedSink` whose batches are sealed as transactions: records the offsets
    and group metadata each one commits, and how many records were acknowledged before it
    was sealed (a refused batch stands for an aborted transaction)."""

    def __init__(self, refused: set[int], answered_at_once: bool) -> None:
        super().__init__(refused, answered_at_once)
        self.transactions: list[tuple[dict[PartitionKey, int], object | None, int]] = []

    def seal_transaction(self, next_offsets: dict[PartitionKey, int], group_metadata: object | None) -> Delivery:
        self.transactions.append((dict(next_offsets), group_metadata, len(self.acknowledged)))
        return self.seal()


# -- datasets -----------------------------------------------------------------------------------

def dataset_path(relative: str) -> Path:
    """A file under the shared datasets folder; skips the test with the reason when absent."""
    path = DATA_DIR / relative
    if not path.is_file():
        pytest.skip(f"real dataset {path} is absent (set STREAM_AE_DATA_DIR to the shared data folder)")
    return path


DATASET = synthetic_transactions(rows=6000)  # the rows the synthetic checkpoint was trained on


def events(rows: np.ndarray, values: np.ndarray | None = None) -> list[bytes]:
    """JSON events of the given rows of ``values`` (default: :data:`DATASET`'s), with the
    ids ``row-<row>``."""
    source = DATASET.values if values is None else values
    return [encode_event(source[row], CARD_FEATURES, False, f"row-{row}") for row in rows]


def synthetic_windows(rows: int = 300, length: int = 32, anomaly_fraction: float = 0.05,
                      seed: int = 0) -> LabelledDataset:
    """Noisy sine beats of one period (normal) and beats with a square bump (anomalies)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, length, dtype=np.float32)
    amplitude = rng.uniform(0.8, 1.2, size=(rows, 1)).astype(np.float32)
    values = amplitude * np.sin(t)[None, :] + 0.05 * rng.normal(size=(rows, length)).astype(np.float32)
    labels = (rng.random(rows) < anomaly_fraction).astype(np.int8)
    values[labels == 1, length // 3: length // 2] += 1.5
    values = values.astype(np.float32)
    sha = hashlib.sha256(values.tobytes()).hexdigest()
    return LabelledDataset("windows", "window", values, labels, [f"t{i}" for i in range(length)], sha)


def tiny_checkpoint(feature_names: Sequence[str] = ("a", "b", "c", "d"), seed: int = 0,
                    model_name: str = "simple") -> Checkpoint:
    """An untrained checkpoint of ``model_name`` on transactions of ``feature_names``, made in
    milliseconds (random weights, scaler and validation scores drawn from ``seed``); not saved."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    width = len(feature_names)
    model = build_model(model_name, width, kind="transaction")
    errors = rng.gamma(2.0, 0.5, size=64).astype(np.float32)
    return Checkpoint(
        model_name=model_name,
        hparams=dict(model.hparams),
        state_dict={key: value.detach().clone() for key, value in model.state_dict().items()},
        kind="transaction",
        feature_names=list(feature_names),
        scaler_mean=rng.normal(size=width).astype(np.float32),
        scaler_std=rng.uniform(0.5, 2.0, size=width).astype(np.float32),
        score_mean=float(errors.mean()),
        score_std=float(errors.std()),
        validation_scores=errors,
        training={"dataset": "tiny", "seed": seed, "split": {"train": np.arange(10), "test": np.arange(10, 12)},
                  "epochs_run": np.int64(1), "loss": [0.5, np.float32(0.25)]},
    )


# -- the codec tests' feature layout ------------------------------------------------------------

FEATURES = ["a", "b", "c"]  # the features of the codec tests' events


def decode(decoder: EventDecoder, records: Sequence[Record]) -> tuple[Batch, list[Rejected]]:
    """``decoder.decode`` of a batch made of ``records``."""
    return decoder.decode(ConsumedBatch.from_records(records))


# -- the test broker, a detector on it ----------------------------------------------------------

BROKER_KINDS = ("tansu", "apache")


def broker_kind() -> str:
    """The kind of broker the tests run against: ``STREAM_AE_TEST_BROKER`` (``apache`` or
    ``tansu``), ``tansu`` when unset (pip-only: a bare ``pytest`` needs no Java or Maven).

    Raises:
        ValueError: any other value, naming the variable.
    """
    kind = os.environ.get("STREAM_AE_TEST_BROKER") or "tansu"
    if kind not in BROKER_KINDS:
        raise ValueError(f"STREAM_AE_TEST_BROKER={kind!r}: expected one of {', '.join(BROKER_KINDS)}")
    return kind


def skip_on_tansu(lacks: str) -> None:
    """Skip the test against Tansu, which lacks what it tests (``lacks``: what, and why it
    matters); a broker of one's own (``STREAM_AE_TEST_BOOTSTRAP_SERVERS``) is taken for a
    Kafka that has it."""
    if broker_kind() == "tansu" and not os.environ.get("STREAM_AE_TEST_BOOTSTRAP_SERVERS"):
        pytest.skip(f"Tansu {lacks}; run with STREAM_AE_TEST_BROKER=apache")


class ExistingBroker:
    """A broker the tests neither start nor stop (``STREAM_AE_TEST_BOOTSTRAP_SERVERS``)."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers

    def start(self) -> ExistingBroker:
        return self

    def __enter__(self) -> ExistingBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def make_broker(log_path: Path, stoppable: bool = False) -> LocalBroker | ApacheKafka | ExistingBroker:
    """The tests' broker, not started yet: the one ``STREAM_AE_TEST_BOOTSTRAP_SERVERS`` names
    (``host:port,...``, a broker of one's own), or else one of :func:`broker_kind` on a free
    port of 127.0.0.1 logging to ``log_path``: Apache Kafka (one node, jars fetched with
    Maven on first use) or Tansu.

    Args:
        stoppable: the test stops and restarts the broker: it is skipped when the broker
            is one of one's own.
    """
    existing = os.environ.get("STREAM_AE_TEST_BOOTSTRAP_SERVERS")
    if existing:
        if stoppable:
            pytest.skip("this test stops the broker: not one named by STREAM_AE_TEST_BOOTSTRAP_SERVERS")
        return ExistingBroker(existing)
    if broker_kind() == "apache":
        from tests.apache_kafka import ApacheKafka

        return ApacheKafka(log_path=log_path)
    from stream_ae.kafka.local_broker import LocalBroker

    return LocalBroker(log_path=log_path)


def detector_settings(broker: LocalBroker | ApacheKafka | ExistingBroker, names: Callable[[str], str],
                      checkpoint_path: Path, **overrides: dict[str, Any]) -> Settings:
    """Settings for a detector on the test broker with fresh topics and fast group joins."""
    sections: dict[str, dict[str, Any]] = {
        "kafka": {"bootstrap_servers": broker.bootstrap_servers},
        "topics": {"input": [names("events")], "alerts": names("alerts"),
                   "dead_letter": names("dead"), "scores": names("scores")},
        "consumer": {"group_id": names("group"), "session_timeout_ms": 6000,
                     "heartbeat_interval_ms": 1000, "max_wait_ms": 50, "fetch_max_wait_ms": 20},
        "model": {"checkpoint": str(checkpoint_path)},
        "metrics": {"port": 0},
    }
    for section, values in overrides.items():
        sections[section] = {**sections.get(section, {}), **values}
    return load_settings(None, **sections)


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``condition`` every 50 ms; fail the test after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


# -- producing, reading back, committed offsets -------------------------------------------------

def produce(settings: Settings, topic: str, values: Sequence[bytes],
            keys: Sequence[bytes | None] | None = None) -> None:
    """Produce records (keyed by ``keys`` where given) and wait for their acknowledgement."""
    produce_to(settings.kafka.connection(), topic, values, keys)


def produce_to(connection: Connection, topic: str, values: Sequence[bytes | None],
               keys: Sequence[bytes | None] | None = None,
               headers: Sequence[Sequence[tuple[str, bytes]]] | None = None, flush_every: int = 20_000) -> None:
    """Produce records (with ``keys`` and ``headers`` where given, one per value) through a
    :class:`KafkaSink` on ``connection``, waiting for the acknowledgements every
    ``flush_every`` records (bounding memory) and at the end."""
    sink = KafkaSink(connection)
    try:
        for index, value in enumerate(values):
            sink.send(topic, keys[index] if keys else None, value, headers[index] if headers else None)
            if (index + 1) % flush_every == 0:
                sink.flush()
        sink.flush()
    finally:
        sink.close()


def read_json(settings: Settings, topic: str, expected: int | None, timeout_s: float = 60.0,
              read_committed: bool = False) -> list[dict]:
    """The JSON values of a topic's records, with their record key as ``_key`` (``read_committed``:
    those of committed transactions only)."""
    return [orjson.loads(r.value) | {"_key": r.key.decode()}
            for r in read_topic(settings.kafka.connection(), topic, expected, timeout_s, read_committed)]


def group_offsets(connection: Connection, group_id: str, topic: str, partitions: int) -> dict[int, int]:
    """Consumer group ``group_id``'s committed offset of each partition of ``topic`` (0 where none)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**connection.kafka_python(), group_id=group_id, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)}
    finally:
        consumer.close(autocommit=False)


def committed_offsets(settings: Settings, topic: str, partitions: int) -> dict[int, int]:
    """The consumer group's committed offset of each partition of ``topic`` (0 where none)."""
    return group_offsets(settings.kafka.connection(), settings.consumer.group_id, topic, partitions)


def committed_total(settings: Settings, topic: str, partitions: int) -> int:
    """Events committed by the consumer group on ``topic``, all partitions together."""
    return sum(committed_offsets(settings, topic, partitions).values())


# -- the daemon as a real process ---------------------------------------------------------------

class DaemonProcess:
    """``python -m stream_ae run`` in a child process, with its own metrics port.

    Args:
        settings: written to a YAML file the daemon reads; ``metrics.port`` is replaced.
        workdir: where the config file and the daemon's log go.
        name: distinguishes the files of several daemons.
        freeze_after_batches: the daemon stops itself (SIGSTOP, every thread frozen) right
            after polling its N-th non-empty batch, before handling it (see
            :func:`run_freezing_daemon`); None runs it plainly.
    """

    def __init__(self, settings: Settings, workdir: Path, name: str = "daemon",
                 freeze_after_batches: int | None = None) -> None:
        self.port = free_port()
        values = settings.model_dump(mode="json")
        values["metrics"]["port"] = self.port
        self.config = workdir / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump(values))
        self.log_path = workdir / f"{name}.log"
        self.freeze_after_batches = freeze_after_batches
        self.process: subprocess.Popen | None = None

    def start(self) -> DaemonProcess:
        command = (["-m", "stream_ae", "run", "--config", str(self.config)] if self.freeze_after_batches is None
                   else ["-m", "tests.helpers", str(self.config), str(self.freeze_after_batches)])
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen([sys.executable, *command], cwd=REPO, stdout=log,
                                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def stopped(self) -> bool:
        """Whether the process is stopped by a signal (SIGSTOP: state ``T`` in ``/proc``)."""
        assert self.process is not None
        return Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"

    def resume(self) -> None:
        """SIGCONT: a stopped daemon goes on where it stopped."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every sample of ``/metrics``; empty while the server is not up."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=3).read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return {}
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def value(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def ready(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log_path.read_text()[-3000:]
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=3).status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self, timeout_s: float = 90.0) -> DaemonProcess:
        wait_for(self.ready, timeout_s, f"daemon {self.config.stem} to be ready")
        return self

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)


class SavedStates:
    """A state store holding the given states per partition (each its partition's own state,
    key ``""``); records every read; the first ``unreachable_reads`` reads fail as a lost
    broker does.

    Stands for :class:`stream_ae.kafka.state_store.PartitionStateStore` (the pipeline's
    :class:`stream_ae.pipeline.keyed_state.StateStore`).
    """

    topic = "state"

    def __init__(self, states: dict[PartitionKey, dict[str, float | int | str]], unreachable_reads: int = 0) -> None:
        self.states = states
        self.unreachable_reads = unreachable_reads
        self.reads: list[list[PartitionKey]] = []

    def load(self, partitions: list[PartitionKey]) -> dict[PartitionKey, dict[str, dict[str, Any]]]:
        self.reads.append(list(partitions))
        if len(self.reads) <= self.unreachable_reads:
            raise BrokerUnreachableError("scripted: the broker is gone")
        return {key: {"": self.states[key]} for key in partitions if key in self.states}

    def record(self, partition: PartitionKey, key: str, state: dict[str, Any]) -> tuple[bytes, bytes]:
        return repr((partition, key)).encode(), repr(state).encode()


# -- a daemon that freezes itself (run in a child process by DaemonProcess) ---------------------

class FreezingSource:
    """A source that stops its own process (SIGSTOP) right after polling its ``batches``-th
    non-empty batch, and hands the batch on once the process is continued (SIGCONT)."""

    def __init__(self, inner: Source, batches: int) -> None:
        self.inner = inner
        self.batches = batches
        self.polled = 0

    def poll_batch(self) -> ConsumedBatch:
        batch = self.inner.poll_batch()
        if len(batch):
            self.polled += 1
            if self.polled == self.batches:
                os.kill(os.getpid(), signal.SIGSTOP)
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def run_freezing_daemon(config: Path, batches: int) -> int:
    """``stream-ae run --config config`` whose source is a :class:`FreezingSource`: the daemon
    as in production, but frozen at a chosen point of its loop (after a poll, before the
    batch is handled), so that a test can resume it after the group has moved on."""
    from stream_ae import cli
    from stream_ae.service import daemon

    make_source = daemon.make_source
    daemon.make_source = lambda *args, **kwargs: FreezingSource(make_source(*args, **kwargs), batches)
    return cli.main(["run", "--config", str(config)])


if __name__ == "__main__":
    sys.exit(run_freezing_daemon(Path(sys.argv[1]), int(sys.argv[2])))
