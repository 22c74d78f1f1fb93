"""A broker outage of about 10 s: the daemon stays up, reports not ready, resumes by itself.

The broker is of the tests' kind (``STREAM_AE_TEST_BROKER``): Tansu keeps everything in
memory and comes back empty; Apache Kafka comes back with its log and committed offsets.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from stream_ae.kafka.topics import ensure_topics
from stream_ae.model.datasets import CARD_FEATURES, synthetic_transactions
from stream_ae.pipeline.codec import encode_event
from stream_ae.tools.daemon_thread import DaemonThread
from tests.apache_kafka import ApacheKafka
from tests.helpers import detector_settings, make_broker, produce, wait_for

pytestmark = pytest.mark.integration


def readyz(port: int) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status
    except urllib.error.HTTPError as error:
        return error.code


def test_daemon_survives_a_broker_outage(topic_names, synthetic_checkpoint, tmp_path):
    checkpoint, path = synthetic_checkpoint
    dataset = synthetic_transactions(rows=6000)
    values = [encode_event(dataset.values[row], CARD_FEATURES, False, f"e{row}") for row in range(1000)]
    broker = make_broker(tmp_path / "broker.log", stoppable=True).start()
    settings = detector_settings(broker, topic_names, path, topics={"state": topic_names("state")})
    topics = {settings.topics.input[0]: 2, settings.topics.alerts: 1, settings.topics.dead_letter: 1,
              settings.topics.scores: 2, settings.topics.state: 1}
    ensure_topics(settings.kafka.connection(), topics)
    try:
        with DaemonThread(settings, checkpoint) as running:
            detector, port = running.daemon, running.daemon.server.port
            produce(settings, settings.topics.input[0], values[:500])
            running.wait_accounted(500)
            assert readyz(port) == 200

            if isinstance(broker, ApacheKafka):
                broker.stop_node(1)  # the process only: its data stays for the restart
            else:
                broker.stop()
            outage_started = time.monotonic()
            wait_for(lambda: readyz(port) == 503, 15, "/readyz to report not ready")
            while time.monotonic() - outage_started < 10:
                assert running.thread.is_alive() and running.error is None
                time.sleep(0.5)
            assert readyz(port) == 503

            if isinstance(broker, ApacheKafka):
                broker.restart(1)
            else:  # memory-only: it comes back empty, so the topics are created again
                broker.start()
            ensure_topics(settings.kafka.connection(), topics)
            produce(settings, settings.topics.input[0], values[500:])
            wait_for(lambda: readyz(port) == 200, 60, "/readyz to report ready again")
            totals = running.wait_accounted(1000, timeout_s=120)
            reconnects = detector.metrics.registry.get_sample_value("stream_ae_broker_reconnects_total")
            outage_s = time.monotonic() - outage_started
        print(f"\nbroker outage: down ~10 s, ready again, reconnects={reconnects:.0f}, "
              f"events scored={totals['events_scored']}, recovered within {outage_s:.0f} s of the stop")
        assert running.error is None
        assert reconnects >= 1
        assert totals["events_scored"] >= 1000
    finally:
        broker.stop()
