"""A detector per series key, fitted on the series' own warm-up: windows in, anomaly scores out.

Series differ in scale and in their normal, so each series key gets its own state, fitted
on its warm-up (its first ``warmup`` samples) and then applied causally: a window's score
uses nothing later than its own last sample, and nothing is learned from labels.

1. **Normalisation.** ``z = (x - mean) / std`` with the mean and standard deviation of the
   warm-up's values (a floor keeps a flat warm-up from dividing by zero).
2. **Season.** From the warm-up alone: ``dt`` the median step between its samples; for the
   periods of one day and one week, ``lag = round(period / dt)``, eligible when the warm-up
   holds ``lag + 12`` samples and ``season_coverage * lag``; its autocorrelation
   ``a = corr(z[:P - lag], z[lag:])`` (Pearson). The eligible period of the largest
   ``a >= season_correlation`` is the series' season (none otherwise).
3. **View 1, novelty.** The window's last ``length`` normalised samples, and for a seasonal
   series also their seasonal residuals ``season_weight * (z_t - z_{t - lag})``; its raw
   score is the Euclidean distance to the nearest warm-up vector (kNN distance,
   Ramaswamy, Rastogi & Shim, SIGMOD 2000) less ``floor``: ``max(d - floor, 0)``.
4. **View 2, drift.** The mean and standard deviation of the last ``drift_samples``
   normalised samples; raw score: distance to the nearest warm-up pair less ``drift_floor``.
5. **Causal rank.** Each view's raw score maps to ``[0, 1]`` by its rank among that view's
   last ``history`` raw scores, ``(below + ties / 2) / count``: one minus a conformal
   p-value (Vovk, Gammerman & Shafer, *Algorithmic Learning in a Random World*, 2005; as
   KNN-CAD, Burnaev & Ishimtsev 2016, ranks kNN distances). The histories start with the
   warm-up's own leave-out scores (each warm-up vector against those not overlapping it).
6. **Both views** by Bonferroni's bound on the smaller p-value:
   ``score = max(0, 1 - 2 (1 - max(rank1, rank2)))``.
7. **Quiet period.** A window whose score reaches ``flag_level`` is a detection; the
   series' next ``quiet_share * warmup`` samples score 0, so that one event is flagged once
   (NAB counts only the earliest detection in a window and charges every later one outside).

The defaults were chosen over the whole Numenta Anomaly Benchmark corpus at once, never per
series (``docs/samples.md``). Scores are the same however the windows are split into
batches: each window sees exactly the context, histories and quiet period that its series'
earlier windows left. Windows must cover every sample (``stride <= length``): the detector
keeps each series' last samples from the windows' new samples.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

STD_FLOOR = 1e-6
"""Smallest standard deviation a series is divided by, relative to ``max(1, |mean|)``."""

PERIODS_MS = (86_400_000.0, 7 * 86_400_000.0)
"""The seasons looked for: one day and one week, in milliseconds."""

RAW_DECIMALS = 6
"""Raw scores (in warm-up standard deviations) are ranked rounded to this many decimals."""

SEASON_MIN_EXTRA = 12
"""Samples a warm-up holds beyond one season's lag for the season to be eligible."""


