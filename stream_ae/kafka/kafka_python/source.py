"""The consuming end: a kafka-python consumer in a consumer group, micro-batches, manual commits."""

from __future__ import annotations

import logging
from itertools import chain
from typing import Callable

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from stream_ae.batching import BatchPolicy
from stream_ae.config import ConsumerSettings, KafkaSettings
from stream_ae.records import ConsumedBatch, PartitionKey, Record

log = logging.getLogger(__name__)


def _log_commit_failure(offsets: dict, response: object) -> None:
    """Callback of an asynchronous commit: a refusal means the records will be read again."""
    if isinstance(response, Exception):
        log.warning("asynchronous commit of %d partitions failed (the next commit carries later "
                    "offsets; without one, the records are read again): %s", len(offsets), response)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, on_assigned: Callable[[list[PartitionKey]], None],
                 on_revoked: Callable[[list[PartitionKey]], None]) -> None:
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.on_assigned([(tp.topic, tp.partition) for tp in assigned])

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.on_revoked([(tp.topic, tp.partition) for tp in revoked])


class KafkaSource:
    """Reads micro-batches from the input topics and commits what has been handled.

    Auto-commit is off: offsets move only through :meth:`commit`, which the daemon calls
    once a batch's output has been acknowledged (at-least-once delivery). With
    ``consumer.static_partitions`` set, the consumer reads exactly those partitions
    (``assign``) instead of joining a rebalance, and still commits under ``group_id``;
    ``on_assigned`` is then called once, from the constructor.

    Args:
        kafka: connection and security settings.
        topics: input topics to subscribe to.
        consumer: group id, batch bounds, timeouts.
        on_assigned, on_revoked: called from inside ``poll`` with the ``(topic, partition)``
            pairs gained or lost in a rebalance.
    """

    def __init__(self, kafka: KafkaSettings, topics: list[str], consumer: ConsumerSettings,
                 on_assigned: Callable[[list[PartitionKey]], None] = lambda keys: None,
                 on_revoked: Callable[[list[PartitionKey]], None] = lambda keys: None) -> None:
        self.batching = BatchPolicy.from_settings(consumer)
        self.consumer = KafkaConsumer(
            **kafka.client_options(),
            group_id=consumer.group_id,
            enable_auto_commit=False,
            auto_offset_reset=consumer.auto_offset_reset,
            max_poll_records=consumer.max_batch_size,
            fetch_max_wait_ms=consumer.fetch_max_wait_ms,
            max_partition_fetch_bytes=consumer.max_partition_fetch_bytes,
            session_timeout_ms=consumer.session_timeout_ms,
            heartbeat_interval_ms=consumer.heartbeat_interval_ms,
        )
        keys = consumer.static_assignment()
        if keys:
            self.consumer.assign([TopicPartition(topic, number) for topic, number in keys])
            on_assigned(keys)
        else:
            self.consumer.subscribe(topics, listener=_Listener(on_assigned, on_revoked))

    def _fetch(self, wanted: int, timeout_s: float) -> list[Record]:
        fetched = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=wanted)
        return list(chain.from_iterable(fetched.values()))

    def poll_records(self) -> list[Record]:
        """The client's records of one micro-batch (:meth:`batching.BatchPolicy.fill`): at
        most ``max_batch_size``, waiting at most ``max_wait_ms``; empty when nothing
        arrived in time."""
        return self.batching.fill(self._fetch)

    def poll_batch(self) -> ConsumedBatch:
        """One micro-batch (see :meth:`poll_records`) as columns."""
        return ConsumedBatch.from_records(self.poll_records())

    def commit(self, next_offsets: dict[PartitionKey, int], asynchronous: bool = False) -> bool:
        """Commit the given next offsets (see :meth:`ConsumedBatch.next_offsets`).

        Args:
            next_offsets: per partition, the offset after the last handled record.
            asynchronous: send the commit and return; its outcome is logged when the reply
                arrives during a later poll (a later or final synchronous commit covers a
                lost one). Otherwise wait for the broker's reply.

        Returns:
            False when the group rebalanced and the commit was refused: those records will be
            read again by the partition's new owner (at-least-once), so this is not an error.
        """
        offsets = {TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
                   for (topic, partition), offset in next_offsets.items()}
        if not offsets:
            return True
        if asynchronous:
            self.consumer.commit_async(offsets, callback=_log_commit_failure)
            return True
        try:
            self.consumer.commit(offsets)
        except CommitFailedError as exc:
            log.warning("commit refused after a rebalance; the batch will be read again: %s", exc)
            return False
        return True

    def rewind(self, first_offsets: dict[PartitionKey, int]) -> None:
        """Seek each assigned partition back to the given offset, so its records are read again."""
        assigned = self.consumer.assignment()
        for (topic, partition), offset in first_offsets.items():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                self.consumer.seek(tp, offset)

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
