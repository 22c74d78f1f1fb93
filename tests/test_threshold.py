"""The adaptive threshold: seeding, warm-up, following a shift, ignoring a burst, per partition."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ae.pipeline.threshold.adaptive import (
    AdaptiveThreshold,
    calibrated_k,
    seed_statistics,
    seeded_threshold,
    starting_k,
)

P0, P1 = ("events", 0), ("events", 1)


def feed(threshold: AdaptiveThreshold, errors: np.ndarray, key=P0, batch: int = 100) -> np.ndarray:
    flags = []
    for start in range(0, len(errors), batch):
        chunk = errors[start:start + batch]
        verdict = threshold.apply([key], np.zeros(len(chunk), np.int32), chunk)
        flags.append(verdict.flags)
    return np.concatenate(flags)


def make(k=3.0, half_life=500, warmup=0, mean=1.0, std=0.1) -> AdaptiveThreshold:
    return AdaptiveThreshold(mean, std, k=k, scale="linear", half_life_events=half_life, warmup_events=warmup)


def test_seeded_from_the_checkpoint_statistics():
    threshold = make(k=2.0, mean=1.0, std=0.25)
    assert threshold.threshold(P0) == pytest.approx(1.5)
    verdict = threshold.apply([P0], np.zeros(3, np.int32), np.array([1.0, 1.49, 1.51]))
    assert verdict.flags.tolist() == [False, False, True]
    np.testing.assert_allclose(verdict.thresholds, 1.5)
    np.testing.assert_allclose(verdict.zscores, [0.0, 1.96, 2.04])


def test_converges_to_the_stream_statistics():
    rng = np.random.default_rng(1)
    threshold = make(half_life=200, mean=5.0, std=1.0)
    feed(threshold, rng.normal(2.0, 0.2, 5000))
    state = threshold.states[P0]
    assert state.mean == pytest.approx(2.0, abs=0.03)
    assert np.sqrt(state.variance) == pytest.approx(0.2, rel=0.1)


def settled(seed: int, half_life: int) -> tuple[AdaptiveThreshold, np.random.Generator, float]:
    """A threshold fed a stationary N(1, 0.1) stream until it settled; its generator and level."""
    rng = np.random.default_rng(seed)
    threshold = make(half_life=half_life)
    feed(threshold, rng.normal(1.0, 0.1, 3000))
    return threshold, rng, threshold.threshold(P0)


def test_follows_a_shifted_stream():
    threshold, rng, before = settled(seed=2, half_life=300)
    flags = feed(threshold, rng.normal(1.15, 0.1, 4000))
    after = threshold.threshold(P0)
    assert after - before == pytest.approx(0.15, abs=0.04)
    assert flags[-1000:].mean() < 0.01  # the new level is normal now
    feed(threshold, rng.normal(0.8, 0.1, 4000))
    assert threshold.threshold(P0) == pytest.approx(0.8 + 0.3, abs=0.04)


def test_a_burst_of_anomalies_does_not_raise_the_threshold():
    threshold, rng, before = settled(seed=3, half_life=100)
    flags = feed(threshold, rng.normal(5.0, 0.5, 1000))
    assert flags.all()
    assert threshold.threshold(P0) == before


def test_mixed_batch_keeps_anomalies_out_of_the_update():
    rng = np.random.default_rng(4)
    clean, mixed = make(half_life=200), make(half_life=200)
    normal = rng.normal(1.0, 0.1, 2000)
    feed(clean, normal)
    with_spikes = normal.copy()
    with_spikes[::10] = 9.0
    feed(mixed, with_spikes)
    # a tenth of the events spiked: the statistics barely move, the bar does not rise
    assert mixed.threshold(P0) <= clean.threshold(P0) + 0.01


def test_partitions_are_independent():
    threshold = make(half_life=50)
    errors = np.concatenate([np.full(500, 0.5), np.full(500, 1.2)])
    index = np.concatenate([np.zeros(500, np.int32), np.ones(500, np.int32)])
    threshold.apply([P0, P1], index, errors)
    assert threshold.states[P0].mean == pytest.approx(0.5, abs=0.05)
    assert threshold.states[P1].mean == pytest.approx(1.2, abs=0.05)


def test_warmup_keeps_the_seeded_threshold():
    threshold = make(half_life=10, warmup=300, mean=1.0, std=0.1)
    feed(threshold, np.full(200, 0.5))
    assert threshold.threshold(P0) == pytest.approx(1.3)
    feed(threshold, np.full(200, 0.5))
    assert threshold.threshold(P0) < 0.6


def test_seed_is_the_fixed_point_of_the_exclusion_rule():
    rng = np.random.default_rng(6)
    errors = np.concatenate([rng.normal(1.0, 0.1, 990), np.full(10, 50.0)])  # a few huge errors
    mean, std = seed_statistics(errors, 3.0, "linear")
    assert mean == pytest.approx(1.0, abs=0.02) and std == pytest.approx(0.1, rel=0.1)
    kept = errors[errors <= mean + 3 * std]
    assert (kept.mean(), kept.std()) == pytest.approx((mean, std))
    assert errors.mean() + 3 * errors.std() > 10 * seeded_threshold(errors, 3.0, "linear")


def test_log_scale_thresholds_log_normal_errors_in_error_units():
    rng = np.random.default_rng(7)
    errors = np.exp(rng.normal(-2.0, 0.5, 20_000))
    threshold = AdaptiveThreshold.from_validation_scores(errors, k=3.0, scale="log", half_life_events=1000,
                                                         warmup_events=0)
    assert threshold.threshold(P0) == pytest.approx(np.exp(-2.0 + 3 * 0.5), rel=0.05)
    verdict = threshold.apply([P0], np.zeros(3, np.int32), np.array([0.05, 1.0, 5.0]))
    assert verdict.flags.tolist() == [False, True, True]
    np.testing.assert_allclose(verdict.zscores, (np.log([0.05, 1.0, 5.0]) + 2.0) / 0.5, rtol=0.06)
    assert threshold.apply([P0], np.zeros(1, np.int32), np.array([0.0])).flags.tolist() == [False]


# -- calibrated k: threshold.false_alarm_rate ---------------------------------------------------

def heavy_tailed_scores(rng: np.random.Generator, size: int) -> np.ndarray:
    """Scores whose logarithm has a Student-t (3 degrees of freedom) tail: like the memory-bank
    distances of real normal events, heavier-tailed than log-normal."""
    return np.exp(0.3 * rng.standard_t(3, size=size) - 1.0)


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.2])
@pytest.mark.parametrize("scale", ["log", "linear"])
def test_the_calibrated_k_flags_the_target_share_of_the_validation_scores(rate, scale):
    scores = heavy_tailed_scores(np.random.default_rng(5), 4000)
    k = calibrated_k(scores, rate, scale)
    flagged = float((scores > seeded_threshold(scores, k, scale)).mean())
    assert abs(flagged - rate) <= 2 / len(scores)
    assert starting_k(scores, 3.0, rate, scale) == k and starting_k(scores, 3.0, None, scale) == 3.0


def test_a_smaller_target_gives_a_larger_k():
    scores = heavy_tailed_scores(np.random.default_rng(6), 2000)
    ks = [calibrated_k(scores, rate, "log") for rate in (0.2, 0.05, 0.01, 0.002)]
    assert ks == sorted(ks) and len(set(ks)) == 4


@pytest.mark.parametrize("rate", [0.0, -0.1, 0.5, 1.0])
def test_a_target_outside_zero_to_one_half_is_refused(rate):
    with pytest.raises(ValueError, match="false_alarm_rate"):
        calibrated_k(np.ones(10), rate, "log")


@pytest.mark.parametrize("rate", [0.01, 0.05])
def test_the_realised_false_alarm_rate_on_a_stationary_stream_stays_within_a_factor_of_two(rate):
    """Seeded and calibrated on 3,000 validation scores, then fed 200,000 events of the same
    distribution on two partitions: after the warm-up the adaptive state takes over, and the
    share of events flagged stays within a factor of two of the target."""
    rng = np.random.default_rng(7)
    validation = heavy_tailed_scores(rng, 3000)
    k = calibrated_k(validation, rate, "log")
    threshold = AdaptiveThreshold.from_validation_scores(validation, k, "log", half_life_events=20_000,
                                                         warmup_events=500)
    flagged = events = 0
    for _ in range(100):
        batch = heavy_tailed_scores(rng, 2000)
        slots = rng.integers(0, 2, size=len(batch)).astype(np.int32)
        verdict = threshold.apply([P0, P1], slots, batch)
        flagged += int(verdict.flags.sum())
        events += len(batch)
    realised = flagged / events
    assert rate / 2 <= realised <= 2 * rate, realised
