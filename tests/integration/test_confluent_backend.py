"""The confluent-kafka backend end to end against the real broker: same promise as kafka-python.

The commit-after-acknowledgement test runs for both clients in ``test_detector.py``.
"""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from stream_ae.kafka.topics import ensure_topics, read_topic
from stream_ae.pipeline.alerts import REASON_HEADER
from stream_ae.pipeline.codec import encode_binary
from stream_ae.service.daemon import BackgroundDetector
from tests.helpers import DATASET, committed_total, detector_settings, events, produce

pytestmark = pytest.mark.integration
pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed (the 'confluent' extra)")
from stream_ae.kafka.confluent.sink import ConfluentSink  # noqa: E402 (needs confluent-kafka)
from stream_ae.kafka.confluent.source import ConfluentSource  # noqa: E402


def confluent_settings(broker, topic_names, path, **overrides):
    return detector_settings(broker, topic_names, path, kafka={"client": "confluent-kafka"}, **overrides)


def test_events_in_alerts_out_and_dead_letters(broker, topic_names, synthetic_checkpoint):
    checkpoint, path = synthetic_checkpoint
    settings = confluent_settings(broker, topic_names, path)
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: 2})
    rows = np.random.default_rng(1).permutation(checkpoint.training["split"]["test"])[:400]
    bad = {b"not json": "invalid_json", encode_binary(np.ones(5)): "binary_wrong_count"}
    produce(settings, topic, events(rows[:200]) + list(bad) + [encode_binary(DATASET.values[r]) for r in rows[200:]])

    with BackgroundDetector(settings, checkpoint) as running:
        assert isinstance(running.daemon.source, ConfluentSource)
        assert isinstance(running.daemon.sink, ConfluentSink)
        totals = running.wait_accounted(402)
        lag = running.daemon.source.lag()
        connected = running.daemon.source.connected()

    assert totals == {"events_in": 402, "events_scored": 400, "dead_lettered": 2, "alerts": totals["alerts"]}
    assert connected and set(lag) == {(topic, 0), (topic, 1)} and all(v >= 0 for v in lag.values())
    alerts = [orjson.loads(r.value)
              for r in read_topic(settings.kafka.connection(), settings.topics.alerts, totals["alerts"])]
    assert len(alerts) == totals["alerts"] > 0
    labels = dict(zip(rows.tolist(), DATASET.labels[rows].tolist()))
    flagged = [labels[int(a["event_id"].removeprefix("row-"))] for a in alerts if a["event_id"]]
    assert np.mean(flagged) > 0.5, "most alerts are anomalies"
    assert all(a["key"] == f"{a['topic']}-{a['partition']}-{a['offset']}" for a in alerts)
    dead = read_topic(settings.kafka.connection(), settings.topics.dead_letter, 2)
    assert {r.value: dict(r.headers)[REASON_HEADER].decode() for r in dead} == bad
    scores = read_topic(settings.kafka.connection(), settings.topics.scores, 400)
    assert len({r.key for r in scores}) == 400


def test_rewind_reads_a_batch_again(broker, topic_names, synthetic_checkpoint):
    checkpoint, path = synthetic_checkpoint
    settings = confluent_settings(broker, topic_names, path)
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: 1})
    produce(settings, topic, events(checkpoint.training["split"]["test"][:50]))
    assigned: list = []
    source = ConfluentSource(settings.kafka.connection(), [topic], settings.consumer.options(), assigned.extend)
    try:
        first = source.poll_batch()
        for _ in range(200):
            if len(first):
                break
            first = source.poll_batch()
        assert assigned == [(topic, 0)] and first.offsets.tolist() == list(range(50))
        assert first.first_offsets() == {(topic, 0): 0} and first.next_offsets() == {(topic, 0): 50}
        source.rewind(first.first_offsets())
        again: list[int] = []
        while len(again) < 50:
            again.extend(source.poll_batch().offsets.tolist())
        assert again == list(range(50))
        assert source.commit(first.next_offsets()) and committed_total(settings, topic, 1) == 50
    finally:
        source.close()


def test_both_sinks_put_a_key_on_the_same_partition_and_time_its_acknowledgement(broker, topic_names):
    from stream_ae.kafka.kafka_python.sink import KafkaSink
    from stream_ae.kafka.options import Connection

    connection = Connection(broker.bootstrap_servers)
    topic = topic_names("alerts")
    ensure_topics(connection, {topic: 5})
    keys = [f"events-{n % 3}-{n * 7}".encode() for n in range(60)]
    for sink in (KafkaSink(connection), ConfluentSink(connection)):
        sink.send(topic, b"warm-up", b"")
        sink.flush()  # connected, producer id granted: what is timed next is one round trip
        for key in keys:
            sink.send(topic, key, type(sink).__name__.encode())
        sealed_at = time.time()
        delivery = sink.seal()
        time.sleep(0.5)  # the loop busy elsewhere: the acknowledgement is timed when it came
        assert delivery.wait() == len(keys)
        assert sealed_at <= delivery.acknowledged_at() < sealed_at + 0.4
        sink.close()
    placed: dict[bytes, set[int]] = {}
    for record in read_topic(connection, topic, 2 * len(keys) + 2):
        placed.setdefault(record.key, set()).add(record.partition)
    assert len(placed) == len(keys) + 1
    assert all(len(partitions) == 1 for partitions in placed.values()), "one partition per key, both clients"
    assert len(set().union(*placed.values())) > 1, "keys spread over the partitions"


def test_both_sinks_refuse_a_record_over_their_limit_for_good_and_deliver_the_rest(broker, topic_names):
    from stream_ae.kafka.ends import DeliveryError
    from stream_ae.kafka.kafka_python.sink import KafkaSink
    from stream_ae.kafka.options import Connection

    connection = Connection(broker.bootstrap_servers)
    topic = topic_names("scores")
    ensure_topics(connection, {topic: 1})
    for sink in (KafkaSink(connection, max_request_bytes=4096), ConfluentSink(connection, max_request_bytes=4096)):
        producer = sink.producer
        sink.send(topic, b"small-1", b"x")
        sink.send(topic, b"large", b"x" * 8192)
        sink.send(topic, b"small-2", b"y")
        with pytest.raises(DeliveryError) as failed:
            sink.seal().wait()
        assert failed.value.permanent and failed.value.transient == 0
        assert [(item.topic, item.reason) for item in failed.value.refusals] == [(topic, "record_too_large")]
        assert sink.producer is producer, "a refusal alone does not replace the producer"
        sink.send(topic, b"after", b"z")
        assert sink.seal().wait() == 1
        sink.close()
    values = sorted(record.value for record in read_topic(connection, topic, 6))
    assert values == [b"x", b"x", b"y", b"y", b"z", b"z"], "both sinks: the small records, never the large one"
