"""``stream-ae nab --stream``: NAB's series through Kafka and the daemon, as users run it.

Every series is produced into an input topic as sample records keyed by the series' name
(one row a record, or chunks of rows: :func:`stream_ae.tools.nab.chunks`, JSON or binary),
the series interleaved record by record as many sources would send them. A detector
(:class:`~stream_ae.service.daemon.Daemon`, ``events.kind: samples``, each series warming
up on its probationary period through ``samples.warmup_of``) reads them in its consumer
group and writes a score record per window to a scores topic; the scores are read back
into rows by their ``series`` and ``series_sample`` fields.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import orjson
from tqdm.auto import tqdm

from stream_ae.kafka.local_broker import local_or_given
from stream_ae.kafka.topics import ensure_topics, read_topic
from stream_ae.model.series import SeriesSettings
from stream_ae.pipeline.samples import encode_samples, encode_samples_json
from stream_ae.service.config import Settings, load_settings
from stream_ae.tools.bench.producers import make_producer
from stream_ae.tools.daemon_thread import DaemonThread
from stream_ae.tools.nab import Series, chunks, probations

INPUT_PARTITIONS = 4


@dataclass(frozen=True)
class Streamed:
    """What a streamed run gave.

    Attributes:
        scores: per series, float64 ``(n,)`` row scores (0 where none), as :func:`~stream_ae.tools.nab.detect`.
        records: sample records produced.
        windows_scored: score records read back.
        seconds: from the detector's start to its last record consumed.
    """

    scores: list[np.ndarray]
    records: int
    windows_scored: int
    seconds: float


def _records(corpus: Sequence[Series], chunk_rows: int, binary: bool) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of every record, the series interleaved record by record."""
    per_series = []
    for series in corpus:
        cut = chunks(series, chunk_rows)
        key = series.name.encode()
        values = series.values
        per_series.append([(key, encode_samples(values[start:start + count], first, step) if binary
                            else encode_samples_json(values[start:start + count], first, step))
                           for start, count, first, step in zip(cut.starts.tolist(), cut.counts.tolist(),
                                                                cut.first_ms.tolist(), cut.interval_ms.tolist())])
    most = max(map(len, per_series), default=0)
    return [one[n] for n in range(most) for one in per_series if n < len(one)]


def _settings(bootstrap: str, run: str, corpus: Sequence[Series], detector: SeriesSettings) -> Settings:
    return load_settings(
        kafka={"bootstrap_servers": bootstrap},
        topics={"input": [f"nab-{run}"], "alerts": f"nab-{run}-alerts", "dead_letter": f"nab-{run}-dead",
                "scores": f"nab-{run}-scores"},
        consumer={"group_id": f"nab-{run}", "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
                  "max_wait_ms": 50, "fetch_max_wait_ms": 20},
        events={"kind": "samples"},
        samples={**asdict(detector), "max_series": max(len(corpus), 1), "warmup_of": probations(corpus)},
        metrics={"enabled": False},
    )


def stream(corpus: Sequence[Series], bootstrap: str | None = None, chunk_rows: int = 1, binary: bool = False,
           settings: SeriesSettings | None = None, progress: bool = True, timeout_s: float = 1800.0) -> Streamed:
    """Produce the corpus as sample records, run the daemon over them, read its scores back.

    Args:
        corpus: the series.
        bootstrap: a cluster's bootstrap servers; None starts the local broker.
        chunk_rows: rows per record (1: one sample a record).
        binary: the binary payload instead of JSON.
        settings: the detector's settings (default: :class:`SeriesSettings`'s).
        progress: progress bars on stderr.
        timeout_s: longest wait for the detector, and for the scores to be read back.

    Raises:
        RuntimeError: a record was dead-lettered, or fewer score records came back than windows scored.
        TimeoutError: the detector did not consume every record in time.
    """
    detector = settings or SeriesSettings()
    run = uuid.uuid4().hex[:8]
    with local_or_given(bootstrap) as broker:
        config = _settings(broker.bootstrap_servers, run, corpus, detector)
        connection = config.kafka.connection()
        ensure_topics(connection, {config.topics.input[0]: INPUT_PARTITIONS, config.topics.alerts: 1,
                                   config.topics.dead_letter: 1, str(config.topics.scores): 1})
        records = _records(corpus, chunk_rows, binary)
        send, flush = make_producer(broker.bootstrap_servers)
        for key, value in tqdm(records, desc="produce", unit="record", disable=not progress, mininterval=0.5):
            send(config.topics.input[0], value, key)
        flush()
        with DaemonThread(config) as running:
            totals = running.daemon.metrics.totals
            started = time.perf_counter()
            running.wait_for(lambda: totals()["events_in"] >= len(records), timeout_s, f"{len(records)} records")
            seconds = time.perf_counter() - started
            counted = totals()
        if counted["dead_lettered"]:
            raise RuntimeError(f"{counted['dead_lettered']} records were dead-lettered")
        read = read_topic(connection, str(config.topics.scores), counted["events_scored"], timeout_s)
    if len(read) < counted["events_scored"]:
        raise RuntimeError(f"{len(read)} score records read back of {counted['events_scored']} windows scored")
    row_of = {series.name: n for n, series in enumerate(corpus)}
    scores = [np.zeros(len(series.values)) for series in corpus]
    for record in read:
        value = orjson.loads(record.value)
        scores[row_of[value["series"]]][value["series_sample"]] = value["score"]
    return Streamed(scores, len(records), len(read), seconds)

