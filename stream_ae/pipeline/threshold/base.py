"""The threshold contract: a batch's scores in, flags out, and per-partition state to save.

A threshold rule keeps one state per input partition (``(topic, partition)``), judges a
batch's scores against the state in force before it, and updates the state. The state is
keyed state (:class:`~stream_ae.pipeline.keyed_state.KeyedState`, under the partition's
own key :data:`~stream_ae.pipeline.keyed_state.PARTITION`): exported with every batch and
saved with its offsets, restored when a partition is assigned again. The adaptive
mean + k·std rule (:mod:`.adaptive`) is one implementation; a new rule is one file with a
class that subclasses :class:`Threshold`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stream_ae.kafka.records import PartitionKey
from stream_ae.pipeline.keyed_state import KeyedState


@dataclass(frozen=True)
class Verdict:
    """Threshold decisions for one batch, each array of shape ``(events,)``.

    Attributes:
        flags: True where the score exceeds the threshold in force.
        thresholds: the threshold in force for each event's partition (score units).
        zscores: ``(score - mean) / std`` with the statistics in force, in the working scale.
    """

    flags: np.ndarray
    thresholds: np.ndarray
    zscores: np.ndarray


class Threshold(KeyedState, Protocol):
    """What the loop needs of a threshold rule: :meth:`apply` and :meth:`threshold`, and the
    keyed state's ``export``, ``restore`` and ``forget``."""

    def apply(self, partitions: list[PartitionKey], partition_index: np.ndarray,
              scores: np.ndarray) -> Verdict:
        """Judge a batch, then update each partition's state.

        Args:
            partitions: the batch's distinct partitions.
            partition_index: int ``(events,)`` indexing ``partitions``.
            scores: float ``(events,)`` anomaly scores (:attr:`stream_ae.model.detector.Scores.score`).

        Returns:
            The verdict, every array ``(events,)``.
        """
        ...

    def threshold(self, key: PartitionKey) -> float:
        """The threshold in force for a partition, in score units."""
        ...
