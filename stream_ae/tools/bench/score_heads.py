"""What the default score costs: the memory-bank score beside the plain reconstruction error.

The same trained model is served twice, once with its memory bank (the default) and once
scoring by reconstruction error alone
(:func:`stream_ae.model.training.without_memory_bank`). Detector runs of the two alternate
(B R B R …) on one client, each in a fresh consumer group over the same records, so that a
drift in the machine's load favours neither; a round's ratio is the bank's events/s over
the plain run's beside it, and the figures are medians over the rounds. The scoring time of
one full batch is also measured apart from Kafka (the scorer alone, median of repeats), on
one torch thread and on one per CPU core (``model.threads``' default).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stream_ae.model.checkpoint import Checkpoint
from stream_ae.model.detector import build_detector
from stream_ae.model.device import usable_cores, use_threads
from stream_ae.service.config import Settings
from stream_ae.tools.bench.throughput import WATCH_INTERVAL_S, sustained
from stream_ae.tools.daemon_thread import DaemonThread

HEADS = ("memory-bank", "reconstruction")


def score_seconds_per_batch(checkpoint: Checkpoint, values: np.ndarray, device: str,
                            threads: int | None, repeats: int = 5) -> float:
    """Median seconds of one :meth:`~stream_ae.model.detector.Detector.score` call on
    ``values (batch, features)`` with ``threads`` torch threads (None: one per CPU core);
    torch's thread count is put back afterwards."""
    before = torch.get_num_threads()
    use_threads(threads)
    try:
        detector = build_detector(checkpoint, device)
        detector.score(values)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            detector.score(values)
            times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(before)
    return float(np.median(times))


def score_head_rounds(settings: Callable[[str, Path], Settings], served: dict[str, tuple[Checkpoint, Path]],
                      rounds: int, events: int, batch: np.ndarray, device: str, progress: bool) -> dict[str, Any]:
    """Alternating detector runs of the two heads, and the scorer's time per batch.

    Args:
        settings: ``(group, checkpoint path) -> Settings`` for a fresh consumer group.
        served: :data:`HEADS` name -> ``(checkpoint, its file)``.
        rounds: runs of each head.
        events: events each run scores (the topic holds at least as many).
        batch: float32 ``(max batch size, features)`` events for the scorer-alone timing.

    Returns:
        Per head: ``detector_eps`` (median), ``detector_runs_eps``, ``score_s_per_event``
        (the loop's score stage over the runs), ``score_s_per_batch`` (the scorer alone on
        ``batch``, one torch thread) and ``score_s_per_batch_all_threads`` (one per core);
        and ``ratio`` (median of the rounds' memory-bank / reconstruction events/s),
        ``ratio_runs``, ``batch_events``, ``cores`` (threads of the all-threads timing), ``bank_rows``.
    """
    figures: dict[str, Any] = {name: {"detector_runs_eps": [], "score_seconds": 0.0, "scored": 0} for name in HEADS}
    for round_number in range(1, rounds + 1):
        for name in HEADS:
            checkpoint, path = served[name]
            running = DaemonThread(settings(f"{name}-{round_number}", path), checkpoint,
                                         poll_s=WATCH_INTERVAL_S).start()
            try:
                eps, spent = sustained(running, events, progress, f"detector ({name} score, round {round_number})")
            finally:
                running.stop()
            figures[name]["detector_runs_eps"].append(eps)
            figures[name]["score_seconds"] += spent.get("score", 0.0)
            figures[name]["scored"] += events
    result: dict[str, Any] = {}
    for name in HEADS:
        runs = figures[name]["detector_runs_eps"]
        result[name] = {"detector_eps": float(np.median(runs)), "detector_runs_eps": runs,
                        "score_s_per_event": figures[name]["score_seconds"] / max(figures[name]["scored"], 1),
                        "score_s_per_batch": score_seconds_per_batch(served[name][0], batch, device, 1),
                        "score_s_per_batch_all_threads": score_seconds_per_batch(served[name][0], batch, device,
                                                                                 None)}
    ratios = [bank / plain for bank, plain in zip(result["memory-bank"]["detector_runs_eps"],
                                                  result["reconstruction"]["detector_runs_eps"])]
    bank_state = served["memory-bank"][0].memory_bank_state or {}
    return {**result, "ratio": float(np.median(ratios)), "ratio_runs": ratios, "batch_events": len(batch),
            "cores": usable_cores(),
            "bank_rows": int(len(bank_state.get("rows", [])))}
