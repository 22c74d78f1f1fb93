"""The memory-bank score: distance to the nearest normal events in the autoencoder's view.

The autoencoder alone scores an event by how badly it reconstructs it. Measured on ten
labelled datasets (docs/results.md), that misses anomalies that the model
reconstructs well but that lie where no normal event does, and a plain k-nearest-neighbour
detector on the standardised inputs beat it on all ten. The memory bank keeps both views:
each event is embedded as three blocks,

    e(x) = [ x / √d ,  w_r · W (r - r̄) / √d ,  w_c · (c - c̄) / σ_c / √c_dim ]

where ``x`` is the standardised event (``d`` features), ``r = x̂ - x`` its reconstruction
residual, whitened by ``W`` (Ledoit-Wolf covariance of the validation residuals: Ledoit &
Wolf, 2004, "A well-conditioned estimator for large-dimensional covariance matrices"), and
``c`` the model's code, standardised on the training rows. Dividing each block by the root
of its width gives each block the same expected squared length, so a wide window does not
drown the code. The score is the mean Euclidean distance from ``e(x)`` to its ``k`` nearest
embedded training rows (the bank): the kNN outlier score of Ramaswamy, Rastogi & Shim (2000,
"Efficient algorithms for mining outliers from large data sets"), averaged over the ``k``
neighbours as in Angiulli & Pizzuti (2002). The block weights and ``k`` are the defaults
chosen across the whole dataset suite (docs/results.md, "Scoring"); they are stored with the bank.

The bank is bounded (``max_rows``, a seeded sample of the training rows beyond it). Scoring
is one matrix product per chunk of events against the bank plus a top-k, so its cost per
event is ``O(rows · (2d + c_dim))``: negligible on a GPU, and on the CPU the term that
dominates the score stage (``stream-ae bench`` prints it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stream_ae.model.autoencoders import Autoencoder

# Elements of the (events, rows) ranking block computed at once: 16 Mi float32 (64 MiB) on
# a GPU; 1 Mi (4 MiB, near the CPU's caches) on the CPU, measured twice as fast there.
_BLOCK_ELEMENTS = 1 << 24
_CPU_BLOCK_ELEMENTS = 1 << 20
_SCORE_BATCH = 8192
# Bank rows per block of the top-k's first pass (see MemoryBank.distance).
_RANK_BLOCK = 64


@dataclass(frozen=True)
class BankOptions:
    """How the memory bank is built.

    Attributes:
        k: neighbours averaged per score.
        residual_weight: weight ``w_r`` of the whitened residual block.
        code_weight: weight ``w_c`` of the code block.
        max_rows: largest bank; more training rows than this are sampled (seeded).
    """

    k: int = 5
    residual_weight: float = 0.7
    code_weight: float = 0.7
    max_rows: int = 20_000

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {self.max_rows}")
        if self.residual_weight < 0 or self.code_weight < 0:
            raise ValueError("the block weights must be non-negative")


@dataclass(frozen=True)
class Embedding:
    """The map ``e(x)`` of the module docstring, fitted on normal rows.

    Attributes:
        residual_location: float32 ``(d,)``, mean residual ``r̄`` of the validation rows.
        residual_whitening: float32 ``(d, d)``, ``W`` (applied as ``(r - r̄) @ W``).
        code_mean, code_std: float32 ``(code width,)``, of the training rows' codes.
        residual_weight, code_weight: the block weights ``w_r`` and ``w_c``.
    """

    residual_location: torch.Tensor
    residual_whitening: torch.Tensor
    code_mean: torch.Tensor
    code_std: torch.Tensor
    residual_weight: float
    code_weight: float

    def to(self, device: torch.device | str) -> Embedding:
        """A copy with every tensor on ``device``."""
        return Embedding(self.residual_location.to(device), self.residual_whitening.to(device),
                         self.code_mean.to(device), self.code_std.to(device), self.residual_weight,
                         self.code_weight)

    def __call__(self, x: torch.Tensor, code: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """``e(x)``: ``(batch, 2d + code width)`` float32.

        Args:
            x: standardised events ``(batch, d)``; ``code`` ``(batch, code width)`` and
                ``reconstruction`` ``(batch, d)`` from :meth:`Autoencoder.represent`.
        """
        width = x.shape[1] ** 0.5
        whitened = ((reconstruction.float() - x) - self.residual_location) @ self.residual_whitening
        coded = (code.float() - self.code_mean) / self.code_std
        return torch.cat([x / width, whitened * (self.residual_weight / width),
                          coded * (self.code_weight / code.shape[1] ** 0.5)], dim=1)


class MemoryBank:
    """Embedded normal events and the kNN distance to them, on one device.

    Args:
        embedding: the map ``e``.
        rows: float32 ``(bank rows, embedding width)``, the embedded training rows.
        k: neighbours averaged per score (at most the bank's rows).

    Example:
        >>> import torch
        >>> from stream_ae.model.autoencoders import build_model
        >>> model = build_model("deep", 6).eval()
        >>> normal = torch.randn(200, 6)
        >>> bank = fit_memory_bank(model, normal[:150], normal[150:], BankOptions(k=3))
        >>> events = torch.cat([normal[:2], 10 + normal[:1]])
        >>> with torch.inference_mode():
        ...     distances = bank.distance(events, *model.represent(events))
        >>> distances.shape, bool(distances[2] > distances[:2].max())
        (torch.Size([3]), True)
    """

    _TENSORS = ("residual_location", "residual_whitening", "code_mean", "code_std")

    def __init__(self, embedding: Embedding, rows: torch.Tensor, k: int) -> None:
        self.embedding = embedding
        self.rows = rows
        self.k = min(int(k), len(rows))
        # ranking columns [-2b; |b|²] (an event is [q; 1]), so that one product gives
        # |b|² - 2 q·b; in whole blocks of _RANK_BLOCK rows, padded with columns [0; +inf]
        # that are never among the nearest
        blocks = -(-len(rows) // _RANK_BLOCK)
        padding = blocks * _RANK_BLOCK - len(rows)
        norms = torch.cat([(rows * rows).sum(dim=1), rows.new_full((padding,), float("inf"))])
        scaled = torch.cat([-2 * rows, rows.new_zeros(padding, rows.shape[1])])
        self._ranking = torch.cat([scaled, norms[:, None]], dim=1).T.contiguous()

    @property
    def multiply_adds_per_event(self) -> int:
        """The ranking product's cost per scored event: bank rows × (embedding width + 1)."""
        return int(self.rows.shape[0] * (self.rows.shape[1] + 1))

    def to(self, device: torch.device | str) -> MemoryBank:
        """A copy with every tensor on ``device``."""
        return MemoryBank(self.embedding.to(device), self.rows.to(device), self.k)

    def distance(self, x: torch.Tensor, code: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Mean distance ``(batch,)`` float32 of each standardised event ``x (batch, d)``,
        embedded with the ``code`` and ``reconstruction`` the model gave it
        (:meth:`Autoencoder.represent`), to its ``k`` nearest bank rows (:meth:`knn_distance`)."""
        return self.knn_distance(self.embedding(x, code, reconstruction))

    def knn_distance(self, embedded: torch.Tensor) -> torch.Tensor:
        """Mean distance of each embedded event ``(batch, width)`` to its ``k`` nearest bank
        rows, ``(batch,)`` float32.

        The nearest rows are ranked by ``|b|² - 2 q·b`` (``|q|²`` is the same for every
        row): one matrix product per block of events (4 MiB of rankings on the CPU, 64 MiB
        on a GPU). The ``k`` nearest lie in the ``k`` blocks of 64 bank rows with the
        smallest minima (a block outside them has ``k`` smaller values in other blocks), so
        the top-k runs over those ``k · 64`` candidates instead of the whole bank (a third
        of the whole top-k's time on one CPU thread, 4,096 events × 13,328 rows). Their
        distances are then computed directly, free of the expansion's cancellation, so a
        score does not depend on its batch.
        """
        padded_rows = self._ranking.shape[1]
        blocks = padded_rows // _RANK_BLOCK
        elements = _BLOCK_ELEMENTS if embedded.device.type == "cuda" else _CPU_BLOCK_ELEMENTS
        chunk = max(1, elements // padded_rows)
        extended = torch.cat([embedded, embedded.new_ones(len(embedded), 1)], dim=1)
        parts = []
        for start in range(0, len(embedded), chunk):
            query = embedded[start:start + chunk]
            ranking = extended[start:start + chunk] @ self._ranking
            if blocks > self.k:
                by_block = ranking.view(len(query), blocks, _RANK_BLOCK)
                chosen = torch.topk(by_block.amin(dim=2), self.k, dim=1, largest=False, sorted=False).indices
                candidates = torch.gather(by_block, 1, chosen[:, :, None].expand(-1, -1, _RANK_BLOCK))
                best = torch.topk(candidates.reshape(len(query), -1), self.k, dim=1, largest=False,
                                  sorted=False).indices
                nearest = chosen.gather(1, best // _RANK_BLOCK) * _RANK_BLOCK + best % _RANK_BLOCK
            else:
                nearest = torch.topk(ranking, self.k, dim=1, largest=False, sorted=False).indices
            parts.append((self.rows[nearest] - query[:, None, :]).norm(dim=2).mean(dim=1))
        return torch.cat(parts) if parts else embedded.new_empty(0)

    def state(self) -> dict[str, Any]:
        """What a checkpoint stores: CPU tensors and plain numbers (see :meth:`from_state`)."""
        tensors = {key: getattr(self.embedding, key).cpu() for key in self._TENSORS}
        return {"name": "memory-bank", "rows": self.rows.cpu(), **tensors, "k": self.k,
                "residual_weight": self.embedding.residual_weight, "code_weight": self.embedding.code_weight}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MemoryBank:
        """Rebuild a bank from :meth:`state` (on the CPU).

        Raises:
            ValueError: the state is not a memory bank's.
        """
        if state.get("name") != "memory-bank":
            raise ValueError(f"not a memory-bank state: {state.get('name')!r}")
        tensors = {key: torch.as_tensor(state[key], dtype=torch.float32) for key in cls._TENSORS}
        embedding = Embedding(**tensors, residual_weight=float(state["residual_weight"]),
                              code_weight=float(state["code_weight"]))
        return cls(embedding, torch.as_tensor(state["rows"], dtype=torch.float32), int(state["k"]))


def _represent(model: Autoencoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.represent`` over ``x`` in batches, without gradients: ``(code, residual)``."""
    codes, residuals = [], []
    with torch.inference_mode():
        for start in range(0, len(x), _SCORE_BATCH):
            batch = x[start:start + _SCORE_BATCH]
            code, reconstruction = model.represent(batch)
            codes.append(code.float())
            residuals.append(reconstruction.float() - batch)
    return torch.cat(codes), torch.cat(residuals)


def _whitening(residuals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(r̄, W)`` with ``W = V Λ^(-1/2)`` from the eigen-decomposition of the Ledoit-Wolf
    covariance of ``residuals (rows, d)``; identity when there are fewer than two rows."""
    width = residuals.shape[1]
    if len(residuals) < 2:
        return np.zeros(width, np.float32), np.eye(width, dtype=np.float32)
    from sklearn.covariance import LedoitWolf

    estimate = LedoitWolf().fit(residuals.astype(np.float64))
    eigenvalues, eigenvectors = np.linalg.eigh(estimate.covariance_)
    whitening = eigenvectors / np.sqrt(np.maximum(eigenvalues, 1e-9))
    return estimate.location_.astype(np.float32), whitening.astype(np.float32)


def fit_memory_bank(model: Autoencoder, train: torch.Tensor, validation: torch.Tensor,
                    options: BankOptions = BankOptions(), seed: int = 0) -> MemoryBank:
    """Build the bank of a trained model from its normal rows.

    Args:
        model: the trained autoencoder, in eval mode.
        train: standardised normal training rows ``(rows, d)``: the bank, and the code statistics.
        validation: standardised normal validation rows ``(rows, d)``: the residual whitening
            (rows the model did not fit, so their residuals are those of unseen normal events).
        options: see :class:`BankOptions`.
        seed: seeds the sample of the training rows when there are more than ``options.max_rows``.

    Returns:
        The bank, on ``train``'s device.

    Raises:
        ValueError: no training rows.
    """
    if len(train) == 0:
        raise ValueError("the memory bank needs at least one training row")
    train_code, train_residual = _represent(model, train)
    _, validation_residual = _represent(model, validation)
    location, whitening = _whitening(validation_residual.cpu().numpy())
    code_std = train_code.std(dim=0, unbiased=False)
    device = train.device
    embedding = Embedding(torch.as_tensor(location, device=device), torch.as_tensor(whitening, device=device),
                          train_code.mean(dim=0), torch.where(code_std < 1e-6, torch.ones_like(code_std), code_std),
                          options.residual_weight, options.code_weight)
    keep = torch.arange(len(train), device=device)
    if len(train) > options.max_rows:
        chosen = np.random.default_rng(seed).choice(len(train), options.max_rows, replace=False)
        keep = torch.as_tensor(np.sort(chosen), device=device)
    with torch.inference_mode():
        rows = embedding(train[keep], train_code[keep], train_residual[keep] + train[keep])
    return MemoryBank(embedding, rows.clone(), options.k)
