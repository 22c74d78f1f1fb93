"""The autoencoder family behind one small interface.

Every model maps standardised events of shape ``(batch, features)`` to a reconstruction of
the same shape. The detector scores an event by its reconstruction error: the mean squared
error over features (Sakurada & Yairi, 2014, "Anomaly detection using autoencoders with
nonlinear dimensionality reduction"). Models are built by name from ``MODEL_BUILDERS``
with their hyper-parameters, which the checkpoint stores, so a checkpoint rebuilds the
exact architecture.

The family (widths scale with the input width ``d``; each rule is in the builder's docstring):

==============  ====================================================  ==================
name            shape for the card data (``d = 29``)                   takes
==============  ====================================================  ==================
``simple``      29 → 12 → 29                                           transactions, windows
``sparse``      29 → 12 → 29, L1 penalty on the code                   transactions, windows
``deep``        29 → 16 → 8 → 4 → 8 → 16 → 29                          transactions, windows
``denoising``   the deep shape, trained on noisy inputs                transactions, windows
``vae``         29 → 16 → 8 → (μ, log σ²) of 4 → 8 → 16 → 29            transactions, windows
``conv``        1-D convolutions over a window (140 samples for ECG)   windows only
==============  ====================================================  ==================
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from torch import nn
from torch.nn import functional as F

EVENT_KINDS = ("transaction", "window")


class Autoencoder(nn.Module):
    """Base class: ``forward(x) -> reconstruction`` with ``x`` of shape ``(batch, features)``.

    Subclasses set ``name`` and build their layers; they may override ``training_loss``
    (sparse, denoising and variational models do) and ``per_feature_error``. ``event_kinds``
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

    def _negative_elbo(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative ELBO per event ``(batch,)`` and the squared error ``(batch, d)``."""
        reconstruction, mean, log_variance = self._reconstruct(x)
        squared = (reconstruction - x) ** 2
        kl = -0.5 * torch.sum(1 + log_variance - mean ** 2 - log_variance.exp(), dim=1)
        return 0.5 * squared.sum(dim=1) + kl, squared

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        return self._negative_elbo(x)[0].mean()

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.score_kind == "elbo":
            return self._negative_elbo(x)
        return super().score(x)


class ConvAutoencoder(Autoencoder):
    """1-D convolutional autoencoder for windows (heartbeats), in the manner of Masci et al.,
    2011, "Stacked convolutional auto-encoders for hierarchical feature extraction".

    Shapes for a window of ``L`` samples, ``x`` of shape ``(batch, L)``, with
    ``P = 4·ceil(L / 4)`` (the window is zero-padded on the right to ``P``):

    * encoder: ``(batch, 1, P)`` → Conv1d(1→c1, stride 2) → ``(batch, c1, P/2)`` →
      Conv1d(c1→c2, stride 2) → ``(batch, c2, P/4)`` → flatten → Linear → code ``(batch, code)``;
    * decoder: the mirror image with ConvTranspose1d, cropped back to ``(batch, L)``.

    Defaults: ``channels=(16, 32)``, ``kernel_size=7``, ``code`` = the deep model's
    narrowest width (:func:`deep_hidden_sizes`; 32 for 140 samples). ReLU between layers,
    a linear output. Takes windows only (see :func:`build_model`).
    """

    name = "conv"
    event_kinds = ("window",)

    def __init__(self, input_dim: int, channels: list[int] | None = None, kernel_size: int = 7,
                 code: int | None = None) -> None:
        channels = [int(c) for c in (channels or [16, 32])]
        if len(channels) != 2:
            raise ValueError(f"conv takes two channel counts, got {channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        code = int(code or deep_hidden_sizes(input_dim)[-1])
        super().__init__(input_dim, {"channels": channels, "kernel_size": kernel_size, "code": code})
        self.padded_length = 4 * -(-input_dim // 4)
        first, second = channels
        pad = kernel_size // 2
        self.reduced = (second, self.padded_length // 4)
        self.encoder = nn.Sequential(
            nn.Conv1d(1, first, kernel_size, stride=2, padding=pad), nn.ReLU(),
            nn.Conv1d(first, second, kernel_size, stride=2, padding=pad), nn.ReLU(),
            nn.Flatten(), nn.Linear(second * self.padded_length // 4, code), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.Linear(code, second * self.padded_length // 4), nn.ReLU(),
            nn.Unflatten(1, self.reduced),
            nn.ConvTranspose1d(second, first, kernel_size, stride=2, padding=pad, output_padding=1), nn.ReLU(),
            nn.ConvTranspose1d(first, 1, kernel_size, stride=2, padding=pad, output_padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (0, self.padded_length - self.input_dim)).unsqueeze(1)
        return self.decoder(self.encoder(padded))[:, 0, :self.input_dim]


MODEL_BUILDERS: dict[str, Callable[..., Autoencoder]] = {
    model.name: model
    for model in (SimpleAutoencoder, SparseAutoencoder, DeepAutoencoder, ConvAutoencoder,
                  DenoisingAutoencoder, VariationalAutoencoder)
}

DEFAULT_MODEL = DeepAutoencoder.name


def build_model(name: str, input_dim: int, hparams: dict[str, Any] | None = None,
                kind: str | None = None) -> Autoencoder:
    """Build a model by name.

    Args:
        name: a key of ``MODEL_BUILDERS``.
        input_dim: features per event (window length for windows).
        hparams: keyword arguments of the model's constructor; None for defaults.
        kind: the event kind the model will take (``transaction`` or ``window``), checked
            against the model's ``event_kinds``; None skips the check (a checkpoint's model
            was checked when it was trained).

    Raises:
        ValueError: unknown name, a model that does not take ``kind`` events (``conv`` on
            transactions), or hyper-parameters the model does not take.
    """
    try:
        builder = MODEL_BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_BUILDERS)}") from None
    if kind is not None and kind not in builder.event_kinds:
        raise ValueError(f"model {name!r} takes {' or '.join(builder.event_kinds)} events, not {kind} events; "
                         f"for {kind} events choose one of "
                         f"{sorted(n for n, b in MODEL_BUILDERS.items() if kind in b.event_kinds)}")
    try:
        return builder(input_dim, **(hparams or {}))
    except TypeError as exc:
        raise ValueError(f"model {name!r}: bad hyper-parameters {hparams}: {exc}") from None
