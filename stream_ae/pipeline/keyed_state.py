"""Keyed state: what the pipeline holds per (partition, key), saved with the offsets and
restored with the partition.

A key names one source inside an input partition (a series, a patient, a host: what the
record key says); :data:`PARTITION` (the empty key) is the partition's own state. A piece
that holds such state (a :class:`KeyedState`: today the threshold, one state per partition
under :data:`PARTITION`) exports the keys a batch changed, and restores and forgets a whole
partition at once, so that its state moves with the partition on a rebalance.

:class:`PartitionStates` is the one place the daemon's path handles that state: it holds
the holders of the model in service and the store, formats the state records of each batch
(the loop sends them with the batch's output, so that they are acknowledged, or committed
in the batch's transaction, with its offsets), and reads them back when partitions are
assigned (:class:`~stream_ae.pipeline.ownership.PartitionOwnership` asks it).

A state record holds, for one (partition, key), the fields every holder exported for it,
merged into one JSON object (so holders name their fields apart; the threshold's are
``mean``, ``variance`` and ``events``), plus ``next_offset`` (the offset after the last
event the state has seen) and ``checkpoint_sha256`` (the model whose scores the state
describes: a state saved by another model is not restored). The record of
:data:`PARTITION` is the state topic's record of before keys existed, field for field
(:mod:`stream_ae.kafka.state_store` gives the record keys).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from stream_ae.kafka.records import PartitionKey

PARTITION = ""  # the key of a partition's own state


class KeyedState(Protocol):
    """State held per (partition, key) that travels with the partition."""

    def export(self, partition: PartitionKey) -> dict[str, dict[str, Any]]:
        """The JSON-ready fields of each key of ``partition`` that changed since the last
        export (the keys of the batch just judged), by key."""
        ...

    def restore(self, partition: PartitionKey, key: str, saved: Mapping[str, Any]) -> None:
        """Put back the state of one key from its saved record (fields of other holders, and
        ``next_offset`` and ``checkpoint_sha256``, are ignored)."""
        ...

    def forget(self, partition: PartitionKey) -> None:
        """Drop the state of every key of ``partition`` (revoked, or about to be restored)."""
        ...


class StateStore(Protocol):
    """Where state records are kept (the compacted state topic:
    :class:`stream_ae.kafka.state_store.PartitionStateStore`).

    Attributes:
        topic: the topic the records are sent to.
    """

    topic: str

    def load(self, partitions: list[PartitionKey]) -> dict[PartitionKey, dict[str, dict[str, Any]]]:
        """The latest saved record of each key of each of ``partitions`` that has one.

        Raises:
            BrokerUnreachableError: the state could not be read.
        """
        ...

    def record(self, partition: PartitionKey, key: str, state: dict[str, Any]) -> tuple[bytes, bytes]:
        """``(record key, value)`` of the state record of one key of a partition."""
        ...


class PartitionStates:
    """The keyed state of the partitions owned: the holders of the model in service, and
    the store it is saved to.

    Args:
        store: where state records go and come from; None saves nothing and restores every
            partition from its holders' starting state.

    Example:
        >>> from stream_ae.pipeline.threshold.adaptive import AdaptiveThreshold
        >>> states = PartitionStates(None)
        >>> threshold = AdaptiveThreshold(seed_mean=0.0, seed_std=1.0)
        >>> states.hold([threshold])
        >>> states.records({("events", 0): 10}, "sha"), states.restore([("events", 0)], "sha")
        ([], 0)
    """

    def __init__(self, store: StateStore | None) -> None:
        self.store = store
        self.holders: list[KeyedState] = []

    def hold(self, holders: Sequence[KeyedState]) -> None:
        """The holders of the model now in service (a swapped model brings its own)."""
        self.holders = list(holders)

    def records(self, next_offsets: Mapping[PartitionKey, int], checkpoint_sha256: str) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` of the state record of every key the batch changed, for each of
        its partitions (``next_offsets``: per partition, the offset after the batch's last
        record); none without a store."""
        if self.store is None:
            return []
        out = []
        for partition, next_offset in next_offsets.items():
            merged: dict[str, dict[str, Any]] = {}
            for holder in self.holders:
                for key, fields in holder.export(partition).items():
                    merged.setdefault(key, {}).update(fields)
            for key, fields in merged.items():
                state = {**fields, "next_offset": next_offset, "checkpoint_sha256": checkpoint_sha256}
                out.append(self.store.record(partition, key, state))
        return out

    def restore(self, partitions: list[PartitionKey], checkpoint_sha256: str) -> int:
        """Start the state of ``partitions`` afresh: from their saved records when those were
        written by the model in service (``checkpoint_sha256``), else from the holders'
        starting state.

        Returns:
            How many of ``partitions`` had saved records.

        Raises:
            BrokerUnreachableError: the records could not be read; nothing was changed.
        """
        saved = self.store.load(partitions) if self.store is not None else {}
        self.forget(partitions)
        for partition, keys in saved.items():
            for key, state in keys.items():
                if state.get("checkpoint_sha256") == checkpoint_sha256:
                    for holder in self.holders:
                        holder.restore(partition, key, state)
        return len(saved)

    def forget(self, partitions: list[PartitionKey]) -> None:
        """Drop every holder's state of ``partitions``."""
        for partition in partitions:
            for holder in self.holders:
                holder.forget(partition)
