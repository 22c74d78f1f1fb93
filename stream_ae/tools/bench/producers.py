"""Writing the bench's records: the topic filled once, and the paced producer of the latency phases."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from stream_ae.model.datasets import LabelledDataset
from stream_ae.pipeline.codec import encode_binary, encode_event

# the producers' linger: librdkafka's default (and Apache Kafka's Java client's since 4.0).
# A record's timestamp is taken when it is handed to the producer, so the linger is part of
# the measured latency. Shorter lingers cut the stream into more, smaller record batches,
# and the local broker's fetches slow down as a partition's batches pile up (measured: at
# 27,000 events/s, fetches answered after the full fetch_max_wait_ms and empty half of the
# time with a 1 ms linger, against 3 ms and a quarter with 5 ms)
PRODUCER_LINGER_MS = 5


def encode_payloads(dataset: LabelledDataset, rows: np.ndarray, payload: str) -> list[bytes]:
    """One encoded event per row, ``<dataset>-<row>`` as id (JSON) or the binary payload."""
    window = dataset.kind == "window"
    if payload == "binary":
        return [encode_binary(dataset.values[row]) for row in rows]
    return [encode_event(dataset.values[row], dataset.feature_names, window, f"{dataset.name}-{row}")
            for row in rows]


def make_producer(bootstrap: str) -> tuple[Callable[..., None], Callable[[], object]]:
    """``(send(topic, value, key=None), flush())`` of the fastest producer installed (acks=all,
    ``linger.ms`` = :data:`PRODUCER_LINGER_MS`).

    Raises:
        RuntimeError: from ``flush``, when a record was not acknowledged.
    """
    try:
        from confluent_kafka import Producer
    except ImportError:
        from stream_ae.kafka.kafka_python.sink import KafkaSink
        from stream_ae.kafka.options import Connection

        sink = KafkaSink(Connection(bootstrap))
        return (lambda topic, value, key=None: sink.send(topic, key, value)), sink.flush
    # delivery reports for failures only: a Python callback per record would cost the
    # producer more CPU than sending it, CPU taken from the detector it is pacing
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": PRODUCER_LINGER_MS,
                         "queue.buffering.max.messages": 1_000_000, "log.connection.close": False,
                         "delivery.report.only.error": True})
    failures: list[Any] = []
    sent = iter(range(1 << 62))

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(error)

    def send(topic: str, value: bytes, key: bytes | None = None) -> None:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if next(sent) % 1000 == 0:  # serve delivery reports now and then, not per record
            producer.poll(0)

    def flush() -> None:
        if producer.flush(60) or failures:
            raise RuntimeError(f"records not acknowledged: {failures[:1] or 'timeout'}")
    return send, flush


def fill_topic(bootstrap: str, topic: str, payloads: list[bytes], events: int, progress: bool) -> float:
    """Write ``events`` records (the payloads, cycled) into ``topic``; returns events/s."""
    send, flush = make_producer(bootstrap)
    started = time.perf_counter()
    for index in tqdm(range(events), desc=f"fill {topic}", unit="event", disable=not progress,
                      mininterval=0.5):
        send(topic, payloads[index % len(payloads)])
    flush()
    return events / (time.perf_counter() - started)


def paced_produce(bootstrap: str, topic: str, payloads: list[bytes], rate_eps: float,
                   seconds: float, results: Any) -> None:
    """Child process: send ``payloads`` (cycled) at ``rate_eps`` for ``seconds``; put the count."""
    send, flush = make_producer(bootstrap)
    started = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate_eps)
        while sent < due:
            send(topic, payloads[sent % len(payloads)])
            sent += 1
        time.sleep(0.0005)
    flush()
    results.put(sent)
