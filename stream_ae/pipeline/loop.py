"""The daemon's loop: source → codec → scorer → threshold → sink → commit, one micro-batch at a time.

The loop owns no stage's logic; it composes the stages, times them, and keeps the
delivery promise: a batch's offsets are committed only after every alert, score, dead
letter and threshold-state record of that batch has been acknowledged by the broker
(at-least-once). Between batches it swaps in a new checkpoint when asked (SIGHUP) or when
the checkpoint file changes, and keeps ``/readyz`` in step with the broker connection.

One batch is in flight at a time, so that the broker's round trips overlap with work:
batch N's output is sent, then batch N+1 is polled while N's acknowledgements arrive. N
is settled (acknowledgement awaited, offsets committed asynchronously, counted) right
after that poll if its acknowledgements are in, at once if the poll brought nothing, and
otherwise once N+1's output is sent. Its end-to-end latency is taken at the moment its
last acknowledgement reached the client (:meth:`sink.Delivery.acknowledged_at`), not
when the loop got round to settling it.
A failed delivery rewinds the source to the first records of both batches. Offsets are
committed only for partitions still assigned: after a revocation, the new owner reads
the revoked partitions' unsettled records again (at-least-once; the rebalance callback
runs on kafka-python's I/O thread, where no blocking call is allowed). The end of
:meth:`Detector.run` settles the batch in flight and commits synchronously.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from stream_ae.alerts import ModelIdentity, alert_records, dead_letter_headers, score_records
from stream_ae.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from stream_ae.clients import Sink, Source, make_sink, make_source
from stream_ae.codec import EventDecoder
from stream_ae.config import Settings
from stream_ae.metrics import DetectorMetrics, HealthState, MetricsServer
from stream_ae.records import ConsumedBatch, PartitionKey
from stream_ae.scorer import Scorer
from stream_ae.sink import Delivery, DeliveryError
from stream_ae.state_store import ThresholdStateStore
from stream_ae.threshold import AdaptiveThreshold

log = logging.getLogger(__name__)

DELIVERY_RETRY_BACKOFF_S = 1.0
HOUSEKEEPING_INTERVAL_S = 1.0  # broker connection check and consumer-lag gauges (seconds)


@dataclass
class _InFlight:
    """A batch whose output is sent but not yet acknowledged, and what settling it records.

    Attributes:
        delivery: the acknowledgement of the batch's output.
        records: records consumed (events).
        first_offsets: per partition, the offset of the batch's first record (to read the
            batch again); the records themselves are not kept, so that the garbage
            collector does not walk them again while the next batch is polled.
        next_offsets: per partition, the offset after the batch's last record (to commit).
        alerts: alerts sent (events).
        dead_letter_reasons: the reason of each dead-lettered record.
        timestamps_ms: int64 ``(events scored,)`` record timestamps, for the latency.
    """

    delivery: Delivery
    records: int
    first_offsets: dict[PartitionKey, int]
    next_offsets: dict[PartitionKey, int]
    alerts: int
    dead_letter_reasons: list[str]
    timestamps_ms: np.ndarray


def freeze_long_lived_objects() -> None:
    """Collect garbage once, then move every object alive into the collector's permanent
    generation (:func:`gc.freeze`), so that later full collections skip them.

    The modules, the model and the clients make a heap of a few million objects; a full
    collection walked all of them (about 170 ms on this project's 2-core machine, seen
    every few hundred thousand events), stalling the stream. Call it once start-up is done.
    """
    gc.collect()
    gc.freeze()


class Detector:
    """The streaming anomaly detector.

    Args:
        settings: validated settings.
        checkpoint: the model to serve; None loads ``settings.model.checkpoint``.
        source, sink: the Kafka ends; None builds kafka-python ones from ``settings`` when
            :meth:`run` starts.

    Raises:
        CheckpointError: the checkpoint cannot be read, or its event kind differs from
            ``settings.events.kind``.
        ValueError: CUDA asked for but absent.
    """

    def __init__(self, settings: Settings, checkpoint: Checkpoint | None = None,
                 source: Source | None = None, sink: Sink | None = None) -> None:
        self.settings = settings
        self.metrics = DetectorMetrics()
        self.health = HealthState()
        self._serve(checkpoint or load_checkpoint(settings.model.checkpoint))
        self.source = source
        self.sink = sink
        self.state_store: ThresholdStateStore | None = None
        self.assigned: set[PartitionKey] = set()
        self._unrestored: set[PartitionKey] = set()  # assigned, saved threshold not read yet
        self._in_flight: _InFlight | None = None
        self._committed_async: dict[PartitionKey, int] = {}
        self.connected = True
        self._next_housekeeping = 0.0
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._checkpoint_mtime = self._mtime(settings.model.checkpoint)
        self._next_reload_check = 0.0
        self.server: MetricsServer | None = None

    def _serve(self, checkpoint: Checkpoint) -> None:
        """Make ``checkpoint`` the model in service: decoder, scorer, a freshly seeded threshold."""
        settings = self.settings
        if settings.events.kind not in ("auto", checkpoint.kind):
            raise CheckpointError(
                f"events.kind is {settings.events.kind!r} but the checkpoint was trained on "
                f"{checkpoint.kind} events")
        self.checkpoint = checkpoint
        self.scorer = Scorer.from_settings(checkpoint, settings)
        if settings.model.compile:
            self.scorer.warm_up(settings.consumer.max_batch_size)
        self.decoder = EventDecoder(checkpoint.feature_names, checkpoint.window_length,
                                    settings.events.id_field, settings.events.samples_field,
                                    settings.events.max_record_bytes,
                                    pinned=self.scorer.device.type == "cuda")
        self.threshold = AdaptiveThreshold.from_validation_errors(settings.threshold,
                                                                  checkpoint.validation_errors)
        self.model = ModelIdentity(checkpoint.model_name, checkpoint.sha256)
        self.metrics.model_info.clear()
        self.metrics.model_info.labels(self.model.name, self.model.checkpoint_sha256).set(1)

    # -- rebalance callbacks (called from inside poll) -------------------------------------
    def _on_assigned(self, keys: list[PartitionKey]) -> None:
        # kafka-python calls this on its I/O thread, where nothing may block: the saved
        # thresholds are read by the loop (_restore_thresholds), before it judges any event
        self.assigned.update(keys)
        self._unrestored.update(keys)
        self._refresh_readiness()
        log.info("partitions assigned: %s", sorted(keys))

    def _restore_thresholds(self) -> None:
        """Seed the threshold of each newly assigned partition from its saved state, when the
        state was saved by the model in service (else the checkpoint's seed stays)."""
        keys = sorted(self._unrestored)
        self._unrestored.difference_update(keys)
        saved = self.state_store.load(keys) if self.state_store else {}
        for key, state in saved.items():
            if state.get("checkpoint_sha256") == self.model.checkpoint_sha256:
                self.threshold.restore(key, state)
        for topic, partition in keys:
            self.metrics.threshold.labels(topic, str(partition)).set(self.threshold.threshold((topic, partition)))
        self._refresh_readiness()
        log.info("threshold state restored for %d of %d newly assigned partitions", len(saved), len(keys))

    def _on_revoked(self, keys: list[PartitionKey]) -> None:
        for key in keys:
            self.assigned.discard(key)
            self._unrestored.discard(key)
            self._committed_async.pop(key, None)
            self.threshold.forget(key)
            for gauge in (self.metrics.threshold, self.metrics.consumer_lag):
                try:
                    gauge.remove(key[0], str(key[1]))
                except KeyError:  # never set for this partition
                    pass
        self._refresh_readiness()
        log.info("partitions revoked: %s", sorted(keys))

    def _refresh_readiness(self) -> None:
        """Ready: partitions assigned, their saved thresholds read, the broker reachable."""
        self.health.ready = bool(self.assigned) and not self._unrestored and self.connected

    # -- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the batch in flight and shut down (safe from any thread)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Ask the loop to load ``model.checkpoint`` again before the next batch (thread-safe)."""
        self._reload.set()

    def run(self) -> None:
        """Run until :meth:`stop`; then flush, leave the group and close the connections."""
        settings = self.settings
        log.info("settings: %s", settings.model_dump_json())  # secrets print as '**********'
        if settings.metrics.enabled:
            self.server = MetricsServer(self.metrics, self.health, settings.metrics.host,
                                        settings.metrics.port)
            self.server.start()
            log.info("metrics on http://%s:%d/metrics", settings.metrics.host, self.server.port)
        if self.sink is None:
            self.sink = make_sink(settings)
        if settings.topics.state:
            self.state_store = ThresholdStateStore(settings.kafka, settings.topics.state,
                                                   settings.consumer.group_id)
        if self.source is None:
            self.source = make_source(settings, self._on_assigned, self._on_revoked)
        log.info("serving %s on %s", self.checkpoint.describe(), self.scorer.device)
        freeze_long_lived_objects()
        try:
            while not self._stop.is_set():
                self._maybe_reload()
                self.step()
            self._settle_before_leaving()
        finally:
            self.health.ready = False
            self.sink.close()
            self.source.close()
            if self.server is not None:
                self.server.stop()
            log.info("stopped")

    # -- one micro-batch ---------------------------------------------------------------------
    def step(self) -> int:
        """Poll and handle one micro-batch, then settle the one before it (see the module
        docstring). Returns the number of records polled."""
        assert self.source is not None and self.sink is not None
        metrics, stage = self.metrics, self.metrics.stage_seconds
        self.health.tick()
        started = time.perf_counter()
        consumed = self.source.poll_batch()
        if self._unrestored:  # partitions were assigned during the poll
            self._restore_thresholds()
        polled = time.perf_counter()
        stage.labels("poll").inc(polled - started)
        self._housekeeping(polled)
        if not len(consumed):
            self._settle(None)
            return 0
        in_flight = self._in_flight
        if in_flight is not None and in_flight.delivery.done() and not self._settle(None, unhandled=consumed):
            return 0  # rewound to the unacknowledged batch: these records come again after it
        metrics.batch_size.observe(len(consumed))

        batch, rejected = self.decoder.decode(consumed)
        decoded = time.perf_counter()
        stage.labels("decode").inc(decoded - polled)

        scores = self.scorer.score(batch.values)
        scored = time.perf_counter()
        stage.labels("score").inc(scored - decoded)
        metrics.inference_seconds.observe(scored - decoded)

        verdict = self.threshold.apply(batch.partitions, batch.partition_index, scores.errors)
        judged = time.perf_counter()
        stage.labels("threshold").inc(judged - scored)

        topics = self.settings.topics
        detected_at_ms = int(time.time() * 1000)
        alerts = alert_records(batch, scores, verdict, self.scorer.attribution_names,
                               detected_at_ms, self.model)
        for key, value in alerts:
            self.sink.send(topics.alerts, key, value)
        if topics.scores:
            for key, value in score_records(batch, scores, verdict, detected_at_ms, self.model):
                self.sink.send(topics.scores, key, value)
        for item in rejected:
            self.sink.send(topics.dead_letter, item.record.key, item.record.value,
                           dead_letter_headers(item))
        next_offsets = consumed.next_offsets()
        if self.state_store is not None:
            self._send_threshold_state(next_offsets)
        sent = _InFlight(self.sink.seal(), len(consumed), consumed.first_offsets(), next_offsets,
                         len(alerts), [item.reason for item in rejected], batch.timestamps_ms)
        stage.labels("produce").inc(time.perf_counter() - judged)
        for topic, partition in batch.partitions:
            metrics.threshold.labels(topic, str(partition)).set(self.threshold.threshold((topic, partition)))
        self._settle(sent)
        return len(consumed)

    def _settle(self, newer: _InFlight | None, unhandled: ConsumedBatch | None = None) -> bool:
        """Settle the batch in flight and put ``newer`` in its place.

        Settling waits for the batch's acknowledgement, commits its offsets asynchronously
        and counts it. If its delivery failed, nothing is committed: the source is rewound
        to the first records of the failed batch, of ``newer`` (whose output is abandoned
        with it) and of ``unhandled`` (a batch polled but not handled yet), so that all of
        them are read again.

        Returns:
            False when a failed delivery rewound the source (records polled since then must
            be dropped: they come again); True otherwise.
        """
        settling, self._in_flight = self._in_flight, newer
        if settling is None:
            return True
        metrics, stage = self.metrics, self.metrics.stage_seconds
        started = time.perf_counter()
        try:
            settling.delivery.wait()
        except DeliveryError as exc:
            metrics.delivery_failures.inc()
            log.error("batch output not acknowledged, reading the batch again: %s", exc)
            involved = [settling.first_offsets, *([newer.first_offsets] if newer else []),
                        *([unhandled.first_offsets()] if unhandled is not None else [])]
            first: dict[PartitionKey, int] = {}
            for first_offsets in involved:
                for key, offset in first_offsets.items():
                    first[key] = min(offset, first.get(key, offset))
            self._in_flight = None
            self.source.rewind(first)
            time.sleep(DELIVERY_RETRY_BACKOFF_S)
            return False
        acknowledged = time.perf_counter()
        stage.labels("produce").inc(acknowledged - started)

        owned = {key: offset for key, offset in settling.next_offsets.items() if key in self.assigned}
        self.source.commit(owned, asynchronous=True)
        self._committed_async.update(owned)
        stage.labels("commit").inc(time.perf_counter() - acknowledged)

        metrics.end_to_end_latency.observe_many(settling.delivery.acknowledged_at() - settling.timestamps_ms / 1000.0)
        metrics.events_consumed.inc(settling.records)  # counted last: a reader that sees
        metrics.events_scored.inc(len(settling.timestamps_ms))  # the counts sees the latencies
        metrics.alerts.inc(settling.alerts)
        for reason in settling.dead_letter_reasons:
            metrics.dead_lettered.labels(reason).inc()
        return True

    def _settle_before_leaving(self) -> None:
        """Settle the batch in flight, then commit every offset committed asynchronously
        again, synchronously, so that none is lost with the connection."""
        self._settle(None)
        if self._committed_async:
            self.source.commit(self._committed_async)
            self._committed_async.clear()

    def _send_threshold_state(self, next_offsets: dict[PartitionKey, int]) -> None:
        """Queue the state record of every partition in the batch, for the same acknowledgement."""
        for key, next_offset in next_offsets.items():
            state = {**self.threshold.export(key), "next_offset": next_offset,
                     "checkpoint_sha256": self.model.checkpoint_sha256}
            self.sink.send(self.settings.topics.state, *self.state_store.record(key, state))

    def _housekeeping(self, now: float) -> None:
        """Every second: is the broker reachable? (counts reconnects and keeps ``/readyz``
        honest); and the consumer-lag gauges (asking the client costs about 0.1 ms)."""
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + HOUSEKEEPING_INTERVAL_S
        self._refresh_lag()
        connected = self.source.connected()
        if connected and not self.connected:
            self.metrics.reconnects.inc()
            log.info("broker connection back")
        elif not connected and self.connected:
            log.warning("lost every broker connection; not ready until it is back")
        self.connected = connected
        self._refresh_readiness()

    @staticmethod
    def _mtime(path: Path) -> int | None:
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return None

    def _maybe_reload(self) -> None:
        """Swap in a new checkpoint between batches, on request or when the file changed.

        An incompatible or unreadable checkpoint (other event kind, other features or window
        length) is refused with an error log and a metric; the current model keeps serving.
        """
        path, interval = self.settings.model.checkpoint, self.settings.model.reload_check_s
        if not self._reload.is_set():
            now = time.monotonic()
            if interval == 0 or now < self._next_reload_check:
                return
            self._next_reload_check = now + interval
            if self._mtime(path) == self._checkpoint_mtime:
                return
        self._reload.clear()
        self._checkpoint_mtime = self._mtime(path)
        try:
            candidate = load_checkpoint(path)
            if candidate.sha256 == self.model.checkpoint_sha256:
                return
            if (candidate.kind, candidate.feature_names) != (self.checkpoint.kind, self.checkpoint.feature_names):
                raise CheckpointError(
                    f"it takes {candidate.describe()}, but the stream carries "
                    f"{self.checkpoint.kind} events of {self.checkpoint.input_dim} values "
                    f"({', '.join(self.checkpoint.feature_names[:3])}, ...)")
            self._serve(candidate)
        except (CheckpointError, ValueError) as exc:
            self.metrics.model_reloads.labels("refused").inc()
            log.error("new checkpoint %s refused; the current model keeps serving: %s", path, exc)
            return
        self.metrics.model_reloads.labels("loaded").inc()
        for key in self.assigned:
            self.metrics.threshold.labels(key[0], str(key[1])).set(self.threshold.threshold(key))
        log.info("now serving %s", self.checkpoint.describe())

    def _refresh_lag(self) -> None:
        for (topic, partition), lag in self.source.lag().items():
            self.metrics.consumer_lag.labels(topic, str(partition)).set(lag)



class BackgroundDetector:
    """A :class:`Detector` running in a background thread, for the demo, the bench and tests.

    As a context manager, entering starts it and waits until it is ready (partitions
    assigned); leaving stops it and waits for its thread.

    Args:
        settings, checkpoint, source, sink: as for :class:`Detector`.
        poll_s: seconds between checks of a condition in :meth:`wait_for`.
    """

    def __init__(self, settings: Settings, checkpoint: Checkpoint | None = None,
                 source: Source | None = None, sink: Sink | None = None, poll_s: float = 0.05) -> None:
        self.detector = Detector(settings, checkpoint, source, sink)
        self.poll_s = poll_s
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="detector", daemon=True)

    def _run(self) -> None:
        try:
            self.detector.run()
        except BaseException as exc:  # reported by wait_for, inspected by tests
            self.error = exc

    def start(self) -> "BackgroundDetector":
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

    def wait_ready(self, timeout_s: float = 60.0) -> "BackgroundDetector":
        """Wait until the detector has joined its group and been assigned partitions."""
        self.wait_for(lambda: self.detector.health.ready, timeout_s, "the detector to join its group")
        return self

    def wait_accounted(self, events_in: int, timeout_s: float = 60.0) -> dict[str, int]:
        """Wait until ``events_in`` records were scored or dead-lettered; returns the totals."""
        totals = self.detector.metrics.totals

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
        self.detector.stop()
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise TimeoutError(f"the detector did not stop within {timeout_s:.0f} s")

    def __enter__(self) -> "BackgroundDetector":
        return self.start().wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()
