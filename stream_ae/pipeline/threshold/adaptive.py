"""Adaptive threshold: mean + k·std of the anomaly score, one state per partition.

The score is the detector's (:mod:`stream_ae.model.detector`): the memory-bank distance
by default, the model's reconstruction error without a bank.

Scale: by default the statistics are those of the logarithm of the score (``scale: log``),
so the threshold is ``exp(mean + k·std)`` of the log-scores. Scores of normal events are
heavy-tailed (roughly log-normal); on the raw scores a few large ones inflate the std: on
ECG5000 the plain mean + 3·std of the validation reconstruction errors sits above 98% of
the anomalies, while the log-scale threshold catches 95% of them at 99% precision.
``scale: linear`` uses the raw scores.

Seed: the checkpoint keeps the scores of its held-out normal (validation) rows. The seed
is the fixed point of the rule the stream follows: mean and std of the scores, recomputed
without those above mean + k·std until none is left out (upper-tail sigma clipping).

Why exponentially weighted rather than a sliding window: the state is three numbers per
partition (mean, variance, events seen), so it costs O(1) memory and time per batch, can
be saved at every commit and restored on assignment, and forgets the past smoothly with
one setting, the half-life in events. A window of N events would need N stored errors
per partition for the same effect.

The update is batched. The non-flagged scores of one partition in one batch form a block
of ``m`` events with mean ``μ_b`` and variance ``σ_b²``; the block gets the weight that
``m`` consecutive exponentially weighted updates would give it, ``w = 1 - (1 - α)^m``
with ``α = 1 - 2^(-1 / half_life)``, and the state becomes the mixture of the old
distribution (weight ``1 - w``) and the block (weight ``w``):

    mean' = (1 - w)·mean + w·μ_b
    var'  = (1 - w)·var + w·σ_b² + w·(1 - w)·(μ_b - mean)²

(the law of total variance for a two-component mixture; for ``m = 1`` this is the
exponentially weighted update of Finch, 2009, "Incremental calculation of weighted mean
and variance", eq. 143). Events flagged as anomalies are kept out of the update, so a
burst of anomalies cannot raise the threshold. All events of a batch are judged against
the threshold in force before the batch.

Keeping the flagged tail out truncates the distribution the state learns from, so on a
stationary stream the estimated std settles somewhat below the true one (about 10% lower
threshold on the synthetic test data); the threshold errs towards alerting, never towards
silence.

Calibrated k: users think in false alarms, so instead of k they may give the share of
normal events they accept to see flagged (``false_alarm_rate``). k is then the one whose
seeded threshold flags that share of the validation scores (:func:`calibrated_k`): the
threshold keeps its mean + k·std form, and k follows from the data the model never fitted.

During the first ``warmup_events`` events of a partition the threshold in force is the
one seeded from the checkpoint (the score statistics of held-out normal data); the state
is updated meanwhile and takes over afterwards.

The state of a partition is keyed state (:mod:`stream_ae.pipeline.keyed_state`) under the
partition's own key: ``{"mean", "variance", "events"}``, saved with every batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from stream_ae.kafka.records import PartitionKey
from stream_ae.pipeline.keyed_state import PARTITION
from stream_ae.pipeline.threshold.base import Threshold, Verdict

_STD_FLOOR = 1e-12
_SCORE_FLOOR = 1e-12  # log scale: scores at or below this count as this
_CLIPPING_ROUNDS = 100
DEFAULT_FALSE_ALARM_RATE = 0.05  # the daemon's default target (threshold.false_alarm_rate); docs/results.md, "Scoring"


def to_scale(scores: np.ndarray, scale: str) -> np.ndarray:
    """Scores ``(n,)`` in the threshold's working scale: ``log`` or ``linear`` (unchanged)."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.log(np.maximum(scores, _SCORE_FLOOR)) if scale == "log" else scores


@overload
def from_scale(values: np.ndarray, scale: str) -> np.ndarray: ...
@overload
def from_scale(values: float, scale: str) -> float: ...
def from_scale(values: np.ndarray | float, scale: str) -> np.ndarray | float:
    """Inverse of :func:`to_scale`: back to score units."""
    return np.exp(values) if scale == "log" else values


def seed_statistics(validation_scores: np.ndarray, k: float, scale: str) -> tuple[float, float]:
    """Mean and std, in the working scale, of the scores of held-out normal rows.

    Upper-tail sigma clipping: drop the values above ``mean + k·std`` and recompute, until
    nothing more is dropped; the same exclusion the stream applies to flagged events.

    Raises:
        ValueError: no validation scores.
    """
    values = to_scale(validation_scores, scale)
    if len(values) == 0:
        raise ValueError("the checkpoint holds no validation scores to seed the threshold")
    kept = values
    for _ in range(_CLIPPING_ROUNDS):
        mean, std = float(kept.mean()), float(kept.std())
        narrower = values[values <= mean + k * std]
        if len(narrower) == len(kept):
            break
        kept = narrower
    return mean, std


