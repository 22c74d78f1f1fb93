"""Stage timing: where the loop's time goes, in one place.

The loop marks the end of each stage with :meth:`StageTimer.lap`; the time since the
previous mark is charged to that stage's series of ``stream_ae_stage_seconds_total``.
A stage's series is created the first time it is timed, so adding a stage to the loop is
one ``lap`` call: the dashboard and the bench read whatever stages the counter holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Counter


class StageTimer:
    """Charges wall time to named stages of a labelled counter (label ``stage``).

    Args:
        seconds: a counter with one label, the stage name (seconds).
        clock: seconds from an arbitrary origin (``time.perf_counter``).

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> counter = Counter("stage_seconds", "time per stage", ["stage"], registry=CollectorRegistry())
        >>> ticks = iter([0.0, 0.0, 0.5, 2.0])  # the constructor reads the clock too
        >>> timer = StageTimer(counter, clock=lambda: next(ticks))
        >>> timer.start(); timer.lap("poll"), timer.lap("score")
        (0.5, 1.5)
    """

    def __init__(self, seconds: Counter, clock: Callable[[], float] = time.perf_counter) -> None:
        self.seconds = seconds
        self.clock = clock
        self._series: dict[str, Counter] = {}
        self._since = clock()

    def start(self) -> None:
        """Begin timing from now; the time before is charged to no stage."""
        self._since = self.clock()

    def lap(self, stage: str) -> float:
        """Charge the time since the last :meth:`start` or :meth:`lap` to ``stage``.

        Returns:
            The seconds charged.
        """
        now = self.clock()
        elapsed, self._since = now - self._since, now
        series = self._series.get(stage)
        if series is None:
            series = self._series[stage] = self.seconds.labels(stage)
        series.inc(elapsed)
        return elapsed
