"""The daemon's loop: source → codec → detector → threshold → sink → commit, one micro-batch at a time.

:class:`StreamLoop` keeps the order of the steps and the delivery promise: a batch's
offsets are committed only after every alert, score, dead letter and state record of that
batch has been acknowledged by the broker (at-least-once), or together with them in one
transaction (exactly-once); how, is the delivery guarantee's (:mod:`.guarantee`). Every
other job lives in a piece of its own: the stages (:mod:`.codec`, the detector of
:mod:`stream_ae.model.detector`, :mod:`.threshold`, :mod:`.alerts`), partition ownership,
keyed state and readiness (:mod:`.ownership`, :mod:`.keyed_state`), the model in service
(:mod:`.serving`, swapped by :mod:`.hot_swap`), stage timing (:mod:`.timing`); the service
(:mod:`stream_ae.service.daemon`) builds them and runs the loop.

One batch is in flight at a time, so that the broker's round trips overlap with work:
batch N's output is sent, then batch N+1 is polled while N's acknowledgements arrive. N
is settled (acknowledgement awaited, offsets committed asynchronously, counted) right
after that poll if its acknowledgements are in (always, when the guarantee goes
:attr:`~.guarantee.DeliveryGuarantee.one_at_a_time`), at once if the poll brought nothing,
and otherwise once N+1's output is sent. Its end-to-end latency is taken at the moment its
last acknowledgement reached the client (:meth:`stream_ae.kafka.ends.Delivery.acknowledged_at`),
not when the loop got round to settling it.
A failed delivery rewinds the source to the first records of both batches (and the
guarantee is told; for sample streams, the series' state is first taken back to before
both batches, newest first, so that reading them again scores them alike), unless every
record that failed was refused for good (too large, topic not authorised): sending again
cannot help, so those are counted and logged (once per
topic and reason) and the batch is committed. A dead letter too large for a produce
request goes as a reference (:func:`stream_ae.pipeline.alerts.dead_letter_record`). Offsets are
committed only for partitions still owned: after a revocation, the new owner reads the
revoked partitions' unsettled records again (at-least-once; the rebalance callback runs
on kafka-python's I/O thread, where no blocking call is allowed).
:meth:`StreamLoop.settle_before_leaving` settles the batch in flight and commits synchronously.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from stream_ae.kafka.ends import BrokerUnreachableError, Delivery, DeliveryError, Sink, Source
from stream_ae.kafka.options import ProducerTuning
from stream_ae.kafka.records import ConsumedBatch, PartitionKey
from stream_ae.pipeline.alerts import alert_records, dead_letter_record, score_records
from stream_ae.pipeline.batch_budget import BatchBudget
from stream_ae.pipeline.codec import Rejected
from stream_ae.pipeline.guarantee import AtLeastOnce, DeliveryGuarantee
from stream_ae.pipeline.ownership import PartitionOwnership
from stream_ae.pipeline.series_stage import ServedSeries
from stream_ae.pipeline.serving import ServedModel
from stream_ae.pipeline.timing import StageTimer
from stream_ae.telemetry.metrics import DaemonMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputTopics:
    """Where the loop writes: alerts and dead letters always; every score when named (the
    state records go to their store's topic); ``max_request_bytes``: the sink's largest
    record (bytes), beyond which a dead letter goes as a reference."""

    alerts: str
    dead_letter: str
    scores: str | None = None
    max_request_bytes: int = ProducerTuning.max_request_bytes


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
        take_back: for sample streams, puts the series' state back as it was before the
            batch, when the batch is to be read again (None: nothing to put back).
    """

    delivery: Delivery
    records: int
    first_offsets: dict[PartitionKey, int]
    next_offsets: dict[PartitionKey, int]
    alerts: int
    dead_letter_reasons: list[str]
    timestamps_ms: np.ndarray
    take_back: Callable[[], None] | None = None


class Settled(Enum):
    """What settling the batch in flight came to."""

    NOTHING = "nothing was in flight"
    COMMITTED = "acknowledged, offsets committed, counted"
    REWOUND = "not delivered: the source is rewound, every record since is read again"


class StreamLoop:
    """The loop: the order of the steps and the delivery promise (see the module docstring).

    Args:
        source, sink: the Kafka ends.
        served: the model in service (swap it with :meth:`serve`), or the sample-stream
            stages (:class:`~.series_stage.ServedSeries`).
        topics: where the output goes.
        ownership: the partitions owned and their keyed state (with its store).
        metrics: counters and histograms the loop feeds.
        retry_backoff_s: pause after a batch whose output was not acknowledged (seconds).
        guarantee: how a batch's output and offsets become final; None:
            :class:`~.guarantee.AtLeastOnce` over ``source`` and ``sink``.
        budget: caps each next batch so that handling it fits a latency budget
            (:mod:`.batch_budget`); None: batches of the source's own bound.
    """

    def __init__(self, source: Source, sink: Sink, served: ServedModel | ServedSeries, topics: OutputTopics,
                 ownership: PartitionOwnership, metrics: DaemonMetrics, retry_backoff_s: float = 1.0,
                 guarantee: DeliveryGuarantee | None = None, budget: BatchBudget | None = None) -> None:
        self.source = source
        self.sink = sink
        self.guarantee = guarantee or AtLeastOnce(source, sink)
        self.topics = topics
        self.ownership = ownership
        self.metrics = metrics
        self.retry_backoff_s = retry_backoff_s
        self.timer = StageTimer(metrics.stage_seconds)
        self.budget = budget
        if budget is not None:
            metrics.batch_cap.set(budget.cap)
        self._in_flight: _InFlight | None = None
        self._committed_async: dict[PartitionKey, int] = {}
        self._refusals_logged: set[tuple[str, str]] = set()
        ownership.on_release(self._release)
        self.serve(served)

    def serve(self, served: ServedModel | ServedSeries) -> None:
        """Serve ``served`` from the next batch on (its threshold starts from its seed)."""
        self.served = served
        self.metrics.show_model(served.identity.name, served.identity.checkpoint_sha256)
        if isinstance(served, ServedSeries):
            self.ownership.states.hold([])
            return
        self.ownership.states.hold([served.threshold])
        self.metrics.show_thresholds(self.ownership.assigned, served.threshold.threshold)

    def _release(self, partitions: list[PartitionKey]) -> None:
        for partition in partitions:
            self._committed_async.pop(partition, None)

    # -- one micro-batch ---------------------------------------------------------------------
    def step(self) -> int:
        """Poll and handle one micro-batch. Returns the number of records polled.

        The order, and the only places each case is decided:

        1. poll; the keyed state of partitions assigned during the poll is restored first
           (unreadable: the poll is rewound and dropped, see :meth:`_restore_assigned`);
        2. nothing polled: settle the batch in flight, done;
        3. the batch in flight settles before this one is handled when the guarantee wants
           one batch at a time or its acknowledgement is already in; if it was not
           delivered, the source was rewound to it and this poll is dropped (it comes again);
        4. handle this batch: decode, score, threshold (and let the detector learn from the
           events not flagged), send its output, seal it; the time that took caps the next
           batches (the latency budget, :mod:`.batch_budget`);
        5. settle the batch still in flight, if any, and put this one in flight.
        """
        timer = self.timer
        timer.start()
        consumed = self.source.poll_batch()
        if self.ownership.restoring and not self._restore_assigned(consumed):
            return 0
        timer.lap("poll")
        if not len(consumed):
            self._settle_in_flight()
            return 0
        in_flight = self._in_flight
        settles_first = in_flight is not None and (self.guarantee.one_at_a_time or in_flight.delivery.done())
        if settles_first and self._settle_in_flight(unhandled=consumed) is Settled.REWOUND:
            return 0
        started = time.perf_counter()
        handled = self._handle(consumed)
        self._limit_next_batch(len(consumed), time.perf_counter() - started)
        self._settle_in_flight(newer=handled)
        return len(consumed)

    def _limit_next_batch(self, events: int, seconds: float) -> None:
        """Tell the budget what handling ``events`` took and cap the source's next batches."""
        budget = self.budget
        if budget is None:
            return
        cap = budget.cap
        if budget.observe(events, seconds) != cap:
            self.source.limit_batch(budget.cap)
            self.metrics.batch_cap.set(budget.cap)

    def _handle(self, consumed: ConsumedBatch) -> _InFlight:
        """Decode, score and judge ``consumed``, send its output and seal it: the batch that
        goes in flight."""
        served, topics, sink, timer = self.served, self.topics, self.sink, self.timer
        self.metrics.batch_size.observe(len(consumed))
        if isinstance(served, ServedSeries):
            return self._handle_samples(served, consumed)
        batch, rejected = served.decoder.decode(consumed)
        timer.lap("decode")
        scores = served.detector.score(batch.values)
        self.metrics.inference_seconds.observe(timer.lap("score"))
        verdict = served.threshold.apply(batch.partitions, batch.partition_index, scores.score)
        served.detector.learn(batch.values, verdict.flags)  # never from the flagged events; a no-op today
        timer.lap("threshold")

        detected_at_ms = int(time.time() * 1000)
        alerts = alert_records(batch, scores, verdict, served.detector.attribution_names,
                               detected_at_ms, served.identity)
        self._send_output(alerts, score_records(batch, scores, verdict, detected_at_ms, served.identity)
                          if topics.scores else [], rejected)
        next_offsets = consumed.next_offsets()
        states = self.ownership.states
        if states.store is not None:
            for key, value in states.records(next_offsets, served.identity.checkpoint_sha256):
                sink.send(states.store.topic, key, value)
        self.metrics.show_thresholds(batch.partitions, served.threshold.threshold)
        return _InFlight(self.guarantee.seal(next_offsets), len(consumed), consumed.first_offsets(), next_offsets,
                         len(alerts), [item.reason for item in rejected], batch.timestamps_ms)

    def _send_output(self, alerts: list[tuple[bytes, bytes]], scores: list[tuple[bytes, bytes]],
                     rejected: list[Rejected]) -> None:
        """Send a batch's alerts, score records (when a scores topic is named) and dead letters."""
        sink, topics = self.sink, self.topics
        for key, value in alerts:
            sink.send(topics.alerts, key, value)
        if topics.scores:
            for key, value in scores:
                sink.send(topics.scores, key, value)
        for item in rejected:
            sink.send(topics.dead_letter, *dead_letter_record(item, topics.max_request_bytes))

    def _handle_samples(self, served: ServedSeries, consumed: ConsumedBatch) -> _InFlight:
        """:meth:`_handle` for sample records: windows per series, scored, alerts sent."""
        metrics = self.metrics
        judged = served.judge(consumed, int(time.time() * 1000), self.topics.scores is not None)
        self.timer.lap("score")
        self._send_output(judged.alerts, judged.scores, judged.rejected)
        metrics.windows_warming.inc(judged.warming)
        metrics.series_held.set(len(served.windower.tails))
        metrics.series_evicted.inc(judged.evicted)
        next_offsets = consumed.next_offsets()
        return _InFlight(self.guarantee.seal(next_offsets), len(consumed), consumed.first_offsets(), next_offsets,
                         len(judged.alerts), [item.reason for item in judged.rejected], judged.timestamps_ms,
                         judged.take_back)

    def _restore_assigned(self, consumed: ConsumedBatch) -> bool:
        """Restore the keyed state of the newly assigned partitions. When the state cannot
        be read (the broker went away), rewind ``consumed`` and pause: its records come
        again, to be judged once the state has been read. Returns whether it was read."""
        served = self.served
        try:
            restored = self.ownership.restore(served.identity.checkpoint_sha256)
        except BrokerUnreachableError as exc:
            log.warning("saved state not read, trying again: %s", exc)
            if len(consumed):
                self.source.rewind(consumed.first_offsets())
            time.sleep(self.retry_backoff_s)
            return False
        if isinstance(served, ServedModel):
            self.metrics.show_thresholds(restored, served.threshold.threshold)
        return True

    # -- the delivery promise ----------------------------------------------------------------
    def _settle_in_flight(self, newer: _InFlight | None = None, unhandled: ConsumedBatch | None = None) -> Settled:
        """Settle the batch in flight and put ``newer`` in its place.

        Settling waits for the batch's acknowledgement (the produce stage ends here, for the
        batch whose output was just sent as for the one in flight), commits its offsets (the
        guarantee's :meth:`~.guarantee.DeliveryGuarantee.commit`) and counts it. If its
        delivery failed, nothing is committed and nothing stays in flight: the source is
        rewound to the first records of the failed batch, of ``newer`` (whose output is
        abandoned with it) and of ``unhandled`` (a batch polled but not handled yet), so
        that all of them are read again.
        """
        settling, self._in_flight = self._in_flight, newer
        if settling is not None:
            try:
                self._wait_counting_refusals(settling.delivery)
            except DeliveryError as exc:
                for handled in ([newer] if newer is not None else []) + [settling]:  # newest first
                    if handled.take_back is not None:
                        handled.take_back()
                self._read_again(exc, [settling.first_offsets, *([newer.first_offsets] if newer else []),
                                       *([unhandled.first_offsets()] if unhandled is not None else [])])
                return Settled.REWOUND
        self.timer.lap("produce")
        if settling is None:
            return Settled.NOTHING
        self._committed_async.update(self.guarantee.commit(self.ownership.owned(settling.next_offsets)))
        self.timer.lap("commit")

        metrics = self.metrics
        metrics.end_to_end_latency.observe_many(settling.delivery.acknowledged_at() - settling.timestamps_ms / 1000.0)
        metrics.events_consumed.inc(settling.records)  # counted last: a reader that sees
        metrics.events_scored.inc(len(settling.timestamps_ms))  # the counts sees the latencies
        metrics.alerts.inc(settling.alerts)
        for reason in settling.dead_letter_reasons:
            metrics.dead_lettered.labels(reason).inc()
        return Settled.COMMITTED

    def _read_again(self, failure: DeliveryError, involved: list[dict[PartitionKey, int]]) -> None:
        """A delivery failed: rewind the source to the earliest of the ``involved`` batches'
        first offsets, tell the guarantee, drop what was in flight, and back off."""
        self.metrics.delivery_failures.inc()
        log.error("batch output not acknowledged, reading the batch again: %s", failure)
        first: dict[PartitionKey, int] = {}
        for first_offsets in involved:
            for partition, offset in first_offsets.items():
                first[partition] = min(offset, first.get(partition, offset))
        self._in_flight = None
        self.source.rewind(first)
        self.guarantee.rewound(list(first))
        time.sleep(self.retry_backoff_s)

    def _wait_counting_refusals(self, delivery: Delivery) -> None:
        """Wait for ``delivery``. A failure made only of records refused for good is not
        raised (sending again cannot help): they are counted, and the first of each topic
        and reason is logged.

        Raises:
            DeliveryError: some record failed that may pass when sent again.
        """
        try:
            delivery.wait()
        except DeliveryError as exc:
            if not exc.permanent:
                raise
            for item in exc.refusals:
                self.metrics.refused_records.labels(item.topic, item.reason).inc()
                if (item.topic, item.reason) not in self._refusals_logged:
                    self._refusals_logged.add((item.topic, item.reason))
                    log.error("a record for %s was refused for good (%s) and is not sent again; later ones "
                              "are counted in stream_ae_refused_records_total: %s", item.topic, item.reason,
                              item.detail)

    def settle_before_leaving(self) -> None:
        """Settle the batch in flight, then commit every offset committed asynchronously
        again, synchronously, so that none is lost with the connection."""
        self._settle_in_flight()
        if self._committed_async:
            self.source.commit(self._committed_async)
            self._committed_async.clear()
