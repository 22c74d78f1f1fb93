"""What the daemon publishes (:mod:`stream_ae.pipeline.alerts`): alert and score records
(their fields, the ``topic-partition-offset`` key, the top features of flagged events
only) and the headers of a dead-lettered record."""

from __future__ import annotations

import json
import math

import numpy as np
import orjson
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stream_ae.model.detector import Scores
from stream_ae.pipeline.alerts import (
    DETAIL_HEADER,
    REASON_HEADER,
    SOURCE_HEADER,
    ModelIdentity,
    alert_records,
    dead_letter_headers,
    dead_letter_record,
    record_key,
    request_bytes,
    score_records,
)
from stream_ae.pipeline.codec import FLOAT32_MAX, Batch, Rejected
from stream_ae.pipeline.threshold.base import Verdict
from tests.helpers import FakeRecord

MODEL = ModelIdentity("deep", "ab" * 32)
NAMES = ["f0", "f1", "f2", "f3"]
DETECTED_AT_MS = 1_700_000_000_500


def four_events() -> tuple[Batch, Scores, Verdict]:
    """Four events over two partitions of two topics; the second and the fourth are flagged."""
    batch = Batch(
        values=np.zeros((4, 4), np.float32),
        event_ids=["e0", None, "e2", "e3"],
        partitions=[("events", 0), ("other", 3)],
        partition_index=np.array([0, 1, 0, 1], np.int32),
        offsets=np.array([10, 7, 11, 8], np.int64),
        timestamps_ms=np.array([1_000, 2_000, 3_000, 4_000], np.int64),
    )
    attribution = torch.tensor([[0.1, 0.2, 0.3, 0.4],
                                [5.0, 1.0, 9.0, 3.0],
                                [0.0, 0.0, 0.0, 0.0],
                                [2.0, 8.0, 4.0, 6.0]])
    scores = Scores(score=np.array([0.25, 4.5, 0.0, 5.0], np.float32), attribution=attribution, top=2,
                    values={"reconstruction_error": np.array([0.125, 1.5, 0.0, 2.0], np.float32)})
    verdict = Verdict(flags=np.array([False, True, False, True]),
                      thresholds=np.array([1.0, 2.0, 1.0, 2.0]),
                      zscores=np.array([0.5, 7.0, -1.0, 8.0]))
    return batch, scores, verdict


def test_record_key_is_topic_partition_offset():
    assert record_key("events-in", 3, 1234) == "events-in-3-1234"


def test_alerts_are_one_per_flagged_event_keyed_topic_partition_offset_with_every_field():
    batch, scores, verdict = four_events()
    records = alert_records(batch, scores, verdict, NAMES, DETECTED_AT_MS, MODEL)
    assert [key for key, _ in records] == [b"other-3-7", b"other-3-8"]
    first, second = (orjson.loads(value) for _, value in records)
    assert first == {
        "key": "other-3-7", "topic": "other", "partition": 3, "offset": 7, "event_id": None,
        "event_timestamp_ms": 2_000, "detected_at_ms": DETECTED_AT_MS,
        "score": 4.5, "reconstruction_error": 1.5, "threshold": 2.0, "zscore": 7.0,
        "model": "deep", "checkpoint_sha256": "ab" * 32,
        "top_features": [{"name": "f2", "error": 9.0}, {"name": "f0", "error": 5.0}],
    }
    assert second["event_id"] == "e3" and second["offset"] == 8 and second["event_timestamp_ms"] == 4_000
    assert second["top_features"] == [{"name": "f1", "error": 8.0}, {"name": "f3", "error": 6.0}]


def test_no_flagged_event_gives_no_alert():
    batch, scores, verdict = four_events()
    calm = Verdict(np.zeros(4, bool), verdict.thresholds, verdict.zscores)
    assert alert_records(batch, scores, calm, NAMES, DETECTED_AT_MS, MODEL) == []


