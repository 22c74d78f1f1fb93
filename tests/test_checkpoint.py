"""The checkpoint file (:mod:`stream_ae.model.checkpoint`): a save/load round trip keeps every
field and gives the file's sha256; a file that is not a checkpoint (random bytes, a missing
file, another format version, pickled code) raises :class:`CheckpointError`."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch

from stream_ae.model.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from stream_ae.model.datasets import synthetic_transactions
from stream_ae.model.detector import build_detector
from stream_ae.model.training import TrainingOptions, train_autoencoder
from tests.helpers import tiny_checkpoint

# the keys of files written before the detector contract, and their names now
RENAMED = {"error_mean": "score_mean", "error_std": "score_std", "validation_errors": "validation_scores"}


def test_a_round_trip_keeps_every_field_and_the_sha256(tmp_path):
    original = tiny_checkpoint(feature_names=["V1", "V2", "Amount"], seed=7)
    path = tmp_path / "nested" / "folder" / "model.pt"  # parent folders are created
    sha = save_checkpoint(original, path)
    assert sha == original.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not path.with_suffix(".pt.tmp").exists(), "the temporary file is renamed into place"

    loaded = load_checkpoint(path)
    assert loaded.sha256 == sha
    assert loaded.model_name == "simple" and loaded.kind == "transaction"
    assert loaded.hparams == original.hparams
    assert loaded.feature_names == ["V1", "V2", "Amount"]
    assert loaded.input_dim == 3 and loaded.window_length is None
    assert loaded.state_dict.keys() == original.state_dict.keys()
    for key, tensor in original.state_dict.items():
        assert torch.equal(loaded.state_dict[key], tensor), key
    for name in ("scaler_mean", "scaler_std", "validation_scores"):
        value = getattr(loaded, name)
        assert isinstance(value, np.ndarray) and value.dtype == np.float32, name
        np.testing.assert_array_equal(value, getattr(original, name))
    assert loaded.score_mean == pytest.approx(original.score_mean)
    assert loaded.score_std == pytest.approx(original.score_std)


def test_the_training_provenance_comes_back_as_numpy_arrays_and_plain_numbers(tmp_path):
    original = tiny_checkpoint(seed=1)
    save_checkpoint(original, tmp_path / "m.pt")
    training = load_checkpoint(tmp_path / "m.pt").training
    assert training["dataset"] == "tiny" and training["seed"] == 1
    np.testing.assert_array_equal(training["split"]["train"], np.arange(10))
    np.testing.assert_array_equal(training["split"]["test"], np.arange(10, 12))
    assert training["epochs_run"] == 1 and isinstance(training["epochs_run"], int)
    assert training["loss"] == pytest.approx([0.5, 0.25])


def test_the_loaded_model_scores_as_the_saved_one(tmp_path):
    original = tiny_checkpoint(seed=2)
    save_checkpoint(original, tmp_path / "m.pt")
    x = torch.randn(5, original.input_dim)
    with torch.inference_mode():
        assert torch.equal(load_checkpoint(tmp_path / "m.pt").build()(x), original.build()(x))


def test_saving_the_same_checkpoint_again_gives_the_same_sha256_and_a_change_another(tmp_path):
    checkpoint = tiny_checkpoint(seed=3)
    path = tmp_path / "model.pt"
    first = save_checkpoint(checkpoint, path)
    assert save_checkpoint(checkpoint, path) == first, "the file's bytes do not depend on when it was saved"
    checkpoint.score_mean += 1.0
    assert save_checkpoint(checkpoint, path) != first


def test_a_file_of_random_bytes_raises_checkpoint_error_in_our_words_not_torchs(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(os.urandom(10_000))
    with pytest.raises(CheckpointError, match="not a stream-ae checkpoint") as error:
        load_checkpoint(path)
    assert "weights_only" not in str(error.value) and "\n" not in str(error.value)


def test_the_dataset_digest_travels_with_the_checkpoint_and_older_files_keep_theirs(tmp_path):
    checkpoint = tiny_checkpoint(seed=5)
    checkpoint.dataset_sha256 = "d" * 64
    save_checkpoint(checkpoint, tmp_path / "model.pt")
    assert load_checkpoint(tmp_path / "model.pt").dataset_sha256 == "d" * 64
    older = tiny_checkpoint(seed=5)  # format 1 as first written: the digest inside the provenance
    older.training["dataset_sha256"] = "e" * 64
    save_checkpoint(older, tmp_path / "older.pt")
    assert load_checkpoint(tmp_path / "older.pt").dataset_sha256 == "e" * 64


def test_a_missing_file_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_another_format_version_raises_checkpoint_error(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(tiny_checkpoint(), path)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(path)
    del payload["format_version"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(path)


def test_a_torch_file_that_is_not_a_dict_raises_checkpoint_error(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


class _Payload:
    """Unpickling this would create a file: loading must never run it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_carrying_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format_version": FORMAT_VERSION, "model_name": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_memory_bank_checkpoint_round_trip_reproduces_the_scores_exactly(tmp_path):
    """The default checkpoint carries the memory bank; scores after save and load are bit-equal."""
    dataset = synthetic_transactions(rows=800, seed=9)
    original = train_autoencoder(dataset, TrainingOptions(epochs=2, seed=9, device="cpu", progress=False))
    assert original.score_name == "memory-bank" and original.memory_bank_state is not None
    save_checkpoint(original, tmp_path / "bank.pt")
    loaded = load_checkpoint(tmp_path / "bank.pt")
    assert loaded.score_name == "memory-bank"
    for key, value in original.memory_bank_state.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(loaded.memory_bank_state[key], value), key
        else:
            assert loaded.memory_bank_state[key] == value, key
    values = dataset.values[:300]
    before = build_detector(original, "cpu").score(values)
    after = build_detector(loaded, "cpu").score(values)
    np.testing.assert_array_equal(after.score, before.score)
    np.testing.assert_array_equal(after.values["reconstruction_error"], before.values["reconstruction_error"])
    np.testing.assert_array_equal(loaded.validation_scores, original.validation_scores)

    # a file of before the detector contract keeps its bank under "score_head": the same scores
    payload = torch.load(tmp_path / "bank.pt", weights_only=True)
    payload["score_head"] = payload.pop("memory_bank")
    for old, new in RENAMED.items():
        payload[old] = payload.pop(new)
    torch.save(payload, tmp_path / "before.pt")
    before_contract = load_checkpoint(tmp_path / "before.pt")
    assert before_contract.score_name == "memory-bank"
    np.testing.assert_array_equal(build_detector(before_contract, "cpu").score(values).score, before.score)


def test_a_checkpoint_without_a_memory_bank_scores_by_reconstruction_error(tmp_path):
    """Checkpoints written before the memory bank (no ``score_head`` key, the keys of their
    time: ``error_mean``, ``error_std``, ``validation_errors``) load and score as before."""
    original = tiny_checkpoint(seed=3)
    save_checkpoint(original, tmp_path / "old.pt")
    payload = torch.load(tmp_path / "old.pt", weights_only=True)
    del payload["memory_bank"]
    for old, new in RENAMED.items():
        payload[old] = payload.pop(new)
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded.memory_bank_state is None and loaded.score_name == "reconstruction"
    assert (loaded.score_mean, loaded.score_std) == (original.score_mean, original.score_std)
    np.testing.assert_array_equal(loaded.validation_scores, original.validation_scores)
    values = np.random.default_rng(3).normal(size=(20, loaded.input_dim)).astype(np.float32)
    scores = build_detector(loaded, "cpu").score(values)
    np.testing.assert_allclose(scores.score, scores.values["reconstruction_error"], rtol=1e-6)
