"""One contract, two clients: the Source and Sink of kafka-python and of confluent-kafka
against the test broker (``STREAM_AE_TEST_BROKER``: Apache Kafka or Tansu).

Every test runs once per client (``client``), built through :mod:`stream_ae.kafka.backends`
as the daemon builds them: polling micro-batches as columns (keys, headers, timestamps),
commits a new member of the group resumes after, rewinding, lag, the group's rebalance
callbacks; sealed batches, acknowledgement times, headers, the partition of a key, a
refused delivery; the detector's commit only after acknowledgement and its dead letters;
transactions (records and offsets committed together, aborted ones invisible to
``read_committed`` readers, a zombie's offsets refused). A feature Tansu lacks skips there,
saying which.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import orjson
import pytest

from stream_ae.kafka.backends import make_sink, make_source, make_transactional_sink
from stream_ae.kafka.ends import Delivery, DeliveryError, Sink, Source, TransactionalSink
from stream_ae.kafka.options import Connection, ConsumerOptions, TransactionOptions
from stream_ae.kafka.records import ConsumedBatch, PartitionKey
from stream_ae.kafka.topics import ensure_topics, read_topic
from stream_ae.pipeline.alerts import REASON_HEADER
from stream_ae.pipeline.codec import encode_binary
from stream_ae.tools.daemon_thread import DaemonThread
from tests.helpers import (
    DATASET,
    committed_total,
    detector_settings,
    events,
    group_offsets,
    produce,
    produce_to,
    skip_on_tansu,
    wait_for,
)

pytestmark = pytest.mark.integration

CLIENTS = ["kafka-python", "confluent-kafka"]
EVENTS = 30


@pytest.fixture(params=CLIENTS)
def client(request) -> str:
    """Each Kafka client in turn (confluent-kafka skipped where the extra is not installed)."""
    if request.param == "confluent-kafka":
        pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed (the 'confluent' extra)")
    return request.param


@pytest.fixture
def connection(broker) -> Connection:
    return Connection(broker.bootstrap_servers)


def options(group_id: str, static: list[PartitionKey] | None, max_batch_size: int = 10,
            read_committed: bool = False) -> ConsumerOptions:
    return ConsumerOptions(group_id, max_batch_size=max_batch_size, max_wait_ms=200, auto_offset_reset="earliest",
                           session_timeout_ms=6000, heartbeat_interval_ms=1000, fetch_max_wait_ms=20,
                           max_partition_fetch_bytes=1 << 20, static_partitions=static,
                           read_committed=read_committed)


@pytest.fixture
def sources(client, connection) -> Iterator[Callable[..., Source]]:
    """``sources(topic, group, static=True, **callbacks)``: a source of ``client`` reading
    partition 0 (``static``) or subscribing; closed after the test."""
    opened: list[Source] = []

    def make(topic: str, group: str, static: bool = True, read_committed: bool = False,
             on_assigned: Callable[[list[PartitionKey]], None] = lambda keys: None,
             on_revoked: Callable[[list[PartitionKey]], None] = lambda keys: None) -> Source:
        opened.append(make_source(client, connection, [topic],
                                  options(group, [(topic, 0)] if static else None, read_committed=read_committed),
                                  on_assigned, on_revoked))
        return opened[-1]
    yield make
    for source in opened:
        source.close()


@pytest.fixture
def sinks(client, connection) -> Iterator[Callable[[Sequence[str]], Sink]]:
    """``sinks(topics)``: a sink of ``client`` writing to ``topics``; closed after the test."""
    opened: list[Sink] = []

    def make(topics: Sequence[str] = ()) -> Sink:
        opened.append(make_sink(client, connection, topics))
        return opened[-1]
    yield make
    for sink in opened:
        sink.close()


@pytest.fixture
def transactional_sinks(client, connection, topic_names) -> Iterator[Callable[[Sequence[str]], TransactionalSink]]:
    """``transactional_sinks(topics)``: a transactional sink of ``client`` with a fresh
    ``transactional.id``; closed after the test."""
    opened: list[TransactionalSink] = []

    def make(topics: Sequence[str] = ()) -> TransactionalSink:
        opened.append(make_transactional_sink(client, connection, TransactionOptions(topic_names("txn")), topics))
        return opened[-1]
    yield make
    for sink in opened:
        sink.close()


@pytest.fixture
def one_partition(connection, topic_names) -> str:
    """A one-partition topic holding values ``v0..v29`` keyed ``k0..k29`` with a header each."""
    topic = topic_names("in")
    ensure_topics(connection, {topic: 1})
    produce_to(connection, topic, [f"v{n}".encode() for n in range(EVENTS)],
               [f"k{n}".encode() for n in range(EVENTS)], [[("n", str(n).encode())] for n in range(EVENTS)])
    return topic


def next_batch(source: Source, timeout_s: float = 30.0) -> ConsumedBatch:
    """The next non-empty micro-batch."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = source.poll_batch()
        if len(batch):
            return batch
    pytest.fail(f"no records within {timeout_s} s")


