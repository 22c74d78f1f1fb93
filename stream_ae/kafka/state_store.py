"""Keyed state per input partition (today: the threshold's), kept in a compacted Kafka topic.

Why a compacted topic: it lives in the cluster the daemon already depends on (no extra
store to run, back up or secure), compaction keeps the latest state per key, any replica
of the consumer group can read a partition's state when that partition is assigned to it,
and the state record is produced with the batch's alerts and acknowledged before the
batch's offsets are committed, so a committed offset never runs ahead of its state. In
exactly-once mode the state record and the offsets commit in one transaction, and the state
is read ``read_committed``: a restored state is exactly the one of the committed offset.

The record key is ``<group>/<topic>/<partition>`` for a partition's own state, and
``<group>/<topic>/<partition>/<key>`` for the state of one key within it (a series, a
patient: :mod:`stream_ae.pipeline.keyed_state`); compaction keeps the latest of each. The
value is JSON: the fields of the state's holders plus ``next_offset`` and
``checkpoint_sha256``; for the threshold's state of a partition
``{"mean": …, "variance": …, "events": …, "next_offset": …, "checkpoint_sha256": …}``
(``next_offset``: the offset after the last event the state has seen;
``checkpoint_sha256``: the model whose scores the statistics describe), the record format
of before keys existed, so that a state saved then is read as it was. A crash between the state's
acknowledgement and the commit leaves a state one batch ahead of the committed offset;
that batch is then read again and counted twice in the statistics, which shifts them by
at most one batch's weight.
"""

from __future__ import annotations

from typing import Any

import orjson
from kafka.errors import KafkaError

from stream_ae.kafka.ends import BrokerUnreachableError
from stream_ae.kafka.options import Connection
from stream_ae.kafka.records import PartitionKey
from stream_ae.kafka.topics import ensure_topics, read_topic


class PartitionStateStore:
    """Reads and formats the state records of one consumer group.

    Args:
        connection: how to reach the cluster.
        topic: the compacted state topic (created with ``cleanup.policy=compact`` if absent).
        group_id: the consumer group whose state this is.
        read_timeout_s: longest time spent reading the topic on an assignment (seconds).
        read_committed: read only the state records of committed transactions (exactly-once mode).
    """

    def __init__(self, connection: Connection, topic: str, group_id: str,
                 read_timeout_s: float = 15.0, read_committed: bool = False) -> None:
        self.connection = connection
        self.topic = topic
        self.group_id = group_id
        self.read_timeout_s = read_timeout_s
        self.read_committed = read_committed
        ensure_topics(connection, {topic: 1}, configs={"cleanup.policy": "compact"})

    def key(self, partition: PartitionKey, key: str = "") -> bytes:
        """The state record's key for an input partition's own state (``key`` empty) or for
        one key within it.

        Example:
            >>> store = PartitionStateStore.__new__(PartitionStateStore)
            >>> store.group_id = "detectors"
            >>> store.key(("events", 3)), store.key(("events", 3), "patient-7")
            (b'detectors/events/3', b'detectors/events/3/patient-7')
        """
        prefix = f"{self.group_id}/{partition[0]}/{partition[1]}"
        return (f"{prefix}/{key}" if key else prefix).encode()

    def record(self, partition: PartitionKey, key: str, state: dict[str, Any]) -> tuple[bytes, bytes]:
        """``(record key, value)`` of the state record of one key of a partition (``key``
        empty: the partition's own state)."""
        return self.key(partition, key), orjson.dumps(state)

    def load(self, partitions: list[PartitionKey]) -> dict[PartitionKey, dict[str, dict[str, Any]]]:
        """The latest saved record of each key of each of ``partitions`` that has one, by
        partition, then by key (the empty key: the partition's own state).

        Reads the state topic from the beginning to its high watermark (the latest record of
        a key wins, as compaction would leave it). Gives up after ``read_timeout_s`` with
        what it has read: keys without a state start afresh.

        Raises:
            BrokerUnreachableError: the cluster could not be reached to read the topic.
        """
        wanted = {self.key(partition): partition for partition in partitions}
        found: dict[PartitionKey, dict[str, dict[str, Any]]] = {}
        try:
            records = read_topic(self.connection, self.topic, None, self.read_timeout_s, self.read_committed)
        except KafkaError as exc:
            raise BrokerUnreachableError(f"cannot read the state topic {self.topic}: {exc}") from exc
        for record in records:
            if not record.value or record.key is None:
                continue
            prefix, key = _split(record.key, wanted)
            if prefix is not None:
                found.setdefault(wanted[prefix], {})[key] = orjson.loads(record.value)
        return found


def _split(record_key: bytes, wanted: dict[bytes, PartitionKey]) -> tuple[bytes | None, str]:
    """``(partition prefix, key)`` of a state record's key when its partition is one of
    ``wanted`` (keyed by :meth:`PartitionStateStore.key` of the partition), else ``(None, "")``.
    The prefix is looked up at each slash, so that a group id or a key may hold slashes."""
    if record_key in wanted:
        return record_key, ""
    slash = record_key.find(b"/")
    while slash >= 0:
        if record_key[:slash] in wanted:
            return record_key[:slash], record_key[slash + 1:].decode("utf-8", "replace")
        slash = record_key.find(b"/", slash + 1)
    return None, ""