def calibrated_k(validation_scores: np.ndarray, false_alarm_rate: float, scale: str) -> float:
    """The k whose seeded threshold flags ``false_alarm_rate`` of the validation scores.

    The target is the empirical ``1 - false_alarm_rate`` quantile ``q`` of the scores in
    the working scale (numpy's linear interpolation); k solves
    ``mean_k + k·std_k = q``, where ``(mean_k, std_k)`` are the sigma-clipped statistics of
    :func:`seed_statistics` at that k. Both sides grow with k, and their difference does
    too, so bisection finds it (to 1e-6 in k, within ``[0, 100]``).

    Args:
        validation_scores: ``(rows,)`` scores of normal validation rows.
        false_alarm_rate: the share of normal events to flag, in ``(0, 0.5)``.
        scale: ``log`` or ``linear``.

    Returns:
        k, at least 0 and at most 100.

    Raises:
        ValueError: a rate outside ``(0, 0.5)``, or no validation scores.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> scores = np.exp(rng.normal(size=100_000))
        >>> k = calibrated_k(scores, 0.01, "log")
        >>> round(float((scores > seeded_threshold(scores, k, "log")).mean()), 3)
        0.01
    """
    if not 0 < false_alarm_rate < 0.5:
        raise ValueError(f"false_alarm_rate must lie in (0, 0.5), got {false_alarm_rate}")
    values = to_scale(validation_scores, scale)
    if len(values) == 0:
        raise ValueError("the checkpoint holds no validation scores to calibrate the threshold")
    target = float(np.quantile(values, 1.0 - false_alarm_rate))

    def excess(k: float) -> float:
        mean, std = seed_statistics(validation_scores, k, scale)
        return mean + k * max(std, _STD_FLOOR) - target

    low, high = 0.0, 100.0
    if excess(low) >= 0:
        return low
    if excess(high) <= 0:
        return high
    while high - low > 1e-6:
        middle = (low + high) / 2
        if excess(middle) < 0:
            low = middle
        else:
            high = middle
    return high


def starting_k(validation_scores: np.ndarray, k: float, false_alarm_rate: float | None, scale: str) -> float:
    """The k the daemon runs with: :func:`calibrated_k` when a ``false_alarm_rate`` is set,
    else ``k`` as given."""
    return k if false_alarm_rate is None else calibrated_k(validation_scores, false_alarm_rate, scale)


def seeded_threshold(validation_scores: np.ndarray, k: float, scale: str) -> float:
    """The threshold, in score units, that a fresh partition starts with."""
    mean, std = seed_statistics(validation_scores, k, scale)
    return float(from_scale(mean + k * max(std, _STD_FLOOR), scale))


@dataclass
class PartitionState:
    """Exponentially weighted score statistics of one partition."""

    mean: float
    variance: float
    events: int = 0

    def as_dict(self) -> dict[str, float | int]:
        """A JSON-ready copy."""
        return {"mean": self.mean, "variance": self.variance, "events": self.events}


