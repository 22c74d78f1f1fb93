"""The producing end: alerts, scores and dead letters, and waiting for the broker's acknowledgements."""

from __future__ import annotations

from typing import Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError

from stream_ae.config import KafkaSettings


class DeliveryError(RuntimeError):
    """The broker did not acknowledge every record of a batch; the batch must not be committed."""


class KafkaSink:
    """Sends records and reports, per batch, whether all of them were acknowledged.

    The producer waits for ``acks=all`` and is idempotent, so a retried send does not
    duplicate a record on the broker. After a failed batch the producer is replaced by a
    new one: an idempotent producer whose broker lost its state (a restart) stays in a
    fatal error otherwise.

    Args:
        kafka: connection and security settings.
        flush_timeout_s: longest wait for the acknowledgements of one batch (seconds).
    """

    def __init__(self, kafka: KafkaSettings, flush_timeout_s: float = 30.0) -> None:
        self.kafka = kafka
        self.flush_timeout_s = flush_timeout_s
        self.producer = self._new_producer()
        self.pending: list = []

    def _new_producer(self) -> KafkaProducer:
        return KafkaProducer(
            **self.kafka.client_options(),
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            batch_size=256 * 1024,
            max_request_size=8 * 1024 * 1024,
        )

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        """Queue one record; its acknowledgement is checked by :meth:`flush`."""
        self.pending.append(self.producer.send(topic, value=value, key=key,
                                               headers=list(headers) if headers else None))

    def flush(self) -> int:
        """Wait until every queued record is acknowledged.

        Returns:
            The number of records acknowledged.

        Raises:
            DeliveryError: a record was refused or not acknowledged in ``flush_timeout_s``.
        """
        pending, self.pending = self.pending, []
        if not pending:
            return 0
        try:
            self.producer.flush(timeout=self.flush_timeout_s)
            failed = [future for future in pending if not future.is_done or future.failed()]
        except KafkaError as exc:
            self._replace_producer()
            raise DeliveryError(f"flush failed: {exc}") from exc
        if failed:
            first = failed[0].exception if failed[0].is_done else "no acknowledgement in time"
            self._replace_producer()
            raise DeliveryError(f"{len(failed)} of {len(pending)} records not acknowledged: {first}")
        return len(pending)

    def _replace_producer(self) -> None:
        try:
            self.producer.close(timeout=0)
        except KafkaError:
            pass
        self.producer = self._new_producer()

    def close(self) -> None:
        """Flush what is queued and close the producer."""
        self.producer.close(timeout=self.flush_timeout_s)
