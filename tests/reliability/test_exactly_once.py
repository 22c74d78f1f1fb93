"""Exactly-once against a zombie (KIP-447): a detector frozen past its session timeout, whose
partitions another member of the group took over, cannot commit once it resumes, and
nothing it produces then is visible to ``read_committed`` readers.

The zombie freezes itself (SIGSTOP, every thread of the process) right after polling its
first batch, so that it resumes holding a batch to handle: it scores it, sends the output
in a transaction, and offers the offsets with the group membership of that poll; the group
coordinator refuses them (the member is gone) and the transaction is aborted. The
successor meanwhile scored every event. (The SIGKILL fault injection in exactly-once mode
is in ``test_fault_injection.py``.)
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from stream_ae.kafka.topics import ensure_topics, read_topic
from tests.helpers import (
    DaemonProcess,
    committed_offsets,
    detector_settings,
    events,
    produce,
    read_json,
    skip_on_tansu,
    wait_for,
)

pytestmark = pytest.mark.integration

PARTITIONS = 2
EVENTS = 2_000
BATCH = 200


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_a_frozen_detector_resumed_after_the_takeover_cannot_commit(broker, topic_names, synthetic_checkpoint,
                                                                    tmp_path, client):
    skip_on_tansu("checks neither the group generation of transactional offsets (KIP-447) nor isolates transactions")
    if client == "confluent-kafka":
        pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed (the 'confluent' extra)")
    _, path = synthetic_checkpoint

    def settings_of(name: str):
        return detector_settings(broker, topic_names, path, kafka={"client": client},
                                 consumer={"max_batch_size": BATCH}, topics={"state": topic_names("state")},
                                 delivery={"guarantee": "exactly_once", "transactional_id": topic_names(name)})
    settings = settings_of("successor")
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: PARTITIONS})
    produce(settings, topic, events(np.arange(EVENTS)), [f"k{n}".encode() for n in range(EVENTS)])
    ends = Counter(r.partition for r in read_topic(settings.kafka.connection(), topic, EVENTS))

    zombie = DaemonProcess(settings_of("zombie"), tmp_path, "zombie", freeze_after_batches=1).start()
    successor = DaemonProcess(settings, tmp_path, "successor")
    try:
        wait_for(zombie.stopped, 90, "the zombie to freeze itself after polling its first batch")
        frozen_at = time.monotonic()
        successor.start().wait_ready(120)  # the zombie's session expires: its partitions move
        wait_for(lambda: committed_offsets(settings, topic, PARTITIONS) == dict(ends), 180,
                 "the successor to commit every event")
        taken_over_after_s = time.monotonic() - frozen_at
        wait_for(lambda: successor.value("stream_ae_events_scored_total") >= EVENTS, 30,
                 "the successor's counters to catch up with its commits")
        assert successor.value("stream_ae_events_scored_total") == EVENTS, "the successor scored every event once"

        zombie.resume()
        wait_for(lambda: zombie.value("stream_ae_delivery_failures_total") >= 1, 60,
                 "the resumed zombie's transaction to be refused")
        wait_for(zombie.ready, 120, "the resumed zombie to rejoin the group")
        time.sleep(3)  # anything the zombie would still commit, it would have by now
        offsets = committed_offsets(settings, topic, PARTITIONS)
        zombie_scored = zombie.value("stream_ae_events_scored_total")
    finally:
        zombie.resume()
        zombie.terminate()
        if successor.process is not None:
            successor.terminate()

    zombie_log = zombie.log_path.read_text()
    refusal = next((line for line in zombie_log.splitlines() if "aborted" in line), "")
    committed_scores = read_json(settings, settings.topics.scores, None, 60, read_committed=True)
    all_scores = read_json(settings, settings.topics.scores, None, 60)
    per_key = Counter(score["_key"] for score in committed_scores)
    print(f"\nzombie fencing ({client}): events={EVENTS} taken over after {taken_over_after_s:.1f} s frozen; "
          f"zombie: delivery failures >= 1, scored after resuming={zombie_scored:.0f}; "
          f"scores read_committed={len(committed_scores)} (distinct {len(per_key)}), "
          f"in the log (read_uncommitted)={len(all_scores)}\n  zombie's refusal: {refusal.strip()[:300]}")

    assert offsets == dict(ends), "the committed offsets are the successor's, never moved back"
    assert zombie_scored == 0, "the zombie's batch never counted: its transaction was aborted"
    assert refusal, "the zombie logged its aborted transaction"
    assert len(per_key) == EVENTS and max(per_key.values()) == 1, "each event's score visible exactly once"
    assert len(all_scores) >= len(committed_scores)
