"""End-to-end latency of events appended at a given rate by a producer in another process."""

from __future__ import annotations

import multiprocessing

import numpy as np

from stream_ae.telemetry.metrics import LATENCY_BUCKETS, BatchHistogram
from stream_ae.tools.bench.producers import paced_produce
from stream_ae.tools.bench.throughput import events_scored
from stream_ae.tools.daemon_thread import DaemonThread

LOAD_LEVELS = (0.5, 0.9)


FIXED_RATE_EPS = 2000.0  # the demo's replay rate: latency where the machine is far from saturated


def measure_latency(running: DaemonThread, bootstrap: str, topic: str, payloads: list[bytes],
             rate_eps: float, seconds: float) -> dict[str, float]:
    """p50/p95/p99 end-to-end latency (seconds) of events appended at ``rate_eps`` by a
    producer in another process, as the detector measures it."""
    samples = BatchHistogram("stream_ae_bench_latency_seconds", "bench phase", LATENCY_BUCKETS)
    before = events_scored(running)
    running.daemon.metrics.end_to_end_latency = samples
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    producer = context.Process(target=paced_produce, name="bench-producer",
                               args=(bootstrap, topic, payloads, rate_eps, seconds, results))
    producer.start()
    try:
        sent = results.get(timeout=seconds + 120)
    finally:
        producer.join(30)
    running.wait_for(lambda: events_scored(running) >= before + sent, 120, "the paced events to be scored")
    latencies = samples.recent()
    if len(latencies) == 0:
        raise RuntimeError(f"bench: no latency samples at {rate_eps:.0f} events/s ({sent} sent)")
    p50, p95, p99 = np.quantile(latencies, [0.5, 0.95, 0.99])
    return {"rate_eps": rate_eps, "events": int(sent), "p50_s": float(p50), "p95_s": float(p95),
            "p99_s": float(p99)}
