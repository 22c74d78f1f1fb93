"""The delivery guarantee: how a batch's output and its consumer offsets become final.

The loop (:class:`stream_ae.pipeline.loop.StreamLoop`) sends a batch's output, seals it, and
later settles it; what sealing and settling do is the guarantee's, chosen once at start-up
(``delivery.guarantee``):

- :class:`AtLeastOnce` (the default): the sink's batch is acknowledged (``acks=all``), then
  the source commits the offsets, asynchronously. The next batch is polled and handled
  while the acknowledgements arrive. A crash between the two reads the batch again.
- :class:`ExactlyOnce`: the output and the offsets commit in one Kafka transaction
  (KIP-98), sent with the consumer-group metadata of the batch's poll, so that the group
  coordinator refuses the offsets of a member the group has moved past (a zombie; KIP-447)
  and its transaction is aborted. Transactions go one at a time: the commit overlaps with
  the next poll, and the batch in flight is settled before the next one is sent. After an
  aborted transaction the in-memory keyed state (the thresholds) of its partitions is read again from the
  committed state, so that the batch, read again, is counted once.
"""

from __future__ import annotations

from typing import Protocol

from stream_ae.kafka.ends import Delivery, Sink, Source, TransactionalSink
from stream_ae.kafka.records import PartitionKey
from stream_ae.pipeline.ownership import PartitionOwnership


class DeliveryGuarantee(Protocol):
    """What the loop asks of the guarantee (see the module docstring).

    Attributes:
        one_at_a_time: settle the batch in flight before the next batch's output is sent
            (a transaction must end before the next begins).
    """

    one_at_a_time: bool

    def seal(self, next_offsets: dict[PartitionKey, int]) -> Delivery:
        """Close the batch whose output has been sent; ``next_offsets``: per partition, the
        offset after its last record."""
        ...

    def commit(self, owned: dict[PartitionKey, int]) -> dict[PartitionKey, int]:
        """The batch is settled: commit ``owned`` (its offsets of partitions still owned) if
        sealing did not; returns what was committed asynchronously, to commit again
        synchronously on leaving."""
        ...

    def rewound(self, partitions: list[PartitionKey]) -> None:
        """A batch of ``partitions`` was not delivered and the source rewound to read it again."""
        ...


class AtLeastOnce:
    """Acknowledged output, then an asynchronous commit by the source.

    Args:
        source: commits the offsets.
        sink: seals the batches.
    """

    one_at_a_time = False

    def __init__(self, source: Source, sink: Sink) -> None:
        self.source = source
        self.sink = sink

    def seal(self, next_offsets: dict[PartitionKey, int]) -> Delivery:
        """See :meth:`DeliveryGuarantee.seal`: the sink's batch; the offsets wait for settling."""
        return self.sink.seal()

    def commit(self, owned: dict[PartitionKey, int]) -> dict[PartitionKey, int]:
        """See :meth:`DeliveryGuarantee.commit`: an asynchronous commit of ``owned``."""
        self.source.commit(owned, asynchronous=True)
        return owned

    def rewound(self, partitions: list[PartitionKey]) -> None:
        """Nothing: the thresholds keep the batch (read again, it counts twice)."""


class ExactlyOnce:
    """Output and offsets in one transaction per batch.

    Args:
        source: gives the group metadata of each batch's poll.
        sink: commits each batch as a transaction.
        ownership: reads the thresholds of an aborted batch's partitions again.
    """

    one_at_a_time = True

    def __init__(self, source: Source, sink: TransactionalSink, ownership: PartitionOwnership) -> None:
        self.source = source
        self.sink = sink
        self.ownership = ownership

    def seal(self, next_offsets: dict[PartitionKey, int]) -> Delivery:
        """See :meth:`DeliveryGuarantee.seal`: the offsets join the batch's transaction, which
        commits (see :meth:`stream_ae.kafka.ends.TransactionalSink.seal_transaction`)."""
        return self.sink.seal_transaction(next_offsets, self.source.group_metadata())

    def commit(self, owned: dict[PartitionKey, int]) -> dict[PartitionKey, int]:
        """See :meth:`DeliveryGuarantee.commit`: nothing left to commit."""
        return {}

    def rewound(self, partitions: list[PartitionKey]) -> None:
        """See :meth:`DeliveryGuarantee.rewound`: the thresholds of ``partitions`` go back to
        their committed state before their next events are judged."""
        self.ownership.reread(partitions)
