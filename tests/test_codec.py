"""Decoding records into batches, and every reason a record is rejected."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import orjson
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_ae.model.checkpoint import Checkpoint
from stream_ae.model.detector import build_detector
from stream_ae.model.memory_bank import fit_memory_bank
from stream_ae.pipeline.codec import MAX_STANDARD_DEVIATIONS, REASONS, EventDecoder, encode_binary, encode_event
from tests.helpers import FEATURES, FakeRecord, decode, tiny_checkpoint


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


SCALER = (np.array([0.0, 10.0, -5.0]), np.array([1.0, 2.0, 0.5]))  # mean, std of FEATURES


@pytest.mark.parametrize("value, reason, detail", [
    (b'{"a": NaN, "b": 1, "c": 3}', "non_finite", "feature 'a' is NaN"),
    (b'{"a": 1, "b": Infinity, "c": 3}', "non_finite", "feature 'b' is Infinity"),
    (b'{"a": 1, "b": 1, "c": -Infinity}', "non_finite", "feature 'c' is -Infinity"),
    (b'{"a": 1e39, "b": 1, "c": 3}', "non_finite", "feature 'a' = 1e39 is beyond float32's range"),
    (b'{"a": 1e400, "b": 1, "c": 3}', "non_finite", "feature 'a' = 1e400 is beyond float64's range"),
    (b'{"a": 1, "b": 1' + b"0" * 400 + b', "c": 3}', "non_finite", "feature 'b' is an integer of 401 digits"),
    (b'{"a": 1e20, "b": 1, "c": 3}', "out_of_range", "feature 'a' = 1e+20 lies 1e+20 training standard deviations"),
    (b'{"a": 1, "b": 1000000000000000000000000000000, "c": 3}', "out_of_range", "feature 'b' = 1e+30 lies 5e+29"),
    (b'{"a": 1, "b": 1, "c": 3e38}', "out_of_range", "feature 'c' = 3e+38 lies 6e+38"),
    (encode_binary(np.array([1.0, np.nan, 2.0])), "non_finite", "feature 'b' is NaN"),
    (encode_binary(np.array([1.0, 2.0, -np.inf])), "non_finite", "feature 'c' is -Infinity"),
    (encode_binary(np.array([2e9, 2.0, 1.0])), "out_of_range", "feature 'a' = 2e+09 lies 2e+09"),
])
def test_a_value_whose_score_would_not_be_finite_is_refused_with_what_is_wrong(value, reason, detail):
    batch, rejected = decode(transaction_decoder(scaler=SCALER), [FakeRecord(b'{"a": 0, "b": 9, "c": -5}'),
                                                                  FakeRecord(value, offset=1)])
    assert batch.offsets.tolist() == [0]
    assert [item.reason for item in rejected] == [reason]
    assert rejected[0].detail.startswith(detail), rejected[0].detail


def test_the_bound_is_a_billion_training_standard_deviations_either_side_of_the_mean():
    mean, std = SCALER
    inside = np.array([mean + 0.999e9 * std, mean - 0.999e9 * std], np.float32)
    outside = np.array([mean + 1.001e9 * std, mean - 1.001e9 * std], np.float32)
    records = [FakeRecord(encode_binary(row), offset=n) for n, row in enumerate([*inside, *outside])]
    batch, rejected = decode(transaction_decoder(scaler=SCALER), records)
    assert batch.offsets.tolist() == [0, 1]
    assert [(item.record.offset, item.reason) for item in rejected] == [(2, "out_of_range"), (3, "out_of_range")]
    assert MAX_STANDARD_DEVIATIONS == 1e9


def test_without_a_scaler_every_finite_float32_is_decoded():
    batch, rejected = decode(transaction_decoder(), [FakeRecord(b'{"a": 3e38, "b": -3e38, "c": 1e-40}')])
    assert rejected == [] and batch.values.tolist() == [[np.float32(3e38), np.float32(-3e38), np.float32(1e-40)]]


any_number = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-10 ** 40, 10 ** 40),
                       st.sampled_from([1e39, -1e39, 1e300, 3e38, 1e20, -1e25]))


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(any_number, any_number, any_number), min_size=1, max_size=8),
       model=st.sampled_from(["simple", "deep", "sparse", "denoising", "deep-memory-bank"]))
def test_whatever_the_numbers_every_event_decoded_gets_a_finite_score(rows, model):
    checkpoint = SCORING_CHECKPOINTS[model]
    decoder = EventDecoder(FEATURES, None, scaler=(checkpoint.scaler_mean, checkpoint.scaler_std))
    records = [FakeRecord(json.dumps(dict(zip(FEATURES, row))).encode(), offset=n) for n, row in enumerate(rows)]
    batch, rejected = decode(decoder, records)
    assert len(batch) + len(rejected) == len(rows)
    assert {item.reason for item in rejected} <= {"non_finite", "out_of_range"}
    if len(batch):
        scores = SCORERS[model].score(batch.values)
        assert np.isfinite(scores.score).all(), (batch.values, scores.score)
        reconstruction_error = scores.values["reconstruction_error"]
        assert np.isfinite(reconstruction_error).all(), (batch.values, reconstruction_error)
        assert np.isfinite(scores.top_features(np.arange(len(batch)))[1]).all()


def _with_memory_bank(checkpoint: Checkpoint) -> Checkpoint:
    """``checkpoint`` scoring by a memory bank (the default score) of 200 random normal rows."""
    normal = torch.randn(250, checkpoint.input_dim, generator=torch.Generator().manual_seed(1))
    bank = fit_memory_bank(checkpoint.build(), normal[:200], normal[200:])
    return dataclasses.replace(checkpoint, memory_bank_state=bank.state())


SCORING_CHECKPOINTS = {model: tiny_checkpoint(FEATURES, seed=1, model_name=model)
                       for model in ("simple", "deep", "sparse", "denoising")}
SCORING_CHECKPOINTS["deep-memory-bank"] = _with_memory_bank(SCORING_CHECKPOINTS["deep"])
SCORERS = {model: build_detector(checkpoint, "cpu") for model, checkpoint in SCORING_CHECKPOINTS.items()}
