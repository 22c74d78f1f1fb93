"""``stream-ae compare``: the quality benchmark: the default detector beside kNN and IsolationForest.

For every dataset file, in one run and on the same rows:

1. **Rows.** A table with more than ``max_rows`` rows is subsampled (seeded): every anomaly
   is kept up to 10 % of ``max_rows``, the rest are normal rows.
2. **Split.** The project's split (:func:`stream_ae.model.datasets.split_normal_rows`): a
   seeded 80 % of the normal rows to fit (15 % of those for validation), and the test rows:
   the other 20 % of the normal rows and every anomaly.
3. **Default detector.** :func:`stream_ae.model.training.train_autoencoder` with the default
   options (the default model and its memory-bank score); the test rows are scored by the
   checkpoint's detector, the daemon's own (:func:`stream_ae.model.detector.build_detector`), and thresholded at
   the threshold the daemon starts with (k calibrated to ``false_alarm_rate``).
   The same trained autoencoder's plain reconstruction error is reported beside it.
4. **Baselines**, fitted on the same normal training rows: kNN as PyOD's ``KNN`` defaults
   it (k = 5, the distance to the 5th neighbour, ``method="largest"``; Ramaswamy, Rastogi &
   Shim, 2000) on the features standardised with the training rows' mean and std
   (scikit-learn's ``NearestNeighbors``), and scikit-learn's ``IsolationForest`` (Liu, Ting
   & Zhou, 2008; score ``-score_samples``).

Metrics: AUC-ROC and AUC-PR (average precision) from scikit-learn; for the default detector
also precision, recall and the false-alarm rate realised on the test normals at the starting
threshold, beside its target. Then the mean AUC-ROC of each detector and the count of
datasets where the default beats each baseline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neighbors import NearestNeighbors

from stream_ae.model.datasets import DatasetError, LabelledDataset, load_dataset, split_normal_rows
from stream_ae.model.detector import build_detector
from stream_ae.model.device import resolve_device
from stream_ae.model.training import TrainingOptions, train_autoencoder, without_memory_bank
from stream_ae.pipeline.threshold.adaptive import DEFAULT_FALSE_ALARM_RATE
from stream_ae.tools.evaluate import detection_metrics

DATASET_SUFFIXES = (".csv", ".parquet", ".npz", ".gz")
ANOMALY_SHARE_CAP = 0.10
KNN_NEIGHBOURS = 5


def dataset_files(paths: Iterable[Path | str]) -> list[Path]:
    """The dataset files named by ``paths``: a file as given; a folder: every ``.csv``,
    ``.csv.gz``, ``.parquet`` or ``.npz`` file directly in it, sorted by name.

    Raises:
        DatasetError: a path that does not exist, or a folder without dataset files.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DATASET_SUFFIXES)
            if not found:
                raise DatasetError(f"{path}: no dataset files (.csv, .csv.gz, .parquet, .npz) in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DatasetError(f"dataset path not found: {path}")
    return files


def subsample(dataset: LabelledDataset, max_rows: int, seed: int) -> LabelledDataset:
    """At most ``max_rows`` rows of a labelled dataset, seeded: every anomaly up to 10 % of
    ``max_rows``, normal rows for the rest; the rows keep their order. The digest is that of
    the chosen rows, so a checkpoint trained on the subsample is not taken for one trained
    on the whole file.

    Raises:
        ValueError: ``max_rows`` below 2, or an unlabelled dataset.
    """
    if max_rows < 2:
        raise ValueError(f"max_rows must be at least 2, got {max_rows}")
    if dataset.labels is None:
        raise ValueError(f"{dataset.name}: compare needs labels")
    if len(dataset.values) <= max_rows:
        return dataset
    rng = np.random.default_rng(seed)
    anomalies = np.flatnonzero(dataset.labels != 0)
    normal = np.flatnonzero(dataset.labels == 0)
    keep_anomalies = rng.choice(anomalies, min(len(anomalies), int(ANOMALY_SHARE_CAP * max_rows)), replace=False)
    keep_normal = rng.choice(normal, min(len(normal), max_rows - len(keep_anomalies)), replace=False)
    rows = np.sort(np.concatenate([keep_anomalies, keep_normal]))
    values, labels = dataset.values[rows], dataset.labels[rows]
    digest = hashlib.sha256(dataset.sha256.encode() + rows.tobytes()).hexdigest()
    return dataclasses.replace(dataset, values=values, labels=labels, sha256=digest)


def _ranking(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {"auc_roc": float(roc_auc_score(labels, scores)), "auc_pr": float(average_precision_score(labels, scores))}


def knn_scores(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """PyOD ``KNN``'s default score: the distance to the 5th nearest training row, after
    standardising with the training rows' mean and std.

    Args:
        train: float ``(rows, features)`` normal training rows.
        test: float ``(events, features)``.

    Returns:
        float64 ``(events,)``, higher = more anomalous.
    """
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[std < 1e-12] = 1.0
    search = NearestNeighbors(n_neighbors=min(KNN_NEIGHBOURS, len(train))).fit((train - mean) / std)
    distances, _ = search.kneighbors((test - mean) / std)
    return distances[:, -1].astype(np.float64)


def isolation_forest_scores(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
    """scikit-learn's ``IsolationForest`` (defaults, ``random_state=seed``) fitted on
    ``train (rows, features)``; returns ``-score_samples(test)``, float64 ``(events,)``."""
    forest = IsolationForest(random_state=seed).fit(train)
    return -forest.score_samples(test).astype(np.float64)


def compare_dataset(dataset: LabelledDataset, options: TrainingOptions, max_rows: int,
                    false_alarm_rate: float | None, k: float) -> dict[str, Any]:
    """Every detector on one dataset; the per-dataset object of :func:`compare`'s result.

    Raises:
        ValueError: the dataset is unlabelled, or its test rows hold one class.
    """
    started = time.perf_counter()
    dataset = subsample(dataset, max_rows, options.seed)
    assert dataset.labels is not None  # subsample refuses unlabelled data
    checkpoint = train_autoencoder(dataset, options)
    split = split_normal_rows(dataset.labels, len(dataset.values), options.seed)
    labels, test = dataset.labels[split.test], dataset.values[split.test]
    scores = build_detector(checkpoint, options.device).score_all(test)
    metrics = detection_metrics(labels, scores, checkpoint.validation_scores,
                                false_alarm_rate=false_alarm_rate, k=k)
    start = metrics["start"]
    plain = without_memory_bank(checkpoint, dataset) if checkpoint.memory_bank_state is not None else checkpoint
    train = dataset.values[split.train]
    return {
        "rows": int(len(dataset.values)), "features": int(dataset.values.shape[1]),
        "test_events": int(len(labels)), "test_anomalies": int(labels.sum()),
        "default": {"auc_roc": metrics["auc_roc"], "auc_pr": metrics["auc_pr"],
                    "precision": start["precision"], "recall": start["recall"], "f1": start["f1"],
                    "false_alarm_rate": start["false_alarm_rate"],
                    "target_false_alarm_rate": start["target_false_alarm_rate"], "k": start["k"],
                    "model": checkpoint.model_name, "score": checkpoint.score_name,
                    "epochs": int(checkpoint.training["epochs_run"])},
        "reconstruction": _ranking(labels, build_detector(plain, options.device).score_all(test)),
        "knn": _ranking(labels, knn_scores(train, test)),
        "iforest": _ranking(labels, isolation_forest_scores(train, test, options.seed)),
        "seconds": time.perf_counter() - started,
    }


def compare(paths: Iterable[Path | str], label_column: str | None = None, max_rows: int = 40_000,
            options: TrainingOptions = TrainingOptions(progress=False),
            false_alarm_rate: float | None = DEFAULT_FALSE_ALARM_RATE, k: float = 3.0,
            progress: bool = False) -> dict[str, Any]:
    """Run the benchmark of the module docstring over dataset files and folders.

    Args:
        paths: dataset files, or folders of them (see :func:`dataset_files`).
        label_column: the label column of generic CSV/parquet tables.
        max_rows: larger tables are subsampled to this many rows (see :func:`subsample`).
        options: the detector's training options (the defaults are the product's default).
        false_alarm_rate, k: the daemon's ``threshold`` settings (the starting threshold).
        progress: print a line per dataset as it finishes.

    Returns:
        ``{"datasets": {name: {"default": {auc_roc, auc_pr, precision, recall, f1,
        false_alarm_rate, target_false_alarm_rate, k, model, score, epochs}, "reconstruction":
        {auc_roc, auc_pr}, "knn": {...}, "iforest": {...}, rows, features, test_events,
        test_anomalies, seconds}}, "mean_auc_roc": {default, reconstruction, knn, iforest},
        "mean_auc_pr": {...}, "wins_vs_knn", "wins_vs_iforest", "datasets_compared",
        "settings": {...}}``. Wins count datasets where the default's AUC-ROC is higher.

    Raises:
        DatasetError: a path is missing or a file cannot be read (the message names it).
        ValueError: a dataset is unlabelled or its test rows hold one class.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> rng = np.random.default_rng(0)
        >>> X = np.vstack([rng.normal(size=(400, 4)), rng.normal(6, 1, size=(20, 4))])
        >>> y = np.r_[np.zeros(400), np.ones(20)]
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> np.savez(folder / "toy.npz", X=X, y=y)
        >>> result = compare([folder], options=TrainingOptions(epochs=5, progress=False))
        >>> sorted(result["datasets"]["toy"]), result["datasets"]["toy"]["knn"]["auc_roc"] > 0.9
        (['default', 'features', 'iforest', 'knn', 'reconstruction', 'rows', 'seconds', 'test_anomalies', \
'test_events'], True)
    """
    datasets: dict[str, Any] = {}
    for path in dataset_files(paths):
        dataset = load_dataset(path, label_column)
        if dataset.labels is None:
            raise ValueError(f"{path}: compare needs a labelled dataset")
        name = dataset.name if dataset.name not in datasets else str(path)
        datasets[name] = compare_dataset(dataset, options, max_rows, false_alarm_rate, k)
        if progress:
            result = datasets[name]
            print(f"compare: {name}: default {result['default']['auc_roc']:.4f}, kNN {result['knn']['auc_roc']:.4f}, "
                  f"IsolationForest {result['iforest']['auc_roc']:.4f} ({result['seconds']:.1f} s)", flush=True)
    detectors = ("default", "reconstruction", "knn", "iforest")
    results = list(datasets.values())
    return {
        "datasets": datasets,
        "mean_auc_roc": {d: float(np.mean([r[d]["auc_roc"] for r in results])) for d in detectors},
        "mean_auc_pr": {d: float(np.mean([r[d]["auc_pr"] for r in results])) for d in detectors},
        "wins_vs_knn": sum(r["default"]["auc_roc"] > r["knn"]["auc_roc"] for r in results),
        "wins_vs_iforest": sum(r["default"]["auc_roc"] > r["iforest"]["auc_roc"] for r in results),
        "datasets_compared": len(results),
        "settings": {"max_rows": max_rows, "seed": options.seed, "model": options.model, "score": options.score,
                     "epochs": options.epochs, "false_alarm_rate": false_alarm_rate,
                     "k": k if false_alarm_rate is None else None,
                     "device": str(resolve_device(options.device))},
    }


def table(result: dict[str, Any]) -> str:
    """The result as a text table: one row per dataset, then the means and the win counts."""
    header = (f"{'dataset':<22} {'rows':>7} {'default':>8} {'AE recon':>8} {'kNN':>8} {'IForest':>8} "
              f"{'AUC-PR':>7} {'kNN PR':>7} {'k':>5} {'target FAR':>10} {'FAR':>7} {'precision':>9} {'recall':>7}")
    lines = ["AUC-ROC of each detector on the held-out rows; the default's AUC-PR, kNN's AUC-PR, and the "
             "default at its starting threshold", header, "-" * len(header)]
    for name, r in result["datasets"].items():
        d = r["default"]
        target = "k given" if d["target_false_alarm_rate"] is None else f"{d['target_false_alarm_rate']:.2%}"
        lines.append(f"{name[:22]:<22} {r['rows']:>7,} {d['auc_roc']:>8.4f} {r['reconstruction']['auc_roc']:>8.4f} "
                     f"{r['knn']['auc_roc']:>8.4f} {r['iforest']['auc_roc']:>8.4f} {d['auc_pr']:>7.4f} "
                     f"{r['knn']['auc_pr']:>7.4f} {d['k']:>5.2f} {target:>10} {d['false_alarm_rate']:>7.2%} "
                     f"{d['precision']:>9.4f} {d['recall']:>7.4f}")
    means, pr = result["mean_auc_roc"], result["mean_auc_pr"]
    lines.append("-" * len(header))
    lines.append(f"{'mean':<22} {'':>7} {means['default']:>8.4f} {means['reconstruction']:>8.4f} "
                 f"{means['knn']:>8.4f} {means['iforest']:>8.4f} {pr['default']:>7.4f} {pr['knn']:>7.4f}")
    count = result["datasets_compared"]
    lines.append(f"default beats kNN on {result['wins_vs_knn']} of {count} datasets and IsolationForest on "
                 f"{result['wins_vs_iforest']} of {count} (AUC-ROC)")
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown table (the generated table of docs/results.md)."""
    lines = ["| dataset | rows × features | default (AE + memory bank) | same AE, reconstruction error "
             "| kNN (k = 5) | IsolationForest | default AUC-PR | kNN AUC-PR | target false-alarm rate "
             "| realised false-alarm rate | precision | recall |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["datasets"].items():
        d = r["default"]
        aucs = {key: r[key]["auc_roc"] for key in ("reconstruction", "knn", "iforest")}
        best = max(d["auc_roc"], *aucs.values())

        def cell(value: float, best: float = best) -> str:
            return f"**{value:.4f}**" if value == best else f"{value:.4f}"

        target = "k given" if d["target_false_alarm_rate"] is None else f"{d['target_false_alarm_rate']:.2%}"
        lines.append(f"| {name} | {r['rows']:,} × {r['features']} | {cell(d['auc_roc'])} | "
                     f"{cell(aucs['reconstruction'])} | {cell(aucs['knn'])} | {cell(aucs['iforest'])} | "
                     f"{d['auc_pr']:.4f} | {r['knn']['auc_pr']:.4f} | {target} | {d['false_alarm_rate']:.2%} | "
                     f"{d['precision']:.4f} | {d['recall']:.4f} |")
    means = result["mean_auc_roc"]
    pr = result["mean_auc_pr"]
    lines.append(f"| **mean** | | **{means['default']:.4f}** | {means['reconstruction']:.4f} | {means['knn']:.4f} | "
                 f"{means['iforest']:.4f} | {pr['default']:.4f} | {pr['knn']:.4f} | | | | |")
    count = result["datasets_compared"]
    lines.append("")
    lines.append(f"The default beats kNN on {result['wins_vs_knn']} of {count} datasets and IsolationForest on "
                 f"{result['wins_vs_iforest']} of {count} (AUC-ROC).")
    return "\n".join(lines)
