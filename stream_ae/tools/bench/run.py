"""``stream-ae bench``: every measurement in one run (see the package docstring)."""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from stream_ae.kafka.local_broker import local_or_given
from stream_ae.kafka.topics import ensure_topics
from stream_ae.model.checkpoint import load_checkpoint, save_checkpoint
from stream_ae.model.datasets import load_dataset, synthetic_transactions
from stream_ae.model.training import TrainingOptions, train_autoencoder, without_memory_bank
from stream_ae.service.config import Settings
from stream_ae.service.daemon import freeze_long_lived_objects
from stream_ae.tools.bench.baselines import accuracy, model_per_event, naive_baseline, scale_out
from stream_ae.tools.bench.latency import FIXED_RATE_EPS, LOAD_LEVELS, measure_latency
from stream_ae.tools.bench.options import BenchOptions, BenchTopics, detector_settings
from stream_ae.tools.bench.producers import encode_payloads, fill_topic
from stream_ae.tools.bench.report import summarise
from stream_ae.tools.bench.samples import sample_streams
from stream_ae.tools.bench.score_heads import score_head_rounds
from stream_ae.tools.bench.throughput import consume_limit, round_figures, throughput_rounds

log = logging.getLogger(__name__)


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run every measurement of the module docstring and return the figures.

    Returns:
        A flat dictionary: ``consume_limit_eps``, ``detector_eps``, ``ratio``,
        ``per_event_baseline_eps``, ``baseline_ratio``, ``latency_p50_s``, ``latency_p95_s``,
        ``latency_p99_s`` (kafka-python, 50% load), the same prefixed ``confluent_`` for
        confluent-kafka, ``scale_out_eps``, ``samples`` (sample records:
        :func:`~stream_ae.tools.bench.samples.sample_streams`), ``stage_share`` per client, ``latency`` per
        client and load, ``accuracy``, ``targets`` (each done-when target: value, bound,
        met) and the run's context (machine, sizes, settings).

    Raises:
        BrokerError: the local broker cannot start.
        RuntimeError, TimeoutError: a phase did not finish.
    """
    started = time.perf_counter()
    torch.set_num_threads(options.torch_threads)
    clients = [c for c in options.clients if c != "confluent-kafka" or _confluent_installed()]
    dataset = synthetic_transactions() if options.data is None else load_dataset(options.data)
    if options.checkpoint is not None:
        checkpoint = load_checkpoint(options.checkpoint)
    else:
        checkpoint = train_autoencoder(dataset, TrainingOptions(epochs=options.training_epochs, seed=7,
                                                                device="cpu", progress=options.progress))
    rows = np.arange(len(dataset.values))
    payloads = encode_payloads(dataset, rows[:20_000], options.payload)
    run_id = uuid.uuid4().hex[:8]
    topics = BenchTopics(f"bench-{run_id}", f"bench-{run_id}-alerts", f"bench-{run_id}-dead", f"bench-{run_id}-state")
    results: dict[str, Any] = {"clients": {}}
    with tempfile.TemporaryDirectory(prefix="stream-ae-bench-") as workdir, \
            local_or_given(options.bootstrap_servers) as broker:
        checkpoint_path = Path(workdir) / "model.pt"
        save_checkpoint(checkpoint, checkpoint_path)
        checkpoint = load_checkpoint(checkpoint_path)
        bootstrap = broker.bootstrap_servers
        base = detector_settings(options, bootstrap, topics, "kafka-python", "unused", checkpoint_path)
        ensure_topics(base.kafka.connection(), {topics.input: options.partitions, topics.alerts: 1,
                                                topics.dead_letter: 1, topics.state: 1})
        fill_eps = fill_topic(bootstrap, topics.input, payloads, options.events, options.progress)
        in_topic = options.events
        freeze_long_lived_objects()
        for client in clients:
            def client_settings(group: str, client: str = client) -> Settings:
                return detector_settings(options, bootstrap, topics, client, f"bench-{run_id}-{client}-{group}",
                                 checkpoint_path)
            figures, running = throughput_rounds(options, client, client_settings, checkpoint, in_topic)
            try:
                sustained = float(np.median(figures["detector_runs_eps"]))
                rates = {f"{int(level * 100)}%": level * sustained for level in LOAD_LEVELS}
                rates[f"{FIXED_RATE_EPS:g}/s"] = FIXED_RATE_EPS
                latency = {name: measure_latency(running, bootstrap, topics.input, payloads, rate,
                                                 options.latency_seconds)
                           for name, rate in tqdm(rates.items(), desc=f"latency ({client})",
                                                  disable=not options.progress)}
            finally:
                running.stop()
            in_topic += sum(int(level["events"]) for level in latency.values())
            figures["consume_limit_runs_eps"].append(consume_limit(
                client_settings(f"limit-{options.rounds}"), in_topic, options.progress))
            results["clients"][client] = {**round_figures(figures), "latency": latency}
        baseline = naive_baseline(bootstrap, topics.input, topics.alerts, checkpoint, options.baseline_seconds)
        results["per_event_baseline_eps"] = baseline
        if options.score_heads and checkpoint.memory_bank_state is not None \
                and checkpoint.dataset_sha256 == dataset.sha256:
            plain_path = Path(workdir) / "reconstruction.pt"
            save_checkpoint(without_memory_bank(checkpoint, dataset), plain_path)
            client = "confluent-kafka" if "confluent-kafka" in clients else clients[0]

            def head_settings(group: str, path: Path, client: str = client) -> Settings:
                return detector_settings(options, bootstrap, topics, client, f"bench-{run_id}-head-{group}", path)
            results["score_heads"] = {"client": client, **score_head_rounds(
                head_settings, {"memory-bank": (checkpoint, checkpoint_path),
                                "reconstruction": (load_checkpoint(plain_path), plain_path)},
                options.rounds, min(options.score_head_events, in_topic),
                np.ascontiguousarray(dataset.values[:options.max_batch_size]), options.device, options.progress)}
        results["model_per_event_eps"] = model_per_event(checkpoint, dataset.values[:2000])
        results["samples"] = sample_streams(base, options.sample_records, options.progress)
        if options.scale_out:
            results["scale_out_eps"] = scale_out(
                detector_settings(options, bootstrap, topics, "kafka-python", f"bench-{run_id}-scale-out",
                                  checkpoint_path),
                checkpoint_path, in_topic, options.torch_threads, options.progress)
    if options.accuracy:
        results["accuracy"] = accuracy(checkpoint, dataset, options.device, options.compile)
    results["skipped_clients"] = [c for c in options.clients if c not in clients]
    return summarise(results, options, fill_eps, time.perf_counter() - started)


def _confluent_installed() -> bool:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        log.warning("confluent-kafka is not installed (pip install 'stream-ae[confluent]'): skipping it")
        return False
    return True
