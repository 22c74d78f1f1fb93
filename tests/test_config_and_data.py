"""Settings loading and validation; datasets, the split, training and the checkpoint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from stream_ae.model.autoencoders import build_model
from stream_ae.model.autoencoders.base import deep_hidden_sizes
from stream_ae.model.checkpoint import CheckpointError, load_checkpoint
from stream_ae.model.datasets import CARD_FEATURES, DatasetError, load_dataset, split_normal_rows
from stream_ae.pipeline.scoring.autoencoder import AutoencoderScorer
from stream_ae.service.config import ConfigError, load_settings
from tests.helpers import dataset_path


def test_yaml_then_environment_precedence(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("consumer:\n  max_batch_size: 64\n  group_id: from-yaml\nthreshold:\n  k: 2.5\n")
    monkeypatch.setenv("STREAM_AE_CONSUMER__GROUP_ID", "from-env")
    settings = load_settings(path)
    assert settings.consumer.max_batch_size == 64
    assert settings.consumer.group_id == "from-env"
    assert settings.threshold.k == 2.5
    assert settings.topics.alerts == "alerts"  # default kept


@pytest.mark.parametrize("text, field", [
    ("consumer:\n  max_batch_size: 0\n", "consumer.max_batch_size"),
    ("threshold:\n  k: -1\n", "threshold.k"),
    ("model:\n  device: tpu\n", "model.device"),
    ("kafka:\n  security_protocol: TLS\n", "kafka.security_protocol"),
    ("consumer:\n  max_batch_sise: 10\n", "consumer.max_batch_sise"),
    ("consumer:\n  session_timeout_ms: 6000\n  heartbeat_interval_ms: 7000\n", "consumer"),
    ("delivery:\n  guarantee: exactly-once\n", "delivery.guarantee"),
    ("delivery:\n  transaction_timeout_ms: 100\n", "delivery.transaction_timeout_ms"),
])
def test_invalid_values_fail_naming_the_field(tmp_path, text, field):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert field in str(error.value)


def test_invalid_environment_value_names_the_field(monkeypatch):
    monkeypatch.setenv("STREAM_AE_CONSUMER__MAX_WAIT_MS", "soon")
    with pytest.raises(ConfigError, match="consumer.max_wait_ms"):
        load_settings()


def test_exactly_once_reads_committed_and_names_a_stable_transactional_producer():
    assert load_settings().transaction_options() is None, "at-least-once is the default"
    assert not load_settings().consumer_options().read_committed
    settings = load_settings(delivery={"guarantee": "exactly_once"}, consumer={"group_id": "fraud"},
                             kafka={"client_id": "detector"})
    assert settings.consumer_options().read_committed
    assert settings.consumer_options().isolation_level == "read_committed"
    options = settings.transaction_options()
    assert options is not None and options.timeout_ms == 10_000
    assert options.transactional_id.startswith("fraud-detector-"), "group, client id, then the host name"
    assert options == settings.transaction_options(), "the same id at every start of this instance"
    named = load_settings(delivery={"guarantee": "exactly_once", "transactional_id": "fraud-0"})
    assert named.transaction_options().transactional_id == "fraud-0"


def test_secrets_stay_out_of_the_settings_repr():
    settings = load_settings(kafka={"sasl_mechanism": "PLAIN", "sasl_username": "u",
                                    "sasl_password": "hunter2", "security_protocol": "SASL_SSL"})
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    connection = settings.kafka.connection()
    assert "hunter2" not in repr(connection)
    assert connection.kafka_python()["sasl_plain_password"] == "hunter2"
    assert connection.librdkafka()["sasl.password"] == "hunter2"


def test_split_trains_on_normal_rows_only_and_covers_every_row():
    labels = np.array([0] * 90 + [1] * 10, np.int8)
    split = split_normal_rows(labels, 100, seed=1)
    fit = np.concatenate([split.train, split.validation])
    assert labels[fit].sum() == 0
    assert set(np.flatnonzero(labels)) <= set(split.test)
    assert sorted(np.concatenate([fit, split.test]).tolist()) == list(range(100))
    assert len(fit) == 72
    again = split_normal_rows(labels, 100, seed=1)
    assert np.array_equal(split.test, again.test)


def test_generic_table_needs_a_label_column(tmp_path):
    path = tmp_path / "table.csv"
    pd.DataFrame({"x": [1.0, 2.0], "y": [3.0, 4.0], "bad": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="label"):
        load_dataset(path)
    dataset = load_dataset(path, label_column="bad")
    assert dataset.feature_names == ["x", "y"] and dataset.labels.tolist() == [0, 1]


def test_card_csv_as_published_is_read(tmp_path):
    columns = ["Time", *CARD_FEATURES, "Class"]
    rows = np.arange(3 * len(columns), dtype=float).reshape(3, len(columns))
    rows[:, -1] = [0, 1, 0]
    path = tmp_path / "creditcard.csv"
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    dataset = load_dataset(path)
    assert dataset.kind == "transaction" and dataset.feature_names == CARD_FEATURES
    assert dataset.values.shape == (3, 29) and dataset.labels.tolist() == [0, 1, 0]


@pytest.mark.data
def test_real_datasets_load_with_their_layouts():
    card = load_dataset(dataset_path("creditcard/creditcard_subset.parquet"))
    assert card.values.shape == (28387, 29) and int(card.labels.sum()) == 473
    ecg = load_dataset(dataset_path("ecg5000/ecg5000.parquet"))
    assert ecg.kind == "window" and ecg.window_length == 140
    assert int((ecg.labels == 0).sum()) == 2919


def test_deep_model_matches_the_reference_shape():
    assert deep_hidden_sizes(29) == [16, 8, 4]
    model = build_model("deep", 29)
    widths = [layer.out_features for layer in model.modules() if isinstance(layer, torch.nn.Linear)]
    assert widths == [16, 8, 4, 8, 16, 29]
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope", 29)


def test_checkpoint_round_trip_scores_identically(synthetic_checkpoint, tmp_path):
    checkpoint, path = synthetic_checkpoint
    loaded = load_checkpoint(path)
    assert loaded.sha256 and loaded.feature_names == checkpoint.feature_names
    assert loaded.training["split"]["test"].tolist() == checkpoint.training["split"]["test"].tolist()
    rows = np.random.default_rng(0).normal(size=(50, 29)).astype(np.float32)
    np.testing.assert_allclose(AutoencoderScorer(checkpoint, "cpu").score(rows).score,
                               AutoencoderScorer(loaded, "cpu").score(rows).score, rtol=1e-6)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")


def test_training_separates_synthetic_anomalies(synthetic_checkpoint):
    from sklearn.metrics import roc_auc_score

    from stream_ae.model.datasets import synthetic_transactions

    checkpoint, _ = synthetic_checkpoint
    dataset = synthetic_transactions(rows=6000)
    test = checkpoint.training["split"]["test"]
    errors = AutoencoderScorer(checkpoint, "cpu").score(dataset.values[test]).score
    assert roc_auc_score(dataset.labels[test], errors) > 0.8
    assert checkpoint.error_std > 0 and checkpoint.training["epochs_run"] >= 1
