"""Throughput: the client's consume limit and the detector's sustained rate, in alternating rounds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from stream_ae.kafka.backends import make_source
from stream_ae.model.checkpoint import Checkpoint
from stream_ae.service.config import Settings
from stream_ae.telemetry.metrics import counter_values
from stream_ae.tools.bench.options import BenchOptions
from stream_ae.tools.daemon_thread import DaemonThread

WATCH_INTERVAL_S = 0.02  # how often the bench reads the detector's counters (seconds)


def events_per_second(first_at: float, first_count: int, last_at: float, last_count: int) -> float:
    """Events/s between two (time, count) observations; 0 when they coincide."""
    return (last_count - first_count) / (last_at - first_at) if last_at > first_at else 0.0


def consume_limit(settings: Settings, events: int, progress: bool) -> float:
    """Events/s of the configured client's source reading ``events`` records and discarding them."""
    source = make_source(settings.kafka.client, settings.kafka.connection(), settings.topics.input,
                         settings.consumer_options(), lambda keys: None, lambda keys: None)
    seen = 0
    first: tuple[float, int] | None = None
    bar = tqdm(total=events, desc=f"consume limit ({settings.kafka.client})", unit="event",
               disable=not progress, mininterval=0.5)
    try:
        while seen < events:
            got = len(source.poll_records())
            seen += got
            bar.update(got)
            if got and first is None:
                first = (time.perf_counter(), seen)
        assert first is not None, "bench: no events to read"
        return events_per_second(*first, time.perf_counter(), seen)
    finally:
        bar.close()
        source.close()


def events_scored(running: DaemonThread) -> int:
    """Events the running detector has scored so far."""
    return int(counter_values(running.daemon.metrics.events_scored)[()])


def stage_totals(running: DaemonThread) -> dict[str, float]:
    """Seconds the running detector has spent in each stage so far."""
    return running.daemon.metrics.stage_totals()


def sustained(running: DaemonThread, events: int, progress: bool, what: str) -> tuple[float, dict[str, float]]:
    """Events/s of the detector over ``events`` records (from the end of its first batch),
    and the seconds each stage took over the same span.

    A detector fast enough to score all ``events`` before the first look at its counters
    (tiny runs, such as ``--quick``) leaves that span empty; it is then timed from the call,
    its group join included, so the figure is lower than the true rate but never zero.
    """
    called_at = time.perf_counter()
    bar = tqdm(total=events, desc=what, unit="event", disable=not progress, mininterval=0.5)
    running.wait_for(lambda: events_scored(running) > 0, 120, "the first batch")
    first_at, first_count, first_stages = time.perf_counter(), events_scored(running), stage_totals(running)
    if first_count >= events:
        first_at, first_count, first_stages = called_at, 0, {}

    def done() -> bool:
        scored = events_scored(running)
        bar.update(scored - bar.n)
        return scored >= events
    running.wait_for(done, 600, f"{events} events to be scored")
    last_at, last_count, last_stages = time.perf_counter(), events_scored(running), stage_totals(running)
    bar.close()
    return (events_per_second(first_at, first_count, last_at, last_count),
            {stage: spent - first_stages.get(stage, 0.0) for stage, spent in last_stages.items()})


def throughput_rounds(options: BenchOptions, client: str, settings: Callable[[str], Settings],
                       checkpoint: Checkpoint, events: int) -> tuple[dict[str, Any], DaemonThread]:
    """Consume-limit and detector runs, alternating (see the module docstring), all but the
    last consume-limit run, which the caller makes once it is done with the detector.

    Args:
        settings: ``group -> Settings`` of ``client`` for a fresh consumer group.
        events: records in the topic.

    Returns:
        ``(figures, running)``: ``consume_limit_runs_eps`` and ``detector_runs_eps`` (one per
        run), ``stage_seconds`` (summed over the detector runs), and the last detector, still
        running and caught up, for the latency phases.
    """
    limits = [consume_limit(settings("limit-0"), events, options.progress)]
    detector_runs: list[float] = []
    stage_seconds: dict[str, float] = {}
    running: DaemonThread | None = None
    for round_number in range(1, options.rounds + 1):
        if running is not None:
            running.stop()
            limits.append(consume_limit(settings(f"limit-{round_number - 1}"), events, options.progress))
        running = DaemonThread(settings(f"detector-{round_number}"), checkpoint,
                                     poll_s=WATCH_INTERVAL_S).start()
        try:
            eps, spent = sustained(running, events, options.progress, f"detector ({client}, round {round_number})")
        except BaseException:
            running.stop()
            raise
        detector_runs.append(eps)
        for stage, seconds in spent.items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
    assert running is not None
    return {"consume_limit_runs_eps": limits, "detector_runs_eps": detector_runs,
            "stage_seconds": stage_seconds}, running


def round_figures(figures: dict[str, Any]) -> dict[str, Any]:
    """Medians over the rounds: consume limit, detector events/s, and the ratio of each
    detector run to the mean of the two consume-limit runs around it."""
    limits, detectors = figures["consume_limit_runs_eps"], figures["detector_runs_eps"]
    ratios = [eps / ((limits[n] + limits[n + 1]) / 2) for n, eps in enumerate(detectors)]
    total = sum(figures["stage_seconds"].values()) or 1.0
    return {"consume_limit_eps": float(np.median(limits)), "detector_eps": float(np.median(detectors)),
            "ratio": float(np.median(ratios)), "ratio_runs": ratios, **figures,
            "stage_share": {stage: spent / total for stage, spent in figures["stage_seconds"].items()}}
