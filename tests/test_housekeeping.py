"""Housekeeping between batches (:mod:`stream_ae.pipeline.housekeeping`): a round at most every
interval, the consumer-lag gauges set from the source, readiness following the source's
broker connection."""

from __future__ import annotations

from stream_ae.kafka.records import PartitionKey
from stream_ae.pipeline.housekeeping import Housekeeping
from stream_ae.pipeline.keyed_state import PartitionStates
from stream_ae.pipeline.ownership import PartitionOwnership
from stream_ae.telemetry.health import HealthState
from stream_ae.telemetry.metrics import DaemonMetrics
from tests.helpers import ScriptedSource


class WatchedSource(ScriptedSource):
    """A scripted source whose lag and connection the test sets; counts the questions."""

    def __init__(self) -> None:
        super().__init__([])
        self.lags: dict[PartitionKey, int] = {}
        self.up = True
        self.asked = 0

    def lag(self) -> dict[PartitionKey, int]:
        self.asked += 1
        return dict(self.lags)

    def connected(self) -> bool:
        return self.up


def housekeeping(interval_s: float = 1.0):
    source, health, metrics = WatchedSource(), HealthState(), DaemonMetrics()
    ownership = PartitionOwnership(health, metrics, PartitionStates(None))
    ownership.assigned_now([("events", 0)])
    ownership.restore("sha")
    return Housekeeping(source, ownership, metrics, interval_s), source, health, metrics


def lag_gauge(metrics: DaemonMetrics, topic: str, partition: int) -> float | None:
    return metrics.registry.get_sample_value("stream_ae_consumer_lag_events",
                                             {"topic": topic, "partition": str(partition)})


def test_a_round_runs_at_most_once_per_interval():
    keeper, source, _, _ = housekeeping(interval_s=1.0)
    keeper.tick(100.0)
    keeper.tick(100.5)
    keeper.tick(100.99)
    assert source.asked == 1
    keeper.tick(101.0)
    assert source.asked == 2, "due again one interval after the last round"
    keeper.tick(105.0)
    keeper.tick(105.2)
    assert source.asked == 3


def test_the_first_tick_always_does_a_round():
    keeper, source, _, _ = housekeeping(interval_s=60.0)
    keeper.tick(0.001)
    assert source.asked == 1


def test_lag_gauges_are_set_per_partition():
    keeper, source, _, metrics = housekeeping()
    source.lags = {("events", 0): 12, ("events", 3): 0, ("other", 1): 7}
    keeper.tick(10.0)
    assert lag_gauge(metrics, "events", 0) == 12
    assert lag_gauge(metrics, "events", 3) == 0
    assert lag_gauge(metrics, "other", 1) == 7
    source.lags = {("events", 0): 2}
    keeper.tick(10.5)
    assert lag_gauge(metrics, "events", 0) == 12, "not due: the gauge stays"
    keeper.tick(11.0)
    assert lag_gauge(metrics, "events", 0) == 2


def test_readiness_follows_the_source_connection_and_a_return_counts_a_reconnect():
    keeper, source, health, metrics = housekeeping()
    keeper.tick(0.0)
    assert health.ready
    source.up = False
    keeper.tick(1.0)
    assert not health.ready
    source.up = True
    keeper.tick(1.5)
    assert not health.ready, "not checked again before the interval"
    keeper.tick(2.0)
    assert health.ready
    assert metrics.registry.get_sample_value("stream_ae_broker_reconnects_total") == 1
