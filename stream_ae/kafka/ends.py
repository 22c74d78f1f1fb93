"""What the pipeline needs of the Kafka ends: a source to read micro-batches from and commit,
a sink to send records to, and the delivery of each batch the sink sends; for
exactly-once delivery, a transactional sink that commits a batch's records and its
consumer offsets in one transaction.

Each backend (:mod:`stream_ae.kafka.backends`) subclasses these explicitly; anything with
the same methods serves as well (a test's fake). :mod:`stream_ae.kafka.records` beside it
holds what they carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from stream_ae.kafka.records import ConsumedBatch, PartitionKey

# Kafka protocol error codes (the protocol guide's error table, shared by kafka-python's
# ``errno`` and librdkafka's ``KafkaError.code()``) that refuse a record for good: sending
# it again cannot succeed. Each maps to the ``reason`` a :class:`Refusal` carries.
PERMANENT_REFUSALS = {
    10: "record_too_large",            # MESSAGE_TOO_LARGE (also raised by a client before sending)
    17: "invalid_topic",               # INVALID_TOPIC_EXCEPTION
    18: "record_too_large",            # RECORD_LIST_TOO_LARGE
    29: "topic_authorization_failed",  # TOPIC_AUTHORIZATION_FAILED
    87: "invalid_record",              # INVALID_RECORD (e.g. a record without a key on a compacted topic)
}


class BrokerUnreachableError(ConnectionError):
    """No broker of the cluster answered in time, or a request the client needed failed."""


@dataclass(frozen=True)
class Refusal:
    """One record refused for good (see :data:`PERMANENT_REFUSALS`).

    Attributes:
        topic: the topic it was sent to.
        reason: a value of :data:`PERMANENT_REFUSALS`.
        detail: the client's message.
    """

    topic: str
    reason: str
    detail: str


def refusal(topic: str, code: int | None, detail: str) -> Refusal | None:
    """The :class:`Refusal` of a record the client reported failed with Kafka error ``code``,
    or None when the failure may pass (a timeout, a leader change: send the batch again).

    Example:
        >>> refusal("alerts", 29, "not authorised").reason
        'topic_authorization_failed'
        >>> refusal("alerts", 7, "request timed out") is None
        True
    """
    reason = PERMANENT_REFUSALS.get(code) if code is not None else None
    return None if reason is None else Refusal(topic, reason, detail)


def refusals_among(failures: Sequence[tuple[str, int | None, str]]) -> list[Refusal]:
    """The refusals for good among failed records ``(topic, Kafka error code, detail)``
    (see :func:`refusal`); the other failures may pass when sent again.

    Example:
        >>> [r.reason for r in refusals_among([("alerts", 10, "too large"), ("alerts", 7, "timed out")])]
        ['record_too_large']
    """
    return [found for found in (refusal(*failure) for failure in failures) if found is not None]


class DeliveryError(RuntimeError):
    """The broker did not acknowledge every record of a batch.

    Args:
        message: what failed, for the log.
        refusals: the failed records refused for good, one entry each.
        transient: failed records that may pass when sent again (timeouts, leader changes).

    The batch must not be committed while ``transient`` records failed: it is sent again.
    When every failure is a refusal (:attr:`permanent`), sending again cannot help: the
    loop counts the refusals and commits.
    """

    def __init__(self, message: str, refusals: Sequence[Refusal] = (), transient: int = 1) -> None:
        super().__init__(message)
        self.refusals = list(refusals)
        self.transient = transient

    @property
    def permanent(self) -> bool:
        """Whether every failed record was refused for good (none would pass if sent again)."""
        return self.transient == 0 and bool(self.refusals)


class Delivery(Protocol):
    """The acknowledgement of one sealed batch of records."""

    def done(self) -> bool:
        """Whether every record of the batch has had its answer (acknowledged or refused),
        without waiting."""

    def wait(self) -> int:
        """Wait until every record of the batch is acknowledged; returns their number.

        Raises:
            DeliveryError: a record was refused, or not acknowledged within the sink's
                ``flush_timeout_s``; its ``refusals`` list the records refused for good.
        """

    def acknowledged_at(self) -> float:
        """When the batch's last acknowledgement reached the client (seconds since the epoch),
        however late the loop waits for it; the time of sealing for a batch of no records.
        Meaningful once :meth:`wait` has returned."""


class Source(Protocol):
    """The consuming end: micro-batches from the input topics, offsets moved only by :meth:`commit`.

    Auto-commit is off: the loop commits a batch once its output has been acknowledged
    (at-least-once delivery), or a :class:`TransactionalSink` commits the offsets in the
    batch's transaction (exactly-once).
    """

    def poll_records(self) -> list:
        """The client's own records of one micro-batch: at most ``max_batch_size``, waiting
        at most ``max_wait_ms`` for the first (see :class:`consuming.BatchPolicy`); empty
        when nothing arrived in time."""

    def poll_batch(self) -> ConsumedBatch:
        """One micro-batch (see :meth:`poll_records`) as columns."""

    def limit_batch(self, records: int) -> None:
        """Cap the micro-batches of the next polls at ``records`` (at most
        ``max_batch_size``): the loop's latency budget (:mod:`stream_ae.pipeline.batch_budget`)."""

    def commit(self, next_offsets: dict[PartitionKey, int], asynchronous: bool = False) -> bool:
        """Commit the given next offsets (see :meth:`ConsumedBatch.next_offsets`).

        Args:
            next_offsets: per partition, the offset after the last handled record.
            asynchronous: send the commit and return; a failure is logged when its answer
                is served during a later poll (a later or final synchronous commit covers a
                lost one). Otherwise wait for the broker's reply.

        Returns:
            False when the group rebalanced and the commit was refused: those records will
            be read again by the partition's new owner (at-least-once), so this is not an error.
        """

    def rewind(self, first_offsets: dict[PartitionKey, int]) -> None:
        """Seek each assigned partition back to the given offset, so its records are read again."""

    def group_metadata(self) -> object | None:
        """The consumer-group membership under which the latest batch was polled (group id,
        generation, member id: the client's own object, for :meth:`TransactionalSink.seal_transaction`,
        whose broker then refuses the offsets of a member the group has moved past: KIP-447).

        None when the consumer subscribes but held no generation when the batch was polled
        (it has lost its membership): offsets must not be committed under it then.
        """

    def lag(self) -> dict[PartitionKey, int]:
        """Per assigned partition: high watermark minus position (events), where both are known."""

    def connected(self) -> bool:
        """Whether the client holds a broker connection right now."""

    def close(self) -> None:
        """Leave the group and close the connections (no commit: the loop commits)."""


