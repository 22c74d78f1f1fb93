"""Partition ownership: which input partitions this daemon holds, their keyed state restored
on assignment, and readiness.

The Kafka client calls :meth:`PartitionOwnership.assigned_now` and
:meth:`PartitionOwnership.revoked_now` from inside a poll (kafka-python on its I/O thread,
where nothing may block), so they only update sets. The loop has the saved state of newly
assigned partitions read right after the poll (:meth:`PartitionOwnership.restore`), before
it judges any of their events; a revoked partition's state is dropped at once.
Ready (``/readyz``) means: partitions assigned, their saved state read, the broker
reachable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from stream_ae.kafka.records import PartitionKey
from stream_ae.pipeline.keyed_state import PartitionStates
from stream_ae.telemetry.health import HealthState
from stream_ae.telemetry.metrics import DaemonMetrics

log = logging.getLogger(__name__)


class PartitionOwnership:
    """The partitions this daemon owns, their keyed state, and whether it is ready.

    Args:
        health: where readiness is published.
        metrics: the per-partition gauges (threshold, lag) dropped on revocation.
        states: the keyed state of the partitions owned (with its store, if any).

    Attributes:
        assigned: the ``(topic, partition)`` pairs owned now.
        connected: whether the broker was reachable at the last check.
    """

    def __init__(self, health: HealthState, metrics: DaemonMetrics, states: PartitionStates) -> None:
        self.health = health
        self.metrics = metrics
        self.states = states
        self.assigned: set[PartitionKey] = set()
        self.connected = True
        self._unrestored: set[PartitionKey] = set()  # assigned, saved state not read yet
        self._release_listeners: list[Callable[[list[PartitionKey]], None]] = []

    def on_release(self, listener: Callable[[list[PartitionKey]], None]) -> None:
        """Call ``listener(partitions)`` whenever partitions are revoked (after their keyed
        state is dropped)."""
        self._release_listeners.append(listener)

    # -- rebalance callbacks (called from inside a poll) -------------------------------------
    def assigned_now(self, partitions: list[PartitionKey]) -> None:
        """The client assigned ``partitions`` to this detector (nothing blocks here)."""
        self.assigned.update(partitions)
        self._unrestored.update(partitions)
        self._refresh_readiness()
        log.info("partitions assigned: %s", sorted(partitions))

    def revoked_now(self, partitions: list[PartitionKey]) -> None:
        """The client took ``partitions`` away: forget them and their keyed state."""
        for partition in partitions:
            self.assigned.discard(partition)
            self._unrestored.discard(partition)
        self.metrics.forget_partitions(partitions)
        self.states.forget(partitions)
        for listener in self._release_listeners:
            listener(partitions)
        self._refresh_readiness()
        log.info("partitions revoked: %s", sorted(partitions))

    def reread(self, partitions: list[PartitionKey]) -> None:
        """Have the keyed state of ``partitions`` (still owned) set back to its saved state
        before their next events are judged (:meth:`restore`): the in-memory state has
        counted a batch whose transaction was aborted. Without a state store the in-memory
        state stays."""
        if self.states.store is None:
            return
        self._unrestored.update(self.assigned.intersection(partitions))

    # -- the loop's side ---------------------------------------------------------------------
    @property
    def restoring(self) -> bool:
        """Whether newly assigned partitions wait for their saved state."""
        return bool(self._unrestored)

    def restore(self, checkpoint_sha256: str) -> list[PartitionKey]:
        """Start the keyed state of each newly assigned (or :meth:`reread`) partition afresh:
        from its saved state, when the state was saved by the model in service
        (``checkpoint_sha256``); else from the holders' starting state
        (:meth:`PartitionStates.restore`).

        Returns:
            The partitions restored.

        Raises:
            BrokerUnreachableError: the saved state could not be read; the partitions stay
                waiting for it (not ready), to be restored by a later call.
        """
        partitions = sorted(self._unrestored)
        saved = self.states.restore(partitions, checkpoint_sha256)
        self._unrestored.difference_update(partitions)
        self._refresh_readiness()
        log.info("state restored for %d of %d newly assigned partitions", saved, len(partitions))
        return partitions

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
