"""The kafka-python sink keeps metadata for every topic it writes to (real broker)."""

from __future__ import annotations

import time

from stream_ae.kafka.kafka_python.sink import KafkaSink
from stream_ae.kafka.options import Connection
from stream_ae.kafka.topics import ensure_topics


def test_a_topic_written_once_keeps_its_metadata_when_another_topic_is_added(broker, topic_names):
    # kafka-python's producer tracks a topic in its metadata requests only if the topic
    # was unknown when first sent to. A topic known from the first all-topics metadata
    # (a dead-letter topic written once) was dropped at the next metadata update for a
    # newly added topic, and its producer thread then asked for metadata in a busy loop
    # that never brought it back (a core at 100% in the demo).
    connection = Connection(broker.bootstrap_servers)
    dead_letter, alerts, added_later = (topic_names(base) for base in ("dead", "alerts", "later"))
    ensure_topics(connection, {dead_letter: 1, alerts: 1})
    sink = KafkaSink(connection, topics=[dead_letter, alerts])
    try:
        sink.send(dead_letter, b"key", b"malformed")
        assert sink.flush() == 1
        ensure_topics(connection, {added_later: 2})
        sink.send(added_later, b"key", b"value")
        assert sink.flush() == 1
        time.sleep(0.5)
        metadata = sink.producer._metadata  # read only: what the producer's thread sees
        assert metadata.partitions_for_topic(dead_letter) == {0}
        assert metadata.partitions_for_topic(alerts) == {0}
        sink.send(dead_letter, b"key", b"again")
        assert sink.flush() == 1
    finally:
        sink.close()