class Sink(Protocol):
    """The producing end: records are sent a batch at a time.

    :meth:`seal` closes the batch and hands back its :class:`Delivery`, which the loop waits
    on later, after it has sent the next batch's output; so the round trip to the broker
    overlaps with work.
    """

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        """Queue one record in the open batch; :meth:`seal` closes the batch. A record the
        client refuses before sending (too large, no metadata for its topic in time) does
        not raise here: it fails the batch's delivery."""

    def seal(self) -> Delivery:
        """Close the open batch (the records sent since the last call) and return its delivery."""

    def flush(self) -> int:
        """Seal the open batch and wait for it (up to the sink's ``flush_timeout_s``).

        Returns:
            The number of records acknowledged.

        Raises:
            DeliveryError: a record was refused or not acknowledged in time.
        """
        return self.seal().wait()

    def close(self) -> None:
        """Flush what is queued (up to ``flush_timeout_s``) and release the producer."""


@runtime_checkable
class TransactionalSink(Sink, Protocol):
    """A sink whose batches are Kafka transactions (KIP-98): a batch's records, and the
    consumer offsets they were made from, become visible to ``read_committed`` readers
    together, or not at all.

    The transaction opens with the first :meth:`send` after a seal; :meth:`seal` commits it
    without offsets.
    """

    def seal_transaction(self, next_offsets: dict[PartitionKey, int],
                         group_metadata: object | None) -> Delivery:
        """Close the open batch: add ``next_offsets`` to its transaction as the consumer
        group's offsets (``send_offsets_to_transaction``), then commit the transaction.

        Args:
            next_offsets: per partition, the offset after the last record the batch was made
                from; empty commits the records alone.
            group_metadata: :meth:`Source.group_metadata` of the batch; None aborts the
                transaction (the consumer had lost its membership).

        Returns:
            The transaction's delivery: :meth:`Delivery.wait` returns once the transaction
            is committed, or raises :class:`DeliveryError` once it has been aborted (refused
            offsets, a fenced producer, a refused record); it waits for that outcome, never
            guessing it.
        """
