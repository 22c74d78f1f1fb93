"""The per-series detector: scores depend on each series' own past only, never on batching."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ae.model.series import SeriesDetector, SeriesSettings
from stream_ae.pipeline.samples import SampleBatch
from stream_ae.pipeline.windows import SeriesWindower

SETTINGS = SeriesSettings(length=4, warmup=60, floor=0.1, drift_samples=10, history=80, flag_level=0.99,
                          quiet_share=0.1)


def corpus(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for k, scale in enumerate([1.0, 1e4, 1e-3]):
        values = scale * (np.sin(np.arange(400) / (3 + k)) + rng.normal(0, 0.05, 400))
        values[300 + 10 * k] += 6 * scale                       # one spike per series
        out[f"s{k}"] = values
    return out


def run(series: dict[str, np.ndarray], rng: np.random.Generator | None, settings: SeriesSettings = SETTINGS):
    """Feed every series in chunks (random sizes when rng is given, else one batch of all),
    interleaved; return per series the score of each sample (NaN where none)."""
    detector, windower = SeriesDetector(settings), SeriesWindower(settings.length)
    at = {key: 0 for key in series}
    out = {key: np.full(len(values), np.nan) for key, values in series.items()}
    while any(at[key] < len(values) for key, values in series.items()):
        keys, chunks, firsts = [], [], []
        for key, values in series.items():
            if at[key] < len(values):
                size = len(values) if rng is None else int(rng.integers(1, 40))
                chunks.append(values[at[key]:at[key] + size])
                keys.append(key)
                firsts.append(float(at[key]))
                at[key] += len(chunks[-1])
        count = len(keys)
        batch = SampleBatch(keys, np.arange(count, dtype=np.int32), np.array([len(c) for c in chunks]),
                            np.concatenate(chunks).astype(np.float32)[:, None], np.array(firsts), np.ones(count),
                            [("t", 0)], np.zeros(count, np.int32), np.arange(count), np.arange(count))
        windows, _ = windower.cut(batch)
        scores, scored = detector.score(windows.values, windows.series, windows.series_index, windows.end_sample,
                                               windows.last_ms)
        for n in np.flatnonzero(scored):
            out[windows.series[windows.series_index[n]]][windows.end_sample[n]] = scores[n]
    return out


def test_scores_do_not_depend_on_how_the_samples_were_batched():
    series = corpus()
    whole = run(series, None)
    for seed in range(3):
        chunked = run(series, np.random.default_rng(seed))
        for key in series:
            np.testing.assert_array_equal(chunked[key], whole[key])


def test_each_series_warms_up_then_scores_its_own_spike_first_whatever_its_scale():
    series = corpus()
    scores = run(series, None)
    for k, key in enumerate(series):
        assert np.isnan(scores[key][:SETTINGS.warmup]).all(), "no score during the warm-up"
        assert not np.isnan(scores[key][SETTINGS.warmup:]).any()
        spike = 300 + 10 * k
        assert scores[key][spike] == 1.0, "the spike outranks the series' past"
        quiet = round(SETTINGS.quiet_share * SETTINGS.warmup)
        assert (scores[key][spike + 1:spike + 1 + quiet] == 0).all(), "then a quiet period"


def test_a_series_learns_from_its_own_past_only():
    series = corpus()
    base = run(series, None)
    changed = dict(series)
    changed["s1"] = series["s1"].copy()
    changed["s1"][350:] *= -3                                   # its future, and only s1's
    other = run(changed, None)
    np.testing.assert_array_equal(other["s1"][:350], base["s1"][:350])
    for key in ("s0", "s2"):
        np.testing.assert_array_equal(other[key], base[key])


@pytest.mark.parametrize("field, value", [("length", 0), ("warmup", 2), ("flag_level", 0.0), ("quiet_share", -1),
                                          ("season_coverage", 0.5)])
def test_settings_are_checked(field, value):
    with pytest.raises(ValueError, match=field):
        SeriesSettings(**{field: value})
