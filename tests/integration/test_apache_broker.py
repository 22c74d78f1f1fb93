"""The Apache Kafka launcher: a node that serves and leaves nothing behind, a clear error
when it cannot start, and the command line CI uses to fetch the jars.

Run with ``STREAM_AE_TEST_BROKER=apache`` (skipped otherwise: it needs Java and Maven).
"""

from __future__ import annotations

import socket

import pytest

from stream_ae.kafka.local_broker import BrokerError
from stream_ae.kafka.options import Connection
from stream_ae.kafka.topics import ensure_topics, read_topic
from tests import apache_kafka
from tests.apache_kafka import ApacheKafka
from tests.helpers import broker_kind, produce_to

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(broker_kind() != "apache", reason="needs STREAM_AE_TEST_BROKER=apache")]


def test_a_node_serves_records_and_its_stop_leaves_no_process_and_no_data(tmp_path):
    broker = ApacheKafka(log_path=tmp_path / "kafka.log").start()
    process, workdir = broker.processes[1], broker.workdir
    try:
        connection = Connection(broker.bootstrap_servers)
        ensure_topics(connection, {"launcher": 2})
        produce_to(connection, "launcher", [b"a", b"b", b"c"], keys=[b"1", b"2", b"3"])
        assert sorted(record.value for record in read_topic(connection, "launcher", 3)) == [b"a", b"b", b"c"]
    finally:
        broker.stop()
    assert process.poll() is not None
    assert workdir is not None and not workdir.exists()
    assert "Kafka Server started" in (tmp_path / "kafka.log").read_text()


def test_a_port_in_use_fails_the_start_with_the_brokers_own_error(tmp_path):
    broker = ApacheKafka(log_path=tmp_path / "kafka.log")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", broker.port))
        taken.listen()
        with pytest.raises(BrokerError, match="exited with code 1.*Fatal error during broker startup"):
            broker.start(timeout_s=60)
    assert broker.processes == {} and broker.workdir is None


def test_fetch_prints_the_jar_folder(capsys):
    assert apache_kafka.main(["fetch"]) == 0
    folder = capsys.readouterr().out.strip()
    assert folder == str(apache_kafka.jar_folder())
    assert (apache_kafka.jar_folder() / f"kafka_2.13-{apache_kafka.kafka_version()}.jar").is_file()
