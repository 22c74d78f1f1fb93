"""Topic administration and reading back (:mod:`stream_ae.kafka.topics`) against the real local
broker: ``ensure_topics`` creates what is missing with the partition counts asked for and
leaves existing topics alone; ``read_topic`` reads to the high watermark, or until
``expected`` records, or until its timeout."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer

from stream_ae.kafka.options import Connection
from stream_ae.kafka.topics import ensure_topics, read_topic
from tests.helpers import produce_to

pytestmark = pytest.mark.integration


def partition_counts(connection: Connection, topics: list[str]) -> dict[str, int]:
    consumer = KafkaConsumer(**connection.kafka_python())
    try:
        return {topic: len(consumer.partitions_for_topic(topic) or ()) for topic in topics}
    finally:
        consumer.close()


def test_ensure_topics_creates_the_missing_ones_with_their_partition_counts(broker, topic_names):
    connection = Connection(broker.bootstrap_servers)
    three, one = topic_names("three"), topic_names("one")
    ensure_topics(connection, {three: 3, one: 1})
    assert partition_counts(connection, [three, one]) == {three: 3, one: 1}


def test_ensure_topics_is_idempotent_and_leaves_existing_topics_as_they_are(broker, topic_names):
    connection = Connection(broker.bootstrap_servers)
    existing, new = topic_names("existing"), topic_names("new")
    ensure_topics(connection, {existing: 2})
    ensure_topics(connection, {existing: 2})  # again: no error
    ensure_topics(connection, {existing: 5, new: 4})  # another count for an existing topic changes nothing
    assert partition_counts(connection, [existing, new]) == {existing: 2, new: 4}


def test_read_topic_without_expected_reads_every_partition_to_its_high_watermark(broker, topic_names):
    connection = Connection(broker.bootstrap_servers)
    topic = topic_names("read")
    ensure_topics(connection, {topic: 3})
    keys = [f"key-{n}".encode() for n in range(40)]
    produce_to(connection, topic, [str(n).encode() for n in range(40)], keys)
    records = read_topic(connection, topic, timeout_s=20)
    assert sorted(int(r.value) for r in records) == list(range(40))
    assert len({r.partition for r in records}) == 3
    for partition in range(3):
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(len(offsets))), "each partition from its start, in offset order"
        values = [int(r.value) for r in records if r.partition == partition]
        assert values == sorted(values), "in the order they were produced"


def test_read_topic_stops_once_the_expected_records_are_read(broker, topic_names):
    connection = Connection(broker.bootstrap_servers)
    topic = topic_names("read")
    ensure_topics(connection, {topic: 1})
    produce_to(connection, topic, [str(n).encode() for n in range(20)])
    everything = read_topic(connection, topic, expected=20, timeout_s=20)
    assert [int(r.value) for r in everything] == list(range(20))
    some = read_topic(connection, topic, expected=5, timeout_s=20)
    assert 5 <= len(some) <= 20
    assert [int(r.value) for r in some] == list(range(len(some))), "from the beginning"


def test_read_topic_gives_what_it_has_when_fewer_than_expected_arrive_in_time(broker, topic_names):
    connection = Connection(broker.bootstrap_servers)
    topic = topic_names("short")
    ensure_topics(connection, {topic: 2})
    produce_to(connection, topic, [b"a", b"b", b"c"])
    started = time.monotonic()
    records = read_topic(connection, topic, expected=10, timeout_s=2.0)
    elapsed = time.monotonic() - started
    assert sorted(r.value for r in records) == [b"a", b"b", b"c"]
    assert 2.0 <= elapsed < 10.0, "waited for the timeout, not longer"


def test_read_topic_of_an_empty_topic_is_empty_at_once(broker, topic_names):
    connection = Connection(broker.bootstrap_servers)
    topic = topic_names("empty")
    ensure_topics(connection, {topic: 2})
    started = time.monotonic()
    assert read_topic(connection, topic, timeout_s=20) == []
    assert time.monotonic() - started < 10.0, "an empty topic is read up to its high watermark: done"
