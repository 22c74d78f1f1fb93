"""Sample streams in the daemon: records of keyed series in, alerts per window out.

For ``events.kind: samples`` the loop hands each micro-batch to :class:`ServedSeries`, which
runs the stages in order: decode the sample records (:mod:`.samples`), cut windows per
series (:mod:`.windows`), score them against each series' own fitted state
(:mod:`stream_ae.model.series`), and write an alert for every window whose score reaches
``flag_level``. A record the decoder refuses, or one that starts before its series' last
sample, is dead-lettered with the reason.

Alert value (JSON), keyed ``topic-partition-offset-sample`` (the record that completed the
window and the index of the window's last sample in it: unique per window, even when one
chunk completes several)::

    {"key": "metrics-0-1234-7", "topic": "metrics", "partition": 0, "offset": 1234, "sample": 7,
     "series": "host-1/cpu", "series_sample": 8641, "first_timestamp_ms": 1700000000000.0,
     "last_timestamp_ms": 1700000001000.0, "detected_at_ms": 1700000001042, "score": 0.9991, "flag_level": 0.9965,
     "model": "series-bank", "checkpoint_sha256": "<sha256 of the detector's settings>",
     "top_samples": [{"index": 1, "channel": 0, "timestamp_ms": 1700000001000.0, "value": 97.5,
                      "deviation": 8.1}, ...]}

``series_sample`` is the index of the window's last sample in its series (0-based, counted
from the series' first sample this process saw). ``top_samples`` are the window's samples
farthest from the nearest warm-up window, in the series' standard deviations
(``deviation``, signed); their times are interpolated between the window's first and last.
A score record (optional scores topic) carries the same fields but ``top_samples``, and
adds ``"anomaly": true|false``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
import orjson

from stream_ae.kafka.records import ConsumedBatch
from stream_ae.model.series import SeriesDetector, SeriesSettings
from stream_ae.pipeline.alerts import ModelIdentity, finite, record_key
from stream_ae.pipeline.codec import Rejected
from stream_ae.pipeline.samples import SampleBatch, SampleDecoder
from stream_ae.pipeline.windows import SeriesWindower, Windows

MODEL_NAME = "series-bank"
TOP_SAMPLES = 3


@dataclass(frozen=True)
class SeriesOptions:
    """How sample streams are served: the ``samples`` and ``events`` settings as plain values.

    Attributes:
        detector: the per-series detector's settings.
        channels, series_field, max_record_bytes: the decoder's.
        stride, max_series: the windower's (the window length is the detector's).
        warmup_of: per series key, a warm-up that replaces the detector's.
    """

    detector: SeriesSettings
    channels: int = 1
    series_field: str | None = None
    max_record_bytes: int = 1_000_000
    stride: int = 1
    max_series: int = 100_000
    warmup_of: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Judged:
    """One micro-batch of sample records, judged.

    Attributes:
        alerts, scores: ``(key, value)`` records for the alerts and the scores topics.
        rejected: the records dead-lettered, with their reasons.
        timestamps_ms: int64 ``(windows scored,)`` the timestamp of the record that completed
            each scored window (for the end-to-end latency).
        warming: windows cut but not scored (their series still warming up).
        evicted: series evicted by this batch (beyond ``max_series``).
        take_back: leaves every series as it was before this batch (and before any batch
            judged after it, taken back first): for a batch that will be read again.
    """

    alerts: list[tuple[bytes, bytes]]
    scores: list[tuple[bytes, bytes]]
    rejected: list[Rejected]
    timestamps_ms: np.ndarray
    warming: int
    evicted: int
    take_back: Callable[[], None]


def _take_back(undo: list[Callable[[], object]]) -> None:
    """Call a batch's undo log in reverse order, once."""
    while undo:
        undo.pop()()


