"""What the daemon publishes: alert, score and dead-letter records.

Alert value (JSON), keyed ``topic-partition-offset`` of the source record so that
downstream consumers can drop the duplicates that at-least-once delivery allows::

    {"key": "events-0-1234", "topic": "events", "partition": 0, "offset": 1234,
     "event_id": "tx-17", "event_timestamp_ms": 1700000000000, "detected_at_ms": 1700000000042,
     "score": 7.3, "threshold": 2.1, "zscore": 9.8, "model": "deep", "checkpoint_sha256": "…",
     "reconstruction_error": 1.9,
     "top_features": [{"name": "V14", "error": 40.2}, ...]}

``score`` is what the threshold judges (the detector's score, :mod:`stream_ae.model.detector`:
the memory-bank distance by default); the detector's named values come after the model's
fields (the autoencoder's ``reconstruction_error``: the model's mean squared
reconstruction error of the standardised event), and ``top_features`` are the features
with the largest attribution (the autoencoder's: squared error). A score record (optional
scores topic) carries the same fields but ``top_features`` and adds
``"anomaly": true|false``. Every number in them is finite: the
codec refuses values whose score would not be, and a score that overflows all the same (a
model's exponential, say) is written as the largest float32 of its sign (NaN as the
positive one), never as JSON ``null``.

A dead-lettered record keeps its key, value and headers, and gains the headers
``stream_ae.reason``, ``stream_ae.detail`` and ``stream_ae.source``. One that would not fit
in a produce request (the sink's ``max_request_bytes``) is written as a reference
instead: its key (when under 1 KiB), only those three headers, and the value
``{"topic": …, "partition": …, "offset": …, "size": <bytes of key, value and headers>,
"reason": "oversize"}``, so that the record can be read from the input topic while it
is retained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from stream_ae.model.detector import Scores
from stream_ae.pipeline.codec import FLOAT32_MAX, Batch, Rejected
from stream_ae.pipeline.threshold.adaptive import Verdict

REASON_HEADER = "stream_ae.reason"
DETAIL_HEADER = "stream_ae.detail"
SOURCE_HEADER = "stream_ae.source"
# bytes a produce request adds to a record's key, value and header bytes: the record
# batch's 61-byte header and the record's own varints (generous), and per header
REQUEST_OVERHEAD_BYTES = 256
HEADER_OVERHEAD_BYTES = 16
REFERENCE_KEY_BYTES = 1024  # a reference keeps the record's key up to this size


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
    indices into the batch): the score, the threshold's and the model's, then the detector's
    named values (:attr:`~stream_ae.model.detector.Scores.values`); each column is read out
    of its array once, not per event."""
    slots = batch.partition_index[rows].tolist()
    named = [(name, finite(values[rows])) for name, values in scores.values.items()]
    columns = zip(slots, batch.offsets[rows].tolist(), [batch.event_ids[row] for row in rows.tolist()],
                  batch.timestamps_ms[rows].tolist(), finite(scores.score[rows]),
                  finite(verdict.thresholds[rows]), finite(verdict.zscores[rows]))
    out = []
    for index, (slot, offset, event_id, timestamp_ms, score, threshold, zscore) in enumerate(columns):
        topic, partition = batch.partitions[slot]
        fields = {
            "key": record_key(topic, partition, offset),
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "event_id": event_id,
            "event_timestamp_ms": timestamp_ms,
            "detected_at_ms": detected_at_ms,
            "score": score,
            "threshold": threshold,
            "zscore": zscore,
            "model": model.name,
            "checkpoint_sha256": model.checkpoint_sha256,
        }
        for name, column in named:  # a literal with them inside would cost twice as much per event
            fields[name] = column[index]
        out.append(fields)
    return out


def finite(numbers: np.ndarray) -> list[Any]:
    """``numbers`` (any shape) as (nested) lists of finite floats: ±Infinity as ± the largest
    float32, NaN as the largest float32 (orjson would write them as ``null``).

    Example:
        >>> finite(np.array([1.5, np.inf, -np.inf, np.nan])) == [1.5, FLOAT32_MAX, -FLOAT32_MAX, FLOAT32_MAX]
        True
    """
    array = np.asarray(numbers, np.float64)
    if np.isfinite(array).all():
        return array.tolist()
    return np.nan_to_num(array, nan=FLOAT32_MAX, posinf=FLOAT32_MAX, neginf=-FLOAT32_MAX).tolist()


def alert_records(batch: Batch, scores: Scores, verdict: Verdict, attribution_names: list[str],
                  detected_at_ms: int, model: ModelIdentity) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of an alert for every flagged event of the batch."""
    flagged = np.flatnonzero(verdict.flags)
    if len(flagged) == 0:
        return []
    top_index, top_error = scores.top_features(flagged)
    out = []
    for alert, features, errors in zip(_common_fields(batch, flagged, scores, verdict, detected_at_ms, model),
                                       top_index.tolist(), finite(top_error)):
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
    return [*(rejected.record.headers or []), *_rejection_headers(rejected)]


def _rejection_headers(rejected: Rejected) -> list[tuple[str, bytes]]:
    record = rejected.record
    return [(REASON_HEADER, rejected.reason.encode()),
            (DETAIL_HEADER, rejected.detail[:1000].encode("utf-8", "replace")),
            (SOURCE_HEADER, record_key(record.topic, record.partition, record.offset).encode())]


def _payload_bytes(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> int:
    """Bytes of a record's key, value, header names and header values."""
    return len(key or b"") + len(value or b"") + sum(len(name.encode()) + len(content) for name, content in headers)


def request_bytes(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> int:
    """Bytes a record takes in a produce request, at most: its key, value and headers, plus
    :data:`REQUEST_OVERHEAD_BYTES` and :data:`HEADER_OVERHEAD_BYTES` per header."""
    return REQUEST_OVERHEAD_BYTES + HEADER_OVERHEAD_BYTES * len(headers) + _payload_bytes(key, value, headers)


def dead_letter_record(rejected: Rejected, max_request_bytes: int
                       ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` of the dead letter of a rejected record: the record whole
    with :func:`dead_letter_headers` when it fits in ``max_request_bytes`` (see
    :func:`request_bytes`), else a reference (the module docstring).

    Example:
        >>> from types import SimpleNamespace
        >>> record = SimpleNamespace(topic="events", partition=0, offset=7, key=b"k", value=b"x" * 5000, headers=[])
        >>> key, value, headers = dead_letter_record(Rejected(record, "oversize", "5000 bytes"), 4096)
        >>> key, value
        (b'k', b'{"topic":"events","partition":0,"offset":7,"size":5001,"reason":"oversize"}')
    """
    record = rejected.record
    headers = dead_letter_headers(rejected)
    if request_bytes(record.key, record.value, headers) <= max_request_bytes:
        return record.key, record.value, headers
    reference = {"topic": record.topic, "partition": record.partition, "offset": record.offset,
                 "size": _payload_bytes(record.key, record.value, record.headers or []), "reason": "oversize"}
    key = record.key if record.key is not None and len(record.key) <= REFERENCE_KEY_BYTES else None
    return key, orjson.dumps(reference), _rejection_headers(rejected)
