"""What the daemon publishes: alert, score and dead-letter records.

Alert value (JSON), keyed ``topic-partition-offset`` of the source record so that
downstream consumers can drop the duplicates that at-least-once delivery allows::

    {"key": "events-0-1234", "topic": "events", "partition": 0, "offset": 1234,
     "event_id": "tx-17", "event_timestamp_ms": 1700000000000, "detected_at_ms": 1700000000042,
     "reconstruction_error": 7.3, "threshold": 2.1, "zscore": 9.8,
     "model": "deep", "checkpoint_sha256": "…",
     "top_features": [{"name": "V14", "error": 40.2}, ...]}

A score record (optional scores topic) carries the same fields but ``top_features`` and
adds ``"anomaly": true|false``. A dead-lettered record keeps its key, value and headers,
and gains the headers ``stream_ae.reason``, ``stream_ae.detail`` and ``stream_ae.source``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from stream_ae.codec import Batch, Rejected
from stream_ae.scorer import Scores
from stream_ae.threshold import Verdict

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


def _common_fields(batch: Batch, index: int, scores: Scores, verdict: Verdict,
                   detected_at_ms: int, model: ModelIdentity) -> dict:
    topic, partition = batch.partitions[batch.partition_index[index]]
    offset = int(batch.offsets[index])
    return {
        "key": record_key(topic, partition, offset),
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "event_id": batch.event_ids[index],
        "event_timestamp_ms": int(batch.timestamps_ms[index]),
        "detected_at_ms": detected_at_ms,
        "reconstruction_error": float(scores.errors[index]),
        "threshold": float(verdict.thresholds[index]),
        "zscore": float(verdict.zscores[index]),
        "model": model.name,
        "checkpoint_sha256": model.checkpoint_sha256,
    }


def alert_records(batch: Batch, scores: Scores, verdict: Verdict, attribution_names: list[str],
                  detected_at_ms: int, model: ModelIdentity) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of an alert for every flagged event of the batch."""
    out = []
    flagged = np.flatnonzero(verdict.flags)
    if len(flagged) == 0:
        return out
    top_index, top_error = scores.top_features(flagged)
    for index, features, errors in zip(flagged, top_index.tolist(), top_error.tolist()):
        alert = _common_fields(batch, index, scores, verdict, detected_at_ms, model)
        alert["top_features"] = [{"name": attribution_names[feature], "error": error}
                                 for feature, error in zip(features, errors)]
        out.append((alert["key"].encode(), orjson.dumps(alert)))
    return out


def score_records(batch: Batch, scores: Scores, verdict: Verdict, detected_at_ms: int,
                  model: ModelIdentity) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of a score record for every event of the batch."""
    out = []
    for index in range(len(batch)):
        score = _common_fields(batch, index, scores, verdict, detected_at_ms, model)
        score["anomaly"] = bool(verdict.flags[index])
        out.append((score["key"].encode(), orjson.dumps(score)))
    return out


def dead_letter_headers(rejected: Rejected) -> list[tuple[str, bytes]]:
    """The rejected record's own headers plus the reason, the detail and the source key."""
    record = rejected.record
    return [*(record.headers or []),
            (REASON_HEADER, rejected.reason.encode()),
            (DETAIL_HEADER, rejected.detail[:1000].encode("utf-8", "replace")),
            (SOURCE_HEADER, record_key(record.topic, record.partition, record.offset).encode())]
