"""How the Kafka clients are told to reach the cluster (:mod:`stream_ae.kafka.options`): the
mapping of a :class:`Connection` to kafka-python keywords and librdkafka properties, for
PLAINTEXT, SSL and SASL_SSL with files, and a repr that hides the password."""

from __future__ import annotations

import dataclasses

import pytest

from stream_ae.kafka.options import Connection, ProducerTuning

SECURE = Connection("b1:9093,b2:9093", client_id="detector-1", security_protocol="SASL_SSL",
                    sasl_mechanism="SCRAM-SHA-512", sasl_username="alice", sasl_password="s3cret!",
                    ssl_cafile="/etc/kafka/ca.pem", ssl_certfile="/etc/kafka/client.pem",
                    ssl_keyfile="/etc/kafka/client.key")


def test_plaintext_maps_to_kafka_python_keywords():
    assert Connection("localhost:9092").kafka_python() == {
        "bootstrap_servers": ["localhost:9092"], "client_id": "stream-ae", "security_protocol": "PLAINTEXT"}


def test_plaintext_maps_to_librdkafka_properties():
    assert Connection("a:1,b:2", client_id="x").librdkafka() == {
        "bootstrap.servers": "a:1,b:2", "client.id": "x", "security.protocol": "plaintext",
        "log.connection.close": False}


def test_several_bootstrap_servers_are_a_list_for_kafka_python():
    assert Connection("a:1,b:2,c:3").kafka_python()["bootstrap_servers"] == ["a:1", "b:2", "c:3"]


def test_sasl_ssl_with_files_maps_every_field_for_kafka_python():
    assert SECURE.kafka_python() == {
        "bootstrap_servers": ["b1:9093", "b2:9093"], "client_id": "detector-1", "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "alice", "sasl_plain_password": "s3cret!",
        "ssl_cafile": "/etc/kafka/ca.pem", "ssl_certfile": "/etc/kafka/client.pem",
        "ssl_keyfile": "/etc/kafka/client.key"}


def test_sasl_ssl_with_files_maps_every_field_for_librdkafka():
    assert SECURE.librdkafka() == {
        "bootstrap.servers": "b1:9093,b2:9093", "client.id": "detector-1", "security.protocol": "sasl_ssl",
        "log.connection.close": False,
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice", "sasl.password": "s3cret!",
        "ssl.ca.location": "/etc/kafka/ca.pem", "ssl.certificate.location": "/etc/kafka/client.pem",
        "ssl.key.location": "/etc/kafka/client.key"}


def test_sasl_credentials_without_a_mechanism_are_not_passed_on_but_ssl_files_are():
    ssl_only = dataclasses.replace(SECURE, security_protocol="SSL", sasl_mechanism=None)
    for options in (ssl_only.kafka_python(), ssl_only.librdkafka()):
        assert not any("sasl" in key for key in options), options
    assert ssl_only.kafka_python()["ssl_cafile"] == "/etc/kafka/ca.pem"
    assert ssl_only.librdkafka()["ssl.key.location"] == "/etc/kafka/client.key"
    assert ssl_only.librdkafka()["security.protocol"] == "ssl"


def test_each_call_builds_a_fresh_dict():
    connection = Connection("a:1")
    connection.kafka_python()["client_id"] = "changed"
    assert connection.kafka_python()["client_id"] == "stream-ae"


def test_the_repr_names_the_user_but_never_the_password():
    text = repr(SECURE)
    assert "s3cret!" not in text and "sasl_password" not in text
    assert "alice" in text and "b1:9093" in text
    assert "s3cret!" not in str(SECURE)


def test_a_connection_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SECURE.sasl_password = "other"  # type: ignore[misc]


def test_producer_tuning_promises_acks_all_and_idempotence():
    assert ProducerTuning.acks == "all" and ProducerTuning.idempotent is True
