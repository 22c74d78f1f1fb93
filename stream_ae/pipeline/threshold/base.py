"""The threshold contract: a batch's scores in, flags out, and per-partition state to save.

A threshold rule keeps one state per input partition (``(topic, partition)``), judges a
batch against the state in force before it, updates the state, and can hand the state
out (:meth:`Threshold.export`, saved by the daemon with every batch) and take it back
(:meth:`Threshold.restore`, when a partition is assigned again). The adaptive
mean + k·std rule (:mod:`.adaptive`) is one implementation; a new rule is one file with a
class that subclasses :class:`Threshold`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stream_ae.kafka.records import PartitionKey


@dataclass(frozen=True)
class Verdict:
    """Threshold decisions for one batch, each array of shape ``(events,)``.

    Attributes:
        flags: True where the error exceeds the threshold in force.
        thresholds: the threshold in force for each event's partition (error units).
        zscores: ``(error - mean) / std`` with the statistics in force, in the working scale.
    """

    flags: np.ndarray
    thresholds: np.ndarray
    zscores: np.ndarray


class Threshold(Protocol):
    """What the loop needs of a threshold rule."""

    def apply(self, partitions: list[PartitionKey], partition_index: np.ndarray,
              errors: np.ndarray) -> Verdict:
        """Judge a batch, then update each partition's state.

        Args:
            partitions: the batch's distinct partitions.
            partition_index: int ``(events,)`` indexing ``partitions``.
            errors: float ``(events,)`` anomaly scores (reconstruction errors).

        Returns:
            The verdict, every array ``(events,)``.
        """
        ...

    def threshold(self, key: PartitionKey) -> float:
        """The threshold in force for a partition, in score units."""
        ...

    def export(self, key: PartitionKey) -> dict[str, float | int]:
        """A partition's state as a JSON-ready dict."""
        ...

    def restore(self, key: PartitionKey, saved: Mapping[str, float | int | str]) -> None:
        """Put back a partition's state written by :meth:`export` (as saved, with what the
        daemon keeps beside it, such as ``checkpoint_sha256``: keys the rule ignores)."""
        ...

    def forget(self, key: PartitionKey) -> None:
        """Drop a partition's state (it was revoked)."""
        ...
