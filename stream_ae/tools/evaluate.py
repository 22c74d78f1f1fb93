"""``stream-ae evaluate``: score a labelled dataset with a checkpoint; metrics, report and plots.

Given the file the checkpoint was trained on (same sha256), only the rows the training held
out are scored (``checkpoint.training["split"]["test"]``: the unused normal rows and every
anomaly); given any other file, every row, with a warning (logged, and in the report):
figures of a model on data other than its own are easily misread. The events are scored by the
checkpoint's detector (:func:`stream_ae.model.detector.build_detector`), the daemon's own, so
the scores are those the daemon would stream.

Metrics come from scikit-learn: AUC-ROC (``roc_auc_score``), AUC-PR as average precision
(``average_precision_score``), precision / recall / F1 (``precision_recall_fscore_support``)
and the confusion matrix (``confusion_matrix``) at the threshold the daemon starts with
(``start``: k calibrated to the target false-alarm rate, by default 5 %, with the realised
false-alarm rate on the evaluated normal rows beside the target), at the thresholds for
k = 1, 2, 3 (the seeded threshold of the checkpoint's validation scores,
:meth:`~stream_ae.pipeline.threshold.adaptive.AdaptiveThreshold.from_validation_scores`, on
the log scale by default; an event is flagged when its score is above it), and at the
threshold with the best F1 on the evaluated rows (``precision_recall_curve``; chosen on
those rows, so an upper bound, not a setting).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import (
    PrecisionRecallDisplay,
    RocCurveDisplay,
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

from stream_ae.model.checkpoint import Checkpoint, load_checkpoint
from stream_ae.model.datasets import LabelledDataset, load_dataset
from stream_ae.model.detector import build_detector
from stream_ae.pipeline.threshold.adaptive import DEFAULT_FALSE_ALARM_RATE, AdaptiveThreshold

log = logging.getLogger(__name__)

THRESHOLD_KS = (1, 2, 3)


def evaluation_rows(checkpoint: Checkpoint, dataset: LabelledDataset) -> tuple[np.ndarray, bool]:
    """The rows to score: the held-out rows for the training file, else every row.

    Returns:
        int64 row indices ``(events,)`` and whether they are the held-out rows.
    """
    if checkpoint.dataset_sha256 == dataset.sha256:
        return np.asarray(checkpoint.training["split"]["test"], dtype=np.int64), True
    return np.arange(len(dataset.values), dtype=np.int64), False


def other_data_warning(checkpoint: Checkpoint, checkpoint_path: Path | str, data_path: Path | str) -> str:
    """The warning for a dataset file other than the one ``checkpoint`` was trained on."""
    trained_on = checkpoint.training.get("dataset", "an unrecorded dataset")
    digest = f"sha256 {checkpoint.dataset_sha256[:12]}" if checkpoint.dataset_sha256 else "no digest recorded"
    return (f"{data_path} is not the file {checkpoint_path} was trained on ({trained_on}, {digest}): every row "
            "is scored, and figures on data unlike the training data may mean little")


def operating_point(labels: np.ndarray, flags: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1, flagged count, false-alarm rate (false positives over the normal
    events) and the confusion matrix ``[[tn, fp], [fn, tp]]`` of ``flags (events,)`` against
    ``labels (events,)``, with the ``threshold`` that gave the flags."""
    precision, recall, f1, _ = precision_recall_fscore_support(labels, flags, average="binary",
                                                               zero_division=0)
    matrix = confusion_matrix(labels, flags, labels=[0, 1])
    (true_negatives, false_positives), _ = matrix
    return {"threshold": float(threshold), "precision": float(precision), "recall": float(recall),
            "f1": float(f1), "flagged": int(flags.sum()),
            "false_alarm_rate": float(false_positives / max(true_negatives + false_positives, 1)),
            "confusion_matrix": matrix.tolist()}


