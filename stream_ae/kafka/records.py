"""A consumed micro-batch held as columns: what every source hands to the loop.

Each Kafka client has record objects of its own: kafka-python's ``ConsumerRecord`` is a
namedtuple, confluent-kafka's ``Message`` has methods. The loop reads a batch a column at
a time (values, record keys, partitions, offsets, timestamps), so a source turns its
client's objects into columns with passes that iterate in C (``map`` over an attribute
getter or a method descriptor, ``numpy.fromiter``); no Python object is built per record on the hot path.
A single record is materialised (:meth:`ConsumedBatch.record`) only where one is needed:
a dead letter keeps the source record's key and headers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Protocol

import numpy as np

PartitionKey = tuple[str, int]  # (topic, partition)

_TOPIC, _PARTITION, _OFFSET = attrgetter("topic"), attrgetter("partition"), attrgetter("offset")
_TIMESTAMP, _VALUE, _KEY = attrgetter("timestamp"), attrgetter("value"), attrgetter("key")


class Record(Protocol):
    """One consumed Kafka record (kafka-python's ``ConsumerRecord`` fits)."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


def index_partitions(topics: list[str], partitions: np.ndarray) -> tuple[list[PartitionKey], np.ndarray]:
    """The distinct ``(topic, partition)`` pairs of a batch, and each record's slot among them.

    Args:
        topics: the topic of each record, ``(records,)``.
        partitions: int ``(records,)`` the partition of each record.

    Returns:
        ``(keys, partition_index)``: ``partition_index`` is int32 ``(records,)`` with
        ``keys[partition_index[i]] == (topics[i], partitions[i])``. With one topic (the
        common case, done with ``numpy.unique``) the keys are in partition order, otherwise
        in first-seen order.
    """
    if topics and topics.count(topics[0]) == len(topics):
        numbers, index = np.unique(partitions, return_inverse=True)
        return [(topics[0], int(number)) for number in numbers], index.astype(np.int32).reshape(-1)
    keys = list(zip(topics, np.asarray(partitions).tolist()))
    slots = {key: slot for slot, key in enumerate(dict.fromkeys(keys))}
    return list(slots), np.fromiter(map(slots.__getitem__, keys), np.int32, len(keys))


def _per_partition(partition_index: np.ndarray, offsets: np.ndarray, partitions: int,
                   reduce: np.ufunc, start: int) -> np.ndarray:
    out = np.full(partitions, start, np.int64)
    reduce.at(out, partition_index, offsets)
    return out


@dataclass(frozen=True)
class ConsumedBatch:
    """The records of one micro-batch, in consumption order, as columns.

    Attributes:
        values: the record values (bytes, or None for a record without one), ``(records,)``.
        record_keys: the record keys (bytes, or None), ``(records,)``: for sample records the
            series key, what per-series state is kept under (not the partition).
        partitions: the distinct ``(topic, partition)`` pairs of the batch.
        partition_index: int32 ``(records,)`` indexing ``partitions``.
        offsets: int64 ``(records,)`` record offsets.
        timestamps_ms: int64 ``(records,)`` record timestamps, milliseconds since the epoch
            (-1 where the broker gave none).
        record_at: materialises the record at an index (a :class:`Record`).
    """

    values: list[bytes | None]
    record_keys: list[bytes | None]
    partitions: list[PartitionKey]
    partition_index: np.ndarray
    offsets: np.ndarray
    timestamps_ms: np.ndarray
    record_at: Callable[[int], Record]

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def from_columns(cls, values: list[bytes | None], topics: list[str], partitions: Iterable[int],
                     offsets: Iterable[int], timestamps_ms: Iterable[int],
                     record_at: Callable[[int], Record],
                     record_keys: list[bytes | None] | None = None) -> ConsumedBatch:
        """A batch from per-record columns, each ``(records,)`` long (no record keys: all None)."""
        count = len(values)
        keys, partition_index = index_partitions(topics, np.fromiter(partitions, np.int64, count))
        return cls(values, [None] * count if record_keys is None else record_keys, keys, partition_index,
                   np.fromiter(offsets, np.int64, count), np.fromiter(timestamps_ms, np.int64, count), record_at)

    @classmethod
    def from_records(cls, records: Sequence[Record]) -> ConsumedBatch:
        """A batch of records with the attributes of :class:`Record` (kafka-python's)."""
        return cls.from_columns(list(map(_VALUE, records)), list(map(_TOPIC, records)),
                                map(_PARTITION, records), map(_OFFSET, records), map(_TIMESTAMP, records),
                                records.__getitem__, list(map(_KEY, records)))

    def record(self, index: int) -> Record:
        """The record at ``index`` (its key and headers included)."""
        return self.record_at(index)

    def next_offsets(self) -> dict[PartitionKey, int]:
        """Per partition, the offset after its last record: what a commit stores."""
        last = _per_partition(self.partition_index, self.offsets, len(self.partitions), np.maximum, -1)
        return {key: int(offset) + 1 for key, offset in zip(self.partitions, last)}

    def first_offsets(self) -> dict[PartitionKey, int]:
        """Per partition, the offset of its first record: where to seek to read the batch again."""
        first = _per_partition(self.partition_index, self.offsets, len(self.partitions), np.minimum,
                               np.iinfo(np.int64).max)
        return {key: int(offset) for key, offset in zip(self.partitions, first)}

