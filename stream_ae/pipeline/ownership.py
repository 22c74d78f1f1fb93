"""Partition ownership: which input partitions this detector holds, their saved thresholds,
and readiness.

The Kafka client calls :meth:`PartitionOwnership.assigned_now` and
:meth:`PartitionOwnership.revoked_now` from inside a poll (kafka-python on its I/O thread,
where nothing may block), so they only update sets. The loop reads the saved thresholds of
newly assigned partitions right after the poll (:meth:`PartitionOwnership.restore`),
before it judges any of their events.
Ready (``/readyz``) means: partitions assigned, their saved thresholds read, the broker
reachable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from stream_ae.kafka.records import PartitionKey
from stream_ae.pipeline.threshold.base import Threshold
from stream_ae.telemetry.health import HealthState
from stream_ae.telemetry.metrics import DetectorMetrics

log = logging.getLogger(__name__)


class SavedThresholds(Protocol):
    """Where the threshold state of each partition is kept (the compacted state topic:
    :class:`stream_ae.kafka.state_store.ThresholdStateStore`)."""

    def load(self, partitions: list[PartitionKey]) -> dict[PartitionKey, dict[str, float | int | str]]:
        """The latest saved state of each of ``partitions`` that has one.

        Raises:
            BrokerUnreachableError: the state could not be read.
        """
        ...

    def record(self, partition: PartitionKey, state: dict[str, float | int | str]) -> tuple[bytes, bytes]:
        """``(key, value)`` of the state record of one partition."""
        ...


class PartitionOwnership:
    """The partitions this detector owns, and whether it is ready.

    Args:
        health: where readiness is published.
        metrics: the per-partition gauges (threshold, lag) dropped on revocation.
        saved: where saved thresholds are read from; None keeps none.

    Attributes:
        assigned: the ``(topic, partition)`` pairs owned now.
        connected: whether the broker was reachable at the last check.
    """

    def __init__(self, health: HealthState, metrics: DetectorMetrics,
                 saved: SavedThresholds | None = None) -> None:
        self.health = health
        self.metrics = metrics
        self.saved = saved
        self.assigned: set[PartitionKey] = set()
        self.connected = True
        self._unrestored: set[PartitionKey] = set()  # assigned, saved threshold not read yet
        self._release_listeners: list[Callable[[list[PartitionKey]], None]] = []

    def on_release(self, listener: Callable[[list[PartitionKey]], None]) -> None:
        """Call ``listener(partitions)`` whenever partitions are revoked."""
        self._release_listeners.append(listener)

    # -- rebalance callbacks (called from inside a poll) -------------------------------------
    def assigned_now(self, partitions: list[PartitionKey]) -> None:
        """The client assigned ``partitions`` to this detector (nothing blocks here)."""
        self.assigned.update(partitions)
        self._unrestored.update(partitions)
        self._refresh_readiness()
        log.info("partitions assigned: %s", sorted(partitions))

    def revoked_now(self, partitions: list[PartitionKey]) -> None:
        """The client took ``partitions`` away: forget them and tell the release listeners."""
        for partition in partitions:
            self.assigned.discard(partition)
            self._unrestored.discard(partition)
        self.metrics.forget_partitions(partitions)
        for listener in self._release_listeners:
            listener(partitions)
        self._refresh_readiness()
        log.info("partitions revoked: %s", sorted(partitions))

    def reread(self, partitions: list[PartitionKey]) -> None:
        """Have the thresholds of ``partitions`` (still owned) set back to their saved state
        before their next events are judged (:meth:`restore`): their in-memory state has
        counted a batch whose transaction was aborted. Without a state store the in-memory
        state stays."""
        if self.saved is None:
            return
        self._unrestored.update(self.assigned.intersection(partitions))

    # -- the loop's side ---------------------------------------------------------------------
    @property
    def restoring(self) -> bool:
        """Whether newly assigned partitions wait for their saved thresholds."""
        return bool(self._unrestored)

    def restore(self, threshold: Threshold, checkpoint_sha256: str) -> None:
        """Start the threshold of each newly assigned (or :meth:`reread`) partition afresh:
        from its saved state, when the state was saved by the model in service
        (``checkpoint_sha256``); else from the seed.

        Raises:
            BrokerUnreachableError: the saved state could not be read; the partitions stay
                waiting for it (not ready), to be restored by a later call.
        """
        partitions = sorted(self._unrestored)
        saved = self.saved.load(partitions) if self.saved is not None else {}
        self._unrestored.difference_update(partitions)
        for partition in partitions:
            threshold.forget(partition)
        for partition, state in saved.items():
            if state.get("checkpoint_sha256") == checkpoint_sha256:
                threshold.restore(partition, state)
        self.metrics.show_thresholds(partitions, threshold.threshold)
        self._refresh_readiness()
        log.info("threshold state restored for %d of %d newly assigned partitions", len(saved), len(partitions))

    def owned(self, offsets: dict[PartitionKey, int]) -> dict[PartitionKey, int]:
        """The entries of ``offsets`` whose partition is still owned (what may be committed)."""
        return {partition: offset for partition, offset in offsets.items() if partition in self.assigned}

    def broker_reachable(self, connected: bool) -> None:
        """Record the latest broker connection check (counts a reconnection)."""
        if connected and not self.connected:
            self.metrics.reconnects.inc()
            log.info("broker connection back")
        elif not connected and self.connected:
            log.warning("lost every broker connection; not ready until it is back")
        self.connected = connected
        self._refresh_readiness()

    def _refresh_readiness(self) -> None:
        self.health.ready = bool(self.assigned) and not self._unrestored and self.connected