class AdaptiveThreshold(Threshold):
    """Per-partition adaptive threshold; see the module docstring for the formulas.

    Args:
        seed_mean: mean of the scores in the working scale (see :func:`seed_statistics`).
        seed_std: their standard deviation.
        k: the threshold is ``mean + k·std``.
        scale: ``log`` or ``linear`` (see the module docstring).
        half_life_events: events for a sample's weight in the statistics to halve.
        warmup_events: events per partition judged against the seed.
    """

    def __init__(self, seed_mean: float, seed_std: float, k: float = 3.0, scale: str = "log",
                 half_life_events: int = 20_000, warmup_events: int = 500) -> None:
        if scale not in ("log", "linear"):
            raise ValueError(f"scale must be log or linear, not {scale!r}")
        self.k = k
        self.scale = scale
        self.warmup_events = warmup_events
        self.alpha = 1.0 - 2.0 ** (-1.0 / half_life_events)
        self.seed = PartitionState(seed_mean, seed_std ** 2)
        self.states: dict[PartitionKey, PartitionState] = {}

    def _state(self, key: PartitionKey) -> PartitionState:
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = PartitionState(self.seed.mean, self.seed.variance)
        return state

    def _statistics_in_force(self, state: PartitionState) -> tuple[float, float]:
        source = self.seed if state.events < self.warmup_events else state
        return source.mean, max(math.sqrt(source.variance), _STD_FLOOR)

    @classmethod
    def from_validation_scores(cls, validation_scores: np.ndarray, k: float = 3.0, scale: str = "log",
                               half_life_events: int = 20_000, warmup_events: int = 500,
                               false_alarm_rate: float | None = None) -> AdaptiveThreshold:
        """Seeded from a checkpoint's validation scores ``(rows,)`` with :func:`seed_statistics`,
        at the k of :func:`starting_k`: ``k`` as given, or calibrated to ``false_alarm_rate``
        when one is set. The one place a threshold is seeded: the daemon serves it,
        ``evaluate`` and ``compare`` report at its :attr:`seed_threshold`.

        Raises:
            ValueError: no validation scores, an unknown ``scale``, or a rate outside ``(0, 0.5)``.

        Example:
            >>> scores = np.exp(np.random.default_rng(0).normal(size=10_000))
            >>> threshold = AdaptiveThreshold.from_validation_scores(scores, false_alarm_rate=0.05)
            >>> round(float((scores > threshold.seed_threshold).mean()), 2)
            0.05
        """
        k = starting_k(validation_scores, k, false_alarm_rate, scale)
        return cls(*seed_statistics(validation_scores, k, scale), k=k, scale=scale,
                   half_life_events=half_life_events, warmup_events=warmup_events)

    def _threshold_of(self, state: PartitionState) -> float:
        mean, std = self._statistics_in_force(state)
        return float(from_scale(mean + self.k * std, self.scale))

    @property
    def seed_threshold(self) -> float:
        """The threshold a fresh partition starts with, in score units."""
        return self._threshold_of(self.seed)

    def threshold(self, key: PartitionKey) -> float:
        """The threshold in force for a partition, in score units."""
        return self._threshold_of(self._state(key))

    def apply(self, partitions: list[PartitionKey], partition_index: np.ndarray,
              scores: np.ndarray) -> Verdict:
        """Judge a batch, then update each partition's state with its non-flagged scores.

        Args:
            partitions: the batch's distinct partitions.
            partition_index: int ``(events,)`` indexing ``partitions``.
            scores: float ``(events,)`` anomaly scores.

        Returns:
            The verdict; thresholds in score units, z-scores in the working scale.

        Example:
            >>> import numpy as np
            >>> threshold = AdaptiveThreshold(seed_mean=1.0, seed_std=0.1, k=3.0, scale="linear")
            >>> verdict = threshold.apply([("events", 0)], np.zeros(3, np.int32), np.array([1.0, 1.1, 5.0]))
            >>> verdict.flags.tolist(), round(float(verdict.thresholds[0]), 2)
            ([False, False, True], 1.3)
        """
        scores = to_scale(scores, self.scale)
        means = np.empty(len(partitions))
        stds = np.empty(len(partitions))
        for slot, key in enumerate(partitions):
            means[slot], stds[slot] = self._statistics_in_force(self._state(key))
        event_mean, event_std = means[partition_index], stds[partition_index]
        thresholds = event_mean + self.k * event_std
        flags = scores > thresholds
        for slot, key in enumerate(partitions):
            in_partition = partition_index == slot
            self._update(self._state(key), scores[in_partition & ~flags], int(in_partition.sum()))
        return Verdict(flags, from_scale(thresholds, self.scale), (scores - event_mean) / event_std)

    def _update(self, state: PartitionState, normal_scores: np.ndarray, events: int) -> None:
        state.events += events
        if len(normal_scores) == 0:
            return
        weight = 1.0 - (1.0 - self.alpha) ** len(normal_scores)
        block_mean = float(normal_scores.mean())
        block_variance = float(normal_scores.var())
        shift = block_mean - state.mean
        state.mean += weight * shift
        state.variance = ((1.0 - weight) * state.variance + weight * block_variance
                          + weight * (1.0 - weight) * shift ** 2)

    def export(self, partition: PartitionKey) -> dict[str, dict[str, Any]]:
        """A partition's state under its own key (:data:`~stream_ae.pipeline.keyed_state.PARTITION`),
        as a JSON-ready dict (``mean``, ``variance``, ``events``)."""
        return {PARTITION: self._state(partition).as_dict()}

    def restore(self, partition: PartitionKey, key: str, saved: Mapping[str, Any]) -> None:
        """Put back a partition's state written by :meth:`export` (other fields are ignored;
        keys other than the partition's own hold no threshold state)."""
        if key == PARTITION:
            self.states[partition] = PartitionState(float(saved["mean"]), float(saved["variance"]),
                                                    int(saved["events"]))

    def forget(self, partition: PartitionKey) -> None:
        """Drop a partition's state (it was revoked, or is about to be restored)."""
        self.states.pop(partition, None)
