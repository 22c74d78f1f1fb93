"""The bench's sustained-rate measurement over a detector's counters (no broker, no model)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from stream_ae.telemetry.metrics import DaemonMetrics
from stream_ae.tools.bench.throughput import sustained
from stream_ae.tools.daemon_thread import DaemonThread


class CountingDetector(DaemonThread):
    """A stand-in for a running detector: its loop only counts ``batches`` of ``size`` events
    as scored, ``pause_s`` apart, into real detector metrics."""

    def __init__(self, batches: int, size: int, pause_s: float) -> None:
        self.daemon = SimpleNamespace(metrics=DaemonMetrics())
        self.poll_s, self.error = 0.01, None
        self.thread = threading.Thread(target=self._count, args=(batches, size, pause_s), daemon=True)

    def _count(self, batches: int, size: int, pause_s: float) -> None:
        for _ in range(batches):
            time.sleep(pause_s)
            self.daemon.metrics.events_scored.inc(size)
            self.daemon.metrics.stage_seconds.labels("score").inc(pause_s)


def test_the_rate_runs_from_the_end_of_the_first_batch():
    running = CountingDetector(batches=10, size=100, pause_s=0.05).start()
    eps, stages = sustained(running, 1000, False, "test")
    # 900 events after the first batch, over about nine pauses of 50 ms
    assert 900 / (9 * 0.05) / 3 < eps < 900 / (9 * 0.05) * 1.2
    assert 0 < stages["score"] < 0.5


def test_a_detector_done_before_the_first_look_is_timed_from_the_call_not_reported_as_zero():
    running = CountingDetector(batches=1, size=1000, pause_s=0.2).start()
    eps, stages = sustained(running, 1000, False, "test")
    assert 0 < eps <= 1000 / 0.2
    assert stages["score"] > 0