def read_all(source: Source, count: int, timeout_s: float = 30.0) -> list[bytes | None]:
    """The values of the next ``count`` records (fails the test after ``timeout_s``)."""
    values: list[bytes | None] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < count and time.monotonic() < deadline:
        values.extend(source.poll_batch().values)
    assert len(values) >= count, f"read {len(values)} of {count} records in {timeout_s} s"
    return values


# -- the source: polling, commits, rewinding, rebalances ----------------------------------------

def test_a_poll_gives_a_micro_batch_of_columns_at_most_max_batch_size(sources, one_partition, topic_names):
    assigned: list[list[PartitionKey]] = []
    reader = sources(one_partition, topic_names("group"), on_assigned=assigned.append)
    assert assigned == [[(one_partition, 0)]], "static partitions are announced once, from the constructor"
    batch = next_batch(reader)
    count = len(batch)
    assert 0 < count <= 10
    assert batch.values == [f"v{n}".encode() for n in range(count)]
    assert batch.offsets.tolist() == list(range(count))
    assert batch.partitions == [(one_partition, 0)] and batch.partition_index.tolist() == [0] * count
    assert (batch.timestamps_ms > 1_600_000_000_000).all(), "the broker's timestamps, in milliseconds"
    record = batch.record(count - 1)
    assert record.key == f"k{count - 1}".encode() and dict(record.headers) == {"n": str(count - 1).encode()}
    assert batch.first_offsets() == {(one_partition, 0): 0} and batch.next_offsets() == {(one_partition, 0): count}


def test_a_new_source_of_the_group_resumes_after_the_commit(sources, one_partition, topic_names):
    group = topic_names("group")
    first = sources(one_partition, group)
    batch = next_batch(first)
    assert first.commit(batch.next_offsets()) is True
    assert first.commit({}) is True, "nothing to commit is no error"
    first.close()

    resumed = next_batch(sources(one_partition, group))
    assert resumed.offsets[0] == len(batch), "starts right after the committed offset"
    assert resumed.values[0] == f"v{len(batch)}".encode()
    assert next_batch(sources(one_partition, topic_names("other-group"))).offsets[0] == 0, \
        "another group has its own offsets"


def test_without_a_commit_a_new_source_reads_from_the_start(sources, one_partition, topic_names):
    group = topic_names("group")
    first = sources(one_partition, group)
    next_batch(first)
    first.close()
    assert next_batch(sources(one_partition, group)).offsets[0] == 0


def test_an_asynchronous_commit_is_taken_by_the_broker(sources, one_partition, topic_names, connection):
    group = topic_names("group")
    first = sources(one_partition, group)
    batch = next_batch(first)
    assert first.commit(batch.next_offsets(), asynchronous=True) is True
    deadline = time.monotonic() + 20
    while group_offsets(connection, group, one_partition, 1)[0] != len(batch) and time.monotonic() < deadline:
        first.poll_batch()  # the answer is served during a poll
    first.close()
    assert next_batch(sources(one_partition, group)).offsets[0] == len(batch)


def test_rewind_reads_the_records_again_from_the_given_offset(sources, one_partition, topic_names):
    reader = sources(one_partition, topic_names("group"))
    seen: list[int] = []
    while len(seen) < 15:
        seen.extend(next_batch(reader).offsets.tolist())
    reader.rewind({(one_partition, 0): 5, (one_partition, 9): 0})  # a partition not assigned is left alone
    again = next_batch(reader)
    assert again.offsets[0] == 5 and again.values[0] == b"v5"


