"""One checkpoint file: architecture, weights, scaler, input layout, validation score statistics, provenance.

Written with ``torch.save`` as a dictionary of tensors and plain Python values, and read
back with ``weights_only=True`` so that loading a checkpoint never runs pickled code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stream_ae.model.autoencoders import Autoencoder, build_model
from stream_ae.model.kinds import EventKind
from stream_ae.model.memory_bank import MemoryBank

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit what it is used for."""


@dataclass
class Checkpoint:
    """A trained model and everything needed to serve it.

    Attributes:
        model_name: key of ``autoencoders.MODEL_BUILDERS``.
        hparams: the model constructor's keyword arguments.
        state_dict: the weights.
        kind: ``transaction`` or ``window``.
        feature_names: names of the ``features`` input columns (``t0..`` for windows).
        scaler_mean, scaler_std: float32 arrays of shape ``(features,)``; the model sees
            ``(x - mean) / std``.
        score_mean, score_std: mean and standard deviation of the anomaly score (the
            memory-bank distance, or the model's own error without a bank; see
            :mod:`stream_ae.model.detector`) on held-out normal (validation) rows, for reports.
        validation_scores: float32 ``(validation rows,)``, those scores themselves; the
            adaptive threshold is seeded from them
            (``stream_ae.pipeline.threshold.adaptive.seed_statistics``).
        training: provenance: seed, dataset name, split indices, epochs run, wall time
            (seconds), per-epoch train/validation loss.
        memory_bank_state: the memory bank's state (:meth:`MemoryBank.state`), or None when
            events are scored by the model's own error alone.
        dataset_sha256: sha256 of the dataset file it was trained on (``LabelledDataset.sha256``;
            empty when unknown), so that evaluation and replay know that file again.
        sha256: digest of the file it was loaded from (empty before saving).
    """

    model_name: str
    hparams: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    kind: EventKind
    feature_names: list[str]
    scaler_mean: np.ndarray
    scaler_std: np.ndarray
    score_mean: float
    score_std: float
    validation_scores: np.ndarray
    training: dict[str, Any] = field(default_factory=dict)
    memory_bank_state: dict[str, Any] | None = None
    dataset_sha256: str = ""
    sha256: str = ""

    @property
    def input_dim(self) -> int:
        """Features per event (samples per window)."""
        return len(self.feature_names)

    @property
    def window_length(self) -> int | None:
        """Samples per window, or None for transactions."""
        return self.input_dim if self.kind == "window" else None

    def build(self) -> Autoencoder:
        """Rebuild the model with its weights, in eval mode, on the CPU."""
        model = build_model(self.model_name, self.input_dim, self.hparams)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def memory_bank(self) -> MemoryBank | None:
        """The memory bank that scores events (on the CPU), or None: the model's own error does."""
        return None if self.memory_bank_state is None else MemoryBank.from_state(self.memory_bank_state)

    @property
    def score_name(self) -> str:
        """``memory-bank`` or ``reconstruction``: how events are scored."""
        return "reconstruction" if self.memory_bank_state is None else str(self.memory_bank_state["name"])

    def describe(self) -> str:
        """A one-line summary: model, score, input layout, hash prefix."""
        layout = f"window of {self.input_dim}" if self.kind == "window" else f"{self.input_dim} features"
        return f"{self.model_name} autoencoder ({self.score_name} score), {layout}, sha256 {self.sha256[:12]}"


def _as_plain(value: Any) -> Any:
    """Turn numpy values into types that ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _as_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_plain(item) for item in value]
    return value


def save_checkpoint(checkpoint: Checkpoint, path: Path | str) -> str:
    """Write the checkpoint to ``path`` (parent folders are created).

    Returns:
        The sha256 of the written file, also stored in ``checkpoint.sha256``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "model_name": checkpoint.model_name,
        "hparams": _as_plain(checkpoint.hparams),
        "state_dict": checkpoint.state_dict,
        "kind": checkpoint.kind,
        "feature_names": list(checkpoint.feature_names),
        "scaler_mean": torch.as_tensor(checkpoint.scaler_mean, dtype=torch.float32),
        "scaler_std": torch.as_tensor(checkpoint.scaler_std, dtype=torch.float32),
        "score_mean": float(checkpoint.score_mean),
        "score_std": float(checkpoint.score_std),
        "validation_scores": torch.as_tensor(checkpoint.validation_scores, dtype=torch.float32),
        "training": _as_plain(checkpoint.training),
        "memory_bank": checkpoint.memory_bank_state,
        "dataset_sha256": checkpoint.dataset_sha256,
    }
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)
    checkpoint.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    return checkpoint.sha256


def _as_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {key: _as_numpy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_numpy(item) for item in value]
    return value


# Keys that files written before the detector contract (December 2026) hold under other names.
_OLD_KEYS = {"score_mean": "error_mean", "score_std": "error_std", "validation_scores": "validation_errors",
             "memory_bank": "score_head"}


def _renamed(payload: dict[str, Any], key: str) -> Any:
    """``payload[key]``, or the value an older file holds under the key's former name."""
    return payload[key] if key in payload else payload[_OLD_KEYS[key]]


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, not a checkpoint, or of another format version.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file; its advice is not ours
        raise CheckpointError(f"{path} is not a stream-ae checkpoint: not a file `stream-ae train` wrote, "
                              "or one holding more than tensors and plain values (never loaded)") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a stream-ae checkpoint of format version {FORMAT_VERSION}")
    return Checkpoint(
        model_name=payload["model_name"],
        hparams=_as_numpy(payload["hparams"]),
        state_dict=payload["state_dict"],
        kind=payload["kind"],
        feature_names=list(payload["feature_names"]),
        scaler_mean=payload["scaler_mean"].numpy(),
        scaler_std=payload["scaler_std"].numpy(),
        score_mean=float(_renamed(payload, "score_mean")),
        score_std=float(_renamed(payload, "score_std")),
        validation_scores=_renamed(payload, "validation_scores").numpy(),
        training=_as_numpy(payload["training"]),
        memory_bank_state=payload.get("memory_bank", payload.get(_OLD_KEYS["memory_bank"])),
        dataset_sha256=payload.get("dataset_sha256") or payload["training"].get("dataset_sha256", ""),  # older files
        sha256=hashlib.sha256(raw).hexdigest(),
    )
