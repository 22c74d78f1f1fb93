"""The consuming end with confluent-kafka (librdkafka), with kafka-python's semantics.

Chosen with ``kafka.client: confluent-kafka`` (see :mod:`stream_ae.kafka.backends`). As with the
default backend, auto-commit is off and offsets move only through
:meth:`ConfluentSource.commit`, which the daemon calls once the batch's alerts, scores and
dead letters are acknowledged (``acks=all``, idempotent producer): at-least-once delivery;
or through the batch's transaction, given :meth:`ConfluentSource.group_metadata`
(exactly-once).

confluent-kafka's ``Message`` has methods, not the attributes of :class:`records.Record`.
Rather than wrap every message in a Python object on the hot path, a batch's columns are
read with ``map`` over the method descriptors (:func:`consumed_batch`), and a
:class:`MessageRecord` view is built only for a record that is needed whole (a dead letter).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import cast

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from stream_ae.kafka.consuming import BatchPolicy, log_failed_commit, start_reading
from stream_ae.kafka.ends import Source
from stream_ae.kafka.options import Connection, ConsumerOptions
from stream_ae.kafka.records import ConsumedBatch, PartitionKey

log = logging.getLogger(__name__)

# commit refusals that mean "the group moved on": the records will be read again
_REBALANCE_ERRORS = frozenset({KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
                               KafkaError.UNKNOWN_MEMBER_ID, KafkaError._NO_OFFSET})


def _commit_answered(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
    """librdkafka's commit report: a failed asynchronous commit is logged."""
    if error is not None:
        log_failed_commit(len(partitions), error, asynchronous=True)


class MessageRecord:
    """A view of one consumed message with the attributes of :class:`records.Record`.

    Attributes (read from the message when accessed): ``topic``, ``partition``, ``offset``,
    ``timestamp`` (ms since the epoch, -1 when the broker gave none), ``key``, ``value``,
    ``headers`` (list of ``(str, bytes)``).
    """

    __slots__ = ("message",)

    def __init__(self, message: Message) -> None:
        self.message = message

    topic = property(lambda self: self.message.topic())
    partition = property(lambda self: self.message.partition())
    offset = property(lambda self: self.message.offset())
    timestamp = property(lambda self: self.message.timestamp()[1])
    key = property(lambda self: self.message.key())
    value = property(lambda self: self.message.value())
    headers = property(lambda self: self.message.headers() or [])


_SECOND = itemgetter(1)


def consumed_batch(messages: list[Message]) -> ConsumedBatch:
    """The columns of a micro-batch of messages (without errors), in consumption order."""
    # only an error message lacks its topic, partition and offset
    return ConsumedBatch.from_columns(
        list(map(Message.value, messages)), cast("list[str]", list(map(Message.topic, messages))),
        cast("Iterator[int]", map(Message.partition, messages)),
        cast("Iterator[int]", map(Message.offset, messages)),
        map(_SECOND, map(Message.timestamp, messages)),
        lambda index: MessageRecord(messages[index]), list(map(Message.key, messages)))


