"""The producing end with confluent-kafka (librdkafka): records sent a batch at a time, each
acknowledgement timed as it arrives.

Chosen with ``kafka.client: confluent-kafka`` (see :mod:`stream_ae.kafka.backends`); same
promise as :class:`stream_ae.kafka.kafka_python.sink.KafkaSink` (``acks=all``, idempotent,
a keyed record on the partition ``crc32(key) mod partitions``). A thread of the sink's own
serves librdkafka's delivery reports, so that a batch's :meth:`TallyDelivery.acknowledged_at`
is when its last acknowledgement came, not when the loop next looked. For exactly-once
delivery, :class:`ConfluentTransactions` is librdkafka's transactional producer as
:class:`stream_ae.kafka.transactions.TransactionalBatchSink` drives it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from stream_ae.kafka.ends import Delivery, DeliveryError, Sink, refusals_among
from stream_ae.kafka.options import Connection, ProducerTuning, TransactionOptions
from stream_ae.kafka.records import PartitionKey
from stream_ae.kafka.transactions import TransactionalProducer

log = logging.getLogger(__name__)

REPORT_POLL_S = 0.05  # longest block of one Producer.poll on the reporting thread (seconds)


def producer_config(connection: Connection,
                    max_request_bytes: int = ProducerTuning.max_request_bytes) -> dict[str, Any]:
    """librdkafka's settings of an idempotent ``acks=all`` producer (:class:`options.ProducerTuning`)
    sending records of at most ``max_request_bytes``."""
    return {
        **connection.librdkafka(),
        "logger": log,
        "acks": ProducerTuning.acks,
        "enable.idempotence": ProducerTuning.idempotent,
        "linger.ms": ProducerTuning.linger_ms,
        "batch.size": ProducerTuning.batch_bytes,
        "message.max.bytes": max_request_bytes,
    }


def produce(producer: Producer, topic: str, key: bytes | None, value: bytes | None,
            headers: Sequence[tuple[str, bytes]] | None, drain: Callable[[], object], **more: Any) -> None:
    """``producer.produce``, calling ``drain`` while librdkafka's local queue is full (serving
    the producer's delivery reports drains it)."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=list(headers) if headers else None, **more)
            return
        except BufferError:
            drain()


def _wait_for_reports() -> None:
    """Give the reporting thread time to serve delivery reports (it alone serves them)."""
    time.sleep(REPORT_POLL_S)


class _Tally:
    """Delivery reports of one batch of records.

    ``sent`` and ``refused_at_send`` are written by the loop's thread and everything else by
    the sink's reporting thread, so no field has two writers; the event is set once the
    batch is sealed and every record has had its report (whichever thread sees that last
    sets it).
    """

    __slots__ = ("sent", "refused_at_send", "answered", "failures", "acknowledged_at", "sealed", "all_answered")

    def __init__(self) -> None:
        self.sent = 0
        self.refused_at_send: list[tuple[str, KafkaError]] = []  # (topic, error): refused by produce()
        self.answered = 0
        self.failures: list[tuple[str, KafkaError]] = []  # (topic, error) of each record not acknowledged
        self.acknowledged_at = 0.0  # seconds since the epoch of the last acknowledgement
        self.sealed = False
        self.all_answered = threading.Event()

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        """librdkafka's delivery report of one record (served on the reporting thread)."""
        if error is not None:
            self.failures.append((message.topic() or "", error))
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


class TallyDelivery(Delivery):
    """The acknowledgement of a batch sent with confluent-kafka (see :class:`ends.Delivery`).

    Args:
        tally: the batch's delivery reports (sealed).
        timeout_s: longest wait for the acknowledgements (seconds).
        on_failure: called once before :meth:`wait` raises (the sink replaces its producer).
    """

    def __init__(self, tally: _Tally, timeout_s: float, on_failure: Callable[[], None]) -> None:
        self.tally = tally
        self.timeout_s = timeout_s
        self.on_failure = on_failure  # called for failures that may pass when sent again

    def done(self) -> bool:
        """See :meth:`ends.Delivery.done`."""
        return self.tally.all_answered.is_set()

    def wait(self) -> int:
        """See :meth:`ends.Delivery.wait`."""
        tally = self.tally
        tally.all_answered.wait(self.timeout_s)
        failures = [*tally.refused_at_send, *tally.failures]  # the reporting thread may still append
        unanswered = tally.sent - tally.answered
        if unanswered > 0 or failures:
            refusals = refusals_among([(topic, error.code(), error.str()) for topic, error in failures])
            transient = unanswered + len(failures) - len(refusals)
            if transient:
                self.on_failure()
            first = failures[0][1] if failures else "no acknowledgement in time"
            total = tally.sent + len(tally.refused_at_send)
            raise DeliveryError(f"{unanswered + len(failures)} of {total} records not acknowledged: {first}",
                                refusals, transient)
        return tally.sent

    def acknowledged_at(self) -> float:
        """See :meth:`ends.Delivery.acknowledged_at`."""
        return self.tally.acknowledged_at


