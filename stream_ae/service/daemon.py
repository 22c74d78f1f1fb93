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

from stream_ae.kafka.backends import client_errors, make_sink, make_source, make_transactional_sink
from stream_ae.kafka.ends import PERMANENT_REFUSALS, BrokerUnreachableError, Sink, Source, TransactionalSink
from stream_ae.kafka.state_store import PartitionStateStore
from stream_ae.kafka.topics import probe_cluster
from stream_ae.model.checkpoint import Checkpoint, load_checkpoint
from stream_ae.model.device import use_threads
from stream_ae.pipeline.batch_budget import BatchBudget
from stream_ae.pipeline.codec import REASONS
from stream_ae.pipeline.guarantee import AtLeastOnce, DeliveryGuarantee, ExactlyOnce
from stream_ae.pipeline.hot_swap import HotSwap
from stream_ae.pipeline.housekeeping import Housekeeping
from stream_ae.pipeline.keyed_state import PartitionStates, StateStore
from stream_ae.pipeline.loop import OutputTopics, StreamLoop
from stream_ae.pipeline.ownership import PartitionOwnership
from stream_ae.pipeline.samples import SAMPLE_REASONS
from stream_ae.pipeline.series_stage import SeriesOptions, ServedSeries
from stream_ae.pipeline.serving import ModelLoader, ServedModel, ServingOptions
from stream_ae.service.config import Settings
from stream_ae.telemetry.health import HealthState, MetricsServer
from stream_ae.telemetry.metrics import DaemonMetrics

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


def model_loader(settings: Settings) -> ModelLoader:
    """The loader that serves checkpoints as ``settings`` say (the daemon's first model and
    every hot swap)."""
    events, model, threshold, alerts = settings.events, settings.model, settings.threshold, settings.alerts
    return ModelLoader(ServingOptions(
        event_kind=events.kind, device=model.device, compile=model.compile, precision=model.precision,
        bucket=model.bucket_batches, max_batch_size=settings.consumer.max_batch_size,
        top_features=alerts.top_features, window_segments=alerts.window_segments, id_field=events.id_field,
        samples_field=events.samples_field, max_record_bytes=events.max_record_bytes, k=threshold.k,
        false_alarm_rate=threshold.false_alarm_rate, scale=threshold.scale,
        half_life_events=threshold.half_life_events, warmup_events=threshold.warmup_events))


def served_series(settings: Settings) -> ServedSeries:
    """The sample-stream stages as ``settings.samples`` says (``events.kind: samples``)."""
    samples = settings.samples
    return ServedSeries(SeriesOptions(samples.detector(), samples.channels, samples.series_field,
                                      settings.events.max_record_bytes, samples.stride, samples.max_series,
                                      samples.warmup_of))


