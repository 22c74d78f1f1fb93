"""The scorer's options: bucketed batch shapes, bf16 autocast, torch.compile, settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from stream_ae.model.datasets import synthetic_transactions
from stream_ae.model.detector import bucket_size, build_detector
from stream_ae.service.config import load_settings
from stream_ae.service.daemon import model_loader

DATASET = synthetic_transactions(rows=6000)  # the rows the synthetic checkpoint was trained on


@pytest.mark.parametrize("events, bucket", [(0, 64), (1, 64), (64, 64), (65, 128), (4096, 4096),
                                            (4097, 8192)])
def test_bucket_is_the_next_power_of_two_from_64(events, bucket):
    assert bucket_size(events) == bucket


@pytest.mark.parametrize("events", [1, 3, 64, 65, 1000, 4096])
def test_bucketed_batches_score_like_unpadded_ones(synthetic_checkpoint, events):
    """Identical up to float32 rounding: the padding rows do not touch the real ones, but the
    BLAS kernel (and so the summation order) may differ with the row count (seen: a few ulps
    for batches of 1 and 3 on this CPU)."""
    checkpoint, _ = synthetic_checkpoint
    values = DATASET.values[:events]
    padded = build_detector(checkpoint, "cpu", bucket=True).score(values)
    plain = build_detector(checkpoint, "cpu", bucket=False).score(values)
    every = np.arange(events)
    (padded_index, padded_error), (plain_index, plain_error) = padded.top_features(every), plain.top_features(every)
    assert padded.score.shape == (events,) and padded_index.shape == (events, 3)
    np.testing.assert_allclose(padded.score, plain.score, rtol=1e-5, atol=0)
    np.testing.assert_array_equal(padded_index, plain_index)
    np.testing.assert_allclose(padded_error, plain_error, rtol=1e-5, atol=0)


def test_top_features_are_the_largest_errors_of_the_chosen_events(synthetic_checkpoint):
    checkpoint, _ = synthetic_checkpoint
    scores = build_detector(checkpoint, "cpu").score(DATASET.values[:20])
    attribution = scores.attribution.numpy()
    np.testing.assert_allclose(attribution.mean(axis=1), scores.values["reconstruction_error"], rtol=1e-5)
    chosen = np.array([13, 2, 7])
    index, error = scores.top_features(chosen)
    assert index.shape == error.shape == (3, 3) and index.dtype == np.int64 and error.dtype == np.float32
    for row, event in enumerate(chosen):
        expected = np.argsort(-attribution[event])[:3]
        np.testing.assert_array_equal(index[row], expected)
        np.testing.assert_array_equal(error[row], attribution[event][expected])
    none_index, none_error = scores.top_features(np.array([], np.int64))
    assert none_index.shape == none_error.shape == (0, 3)


def test_batches_are_padded_by_default_only_where_shapes_must_repeat(synthetic_checkpoint):
    checkpoint, _ = synthetic_checkpoint
    assert not build_detector(checkpoint, "cpu").bucket, "an eager model on the CPU gains nothing from padding"
    assert build_detector(checkpoint, "cpu", compile=True).bucket
    assert build_detector(checkpoint, "cpu", bucket=True).bucket


def test_a_bucketed_scorer_reuses_its_buffer_without_leaking_rows_between_batches(synthetic_checkpoint):
    checkpoint, _ = synthetic_checkpoint
    scorer = build_detector(checkpoint, "cpu", bucket=True)
    big = scorer.score(DATASET.values[:100]).score
    small = scorer.score(DATASET.values[200:203]).score
    alone = build_detector(checkpoint, "cpu", bucket=True).score(DATASET.values[200:203]).score
    np.testing.assert_array_equal(small, alone)
    np.testing.assert_array_equal(scorer.score(DATASET.values[:100]).score, big)


def test_bf16_scores_stay_close_to_fp32_and_rank_alike(synthetic_checkpoint):
    checkpoint, _ = synthetic_checkpoint
    rows = np.asarray(checkpoint.training["split"]["test"])
    values, labels = DATASET.values[rows], DATASET.labels[rows]
    fp32 = build_detector(checkpoint, "cpu").score(values)
    bf16 = build_detector(checkpoint, "cpu", precision="bf16").score(values)
    assert bf16.score.dtype == np.float32
    np.testing.assert_allclose(bf16.score, fp32.score, rtol=0.05, atol=0.02 * float(np.median(fp32.score)))
    assert abs(roc_auc_score(labels, bf16.score) - roc_auc_score(labels, fp32.score)) < 0.005


def test_unknown_precision_is_refused(synthetic_checkpoint):
    with pytest.raises(ValueError, match="precision"):
        build_detector(synthetic_checkpoint[0], "cpu", precision="fp8")


def test_compiled_scores_match_fp32(synthetic_checkpoint):
    checkpoint, _ = synthetic_checkpoint
    values = DATASET.values[:50]  # one bucket (64 rows): one graph to compile
    reference = build_detector(checkpoint, "cpu").score(values)
    try:
        compiled = build_detector(checkpoint, "cpu", compile=True).score(values)
    except Exception as exc:  # inductor needs a C++ compiler and a writable cache
        pytest.skip(f"torch.compile does not work on this machine: {type(exc).__name__}: {exc}")
    np.testing.assert_allclose(compiled.score, reference.score, rtol=1e-4, atol=1e-6)
    every = np.arange(50)
    np.testing.assert_array_equal(compiled.top_features(every)[0][:, 0], reference.top_features(every)[0][:, 0])


def test_settings_choose_the_options(synthetic_checkpoint):
    settings = load_settings(model={"device": "cpu", "precision": "bf16", "bucket_batches": False},
                             alerts={"top_features": 5})
    scorer = model_loader(settings).load(synthetic_checkpoint[0]).detector
    assert (scorer.precision, scorer.bucket, scorer.top, scorer.device) == ("bf16", False, 5, torch.device("cpu"))
    assert scorer.score(DATASET.values[:7]).top_features(np.arange(7))[0].shape == (7, 5)


def test_warm_up_scores_every_bucket_up_to_the_batch_size(synthetic_checkpoint, monkeypatch):
    scorer = build_detector(synthetic_checkpoint[0], "cpu", bucket=True)
    shapes = []
    step = scorer._step
    monkeypatch.setattr(scorer, "_step", lambda x: shapes.append(tuple(x.shape)) or step(x))
    scorer.warm_up(300)
    assert shapes == [(64, 29), (128, 29), (256, 29), (512, 29)]


def test_a_memory_bank_on_the_cpu_says_what_it_costs(synthetic_checkpoint, caplog):
    """The bank's product dominates a CPU's scoring: the start-up log names its size and its
    multiply-adds per event, and where cheaper scoring lies."""
    checkpoint, _ = synthetic_checkpoint
    rows, width = checkpoint.memory_bank_state["rows"].shape
    with caplog.at_level("INFO", logger="stream_ae.model.detector"):
        build_detector(checkpoint, "cpu")
    message = " ".join(record.getMessage() for record in caplog.records)
    assert f"memory bank of {rows} rows x {width} dims scored on the CPU" in message
    assert f"{rows * (width + 1) / 1e6:.2f} M multiply-adds per event" in message and "--bank-rows" in message
