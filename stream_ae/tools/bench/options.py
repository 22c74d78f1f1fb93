"""What the bench measures and how much, and the settings of the detectors it runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_ae.service.config import ConsumerSettings, Settings, load_settings

CLIENTS = ("kafka-python", "confluent-kafka")


@dataclass
class BenchOptions:
    """What the bench measures and how much.

    Attributes:
        events: records written to the topic (and read by every throughput phase).
        rounds: detector runs, each between two consume-limit runs (see the module docstring).
        partitions: partitions of the topic (even, so two processes split it evenly).
        payload: ``json`` or ``binary`` (see :mod:`stream_ae.pipeline.codec`).
        max_batch_size, max_wait_ms, fetch_max_wait_ms, batch_budget_ms: the detector's
            consumer settings (the budget's default is the daemon's).
        latency_seconds: how long the paced producer runs at each load level (seconds).
        baseline_seconds: how long the per-event baseline runs (seconds).
        clients: the Kafka clients to measure; confluent-kafka is skipped when not installed.
        scale_out: measure two detector processes in one consumer group.
        accuracy: measure bf16 and (with ``compile``) torch.compile against fp32.
        compile: include torch.compile in the accuracy check (minutes on a small CPU).
        torch_threads: intra-op threads of torch in every detector process.
        data: a labelled dataset file; None uses synthetic transactions.
        checkpoint: a checkpoint trained on ``data``; None trains one briefly.
        device: the detector's device (``auto``, ``cpu``, ``cuda[:N]``).
        bootstrap_servers: an existing cluster; None starts the local broker.
        progress: progress bars on stderr.
        training_epochs: epochs of the brief training when no checkpoint is given.
        score_heads: also measure the memory-bank score against the plain reconstruction
            error of the same model (:mod:`stream_ae.tools.bench.score_heads`), on
            confluent-kafka where measured; needs the checkpoint's own training data.
        score_head_events: events each of those detector runs scores.
        guarantee: the detectors' ``delivery.guarantee`` (``at_least_once`` or
            ``exactly_once``: one transaction per batch, sources reading ``read_committed``).
        sample_records: records of each sample-stream load (:mod:`stream_ae.tools.bench.samples`).
    """

    events: int = 200_000
    rounds: int = 5
    partitions: int = 4
    payload: str = "json"
    max_batch_size: int = 4096
    max_wait_ms: int = 50
    batch_budget_ms: float | None = ConsumerSettings.model_fields["batch_budget_ms"].default
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
    score_heads: bool = True
    score_head_events: int = 50_000
    guarantee: str = "at_least_once"
    sample_records: int = 200_000

    @classmethod
    def quick(cls, **changes: Any) -> BenchOptions:
        """Tiny sizes for a smoke run (seconds, not minutes): figures are not meaningful."""
        return cls(**{"events": 3000, "rounds": 1, "max_batch_size": 256, "latency_seconds": 1.5,
                      "baseline_seconds": 1.0, "compile": False, "training_epochs": 2,
                      "score_head_events": 1000, "sample_records": 3000, **changes})


@dataclass
class BenchTopics:
    """The topics of one bench run: the input, and the detector's alerts, dead letters and state."""

    input: str
    alerts: str
    dead_letter: str
    state: str


def detector_settings(options: BenchOptions, bootstrap: str, topics: BenchTopics, client: str, group: str,
                      checkpoint_path: Path) -> Settings:
    """The settings of a detector (or consume-limit source) of this run, with ``client``, in
    consumer group ``group``, serving ``checkpoint_path``; metrics off."""
    return load_settings(
        kafka={"bootstrap_servers": bootstrap, "client": client},
        topics={"input": [topics.input], "alerts": topics.alerts, "dead_letter": topics.dead_letter,
                "scores": None, "state": topics.state},
        consumer={"group_id": group, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
                  "max_batch_size": options.max_batch_size, "max_wait_ms": options.max_wait_ms,
                  "fetch_max_wait_ms": options.fetch_max_wait_ms, "batch_budget_ms": options.batch_budget_ms},
        model={"checkpoint": str(checkpoint_path), "device": options.device, "threads": options.torch_threads},
        metrics={"enabled": False},
        delivery={"guarantee": options.guarantee},
    )
