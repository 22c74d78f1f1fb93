"""The detector end to end against a real Kafka-protocol broker on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

import numpy as np
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stream_ae.kafka.local_broker import free_port
from stream_ae.kafka.topics import ensure_topics, read_topic
from stream_ae.model.datasets import CARD_FEATURES
from stream_ae.pipeline.alerts import REASON_HEADER, SOURCE_HEADER
from stream_ae.pipeline.batch_budget import SMALLEST_CAP
from stream_ae.pipeline.threshold.adaptive import calibrated_k, seeded_threshold
from stream_ae.tools.daemon_thread import DaemonThread
from tests.helpers import DATASET, committed_total, detector_settings, events, produce, wait_for

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_events_in_alerts_out_with_keys_fields_and_metrics(broker, topic_names, synthetic_checkpoint):
    checkpoint, path = synthetic_checkpoint
    settings = detector_settings(broker, topic_names, path)
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: 2})
    test_rows = checkpoint.training["split"]["test"]
    rows = np.random.default_rng(0).permutation(test_rows)[:600]
    labels = DATASET.labels[rows]
    produce(settings, topic, events(rows) + [b"not json"])

    with DaemonThread(settings, checkpoint) as running:
        totals = running.wait_accounted(len(rows) + 1)
        port = running.daemon.server.port
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status
        ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status
        # the lag gauges are set between batches at most once a second (housekeeping): on a
        # quick broker all 601 events can be handled before the first round after the join
        lag_gauges = [("stream_ae_consumer_lag_events", (("partition", p), ("topic", topic))) for p in "01"]
        wait_for(lambda: all(gauge in scrape(port) for gauge in lag_gauges), 30, "the consumer-lag gauges")
        metrics = scrape(port)
        k = running.daemon.served.threshold.k  # calibrated to threshold.false_alarm_rate

    expected_k = calibrated_k(checkpoint.validation_scores, settings.threshold.false_alarm_rate, "log")
    assert k == expected_k > 0
    assert totals == {"events_in": 601, "events_scored": 600, "dead_lettered": 1,
                      "alerts": totals["alerts"]}
    alerts = [orjson.loads(r.value) | {"_key": r.key.decode()}
              for r in read_topic(settings.kafka.connection(), settings.topics.alerts, totals["alerts"])]
    assert len(alerts) == totals["alerts"] > 0
    flagged = set()
    for alert in alerts:
        assert alert["_key"] == alert["key"] == f"{alert['topic']}-{alert['partition']}-{alert['offset']}"
        assert alert["topic"] == topic and alert["model"] == "deep"
        assert alert["checkpoint_sha256"] == checkpoint.sha256
        assert alert["score"] > alert["threshold"] > 0
        assert alert["zscore"] > k
        assert isinstance(alert["reconstruction_error"], float) and alert["reconstruction_error"] >= 0
        assert alert["detected_at_ms"] >= alert["event_timestamp_ms"] > 0
        assert [f["name"] in CARD_FEATURES for f in alert["top_features"]] == [True] * 3
        errors = [f["error"] for f in alert["top_features"]]
        assert errors == sorted(errors, reverse=True)
        flagged.add(int(alert["event_id"].removeprefix("row-")))
    alerted = np.isin(rows, list(flagged))
    assert alerted[labels == 1].mean() > 0.5, "most anomalies raise an alert"
    assert labels[alerted].mean() > 0.5, "most alerts are anomalies"

    scores = read_topic(settings.kafka.connection(), settings.topics.scores, 600)
    assert len({r.key for r in scores}) == 600

    assert health == ready == 200
    value = lambda name, **labels: metrics.get((name, tuple(sorted(labels.items()))))  # noqa: E731
    assert value("stream_ae_events_consumed_total") == 601
    assert value("stream_ae_events_scored_total") == 600
    assert value("stream_ae_alerts_total") == len(alerts)
    assert value("stream_ae_dead_lettered_total", reason="invalid_json") == 1
    for histogram in ("stream_ae_batch_size_events", "stream_ae_inference_seconds",
                      "stream_ae_end_to_end_latency_seconds"):
        assert value(f"{histogram}_count") > 0, histogram
    assert value("stream_ae_end_to_end_latency_seconds_count") == 600
    assert value("stream_ae_inference_seconds_bucket", le="0.00025") is not None  # sub-millisecond buckets
    for partition in ("0", "1"):
        assert value("stream_ae_threshold", topic=topic, partition=partition) > 0
        assert value("stream_ae_consumer_lag_events", topic=topic, partition=partition) is not None
    for stage in ("poll", "decode", "score", "threshold", "produce", "commit"):
        assert value("stream_ae_stage_seconds_total", stage=stage) > 0
    assert value("stream_ae_model_info", model="deep", checkpoint_sha256=checkpoint.sha256) == 1
    assert value("process_resident_memory_bytes") > 0


def test_malformed_records_reach_the_dead_letter_topic_and_nothing_is_lost(broker, topic_names,
                                                                           synthetic_checkpoint):
    checkpoint, path = synthetic_checkpoint
    settings = detector_settings(broker, topic_names, path, events={"max_record_bytes": 4000})
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: 3})
    good = events(checkpoint.training["split"]["test"][:100])
    row = orjson.loads(good[0])
    bad = {
        b"": "empty",
        b"{" + b" " * 5000 + b"}": "oversize",
        b"\xc3\x28": "not_utf8",
        b"{'single': 'quotes'}": "invalid_json",
        b"42": "not_an_object",
        orjson.dumps({k: v for k, v in row.items() if k != "V7"}): "missing_field",
        orjson.dumps(row | {"Amount": "12.5"}): "non_numeric",
        orjson.dumps(row).replace(b'"V3":', b'"V3":NaN,"x":', 1): "non_finite",
    }
    values = good[:50] + list(bad) + good[50:]
    keys = [f"k{i}".encode() for i in range(len(values))]
    produce(settings, topic, values, keys)

    with DaemonThread(settings, checkpoint) as running:
        totals = running.wait_accounted(len(values))
    assert totals["events_in"] == len(values) == totals["events_scored"] + totals["dead_lettered"]
    assert totals["events_scored"] == 100 and totals["dead_lettered"] == len(bad)

    dead = read_topic(settings.kafka.connection(), settings.topics.dead_letter, len(bad))
    assert len(dead) == len(bad)
    for record in dead:
        headers = dict(record.headers)
        assert headers[REASON_HEADER].decode() == bad[record.value or b""]
        assert record.key == keys[values.index(record.value or b"")]
        source_topic, partition, offset = headers[SOURCE_HEADER].decode().rsplit("-", 2)
        assert source_topic == topic and int(offset) >= 0
    assert Counter(dict(r.headers)[REASON_HEADER].decode() for r in dead) == Counter(bad.values())
    assert len(read_topic(settings.kafka.connection(), settings.topics.scores, 100)) == 100


def test_threshold_follows_a_shifted_stream_and_ignores_a_burst(broker, topic_names, synthetic_checkpoint):
    checkpoint, path = synthetic_checkpoint
    # batches small beside the half-life, as with the defaults (4,096 beside 20,000)
    settings = detector_settings(broker, topic_names, path, consumer={"max_batch_size": 100},
                                 threshold={"half_life_events": 300, "warmup_events": 0})
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: 1})
    normal_rows = checkpoint.training["split"]["validation"]
    rng = np.random.default_rng(5)

    with DaemonThread(settings, checkpoint) as running:
        registry = running.daemon.metrics.registry
        gauge = lambda: registry.get_sample_value("stream_ae_threshold", {"topic": topic, "partition": "0"})  # noqa: E731
        sent = 0

        def phase(values: list[bytes]) -> float:
            nonlocal sent
            produce(settings, topic, values)
            sent += len(values)
            running.wait_accounted(sent)
            return gauge()

        settled = phase(events(rng.choice(normal_rows, 1500)))
        burst = DATASET.values.copy()
        burst[:, :10] += 15 * checkpoint.scaler_std[:10]
        alerts_before = running.daemon.metrics.totals()["alerts"]
        after_burst = phase(events(rng.choice(normal_rows, 400), burst))
        assert running.daemon.metrics.totals()["alerts"] - alerts_before == 400, "every burst event flagged"
        assert after_burst == settled, "a burst of anomalies must not move the threshold"

        # a drift that lifts the score of every event, a third of them over the bar at first
        # (one that lifts all of them over it is what the bar must not follow: a burst)
        shifted = (DATASET.values + rng.normal(scale=0.2, size=DATASET.values.shape)
                   * checkpoint.scaler_std).astype(np.float32)
        shifted_rows = rng.choice(normal_rows, 3000)
        alerts_before = running.daemon.metrics.totals()["alerts"]
        after_shift = phase(events(shifted_rows, shifted))
        shift_alerts = running.daemon.metrics.totals()["alerts"] - alerts_before
        shifted_errors = running.daemon.served.detector.score(shifted[shifted_rows[-1500:]]).score
        k = running.daemon.served.threshold.k
    # the bar moved to where the shifted stream's own statistics put it
    target = seeded_threshold(shifted_errors, k, settings.threshold.scale)
    assert abs(after_shift - settled) > 0.2 * settled, "the threshold moved with the stream"
    assert after_shift == pytest.approx(target, rel=0.2)
    assert shift_alerts < 0.1 * 3000, "the shifted level becomes normal, not a stream of alerts"


def test_sigterm_finishes_the_batch_commits_and_exits_zero(broker, topic_names, synthetic_checkpoint, tmp_path):
    _, path = synthetic_checkpoint
    port = free_port()
    settings = detector_settings(broker, topic_names, path, metrics={"port": port})
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: 2})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    process = subprocess.Popen([sys.executable, "-m", "stream_ae", "run", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        def ready() -> bool:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
            except (urllib.error.URLError, ConnectionError):
                return False
        wait_for(ready, 60, "the daemon to be ready")
        produce(settings, topic, events(np.arange(300)))
        wait_for(lambda: scrape(port).get(("stream_ae_events_scored_total", ())) == 300, 60,
                 "300 events scored")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        output = process.stdout.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, output
    assert time.monotonic() - started < 30
    assert "SIGTERM received" in output and "stopped" in output
    assert committed_total(settings, topic, 2) == 300


def test_a_batch_budget_caps_the_batches_and_every_event_is_still_scored(broker, topic_names, synthetic_checkpoint):
    """3,000 events already in the topic, batches of up to 2,048: with no budget they come in
    a few full batches; with a budget of 1 ms (below what 2,048 events cost to score) the
    loop measures its cost, caps the batches and says so in ``stream_ae_batch_cap_events``."""
    checkpoint, path = synthetic_checkpoint
    rows = np.arange(3000)
    runs = {}
    for budget in (None, 1.0):
        settings = detector_settings(broker, topic_names, path,
                                     consumer={"max_batch_size": 2048, "batch_budget_ms": budget})
        ensure_topics(settings.kafka.connection(), {settings.topics.input[0]: 1})
        produce(settings, settings.topics.input[0], events(rows))
        with DaemonThread(settings, checkpoint) as running:
            totals = running.wait_accounted(len(rows))
            metrics = scrape(running.daemon.server.port)
        count = metrics.get(("stream_ae_batch_size_events_count", ()))
        within_64 = metrics.get(("stream_ae_batch_size_events_bucket", (("le", "64.0"),)))
        runs[budget] = (totals, count, count - within_64, metrics.get(("stream_ae_batch_cap_events", ())))
    (plain, plain_batches, _, plain_cap), (budgeted, batches, above_64, cap) = runs[None], runs[1.0]
    assert plain["events_scored"] == budgeted["events_scored"] == 3000
    assert plain_cap == 2048 and plain_batches <= 6
    assert cap == SMALLEST_CAP, "1 ms holds fewer than 64 events: the cap is at its floor"
    assert above_64 <= 3, "batches over the cap: only those polled before the first full one was measured"
    assert batches >= above_64 + (3000 - above_64 * 2048) / 64
