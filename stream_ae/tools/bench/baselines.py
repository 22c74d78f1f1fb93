"""What the detector is compared with: a naive per-event loop, the scorer called per event,
two detector processes in one group, and bf16 / torch.compile against fp32."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from stream_ae.model.checkpoint import Checkpoint, load_checkpoint
from stream_ae.model.datasets import LabelledDataset
from stream_ae.model.detector import build_detector
from stream_ae.service.config import Settings
from stream_ae.tools.bench.throughput import WATCH_INTERVAL_S, events_per_second, events_scored
from stream_ae.tools.daemon_thread import DaemonThread


def naive_baseline(bootstrap: str, topic: str, alerts: str, checkpoint: Checkpoint,
                    seconds: float) -> float:
    """Events/s of the same model in a naive per-event loop with the same delivery promise
    (kafka-python, ``json.loads``, one model call, alert acknowledged, commit, per event)."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.structs import OffsetAndMetadata, TopicPartition

    from stream_ae.pipeline.codec import BINARY_HEADER, BINARY_MAGIC

    detector = build_detector(checkpoint, "cpu")
    threshold = checkpoint.score_mean + 3.0 * checkpoint.score_std
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
            score = float(detector.score(np.asarray([row], np.float32)).score[0])
            if score > threshold:
                producer.send(alerts, json.dumps({"offset": message.offset, "score": score}).encode()).get(30)
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


def model_per_event(checkpoint: Checkpoint, values: np.ndarray) -> float:
    """Events/s of the daemon's detector called once per event (scaler, forward, score), no Kafka."""
    detector = build_detector(checkpoint, "cpu")
    started = time.perf_counter()
    for row in values:
        detector.score(row[None])
    return len(values) / (time.perf_counter() - started)


def _instance(settings: Settings, number: int) -> Settings:
    """``settings`` for the ``number``-th process of one group: a transactional id of its own."""
    delivery = settings.delivery.model_copy(update={"transactional_id": f"{settings.consumer.group_id}-{number}"})
    return settings.model_copy(update={"delivery": delivery})


def _scale_out_worker(settings_json: str, checkpoint_path: str, threads: int, reports: Any) -> None:
    """Child process: one detector; every 50 ms put ``(pid, time.time(), events scored)``."""
    from stream_ae.service.config import Settings

    torch.set_num_threads(threads)
    running = DaemonThread(Settings.model_validate_json(settings_json),
                                 load_checkpoint(checkpoint_path), poll_s=WATCH_INTERVAL_S).start()
    try:
        while running.thread.is_alive():
            reports.put((os.getpid(), time.time(), events_scored(running)))
            time.sleep(0.05)
    finally:
        running.stop()


def scale_out(settings: Settings, checkpoint_path: Path, events: int, threads: int,
               progress: bool, processes: int = 2) -> float:
    """Aggregate events/s of ``processes`` detector processes in one consumer group."""
    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    workers = [context.Process(target=_scale_out_worker, name=f"bench-detector-{n}",
                               args=(_instance(settings, n).model_dump_json(), str(checkpoint_path), threads,
                                     reports))
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
        return events_per_second(*first, at, sum(latest.values()))
    finally:
        bar.close()
        for worker in workers:
            worker.terminate()  # SIGTERM: the default handler ends the child; its broker session expires
            worker.join(30)


def accuracy(checkpoint: Checkpoint, dataset: LabelledDataset, device: str, compile: bool) -> dict[str, Any]:
    """bf16 and torch.compile scores against fp32 on the held-out rows (or all rows)."""
    rows = np.asarray(checkpoint.training.get("split", {}).get("test", np.arange(len(dataset.values))))
    if dataset.labels is None:
        raise ValueError(f"bench: the accuracy check needs labels; {dataset.name} has none")
    values, labels = dataset.values[rows], dataset.labels[rows]
    reference = build_detector(checkpoint, device).score(values).score
    variants: dict[str, dict[str, Any]] = {"bf16": {"precision": "bf16"}}
    if compile:
        variants["compile"] = {"compile": True}
    report: dict[str, Any] = {"rows": int(len(rows)), "auc_fp32": float(roc_auc_score(labels, reference))}
    for name, kwargs in variants.items():
        try:
            started = time.perf_counter()
            scores = build_detector(checkpoint, device, **kwargs).score(values).score
        except Exception as exc:  # torch.compile needs a working C++ toolchain; report why not
            report[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            continue
        report[name] = {"max_abs_diff": float(np.abs(scores - reference).max()),
                        "max_rel_diff": float((np.abs(scores - reference) / np.abs(reference).clip(1e-12)).max()),
                        "auc_change": float(roc_auc_score(labels, scores)) - report["auc_fp32"],
                        "seconds": time.perf_counter() - started}
    return report