class ConfluentSink(Sink):
    """Sends records a batch at a time and hands back each batch's delivery (see :class:`ends.Sink`).

    A librdkafka producer with ``acks=all`` and idempotence (:class:`options.ProducerTuning`),
    whose delivery reports a thread of its own serves; after a failed batch it is replaced,
    since an idempotent producer can be left in a fatal state.

    Args:
        connection: how to reach the cluster.
        flush_timeout_s: longest wait for the acknowledgements of one batch (seconds).
        topics: the topics this sink writes to; taken for the same signature as
            :class:`KafkaSink`, librdkafka keeps the metadata of every topic it writes to.
        max_request_bytes: bytes per record, at most (librdkafka's ``message.max.bytes``);
            a larger record is refused (its batch's delivery fails with a refusal).
    """

    def __init__(self, connection: Connection, flush_timeout_s: float = 30.0,
                 topics: Sequence[str] = (), max_request_bytes: int = ProducerTuning.max_request_bytes) -> None:
        self.connection = connection
        self.flush_timeout_s = flush_timeout_s
        self.max_request_bytes = max_request_bytes
        self.tally = _Tally()
        self.producer, self.reports = self._new_producer()

    def _new_producer(self) -> tuple[Producer, _ReportServer]:
        producer = Producer(producer_config(self.connection, self.max_request_bytes))
        reports = _ReportServer(producer)
        reports.start()
        return producer, reports

    def _replace_producer(self) -> None:
        self.reports.stop()
        self.producer, self.reports = self._new_producer()

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        """See :meth:`ends.Sink.send`."""
        try:
            produce(self.producer, topic, key, value, headers, _wait_for_reports, on_delivery=self.tally.delivered)
        except KafkaException as exc:  # refused before it left (too large): fails the batch
            self.tally.refused_at_send.append((topic, exc.args[0]))
            return
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


class ConfluentTransactions(TransactionalProducer):
    """librdkafka's transactional producer (``transactional.id`` set; KIP-98), initialised:
    ``init_transactions`` has fenced earlier producers of the same id and aborted what they
    left open.

    librdkafka gives up waiting on a transaction call after ``transaction.timeout.ms`` with
    a retriable error while the call goes on in the background; :meth:`commit` and
    :meth:`abort` call again until the outcome is known (librdkafka's documented use), so
    that no batch is taken for aborted while its commit may still land.

    Args:
        connection: how to reach the cluster.
        transactions: the producer's ``transactional.id`` and transaction timeout.
        topics: taken for the same signature as ``KafkaTransactions``.

    Raises:
        KafkaException: the transaction coordinator could not be reached or refused the id.
    """

    def __init__(self, connection: Connection, transactions: TransactionOptions, topics: Sequence[str] = (),
                 max_request_bytes: int = ProducerTuning.max_request_bytes) -> None:
        self.producer = Producer({**producer_config(connection, max_request_bytes),
                                  "transactional.id": transactions.transactional_id,
                                  "transaction.timeout.ms": transactions.timeout_ms,
                                  "retry.backoff.ms": ProducerTuning.transaction_retry_backoff_ms})
        self.producer.init_transactions()

    def begin(self) -> None:
        """See :meth:`TransactionalProducer.begin`."""
        self.producer.begin_transaction()

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None) -> None:
        """See :meth:`TransactionalProducer.send`."""
        produce(self.producer, topic, key, value, headers, lambda: self.producer.poll(REPORT_POLL_S))

    def commit(self, next_offsets: dict[PartitionKey, int], group_metadata: object) -> None:
        """See :meth:`TransactionalProducer.commit`; ``group_metadata`` is the consumer's
        ``consumer_group_metadata()``."""
        if next_offsets:
            offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in next_offsets.items()]
            _until_known(lambda: self.producer.send_offsets_to_transaction(offsets, group_metadata))
        _until_known(self.producer.commit_transaction)

    def abort(self) -> None:
        """See :meth:`TransactionalProducer.abort`."""
        _until_known(self.producer.abort_transaction)

    def close(self, timeout_s: float) -> None:
        """See :meth:`TransactionalProducer.close`."""
        self.producer.flush(timeout_s)


def _until_known(call: Callable[[], object]) -> None:
    """Call a transaction call again while it fails with a retriable error (a timeout)."""
    while True:
        try:
            call()
            return
        except KafkaException as exc:
            if not exc.args[0].retriable():
                raise
            log.warning("transaction call not answered yet, calling again: %s", exc)
