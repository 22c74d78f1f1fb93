"""Threshold state per input partition, kept in a compacted Kafka topic.

Why a compacted topic: it lives in the cluster the daemon already depends on (no extra
store to run, back up or secure), compaction keeps the latest state per key, any replica
of the consumer group can read a partition's state when that partition is assigned to it,
and the state record is produced with the batch's alerts and acknowledged before the
batch's offsets are committed, so a committed offset never runs ahead of its state. In
exactly-once mode the state record and the offsets commit in one transaction, and the state
is read ``read_committed``: a restored state is exactly the one of the committed offset.

The key is ``<group>/<topic>/<partition>``; the value is JSON
``{"mean": …, "variance": …, "events": …, "next_offset": …, "checkpoint_sha256": …}``
(``next_offset``: the offset after the last event the state has seen;
``checkpoint_sha256``: the model whose errors the statistics describe). A crash between the state's
acknowledgement and the commit leaves a state one batch ahead of the committed offset;
that batch is then read again and counted twice in the statistics, which shifts them by
at most one batch's weight.
"""

from __future__ import annotations

import orjson
from kafka.errors import KafkaError

from stream_ae.kafka.ends import BrokerUnreachableError
from stream_ae.kafka.options import Connection
from stream_ae.kafka.records import PartitionKey
from stream_ae.kafka.topics import ensure_topics, read_topic


class ThresholdStateStore:
    """Reads and formats threshold state records for one consumer group.

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

    def key(self, partition: PartitionKey) -> bytes:
        """The state record's key for an input partition."""
        return f"{self.group_id}/{partition[0]}/{partition[1]}".encode()

    def record(self, partition: PartitionKey, state: dict[str, float | int | str]) -> tuple[bytes, bytes]:
        """``(key, value)`` of the state record of one partition."""
        return self.key(partition), orjson.dumps(state)

    def load(self, partitions: list[PartitionKey]) -> dict[PartitionKey, dict[str, float | int | str]]:
        """The latest saved state of each of ``partitions`` that has one.

        Reads the state topic from the beginning to its high watermark (the latest record of
        a key wins, as compaction would leave it). Gives up after ``read_timeout_s`` with
        what it has read: partitions without a state start from the seeded threshold.

        Raises:
            BrokerUnreachableError: the cluster could not be reached to read the topic.
        """
        wanted = {self.key(partition): partition for partition in partitions}
        found: dict[PartitionKey, dict[str, float | int | str]] = {}
        try:
            records = read_topic(self.connection, self.topic, None, self.read_timeout_s, self.read_committed)
        except KafkaError as exc:
            raise BrokerUnreachableError(f"cannot read the threshold state topic {self.topic}: {exc}") from exc
        for record in records:
            if record.key in wanted and record.value:
                found[wanted[record.key]] = orjson.loads(record.value)
        return found
