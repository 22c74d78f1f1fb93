"""Labelled datasets: loading the known layouts, synthetic data, and the seeded train/test split.

Layouts recognised by their columns:

* card transactions (ULB "Credit Card Fraud Detection"): ``Time, V1..V28, Amount, Class``
  as CSV or parquet; features ``V1..V28, Amount``, label ``Class``;
* ECG5000 heartbeats: ``is_anomaly, ucr_class, t0..t139``; windows of 140 samples;
* ADBench ``.npz`` files with arrays ``X`` (rows, features) and ``y`` (1 = anomaly);
* any other CSV or parquet: every column but the label column (``label_column``), all of
  them numeric (or, when asked, the numeric ones only).

A file without its label column is read only when the caller says every row is normal
(``unlabelled``): a table of transactions with its frauds left in must not train as normal.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
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
    if suffix not in (".parquet", ".csv", ".gz"):
        raise DatasetError(f"{path}: unsupported file type {suffix!r} (expected .csv, .parquet or .npz)")
    try:
        return pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas and pyarrow raise many types for a malformed file
        raise DatasetError(f"{path}: cannot be read as {suffix.lstrip('.')}: {exc}") from exc


def _is_number_column(frame: pd.DataFrame, column: object) -> bool:
    """Whether ``frame[column]`` holds numbers (booleans are not)."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return is_numeric_dtype(frame[column]) and not is_bool_dtype(frame[column])


def _numeric(frame: pd.DataFrame, columns: list[str], path: Path, what: str, hint: str = "") -> None:
    """Refuse ``columns`` of ``frame`` that are not numbers (naming them, then ``hint``)."""
    text = [str(c) for c in columns if not _is_number_column(frame, c)]
    if text:
        raise DatasetError(f"{path}: {what} {', '.join(map(repr, text[:10]))} "
                           f"{'is' if len(text) == 1 else 'are'} not numeric{hint}")