def detection_metrics(labels: np.ndarray, scores: np.ndarray, validation_scores: np.ndarray,
                      scale: str = "log", false_alarm_rate: float | None = DEFAULT_FALSE_ALARM_RATE,
                      k: float = 3.0) -> dict[str, Any]:
    """Ranking and thresholded metrics of anomaly scores against labels.

    Args:
        labels: ``(events,)`` with 1 = anomaly.
        scores: ``(events,)``, higher = more anomalous.
        validation_scores: ``(rows,)`` scores of normal validation rows; every threshold is
            the seeded threshold of them for some k (:meth:`AdaptiveThreshold.from_validation_scores`).
        scale: ``log`` (the daemon's default; scores must be positive) or ``linear``.
        false_alarm_rate, k: the daemon's ``threshold.false_alarm_rate`` and ``threshold.k``,
            which give the k it starts with (:func:`~stream_ae.pipeline.threshold.adaptive.starting_k`).

    Returns:
        ``auc_roc``, ``auc_pr``; ``start``: the operating point of the threshold the daemon
        starts with (``k``, ``target_false_alarm_rate``, ``threshold``, ``precision``,
        ``recall``, ``f1``, ``flagged``, ``false_alarm_rate`` realised on the normal events,
        ``confusion_matrix`` as ``[[tn, fp], [fn, tp]]``); ``thresholds``: the same per k in
        :data:`THRESHOLD_KS`; and ``best_f1`` (the operating point with the best F1 over
        every threshold, flagging scores ``>=`` it, as ``precision_recall_curve`` does).

    Raises:
        ValueError: the labels hold only one class, so no ranking metric is defined.
    """
    labels = np.asarray(labels).astype(np.int8)
    if len(np.unique(labels)) < 2:
        raise ValueError("evaluation needs both normal and anomalous rows; the labels hold one class")
    precision, recall, cut_points = precision_recall_curve(labels, scores)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.nan_to_num(2 * precision[:-1] * recall[:-1] / (precision[:-1] + recall[:-1]))
    best = cut_points[int(np.argmax(f1))]

    def at(threshold: AdaptiveThreshold) -> dict[str, Any]:
        cut = threshold.seed_threshold
        return {"k": threshold.k, **operating_point(labels, scores > cut, cut)}

    def seeded(k: float, false_alarm_rate: float | None = None) -> AdaptiveThreshold:
        return AdaptiveThreshold.from_validation_scores(validation_scores, k, scale, false_alarm_rate=false_alarm_rate)

    return {
        "auc_roc": float(roc_auc_score(labels, scores)),
        "auc_pr": float(average_precision_score(labels, scores)),
        "start": {"target_false_alarm_rate": false_alarm_rate, **at(seeded(k, false_alarm_rate))},
        "thresholds": [at(seeded(k)) for k in THRESHOLD_KS],
        "best_f1": operating_point(labels, scores >= best, best),
    }


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The one-line summary: AUC-ROC, AUC-PR, and at the starting threshold its k, the target
    and realised false-alarm rates, precision, recall and F1."""
    start = metrics["start"]
    return {"auc_roc": metrics["auc_roc"], "auc_pr": metrics["auc_pr"],
            **{key: start[key] for key in ("k", "target_false_alarm_rate", "false_alarm_rate", "threshold",
                                          "precision", "recall", "f1")},
            "best_f1": metrics["best_f1"]["f1"]}


# -- plots (matplotlib's object API: figures rendered by Agg, no pyplot state) -------------

def _plot_error_distribution(path: Path, labels: np.ndarray, scores: np.ndarray,
                             metrics: dict[str, Any], title: str) -> None:
    """Histogram of the score per class (each normalised to its own total), threshold lines."""
    figure = Figure(figsize=(8, 4.5))
    axes = figure.subplots()
    positive = bool((scores > 0).all())
    low, high = float(scores.min()), float(scores.max())
    bins = np.geomspace(low, high, 80).tolist() if positive and high > low else 80
    for label, name, colour in ((0, "normal", "tab:blue"), (1, "anomaly", "tab:red")):
        chosen = scores[labels == label]
        axes.hist(chosen, bins=bins, density=True, histtype="stepfilled", alpha=0.45, color=colour,
                  label=f"{name} ({len(chosen):,})")
    if positive:
        axes.set_xscale("log")
    styles = {1: ":", 2: "-.", 3: "--"}
    for point in metrics["thresholds"]:
        axes.axvline(point["threshold"], color="black", linestyle=styles.get(point["k"], "--"), linewidth=1.2,
                     label=f"k = {point['k']}: {point['threshold']:.3g} (F1 {point['f1']:.2f})")
    best = metrics["best_f1"]
    axes.axvline(best["threshold"], color="tab:green", linewidth=1.2,
                 label=f"best F1 on these rows: {best['threshold']:.3g} (F1 {best['f1']:.2f})")
    axes.set_xlabel("anomaly score" + (" (log scale)" if positive else ""))
    axes.set_ylabel("density within class")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _plot_roc(path: Path, labels: np.ndarray, scores: np.ndarray, title: str) -> None:
    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    RocCurveDisplay.from_predictions(labels, scores, ax=axes, name="autoencoder score",
                                     plot_chance_level=True)
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _plot_precision_recall(path: Path, labels: np.ndarray, scores: np.ndarray,
                           metrics: dict[str, Any], title: str) -> None:
    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    PrecisionRecallDisplay.from_predictions(labels, scores, ax=axes, name="autoencoder score",
                                            plot_chance_level=True)
    for point in metrics["thresholds"]:
        axes.plot(point["recall"], point["precision"], "o", label=f"k = {point['k']}")
    axes.legend(fontsize=8)
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _plot_loss(path: Path, history: dict[str, list[float]], title: str) -> None:
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    epochs = np.arange(1, len(history.get("train_loss", [])) + 1)
    axes.plot(epochs, history.get("train_loss", []), label="training loss (the model's objective)")
    axes.plot(epochs, history.get("validation_loss", []), label="validation score (mean over normal rows)")
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss (log scale)")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


# -- report --------------------------------------------------------------------------------

PLOTS = {"error_distribution": "error_distribution.png", "roc": "roc.png",
         "precision_recall": "precision_recall.png", "loss": "loss.png"}


def _markdown(report: dict[str, Any]) -> str:
    metrics = report["metrics"]
    start = metrics["start"]
    target = start["target_false_alarm_rate"]
    start_label = f"start: {start['k']:.3g}" + ("" if target is None else f" (target false-alarm rate {target:.2%})")
    points = [{**start, "k": start_label}, *metrics["thresholds"], {**metrics["best_f1"], "k": "best F1"}]
    rows = "\n".join(
        f"| {p['k']} | {p['threshold']:.4g} | {p['flagged']:,} | {p['precision']:.4f} | {p['recall']:.4f} "
        f"| {p['f1']:.4f} | {p['false_alarm_rate']:.2%} "
        f"| {p['confusion_matrix'][0][0]:,} | {p['confusion_matrix'][0][1]:,} "
        f"| {p['confusion_matrix'][1][0]:,} | {p['confusion_matrix'][1][1]:,} |" for p in points)
    training = report["training"]
    which = "the rows its training held out" if report["held_out_rows"] else "every row (not its training file)"
    return f"""# Evaluation of {report['model']} on {report['dataset']}

