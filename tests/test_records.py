"""The consumed micro-batch as columns: partition slots, offsets to commit and to seek back to,
and the micro-batching policy that fills it."""

from __future__ import annotations

import time

import numpy as np

from stream_ae.kafka.consuming import BatchPolicy
from stream_ae.kafka.records import ConsumedBatch, index_partitions
from tests.helpers import FakeRecord


def interleaved() -> list[FakeRecord]:
    """Records of three partitions (two topics), interleaved as a multi-partition fetch returns them."""
    layout = [("a", 0, 10), ("a", 1, 5), ("a", 0, 11), ("b", 0, 7), ("a", 1, 6), ("a", 0, 12), ("b", 0, 8)]
    return [FakeRecord(f"v{n}".encode(), topic=topic, partition=partition, offset=offset, timestamp=100 + n,
                       key=None if n == 2 else f"series-{n % 3}".encode())
            for n, (topic, partition, offset) in enumerate(layout)]


def test_index_partitions_maps_every_record_to_its_slot():
    keys = [("a", 1), ("b", 1), ("a", 1), ("a", 0), ("b", 1)]
    partitions, index = index_partitions([k[0] for k in keys], np.array([k[1] for k in keys]))
    assert partitions == [("a", 1), ("b", 1), ("a", 0)], "several topics: first-seen order"
    assert index.dtype == np.int32 and [partitions[i] for i in index] == keys
    one_topic = [("a", 3), ("a", 1), ("a", 3), ("a", 0)]
    partitions, index = index_partitions(["a"] * 4, np.array([3, 1, 3, 0]))
    assert partitions == [("a", 0), ("a", 1), ("a", 3)], "one topic: partition order"
    assert index.dtype == np.int32 and [partitions[i] for i in index] == one_topic
    none, no_index = index_partitions([], np.empty(0, np.int64))
    assert none == [] and len(no_index) == 0


def test_columns_of_records():
    records = interleaved()
    batch = ConsumedBatch.from_records(records)
    assert len(batch) == 7 and batch.values == [r.value for r in records]
    assert batch.offsets.tolist() == [r.offset for r in records]
    assert batch.timestamps_ms.tolist() == list(range(100, 107))
    assert batch.record_keys == [b"series-0", b"series-1", None, b"series-0", b"series-1", b"series-2", b"series-0"]
    assert [batch.partitions[i] for i in batch.partition_index] == [(r.topic, r.partition) for r in records]
    assert batch.record(3) is records[3]


def test_offsets_to_commit_and_to_read_again_per_partition():
    batch = ConsumedBatch.from_records(interleaved())
    assert batch.next_offsets() == {("a", 0): 13, ("a", 1): 7, ("b", 0): 9}
    assert batch.first_offsets() == {("a", 0): 10, ("a", 1): 5, ("b", 0): 7}
    empty = ConsumedBatch.from_records([])
    assert len(empty) == 0 and empty.next_offsets() == {} and empty.first_offsets() == {}


class ScriptedClient:
    """A client that hands over one chunk a call (what it holds at that time); a fetch with
    a wait sleeps when it has none left."""

    def __init__(self, chunks: list[list[int]]) -> None:
        self.chunks = chunks
        self.waits: list[float] = []

    def fetch(self, wanted: int, timeout_s: float) -> list[int]:
        self.waits.append(timeout_s)
        if not self.chunks:
            time.sleep(timeout_s)
            return []
        chunk = self.chunks.pop(0)
        taken, rest = chunk[:wanted], chunk[wanted:]
        if rest:
            self.chunks.insert(0, rest)
        return taken


def test_a_batch_is_what_the_client_hands_over_in_one_call():
    # each chunk is what the client holds at the time of a call; a client that handed over
    # fewer records than asked for is drained, and is not asked again for the same batch
    client = ScriptedClient([[1, 2], [3], [4, 5, 6]])
    policy = BatchPolicy(100, 0.5)
    assert policy.fill(client.fetch) == [1, 2]
    assert len(client.waits) == 1 and client.waits[0] > 0
    assert policy.fill(client.fetch) == [3]
    assert policy.fill(client.fetch) == [4, 5, 6]


def test_a_batch_is_cut_at_max_records():
    client = ScriptedClient([[1, 2, 3, 4, 5, 6]])
    policy = BatchPolicy(4, 0.5)
    assert policy.fill(client.fetch) == [1, 2, 3, 4]
    assert policy.fill(client.fetch) == [5, 6]


def test_an_empty_client_gives_an_empty_batch_after_max_wait():
    client = ScriptedClient([])
    started = time.monotonic()
    assert BatchPolicy(10, 0.2).fill(client.fetch) == []
    assert 0.15 <= time.monotonic() - started < 2.0


def test_the_policy_comes_from_the_consumer_settings():
    from stream_ae.service.config import ConsumerSettings

    policy = BatchPolicy.from_options(ConsumerSettings(max_batch_size=64, max_wait_ms=250).options())
    assert policy == BatchPolicy(64, 0.25)


def test_a_client_that_wakes_up_early_with_nothing_is_waited_on_until_max_wait():
    client = ScriptedClient([[], [7]])  # the first wait ends early, empty
    assert BatchPolicy(10, 5.0).fill(client.fetch) == [7]
    assert client.waits[0] > 0 and client.waits[1] > 0, "the second fetch waits too"