class ServedSeries:
    """The sample-stream stages, as the loop serves them in place of a checkpoint.

    Args:
        options: how the streams are served.
    """

    def __init__(self, options: SeriesOptions) -> None:
        self.options = options
        self.decoder = SampleDecoder(options.channels, options.series_field, options.max_record_bytes)
        self.detector = SeriesDetector(options.detector, options.warmup_of)
        self.windower = SeriesWindower(options.detector.length, options.stride, options.channels, options.max_series,
                                       on_evict=self.detector.forget)
        digest = hashlib.sha256(orjson.dumps(asdict(options), option=orjson.OPT_SORT_KEYS)).hexdigest()
        self.identity = ModelIdentity(MODEL_NAME, digest)

    def judge(self, consumed: ConsumedBatch, detected_at_ms: int, with_scores: bool) -> Judged:
        """Decode, window, score and judge a micro-batch.

        Args:
            consumed: the micro-batch.
            detected_at_ms: the time alerts carry, ms since the epoch.
            with_scores: also build a score record for every scored window.
        """
        samples, rejected = self.decoder.decode(consumed)
        evicted = self.windower.evicted
        undo: list[Callable[[], object]] = []
        self.detector.undo = undo
        try:
            windows, backwards = self.windower.cut(samples, undo)
            scores, scored = self.detector.score(windows.values, windows.series, windows.series_index,
                                                 windows.end_sample, windows.last_ms)
            alerts, score_records = self._records(samples, windows, scores, scored, detected_at_ms, with_scores)
            self.windower.evict(undo)  # after the alerts, which read the fitted state of their series
        finally:
            self.detector.undo = None
        for record, detail in backwards:
            rejected.append(Rejected(consumed.record(int(samples.positions[record])), "timestamp_backwards", detail))
        timestamps = consumed.timestamps_ms[samples.positions[windows.record[scored]]]
        return Judged(alerts, score_records, rejected, timestamps, int((~scored).sum()),
                      self.windower.evicted - evicted, partial(_take_back, undo))

    def _records(self, samples: SampleBatch, windows: Windows, scores: np.ndarray, scored: np.ndarray,
                 detected_at_ms: int, with_scores: bool
                 ) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
        """``(alerts, score records)`` of a batch's windows."""
        flags = scored & (scores >= self.options.detector.flag_level)
        fields = self._fields(samples, windows, scores, np.flatnonzero(flags if not with_scores else scored),
                              detected_at_ms)
        alerts, score_records = [], []
        for row, value in fields.items():
            if flags[row]:
                alert = dict(value, top_samples=self._top_samples(windows, row))
                alerts.append((alert["key"].encode(), orjson.dumps(alert)))
            if with_scores:
                value["anomaly"] = bool(flags[row])
                score_records.append((value["key"].encode(), orjson.dumps(value)))
        return alerts, score_records

    def _fields(self, samples: SampleBatch, windows: Windows, scores: np.ndarray, rows: np.ndarray,
                detected_at_ms: int) -> dict[int, dict]:
        """The fields alerts and score records share, per window row of ``rows``."""
        out = {}
        for row in rows.tolist():
            record = int(windows.record[row])
            topic, partition = samples.partitions[int(samples.partition_index[record])]
            offset, sample = int(samples.offsets[record]), int(windows.sample_in_record[row])
            out[row] = {"key": f"{record_key(topic, partition, offset)}-{sample}", "topic": topic,
                        "partition": partition, "offset": offset, "sample": sample,
                        "series": windows.series[int(windows.series_index[row])],
                        "series_sample": int(windows.end_sample[row]),
                        "first_timestamp_ms": float(windows.first_ms[row]),
                        "last_timestamp_ms": float(windows.last_ms[row]), "detected_at_ms": detected_at_ms,
                        "score": float(scores[row]), "flag_level": self.options.detector.flag_level,
                        "model": self.identity.name, "checkpoint_sha256": self.identity.checkpoint_sha256}
        return out

    def _top_samples(self, windows: Windows, row: int) -> list[dict]:
        """The window's samples farthest from the nearest warm-up window (see the module docstring)."""
        series = windows.series[int(windows.series_index[row])]
        window = windows.values[row]                                   # (length, channels)
        deviation = self.detector.deviations(series, window[None])[0]
        length, channels = window.shape
        top = np.argsort(-np.abs(deviation), axis=None, kind="stable")[:TOP_SAMPLES]
        step = (windows.last_ms[row] - windows.first_ms[row]) / max(length - 1, 1)
        out = []
        for flat in top.tolist():
            index, channel = divmod(flat, channels)
            out.append({"index": index, "channel": channel,
                        "timestamp_ms": float(windows.first_ms[row] + index * step),
                        "value": finite(window[index, channel]), "deviation": finite(deviation[index, channel])})
        return out
