"""Swapping in a new checkpoint between batches.

A swap happens on request (SIGHUP: :meth:`HotSwap.request`) or when the checkpoint file
changed (checked every ``check_interval_s`` seconds). A checkpoint that cannot be read, or
that takes other events (another kind, other features or another window length), is
refused with an error log and a metric; the current model keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from prometheus_client import Counter

from stream_ae.model.checkpoint import CheckpointError, load_checkpoint
from stream_ae.pipeline.serving import ModelLoader, ServedModel

log = logging.getLogger(__name__)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class HotSwap:
    """Watches the checkpoint file and builds the model that replaces the one in service.

    Args:
        path: the checkpoint file.
        check_interval_s: seconds between checks of the file's modification time; 0 swaps
            only on :meth:`request`.
        loader: builds the served model of a checkpoint (the service hands it over, set up
            as the daemon's own model was).
        reloads: counter labelled ``result`` (``loaded``, ``refused``).
    """

    def __init__(self, path: Path, check_interval_s: float, loader: ModelLoader, reloads: Counter) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self.loader = loader
        self.reloads = reloads
        self._requested = threading.Event()
        self._mtime = _mtime(path)
        self._next_check = 0.0

    def request(self) -> None:
        """Load the checkpoint again before the next batch (safe from any thread, a signal handler included)."""
        self._requested.set()

    def poll(self, current: ServedModel) -> ServedModel | None:
        """The model to serve from now on, or None to keep ``current``.

        Cheap when nothing is due (one clock read); otherwise reads the file, and builds
        the new model if it differs from ``current`` and takes the same events.
        """
        if not self._requested.is_set():
            now = time.monotonic()
            if self.check_interval_s == 0 or now < self._next_check:
                return None
            self._next_check = now + self.check_interval_s
            if _mtime(self.path) == self._mtime:
                return None
        self._requested.clear()
        self._mtime = _mtime(self.path)
        try:
            candidate = load_checkpoint(self.path)
            if candidate.sha256 == current.identity.checkpoint_sha256:
                return None
            served = current.checkpoint
            if (candidate.kind, candidate.feature_names) != (served.kind, served.feature_names):
                raise CheckpointError(
                    f"it takes {candidate.describe()}, but the stream carries "
                    f"{served.kind} events of {served.input_dim} values "
                    f"({', '.join(served.feature_names[:3])}, ...)")
            swapped = self.loader.load(candidate)
        except (CheckpointError, ValueError) as exc:
            self.reloads.labels("refused").inc()
            log.error("new checkpoint %s refused; the current model keeps serving: %s", self.path, exc)
            return None
        self.reloads.labels("loaded").inc()
        log.info("now serving %s", candidate.describe())
        return swapped
