"""``stream-ae demo``: the whole product on one machine, with nothing else installed.

Starts the local broker, creates the topics, trains a model, starts the detector, replays
the held-out events (plus a few malformed records, to show the dead-letter topic), reads
the streamed scores back, scores them against the replayed labels, and shuts down. The
replay runs in a process of its own, as a producer would: sharing the detector's
interpreter lock would add its own delay to the latency the demo reports.
"""

from __future__ import annotations

import logging
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

from stream_ae.kafka.kafka_python.sink import KafkaSink
from stream_ae.kafka.local_broker import LocalBroker
from stream_ae.kafka.topics import ensure_topics, read_topic
from stream_ae.model.checkpoint import save_checkpoint
from stream_ae.model.datasets import LabelledDataset, load_dataset, synthetic_transactions
from stream_ae.model.training import TrainingOptions, train_autoencoder
from stream_ae.service.config import Settings, load_settings
from stream_ae.tools.daemon_thread import DaemonThread
from stream_ae.tools.replay import event_id, replay

log = logging.getLogger(__name__)

INPUT_PARTITIONS = 3
# Records no decoder accepts: not JSON, empty, not an object, no features, not UTF-8.
MALFORMED_RECORDS = [b"this is not json", b"", b"[1, 2, 3]", b'{"id": "bad-1"}', b"\xff\xfe\xfa"]


def _demo_settings(bootstrap: str, checkpoint: Path) -> Settings:
    return load_settings(
        kafka={"bootstrap_servers": bootstrap},
        topics={"input": ["events"], "alerts": "alerts", "dead_letter": "events-dead-letter",
                "scores": "scores"},
        consumer={"group_id": "stream-ae-demo", "session_timeout_ms": 6000,
                  "heartbeat_interval_ms": 1000, "max_wait_ms": 50, "fetch_max_wait_ms": 20},
        model={"checkpoint": str(checkpoint)},
        metrics={"port": 0},
    )


def _streamed_metrics(dataset: LabelledDataset, score_values: list[bytes]) -> dict[str, float]:
    """AUC and precision/recall of the streamed scores against the replayed labels."""
    row_of = {event_id(dataset, row): row for row in range(len(dataset.values))}
    scores: dict[str, dict[str, Any]] = {}
    for value in score_values:
        score = orjson.loads(value)
        scores[score["key"]] = score  # a re-read after a retry carries the same key
    rows = np.array([row_of[s["event_id"]] for s in scores.values()])
    streamed = np.array([s["score"] for s in scores.values()])
    flags = np.array([s["anomaly"] for s in scores.values()])
    assert dataset.labels is not None  # run_demo requires labels
    labels = dataset.labels[rows]
    return {
        "auc_roc": float(roc_auc_score(labels, streamed)),
        "auc_pr": float(average_precision_score(labels, streamed)),
        "precision": float(precision_score(labels, flags, zero_division=0)),
        "recall": float(recall_score(labels, flags, zero_division=0)),
    }


def run_demo(data: Path | None = None, label_column: str | None = None,
             options: TrainingOptions = TrainingOptions(), rate_eps: float | None = 2000.0,
             progress: bool = True) -> dict[str, Any]:
    """Run the demo end to end and return its figures.

    Args:
        data: a labelled dataset file; None generates a synthetic transaction set.
        label_column: label column of a generic table.
        options: training options (model, seed, epochs, device).
        rate_eps: replay rate in events/s; None for as fast as possible.
        progress: progress bars on stderr.

    Returns:
        ``events_in``, ``events_scored``, ``dead_lettered``, ``alerts``, ``auc_roc``,
        ``auc_pr``, ``precision``, ``recall``, ``latency_p50_s``, ``latency_p99_s`` and
        context (dataset, model, counts, seconds).
    """
    started = time.perf_counter()
    if data is None:
        print("demo: no --data given: training on a synthetic transaction set (20,000 rows, 2% anomalies)")
        dataset = synthetic_transactions()
    else:
        dataset = load_dataset(data, label_column)
    if dataset.labels is None:
        raise ValueError("demo: the dataset needs labels to score the run")
    print(f"demo: {dataset.name}: {len(dataset.values):,} {dataset.kind} rows, "
          f"{int(dataset.labels.sum()):,} anomalies")
    checkpoint = train_autoencoder(dataset, options)
    test_rows = np.random.default_rng(options.seed).permutation(checkpoint.training["split"]["test"])

    with tempfile.TemporaryDirectory(prefix="stream-ae-demo-") as workdir, LocalBroker() as broker:
        checkpoint_path = Path(workdir) / "model.pt"
        save_checkpoint(checkpoint, checkpoint_path)
        print(f"demo: trained {checkpoint.describe()} in {checkpoint.training['wall_time_s']:.1f} s; "
              f"local broker on {broker.bootstrap_servers}")
        settings = _demo_settings(broker.bootstrap_servers, checkpoint_path)
        ensure_topics(settings.kafka.connection(), {"events": INPUT_PARTITIONS, "alerts": 1,
                                                    "events-dead-letter": 1, "scores": INPUT_PARTITIONS})
        with DaemonThread(settings, checkpoint) as running:
            sink = KafkaSink(settings.kafka.connection(), topics=["events"])
            for value in MALFORMED_RECORDS:
                sink.send("events", b"malformed", value)
            sink.flush()
            sink.close()
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as producer:
                sent = producer.submit(replay, dataset, test_rows, settings.kafka.connection(), "events",
                                       rate_eps, progress).result()
            running.wait_accounted(sent.events + len(MALFORMED_RECORDS), 120)
            latencies = running.daemon.metrics.end_to_end_latency.recent()
        counts = running.daemon.metrics.totals()
        scores = read_topic(settings.kafka.connection(), "scores", counts["events_scored"])
        quality = _streamed_metrics(dataset, [record.value for record in scores])

    summary = {
        "dataset": dataset.name,
        "model": checkpoint.model_name,
        "events_in": counts["events_in"],
        "events_scored": counts["events_scored"],
        "dead_lettered": counts["dead_lettered"],
        "alerts": counts["alerts"],
        "anomalies_replayed": int(dataset.labels[test_rows].sum()),
        **quality,
        "latency_p50_s": float(np.quantile(latencies, 0.5)),
        "latency_p99_s": float(np.quantile(latencies, 0.99)),
        "replay_events_per_s": sent.events_per_second,
        "training_s": checkpoint.training["wall_time_s"],
        "wall_s": time.perf_counter() - started,
    }
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """The demo's figures for a person."""
    print(f"""
stream-ae demo on {summary['dataset']} ({summary['model']} autoencoder)
  events in        {summary['events_in']:>10,}   scored {summary['events_scored']:,}, dead-lettered {summary['dead_lettered']:,}
  alerts           {summary['alerts']:>10,}   ({summary['anomalies_replayed']:,} anomalies were replayed)
  AUC-ROC          {summary['auc_roc']:>10.4f}   AUC-PR {summary['auc_pr']:.4f}
  precision        {summary['precision']:>10.4f}   recall {summary['recall']:.4f}   (adaptive threshold)
  latency p50      {summary['latency_p50_s'] * 1000:>8.1f} ms   p99 {summary['latency_p99_s'] * 1000:.1f} ms   (record timestamp → alerts acknowledged)
  wall time        {summary['wall_s']:>8.1f} s    (training {summary['training_s']:.1f} s)""")  # noqa: E501 (the printout's lines)
