"""The confluent-kafka (librdkafka) backend: a source and a sink with kafka-python's semantics.

Chosen with ``kafka.client: confluent-kafka`` (see :mod:`stream_ae.clients`). As with the
default backend, auto-commit is off and offsets move only through
:meth:`ConfluentSource.commit`, which the daemon calls once the batch's alerts, scores and
dead letters are acknowledged (``acks=all``, idempotent producer): at-least-once delivery.

confluent-kafka's ``Message`` has methods, not the attributes of :class:`codec.Record`.
Rather than wrap every message in a Python object on the hot path, a batch is a
:class:`MessageRecords`: the codec reads it a column at a time (values, partitions,
timestamps), and a :class:`MessageRecord` view is built only for the records that are
indexed (rejected records, alerts).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Sequence

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from stream_ae.batching import fill_batch
from stream_ae.codec import PartitionKey
from stream_ae.config import ConsumerSettings, KafkaSettings
from stream_ae.sink import DeliveryError

log = logging.getLogger(__name__)

# commit refusals that mean "the group moved on": the records will be read again
_REBALANCE_ERRORS = frozenset({KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
                               KafkaError.UNKNOWN_MEMBER_ID, KafkaError._NO_OFFSET})


def client_config(kafka: KafkaSettings) -> dict[str, Any]:
    """librdkafka properties for connection and security, from the ``kafka`` section."""
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": kafka.client_id,
        "security.protocol": kafka.security_protocol.lower(),
        "log.connection.close": False,
        "logger": log,
    }
    if kafka.sasl_mechanism:
        config["sasl.mechanism"] = kafka.sasl_mechanism
        config["sasl.username"] = kafka.sasl_username
        config["sasl.password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    for name, property_name in (("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                                ("ssl_keyfile", "ssl.key.location")):
        value = getattr(kafka, name)
        if value is not None:
            config[property_name] = str(value)
    return config


class MessageRecord:
    """A view of one consumed message with the attributes of :class:`codec.Record`.

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


class MessageRecords(Sequence[MessageRecord]):
    """A micro-batch of confluent-kafka messages, read by the codec column by column.

    Args:
        messages: consumed messages without errors, in consumption order.
    """

    __slots__ = ("messages",)

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages

    def __len__(self) -> int:
        return len(self.messages)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return MessageRecords(self.messages[index])
        return MessageRecord(self.messages[index])

    def __iter__(self) -> Iterator[MessageRecord]:
        return map(MessageRecord, self.messages)

    def columns(self) -> tuple[list[bytes | None], list[PartitionKey], list[int]]:
        """``(values, (topic, partition) pairs, timestamps in ms)``, one entry per message."""
        messages = self.messages
        return ([m.value() for m in messages], [(m.topic(), m.partition()) for m in messages],
                [m.timestamp()[1] for m in messages])

    def take(self, indices: Sequence[int]) -> "MessageRecords":
        """The messages at ``indices``, in that order."""
        messages = self.messages
        return MessageRecords([messages[i] for i in indices])

    def offsets(self, last: bool) -> dict[PartitionKey, int]:
        """Per partition, the offset of the last (``last``) or first message of the batch."""
        offsets: dict[PartitionKey, int] = {}
        for m in (reversed(self.messages) if not last else self.messages):
            offsets[(m.topic(), m.partition())] = m.offset()
        return offsets


