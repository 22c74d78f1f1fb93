"""Choosing the Kafka client library (``kafka.client``), and what the loop needs of each end.

``kafka-python`` (the default) builds :class:`source.KafkaSource` and :class:`sink.KafkaSink`;
``confluent-kafka`` (librdkafka; ``pip install 'stream-ae[confluent]'``) builds
:class:`confluent_client.ConfluentSource` and :class:`confluent_client.ConfluentSink`. Both
keep the same promise: manual commits, made by the daemon only after a batch's output
has been acknowledged.
"""

from __future__ import annotations

from typing import Callable, Protocol

from stream_ae.config import Settings
from stream_ae.records import ConsumedBatch, PartitionKey
from stream_ae.sink import Delivery


class Source(Protocol):
    """What the loop needs of the consuming end (see :class:`source.KafkaSource`)."""

    def poll_records(self) -> list: ...
    def poll_batch(self) -> ConsumedBatch: ...
    def commit(self, next_offsets: dict[PartitionKey, int], asynchronous: bool = False) -> bool: ...
    def rewind(self, first_offsets: dict[PartitionKey, int]) -> None: ...
    def lag(self) -> dict[PartitionKey, int]: ...
    def connected(self) -> bool: ...
    def close(self) -> None: ...


class Sink(Protocol):
    """What the loop needs of the producing end (see :class:`sink.KafkaSink`)."""

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]] | None = None) -> None: ...
    def seal(self) -> Delivery: ...
    def flush(self) -> int: ...
    def close(self) -> None: ...


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

    return KafkaSink(settings.kafka, topics=settings.topics.outputs())
