"""The consumed micro-batch as columns: partition slots, offsets to commit and to seek back to,
and the micro-batching policy that fills it."""

from __future__ import annotations

import time

import numpy as np

from stream_ae.batching import BatchPolicy
from stream_ae.records import ConsumedBatch, index_partitions
from tests.test_codec import FakeRecord


def interleaved() -> list[FakeRecord]:
    """Records of three partitions (two topics), interleaved as a multi-partition fetch returns them."""
    layout = [("a", 0, 10), ("a", 1, 5), ("a", 0, 11), ("b", 0, 7), ("a", 1, 6), ("a", 0, 12), ("b", 0, 8)]
    return [FakeRecord(f"v{n}".encode(), topic=topic, partition=partition, offset=offset, timestamp=100 + n)
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
    assert [batch.partitions[i] for i in batch.partition_index] == [(r.topic, r.partition) for r in records]
    assert batch.record(3) is records[3]


def test_offsets_to_commit_and_to_read_again_per_partition():
    batch = ConsumedBatch.from_records(interleaved())
    assert batch.next_offsets() == {("a", 0): 13, ("a", 1): 7, ("b", 0): 9}
    assert batch.first_offsets() == {("a", 0): 10, ("a", 1): 5, ("b", 0): 7}
    empty = ConsumedBatch.from_records([])
    assert len(empty) == 0 and empty.next_offsets() == {} and empty.first_offsets() == {}


class ScriptedClient:
    """A client whose buffer holds the given chunks; a fetch with a wait sleeps while it is empty.

    An empty chunk stands for a fetch that finds nothing yet (the next chunk is the answer
    of a fetch still in flight).
    """

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


def test_a_batch_takes_what_is_buffered_and_stops_when_nothing_more_is():
    client = ScriptedClient([[1, 2], [3], [4, 5, 6]])
    assert BatchPolicy(100, 0.5).fill(client.fetch) == [1, 2, 3, 4, 5, 6]
    assert client.waits[0] > 0 and client.waits[1:] == [0.0, 0.0, 0.0]


def test_a_batch_is_cut_at_max_records():
    client = ScriptedClient([[1, 2, 3], [4, 5, 6]])
    policy = BatchPolicy(4, 0.5, linger_s=0.01)
    assert policy.fill(client.fetch) == [1, 2, 3, 4]
    assert policy.fill(client.fetch) == [5, 6]


def test_the_linger_waits_once_for_the_fetch_in_flight():
    # buffered [1, 2]; then nothing buffered while the next fetch is in flight; its answer [3, 4]
    client = ScriptedClient([[1, 2], [], [3, 4], [], [5]])
    assert BatchPolicy(100, 0.5, linger_s=0.005).fill(client.fetch) == [1, 2, 3, 4]
    assert client.waits[0] > 0 and client.waits[1:] == [0.0, 0.005, 0.0], "one linger per batch"
    assert BatchPolicy(100, 0.5, linger_s=0.005).fill(client.fetch) == [5], "the rest is the next batch's"
    client = ScriptedClient([[1, 2], [], [3, 4]])
    assert BatchPolicy(100, 0.5).fill(client.fetch) == [1, 2], "no linger: the batch ends when the buffer runs dry"


def test_the_linger_never_passes_max_wait():
    client = ScriptedClient([[1]])
    started = time.monotonic()
    assert BatchPolicy(100, 0.05, linger_s=5.0).fill(client.fetch) == [1]
    assert time.monotonic() - started < 1.0 and 0 < client.waits[-1] <= 0.05


def test_an_empty_client_gives_an_empty_batch_after_max_wait():
    client = ScriptedClient([])
    started = time.monotonic()
    assert BatchPolicy(10, 0.2, linger_s=0.01).fill(client.fetch) == []
    assert 0.15 <= time.monotonic() - started < 2.0


def test_the_policy_comes_from_the_consumer_settings():
    from stream_ae.config import ConsumerSettings

    policy = BatchPolicy.from_settings(ConsumerSettings(max_batch_size=64, max_wait_ms=250, linger_ms=7))
    assert policy == BatchPolicy(64, 0.25, 0.007)