def test_a_poll_the_client_fails_for_an_unreachable_broker_gives_nothing_and_skips_nothing(
        client, sources, one_partition, topic_names, monkeypatch):
    """kafka-python 3.0.12 can raise ``KafkaConnectionError`` out of ``poll`` while a broker
    is down (its coordinator lookup does not catch a refused metadata connection); it ended
    the daemon in the broker-outage test. Here the client's ``poll`` raises that error for
    its first two calls: the source's polls are empty meanwhile, then reading starts at
    offset 0. An error that is not retriable is raised."""
    if client != "kafka-python":
        pytest.skip("confluent-kafka reports a broker outage through its error callback, not by raising")
    from kafka.errors import KafkaConnectionError, UnsupportedVersionError

    reader = sources(one_partition, topic_names("group"))
    real_poll, failures = reader.consumer.poll, []

    def failing_poll(*args, **kwargs):
        if len(failures) < 2:
            failures.append(1)
            raise KafkaConnectionError("111 ECONNREFUSED")
        return real_poll(*args, **kwargs)

    monkeypatch.setattr(reader.consumer, "poll", failing_poll)
    assert len(reader.poll_batch()) == 0 and failures
    assert next_batch(reader).offsets[0] == 0, "nothing was skipped"
    assert len(failures) == 2

    def refusing_poll(*args, **kwargs):
        raise UnsupportedVersionError("not retriable")

    monkeypatch.setattr(reader.consumer, "poll", refusing_poll)
    with pytest.raises(UnsupportedVersionError):
        reader.poll_batch()


def test_lag_is_zero_once_everything_is_read_and_the_source_is_connected(sources, one_partition, topic_names):
    reader = sources(one_partition, topic_names("group"))
    assert len(read_all(reader, EVENTS)) == EVENTS
    assert reader.poll_batch().values == [], "nothing more: an empty batch after max_wait"
    assert reader.lag() == {(one_partition, 0): 0}
    deadline = time.monotonic() + 5  # confluent-kafka reports its connection with its statistics, every second
    while not reader.connected() and time.monotonic() < deadline:
        reader.poll_batch()
    assert reader.connected()


def test_members_joining_the_group_share_the_partitions_through_the_rebalance_callbacks(
        sources, connection, topic_names):
    topic, group = topic_names("in"), topic_names("group")
    ensure_topics(connection, {topic: 2})
    produce_to(connection, topic, [b"a", b"b", b"c", b"d"], [b"1", b"2", b"3", b"4"])
    owned: dict[str, set[PartitionKey]] = {"first": set(), "second": set()}
    revoked: list[PartitionKey] = []

    def member(name: str) -> Source:
        def lost(partitions: list[PartitionKey]) -> None:
            owned[name].difference_update(partitions)
            if name == "first":
                revoked.extend(partitions)
        return sources(topic, group, static=False, on_assigned=owned[name].update, on_revoked=lost)

    first = member("first")
    assert owned["first"] == set(), "nothing is owned before the group's rebalance"
    assert sorted(read_all(first, 4)) == [b"a", b"b", b"c", b"d"]
    assert owned["first"] == {(topic, 0), (topic, 1)}
    assert set(first.lag()) == {(topic, 0), (topic, 1)}

    second = member("second")
    deadline = time.monotonic() + 60
    while not (owned["first"] and owned["second"]) and time.monotonic() < deadline:
        first.poll_batch()
        second.poll_batch()
    assert revoked, "the first member is told what it gives up"
    assert owned["first"] | owned["second"] == {(topic, 0), (topic, 1)}
    assert not owned["first"] & owned["second"], "a partition has one owner"


# -- the sink: sealed batches, acknowledgements, headers, partitions, refusals ------------------

def test_a_sealed_batch_is_counted_once_acknowledged_and_its_records_land_as_sent(
        sinks, connection, topic_names):
    topic = topic_names("out")
    ensure_topics(connection, {topic: 1})
    sink = sinks([topic])
    sink.send(topic, b"warm-up", b"")
    sink.flush()  # connected, producer id granted: what is timed next is one round trip
    for n in range(5):
        sink.send(topic, f"k{n}".encode(), f"v{n}".encode(), [("stream_ae.reason", b"r"), ("n", str(n).encode())])
    sealed_at = time.time()
    delivery = sink.seal()
    time.sleep(0.5)  # the loop busy elsewhere: the acknowledgement is timed when it came
    assert delivery.wait() == 5 and delivery.done()
    assert sealed_at <= delivery.acknowledged_at() < sealed_at + 0.4, "timed when the last acknowledgement came"

    records = read_topic(connection, topic, 6, timeout_s=20)[1:]
    assert [(r.key, r.value) for r in records] == [(f"k{n}".encode(), f"v{n}".encode()) for n in range(5)]
    assert [r.offset for r in records] == list(range(1, 6))
    assert [dict(r.headers) for r in records] == [{"stream_ae.reason": b"r", "n": str(n).encode()} for n in range(5)]


