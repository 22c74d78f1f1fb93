"""Scale-out: daemons of one consumer group split the partitions and score each event once.

(a) Two daemon processes join one group on a 4-partition topic. Before anything is
produced the test waits for a stable split (disjoint, covering every partition, unchanged
for longer than a session timeout); kafka-python's rebalances against the local broker
are sometimes slow or stall, so a split that does not settle is retried with a fresh
group. Then every event must be scored, each daemon must have scored exactly its own
partitions' events, and duplicates are allowed only on partitions that changed hands
during the run (none when the split stayed put).

(b) Static assignment (``consumer.static_partitions``): two daemons read disjoint halves
without any rebalance, each scores exactly its partitions' events, and a daemon restarted
with the same static assignment resumes from its committed offsets.
"""

from __future__ import annotations

import ast
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from stream_ae.kafka.topics import ensure_topics, read_topic
from stream_ae.model.datasets import CARD_FEATURES, synthetic_transactions
from stream_ae.pipeline.codec import encode_event
from tests.helpers import DaemonProcess, committed_offsets, detector_settings, produce, read_json, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 4
EVENTS = 4_000
RESTART_EVENTS = 1_000
STABLE_S = 10.0          # longer than the session timeout (6 s): a pending rebalance would show
SPLIT_TIMEOUT_S = 90.0   # per attempt
ATTEMPTS = 3
DRAIN_TIMEOUT_S = 180.0


def events(count: int, start: int = 0) -> tuple[list[bytes], list[bytes]]:
    """``count`` transaction events and their keys (which spread them over the partitions)."""
    dataset = synthetic_transactions(rows=6000)
    rows = np.random.default_rng(5 + start).integers(0, len(dataset.values), count)
    ids = range(start, start + count)
    values = [encode_event(dataset.values[row], CARD_FEATURES, False, f"e{i}") for i, row in zip(ids, rows)]
    return values, [f"k{i}".encode() for i in ids]


def assigned(daemon: DaemonProcess, topic: str) -> frozenset[int] | None:
    """The partitions a daemon holds, from its per-partition threshold gauges (revoked
    partitions' series are removed); None while its metrics cannot be read."""
    samples = daemon.metrics()
    if not samples:
        return None
    return frozenset(int(dict(labels)["partition"]) for name, labels in samples
                     if name == "stream_ae_threshold" and dict(labels).get("topic") == topic)


def rebalance_log(daemon: DaemonProcess, since: int = 0) -> list[tuple[str, list[tuple[str, int]]]]:
    """``("assigned" | "revoked", [(topic, partition), ...])`` per rebalance callback the
    daemon logged, from byte ``since`` of its log on."""
    with open(daemon.log_path, "rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    found = []
    for line in text.splitlines():
        for what in ("assigned", "revoked"):
            marker = f"partitions {what}: "
            if marker in line:
                listed = line.split(marker, 1)[1]
                found.append((what, ast.literal_eval(listed[:listed.index("]") + 1])))
    return found


def per_partition(settings, topic: str, expected: int) -> dict[int, int]:
    """How many records each partition of ``topic`` holds (read back from the broker)."""
    records = read_topic(settings.kafka.connection(), topic, expected, 60)
    assert len(records) == expected, f"read {len(records)} of {expected} records of {topic}"
    counts = Counter(record.partition for record in records)
    return {p: counts.get(p, 0) for p in range(PARTITIONS)}


def wait_committed(settings, topic: str, wanted: dict[int, int], timeout_s: float) -> None:
    wait_for(lambda: all(committed_offsets(settings, topic, PARTITIONS)[p] >= n for p, n in wanted.items()),
             timeout_s, f"offsets {wanted} to be committed")


def stop_all(*daemons: DaemonProcess) -> None:
    for daemon in daemons:
        if daemon.process is not None and daemon.process.poll() is None:
            try:
                daemon.terminate(30)
            except Exception:
                daemon.kill()


def split_group(broker, topic_names, path: Path, workdir: Path, attempt: int):
    """Start two daemons in a fresh group and wait for a stable, disjoint, covering split.

    Returns the settings, the two daemons and their partitions, or None (daemons stopped)
    when the group did not settle within ``SPLIT_TIMEOUT_S``.
    """
    state = topic_names("state")
    settings = detector_settings(broker, topic_names, path, consumer={"max_batch_size": 200},
                                 topics={"state": state})
    settings = settings.model_copy(update={"consumer": settings.consumer.model_copy(
        update={"group_id": f"{settings.consumer.group_id}-try{attempt}"})})
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: PARTITIONS})
    first = DaemonProcess(settings, workdir, f"split{attempt}-a").start()
    second = DaemonProcess(settings, workdir, f"split{attempt}-b").start()
    deadline = time.monotonic() + SPLIT_TIMEOUT_S
    signature, since = None, time.monotonic()
    try:
        while time.monotonic() < deadline:
            parts = (assigned(first, topic), assigned(second, topic))
            callbacks = (len(rebalance_log(first)), len(rebalance_log(second)))
            good = (None not in parts and all(parts) and not parts[0] & parts[1]
                    and parts[0] | parts[1] == set(range(PARTITIONS)))
            if (parts, callbacks) != signature or not good:
                signature, since = (parts, callbacks), time.monotonic()
            elif time.monotonic() - since >= STABLE_S and first.ready() and second.ready():
                return settings, (first, second), parts
            time.sleep(0.5)
    except BaseException:
        stop_all(first, second)
        raise
    print(f"\nscale-out attempt {attempt}: no stable split within {SPLIT_TIMEOUT_S:.0f} s "
          f"(last seen {signature}); retrying with a fresh group")
    stop_all(first, second)
    return None


