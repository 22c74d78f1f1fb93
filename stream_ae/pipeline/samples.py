"""Sample records: one sample, or a chunk of consecutive samples, of a keyed series.

A metric exporter, a monitor or a sensor sends its samples as they come, keyed by its
source: the **series key** is the record key (UTF-8 text), or a configured field of a
JSON record. A record holds one sample or a chunk of consecutive, equally spaced
samples, each of one or more channels.

JSON (UTF-8, one object per record)::

    {"value": 0.93}                                     one sample, one channel
    {"value": [0.93, -0.2]}                             one sample, two channels
    {"timestamp": 1700000000000, "interval_ms": 2.7778,
     "samples": [0.93, 0.95, 0.91]}                     a chunk, one channel
    {"samples": [[0.93, -0.2], [0.95, -0.1]], "interval_ms": 1000}   a chunk, two channels

``timestamp`` is the first sample's time in milliseconds since the epoch (the record's
timestamp when absent); ``interval_ms`` the sampling interval (1000 / sample rate in Hz),
required when a chunk holds more than one sample.

Compact binary, little-endian::

    offset  size                  field
    0       2                     magic b"\\xaeS" (0xAE never starts UTF-8 text)
    2       1                     version, uint8: 1
    3       1                     flags, uint8: 0 (reserved)
    4       4                     count, uint32: samples in the chunk
    8       2                     channels, uint16
    10      2                     reserved, uint16: 0
    12      8                     timestamp, float64: the first sample, ms since the epoch
    20      8                     interval, float64: ms between samples
    28      4 * count * channels  values, float32, sample by sample (all channels of a sample together)

A record that fails goes to the dead-letter topic with one of :data:`SAMPLE_REASONS`; the
windowing stage adds ``timestamp_backwards`` (a chunk that starts before its series' last
sample), which needs each series' history.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson

from stream_ae.kafka.records import ConsumedBatch, PartitionKey
from stream_ae.pipeline.codec import FLOAT32_MAX, InvalidRecordError, Rejected

SAMPLE_REASONS = (
    "empty",                # no value, or zero bytes
    "oversize",             # more bytes than events.max_record_bytes
    "invalid_json",         # not a JSON object (not UTF-8, not JSON, or another JSON type)
    "missing_series",       # no record key, and no series field
    "missing_field",        # neither "value" nor "samples"
    "non_numeric",          # a sample is not a number
    "non_finite",           # NaN, Infinity, or beyond float32's range
    "wrong_channel_count",  # a sample's channels differ from the configured count
    "bad_interval",         # a chunk of several samples without a positive, finite interval_ms
    "binary_unsupported_version",  # sample magic, but a version or flags this decoder does not know
    "binary_bad_length",    # shorter than the header, or not as long as the header announces
    "timestamp_backwards",  # starts before the last sample of its series (from the windowing stage)
)

_NUMBERS = frozenset({int, float})  # JSON numbers as orjson gives them (bool is not one)

SAMPLE_MAGIC = b"\xaeS"
SAMPLE_VERSION = 1
SAMPLE_HEADER = struct.Struct("<2sBBIHHdd")  # magic, version, flags, count, channels, reserved, timestamp, interval


@dataclass(frozen=True)
class SampleBatch:
    """The accepted sample records of one micro-batch, in consumption order.

    Attributes:
        series: the distinct series keys of the batch.
        series_index: int32 ``(records,)`` indexing ``series``.
        counts: int64 ``(records,)`` samples per record (at least 1).
        values: float32 ``(samples, channels)``: every record's samples, one after another
            (record ``r`` holds rows ``starts[r]:starts[r] + counts[r]``).
        first_ms: float64 ``(records,)`` the first sample's time, ms since the epoch.
        interval_ms: float64 ``(records,)`` ms between samples (0 for a single sample).
        partitions: the distinct ``(topic, partition)`` pairs of the consumed batch.
        partition_index: int32 ``(records,)`` indexing ``partitions``.
        offsets: int64 ``(records,)`` the records' offsets.
        positions: int64 ``(records,)`` each record's index in the consumed batch.
    """

    series: list[str]
    series_index: np.ndarray
    counts: np.ndarray
    values: np.ndarray
    first_ms: np.ndarray
    interval_ms: np.ndarray
    partitions: list[PartitionKey]
    partition_index: np.ndarray
    offsets: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def starts(self) -> np.ndarray:
        """int64 ``(records,)``: each record's first row in ``values``."""
        return np.concatenate(([0], np.cumsum(self.counts)[:-1])).astype(np.int64) if len(self) else self.counts


