"""The detector contract: the one way anything in stream-ae turns events into anomaly scores.

A :class:`Detector` is built from a checkpoint (:func:`build_detector`) and scores a batch
of events at once on its device: float32 ``(events, features)`` in, :class:`Scores` out
(one score per event, higher = more anomalous, which the threshold judges; optionally an
attribution per feature, or per segment for windows, that names what an alert blames; and
named per-event values that the output records carry beside the score). A detector that
adapts to the stream learns from the events of a batch that were not flagged
(:meth:`Detector.learn`; a no-op for the detectors of today); what it learns travels with
the partitions as the threshold's state does, by being keyed state
(:class:`stream_ae.pipeline.keyed_state.KeyedState`). The rest is derived:
:meth:`Detector.score_all` scores any number of events in batches. The shape follows
PyOD's ``BaseDetector`` (``fit``, ``decision_function``, the rest derived) and River's
anomaly detectors (``learn_one``, ``score_one``), batched.

The daemon, ``evaluate``, ``compare``, ``bench``, ``demo`` and training's validation
scores all go through this module; no other module computes a score
(``tests/test_score_contract.py`` checks it).

:class:`AutoencoderDetector` is the one detector today: the checkpoint's autoencoder, and
its memory bank when it has one (the default score, :mod:`stream_ae.model.memory_bank`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from stream_ae.model.autoencoders import Autoencoder
from stream_ae.model.checkpoint import Checkpoint
from stream_ae.model.device import resolve_device
from stream_ae.model.memory_bank import MemoryBank

log = logging.getLogger(__name__)

SCORE_BATCH = 8192  # events per call in score_all and in model_scores


@dataclass(frozen=True)
class Scores:
    """Scores of one batch.

    Attributes:
        score: float32 ``(events,)``, the anomaly score the threshold judges (higher = more
            anomalous).
        attribution: float32 tensor ``(events, columns)`` on the detector's device, each
            column's share of the blame (for the autoencoder: the squared error of each
            feature, or of each segment of a window), in the order of
            ``Detector.attribution_names``; None when the detector attributes nothing.
        top: columns that :meth:`top_features` reports per event.
        values: named float32 ``(events,)`` arrays that the alert and score records carry
            beside the score (the autoencoder: ``reconstruction_error``).
    """

    score: np.ndarray
    attribution: torch.Tensor | None = None
    top: int = 0
    values: Mapping[str, np.ndarray] = field(default_factory=dict)

    def top_features(self, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``top`` columns with the largest attribution, for the given events only
        (alerts need them for the few flagged events; a top-k over every event of the batch
        would cost more than the model on the CPU).

        Args:
            events: int ``(k,)`` indices into the batch.

        Returns:
            ``(index, value)``: int64 ``(k, top)`` indices into ``Detector.attribution_names``,
            largest first, and float32 ``(k, top)`` their attributions; ``(k, 0)`` each
            without an attribution.
        """
        if self.attribution is None or self.top == 0:
            return np.zeros((len(events), 0), np.int64), np.zeros((len(events), 0), np.float32)
        with torch.inference_mode():
            rows = self.attribution[torch.as_tensor(events, dtype=torch.long, device=self.attribution.device)]
            value, index = torch.topk(rows, self.top, dim=1)
            return index.cpu().numpy(), value.cpu().numpy()


