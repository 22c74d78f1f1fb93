"""Plain values the Kafka ends are built from: how to reach the cluster, how to consume, how to produce.

The settings (:mod:`stream_ae.service.config`) validate what an operator wrote and hand
these over (``KafkaSettings.connection()``, ``ConsumerSettings.options()``); nothing in
:mod:`stream_ae.kafka` reads a settings object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from stream_ae.kafka.records import PartitionKey

# The security fields of a Connection: (field, kafka-python keyword, librdkafka property).
# A field is passed on when it is set; the sasl_* ones only together with a sasl_mechanism.
_SECURITY = (
    ("sasl_mechanism", "sasl_mechanism", "sasl.mechanism"),
    ("sasl_username", "sasl_plain_username", "sasl.username"),
    ("sasl_password", "sasl_plain_password", "sasl.password"),
    ("ssl_cafile", "ssl_cafile", "ssl.ca.location"),
    ("ssl_certfile", "ssl_certfile", "ssl.certificate.location"),
    ("ssl_keyfile", "ssl_keyfile", "ssl.key.location"),
)
_KAFKA_PYTHON, _LIBRDKAFKA = 1, 2  # columns of _SECURITY


@dataclass(frozen=True)
class Connection:
    """How to reach the cluster, as both client libraries are told it.

    Attributes:
        bootstrap_servers: comma-separated ``host:port`` list.
        client_id: the id the brokers log and quote.
        security_protocol: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
        sasl_mechanism: ``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``, or None for no SASL.
        sasl_username, sasl_password: SASL credentials; the password is left out of the repr.
        ssl_cafile, ssl_certfile, ssl_keyfile: PEM file paths, or None.
    """

    bootstrap_servers: str
    client_id: str = "stream-ae"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)  # a secret: never in a repr or log
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def _with_security(self, column: int, options: dict[str, Any]) -> dict[str, Any]:
        for row in _SECURITY:
            value = getattr(self, row[0])
            if value is not None and (self.sasl_mechanism or not row[0].startswith("sasl_")):
                options[row[column]] = value
        return options

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments shared by kafka-python's consumer, producer and admin client."""
        return self._with_security(_KAFKA_PYTHON, {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        })

    def librdkafka(self) -> dict[str, Any]:
        """librdkafka properties for connection and security (confluent-kafka's config dict)."""
        return self._with_security(_LIBRDKAFKA, {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol.lower(),
            "log.connection.close": False,
        })


@dataclass(frozen=True)
class ConsumerOptions:
    """Consumer-group membership, micro-batch bounds and fetch timing of a source.

    Attributes:
        group_id: the consumer group offsets are committed under.
        max_batch_size: records per micro-batch, at most.
        max_wait_ms: longest wait for a batch's first records (milliseconds).
        auto_offset_reset: ``earliest`` or ``latest``, where a partition without a
            committed offset starts.
        session_timeout_ms, heartbeat_interval_ms: group liveness (milliseconds).
        fetch_max_wait_ms: longest time the broker holds a fetch (milliseconds).
        max_partition_fetch_bytes: bytes per partition in one fetch, at most.
        static_partitions: ``(topic, partition)`` pairs to read instead of joining the
            group's rebalances, or None to join them.
        read_committed: read with ``isolation.level=read_committed``: records of aborted
            transactions are skipped, and a partition is read only up to its last stable
            offset (KIP-98); otherwise ``read_uncommitted``, with both clients.
    """

    group_id: str
    max_batch_size: int
    max_wait_ms: int
    auto_offset_reset: str
    session_timeout_ms: int
    heartbeat_interval_ms: int
    fetch_max_wait_ms: int
    max_partition_fetch_bytes: int
    static_partitions: list[PartitionKey] | None = None
    read_committed: bool = False

    @property
    def isolation_level(self) -> str:
        """``read_committed`` or ``read_uncommitted``, as both clients spell it."""
        return "read_committed" if self.read_committed else "read_uncommitted"


@dataclass(frozen=True)
class TransactionOptions:
    """A transactional producer's identity (exactly-once delivery, KIP-98).

    Attributes:
        transactional_id: the producer's ``transactional.id``: one per instance running at
            a time, the same across its restarts (the restarted producer then aborts what its
            predecessor left open). Zombie instances of the consumer group are fenced by the
            group generation sent with the offsets (KIP-447), not by this id.
        timeout_ms: ``transaction.timeout.ms``: the broker aborts a transaction left open
            longer (milliseconds).
    """

    transactional_id: str
    timeout_ms: int = 10_000


class ProducerTuning:
    """How both sinks produce: constants, read as ``ProducerTuning.linger_ms``.

    Attributes:
        acks: ``all``: a record counts as sent once every in-sync replica has it.
        idempotent: a retried send does not duplicate a record on the broker.
        linger_ms: how long a record waits for others to share its request (milliseconds).
        batch_bytes: bytes per partition batch, at most.
        max_request_bytes: bytes per produce request, at most (a record's bound too): the
            sinks' default, which the daemon takes from ``kafka.max_request_bytes``.
        transaction_retry_backoff_ms: a transactional producer's pause before retrying a
            request (milliseconds). A transaction's offsets are refused with
            ``CONCURRENT_TRANSACTIONS`` while the markers of the one before it are still
            being written to the offsets topic, which is the rule when transactions follow
            one another; at the clients' default of 100 ms each such transaction waited about
            100 ms (measured against Apache Kafka 4.4 here: commit p50 101-140 ms at 100 ms,
            15-25 ms at 10 ms, both clients).
    """

    acks: Final = "all"
    idempotent: Final = True
    linger_ms: Final = 2
    batch_bytes: Final = 256 * 1024
    max_request_bytes: Final = 8 * 1024 * 1024
    transaction_retry_backoff_ms: Final = 10
