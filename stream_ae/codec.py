"""Records ↔ events: decoding consumed records into a batch, encoding events for producers.

Wire format (JSON, UTF-8, one object per record):

* transaction: ``{"id": "tx-1", "V1": -1.36, ..., "Amount": 149.62}``: every feature named in
  the checkpoint must be present and numeric; other fields are ignored;
* window: ``{"id": "beat-7", "samples": [-0.11, ...]}``: exactly the checkpoint's window length.

A record that fails goes to the dead-letter topic with one of the ``REASONS`` below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
import orjson

REASONS = (
    "empty",             # no value, or zero bytes
    "oversize",          # more bytes than events.max_record_bytes
    "not_utf8",          # the bytes are not UTF-8 text
    "invalid_json",      # UTF-8 but not JSON
    "not_an_object",     # JSON but not an object
    "missing_field",     # a feature (or the samples array) is absent
    "non_numeric",       # a feature or sample is not a JSON number (strings, booleans, null)
    "non_finite",        # NaN, Infinity, or a number beyond float32's range
    "wrong_window_length",  # a window whose sample count differs from the model's
)

_NUMBER_TYPES = frozenset({int, float})


class Record(Protocol):
    """What the codec reads of a consumed Kafka record (kafka-python's ``ConsumerRecord`` fits)."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class Rejected:
    """A record that could not be decoded: the record, a reason from ``REASONS``, and details."""

    record: Record
    reason: str
    detail: str


@dataclass(frozen=True)
class Batch:
    """Decoded events of one micro-batch, in consumption order.

    Attributes:
        values: float32 array of shape ``(events, features)`` (``features`` = window length
            for windows).
        records: the source record of each event (topic, partition, offset, key, timestamp).
        event_ids: the event's id field, or None where absent.
        partition_index: int32 array ``(events,)`` indexing ``partitions``.
        partitions: the distinct ``(topic, partition)`` pairs of the batch.
        timestamps_ms: int64 array ``(events,)`` of record timestamps in milliseconds.
    """

    values: np.ndarray
    records: list[Record]
    event_ids: list[str | None]
    partition_index: np.ndarray
    partitions: list[tuple[str, int]]
    timestamps_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.records)


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _parse_object(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """JSON object from record bytes; raises ``_Invalid`` with the reason otherwise."""
    if not value:
        raise _Invalid("empty", "record has no value")
    if len(value) > max_bytes:
        raise _Invalid("oversize", f"{len(value)} bytes > limit of {max_bytes}")
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        # Cold path: find out why. Python's json accepts NaN/Infinity, which orjson rejects.
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as utf_exc:
            raise _Invalid("not_utf8", str(utf_exc)) from None
        try:
            parsed = json.loads(text)
        except ValueError:
            raise _Invalid("invalid_json", str(exc)) from None
    if not isinstance(parsed, dict):
        raise _Invalid("not_an_object", f"JSON {type(parsed).__name__}, expected an object")
    return parsed


def _check_numbers(values: list[Any], what: str) -> None:
    if not set(map(type, values)) <= _NUMBER_TYPES:
        bad = next(v for v in values if type(v) not in _NUMBER_TYPES)
        raise _Invalid("non_numeric", f"{what}: {type(bad).__name__} value {str(bad)[:40]!r}")


class EventDecoder:
    """Decodes records of one event kind into a :class:`Batch`.

    Args:
        feature_names: for transactions, the checkpoint's feature names (the column order
            of ``values``); for windows, ignored beyond their count.
        window_length: samples per window, or None for transactions.
        id_field: name of the optional id field.
        samples_field: name of the window's samples array.
        max_record_bytes: larger records are rejected as ``oversize``.
    """

    def __init__(self, feature_names: list[str], window_length: int | None, id_field: str = "id",
                 samples_field: str = "samples", max_record_bytes: int = 1_000_000) -> None:
        self.feature_names = list(feature_names)
        self.window_length = window_length
        self.id_field = id_field
        self.samples_field = samples_field
        self.max_record_bytes = max_record_bytes
        self.width = window_length if window_length is not None else len(self.feature_names)

    def _row(self, event: dict[str, Any]) -> list[Any]:
        if self.window_length is None:
            try:
                row = [event[name] for name in self.feature_names]
            except KeyError as exc:
                raise _Invalid("missing_field", f"field {exc.args[0]!r} is absent") from None
            _check_numbers(row, "feature")
            return row
        row = event.get(self.samples_field)
        if row is None:
            raise _Invalid("missing_field", f"field {self.samples_field!r} is absent")
        if not isinstance(row, list):
            raise _Invalid("non_numeric", f"{self.samples_field!r} is a {type(row).__name__}, not an array")
        if len(row) != self.window_length:
            raise _Invalid("wrong_window_length", f"{len(row)} samples, expected {self.window_length}")
        _check_numbers(row, "sample")
        return row

    def decode(self, records: Iterable[Record]) -> tuple[Batch, list[Rejected]]:
        """Decode records into a batch of valid events and a list of rejected records.

        Returns:
            ``(batch, rejected)``; every input record is in exactly one of the two.
        """
        rows: list[list[Any]] = []
        accepted: list[Record] = []
        ids: list[str | None] = []
        rejected: list[Rejected] = []
        for record in records:
            try:
                event = _parse_object(record.value, self.max_record_bytes)
                rows.append(self._row(event))
            except _Invalid as invalid:
                rejected.append(Rejected(record, invalid.reason, invalid.detail))
                continue
            accepted.append(record)
            event_id = event.get(self.id_field)
            ids.append(None if event_id is None else str(event_id))

        values = np.array(rows, dtype=np.float64).reshape(len(rows), self.width)
        with np.errstate(over="ignore"):
            values = values.astype(np.float32)
        finite = np.isfinite(values).all(axis=1)
        if not finite.all():
            for index in np.flatnonzero(~finite):
                rejected.append(Rejected(accepted[index], "non_finite", "a value beyond float32's range"))
            keep = np.flatnonzero(finite)
            values = values[keep]
            accepted = [accepted[i] for i in keep]
            ids = [ids[i] for i in keep]
        return _assemble(values, accepted, ids), rejected


def _assemble(values: np.ndarray, records: list[Record], ids: list[str | None]) -> Batch:
    slots: dict[tuple[str, int], int] = {}
    partition_index = np.fromiter(
        (slots.setdefault((r.topic, r.partition), len(slots)) for r in records),
        dtype=np.int32, count=len(records))
    timestamps = np.fromiter((r.timestamp for r in records), dtype=np.int64, count=len(records))
    return Batch(values, records, ids, partition_index, list(slots), timestamps)


def encode_event(values: np.ndarray, feature_names: list[str], window: bool, event_id: str) -> bytes:
    """Encode one event as the JSON the decoder reads.

    Args:
        values: ``(features,)`` numbers of one event.
        feature_names: field names for transactions (ignored for windows).
        window: True to write ``{"id", "samples"}``, False for named fields.
        event_id: the id field's value.
    """
    numbers = values.tolist()
    if window:
        return orjson.dumps({"id": event_id, "samples": numbers})
    event: dict[str, Any] = {"id": event_id}
    event.update(zip(feature_names, numbers))
    return orjson.dumps(event)
