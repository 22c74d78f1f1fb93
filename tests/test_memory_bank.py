"""The memory-bank score (:mod:`stream_ae.model.memory_bank`): the distances are the kNN
distances a brute-force computation gives, the embedding is the one documented, the bank
is bounded, and the state survives a round trip exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_ae.model import memory_bank
from stream_ae.model.autoencoders import MODEL_BUILDERS, build_model
from stream_ae.model.memory_bank import BankOptions, MemoryBank, fit_memory_bank

WIDTH = 6


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    model = build_model("deep", WIDTH).eval()
    normal = torch.randn(300, WIDTH)
    return model, normal[:240], normal[240:], fit_memory_bank(model, normal[:240], normal[240:], BankOptions(k=4))


def brute_force(bank_rows: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    distances = np.sqrt(((queries[:, None, :].astype(np.float64) - bank_rows[None].astype(np.float64)) ** 2).sum(-1))
    return np.sort(distances, axis=1)[:, :k].mean(axis=1)


def test_the_distance_is_the_mean_of_the_k_nearest_euclidean_distances(fitted, monkeypatch):
    _, _, _, bank = fitted
    queries = torch.randn(50, bank.rows.shape[1])
    expected = brute_force(bank.rows.numpy(), queries.numpy(), bank.k)
    np.testing.assert_allclose(bank.knn_distance(queries).numpy(), expected, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(memory_bank, "_CPU_BLOCK_ELEMENTS", 256 * 7)  # blocks of 7 events (240 rows pad to 256)
    np.testing.assert_allclose(bank.knn_distance(queries).numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rows", [1000, 1024, 65 * 5 + 1])
def test_the_block_wise_top_k_of_a_large_bank_finds_the_same_neighbours_as_brute_force(fitted, rows):
    # banks of more than k blocks of 64 rows take the two-pass top-k; neighbours bunched in
    # one block (the queries are copies of bank rows, nudged) and spread over several
    _, _, _, small = fitted
    generator = torch.Generator().manual_seed(rows)
    bank_rows = torch.randn(rows, small.rows.shape[1], generator=generator)
    bank = MemoryBank(small.embedding, bank_rows, k=5)
    queries = torch.cat([torch.randn(40, bank_rows.shape[1], generator=generator),
                         bank_rows[130:170] + 1e-3 * torch.randn(40, bank_rows.shape[1], generator=generator)])
    expected = brute_force(bank_rows.numpy(), queries.numpy(), 5)
    np.testing.assert_allclose(bank.knn_distance(queries).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_the_bank_rows_are_the_embedded_training_rows_in_three_weighted_blocks(fitted):
    model, train, _, bank = fitted
    with torch.inference_mode():
        code, reconstruction = model.represent(train)
        embedded = bank.embedding(train, code, reconstruction)
    torch.testing.assert_close(bank.rows, embedded)
    code_width = code.shape[1]
    assert bank.rows.shape == (len(train), 2 * WIDTH + code_width)
    torch.testing.assert_close(bank.rows[:, :WIDTH], train / WIDTH ** 0.5)
    standardised_code = bank.rows[:, 2 * WIDTH:] / (0.7 / code_width ** 0.5)
    torch.testing.assert_close(standardised_code.mean(dim=0), torch.zeros(code_width), atol=1e-4, rtol=0)


def test_the_whitened_residuals_of_the_validation_rows_have_unit_covariance(fitted):
    model, _, validation, bank = fitted
    with torch.inference_mode():
        code, reconstruction = model.represent(validation)
        block = bank.embedding(validation, code, reconstruction)[:, WIDTH:2 * WIDTH] / (0.7 / WIDTH ** 0.5)
    covariance = np.cov(block.numpy(), rowvar=False)
    # Ledoit-Wolf shrinks towards a scaled identity, so unit covariance only up to that shrinkage
    assert np.all(np.abs(np.diag(covariance) - 1) < 0.5)
    assert np.abs(block.numpy().mean(axis=0)).max() < 1e-4


def test_events_far_from_every_normal_one_score_higher(fitted):
    model, train, validation, bank = fitted
    with torch.inference_mode():
        normal = bank.distance(validation, *model.represent(validation))
        far = bank.distance(validation + 8.0, *model.represent(validation + 8.0))
    assert far.min() > normal.max()


def test_a_state_round_trip_reproduces_the_scores_exactly(fitted):
    model, _, validation, bank = fitted
    again = MemoryBank.from_state(bank.state())
    with torch.inference_mode():
        represented = model.represent(validation)
        assert torch.equal(again.distance(validation, *represented), bank.distance(validation, *represented))
    with pytest.raises(ValueError, match="not a memory-bank state"):
        MemoryBank.from_state({**bank.state(), "name": "something-else"})


def test_the_bank_is_bounded_by_a_seeded_sample_of_the_training_rows(fitted):
    model, train, validation, _ = fitted
    small = fit_memory_bank(model, train, validation, BankOptions(max_rows=50), seed=3)
    same = fit_memory_bank(model, train, validation, BankOptions(max_rows=50), seed=3)
    other = fit_memory_bank(model, train, validation, BankOptions(max_rows=50), seed=4)
    assert small.rows.shape[0] == 50
    assert torch.equal(small.rows, same.rows) and not torch.equal(small.rows, other.rows)
    tiny = fit_memory_bank(model, train[:3], validation, BankOptions(k=5))
    assert tiny.k == 3  # k never exceeds the bank


@pytest.mark.parametrize("options", [{"k": 0}, {"max_rows": 0}, {"residual_weight": -1.0}])
def test_impossible_options_are_refused(options):
    with pytest.raises(ValueError):
        BankOptions(**options)


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_every_model_represents_an_event_by_its_code_and_its_reconstruction(name):
    width = 32
    model = build_model(name, width, kind="window" if name == "conv" else None).eval()
    x = torch.randn(9, width)
    with torch.inference_mode():
        code, reconstruction = model.represent(x)
        assert code.shape[0] == 9 and code.ndim == 2
        torch.testing.assert_close(reconstruction, model(x))
