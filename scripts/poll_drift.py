#!/usr/bin/env python3
"""Does the detector's poll slow down over a long run? Per-window figures of one steady run.

A detector (in this process, as ``stream-ae bench`` runs it) reads a 4-partition topic that
a paced producer in another process appends to at a steady rate (librdkafka, 5 ms linger:
the bench's paced producer). Every ``--window`` seconds the script prints the window's
batches, events scored, milliseconds per batch in the poll and in all the other stages
together (from ``stream_ae_stage_seconds_total``), and the end-to-end latency p50/p99 of
the window's events (the detector's own measure). A poll that grows while the other stages
stay flat is the broker's fetches slowing down as the log grows.

    python scripts/poll_drift.py --broker apache --seconds 240   # Apache Kafka 4.4, one node
    python scripts/poll_drift.py --broker tansu --seconds 240    # the demo's Tansu
    python scripts/poll_drift.py --bootstrap-servers host:9092   # a broker of your own
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stream_ae.kafka.local_broker import LocalBroker  # noqa: E402
from stream_ae.kafka.topics import ensure_topics  # noqa: E402
from stream_ae.model.checkpoint import save_checkpoint  # noqa: E402
from stream_ae.model.datasets import synthetic_transactions  # noqa: E402
from stream_ae.model.training import TrainingOptions, train_autoencoder  # noqa: E402
from stream_ae.telemetry.metrics import LATENCY_BUCKETS, BatchHistogram  # noqa: E402
from stream_ae.tools.bench.options import BenchOptions, BenchTopics, detector_settings  # noqa: E402
from stream_ae.tools.bench.producers import encode_payloads, paced_produce  # noqa: E402
from stream_ae.tools.daemon_thread import DaemonThread  # noqa: E402
from tests.apache_kafka import JVM_OPTIONS_FULL_JIT, ApacheKafka  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", choices=["tansu", "apache"], default="apache",
                        help="the broker to start (default: apache); ignored with --bootstrap-servers")
    parser.add_argument("--bootstrap-servers", help="a running broker instead of starting one")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=240.0, help="length of the run (default: %(default)s)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds per printed row (default: %(default)s)")
    parser.add_argument("--client", choices=["kafka-python", "confluent-kafka"], default="kafka-python")
    parser.add_argument("--format", choices=["json", "binary"], default="json", help="payload (default: json)")
    args = parser.parse_args(argv)

    dataset = synthetic_transactions()
    checkpoint = train_autoencoder(dataset, TrainingOptions(epochs=3, seed=7, device="cpu", progress=False))
    payloads = encode_payloads(dataset, np.arange(20_000), args.format)
    run = uuid.uuid4().hex[:8]
    topics = BenchTopics(f"drift-{run}", f"drift-{run}-alerts", f"drift-{run}-dead", f"drift-{run}-state")
    if args.bootstrap_servers:
        broker: contextlib.AbstractContextManager = contextlib.nullcontext()
    elif args.broker == "apache":
        broker = ApacheKafka(jvm_options=JVM_OPTIONS_FULL_JIT)
    else:
        broker = LocalBroker()
    with tempfile.TemporaryDirectory(prefix="stream-ae-drift-") as workdir, broker as started:
        bootstrap = args.bootstrap_servers or started.bootstrap_servers
        path = Path(workdir) / "model.pt"
        save_checkpoint(checkpoint, path)
        settings = detector_settings(BenchOptions(device="cpu"), bootstrap, topics, args.client, f"drift-{run}", path)
        ensure_topics(settings.kafka.connection(), {topics.input: 4, topics.alerts: 1, topics.dead_letter: 1})
        with DaemonThread(settings, checkpoint) as running:
            metrics = running.daemon.metrics
            print(f"{args.client} on {args.bootstrap_servers or args.broker} ({bootstrap}), {args.rate:,.0f} events/s "
                  f"for {args.seconds:.0f} s, {args.format}; per window of {args.window:.0f} s:", flush=True)
            print(f"{'t (s)':>6} {'batches':>8} {'events':>8} {'poll ms/batch':>14} {'other ms/batch':>15} "
                  f"{'p50 ms':>7} {'p99 ms':>7}", flush=True)
            context = multiprocessing.get_context("spawn")
            results = context.Queue()
            producer = context.Process(target=paced_produce, name="drift-producer",
                                       args=(bootstrap, topics.input, payloads, args.rate, args.seconds, results))
            producer.start()
            scored_before = metrics.totals()["events_scored"]
            running.wait_for(lambda: metrics.totals()["events_scored"] > scored_before, 120, "the first event")
            start = time.monotonic()  # the windows start with the stream, not with the producer's start-up
            previous = (metrics.stage_totals(), _batches(running), metrics.totals()["events_scored"])
            metrics.end_to_end_latency = BatchHistogram("drift", "window", LATENCY_BUCKETS)
            try:
                for window in range(1, int(args.seconds // args.window) + 1):
                    time.sleep(max(0.0, start + window * args.window - time.monotonic()))
                    samples = metrics.end_to_end_latency.recent()
                    metrics.end_to_end_latency = BatchHistogram("drift", "window", LATENCY_BUCKETS)
                    now = (metrics.stage_totals(), _batches(running), metrics.totals()["events_scored"])
                    batches = max(1, now[1] - previous[1])
                    poll = now[0]["poll"] - previous[0]["poll"]
                    other = sum(now[0].values()) - sum(previous[0].values()) - poll
                    p50, p99 = (np.quantile(samples, [0.5, 0.99]) * 1000) if len(samples) else (np.nan, np.nan)
                    print(f"{window * args.window:>6.0f} {now[1] - previous[1]:>8} {now[2] - previous[2]:>8} "
                          f"{poll / batches * 1000:>14.1f} {other / batches * 1000:>15.1f} {p50:>7.0f} {p99:>7.0f}",
                          flush=True)
                    previous = now
            finally:
                producer.join(60)
    return 0


def _batches(running: DaemonThread) -> int:
    """Micro-batches the detector has handled so far."""
    return int(running.daemon.metrics.registry.get_sample_value("stream_ae_batch_size_events_count") or 0)


if __name__ == "__main__":
    sys.exit(main())
