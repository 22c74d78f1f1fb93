"""The Numenta Anomaly Benchmark's score, implemented as NAB defines it.

Source: Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms - the Numenta
Anomaly Benchmark" (IEEE ICMLA 2015), and its reference code, numenta/NAB ``nab/sweeper.py``
(``scaledSigmoid``, ``Sweeper.calcSweepScore``, ``Sweeper.calcScoreByThreshold``),
``nab/runner.py`` (``normalize``) and ``config/profiles.json``. Written here from those
definitions:

* **Labels.** Each series has labelled anomaly windows, ``[start, end]`` timestamps of its
  own rows (``combined_windows.json``).
* **Probationary period.** The first ``min(floor(0.15 n), 0.15 * 5000)`` of a series' ``n``
  rows are never scored: a detector may only learn there.
* **Scaled sigmoid.** ``S(y) = 2 / (1 + exp(5 y)) - 1``, and ``-1`` for ``y > 3``.
* **True positives.** Within a window of width ``w`` rows ending at row ``r``, row ``i`` is at
  ``y = -(r - i + 1) / w`` (``-1`` at the window's first row, near 0 at its last). Only the
  earliest detection in a window counts, worth ``tpWeight * S(y) / S(-1)``; a window without
  one costs ``-fnWeight``.
* **False positives.** Every detection outside the windows counts, worth
  ``fpWeight * S(y)`` with ``y = (i - r) / (w - 1)`` for the last window before it (``r`` its
  end row, ``w`` its width), and ``-fpWeight`` where no window came before.
* **Threshold.** A row is a detection where its anomaly score is at least the threshold;
  one threshold per detector and profile holds over the whole corpus.
* **Normalised score.** ``100 (S - S_null) / (S_perfect - S_null)`` over the corpus, where
  ``S_null = -fnWeight * windows`` (a detector that detects nothing) and
  ``S_perfect = tpWeight * windows`` (every window detected at its first row).

Example:
    >>> import numpy as np
    >>> times = np.arange(np.datetime64("2024-01-01T00:00"), np.datetime64("2024-01-01T01:40"),
    ...                   np.timedelta64(1, "m"))                       # 100 rows, probation 15
    >>> window = (times[50], times[59])
    >>> early = np.zeros(100); early[50] = 1.0                       # at the window's first row
    >>> late = np.zeros(100); late[59] = 1.0                         # at its last row
    >>> standard = PROFILES["standard"]
    >>> round(ScoredSeries(times, [window], early).nab_score(0.5, standard), 4)
    1.0
    >>> round(ScoredSeries(times, [window], late).nab_score(0.5, standard), 4)
    0.2482
    >>> round(ScoredSeries(times, [window], np.zeros(100)).nab_score(0.5, standard), 4)  # missed
    -1.0
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROBATION_PERCENT = 0.15
"""Share of a series' rows in its probationary period (NAB's ``probationPercent``)."""

PROBATION_CAP_ROWS = 750
"""Most rows in a probationary period: ``0.15 * 5000``, as NAB caps it."""


@dataclass(frozen=True)
class Profile:
    """One of NAB's application profiles: the weights of a true positive, a missed window (false
    negative) and a false positive."""

    name: str
    tp_weight: float
    fn_weight: float
    fp_weight: float


PROFILES = {
    "standard": Profile("standard", 1.0, 1.0, 0.11),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", 1.0, 1.0, 0.22),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", 1.0, 2.0, 0.11),
}
"""NAB's three profiles, as ``config/profiles.json`` sets their cost matrices."""


def scaled_sigmoid(y: np.ndarray | float) -> np.ndarray:
    """NAB's ``scaledSigmoid``: ``2 / (1 + exp(5 y)) - 1``, and ``-1`` where ``y > 3``.

    Args:
        y: relative positions (any shape): in a window, from -1 at its first row to near 0 at
            its last; past a window, rows after its end over its width less one.

    Returns:
        Values in ``[-1, 1)`` of the same shape.
    """
    y = np.asarray(y, np.float64)
    return np.where(y > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * np.minimum(y, 3.0))) - 1.0)


def probationary_rows(rows: int) -> int:
    """Rows a series of ``rows`` rows keeps out of scoring: ``min(floor(0.15 rows), 750)``."""
    return int(min(math.floor(PROBATION_PERCENT * rows), PROBATION_CAP_ROWS))


