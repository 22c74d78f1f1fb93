"""The base of the family: the :class:`Autoencoder` interface, the dense stack and its widths.

:class:`DenseAutoencoder` is the mirrored dense shape that the models in ``dense.py`` share.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stream_ae.model.kinds import EVENT_KINDS


class Autoencoder(nn.Module):
    """Base class: ``forward(x) -> reconstruction`` with ``x`` of shape ``(batch, features)``.

    Subclasses set ``name`` and build their layers; they may override ``training_loss``
    (sparse, denoising and variational models do), ``per_feature_error`` and ``error``. ``event_kinds``
    lists the event kinds a model can take (see :func:`build_model`).
    """

    name: str = "autoencoder"
    event_kinds: tuple[str, ...] = EVENT_KINDS

    def __init__(self, input_dim: int, hparams: dict[str, Any]) -> None:
        super().__init__()
        if input_dim < 2:
            raise ValueError(f"input_dim must be at least 2, got {input_dim}")
        self.input_dim = input_dim
        self.hparams = hparams

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Scalar loss for one training batch ``x`` of shape ``(batch, features)``: MSE."""
        return torch.mean((self(x) - x) ** 2)

    def per_feature_error(self, x: torch.Tensor) -> torch.Tensor:
        """Squared reconstruction error of shape ``(batch, features)``."""
        return (self(x) - x) ** 2

    def error(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's own error of each event ``(batch,)`` and the per-feature squared
        error ``(batch, features)``, for standardised events ``x (batch, features)``.

        The error is the mean squared reconstruction error; a model may define another (the
        variational model offers the negative ELBO). It is an ingredient of a score, not the
        score: events are scored by a detector (:mod:`stream_ae.model.detector`).
        """
        per_feature = self.per_feature_error(x)
        return per_feature.mean(dim=1), per_feature

    def represent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The code and the reconstruction of ``x`` in one pass (deterministic in eval mode).

        Args:
            x: standardised events ``(batch, features)``.

        Returns:
            ``(code, reconstruction)``: ``(batch, code width)`` and ``(batch, features)``.
            The memory-bank score (:mod:`stream_ae.model.memory_bank`) reads both.
        """
        raise NotImplementedError(f"{type(self).__name__} does not expose its code")


def _dense_stack(widths: list[int], last_activation: bool) -> nn.Sequential:
    """Linear layers ``widths[0] → widths[1] → …`` with ReLU between them (and after the last
    one when ``last_activation``)."""
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if last_activation or index < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def simple_code_width(input_dim: int) -> int:
    """Code width of the one-hidden-layer models: ``max(2, round(d * 12 / 29))``.

    The reference chapter's 29 → 12 → 29 for the card data, kept in proportion for other
    widths (a 140-sample window gets a code of 58).
    """
    return max(2, round(input_dim * 12 / 29))


def deep_hidden_sizes(input_dim: int, depth: int = 3) -> list[int]:
    """Encoder widths for the deep model: halving from the largest power of two below the input.

    For the card data's 29 features this gives the reference chapter's 16 → 8 → 4; for a
    140-sample heartbeat window, 128 → 64 → 32. Each width is at least 2.
    """
    first = 1 << max(1, (input_dim - 1).bit_length() - 1)
    return [max(2, first >> level) for level in range(depth)]


class DenseAutoencoder(Autoencoder):
    """Mirrored dense autoencoder with ReLU: ``d → h1 → … → hk → … → h1 → d``.

    ``forward``: ``(batch, d) → (batch, d)``; :meth:`encode`: ``(batch, d) → (batch, hk)``.
    The output layer is linear, since standardised inputs are unbounded. Subclasses pick the
    default ``hidden`` widths and may add hyper-parameters of their loss (``extra``), which
    are stored beside ``hidden`` in the checkpoint.
    """

    def __init__(self, input_dim: int, hidden: list[int], **extra: Any) -> None:
        hidden = [int(width) for width in hidden]
        super().__init__(input_dim, {"hidden": hidden, **extra})
        self.encoder = _dense_stack([input_dim, *hidden], last_activation=True)
        self.decoder = _dense_stack([*reversed(hidden), input_dim], last_activation=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of ``x``: ``(batch, d) → (batch, hidden[-1])``, non-negative (ReLU)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))

    def represent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encode(x)
        return code, self.decoder(code)
