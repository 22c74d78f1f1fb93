"""Micro-batches sized to a latency budget: the loop's own cost per event caps the next batch.

A batch's events wait for the whole batch to be decoded, scored, judged and sent before the
next poll, so the time the loop spends on one batch is added to the latency of every event
behind it. With a fixed ``max_batch_size``, that time is whatever the model costs: on a CPU
the memory-bank score takes about 35 µs per event (docs/performance.md), so a full batch of
4,096 events holds the loop for about 150 ms. :class:`BatchBudget` measures what handling a
batch costs per event and caps the batch size at ``budget / cost``, so that handling one
batch takes about the budget on any machine and model; under overload the batches stay at
the cap, the consumer lag grows (``stream_ae_consumer_lag``) and the latency per batch stays
bounded. This is the bound on queue delay of Triton's dynamic batcher
(``max_queue_delay_microseconds``), taken the other way round: the batch's size is what
adapts, to the measured service time.

The cost per event is an exponentially weighted mean (weight :data:`SMOOTHING` of the newest
batch) of ``seconds / events`` over batches that filled at least half the cap: a small batch
carries the loop's fixed cost per batch (a poll's round trip, the model call) over few
events, and at low load (where batches are small and the budget is not the bound anyway) it
would drive the cap down. At the cap the fixed cost is part of what is measured, so the cap
settles where ``fixed + cap · per_event = budget``.
"""

from __future__ import annotations

import math

SMOOTHING = 0.25
"""Weight of the newest batch in the mean cost per event."""

SMALLEST_CAP = 64
"""The cap never goes below this many events (a budget below the loop's fixed cost per
batch would otherwise shrink the batches to nothing)."""


class BatchBudget:
    """The cap on the next micro-batch's size (events) from the measured cost per event.

    Args:
        budget_s: time the loop may spend handling one batch (seconds); None: no budget,
            the cap is ``largest``.
        largest: ``consumer.max_batch_size``, the cap's upper bound (events).

    Raises:
        ValueError: ``budget_s`` not positive, or ``largest`` below 1.

    Example:
        >>> budget = BatchBudget(0.050, largest=4096)
        >>> budget.cap
        4096
        >>> budget.observe(4096, 0.200)  # 49 µs per event: 50 ms hold 1,024 events
        1024
        >>> budget.observe(100, 0.010)  # a batch under half the cap teaches nothing
        1024
    """

    def __init__(self, budget_s: float | None, largest: int) -> None:
        if budget_s is not None and not budget_s > 0:
            raise ValueError(f"the batch budget must be positive, got {budget_s} s")
        if largest < 1:
            raise ValueError(f"the largest batch must be at least 1 event, got {largest}")
        self.budget_s = budget_s
        self.largest = largest
        self.cap = largest
        self.seconds_per_event: float | None = None

    def observe(self, events: int, seconds: float) -> int:
        """Take a handled batch's size (events) and handling time (seconds); return the cap
        for the next batch (events)."""
        if self.budget_s is None or events < max(1, self.cap // 2) or not math.isfinite(seconds):
            return self.cap
        cost = max(seconds, 0.0) / events
        mean = self.seconds_per_event
        self.seconds_per_event = cost if mean is None else mean + SMOOTHING * (cost - mean)
        if self.seconds_per_event <= 0:
            return self.cap
        fitting = int(self.budget_s / self.seconds_per_event)
        self.cap = max(min(SMALLEST_CAP, self.largest), min(self.largest, fitting))
        return self.cap
