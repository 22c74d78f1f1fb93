"""Producing a dataset's rows into a topic as events, at a given rate, labels in a header."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from stream_ae.kafka.kafka_python.sink import KafkaSink
from stream_ae.kafka.options import Connection
from stream_ae.model.datasets import LabelledDataset
from stream_ae.pipeline.codec import encode_binary, encode_event

LABEL_HEADER = "label"
FLUSH_EVERY = 10_000  # events between waits for acknowledgements, bounding memory


def event_id(dataset: LabelledDataset, row: int) -> str:
    """The id a replayed row carries: ``<dataset name>-<row index>``."""
    return f"{dataset.name}-{row}"


@dataclass(frozen=True)
class ReplayReport:
    """What a replay sent: events and wall time in seconds."""

    events: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        """Events sent per second of wall time."""
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def replay(dataset: LabelledDataset, rows: np.ndarray, connection: Connection, topic: str,
           rate_eps: float | None = None, progress: bool = True,
           payload_format: str = "json") -> ReplayReport:
    """Produce the given rows of ``dataset`` into ``topic`` as events.

    Each record is keyed by the event id, carries the row's label (``0``/``1``) in the
    ``label`` header, never in the payload, and is acknowledged by the broker before this
    returns.

    Args:
        dataset: the rows' source.
        rows: int ``(events,)`` row indices, in the order to send.
        connection: how to reach the cluster.
        topic: target topic.
        rate_eps: events per second; None sends as fast as the producer can.
        progress: show a progress bar on stderr.
        payload_format: ``json`` (with the id field) or ``binary`` (the compact float32
            payload of :mod:`stream_ae.pipeline.codec`; the id travels only as the record key).

    Raises:
        DeliveryError: the broker refused or did not acknowledge some records.
        ValueError: an unknown ``payload_format``.
    """
    if payload_format not in ("json", "binary"):
        raise ValueError(f"payload format must be json or binary, not {payload_format!r}")
    sink = KafkaSink(connection, topics=[topic])
    window = dataset.kind == "window"
    labels = dataset.labels if dataset.labels is not None else np.zeros(len(dataset.values), np.int8)
    started = time.perf_counter()
    try:
        for sent, row in enumerate(tqdm(rows.tolist(), desc=f"replay → {topic}", unit="event",
                                        disable=not progress)):
            if rate_eps:
                ahead = started + sent / rate_eps - time.perf_counter()
                if ahead > 0.001:
                    time.sleep(ahead)
            identity = event_id(dataset, row)
            value = (encode_binary(dataset.values[row]) if payload_format == "binary"
                     else encode_event(dataset.values[row], dataset.feature_names, window, identity))
            sink.send(topic, identity.encode(), value,
                      [(LABEL_HEADER, b"1" if labels[row] else b"0")])
            if (sent + 1) % FLUSH_EVERY == 0:
                sink.flush()
        sink.flush()
    finally:
        sink.close()
    return ReplayReport(len(rows), time.perf_counter() - started)
