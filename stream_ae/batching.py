"""The micro-batching policy shared by the Kafka sources."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def fill_batch(fetch: Callable[[int, float], list[T]], max_records: int, max_wait_s: float,
               wait: bool = True) -> list[T]:
    """A micro-batch: the items that have arrived, as soon as the client holds no more of them.

    Waits up to ``max_wait_s`` for the first items; once some are in hand, takes what the
    client has already buffered (``fetch`` with no wait) and stops when that is nothing, or
    at ``max_records`` items, or at ``max_wait_s`` after the call. Under load the buffer
    keeps the batches full; on a quiet stream an event waits for no other.

    Args:
        fetch: returns at most ``still_wanted`` items, waiting at most ``seconds_left``
            seconds (0 means: what is already there).
        max_records: batch size bound (items).
        max_wait_s: batch wait bound (seconds).
        wait: False to wait for nothing: an empty batch at once when the client holds no
            item (the loop asks so while an earlier batch's output is being acknowledged).

    Returns:
        At most ``max_records`` items, in arrival order; empty when nothing arrived in time.
    """
    deadline = time.monotonic() + max_wait_s
    batch: list[T] = []
    while True:
        waiting = wait and not batch
        arrived = fetch(max_records - len(batch), max(0.0, deadline - time.monotonic()) if waiting else 0.0)
        if not arrived and not waiting:
            return batch
        batch.extend(arrived)
        if len(batch) >= max_records or time.monotonic() >= deadline:
            return batch