@dataclass(frozen=True)
class SeriesSettings:
    """What every series' detector is built with (the same for all series).

    Attributes:
        length: samples per window (view 1 compares the window's last ``length`` samples).
        warmup: samples a series' detector learns from before it scores (a series may be
            given its own, e.g. NAB's probationary period).
        floor: view 1's distance (in warm-up standard deviations) that counts as seen.
        drift_samples: samples view 2 takes the mean and standard deviation of.
        drift_floor: view 2's distance that counts as seen.
        season_correlation: the autocorrelation at a day's or a week's lag from which a
            series is seasonal.
        season_coverage: warm-up samples needed per sample of the season's lag.
        season_weight: the weight of the seasonal residuals in view 1.
        history: past raw scores each view's rank is taken among.
        flag_level: score from which a window is a detection.
        quiet_share: samples scored 0 after a detection, as a share of the warm-up.
    """

    length: int = 2
    warmup: int = 750
    floor: float = 0.4
    drift_samples: int = 50
    drift_floor: float = 0.2
    season_correlation: float = 0.7
    season_coverage: float = 1.5
    season_weight: float = 0.25
    history: int = 10_000
    flag_level: float = 0.9965
    quiet_share: float = 0.25

    def __post_init__(self) -> None:
        for name in ("length", "drift_samples", "history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < self.length + 1:
            raise ValueError(f"warmup ({self.warmup}) must hold more than one window of length {self.length}")
        for name in ("floor", "drift_floor", "season_weight", "quiet_share"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0.0 < self.flag_level <= 1.0:
            raise ValueError(f"flag_level must be in (0, 1], got {self.flag_level}")
        if self.season_coverage < 1.0:
            raise ValueError(f"season_coverage must be at least 1, got {self.season_coverage}")


@dataclass
class _Ranks:
    """One view's last raw scores, in arrival order and sorted."""

    arrival: deque[float] = field(default_factory=deque)
    ordered: list[float] = field(default_factory=list)

    def rank_then_add(self, value: float, bound: int, undo: list[Callable[[], object]] | None = None) -> float:
        """``(below + ties / 2) / count`` of ``value`` among the scores held (0 when none),
        then ``value`` joins them (the oldest leaves beyond ``bound``); ``undo`` gets how to
        take that back."""
        ordered = self.ordered
        rank = 0.0
        if ordered:
            below, upto = bisect.bisect_left(ordered, value), bisect.bisect_right(ordered, value)
            rank = (below + 0.5 * (upto - below)) / len(ordered)
        bisect.insort(ordered, value)
        self.arrival.append(value)
        evicted = None
        if len(self.arrival) > bound:
            evicted = self.arrival.popleft()
            del ordered[bisect.bisect_left(ordered, evicted)]
        if undo is not None:
            undo.append(lambda: self._take_back(value, evicted))
        return rank

    def _take_back(self, value: float, evicted: float | None) -> None:
        if evicted is not None:
            self.arrival.appendleft(evicted)
            bisect.insort(self.ordered, evicted)
        self.arrival.pop()
        del self.ordered[bisect.bisect_left(self.ordered, value)]


@dataclass
class SeriesState:
    """One series' state; everything that scoring on needs.

    Attributes:
        warm_values, warm_ms: the warm-up's samples (``(k, channels)`` per batch) and their
            times (``(k,)``), collected until the fit.
        last_end: the last sample index (0-based) the detector has seen.
        mean, std: the normalisation (None before the fit).
        lag: the season's lag in samples (0: none).
        novelty_bank, drift_bank: float ``(vectors, width)`` the warm-up's view-1 and view-2 vectors.
        context: float ``(k, channels)`` the series' last normalised samples (enough for the
            season's lag and the drift view).
        ranks: the two views' histories.
        quiet: samples scored 0 after a detection (``quiet_share`` of the series' warm-up).
        quiet_until: the last sample index whose score is forced to 0.
    """

    warm_values: list[np.ndarray] = field(default_factory=list)
    warm_ms: list[np.ndarray] = field(default_factory=list)
    last_end: int = -1
    mean: float | None = None
    std: float = 1.0
    lag: int = 0
    novelty_bank: np.ndarray | None = None
    drift_bank: np.ndarray | None = None
    context: np.ndarray | None = None
    ranks: tuple[_Ranks, _Ranks] = field(default_factory=lambda: (_Ranks(), _Ranks()))
    quiet: int = 0
    quiet_until: int = -1


NEAREST_BLOCK = 256
"""Rows whose distances are taken at once (bounds the ``(rows, bank, width)`` differences)."""


_REPLACED_FIELDS = ("warm_values", "warm_ms", "last_end", "mean", "std", "lag", "novelty_bank", "drift_bank",
                   "context", "quiet", "quiet_until")


def _put_back(state: SeriesState, fields: dict[str, object], lengths: tuple[int, int]) -> None:
    """Undo a batch's changes to a series' fields (its warm-up lists only grew, or were replaced)."""
    for name, value in fields.items():
        setattr(state, name, value)
    del state.warm_values[lengths[0]:]
    del state.warm_ms[lengths[1]:]


def _nearest(vectors: np.ndarray, bank: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """``(n,)`` Euclidean distance of each row of ``vectors`` ``(n, w)`` to its nearest row of
    ``bank`` ``(b, w)``, among ``allowed`` ``(n, b)`` (all by default; 0 where none is).

    ``|v|^2 + |b|^2 - 2 v.b`` with every sum taken by ``numpy.einsum``'s own loop over one
    row at a time, never a BLAS matrix product, whose rounding depends on how many rows a
    batch holds: a row's distance is the same bits in any batch."""
    out = np.zeros(len(vectors))
    bank_norms = np.einsum("ij,ij->i", bank, bank)
    for start in range(0, len(vectors), NEAREST_BLOCK) if bank.shape[0] else ():
        block = slice(start, start + NEAREST_BLOCK)
        rows = vectors[block]
        squared = np.maximum(np.einsum("ij,ij->i", rows, rows)[:, None] + bank_norms[None, :]
                             - 2.0 * np.einsum("ij,kj->ik", rows, bank), 0.0)
        if allowed is not None:
            squared = np.where(allowed[block], squared, np.inf)
        least = squared.min(1)
        out[block] = np.where(np.isfinite(least), np.sqrt(least), 0.0)
    return out


def _season(z: np.ndarray, times_ms: np.ndarray, settings: SeriesSettings) -> int:
    """The lag (samples) of the series' season, from its warm-up ``z`` ``(P,)`` (0: none)."""
    steps = np.diff(times_ms)
    step = float(np.median(steps)) if len(steps) else 0.0
    count = len(z)
    best, chosen = -np.inf, 0
    for period in PERIODS_MS if step > 0 else ():
        lag = int(round(period / step))
        if lag < 1 or count < lag + SEASON_MIN_EXTRA or count < settings.season_coverage * lag:
            continue
        before, after = z[:count - lag], z[lag:]
        if before.std() > 0 and after.std() > 0:
            correlation = float(np.corrcoef(before, after)[0, 1])
            if correlation >= settings.season_correlation and correlation > best:
                best, chosen = correlation, lag
    return chosen


class SeriesDetector:
    """Scores windows of many series, each against its own fitted state (the module docstring).

    Args:
        settings: the detector's settings.
        warmup_of: per series key, a warm-up in samples that replaces ``settings.warmup``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> values = np.sin(np.arange(400) / 3)[:, None] + rng.normal(0, 0.01, (400, 1))
        >>> values[350] += 5.0                                    # a spike
        >>> ends = np.arange(1, 400)                              # windows of 2, stride 1: one series
        >>> windows = np.stack([values[e - 1:e + 1] for e in ends])
        >>> detector = SeriesDetector(SeriesSettings(warmup=200))
        >>> scores, scored = detector.score(windows, ["s"], np.zeros(len(ends), np.int32), ends, ends * 1000.0)
        >>> int(scored.sum()), int(ends[np.argmax(scores)]), bool(scores.max() >= 0.9965)
        (200, 350, True)
    """

    def __init__(self, settings: SeriesSettings, warmup_of: Mapping[str, int] | None = None) -> None:
        self.settings = settings
        self.warmup_of = dict(warmup_of or {})
        self.states: dict[str, SeriesState] = {}
        self.undo: list[Callable[[], object]] | None = None
        """While set (a list), every change to a series' state logs how to take it back:
        called in reverse order, the logged callables leave every series as it was."""

    def forget(self, series: str) -> None:
        """Drop a series' state (it starts warming again if it returns)."""
        state = self.states.pop(series, None)
        if state is not None and self.undo is not None:
            self.undo.append(lambda: self.states.__setitem__(series, state))

    def _log(self, series: str) -> SeriesState:
        """The series' state (a new one for a series not held), its present fields logged to
        :attr:`undo` when set (arrays and lists are replaced, or only appended to, never
        changed in place; the ranks log their own changes)."""
        state = self.states.get(series)
        undo = self.undo
        if state is None:
            state = self.states[series] = SeriesState()
            if undo is not None:
                undo.append(lambda: self.states.pop(series, None))
        elif undo is not None:
            fields = {name: getattr(state, name) for name in _REPLACED_FIELDS}
            lengths = len(state.warm_values), len(state.warm_ms)
            undo.append(lambda: _put_back(state, fields, lengths))
        return state

    def warmup(self, series: str) -> int:
        """The series' warm-up, in samples."""
        return max(self.warmup_of.get(series, self.settings.warmup), self.settings.length + 1)

    def deviations(self, series: str, values: np.ndarray) -> np.ndarray:
        """Where windows differ from their nearest warm-up window: what an alert blames.

        Args:
            series: a fitted series.
            values: float ``(k, length, channels)`` raw windows.

        Returns:
            float64 ``(k, length, channels)``: ``z - nearest``, in the series' standard deviations.

        Raises:
            KeyError: the series has no fitted state.
        """
        state = self.states[series]
        if state.novelty_bank is None or state.mean is None:
            raise KeyError(f"series {series!r} is still warming up")
        values = np.asarray(values, np.float64)
        z = ((values - state.mean) / state.std).reshape(len(values), -1)
        bank = state.novelty_bank[:, :z.shape[1]]
        squared = (z * z).sum(1)[:, None] + (bank * bank).sum(1)[None, :] - 2.0 * z @ bank.T
        return (z - bank[np.argmin(squared, axis=1)]).reshape(values.shape)

    def score(self, values: np.ndarray, series_names: Sequence[str], series_index: np.ndarray,
              end_sample: np.ndarray, end_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score a batch's windows, in their order (the columns of
        :class:`stream_ae.pipeline.windows.Windows`).

        Args:
            values: float ``(windows, length, channels)`` raw windows, grouped by series, in
                time order within each; consecutive windows of a series overlap or touch
                (``stride <= length``).
            series_names: the distinct series keys of the batch.
            series_index: int ``(windows,)`` indexing ``series_names``.
            end_sample: int ``(windows,)`` the index of each window's last sample in its series.
            end_ms: float ``(windows,)`` the time of each window's last sample, ms since the epoch.

        Returns:
            ``(scores, scored)``: float64 ``(windows,)`` anomaly scores in ``[0, 1]``, and
            bool ``(windows,)``, False for a window of a series still warming (score 0).

        Raises:
            ValueError: windows of a series that skip samples (a stride above the length).
        """
        count = len(values)
        scores = np.zeros(count)
        scored = np.zeros(count, bool)
        windows = np.asarray(values, np.float64)
        bounds = np.flatnonzero(np.diff(series_index)) + 1
        for rows in np.split(np.arange(count), bounds) if count else []:
            series = series_names[int(series_index[rows[0]])]
            state = self._log(series)
            ends = np.asarray(end_sample[rows], np.int64)
            new = np.diff(np.concatenate(([state.last_end], ends)))  # samples each window adds
            if (new > windows.shape[1]).any() or (new < 1).any():
                raise ValueError(f"series {series!r}: windows must follow one another and cover every sample")
            # the samples each window adds: its last ``new`` ones, gathered at once
            owner = np.repeat(np.arange(len(rows)), new)
            within = np.arange(len(owner)) - np.repeat(np.cumsum(new) - new, new)
            samples = windows[rows[owner], windows.shape[1] - new[owner] + within]
            at = ends[owner] - new[owner] + 1 + within
            state.last_end = int(ends[-1])
            warmup = self.warmup(series)
            warming = ends < warmup
            if state.novelty_bank is None:
                early = at < warmup
                state.warm_values.append(samples[early])
                state.warm_ms.append(np.interp(at[early], ends, np.asarray(end_ms[rows], np.float64)))
                if warming.all():
                    continue
                self._fit(state, warmup)
                samples, at = samples[~early], at[~early]
            live = rows[~warming]
            scores[live] = self._scored(state, samples, at, ends[~warming])
            scored[live] = True
        return scores, scored

    def _views(self, state: SeriesState, z: np.ndarray, ends: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
        """View-1 and view-2 vectors at the sample indices ``ends``, from ``z`` ``(k, channels)``
        the series' normalised samples from index ``first`` on."""
        settings = self.settings
        length, drift = settings.length, settings.drift_samples
        position = ends - first
        steps = np.arange(-length + 1, 1)
        window = z[np.maximum(position[:, None] + steps[None, :], 0)]          # (n, length, channels)
        parts = [window.reshape(len(ends), -1)]
        if state.lag:
            earlier = position[:, None] + steps[None, :] - state.lag
            residual = np.where((ends[:, None] + steps[None, :] - state.lag >= 0)[..., None],
                                window - z[np.maximum(earlier, 0)], 0.0)
            parts.append(settings.season_weight * residual.reshape(len(ends), -1))
        # each window's own sum over its last drift samples (never a running sum), so that a
        # score does not depend on where a batch began, down to the last bit
        back = np.arange(-drift + 1, 1)
        inside = (ends[:, None] + back[None, :] >= 0)[..., None]               # the series' first sample bounds it
        recent = np.where(inside, z[np.maximum(position[:, None] + back[None, :], 0)], 0.0)
        width = inside.sum(1)
        mean = recent.sum(1) / width
        spread = np.sqrt(np.maximum((np.where(inside, recent - mean[:, None], 0.0) ** 2).sum(1) / width, 0.0))
        return np.concatenate(parts, axis=1), np.concatenate((mean, spread), axis=1)

    def _fit(self, state: SeriesState, warmup: int) -> None:
        """Normalisation, season and both views' banks from the warm-up's samples; the ranks'
        histories and the quiet period start from the warm-up's leave-out scores."""
        settings = self.settings
        warm = np.concatenate(state.warm_values)
        mean, std = float(warm.mean()), float(warm.std())
        state.mean, state.std = mean, max(std, STD_FLOOR * max(1.0, abs(mean)))
        z = (warm - mean) / state.std
        state.lag = _season(z.mean(axis=1), np.concatenate(state.warm_ms), settings)
        rows = np.arange(len(z))
        novelty, drift = self._views(state, z, rows, 0)
        first = state.lag + 1 if state.lag else 1
        drift_first = min(settings.drift_samples - 1, len(z) - 2)
        state.novelty_bank, state.drift_bank = novelty[first:], drift[drift_first:]
        raw1 = _nearest(novelty, state.novelty_bank,
                        np.abs(rows[:, None] - rows[None, first:]) >= settings.length)
        raw2 = _nearest(drift, state.drift_bank,
                        np.abs(rows[:, None] - rows[None, drift_first:]) >= settings.drift_samples)
        state.quiet = int(round(settings.quiet_share * warmup))
        self._judge(state, np.maximum(raw1 - settings.floor, 0.0), np.maximum(raw2 - settings.drift_floor, 0.0), rows)
        keep = max(state.lag + settings.length, settings.drift_samples)
        state.context = z[len(z) - min(keep, len(z)):]
        state.warm_values, state.warm_ms = [], []

    def _scored(self, state: SeriesState, samples: np.ndarray, at: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Scores of one series' live windows ending at ``ends``, given the samples they add."""
        assert state.context is not None and state.novelty_bank is not None and state.drift_bank is not None
        settings = self.settings
        z = np.concatenate((state.context, (samples - state.mean) / state.std))
        first = int(at[-1]) + 1 - len(z)  # the series index of z[0]
        novelty, drift = self._views(state, z, ends, first)
        raw1 = np.maximum(_nearest(novelty, state.novelty_bank) - settings.floor, 0.0)
        raw2 = np.maximum(_nearest(drift, state.drift_bank) - settings.drift_floor, 0.0)
        keep = max(state.lag + settings.length, settings.drift_samples)
        state.context = z[len(z) - min(keep, len(z)):]
        return self._judge(state, raw1, raw2, ends)

    def _judge(self, state: SeriesState, raw1: np.ndarray, raw2: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Ranks, the Bonferroni bound and the quiet period, window by window (in order)."""
        settings, quiet = self.settings, state.quiet
        out = np.zeros(len(ends))
        novelty, drift = state.ranks
        # rounded, so that distances equal but for rounding (a flat stretch's) are ties
        raw1, raw2 = np.round(raw1, RAW_DECIMALS), np.round(raw2, RAW_DECIMALS)
        for n, (one, two, end) in enumerate(zip(raw1.tolist(), raw2.tolist(), ends.tolist())):
            rank = max(novelty.rank_then_add(one, settings.history, self.undo),
                       drift.rank_then_add(two, settings.history, self.undo))
            score = max(0.0, 1.0 - 2.0 * (1.0 - rank))
            if end > state.quiet_until:
                out[n] = score
                if score >= settings.flag_level:
                    state.quiet_until = end + quiet
        return out