def encode_samples(values: np.ndarray, first_ms: float, interval_ms: float = 0.0) -> bytes:
    """Encode a chunk of samples in the compact binary payload (layout in the module docstring).

    Args:
        values: float ``(samples,)`` (one channel) or ``(samples, channels)``; cast to float32.
        first_ms: the first sample's time, ms since the epoch.
        interval_ms: ms between samples (1000 / sample rate in Hz).

    Example:
        >>> record = encode_samples(np.array([1.0, 2.0, 3.0]), 1_700_000_000_000.0, 1000.0)
        >>> record[:2] == SAMPLE_MAGIC, len(record) == SAMPLE_HEADER.size + 3 * 4
        (True, True)
    """
    rows = np.asarray(values, dtype="<f4")
    rows = rows.reshape(len(rows), -1)
    header = SAMPLE_HEADER.pack(SAMPLE_MAGIC, SAMPLE_VERSION, 0, rows.shape[0], rows.shape[1], 0,
                                float(first_ms), float(interval_ms))
    return header + np.ascontiguousarray(rows).tobytes()


def encode_samples_json(values: np.ndarray, first_ms: float | None = None, interval_ms: float = 0.0,
                        series: str | None = None, series_field: str = "series") -> bytes:
    """Encode a chunk of samples as the JSON the decoder reads (``value`` for one sample).

    Args:
        values: ``(samples,)`` or ``(samples, channels)`` numbers.
        first_ms: the first sample's time, ms since the epoch (None: the record's timestamp).
        interval_ms: ms between samples.
        series: the series key, written to ``series_field`` (None: the record key carries it).
    """
    rows = np.asarray(values, dtype=np.float64)
    event: dict[str, Any] = {}
    if series is not None:
        event[series_field] = series
    if first_ms is not None:
        event["timestamp"] = first_ms
    if len(rows) == 1:
        event["value"] = rows[0].tolist()
    else:
        event["samples"] = rows.tolist()
        event["interval_ms"] = interval_ms
    return orjson.dumps(event)


