"""The autoencoder score head: batch → reconstruction error, with the model, the scaler and
the error on the device."""

from __future__ import annotations

import logging

import numpy as np
import torch

from stream_ae.model.checkpoint import Checkpoint
from stream_ae.model.device import resolve_device
from stream_ae.pipeline.scoring.base import ScoreHead, Scores

log = logging.getLogger(__name__)


def segment_bounds(window_length: int, segments: int) -> np.ndarray:
    """int ``(segments + 1,)`` sample bounds splitting a window into contiguous segments of
    near-equal length: segment ``s`` holds samples ``bounds[s]`` to ``bounds[s + 1] - 1``."""
    return np.linspace(0, window_length, segments + 1).round().astype(int)


def bucket_size(events: int, smallest: int = 64) -> int:
    """The padded batch size for ``events`` rows: the next power of two, at least ``smallest``.

    Powers of two from 64 keep the distinct shapes few (8 up to 8,192 events), so a compiled
    model (whose recompile limit is 8 graphs per function by default) is not recompiled.
    """
    return max(smallest, 1 << max(events - 1, 0).bit_length())


class AutoencoderScorer(ScoreHead):
    """Scores events with a checkpoint's model resident on one device.

    The whole batch goes through one forward pass under ``torch.inference_mode``:
    standardise ``(x - mean) / std`` on the device, reconstruct, take the per-feature
    squared error, and score each event: with the checkpoint's memory bank (the default),
    the mean distance to its nearest normal training rows in the autoencoder's view
    (:mod:`stream_ae.model.memory_bank`; one matrix product against the bank, also on the
    device); without one, the mean of the squared errors. The ``top`` features (for windows:
    contiguous segments) with the largest squared error are what an alert blames.

    On CUDA the batch is staged in a page-locked (pinned) host buffer and copied with
    ``non_blocking=True``. With ``bucket`` the batch is padded with zero rows to
    :func:`bucket_size`, so shapes repeat and a compiled model or CUDA graph is reused; the
    padded rows are scored and dropped (rows do not interact, so the real rows' scores are
    those of the unpadded batch). By default that is done where it pays: with ``compile``
    or on CUDA; an eager model on the CPU would only score the padding.

    Args:
        checkpoint: the trained model.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        top: features or segments reported per event.
        window_segments: segments a window is split into (windows only).
        compile: wrap the scoring step in ``torch.compile`` (mode ``reduce-overhead``, i.e.
            CUDA graphs, on cuda; the default inductor mode on the CPU).
        precision: ``fp32``, or ``bf16`` to run the model under bf16 autocast; the error is
            computed in float32 either way.
        bucket: pad batches to powers of two (see above); None: with ``compile`` or on CUDA.

    Raises:
        ValueError: CUDA asked for but absent, or an unknown ``precision``.
    """

    def __init__(self, checkpoint: Checkpoint, device: str = "auto", top: int = 3,
                 window_segments: int = 10, compile: bool = False, precision: str = "fp32",
                 bucket: bool | None = None) -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, not {precision!r}")
        self.device = resolve_device(device)
        self.checkpoint = checkpoint
        self.model = checkpoint.build().to(self.device)
        bank = checkpoint.memory_bank()
        self.bank = None if bank is None else bank.to(self.device)
        if self.bank is not None and self.device.type == "cpu":
            log.info("memory bank of %d rows x %d dims scored on the CPU: %.2f M multiply-adds per event, "
                     "the loop's largest cost; a GPU, a smaller bank (train --bank-rows) or "
                     "train --score reconstruction cost far less (README, Performance)",
                     *self.bank.rows.shape, self.bank.multiply_adds_per_event / 1e6)
        self.mean = torch.as_tensor(checkpoint.scaler_mean, device=self.device)
        self.std = torch.as_tensor(checkpoint.scaler_std, device=self.device)
        width = checkpoint.input_dim
        if checkpoint.kind == "window":
            self.segments = min(window_segments, width)
            bounds = segment_bounds(width, self.segments)
            self.attribution_names = [f"t{start}-t{end - 1}" for start, end in zip(bounds[:-1], bounds[1:])]
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
        self.precision = precision
        self.bucket = (compile or self.device.type == "cuda") if bucket is None else bucket
        self.pinned = self.device.type == "cuda"
        self._host = torch.zeros((0, width), dtype=torch.float32)
        self._step = self._errors
        if compile:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._step = torch.compile(self._errors, mode=mode, dynamic=False)

    def host_buffer(self, rows: int, width: int) -> np.ndarray:
        """An empty float32 ``(rows, width)`` host array for a batch on its way to this scorer:
        page-locked (pinned) memory on CUDA, so that the copy to the device is asynchronous."""
        if self.pinned:
            return torch.empty((rows, width), dtype=torch.float32).pin_memory().numpy()
        return np.empty((rows, width), np.float32)

    def _errors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Standardise ``x (rows, features)`` and score it: the score ``(rows,)``, the
        reconstruction error ``(rows,)`` and the per-feature (per-segment for windows) error
        ``(rows, segments)``, all float32."""
        x = (x - self.mean) / self.std
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            if self.bank is None:
                errors, per_feature = self.model.score(x)
            else:
                code, reconstruction = self.model.represent(x)
                per_feature = (reconstruction - x) ** 2
        per_feature = per_feature.float()
        reconstruction_error = per_feature.mean(dim=1)
        if self.bank is not None:  # the distances in float32 whatever the model's precision
            score = self.bank.score_represented(x, code, reconstruction)
        else:
            score = errors.float()
        attribution = per_feature if self.pooling is None else per_feature @ self.pooling
        return score, reconstruction_error, attribution

    def _stage(self, values: np.ndarray) -> torch.Tensor:
        """``values (events, features)`` as a tensor on the device: padded to the bucket size
        when bucketing, staged through pinned memory on cuda."""
        host = torch.from_numpy(values)
        rows = bucket_size(len(values)) if self.bucket else len(values)
        if self.bucket or (self.pinned and not host.is_pinned()):
            if len(self._host) < rows:
                self._host = torch.zeros((rows, values.shape[1]), dtype=torch.float32)
                if self.pinned:
                    self._host = self._host.pin_memory()
            self._host[:len(values)].copy_(host)
            host = self._host[:rows]
        return host.to(self.device, non_blocking=True)

    def warm_up(self, max_events: int) -> None:
        """Score zeros once at every bucket size up to ``max_events`` (or at ``max_events``
        without bucketing), so that compilation happens here, not on the stream's first batches."""
        size = bucket_size(1) if self.bucket else max_events
        while True:
            self.score(np.zeros((size, self.checkpoint.input_dim), np.float32))
            if size >= max_events:
                return
            size *= 2

    def score(self, values: np.ndarray) -> Scores:
        """Score a batch.

        Args:
            values: float32 ``(events, features)``; ``features`` must equal the model's input.

        Returns:
            :class:`Scores` with arrays on the host.

        Raises:
            ValueError: ``values`` has the wrong number of columns.

        Example:
            >>> from stream_ae.model.datasets import synthetic_transactions
            >>> from stream_ae.model.training import TrainingOptions, train_autoencoder
            >>> data = synthetic_transactions(rows=600)
            >>> checkpoint = train_autoencoder(data, TrainingOptions(epochs=1, progress=False))
            >>> scores = AutoencoderScorer(checkpoint, "cpu").score(data.values[:4])
            >>> scores.score.shape, scores.top_features(np.array([0]))[0].shape
            ((4,), (1, 3))
        """
        if values.ndim != 2 or values.shape[1] != self.checkpoint.input_dim:
            raise ValueError(f"expected (events, {self.checkpoint.input_dim}) values, got {values.shape}")
        events = len(values)
        if events == 0:
            empty = np.empty(0, np.float32)
            return Scores(empty, empty, torch.empty((0, self.segments), device=self.device), self.top)
        with torch.inference_mode():
            score, reconstruction_error, attribution = self._step(self._stage(values))
            return Scores(score[:events].cpu().numpy(), reconstruction_error[:events].cpu().numpy(),
                          attribution[:events], self.top)
