"""Labelled datasets: loading the known layouts, synthetic data, and the seeded train/test split.

Layouts recognised by their columns:

* card transactions (ULB "Credit Card Fraud Detection"): ``Time, V1..V28, Amount, Class``
  as CSV or parquet; features ``V1..V28, Amount``, label ``Class``;
* ECG5000 heartbeats: ``is_anomaly, ucr_class, t0..t139``; windows of 140 samples;
* ADBench ``.npz`` files with arrays ``X`` (rows, features) and ``y`` (1 = anomaly);
* any other CSV or parquet: every numeric column but the label column (``label_column``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stream_ae.model.kinds import EventKind

if TYPE_CHECKING:  # pandas is imported only where a table is read: the daemon never needs it
    import pandas as pd

CARD_FEATURES = [f"V{i}" for i in range(1, 29)] + ["Amount"]
_WINDOW_COLUMN = re.compile(r"^t(\d+)$")


class DatasetError(ValueError):
    """A dataset file is missing, unreadable, or not of a layout we can use."""


@dataclass(frozen=True)
class LabelledDataset:
    """Rows of one dataset in memory.

    Attributes:
        name: a short name (the file's stem, or ``synthetic``).
        kind: ``transaction`` (named features) or ``window`` (a fixed-length signal).
        values: float32 array of shape ``(rows, features)``; for windows ``features`` is the
            window length.
        labels: int8 array of shape ``(rows,)``, 1 = anomaly, or None when unlabelled.
        feature_names: one name per column of ``values`` (``t0..`` for windows).
        sha256: digest of the file's bytes (of the generated arrays for synthetic data).
    """

    name: str
    kind: EventKind
    values: np.ndarray
    labels: np.ndarray | None
    feature_names: list[str]
    sha256: str

    @property
    def window_length(self) -> int | None:
        """Samples per window, or None for transactions."""
        return self.values.shape[1] if self.kind == "window" else None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".csv", ".gz"):
        return pd.read_csv(path)
    raise DatasetError(f"{path}: unsupported file type {suffix!r} (expected .csv, .parquet or .npz)")


def _from_frame(frame: pd.DataFrame, name: str, sha: str, label_column: str | None) -> LabelledDataset:
    from pandas.api.types import is_numeric_dtype

    columns = list(frame.columns)
    window_position = {c: int(match.group(1)) for c in columns if (match := _WINDOW_COLUMN.match(str(c)))}
    window_columns = list(window_position)
    if set(CARD_FEATURES) <= set(columns) and label_column in (None, "Class"):
        labels = frame["Class"].to_numpy(np.int8) if "Class" in columns else None
        return LabelledDataset(name, "transaction", frame[CARD_FEATURES].to_numpy(np.float32),
                               labels, list(CARD_FEATURES), sha)
    if window_columns and "is_anomaly" in columns and label_column in (None, "is_anomaly"):
        window_columns.sort(key=window_position.__getitem__)
        return LabelledDataset(name, "window", frame[window_columns].to_numpy(np.float32),
                               frame["is_anomaly"].to_numpy(np.int8), window_columns, sha)
    if label_column is None:
        raise DatasetError(
            f"{name}: columns match no known layout (card transactions, ECG5000); "
            "name the label column with --label-column"
        )
    if label_column not in columns:
        raise DatasetError(f"{name}: label column {label_column!r} not found in {columns[:10]}...")
    features = [c for c in columns if c != label_column and is_numeric_dtype(frame[c])]
    if not features:
        raise DatasetError(f"{name}: no numeric feature columns besides {label_column!r}")
    labels = (frame[label_column].to_numpy() != 0).astype(np.int8)
    return LabelledDataset(name, "transaction", frame[features].to_numpy(np.float32), labels,
                           [str(c) for c in features], sha)


def load_dataset(path: Path | str, label_column: str | None = None) -> LabelledDataset:
    """Read a labelled dataset file.

    Args:
        path: ``.csv``, ``.parquet`` or ``.npz`` file.
        label_column: for generic tables, the column holding the label (non-zero = anomaly).

    Returns:
        The dataset, with float32 values of shape ``(rows, features)``.

    Raises:
        DatasetError: the file is missing, of an unknown type or layout, or holds NaN/inf.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    sha = _file_sha256(path)
    if path.suffix.lower() == ".npz":
        with np.load(path) as arrays:
            if "X" not in arrays or "y" not in arrays:
                raise DatasetError(f"{path}: an .npz dataset needs arrays 'X' and 'y'")
            values = np.asarray(arrays["X"], dtype=np.float32)
            labels = (np.asarray(arrays["y"]) != 0).astype(np.int8)
        dataset = LabelledDataset(path.stem, "transaction", values, labels,
                                  [f"x{i}" for i in range(values.shape[1])], sha)
    else:
        dataset = _from_frame(_read_table(path), path.stem, sha, label_column)
    if not np.isfinite(dataset.values).all():
        raise DatasetError(f"{path}: feature values hold NaN or inf")
    return dataset


def synthetic_transactions(rows: int = 20_000, anomaly_fraction: float = 0.02,
                           seed: int = 7) -> LabelledDataset:
    """Generate a card-transaction-shaped dataset (``V1..V28, Amount``) with known anomalies.

    Normal rows are drawn from a correlated Gaussian (a random low-rank covariance plus
    noise) with a log-normal ``Amount``; anomalies break the correlation structure and
    carry larger amounts, the pattern fraud shows in the real data.

    Returns:
        A dataset of ``rows`` rows, ``round(rows * anomaly_fraction)`` of them anomalies.
    """
    rng = np.random.default_rng(seed)
    n_anomalies = int(round(rows * anomaly_fraction))
    n_normal = rows - n_anomalies
    loadings = rng.normal(size=(6, 28))
    normal = rng.normal(size=(n_normal, 6)) @ loadings + 0.3 * rng.normal(size=(n_normal, 28))
    anomalous = rng.normal(size=(n_anomalies, 6)) @ loadings + 0.3 * rng.normal(size=(n_anomalies, 28))
    anomalous += rng.normal(scale=5.0, size=anomalous.shape) * (rng.random(anomalous.shape) < 0.4)
    amount_normal = rng.lognormal(3.0, 1.0, size=(n_normal, 1))
    amount_anomalous = rng.lognormal(4.5, 1.2, size=(n_anomalies, 1))
    values = np.vstack([np.hstack([normal, amount_normal]), np.hstack([anomalous, amount_anomalous])])
    labels = np.concatenate([np.zeros(n_normal, np.int8), np.ones(n_anomalies, np.int8)])
    order = rng.permutation(rows)
    values, labels = values[order].astype(np.float32), labels[order]
    sha = hashlib.sha256(values.tobytes() + labels.tobytes()).hexdigest()
    return LabelledDataset("synthetic", "transaction", values, labels, list(CARD_FEATURES), sha)


@dataclass(frozen=True)
class Split:
    """Row indices of a seeded split: the model sees only normal rows.

    ``train`` and ``validation`` hold normal rows only (the validation rows drive early
    stopping and the reconstruction-error statistics); ``test`` holds the remaining normal
    rows and every anomaly, and is what evaluation and the demo's replay use.
    """

    seed: int
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def split_normal_rows(labels: np.ndarray | None, rows: int, seed: int, train_fraction: float = 0.8,
                      validation_fraction: float = 0.15) -> Split:
    """Split rows for training on normal data.

    Args:
        labels: ``(rows,)`` with 1 = anomaly, or None (all rows taken as normal).
        rows: number of rows.
        seed: seed of the permutation of the normal rows.
        train_fraction: share of the normal rows used for fitting (train + validation).
        validation_fraction: share of those fitting rows held out for validation.

    Returns:
        Sorted int64 index arrays; ``test`` = the other normal rows + every anomaly.
    """
    normal = np.arange(rows) if labels is None else np.flatnonzero(labels == 0)
    anomalies = np.empty(0, np.int64) if labels is None else np.flatnonzero(labels != 0)
    shuffled = np.random.default_rng(seed).permutation(normal)
    n_fit = int(round(len(shuffled) * train_fraction))
    n_validation = max(1, int(round(n_fit * validation_fraction)))
    fit, rest = shuffled[:n_fit], shuffled[n_fit:]
    return Split(
        seed=seed,
        train=np.sort(fit[n_validation:]).astype(np.int64),
        validation=np.sort(fit[:n_validation]).astype(np.int64),
        test=np.sort(np.concatenate([rest, anomalies])).astype(np.int64),
    )
