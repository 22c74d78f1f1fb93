"""The latency budget: the cap on the next micro-batch follows the measured cost per event."""

from __future__ import annotations

import math

import pytest

from stream_ae.kafka.consuming import BatchPolicy
from stream_ae.pipeline.batch_budget import SMALLEST_CAP, BatchBudget


def handle(budget: BatchBudget, fixed_s: float, per_event_s: float, batches: int) -> list[int]:
    """Caps after ``batches`` full batches of a loop costing ``fixed_s + events * per_event_s``."""
    caps = []
    for _ in range(batches):
        events = budget.cap
        caps.append(budget.observe(events, fixed_s + events * per_event_s))
    return caps


def test_the_cap_settles_where_handling_a_full_batch_takes_the_budget():
    budget = BatchBudget(0.050, largest=4096)
    caps = handle(budget, fixed_s=0.004, per_event_s=35e-6, batches=40)
    settled = caps[-1]
    assert settled == pytest.approx((0.050 - 0.004) / 35e-6, rel=0.01)  # 1,314 events
    assert 0.004 + settled * 35e-6 == pytest.approx(0.050, rel=0.01)
    assert caps[-5:] == [settled] * 5, "it stays there"


def test_a_cheap_model_keeps_max_batch_size_and_a_slower_one_lowers_the_cap_at_once():
    budget = BatchBudget(0.050, largest=4096)
    assert handle(budget, 0.001, 0.4e-6, 5) == [4096] * 5  # the reconstruction score: 2.6 ms a batch
    first = handle(budget, 0.001, 100e-6, 1)[0]  # a slow model swapped in
    assert first < 4096 / 2, "the first slow batch already halves the cap"


def test_small_batches_teach_nothing_and_no_budget_means_max_batch_size():
    budget = BatchBudget(0.050, largest=4096)
    assert budget.observe(100, 0.030) == 4096, "a quiet stream's small batch (fixed costs) is no measure"
    assert budget.seconds_per_event is None
    unbounded = BatchBudget(None, largest=512)
    assert unbounded.observe(512, 10.0) == 512


def test_the_cap_stays_within_its_floor_and_max_batch_size():
    budget = BatchBudget(0.001, largest=4096)
    assert handle(budget, 0.002, 1e-4, 20)[-1] == SMALLEST_CAP, "a budget below the fixed cost"
    tiny = BatchBudget(0.001, largest=10)
    assert handle(tiny, 0.0, 1.0, 3) == [10, 10, 10], "the floor is max_batch_size where that is smaller"
    assert BatchBudget(0.050, largest=8).observe(8, math.nan) == 8


@pytest.mark.parametrize("budget_s, largest", [(0.0, 10), (-1.0, 10), (0.05, 0)])
def test_a_budget_that_cannot_be_met_is_refused(budget_s, largest):
    with pytest.raises(ValueError):
        BatchBudget(budget_s, largest)


def test_a_limited_policy_never_exceeds_its_own_bound():
    policy = BatchPolicy(4096, 0.05)
    assert policy.limited(1000) == BatchPolicy(1000, 0.05)
    assert policy.limited(10_000).max_records == 4096
    assert policy.limited(0).max_records == 1