class Daemon:
    """The streaming anomaly detector as a service: its pieces, built from ``settings``.

    Args:
        settings: validated settings.
        checkpoint: the model to serve; None loads ``settings.model.checkpoint`` (none is
            served with ``events.kind: samples``).
        source, sink: the Kafka ends; None opens them for ``settings.kafka.client`` when
            the loop starts (in exactly-once mode, a given sink must be a
            :class:`~stream_ae.kafka.ends.TransactionalSink`).
        store: where the keyed state is kept; None opens the ``topics.state`` topic (when
            set) when the loop starts.

    Attributes:
        metrics, health: what ``/metrics``, ``/healthz`` and ``/readyz`` show.
        served: the model in service at start-up (the loop's ``served`` after a swap).
        ownership: the partitions owned and their keyed state, once :meth:`open` has run.
        loop: the loop, once :meth:`open` has run.
        server: the metrics server while :meth:`run` runs (``metrics.enabled``).

    Raises:
        CheckpointError: the checkpoint cannot be read, or its event kind differs from
            ``settings.events.kind``.
        ValueError: CUDA asked for but absent.
    """

    def __init__(self, settings: Settings, checkpoint: Checkpoint | None = None,
                 source: Source | None = None, sink: Sink | None = None,
                 store: StateStore | None = None) -> None:
        self.settings = settings
        samples = settings.events.kind == "samples"
        self.metrics = DaemonMetrics(SAMPLE_REASONS if samples else REASONS,
                                     (settings.topics.outputs(), sorted(set(PERMANENT_REFUSALS.values()))))
        self.health = HealthState()
        log.info("scoring on %d CPU threads (model.threads)", use_threads(settings.model.threads))
        loader = model_loader(settings)
        self.served: ServedModel | ServedSeries = (
            served_series(settings) if samples
            else loader.load(checkpoint or load_checkpoint(settings.model.checkpoint)))
        self.hot_swap: HotSwap | None = None if samples else HotSwap(
            settings.model.checkpoint, settings.model.reload_check_s, loader, self.metrics.model_reloads)
        self.source = source
        self.sink = sink
        self.store = store
        self.ownership: PartitionOwnership | None = None
        self.loop: StreamLoop | None = None
        self.server: MetricsServer | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the loop to finish the batch in flight and shut down (safe from any thread)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Ask the loop to load ``model.checkpoint`` again before the next batch (thread-safe;
        nothing to load for sample streams)."""
        if self.hot_swap is not None:
            self.hot_swap.request()

    def open(self) -> StreamLoop:
        """Open the Kafka ends and the state store not given to the constructor, and build the
        partition ownership and the loop over them (the one place the state store is handled).

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
        if self.store is None and settings.topics.state:
            self.store = PartitionStateStore(connection, settings.topics.state, settings.consumer.group_id,
                                             read_committed=transactions is not None)
        ownership = self.ownership = PartitionOwnership(self.health, self.metrics, PartitionStates(self.store))
        if self.source is None:
            self.source = make_source(settings.kafka.client, connection, settings.topics.input,
                                      settings.consumer_options(), ownership.assigned_now, ownership.revoked_now)
        topics, consumer = settings.topics, settings.consumer
        self.loop = StreamLoop(self.source, self.sink, self.served,
                               OutputTopics(topics.alerts, topics.dead_letter, topics.scores,
                                            settings.kafka.max_request_bytes),
                               ownership, self.metrics, guarantee=self._guarantee(self.source, self.sink, ownership),
                               budget=BatchBudget(None if consumer.batch_budget_ms is None
                                                  else consumer.batch_budget_ms / 1000, consumer.max_batch_size))
        return self.loop

    def _guarantee(self, source: Source, sink: Sink, ownership: PartitionOwnership) -> DeliveryGuarantee:
        """The delivery guarantee ``delivery.guarantee`` names, over the opened ends."""
        if not self.settings.delivery.exactly_once:
            return AtLeastOnce(source, sink)
        if not isinstance(sink, TransactionalSink):
            raise TypeError(f"delivery.guarantee exactly_once needs a transactional sink, not {type(sink).__name__}")
        return ExactlyOnce(source, sink, ownership)

    def open_when_reachable(self) -> StreamLoop | None:
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
                loop = self.open()
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
            return loop
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
            loop = self.open_when_reachable()
            if loop is None:
                return
            housekeeping = Housekeeping(loop.source, loop.ownership, self.metrics)
            served = self.served
            log.info("serving %s", served.checkpoint.describe() if isinstance(served, ServedModel) else
                     f"sample streams: {self.settings.samples.model_dump()}")
            freeze_long_lived_objects()
            while not self._stop.is_set():
                swapped = (self.hot_swap.poll(loop.served)
                           if self.hot_swap is not None and isinstance(loop.served, ServedModel) else None)
                if swapped is not None:
                    loop.serve(swapped)
                self.health.tick()
                loop.step()
                housekeeping.tick(time.perf_counter())
            loop.settle_before_leaving()
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
