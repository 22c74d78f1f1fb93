"""The consuming end: a kafka-python consumer in a consumer group, micro-batches, manual commits."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from itertools import chain

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata

from stream_ae.kafka.consuming import BatchPolicy, log_failed_commit, start_reading
from stream_ae.kafka.ends import Source
from stream_ae.kafka.options import Connection, ConsumerOptions
from stream_ae.kafka.records import ConsumedBatch, PartitionKey, Record

log = logging.getLogger(__name__)

TOPIC_WAIT_S = 10.0
"""Longest wait, at start-up, for the input topics' partitions to be known (seconds)."""

UNREACHABLE_PAUSE_S = 0.5
"""Pause after a poll that failed because the cluster could not be reached (seconds)."""


def offsets_and_metadata(next_offsets: dict[PartitionKey, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    """kafka-python's form of offsets to commit (no metadata, no leader epoch)."""
    return {TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in next_offsets.items()}


def _commit_answered(offsets: dict, response: object) -> None:
    """Callback of an asynchronous commit: a refusal means the records will be read again."""
    if isinstance(response, Exception):
        log_failed_commit(len(offsets), response, asynchronous=True)


class _Listener(ConsumerRebalanceListener):
    """kafka-python's rebalance listener, handing on the partition objects gained and lost."""

    def __init__(self, gained: Callable[[set[TopicPartition]], None],
                 lost: Callable[[set[TopicPartition]], None]) -> None:
        self.gained = gained
        self.lost = lost

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.gained(assigned)

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.lost(revoked)


class KafkaSource(Source):
    """Reads micro-batches from the input topics and commits what has been handled.

    Auto-commit is off: offsets move only through :meth:`commit`, which the daemon calls
    once a batch's output has been acknowledged (at-least-once delivery), or through a
    transaction given :meth:`group_metadata` (exactly-once). With
    ``consumer.static_partitions`` set, the consumer reads exactly those partitions
    (``assign``) instead of joining a rebalance, and still commits under ``group_id``;
    ``on_assigned`` is then called once, from the constructor.

    Args:
        connection: how to reach the cluster.
        topics: input topics to subscribe to.
        consumer: group id, batch bounds, timeouts, static partitions.
        on_assigned, on_revoked: called from inside ``poll`` with the ``(topic, partition)``
            pairs gained or lost in a rebalance.
    """

    def __init__(self, connection: Connection, topics: list[str], consumer: ConsumerOptions,
                 on_assigned: Callable[[list[PartitionKey]], None] = lambda keys: None,
                 on_revoked: Callable[[list[PartitionKey]], None] = lambda keys: None) -> None:
        self.configured = BatchPolicy.from_options(consumer)
        self.batching = self.configured
        self.consumer = KafkaConsumer(
            **connection.kafka_python(),
            group_id=consumer.group_id,
            enable_auto_commit=False,
            auto_offset_reset=consumer.auto_offset_reset,
            max_poll_records=consumer.max_batch_size,
            fetch_max_wait_ms=consumer.fetch_max_wait_ms,
            max_partition_fetch_bytes=consumer.max_partition_fetch_bytes,
            session_timeout_ms=consumer.session_timeout_ms,
            heartbeat_interval_ms=consumer.heartbeat_interval_ms,
            isolation_level=consumer.isolation_level,
        )
        self.subscribes = not consumer.static_partitions
        self._membership = self.consumer.group_metadata()
        start_reading(
            topics, consumer.static_partitions,
            lambda keys: self.consumer.assign([TopicPartition(topic, number) for topic, number in keys]),
            self._subscribe, on_assigned, on_revoked)

    def _subscribe(self, topics: list[str], gained: Callable[[set[TopicPartition]], None],
                   lost: Callable[[set[TopicPartition]], None]) -> None:
        """Join the group's rebalances on ``topics``, with their partitions known before the first join.

        kafka-python (3.0.12) joins as soon as it is polled, often before the metadata of the
        topics just subscribed to has come back (or before a topic that does not exist yet
        has been created by that metadata request): the group leader then assigns nothing,
        and the metadata that arrives a moment later calls for a second rebalance. When a
        poll's timeout ends while that second join is in flight, the client never completes
        it (its join loop runs only while a rejoin is needed, and the leader's own
        assignment has cleared that): no partition is ever assigned and heartbeats stay off.
        Measured here, daemons started right after their input topic was created: 4 of 60
        hung (Apache Kafka 4.4 and 3.9); with an input topic the broker creates on the first
        metadata request, 1 of 15 on Apache Kafka 4.4. None of 110 hung (Tansu, Apache Kafka
        4.4 and 3.9, topics created before or on request) with what this does: wait, before
        the first poll, until the client's own metadata (which its I/O thread refreshes for
        the subscribed topics, and which the broker answers by creating a missing topic
        where it may) lists the topics' partitions. A topic still without partitions after
        :data:`TOPIC_WAIT_S` seconds (it does not exist, and the broker does not create
        topics on request) is logged and left to the rebalances.
        """
        self.consumer.subscribe(topics, listener=_Listener(gained, lost))
        metadata = getattr(self.consumer, "_cluster", None)  # read only: the client's metadata cache
        if metadata is None or not hasattr(metadata, "partitions_for_topic"):  # another layout: nothing to wait for
            return
        deadline = time.monotonic() + TOPIC_WAIT_S
        while missing := [topic for topic in topics if not metadata.partitions_for_topic(topic)]:
            if time.monotonic() > deadline:
                log.warning("input topics %s have no partitions after %.0f s; waiting for them in the group",
                            missing, TOPIC_WAIT_S)
                return
            time.sleep(0.05)

    def _fetch(self, wanted: int, timeout_s: float) -> list[Record]:
        """At most ``wanted`` records within ``timeout_s``; none when the broker is unreachable.

        kafka-python (3.0.12) can raise a retriable error out of ``poll`` while a broker is
        down: its coordinator lookup treats a lost connection as stale metadata and asks for
        new metadata, whose refused connection (``KafkaConnectionError: 111 ECONNREFUSED``)
        it does not catch. Seen here twice in the broker-outage test, each time ending the
        daemon's thread. Such an error is logged, nothing is fetched (the consumer's position
        has not moved, so no record is skipped), and the next poll tries again after a pause
        of at most :data:`UNREACHABLE_PAUSE_S`. Other errors are raised.
        """
        try:
            fetched = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=wanted)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            log.warning("poll failed, the cluster unreachable (%s); polling again", exc)
            time.sleep(min(timeout_s, UNREACHABLE_PAUSE_S))
            return []
        return list(chain.from_iterable(fetched.values()))

    def poll_records(self) -> list[Record]:
        """The client's records of one micro-batch (:meth:`consuming.BatchPolicy.fill`): at
        most ``max_batch_size``, waiting at most ``max_wait_ms``; empty when nothing
        arrived in time."""
        records = self.batching.fill(self._fetch)
        self._membership = self.consumer.group_metadata()
        return records

    def poll_batch(self) -> ConsumedBatch:
        """One micro-batch (see :meth:`poll_records`) as columns."""
        return ConsumedBatch.from_records(self.poll_records())

    def limit_batch(self, records: int) -> None:
        """See :meth:`ends.Source.limit_batch`."""
        self.batching = self.configured.limited(records)

    def commit(self, next_offsets: dict[PartitionKey, int], asynchronous: bool = False) -> bool:
        """See :meth:`ends.Source.commit`; an asynchronous commit's outcome is logged when the
        reply arrives during a later poll, a synchronous one refused after a rebalance
        (``CommitFailedError``) returns False."""
        offsets = offsets_and_metadata(next_offsets)
        if not offsets:
            return True
        if asynchronous:
            self.consumer.commit_async(offsets, callback=_commit_answered)
            return True
        try:
            self.consumer.commit(offsets)
        except CommitFailedError as exc:
            log_failed_commit(len(offsets), exc, asynchronous=False)
            return False
        return True

    def rewind(self, first_offsets: dict[PartitionKey, int]) -> None:
        """Seek each assigned partition back to the given offset, so its records are read again."""
        assigned = self.consumer.assignment()
        for (topic, partition), offset in first_offsets.items():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                self.consumer.seek(tp, offset)

    def group_metadata(self) -> ConsumerGroupMetadata | None:
        """See :meth:`ends.Source.group_metadata`: kafka-python's ``ConsumerGroupMetadata``,
        taken right after the latest poll; None when the consumer subscribes and held no
        generation then."""
        membership = self._membership
        return None if self.subscribes and membership.generation_id < 0 else membership

    def connected(self) -> bool:
        """Whether the consumer holds at least one open broker connection right now."""
        connections = self.consumer.metrics().get("consumer-metrics", {}).get("connection-count")
        return bool(connections)

    def lag(self) -> dict[PartitionKey, int]:
        """Per assigned partition: high watermark minus position (events), where both are known."""
        lags: dict[PartitionKey, int] = {}
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = self.consumer.position(tp, timeout_ms=0)
            except KafkaError:
                continue
            if position is not None:
                lags[(tp.topic, tp.partition)] = max(0, highwater - position)
        return lags

    def close(self) -> None:
        """Leave the group and close the connections (no commit: the daemon commits)."""
        self.consumer.close(autocommit=False)
