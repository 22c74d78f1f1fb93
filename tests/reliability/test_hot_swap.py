"""Model hot swap: a new checkpoint replaces the model between batches; an incompatible one is refused."""

from __future__ import annotations

import shutil
import signal

import numpy as np
import pytest

from stream_ae.kafka.topics import ensure_topics
from stream_ae.model.checkpoint import save_checkpoint
from stream_ae.model.datasets import CARD_FEATURES, LabelledDataset, synthetic_transactions
from stream_ae.model.training import TrainingOptions, train_autoencoder
from stream_ae.pipeline.codec import encode_event
from tests.helpers import DaemonProcess, detector_settings, produce, read_json, wait_for

pytestmark = pytest.mark.integration


def test_checkpoint_swaps_on_sighup_and_file_change_and_refuses_incompatible(
        broker, topic_names, synthetic_checkpoint, tmp_path):
    original, original_path = synthetic_checkpoint
    served = tmp_path / "served.pt"
    shutil.copy(original_path, served)
    dataset = synthetic_transactions(rows=6000)
    replacement = train_autoencoder(dataset, TrainingOptions(epochs=3, seed=99, progress=False))
    windows = LabelledDataset("windows", "window", np.random.default_rng(0).normal(size=(300, 32)).astype(np.float32),
                              np.zeros(300, np.int8), [f"t{i}" for i in range(32)], "windows")
    incompatible = train_autoencoder(windows, TrainingOptions(epochs=2, progress=False))

    settings = detector_settings(broker, topic_names, served, model={"reload_check_s": 0.5},
                                 topics={"state": topic_names("state")})
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: 2})
    values = [encode_event(dataset.values[row], CARD_FEATURES, False, f"e{row}") for row in range(900)]
    daemon = DaemonProcess(settings, tmp_path).start().wait_ready()
    scored = lambda: daemon.value("stream_ae_events_scored_total")  # noqa: E731

    produce(settings, topic, values[:300])
    wait_for(lambda: scored() == 300, 60, "the first 300 events")

    # 1. a compatible checkpoint, announced with SIGHUP (the watch interval is long past anyway)
    save_checkpoint(replacement, served)
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.value("stream_ae_model_reloads_total", result="loaded") == 1, 30, "the swap")
    produce(settings, topic, values[300:600])
    wait_for(lambda: scored() == 600, 60, "600 events")

    # 2. an incompatible checkpoint (windows of 32 samples), found by the file watch
    save_checkpoint(incompatible, served)
    wait_for(lambda: daemon.value("stream_ae_model_reloads_total", result="refused") == 1, 30, "the refusal")
    produce(settings, topic, values[600:])
    wait_for(lambda: scored() == 900, 60, "900 events")
    info = daemon.value("stream_ae_model_info", model="deep", checkpoint_sha256=replacement.sha256)
    assert daemon.terminate() == 0

    scores = read_json(settings, settings.topics.scores, 900)
    by_offset = {}
    for score in scores:
        by_offset.setdefault(score["partition"], []).append((score["offset"], score["checkpoint_sha256"]))
    assert len({s["_key"] for s in scores}) == 900, "no event lost across the swaps"
    for items in by_offset.values():
        shas = [sha for _, sha in sorted(items)]
        switch = shas.index(replacement.sha256)
        assert set(shas[:switch]) == {original.sha256}, "the old model served until the swap"
        assert set(shas[switch:]) == {replacement.sha256}, "the new model served after it, refusal or not"
    assert info == 1
    log = daemon.log_path.read_text()
    assert "SIGHUP received" in log
    assert "refused; the current model keeps serving" in log and "window of 32" in log