def test_two_daemons_in_one_group_split_the_partitions(broker, topic_names, synthetic_checkpoint, tmp_path):
    _, path = synthetic_checkpoint
    for attempt in range(1, ATTEMPTS + 1):
        found = split_group(broker, topic_names, path, tmp_path, attempt)
        if found is not None:
            break
    else:
        pytest.fail(f"the two daemons never settled on a split of the partitions in {ATTEMPTS} attempts")
    settings, daemons, parts = found
    topic = settings.topics.input[0]
    try:
        log_marks = [daemon.log_path.stat().st_size for daemon in daemons]
        values, keys = events(EVENTS)
        produce(settings, topic, values, keys)
        counts = per_partition(settings, topic, EVENTS)
        assert all(counts.values()), f"every partition holds events: {counts}"
        wait_committed(settings, topic, counts, DRAIN_TIMEOUT_S)
        # a batch's counters move right after its commit
        wait_for(lambda: sum(int(d.value("stream_ae_events_scored_total")) for d in daemons) >= EVENTS,
                 30, "the scored counters to catch up with the commits")
        parts_after = tuple(assigned(daemon, topic) for daemon in daemons)
        scored = [int(daemon.value("stream_ae_events_scored_total")) for daemon in daemons]
        during = [rebalance_log(daemon, mark) for daemon, mark in zip(daemons, log_marks)]
    finally:
        stop_all(*daemons)

    scores = read_json(settings, settings.topics.scores, None, 120)
    per_key = Counter(score["_key"] for score in scores)
    source_keys = {f"{r.topic}-{r.partition}-{r.offset}"
                   for r in read_topic(settings.kafka.connection(), topic, EVENTS, 60)}
    duplicates = sum(n - 1 for n in per_key.values())
    moved = {partition for log in during for what, keys_ in log if what == "revoked" for _, partition in keys_}
    print(f"\nscale-out (group): partitions={PARTITIONS} daemon_a={sorted(parts[0])} "
          f"daemon_b={sorted(parts[1])} events={EVENTS} scored_a={scored[0]} scored_b={scored[1]} "
          f"distinct_scored={len(per_key)} duplicates={duplicates} "
          f"rebalances_during_run={sum(len(log) for log in during)} moved_partitions={sorted(moved)}")

    assert len(source_keys) == EVENTS
    assert source_keys <= set(per_key), f"{len(source_keys - set(per_key))} events never scored"
    assert set(per_key) == source_keys, "scores for records that were never produced"
    assert all(n > 0 for n in scored), f"both daemons scored events: {scored}"
    duplicated_partitions = {int(key.rsplit("-", 2)[1]) for key, n in per_key.items() if n > 1}
    assert duplicated_partitions <= moved, (
        f"duplicates on partitions {sorted(duplicated_partitions - moved)} that never changed hands")
    if not any(during):
        # the split held from before the first event to the last commit: exactly once
        assert parts_after == parts
        assert duplicates == 0
        assert scored == [sum(counts[p] for p in held) for held in parts], (
            f"each daemon scored exactly its partitions' events: {scored} vs {counts} split {parts}")
    assert sum(scored) >= EVENTS


