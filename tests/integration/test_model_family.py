"""Every model of the family serves in the daemon: events in through a real broker, a score out per
event, equal to the offline ``evaluate`` score of the same event; with the default memory-bank
score, and with the plain reconstruction error."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from stream_ae.kafka.topics import ensure_topics, read_topic
from stream_ae.model.autoencoders import MODEL_BUILDERS
from stream_ae.model.checkpoint import save_checkpoint
from stream_ae.model.datasets import synthetic_transactions
from stream_ae.model.detector import build_detector
from stream_ae.model.training import TrainingOptions, train_autoencoder
from stream_ae.tools.daemon_thread import DaemonThread
from stream_ae.tools.replay import event_id, replay
from tests.helpers import detector_settings, synthetic_windows

pytestmark = pytest.mark.integration

EVENTS = 120
CASES = [(name, {}, "memory-bank") for name in sorted(MODEL_BUILDERS)] + \
    [("deep", {}, "reconstruction"), ("vae", {"score": "elbo"}, "reconstruction")]


@pytest.mark.parametrize(("name", "hparams", "score"), CASES,
                         ids=[f"{n}-{h['score'] if h else score}" for n, h, score in CASES])
def test_each_model_scores_every_streamed_event(name, hparams, score, broker, topic_names, tmp_path):
    dataset = synthetic_windows() if name == "conv" else synthetic_transactions(rows=1200, seed=4)
    checkpoint = train_autoencoder(dataset, TrainingOptions(model=name, hparams=hparams, epochs=3, seed=1,
                                                            device="cpu", progress=False, score=score))
    assert checkpoint.score_name == score
    path = tmp_path / f"{name}.pt"
    save_checkpoint(checkpoint, path)
    settings = detector_settings(broker, topic_names, path)
    topic, scores_topic = settings.topics.input[0], settings.topics.scores
    ensure_topics(settings.kafka.connection(), {topic: 2, scores_topic: 1})
    rows = np.asarray(checkpoint.training["split"]["test"])[:EVENTS]

    with DaemonThread(settings, checkpoint) as running:
        replay(dataset, rows, settings.kafka.connection(), topic, progress=False)
        totals = running.wait_accounted(len(rows))
    assert totals["events_scored"] == len(rows) and totals["dead_lettered"] == 0

    records = [orjson.loads(record.value)
               for record in read_topic(settings.kafka.connection(), scores_topic, len(rows))]
    streamed = {record["event_id"]: record for record in records}
    assert set(streamed) == {event_id(dataset, row) for row in rows}
    assert {record["model"] for record in records} == {name}
    offline = build_detector(checkpoint, "cpu").score_all(dataset.values[rows])
    served = np.array([streamed[event_id(dataset, row)]["score"] for row in rows])
    np.testing.assert_allclose(served, offline, rtol=1e-4, atol=1e-6)
