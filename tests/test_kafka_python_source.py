"""The kafka-python consuming end (:mod:`stream_ae.kafka.kafka_python.source`) against the real
local broker: micro-batches as columns, commits that a new consumer of the group resumes
after, rewinding, lag and connection, and joining the group's rebalances."""

from __future__ import annotations

import time

import pytest

from stream_ae.kafka.kafka_python.source import KafkaSource
from stream_ae.kafka.options import Connection, ConsumerOptions
from stream_ae.kafka.records import ConsumedBatch
from stream_ae.kafka.topics import ensure_topics
from tests.helpers import produce_to

pytestmark = pytest.mark.integration

EVENTS = 30


def options(group_id: str, static: list | None, max_batch_size: int = 10) -> ConsumerOptions:
    return ConsumerOptions(group_id, max_batch_size=max_batch_size, max_wait_ms=200, auto_offset_reset="earliest",
                           session_timeout_ms=6000, heartbeat_interval_ms=1000, fetch_max_wait_ms=20,
                           max_partition_fetch_bytes=1 << 20, static_partitions=static)


def next_batch(source: KafkaSource, timeout_s: float = 20.0) -> ConsumedBatch:
    """The next non-empty micro-batch."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = source.poll_batch()
        if len(batch):
            return batch
    pytest.fail(f"no records within {timeout_s} s")


@pytest.fixture
def one_partition(broker, topic_names):
    """A one-partition topic holding values ``v0..v29`` keyed ``k0..k29`` with a header each,
    the connection, and a ``source(group, **)`` factory (sources closed after the test)."""
    connection = Connection(broker.bootstrap_servers)
    topic = topic_names("in")
    ensure_topics(connection, {topic: 1})
    produce_to(connection, topic, [f"v{n}".encode() for n in range(EVENTS)],
               [f"k{n}".encode() for n in range(EVENTS)], [[("n", str(n).encode())] for n in range(EVENTS)])
    sources: list[KafkaSource] = []

    def source(group: str, static: bool = True, **kw) -> KafkaSource:
        sources.append(KafkaSource(connection, [topic], options(group, [(topic, 0)] if static else None), **kw))
        return sources[-1]
    yield topic, source
    for opened in sources:
        opened.close()


def test_a_poll_gives_a_micro_batch_of_columns_at_most_max_batch_size(one_partition, topic_names):
    topic, source = one_partition
    assigned = []
    reader = source(topic_names("group"), on_assigned=assigned.append)
    assert assigned == [[(topic, 0)]], "static partitions are announced once, from the constructor"
    batch = next_batch(reader)
    assert 0 < len(batch) <= 10
    count = len(batch)
    assert batch.values == [f"v{n}".encode() for n in range(count)]
    assert batch.offsets.tolist() == list(range(count))
    assert batch.partitions == [(topic, 0)] and batch.partition_index.tolist() == [0] * count
    assert (batch.timestamps_ms > 1_600_000_000_000).all(), "the broker's timestamps, in milliseconds"
    record = batch.record(count - 1)
    assert record.key == f"k{count - 1}".encode() and dict(record.headers) == {"n": str(count - 1).encode()}
    assert batch.next_offsets() == {(topic, 0): count}


def test_a_new_source_of_the_group_resumes_after_the_commit(one_partition, topic_names):
    topic, source = one_partition
    group = topic_names("group")
    first = source(group)
    batch = next_batch(first)
    assert first.commit(batch.next_offsets()) is True
    assert first.commit({}) is True, "nothing to commit is no error"
    first.close()

    resumed = next_batch(source(group))
    assert resumed.offsets[0] == len(batch), "starts right after the committed offset"
    assert resumed.values[0] == f"v{len(batch)}".encode()

    fresh = next_batch(source(topic_names("other-group")))
    assert fresh.offsets[0] == 0, "another group has its own offsets"


def test_without_a_commit_a_new_source_reads_from_the_start(one_partition, topic_names):
    _, source = one_partition
    group = topic_names("group")
    first = source(group)
    next_batch(first)
    first.close()
    assert next_batch(source(group)).offsets[0] == 0


def test_an_asynchronous_commit_is_taken_by_the_broker(one_partition, topic_names):
    _, source = one_partition
    group = topic_names("group")
    first = source(group)
    batch = next_batch(first)
    assert first.commit(batch.next_offsets(), asynchronous=True) is True
    first.poll_batch()  # the answer is served during a poll
    first.close()
    assert next_batch(source(group)).offsets[0] == len(batch)


def test_rewind_reads_the_records_again_from_the_given_offset(one_partition, topic_names):
    topic, source = one_partition
    reader = source(topic_names("group"))
    seen = []
    while len(seen) < 15:
        seen.extend(next_batch(reader).offsets.tolist())
    reader.rewind({(topic, 0): 5, (topic, 9): 0})  # a partition not assigned is left alone
    again = next_batch(reader)
    assert again.offsets[0] == 5 and again.values[0] == b"v5"


def test_lag_is_zero_once_everything_is_read_and_the_source_is_connected(one_partition, topic_names):
    topic, source = one_partition
    reader = source(topic_names("group"))
    read = 0
    while read < EVENTS:
        read += len(next_batch(reader))
    assert read == EVENTS
    assert reader.poll_batch().values == [], "nothing more: an empty batch after max_wait"
    assert reader.lag() == {(topic, 0): 0}
    assert reader.connected()


def test_subscribing_joins_the_group_and_announces_the_assignment(broker, topic_names):
    connection = Connection(broker.bootstrap_servers)
    topic = topic_names("in")
    ensure_topics(connection, {topic: 2})
    produce_to(connection, topic, [b"a", b"b", b"c", b"d"], [b"1", b"2", b"3", b"4"])
    assigned, revoked = [], []
    reader = KafkaSource(connection, [topic], options(topic_names("group"), None),
                         on_assigned=assigned.append, on_revoked=revoked.append)
    try:
        assert assigned == [], "nothing is owned before the group's rebalance"
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < 4 and time.monotonic() < deadline:
            values.extend(reader.poll_batch().values)
        assert sorted(values) == [b"a", b"b", b"c", b"d"]
        assert [sorted(partitions) for partitions in assigned] == [[(topic, 0), (topic, 1)]]
        assert set(reader.lag()) == {(topic, 0), (topic, 1)}
    finally:
        reader.close()