def test_each_seal_closes_its_own_batch(sinks, connection, topic_names):
    topic = topic_names("out")
    ensure_topics(connection, {topic: 1})
    sink = sinks([topic])
    sink.send(topic, None, b"a")
    sink.send(topic, None, b"b")
    first = sink.seal()
    sink.send(topic, None, b"c")
    second = sink.seal()
    empty = sink.seal()
    assert (second.wait(), first.wait(), empty.wait()) == (1, 2, 0)
    assert empty.done()
    assert sink.flush() == 0, "nothing left open"
    assert [r.value for r in read_topic(connection, topic, 3, timeout_s=20)] == [b"a", b"b", b"c"]


def test_an_empty_batch_says_it_was_acknowledged_when_it_was_sealed(sinks):
    sink = sinks()
    before = time.time()
    delivery = sink.seal()
    after = time.time()
    assert delivery.wait() == 0
    assert before <= delivery.acknowledged_at() <= after


def test_keyed_records_go_to_the_partition_of_the_keys_crc32(sinks, connection, topic_names):
    topic = topic_names("keyed")
    ensure_topics(connection, {topic: 3})
    sink = sinks([topic])
    keys = [f"events-0-{n}".encode() for n in range(30)]
    for key in keys:
        sink.send(topic, key, b"x")
    assert sink.flush() == 30
    records = read_topic(connection, topic, None, timeout_s=20)
    assert sorted(r.key for r in records) == sorted(keys)
    assert all(r.partition == zlib.crc32(r.key) % 3 for r in records), "librdkafka's consistent_random"
    assert len({r.partition for r in records}) == 3


def test_a_refused_record_fails_its_batch_and_the_sink_goes_on(sinks, connection, topic_names):
    skip_on_tansu("does not enforce a topic's max.message.bytes, so it refuses no record")
    topic = topic_names("small")
    ensure_topics(connection, {topic: 1}, configs={"max.message.bytes": "1024"})
    sink = sinks([topic])
    sink.send(topic, b"fits", b"x")
    sink.send(topic, b"too-large", b"x" * 4096)
    with pytest.raises(DeliveryError, match="not acknowledged"):
        sink.seal().wait()
    sink.send(topic, b"after", b"y")
    assert sink.flush() == 1, "a new batch is delivered after the refusal"
    assert b"after" in [r.key for r in read_topic(connection, topic, None, timeout_s=20)]


def test_a_record_over_the_sinks_limit_is_refused_for_good_and_the_rest_delivered(client, connection, topic_names):
    """The sink's own limit (``max_request_bytes``), on any broker: the large record fails its
    batch as a permanent refusal, the producer is kept, and the records around it arrive."""
    topic = topic_names("scores")
    ensure_topics(connection, {topic: 1})
    sink = make_sink(client, connection, [topic], max_request_bytes=4096)
    try:
        producer = sink.producer  # type: ignore[attr-defined]
        sink.send(topic, b"small-1", b"x")
        sink.send(topic, b"large", b"x" * 8192)
        sink.send(topic, b"small-2", b"y")
        with pytest.raises(DeliveryError) as failed:
            sink.seal().wait()
        assert failed.value.permanent and failed.value.transient == 0
        assert [(item.topic, item.reason) for item in failed.value.refusals] == [(topic, "record_too_large")]
        assert sink.producer is producer, "a refusal alone does not replace the producer"  # type: ignore[attr-defined]
        sink.send(topic, b"after", b"z")
        assert sink.seal().wait() == 1
    finally:
        sink.close()
    assert sorted(record.value for record in read_topic(connection, topic, 3)) == [b"x", b"y", b"z"]


# -- the detector on each client: commit after acknowledgement, dead letters --------------------

class CrashError(Exception):
    """Stands for the process dying between producing a batch's alerts and their acknowledgement."""


