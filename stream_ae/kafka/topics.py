"""Cluster and topic administration (is the cluster reachable, create topics) and reading
topics back (the demo, the benchmarks, the threshold state and the tests)."""

from __future__ import annotations

import contextlib
import logging
import time

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError, TopicAlreadyExistsError

from stream_ae.kafka.ends import BrokerUnreachableError
from stream_ae.kafka.options import Connection

log = logging.getLogger(__name__)


def probe_cluster(connection: Connection, timeout_s: float = 3.0) -> int:
    """Ask the cluster for its brokers, waiting at most about ``timeout_s`` seconds.

    Returns:
        The number of brokers in the cluster.

    Raises:
        BrokerUnreachableError: no broker of ``connection.bootstrap_servers`` answered in time,
            or the cluster refused the request (its message says which).
    """
    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(**connection.kafka_python(), bootstrap_timeout_ms=timeout_ms,
                                 request_timeout_ms=timeout_ms)
    except KafkaError as exc:
        raise BrokerUnreachableError(f"no broker of {connection.bootstrap_servers} answered within "
                                f"{timeout_s:g} s ({type(exc).__name__})") from exc
    try:
        return len(admin.describe_cluster().get("brokers", []))
    except KafkaError as exc:
        raise BrokerUnreachableError(f"the cluster at {connection.bootstrap_servers} did not describe itself: "
                                f"{exc}") from exc
    finally:
        admin.close()


def ensure_topics(connection: Connection, topics: dict[str, int], timeout_s: float = 30.0,
                  configs: dict[str, str] | None = None) -> None:
    """Create the topics that do not exist yet.

    Args:
        connection: how to reach the cluster.
        topics: topic name → partition count; the replication factor is the cluster's
            broker count, at most 3.
        configs: topic configuration for the topics created (e.g. ``cleanup.policy``).

    Raises:
        KafkaError: the cluster refused the request for another reason than existence.
    """
    admin = KafkaAdminClient(**connection.kafka_python(), request_timeout_ms=int(timeout_s * 1000))
    try:
        existing = set(admin.list_topics())
        replication = min(3, len(admin.describe_cluster().get("brokers", [])) or 1)
        missing = [NewTopic(name, partitions, replication, topic_configs=configs or {})
                   for name, partitions in topics.items() if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
            log.info("created topics %s", [topic.name for topic in missing])
    finally:
        admin.close()


def read_topic(connection: Connection, topic: str, expected: int | None = None,
               timeout_s: float = 60.0, read_committed: bool = False) -> list[ConsumerRecord]:
    """Read a topic from the beginning, outside any consumer group.

    Args:
        connection: how to reach the cluster.
        topic: the topic to read.
        expected: stop once this many records were read; None reads every partition up to
            its high watermark as of the read (``read_committed``: up to its last stable
            offset when the read starts, so that a transaction another producer holds open
            does not hold the read up).
        timeout_s: stop after this many seconds in any case; the caller compares what it
            got with what it expected.
        read_committed: skip the records of aborted transactions and those of transactions
            still open (``isolation.level=read_committed``, KIP-98).

    Returns:
        The records in the order the polls returned them: each partition's in offset
        order, the partitions interleaved (sort by ``(partition, offset)`` for more).

    Raises:
        KafkaError: no broker answered within ``timeout_s``.
    """
    consumer = KafkaConsumer(**connection.kafka_python(), enable_auto_commit=False, fetch_max_wait_ms=50,
                             group_id=None, isolation_level="read_committed" if read_committed else "read_uncommitted",
                             bootstrap_timeout_ms=int(timeout_s * 1000))
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.2)
        if not partitions:
            return []
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        records: list[ConsumerRecord] = []
        unfinished = set(assigned)
        stable = consumer.end_offsets(assigned) if read_committed and expected is None else {}

        def done() -> bool:
            if expected is not None:
                return len(records) >= expected
            for tp in list(unfinished):
                end = stable.get(tp, consumer.highwater(tp))
                if end is not None and consumer.position(tp) >= end:
                    unfinished.discard(tp)
            return not unfinished

        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200, max_records=10_000).values():
                records.extend(batch)
            if done():
                break
        return records
    finally:
        consumer.close(autocommit=False)
