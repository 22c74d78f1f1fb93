"""Records ↔ events: decoding consumed records into a batch, encoding events for producers.

Two payloads are accepted, record by record, in the same topic:

JSON (UTF-8, one object per record):

* transaction: ``{"id": "tx-1", "V1": -1.36, ..., "Amount": 149.62}``: every feature named in
  the checkpoint must be present and numeric; other fields are ignored;
* window: ``{"id": "beat-7", "samples": [-0.11, ...]}``: exactly the checkpoint's window length.

Compact binary (for producers that control the format), little-endian::

    offset  size       field
    0       2          magic  b"\\xaeA" (0xAE 0x41; 0xAE never starts UTF-8 text, so a
                       binary record is never mistaken for JSON)
    2       1          version, uint8: 1
    3       1          flags, uint8: 0 (reserved)
    4       4          count, uint32: number of values that follow
    8       4 * count  values, float32: the features in the checkpoint's order (the
                       window's samples for windows)

A binary event has no id field (``event_ids`` holds None; alerts name it by
topic-partition-offset). A record that fails goes to the dead-letter topic with one of
the ``REASONS`` below.

Every value must give the model a finite input and a finite score: NaN, ±Infinity and
numbers beyond float32's range are ``non_finite``; given the checkpoint's scaler, a finite
value more than :data:`MAX_STANDARD_DEVIATIONS` training standard deviations from its
feature's training mean is ``out_of_range``. The model sees ``(x - mean) / std``, its error
squares that (float32 holds squares up to about 3.4e38, so up to about 1.8e19), and its
layers amplify it further; within the bound the score of the dense models is about
``(distance)²`` at most, some 1e18, far inside float32's range, and beyond it a finite
score is not assured.

Decoding is batched: JSON goes through orjson, one call per record, and a feature lookup
done in C (``operator.itemgetter``); binary records are joined and read with one
``numpy.frombuffer`` (with no Python work per record when the whole batch is binary and
well formed); both land in a preallocated float32 array, allocated by the caller's
``allocate`` (the detector's pinned host memory on CUDA, so that the copy to the device can
be asynchronous).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, cast

import numpy as np
import orjson

from stream_ae.kafka.records import ConsumedBatch, PartitionKey, Record

REASONS = (
    "empty",             # no value, or zero bytes
    "oversize",          # more bytes than events.max_record_bytes
    "not_utf8",          # the bytes are not UTF-8 text
    "invalid_json",      # UTF-8 but not JSON
    "not_an_object",     # JSON but not an object
    "missing_field",     # a feature (or the samples array) is absent
    "non_numeric",       # a feature or sample is not a JSON number (strings, booleans, null)
    "non_finite",        # NaN, Infinity, or a number beyond float32's range
    "out_of_range",      # finite, but more than MAX_STANDARD_DEVIATIONS training stds from the training mean
    "wrong_window_length",  # a window whose sample count differs from the model's
    "binary_unsupported_version",  # binary magic, but a version or flags this decoder does not know
    "binary_bad_length",   # binary record shorter than its header, or not 8 + 4 * count bytes
    "binary_wrong_count",  # binary value count differs from the model's features (window length)
)

MAX_STANDARD_DEVIATIONS = 1e9  # the bound of out_of_range (see the module docstring)
FLOAT32_MAX = float(np.finfo(np.float32).max)

BINARY_MAGIC = b"\xaeA"
BINARY_VERSION = 1
BINARY_HEADER = struct.Struct("<2sBBI")  # magic, version, flags, count: 8 bytes


def binary_record_size(count: int) -> int:
    """Bytes of a binary record of ``count`` float32 values: the 8-byte header, then the values."""
    return BINARY_HEADER.size + 4 * count


def _host_array(rows: int, width: int) -> np.ndarray:
    return np.empty((rows, width), np.float32)

_NUMBER_TYPES = frozenset({int, float})


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
            for windows): a view of the decoder's buffer, valid until its next ``decode``.
        event_ids: the event's id field, or None where absent, ``(events,)``.
        partitions: the distinct ``(topic, partition)`` pairs of the consumed batch.
        partition_index: int32 array ``(events,)`` indexing ``partitions``.
        offsets: int64 array ``(events,)`` of the source records' offsets.
        timestamps_ms: int64 array ``(events,)`` of record timestamps in milliseconds.
    """

    values: np.ndarray
    event_ids: list[str | None]
    partitions: list[PartitionKey]
    partition_index: np.ndarray
    offsets: np.ndarray
    timestamps_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets)


