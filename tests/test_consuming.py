"""What both consuming ends share (:mod:`stream_ae.kafka.consuming`): the micro-batch policy
(driven by a fake fetch; no client involved) and how reading starts, with static partitions
or by subscribing to the group's rebalances."""

from __future__ import annotations

import logging
import time
from collections import namedtuple

import pytest

from stream_ae.kafka.consuming import BatchPolicy, log_failed_commit, partition_keys, start_reading
from stream_ae.kafka.options import ConsumerOptions

TopicPartition = namedtuple("TopicPartition", "topic partition")  # what either client hands over


class FakeFetch:
    """A client buffer: hands out what it holds, up to ``wanted``; records each call.

    ``arrivals`` are lists of items that land in the buffer, one list per call, before the
    call looks (an empty list: the client woke up with nothing).
    """

    def __init__(self, held: int = 0, arrivals: list[list[int]] | None = None, pause_s: float = 0.0) -> None:
        self.buffer = list(range(held))
        self.arrivals = arrivals or []
        self.pause_s = pause_s
        self.calls: list[tuple[int, float]] = []

    def __call__(self, wanted: int, seconds: float) -> list[int]:
        self.calls.append((wanted, seconds))
        if self.arrivals:
            self.buffer.extend(self.arrivals.pop(0))
        if not self.buffer:
            time.sleep(min(self.pause_s, seconds))
        out, self.buffer = self.buffer[:wanted], self.buffer[wanted:]
        return out


def test_from_options_reads_the_batch_size_and_the_wait_in_seconds():
    options = ConsumerOptions("g", max_batch_size=512, max_wait_ms=250, auto_offset_reset="earliest",
                              session_timeout_ms=6000, heartbeat_interval_ms=1000, fetch_max_wait_ms=20,
                              max_partition_fetch_bytes=1 << 20)
    assert BatchPolicy.from_options(options) == BatchPolicy(512, 0.25)


def test_a_short_batch_is_returned_at_once_without_asking_again():
    fetch = FakeFetch(held=3)
    assert BatchPolicy(max_records=10, max_wait_s=5.0).fill(fetch) == [0, 1, 2]
    assert len(fetch.calls) == 1
    assert fetch.calls[0][0] == 10 and 4.5 < fetch.calls[0][1] <= 5.0


def test_a_batch_never_holds_more_than_max_records():
    fetch = FakeFetch(held=25)
    policy = BatchPolicy(max_records=10, max_wait_s=1.0)
    assert policy.fill(fetch) == list(range(10))
    assert policy.fill(fetch) == list(range(10, 20))
    assert policy.fill(fetch) == list(range(20, 25))
    assert [wanted for wanted, _ in fetch.calls] == [10, 10, 10]


def test_an_empty_wake_up_waits_on_until_the_deadline_then_returns_nothing():
    fetch = FakeFetch(pause_s=0.01)
    started = time.monotonic()
    assert BatchPolicy(max_records=10, max_wait_s=0.15).fill(fetch) == []
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 1.0
    assert len(fetch.calls) > 1, "asked again after waking up early with nothing"
    waits = [seconds for _, seconds in fetch.calls]
    assert waits == sorted(waits, reverse=True) and waits[-1] < 0.02, "each call waits only for what is left"


def test_records_that_arrive_after_an_empty_wake_up_are_returned():
    fetch = FakeFetch(arrivals=[[], [], [7, 8]], pause_s=0.001)
    assert BatchPolicy(max_records=10, max_wait_s=2.0).fill(fetch) == [7, 8]
    assert len(fetch.calls) == 3


def test_zero_wait_asks_once():
    fetch = FakeFetch()
    assert BatchPolicy(max_records=10, max_wait_s=0.0).fill(fetch) == []
    assert fetch.calls == [(10, 0.0)]


def test_partition_keys_turn_client_partitions_into_pairs():
    assert partition_keys([TopicPartition("a", 1), TopicPartition("b", 0)]) == [("a", 1), ("b", 0)]
    assert partition_keys([]) == []


class Client:
    """Records what ``start_reading`` asks of the client."""

    def __init__(self) -> None:
        self.assigned: list[list] = []
        self.subscribed: list[tuple] = []

    def assign(self, keys) -> None:
        self.assigned.append(keys)

    def subscribe(self, topics, gained, lost) -> None:
        self.subscribed.append((topics, gained, lost))


def test_static_partitions_are_assigned_and_announced_once_without_subscribing():
    client, assigned, revoked = Client(), [], []
    start_reading(["events"], [("events", 2), ("events", 0)], client.assign, client.subscribe,
                  assigned.append, revoked.append)
    assert client.assigned == [[("events", 2), ("events", 0)]]
    assert assigned == [[("events", 2), ("events", 0)]] and revoked == []
    assert client.subscribed == []


@pytest.mark.parametrize("static", [None, []], ids=["none", "empty"])
def test_without_static_partitions_the_topics_are_subscribed_and_rebalances_handed_on(static):
    client, assigned, revoked = Client(), [], []
    start_reading(["events", "more"], static, client.assign, client.subscribe, assigned.append, revoked.append)
    assert client.assigned == [] and assigned == [], "nothing is owned before a rebalance"
    [(topics, gained, lost)] = client.subscribed
    assert topics == ["events", "more"]
    gained({TopicPartition("events", 1)})
    gained([TopicPartition("more", 0), TopicPartition("more", 3)])
    lost([TopicPartition("events", 1)])
    assert assigned == [[("events", 1)], [("more", 0), ("more", 3)]]
    assert revoked == [[("events", 1)]]


def test_a_failed_commit_is_a_warning_that_says_whether_it_was_asynchronous(caplog):
    with caplog.at_level(logging.WARNING, logger="stream_ae.kafka.consuming"):
        log_failed_commit(3, "rebalance in progress", asynchronous=True)
        log_failed_commit(2, "not the owner", asynchronous=False)
    first, second = caplog.records
    assert first.levelno == second.levelno == logging.WARNING
    assert "asynchronous commit of 3 partitions failed" in first.getMessage()
    assert "rebalance in progress" in first.getMessage()
    assert "commit of 2 partitions refused after a rebalance" in second.getMessage()