def test_score_records_cover_every_event_with_the_anomaly_flag_and_no_top_features():
    batch, scores, verdict = four_events()
    records = score_records(batch, scores, verdict, DETECTED_AT_MS, MODEL)
    assert [key for key, _ in records] == [b"events-0-10", b"other-3-7", b"events-0-11", b"other-3-8"]
    values = [orjson.loads(value) for _, value in records]
    assert [v["anomaly"] for v in values] == [False, True, False, True]
    assert all("top_features" not in v for v in values)
    assert [v["key"] for v in values] == [key.decode() for key, _ in records]
    assert [v["event_id"] for v in values] == ["e0", None, "e2", "e3"]
    assert [v["score"] for v in values] == [0.25, 4.5, 0.0, 5.0]
    assert [v["reconstruction_error"] for v in values] == [0.125, 1.5, 0.0, 2.0]
    assert [v["zscore"] for v in values] == [0.5, 7.0, -1.0, 8.0]
    assert {v["model"] for v in values} == {"deep"} and {v["detected_at_ms"] for v in values} == {DETECTED_AT_MS}
    alert = orjson.loads(alert_records(batch, scores, verdict, NAMES, DETECTED_AT_MS, MODEL)[0][1])
    assert {k: v for k, v in alert.items() if k != "top_features"} == \
        {k: v for k, v in values[1].items() if k != "anomaly"}, "an alert and a score share their fields"


def test_dead_letter_headers_keep_the_record_headers_and_add_reason_detail_and_source():
    record = FakeRecord(b"{", topic="events", partition=2, offset=99, key=b"k1",
                        headers=[("trace", b"t-1"), ("label", b"0")])
    headers = dead_letter_headers(Rejected(record, "invalid_json", "unexpected end of input"))
    assert headers == [("trace", b"t-1"), ("label", b"0"),
                       (REASON_HEADER, b"invalid_json"),
                       (DETAIL_HEADER, b"unexpected end of input"),
                       (SOURCE_HEADER, b"events-2-99")]


def test_dead_letter_detail_is_truncated_to_1000_characters_and_a_record_without_headers_is_fine():
    record = FakeRecord(None, topic="t", partition=0, offset=5, headers=None)  # a client may give None
    detail = "é" * 1500  # two bytes each in UTF-8: the cut is in characters
    headers = dict(dead_letter_headers(Rejected(record, "empty", detail)))
    assert headers[DETAIL_HEADER].decode() == "é" * 1000
    assert headers[REASON_HEADER] == b"empty" and headers[SOURCE_HEADER] == b"t-0-5"
    assert len(headers) == 3


def test_dead_letter_detail_that_is_not_valid_unicode_is_replaced_not_raised():
    record = FakeRecord(b"x", offset=1)
    headers = dict(dead_letter_headers(Rejected(record, "not_utf8", "bad \udcff byte")))
    assert headers[DETAIL_HEADER] == b"bad ? byte"


# -- the JSON schema of alerts and score records: never a null or non-finite number --------------

COMMON_FIELDS = {"key": str, "topic": str, "partition": int, "offset": int, "event_id": (str, type(None)),
                 "event_timestamp_ms": int, "detected_at_ms": int, "score": float, "reconstruction_error": float,
                 "threshold": float, "zscore": float, "model": str, "checkpoint_sha256": str}
ALERT_FIELDS = {**COMMON_FIELDS, "top_features": list}
SCORE_FIELDS = {**COMMON_FIELDS, "anomaly": bool}
any_float32 = st.floats(width=32)  # NaN, ±Infinity and the largest finite values among them
any_float = st.floats()


def strict_json(value: bytes) -> dict:
    """Parse as JSON that has no NaN or Infinity tokens (RFC 8259)."""
    def refuse(token: str) -> float:
        raise AssertionError(f"non-standard JSON number {token}")
    return json.loads(value, parse_constant=refuse)


def assert_schema(record: dict, fields: dict) -> None:
    assert set(record) == set(fields)
    for name, kind in fields.items():
        value = record[name]
        assert isinstance(value, kind), (name, value)
        if kind is float:
            assert math.isfinite(value), (name, value)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), events=st.integers(1, 6), top=st.integers(1, 4))
