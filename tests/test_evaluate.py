"""``stream-ae evaluate``: which rows it scores, the report files, the metrics line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stream_ae.cli import main
from stream_ae.model.checkpoint import load_checkpoint
from stream_ae.model.datasets import synthetic_transactions
from stream_ae.tools.evaluate import PLOTS, detection_metrics
from tests.helpers import dataset_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A generic labelled CSV (columns x0..x28 + label) and a checkpoint trained on it via the CLI."""
    folder = tmp_path_factory.mktemp("evaluate")
    dataset = synthetic_transactions(rows=2000, seed=21)
    frame = pd.DataFrame(dataset.values, columns=[f"x{i}" for i in range(dataset.values.shape[1])])
    frame["label"] = dataset.labels
    data, model = folder / "events.csv", folder / "model.pt"
    frame.to_csv(data, index=False)
    assert main(["train", "--data", str(data), "--label-column", "label", "--epochs", "8",
                 "--device", "cpu", "--output", str(model)]) == 0
    return folder, data, model, frame


def run_evaluate(capsys, *args: str) -> tuple[dict, str]:
    capsys.readouterr()
    assert main(["evaluate", *args]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1]), "\n".join(out)


def test_training_file_is_scored_on_its_held_out_rows_with_report_files(trained, capsys):
    folder, data, model, frame = trained
    report_dir = folder / "report"
    line, _ = run_evaluate(capsys, "--model", str(model), "--data", str(data), "--label-column", "label",
                           "--report", str(report_dir))
    report = json.loads((report_dir / "report.json").read_text())
    test_rows = load_checkpoint(model).training["split"]["test"]

    assert report["held_out_rows"] is True
    assert report["events"] == len(test_rows)
    assert report["anomalies"] == int(frame["label"].sum())  # every anomaly is held out
    for key in ("auc_roc", "auc_pr", "precision", "recall", "f1"):
        assert 0.0 <= line[key] <= 1.0
    assert line["auc_roc"] == report["metrics"]["auc_roc"] > 0.8  # the synthetic anomalies are separable
    at_k = {point["k"]: point for point in report["metrics"]["thresholds"]}
    assert sorted(at_k) == [1, 2, 3]
    assert at_k[1]["threshold"] < at_k[2]["threshold"] < at_k[3]["threshold"]
    assert at_k[1]["recall"] >= at_k[2]["recall"] >= at_k[3]["recall"]
    start = report["metrics"]["start"]  # the daemon's starting threshold: k calibrated to 5 % false alarms
    assert line["f1"] == start["f1"] and line["k"] == start["k"] > 0
    assert line["target_false_alarm_rate"] == start["target_false_alarm_rate"] == 0.05
    (tn, fp), _ = start["confusion_matrix"]
    assert line["false_alarm_rate"] == pytest.approx(fp / (tn + fp))
    for point in [start, *at_k.values(), report["metrics"]["best_f1"]]:
        assert np.asarray(point["confusion_matrix"]).sum() == len(test_rows)
        assert report["metrics"]["best_f1"]["f1"] >= point["f1"]

    for name in [*PLOTS.values()]:
        png = (report_dir / name).read_bytes()
        assert png.startswith(PNG_SIGNATURE) and len(png) > 5000
    markdown = (report_dir / "report.md").read_text()
    assert f"{line['auc_roc']:.4f}" in markdown
    assert all(f"]({name})" in markdown for name in PLOTS.values())


def test_an_explicit_k_replaces_the_calibrated_one(trained, capsys):
    folder, data, model, _ = trained
    line, text = run_evaluate(capsys, "--model", str(model), "--data", str(data), "--label-column", "label",
                              "--report", str(folder / "k-report"), "--k", "3")
    assert line["k"] == 3.0 and line["target_false_alarm_rate"] is None
    report = json.loads((folder / "k-report" / "report.json").read_text())
    assert report["metrics"]["start"]["threshold"] == next(
        point["threshold"] for point in report["metrics"]["thresholds"] if point["k"] == 3)
    assert "k = 3" in text


def test_another_file_is_scored_on_every_row(trained, capsys):
    folder, _, model, frame = trained
    other = folder / "other.csv"
    frame.iloc[::2].to_csv(other, index=False)
    _, text = run_evaluate(capsys, "--model", str(model), "--data", str(other), "--label-column", "label",
                           "--report", str(folder / "other-report"))
    report = json.loads((folder / "other-report" / "report.json").read_text())
    assert report["held_out_rows"] is False
    assert report["events"] == len(frame.iloc[::2])
    assert "all rows" in text
    assert len(report["warnings"]) == 1 and str(other) in report["warnings"][0]
    assert f"is not the file {model} was trained on (events, sha256 " in report["warnings"][0]
    assert "**warning:**" in (folder / "other-report" / "report.md").read_text()


def test_the_training_file_gives_no_warning(trained, caplog):
    folder, data, model, _ = trained
    main(["evaluate", "--model", str(model), "--data", str(data), "--label-column", "label",
          "--report", str(folder / "same-report")])
    assert json.loads((folder / "same-report" / "report.json").read_text())["warnings"] == []
    assert not [record for record in caplog.records if record.levelname == "WARNING"]


def test_evaluate_refuses_a_dataset_that_does_not_fit(trained, tmp_path, capsys):
    _, _, model, _ = trained
    windows = pd.DataFrame(np.zeros((20, 8), np.float32), columns=[f"t{i}" for i in range(8)])
    windows["is_anomaly"] = [0, 1] * 10
    windows.to_csv(tmp_path / "windows.csv", index=False)
    assert main(["evaluate", "--model", str(model), "--data", str(tmp_path / "windows.csv"),
                 "--report", str(tmp_path / "r")]) == 2
    assert "do not fit" in capsys.readouterr().err


def test_metrics_need_both_classes():
    with pytest.raises(ValueError, match="one class"):
        detection_metrics(np.zeros(10), np.arange(1.0, 11.0), np.ones(5))


@pytest.mark.data
def test_evaluate_on_real_ecg5000(tmp_path, capsys):
    data = dataset_path("ecg5000/ecg5000.parquet")
    model = tmp_path / "ecg.pt"
    assert main(["train", "--data", str(data), "--model", "deep", "--epochs", "15", "--device", "cpu",
                 "--output", str(model)]) == 0
    line, _ = run_evaluate(capsys, "--model", str(model), "--data", str(data), "--report", str(tmp_path / "r"))
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["held_out_rows"] is True and report["anomalies"] == 2081
    assert line["auc_roc"] > 0.9