- checkpoint: `{report['checkpoint']}` (sha256 `{report['checkpoint_sha256'][:12]}`), hyper-parameters `{json.dumps(report['hparams'])}`
- data: `{report['data']}`, {which}: {report['events']:,} events, {report['anomalies']:,} anomalies
- training: {training.get('epochs_run')} epochs in {training.get('wall_time_s', float('nan')):.1f} s, seed {training.get('seed')}
{''.join(f"- **warning:** {warning}" + chr(10) for warning in report['warnings'])}
| AUC-ROC | AUC-PR |
|---|---|
| {metrics['auc_roc']:.4f} | {metrics['auc_pr']:.4f} |

Thresholds: mean + k · std of the log score of the checkpoint's validation rows after upper-tail sigma clipping (plain validation score mean {report['score_mean']:.4g}, std {report['score_std']:.4g}); an event is flagged above it. The first row is the one the daemon starts with (k calibrated to the target false-alarm rate; the realised rate on these normal rows beside it). The best-F1 threshold is chosen on these same rows: an upper bound, not a setting.

| k | threshold | flagged | precision | recall | F1 | false-alarm rate | TN | FP | FN | TP |
|---|---|---|---|---|---|---|---|---|---|---|
{rows}

![score distribution per class]({PLOTS['error_distribution']})

