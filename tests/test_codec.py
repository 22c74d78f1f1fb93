"""Decoding records into batches, and every reason a record is rejected."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from stream_ae.pipeline.codec import REASONS, EventDecoder, encode_event
from tests.helpers import FEATURES, FakeRecord, decode


def transaction_decoder(**kw) -> EventDecoder:
    return EventDecoder(FEATURES, None, **kw)


def test_transactions_decode_in_feature_order_with_ids_and_partitions():
    records = [
        FakeRecord(orjson.dumps({"id": "x1", "c": 3, "a": 1.5, "b": -2, "extra": "ignored"}), partition=0, offset=10),
        FakeRecord(orjson.dumps({"a": 0, "b": 0, "c": 1e3}), topic="other", partition=2, offset=5),
        FakeRecord(orjson.dumps({"id": 7, "a": 1, "b": 2, "c": 3}), partition=0, offset=11),
    ]
    batch, rejected = decode(transaction_decoder(), records)
    assert rejected == []
    np.testing.assert_array_equal(batch.values, np.array([[1.5, -2, 3], [0, 0, 1000], [1, 2, 3]], np.float32))
    assert batch.values.dtype == np.float32
    assert batch.event_ids == ["x1", None, "7"]
    assert batch.partitions == [("events", 0), ("other", 2)]
    assert batch.partition_index.tolist() == [0, 1, 0]
    assert batch.timestamps_ms.tolist() == [1_700_000_000_000] * 3


def test_encode_event_round_trips_through_the_decoder():
    row = np.array([0.25, -1.0, 7.5], np.float32)
    transaction = encode_event(row, FEATURES, window=False, event_id="t-1")
    window = encode_event(row, FEATURES, window=True, event_id="w-1")
    batch, _ = decode(transaction_decoder(), [FakeRecord(transaction)])
    np.testing.assert_array_equal(batch.values[0], row)
    batch, _ = decode(EventDecoder(FEATURES, 3), [FakeRecord(window)])
    np.testing.assert_array_equal(batch.values[0], row)
    assert batch.event_ids == ["w-1"]


@pytest.mark.parametrize("value, reason", [
    (None, "empty"),
    (b"", "empty"),
    (b"x" * 2000, "oversize"),
    (b"\xff\xfe{}", "not_utf8"),
    (b'{"a": 1, "b": 2', "invalid_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (b'"text"', "not_an_object"),
    (b'{"a": 1, "b": 2}', "missing_field"),
    (b'{"a": 1, "b": "2", "c": 3}', "non_numeric"),
    (b'{"a": 1, "b": true, "c": 3}', "non_numeric"),
    (b'{"a": 1, "b": null, "c": 3}', "non_numeric"),
    (b'{"a": NaN, "b": 1, "c": 3}', "non_finite"),
    (b'{"a": Infinity, "b": 1, "c": 3}', "non_finite"),
    (b'{"a": 1e400, "b": 1, "c": 3}', "non_finite"),
    (b'{"a": 1e39, "b": 1, "c": 3}', "non_finite"),  # beyond float32
])
def test_transaction_rejections_carry_the_reason(value, reason):
    good = FakeRecord(b'{"a": 1, "b": 2, "c": 3}', offset=1)
    bad = FakeRecord(value, offset=2)
    batch, rejected = decode(transaction_decoder(max_record_bytes=1000), [good, bad])
    assert len(batch) == 1 and batch.offsets.tolist() == [good.offset]
    assert [(r.record, r.reason) for r in rejected] == [(bad, reason)]
    assert reason in REASONS and rejected[0].detail


@pytest.mark.parametrize("payload, reason", [
    ({"id": "w"}, "missing_field"),
    ({"id": "w", "samples": [1.0, 2.0]}, "wrong_window_length"),
    ({"id": "w", "samples": [1.0, 2.0, 3.0, 4.0]}, "wrong_window_length"),
    ({"id": "w", "samples": "1,2,3"}, "non_numeric"),
    ({"id": "w", "samples": [1.0, "2", 3.0]}, "non_numeric"),
])
def test_window_rejections(payload, reason):
    batch, rejected = decode(EventDecoder(FEATURES, 3), [FakeRecord(orjson.dumps(payload))])
    assert len(batch) == 0 and batch.values.shape == (0, 3)
    assert [r.reason for r in rejected] == [reason]


def test_every_record_lands_in_exactly_one_output():
    rng = np.random.default_rng(0)
    values = [orjson.dumps({"a": 1, "b": 2, "c": 3}), b"junk", b"", orjson.dumps({"a": 1})]
    records = [FakeRecord(values[i], offset=n) for n, i in enumerate(rng.integers(0, 4, 200))]
    batch, rejected = decode(transaction_decoder(), records)
    seen = sorted(batch.offsets.tolist() + [r.record.offset for r in rejected])
    assert seen == list(range(200))
