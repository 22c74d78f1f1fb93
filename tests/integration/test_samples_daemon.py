"""Sample streams through the daemon, against a real broker on 127.0.0.1: records of keyed
series in (one sample, or chunks, JSON and binary), windows per series, alerts per window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from stream_ae.kafka.records import ConsumedBatch
from stream_ae.kafka.topics import ensure_topics, read_topic
from stream_ae.pipeline.alerts import REASON_HEADER
from stream_ae.pipeline.samples import encode_samples, encode_samples_json
from stream_ae.service.daemon import served_series
from stream_ae.tools.daemon_thread import DaemonThread
from tests.helpers import FakeRecord, detector_settings, produce, read_json

pytestmark = pytest.mark.integration

SAMPLES = 400
SPIKE = 300
START_MS = 1_700_000_000_000.0
INTERVAL_MS = 1000.0


def series_values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    out = {}
    for k, (name, scale) in enumerate([("host-a", 1.0), ("host-b", 500.0), ("pump-c", 0.01)]):
        values = scale * (np.sin(np.arange(SAMPLES) / (4 + k)) + rng.normal(0, 0.02, SAMPLES))
        out[name] = values
    out["host-b"][SPIKE] += 4 * 500.0
    return out


def records(values: dict[str, np.ndarray]) -> list[tuple[bytes, bytes]]:
    """host-a one JSON sample a record; host-b binary chunks of 10; pump-c JSON chunks of 7;
    the series interleaved chunk by chunk."""
    out: list[list[tuple[bytes, bytes]]] = []
    for name, size in (("host-a", 1), ("host-b", 10), ("pump-c", 7)):
        series = []
        for start in range(0, SAMPLES, size):
            chunk, first = values[name][start:start + size], START_MS + start * INTERVAL_MS
            value = (encode_samples(chunk, first, INTERVAL_MS) if name == "host-b"
                     else encode_samples_json(chunk, first, INTERVAL_MS))
            series.append((name.encode(), value))
        out.append(series)
    return [record for group in zip(*[s + [None] * (SAMPLES - len(s)) for s in out]) for record in group if record]


def test_sample_records_are_windowed_per_series_and_alerts_name_series_span_and_samples(broker, topic_names):
    settings = detector_settings(broker, topic_names, Path("unused.pt"), events={"kind": "samples"},
                                 samples={"length": 4, "warmup": 100, "history": 1000, "quiet_share": 0.2})
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: 2})
    values = series_values()
    good = records(values)
    bad = [(b"host-a", b'{"value": NaN}'), (b"host-a", b'{"value": [1, 2]}'), (None, b'{"value": 1}'),
           (b"host-b", encode_samples(np.array([1.0]), START_MS))]           # before host-b's last sample
    produce(settings, topic, [value for _, value in good + bad], [key for key, _ in good + bad])

    with DaemonThread(settings) as running:
        totals = running.daemon.metrics.totals
        running.wait_for(lambda: totals()["events_in"] >= len(good) + len(bad), 90, "every record consumed")
        metrics = running.daemon.metrics
        held, warming = metrics.series_held._value.get(), metrics.windows_warming._value.get()

    scored = 3 * (SAMPLES - 100)
    assert totals()["events_scored"] == scored and held == 3
    assert warming == 3 * (100 - 4 + 1), "the windows that end in a series' warm-up are not scored"
    dead = read_topic(settings.kafka.connection(), settings.topics.dead_letter, len(bad))
    assert sorted(dict(r.headers)[REASON_HEADER].decode() for r in dead) == sorted(
        ["non_finite", "wrong_channel_count", "missing_series", "timestamp_backwards"])

    scores = read_json(settings, settings.topics.scores, scored)
    assert len({s["_key"] for s in scores}) == scored, "one score record per window, keys unique"
    alerts = read_json(settings, settings.topics.alerts, totals()["alerts"])
    spike_alerts = [a for a in alerts if a["series"] == "host-b"
                    and a["first_timestamp_ms"] <= START_MS + SPIKE * INTERVAL_MS <= a["last_timestamp_ms"]]
    assert len(spike_alerts) == 1, alerts
    alert = spike_alerts[0]
    assert alert["_key"] == alert["key"] == f"{topic}-{alert['partition']}-{alert['offset']}-{alert['sample']}"
    assert alert["last_timestamp_ms"] - alert["first_timestamp_ms"] == 3 * INTERVAL_MS
    assert alert["score"] >= settings.samples.flag_level and alert["model"] == "series-bank"
    top = alert["top_samples"][0]
    assert top["timestamp_ms"] == START_MS + SPIKE * INTERVAL_MS and top["deviation"] > 3
    assert top["value"] == pytest.approx(values["host-b"][SPIKE], rel=1e-6)

    # streamed equals in-process: the same records through the same stages, one batch
    served = served_series(settings)
    consumed = ConsumedBatch.from_records([FakeRecord(value, key=key, offset=n) for n, (key, value) in enumerate(good)])
    judged = served.judge(consumed, 0, True)
    in_process = {(v := orjson.loads(value))["series"] + f"@{v['last_timestamp_ms']}": v["score"]
                  for _, value in judged.scores}
    streamed = {s["series"] + f"@{s['last_timestamp_ms']}": s["score"] for s in scores}
    assert len(in_process) == scored and streamed == in_process
