"""The transactional sink's protocol on a scripted producer (no broker): what the integration
tests cannot stage on demand, such as a producer that can no longer abort.

Against a real broker, both clients' transactional producers are tested in
``tests/integration/test_backend_conformance.py`` and ``tests/reliability/test_exactly_once.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from stream_ae.kafka.ends import DeliveryError
from stream_ae.kafka.records import PartitionKey
from stream_ae.kafka.transactions import TransactionalBatchSink, TransactionalProducer


class RefusedError(Exception):
    """Stands for the client's error."""


class ScriptedProducer(TransactionalProducer):
    """Records every call; commits fail while ``refuse_commit`` is set, aborts while ``refuse_abort`` is."""

    def __init__(self, calls: list[tuple], number: int) -> None:
        self.calls = calls
        self.number = number
        self.refuse_commit = False
        self.refuse_abort = False
        self.commit_gate = threading.Event()
        self.commit_gate.set()

    def begin(self) -> None:
        self.calls.append((self.number, "begin"))

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None) -> None:
        self.calls.append((self.number, "send", value))
        if value == b"refused at once":
            raise RefusedError("the transaction is in an abortable error state")

    def commit(self, next_offsets: dict[PartitionKey, int], group_metadata: object) -> None:
        self.commit_gate.wait(10)
        self.calls.append((self.number, "commit", dict(next_offsets), group_metadata))
        if self.refuse_commit:
            raise RefusedError("offsets refused: ILLEGAL_GENERATION")

    def abort(self) -> None:
        self.calls.append((self.number, "abort"))
        if self.refuse_abort:
            raise RefusedError("fenced")

    def close(self, timeout_s: float) -> None:
        self.calls.append((self.number, "close"))


@pytest.fixture
def scripted():
    """``(sink, producers, calls)``: a sink over scripted producers, each new one appended."""
    calls: list[tuple] = []
    producers: list[ScriptedProducer] = []

    def new_producer() -> ScriptedProducer:
        producers.append(ScriptedProducer(calls, len(producers)))
        return producers[-1]
    sink = TransactionalBatchSink(new_producer)
    yield sink, producers, calls
    sink.committer.shutdown()


def test_a_batch_is_one_transaction_with_its_offsets(scripted):
    sink, producers, calls = scripted
    sink.send("alerts", b"k", b"a")
    sink.send("scores", b"k", b"s")
    delivery = sink.seal_transaction({("events", 0): 7}, "membership")
    assert delivery.wait() == 2 and delivery.done()
    assert calls == [(0, "begin"), (0, "send", b"a"), (0, "send", b"s"),
                     (0, "commit", {("events", 0): 7}, "membership")]
    assert sink.seal().wait() == 0, "an empty batch is a transaction too"
    assert calls[-2:] == [(0, "begin"), (0, "commit", {}, None)]


def test_the_next_transaction_begins_only_once_the_last_one_has_ended(scripted):
    sink, producers, calls = scripted
    sink.send("alerts", None, b"1")
    producers[0].commit_gate.clear()  # the commit is slow to come back
    first = sink.seal_transaction({("events", 0): 1}, "m")
    assert not first.done()
    sending = threading.Thread(target=sink.send, args=("alerts", None, b"2"))
    sending.start()
    sending.join(0.3)
    assert sending.is_alive() and calls[-1] == (0, "send", b"1"), "waits for the commit"
    producers[0].commit_gate.set()
    sending.join(10)
    assert calls[-3:] == [(0, "commit", {("events", 0): 1}, "m"), (0, "begin"), (0, "send", b"2")]
    assert first.wait() == 1


def test_a_refused_commit_aborts_the_transaction_and_the_producer_goes_on(scripted):
    sink, producers, calls = scripted
    producers[0].refuse_commit = True
    sink.send("alerts", None, b"zombie")
    with pytest.raises(DeliveryError, match="1 records and 1 partition offsets aborted.*ILLEGAL_GENERATION"):
        sink.seal_transaction({("events", 0): 1}, "stale").wait()
    assert calls[-1] == (0, "abort")
    producers[0].refuse_commit = False
    sink.send("alerts", None, b"next")
    assert sink.seal_transaction({("events", 0): 1}, "current").wait() == 1
    assert len(producers) == 1, "the same producer"


def test_a_producer_that_cannot_abort_is_replaced(scripted):
    sink, producers, calls = scripted
    producers[0].refuse_commit = producers[0].refuse_abort = True
    sink.send("alerts", None, b"x")
    with pytest.raises(DeliveryError, match="aborted"):
        sink.seal_transaction({("events", 0): 1}, "m").wait()
    assert calls[-2:] == [(0, "abort"), (0, "close")] and len(producers) == 2
    sink.send("alerts", None, b"y")
    assert sink.seal_transaction({("events", 0): 1}, "m").wait() == 1
    assert calls[-3:] == [(1, "begin"), (1, "send", b"y"), (1, "commit", {("events", 0): 1}, "m")]


def test_offsets_polled_without_a_group_generation_are_never_committed(scripted):
    sink, producers, calls = scripted
    sink.send("alerts", None, b"x")
    with pytest.raises(DeliveryError, match="no group generation"):
        sink.seal_transaction({("events", 0): 1}, None).wait()
    assert [call[1] for call in calls] == ["begin", "send", "abort"]


def test_closing_aborts_a_transaction_left_open(scripted):
    sink, producers, calls = scripted
    sink.send("alerts", None, b"x")
    sink.close()
    assert calls[-2:] == [(0, "abort"), (0, "close")]


def test_a_record_refused_at_once_dooms_its_transaction_not_the_loop(scripted):
    sink, producers, calls = scripted
    sink.send("alerts", None, b"refused at once")
    sink.send("alerts", None, b"not sent")
    with pytest.raises(DeliveryError, match="2 records .* aborted.*abortable error state"):
        sink.seal_transaction({("events", 0): 2}, "m").wait()
    assert [call[1:] for call in calls] == [("begin",), ("send", b"refused at once"), ("abort",)]
    sink.send("alerts", None, b"next")
    assert sink.seal_transaction({("events", 0): 2}, "m").wait() == 1, "the next transaction goes through"
