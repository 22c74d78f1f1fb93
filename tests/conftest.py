"""Shared fixtures: the real datasets (skipped where absent), a real local broker, a small model."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from stream_ae.model.checkpoint import Checkpoint, save_checkpoint
from stream_ae.service.config import Settings, load_settings
from stream_ae.model.datasets import synthetic_transactions
from stream_ae.model.training import TrainingOptions, train_autoencoder

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("STREAM_AE_DATA_DIR", REPO.parent / "shared" / "data"))


def dataset_path(relative: str) -> Path:
    """A file under the shared datasets folder; skips the test with the reason when absent."""
    path = DATA_DIR / relative
    if not path.is_file():
        pytest.skip(f"real dataset {path} is absent (set STREAM_AE_DATA_DIR to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def broker():
    """A real Kafka-protocol broker (Tansu) on a free port of 127.0.0.1 for the whole session."""
    from stream_ae.kafka.local_broker import LocalBroker

    with LocalBroker() as running:
        yield running


_names = itertools.count()


@pytest.fixture
def topic_names():
    """Fresh topic and group names for one test: ``topic_names("events") -> "events-7"``."""
    suffix = next(_names)
    return lambda base: f"{base}-{os.getpid()}-{suffix}"


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory) -> tuple[Checkpoint, Path]:
    """A deep autoencoder trained briefly on synthetic transactions, saved to a file."""
    dataset = synthetic_transactions(rows=6000)
    checkpoint = train_autoencoder(dataset, TrainingOptions(epochs=15, seed=3, progress=False))
    path = tmp_path_factory.mktemp("model") / "synthetic.pt"
    save_checkpoint(checkpoint, path)
    return checkpoint, path


def detector_settings(broker, names, checkpoint_path: Path, **overrides) -> Settings:
    """Settings for a detector on the test broker with fresh topics and fast group joins."""
    sections = {
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
    return load_settings(**sections)


def wait_for(condition, timeout_s: float, what: str) -> None:
    """Poll ``condition`` every 50 ms; fail the test after ``timeout_s`` seconds."""
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def committed_offsets(settings: Settings, topic: str, partitions: int) -> dict[int, int]:
    """The consumer group's committed offset of each partition of ``topic`` (0 where none)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.kafka.connection().kafka_python(), group_id=settings.consumer.group_id,
                             enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)}
    finally:
        consumer.close(autocommit=False)


def committed_total(settings: Settings, topic: str, partitions: int) -> int:
    """Events committed by the consumer group on ``topic``, all partitions together."""
    return sum(committed_offsets(settings, topic, partitions).values())
