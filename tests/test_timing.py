"""Stage timing (:mod:`stream_ae.pipeline.timing`): each lap is charged to its own stage's
series, measured with a fake clock."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from stream_ae.pipeline.timing import StageTimer


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stage_counter() -> tuple[Counter, CollectorRegistry]:
    registry = CollectorRegistry()
    return Counter("stage_seconds", "time per stage", ["stage"], registry=registry), registry


def charged(registry: CollectorRegistry, stage: str) -> float | None:
    return registry.get_sample_value("stage_seconds_total", {"stage": stage})


def test_each_lap_is_charged_to_its_stage_and_returned():
    counter, registry = stage_counter()
    clock = FakeClock()
    timer = StageTimer(counter, clock)
    timer.start()
    clock.now += 0.5
    assert timer.lap("poll") == pytest.approx(0.5)
    clock.now += 1.25
    assert timer.lap("score") == pytest.approx(1.25)
    clock.now += 0.125
    assert timer.lap("commit") == pytest.approx(0.125)
    assert charged(registry, "poll") == pytest.approx(0.5)
    assert charged(registry, "score") == pytest.approx(1.25)
    assert charged(registry, "commit") == pytest.approx(0.125)


def test_the_time_before_start_is_charged_to_no_stage():
    counter, registry = stage_counter()
    clock = FakeClock()
    timer = StageTimer(counter, clock)  # the clock is read once here
    clock.now += 30.0  # between batches: idle, not a stage
    timer.start()
    clock.now += 0.25
    timer.lap("poll")
    assert charged(registry, "poll") == pytest.approx(0.25)


def test_the_same_stage_accumulates_over_batches_and_only_timed_stages_have_a_series():
    counter, registry = stage_counter()
    clock = FakeClock()
    timer = StageTimer(counter, clock)
    for _ in range(3):
        timer.start()
        clock.now += 0.1
        timer.lap("poll")
        clock.now += 0.2
        timer.lap("score")
        clock.now += 5.0  # after the last lap of the batch: charged nowhere
    assert charged(registry, "poll") == pytest.approx(0.3)
    assert charged(registry, "score") == pytest.approx(0.6)
    assert charged(registry, "commit") is None


def test_a_lap_without_start_counts_from_construction():
    counter, registry = stage_counter()
    clock = FakeClock()
    timer = StageTimer(counter, clock)
    clock.now += 2.0
    assert timer.lap("warm_up") == pytest.approx(2.0)
    assert charged(registry, "warm_up") == pytest.approx(2.0)
