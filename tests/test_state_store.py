"""The state store (:mod:`stream_ae.kafka.state_store`) on the real local broker: a state
record produced with :meth:`record` comes back from :meth:`load` (a partition's own state
under the empty key, and the state of keys within it), the latest record of a key wins,
partitions without a state (or another group's) are absent."""

from __future__ import annotations

import orjson
import pytest

from stream_ae.kafka.kafka_python.sink import KafkaSink
from stream_ae.kafka.options import Connection
from stream_ae.kafka.state_store import PartitionStateStore
from tests.helpers import produce_to

pytestmark = pytest.mark.integration

P0, P1, P2, P10 = ("events", 0), ("events", 1), ("events", 2), ("events", 10)


def state(mean: float, next_offset: int) -> dict:
    return {"mean": mean, "variance": 0.25, "events": 1000 + next_offset, "next_offset": next_offset,
            "checkpoint_sha256": "ab" * 32}


def own(value: dict) -> dict:
    """What :meth:`load` gives for a partition holding only its own state."""
    return {"": value}


def save(store: PartitionStateStore, states: list[tuple[tuple[str, int], dict]], key: str = "") -> None:
    """Produce the state records of ``key`` in each partition, as the daemon does with a batch's output."""
    records = [store.record(partition, key, value) for partition, value in states]
    produce_to(store.connection, store.topic, [value for _, value in records], [key for key, _ in records])


def test_record_is_keyed_group_topic_partition_with_the_state_as_json(broker, topic_names):
    store = PartitionStateStore(Connection(broker.bootstrap_servers), topic_names("state"), "detectors")
    key, value = store.record(("card-events", 7), "", state(1.5, 42))
    assert key == b"detectors/card-events/7"
    assert orjson.loads(value) == state(1.5, 42)


def test_a_saved_state_is_loaded_back(broker, topic_names):
    store = PartitionStateStore(Connection(broker.bootstrap_servers), topic_names("state"), "g",
                                read_timeout_s=10)
    save(store, [(P0, state(1.0, 10)), (P1, state(2.0, 20))])
    assert store.load([P0, P1]) == {P0: own(state(1.0, 10)), P1: own(state(2.0, 20))}


def test_the_latest_record_of_a_key_wins(broker, topic_names):
    store = PartitionStateStore(Connection(broker.bootstrap_servers), topic_names("state"), "g",
                                read_timeout_s=10)
    save(store, [(P0, state(1.0, 10)), (P1, state(2.0, 20))])
    save(store, [(P0, state(1.1, 15))])
    save(store, [(P0, state(1.2, 30))])
    assert store.load([P0, P1]) == {P0: own(state(1.2, 30)), P1: own(state(2.0, 20))}


def test_partitions_without_a_state_and_other_groups_states_are_absent(broker, topic_names):
    connection = Connection(broker.bootstrap_servers)
    topic = topic_names("state")
    mine = PartitionStateStore(connection, topic, "mine", read_timeout_s=10)
    theirs = PartitionStateStore(connection, topic, "theirs", read_timeout_s=10)  # the topic exists: no error
    save(mine, [(P0, state(1.0, 10))])
    save(theirs, [(P1, state(9.0, 90)), (P0, state(9.0, 99))])
    assert mine.load([P0, P1, P2]) == {P0: own(state(1.0, 10))}
    assert mine.load([P2]) == {}
    assert mine.load([]) == {}
    assert theirs.load([P0, P1]) == {P0: own(state(9.0, 99)), P1: own(state(9.0, 90))}


def test_a_record_without_a_value_is_no_state(broker, topic_names):
    store = PartitionStateStore(Connection(broker.bootstrap_servers), topic_names("state"), "g",
                                read_timeout_s=10)
    save(store, [(P0, state(1.0, 10))])
    sink = KafkaSink(store.connection)
    sink.send(store.topic, store.key(P1), None)  # a tombstone
    sink.flush()
    sink.close()
    assert store.load([P0, P1]) == {P0: own(state(1.0, 10))}


def test_an_empty_state_topic_loads_nothing(broker, topic_names):
    store = PartitionStateStore(Connection(broker.bootstrap_servers), topic_names("state"), "g",
                                read_timeout_s=10)
    assert store.load([P0, P1]) == {}


def test_the_states_of_keys_within_a_partition_come_back_under_their_keys(broker, topic_names):
    """Keyed state (a series, a patient within a partition): one record per key, keyed
    ``<group>/<topic>/<partition>/<key>``, read back beside the partition's own state; a
    group id or a key holding slashes is no trouble."""
    store = PartitionStateStore(Connection(broker.bootstrap_servers), topic_names("state"), "team/detectors",
                                read_timeout_s=10)
    assert store.record(P0, "patient/7", state(1.0, 1))[0] == b"team/detectors/events/0/patient/7"
    save(store, [(P0, state(1.0, 10))])
    save(store, [(P0, state(2.0, 11)), (P1, state(3.0, 12))], key="patient/7")
    save(store, [(P0, state(4.0, 13))], key="host-a")
    save(store, [(P10, state(9.0, 99))], key="x")  # partition 10 is not partition 1
    assert store.load([P0, P1]) == {P0: {"": state(1.0, 10), "patient/7": state(2.0, 11), "host-a": state(4.0, 13)},
                                    P1: {"patient/7": state(3.0, 12)}}
    assert store.load([P10]) == {P10: {"x": state(9.0, 99)}}
