"""The autoencoder family behind one small interface.

Every model maps standardised events of shape ``(batch, features)`` to a reconstruction of
the same shape. The detector scores an event by its reconstruction error: the mean squared
error over features (Sakurada & Yairi, 2014, "Anomaly detection using autoencoders with
nonlinear dimensionality reduction"). Models are built by name from ``MODEL_BUILDERS``
with their hyper-parameters, which the checkpoint stores, so a checkpoint rebuilds the
exact architecture.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


class Autoencoder(nn.Module):
    """Base class: ``forward(x) -> reconstruction`` with ``x`` of shape ``(batch, features)``.

    Subclasses set ``name`` and build their layers; they may override ``training_loss``
    (sparse, denoising and variational models do) and ``per_feature_error``.
    """

    name: str = "autoencoder"

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

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly score ``(batch,)`` and per-feature squared error ``(batch, features)``.

        The score is the mean squared reconstruction error; a model may define another
        (the variational model offers the negative ELBO).
        """
        per_feature = self.per_feature_error(x)
        return per_feature.mean(dim=1), per_feature

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """The anomaly score per event, shape ``(batch,)`` (see :meth:`score`)."""
        return self.score(x)[0]


def _dense_stack(widths: list[int], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if last_activation or index < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def deep_hidden_sizes(input_dim: int, depth: int = 3) -> list[int]:
    """Encoder widths for the deep model: halving from the largest power of two below the input.

    For the card data's 29 features this gives the reference chapter's 16 → 8 → 4; for a
    140-sample heartbeat window, 128 → 64 → 32. Each width is at least 2.
    """
    first = 1 << max(1, (input_dim - 1).bit_length() - 1)
    return [max(2, first >> level) for level in range(depth)]


class DeepAutoencoder(Autoencoder):
    """Stacked dense autoencoder with ReLU: ``d → h1 → h2 → h3 → h2 → h1 → d``.

    The reference chapter's deep model for the card data is 29→16→8→4→8→16→29 with ReLU;
    widths follow :func:`deep_hidden_sizes` unless ``hidden`` is given. The output layer
    is linear, since standardised inputs are unbounded.
    """

    name = "deep"

    def __init__(self, input_dim: int, hidden: list[int] | None = None) -> None:
        hidden = list(hidden) if hidden else deep_hidden_sizes(input_dim)
        super().__init__(input_dim, {"hidden": hidden})
        self.encoder = _dense_stack([input_dim, *hidden], last_activation=True)
        self.decoder = _dense_stack([*reversed(hidden), input_dim], last_activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


MODEL_BUILDERS: dict[str, Callable[..., Autoencoder]] = {
    DeepAutoencoder.name: DeepAutoencoder,
}

DEFAULT_MODEL = DeepAutoencoder.name


def build_model(name: str, input_dim: int, hparams: dict[str, Any] | None = None) -> Autoencoder:
    """Build a model by name.

    Args:
        name: a key of ``MODEL_BUILDERS``.
        input_dim: features per event (window length for windows).
        hparams: keyword arguments of the model's constructor; None for defaults.

    Raises:
        ValueError: unknown name, or hyper-parameters the model does not take.
    """
    try:
        builder = MODEL_BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_BUILDERS)}") from None
    try:
        return builder(input_dim, **(hparams or {}))
    except TypeError as exc:
        raise ValueError(f"model {name!r}: bad hyper-parameters {hparams}: {exc}") from None
