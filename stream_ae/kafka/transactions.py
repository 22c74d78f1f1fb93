"""Exactly-once delivery: one Kafka transaction per sealed batch, for either client.

:class:`TransactionalBatchSink` keeps the protocol of a transaction (KIP-98) the same for both
clients: the transaction opens with the batch's first record; sealing it sends the
consumer offsets into it with the group metadata of the batch's poll (KIP-447: the group
coordinator refuses the offsets of a member whose generation the group has moved past, so
a zombie cannot commit) and commits it on a thread of the sink's own, so that the commit's
round trips overlap with the next poll. Each client supplies a
:class:`TransactionalProducer` (``kafka_python.sink.KafkaTransactions``,
``confluent.sink.ConfluentTransactions``).

A transaction that fails is aborted; when the producer cannot abort (a fatal error: fenced
by a newer producer with the same ``transactional.id``, or an epoch the broker bumped after
the transaction timed out), it is closed and replaced by a new one, whose
``init_transactions`` fences the old epoch. Either way the batch's delivery raises
:class:`~stream_ae.kafka.ends.DeliveryError` and the loop reads the batch again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from typing import Protocol

from stream_ae.kafka.ends import Delivery, DeliveryError, TransactionalSink
from stream_ae.kafka.records import PartitionKey

log = logging.getLogger(__name__)


class LostMembershipError(RuntimeError):
    """The batch was polled while the consumer held no group generation: its offsets are not committed."""


class TransactionalProducer(Protocol):
    """One client's transactional producer, initialised (``init_transactions`` done), as
    :class:`TransactionalBatchSink` drives it. Every method but :meth:`send` blocks until the
    broker's answer."""

    def begin(self) -> None:
        """Open a transaction (local: no request is sent)."""

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None) -> None:
        """Queue one record in the open transaction; a refused record fails the commit."""

    def commit(self, next_offsets: dict[PartitionKey, int], group_metadata: object) -> None:
        """Add ``next_offsets`` (when any) as the group's offsets and commit the transaction,
        waiting for the outcome.

        Raises:
            Exception: the client's error: the transaction is not committed.
        """

    def abort(self) -> None:
        """Abort the open transaction.

        Raises:
            Exception: the client's error: the producer cannot go on (a fatal error).
        """

    def close(self, timeout_s: float) -> None:
        """Release the producer, waiting at most ``timeout_s`` seconds."""


class TransactionDelivery(Delivery):
    """The outcome of one batch's transaction (see :class:`stream_ae.kafka.ends.Delivery`).

    Args:
        outcome: resolves to ``(records, committed_at)`` (seconds since the epoch), or to
            the :class:`DeliveryError` of an aborted transaction.
    """

    def __init__(self, outcome: Future[tuple[int, float]]) -> None:
        self.outcome = outcome

    def done(self) -> bool:
        """Whether the transaction is committed or aborted, without waiting."""
        return self.outcome.done()

    def wait(self) -> int:
        """Wait for the transaction's outcome, however long the client takes to learn it;
        returns the number of records committed.

        Raises:
            DeliveryError: the transaction was aborted.
        """
        return self.outcome.result()[0]

    def acknowledged_at(self) -> float:
        """When the commit's answer reached the client (seconds since the epoch): from then
        on, ``read_committed`` readers see the batch."""
        return self.outcome.result()[1]


class TransactionalBatchSink(TransactionalSink):
    """A sink whose every sealed batch is one transaction (see the module docstring).

    Args:
        new_producer: makes an initialised :class:`TransactionalProducer` (called once at
            the start, and again whenever the producer must be replaced).
        close_timeout_s: longest wait for the producer when closing (seconds).
    """

    def __init__(self, new_producer: Callable[[], TransactionalProducer], close_timeout_s: float = 30.0) -> None:
        self.new_producer = new_producer
        self.close_timeout_s = close_timeout_s
        self.producer: TransactionalProducer | None = new_producer()
        self.committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-ae-transactions")
        self.finishing: Future[tuple[int, float]] | None = None
        self.in_transaction = False
        self.records = 0
        self.refused: Exception | None = None  # a send the open transaction failed on

    def _open(self) -> TransactionalProducer:
        """The producer, in a transaction: the previous one finished first (its outcome is
        its delivery's to report), then a new one begun.

        Raises:
            Exception: the client's error: a replacement producer could not be initialised.
        """
        if not self.in_transaction:
            if self.finishing is not None:
                wait_for_futures([self.finishing])
            if self.producer is None:
                self.producer = self.new_producer()
            self.producer.begin()
            self.in_transaction = True
        assert self.producer is not None
        return self.producer

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        """Queue one record in the open transaction (opening one after a seal). A record the
        client refuses at once (a transaction in error) dooms the transaction: the rest of
        the batch is not sent, and sealing aborts it."""
        producer = self._open()
        self.records += 1
        if self.refused is not None:
            return
        try:
            producer.send(topic, key, value, headers)
        except Exception as exc:  # the client's errors differ; the seal reports it
            self.refused = exc

    def seal(self) -> TransactionDelivery:
        """Commit the open transaction without consumer offsets."""
        return self.seal_transaction({}, None)

    def seal_transaction(self, next_offsets: dict[PartitionKey, int],
                         group_metadata: object | None) -> TransactionDelivery:
        """See :meth:`stream_ae.kafka.ends.TransactionalSink.seal_transaction`."""
        producer = self._open()
        records, self.records, self.in_transaction = self.records, 0, False
        refused, self.refused = self.refused, None
        self.finishing = self.committer.submit(self._finish, producer, dict(next_offsets), group_metadata, records,
                                               refused)
        return TransactionDelivery(self.finishing)

    def _finish(self, producer: TransactionalProducer, next_offsets: dict[PartitionKey, int],
                group_metadata: object | None, records: int, refused: Exception | None) -> tuple[int, float]:
        """Commit on the sink's thread; abort (or replace the producer) on failure."""
        try:
            if refused is not None:
                raise refused
            if group_metadata is None and next_offsets:
                raise LostMembershipError("the batch was polled while the consumer held no group generation")
            producer.commit(next_offsets, group_metadata)
        except Exception as exc:  # the client's errors differ; every one aborts the batch
            self._recover(producer, exc)
            raise DeliveryError(f"transaction of {records} records and {len(next_offsets)} partition offsets "
                                f"aborted: {exc!r}") from exc
        return records, time.time()

    def _recover(self, producer: TransactionalProducer, cause: Exception) -> None:
        """Abort the failed transaction; replace the producer if it cannot (the next
        transaction makes a new one if this attempt fails)."""
        try:
            producer.abort()
            return
        except Exception as exc:  # a fatal error: this producer cannot go on
            log.error("transactional producer unusable after %r (%r); replacing it: if this repeats, "
                      "another live instance has the same delivery.transactional_id", cause, exc)
        self.producer = None
        try:
            producer.close(0.0)
            self.producer = self.new_producer()
        except Exception as exc:  # the broker unreachable: the next transaction tries again
            log.error("could not replace the transactional producer yet: %r", exc)

    def close(self) -> None:
        """Wait for the transaction being committed, abort one left open, release the producer."""
        if self.finishing is not None:
            wait_for_futures([self.finishing])
        self.committer.shutdown()
        if self.producer is None:
            return
        if self.in_transaction:
            try:
                self.producer.abort()
            except Exception as exc:  # closing anyway
                log.warning("could not abort the open transaction on closing: %r", exc)
        self.producer.close(self.close_timeout_s)
