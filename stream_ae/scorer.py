"""Batch → reconstruction error, with the model, the scaler and the error on the device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stream_ae.checkpoint import Checkpoint
from stream_ae.device import resolve_device


@dataclass(frozen=True)
class Scores:
    """Scores of one batch.

    Attributes:
        errors: float32 ``(events,)``, mean squared reconstruction error of the standardised event.
        top_index: int64 ``(events, top)``, indices into ``Scorer.attribution_names`` of the
            features (or window segments) with the largest error, largest first.
        top_error: float32 ``(events, top)``, their mean squared errors.
    """

    errors: np.ndarray
    top_index: np.ndarray
    top_error: np.ndarray


def _segment_names(window_length: int, segments: int) -> list[str]:
    bounds = np.linspace(0, window_length, segments + 1).round().astype(int)
    return [f"t{start}-t{end - 1}" for start, end in zip(bounds[:-1], bounds[1:])]


class Scorer:
    """Scores events with a checkpoint's model resident on one device.

    The whole batch goes through one forward pass under ``torch.inference_mode``:
    standardise ``(x - mean) / std`` on the device, reconstruct, take the per-feature
    squared error, average it per event, and pick the ``top`` features (for windows:
    contiguous segments) with the largest error for the alert.

    Args:
        checkpoint: the trained model.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        top: features or segments reported per event.
        window_segments: segments a window is split into (windows only).

    Raises:
        ValueError: CUDA asked for but absent.
    """

    def __init__(self, checkpoint: Checkpoint, device: str = "auto", top: int = 3,
                 window_segments: int = 10) -> None:
        self.device = resolve_device(device)
        self.checkpoint = checkpoint
        self.model = checkpoint.build().to(self.device)
        self.mean = torch.as_tensor(checkpoint.scaler_mean, device=self.device)
        self.std = torch.as_tensor(checkpoint.scaler_std, device=self.device)
        width = checkpoint.input_dim
        if checkpoint.kind == "window":
            self.segments = min(window_segments, width)
            self.attribution_names = _segment_names(width, self.segments)
            bounds = np.linspace(0, width, self.segments + 1).round().astype(int)
            owner = np.repeat(np.arange(self.segments), np.diff(bounds))
            # (features, segments) averaging matrix: per-feature error @ it = per-segment error
            pooling = np.zeros((width, self.segments), np.float32)
            pooling[np.arange(width), owner] = 1.0 / np.diff(bounds)[owner]
            self.pooling: torch.Tensor | None = torch.from_numpy(pooling).to(self.device)
        else:
            self.segments = width
            self.attribution_names = list(checkpoint.feature_names)
            self.pooling = None
        self.top = min(top, len(self.attribution_names))

    def score(self, values: np.ndarray) -> Scores:
        """Score a batch.

        Args:
            values: float32 ``(events, features)``; ``features`` must equal the model's input.

        Returns:
            :class:`Scores` with arrays on the host.

        Raises:
            ValueError: ``values`` has the wrong number of columns.
        """
        if values.ndim != 2 or values.shape[1] != self.checkpoint.input_dim:
            raise ValueError(f"expected (events, {self.checkpoint.input_dim}) values, got {values.shape}")
        if len(values) == 0:
            empty = np.empty((0, self.top))
            return Scores(np.empty(0, np.float32), empty.astype(np.int64), empty.astype(np.float32))
        with torch.inference_mode():
            x = torch.from_numpy(values).to(self.device, non_blocking=True)
            x = (x - self.mean) / self.std
            errors, per_feature = self.model.score(x)
            attribution = per_feature if self.pooling is None else per_feature @ self.pooling
            top_error, top_index = torch.topk(attribution, self.top, dim=1)
            return Scores(errors.float().cpu().numpy(), top_index.cpu().numpy(),
                          top_error.float().cpu().numpy())

