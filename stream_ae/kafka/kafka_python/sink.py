"""The producing end with kafka-python: alerts, scores and dead letters, and waiting for the
broker's acknowledgements.

Records are sent a batch at a time (see :class:`stream_ae.kafka.ends.Sink`):
:meth:`KafkaSink.seal` closes the batch and hands back its :class:`FutureDelivery`. For
exactly-once delivery, :class:`KafkaTransactions` is kafka-python's transactional producer
as :class:`stream_ae.kafka.transactions.TransactionalBatchSink` drives it.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Callable, Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner import DefaultPartitioner
from kafka.producer.future import FutureRecordMetadata

from stream_ae.kafka.ends import Delivery, DeliveryError, Sink, refusals_among
from stream_ae.kafka.kafka_python.source import offsets_and_metadata
from stream_ae.kafka.options import Connection, ProducerTuning, TransactionOptions
from stream_ae.kafka.records import PartitionKey
from stream_ae.kafka.transactions import TransactionalProducer


class FutureDelivery(Delivery):
    """The acknowledgement of a batch sent with kafka-python: one future per record.

    Args:
        futures: ``(topic, future)`` of the records, in send order.
        timeout_s: longest wait for the acknowledgements (seconds).
        on_failure: called once before :meth:`wait` raises for a failure that may pass
            when sent again (the sink replaces its producer); not for refusals alone.
        refused_at_send: ``(topic, error)`` of the records the producer refused before
            sending them (too large, or no metadata for the topic in time).
    """

    def __init__(self, futures: list[tuple[str, FutureRecordMetadata]], timeout_s: float,
                 on_failure: Callable[[], None],
                 refused_at_send: Sequence[tuple[str, KafkaError]] = ()) -> None:
        self.futures = futures
        self.timeout_s = timeout_s
        self.on_failure = on_failure
        self.refused_at_send = list(refused_at_send)
        self._last_acknowledged_at = time.time()
        for _, future in futures:  # called on the producer's I/O thread as each answer arrives
            future.add_callback(self._acknowledged)

    def _acknowledged(self, _metadata: object) -> None:
        self._last_acknowledged_at = time.time()

    def done(self) -> bool:
        """See :meth:`Delivery.done`."""
        return all(future.is_done for _, future in self.futures)

    def wait(self) -> int:
        """See :meth:`Delivery.wait`."""
        deadline = time.monotonic() + self.timeout_s
        failed = list(self.refused_at_send)
        for topic, future in self.futures:
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaError as exc:  # refused, or KafkaTimeoutError
                failed.append((topic, exc))
        if failed:
            raise self._failure(failed)
        return len(self.futures)

    def _failure(self, failed: list[tuple[str, KafkaError]]) -> DeliveryError:
        """The error of a batch whose records in ``failed`` were not acknowledged; replaces the
        producer unless every one of them was refused for good before it left. A refusal
        from the broker replaces it too: kafka-python's idempotent producer takes a broker's
        MESSAGE_TOO_LARGE as fatal and aborts every batch after it (seen on Apache Kafka 4.4)."""
        refusals = refusals_among([(topic, getattr(exc, "errno", None), str(exc)) for topic, exc in failed])
        transient = len(failed) - len(refusals)
        if transient or len(failed) > len(self.refused_at_send):
            self.on_failure()
        total = len(self.futures) + len(self.refused_at_send)
        return DeliveryError(f"{len(failed)} of {total} records not acknowledged: {failed[0][1]}",
                             refusals, transient)

    def acknowledged_at(self) -> float:
        """See :meth:`Delivery.acknowledged_at`."""
        return self._last_acknowledged_at


class Crc32Partitioner(DefaultPartitioner):
    """librdkafka's default partitioning for kafka-python: a keyed record goes to partition
    ``crc32(key) mod partitions`` (zlib's CRC-32; librdkafka's ``consistent_random``
    partitioner), a record without a key to a random available partition.

    So an alert, a score or a threshold-state record lands on the same partition whichever
    backend sends it, and choosing it is one C call, where kafka-python's default, a
    pure-Python murmur2, costs about 10 µs a record (measured on this project's machine).
    """

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        """The partition of one record of ``topic`` (kafka-python's partitioner interface)."""
        partitions = cluster.partitions_for_topic(topic) if serialized_key is not None else None
        if not partitions:
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        return sorted(partitions)[zlib.crc32(serialized_key) % len(partitions)]


def track_topics(producer: KafkaProducer, topics: Sequence[str]) -> None:
    """Have kafka-python's producer ask for the metadata of ``topics`` in every metadata
    request, as it does for a topic that was unknown when first sent to.

    kafka-python (3.0) tracks a topic only in that case. A topic it knew from its first,
    all-topics metadata response, such as a dead-letter topic written once, was dropped
    from its metadata at the next update for a newly tracked topic; a partition of that
    topic with a record batch once queued then kept the producer's I/O thread asking for
    metadata in a busy loop that never brought it back, until the topic was written again
    (a whole core: about 30,000 metadata update requests in one demo run). This registers
    the topics the way the producer's own send path does (its sender's thread-safe
    ``add_topic``), so list every topic the sink writes to.
    """
    sender = getattr(producer, "_sender", None)
    if sender is None or not hasattr(sender, "add_topic"):  # another kafka-python layout: nothing to mend
        return
    for topic in topics:
        sender.add_topic(topic)
    sender.wakeup()


def new_producer(connection: Connection, topics: Sequence[str],
                 max_request_bytes: int = ProducerTuning.max_request_bytes, **more: object) -> KafkaProducer:
    """An idempotent ``acks=all`` producer (:class:`options.ProducerTuning`) partitioning as
    librdkafka does (:class:`Crc32Partitioner`), tracking ``topics`` (:func:`track_topics`).

    Args:
        connection: how to reach the cluster.
        topics: every topic the producer writes to.
        max_request_bytes: the largest record it sends (bytes).
        more: further kafka-python producer settings (a ``transactional_id``).
    """
    producer = KafkaProducer(
        **connection.kafka_python(),
        acks=ProducerTuning.acks,
        enable_idempotence=ProducerTuning.idempotent,
        linger_ms=ProducerTuning.linger_ms,
        batch_size=ProducerTuning.batch_bytes,
        partitioner=Crc32Partitioner(),
        max_request_size=max_request_bytes,
        **more,
    )
    track_topics(producer, topics)
    return producer


class KafkaSink(Sink):
    """Sends records and reports, per batch, whether all of them were acknowledged.

    The producer waits for ``acks=all`` and is idempotent (:class:`options.ProducerTuning`),
    so a retried send does not duplicate a record on the broker; it partitions keyed records
    as librdkafka does (:class:`Crc32Partitioner`). After a failed batch the producer is
    replaced by a new one: an idempotent producer whose broker lost its state (a restart)
    stays in a fatal error otherwise.

    Args:
        connection: how to reach the cluster.
        flush_timeout_s: longest wait for the acknowledgements of one batch (seconds).
        topics: the topics this sink writes to, tracked in the producer's metadata from the
            start (see :func:`track_topics`).
        max_request_bytes: bytes per produce request, so per record, at most; a larger
            record is refused (its batch's delivery fails with a refusal).
    """

    def __init__(self, connection: Connection, flush_timeout_s: float = 30.0,
                 topics: Sequence[str] = (), max_request_bytes: int = ProducerTuning.max_request_bytes) -> None:
        self.connection = connection
        self.flush_timeout_s = flush_timeout_s
        self.topics = list(topics)
        self.max_request_bytes = max_request_bytes
        self.producer = self._new_producer()
        self.pending: list[tuple[str, FutureRecordMetadata]] = []
        self.refused_at_send: list[tuple[str, KafkaError]] = []

    def _new_producer(self) -> KafkaProducer:
        return new_producer(self.connection, self.topics, self.max_request_bytes)

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        """See :meth:`ends.Sink.send`."""
        try:
            future = self.producer.send(topic, value=value, key=key, headers=list(headers) if headers else None)
        except KafkaError as exc:  # too large, or no metadata in max_block_ms: fails the batch
            self.refused_at_send.append((topic, exc))
            return
        self.pending.append((topic, future))

    def seal(self) -> FutureDelivery:
        """Close the open batch (the records sent since the last call) and return its delivery."""
        pending, self.pending = self.pending, []
        refused, self.refused_at_send = self.refused_at_send, []
        return FutureDelivery(pending, self.flush_timeout_s, self._replace_producer, refused)

    def _replace_producer(self) -> None:
        with contextlib.suppress(KafkaError):
            self.producer.close(timeout=0)
        self.producer = self._new_producer()

    def close(self) -> None:
        """Flush what is queued and close the producer."""
        self.producer.close(timeout=self.flush_timeout_s)


class KafkaTransactions(TransactionalProducer):
    """kafka-python's transactional producer (``transactional_id`` set; KIP-98), initialised:
    ``init_transactions`` has fenced earlier producers of the same id and aborted what they
    left open.

    Args:
        connection: how to reach the cluster.
        transactions: the producer's ``transactional.id`` and transaction timeout.
        topics: every topic the producer writes to (see :func:`track_topics`).

    Raises:
        KafkaError: the transaction coordinator could not be reached or refused the id.
    """

    def __init__(self, connection: Connection, transactions: TransactionOptions, topics: Sequence[str] = (),
                 max_request_bytes: int = ProducerTuning.max_request_bytes) -> None:
        self.producer = new_producer(connection, topics, max_request_bytes,
                                     transactional_id=transactions.transactional_id,
                                     transaction_timeout_ms=transactions.timeout_ms,
                                     retry_backoff_ms=ProducerTuning.transaction_retry_backoff_ms)
        self.producer.init_transactions()

    def begin(self) -> None:
        """See :meth:`TransactionalProducer.begin`."""
        self.producer.begin_transaction()

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None) -> None:
        """See :meth:`TransactionalProducer.send`."""
        self.producer.send(topic, value=value, key=key, headers=list(headers) if headers else None)

    def commit(self, next_offsets: dict[PartitionKey, int], group_metadata: object) -> None:
        """See :meth:`TransactionalProducer.commit`; ``group_metadata`` is the consumer's
        ``ConsumerGroupMetadata``."""
        if next_offsets:
            self.producer.send_offsets_to_transaction(offsets_and_metadata(next_offsets), group_metadata)
        self.producer.commit_transaction()

    def abort(self) -> None:
        """See :meth:`TransactionalProducer.abort`."""
        self.producer.abort_transaction()

    def close(self, timeout_s: float) -> None:
        """See :meth:`TransactionalProducer.close`."""
        self.producer.close(timeout=timeout_s)