def test_alerts_and_score_records_carry_finite_numbers_whatever_the_scores(data, events, top):
    errors = data.draw(hnp.arrays(np.float32, events, elements=any_float32))
    reconstruction = data.draw(hnp.arrays(np.float32, events, elements=any_float32))
    attribution = data.draw(hnp.arrays(np.float32, (events, 4), elements=any_float32))
    thresholds = data.draw(hnp.arrays(np.float64, events, elements=any_float))
    zscores = data.draw(hnp.arrays(np.float64, events, elements=any_float))
    flags = data.draw(hnp.arrays(bool, events))
    batch = Batch(np.zeros((events, 4), np.float32), [f"e{n}" if n % 2 else None for n in range(events)],
                  [("events", 0), ("events", 1)], np.arange(events, dtype=np.int32) % 2,
                  np.arange(events, dtype=np.int64) + 100, np.full(events, 1_000, np.int64))
    scores = Scores(score=errors, attribution=torch.from_numpy(attribution), top=top,
                    values={"reconstruction_error": reconstruction})
    verdict = Verdict(flags=flags, thresholds=thresholds, zscores=zscores)

    alerts = [strict_json(value) for _, value in alert_records(batch, scores, verdict, NAMES, DETECTED_AT_MS, MODEL)]
    assert len(alerts) == int(flags.sum())
    for alert in alerts:
        assert_schema(alert, ALERT_FIELDS)
        assert len(alert["top_features"]) == top
        for feature in alert["top_features"]:
            assert set(feature) == {"name", "error"} and feature["name"] in NAMES
            assert isinstance(feature["error"], float) and math.isfinite(feature["error"])
    records = [strict_json(value) for _, value in score_records(batch, scores, verdict, DETECTED_AT_MS, MODEL)]
    assert len(records) == events
    for record, score, error in zip(records, errors.tolist(), reconstruction.tolist()):
        assert_schema(record, SCORE_FIELDS)
        for name, value in (("score", score), ("reconstruction_error", error)):
            if math.isfinite(value):
                assert record[name] == value, "a finite number is written as it is"
            else:
                assert abs(record[name]) == FLOAT32_MAX


# -- dead letters that do not fit in a produce request ---------------------------------------------

def test_a_dead_letter_that_fits_is_the_record_whole():
    record = FakeRecord(b"x" * 900, topic="events", partition=1, offset=4, key=b"k", headers=[("h", b"v")])
    rejected = Rejected(record, "invalid_json", "unexpected character")
    key, value, headers = dead_letter_record(rejected, max_request_bytes=2048)
    assert (key, value, headers) == (b"k", record.value, dead_letter_headers(rejected))
    assert request_bytes(key, value, headers) <= 2048


def test_a_dead_letter_too_large_for_a_request_is_a_reference_with_the_reason_headers():
    record = FakeRecord(b"x" * 5000, topic="events", partition=1, offset=4, key=b"k", headers=[("h", b"v" * 10)])
    rejected = Rejected(record, "oversize", "5000 bytes > limit of 1000")
    key, value, headers = dead_letter_record(rejected, max_request_bytes=2048)
    assert key == b"k"
    assert orjson.loads(value) == {"topic": "events", "partition": 1, "offset": 4, "size": 1 + 5000 + 1 + 10,
                                   "reason": "oversize"}
    assert headers == [(REASON_HEADER, b"oversize"), (DETAIL_HEADER, b"5000 bytes > limit of 1000"),
                       (SOURCE_HEADER, b"events-1-4")], "the record's own headers stay behind"
    assert request_bytes(key, value, headers) <= 2048


def test_headers_count_towards_the_size_and_a_huge_key_stays_out_of_the_reference():
    record = FakeRecord(b"{}", key=b"k" * 4096, headers=[("trace", b"t" * 3000)])
    key, value, headers = dead_letter_record(Rejected(record, "missing_field", "field 'a' is absent"), 4096)
    assert key is None and orjson.loads(value)["size"] == 4096 + 2 + 5 + 3000
    assert dict(headers)[REASON_HEADER] == b"missing_field", "the reason it was rejected for"
