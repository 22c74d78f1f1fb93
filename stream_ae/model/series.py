"""A detector per series key, fitted on the series' own warm-up: windows in, anomaly scores out.

Series differ in scale and in their normal, so each series key gets its own state, fitted
on its first ``warmup`` samples and then kept up to date causally (nothing is learned from
a later window than the one being scored):

1. **Normalisation.** ``z = (x - mean) / std`` with the mean and standard deviation of
   every value of the warm-up windows (a floor keeps a flat warm-up from dividing by zero).
2. **Memory bank.** The warm-up windows, normalised. A window's raw score is its Euclidean
   distance to the nearest bank windows (the mean over ``neighbours`` of them: the kNN
   distance of Ramaswamy, Rastogi & Shim, SIGMOD 2000, here per series over sliding
   windows), less ``floor``: ``s = max(d - floor, 0)``.
3. **Causal rank.** ``s`` maps to ``[0, 1]`` by its rank among the series' last
   ``history`` raw scores: ``(below + ties / 2) / count``, one minus a conformal p-value
   (Vovk, Gammerman & Shafer, *Algorithmic Learning in a Random World*, 2005; KNN-CAD,
   Burnaev & Ishimtsev 2016, ranks kNN distances alike), so a score is read against the
   series' own past whatever its scale. The history starts with the warm-up windows'
   leave-out scores (each one's distance to the warm-up windows that do not overlap it).
4. **Quiet period.** A window whose rank reaches ``flag_level`` is a detection; the next
   ``quiet`` windows of the series report 0, so that one event is flagged once (NAB counts
   only the earliest detection in a window and charges every later one outside it).

The defaults were chosen over the whole Numenta Anomaly Benchmark corpus at once (see
``docs/nab.md``), never per series. Scores are the same however the windows are split into
batches: each window sees exactly the history and quiet period that its series' earlier
windows left. Work per batch is one distance computation per series in it; the rank and
quiet period are per window (a sorted-list insertion, microseconds).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

STD_FLOOR = 1e-6
"""Smallest standard deviation a series is divided by, relative to ``max(1, |mean|)``."""


@dataclass(frozen=True)
class SeriesSettings:
    """What every series' detector is built with (the same for all series).

    Attributes:
        length: samples per window.
        warmup: samples a series' detector learns from before it scores (a series may be
            given its own, e.g. NAB's probationary period).
        neighbours: bank windows the raw score averages the distance to.
        floor: distance (in warm-up standard deviations) below which a window counts as
            seen: the raw score is ``max(distance - floor, 0)``, so that the smallest
            differences (noise, rounding) are never ranked as novelties.
        history: past raw scores a score is ranked among.
        flag_level: rank from which a window is a detection.
        quiet: windows reported as 0 after a detection.
    """

    length: int = 2
    warmup: int = 750
    neighbours: int = 1
    floor: float = 0.4
    history: int = 10_000
    flag_level: float = 0.998
    quiet: int = 100

    def __post_init__(self) -> None:
        for name in ("length", "neighbours", "history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < self.length:
            raise ValueError(f"warmup ({self.warmup}) must hold at least one window of length {self.length}")
        if self.floor < 0 or self.quiet < 0:
            raise ValueError("floor and quiet must not be negative")
        if not 0.0 < self.flag_level <= 1.0:
            raise ValueError(f"flag_level must be in (0, 1], got {self.flag_level}")


@dataclass
class SeriesState:
    """One series' fitted state; everything a restart needs to score on as before.

    Attributes:
        warm: raw warm-up windows collected so far, float32 ``(length * channels,)`` each.
        mean, std: the normalisation, fitted at the end of the warm-up (None before).
        bank: float32 ``(warm-up windows, length * channels)`` normalised warm-up windows.
        history: the last raw scores in arrival order, and the same sorted.
        quiet_until: the last ``end_sample`` whose score is forced to 0.
    """

    warm: list[np.ndarray] = field(default_factory=list)
    mean: float | None = None
    std: float = 1.0
    bank: np.ndarray | None = None
    history: deque[float] = field(default_factory=deque)
    sorted_history: list[float] = field(default_factory=list)
    quiet_until: int = -1


class SeriesDetector:
    """Scores windows of many series, each against its own fitted state.

    Args:
        settings: the detector's settings.
        warmup_of: per series key, a warm-up in samples that replaces ``settings.warmup``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> values = np.sin(np.arange(60) / 3)[:, None] + rng.normal(0, 0.01, (60, 1))
        >>> values[55] += 5.0                                     # a spike near the end
        >>> ends = np.arange(3, 60)
        >>> windows = np.stack([values[e - 3:e + 1] for e in ends])   # (57, 4, 1): one series
        >>> detector = SeriesDetector(SeriesSettings(length=4, warmup=30, quiet=3))
        >>> scores, scored = detector.score(windows, ["s"], np.zeros(len(ends), np.int32), ends)
        >>> int(scored.sum()), float(scores[ends == 55][0])     # windows after the warm-up; the spike tops its past
        (30, 1.0)
    """

    def __init__(self, settings: SeriesSettings, warmup_of: Mapping[str, int] | None = None) -> None:
        self.settings = settings
        self.warmup_of = dict(warmup_of or {})
        self.states: dict[str, SeriesState] = {}

    def forget(self, series: str) -> None:
        """Drop a series' state (it starts warming again if it returns)."""
        self.states.pop(series, None)

    def deviations(self, series: str, values: np.ndarray) -> np.ndarray:
        """Where windows differ from their nearest warm-up window: what an alert blames.

        Args:
            series: a fitted series.
            values: float ``(k, length * channels)`` raw windows.

        Returns:
            float64 ``(k, length * channels)``: ``z - nearest``, in the series' standard deviations.

        Raises:
            KeyError: the series has no fitted state.
        """
        state = self.states[series]
        if state.bank is None or state.mean is None:
            raise KeyError(f"series {series!r} is still warming up")
        z = ((np.asarray(values, np.float64) - state.mean) / state.std).astype(np.float32)
        squared = (z * z).sum(1)[:, None] + (state.bank * state.bank).sum(1)[None, :] - 2.0 * z @ state.bank.T
        return (z - state.bank[np.argmin(squared, axis=1)]).astype(np.float64)

    def warmup(self, series: str) -> int:
        """The series' warm-up, in samples."""
        return max(self.warmup_of.get(series, self.settings.warmup), self.settings.length)

    def score(self, values: np.ndarray, series_names: Sequence[str], series_index: np.ndarray,
              end_sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score a batch's windows, in their order (the columns of
        :class:`stream_ae.pipeline.windows.Windows`).

        Args:
            values: float ``(windows, length, channels)`` raw windows, grouped by series, in
                time order within each.
            series_names: the distinct series keys of the batch.
            series_index: int ``(windows,)`` indexing ``series_names``.
            end_sample: int ``(windows,)`` the index of each window's last sample in its series.

        Returns:
            ``(scores, scored)``: float64 ``(windows,)`` anomaly scores in ``[0, 1]``, and
            bool ``(windows,)``, False for a window of a series still warming (score 0).
        """
        count = len(values)
        scores = np.zeros(count)
        scored = np.zeros(count, bool)
        flat = np.asarray(values).reshape(count, -1)
        bounds = np.flatnonzero(np.diff(series_index)) + 1
        for rows in np.split(np.arange(count), bounds) if count else []:
            series = series_names[int(series_index[rows[0]])]
            state = self.states.setdefault(series, SeriesState())
            ends = end_sample[rows]
            warming = ends < self.warmup(series)
            state.warm.extend(flat[rows[warming]])
            live = rows[~warming]
            if not len(live):
                continue
            if state.bank is None:
                self._fit(state)
            scores[live] = self._scored(state, (flat[live] - state.mean) / state.std, ends[~warming])
            scored[live] = True
        return scores, scored

    def _fit(self, state: SeriesState) -> None:
        """Normalisation and bank from the warm-up windows; the history starts with each
        warm-up window's distance to the other warm-up windows that do not overlap it."""
        warm = np.asarray(state.warm, np.float64)
        mean, std = float(warm.mean()), float(warm.std())
        state.mean, state.std = mean, max(std, STD_FLOOR * max(1.0, abs(mean)))
        state.bank = ((warm - mean) / state.std).astype(np.float32)
        state.warm = []
        positions = np.arange(len(state.bank))
        overlapping = np.abs(positions[:, None] - positions[None, :]) < self.settings.length
        near = self._nearest(state.bank, state.bank, overlapping)
        for value in np.maximum(near - self.settings.floor, 0.0).tolist():
            self._remember(state, value)

    def _remember(self, state: SeriesState, value: float) -> None:
        """Add a raw score to the series' history, dropping the oldest beyond ``history``."""
        bisect.insort(state.sorted_history, value)
        state.history.append(value)
        if len(state.history) > self.settings.history:
            del state.sorted_history[bisect.bisect_left(state.sorted_history, state.history.popleft())]

    def _scored(self, state: SeriesState, z: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """``(g,)`` scores in ``[0, 1]`` of one series' normalised windows ``z`` ``(g, width)``."""
        raw = self._distances(state, z.astype(np.float32))
        out = np.zeros(len(raw))
        settings = self.settings
        for n, (value, end) in enumerate(zip(raw.tolist(), ends.tolist())):
            history = state.sorted_history
            if history:
                below, upto = bisect.bisect_left(history, value), bisect.bisect_right(history, value)
                rank = (below + 0.5 * (upto - below)) / len(history)
                if end > state.quiet_until:
                    out[n] = rank
                    if rank >= settings.flag_level:
                        state.quiet_until = end + settings.quiet
            self._remember(state, value)
        return out

    def _distances(self, state: SeriesState, z: np.ndarray) -> np.ndarray:
        """``(g,)`` raw scores: each window's distance to its nearest warm-up windows, less
        the floor (0 at most)."""
        assert state.bank is not None
        near = self._nearest(z, state.bank, np.zeros((len(z), len(state.bank)), bool))
        return np.maximum(near - self.settings.floor, 0.0)

    def _nearest(self, z: np.ndarray, bank: np.ndarray, excluded: np.ndarray) -> np.ndarray:
        """``(g,)`` mean Euclidean distance of each row of ``z`` ``(g, width)`` to its
        ``neighbours`` nearest rows of ``bank`` ``(b, width)``, leaving out ``excluded``
        ``(g, b)`` (0 for a row with none left)."""
        squared = ((z * z).sum(1)[:, None] + (bank * bank).sum(1)[None, :] - 2.0 * z @ bank.T).clip(min=0)
        squared[excluded] = np.inf
        k = min(self.settings.neighbours, bank.shape[0])
        nearest = np.partition(squared, k - 1, axis=1)[:, :k]
        finite = np.isfinite(nearest)
        return np.sqrt(np.where(finite, nearest, 0.0)).sum(1) / np.maximum(finite.sum(1), 1)
