"""Apache Kafka on 127.0.0.1 for the tests, the fault runs and the bench: real brokers, no Docker.

The jars come from Maven Central once (``mvn dependency:copy-dependencies`` on a generated POM
that names ``org.apache.kafka:kafka_2.13`` at a pinned version and a logging binding) into a
cache folder outside the repository; each node is then a plain ``java -cp ... kafka.Kafka``
process in KRaft mode (KIP-500: every node is broker and controller, no ZooKeeper), its
storage formatted first with ``kafka.tools.StorageTool`` (what ``kafka-storage.sh format``
runs), its data and configuration in a temporary folder deleted on stop.

``ApacheKafka()`` is one node (replication factor 1); ``ApacheKafkaCluster(nodes=3)`` is three
(replication factor 3, ``min.insync.replicas=2``) with calls to kill, stop and restart one
node and to find a partition's leader. Both are context managers with ``bootstrap_servers``,
like :class:`stream_ae.kafka.local_broker.LocalBroker`.

Settings (environment): ``STREAM_AE_KAFKA_VERSION`` (default :data:`KAFKA_VERSION`; 3.x works
too), ``STREAM_AE_KAFKA_CACHE`` (default ``~/.cache/stream-ae``; the jars go to
``<cache>/kafka-<version>/libs``). Command line: ``python -m tests.apache_kafka fetch``
downloads the jars and prints their folder; ``... serve`` runs one node until Ctrl-C.
Needs Java 17 or later on ``PATH`` (``java``) and, for the first fetch, Maven (``mvn``).
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from stream_ae.kafka.local_broker import BrokerError, free_port, stop_process, wait_until_serving

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
"""The Apache Kafka release the tests run against unless ``STREAM_AE_KAFKA_VERSION`` says otherwise."""

LOG4J2_VERSION = "2.25.5"
"""log4j 2 binding for SLF4J 1.7 (Kafka 4.x logs through log4j 2; this routes SLF4J there too)."""

JVM_OPTIONS = ("-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
               "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true")
"""Small heap, one GC thread, the quick JIT tier only: cheap start-up and little CPU on two cores.
The bench passes ``JVM_OPTIONS_FULL_JIT`` instead, so that the broker runs at full speed."""

JVM_OPTIONS_FULL_JIT = tuple(option for option in JVM_OPTIONS if option != "-XX:TieredStopAtLevel=1")

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.stream-ae</groupId><artifactId>apache-kafka-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version></dependency>
    {binding}
  </dependencies>
</project>
"""
_BINDING_4 = (f"<dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>"
              f"<version>{LOG4J2_VERSION}</version></dependency>")
# Kafka 3.x logs through log4j 1 (reload4j in its own distribution)
_BINDING_3 = ("<dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>"
              "<version>1.7.36</version></dependency>")

