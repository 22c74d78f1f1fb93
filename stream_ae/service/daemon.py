"""The daemon: builds the pipeline from the settings, runs its loop until asked to stop, and
shuts down cleanly.

This is the one place that reads :class:`~stream_ae.service.config.Settings` into the
plain values the pipeline's pieces take. Lifecycle of :meth:`Daemon.run`: start the
metrics server, open the Kafka ends (sink, state store, source) once the cluster answers
(waiting for it, not ready, as long as it does not), freeze the start-up heap out of the
garbage collector, then loop (swap the model if due, one micro-batch, housekeeping) until
:meth:`Daemon.stop`; settle the batch in flight, commit, close.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

from stream_ae.kafka.backends import client_errors, make_sink, make_source, make_transactional_sink
from stream_ae.kafka.ends import PERMANENT_REFUSALS, BrokerUnreachableError, Sink, Source, TransactionalSink
from stream_ae.kafka.state_store import ThresholdStateStore
from stream_ae.kafka.topics import probe_cluster
from stream_ae.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from stream_ae.pipeline.alerts import ModelIdentity
from stream_ae.pipeline.codec import REASONS, EventDecoder
from stream_ae.pipeline.guarantee import AtLeastOnce, DeliveryGuarantee, ExactlyOnce
from stream_ae.pipeline.hot_swap import HotSwap, ServedModel
from stream_ae.pipeline.housekeeping import Housekeeping
from stream_ae.pipeline.loop import Detector, OutputTopics
from stream_ae.pipeline.ownership import PartitionOwnership, SavedThresholds
from stream_ae.pipeline.scoring.autoencoder import AutoencoderScorer
from stream_ae.pipeline.threshold.adaptive import AdaptiveThreshold, starting_k
from stream_ae.service.config import Settings
from stream_ae.telemetry.health import HealthState, MetricsServer
from stream_ae.telemetry.metrics import DetectorMetrics

log = logging.getLogger(__name__)

BROKER_PROBE_S = 3.0  # longest wait for the cluster to answer at start-up (seconds)
BROKER_RETRY_S = 5.0  # pause between attempts while it does not (seconds)
STILL_WAITING_LOG_S = 60.0  # seconds between reminders that the cluster still does not answer


def freeze_long_lived_objects() -> None:
    """Collect garbage once, then move every object alive into the collector's permanent
    generation (:func:`gc.freeze`), so that later full collections skip them.

    The modules, the model and the clients make a heap of a few million objects; a full
    collection walked all of them (about 170 ms on this project's 2-core machine, seen
    every few hundred thousand events), stalling the stream. Call it once start-up is done.
    """
    gc.collect()
    gc.freeze()


def serve(settings: Settings, checkpoint: Checkpoint) -> ServedModel:
    """The decoder, score head and seeded threshold that serve ``checkpoint`` as ``settings`` say.

    Raises:
        CheckpointError: the checkpoint's event kind differs from ``settings.events.kind``.
        ValueError: CUDA asked for but absent.
    """
    if settings.events.kind not in ("auto", checkpoint.kind):
        raise CheckpointError(f"events.kind is {settings.events.kind!r} but the checkpoint was "
                              f"trained on {checkpoint.kind} events")
    model, events, threshold = settings.model, settings.events, settings.threshold
    scorer = AutoencoderScorer(checkpoint, model.device, settings.alerts.top_features,
                               settings.alerts.window_segments, compile=model.compile,
                               precision=model.precision, bucket=model.bucket_batches)
    if model.compile:
        scorer.warm_up(settings.consumer.max_batch_size)
    decoder = EventDecoder(checkpoint.feature_names, checkpoint.window_length, events.id_field,
                           events.samples_field, events.max_record_bytes, allocate=scorer.host_buffer,
                           scaler=(checkpoint.scaler_mean, checkpoint.scaler_std))
    k = starting_k(checkpoint.validation_errors, threshold.k, threshold.false_alarm_rate, threshold.scale)
    if threshold.false_alarm_rate is not None:
        log.info("threshold: k = %.3f flags %.2g%% of the validation scores (threshold.false_alarm_rate)",
                 k, 100 * threshold.false_alarm_rate)
    return ServedModel(
        checkpoint, decoder, scorer,
        AdaptiveThreshold.from_validation_errors(checkpoint.validation_errors, k, threshold.scale,
                                                 threshold.half_life_events, threshold.warmup_events),
        ModelIdentity(checkpoint.model_name, checkpoint.sha256))


class Daemon:
    """The streaming anomaly detector as a service: its pieces, built from ``settings``.

    Args:
        settings: validated settings.
        checkpoint: the model to serve; None loads ``settings.model.checkpoint``.
        source, sink: the Kafka ends; None opens them for ``settings.kafka.client`` when
            the loop starts (in exactly-once mode, a given sink must be a
            :class:`~stream_ae.kafka.ends.TransactionalSink`).
        saved: where threshold state is kept; None opens the ``topics.state`` topic (when
            set) when the loop starts.

    Attributes:
        metrics, health: what ``/metrics``, ``/healthz`` and ``/readyz`` show.
        ownership: the partitions owned.
        detector: the loop, once :meth:`open` has run.
        server: the metrics server while :meth:`run` runs (``metrics.enabled``).

    Raises:
        CheckpointError: the checkpoint cannot be read, or its event kind differs from
            ``settings.events.kind``.
        ValueError: CUDA asked for but absent.
    """

    def __init__(self, settings: Settings, checkpoint: Checkpoint | None = None,
                 source: Source | None = None, sink: Sink | None = None,
                 saved: SavedThresholds | None = None) -> None:
        self.settings = settings
        self.metrics = DetectorMetrics(REASONS, (settings.topics.outputs(), sorted(set(PERMANENT_REFUSALS.values()))))
        self.health = HealthState()
        self.served = serve(settings, checkpoint or load_checkpoint(settings.model.checkpoint))
        self.hot_swap = HotSwap(settings.model.checkpoint, settings.model.reload_check_s,
                                lambda candidate: serve(settings, candidate), self.metrics.model_reloads)
        self.ownership = PartitionOwnership(self.health, self.metrics, saved)
        self.source = source
        self.sink = sink
        self.detector: Detector | None = None
        self.server: MetricsServer | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the loop to finish the batch in flight and shut down (safe from any thread)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Ask the loop to load ``model.checkpoint`` again before the next batch (thread-safe)."""
        self.hot_swap.request()

    def open(self) -> Detector:
        """Open the Kafka ends not given to the constructor and build the loop.

        Raises:
            KafkaError, KafkaException: the cluster cannot be reached or refused a request.
        """
        settings = self.settings
        connection = settings.kafka.connection()
        transactions = settings.transaction_options()
        if self.sink is None:
            self.sink = (make_sink(settings.kafka.client, connection, settings.topics.outputs(),
                                   settings.kafka.max_request_bytes)
                         if transactions is None else
                         make_transactional_sink(settings.kafka.client, connection, transactions,
                                                 settings.topics.outputs(), settings.kafka.max_request_bytes))
        if self.ownership.saved is None and settings.topics.state:
            self.ownership.saved = ThresholdStateStore(connection, settings.topics.state, settings.consumer.group_id,
                                                       read_committed=transactions is not None)
        if self.source is None:
            self.source = make_source(settings.kafka.client, connection, settings.topics.input,
                                      settings.consumer_options(), self.ownership.assigned_now,
                                      self.ownership.revoked_now)
        topics = settings.topics
        self.detector = Detector(self.source, self.sink, self.served,
                                 OutputTopics(topics.alerts, topics.dead_letter, topics.scores, topics.state,
                                              settings.kafka.max_request_bytes),
                                 self.ownership, self.metrics, self.ownership.saved,
                                 guarantee=self._guarantee(self.source, self.sink))
        return self.detector

    def _guarantee(self, source: Source, sink: Sink) -> DeliveryGuarantee:
        """The delivery guarantee ``delivery.guarantee`` names, over the opened ends."""
        if not self.settings.delivery.exactly_once:
            return AtLeastOnce(source, sink)
        if not isinstance(sink, TransactionalSink):
            raise TypeError(f"delivery.guarantee exactly_once needs a transactional sink, not {type(sink).__name__}")
        return ExactlyOnce(source, sink, self.ownership)

    def open_when_reachable(self) -> Detector | None:
        """:meth:`open` once the cluster answers: until then (not ready, ``/readyz`` 503) try
        again every :data:`BROKER_RETRY_S` seconds, saying so in one log line at first and
        in a reminder every :data:`STILL_WAITING_LOG_S` seconds.

        Returns:
            The loop, or None when :meth:`stop` was called first.
        """
        servers = self.settings.kafka.bootstrap_servers
        unreachable: tuple[type[Exception], ...] = (BrokerUnreachableError, *client_errors())
        waiting_since: float | None = None
        reminded = 0.0
        while not self._stop.is_set():
            self.health.tick()
            try:
                if self.source is None or self.sink is None:  # given ends need no cluster check
                    probe_cluster(self.settings.kafka.connection(), BROKER_PROBE_S)
                detector = self.open()
            except unreachable as exc:
                now = time.monotonic()
                if waiting_since is None:
                    waiting_since = reminded = now
                    log.error("Kafka cluster at %s unreachable (%s); trying again every %.0f s, not ready "
                              "meanwhile", servers, exc, BROKER_RETRY_S)
                elif now - reminded >= STILL_WAITING_LOG_S:
                    reminded = now
                    log.warning("Kafka cluster at %s still unreachable after %.0f s (%s)", servers,
                                now - waiting_since, exc)
                self._stop.wait(BROKER_RETRY_S)
                continue
            if waiting_since is not None:
                log.info("Kafka cluster at %s answers after %.0f s", servers, time.monotonic() - waiting_since)
            return detector
        return None

    def run(self) -> None:
        """Run until :meth:`stop`; then flush, leave the group and close the connections.

        Raises:
            OSError: the metrics port cannot be bound (the message names it).
        """
        settings = self.settings
        log.info("settings: %s", settings.model_dump_json())  # secrets print as '**********'
        if settings.metrics.enabled:
            self.server = self._metrics_server()
            log.info("metrics on http://%s:%d/metrics", settings.metrics.host, self.server.port)
        try:
            detector = self.open_when_reachable()
            if detector is None:
                return
            assert self.source is not None
            housekeeping = Housekeeping(self.source, self.ownership, self.metrics)
            log.info("serving %s", self.served.checkpoint.describe())
            freeze_long_lived_objects()
            while not self._stop.is_set():
                swapped = self.hot_swap.poll(detector.served)
                if swapped is not None:
                    detector.serve(swapped)
                self.health.tick()
                detector.step()
                housekeeping.tick(time.perf_counter())
            detector.settle_before_leaving()
        finally:
            self.health.ready = False
            for end in (self.sink, self.source):
                if end is not None:
                    end.close()
            if self.server is not None:
                self.server.stop()
            log.info("stopped")

    def _metrics_server(self) -> MetricsServer:
        """The started metrics server.

        Raises:
            OSError: ``metrics.host:metrics.port`` cannot be bound; the message says which
                setting to change.
        """
        metrics = self.settings.metrics
        try:
            return MetricsServer(self.metrics.registry, self.health, metrics.host, metrics.port).start()
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {metrics.host}:{metrics.port}: {exc.strerror or exc} "
                          "(another process there? set metrics.port, 0 for any free port)") from exc


class BackgroundDetector:
    """A :class:`Daemon` running in a background thread, for the demo, the bench and tests.

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
        self.thread = threading.Thread(target=self._run, name="detector", daemon=True)

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:  # reported by wait_for, inspected by tests
            self.error = exc

    def start(self) -> BackgroundDetector:
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

    def wait_ready(self, timeout_s: float = 60.0) -> BackgroundDetector:
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

    def __enter__(self) -> BackgroundDetector:
        return self.start().wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()
