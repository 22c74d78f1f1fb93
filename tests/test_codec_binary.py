"""The compact binary payload: round trips, mixing with JSON, every malformed-binary reason,
and the column-wise record batches that the confluent-kafka backend hands to the codec."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from stream_ae.codec import (BINARY_HEADER, BINARY_MAGIC, BINARY_VERSION, REASONS, EventDecoder,
                             encode_binary, encode_event)
from tests.test_codec import FEATURES, FakeRecord


def binary(values, version=BINARY_VERSION, flags=0, count=None) -> bytes:
    row = np.asarray(values, "<f4")
    return struct.pack("<2sBBI", BINARY_MAGIC, version, flags, len(row) if count is None else count) + row.tobytes()


def test_layout_is_magic_version_flags_count_then_float32_values():
    payload = encode_binary(np.array([1.5, -2.0, 3.25]))
    assert payload[:2] == b"\xaeA" and payload[2] == 1 and payload[3] == 0
    assert BINARY_HEADER.size == 8 and struct.unpack_from("<I", payload, 4) == (3,)
    assert np.frombuffer(payload, "<f4", offset=8).tolist() == [1.5, -2.0, 3.25]
    assert len(payload) == 8 + 4 * 3


def test_round_trip_for_transactions_and_windows():
    rows = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    records = [FakeRecord(encode_binary(row), offset=n, partition=n % 2) for n, row in enumerate(rows)]
    for decoder in (EventDecoder(FEATURES, None), EventDecoder(FEATURES, 3)):
        batch, rejected = decoder.decode(records)
        assert rejected == []
        np.testing.assert_array_equal(batch.values, rows)
        assert batch.values.dtype == np.float32 and batch.values.flags.c_contiguous
        assert batch.event_ids == [None] * 50
        assert [r.offset for r in batch.records] == list(range(50))
        assert batch.partitions == [("events", 0), ("events", 1)]


def test_binary_and_json_records_mix_in_consumption_order():
    rows = np.arange(30, dtype=np.float32).reshape(10, 3)
    records = [FakeRecord(encode_binary(row) if n % 3 else encode_event(row, FEATURES, False, f"j{n}"), offset=n)
               for n, row in enumerate(rows)]
    records.insert(4, FakeRecord(b"not json", offset=99))
    records.insert(7, FakeRecord(binary([1, 2]), offset=98))
    batch, rejected = EventDecoder(FEATURES, None).decode(records)
    np.testing.assert_array_equal(batch.values, rows)
    assert [r.offset for r in batch.records] == list(range(10))
    assert batch.event_ids == [f"j{n}" if n % 3 == 0 else None for n in range(10)]
    assert sorted((r.record.offset, r.reason) for r in rejected) == [(98, "binary_wrong_count"),
                                                                     (99, "invalid_json")]


@pytest.mark.parametrize("value, reason", [
    (binary([1, 2, 3], version=2), "binary_unsupported_version"),
    (binary([1, 2, 3], version=0), "binary_unsupported_version"),
    (binary([1, 2, 3], flags=1), "binary_unsupported_version"),
    (binary([1, 2, 3])[:-1], "binary_bad_length"),          # truncated value
    (binary([1, 2, 3]) + b"\x00", "binary_bad_length"),     # trailing byte
    (binary([1, 2, 3])[:6], "binary_bad_length"),           # shorter than the header
    (binary([1, 2, 3], count=4), "binary_bad_length"),      # header announces more than is there
    (binary([1, 2, 3], count=2), "binary_bad_length"),      # header announces fewer than are there
    (binary([1, 2]), "binary_wrong_count"),                 # well formed, but 2 values for 3 features
    (binary([1, 2, 3, 4]), "binary_wrong_count"),
    (binary([]), "binary_wrong_count"),
    (binary([1.0, np.nan, 3.0]), "non_finite"),
    (binary([1.0, np.inf, 3.0]), "non_finite"),
])
def test_malformed_binary_records_are_rejected_with_the_reason(value, reason):
    good = FakeRecord(encode_binary(np.array([1, 2, 3])), offset=1)
    bad = FakeRecord(value, offset=2)
    batch, rejected = EventDecoder(FEATURES, None).decode([good, bad])
    assert [r.offset for r in batch.records] == [1]
    assert [(r.record, r.reason) for r in rejected] == [(bad, reason)]
    assert reason in REASONS and rejected[0].detail


def test_a_short_record_starting_with_the_magic_is_rejected_not_misread():
    batch, rejected = EventDecoder(FEATURES, None).decode([FakeRecord(BINARY_MAGIC)])
    assert len(batch) == 0 and [r.reason for r in rejected] == ["binary_bad_length"]


class FakeColumns:
    """A batch that, like the confluent-kafka source's, is read column by column."""

    def __init__(self, records: list[FakeRecord]) -> None:
        self.records = records
        self.taken: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> FakeRecord:
        return self.records[index]

    def __iter__(self):
        raise AssertionError("the codec reads columns, not records one by one")

    def columns(self):
        return ([r.value for r in self.records], [(r.topic, r.partition) for r in self.records],
                [r.timestamp for r in self.records])

    def take(self, indices):
        self.taken.append(list(indices))
        return FakeColumns([self.records[i] for i in indices])


def test_column_batches_decode_like_record_lists():
    values = [encode_binary(np.array([1, 2, 3])), b"junk", orjson.dumps({"id": "x", "a": 4, "b": 5, "c": 6})]
    records = [FakeRecord(value, offset=n, timestamp=1000 + n) for n, value in enumerate(values)]
    columns = FakeColumns(records)
    batch, rejected = EventDecoder(FEATURES, None).decode(columns)
    np.testing.assert_array_equal(batch.values, [[1, 2, 3], [4, 5, 6]])
    assert columns.taken == [[0, 2]]
    assert [r.offset for r in batch.records.records] == [0, 2]
    assert batch.timestamps_ms.tolist() == [1000, 1002] and batch.event_ids == [None, "x"]
    assert [(r.record, r.reason) for r in rejected] == [(records[1], "invalid_json")]


def test_huge_json_integers_fail_only_their_own_record():
    records = [FakeRecord(b'{"a": 1, "b": 2, "c": 3}', offset=0),
               FakeRecord(b'{"a": 1, "b": 2, "c": ' + b"9" * 400 + b"}", offset=1)]
    batch, rejected = EventDecoder(FEATURES, None).decode(records)
    assert [r.offset for r in batch.records] == [0]
    np.testing.assert_array_equal(batch.values, [[1, 2, 3]])
    assert [(r.record.offset, r.reason) for r in rejected] == [(1, "non_finite")]
