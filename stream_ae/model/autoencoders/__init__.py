"""The autoencoder family behind one small interface.

Every model maps standardised events of shape ``(batch, features)`` to a reconstruction of
the same shape. A model's own error of an event is its reconstruction error: the mean squared
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

One model family per file: ``base.py`` (the :class:`Autoencoder` interface and the dense
stack), ``dense.py`` (simple, sparse, deep, denoising), ``vae.py`` and ``conv.py``. To add a
model, write a file with a subclass of :class:`Autoencoder` (a ``name``, its layers, and its
``training_loss`` or ``error`` where they differ), then add the class to ``MODEL_BUILDERS`` below.
"""

from __future__ import annotations

from typing import Any

from stream_ae.model.autoencoders.base import Autoencoder
from stream_ae.model.autoencoders.conv import ConvAutoencoder
from stream_ae.model.autoencoders.dense import (
    DeepAutoencoder,
    DenoisingAutoencoder,
    SimpleAutoencoder,
    SparseAutoencoder,
)
from stream_ae.model.autoencoders.vae import VariationalAutoencoder

__all__ = ["MODEL_BUILDERS", "DEFAULT_MODEL", "build_model", "Autoencoder"]

MODEL_BUILDERS: dict[str, type[Autoencoder]] = {
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