class SampleDecoder:
    """Decodes sample records (JSON or binary, mixed) into a :class:`SampleBatch`.

    Args:
        channels: values per sample; a sample with another count is ``wrong_channel_count``.
        series_field: a JSON field naming the series, or None to take the record key.
        max_record_bytes: larger records are ``oversize``.

    Raises:
        ValueError: ``channels`` below 1.

    Example:
        >>> decoder = SampleDecoder(channels=1)
        >>> consumed = ConsumedBatch.from_columns(
        ...     [b'{"value": 0.5}', b'{"samples": [1, 2], "interval_ms": 1000}', b'{"value": NaN}'],
        ...     ["metrics"] * 3, [0, 0, 0], [4, 5, 6], [1000, 2000, 3000], record_at=lambda index: None,
        ...     record_keys=[b"cpu", b"mem", b"cpu"])
        >>> batch, rejected = decoder.decode(consumed)
        >>> batch.series, batch.counts.tolist(), batch.values.ravel().tolist()
        (['cpu', 'mem'], [1, 2], [0.5, 1.0, 2.0])
        >>> [(item.reason, item.detail) for item in rejected]
        [('non_finite', 'sample 0 channel 0 is nan')]
    """

    def __init__(self, channels: int = 1, series_field: str | None = None, max_record_bytes: int = 1_000_000) -> None:
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        self.channels = channels
        self.series_field = series_field
        self.max_record_bytes = max_record_bytes

    def decode(self, consumed: ConsumedBatch) -> tuple[SampleBatch, list[Rejected]]:
        """Decode a consumed micro-batch; every record is either in the batch or rejected.

        Args:
            consumed: the micro-batch, ``(records,)`` columns (record keys included).

        Returns:
            ``(batch, rejected)``, both in consumption order.
        """
        series: list[str] = []
        slots: dict[str, int] = {}
        accepted: list[int] = []
        series_index: list[int] = []
        chunks: list[np.ndarray] = []
        first: list[float] = []
        interval: list[float] = []
        rejected: list[Rejected] = []
        for index, value in enumerate(consumed.values):
            try:
                key, chunk, start, step = self._one(value, consumed.record_keys[index],
                                                    float(consumed.timestamps_ms[index]))
            except InvalidRecordError as invalid:
                rejected.append(Rejected(consumed.record(index), invalid.reason, invalid.detail))
                continue
            accepted.append(index)
            series_index.append(slots.setdefault(key, len(slots)))
            if len(slots) > len(series):
                series.append(key)
            chunks.append(chunk)
            first.append(start)
            interval.append(step)
        rows = np.asarray(accepted, np.int64)
        values = np.concatenate(chunks) if chunks else np.empty((0, self.channels), np.float32)
        return SampleBatch(series, np.asarray(series_index, np.int32),
                           np.fromiter(map(len, chunks), np.int64, len(chunks)), values,
                           np.asarray(first, np.float64), np.asarray(interval, np.float64),
                           consumed.partitions, consumed.partition_index[rows], consumed.offsets[rows],
                           rows), rejected

    def _one(self, value: bytes | None, record_key: bytes | None,
             record_ms: float) -> tuple[str, np.ndarray, float, float]:
        """``(series, values (count, channels) float32, first_ms, interval_ms)`` of one record."""
        if not value:
            raise InvalidRecordError("empty", "record has no value")
        if len(value) > self.max_record_bytes:
            raise InvalidRecordError("oversize", f"{len(value)} bytes > limit of {self.max_record_bytes}")
        if value[:2] == SAMPLE_MAGIC:
            chunk, start, step = self._binary(value)
            event: dict[str, Any] = {}
        else:
            event = self._json_object(value)
            chunk, start, step = self._json(event, record_ms)
        key = self._series(event, record_key)
        if step < 0 or not math.isfinite(step) or (len(chunk) > 1 and step == 0):
            raise InvalidRecordError("bad_interval", f"interval_ms = {step!r}; a chunk of {len(chunk)} samples needs "
                                           "a positive, finite interval")
        if not math.isfinite(start):
            raise InvalidRecordError("non_finite", f"timestamp is {start!r}")
        if not np.isfinite(chunk).all():
            sample, channel = (int(n) for n in np.argwhere(~np.isfinite(chunk))[0])
            raise InvalidRecordError("non_finite", f"sample {sample} channel {channel} is {chunk[sample, channel]}")
        return key, chunk, start, step

    def _series(self, event: dict[str, Any], record_key: bytes | None) -> str:
        if self.series_field is not None:
            key = event.get(self.series_field)
            if key is None or isinstance(key, (dict, list)):
                raise InvalidRecordError("missing_series", f"field {self.series_field!r} is absent or not a scalar")
            return str(key)
        if not record_key:
            raise InvalidRecordError("missing_series", "the record has no key, which names its series")
        try:
            return record_key.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRecordError("missing_series", "the record key is not UTF-8 text") from None

    @staticmethod
    def _json_object(value: bytes) -> dict[str, Any]:
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            # cold path: Python's json reads NaN and Infinity (orjson refuses them), which the
            # finiteness check then names
            try:
                event = json.loads(value.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise InvalidRecordError("invalid_json", str(exc)) from None
        if not isinstance(event, dict):
            raise InvalidRecordError("invalid_json", f"JSON {type(event).__name__}, expected an object")
        return event

    def _json(self, event: dict[str, Any], record_ms: float) -> tuple[np.ndarray, float, float]:
        if "value" in event:
            rows: Any = [event["value"]]
        elif "samples" in event:
            rows = event["samples"]
            if not isinstance(rows, list) or not rows:
                raise InvalidRecordError("non_numeric", "'samples' must be a non-empty array")
        else:
            raise InvalidRecordError("missing_field", "neither 'value' nor 'samples' is present")
        chunk = self._numbers(rows)
        start = event.get("timestamp", record_ms)
        step = event.get("interval_ms", 0.0)
        if type(start) not in (int, float) or type(step) not in (int, float):
            raise InvalidRecordError("non_numeric", "'timestamp' and 'interval_ms' must be numbers")
        return chunk, float(start), float(step)

    def _numbers(self, rows: Sequence[Any]) -> np.ndarray:
        """float32 ``(count, channels)`` from JSON samples (numbers, or arrays of channels)."""
        kinds = set(map(type, rows))  # the two shapes producers send are checked without a Python loop
        if kinds <= _NUMBERS and self.channels == 1:
            wide = self._float64(rows).reshape(-1, 1)
        elif kinds == {list} and set(map(len, rows)) == {self.channels} \
                and set(map(type, chain.from_iterable(rows))) <= _NUMBERS:
            wide = self._float64(rows)
        else:
            wide = self._checked(rows)
        if (np.abs(wide) > FLOAT32_MAX).any():
            sample, channel = (int(n) for n in np.argwhere(np.abs(wide) > FLOAT32_MAX)[0])
            raise InvalidRecordError("non_finite", f"sample {sample} channel {channel} = {wide[sample, channel]:.4g} "
                                         "is beyond float32's range")
        return wide.astype(np.float32)

    @staticmethod
    def _float64(rows: Sequence[Any]) -> np.ndarray:
        try:
            return np.array(rows, dtype=np.float64)
        except OverflowError:
            raise InvalidRecordError("non_finite", "a sample is an integer beyond float64's range") from None

    def _checked(self, rows: Sequence[Any]) -> np.ndarray:
        """The samples of any other shape, checked one by one to name the fault (the cold path)."""
        nested = [row if isinstance(row, list) else [row] for row in rows]
        if set(map(len, nested)) != {self.channels}:
            wrong = next(n for n, row in enumerate(nested) if len(row) != self.channels)
            raise InvalidRecordError("wrong_channel_count", f"sample {wrong} has {len(nested[wrong])} channels, "
                                                            f"expected {self.channels}")
        if not set(map(type, chain.from_iterable(nested))) <= _NUMBERS:
            raise InvalidRecordError("non_numeric", "a sample is not a number (a string, boolean or null)")
        return self._float64(nested)

    def _binary(self, value: bytes) -> tuple[np.ndarray, float, float]:
        if len(value) < SAMPLE_HEADER.size:
            raise InvalidRecordError("binary_bad_length", f"{len(value)} bytes, shorter than the "
                                                f"{SAMPLE_HEADER.size}-byte header")
        _, version, flags, count, channels, _, start, step = SAMPLE_HEADER.unpack_from(value)
        if version != SAMPLE_VERSION or flags != 0:
            raise InvalidRecordError("binary_unsupported_version", f"version {version}, flags {flags}; this decoder "
                                                         f"reads version {SAMPLE_VERSION} with flags 0")
        if channels != self.channels:
            raise InvalidRecordError("wrong_channel_count", f"{channels} channels, expected {self.channels}")
        expected = SAMPLE_HEADER.size + 4 * count * channels
        if count < 1 or len(value) != expected:
            raise InvalidRecordError("binary_bad_length", f"{len(value)} bytes, but the header announces {count} "
                                                f"samples of {channels} channels ({expected} bytes)")
        chunk = np.frombuffer(value, "<f4", count * channels, SAMPLE_HEADER.size).reshape(count, channels)
        return chunk.astype(np.float32), start, step