class InvalidRecordError(Exception):
    """A record that cannot be decoded: its dead-letter ``reason`` and a ``detail`` for people
    (raised and caught inside the decoders; a caller sees :class:`Rejected`)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _parse_object(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """JSON object from record bytes; raises ``InvalidRecordError`` with the reason otherwise."""
    if not value:
        raise InvalidRecordError("empty", "record has no value")
    if len(value) > max_bytes:
        raise InvalidRecordError("oversize", f"{len(value)} bytes > limit of {max_bytes}")
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        # Cold path: find out why. Python's json accepts NaN/Infinity, which orjson rejects.
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as utf_exc:
            raise InvalidRecordError("not_utf8", str(utf_exc)) from None
        try:
            parsed = json.loads(text)
        except ValueError:
            raise InvalidRecordError("invalid_json", str(exc)) from None
    if not isinstance(parsed, dict):
        raise InvalidRecordError("not_an_object", f"JSON {type(parsed).__name__}, expected an object")
    return parsed


def _check_numbers(values: Sequence[Any], what: str) -> None:
    if not set(map(type, values)) <= _NUMBER_TYPES:
        bad = next(v for v in values if type(v) not in _NUMBER_TYPES)
        raise InvalidRecordError("non_numeric", f"{what}: {type(bad).__name__} value {str(bad)[:40]!r}")


class EventDecoder:
    """Decodes records of one event kind into a :class:`Batch`.

    Args:
        feature_names: for transactions, the checkpoint's feature names (the column order
            of ``values``); for windows, ignored beyond their count.
        window_length: samples per window, or None for transactions.
        id_field: name of the optional id field.
        samples_field: name of the window's samples array.
        max_record_bytes: larger records are rejected as ``oversize``.
        allocate: ``(rows, width) -> float32 array`` for the values buffer (grown by powers
            of two, so called rarely); by default plain host memory. The daemon passes its
            detector's ``host_buffer`` (pinned memory on CUDA).
        scaler: the checkpoint's ``(scaler_mean, scaler_std)``, float ``(width,)`` each: a
            value farther than :data:`MAX_STANDARD_DEVIATIONS` · std from its mean is
            rejected as ``out_of_range``; None checks only that values are finite in float32.
    """

    def __init__(self, feature_names: list[str], window_length: int | None, id_field: str = "id",
                 samples_field: str = "samples", max_record_bytes: int = 1_000_000,
                 allocate: Callable[[int, int], np.ndarray] = _host_array,
                 scaler: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.feature_names = list(feature_names)
        self.window_length = window_length
        self.id_field = id_field
        self.samples_field = samples_field
        self.max_record_bytes = max_record_bytes
        self.width = window_length if window_length is not None else len(self.feature_names)
        self.binary_size = binary_record_size(self.width)
        self.allocate = allocate
        # transactions: one C call picks every feature, always as a tuple
        names = self.feature_names
        self._pick = (itemgetter(*names) if len(names) > 1
                      else (lambda event, name=names[0]: (event[name],)))
        self._buffer = np.empty((0, self.width), np.float32)
        self._binary_row = np.dtype([("magic", "S2"), ("version", "u1"), ("flags", "u1"),
                                     ("count", "<u4"), ("values", "<f4", (self.width,))])
        # the fast path compares the whole 8-byte header of a row at once, as one integer
        self._binary_header_row = np.dtype([("header", "<u8"), ("values", "<f4", (self.width,))])
        self._expected_header = int.from_bytes(
            BINARY_HEADER.pack(BINARY_MAGIC, BINARY_VERSION, 0, self.width), "little")
        self.scaler = scaler
        self._low, self._high = self._bounds(scaler)

    def _bounds(self, scaler: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(width,)`` lowest and highest values decoded; NaN and ±Infinity fall
        outside both, so one pair of comparisons checks finiteness and range at once."""
        if scaler is None:
            return np.full(self.width, -FLOAT32_MAX, np.float32), np.full(self.width, FLOAT32_MAX, np.float32)
        mean, std = (np.asarray(part, np.float64).reshape(-1) for part in scaler)
        if mean.shape != (self.width,) or std.shape != (self.width,):
            raise ValueError(f"scaler of {mean.shape} means and {std.shape} stds for {self.width} values per event")
        reach = MAX_STANDARD_DEVIATIONS * np.abs(std)
        low, high = (np.clip(bound, -FLOAT32_MAX, FLOAT32_MAX).astype(np.float32)
                     for bound in (mean - reach, mean + reach))
        return low, high

    def _reserve(self, rows: int) -> np.ndarray:
        """The values buffer, grown to a power of two of at least ``rows`` rows."""
        if len(self._buffer) < rows:
            self._buffer = self.allocate(1 << max(rows - 1, 0).bit_length(), self.width)
        return self._buffer

    def _row(self, event: dict[str, Any]) -> Sequence[Any]:
        """The event's numbers, checked one by one (the cold path that names the fault)."""
        if self.window_length is None:
            try:
                row = self._pick(event)
            except KeyError as exc:
                raise InvalidRecordError("missing_field", f"field {exc.args[0]!r} is absent") from None
            _check_numbers(row, "feature")
            return row
        row = event.get(self.samples_field)
        if row is None:
            raise InvalidRecordError("missing_field", f"field {self.samples_field!r} is absent")
        if not isinstance(row, list):
            raise InvalidRecordError("non_numeric", f"{self.samples_field!r} is a {type(row).__name__}, not an array")
        if len(row) != self.window_length:
            raise InvalidRecordError("wrong_window_length", f"{len(row)} samples, expected {self.window_length}")
        _check_numbers(row, "sample")
        return row

    def _fast_row(self, event: Any) -> Sequence[Any]:
        """The event's numbers, types unchecked; any exception sends the record to :meth:`_row`."""
        if self.window_length is None:
            return self._pick(event)
        row = event[self.samples_field]
        if type(row) is not list or len(row) != self.window_length:
            raise ValueError
        return row

    def decode(self, consumed: ConsumedBatch) -> tuple[Batch, list[Rejected]]:
        """Decode a consumed micro-batch into a batch of valid events and the rejected records.

        A batch made only of well-formed binary records (the common case for producers that
        use that payload) is read with no Python work per record; any other batch is read
        record by record (:meth:`_decode_each`).

        Args:
            consumed: the micro-batch, ``(records,)`` columns.

        Returns:
            ``(batch, rejected)``; every consumed record is in exactly one of the two.
            ``batch.values`` is a view of this decoder's buffer, overwritten by the next call.

        Example:
            >>> from stream_ae.kafka.records import ConsumedBatch
            >>> decoder = EventDecoder(["V1", "V2"], None)
            >>> consumed = ConsumedBatch.from_columns(
            ...     [b'{"id": "tx-1", "V1": 0.5, "V2": -1}', b"not json"], ["events"] * 2, [0, 0], [7, 8],
            ...     [0, 0], record_at=lambda index: None)
            >>> batch, rejected = decoder.decode(consumed)
            >>> batch.values.tolist(), batch.event_ids, [item.reason for item in rejected]
            ([[0.5, -1.0]], ['tx-1'], ['invalid_json'])
        """
        binary = self._well_formed_binary(consumed.values)
        accepted: list[int] | None  # indices of the decoded records; None: all of them
        ids: list[Any]
        failed: dict[int, InvalidRecordError]
        if binary is not None:
            accepted, ids, failed = None, [], {}
            out = self._reserve(len(binary))[:len(binary)]
            out[:] = binary
        else:
            out, accepted, ids, failed = self._decode_each(consumed.values)
        if not ((out >= self._low).all() and (out <= self._high).all()):  # False for NaN and ±inf too
            inside = ((out >= self._low) & (out <= self._high)).all(axis=1)
            if accepted is None:
                accepted, ids = list(range(len(out))), [None] * len(out)
            for slot in np.flatnonzero(~inside):
                index = accepted[slot]
                failed.setdefault(index, self._value_fault(out[slot], consumed.values[index]))
        if failed:
            assert accepted is not None  # failures come from _decode_each or the range check above
            keep = [slot for slot, index in enumerate(accepted) if index not in failed]
            if len(keep) < len(accepted):
                kept = out[keep]
                out = out[:len(keep)]
                out[:] = kept
                accepted = [accepted[slot] for slot in keep]
        rejected = [Rejected(consumed.record(index), invalid.reason, invalid.detail)
                    for index, invalid in sorted(failed.items())]
        return self._assemble(out, consumed, accepted, ids), rejected

    def _what(self, column: int) -> str:
        """How a detail names a column: ``feature 'V1'``, or ``sample 17`` of a window."""
        return f"sample {column}" if self.window_length is not None else f"feature {self.feature_names[column]!r}"

    def _value_fault(self, row: np.ndarray, value: bytes | None) -> InvalidRecordError:
        """Why a decoded float32 ``row`` ``(width,)`` is refused: its first value that is not
        finite, or lies beyond the scaler's bound (the cold path: a few records at most)."""
        outside = (row < self._low) | (row > self._high) | ~np.isfinite(row)
        column = int(np.flatnonzero(outside)[0])
        cast, what = float(row[column]), self._what(column)
        if np.isnan(cast):
            return InvalidRecordError("non_finite", f"{what} is NaN")
        if np.isinf(cast):
            written = self._written_number(value, column)
            if written is None or written in ("Infinity", "-Infinity"):
                return InvalidRecordError("non_finite", f"{what} is {'-' if cast < 0 else ''}Infinity")
            limit = "float64" if math.isinf(float(written)) else "float32"
            shown = written if len(written) <= 24 else f"{written[:12]}... ({len(written)} characters)"
            return InvalidRecordError("non_finite", f"{what} = {shown} is beyond {limit}'s range")
        assert self.scaler is not None  # without a scaler, every finite float32 is inside
        mean, std = float(self.scaler[0][column]), float(self.scaler[1][column])
        distance = abs(cast - mean) / std if std else math.inf
        return InvalidRecordError("out_of_range", f"{what} = {cast:.4g} lies {distance:.3g} training standard "
                                             f"deviations from its training mean {mean:.4g}; at most "
                                             f"{MAX_STANDARD_DEVIATIONS:.0e} give a finite score")

    def _written_number(self, value: bytes | None, column: int) -> str | None:
        """The number a JSON record wrote at ``column``, as written (``1e39``, ``Infinity``),
        or None for a binary record."""
        if not value or value[:2] == BINARY_MAGIC:
            return None
        event = json.loads(value, parse_float=str, parse_int=str, parse_constant=str)
        row = event[self.samples_field] if self.window_length is not None else event[self.feature_names[column]]
        return str(row[column] if self.window_length is not None else row)

    def _well_formed_binary(self, values: list[bytes | None]) -> np.ndarray | None:
        """``(records, width)`` float32 values when every record is a well-formed binary
        payload of this decoder's width (one ``numpy.frombuffer``); None otherwise."""
        size = self.binary_size
        if not values or size > self.max_record_bytes:
            return None
        present = cast("list[bytes]", values)  # a None among them fails len() below
        try:
            lengths = np.fromiter(map(len, present), np.int64, len(present))
        except TypeError:  # a record without a value
            return None
        if (lengths != size).any():
            return None
        rows = np.frombuffer(b"".join(present), dtype=self._binary_header_row)
        if (rows["header"] != self._expected_header).any():
            return None
        return rows["values"]

    def _decode_each(self, values: list[bytes | None]
                     ) -> tuple[np.ndarray, list[int], list[Any], dict[int, InvalidRecordError]]:
        """Decode record by record (JSON, binary or malformed, mixed).

        Returns:
            ``(out, accepted, ids, failed)``: ``out`` ``(len(accepted), width)`` holds the
            values of the records at ``accepted`` (a view of the buffer); ``ids`` the id
            field per record (None where absent); ``failed`` the reason per rejected record.
        """
        loads, fast_row, limit, id_field = orjson.loads, self._fast_row, self.max_record_bytes, self.id_field
        json_at: list[int] = []
        json_rows: list[Sequence[Any]] = []
        binary_at: list[int] = []
        binary: list[bytes] = []  # the values of the records at binary_at
        ids: list[Any] = [None] * len(values)
        failed: dict[int, InvalidRecordError] = {}
        for index, value in enumerate(values):
            try:
                if value is None:
                    raise InvalidRecordError("empty", "record has no value")
                if len(value) > limit:
                    raise InvalidRecordError("oversize", f"{len(value)} bytes > limit of {limit}")
                if value[:2] == BINARY_MAGIC:
                    binary_at.append(index)
                    binary.append(value)
                    continue
                event = loads(value)
                row = fast_row(event)
                ids[index] = event.get(id_field)
            except InvalidRecordError as invalid:
                failed[index] = invalid
                continue
            except Exception:  # cold path: parse again, step by step, to name the reason
                try:
                    event = _parse_object(value, limit)
                    row = self._row(event)
                    ids[index] = event.get(id_field)
                except InvalidRecordError as invalid:
                    failed[index] = invalid
                    continue
            json_at.append(index)
            json_rows.append(row)
        if not set(map(type, chain.from_iterable(json_rows))) <= _NUMBER_TYPES:
            json_at, json_rows = self._drop_non_numeric(json_at, json_rows, failed)

        binary_values = self._decode_binary(binary, binary_at, failed)
        accepted = sorted(json_at + binary_at) if binary_at and json_at else (json_at or binary_at)
        out = self._reserve(len(accepted))[:len(accepted)]
        with np.errstate(over="ignore", invalid="ignore"):
            if json_at and binary_at:
                position = {index: slot for slot, index in enumerate(accepted)}
                out[[position[i] for i in binary_at]] = binary_values
                self._fill(out, json_rows, json_at, failed, [position[i] for i in json_at])
            elif json_at:
                self._fill(out, json_rows, json_at, failed)
            else:
                out[:] = binary_values
        return out, accepted, ids, failed

    def _fill(self, out: np.ndarray, rows: list[Sequence[Any]], at: list[int], failed: dict[int, InvalidRecordError],
              slots: list[int] | None = None) -> None:
        """Write JSON rows into ``out`` (at ``slots``, default in order); a number too large
        even for float64 (a huge JSON integer) fails only its own record, as non-finite."""
        try:
            if slots is None:
                out[:] = rows
            else:
                out[slots] = rows
            return
        except OverflowError:
            pass
        for n, row in enumerate(rows):
            try:
                out[n if slots is None else slots[n]] = row
            except OverflowError:
                column = next(i for i, number in enumerate(row) if abs(number) > FLOAT32_MAX)
                failed[at[n]] = InvalidRecordError("non_finite", f"{self._what(column)} is an integer of "
                                                            f"{len(str(abs(row[column])))} digits, beyond "
                                                            "float64's range")

    def _drop_non_numeric(self, at: list[int], rows: list[Sequence[Any]],
                          failed: dict[int, InvalidRecordError]) -> tuple[list[int], list[Sequence[Any]]]:
        kept_at, kept_rows = [], []
        what = "feature" if self.window_length is None else "sample"
        for index, row in zip(at, rows):
            try:
                _check_numbers(row, what)
            except InvalidRecordError as invalid:
                failed[index] = invalid
                continue
            kept_at.append(index)
            kept_rows.append(row)
        return kept_at, kept_rows

    def _decode_binary(self, values: list[bytes], at: list[int], failed: dict[int, InvalidRecordError]) -> np.ndarray:
        """``(k, width)`` values of the well-formed binary records among ``values``; the others
        go to ``failed`` and are removed from ``at`` (in place)."""
        size = self.binary_size
        for n in reversed(range(len(values))):
            value = values[n]
            if len(value) == size:
                continue
            if len(value) < BINARY_HEADER.size:
                reason = InvalidRecordError("binary_bad_length", f"{len(value)} bytes, shorter than the 8-byte header")
            else:
                _, version, flags, count = BINARY_HEADER.unpack_from(value)
                reason = self._binary_header_fault(version, flags, count, len(value))
            failed[at[n]] = reason
            del values[n], at[n]
        rows = np.frombuffer(b"".join(values), dtype=self._binary_row)
        bad = (rows["version"] != BINARY_VERSION) | (rows["flags"] != 0) | (rows["count"] != self.width)
        for n in reversed(np.flatnonzero(bad).tolist()):
            row = rows[n]
            failed[at[n]] = self._binary_header_fault(int(row["version"]), int(row["flags"]),
                                                      int(row["count"]), size)
            del at[n]
        return rows["values"][~bad]

    def _binary_header_fault(self, version: int, flags: int, count: int, length: int) -> InvalidRecordError:
        if version != BINARY_VERSION or flags != 0:
            return InvalidRecordError("binary_unsupported_version",
                                 f"version {version}, flags {flags}; this decoder reads version "
                                 f"{BINARY_VERSION} with flags 0")
        if length != binary_record_size(count):
            return InvalidRecordError("binary_bad_length",
                                 f"{length} bytes, but the header announces {count} values "
                                 f"({binary_record_size(count)} bytes)")
        return InvalidRecordError("binary_wrong_count", f"{count} values, expected {self.width}")

    @staticmethod
    def _assemble(values: np.ndarray, consumed: ConsumedBatch, accepted: list[int] | None,
                  ids: list[Any]) -> Batch:
        """The batch of the records at ``accepted`` (None: all of them, with no ids)."""
        if accepted is None:
            return Batch(values, [None] * len(values), consumed.partitions, consumed.partition_index,
                         consumed.offsets, consumed.timestamps_ms)
        event_ids = [None if ids[i] is None else str(ids[i]) for i in accepted]
        rows = np.asarray(accepted, np.int64)
        return Batch(values, event_ids, consumed.partitions, consumed.partition_index[rows],
                     consumed.offsets[rows], consumed.timestamps_ms[rows])


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


def encode_binary(values: np.ndarray) -> bytes:
    """Encode one event in the compact binary payload (layout in the module docstring).

    Args:
        values: ``(features,)`` numbers of one event, in the checkpoint's feature order
            (a window's samples); cast to float32.

    Example:
        >>> record = encode_binary(np.array([1.0, -2.5]))
        >>> len(record) == binary_record_size(2), record[:2] == BINARY_MAGIC
        (True, True)
        >>> np.frombuffer(record, "<f4", offset=BINARY_HEADER.size).tolist()
        [1.0, -2.5]
    """
    row = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    return BINARY_HEADER.pack(BINARY_MAGIC, BINARY_VERSION, 0, len(row)) + row.tobytes()
