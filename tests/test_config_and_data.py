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
from stream_ae.model.detector import build_detector
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


@pytest.mark.parametrize("flag, env, file, expected", [
    ("from-flag", "from-env", "from-file", "from-flag"),
    (None, "from-env", "from-file", "from-env"),
    (None, None, "from-file", "from-file"),
    (None, None, None, "stream-ae"),
], ids=["flag over all", "environment over file", "file over default", "default"])
def test_flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults(
        tmp_path, monkeypatch, flag, env, file, expected):
    monkeypatch.delenv("STREAM_AE_CONSUMER__GROUP_ID", raising=False)
    path = tmp_path / "config.yaml"
    path.write_text(f"consumer:\n  group_id: {file}\n  max_batch_size: 64\n" if file else "{}\n")
    if env:
        monkeypatch.setenv("STREAM_AE_CONSUMER__GROUP_ID", env)
    flags = {"consumer": {"group_id": flag}} if flag else {}
    settings = load_settings(path, **flags)
    assert settings.consumer.group_id == expected
    assert settings.consumer.max_batch_size == (64 if file else 4096), "the other fields of a section stay"


@pytest.mark.parametrize("text, topics", [
    ("events", ["events"]),
    ("a,b", ["a", "b"]),
    (" a , b ,", ["a", "b"]),
    ('["a", "b"]', ["a", "b"]),
])
def test_a_list_in_the_environment_is_json_or_comma_separated(monkeypatch, text, topics):
    monkeypatch.setenv("STREAM_AE_TOPICS__INPUT", text)
    monkeypatch.setenv("STREAM_AE_CONSUMER__STATIC_PARTITIONS", text.replace("a", "a:0").replace("b", "b:1")
                       if "," in text else '["events:2"]')
    settings = load_settings()
    assert settings.topics.input == topics
    assert settings.consumer.static_partitions == ([f"{t}:{n}" for t, n in zip(topics, (0, 1))] if "," in text
                                                   else ["events:2"])


def test_a_malformed_environment_list_is_one_line_naming_the_field(monkeypatch):
    monkeypatch.setenv("STREAM_AE_TOPICS__INPUT", '["a", ')
    with pytest.raises(ConfigError, match=r"^invalid configuration: topics.input: .* neither a JSON list") as error:
        load_settings()
    assert "\n" not in str(error.value)


def test_invalid_environment_value_names_the_field(monkeypatch):
    monkeypatch.setenv("STREAM_AE_CONSUMER__MAX_WAIT_MS", "soon")
    with pytest.raises(ConfigError, match="consumer.max_wait_ms"):
        load_settings()


def test_null_in_the_environment_clears_an_optional_field(tmp_path, monkeypatch):
    """docker-compose.yml passes STREAM_AE_TOPICS__SCORES=null unless a scores topic is asked for."""
    path = tmp_path / "c.yaml"
    path.write_text("topics:\n  scores: every-score\n")
    assert load_settings(path).topics.scores == "every-score"
    monkeypatch.setenv("STREAM_AE_TOPICS__SCORES", "null")
    assert load_settings(path).topics.scores is None
    assert "every-score" not in load_settings(path).topics.outputs()
    monkeypatch.setenv("STREAM_AE_THRESHOLD__HALF_LIFE_EVENTS", "null")
    with pytest.raises(ConfigError, match="threshold.half_life_events"):
        load_settings(path)


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


def write_table(path, columns: dict) -> str:
    """Write ``columns`` as a CSV, parquet or npz file by ``path``'s suffix; returns the path as text."""
    if path.suffix == ".npz":
        np.savez(path, **columns)
    elif path.suffix == ".parquet":
        pd.DataFrame(columns).to_parquet(path)
    else:
        pd.DataFrame(columns).to_csv(path, index=False)
    return str(path)


CARD_COLUMNS = {name: np.linspace(-1, 1, 40) * (i + 1) for i, name in enumerate(CARD_FEATURES)}


