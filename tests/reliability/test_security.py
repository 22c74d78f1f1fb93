"""Security: SASL/TLS settings reach the Kafka clients, secrets never reach the logs, and the
metrics/health server binds the configured address (loopback by default).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import urllib.request

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from stream_ae.kafka.local_broker import free_port
from stream_ae.kafka.topics import ensure_topics
from stream_ae.model.datasets import CARD_FEATURES, synthetic_transactions
from stream_ae.pipeline.codec import encode_event
from stream_ae.service.config import ConfigError, Settings, load_settings
from stream_ae.tools.daemon_thread import DaemonThread
from tests.helpers import DaemonProcess, detector_settings, produce, wait_for

SECRET = "pa55-Wh1sper-7f3c9e"          # would never appear in a log line by chance
ENV_SECRET = "env-0nly-S3cret-41d2b8"
MASK = "**********"
SECURITY_YAML = f"""
kafka:
  bootstrap_servers: broker-1.example:9093,broker-2.example:9093
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_username: stream-ae
  sasl_password: {SECRET}
  ssl_cafile: /etc/stream-ae/tls/ca.pem
  ssl_certfile: /etc/stream-ae/tls/client.pem
  ssl_keyfile: /etc/stream-ae/tls/client.key
"""


def some_events(count: int) -> list[bytes]:
    dataset = synthetic_transactions(rows=2000)
    return [encode_event(dataset.values[i], CARD_FEATURES, False, f"e{i}") for i in range(count)]


def test_sasl_and_tls_settings_from_yaml_and_env_reach_the_client_options(tmp_path, monkeypatch):
    for name in [name for name in os.environ if name.startswith("STREAM_AE_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "config.yaml"
    config.write_text(SECURITY_YAML)

    options = load_settings(config).kafka.connection().kafka_python()
    assert options == {
        "bootstrap_servers": ["broker-1.example:9093", "broker-2.example:9093"],
        "client_id": "stream-ae",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "stream-ae",
        "sasl_plain_password": SECRET,
        "ssl_cafile": "/etc/stream-ae/tls/ca.pem",
        "ssl_certfile": "/etc/stream-ae/tls/client.pem",
        "ssl_keyfile": "/etc/stream-ae/tls/client.key",
    }
    # every option is one that kafka-python's consumer, producer and admin client accept
    for client in (KafkaConsumer, KafkaProducer, KafkaAdminClient):
        assert set(options) <= set(client.DEFAULT_CONFIG), client.__name__

    # the environment overrides the file, field by field (a secret from a Kubernetes Secret, say)
    monkeypatch.setenv("STREAM_AE_KAFKA__SASL_PASSWORD", ENV_SECRET)
    monkeypatch.setenv("STREAM_AE_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("STREAM_AE_KAFKA__SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("STREAM_AE_KAFKA__SSL_CAFILE", "/run/secrets/ca.pem")
    settings = load_settings(config)
    options = settings.kafka.connection().kafka_python()
    assert options["sasl_plain_password"] == ENV_SECRET
    assert options["sasl_mechanism"] == "PLAIN"
    assert options["security_protocol"] == "SSL"
    assert options["ssl_cafile"] == "/run/secrets/ca.pem"
    assert options["sasl_plain_username"] == "stream-ae"  # still from the file

    # the settings' printable forms mask the secret
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.kafka),
                 repr(settings.kafka.connection())):
        assert ENV_SECRET not in text and SECRET not in text
    assert f'"sasl_password":"{MASK}"' in settings.model_dump_json()

    # a configuration error names the field, not the secret beside it
    monkeypatch.setenv("STREAM_AE_KAFKA__SASL_MECHANISM", "KERBEROS")
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert "kafka.sasl_mechanism" in str(error.value)
    assert ENV_SECRET not in str(error.value) and SECRET not in str(error.value)


@pytest.mark.integration
def test_an_in_process_detector_passes_the_secret_to_its_clients_and_never_logs_it(
        broker, topic_names, synthetic_checkpoint, caplog):
    checkpoint, path = synthetic_checkpoint
    # PLAINTEXT: the SASL settings travel to the clients, which use them only on SASL_* listeners
    settings = detector_settings(broker, topic_names, path, topics={"state": topic_names("state")}, kafka={
        "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "detector", "sasl_password": SECRET})
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: 2})
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="kafka")  # kafka-python's own INFO lines too
    with DaemonThread(settings, checkpoint) as running:
        produce(settings, topic, some_events(200))
        totals = running.wait_accounted(200)
        consumer_config = running.daemon.source.consumer.config
        producer_config = running.daemon.sink.producer.config
        metrics_text = urllib.request.urlopen(
            f"http://127.0.0.1:{running.daemon.server.port}/metrics", timeout=5).read().decode()
    assert totals["events_scored"] == 200
    for config in (consumer_config, producer_config):
        assert config["sasl_mechanism"] == "SCRAM-SHA-256"
        assert config["sasl_plain_username"] == "detector"
        assert config["sasl_plain_password"] == SECRET
        assert config["security_protocol"] == "PLAINTEXT"

    logged = caplog.text + "\n".join(str(record.args) for record in caplog.records)
    settings_lines = [record.getMessage() for record in caplog.records
                      if record.getMessage().startswith("settings: ")]
    assert len(settings_lines) == 1
    assert f'"sasl_password":"{MASK}"' in settings_lines[0]
    assert '"sasl_username":"detector"' in settings_lines[0]
    assert any("partitions assigned" in record.getMessage() for record in caplog.records)
    assert SECRET not in logged
    assert SECRET not in metrics_text


class DebugDaemon(DaemonProcess):
    """The daemon at the most verbose log level an operator can choose."""

    def start(self, env: dict[str, str] | None = None) -> DebugDaemon:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream_ae", "--log-level", "DEBUG", "run", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        return self


@pytest.mark.integration
def test_the_daemon_never_logs_a_password_given_by_environment_even_at_debug(
        broker, topic_names, synthetic_checkpoint, tmp_path):
    _, path = synthetic_checkpoint
    settings = detector_settings(broker, topic_names, path, topics={"state": topic_names("state")},
                                 kafka={"sasl_username": "detector"})
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: 2})
    daemon = DebugDaemon(settings, tmp_path, "secret")
    daemon.start(env={"STREAM_AE_KAFKA__SASL_PASSWORD": ENV_SECRET,
                      "STREAM_AE_KAFKA__SASL_MECHANISM": "PLAIN"})
    try:
        daemon.wait_ready()
        produce(settings, topic, some_events(100))
        wait_for(lambda: daemon.value("stream_ae_events_scored_total") >= 100, 60, "100 events scored")
        metrics_text = urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=5).read()
    finally:
        exit_code = daemon.terminate()
    assert exit_code == 0
    log = daemon.log_path.read_text()
    settings_lines = [line for line in log.splitlines() if " settings: " in line]
    assert len(settings_lines) == 1, log[-3000:]
    assert f'"sasl_password":"{MASK}"' in settings_lines[0]  # the env value arrived, masked
    assert '"sasl_mechanism":"PLAIN"' in settings_lines[0]
    assert ENV_SECRET not in log
    assert ENV_SECRET.encode() not in metrics_text
    assert ENV_SECRET not in daemon.config.read_text()


def test_the_metrics_server_binds_loopback_by_default(monkeypatch):
    for name in [name for name in os.environ if name.startswith("STREAM_AE_")]:
        monkeypatch.delenv(name)
    assert Settings().metrics.host == "127.0.0.1"
    assert load_settings().metrics.host == "127.0.0.1"
    monkeypatch.setenv("STREAM_AE_METRICS__HOST", "0.0.0.0")  # the container's setting
    assert load_settings().metrics.host == "0.0.0.0"


def get(url: str) -> int:
    return urllib.request.urlopen(url, timeout=5).status


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.integration
def test_the_metrics_server_answers_on_the_configured_address_only(broker, topic_names, synthetic_checkpoint):
    checkpoint, path = synthetic_checkpoint
    default = detector_settings(broker, topic_names, path, topics={"state": topic_names("state")})
    assert default.metrics.host == "127.0.0.1"
    with DaemonThread(default, checkpoint) as running:
        server = running.daemon.server
        assert server.server.server_address[0] == "127.0.0.1"
        assert get(f"http://127.0.0.1:{server.port}/healthz") == 200
        assert refused("127.0.0.2", server.port)

    port = free_port()
    elsewhere = detector_settings(broker, topic_names, path, topics={"state": topic_names("state")},
                                  metrics={"host": "127.0.0.2", "port": port})
    with DaemonThread(elsewhere, checkpoint) as running:
        assert running.daemon.server.server.server_address == ("127.0.0.2", port)
        assert get(f"http://127.0.0.2:{port}/healthz") == 200
        assert get(f"http://127.0.0.2:{port}/readyz") == 200
        assert b"stream_ae_events_consumed_total" in urllib.request.urlopen(
            f"http://127.0.0.2:{port}/metrics", timeout=5).read()
        assert refused("127.0.0.1", port), "nothing answers on 127.0.0.1 at the same port"
