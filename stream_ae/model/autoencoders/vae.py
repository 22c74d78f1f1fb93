"""The variational autoencoder."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from stream_ae.model.autoencoders.base import Autoencoder, _dense_stack, deep_hidden_sizes

VaeScore = Literal["reconstruction", "elbo"]


class VariationalAutoencoder(Autoencoder):
    """Variational autoencoder (Kingma & Welling, 2014, "Auto-encoding variational Bayes",
    ICLR) with a Gaussian encoder ``q(z|x) = N(μ(x), diag σ²(x))``, a standard normal prior
    and a Gaussian decoder of unit variance in standardised units.

    Widths: the encoder is ``d → hidden → (μ, log σ²)`` of ``latent`` each, the decoder
    ``latent → reversed(hidden) → d``; by default ``hidden, latent`` are the deep model's
    widths (:func:`deep_hidden_sizes`), so the card data gets 29 → 16 → 8 → 4 → 8 → 16 → 29.

    Training minimises the negative ELBO per event, averaged over the batch:
    ``½ Σ_d (x̂ - x)² + KL(q(z|x) ‖ N(0, I))`` with
    ``KL = -½ Σ_latent (1 + log σ² - μ² - σ²)`` and ``z = μ + σ·ε``, ``ε ~ N(0, I)`` (the
    reparameterisation trick); the constant ``½ d log 2π`` is dropped.

    Scoring (in eval mode the decoder reads ``z = μ``, so scores are deterministic):

    * ``score="reconstruction"`` (default): mean squared error ``(batch,)``, as for the others;
    * ``score="elbo"``: the negative ELBO above ``(batch,)``, with the reconstruction term
      at ``z = μ`` (a one-point estimate of the expectation).

    The per-feature error ``(batch, d)`` is the squared error of the reconstruction either way.
    """

    name = "vae"
    SCORES: tuple[str, ...] = ("reconstruction", "elbo")

    def __init__(self, input_dim: int, hidden: list[int] | None = None, latent: int | None = None,
                 score: VaeScore = "reconstruction") -> None:
        if score not in self.SCORES:
            raise ValueError(f"vae score must be one of {self.SCORES}, got {score!r}")
        widths = deep_hidden_sizes(input_dim)
        hidden = [int(width) for width in (hidden or widths[:-1])]
        latent = int(latent or widths[-1])
        super().__init__(input_dim, {"hidden": hidden, "latent": latent, "score": score})
        self.score_kind = score
        self.encoder = _dense_stack([input_dim, *hidden], last_activation=True)
        self.to_mean = nn.Linear(hidden[-1], latent)
        self.to_log_variance = nn.Linear(hidden[-1], latent)
        self.decoder = _dense_stack([latent, *reversed(hidden), input_dim], last_activation=False)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ²)`` of ``q(z|x)``, each ``(batch, latent)``."""
        hidden = self.encoder(x)
        return self.to_mean(hidden), self.to_log_variance(hidden)

    def _reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction ``(batch, d)`` from a sampled ``z`` in training mode, from ``μ`` in
        eval mode; and ``(μ, log σ²)``."""
        mean, log_variance = self.encode(x)
        z = mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean) if self.training else mean
        return self.decoder(z), mean, log_variance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._reconstruct(x)[0]

    def represent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The code is ``μ``; the reconstruction is decoded from it (as in eval mode)."""
        mean, _ = self.encode(x)
        return mean, self.decoder(mean)

    def _negative_elbo(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative ELBO per event ``(batch,)`` and the squared error ``(batch, d)``."""
        reconstruction, mean, log_variance = self._reconstruct(x)
        squared = (reconstruction - x) ** 2
        kl = -0.5 * torch.sum(1 + log_variance - mean ** 2 - log_variance.exp(), dim=1)
        return 0.5 * squared.sum(dim=1) + kl, squared

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        return self._negative_elbo(x)[0].mean()

    def error(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.score_kind == "elbo":
            return self._negative_elbo(x)
        return super().error(x)
