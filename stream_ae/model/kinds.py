"""The event kinds, defined once: a model, a dataset, a checkpoint and the settings share them."""

from __future__ import annotations

from typing import Literal, get_args

EventKind = Literal["transaction", "window"]
"""``transaction``: one row of named features; ``window``: a fixed-length signal."""

EVENT_KINDS: tuple[str, ...] = get_args(EventKind)
