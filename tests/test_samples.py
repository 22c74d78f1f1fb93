"""Sample records: one sample or a chunk per record, keyed by series; JSON and binary; dead letters."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from stream_ae.kafka.records import ConsumedBatch
from stream_ae.pipeline.samples import (
    SAMPLE_HEADER,
    SAMPLE_REASONS,
    SampleDecoder,
    encode_samples,
    encode_samples_json,
)
from tests.helpers import FakeRecord


def decode(decoder: SampleDecoder, records: list[FakeRecord]):
    return decoder.decode(ConsumedBatch.from_records(records))


def test_json_and_binary_records_of_several_series_decode_in_order():
    chunk = np.array([[1.0, -1.0], [2.0, -2.0], [3.0, -3.0]])
    records = [
        FakeRecord(orjson.dumps({"value": [0.5, 0.25]}), key=b"host-a", offset=0, timestamp=1000),
        FakeRecord(encode_samples(chunk, 5000.0, 2.5), key=b"host-b", offset=1),
        FakeRecord(encode_samples_json(chunk[:2], 7000.0, 10.0), key=b"host-a", offset=2),
    ]
    batch, rejected = decode(SampleDecoder(channels=2), records)
    assert rejected == []
    assert batch.series == ["host-a", "host-b"] and batch.series_index.tolist() == [0, 1, 0]
    assert batch.counts.tolist() == [1, 3, 2] and batch.starts.tolist() == [0, 1, 4]
    np.testing.assert_array_equal(batch.values, np.vstack(([[0.5, 0.25]], chunk, chunk[:2])))
    assert batch.first_ms.tolist() == [1000.0, 5000.0, 7000.0], "a record without timestamp takes the record's"
    assert batch.interval_ms.tolist() == [0.0, 2.5, 10.0]
    assert batch.offsets.tolist() == [0, 1, 2] and batch.positions.tolist() == [0, 1, 2]


def test_the_series_can_come_from_a_field_instead_of_the_key():
    record = FakeRecord(encode_samples_json(np.array([4.0]), series="pump-7"), key=b"ignored")
    batch, rejected = decode(SampleDecoder(series_field="series"), [record])
    assert rejected == [] and batch.series == ["pump-7"]
    _, rejected = decode(SampleDecoder(series_field="series"), [FakeRecord(b'{"value": 1}', key=b"k")])
    assert [r.reason for r in rejected] == ["missing_series"]


@pytest.mark.parametrize("value, key, reason", [
    (None, b"k", "empty"),
    (b"[1, 2]", b"k", "invalid_json"),
    (b"\xff\xfe", b"k", "invalid_json"),
    (b'{"value": 1}', None, "missing_series"),
    (b'{"v": 1}', b"k", "missing_field"),
    (b'{"value": "1.5"}', b"k", "non_numeric"),
    (b'{"samples": [1, true], "interval_ms": 1}', b"k", "non_numeric"),
    (b'{"value": NaN}', b"k", "non_finite"),
    (b'{"samples": [1, -Infinity], "interval_ms": 1}', b"k", "non_finite"),
    (b'{"value": 1e39}', b"k", "non_finite"),
    (b'{"value": [1, 2]}', b"k", "wrong_channel_count"),
    (b'{"samples": [1, 2]}', b"k", "bad_interval"),
    (b'{"samples": [1, 2], "interval_ms": -5}', b"k", "bad_interval"),
    (encode_samples(np.ones((2, 2)), 0.0, 1.0), b"k", "wrong_channel_count"),
    (encode_samples(np.ones(2), 0.0, 1.0)[:-1], b"k", "binary_bad_length"),
    (encode_samples(np.ones(2), 0.0, 1.0)[:10], b"k", "binary_bad_length"),
    (b"\xaeS\x02" + encode_samples(np.ones(2), 0.0, 1.0)[3:], b"k", "binary_unsupported_version"),
    (encode_samples(np.array([1.0, np.nan]), 0.0, 1.0), b"k", "non_finite"),
])
def test_a_malformed_sample_record_is_rejected_with_its_reason_and_nothing_else_is_lost(value, key, reason):
    assert reason in SAMPLE_REASONS
    good = FakeRecord(b'{"value": 3}', key=b"other", offset=1)
    batch, rejected = decode(SampleDecoder(), [FakeRecord(value, key=key, offset=0), good])
    assert [(r.reason, r.record.offset) for r in rejected] == [(reason, 0)], rejected[0].detail if rejected else ""
    assert rejected[0].detail and batch.offsets.tolist() == [1] and batch.values.ravel().tolist() == [3.0]


def test_binary_layout_is_as_documented():
    record = encode_samples(np.array([[1.5], [2.5]]), 1_700_000_000_000.0, 2.5)
    assert SAMPLE_HEADER.size == 28 and len(record) == 28 + 2 * 4
    assert record[:4] == b"\xaeS\x01\x00" and int.from_bytes(record[4:8], "little") == 2
    assert int.from_bytes(record[8:10], "little") == 1
    assert np.frombuffer(record[12:28], "<f8").tolist() == [1_700_000_000_000.0, 2.5]
    assert np.frombuffer(record[28:], "<f4").tolist() == [1.5, 2.5]
