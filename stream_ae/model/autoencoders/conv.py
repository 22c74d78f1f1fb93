"""The 1-D convolutional autoencoder, for windows only."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from stream_ae.model.autoencoders.base import Autoencoder, deep_hidden_sizes


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
        return self.represent(x)[1]

    def represent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The code is the dense bottleneck ``(batch, code)``."""
        padded = F.pad(x, (0, self.padded_length - self.input_dim)).unsqueeze(1)
        code = self.encoder(padded)
        return code, self.decoder(code)[:, 0, :self.input_dim]
