"""Shared test helpers: plain-data records and scripted Kafka ends (no broker involved).

The scripted ends subclass the Kafka contracts (:mod:`stream_ae.kafka.ends`) explicitly,
so that mypy (run by ``.ci/run`` over this file) fails when one of them no longer
implements what the pipeline needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from stream_ae.kafka.ends import Delivery, DeliveryError, Sink, Source
from stream_ae.kafka.records import ConsumedBatch, PartitionKey, Record


@dataclass
class FakeRecord:
    """A consumed record as the codec sees it (plain data, no broker involved)."""

    value: bytes | None
    topic: str = "events"
    partition: int = 0
    offset: int = 0
    timestamp: int = 1_700_000_000_000
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class ScriptedSource(Source):
    """Hands out the given batches in turn (then empty ones); records commits and rewinds."""

    def __init__(self, batches: list[ConsumedBatch]) -> None:
        self.batches = batches
        self.commits: list[tuple[dict[PartitionKey, int], bool]] = []
        self.rewinds: list[dict[PartitionKey, int]] = []

    def poll_records(self) -> list[Record]:
        batch = self.poll_batch()
        return [batch.record(index) for index in range(len(batch))]

    def poll_batch(self) -> ConsumedBatch:
        return self.batches.pop(0) if self.batches else ConsumedBatch.from_records([])

    def commit(self, next_offsets: dict[PartitionKey, int], asynchronous: bool = False) -> bool:
        self.commits.append((dict(next_offsets), asynchronous))
        return True

    def rewind(self, first_offsets: dict[PartitionKey, int]) -> None:
        self.rewinds.append(dict(first_offsets))

    def lag(self) -> dict[PartitionKey, int]:
        return {}

    def connected(self) -> bool:
        return True

    def close(self) -> None:
        pass


class ScriptedSink(Sink):
    """Seals numbered batches; the deliveries numbered in ``refused`` fail when waited on;
    every delivery says it was acknowledged at ``acknowledged_at_s``."""

    def __init__(self, refused: set[int], answered_at_once: bool, acknowledged_at_s: float = 0.0) -> None:
        self.refused = refused
        self.answered_at_once = answered_at_once
        self.acknowledged_at_s = acknowledged_at_s
        self.open: list[tuple[str, bytes | None]] = []
        self.sealed: list[list[tuple[str, bytes | None]]] = []
        self.acknowledged: list[tuple[str, bytes | None]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        self.open.append((topic, key))

    def seal(self) -> Delivery:
        records, self.open = self.open, []
        number = len(self.sealed)
        self.sealed.append(records)
        sink = self

        class ScriptedDelivery(Delivery):
            def done(self) -> bool:
                return sink.answered_at_once

            def wait(self) -> int:
                if number in sink.refused:
                    raise DeliveryError(f"batch {number} refused")
                sink.acknowledged.extend(records)
                return len(records)

            def acknowledged_at(self) -> float:
                return sink.acknowledged_at_s
        return ScriptedDelivery()

    def close(self) -> None:
        pass


