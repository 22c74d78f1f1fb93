"""The kafka-python producing end (:mod:`stream_ae.kafka.kafka_python.sink`) against the real
local broker: a sealed batch's delivery counts its records once acknowledged, says when the
last acknowledgement came, and the records land with their keys, values and headers on the
partition librdkafka would pick."""

from __future__ import annotations

import time
import zlib

import pytest

from stream_ae.kafka.kafka_python.sink import KafkaSink
from stream_ae.kafka.options import Connection
from stream_ae.kafka.topics import ensure_topics, read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def sink_on(broker):
    """``sink_on(topics)``: a sink on the test broker (closed after the test)."""
    sinks: list[KafkaSink] = []

    def make(topics: list[str] = ()) -> KafkaSink:
        sinks.append(KafkaSink(Connection(broker.bootstrap_servers), flush_timeout_s=20, topics=topics))
        return sinks[-1]
    yield make
    for sink in sinks:
        sink.close()


def fresh_topic(broker, topic_names, partitions: int) -> tuple[str, Connection]:
    """A new topic of ``partitions`` partitions on the test broker, and the connection to it."""
    topic, connection = topic_names("out"), Connection(broker.bootstrap_servers)
    ensure_topics(connection, {topic: partitions})
    return topic, connection


def test_a_sealed_batch_is_counted_once_acknowledged_and_its_records_land_as_sent(broker, topic_names, sink_on):
    topic, connection = fresh_topic(broker, topic_names, 1)
    sink = sink_on([topic])
    for n in range(5):
        sink.send(topic, f"k{n}".encode(), f"v{n}".encode(), [("stream_ae.reason", b"r"), ("n", str(n).encode())])
    sealed_at = time.time()
    delivery = sink.seal()
    assert delivery.wait() == 5
    assert delivery.done()
    assert sealed_at <= delivery.acknowledged_at() <= time.time(), "the last acknowledgement came after sealing"

    records = read_topic(connection, topic, 5, timeout_s=20)
    assert [(r.key, r.value) for r in records] == [(f"k{n}".encode(), f"v{n}".encode()) for n in range(5)]
    assert [r.offset for r in records] == list(range(5))
    assert [dict(r.headers) for r in records] == [{"stream_ae.reason": b"r", "n": str(n).encode()} for n in range(5)]


def test_each_seal_closes_its_own_batch(broker, topic_names, sink_on):
    topic, connection = fresh_topic(broker, topic_names, 1)
    sink = sink_on([topic])
    sink.send(topic, None, b"a")
    sink.send(topic, None, b"b")
    first = sink.seal()
    sink.send(topic, None, b"c")
    second = sink.seal()
    empty = sink.seal()
    assert (second.wait(), first.wait(), empty.wait()) == (1, 2, 0)
    assert empty.done()
    assert sink.flush() == 0, "nothing left open"
    assert [r.value for r in read_topic(connection, topic, 3, timeout_s=20)] == [b"a", b"b", b"c"]


def test_an_empty_batch_says_it_was_acknowledged_when_it_was_sealed(sink_on):
    sink = sink_on()
    before = time.time()
    delivery = sink.seal()
    after = time.time()
    assert delivery.wait() == 0
    assert before <= delivery.acknowledged_at() <= after


def test_flush_seals_and_waits_for_what_is_open(broker, topic_names, sink_on):
    topic, connection = fresh_topic(broker, topic_names, 2)
    sink = sink_on([topic])
    for n in range(7):
        sink.send(topic, None, str(n).encode())
    assert sink.flush() == 7
    assert sorted(r.value for r in read_topic(connection, topic, None, timeout_s=20)) == [str(n).encode()
                                                                                          for n in range(7)]


def test_keyed_records_go_to_the_partition_of_the_keys_crc32(broker, topic_names, sink_on):
    topic = topic_names("keyed")
    connection = Connection(broker.bootstrap_servers)
    ensure_topics(connection, {topic: 3})
    sink = sink_on([topic])
    keys = [f"events-0-{n}".encode() for n in range(30)]
    for key in keys:
        sink.send(topic, key, b"x")
    assert sink.flush() == 30
    records = read_topic(connection, topic, None, timeout_s=20)
    assert sorted(r.key for r in records) == sorted(keys)
    assert all(r.partition == zlib.crc32(r.key) % 3 for r in records), "librdkafka's consistent_random"
    assert len({r.partition for r in records}) == 3
