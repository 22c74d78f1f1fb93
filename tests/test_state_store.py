"""The threshold state store (:mod:`stream_ae.kafka.state_store`) on the real local broker: a
state record produced with :meth:`record` comes back from :meth:`load`, the latest record
of a key wins, partitions without a state (or another group's) are absent."""

from __future__ import annotations

import orjson
import pytest

from stream_ae.kafka.kafka_python.sink import KafkaSink
from stream_ae.kafka.options import Connection
from stream_ae.kafka.state_store import ThresholdStateStore
from tests.helpers import produce_to

pytestmark = pytest.mark.integration

P0, P1, P2 = ("events", 0), ("events", 1), ("events", 2)


def state(mean: float, next_offset: int) -> dict:
    return {"mean": mean, "variance": 0.25, "events": 1000 + next_offset, "next_offset": next_offset,
            "checkpoint_sha256": "ab" * 32}


def save(store: ThresholdStateStore, states: list[tuple[tuple[str, int], dict]]) -> None:
    """Produce the state records, as the daemon does with a batch's output."""
    records = [store.record(partition, value) for partition, value in states]
    produce_to(store.connection, store.topic, [value for _, value in records], [key for key, _ in records])


def test_record_is_keyed_group_topic_partition_with_the_state_as_json(broker, topic_names):
    store = ThresholdStateStore(Connection(broker.bootstrap_servers), topic_names("state"), "detectors")
    key, value = store.record(("card-events", 7), state(1.5, 42))
    assert key == b"detectors/card-events/7"
    assert orjson.loads(value) == state(1.5, 42)


def test_a_saved_state_is_loaded_back(broker, topic_names):
    store = ThresholdStateStore(Connection(broker.bootstrap_servers), topic_names("state"), "g",
                                read_timeout_s=10)
    save(store, [(P0, state(1.0, 10)), (P1, state(2.0, 20))])
    assert store.load([P0, P1]) == {P0: state(1.0, 10), P1: state(2.0, 20)}


def test_the_latest_record_of_a_key_wins(broker, topic_names):
    store = ThresholdStateStore(Connection(broker.bootstrap_servers), topic_names("state"), "g",
                                read_timeout_s=10)
    save(store, [(P0, state(1.0, 10)), (P1, state(2.0, 20))])
    save(store, [(P0, state(1.1, 15))])
    save(store, [(P0, state(1.2, 30))])
    assert store.load([P0, P1]) == {P0: state(1.2, 30), P1: state(2.0, 20)}


def test_partitions_without_a_state_and_other_groups_states_are_absent(broker, topic_names):
    connection = Connection(broker.bootstrap_servers)
    topic = topic_names("state")
    mine = ThresholdStateStore(connection, topic, "mine", read_timeout_s=10)
    theirs = ThresholdStateStore(connection, topic, "theirs", read_timeout_s=10)  # the topic exists: no error
    save(mine, [(P0, state(1.0, 10))])
    save(theirs, [(P1, state(9.0, 90)), (P0, state(9.0, 99))])
    assert mine.load([P0, P1, P2]) == {P0: state(1.0, 10)}
    assert mine.load([P2]) == {}
    assert mine.load([]) == {}
    assert theirs.load([P0, P1]) == {P0: state(9.0, 99), P1: state(9.0, 90)}


def test_a_record_without_a_value_is_no_state(broker, topic_names):
    store = ThresholdStateStore(Connection(broker.bootstrap_servers), topic_names("state"), "g",
                                read_timeout_s=10)
    save(store, [(P0, state(1.0, 10))])
    sink = KafkaSink(store.connection)
    sink.send(store.topic, store.key(P1), None)  # a tombstone
    sink.flush()
    sink.close()
    assert store.load([P0, P1]) == {P0: state(1.0, 10)}


def test_an_empty_state_topic_loads_nothing(broker, topic_names):
    store = ThresholdStateStore(Connection(broker.bootstrap_servers), topic_names("state"), "g",
                                read_timeout_s=10)
    assert store.load([P0, P1]) == {}