class CrashBeforeAcknowledgement(Sink):
    """Sends through a real sink, and 'dies' when the loop would wait for a batch's acknowledgement."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        self.inner.send(topic, key, value, headers)

    def seal(self) -> Delivery:
        self.inner.seal()

        class DiesOnWait(Delivery):
            def done(self) -> bool:
                return False

            def wait(self) -> int:
                raise CrashError("killed before the broker acknowledged the batch")

            def acknowledged_at(self) -> float:
                return 0.0
        return DiesOnWait()

    def close(self) -> None:
        self.inner.close()


def test_offsets_are_committed_only_after_the_output_is_acknowledged(broker, client, topic_names,
                                                                    synthetic_checkpoint):
    checkpoint, path = synthetic_checkpoint
    settings = detector_settings(broker, topic_names, path, kafka={"client": client})
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: 1})
    rows = checkpoint.training["split"]["test"][:200]
    produce(settings, topic, events(rows))

    sink = CrashBeforeAcknowledgement(make_sink(client, settings.kafka.connection(), settings.topics.outputs()))
    crashing = DaemonThread(settings, checkpoint, sink=sink)
    crashing.start().thread.join(60)  # it joins the group, reads a batch, and dies at the acknowledgement
    assert isinstance(crashing.error, CrashError)
    registry = crashing.daemon.metrics.registry
    assert registry.get_sample_value("stream_ae_batch_size_events_sum") > 0, "it had read a batch"
    assert crashing.daemon.metrics.totals()["events_in"] == 0, "a batch counts once it is done"
    assert committed_total(settings, topic, 1) == 0, "nothing may be committed before the acknowledgement"

    with DaemonThread(settings, checkpoint) as restarted:
        totals = restarted.wait_accounted(200)
    assert totals["events_in"] == 200, "the unacknowledged batch is read again"
    assert committed_total(settings, topic, 1) == 200
    keys = {r.key for r in read_topic(settings.kafka.connection(), settings.topics.scores, 200)}
    assert keys == {f"{topic}-0-{offset}".encode() for offset in range(200)}


def test_events_in_alerts_scores_and_dead_letters_out(broker, client, topic_names, synthetic_checkpoint):
    checkpoint, path = synthetic_checkpoint
    settings = detector_settings(broker, topic_names, path, kafka={"client": client})
    topic = settings.topics.input[0]
    connection = settings.kafka.connection()
    ensure_topics(connection, {topic: 2})
    rows = np.random.default_rng(1).permutation(checkpoint.training["split"]["test"])[:400]
    bad = {b"not json": "invalid_json", encode_binary(np.ones(5)): "binary_wrong_count"}
    produce(settings, topic, events(rows[:200]) + list(bad) + [encode_binary(DATASET.values[r]) for r in rows[200:]])

    with DaemonThread(settings, checkpoint) as running:
        totals = running.wait_accounted(402)

    assert totals == {"events_in": 402, "events_scored": 400, "dead_lettered": 2, "alerts": totals["alerts"]}
    alerts = [orjson.loads(r.value) for r in read_topic(connection, settings.topics.alerts, totals["alerts"])]
    assert len(alerts) == totals["alerts"] > 0
    labels = dict(zip(rows.tolist(), DATASET.labels[rows].tolist()))
    flagged = [labels[int(a["event_id"].removeprefix("row-"))] for a in alerts if a["event_id"]]
    assert np.mean(flagged) > 0.5, "most alerts are anomalies"
    assert all(a["key"] == f"{a['topic']}-{a['partition']}-{a['offset']}" for a in alerts)
    dead = read_topic(connection, settings.topics.dead_letter, 2)
    assert {r.value: dict(r.headers)[REASON_HEADER].decode() for r in dead} == bad
    assert len({r.key for r in read_topic(connection, settings.topics.scores, 400)}) == 400


# -- transactions (exactly-once delivery) -------------------------------------------------------

def test_a_transaction_commits_its_records_and_the_groups_offsets_together(
        transactional_sinks, sources, connection, topic_names):
    out, source_topic, group = topic_names("out"), topic_names("in"), topic_names("group")
    ensure_topics(connection, {out: 1, source_topic: 2})
    membership = sources(source_topic, group).group_metadata()  # of a member with static partitions
    sink = transactional_sinks([out])
    for n in range(3):
        sink.send(out, f"k{n}".encode(), f"v{n}".encode(), [("n", str(n).encode())])
    delivery = sink.seal_transaction({(source_topic, 0): 7, (source_topic, 1): 4}, membership)
    assert delivery.wait() == 3 and delivery.done()
    assert delivery.acknowledged_at() <= time.time()
    # the coordinator answers for a partition's offset once the transaction's marker reached it
    # (until then kafka-python reads none): seen once, a moment after the commit returned
    wait_for(lambda: group_offsets(connection, group, source_topic, 2) == {0: 7, 1: 4}, 20,
             "the transaction's offsets to be readable")
    committed = read_topic(connection, out, None, timeout_s=20, read_committed=True)
    assert [(r.key, r.value, dict(r.headers)) for r in committed] == [
        (f"k{n}".encode(), f"v{n}".encode(), {"n": str(n).encode()}) for n in range(3)]
    sink.send(out, b"k3", b"v3")
    assert sink.flush() == 1, "the next transaction, without offsets"
    assert group_offsets(connection, group, source_topic, 2) == {0: 7, 1: 4}


def test_an_aborted_transaction_is_invisible_to_read_committed_readers(
        transactional_sinks, sources, connection, topic_names):
    skip_on_tansu("does not isolate transactions: read_committed readers see aborted records")
    out, source_topic, group = topic_names("out"), topic_names("in"), topic_names("group")
    ensure_topics(connection, {out: 1, source_topic: 1})
    membership = sources(source_topic, group).group_metadata()
    sink = transactional_sinks([out])
    sink.send(out, b"first", b"committed")
    sink.seal_transaction({(source_topic, 0): 1}, membership).wait()
    sink.send(out, b"second", b"aborted")
    with pytest.raises(DeliveryError, match="no group generation"):  # offsets polled without membership
        sink.seal_transaction({(source_topic, 0): 2}, None).wait()
    write_and_abort(connection, out, topic_names("other-txn"))  # an aborted transaction whose record is in the log
    sink.send(out, b"third", b"committed")
    sink.seal_transaction({(source_topic, 0): 3}, membership).wait()

    assert group_offsets(connection, group, source_topic, 1) == {0: 3}, "the aborted offsets are not committed"
    assert b"written" in [r.key for r in read_topic(connection, out, None, 20)]
    assert [r.key for r in read_topic(connection, out, None, 20, read_committed=True)] == [b"first", b"third"]
    assert read_all(sources(out, topic_names("group"), read_committed=True), 2)[:2] == [b"committed"] * 2, \
        "the source skips the aborted record"
    assert b"aborted" in read_all(sources(out, topic_names("group")), 2)[:2], "read_uncommitted sees it"


def write_and_abort(connection: Connection, topic: str, transactional_id: str) -> None:
    """A transaction whose record (key ``written``, value ``aborted``) reaches the log before
    the transaction is aborted (kafka-python's producer, flushed, then aborted)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**connection.kafka_python(), transactional_id=transactional_id)
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, key=b"written", value=b"aborted")
        producer.flush()
        producer.abort_transaction()
    finally:
        producer.close()


