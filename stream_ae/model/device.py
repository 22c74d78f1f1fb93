"""Choosing the torch device from the ``device`` setting, and the CPU threads that score."""

from __future__ import annotations

import os
import re

import torch

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"  # the device names a setting or flag accepts


def device_name_fault(name: str) -> str | None:
    """Why ``name`` is not a device name a setting or flag accepts, or None when it is.

    Example:
        >>> device_name_fault("cuda:1") is None, device_name_fault("banana")
        (True, "'banana' is not one of auto, cpu, cuda or cuda:N")
    """
    return None if re.match(DEVICE_PATTERN, name) else f"{name!r} is not one of auto, cpu, cuda or cuda:N"


def resolve_device(name: str) -> torch.device:
    """Map ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` to a torch device.

    ``auto`` is the first CUDA device when one is available, else the CPU.

    Raises:
        ValueError: a name other than those, or CUDA asked for and none is available.
    """
    if fault := device_name_fault(name):
        raise ValueError(f"device {fault}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but CUDA is not available on this machine")
    return device


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity mask (``os.sched_getaffinity``, which a
    container's ``cpuset`` limits), or every CPU where the platform has no such call. A CPU
    quota (``docker run --cpus``) is not an affinity and is not seen here."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def use_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (``model.threads``) and return how many: None means
    :func:`usable_cores` (under a CPU quota, set the number instead).

    Raises:
        ValueError: ``threads`` below 1.

    Example:
        >>> use_threads(1), torch.get_num_threads()
        (1, 1)
    """
    if threads is None:
        threads = usable_cores()
    if threads < 1:
        raise ValueError(f"model.threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    return threads
