"""Choosing the Kafka client library (``kafka.client``), and what its sources share.

``kafka-python`` (the default) builds :class:`source.KafkaSource` and :class:`sink.KafkaSink`;
``confluent-kafka`` (librdkafka; ``pip install 'stream-ae[confluent]'``) builds
:class:`confluent_client.ConfluentSource` and :class:`confluent_client.ConfluentSink`. Both
keep the same promise: manual commits, made by the daemon only after a batch's output
has been acknowledged.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, TypeVar

from stream_ae.config import Settings

if TYPE_CHECKING:
    from stream_ae.detector import Sink, Source
    from stream_ae.source import PartitionKey

T = TypeVar("T")


def fill_batch(fetch: Callable[[int, float], list[T]], max_records: int, max_wait_s: float) -> list[T]:
    """A micro-batch: the items that have arrived, as soon as the client holds no more of them.

    Waits up to ``max_wait_s`` for the first items; once some are in hand, takes what the
    client has already buffered (``fetch`` with no wait) and stops when that is nothing, or
    at ``max_records`` items, or at ``max_wait_s`` after the call. Under load the buffer
    keeps the batches full; on a quiet stream an event waits for no other.

    Args:
        fetch: returns at most ``still_wanted`` items, waiting at most ``seconds_left``
            seconds (0 means: what is already there).
        max_records: batch size bound (items).
        max_wait_s: batch wait bound (seconds).

    Returns:
        At most ``max_records`` items, in arrival order; empty when nothing arrived in time.
    """
    deadline = time.monotonic() + max_wait_s
    batch: list[T] = []
    while True:
        arrived = fetch(max_records - len(batch), 0.0 if batch else max(0.0, deadline - time.monotonic()))
        if batch and not arrived:
            return batch
        batch.extend(arrived)
        if len(batch) >= max_records or time.monotonic() >= deadline:
            return batch


def make_source(settings: Settings, on_assigned: Callable[[list[PartitionKey]], None],
                on_revoked: Callable[[list[PartitionKey]], None]) -> Source:
    """The consuming end for ``settings.kafka.client``, subscribed to ``settings.topics.input``.

    Args:
        settings: validated settings (``kafka``, ``topics.input``, ``consumer``).
        on_assigned, on_revoked: rebalance callbacks, called from inside ``poll_batch`` with
            the ``(topic, partition)`` pairs gained or lost.

    Raises:
        ImportError: ``confluent-kafka`` chosen but not installed.
    """
    if settings.kafka.client == "confluent-kafka":
        from stream_ae.confluent_client import ConfluentSource

        return ConfluentSource(settings.kafka, settings.topics.input, settings.consumer,
                               on_assigned, on_revoked)
    from stream_ae.source import KafkaSource

    return KafkaSource(settings.kafka, settings.topics.input, settings.consumer, on_assigned, on_revoked)


def make_sink(settings: Settings) -> Sink:
    """The producing end (acks=all, idempotent) for ``settings.kafka.client``.

    Raises:
        ImportError: ``confluent-kafka`` chosen but not installed.
    """
    if settings.kafka.client == "confluent-kafka":
        from stream_ae.confluent_client import ConfluentSink

        return ConfluentSink(settings.kafka)
    from stream_ae.sink import KafkaSink

    return KafkaSink(settings.kafka)
