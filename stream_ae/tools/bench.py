"""``stream-ae bench``: throughput and latency of the detector, all in one run on one topic.

One topic is filled once with ``events`` records (JSON or the compact binary payload,
from the synthetic transaction set or ``--data``), and then, for each Kafka client
(kafka-python, confluent-kafka):

1. **consume limit**: the client's own source
   (:func:`stream_ae.kafka.backends.make_source`, same settings as the detector's) reads
   the whole topic in a fresh consumer group and discards the client's record objects as
   they come (``poll_records``: no columns built, nothing decoded); events/s from the end
   of the first batch to the last record (so the group join is left out);
2. **detector**: the real :class:`stream_ae.pipeline.loop.Detector` (its ``run`` loop, in
   a thread) reads the same topic in another fresh group; events/s over the same span, and
   each stage's share of the loop's time over that span (from
   ``stream_ae_stage_seconds_total``);

   the two alternate, ``rounds`` detector runs each bracketed by consume-limit runs
   (L D L D … L): a round's ratio is its detector's events/s over the mean of the two
   limits around it, and the reported figures are medians over the rounds, so that a
   drift or a burst in the machine's load (other processes share its cores) favours
   neither side. The bench's process freezes its start-up heap out of the garbage
   collector first, as the daemon does
   (:func:`stream_ae.service.daemon.freeze_long_lived_objects`);
3. **latency**: with the detector caught up, a paced producer in a separate process (so
   that its work does not share the detector's GIL; librdkafka with its default 5 ms
   linger, see :data:`PRODUCER_LINGER_MS`) appends events at 50% and then 90%
   of the detector's sustained rate, and at a fixed 2,000 events/s (the demo's rate, far
   from saturation); end-to-end latency per event is the detector's own
   measure (record timestamp, set by the producer at send time, to the acknowledgement
   of the batch's output), given as p50/p95/p99.

Then, once: a **per-event baseline** (the same model in a naive loop: kafka-python
consumer iterated record by record, ``json.loads``, one model call per event, the
alert sent and acknowledged, a synchronous commit per event; that is the detector's
at-least-once promise kept one event at a time), plus the model alone called once per
event without Kafka; **scale-out** (two detector processes in one consumer group,
aggregate events/s); and the **accuracy** of bf16 autocast and ``torch.compile`` against
fp32 on the held-out rows (largest absolute score difference, AUC-ROC change).

Quantiles are numpy's default (linear interpolation, Hyndman & Fan type 7).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import platform
import queue
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from stream_ae.kafka.backends import make_source
from stream_ae.kafka.local_broker import LocalBroker
from stream_ae.kafka.topics import ensure_topics
from stream_ae.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from stream_ae.model.datasets import LabelledDataset, load_dataset, synthetic_transactions
from stream_ae.model.training import TrainingOptions, train_autoencoder
from stream_ae.pipeline.codec import encode_binary, encode_event
from stream_ae.pipeline.scoring.autoencoder import AutoencoderScorer
from stream_ae.service.config import Settings, load_settings
from stream_ae.service.daemon import BackgroundDetector, freeze_long_lived_objects
from stream_ae.telemetry.metrics import LATENCY_BUCKETS, BatchHistogram, counter_values

log = logging.getLogger(__name__)

CLIENTS = ("kafka-python", "confluent-kafka")
LOAD_LEVELS = (0.5, 0.9)
FIXED_RATE_EPS = 2000.0  # the demo's replay rate: latency where the machine is far from saturated
WATCH_INTERVAL_S = 0.02  # how often the bench reads the detector's counters (seconds)
# the producers' linger: librdkafka's default (and Apache Kafka's Java client's since 4.0).
# A record's timestamp is taken when it is handed to the producer, so the linger is part of
# the measured latency. Shorter lingers cut the stream into more, smaller record batches,
# and the local broker's fetches slow down as a partition's batches pile up (measured: at
# 27,000 events/s, fetches answered after the full fetch_max_wait_ms and empty half of the
# time with a 1 ms linger, against 3 ms and a quarter with 5 ms)
PRODUCER_LINGER_MS = 5


@dataclass
class BenchOptions:
    """What the bench measures and how much.

    Attributes:
        events: records written to the topic (and read by every throughput phase).
        rounds: detector runs, each between two consume-limit runs (see the module docstring).
        partitions: partitions of the topic (even, so two processes split it evenly).
        payload: ``json`` or ``binary`` (see :mod:`stream_ae.pipeline.codec`).
        max_batch_size, max_wait_ms, fetch_max_wait_ms: the detector's consumer settings.
        latency_seconds: how long the paced producer runs at each load level (seconds).
        baseline_seconds: how long the per-event baseline runs (seconds).
        clients: the Kafka clients to measure; confluent-kafka is skipped when not installed.
        scale_out: measure two detector processes in one consumer group.
        accuracy: measure bf16 and (with ``compile``) torch.compile against fp32.
        compile: include torch.compile in the accuracy check (minutes on a small CPU).
        torch_threads: intra-op threads of torch in every detector process.
        data: a labelled dataset file; None uses synthetic transactions.
        checkpoint: a checkpoint trained on ``data``; None trains one briefly.
        device: the scorer's device (``auto``, ``cpu``, ``cuda[:N]``).
        bootstrap_servers: an existing cluster; None starts the local broker.
        progress: progress bars on stderr.
        training_epochs: epochs of the brief training when no checkpoint is given.
    """

    events: int = 200_000
    rounds: int = 5
    partitions: int = 4
    payload: str = "json"
    max_batch_size: int = 4096
    max_wait_ms: int = 50
    fetch_max_wait_ms: int = 20
    latency_seconds: float = 8.0
    baseline_seconds: float = 5.0
    clients: tuple[str, ...] = CLIENTS
    scale_out: bool = True
    accuracy: bool = True
    compile: bool = True
    torch_threads: int = 1
    data: Path | None = None
    checkpoint: Path | None = None
    device: str = "auto"
    bootstrap_servers: str | None = None
    progress: bool = True
    training_epochs: int = 8

    @classmethod
    def quick(cls, **changes: Any) -> BenchOptions:
        """Tiny sizes for a smoke run (seconds, not minutes): figures are not meaningful."""
        return cls(**{"events": 3000, "rounds": 1, "max_batch_size": 256, "latency_seconds": 1.5,
                      "baseline_seconds": 1.0, "compile": False, "training_epochs": 2, **changes})


@dataclass
class _Topics:
    input: str
    alerts: str
    dead_letter: str
    state: str


def _settings(options: BenchOptions, bootstrap: str, topics: _Topics, client: str, group: str,
              checkpoint_path: Path) -> Settings:
    return load_settings(
        kafka={"bootstrap_servers": bootstrap, "client": client},
        topics={"input": [topics.input], "alerts": topics.alerts, "dead_letter": topics.dead_letter,
                "scores": None, "state": topics.state},
        consumer={"group_id": group, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
                  "max_batch_size": options.max_batch_size, "max_wait_ms": options.max_wait_ms,
                  "fetch_max_wait_ms": options.fetch_max_wait_ms},
        model={"checkpoint": str(checkpoint_path), "device": options.device},
        metrics={"enabled": False},
    )


def _payloads(dataset: LabelledDataset, rows: np.ndarray, payload: str) -> list[bytes]:
    """One encoded event per row, ``<dataset>-<row>`` as id (JSON) or the binary payload."""
    window = dataset.kind == "window"
    if payload == "binary":
        return [encode_binary(dataset.values[row]) for row in rows]
    return [encode_event(dataset.values[row], dataset.feature_names, window, f"{dataset.name}-{row}")
            for row in rows]


def _producer(bootstrap: str) -> tuple[Callable[[str, bytes], None], Callable[[], object]]:
    """``(send(topic, value), flush())`` of the fastest producer installed (acks=all,
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
        return (lambda topic, value: sink.send(topic, None, value)), sink.flush
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

    def send(topic: str, value: bytes) -> None:
        while True:
            try:
                producer.produce(topic, value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if next(sent) % 1000 == 0:  # serve delivery reports now and then, not per record
            producer.poll(0)

    def flush() -> None:
        if producer.flush(60) or failures:
            raise RuntimeError(f"records not acknowledged: {failures[:1] or 'timeout'}")
    return send, flush


def _fill(bootstrap: str, topic: str, payloads: list[bytes], events: int, progress: bool) -> float:
    """Write ``events`` records (the payloads, cycled) into ``topic``; returns events/s."""
    send, flush = _producer(bootstrap)
    started = time.perf_counter()
    for index in tqdm(range(events), desc=f"fill {topic}", unit="event", disable=not progress,
                      mininterval=0.5):
        send(topic, payloads[index % len(payloads)])
    flush()
    return events / (time.perf_counter() - started)


def _paced_produce(bootstrap: str, topic: str, payloads: list[bytes], rate_eps: float,
                   seconds: float, results: Any) -> None:
    """Child process: send ``payloads`` (cycled) at ``rate_eps`` for ``seconds``; put the count."""
    send, flush = _producer(bootstrap)
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


def _rate(first_at: float, first_count: int, last_at: float, last_count: int) -> float:
    """Events/s between two (time, count) observations; 0 when they coincide."""
    return (last_count - first_count) / (last_at - first_at) if last_at > first_at else 0.0


def consume_limit(settings: Settings, events: int, progress: bool) -> float:
    """Events/s of the configured client's source reading ``events`` records and discarding them."""
    source = make_source(settings.kafka.client, settings.kafka.connection(), settings.topics.input,
                         settings.consumer.options(), lambda keys: None, lambda keys: None)
    seen = 0
    first: tuple[float, int] | None = None
    bar = tqdm(total=events, desc=f"consume limit ({settings.kafka.client})", unit="event",
               disable=not progress, mininterval=0.5)
    try:
        while seen < events:
            got = len(source.poll_records())
            seen += got
            bar.update(got)
            if got and first is None:
                first = (time.perf_counter(), seen)
        assert first is not None, "bench: no events to read"
        return _rate(*first, time.perf_counter(), seen)
    finally:
        bar.close()
        source.close()


def _scored(running: BackgroundDetector) -> int:
    return int(counter_values(running.daemon.metrics.events_scored)[()])


def _stage_seconds(running: BackgroundDetector) -> dict[str, float]:
    return running.daemon.metrics.stage_totals()


def _sustained(running: BackgroundDetector, events: int, progress: bool, what: str) -> tuple[float, dict[str, float]]:
    """Events/s of the detector over ``events`` records (from the end of its first batch),
    and the seconds each stage took over the same span."""
    bar = tqdm(total=events, desc=what, unit="event", disable=not progress, mininterval=0.5)
    running.wait_for(lambda: _scored(running) > 0, 120, "the first batch")
    first_at, first_count, first_stages = time.perf_counter(), _scored(running), _stage_seconds(running)

    def done() -> bool:
        scored = _scored(running)
        bar.update(scored - bar.n)
        return scored >= events
    running.wait_for(done, 600, f"{events} events to be scored")
    last_at, last_count, last_stages = time.perf_counter(), _scored(running), _stage_seconds(running)
    bar.close()
    return (_rate(first_at, first_count, last_at, last_count),
            {stage: spent - first_stages.get(stage, 0.0) for stage, spent in last_stages.items()})


def _throughput_rounds(options: BenchOptions, client: str, settings: Callable[[str], Settings],
                       checkpoint: Checkpoint, events: int) -> tuple[dict[str, Any], BackgroundDetector]:
    """Consume-limit and detector runs, alternating (see the module docstring), all but the
    last consume-limit run, which the caller makes once it is done with the detector.

    Args:
        settings: ``group -> Settings`` of ``client`` for a fresh consumer group.
        events: records in the topic.

    Returns:
        ``(figures, running)``: ``consume_limit_runs_eps`` and ``detector_runs_eps`` (one per
        run), ``stage_seconds`` (summed over the detector runs), and the last detector, still
        running and caught up, for the latency phases.
    """
    limits = [consume_limit(settings("limit-0"), events, options.progress)]
    detector_runs: list[float] = []
    stage_seconds: dict[str, float] = {}
    running: BackgroundDetector | None = None
    for round_number in range(1, options.rounds + 1):
        if running is not None:
            running.stop()
            limits.append(consume_limit(settings(f"limit-{round_number - 1}"), events, options.progress))
        running = BackgroundDetector(settings(f"detector-{round_number}"), checkpoint,
                                     poll_s=WATCH_INTERVAL_S).start()
        try:
            eps, spent = _sustained(running, events, options.progress, f"detector ({client}, round {round_number})")
        except BaseException:
            running.stop()
            raise
        detector_runs.append(eps)
        for stage, seconds in spent.items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
    assert running is not None
    return {"consume_limit_runs_eps": limits, "detector_runs_eps": detector_runs,
            "stage_seconds": stage_seconds}, running


def _round_figures(figures: dict[str, Any]) -> dict[str, Any]:
    """Medians over the rounds: consume limit, detector events/s, and the ratio of each
    detector run to the mean of the two consume-limit runs around it."""
    limits, detectors = figures["consume_limit_runs_eps"], figures["detector_runs_eps"]
    ratios = [eps / ((limits[n] + limits[n + 1]) / 2) for n, eps in enumerate(detectors)]
    total = sum(figures["stage_seconds"].values()) or 1.0
    return {"consume_limit_eps": float(np.median(limits)), "detector_eps": float(np.median(detectors)),
            "ratio": float(np.median(ratios)), "ratio_runs": ratios, **figures,
            "stage_share": {stage: spent / total for stage, spent in figures["stage_seconds"].items()}}


def _latency(running: BackgroundDetector, bootstrap: str, topic: str, payloads: list[bytes],
             rate_eps: float, seconds: float) -> dict[str, float]:
    """p50/p95/p99 end-to-end latency (seconds) of events appended at ``rate_eps`` by a
    producer in another process, as the detector measures it."""
    samples = BatchHistogram("stream_ae_bench_latency_seconds", "bench phase", LATENCY_BUCKETS)
    before = _scored(running)
    running.daemon.metrics.end_to_end_latency = samples
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    producer = context.Process(target=_paced_produce, name="bench-producer",
                               args=(bootstrap, topic, payloads, rate_eps, seconds, results))
    producer.start()
    try:
        sent = results.get(timeout=seconds + 120)
    finally:
        producer.join(30)
    running.wait_for(lambda: _scored(running) >= before + sent, 120, "the paced events to be scored")
    latencies = samples.recent()
    if len(latencies) == 0:
        raise RuntimeError(f"bench: no latency samples at {rate_eps:.0f} events/s ({sent} sent)")
    p50, p95, p99 = np.quantile(latencies, [0.5, 0.95, 0.99])
    return {"rate_eps": rate_eps, "events": int(sent), "p50_s": float(p50), "p95_s": float(p95),
            "p99_s": float(p99)}


def _naive_baseline(bootstrap: str, topic: str, alerts: str, checkpoint: Checkpoint,
                    seconds: float) -> float:
    """Events/s of the same model in a naive per-event loop with the same delivery promise
    (kafka-python, ``json.loads``, one model call, alert acknowledged, commit, per event)."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.structs import OffsetAndMetadata, TopicPartition

    from stream_ae.pipeline.codec import BINARY_HEADER, BINARY_MAGIC

    scorer = AutoencoderScorer(checkpoint, "cpu")
    threshold = checkpoint.error_mean + 3.0 * checkpoint.error_std
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-naive-{uuid.uuid4().hex[:8]}",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=6000, heartbeat_interval_ms=1000, fetch_max_wait_ms=20)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    names = checkpoint.feature_names
    count, first_at = 0, None
    try:
        for message in consumer:
            if first_at is None:
                first_at = time.perf_counter()
            if message.value[:2] == BINARY_MAGIC:
                row = np.frombuffer(message.value, "<f4", offset=BINARY_HEADER.size).tolist()
            else:
                event = json.loads(message.value)
                row = event["samples"] if checkpoint.kind == "window" else [event[name] for name in names]
            error = float(scorer.score(np.asarray([row], np.float32)).errors[0])
            if error > threshold:
                producer.send(alerts, json.dumps({"offset": message.offset, "error": error}).encode()).get(30)
            consumer.commit({TopicPartition(message.topic, message.partition):
                             OffsetAndMetadata(message.offset + 1, "", -1)})
            count += 1
            if time.perf_counter() - first_at >= seconds:
                break
        assert first_at is not None  # the consumer's iterator ends only at the break above
        return count / (time.perf_counter() - first_at)
    finally:
        consumer.close(autocommit=False)
        producer.close()


def _model_per_event(checkpoint: Checkpoint, values: np.ndarray) -> float:
    """Events/s of the daemon's scorer called once per event (scaler, forward, error), no Kafka."""
    scorer = AutoencoderScorer(checkpoint, "cpu")
    started = time.perf_counter()
    for row in values:
        scorer.score(row[None])
    return len(values) / (time.perf_counter() - started)


def _scale_out_worker(settings_json: str, checkpoint_path: str, threads: int, reports: Any) -> None:
    """Child process: one detector; every 50 ms put ``(pid, time.time(), events scored)``."""
    from stream_ae.service.config import Settings

    torch.set_num_threads(threads)
    running = BackgroundDetector(Settings.model_validate_json(settings_json),
                                 load_checkpoint(checkpoint_path), poll_s=WATCH_INTERVAL_S).start()
    try:
        while running.thread.is_alive():
            reports.put((os.getpid(), time.time(), _scored(running)))
            time.sleep(0.05)
    finally:
        running.stop()


def _scale_out(settings: Settings, checkpoint_path: Path, events: int, threads: int,
               progress: bool, processes: int = 2) -> float:
    """Aggregate events/s of ``processes`` detector processes in one consumer group."""
    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    workers = [context.Process(target=_scale_out_worker, name=f"bench-detector-{n}",
                               args=(settings.model_dump_json(), str(checkpoint_path), threads, reports))
               for n in range(processes)]
    for worker in workers:
        worker.start()
    latest: dict[int, int] = {}
    first: tuple[float, int] | None = None
    bar = tqdm(total=events, desc=f"scale-out ({processes} processes)", unit="event",
               disable=not progress, mininterval=0.5)
    deadline = time.monotonic() + 600
    try:
        while sum(latest.values()) < events:
            if time.monotonic() > deadline or not any(w.is_alive() for w in workers):
                raise RuntimeError("bench: the scale-out detectors did not score every event")
            try:
                pid, at, scored = reports.get(timeout=1)
            except queue.Empty:
                continue
            latest[pid] = scored
            total = sum(latest.values())
            if first is None and total > 0:
                first = (at, total)
            bar.update(total - bar.n)
        assert first is not None, "bench: no events to score"
        return _rate(*first, at, sum(latest.values()))
    finally:
        bar.close()
        for worker in workers:
            worker.terminate()  # SIGTERM: the default handler ends the child; its broker session expires
            worker.join(30)


def _accuracy(checkpoint: Checkpoint, dataset: LabelledDataset, device: str, compile: bool) -> dict[str, Any]:
    """bf16 and torch.compile scores against fp32 on the held-out rows (or all rows)."""
    rows = np.asarray(checkpoint.training.get("split", {}).get("test", np.arange(len(dataset.values))))
    if dataset.labels is None:
        raise ValueError(f"bench: the accuracy check needs labels; {dataset.name} has none")
    values, labels = dataset.values[rows], dataset.labels[rows]
    reference = AutoencoderScorer(checkpoint, device).score(values).errors
    variants: dict[str, dict[str, Any]] = {"bf16": {"precision": "bf16"}}
    if compile:
        variants["compile"] = {"compile": True}
    report: dict[str, Any] = {"rows": int(len(rows)), "auc_fp32": float(roc_auc_score(labels, reference))}
    for name, kwargs in variants.items():
        try:
            started = time.perf_counter()
            errors = AutoencoderScorer(checkpoint, device, **kwargs).score(values).errors
        except Exception as exc:  # torch.compile needs a working C++ toolchain; report why not
            report[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            continue
        report[name] = {"max_abs_diff": float(np.abs(errors - reference).max()),
                        "max_rel_diff": float((np.abs(errors - reference) / np.abs(reference).clip(1e-12)).max()),
                        "auc_change": float(roc_auc_score(labels, errors)) - report["auc_fp32"],
                        "seconds": time.perf_counter() - started}
    return report


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run every measurement of the module docstring and return the figures.

    Returns:
        A flat dictionary: ``consume_limit_eps``, ``detector_eps``, ``ratio``,
        ``per_event_baseline_eps``, ``baseline_ratio``, ``latency_p50_s``, ``latency_p95_s``,
        ``latency_p99_s`` (kafka-python, 50% load), the same prefixed ``confluent_`` for
        confluent-kafka, ``scale_out_eps``, ``stage_share`` per client, ``latency`` per
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
    payloads = _payloads(dataset, rows[:20_000], options.payload)
    run_id = uuid.uuid4().hex[:8]
    topics = _Topics(f"bench-{run_id}", f"bench-{run_id}-alerts", f"bench-{run_id}-dead", f"bench-{run_id}-state")
    results: dict[str, Any] = {"clients": {}}
    with tempfile.TemporaryDirectory(prefix="stream-ae-bench-") as workdir, \
            (_NoBroker(options.bootstrap_servers) if options.bootstrap_servers else LocalBroker()) as broker:
        checkpoint_path = Path(workdir) / "model.pt"
        save_checkpoint(checkpoint, checkpoint_path)
        checkpoint = load_checkpoint(checkpoint_path)
        bootstrap = broker.bootstrap_servers
        base = _settings(options, bootstrap, topics, "kafka-python", "unused", checkpoint_path)
        ensure_topics(base.kafka.connection(), {topics.input: options.partitions, topics.alerts: 1,
                                                topics.dead_letter: 1, topics.state: 1})
        fill_eps = _fill(bootstrap, topics.input, payloads, options.events, options.progress)
        in_topic = options.events
        freeze_long_lived_objects()
        for client in clients:
            def client_settings(group: str, client: str = client) -> Settings:
                return _settings(options, bootstrap, topics, client, f"bench-{run_id}-{client}-{group}",
                                 checkpoint_path)
            figures, running = _throughput_rounds(options, client, client_settings, checkpoint, in_topic)
            try:
                sustained = float(np.median(figures["detector_runs_eps"]))
                rates = {f"{int(level * 100)}%": level * sustained for level in LOAD_LEVELS}
                rates[f"{FIXED_RATE_EPS:g}/s"] = FIXED_RATE_EPS
                latency = {name: _latency(running, bootstrap, topics.input, payloads, rate, options.latency_seconds)
                           for name, rate in tqdm(rates.items(), desc=f"latency ({client})",
                                                  disable=not options.progress)}
            finally:
                running.stop()
            in_topic += sum(int(level["events"]) for level in latency.values())
            figures["consume_limit_runs_eps"].append(consume_limit(
                client_settings(f"limit-{options.rounds}"), in_topic, options.progress))
            results["clients"][client] = {**_round_figures(figures), "latency": latency}
        baseline = _naive_baseline(bootstrap, topics.input, topics.alerts, checkpoint, options.baseline_seconds)
        results["per_event_baseline_eps"] = baseline
        results["model_per_event_eps"] = _model_per_event(checkpoint, dataset.values[:2000])
        if options.scale_out:
            results["scale_out_eps"] = _scale_out(
                _settings(options, bootstrap, topics, "kafka-python", f"bench-{run_id}-scale-out", checkpoint_path),
                checkpoint_path, in_topic, options.torch_threads, options.progress)
    if options.accuracy:
        results["accuracy"] = _accuracy(checkpoint, dataset, options.device, options.compile)
    return _summarise(results, options, fill_eps, time.perf_counter() - started)


class _NoBroker:
    """Stands in for :class:`LocalBroker` when the bench is given a cluster."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers

    def __enter__(self) -> _NoBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _confluent_installed() -> bool:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        log.warning("confluent-kafka is not installed (pip install 'stream-ae[confluent]'): skipping it")
        return False
    return True


def _summarise(results: dict[str, Any], options: BenchOptions, fill_eps: float, wall_s: float) -> dict[str, Any]:
    clients = results["clients"]
    summary: dict[str, Any] = {}
    for client, prefix in (("kafka-python", ""), ("confluent-kafka", "confluent_")):
        if client not in clients:
            continue
        figures = clients[client]
        half = figures["latency"]["50%"]
        summary.update({
            f"{prefix}consume_limit_eps": figures["consume_limit_eps"],
            f"{prefix}detector_eps": figures["detector_eps"],
            f"{prefix}ratio": figures["ratio"],
            f"{prefix}latency_p50_s": half["p50_s"],
            f"{prefix}latency_p95_s": half["p95_s"],
            f"{prefix}latency_p99_s": half["p99_s"],
        })
    default = clients.get("kafka-python") or next(iter(clients.values()))
    summary["per_event_baseline_eps"] = results["per_event_baseline_eps"]
    summary["baseline_ratio"] = default["detector_eps"] / results["per_event_baseline_eps"]
    summary["model_per_event_eps"] = results["model_per_event_eps"]
    summary["model_per_event_ratio"] = default["detector_eps"] / results["model_per_event_eps"]
    if "scale_out_eps" in results:
        summary["scale_out_eps"] = results["scale_out_eps"]
        summary["scale_out_speedup"] = results["scale_out_eps"] / default["detector_eps"]
    summary["stage_share"] = {client: figures["stage_share"] for client, figures in clients.items()}
    summary["runs"] = {client: {"consume_limit_eps": figures["consume_limit_runs_eps"],
                                "detector_eps": figures["detector_runs_eps"], "ratio": figures["ratio_runs"]}
                       for client, figures in clients.items()}
    summary["latency"] = {client: figures["latency"] for client, figures in clients.items()}
    if "accuracy" in results:
        summary["accuracy"] = results["accuracy"]
    bound = options.max_wait_ms / 1000 + 0.030
    both = {"confluent-kafka", "kafka-python"} <= clients.keys()
    at_least, above, below = float.__ge__, float.__gt__, float.__lt__
    targets = {  # name: (value, bound, how the value must compare with the bound)
        "kafka-python ratio >= 0.8": (clients.get("kafka-python", {}).get("ratio"), 0.8, at_least),
        "confluent ratio >= 0.6": (clients.get("confluent-kafka", {}).get("ratio"), 0.6, at_least),
        "confluent / kafka-python eps > 1": (
            clients["confluent-kafka"]["detector_eps"] / clients["kafka-python"]["detector_eps"]
            if both else None, 1.0, above),
        f"p99 at 50% load < {bound * 1000:.0f} ms (s)": (summary.get("latency_p99_s"), bound, below),
        "detector / per-event baseline >= 50": (summary["baseline_ratio"], 50.0, at_least),
    }
    summary["targets"] = {
        name: {"value": value, "bound": limit, "met": None if value is None else bool(compare(float(value), limit))}
        for name, (value, limit, compare) in targets.items()}
    summary["context"] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
                   f"({torch.get_num_threads()} threads), "
                   f"CUDA {'available' if torch.cuda.is_available() else 'absent'}",
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "fill_eps": fill_eps,
        "wall_s": wall_s,
    }
    return summary


def _eps(value: float) -> str:
    return f"{value:,.0f}"


def table(summary: dict[str, Any]) -> str:
    """The figures as a fixed-width text table."""
    lines = [f"{'':34}{'kafka-python':>16}{'confluent-kafka':>18}"]

    def row(label: str, key: str, fmt: Callable[[float], str]) -> None:
        cells = [fmt(summary[p + key]) if (p + key) in summary else "-" for p in ("", "confluent_")]
        lines.append(f"{label:34}{cells[0]:>16}{cells[1]:>18}")
    row("consume limit (events/s)", "consume_limit_eps", _eps)
    row("detector (events/s)", "detector_eps", _eps)
    row("ratio to the consume limit", "ratio", lambda v: f"{v:.2f}")
    for level in ("50%", "90%", f"{FIXED_RATE_EPS:g}/s"):
        for q in ("p50", "p95", "p99"):
            cells = [f"{summary['latency'][c][level][q + '_s'] * 1000:.1f}" if c in summary["latency"] else "-"
                     for c in CLIENTS]
            where = f"{level} load" if level.endswith("%") else level
            lines.append(f"{f'latency {q} at {where} (ms)':34}{cells[0]:>16}{cells[1]:>18}")
    stages = dict.fromkeys(stage for shares in summary["stage_share"].values() for stage in shares)
    for stage in stages:
        cells = [f"{summary['stage_share'][c][stage] * 100:.1f}%" if stage in summary["stage_share"].get(c, {}) else "-"
                 for c in CLIENTS]
        lines.append(f"{f'time in {stage}':34}{cells[0]:>16}{cells[1]:>18}")
    lines.append("")
    for client, runs in summary["runs"].items():
        lines.append(f"{client}, each run in order (medians above): consume limit "
                     f"{' '.join(_eps(v) for v in runs['consume_limit_eps'])}; detector "
                     f"{' '.join(_eps(v) for v in runs['detector_eps'])}; ratio "
                     f"{' '.join(f'{v:.2f}' for v in runs['ratio'])}")
    lines.append(f"per-event baseline (naive loop)   {_eps(summary['per_event_baseline_eps'])} events/s; "
                 f"detector is {summary['baseline_ratio']:.0f}x")
    lines.append(f"model alone, one call per event   {_eps(summary['model_per_event_eps'])} events/s; "
                 f"detector is {summary['model_per_event_ratio']:.1f}x")
    if "scale_out_eps" in summary:
        lines.append(f"scale-out, 2 processes, 1 group   {_eps(summary['scale_out_eps'])} events/s "
                     f"({summary['scale_out_speedup']:.2f}x one detector)")
    for name, figures in summary.get("accuracy", {}).items():
        if isinstance(figures, dict) and "max_abs_diff" in figures:
            lines.append(f"{name:5} vs fp32 on {summary['accuracy']['rows']:,} held-out rows: max |score diff| "
                         f"{figures['max_abs_diff']:.2e} (relative {figures['max_rel_diff']:.2e}), "
                         f"AUC-ROC change {figures['auc_change']:+.5f}")
        elif isinstance(figures, dict):
            lines.append(f"{name:5} unavailable: {figures['error']}")
    lines.append("")
    for name, target in summary["targets"].items():
        verdict = "n/a" if target["met"] is None else ("met" if target["met"] else "MISSED")
        value = "-" if target["value"] is None else f"{target['value']:.3g}"
        lines.append(f"target {name:40} {value:>10}  {verdict}")
    context = summary["context"]
    lines.append(f"\n{context['machine']}; load average {context['load_average']:.1f} at the end; "
                 f"{context['options']['events']:,} events ({context['options']['payload']}), "
                 f"batches of {context['options']['max_batch_size']}, max_wait_ms "
                 f"{context['options']['max_wait_ms']}; {context['wall_s']:.0f} s")
    return "\n".join(lines)


def markdown(summary: dict[str, Any]) -> str:
    """The figures as the README's Performance section body (a table in a code block)."""
    return ("Measured by `stream-ae bench` in one run on this machine (figures from a shared "
            "machine vary from run to run; ratios within one run are what the bench compares):\n\n"
            "```text\n" + table(summary) + "\n```\n")


def to_json(summary: dict[str, Any]) -> str:
    """One line of JSON."""
    return orjson.dumps(summary, option=orjson.OPT_SERIALIZE_NUMPY).decode()