def test_static_assignment_splits_exactly_and_resumes_from_committed_offsets(
        broker, topic_names, synthetic_checkpoint, tmp_path):
    _, path = synthetic_checkpoint
    state = topic_names("state")
    base = detector_settings(broker, topic_names, path, consumer={"max_batch_size": 200},
                             topics={"state": state})
    topic = base.topics.input[0]
    halves = ([0, 1], [2, 3])

    def settings_for(half: list[int]):
        return detector_settings(broker, topic_names, path, topics={"state": state}, consumer={
            "max_batch_size": 200, "static_partitions": [f"{topic}:{p}" for p in half]})

    settings = [settings_for(half) for half in halves]
    assert settings[0].consumer.group_id == settings[1].consumer.group_id == base.consumer.group_id
    ensure_topics(base.kafka.connection(), {topic: PARTITIONS})
    first = DaemonProcess(settings[0], tmp_path, "static-a").start()
    second = DaemonProcess(settings[1], tmp_path, "static-b").start()
    restarted = DaemonProcess(settings[0], tmp_path, "static-a2")
    try:
        first.wait_ready()
        second.wait_ready()
        assert assigned(first, topic) == set(halves[0])
        assert assigned(second, topic) == set(halves[1])

        values, keys = events(EVENTS)
        produce(base, topic, values, keys)
        counts = per_partition(base, topic, EVENTS)
        assert all(counts.values()), f"every partition holds events: {counts}"
        wait_committed(base, topic, counts, DRAIN_TIMEOUT_S)
        wait_for(lambda: sum(int(d.value("stream_ae_events_scored_total")) for d in (first, second)) >= EVENTS,
                 30, "the scored counters to catch up with the commits")
        scored = [int(d.value("stream_ae_events_scored_total")) for d in (first, second)]

        # the first daemon stops; its partitions wait for it while the second goes on
        assert first.terminate() == 0
        more_values, more_keys = events(RESTART_EVENTS, start=EVENTS)
        produce(base, topic, more_values, more_keys)
        total_counts = per_partition(base, topic, EVENTS + RESTART_EVENTS)
        new_counts = {p: total_counts[p] - counts[p] for p in range(PARTITIONS)}
        wait_committed(base, topic, {p: total_counts[p] for p in halves[1]}, DRAIN_TIMEOUT_S)
        waiting = committed_offsets(base, topic, PARTITIONS)
        assert {p: waiting[p] for p in halves[0]} == {p: counts[p] for p in halves[0]}, \
            "nobody read the stopped daemon's partitions"

        restarted.start().wait_ready()
        assert assigned(restarted, topic) == set(halves[0])
        wait_committed(base, topic, total_counts, DRAIN_TIMEOUT_S)
        wait_for(lambda: int(restarted.value("stream_ae_events_scored_total"))
                 >= sum(new_counts[p] for p in halves[0]), 30, "the restarted daemon's counter")
        resumed = int(restarted.value("stream_ae_events_scored_total"))
        scored_second = int(second.value("stream_ae_events_scored_total"))
        second_log = rebalance_log(second)
    finally:
        stop_all(first, second, restarted)

    total = EVENTS + RESTART_EVENTS
    scores = read_json(base, base.topics.scores, None, 120)
    per_key = Counter(score["_key"] for score in scores)
    source_keys = {f"{r.topic}-{r.partition}-{r.offset}"
                   for r in read_topic(base.kafka.connection(), topic, total, 60)}
    duplicates = sum(n - 1 for n in per_key.values())
    print(f"\nscale-out (static): daemon_a={halves[0]} daemon_b={halves[1]} events={EVENTS} "
          f"scored_a={scored[0]} scored_b={scored[1]} duplicates={duplicates}; after restart: "
          f"events={RESTART_EVENTS} resumed_a={resumed} (expected {sum(new_counts[p] for p in halves[0])}) "
          f"total_scored={len(scores)}")

    assert scored == [sum(counts[p] for p in half) for half in halves]
    assert sum(scored) == EVENTS
    assert resumed == sum(new_counts[p] for p in halves[0]), "restarted from its committed offsets"
    assert scored_second == sum(total_counts[p] for p in halves[1])
    assert second_log == [("assigned", [(topic, p) for p in halves[1]])], "static members never rebalance"
    assert len(scores) == total and duplicates == 0
    assert set(per_key) == source_keys
