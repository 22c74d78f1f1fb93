"""What the daemon publishes: alert, score and dead-letter records.

Alert value (JSON), keyed ``topic-partition-offset`` of the source record so that
downstream consumers can drop the duplicates that at-least-once delivery allows::

    {"key": "events-0-1234", "topic": "events", "partition": 0, "offset": 1234,
     "event_id": "tx-17", "event_timestamp_ms": 1700000000000, "detected_at_ms": 1700000000042,
     "score": 7.3, "reconstruction_error": 1.9, "threshold": 2.1, "zscore": 9.8,
     "model": "deep", "checkpoint_sha256": "…",
     "top_features": [{"name": "V14", "error": 40.2}, ...]}

``score`` is what the threshold judges (the memory-bank distance by default, see
:mod:`stream_ae.model.memory_bank`); ``reconstruction_error`` is the model's mean squared
reconstruction error of the standardised event, and ``top_features`` the features with the
largest squared error. A score record (optional scores topic) carries the same fields but ``top_features`` and
adds ``"anomaly": true|false``. A dead-lettered record keeps its key, value and headers,
and gains the headers ``stream_ae.reason``, ``stream_ae.detail`` and ``stream_ae.source``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from stream_ae.pipeline.codec import Batch, Rejected
from stream_ae.pipeline.scoring.autoencoder import Scores
from stream_ae.pipeline.threshold.adaptive import Verdict

REASON_HEADER = "stream_ae.reason"
DETAIL_HEADER = "stream_ae.detail"
SOURCE_HEADER = "stream_ae.source"


def record_key(topic: str, partition: int, offset: int) -> str:
    """The idempotency key of a source record: ``topic-partition-offset``."""
    return f"{topic}-{partition}-{offset}"


@dataclass(frozen=True)
class ModelIdentity:
    """Which model produced a score: its name and checkpoint sha256."""

    name: str
    checkpoint_sha256: str


def _common_fields(batch: Batch, rows: np.ndarray, scores: Scores, verdict: Verdict,
                   detected_at_ms: int, model: ModelIdentity) -> list[dict]:
    """The fields alerts and score records share, one dict per row of ``rows`` (int ``(k,)``
    indices into the batch); each column is read out of its array once, not per event."""
    slots = batch.partition_index[rows].tolist()
    columns = zip(slots, batch.offsets[rows].tolist(), [batch.event_ids[row] for row in rows.tolist()],
                  batch.timestamps_ms[rows].tolist(), scores.score[rows].tolist(),
                  scores.reconstruction_error[rows].tolist(),
                  verdict.thresholds[rows].tolist(), verdict.zscores[rows].tolist())
    out = []
    for slot, offset, event_id, timestamp_ms, score, error, threshold, zscore in columns:
        topic, partition = batch.partitions[slot]
        out.append({
            "key": record_key(topic, partition, offset),
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "event_id": event_id,
            "event_timestamp_ms": timestamp_ms,
            "detected_at_ms": detected_at_ms,
            "score": score,
            "reconstruction_error": error,
            "threshold": threshold,
            "zscore": zscore,
            "model": model.name,
            "checkpoint_sha256": model.checkpoint_sha256,
        })
    return out


def alert_records(batch: Batch, scores: Scores, verdict: Verdict, attribution_names: list[str],
                  detected_at_ms: int, model: ModelIdentity) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of an alert for every flagged event of the batch."""
    flagged = np.flatnonzero(verdict.flags)
    if len(flagged) == 0:
        return []
    top_index, top_error = scores.top_features(flagged)
    out = []
    for alert, features, errors in zip(_common_fields(batch, flagged, scores, verdict, detected_at_ms, model),
                                       top_index.tolist(), top_error.tolist()):
        alert["top_features"] = [{"name": attribution_names[feature], "error": error}
                                 for feature, error in zip(features, errors)]
        out.append((alert["key"].encode(), orjson.dumps(alert)))
    return out


def score_records(batch: Batch, scores: Scores, verdict: Verdict, detected_at_ms: int,
                  model: ModelIdentity) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of a score record for every event of the batch."""
    every = np.arange(len(batch))
    out = []
    for score, anomaly in zip(_common_fields(batch, every, scores, verdict, detected_at_ms, model),
                              verdict.flags.tolist()):
        score["anomaly"] = bool(anomaly)
        out.append((score["key"].encode(), orjson.dumps(score)))
    return out


def dead_letter_headers(rejected: Rejected) -> list[tuple[str, bytes]]:
    """The rejected record's own headers plus the reason, the detail and the source key."""
    record = rejected.record
    return [*(record.headers or []),
            (REASON_HEADER, rejected.reason.encode()),
            (DETAIL_HEADER, rejected.detail[:1000].encode("utf-8", "replace")),
            (SOURCE_HEADER, record_key(record.topic, record.partition, record.offset).encode())]
