"""Partition ownership (:mod:`stream_ae.pipeline.ownership`): the partitions held, their keyed
state (the threshold's) restored once (only what the model in service saved) and dropped on
revocation, what may be committed, the broker connection, readiness, and the release listeners."""

from __future__ import annotations

import pytest

from stream_ae.pipeline.keyed_state import PartitionStates
from stream_ae.pipeline.ownership import PartitionOwnership
from stream_ae.pipeline.threshold.adaptive import AdaptiveThreshold
from stream_ae.telemetry.health import HealthState
from stream_ae.telemetry.metrics import DaemonMetrics
from tests.helpers import SavedStates

SHA = "c0ffee" * 10
P0, P1, P2 = ("events", 0), ("events", 1), ("events", 2)


def saved_state(mean: float, sha: str = SHA) -> dict:
    return {"mean": mean, "variance": 0.01, "events": 50_000, "next_offset": 10, "checkpoint_sha256": sha}


def threshold() -> AdaptiveThreshold:
    return AdaptiveThreshold(seed_mean=0.0, seed_std=1.0, k=3.0, scale="linear", warmup_events=0)


def ownership(saved: SavedStates | None = None,
              rule: AdaptiveThreshold | None = None) -> tuple[PartitionOwnership, HealthState, DaemonMetrics]:
    """Ownership over ``saved``, its keyed state held by ``rule`` (a fresh threshold if None)."""
    health, metrics = HealthState(), DaemonMetrics()
    states = PartitionStates(saved)
    states.hold([rule or threshold()])
    return PartitionOwnership(health, metrics, states), health, metrics


def test_assigned_partitions_are_held_but_not_ready_until_their_saved_thresholds_are_read():
    owner, health, _ = ownership(SavedStates({}))
    assert not owner.restoring and not health.ready, "nothing assigned: not ready"
    owner.assigned_now([P0, P1])
    assert owner.assigned == {P0, P1}
    assert owner.restoring and not health.ready
    owner.restore(SHA)
    assert not owner.restoring and health.ready


def test_restore_reads_each_newly_assigned_partition_once():
    saved = SavedStates({})
    owner, _, _ = ownership(saved)
    owner.assigned_now([P1, P0])
    owner.restore(SHA)
    owner.assigned_now([P2])
    owner.restore(SHA)
    assert saved.reads == [[P0, P1], [P2]], "sorted, and a partition already restored is not read again"


def test_only_states_saved_by_the_model_in_service_are_restored():
    saved = SavedStates({P0: saved_state(5.0), P1: saved_state(7.0, sha="another model")})
    rule = threshold()
    owner, _, _ = ownership(saved, rule)
    seeded = rule.threshold(P1)
    owner.assigned_now([P0, P1, P2])
    assert owner.restore(SHA) == [P0, P1, P2]
    assert rule.threshold(P0) == pytest.approx(5.0 + 3.0 * 0.1), "restored: mean + k * std"
    assert rule.threshold(P1) == pytest.approx(seeded), "saved by another checkpoint: the seed stays"
    assert rule.threshold(P2) == pytest.approx(seeded), "nothing saved: the seed stays"


def test_without_a_store_restore_keeps_the_seeds_and_makes_ready():
    owner, health, _ = ownership(None)
    owner.assigned_now([P0])
    owner.restore(SHA)
    assert health.ready and owner.assigned == {P0}


def test_revoked_partitions_are_forgotten_listeners_told_and_gauges_dropped():
    saved = SavedStates({P0: saved_state(5.0)})
    rule = threshold()
    owner, health, metrics = ownership(saved, rule)
    released: list[list] = []
    owner.on_release(released.append)
    owner.on_release(lambda partitions: released.append(["second listener", *partitions]))
    owner.assigned_now([P0, P1])
    owner.restore(SHA)
    metrics.show_thresholds([P0, P1], rule.threshold)
    metrics.consumer_lag.labels("events", "0").set(3)
    assert rule.threshold(P0) == pytest.approx(5.3)

    owner.revoked_now([P0])
    assert owner.assigned == {P1} and health.ready
    assert P0 not in rule.states, "the revoked partition's keyed state is dropped"
    assert released == [[P0], ["second listener", P0]]
    value = metrics.registry.get_sample_value
    assert value("stream_ae_threshold", {"topic": "events", "partition": "0"}) is None
    assert value("stream_ae_consumer_lag_events", {"topic": "events", "partition": "0"}) is None
    assert value("stream_ae_threshold", {"topic": "events", "partition": "1"}) is not None

    owner.revoked_now([P1])
    assert owner.assigned == set() and not health.ready, "nothing owned: not ready"


def test_a_partition_revoked_before_its_restore_is_not_read():
    saved = SavedStates({})
    owner, health, _ = ownership(saved)
    owner.assigned_now([P0, P1])
    owner.revoked_now([P1])
    owner.restore(SHA)
    assert saved.reads == [[P0]] and health.ready


def test_owned_keeps_only_the_offsets_of_partitions_still_held():
    owner, _, _ = ownership()
    owner.assigned_now([P0, P2])
    assert owner.owned({P0: 10, P1: 20, P2: 30}) == {P0: 10, P2: 30}
    owner.revoked_now([P0])
    assert owner.owned({P0: 11, P2: 31}) == {P2: 31}
    assert owner.owned({}) == {}


def test_a_lost_broker_makes_not_ready_and_its_return_counts_one_reconnect():
    owner, health, metrics = ownership()
    owner.assigned_now([P0])
    owner.restore(SHA)
    reconnects = lambda: metrics.registry.get_sample_value("stream_ae_broker_reconnects_total")  # noqa: E731
    owner.broker_reachable(True)
    assert health.ready and reconnects() == 0, "still connected is not a reconnect"
    owner.broker_reachable(False)
    owner.broker_reachable(False)
    assert not health.ready and not owner.connected
    owner.broker_reachable(True)
    assert health.ready and owner.connected and reconnects() == 1
    owner.broker_reachable(True)
    assert reconnects() == 1


def test_a_lost_broker_keeps_a_fresh_assignment_not_ready():
    owner, health, _ = ownership()
    owner.broker_reachable(False)
    owner.assigned_now([P0])
    owner.restore(SHA)
    assert not health.ready
    owner.broker_reachable(True)
    assert health.ready