def test_a_zombie_members_offsets_are_refused_and_its_records_never_committed(
        transactional_sinks, sources, connection, topic_names):
    skip_on_tansu("does not check the group generation of transactional offsets (KIP-447)")
    topic, out, group = topic_names("in"), topic_names("out"), topic_names("group")
    ensure_topics(connection, {topic: 2, out: 1})
    produce_to(connection, topic, [f"v{n}".encode() for n in range(10)], [f"k{n}".encode() for n in range(10)])
    owned: dict[str, set[PartitionKey]] = {"zombie": set(), "successor": set()}

    def member(name: str) -> Source:
        return sources(topic, group, static=False, on_assigned=owned[name].update,
                       on_revoked=owned[name].difference_update)

    zombie = member("zombie")
    batch = next_batch(zombie)
    stale = zombie.group_metadata()  # the membership the batch was polled under
    successor = member("successor")
    deadline = time.monotonic() + 60
    while not (owned["zombie"] and owned["successor"]) and time.monotonic() < deadline:
        zombie.poll_batch()
        successor.poll_batch()
    assert owned["zombie"] and owned["successor"], "the group rebalanced: a new generation"

    sink = transactional_sinks([out])
    sink.send(out, b"zombie", b"late")
    with pytest.raises(DeliveryError, match="aborted"):
        sink.seal_transaction(batch.next_offsets(), stale).wait()
    assert group_offsets(connection, group, topic, 2) == {0: 0, 1: 0}, "no offset of the zombie's"
    assert read_topic(connection, out, None, 20, read_committed=True) == []

    current = zombie.group_metadata()
    mine = next(iter(owned["zombie"]))
    sink.send(out, b"member", b"on time")
    assert sink.seal_transaction({mine: 1}, current).wait() == 1, "the same sink goes on with a current membership"
    assert group_offsets(connection, group, topic, 2)[mine[1]] == 1
    assert [r.key for r in read_topic(connection, out, None, 20, read_committed=True)] == [b"member"]
