"""The daemon's Prometheus metrics, in a registry of its own.

Names follow Prometheus conventions: prefix ``stream_ae_``, base units (seconds, bytes),
counters end in ``_total``. Per-event observations (end-to-end latency) are recorded a
batch at a time with :class:`BatchHistogram`, since prometheus-client's ``Histogram``
takes one value per call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

# 50 µs .. 10 s: inference on a GPU takes well under a millisecond per batch
INFERENCE_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25,
                     0.5, 1.0, 2.5, 10.0)
LATENCY_BUCKETS = (1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)


class BatchHistogram(Collector):
    """A Prometheus histogram fed whole arrays at a time; also keeps the latest samples.

    Args:
        name: metric name without the ``_bucket``/``_sum``/``_count`` suffixes.
        documentation: help text.
        buckets: upper bounds, ascending (``+Inf`` is added).
        keep: how many of the latest samples to keep for exact quantiles (a ring buffer of
            float64, so ``keep * 8`` bytes).
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...],
                 keep: int = 1 << 20) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self.counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self.total = 0.0
        self.ring = np.empty(keep, dtype=np.float64)
        self.seen = 0
        self.lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        """Record every value of a 1-D array."""
        if len(values) == 0:
            return
        slots = np.searchsorted(self.bounds, values, side="left")
        with self.lock:
            self.counts += np.bincount(slots, minlength=len(self.counts))
            self.total += float(values.sum())
            tail = values[-len(self.ring):]
            positions = (self.seen + len(values) - len(tail) + np.arange(len(tail))) % len(self.ring)
            self.ring[positions] = tail
            self.seen += len(values)

    def recent(self) -> np.ndarray:
        """A copy of the latest samples kept (up to ``keep``), in no particular order."""
        with self.lock:
            return self.ring[:min(self.seen, len(self.ring))].copy()

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self.lock:
            cumulative = np.cumsum(self.counts)
            total = self.total
        labels = [f"{bound:g}" for bound in self.bounds] + ["+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], list(zip(labels, cumulative.tolist())), total)
        yield family


class DaemonMetrics:
    """Every metric the daemon exports, in a registry of its own.

    Attributes are the prometheus-client objects; see their help strings for meanings.
    ``stage_seconds`` has one series per pipeline stage, created by the stage timer as the
    loop first times a stage, so a new stage needs no change here.

    Args:
        dead_letter_reasons: every reason a record can be dead-lettered for; each gets its
            series at zero from the start, so that a rate over it is defined.
        refusals: ``(output topics, reasons)``: every topic the daemon writes and every
            reason the broker can refuse a record for good; each pair gets its
            ``stream_ae_refused_records_total`` series at zero from the start, likewise.
    """

    def __init__(self, dead_letter_reasons: Sequence[str] = (),
                 refusals: tuple[Sequence[str], Sequence[str]] = ((), ())) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.events_consumed = Counter("stream_ae_events_consumed_total",
                                       "Records read from the input topics", registry=r)
        self.events_scored = Counter("stream_ae_events_scored_total",
                                     "Events decoded and scored by the detector", registry=r)
        self.alerts = Counter("stream_ae_alerts_total",
                              "Events flagged as anomalies and published to the alerts topic",
                              registry=r)
        self.dead_lettered = Counter("stream_ae_dead_lettered_total",
                                     "Records sent to the dead-letter topic, by reason",
                                     ["reason"], registry=r)
        for reason in dead_letter_reasons:
            self.dead_lettered.labels(reason)
        self.batch_size = Histogram("stream_ae_batch_size_events", "Records per micro-batch",
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_cap = Gauge("stream_ae_batch_cap_events",
                               "Largest next micro-batch: consumer.max_batch_size, or fewer events "
                               "where handling them would exceed consumer.batch_budget_ms", registry=r)
        self.inference_seconds = Histogram("stream_ae_inference_seconds",
                                           "Detector time per micro-batch (scaler, forward, score)",
                                           buckets=INFERENCE_BUCKETS, registry=r)
        self.stage_seconds = Counter("stream_ae_stage_seconds_total",
                                     "Time spent in each pipeline stage", ["stage"], registry=r)
        self.end_to_end_latency = BatchHistogram(
            "stream_ae_end_to_end_latency_seconds",
            "Record timestamp to the acknowledgement of the batch's alerts, per event",
            LATENCY_BUCKETS)
        r.register(self.end_to_end_latency)
        self.threshold = Gauge("stream_ae_threshold", "Anomaly-score threshold in force",
                               ["topic", "partition"], registry=r)
        self.consumer_lag = Gauge("stream_ae_consumer_lag_events",
                                  "High watermark minus the consumer's position",
                                  ["topic", "partition"], registry=r)
        self.delivery_failures = Counter("stream_ae_delivery_failures_total",
                                         "Batches whose output the broker did not acknowledge "
                                         "(re-read, not committed)", registry=r)
        self.refused_records = Counter("stream_ae_refused_records_total",
                                       "Records the broker or the client refused for good (too large, "
                                       "not authorised), by topic and reason: counted, not sent again",
                                       ["topic", "reason"], registry=r)
        for topic in refusals[0]:
            for reason in refusals[1]:
                self.refused_records.labels(topic, reason)
        self.reconnects = Counter("stream_ae_broker_reconnects_total",
                                  "Times the broker connection came back after being lost",
                                  registry=r)
        self.model_reloads = Counter("stream_ae_model_reloads_total",
                                     "Checkpoint swaps, by result (loaded, refused)", ["result"],
                                     registry=r)
        for result in ("loaded", "refused"):
            self.model_reloads.labels(result)
        self.model_info = Gauge("stream_ae_model_info", "The model being served (value 1)",
                                ["model", "checkpoint_sha256"], registry=r)
        self.series_held = Gauge("stream_ae_series_held", "Series keys whose windows and fitted state "
                                 "are held (sample streams)", registry=r)
        self.series_evicted = Counter("stream_ae_series_evicted_total", "Series evicted, least recently seen "
                                      "first, beyond samples.max_series", registry=r)
        self.windows_warming = Counter("stream_ae_windows_warming_total", "Windows cut but not scored: their "
                                       "series was still in its warm-up", registry=r)

    def show_thresholds(self, partitions: Iterable[tuple[str, int]],
                        threshold_of: Callable[[tuple[str, int]], float]) -> None:
        """Set the threshold gauge of each ``(topic, partition)`` to ``threshold_of(partition)``
        (reconstruction-error units)."""
        for topic, partition in partitions:
            self.threshold.labels(topic, str(partition)).set(threshold_of((topic, partition)))

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop the per-partition series (threshold, lag) of partitions no longer owned."""
        for topic, partition in partitions:
            for gauge in (self.threshold, self.consumer_lag):
                with contextlib.suppress(KeyError):  # never set for this partition
                    gauge.remove(topic, str(partition))

    def show_model(self, name: str, checkpoint_sha256: str) -> None:
        """Make ``stream_ae_model_info`` name the model in service (and no other)."""
        self.model_info.clear()
        self.model_info.labels(name, checkpoint_sha256).set(1)

    def stage_totals(self) -> dict[str, float]:
        """Seconds spent in each stage so far, in the order the loop first timed them."""
        return {labels[0][1]: value for labels, value in counter_values(self.stage_seconds).items()}

    def totals(self) -> dict[str, int]:
        """Running totals: ``events_in``, ``events_scored``, ``dead_lettered``, ``alerts``.

        Reads each counter alone (walking the whole registry, process metrics included, costs
        milliseconds of the loop's GIL per call).
        """
        return {
            "events_in": int(counter_values(self.events_consumed)[()]),
            "events_scored": int(counter_values(self.events_scored)[()]),
            "dead_lettered": int(sum(counter_values(self.dead_lettered).values())),
            "alerts": int(counter_values(self.alerts)[()]),
        }


def counter_values(counter: Counter) -> dict[tuple[tuple[str, str], ...], float]:
    """A counter's ``_total`` values keyed by its sorted label pairs (``()`` without labels)."""
    return {tuple(sorted(sample.labels.items())): sample.value
            for family in counter.collect() for sample in family.samples
            if sample.name.endswith("_total")}