class Detector:
    """What scores events: the contract of the module docstring.

    A subclass sets :attr:`input_dim` and :attr:`attribution_names` and implements
    :meth:`score` (the base raises ``NotImplementedError``); it overrides :meth:`learn` when
    it adapts to the stream (and keeps what it learns as keyed state).

    Attributes:
        input_dim: values per event (features, or samples per window).
        attribution_names: the name of each attribution column (a feature, or a window
            segment such as ``t28-t41``).
    """

    input_dim: int
    attribution_names: list[str]

    def score(self, values: np.ndarray) -> Scores:
        """Score a batch on the detector's device.

        Args:
            values: float32 ``(events, input_dim)``, the events as decoded (not standardised).

        Returns:
            :class:`Scores` with ``score`` ``(events,)`` on the host.

        Raises:
            ValueError: ``values`` is not ``(events, input_dim)``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not score")

    def learn(self, values: np.ndarray, flags: np.ndarray) -> None:
        """Learn from a scored batch: ``values (events, input_dim)`` float32 and ``flags
        (events,)`` bool, True for the events the threshold flagged, which must never be
        learned from. Nothing by default: the detector stays as it was trained."""

    def host_buffer(self, rows: int, width: int) -> np.ndarray:
        """An empty float32 ``(rows, width)`` host array for a batch on its way to :meth:`score`
        (a detector on a GPU gives page-locked memory)."""
        return np.empty((rows, width), np.float32)

    def warm_up(self, max_events: int) -> None:
        """Score once at each batch size a stream of batches up to ``max_events`` events can
        bring, so that compilation happens before the stream; nothing by default."""

    def score_all(self, values: np.ndarray, batch_size: int = SCORE_BATCH) -> np.ndarray:
        """Scores ``(events,)`` float32 of any number of events ``(events, input_dim)``,
        scored ``batch_size`` at a time.

        Raises:
            ValueError: ``values`` is not ``(events, input_dim)``.

        Example:
            >>> from stream_ae.model.datasets import synthetic_transactions
            >>> from stream_ae.model.training import TrainingOptions, train_autoencoder
            >>> data = synthetic_transactions(rows=600)
            >>> detector = build_detector(train_autoencoder(data, TrainingOptions(epochs=1, progress=False)), "cpu")
            >>> detector.score_all(data.values, batch_size=256).shape
            (600,)
        """
        parts = [self.score(np.ascontiguousarray(values[start:start + batch_size])).score
                 for start in range(0, len(values), batch_size)]
        return np.concatenate(parts) if parts else np.empty(0, np.float32)


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


def model_scores(model: Autoencoder, rows: torch.Tensor, bank: MemoryBank | None = None,
                 batch_size: int = SCORE_BATCH) -> torch.Tensor:
    """Scores ``(rows,)`` float32 of standardised rows ``(rows, d)`` on their device, in eval
    mode without gradients, ``batch_size`` rows at a time: the distance to ``bank``, or
    without one the model's own error (:meth:`Autoencoder.error`).

    Training reads it for the validation loss of each epoch (no bank yet) and for the
    validation scores that seed the threshold; :class:`AutoencoderDetector` computes the same
    score, with the scaler and the attributions, for events as they arrive.
    """
    model.eval()
    with torch.inference_mode():
        return torch.cat([model.error(rows[i:i + batch_size])[0] if bank is None
                          else bank.distance(rows[i:i + batch_size], *model.represent(rows[i:i + batch_size]))
                          for i in range(0, len(rows), batch_size)])


class AutoencoderDetector(Detector):
    """Scores events with a checkpoint's model resident on one device.

    The whole batch goes through one forward pass under ``torch.inference_mode``:
    standardise ``(x - mean) / std`` on the device, reconstruct, take the per-feature
    squared error, and score each event: with the checkpoint's memory bank (the default),
    the mean distance to its nearest normal training rows in the autoencoder's view
    (:mod:`stream_ae.model.memory_bank`; one matrix product against the bank, also on the
    device); without one, the model's own error (:meth:`Autoencoder.error`: the mean of
    the squared errors, or the VAE's negative ELBO). The ``top`` features (for windows:
    contiguous segments) with the largest squared error are what an alert blames; the
    mean squared reconstruction error goes with every score as ``reconstruction_error``.

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
        self.input_dim = checkpoint.input_dim
        self.model = checkpoint.build().to(self.device)
        bank = checkpoint.memory_bank()
        self.bank = None if bank is None else bank.to(self.device)
        if self.bank is not None and self.device.type == "cpu":
            log.info("memory bank of %d rows x %d dims scored on the CPU: %.2f M multiply-adds per event, "
                     "the loop's largest cost; a GPU, a smaller bank (train --bank-rows) or "
                     "train --score reconstruction cost far less (docs/performance.md)",
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
        """See :meth:`Detector.host_buffer`: page-locked (pinned) memory on CUDA, so that the
        copy to the device is asynchronous."""
        if self.pinned:
            return torch.empty((rows, width), dtype=torch.float32).pin_memory().numpy()
        return super().host_buffer(rows, width)

    def _errors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Standardise ``x (rows, features)`` and score it: the score ``(rows,)``, the
        reconstruction error ``(rows,)`` and the per-feature (per-segment for windows) error
        ``(rows, segments)``, all float32."""
        x = (x - self.mean) / self.std
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            if self.bank is None:
                errors, per_feature = self.model.error(x)
            else:
                code, reconstruction = self.model.represent(x)
                per_feature = (reconstruction - x) ** 2
        per_feature = per_feature.float()
        reconstruction_error = per_feature.mean(dim=1)
        if self.bank is not None:  # the distances in float32 whatever the model's precision
            score = self.bank.distance(x, code, reconstruction)
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
        """See :meth:`Detector.warm_up`: zeros at every bucket size up to ``max_events`` (or at
        ``max_events`` without bucketing)."""
        size = bucket_size(1) if self.bucket else max_events
        while True:
            self.score(np.zeros((size, self.input_dim), np.float32))
            if size >= max_events:
                return
            size *= 2

    def score(self, values: np.ndarray) -> Scores:
        """See :meth:`Detector.score`.

        Example:
            >>> from stream_ae.model.datasets import synthetic_transactions
            >>> from stream_ae.model.training import TrainingOptions, train_autoencoder
            >>> data = synthetic_transactions(rows=600)
            >>> checkpoint = train_autoencoder(data, TrainingOptions(epochs=1, progress=False))
            >>> scores = AutoencoderDetector(checkpoint, "cpu").score(data.values[:4])
            >>> scores.score.shape, scores.top_features(np.array([0]))[0].shape, list(scores.values)
            ((4,), (1, 3), ['reconstruction_error'])
        """
        if values.ndim != 2 or values.shape[1] != self.input_dim:
            raise ValueError(f"expected (events, {self.input_dim}) values, got {values.shape}")
        events = len(values)
        if events == 0:
            empty = np.empty(0, np.float32)
            return Scores(empty, torch.empty((0, self.segments), device=self.device), self.top,
                          {"reconstruction_error": empty})
        with torch.inference_mode():
            score, reconstruction_error, attribution = self._step(self._stage(values))
            return Scores(score[:events].cpu().numpy(), attribution[:events], self.top,
                          {"reconstruction_error": reconstruction_error[:events].cpu().numpy()})


def build_detector(checkpoint: Checkpoint, device: str = "auto", top: int = 3, window_segments: int = 10,
                   compile: bool = False, precision: str = "fp32", bucket: bool | None = None) -> Detector:
    """The detector that serves ``checkpoint`` (today always an :class:`AutoencoderDetector`;
    the arguments are its own).

    Raises:
        ValueError: CUDA asked for but absent, or an unknown ``precision``.

    Example:
        >>> from stream_ae.model.datasets import synthetic_transactions
        >>> from stream_ae.model.training import TrainingOptions, train_autoencoder
        >>> data = synthetic_transactions(rows=600)
        >>> detector = build_detector(train_autoencoder(data, TrainingOptions(epochs=1, progress=False)), "cpu")
        >>> scores = detector.score(data.values[:4])
        >>> scores.score.shape, detector.attribution_names[:2]
        ((4,), ['V1', 'V2'])
    """
    return AutoencoderDetector(checkpoint, device, top, window_segments, compile, precision, bucket)
