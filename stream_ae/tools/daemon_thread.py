"""A :class:`~stream_ae.service.daemon.Daemon` running in a thread of this process: how the
demo and the bench run the daemon beside their own producers and readers (the tests too).

Production runs the daemon in its own process (``stream-ae run``); this thread shares the
process's interpreter lock with its caller, which is what the bench measures it with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from stream_ae.kafka.ends import Sink, Source
from stream_ae.model.checkpoint import Checkpoint
from stream_ae.service.config import Settings
from stream_ae.service.daemon import Daemon

log = logging.getLogger(__name__)


class DaemonThread:
    """A :class:`Daemon` running in a background thread.

    As a context manager, entering starts it and waits until it is ready (partitions
    assigned); leaving stops it and waits for its thread.

    Args:
        settings, checkpoint, source, sink: as for :class:`Daemon`.
        poll_s: seconds between checks of a condition in :meth:`wait_for`.
    """

    def __init__(self, settings: Settings, checkpoint: Checkpoint | None = None,
                 source: Source | None = None, sink: Sink | None = None, poll_s: float = 0.05) -> None:
        self.daemon = Daemon(settings, checkpoint, source, sink)
        self.poll_s = poll_s
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="daemon", daemon=True)

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:  # reported by wait_for, inspected by tests
            log.exception("the daemon's thread failed")  # also when no one calls wait_for
            self.error = exc

    def start(self) -> DaemonThread:
        """Start the loop's thread."""
        self.thread.start()
        return self

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Return once ``condition()`` holds.

        Raises:
            RuntimeError: the detector's loop failed meanwhile (its exception is the cause).
            TimeoutError: ``timeout_s`` seconds passed first.
        """
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.error is not None:
                raise RuntimeError(f"the detector failed while waiting for {what}") from self.error
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(self.poll_s)

    def wait_ready(self, timeout_s: float = 60.0) -> DaemonThread:
        """Wait until the detector has joined its group and been assigned partitions."""
        self.wait_for(lambda: self.daemon.health.ready, timeout_s, "the detector to join its group")
        return self

    def wait_accounted(self, events_in: int, timeout_s: float = 60.0) -> dict[str, int]:
        """Wait until ``events_in`` records were scored or dead-lettered; returns the totals."""
        totals = self.daemon.metrics.totals

        def done() -> bool:
            counts = totals()
            return counts["events_scored"] + counts["dead_lettered"] >= events_in

        self.wait_for(done, timeout_s, f"{events_in} events to be scored or dead-lettered")
        return totals()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the loop (it finishes its batch) and wait for the thread.

        Raises:
            TimeoutError: the thread is still running after ``timeout_s`` seconds.
        """
        self.daemon.stop()
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise TimeoutError(f"the detector did not stop within {timeout_s:.0f} s")

    def __enter__(self) -> DaemonThread:
        return self.start().wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()
