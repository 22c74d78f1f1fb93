"""Keyed state (:mod:`stream_ae.pipeline.keyed_state`): the state records of a batch merge
every holder's fields per (partition, key), the threshold's record is the state topic's
record of before keys existed, and restoring takes only what the model in service saved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pytest

from stream_ae.kafka.records import PartitionKey
from stream_ae.pipeline.keyed_state import PARTITION, PartitionStates
from stream_ae.pipeline.threshold.adaptive import AdaptiveThreshold
from tests.helpers import SavedStates

P0, P1 = ("events", 0), ("events", 1)


class JsonStore(SavedStates):
    """A store that formats records as the state topic does (JSON values)."""

    def record(self, partition: PartitionKey, key: str, state: dict[str, Any]) -> tuple[bytes, bytes]:
        return f"{partition[0]}/{partition[1]}/{key}".encode(), orjson.dumps(state)


class LastSamples:
    """A holder of state per key within a partition (as windows per key will be): the last
    value seen of each key, exported for the keys touched since the last export."""

    def __init__(self) -> None:
        self.values: dict[PartitionKey, dict[str, float]] = {}
        self.touched: dict[PartitionKey, set[str]] = {}

    def see(self, partition: PartitionKey, key: str, value: float) -> None:
        self.values.setdefault(partition, {})[key] = value
        self.touched.setdefault(partition, set()).add(key)

    def export(self, partition: PartitionKey) -> dict[str, dict[str, Any]]:
        keys = self.touched.pop(partition, set())
        return {key: {"last": self.values[partition][key]} for key in sorted(keys)}

    def restore(self, partition: PartitionKey, key: str, saved: Mapping[str, Any]) -> None:
        if "last" in saved:
            self.values.setdefault(partition, {})[key] = float(saved["last"])

    def forget(self, partition: PartitionKey) -> None:
        self.values.pop(partition, None)
        self.touched.pop(partition, None)


def judged_threshold() -> AdaptiveThreshold:
    threshold = AdaptiveThreshold(seed_mean=1.0, seed_std=0.5, scale="linear")
    threshold.apply([P0, P1], np.array([0, 0, 1], np.int32), np.array([1.0, 1.2, 0.9]))
    return threshold


def test_the_thresholds_record_is_the_record_of_before_keys_existed():
    threshold = judged_threshold()
    states = PartitionStates(JsonStore({}))
    states.hold([threshold])
    records = states.records({P0: 12, P1: 4}, "sha")
    assert [key for key, _ in records] == [b"events/0/", b"events/1/"]
    value = orjson.loads(records[0][1])
    assert list(value) == ["mean", "variance", "events", "next_offset", "checkpoint_sha256"]
    assert value == {**threshold.export(P0)[PARTITION], "next_offset": 12, "checkpoint_sha256": "sha"}
    assert value["events"] == 2


def test_holders_fields_merge_per_key_and_keys_within_a_partition_get_records_of_their_own():
    threshold, samples = judged_threshold(), LastSamples()
    samples.see(P0, PARTITION, 7.0)
    samples.see(P0, "patient-3", 0.5)
    states = PartitionStates(JsonStore({}))
    states.hold([threshold, samples])
    records = dict(states.records({P0: 12}, "sha"))
    assert set(records) == {b"events/0/", b"events/0/patient-3"}
    own = orjson.loads(records[b"events/0/"])
    assert own["last"] == 7.0 and own["events"] == 2, "both holders' fields in the partition's record"
    assert orjson.loads(records[b"events/0/patient-3"]) == {"last": 0.5, "next_offset": 12, "checkpoint_sha256": "sha"}
    assert set(dict(states.records({P0: 13}, "sha"))) == {b"events/0/"}, "an untouched key is not sent again"


def test_restore_takes_only_the_states_the_model_in_service_saved_and_forgets_the_rest():
    saved = SavedStates({P0: {"mean": 5.0, "variance": 0.04, "events": 900, "checkpoint_sha256": "mine"},
                         P1: {"mean": 9.0, "variance": 0.04, "events": 900, "checkpoint_sha256": "another"}})
    threshold = judged_threshold()
    seed = AdaptiveThreshold(seed_mean=1.0, seed_std=0.5, scale="linear").threshold(P1)
    states = PartitionStates(saved)
    states.hold([threshold])
    assert states.restore([P0, P1], "mine") == 2
    assert threshold.export(P0)[PARTITION] == {"mean": 5.0, "variance": 0.04, "events": 900}
    assert threshold.threshold(P1) == pytest.approx(seed), "another model's state: back to the seed"


def test_without_a_store_nothing_is_saved_and_restore_starts_afresh():
    threshold = judged_threshold()
    states = PartitionStates(None)
    states.hold([threshold])
    assert states.records({P0: 3}, "sha") == []
    assert states.restore([P0], "sha") == 0
    assert threshold.export(P0)[PARTITION]["events"] == 0, "forgotten: a fresh state from the seed"
