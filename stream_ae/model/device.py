"""Choosing the torch device from the ``device`` setting."""

from __future__ import annotations

import re

import torch

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"  # the device names a setting or flag accepts


def resolve_device(name: str) -> torch.device:
    """Map ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` to a torch device.

    ``auto`` is the first CUDA device when one is available, else the CPU.

    Raises:
        ValueError: a name other than those, or CUDA asked for and none is available.
    """
    if not re.match(DEVICE_PATTERN, name):
        raise ValueError(f"device {name!r} is not one of auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but CUDA is not available on this machine")
    return device
