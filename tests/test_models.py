"""The autoencoder family: shapes, fitting, scoring modes, event kinds, determinism, the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from stream_ae.cli import main
from stream_ae.model.autoencoders import MODEL_BUILDERS, build_model
from stream_ae.model.autoencoders.base import deep_hidden_sizes, simple_code_width
from stream_ae.model.checkpoint import load_checkpoint, save_checkpoint
from stream_ae.model.datasets import LabelledDataset, synthetic_transactions
from stream_ae.model.training import TrainingOptions, fit_scaler, train_autoencoder
from tests.helpers import synthetic_windows

DENSE_MODELS = sorted(name for name, model in MODEL_BUILDERS.items() if "transaction" in model.event_kinds)
ALL_MODELS = sorted(MODEL_BUILDERS)


def dataset_for(name: str) -> LabelledDataset:
    """Small training data of a kind the model takes."""
    return synthetic_transactions(rows=1500, seed=11) if name in DENSE_MODELS else synthetic_windows()


def quick_options(name: str, **changes) -> TrainingOptions:
    return TrainingOptions(**{"model": name, "epochs": 4, "batch_size": 128, "patience": 100,
                              "seed": 5, "device": "cpu", "progress": False, **changes})


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("width", [29, 37, 140])
def test_shapes_and_rebuild_from_hparams(name, width):
    model = build_model(name, width).eval()
    x = torch.randn(5, width)
    errors, per_feature = model.error(x)
    assert model(x).shape == (5, width)
    assert errors.shape == (5,) and per_feature.shape == (5, width)
    assert bool((per_feature >= 0).all())
    rebuilt = build_model(name, width, model.hparams)
    rebuilt.load_state_dict(model.state_dict())  # the stored hyper-parameters rebuild the same layers
    assert torch.equal(rebuilt.eval().error(x)[0], model.error(x)[0])


def test_width_rules_follow_the_chapter_for_the_card_data():
    assert simple_code_width(29) == 12
    assert deep_hidden_sizes(29) == [16, 8, 4]
    assert build_model("simple", 29).hparams["hidden"] == [12]
    assert build_model("sparse", 29).hparams["hidden"] == [12]
    assert build_model("denoising", 29).hparams["hidden"] == [16, 8, 4]
    vae = build_model("vae", 29).hparams
    assert (vae["hidden"], vae["latent"]) == ([16, 8], 4)
    widths = [layer.out_features for layer in build_model("deep", 29).modules() if isinstance(layer, torch.nn.Linear)]
    assert widths == [16, 8, 4, 8, 16, 29]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_loss_decreases_on_a_small_fit(name):
    checkpoint = train_autoencoder(dataset_for(name), quick_options(name, epochs=6))
    history = checkpoint.training["history"]
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["validation_loss"][-1] < history["validation_loss"][0]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_same_seed_same_weights_other_seed_other_weights(name):
    dataset = dataset_for(name)
    first = train_autoencoder(dataset, quick_options(name, epochs=2))
    again = train_autoencoder(dataset, quick_options(name, epochs=2))
    other = train_autoencoder(dataset, quick_options(name, epochs=2, seed=6))
    assert first.state_dict.keys() == again.state_dict.keys()
    assert all(torch.equal(first.state_dict[key], again.state_dict[key]) for key in first.state_dict)
    assert first.score_mean == again.score_mean
    assert not all(torch.equal(first.state_dict[key], other.state_dict[key]) for key in first.state_dict)


def test_conv_refuses_transactions_at_build_and_train_time():
    with pytest.raises(ValueError, match="takes window events, not transaction events"):
        build_model("conv", 29, kind="transaction")
    with pytest.raises(ValueError, match="conv"):
        train_autoencoder(synthetic_transactions(rows=500), quick_options("conv"))
    assert build_model("conv", 140, kind="window").input_dim == 140


def test_vae_score_modes_differ_and_the_mode_survives_the_checkpoint(tmp_path):
    dataset = synthetic_transactions(rows=1500, seed=11)
    checkpoint = train_autoencoder(dataset, quick_options("vae", hparams={"score": "elbo"}))
    path = tmp_path / "vae.pt"
    save_checkpoint(checkpoint, path)
    elbo_model = load_checkpoint(path).build()
    assert elbo_model.hparams["score"] == "elbo"
    reconstruction_model = build_model("vae", 29, {**elbo_model.hparams, "score": "reconstruction"}).eval()
    reconstruction_model.load_state_dict(elbo_model.state_dict())

    x = torch.from_numpy((dataset.values[:200] - checkpoint.scaler_mean) / checkpoint.scaler_std)
    with torch.inference_mode():
        negative_elbo, per_feature_elbo = elbo_model.error(x)
        mse, per_feature_mse = reconstruction_model.error(x)
    # Same reconstruction, so the same per-feature error; the ELBO adds a non-negative KL term.
    assert torch.allclose(per_feature_elbo, per_feature_mse)
    assert bool((negative_elbo >= 0.5 * 29 * mse - 1e-4).all())
    assert not torch.allclose(negative_elbo, 0.5 * 29 * mse)
    with pytest.raises(ValueError, match="score"):
        build_model("vae", 29, {"score": "likelihood"})


def test_denoising_trains_on_noise_but_scores_deterministically():
    model = build_model("denoising", 29, {"noise_std": 0.5})
    x = torch.randn(64, 29)
    model.train()
    assert model.training_loss(x) != model.training_loss(x)
    model.eval()
    assert torch.equal(model.error(x)[0], model.error(x)[0])


def test_sparse_penalty_makes_the_code_sparser():
    dataset = synthetic_transactions(rows=1500, seed=11)
    activity = {}
    for penalty in (0.0, 0.05):
        checkpoint = train_autoencoder(dataset, quick_options("sparse", epochs=8, hparams={"activity_l1": penalty}))
        model = checkpoint.build()
        x = torch.from_numpy((dataset.values - checkpoint.scaler_mean) / checkpoint.scaler_std)
        with torch.inference_mode():
            activity[penalty] = float(model.encode(x).abs().sum(dim=1).mean())
    assert activity[0.05] < 0.7 * activity[0.0]


def _write_table(dataset: LabelledDataset, path) -> None:
    label = "is_anomaly" if dataset.kind == "window" else "Class"
    frame = pd.DataFrame(dataset.values, columns=dataset.feature_names)
    frame[label] = dataset.labels
    if dataset.kind == "window":
        frame["ucr_class"] = -1
    frame.to_csv(path, index=False)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_cli_trains_every_model(name, tmp_path, capsys):
    data, output = tmp_path / "data.csv", tmp_path / "model.pt"
    _write_table(dataset_for(name), data)
    code = main(["train", "--data", str(data), "--model", name, "--epochs", "2", "--device", "cpu",
                 "--output", str(output)])
    assert code == 0, capsys.readouterr().err
    checkpoint = load_checkpoint(output)
    assert checkpoint.model_name == name
    assert checkpoint.training["epochs_run"] == 2 and checkpoint.training["wall_time_s"] > 0
    assert checkpoint.training["seed"] == TrainingOptions().seed


def test_cli_reports_conv_on_transactions_as_an_error(tmp_path, capsys):
    data = tmp_path / "card.csv"
    _write_table(synthetic_transactions(rows=300), data)
    assert main(["train", "--data", str(data), "--model", "conv", "--epochs", "1",
                 "--output", str(tmp_path / "m.pt")]) == 2
    assert "window events" in capsys.readouterr().err


def test_a_window_is_standardised_with_one_scale_a_transaction_per_feature():
    """A window's samples share one unit: the checkpoint holds one mean and one std, those of
    every sample of the training windows; transactions keep one per feature."""
    windows = synthetic_windows()
    checkpoint = train_autoencoder(windows, quick_options("conv", epochs=1))
    train = windows.values[checkpoint.training["split"]["train"]]
    assert np.allclose(checkpoint.scaler_mean, train.mean(), rtol=1e-5)
    assert np.allclose(checkpoint.scaler_std, train.std(), rtol=1e-5)
    assert train.std(axis=0).std() > 0.01 * train.std()  # the positions do differ

    transactions = synthetic_transactions(rows=1500, seed=11)
    checkpoint = train_autoencoder(transactions, quick_options("deep", epochs=1))
    train = transactions.values[checkpoint.training["split"]["train"]]
    assert np.allclose(checkpoint.scaler_mean, train.mean(axis=0), rtol=1e-4, atol=1e-5)
    assert np.allclose(checkpoint.scaler_std, train.std(axis=0), rtol=1e-4)


def test_a_constant_feature_or_window_is_scaled_by_one():
    constant = np.full((20, 4), 3.0, dtype=np.float32)
    for kind in ("transaction", "window"):
        mean, std = fit_scaler(constant, kind)
        assert mean.tolist() == [3.0] * 4 and std.tolist() == [1.0] * 4