def _labels(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """int8 ``(rows,)`` labels from a numeric column: non-zero = anomaly."""
    _numeric(frame, [column], path, "label column")
    raw = frame[column].to_numpy(np.float64)
    if not np.isfinite(raw).all():
        raise DatasetError(f"{path}: label column {column!r} has {int((~np.isfinite(raw)).sum())} empty or "
                           "non-finite values")
    return (raw != 0).astype(np.int8)


def _label_fault(path: Path, column: str, present: bool, unlabelled: bool, layout: str) -> None:
    """Refuse a file without its label column (unless ``unlabelled``), or with one when the
    caller said it has none (its anomalies would train as normal)."""
    if present and unlabelled:
        raise DatasetError(f"{path}: has the label column {column!r}, but --unlabelled says every row is "
                           "normal; drop --unlabelled (its anomalies would train as normal)")
    if not present and not unlabelled:
        raise DatasetError(f"{path}: no label column {column!r} ({layout}); pass --unlabelled if every row is "
                           "normal, or name the label column with --label-column")


def _from_frame(frame: pd.DataFrame, path: Path, sha: str, label_column: str | None, unlabelled: bool,
                ignore_non_numeric: bool) -> LabelledDataset:
    columns = list(frame.columns)
    window_position = {c: int(match.group(1)) for c in columns if (match := _WINDOW_COLUMN.match(str(c)))}
    window_columns = list(window_position)
    if set(CARD_FEATURES) <= set(columns) and label_column in (None, "Class"):
        _label_fault(path, "Class", "Class" in columns, unlabelled, "the card-transaction layout's")
        _numeric(frame, CARD_FEATURES, path, "feature column")
        labels = _labels(frame, "Class", path) if "Class" in columns else None
        return LabelledDataset(path.stem, "transaction", frame[CARD_FEATURES].to_numpy(np.float32),
                               labels, list(CARD_FEATURES), sha)
    if window_columns and ("is_anomaly" in columns or unlabelled) and label_column in (None, "is_anomaly"):
        window_columns.sort(key=window_position.__getitem__)
        _label_fault(path, "is_anomaly", "is_anomaly" in columns, unlabelled, "the ECG5000 layout's")
        _numeric(frame, window_columns, path, "sample column")
        labels = _labels(frame, "is_anomaly", path) if "is_anomaly" in columns else None
        return LabelledDataset(path.stem, "window", frame[window_columns].to_numpy(np.float32),
                               labels, window_columns, sha)
    if label_column is None and not unlabelled:
        raise DatasetError(f"{path}: columns match no known layout (card transactions, ECG5000); name the "
                           "label column with --label-column, or pass --unlabelled if every row is normal")
    if label_column is not None and label_column not in columns:
        raise DatasetError(f"{path}: label column {label_column!r} not found among its columns "
                           f"{', '.join(map(str, columns[:10]))}{', ...' if len(columns) > 10 else ''}")
    features = [c for c in columns if c != label_column]
    if ignore_non_numeric:
        features = [c for c in features if _is_number_column(frame, c)]
    else:
        _numeric(frame, features, path, "column", "; pass --ignore-non-numeric to leave such columns out")
    labels = _labels(frame, label_column, path) if label_column is not None else None
    return LabelledDataset(path.stem, "transaction", frame[features].to_numpy(np.float32), labels,
                           [str(c) for c in features], sha)


def _from_npz(path: Path, sha: str, unlabelled: bool) -> LabelledDataset:
    """An ADBench-style ``.npz``: ``X`` ``(rows, features)`` numbers, ``y`` ``(rows,)`` labels."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "X" not in arrays:
                raise DatasetError(f"{path}: an .npz dataset needs the array 'X' (it has "
                                   f"{', '.join(arrays.files) or 'none'})")
            _label_fault(path, "y", "y" in arrays, unlabelled, "an .npz dataset's labels array")
            x = arrays["X"]
            y = arrays.get("y")
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: cannot be read as .npz: {exc}") from exc
    if x.ndim != 2:
        raise DatasetError(f"{path}: X has shape {x.shape}; expected (rows, features)")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DatasetError(f"{path}: X holds {x.dtype} values, not numbers")
    labels = None
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            raise DatasetError(f"{path}: y has shape {y.shape} but X has {len(x)} rows; expected ({len(x)},)")
        if not np.issubdtype(y.dtype, np.number) and y.dtype != bool:
            raise DatasetError(f"{path}: y holds {y.dtype} values, not 0/1 labels")
        labels = (y != 0).astype(np.int8)
    return LabelledDataset(path.stem, "transaction", x.astype(np.float32), labels,
                           [f"x{i}" for i in range(x.shape[1])], sha)


def load_dataset(path: Path | str, label_column: str | None = None, unlabelled: bool = False,
                 ignore_non_numeric: bool = False) -> LabelledDataset:
    """Read a dataset file, checking it up front; every message names the file.

    Args:
        path: ``.csv``, ``.parquet`` or ``.npz`` file.
        label_column: for generic tables, the column holding the label (non-zero = anomaly).
        unlabelled: the file has no label column and every row is normal (``labels`` is
            None); without it a missing label column is refused.
        ignore_non_numeric: leave out a generic table's non-numeric columns instead of
            refusing the file.

    Returns:
        The dataset, with float32 values of shape ``(rows, features)``.

    Raises:
        DatasetError: the file is missing or unreadable, of an unknown type or layout;
            its label column is missing without ``unlabelled``, or present with it; a
            column is not numeric; arrays have mismatched shapes; it has fewer than 2
            features; or a value is NaN or infinite.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    if unlabelled and label_column is not None:
        raise DatasetError(f"{path}: --label-column {label_column} and --unlabelled contradict each other; "
                           "give one of them")
    sha = _file_sha256(path)
    if path.suffix.lower() == ".npz":
        dataset = _from_npz(path, sha, unlabelled)
    else:
        dataset = _from_frame(_read_table(path), path, sha, label_column, unlabelled, ignore_non_numeric)
    rows, width = dataset.values.shape
    if rows == 0 or width < 2:
        raise DatasetError(f"{path}: {rows} rows of {width} features; a model needs rows and at least 2 features")
    finite = np.isfinite(dataset.values)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=0))
        raise DatasetError(f"{path}: {int((~finite).sum())} feature values are empty, NaN or infinite (in "
                           f"{', '.join(repr(dataset.feature_names[i]) for i in bad[:5])})")
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