@pytest.mark.parametrize("name, columns, kwargs, message", [
    ("text.csv", {"x": [1.0, 2.0], "city": ["a", "b"], "label": [0, 1]}, {"label_column": "label"},
     "column 'city' is not numeric; pass --ignore-non-numeric"),
    ("text-label.csv", {"x": [1.0, 2.0], "y": [1.0, 0.0], "label": ["no", "yes"]}, {"label_column": "label"},
     "label column 'label' is not numeric"),
    ("card.parquet", CARD_COLUMNS, {}, "no label column 'Class' (the card-transaction layout's); pass --unlabelled"),
    ("card-labelled.parquet", {**CARD_COLUMNS, "Class": np.zeros(40)}, {"unlabelled": True},
     "has the label column 'Class', but --unlabelled says every row is normal"),
    ("no-layout.csv", {"x": [1.0], "y": [2.0]}, {}, "name the label column with --label-column, or pass --unlabelled"),
    ("both.csv", {"x": [1.0], "y": [2.0]}, {"label_column": "y", "unlabelled": True}, "contradict each other"),
    ("missing-label.csv", {"x": [1.0], "y": [2.0]}, {"label_column": "z"}, "label column 'z' not found"),
    ("short-y.npz", {"X": np.zeros((5, 3)), "y": np.zeros(4)}, {}, "y has shape (4,) but X has 5 rows"),
    ("long-y.npz", {"X": np.zeros((5, 3)), "y": np.zeros(6)}, {}, "y has shape (6,) but X has 5 rows"),
    ("flat-x.npz", {"X": np.zeros(5), "y": np.zeros(5)}, {}, "X has shape (5,); expected (rows, features)"),
    ("no-y.npz", {"X": np.zeros((5, 3))}, {}, "no label column 'y'"),
    ("text-x.npz", {"X": np.array([["a", "b"], ["c", "d"]]), "y": np.zeros(2)}, {}, "X holds <U1 values"),
    ("one-feature.npz", {"X": np.zeros((5, 1)), "y": np.zeros(5)}, {}, "at least 2 features"),
    ("nan.csv", {"x": [1.0, None], "y": [2.0, 3.0], "label": [0, 1]}, {"label_column": "label"},
     "1 feature values are empty, NaN or infinite (in 'x')"),
])
def test_a_dataset_is_checked_up_front_and_every_message_names_the_file(tmp_path, name, columns, kwargs, message):
    path = write_table(tmp_path / name, columns)
    with pytest.raises(DatasetError) as error:
        load_dataset(path, **kwargs)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value), str(error.value)


def test_what_the_user_asks_for_is_read(tmp_path):
    text = write_table(tmp_path / "text.csv", {"x": [1.0, 2.0], "city": ["a", "b"], "y": [3, 4], "label": [0, 1]})
    assert load_dataset(text, "label", ignore_non_numeric=True).feature_names == ["x", "y"]
    card = load_dataset(write_table(tmp_path / "card.parquet", CARD_COLUMNS), unlabelled=True)
    assert card.labels is None and card.values.shape == (40, 29)
    npz = load_dataset(write_table(tmp_path / "x.npz", {"X": np.ones((5, 3))}), unlabelled=True)
    assert npz.labels is None and npz.feature_names == ["x0", "x1", "x2"]


@pytest.mark.parametrize("options, message", [
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"batch_size": -1}, "batch_size must be at least 1"),
    ({"patience": 0}, "patience must be at least 1"),
    ({"learning_rate": 0.0}, "learning_rate must be a positive number"),
    ({"learning_rate": float("nan")}, "learning_rate must be a positive number"),
    ({"device": "banana"}, "device 'banana' is not one of auto, cpu, cuda or cuda:N"),
])
def test_impossible_hyper_parameters_are_refused(options, message):
    from stream_ae.model.training import TrainingOptions

    with pytest.raises(ValueError, match=message):
        TrainingOptions(**options)


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
    np.testing.assert_allclose(build_detector(checkpoint, "cpu").score(rows).score,
                               build_detector(loaded, "cpu").score(rows).score, rtol=1e-6)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")


def test_training_separates_synthetic_anomalies(synthetic_checkpoint):
    from sklearn.metrics import roc_auc_score

    from stream_ae.model.datasets import synthetic_transactions

    checkpoint, _ = synthetic_checkpoint
    dataset = synthetic_transactions(rows=6000)
    test = checkpoint.training["split"]["test"]
    errors = build_detector(checkpoint, "cpu").score(dataset.values[test]).score
    assert roc_auc_score(dataset.labels[test], errors) > 0.8
    assert checkpoint.score_std > 0 and checkpoint.training["epochs_run"] >= 1
