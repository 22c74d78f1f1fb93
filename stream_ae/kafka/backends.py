"""Choosing the Kafka client library (``kafka.client``) that builds the two ends.

``kafka-python`` (the default, pure Python) builds :class:`kafka_python.source.KafkaSource`
and :class:`kafka_python.sink.KafkaSink`; ``confluent-kafka`` (librdkafka, faster per
record; ``pip install 'stream-ae[confluent]'``) builds
:class:`confluent.source.ConfluentSource` and :class:`confluent.sink.ConfluentSink`. Both
keep the same promise (:mod:`stream_ae.kafka.ends`): manual commits, made by the loop only
after a batch's output has been acknowledged, and a keyed record on the same partition
whichever client sent it; for exactly-once delivery, a transactional sink
(:class:`stream_ae.kafka.transactions.TransactionalBatchSink`) over the client's
transactional producer. A backend is imported only when chosen.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from kafka.errors import KafkaError

from stream_ae.kafka.ends import Sink, Source, TransactionalSink
from stream_ae.kafka.options import Connection, ConsumerOptions, ProducerTuning, TransactionOptions
from stream_ae.kafka.records import PartitionKey
from stream_ae.kafka.transactions import TransactionalBatchSink, TransactionalProducer

CONFLUENT = "confluent-kafka"


def make_source(client: str, connection: Connection, topics: list[str], consumer: ConsumerOptions,
                on_assigned: Callable[[list[PartitionKey]], None],
                on_revoked: Callable[[list[PartitionKey]], None]) -> Source:
    """The consuming end of ``client``, subscribed to ``topics`` (or reading
    ``consumer.static_partitions``).

    Args:
        client: ``kafka-python`` or ``confluent-kafka``.
        connection: how to reach the cluster.
        topics: input topics.
        consumer: group id, batch bounds, timeouts, static partitions.
        on_assigned, on_revoked: rebalance callbacks, called from inside ``poll_batch`` with
            the ``(topic, partition)`` pairs gained or lost.

    Raises:
        ImportError: ``confluent-kafka`` chosen but not installed.
    """
    if client == CONFLUENT:
        from stream_ae.kafka.confluent.source import ConfluentSource

        return ConfluentSource(connection, topics, consumer, on_assigned, on_revoked)
    from stream_ae.kafka.kafka_python.source import KafkaSource

    return KafkaSource(connection, topics, consumer, on_assigned, on_revoked)


def make_sink(client: str, connection: Connection, topics: Sequence[str] = (),
              max_request_bytes: int = ProducerTuning.max_request_bytes) -> Sink:
    """The producing end (acks=all, idempotent) of ``client``.

    Args:
        client: ``kafka-python`` or ``confluent-kafka``.
        connection: how to reach the cluster.
        topics: every topic the sink writes to (kafka-python keeps their metadata from the start).
        max_request_bytes: the largest record the sink sends (bytes); larger ones are refused.

    Raises:
        ImportError: ``confluent-kafka`` chosen but not installed.
    """
    if client == CONFLUENT:
        from stream_ae.kafka.confluent.sink import ConfluentSink

        return ConfluentSink(connection, topics=topics, max_request_bytes=max_request_bytes)
    from stream_ae.kafka.kafka_python.sink import KafkaSink

    return KafkaSink(connection, topics=topics, max_request_bytes=max_request_bytes)


def make_transactional_sink(client: str, connection: Connection, transactions: TransactionOptions,
                            topics: Sequence[str] = (),
                            max_request_bytes: int = ProducerTuning.max_request_bytes) -> TransactionalSink:
    """The producing end of ``client`` for exactly-once delivery: one transaction per batch.

    Args:
        client: ``kafka-python`` or ``confluent-kafka``.
        connection: how to reach the cluster.
        transactions: the producer's ``transactional.id`` and transaction timeout.
        topics: every topic the sink writes to.
        max_request_bytes: the largest record the sink sends (bytes).

    Raises:
        ImportError: ``confluent-kafka`` chosen but not installed.
        KafkaError, KafkaException: the transaction coordinator could not be reached or
            refused the id.
    """
    producer: type[TransactionalProducer]
    if client == CONFLUENT:
        from stream_ae.kafka.confluent.sink import ConfluentTransactions

        producer = ConfluentTransactions
    else:
        from stream_ae.kafka.kafka_python.sink import KafkaTransactions

        producer = KafkaTransactions
    return TransactionalBatchSink(lambda: producer(connection, transactions, topics, max_request_bytes))


def client_errors() -> tuple[type[Exception], ...]:
    """The exception types the client libraries raise when the cluster cannot be reached or
    refuses a request: kafka-python's ``KafkaError``, and confluent-kafka's
    ``KafkaException`` once that backend is loaded (it is never imported just for this)."""
    confluent = sys.modules.get("confluent_kafka")
    return (KafkaError,) if confluent is None else (KafkaError, confluent.KafkaException)
