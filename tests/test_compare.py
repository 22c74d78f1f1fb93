"""``stream-ae compare``: which files it reads, the split and subsample, the baselines as
published, the JSON line; and on real data, the default against kNN."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stream_ae.cli import main
from stream_ae.model.datasets import DatasetError, LabelledDataset, synthetic_transactions
from stream_ae.tools.compare import dataset_files, isolation_forest_scores, knn_scores, subsample
from tests.helpers import dataset_path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder a user might point compare at: an ADBench-style .npz, a generic CSV with a
    label column, and a file that is not a dataset."""
    root = tmp_path_factory.mktemp("datasets")
    data = synthetic_transactions(rows=1500, seed=11)
    np.savez(root / "tx.npz", X=data.values, y=data.labels)
    other = synthetic_transactions(rows=1200, seed=12)
    frame = pd.DataFrame(other.values[:, :8], columns=[f"f{i}" for i in range(8)])
    frame["label"] = other.labels
    frame.to_csv(root / "table.csv", index=False)
    (root / "notes.txt").write_text("not a dataset")
    return root


def test_a_folder_means_every_dataset_file_directly_in_it(folder, tmp_path):
    assert [p.name for p in dataset_files([folder])] == ["table.csv", "tx.npz"]
    assert dataset_files([folder / "tx.npz"]) == [folder / "tx.npz"]
    with pytest.raises(DatasetError, match="not found"):
        dataset_files([tmp_path / "missing.npz"])
    with pytest.raises(DatasetError, match="no dataset files"):
        dataset_files([tmp_path])


def test_compare_on_a_folder_prints_the_table_and_the_json_line(folder, capsys):
    assert main(["compare", str(folder), "--label-column", "label", "--epochs", "3", "--device", "cpu",
                 "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert set(result["datasets"]) == {"table", "tx"}
    for name, entry in result["datasets"].items():
        default = entry["default"]
        for key in ("auc_roc", "auc_pr", "precision", "recall", "false_alarm_rate"):
            assert 0.0 <= default[key] <= 1.0, (name, key)
        assert default["target_false_alarm_rate"] == 0.05 and default["score"] == "memory-bank"
        for baseline in ("knn", "iforest", "reconstruction"):
            assert 0.5 < entry[baseline]["auc_roc"] <= 1.0 and 0 < entry[baseline]["auc_pr"] <= 1.0
        assert entry["test_anomalies"] == (30 if name == "tx" else 24)  # every anomaly is held out
    means = result["mean_auc_roc"]
    assert means["knn"] == pytest.approx(np.mean([e["knn"]["auc_roc"] for e in result["datasets"].values()]))
    assert result["wins_vs_knn"] == sum(e["default"]["auc_roc"] > e["knn"]["auc_roc"]
                                        for e in result["datasets"].values())
    assert 0 <= result["wins_vs_iforest"] <= 2
    table = "\n".join(out[:-1])
    assert "default beats kNN on" in table and "tx" in table and "table" in table


def test_an_unlabelled_table_is_refused_naming_the_file(tmp_path, capsys):
    pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0)}).to_csv(tmp_path / "plain.csv", index=False)
    assert main(["compare", str(tmp_path / "plain.csv"), "--epochs", "1"]) == 2
    assert "plain" in capsys.readouterr().err


def test_a_large_table_is_subsampled_keeping_anomalies_up_to_a_tenth():
    rng = np.random.default_rng(0)
    labels = (rng.random(10_000) < 0.3).astype(np.int8)
    dataset = LabelledDataset("big", "transaction", rng.normal(size=(10_000, 3)).astype(np.float32), labels,
                              ["a", "b", "c"], "0" * 64)
    small = subsample(dataset, 1000, seed=1)
    assert len(small.values) == 1000 and small.labels is not None
    assert int(small.labels.sum()) == 100  # capped at 10 % of the rows
    assert small.sha256 != dataset.sha256
    again = subsample(dataset, 1000, seed=1)
    np.testing.assert_array_equal(again.values, small.values)
    assert subsample(dataset, 20_000, seed=1) is dataset
    rows = [int(np.flatnonzero((dataset.values == row).all(axis=1))[0]) for row in small.values[:50]]
    assert rows == sorted(rows), "the chosen rows keep the file's order"


def test_knn_is_the_distance_to_the_fifth_neighbour_after_standardising():
    rng = np.random.default_rng(2)
    train = rng.normal(3.0, [1.0, 10.0, 0.1], size=(200, 3))
    test = rng.normal(3.0, [1.0, 10.0, 0.1], size=(20, 3))
    mean, std = train.mean(axis=0), train.std(axis=0)
    distances = np.linalg.norm((test - mean) / std - ((train - mean) / std)[:, None], axis=2)
    np.testing.assert_allclose(knn_scores(train, test), np.sort(distances, axis=0)[4], rtol=1e-10)
    forest = isolation_forest_scores(train, np.vstack([test, [[30.0, 300.0, 3.0]]]), seed=0)
    assert forest[-1] > forest[:-1].max()


@pytest.mark.data
def test_on_real_data_the_default_holds_its_own_against_knn(capsys):
    """Two small real tables (ADBench thyroid and cardio), default settings: the default detector is
    within 0.05 AUC-ROC of kNN on each, and its realised false-alarm rate within a factor of two."""
    paths = [dataset_path("adbench/38_thyroid.npz"), dataset_path("adbench/6_cardio.npz")]
    assert main(["compare", *map(str, paths), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name, entry in result["datasets"].items():
        default = entry["default"]
        assert default["auc_roc"] > entry["knn"]["auc_roc"] - 0.05, name
        assert default["auc_roc"] > entry["reconstruction"]["auc_roc"] - 0.01, name
        assert 0.5 <= default["false_alarm_rate"] / default["target_false_alarm_rate"] <= 2.0, name


@pytest.mark.data
def test_on_real_heartbeats_the_default_beats_knn_and_reaches_0_99(capsys):
    """ECG5000, default settings: the windows' one-scale standardisation (``fit_scaler``) lifts
    the default above kNN on standardised samples and to an AUC-ROC of at least 0.99."""
    path = dataset_path("ecg5000/ecg5000.parquet")
    assert main(["compare", str(path), "--device", "cpu", "--json"]) == 0
    entry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["datasets"]["ecg5000"]
    assert entry["default"]["auc_roc"] >= 0.99
    assert entry["default"]["auc_roc"] > entry["knn"]["auc_roc"]
