"""The daemon's Prometheus metrics (:mod:`stream_ae.telemetry.metrics`): the batch histogram's
buckets, sum, count and latest samples; the detector's totals, per-partition gauges and
stage totals."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from stream_ae.telemetry.metrics import BatchHistogram, DaemonMetrics


def histogram(buckets=(1.0, 2.0, 5.0), keep: int = 1 << 10) -> tuple[BatchHistogram, CollectorRegistry]:
    registry = CollectorRegistry()
    collector = BatchHistogram("test_seconds", "a test histogram", buckets, keep=keep)
    registry.register(collector)
    return collector, registry


def test_batch_histogram_buckets_are_cumulative_and_inclusive_with_sum_and_count():
    collector, registry = histogram()
    collector.observe_many(np.array([0.5, 1.0, 1.5, 5.0, 7.0]))
    collector.observe_many(np.array([2.0]))
    collector.observe_many(np.array([]))  # nothing, no error
    bucket = lambda le: registry.get_sample_value("test_seconds_bucket", {"le": le})  # noqa: E731
    assert [bucket(le) for le in ("1", "2", "5", "+Inf")] == [2, 4, 5, 6], "a value equal to a bound is in it"
    assert registry.get_sample_value("test_seconds_count") == 6
    assert registry.get_sample_value("test_seconds_sum") == pytest.approx(17.0)


def test_batch_histogram_without_observations_reports_zeros():
    _, registry = histogram()
    assert registry.get_sample_value("test_seconds_bucket", {"le": "+Inf"}) == 0
    assert registry.get_sample_value("test_seconds_sum") == 0


def test_recent_holds_every_sample_until_keep_then_the_latest_keep():
    collector, _ = histogram(keep=4)
    assert collector.recent().tolist() == []
    collector.observe_many(np.array([1.0, 2.0, 3.0]))
    assert sorted(collector.recent().tolist()) == [1.0, 2.0, 3.0]
    collector.observe_many(np.array([4.0, 5.0]))
    collector.observe_many(np.array([6.0]))
    assert sorted(collector.recent().tolist()) == [3.0, 4.0, 5.0, 6.0]
    copy = collector.recent()
    copy[:] = -1
    assert sorted(collector.recent().tolist()) == [3.0, 4.0, 5.0, 6.0], "recent() is a copy"


def test_recent_keeps_the_latest_samples_of_a_batch_larger_than_keep():
    collector, registry = histogram(keep=3)
    collector.observe_many(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert sorted(collector.recent().tolist()) == [3.0, 4.0, 5.0]
    assert registry.get_sample_value("test_seconds_count") == 5, "every sample counts in the buckets"


def test_recent_keeps_the_latest_samples_after_a_batch_larger_than_keep():
    collector, _ = histogram(keep=3)
    collector.observe_many(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    collector.observe_many(np.array([6.0]))
    assert sorted(collector.recent().tolist()) == [4.0, 5.0, 6.0]


def test_totals_read_each_counter_and_sum_the_dead_letter_reasons():
    metrics = DaemonMetrics(dead_letter_reasons=["empty", "invalid_json"])
    assert metrics.totals() == {"events_in": 0, "events_scored": 0, "dead_lettered": 0, "alerts": 0}
    metrics.events_consumed.inc(10)
    metrics.events_scored.inc(7)
    metrics.dead_lettered.labels("empty").inc(2)
    metrics.dead_lettered.labels("invalid_json").inc(1)
    metrics.alerts.inc(3)
    assert metrics.totals() == {"events_in": 10, "events_scored": 7, "dead_lettered": 3, "alerts": 3}


def test_every_dead_letter_reason_and_reload_result_has_a_series_from_the_start():
    metrics = DaemonMetrics(dead_letter_reasons=["empty", "oversize"])
    value = metrics.registry.get_sample_value
    assert value("stream_ae_dead_lettered_total", {"reason": "empty"}) == 0
    assert value("stream_ae_dead_lettered_total", {"reason": "oversize"}) == 0
    assert value("stream_ae_model_reloads_total", {"result": "loaded"}) == 0
    assert value("stream_ae_model_reloads_total", {"result": "refused"}) == 0


def test_every_output_topic_and_refusal_reason_has_a_series_from_the_start():
    metrics = DaemonMetrics(refusals=(["alerts", "dead"], ["record_too_large", "topic_authorization_failed"]))
    value = metrics.registry.get_sample_value
    for topic in ("alerts", "dead"):
        for reason in ("record_too_large", "topic_authorization_failed"):
            assert value("stream_ae_refused_records_total", {"topic": topic, "reason": reason}) == 0
    assert value("stream_ae_refused_records_total", {"topic": "events", "reason": "record_too_large"}) is None


def test_show_thresholds_sets_one_gauge_per_partition_and_forget_partitions_drops_them():
    metrics = DaemonMetrics()
    value = metrics.registry.get_sample_value
    metrics.show_thresholds([("events", 0), ("events", 1)], lambda key: 1.5 + key[1])
    metrics.consumer_lag.labels("events", "0").set(42)
    assert value("stream_ae_threshold", {"topic": "events", "partition": "0"}) == 1.5
    assert value("stream_ae_threshold", {"topic": "events", "partition": "1"}) == 2.5
    metrics.forget_partitions([("events", 0), ("never", 9)])  # a partition never set is no error
    assert value("stream_ae_threshold", {"topic": "events", "partition": "0"}) is None
    assert value("stream_ae_consumer_lag_events", {"topic": "events", "partition": "0"}) is None
    assert value("stream_ae_threshold", {"topic": "events", "partition": "1"}) == 2.5, "others stay"


def test_show_model_names_only_the_model_in_service():
    metrics = DaemonMetrics()
    value = metrics.registry.get_sample_value
    metrics.show_model("deep", "aaa")
    metrics.show_model("vae", "bbb")
    assert value("stream_ae_model_info", {"model": "vae", "checkpoint_sha256": "bbb"}) == 1
    assert value("stream_ae_model_info", {"model": "deep", "checkpoint_sha256": "aaa"}) is None


def test_stage_totals_are_in_the_order_the_stages_were_first_timed():
    metrics = DaemonMetrics()
    assert metrics.stage_totals() == {}
    metrics.stage_seconds.labels("poll").inc(1.0)
    metrics.stage_seconds.labels("score").inc(2.0)
    metrics.stage_seconds.labels("decode").inc(0.25)
    metrics.stage_seconds.labels("poll").inc(0.5)
    totals = metrics.stage_totals()
    assert list(totals) == ["poll", "score", "decode"]
    assert totals == {"poll": 1.5, "score": 2.0, "decode": 0.25}
