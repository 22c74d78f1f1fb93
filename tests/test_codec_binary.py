"""The compact binary payload: round trips, mixing with JSON, every malformed-binary reason,
and the vectorised path for batches made only of well-formed binary records."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from stream_ae.kafka.records import ConsumedBatch
from stream_ae.pipeline.codec import (
    BINARY_HEADER,
    BINARY_MAGIC,
    BINARY_VERSION,
    REASONS,
    EventDecoder,
    encode_binary,
    encode_event,
)
from tests.helpers import FEATURES, FakeRecord, decode


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
        batch, rejected = decode(decoder, records)
        assert rejected == []
        np.testing.assert_array_equal(batch.values, rows)
        assert batch.values.dtype == np.float32 and batch.values.flags.c_contiguous
        assert batch.event_ids == [None] * 50
        assert batch.offsets.tolist() == list(range(50))
        assert batch.partitions == [("events", 0), ("events", 1)]


def test_binary_and_json_records_mix_in_consumption_order():
    rows = np.arange(30, dtype=np.float32).reshape(10, 3)
    records = [FakeRecord(encode_binary(row) if n % 3 else encode_event(row, FEATURES, False, f"j{n}"), offset=n)
               for n, row in enumerate(rows)]
    records.insert(4, FakeRecord(b"not json", offset=99))
    records.insert(7, FakeRecord(binary([1, 2]), offset=98))
    batch, rejected = decode(EventDecoder(FEATURES, None), records)
    np.testing.assert_array_equal(batch.values, rows)
    assert batch.offsets.tolist() == list(range(10))
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
    batch, rejected = decode(EventDecoder(FEATURES, None), [good, bad])
    assert batch.offsets.tolist() == [1]
    assert [(r.record, r.reason) for r in rejected] == [(bad, reason)]
    assert reason in REASONS and rejected[0].detail


def test_a_short_record_starting_with_the_magic_is_rejected_not_misread():
    batch, rejected = decode(EventDecoder(FEATURES, None), [FakeRecord(BINARY_MAGIC)])
    assert len(batch) == 0 and [r.reason for r in rejected] == ["binary_bad_length"]


def test_an_all_binary_batch_takes_the_vectorised_path_with_the_same_result():
    rows = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)
    records = [FakeRecord(encode_binary(row), offset=n, partition=n % 3, timestamp=1000 + n)
               for n, row in enumerate(rows)]
    consumed = ConsumedBatch.from_records(records)
    materialised = []
    fast = ConsumedBatch(consumed.values, consumed.record_keys, consumed.partitions, consumed.partition_index,
                         consumed.offsets, consumed.timestamps_ms, lambda index: materialised.append(index))
    decoder = EventDecoder(FEATURES, None)
    assert decoder._well_formed_binary(fast.values) is not None
    batch, rejected = decoder.decode(fast)
    assert rejected == [] and materialised == []
    fast_values = batch.values.copy()
    # one JSON record among them sends the batch down the record-by-record path
    mixed, _ = decode(EventDecoder(FEATURES, None),
                      records + [FakeRecord(orjson.dumps({"a": 1, "b": 2, "c": 3}), offset=40)])
    np.testing.assert_array_equal(fast_values, rows)
    np.testing.assert_array_equal(mixed.values[:40], fast_values)
    assert batch.offsets.tolist() == list(range(40)) and mixed.offsets.tolist() == list(range(41))
    assert batch.timestamps_ms.tolist() == [1000 + n for n in range(40)]
    assert [batch.partitions[i] for i in batch.partition_index] == [("events", n % 3) for n in range(40)]


def test_a_non_finite_value_in_an_all_binary_batch_fails_only_its_record():
    rows = np.ones((5, 3), np.float32)
    rows[2, 1] = np.inf
    records = [FakeRecord(encode_binary(row), offset=n) for n, row in enumerate(rows)]
    batch, rejected = decode(EventDecoder(FEATURES, None), records)
    assert batch.offsets.tolist() == [0, 1, 3, 4]
    np.testing.assert_array_equal(batch.values, np.ones((4, 3)))
    assert [(r.record.offset, r.reason) for r in rejected] == [(2, "non_finite")]


def test_huge_json_integers_fail_only_their_own_record():
    records = [FakeRecord(b'{"a": 1, "b": 2, "c": 3}', offset=0),
               FakeRecord(b'{"a": 1, "b": 2, "c": ' + b"9" * 400 + b"}", offset=1)]
    batch, rejected = decode(EventDecoder(FEATURES, None), records)
    assert batch.offsets.tolist() == [0]
    np.testing.assert_array_equal(batch.values, [[1, 2, 3]])
    assert [(r.record.offset, r.reason) for r in rejected] == [(1, "non_finite")]
