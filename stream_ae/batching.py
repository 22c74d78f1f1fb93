"""The micro-batching policy shared by the Kafka sources."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from stream_ae.config import ConsumerSettings

T = TypeVar("T")


@dataclass(frozen=True)
class BatchPolicy:
    """When a micro-batch is complete.

    A batch waits up to ``max_wait_s`` for its first records; once some are in hand it
    takes what the client has already buffered and stops when that is nothing, or at
    ``max_records``, or ``max_wait_s`` after the call. Under load the buffer keeps the
    batches full; on a quiet stream an event waits for no other.

    Attributes:
        max_records: batch size bound (records).
        max_wait_s: batch wait bound (seconds).
    """

    max_records: int
    max_wait_s: float

    @classmethod
    def from_settings(cls, consumer: ConsumerSettings) -> "BatchPolicy":
        """The policy of ``consumer.max_batch_size`` and ``consumer.max_wait_ms``."""
        return cls(consumer.max_batch_size, consumer.max_wait_ms / 1000.0)

    def fill(self, fetch: Callable[[int, float], list[T]]) -> list[T]:
        """Fetch one micro-batch.

        Args:
            fetch: returns at most ``still_wanted`` items, waiting at most ``seconds``
                (0 means: what the client already holds).

        Returns:
            At most ``max_records`` items, in arrival order; empty when nothing arrived in time.
        """
        deadline = time.monotonic() + self.max_wait_s
        batch: list[T] = []
        while len(batch) < self.max_records:
            first = not batch
            arrived = fetch(self.max_records - len(batch),
                            max(0.0, deadline - time.monotonic()) if first else 0.0)
            if not arrived:
                if first and time.monotonic() < deadline:
                    continue  # the client woke up early with nothing: wait on
                return batch
            batch.extend(arrived)
            if time.monotonic() >= deadline:
                return batch
        return batch