class ScoredSeries:
    """One series' detector output, ready to be scored at any threshold and profile.

    Args:
        timestamps: ``(n,)`` the series' row timestamps, in order (``datetime64`` or strings).
        windows: the labelled anomaly windows, ``(start, end)`` timestamps that are rows of
            the series, in time order.
        scores: ``(n,)`` the detector's anomaly score of each row (NAB's lie in ``[0, 1]``).

    Raises:
        ValueError: the lengths differ, a score is not finite, or a window's start or end is
            not a row of the series, or windows overlap or are out of order.
    """

    def __init__(self, timestamps: Sequence | np.ndarray, windows: Sequence[tuple], scores: np.ndarray) -> None:
        times = np.asarray(timestamps, dtype="datetime64[us]")
        scores = np.asarray(scores, np.float64)
        if times.shape != scores.shape or times.ndim != 1:
            raise ValueError(f"{times.shape[0]} timestamps but {scores.shape} scores")
        if not np.isfinite(scores).all():
            raise ValueError("anomaly scores must be finite")
        n = len(times)
        bounds = [(_row_of(times, start), _row_of(times, end)) for start, end in windows]
        lefts = np.array([left for left, _ in bounds], np.int64)
        rights = np.array([right for _, right in bounds], np.int64)
        if (rights < lefts).any() or (lefts[1:] <= rights[:-1]).any():
            raise ValueError("windows must be non-empty, in time order and apart")
        rows = np.arange(n)
        window_of = np.full(n, -1, np.int64)          # the window a row is in, -1 outside
        for index, (left, right) in enumerate(bounds):
            window_of[left:right + 1] = index
        widths = (rights - lefts + 1).astype(np.float64)
        inside = window_of >= 0
        # in a window: -(r - i + 1) / w; outside: (i - r) / (w - 1) for the last window before the
        # row (r its end row, w its width), or as far away as can be (-1) where none came before
        position = np.full(n, np.inf)
        position[inside] = -(rights[window_of[inside]] - rows[inside] + 1) / widths[window_of[inside]]
        before = np.searchsorted(rights, rows, side="left") - 1
        after = ~inside & (before >= 0)
        with np.errstate(divide="ignore"):
            position[after] = (rows[after] - rights[before[after]]) / (widths[before[after]] - 1.0)
        self.windows = len(bounds)
        self.scores = scores
        self.window_of = window_of
        self.sigmoid = scaled_sigmoid(position)
        self.scorable = rows >= probationary_rows(n)

    def weighted(self, profile: Profile) -> np.ndarray:
        """``(n,)`` what a detection at each row is worth under ``profile`` (NAB's sweep score)."""
        return np.where(self.window_of >= 0, profile.tp_weight * self.sigmoid / float(scaled_sigmoid(-1.0)),
                        profile.fp_weight * self.sigmoid)

    def nab_score(self, threshold: float, profile: Profile) -> float:
        """The series' NAB score (not normalised) when rows scoring ``>= threshold`` are detections."""
        return float(self.nab_scores_at(np.array([threshold]), profile)[0])

    def nab_scores_at(self, thresholds: np.ndarray, profile: Profile) -> np.ndarray:
        """``(t,)`` the series' score at each of ``thresholds`` (any order): NAB's threshold sweep.

        The scorable rows are taken by descending anomaly score; a false positive adds its worth,
        a row in a window raises the window's worth to its best detection so far (the earliest
        row: ``S`` falls along a window), from ``-fnWeight`` while it has none.
        """
        weighted = self.weighted(profile)[self.scorable]
        scores = self.scores[self.scorable]
        window = self.window_of[self.scorable]
        order = np.argsort(-scores, kind="stable")
        scores, window, weighted = scores[order], window[order], weighted[order]
        delta = np.where(window < 0, weighted, 0.0)
        windows_scored = np.unique(window[window >= 0])
        for index in windows_scored:
            rows = np.flatnonzero(window == index)
            best = np.maximum.accumulate(weighted[rows])
            delta[rows] = best - np.concatenate(([-profile.fn_weight], best[:-1]))
        base = -profile.fn_weight * len(windows_scored)
        running = base + np.cumsum(delta)
        detected = np.searchsorted(-scores, -np.asarray(thresholds, np.float64), side="right")
        return np.where(detected == 0, base, running[np.maximum(detected - 1, 0)])


def _row_of(times: np.ndarray, stamp: object) -> int:
    """The row whose timestamp is ``stamp``; ValueError where none is."""
    value = np.asarray(stamp).astype("datetime64[us]")
    row = int(np.searchsorted(times, value))
    if row >= len(times) or times[row] != value:
        raise ValueError(f"window bound {stamp} is not a row of the series")
    return row


def corpus_score(series: Sequence[ScoredSeries], threshold: float, profile: Profile) -> float:
    """The corpus' raw NAB score at one threshold: the sum of the series' scores."""
    return float(sum(one.nab_score(threshold, profile) for one in series))


def best_threshold(series: Sequence[ScoredSeries], profile: Profile) -> tuple[float, float]:
    """The threshold that maximises the corpus' raw score, searched over every distinct anomaly
    score of a scorable row (and one above them all: no detection), and that score.

    NAB's own optimiser (``nab/optimizer.py``) climbs to a local optimum; this search is
    exhaustive, so its score is never lower.
    """
    candidates = np.unique(np.concatenate([one.scores[one.scorable] for one in series] + [np.array([np.inf])]))
    totals = np.zeros(len(candidates))
    for one in series:
        totals += one.nab_scores_at(candidates, profile)
    best = int(np.argmax(totals))
    return float(candidates[best]), float(totals[best])


def normalised_score(raw: float, windows: int, profile: Profile) -> float:
    """``100 (raw - S_null) / (S_perfect - S_null)``: 0 detects nothing, 100 every window at
    its first row (``nab/runner.py``, ``normalize``).

    Args:
        raw: the corpus' raw score under ``profile``.
        windows: labelled windows in the corpus.
        profile: the profile ``raw`` was scored under.
    """
    null, perfect = -profile.fn_weight * windows, profile.tp_weight * windows
    return 100.0 * (raw - null) / (perfect - null)


def load_windows(path: Path) -> dict[str, list[tuple[str, str]]]:
    """NAB's ``combined_windows.json``: ``{"<category>/<series>.csv": [(start, end), ...]}``.

    Raises:
        ValueError: the file is not such a mapping.
    """
    windows = json.loads(Path(path).read_text())
    if not isinstance(windows, dict) or not all(isinstance(v, list) for v in windows.values()):
        raise ValueError(f"{path}: not a mapping of series to lists of [start, end] windows")
    return {name: [(str(start), str(end)) for start, end in spans] for name, spans in windows.items()}
