"""Producing a dataset's rows as events (:mod:`stream_ae.tools.replay`) into the real local
broker: each record is keyed ``<dataset>-<row>``, carries its label in the ``label`` header,
and its JSON or binary payload decodes back to the row's values."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from stream_ae.kafka.options import Connection
from stream_ae.kafka.records import ConsumedBatch
from stream_ae.kafka.topics import ensure_topics, read_topic
from stream_ae.model.datasets import synthetic_transactions
from stream_ae.pipeline.codec import EventDecoder
from stream_ae.tools.replay import LABEL_HEADER, ReplayReport, event_id, replay
from tests.helpers import synthetic_windows

DATASET = synthetic_transactions(rows=400, seed=2)


def anomalous_and_normal_rows(labels: np.ndarray, each: int) -> np.ndarray:
    """``each`` anomalous rows and ``each`` normal ones, interleaved, in a scrambled order."""
    anomalies, normals = np.flatnonzero(labels == 1)[:each], np.flatnonzero(labels == 0)[-each:]
    assert len(anomalies) == len(normals) == each, "the dataset needs anomalies and normal rows"
    return np.stack([anomalies, normals], axis=1).reshape(-1)[::-1].copy()


def replayed(connection: Connection, topic: str, dataset, rows: np.ndarray, payload_format: str):
    """Replay ``rows`` into a new one-partition topic and read them back."""
    ensure_topics(connection, {topic: 1})
    report = replay(dataset, rows, connection, topic, progress=False, payload_format=payload_format)
    return report, read_topic(connection, topic, len(rows), timeout_s=20)


def test_event_id_is_dataset_name_and_row():
    assert event_id(DATASET, 17) == f"{DATASET.name}-17"


@pytest.mark.integration
@pytest.mark.parametrize("payload_format", ["json", "binary"])
def test_replayed_rows_are_keyed_by_event_id_with_the_label_header_and_decode_to_their_values(
        broker, topic_names, payload_format):
    connection = Connection(broker.bootstrap_servers)
    rows = anomalous_and_normal_rows(DATASET.labels, 5)
    report, records = replayed(connection, topic_names("replay"), DATASET, rows, payload_format)
    assert report.events == len(rows) == len(records) == 10

    assert [r.key.decode() for r in records] == [f"{DATASET.name}-{row}" for row in rows], "in the order given"
    labels = [dict(r.headers)[LABEL_HEADER] for r in records]
    assert labels == [b"1" if DATASET.labels[row] else b"0" for row in rows]
    assert set(labels) == {b"0", b"1"}

    batch, rejected = EventDecoder(DATASET.feature_names, None).decode(ConsumedBatch.from_records(records))
    assert rejected == []
    np.testing.assert_array_equal(batch.values, DATASET.values[rows].astype(np.float32))
    if payload_format == "json":
        assert batch.event_ids == [f"{DATASET.name}-{row}" for row in rows]
        assert all("label" not in orjson.loads(r.value) for r in records), "the label is never in the payload"
    else:
        assert batch.event_ids == [None] * len(rows), "binary: the id travels only as the key"


@pytest.mark.integration
def test_windows_replay_as_window_events(broker, topic_names):
    connection = Connection(broker.bootstrap_servers)
    windows = synthetic_windows(rows=40, length=16, anomaly_fraction=0.3, seed=1)
    rows = np.arange(40)
    _, records = replayed(connection, topic_names("replay-windows"), windows, rows, "json")
    batch, rejected = EventDecoder(windows.feature_names, 16).decode(ConsumedBatch.from_records(records))
    assert rejected == []
    np.testing.assert_array_equal(batch.values, windows.values)
    assert [dict(r.headers)[LABEL_HEADER] for r in records] == [str(v).encode() for v in windows.labels]


@pytest.mark.integration
def test_a_rate_spreads_the_events_over_time(broker, topic_names):
    connection = Connection(broker.bootstrap_servers)
    topic = topic_names("replay-rate")
    ensure_topics(connection, {topic: 1})
    started = time.perf_counter()
    report = replay(DATASET, np.arange(30), connection, topic, rate_eps=100, progress=False)
    elapsed = time.perf_counter() - started
    assert report.events == 30 and elapsed >= 0.28, "30 events at 100 per second take about 0.3 s"
    assert report.events_per_second <= 105
    assert len(read_topic(connection, topic, 30, timeout_s=20)) == 30


def test_an_unknown_payload_format_is_refused_before_anything_is_sent():
    with pytest.raises(ValueError, match="payload format"):
        replay(DATASET, np.arange(3), Connection("127.0.0.1:1"), "unused", progress=False, payload_format="avro")


def test_the_report_gives_events_per_second():
    assert ReplayReport(100, 2.0).events_per_second == 50
    assert ReplayReport(5, 0.0).events_per_second == float("inf")


@pytest.mark.integration
def test_train_and_replay_on_synthetic_data_with_no_file(broker, topic_names, tmp_path, monkeypatch, capsys):
    """``--data synthetic``: what the compose stack's trainer and replayer fall back to without a
    dataset. The replay finds the rows the checkpoint held out of training, as for a file."""
    from stream_ae.cli import main
    from stream_ae.model.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)  # no file named "synthetic" here
    checkpoint = tmp_path / "model.pt"
    assert main(["train", "--data", "synthetic", "--epochs", "1", "--device", "cpu", "--output",
                 str(checkpoint)]) == 0, capsys.readouterr().err
    trained = load_checkpoint(checkpoint)
    assert trained.dataset_sha256 == synthetic_transactions().sha256
    topic = topic_names("replay-synthetic")
    assert main(["replay", "--data", "synthetic", "--held-out-of", str(checkpoint), "--limit", "40",
                 "--topic", topic, "--partitions", "1", "--bootstrap-servers", broker.bootstrap_servers]) == 0
    records = read_topic(Connection(broker.bootstrap_servers), topic, 40, timeout_s=20)
    held_out = {f"synthetic-{row}" for row in trained.training["split"]["test"]}
    assert len(records) == 40 and {record.key.decode() for record in records} <= held_out
    assert main(["train", "--data", "synthetic.csv", "--output", str(tmp_path / "m.pt")]) == 2
    assert "dataset file not found: synthetic.csv" in capsys.readouterr().err
