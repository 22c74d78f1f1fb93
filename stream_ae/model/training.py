"""Fit an autoencoder on normal events only, with early stopping, into one checkpoint."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from stream_ae.model.autoencoders import DEFAULT_MODEL, build_model
from stream_ae.model.checkpoint import Checkpoint
from stream_ae.model.datasets import LabelledDataset, split_normal_rows
from stream_ae.model.detector import model_scores
from stream_ae.model.device import device_name_fault, resolve_device
from stream_ae.model.kinds import EventKind
from stream_ae.model.memory_bank import BankOptions, fit_memory_bank

SCORES = ("memory-bank", "reconstruction")


@dataclass(frozen=True)
class TrainingOptions:
    """Hyper-parameters of the fit.

    Attributes:
        model: a key of ``autoencoders.MODEL_BUILDERS``.
        hparams: the model constructor's keyword arguments (e.g. ``{"score": "elbo"}`` for
            ``vae``); empty for the model's defaults. Stored in the checkpoint.
        epochs: upper bound on passes over the training rows.
        batch_size: rows per optimiser step.
        learning_rate: Adam's step size (Kingma & Ba, 2015).
        patience: epochs without a better validation loss before stopping early.
        seed: seeds the split, the weight initialisation and the batch order.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        progress: show a progress bar on stderr.
        score: ``memory-bank`` (the default: distance to the nearest normal training rows
            in the autoencoder's view, :mod:`stream_ae.model.memory_bank`) or
            ``reconstruction`` (the model's own score, the reconstruction error).
        bank: how the memory bank is built (``score: memory-bank`` only).
    """

    model: str = DEFAULT_MODEL
    hparams: dict[str, Any] = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 8
    seed: int = 42
    device: str = "auto"
    progress: bool = True
    score: str = "memory-bank"
    bank: BankOptions = field(default_factory=BankOptions)

    def __post_init__(self) -> None:
        """Refuse hyper-parameters no fit can run with.

        Raises:
            ValueError: ``epochs``, ``batch_size`` or ``patience`` below 1, a learning rate
                that is not a positive number, a device name other than ``auto``,
                ``cpu``, ``cuda`` or ``cuda:N``, or a score not in :data:`SCORES`.
        """
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise ValueError(f"learning_rate must be a positive number, not {self.learning_rate}")
        if fault := device_name_fault(self.device):
            raise ValueError(f"device {fault}")
        if self.score not in SCORES:
            raise ValueError(f"unknown score {self.score!r}; choose one of {list(SCORES)}")


def fit_scaler(rows: np.ndarray, kind: EventKind) -> tuple[np.ndarray, np.ndarray]:
    """The standardisation ``(x - mean) / std`` of the events, fitted on normal training rows.

    Transactions: one mean and one standard deviation per feature (a standard scaler), since
    the features have their own units. Windows: one mean and one standard deviation over
    every sample of every window, repeated at each position, since a window's samples share
    one unit and one scale: a per-position scale would magnify the positions where normal
    windows barely vary (the flat stretches of a heartbeat), so that noise there outweighs
    a misshapen beat. Measured (``stream-ae compare``, seed 42, docs/results.md, "Standardisation"):
    on ECG5000 the default's AUC-ROC rose from 0.9869 to 0.9916; on 52 windowed NAB series,
    whose positions share one distribution, the mean moved from 0.9069 to 0.9067.

    Args:
        rows: float32 ``(rows, features)``, the normal training rows.
        kind: the dataset's event kind.

    Returns:
        ``(mean, std)``, float32 ``(features,)`` each; a standard deviation below 1e-6 (a
        constant feature) is replaced by 1.

    Example:
        >>> import numpy as np
        >>> windows = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]], dtype=np.float32)
        >>> mean, std = fit_scaler(windows, "window")
        >>> mean.tolist(), [round(float(value), 3) for value in std]
        ([2.0, 2.0, 2.0], [1.291, 1.291, 1.291])
        >>> [a.tolist() for a in fit_scaler(windows, "transaction")]
        [[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]
    """
    if kind == "window":
        mean = np.full(rows.shape[1], rows.mean(), dtype=np.float32)
        std = np.full(rows.shape[1], rows.std(), dtype=np.float32)
    else:
        mean = rows.mean(axis=0).astype(np.float32)
        std = rows.std(axis=0).astype(np.float32)
    std[std < 1e-6] = 1.0
    return mean, std


def train_autoencoder(dataset: LabelledDataset, options: TrainingOptions = TrainingOptions()) -> Checkpoint:
    """Train on the normal rows of ``dataset`` and return an unsaved checkpoint.

    The rows are split with :func:`datasets.split_normal_rows` (seeded); the standardisation
    is fitted on the training rows (:func:`fit_scaler`); the weights with the lowest
    validation loss (the model's mean error on the validation rows,
    :func:`stream_ae.model.detector.model_scores`) are kept; the validation rows' scores, with
    their mean and std, go into the checkpoint to seed the threshold.

    With ``options.score == "memory-bank"`` the trained model's memory bank is fitted on the
    same rows (:func:`stream_ae.model.memory_bank.fit_memory_bank`) and stored in the
    checkpoint, and the validation statistics are those of the bank's score.

    Raises:
        ValueError: unknown model or score, a model that does not take the dataset's event
            kind (``conv`` on transactions), or too few normal rows to train (fewer than 10).
    """
    started = time.perf_counter()
    split = split_normal_rows(dataset.labels, len(dataset.values), options.seed)
    if len(split.train) < 10:
        raise ValueError(f"{dataset.name}: only {len(split.train)} normal training rows; need at least 10")
    device = resolve_device(options.device)
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)

    mean, std = fit_scaler(dataset.values[split.train], dataset.kind)

    def standardised(indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((dataset.values[indices] - mean) / std).to(device)

    train_x, validation_x = standardised(split.train), standardised(split.validation)
    model = build_model(options.model, dataset.values.shape[1], options.hparams, dataset.kind).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=options.learning_rate)

    best_loss, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    history: dict[str, list[float]] = {"train_loss": [], "validation_loss": []}
    bar = tqdm(range(options.epochs), desc=f"training {options.model}", unit="epoch",
               disable=not options.progress)
    for _ in bar:
        model.train()
        order = torch.randperm(len(train_x), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(order), options.batch_size):
            batch = train_x[order[start:start + options.batch_size]]
            loss = model.training_loss(batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        validation_loss = float(model_scores(model, validation_x).mean())
        history["train_loss"].append(total / len(train_x))
        history["validation_loss"].append(validation_loss)
        bar.set_postfix(train=f"{history['train_loss'][-1]:.4f}", val=f"{validation_loss:.4f}")
        if validation_loss < best_loss - 1e-7:
            best_loss, best_state, stale = validation_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= options.patience:
                break
    bar.close()

    model.load_state_dict(best_state)
    model.eval()
    bank = fit_memory_bank(model, train_x, validation_x, options.bank, options.seed) \
        if options.score == "memory-bank" else None
    scores = model_scores(model, validation_x, bank).cpu().numpy()
    return Checkpoint(
        model_name=options.model,
        hparams=dict(model.hparams),
        state_dict={key: value.detach().cpu() for key, value in model.state_dict().items()},
        kind=dataset.kind,
        feature_names=list(dataset.feature_names),
        scaler_mean=mean,
        scaler_std=std,
        score_mean=float(scores.mean()),
        score_std=float(scores.std()),
        validation_scores=scores.astype(np.float32),
        dataset_sha256=dataset.sha256,
        training={
            "dataset": dataset.name,
            "seed": options.seed,
            "split": {"train": split.train, "validation": split.validation, "test": split.test},
            "epochs_run": len(history["train_loss"]),
            "wall_time_s": time.perf_counter() - started,
            "options": {"epochs": options.epochs, "batch_size": options.batch_size,
                        "learning_rate": options.learning_rate, "patience": options.patience,
                        "score": options.score, "bank_max_rows": options.bank.max_rows},
            "history": history,
        },
        memory_bank_state=None if bank is None else bank.state(),
    )


def without_memory_bank(checkpoint: Checkpoint, dataset: LabelledDataset) -> Checkpoint:
    """The same trained model scoring events by its reconstruction error alone.

    The memory bank is dropped and the validation statistics (which seed the threshold) are
    recomputed on the checkpoint's validation rows of ``dataset``, the file it was trained on.
    For comparisons of the two scores on one model (``stream-ae compare``, ``stream-ae bench``).

    Raises:
        ValueError: ``dataset`` is not the one the checkpoint was trained on.
    """
    if checkpoint.dataset_sha256 != dataset.sha256:
        raise ValueError(f"{checkpoint.describe()} was not trained on {dataset.name}")
    rows = np.asarray(checkpoint.training["split"]["validation"])
    model = checkpoint.build()
    validation = torch.from_numpy((dataset.values[rows] - checkpoint.scaler_mean) / checkpoint.scaler_std)
    scores = model_scores(model, validation).numpy().astype(np.float32)
    return dataclasses.replace(checkpoint, memory_bank_state=None, validation_scores=scores,
                               score_mean=float(scores.mean()), score_std=float(scores.std()), sha256="")
