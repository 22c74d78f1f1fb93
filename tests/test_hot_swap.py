"""Swapping the checkpoint between batches (:mod:`stream_ae.pipeline.hot_swap`): nothing
happens when no check is due; a request or a changed file loads a different checkpoint;
the checkpoint in service is not rebuilt; one of other features or a corrupt file is
refused and counted, and the current model keeps serving."""

from __future__ import annotations

import dataclasses
import os

import pytest

from stream_ae.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from stream_ae.pipeline.hot_swap import HotSwap
from stream_ae.pipeline.serving import ServedModel
from stream_ae.service.config import load_settings
from stream_ae.service.daemon import model_loader
from stream_ae.telemetry.metrics import DaemonMetrics
from tests.helpers import tiny_checkpoint


class FakeMonotonic:
    """``time.monotonic`` of the hot-swap module, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Swapper:
    """A :class:`HotSwap` on a checkpoint file, with the model it serves now and the builds it
    made; it is the hot swap's loader (the daemon's own, counting its loads)."""

    def __init__(self, path, check_interval_s: float) -> None:
        self.path = path
        self.metrics = DaemonMetrics()
        self.built: list[Checkpoint] = []
        self.current = self.load(load_checkpoint(path))
        self.built.clear()
        self.hot_swap = HotSwap(path, check_interval_s, self, self.metrics.model_reloads)  # type: ignore[arg-type]

    def load(self, checkpoint: Checkpoint) -> ServedModel:
        self.built.append(checkpoint)
        return model_loader(load_settings(model={"checkpoint": str(self.path), "device": "cpu"})).load(checkpoint)

    def reloads(self, result: str) -> float:
        return self.metrics.registry.get_sample_value("stream_ae_model_reloads_total", {"result": result})


def rewrite(path, checkpoint: Checkpoint) -> str:
    """Save ``checkpoint`` over ``path`` with a modification time surely different from before."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    sha = save_checkpoint(checkpoint, path)
    os.utime(path, ns=(before + 10**9, before + 10**9))
    return sha


@pytest.fixture
def clock(monkeypatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr("stream_ae.pipeline.hot_swap.time.monotonic", fake)
    return fake


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(tiny_checkpoint(seed=1), path)
    return path


def test_nothing_is_loaded_when_no_check_is_due(model_file, clock):
    swapper = Swapper(model_file, check_interval_s=0)  # 0: swaps only on request
    rewrite(model_file, tiny_checkpoint(seed=2))
    assert swapper.hot_swap.poll(swapper.current) is None, "a changed file alone does nothing with interval 0"
    assert swapper.built == []

    watching = Swapper(model_file, check_interval_s=5.0)
    assert watching.hot_swap.poll(watching.current) is None  # the first check: the file is as it was
    rewrite(model_file, tiny_checkpoint(seed=3))
    clock.now += 4.0
    assert watching.hot_swap.poll(watching.current) is None, "changed, but the next check is not due"
    assert watching.built == []


def test_a_request_loads_a_changed_checkpoint(model_file, clock):
    swapper = Swapper(model_file, check_interval_s=0)
    sha = rewrite(model_file, tiny_checkpoint(seed=2))
    swapper.hot_swap.request()
    swapped = swapper.hot_swap.poll(swapper.current)
    assert swapped is not None and swapped.identity.checkpoint_sha256 == sha
    assert sha != swapper.current.identity.checkpoint_sha256
    assert swapped.checkpoint.sha256 == sha and [c.sha256 for c in swapper.built] == [sha]
    assert swapper.reloads("loaded") == 1 and swapper.reloads("refused") == 0
    assert swapper.hot_swap.poll(swapped) is None, "the request is served once"


def test_a_changed_file_is_loaded_at_the_next_due_check(model_file, clock):
    swapper = Swapper(model_file, check_interval_s=5.0)
    assert swapper.hot_swap.poll(swapper.current) is None
    sha = rewrite(model_file, tiny_checkpoint(seed=2))
    clock.now += 5.0
    swapped = swapper.hot_swap.poll(swapper.current)
    assert swapped is not None and swapped.identity.checkpoint_sha256 == sha
    clock.now += 5.0
    assert swapper.hot_swap.poll(swapped) is None, "unchanged since: nothing to load"
    assert swapper.reloads("loaded") == 1


def test_the_checkpoint_in_service_is_not_rebuilt(model_file, clock):
    swapper = Swapper(model_file, check_interval_s=0)
    os.utime(model_file, ns=(1, 1))  # touched, same bytes
    swapper.hot_swap.request()
    assert swapper.hot_swap.poll(swapper.current) is None
    assert swapper.built == []
    assert swapper.reloads("loaded") == 0 and swapper.reloads("refused") == 0


def test_a_checkpoint_of_other_features_is_refused_and_counted(model_file, clock):
    swapper = Swapper(model_file, check_interval_s=0)
    other = tiny_checkpoint(feature_names=["a", "b", "c", "x"], seed=2)  # same width, other names
    rewrite(model_file, other)
    swapper.hot_swap.request()
    assert swapper.hot_swap.poll(swapper.current) is None
    assert swapper.built == [], "refused before anything is built"
    assert swapper.reloads("refused") == 1 and swapper.reloads("loaded") == 0

    windows = dataclasses.replace(tiny_checkpoint(seed=3), kind="window", feature_names=["t0", "t1", "t2", "t3"])
    rewrite(model_file, windows)
    swapper.hot_swap.request()
    assert swapper.hot_swap.poll(swapper.current) is None
    assert swapper.reloads("refused") == 2


def test_a_corrupt_or_missing_file_is_refused_and_the_current_model_keeps_serving(model_file, clock):
    swapper = Swapper(model_file, check_interval_s=0)
    model_file.write_bytes(os.urandom(4096))
    swapper.hot_swap.request()
    assert swapper.hot_swap.poll(swapper.current) is None
    model_file.unlink()
    swapper.hot_swap.request()
    assert swapper.hot_swap.poll(swapper.current) is None
    assert swapper.reloads("refused") == 2 and swapper.built == []

    sha = rewrite(model_file, tiny_checkpoint(seed=4))  # a good file afterwards is taken
    swapper.hot_swap.request()
    swapped = swapper.hot_swap.poll(swapper.current)
    assert swapped is not None and swapped.identity.checkpoint_sha256 == sha


def test_a_checkpoint_the_builder_rejects_is_refused(model_file, clock):
    swapper = Swapper(model_file, check_interval_s=0)

    class Broken:
        def load(self, checkpoint: Checkpoint) -> ServedModel:
            raise ValueError("CUDA asked for but absent")
    swapper.hot_swap.loader = Broken()  # type: ignore[assignment]
    rewrite(model_file, tiny_checkpoint(seed=2))
    swapper.hot_swap.request()
    assert swapper.hot_swap.poll(swapper.current) is None
    assert swapper.reloads("refused") == 1