class ConfluentSource:
    """Reads micro-batches with a confluent-kafka consumer in a consumer group; manual commits.

    Same contract as :class:`source.KafkaSource`: batches bounded by
    ``consumer.max_batch_size`` events and ``consumer.max_wait_ms``; ``consumer.static_partitions``
    assigns partitions instead of joining a rebalance (offsets still committed under
    ``group_id``).

    Args:
        kafka: connection and security settings.
        topics: input topics to subscribe to.
        consumer: group id, batch bounds, timeouts.
        on_assigned, on_revoked: called from inside ``poll_batch`` with the
            ``(topic, partition)`` pairs gained or lost (lost partitions count as revoked).

    Raises:
        KafkaException: librdkafka refused the configuration.
    """

    def __init__(self, kafka: KafkaSettings, topics: list[str], consumer: ConsumerSettings,
                 on_assigned: Callable[[list[PartitionKey]], None] = lambda keys: None,
                 on_revoked: Callable[[list[PartitionKey]], None] = lambda keys: None) -> None:
        self.max_batch_size = consumer.max_batch_size
        self.max_wait_s = consumer.max_wait_ms / 1000.0
        self._connected = True
        self.consumer = Consumer({
            **client_config(kafka),
            "group.id": consumer.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": consumer.auto_offset_reset,
            "session.timeout.ms": consumer.session_timeout_ms,
            "heartbeat.interval.ms": consumer.heartbeat_interval_ms,
            "fetch.wait.max.ms": consumer.fetch_max_wait_ms,
            "max.partition.fetch.bytes": consumer.max_partition_fetch_bytes,
            "statistics.interval.ms": 1000,
            "stats_cb": self._statistics,
        })
        keys = consumer.static_assignment()
        if keys:
            self.consumer.assign([TopicPartition(topic, partition) for topic, partition in keys])
            on_assigned(keys)
        else:
            def keys_of(partitions: list[TopicPartition]) -> list[PartitionKey]:
                return [(tp.topic, tp.partition) for tp in partitions]

            self.consumer.subscribe(
                topics,
                on_assign=lambda _consumer, partitions: on_assigned(keys_of(partitions)),
                on_revoke=lambda _consumer, partitions: on_revoked(keys_of(partitions)),
                on_lost=lambda _consumer, partitions: on_revoked(keys_of(partitions)))

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
        if any(m.error() is not None for m in messages):
            for failed in (m for m in messages if m.error() is not None):
                error = failed.error()
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer error on %s [%s]: %s", failed.topic(), failed.partition(), error)
            messages = [m for m in messages if m.error() is None]
        return messages

    def poll_batch(self) -> MessageRecords:
        """Records of one micro-batch: at most ``max_batch_size``, waiting at most ``max_wait_ms``.

        Raises:
            KafkaException: a fatal consumer error.
        """
        return MessageRecords(fill_batch(self._fetch, self.max_batch_size, self.max_wait_s))

    @staticmethod
    def next_offsets(records: MessageRecords) -> dict[PartitionKey, int]:
        """Per partition, the offset after the last of ``records`` (what a commit stores)."""
        return {key: offset + 1 for key, offset in records.offsets(last=True).items()}

    def commit(self, next_offsets: dict[PartitionKey, int]) -> bool:
        """Commit the given next offsets (see :meth:`next_offsets`), synchronously.

        Returns:
            False when the group rebalanced and the commit was refused: those records will
            be read again by the partition's new owner (at-least-once), so this is not an error.

        Raises:
            KafkaException: any other commit failure.
        """
        offsets = [TopicPartition(topic, partition, offset)
                   for (topic, partition), offset in next_offsets.items()]
        if not offsets:
            return True
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() not in _REBALANCE_ERRORS:
                raise
            log.warning("commit refused after a rebalance; the batch will be read again: %s", exc)
            return False
        return True

    def rewind(self, records: MessageRecords) -> None:
        """Seek each assigned partition back to the first of ``records``, so they are read again."""
        assigned = set(self.assignment())
        for (topic, partition), offset in records.offsets(last=False).items():
            if (topic, partition) in assigned:
                self.consumer.seek(TopicPartition(topic, partition, offset))

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


class ConfluentSink:
    """Sends records and reports, per batch, whether all of them were acknowledged.

    A librdkafka producer with ``acks=all`` and idempotence; after a failed batch it is
    replaced, since an idempotent producer can be left in a fatal state.

    Args:
        kafka: connection and security settings.
        flush_timeout_s: longest wait for the acknowledgements of one batch (seconds).
    """

    def __init__(self, kafka: KafkaSettings, flush_timeout_s: float = 30.0) -> None:
        self.kafka = kafka
        self.flush_timeout_s = flush_timeout_s
        self.producer = self._new_producer()
        self.pending = 0
        self.failures: list[KafkaError] = []

    def _new_producer(self) -> Producer:
        return Producer({
            **client_config(self.kafka),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "batch.size": 256 * 1024,
            "message.max.bytes": 8 * 1024 * 1024,
        })

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self.failures.append(error)

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        """Queue one record; its acknowledgement is checked by :meth:`flush`."""
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=list(headers) if headers else None,
                                      on_delivery=self._delivered)
                break
            except BufferError:  # the local queue is full: serve delivery reports, then retry
                self.producer.poll(0.05)
        self.pending += 1

    def flush(self) -> int:
        """Wait until every queued record is acknowledged.

        Returns:
            The number of records acknowledged.

        Raises:
            DeliveryError: a record was refused or not acknowledged in ``flush_timeout_s``.
        """
        pending, self.pending = self.pending, 0
        if not pending:
            return 0
        unacknowledged = self.producer.flush(self.flush_timeout_s)
        failures, self.failures = self.failures, []
        if unacknowledged or failures:
            self.producer = self._new_producer()
            first = failures[0] if failures else "no acknowledgement in time"
            raise DeliveryError(f"{len(failures) + unacknowledged} of {pending} records not "
                                f"acknowledged: {first}")
        return pending

    def close(self) -> None:
        """Flush what is queued (up to ``flush_timeout_s``) and release the producer."""
        self.producer.flush(self.flush_timeout_s)
