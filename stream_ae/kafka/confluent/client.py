"""The confluent-kafka (librdkafka) backend: a source and a sink with kafka-python's semantics.

Chosen with ``kafka.client: confluent-kafka`` (see :mod:`stream_ae.clients`). As with the
default backend, auto-commit is off and offsets move only through
:meth:`ConfluentSource.commit`, which the daemon calls once the batch's alerts, scores and
dead letters are acknowledged (``acks=all``, idempotent producer): at-least-once delivery.

confluent-kafka's ``Message`` has methods, not the attributes of :class:`records.Record`.
Rather than wrap every message in a Python object on the hot path, a batch's columns are
read with ``map`` over the method descriptors (:func:`consumed_batch`), and a
:class:`MessageRecord` view is built only for a record that is needed whole (a dead letter).
"""

from __future__ import annotations

import logging
import threading
import time
from operator import itemgetter
from typing import Any, Callable, Sequence

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from stream_ae.batching import BatchPolicy
from stream_ae.config import ConsumerSettings, KafkaSettings
from stream_ae.records import ConsumedBatch, PartitionKey
from stream_ae.sink import BatchingSink, DeliveryError

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


def _log_commit_failure(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
    """librdkafka's commit report: a failed asynchronous commit is logged (a later commit
    carries later offsets; without one, the records are read again)."""
    if error is not None:
        log.warning("commit of %d partitions failed: %s", len(partitions), error)


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
REPORT_POLL_S = 0.05  # longest block of one Producer.poll on the reporting thread (seconds)


def consumed_batch(messages: list[Message]) -> ConsumedBatch:
    """The columns of a micro-batch of messages (without errors), in consumption order."""
    return ConsumedBatch.from_columns(
        list(map(Message.value, messages)), list(map(Message.topic, messages)),
        map(Message.partition, messages), map(Message.offset, messages),
        map(_SECOND, map(Message.timestamp, messages)),
        lambda index: MessageRecord(messages[index]))


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
        self.batching = BatchPolicy.from_settings(consumer)
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
            "fetch.queue.backoff.ms": 10,
            "max.partition.fetch.bytes": consumer.max_partition_fetch_bytes,
            "statistics.interval.ms": 1000,
            "stats_cb": self._statistics,
            "on_commit": _log_commit_failure,
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
        if list(map(Message.error, messages)).count(None) != len(messages):
            for failed in (m for m in messages if m.error() is not None):
                error = failed.error()
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer error on %s [%s]: %s", failed.topic(), failed.partition(), error)
            messages = [m for m in messages if m.error() is None]
        return messages

    def poll_records(self) -> list[Message]:
        """The client's messages of one micro-batch: at most ``max_batch_size``, waiting at
        most ``max_wait_ms`` (see :meth:`batching.BatchPolicy.fill`).

        Raises:
            KafkaException: a fatal consumer error.
        """
        return self.batching.fill(self._fetch)

    def poll_batch(self) -> ConsumedBatch:
        """One micro-batch (see :meth:`poll_records`) as columns.

        Raises:
            KafkaException: a fatal consumer error.
        """
        return consumed_batch(self.poll_records())

    def commit(self, next_offsets: dict[PartitionKey, int], asynchronous: bool = False) -> bool:
        """Commit the given next offsets (see :meth:`ConsumedBatch.next_offsets`).

        Args:
            next_offsets: per partition, the offset after the last handled record.
            asynchronous: hand the commit to librdkafka and return; a failure is logged
                when its report is served during a later poll (a later or final
                synchronous commit covers a lost one). Otherwise wait for the broker's reply.

        Returns:
            False when the group rebalanced and the commit was refused: those records will
            be read again by the partition's new owner (at-least-once), so this is not an error.

        Raises:
            KafkaException: any other failure of a synchronous commit.
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
            log.warning("commit refused after a rebalance; the batch will be read again: %s", exc)
            return False
        return True

    def rewind(self, first_offsets: dict[PartitionKey, int]) -> None:
        """Seek each assigned partition back to the given offset, so its records are read again."""
        assigned = set(self.assignment())
        for (topic, partition), offset in first_offsets.items():
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


class _Tally:
    """Delivery reports of one batch of records.

    ``sent`` is counted by the loop's thread and everything else by the sink's reporting
    thread, so no field has two writers; the event is set once the batch is sealed and
    every record has had its report (whichever thread sees that last sets it).
    """

    __slots__ = ("sent", "answered", "failures", "acknowledged_at", "sealed", "all_answered")

    def __init__(self) -> None:
        self.sent = 0
        self.answered = 0
        self.failures: list[KafkaError] = []
        self.acknowledged_at = 0.0  # seconds since the epoch of the last acknowledgement
        self.sealed = False
        self.all_answered = threading.Event()

    def delivered(self, error: KafkaError | None, _message: Message) -> None:
        """librdkafka's delivery report of one record (served on the reporting thread)."""
        if error is not None:
            self.failures.append(error)
        else:
            self.acknowledged_at = time.time()
        self.answered += 1
        if self.sealed and self.answered >= self.sent:
            self.all_answered.set()

    def seal(self) -> None:
        """No record joins the batch after this (the loop's thread)."""
        self.acknowledged_at = max(self.acknowledged_at, time.time())
        self.sealed = True
        if self.answered >= self.sent:
            self.all_answered.set()


class _ReportServer(threading.Thread):
    """Serves a producer's delivery reports as they come (``Producer.poll`` in a loop), so
    that each acknowledgement is timed when it arrives, not when the loop next looks."""

    def __init__(self, producer: Producer) -> None:
        super().__init__(name="stream-ae-delivery-reports", daemon=True)
        self.producer = producer
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.producer.poll(REPORT_POLL_S)

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self.stopping.set()
        self.join()


class TallyDelivery:
    """The acknowledgement of a batch sent with confluent-kafka (see :class:`sink.Delivery`).

    Args:
        tally: the batch's delivery reports (sealed).
        timeout_s: longest wait for the acknowledgements (seconds).
        on_failure: called once before :meth:`wait` raises (the sink replaces its producer).
    """

    def __init__(self, tally: _Tally, timeout_s: float, on_failure: Callable[[], None]) -> None:
        self.tally = tally
        self.timeout_s = timeout_s
        self.on_failure = on_failure

    def done(self) -> bool:
        """See :meth:`sink.Delivery.done`."""
        return self.tally.all_answered.is_set()

    def wait(self) -> int:
        """See :meth:`sink.Delivery.wait`."""
        tally = self.tally
        answered = tally.all_answered.wait(self.timeout_s)
        if not answered or tally.failures:
            self.on_failure()
            first = tally.failures[0] if tally.failures else "no acknowledgement in time"
            raise DeliveryError(f"{tally.sent - tally.answered + len(tally.failures)} of {tally.sent} "
                                f"records not acknowledged: {first}")
        return tally.sent

    def acknowledged_at(self) -> float:
        """See :meth:`sink.Delivery.acknowledged_at`."""
        return self.tally.acknowledged_at


class ConfluentSink(BatchingSink):
    """Sends records a batch at a time and hands back each batch's delivery (see :mod:`sink`).

    A librdkafka producer with ``acks=all`` and idempotence, whose delivery reports a
    thread of its own serves; after a failed batch it is replaced, since an idempotent
    producer can be left in a fatal state.

    Args:
        kafka: connection and security settings.
        flush_timeout_s: longest wait for the acknowledgements of one batch (seconds).
    """

    def __init__(self, kafka: KafkaSettings, flush_timeout_s: float = 30.0) -> None:
        self.kafka = kafka
        self.flush_timeout_s = flush_timeout_s
        self.tally = _Tally()
        self.producer, self.reports = self._new_producer()

    def _new_producer(self) -> tuple[Producer, _ReportServer]:
        producer = Producer({
            **client_config(self.kafka),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "batch.size": 256 * 1024,
            "message.max.bytes": 8 * 1024 * 1024,
        })
        reports = _ReportServer(producer)
        reports.start()
        return producer, reports

    def _replace_producer(self) -> None:
        self.reports.stop()
        self.producer, self.reports = self._new_producer()

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        """Queue one record in the open batch; :meth:`seal` closes the batch."""
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=list(headers) if headers else None,
                                      on_delivery=self.tally.delivered)
                break
            except BufferError:  # the local queue is full: the reporting thread drains it
                time.sleep(REPORT_POLL_S)
        self.tally.sent += 1

    def seal(self) -> TallyDelivery:
        """Close the open batch (the records sent since the last call) and return its delivery."""
        tally, self.tally = self.tally, _Tally()
        tally.seal()
        return TallyDelivery(tally, self.flush_timeout_s, self._replace_producer)

    def close(self) -> None:
        """Flush what is queued (up to ``flush_timeout_s``) and release the producer."""
        self.reports.stop()
        self.producer.flush(self.flush_timeout_s)
