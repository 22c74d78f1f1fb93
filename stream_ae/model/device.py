"""Choosing the torch device from the ``device`` setting."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """Map ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` to a torch device.

    ``auto`` is the first CUDA device when one is available, else the CPU.

    Raises:
        ValueError: CUDA was asked for and none is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but CUDA is not available on this machine")
    return device
