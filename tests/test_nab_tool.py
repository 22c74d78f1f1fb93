"""``stream-ae nab``: a NAB-style folder in, the NAB table and NAB's results files out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stream_ae.cli import main
from stream_ae.tools.nab import NabError, detect, load_corpus, nab_report
from stream_ae.tools.nab_scoring import PROFILES
from tests.helpers import dataset_path

ROWS = 1200


def nab_folder(root: Path) -> Path:
    """Two categories, three series, one labelled spike each in two of them."""
    rng = np.random.default_rng(5)
    windows = {}
    times = pd.date_range("2024-01-01", periods=ROWS, freq="5min")
    for category, name, spike in [("cat1", "a.csv", 900), ("cat1", "b.csv", None), ("cat2", "c.csv", 1000)]:
        values = 100 + 10 * np.sin(np.arange(ROWS) / 20) + rng.normal(0, 0.5, ROWS)
        spans = []
        if spike is not None:
            values[spike:spike + 3] += 80
            spans.append([str(times[spike - 20]), str(times[spike + 20])])
        (root / "data" / category).mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": times.strftime("%Y-%m-%d %H:%M:%S"), "value": values}).to_csv(
            root / "data" / category / name, index=False)
        windows[f"{category}/{name}"] = spans
    (root / "combined_windows.json").write_text(json.dumps(windows))
    return root


def test_nab_scores_series_and_writes_nab_results_files(tmp_path, capsys):
    folder = nab_folder(tmp_path / "nab")
    assert main(["nab", str(folder), "--write", str(tmp_path / "out"), "--json"]) == 0
    printed = capsys.readouterr().out
    figures = json.loads(printed.strip().splitlines()[-1])
    assert "| **stream-ae**" in printed and "| cat2 |" in printed
    assert figures["windows"] == 2 and set(figures["overall"]) == set(PROFILES)
    assert figures["overall"]["standard"] > 90, "both spikes found early, no false positive"
    written = pd.read_csv(tmp_path / "out" / "cat1" / "streamAE_a.csv")
    assert list(written.columns) == ["timestamp", "value", "anomaly_score", "label"] and len(written) == ROWS
    assert written["label"].sum() == 41 and written["anomaly_score"].idxmax() in range(880, 921)
    # the files hold what was scored: read back, they give the same report
    corpus = load_corpus(folder)
    again = nab_report(corpus, [pd.read_csv(tmp_path / "out" / s.category / f"streamAE_{s.name.split('/')[1]}")
                                ["anomaly_score"].to_numpy() for s in corpus])
    assert again.overall == pytest.approx(figures["overall"])


def test_a_folder_not_laid_out_like_nab_is_refused(tmp_path):
    with pytest.raises(NabError, match="combined_windows"):
        load_corpus(tmp_path)
    folder = nab_folder(tmp_path / "nab")
    (folder / "data" / "cat2" / "extra.csv").write_text("timestamp,value\n2024-01-01 00:00:00,1\n")
    with pytest.raises(NabError, match="no windows for cat2/extra.csv"):
        load_corpus(folder)
    assert main(["nab", str(tmp_path / "missing")]) == 2


def test_the_default_beats_numenta_htm_on_the_numenta_anomaly_benchmark():
    """The default settings over the whole NAB corpus (../shared/data/nab): the standard profile
    above Numenta HTM's 70.5 on NAB's scoreboard (the issue's mark), and every profile above
    the simple memory bank measured before (a 1-NN distance of windows of 4 to the
    probationary windows, ranked: 64.4 / 52.9 / 70.0) and KNN CAD's published 58.0 / 43.4 / 64.8."""
    corpus = load_corpus(dataset_path("nab/combined_windows.json").parent)
    report = nab_report(corpus, detect(corpus))
    assert report.windows == 116
    floor = {"standard": 70.5, "reward_low_FP_rate": 52.9, "reward_low_FN_rate": 70.0}
    assert {p: report.overall[p] > floor[p] for p in PROFILES} == dict.fromkeys(PROFILES, True), report.overall
