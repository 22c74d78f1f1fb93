"""The scoring contract: a batch of events in, anomaly scores and per-feature attributions out.

A score head turns float32 events ``(events, features)`` into :class:`Scores`: one score
per event (higher = more anomalous) and an attribution per feature (per segment for
windows) that names what an alert blames. The autoencoder head (:mod:`.autoencoder`,
reconstruction error) is one implementation; another head, or a baseline such as kNN,
is one file with a class that subclasses :class:`ScoreHead`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class Scores:
    """Scores of one batch.

    Attributes:
        score: float32 ``(events,)``, the anomaly score the threshold judges (higher = more
            anomalous): the memory-bank distance, or the reconstruction error without a bank.
        reconstruction_error: float32 ``(events,)``, mean squared reconstruction error of
            the standardised event.
        attribution: float32 tensor ``(events, segments)`` on the scorer's device: the mean
            squared error of each feature (for windows: each segment), in the order of
            ``ScoreHead.attribution_names``.
        top: features (segments) that :meth:`top_features` reports per event.
    """

    score: np.ndarray
    reconstruction_error: np.ndarray
    attribution: torch.Tensor
    top: int

    def top_features(self, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``top`` features with the largest error for the given events only (alerts
        need them for the few flagged events; a top-k over every event of the batch would
        cost more than the model on the CPU).

        Args:
            events: int ``(k,)`` indices into the batch.

        Returns:
            ``(index, error)``: int64 ``(k, top)`` indices into ``ScoreHead.attribution_names``,
            largest error first, and float32 ``(k, top)`` those errors.
        """
        with torch.inference_mode():
            rows = self.attribution[torch.as_tensor(events, dtype=torch.long, device=self.attribution.device)]
            error, index = torch.topk(rows, self.top, dim=1)
            return index.cpu().numpy(), error.cpu().numpy()


class ScoreHead(Protocol):
    """What the loop needs of a scorer.

    Attributes:
        attribution_names: the name of each attribution column (a feature, or a window
            segment such as ``t28-t41``).
    """

    attribution_names: list[str]

    def score(self, values: np.ndarray) -> Scores:
        """Score a batch.

        Args:
            values: float32 ``(events, features)``, the events as decoded (not standardised).

        Returns:
            :class:`Scores` with ``score`` and ``reconstruction_error`` ``(events,)`` on the host.

        Raises:
            ValueError: ``values`` has the wrong number of columns.
        """
        ...