class ConfluentSource(Source):
    """Reads micro-batches with a confluent-kafka consumer in a consumer group; manual commits.

    Same contract as :class:`kafka_python.source.KafkaSource`: batches bounded by
    ``consumer.max_batch_size`` events and ``consumer.max_wait_ms``; ``consumer.static_partitions``
    assigns partitions instead of joining a rebalance (offsets still committed under
    ``group_id``).

    Args:
        connection: how to reach the cluster.
        topics: input topics to subscribe to.
        consumer: group id, batch bounds, timeouts, static partitions.
        on_assigned, on_revoked: called from inside ``poll_batch`` with the
            ``(topic, partition)`` pairs gained or lost (lost partitions count as revoked).

    Raises:
        KafkaException: librdkafka refused the configuration.
    """

    def __init__(self, connection: Connection, topics: list[str], consumer: ConsumerOptions,
                 on_assigned: Callable[[list[PartitionKey]], None] = lambda keys: None,
                 on_revoked: Callable[[list[PartitionKey]], None] = lambda keys: None) -> None:
        self.configured = BatchPolicy.from_options(consumer)
        self.batching = self.configured
        self._connected = True
        self.consumer = Consumer({
            **connection.librdkafka(),
            "logger": log,
            "group.id": consumer.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": consumer.auto_offset_reset,
            "session.timeout.ms": consumer.session_timeout_ms,
            "heartbeat.interval.ms": consumer.heartbeat_interval_ms,
            "fetch.wait.max.ms": consumer.fetch_max_wait_ms,
            "fetch.queue.backoff.ms": 10,
            "max.partition.fetch.bytes": consumer.max_partition_fetch_bytes,
            "isolation.level": consumer.isolation_level,
            "statistics.interval.ms": 1000,
            "stats_cb": self._statistics,
            "on_commit": _commit_answered,
        })
        self._membership = self.consumer.consumer_group_metadata()
        start_reading(
            topics, consumer.static_partitions,
            lambda keys: self.consumer.assign([TopicPartition(topic, number) for topic, number in keys]),
            lambda topics, gained, lost: self.consumer.subscribe(
                topics, on_assign=lambda _consumer, partitions: gained(partitions),
                on_revoke=lambda _consumer, partitions: lost(partitions),
                on_lost=lambda _consumer, partitions: lost(partitions)),
            on_assigned, on_revoked)

    def _statistics(self, report: str) -> None:
        brokers = orjson.loads(report).get("brokers", {}).values()
        self._connected = any(broker.get("state") == "UP" for broker in brokers)

    def connected(self) -> bool:
        """Whether librdkafka's latest statistics (every second) show a broker connection up."""
        return self._connected

    def _fetch(self, wanted: int, timeout_s: float) -> list[Message]:
        # consume(n, timeout) waits for n messages or the timeout, whichever comes last for a
        # quiet stream; poll() returns the first message as soon as it arrives, and
        # consume(n, 0) then takes only what librdkafka has already queued.
        if timeout_s > 0:
            first = self.consumer.poll(timeout_s)
            if first is None:
                return []
            messages = [first, *(self.consumer.consume(wanted - 1, 0) if wanted > 1 else [])]
        else:
            messages = self.consumer.consume(wanted, 0)
        if list(map(Message.error, messages)).count(None) != len(messages):
            for failed in messages:
                error = failed.error()
                if error is None:
                    continue
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer error on %s [%s]: %s", failed.topic(), failed.partition(), error)
            messages = [m for m in messages if m.error() is None]
        return messages

    def poll_records(self) -> list[Message]:
        """The client's messages of one micro-batch: at most ``max_batch_size``, waiting at
        most ``max_wait_ms`` (see :meth:`consuming.BatchPolicy.fill`).

        Raises:
            KafkaException: a fatal consumer error.
        """
        messages = self.batching.fill(self._fetch)
        self._membership = self.consumer.consumer_group_metadata()
        return messages

    def poll_batch(self) -> ConsumedBatch:
        """One micro-batch (see :meth:`poll_records`) as columns.

        Raises:
            KafkaException: a fatal consumer error.
        """
        return consumed_batch(self.poll_records())

    def limit_batch(self, records: int) -> None:
        """See :meth:`ends.Source.limit_batch`."""
        self.batching = self.configured.limited(records)

    def commit(self, next_offsets: dict[PartitionKey, int], asynchronous: bool = False) -> bool:
        """See :meth:`ends.Source.commit`; an asynchronous commit is handed to librdkafka and
        a failure logged when its report is served during a later poll.

        Raises:
            KafkaException: a synchronous commit failed for another reason than a rebalance.
        """
        offsets = [TopicPartition(topic, partition, offset)
                   for (topic, partition), offset in next_offsets.items()]
        if not offsets:
            return True
        if asynchronous:
            self.consumer.commit(offsets=offsets, asynchronous=True)
            return True
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() not in _REBALANCE_ERRORS:
                raise
            log_failed_commit(len(offsets), exc, asynchronous=False)
            return False
        return True

    def rewind(self, first_offsets: dict[PartitionKey, int]) -> None:
        """Seek each assigned partition back to the given offset, so its records are read again."""
        assigned = set(self.assignment())
        for (topic, partition), offset in first_offsets.items():
            if (topic, partition) in assigned:
                self.consumer.seek(TopicPartition(topic, partition, offset))

    def group_metadata(self) -> object:
        """See :meth:`ends.Source.group_metadata`: librdkafka's ``ConsumerGroupMetadata``,
        taken right after the latest poll (opaque: its generation cannot be read, so it is
        never None; the broker checks it)."""
        return self._membership

    def assignment(self) -> list[PartitionKey]:
        """Partitions currently assigned to this consumer."""
        return [(tp.topic, tp.partition) for tp in self.consumer.assignment()]

    def lag(self) -> dict[PartitionKey, int]:
        """Per assigned partition: high watermark minus position (events), where both are known.

        The high watermark is librdkafka's cached value, updated by every fetch response, so
        this asks the broker nothing.
        """
        lags: dict[PartitionKey, int] = {}
        assigned = self.consumer.assignment()
        if not assigned:
            return lags
        for tp in self.consumer.position(assigned):
            if tp.offset < 0:
                continue
            watermarks = self.consumer.get_watermark_offsets(tp, cached=True)
            if watermarks is not None and watermarks[1] >= 0:
                lags[(tp.topic, tp.partition)] = max(0, watermarks[1] - tp.offset)
        return lags

    def close(self) -> None:
        """Leave the group and close the connections (no commit: the daemon commits)."""
        self.consumer.close()
