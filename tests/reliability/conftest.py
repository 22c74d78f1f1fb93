"""Helpers of the reliability suite: the daemon as a real process, bulk producing, topic reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stream_ae.kafka.local_broker import free_port
from stream_ae.service.config import Settings
from stream_ae.kafka.kafka_python.sink import KafkaSink
from stream_ae.kafka.topics import read_topic
from tests.conftest import wait_for


class DaemonProcess:
    """``python -m stream_ae run`` in a child process, with its own metrics port.

    Args:
        settings: written to a YAML file the daemon reads; ``metrics.port`` is replaced.
        workdir: where the config file and the daemon's log go.
        name: distinguishes the files of several daemons.
    """

    def __init__(self, settings: Settings, workdir: Path, name: str = "daemon") -> None:
        self.port = free_port()
        values = settings.model_dump(mode="json")
        values["metrics"]["port"] = self.port
        self.config = workdir / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump(values))
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "DaemonProcess":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream_ae", "run", "--config", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every sample of ``/metrics``; empty while the server is not up."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=3).read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return {}
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def value(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def ready(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log_path.read_text()[-3000:]
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=3).status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self, timeout_s: float = 90.0) -> "DaemonProcess":
        wait_for(self.ready, timeout_s, f"daemon {self.config.stem} to be ready")
        return self

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)


def produce_values(settings: Settings, topic: str, values: list[bytes],
                   keys: list[bytes | None] | None = None, flush_every: int = 20_000) -> None:
    """Produce records and wait for their acknowledgement."""
    sink = KafkaSink(settings.kafka.connection())
    try:
        for index, value in enumerate(values):
            sink.send(topic, keys[index] if keys else None, value)
            if (index + 1) % flush_every == 0:
                sink.flush()
        sink.flush()
    finally:
        sink.close()


def read_json(settings: Settings, topic: str, expected: int, timeout_s: float = 60.0) -> list[dict]:
    """The JSON values of a topic's records, with their record key as ``_key``."""
    return [orjson.loads(r.value) | {"_key": r.key.decode()}
            for r in read_topic(settings.kafka.connection(), topic, expected, timeout_s)]
