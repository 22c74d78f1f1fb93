"""Sample streams: the daemon's rate on sample records, in the same run as the transaction path.

Two loads, each a topic filled with keyed sample records and drained by one detector
(``events.kind: samples``, kafka-python, the per-series detector's defaults but a warm-up
of :data:`WARMUP` samples, so that most windows are scored):

* **metrics**: :data:`METRIC_SERIES` series, one JSON sample a record (``{"value": x}``),
  the series taking turns, as many exporters at 1 sample/s would send them;
* **ECG-like**: :data:`ECG_SOURCES` sources at 360 Hz, binary chunks of
  :data:`ECG_CHUNK` samples (0.1 s), windows of :data:`ECG_WINDOW` samples every
  :data:`ECG_STRIDE`.

The rate is records/s from the end of the detector's first batch to its last record;
samples/s and windows/s follow (windows cut, scored or warming). What one process keeps up
with: metric series at 1 sample/s = samples/s; 360 Hz sources = samples/s / 360.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from stream_ae.kafka.topics import ensure_topics
from stream_ae.pipeline.samples import encode_samples, encode_samples_json
from stream_ae.service.config import Settings
from stream_ae.telemetry.metrics import counter_values
from stream_ae.tools.bench.producers import make_producer
from stream_ae.tools.daemon_thread import DaemonThread

WARMUP = 20
METRIC_SERIES = 1_000
ECG_SOURCES = 20
ECG_RATE_HZ = 360.0
ECG_CHUNK = 36
ECG_WINDOW = 90
ECG_STRIDE = 45


def metric_records(samples: int, seed: int = 0) -> tuple[list[bytes], list[bytes]]:
    """``(keys, values)``: ``samples`` JSON records of one sample, :data:`METRIC_SERIES`
    series taking turns, each a noisy daily-like wave of its own scale."""
    rng = np.random.default_rng(seed)
    scales = rng.uniform(1, 1000, METRIC_SERIES)
    steps = np.arange(samples)
    series = steps % METRIC_SERIES
    values = scales[series] * (np.sin(steps // METRIC_SERIES / 20) + rng.normal(0, 0.05, samples))
    keys = [f"host-{n}".encode() for n in range(METRIC_SERIES)]
    return [keys[n] for n in series.tolist()], [encode_samples_json(np.array([v])) for v in values.tolist()]


def ecg_records(chunks: int, seed: int = 1) -> tuple[list[bytes], list[bytes]]:
    """``(keys, values)``: ``chunks`` binary chunks of :data:`ECG_CHUNK` samples at 360 Hz,
    :data:`ECG_SOURCES` sources taking turns, each a beat-like wave with noise."""
    rng = np.random.default_rng(seed)
    keys = [f"patient-{n}".encode() for n in range(ECG_SOURCES)]
    out_keys, out_values = [], []
    interval = 1000.0 / ECG_RATE_HZ
    for n in range(chunks):
        source, index = n % ECG_SOURCES, n // ECG_SOURCES
        t = np.arange(index * ECG_CHUNK, (index + 1) * ECG_CHUNK)
        wave = np.sin(2 * np.pi * t / ECG_RATE_HZ) ** 15 + rng.normal(0, 0.02, ECG_CHUNK)
        out_keys.append(keys[source])
        out_values.append(encode_samples(wave, 1.7e12 + t[0] * interval, interval))
    return out_keys, out_values


def drain(settings: Settings, records: int, progress: bool) -> tuple[float, float]:
    """Records/s and windows/s of one detector over the ``records`` of its input topic."""
    with DaemonThread(settings) as running:
        metrics = running.daemon.metrics
        totals = metrics.totals

        def windows() -> float:
            return counter_values(metrics.events_scored)[()] + counter_values(metrics.windows_warming)[()]

        running.wait_for(lambda: totals()["events_in"] > 0, 120, "the first batch")
        first_at, first_in, first_windows = time.perf_counter(), totals()["events_in"], windows()
        running.wait_for(lambda: totals()["events_in"] >= records, 600, f"{records} sample records")
        seconds = time.perf_counter() - first_at
        if progress:
            print(f"sample records: {records:,} in {seconds:.1f} s after the first batch", flush=True)
        return (totals()["events_in"] - first_in) / seconds, (windows() - first_windows) / seconds


def sample_streams(settings: Settings, records: int, progress: bool) -> dict[str, Any]:
    """Fill a topic per load and drain it (see the module docstring).

    Args:
        settings: a detector's settings on the bench's cluster (its input topic is replaced).
        records: records per load.
        progress: print a line per load.

    Returns:
        Per load (``metrics``, ``ecg``): ``records_per_s``, ``samples_per_s``,
        ``windows_per_s``, ``samples_per_record``, and what one process keeps up with
        (``series_at_1hz`` or ``sources_at_360hz``).
    """
    out: dict[str, Any] = {}
    bootstrap = settings.kafka.bootstrap_servers
    loads = {"metrics": (metric_records(records), 1, {"warmup": WARMUP}),
             "ecg": (ecg_records(records), ECG_CHUNK,
                     {"warmup": 4 * ECG_WINDOW, "length": ECG_WINDOW, "stride": ECG_STRIDE})}
    for name, ((keys, values), per_record, samples) in loads.items():
        topic = f"{settings.topics.input[0]}-{name}"
        ensure_topics(settings.kafka.connection(), {topic: 4})
        send, flush = make_producer(bootstrap)
        for key, value in zip(keys, values):
            send(topic, value, key)
        flush()
        detector = settings.model_copy(update={
            "topics": settings.topics.model_copy(update={"input": [topic]}),
            "consumer": settings.consumer.model_copy(update={"group_id": f"{topic}-detector"}),
            "events": settings.events.model_copy(update={"kind": "samples"}),
            "samples": settings.samples.model_copy(update=samples)})
        records_per_s, windows_per_s = drain(detector, len(values), progress)
        figures = {"records_per_s": records_per_s, "samples_per_record": per_record,
                   "samples_per_s": records_per_s * per_record, "windows_per_s": windows_per_s}
        figures["series_at_1hz" if name == "metrics" else "sources_at_360hz"] = (
            figures["samples_per_s"] / (1.0 if name == "metrics" else ECG_RATE_HZ))
        out[name] = figures
    return out
