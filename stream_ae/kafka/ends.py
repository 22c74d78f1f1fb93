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
from typing import Protocol, runtime_checkable

from stream_ae.kafka.records import ConsumedBatch, PartitionKey


class DeliveryError(RuntimeError):
    """The broker did not acknowledge every record of a batch; the batch must not be committed."""


class Delivery(Protocol):
    """The acknowledgement of one sealed batch of records."""

    def done(self) -> bool:
        """Whether every record of the batch has had its answer (acknowledged or refused),
        without waiting."""

    def wait(self) -> int:
        """Wait until every record of the batch is acknowledged; returns their number.

        Raises:
            DeliveryError: a record was refused, or not acknowledged within the sink's
                ``flush_timeout_s``.
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
        """Queue one record in the open batch; :meth:`seal` closes the batch."""

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