# both frameworks write to standard output, which the launcher sends to the node's log file
_LOG4J2_PROPERTIES = """rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
"""
_LOG4J1_PROPERTIES = """log4j.rootLogger=INFO, out
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def kafka_version() -> str:
    """The Apache Kafka version to run: ``STREAM_AE_KAFKA_VERSION`` or :data:`KAFKA_VERSION`."""
    return os.environ.get("STREAM_AE_KAFKA_VERSION") or KAFKA_VERSION


def jar_folder(version: str | None = None) -> Path:
    """Where the jars of ``version`` are (or will be): ``<cache>/kafka-<version>/libs``.

    The cache is ``STREAM_AE_KAFKA_CACHE`` or ``~/.cache/stream-ae``, outside the repository.
    """
    cache = Path(os.environ.get("STREAM_AE_KAFKA_CACHE") or Path.home() / ".cache" / "stream-ae")
    return cache.expanduser() / f"kafka-{version or kafka_version()}" / "libs"


def fetch_jars(version: str | None = None, timeout_s: float = 900.0) -> Path:
    """Download Apache Kafka's jars with Maven, once; later calls return the cached folder.

    Maven resolves ``org.apache.kafka:kafka_2.13:<version>`` and its runtime dependencies from
    Maven Central (through ``~/.m2``) and copies them into a fresh folder, renamed into place
    when complete, so an interrupted fetch leaves nothing half-made behind.

    Returns:
        The folder of jars (about 45 MB for 4.4.0).

    Raises:
        BrokerError: Maven is not installed, the version does not resolve, or Maven failed.

    Example::

        python -m tests.apache_kafka fetch   # prints the folder
    """
    version = version or kafka_version()
    libs = jar_folder(version)
    if (libs / f"kafka_2.13-{version}.jar").is_file():
        return libs
    maven = shutil.which("mvn")
    if maven is None:
        raise BrokerError("Apache Kafka's jars are fetched with Maven, which is not installed "
                          "(apt-get install maven, or set STREAM_AE_KAFKA_CACHE to a folder that has them)")
    libs.parent.mkdir(parents=True, exist_ok=True)
    binding = _BINDING_4 if int(version.split(".")[0]) >= 4 else _BINDING_3
    with tempfile.TemporaryDirectory(prefix="fetch-", dir=libs.parent) as work:
        pom = Path(work) / "pom.xml"
        pom.write_text(_POM.format(version=version, binding=binding))
        log.info("fetching Apache Kafka %s with Maven into %s", version, libs)
        done = subprocess.run(
            [maven, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={Path(work) / 'libs'}"],
            capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise BrokerError(f"Maven could not fetch Apache Kafka {version}: "
                              f"{(done.stdout + done.stderr).strip()[-2000:]}")
        if not libs.exists():  # another process may have finished the same fetch first
            os.replace(Path(work) / "libs", libs)
    return libs


def cluster_id() -> str:
    """A fresh KRaft cluster id: 16 random bytes, URL-safe base64 without padding, drawn
    again while it starts with ``-`` (as Kafka's ``Uuid.randomUuid``: one id in 64 would
    otherwise be read as an option by ``kafka-storage format -t``)."""
    while True:
        identity = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not identity.startswith("-"):
            return identity


class ApacheKafkaCluster:
    """Apache Kafka nodes on free ports of 127.0.0.1, each broker and controller; a context manager.

    Replication follows the size: one node gets replication factor 1 everywhere; two or more
    get ``min(3, nodes)`` replicas per partition (internal topics too) and
    ``min.insync.replicas = replicas - 1``, so that one node may be down without refusing
    ``acks=all`` writes. ``group.initial.rebalance.delay.ms`` is 0 (tests form groups at once).

    Args:
        nodes: how many nodes (node ids 1..nodes).
        log_dir: where each node's log goes (``kafka-<node>.log``); None keeps it in the
            node's data folder, deleted on stop.
        jvm_options: options for each node's JVM (heap, GC, JIT).
        overrides: extra broker properties, written last (they win).
        version: the Kafka version (default :func:`kafka_version`); its jars are fetched if missing.

    Raises:
        BrokerError: on start, see :meth:`start`.

    Example::

        with ApacheKafkaCluster(nodes=3) as cluster:
            leader = cluster.leader("events", 0)
            cluster.kill(leader)      # SIGKILL
            cluster.restart(leader)
    """

    def __init__(self, nodes: int = 3, log_dir: Path | None = None, jvm_options: Sequence[str] = JVM_OPTIONS,
                 overrides: dict[str, str] | None = None, version: str | None = None) -> None:
        if nodes < 1:
            raise ValueError(f"nodes must be at least 1, got {nodes}")
        self.node_ids = list(range(1, nodes + 1))
        self.ports = {node: free_port() for node in self.node_ids}
        self.controller_ports = {node: free_port() for node in self.node_ids}
        self.log_dir = log_dir
        self.jvm_options = list(jvm_options)
        self.overrides = dict(overrides or {})
        self.version = version or kafka_version()
        self.processes: dict[int, subprocess.Popen] = {}
        self.workdir: Path | None = None
        self.java = ""
        self.classpath = ""

    @property
    def bootstrap_servers(self) -> str:
        """``host:port,...`` of every node, for Kafka clients."""
        return ",".join(f"127.0.0.1:{self.ports[node]}" for node in self.node_ids)

    def properties(self, node: int) -> dict[str, str]:
        """The broker configuration of one node (``server.properties``)."""
        assert self.workdir is not None, "start() first"
        replicas = min(3, len(self.node_ids))
        in_sync = max(1, replicas - 1)
        voters = ",".join(f"{peer}@127.0.0.1:{self.controller_ports[peer]}" for peer in self.node_ids)
        port, controller = self.ports[node], self.controller_ports[node]
        return {
            "process.roles": "broker,controller", "node.id": str(node),
            "controller.quorum.voters": voters, "controller.listener.names": "CONTROLLER",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.workdir / f"data-{node}"),
            "default.replication.factor": str(replicas), "min.insync.replicas": str(in_sync),
            "offsets.topic.replication.factor": str(replicas), "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(in_sync), "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(in_sync),
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2", "num.io.threads": "4", "background.threads": "4",
            **self.overrides,
        }

    def log_path(self, node: int) -> Path:
        """Where node ``node`` writes its log."""
        assert self.workdir is not None, "start() first"
        return (self.log_dir or self.workdir) / f"kafka-{node}.log"

    def start(self, timeout_s: float = 90.0) -> ApacheKafkaCluster:
        """Fetch the jars if needed, write each node's configuration, format its storage,
        start every node and wait until all of them answer a metadata request.

        Raises:
            BrokerError: no ``java``; the jars cannot be fetched; formatting failed; a node
                exited; or the cluster was not serving within ``timeout_s`` seconds.
        """
        java = shutil.which("java")
        if java is None:
            raise BrokerError("Apache Kafka needs Java 17 or later (apt-get install openjdk-17-jre-headless)")
        self.java = java
        self.classpath = str(fetch_jars(self.version) / "*")
        self.workdir = Path(tempfile.mkdtemp(prefix="stream-ae-kafka-"))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES)
        (self.workdir / "log4j.properties").write_text(_LOG4J1_PROPERTIES)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        identity = cluster_id()
        try:
            for node in self.node_ids:
                config = self.workdir / f"server-{node}.properties"
                config.write_text("".join(f"{key}={value}\n" for key, value in self.properties(node).items()))
                formatted = subprocess.run(
                    self._java("kafka.tools.StorageTool", "format", "-t", identity, "-c", str(config)),
                    capture_output=True, text=True, timeout=120)
                if formatted.returncode != 0:
                    raise BrokerError(f"formatting node {node}'s storage failed: "
                                      f"{(formatted.stdout + formatted.stderr).strip()[-2000:]}")
            for node in self.node_ids:
                self._launch(node)
            try:
                self.wait_until_serving(timeout_s)
            except BrokerError as error:  # quote the logs before stop() deletes them
                raise BrokerError(f"{error}; from the logs: {self._log_tails()}") from error
        except BaseException:
            self.stop()
            raise
        return self

    def _log_tails(self, lines: int = 2) -> str:
        """Each node's last ERROR lines (its last lines where it logged none)."""
        tails = []
        for node in self.node_ids:
            path = self.log_path(node)
            text = path.read_text(errors="replace").splitlines() if path.is_file() else ["(no log)"]
            errors = [line for line in text if " ERROR " in line]
            tails.append(f"node {node}: " + " | ".join((errors or text)[-lines:])[:600])
        return "; ".join(tails)

    def wait_until_serving(self, timeout_s: float = 90.0) -> None:
        """Wait until every running node is registered and answers a metadata request.

        Raises:
            BrokerError: a node exited, or not all were serving within ``timeout_s`` seconds.
        """
        running = [node for node in self.node_ids if node in self.processes]
        wait_until_serving(",".join(f"127.0.0.1:{self.ports[node]}" for node in running),
                           [self.processes[node] for node in running], timeout_s, brokers=len(running))

    def _java(self, main: str, *args: str) -> list[str]:
        assert self.workdir is not None
        return [self.java, *self.jvm_options,
                f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
                f"-Dlog4j.configuration=file:{self.workdir / 'log4j.properties'}",
                "-cp", self.classpath, main, *args]

    def _launch(self, node: int) -> None:
        assert self.workdir is not None
        with open(self.log_path(node), "ab") as output:  # the child keeps its own descriptor
            self.processes[node] = subprocess.Popen(
                self._java("kafka.Kafka", str(self.workdir / f"server-{node}.properties")),
                stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def kill(self, node: int) -> None:
        """SIGKILL node ``node`` (a crash: no controlled shutdown, no flush)."""
        process = self.processes.pop(node)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_node(self, node: int, timeout_s: float = 60.0) -> None:
        """Stop node ``node`` cleanly (SIGTERM: controlled shutdown moves its leaderships away)."""
        stop_process(self.processes.pop(node), timeout_s)

    def restart(self, node: int, timeout_s: float = 90.0) -> None:
        """Start node ``node`` again on its ports and data (after :meth:`kill` or :meth:`stop_node`)
        and wait until the cluster serves with it.

        Raises:
            BrokerError: the node is running already, exited, or did not join in ``timeout_s`` s.
        """
        if node in self.processes:
            raise BrokerError(f"node {node} is running already")
        self._launch(node)
        self.wait_until_serving(timeout_s)

    def _describe(self, topics: Sequence[str]) -> list[dict]:
        """The metadata of ``topics`` (partitions with leader, replicas, in-sync replicas);
        empty when no node answered."""
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5000)
            try:
                return list(admin.describe_topics(list(topics)))
            finally:
                admin.close()
        except (KafkaError, OSError, ValueError):
            return []

    def leader(self, topic: str, partition: int = 0, timeout_s: float = 30.0) -> int:
        """The node id that leads ``topic``'s ``partition`` now: waits while it has none, or while
        the metadata still names a node that is down.

        Raises:
            BrokerError: no leader within ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leaders = [p["leader_id"] for described in self._describe([topic]) for p in described["partitions"]
                       if p["partition_index"] == partition]
            if leaders and leaders[0] in self.processes:
                return int(leaders[0])
            time.sleep(0.5)
        raise BrokerError(f"{topic}[{partition}] has no leader after {timeout_s:.0f} s")

    def wait_in_sync(self, topics: Sequence[str], timeout_s: float = 60.0) -> None:
        """Wait until every partition of ``topics`` has all its replicas in sync (what a rolling
        restart waits for before it takes the next node down).

        Raises:
            BrokerError: some partition still under-replicated after ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        lagging: list[tuple[str, int]] = [(topic, -1) for topic in topics]
        while time.monotonic() < deadline:
            described = self._describe(topics)
            lagging = [(topic["name"], p["partition_index"]) for topic in described for p in topic["partitions"]
                       if len(p["isr_nodes"]) < len(p["replica_nodes"])]
            if described and not lagging:
                return
            time.sleep(0.5)
        raise BrokerError(f"partitions still under-replicated after {timeout_s:.0f} s: {lagging}")

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop every node (SIGTERM to all at once, SIGKILL to any still running after
        ``timeout_s``: the last nodes of a cluster cannot shut down cleanly without a quorum)
        and delete the data folder."""
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for node in list(self.processes):
            stop_process(self.processes.pop(node), max(0.1, deadline - time.monotonic()))
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> ApacheKafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ApacheKafka(ApacheKafkaCluster):
    """One Apache Kafka node (broker and controller, replication factor 1); a context manager.

    Args:
        log_path: where the broker's log goes; None keeps it in the data folder, deleted on stop.
        jvm_options, overrides, version: as for :class:`ApacheKafkaCluster`.

    Example::

        with ApacheKafka() as broker:
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    """

    def __init__(self, log_path: Path | None = None, jvm_options: Sequence[str] = JVM_OPTIONS,
                 overrides: dict[str, str] | None = None, version: str | None = None) -> None:
        super().__init__(1, log_path.parent if log_path else None, jvm_options, overrides, version)
        self.fixed_log_path = log_path

    @property
    def port(self) -> int:
        """The broker's client port on 127.0.0.1."""
        return self.ports[1]

    def log_path(self, node: int = 1) -> Path:
        """Where the broker writes its log."""
        return self.fixed_log_path or super().log_path(node)

    def start(self, timeout_s: float = 90.0) -> ApacheKafka:
        """See :meth:`ApacheKafkaCluster.start`."""
        super().start(timeout_s)
        return self

    def __enter__(self) -> ApacheKafka:
        return self.start()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.apache_kafka fetch|serve``: fetch the jars, or run one node."""
    parser = argparse.ArgumentParser(prog="python -m tests.apache_kafka", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["fetch", "serve"],
                        help="fetch: download the jars and print their folder; serve: run one node until Ctrl-C")
    parser.add_argument("--version", default=None, help=f"Kafka version (default {kafka_version()})")
    parser.add_argument("--log", type=Path, default=None, help="serve: the broker's log file")
    parser.add_argument("--full-jit", action="store_true",
                        help="serve: every JIT tier (for benchmarks; slower start, faster broker)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)  # this module's own progress, not the Kafka client's chatter
    try:
        if args.command == "fetch":
            print(fetch_jars(args.version))
            return 0
        options = JVM_OPTIONS_FULL_JIT if args.full_jit else JVM_OPTIONS
        with ApacheKafka(log_path=args.log, jvm_options=options, version=args.version) as broker:
            print(f"Apache Kafka {broker.version} serving on {broker.bootstrap_servers} (Ctrl-C stops it)",
                  flush=True)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            while broker.processes[1].poll() is None:
                time.sleep(1)
            print(f"the broker exited with code {broker.processes[1].returncode}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0
    except BrokerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