![ROC curve]({PLOTS['roc']}) ![precision-recall curve]({PLOTS['precision_recall']})

![loss per epoch]({PLOTS['loss']})
"""  # noqa: E501 (the report's Markdown lines)


def evaluate(checkpoint_path: Path | str, data_path: Path | str, report_dir: Path | str,
             label_column: str | None = None, device: str = "auto",
             ignore_non_numeric: bool = False, false_alarm_rate: float | None = DEFAULT_FALSE_ALARM_RATE,
             k: float = 3.0) -> dict[str, Any]:
    """Score a labelled dataset with a checkpoint and write the report.

    ``false_alarm_rate`` and ``k`` are the daemon's ``threshold`` settings: they give the
    threshold it starts with, whose realised false-alarm rate the report gives.

    Writes ``report.json``, ``report.md`` and the PNG plots of :data:`PLOTS` into
    ``report_dir`` (created if needed). ``ignore_non_numeric``: as for
    :func:`stream_ae.model.datasets.load_dataset`.

    Returns:
        The report as written to ``report.json`` (its ``metrics`` as in :func:`detection_metrics`).

    Raises:
        CheckpointError: the checkpoint cannot be read.
        DatasetError: the dataset cannot be read.
        ValueError: the dataset is unlabelled, holds one class, or does not fit the model.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    dataset = load_dataset(data_path, label_column, ignore_non_numeric=ignore_non_numeric)
    if dataset.labels is None:
        raise ValueError(f"{data_path}: evaluation needs a labelled dataset")
    if dataset.kind != checkpoint.kind or list(dataset.feature_names) != list(checkpoint.feature_names):
        raise ValueError(f"{data_path}: its {dataset.kind} events with {len(dataset.feature_names)} features do not "
                         f"fit {checkpoint.describe()}")
    rows, held_out = evaluation_rows(checkpoint, dataset)
    warnings = [] if held_out else [other_data_warning(checkpoint, checkpoint_path, data_path)]
    for warning in warnings:
        log.warning("%s", warning)
    labels = dataset.labels[rows]
    scores = build_detector(checkpoint, device).score_all(dataset.values[rows])
    metrics = detection_metrics(labels, scores, checkpoint.validation_scores,
                                false_alarm_rate=false_alarm_rate, k=k)
    training = checkpoint.training
    report = {
        "checkpoint": str(checkpoint_path), "checkpoint_sha256": checkpoint.sha256,
        "model": checkpoint.model_name, "hparams": checkpoint.hparams,
        "dataset": dataset.name, "data": str(data_path), "dataset_sha256": dataset.sha256,
        "held_out_rows": held_out, "events": int(len(rows)), "anomalies": int(labels.sum()),
        "score_mean": checkpoint.score_mean, "score_std": checkpoint.score_std,
        "training": {key: training[key] for key in ("seed", "epochs_run", "wall_time_s") if key in training},
        "warnings": warnings,
        "metrics": metrics,
        "plots": dict(PLOTS),
    }
    directory = Path(report_dir)
    directory.mkdir(parents=True, exist_ok=True)
    title = f"{checkpoint.model_name} on {dataset.name}"
    _plot_error_distribution(directory / PLOTS["error_distribution"], labels, scores, metrics,
                             f"{title}: score per class")
    _plot_roc(directory / PLOTS["roc"], labels, scores, f"{title}: ROC")
    _plot_precision_recall(directory / PLOTS["precision_recall"], labels, scores, metrics,
                           f"{title}: precision-recall")
    _plot_loss(directory / PLOTS["loss"], training.get("history", {}), f"{title}: loss per epoch")
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=_plain))
    (directory / "report.md").write_text(_markdown(report))
    return report


def _plain(value: Any) -> Any:
    """JSON fallback for numpy values in hyper-parameters."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
