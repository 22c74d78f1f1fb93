"""The dense models: simple, sparse, deep and denoising, each a :class:`DenseAutoencoder`."""

from __future__ import annotations

import torch

from stream_ae.model.autoencoders.base import DenseAutoencoder, deep_hidden_sizes, simple_code_width


class SimpleAutoencoder(DenseAutoencoder):
    """One hidden layer: ``d → c → d`` with ``c`` from :func:`simple_code_width` (29 → 12 → 29)."""

    name = "simple"

    def __init__(self, input_dim: int, hidden: list[int] | None = None) -> None:
        super().__init__(input_dim, hidden or [simple_code_width(input_dim)])


class SparseAutoencoder(DenseAutoencoder):
    """The simple shape with an L1 activity penalty on the code (Ng, 2011, "Sparse
    autoencoder", CS294A lecture notes; the chapter's Keras ``activity_regularizer=l1``).

    Training loss for a batch ``x`` of shape ``(batch, d)`` with code ``h = encode(x)`` of
    shape ``(batch, c)``: ``mean((x̂ - x)²) + activity_l1 · mean_batch(Σ_c |h|)``. The
    score is the plain reconstruction error.
    """

    name = "sparse"

    def __init__(self, input_dim: int, hidden: list[int] | None = None, activity_l1: float = 1e-4) -> None:
        if activity_l1 < 0:
            raise ValueError(f"activity_l1 must be non-negative, got {activity_l1}")
        super().__init__(input_dim, hidden or [simple_code_width(input_dim)], activity_l1=float(activity_l1))
        self.activity_l1 = float(activity_l1)

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        code = self.encode(x)
        reconstruction = self.decoder(code)
        return torch.mean((reconstruction - x) ** 2) + self.activity_l1 * code.abs().sum(dim=1).mean()


class DeepAutoencoder(DenseAutoencoder):
    """Stacked dense autoencoder: ``d → h1 → h2 → h3 → h2 → h1 → d``.

    The reference chapter's deep model for the card data is 29→16→8→4→8→16→29 with ReLU;
    widths follow :func:`deep_hidden_sizes` unless ``hidden`` is given.
    """

    name = "deep"

    def __init__(self, input_dim: int, hidden: list[int] | None = None) -> None:
        super().__init__(input_dim, hidden or deep_hidden_sizes(input_dim))


class DenoisingAutoencoder(DenseAutoencoder):
    """The deep shape trained to reconstruct clean inputs from corrupted ones (Vincent,
    Larochelle, Bengio & Manzagol, 2008, "Extracting and composing robust features with
    denoising autoencoders", ICML), with additive isotropic Gaussian corruption.

    Training loss for a batch ``x`` of shape ``(batch, d)``:
    ``mean((f(x + ε) - x)²)`` with ``ε ~ N(0, noise_std² I)`` in standardised units. Scoring
    uses the clean input (no noise), so it is deterministic.
    """

    name = "denoising"

    def __init__(self, input_dim: int, hidden: list[int] | None = None, noise_std: float = 0.1) -> None:
        if noise_std <= 0:
            raise ValueError(f"noise_std must be positive, got {noise_std}")
        super().__init__(input_dim, hidden or deep_hidden_sizes(input_dim), noise_std=float(noise_std))
        self.noise_std = float(noise_std)

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        noisy = x + self.noise_std * torch.randn_like(x)
        return torch.mean((self(noisy) - x) ** 2)
