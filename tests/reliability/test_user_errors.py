"""What a new user hits first (issue 15), through the real command line and the daemon as a
process: every failure ends in one line ``stream-ae CMD: error: ...`` with exit 2 (usage or
input) or 1 (runtime fault) and no traceback, and the daemon loses nothing.

- the daemon and poison records: a 9 MiB record (over the producer's 8 MiB limit) and a
  dead letter over a lowered ``kafka.max_request_bytes`` go as references; a score record
  over the limit is refused for good, counted and logged once; values whose score would
  not be finite (1e20, 3e38, 10**30, NaN) and every kind of the property-based bad-input
  suite (``test_bad_input.py``) are dead-lettered with their reason; every batch commits;
- the broker: ``run`` says in one line that the cluster is unreachable, answers 503 on
  ``/readyz`` and keeps trying until a broker comes; ``replay`` exits; a taken metrics port;
- training and evaluation input: files checked up front, naming the file; impossible
  hyper-parameters refused by the parser; the output checked before training; a random-bytes
  checkpoint; data other than the training data warned about;
- the command line: flags over the environment, comma-separated lists, ``--log-level``
  after the sub-command, help for every flag.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from kafka import KafkaProducer

from stream_ae.cli import build_parser
from stream_ae.kafka.local_broker import LocalBroker, free_port
from stream_ae.kafka.topics import ensure_topics, read_topic
from stream_ae.model.datasets import CARD_FEATURES
from stream_ae.pipeline.alerts import DETAIL_HEADER, REASON_HEADER, SOURCE_HEADER
from stream_ae.service.config import load_settings
from tests.helpers import DATASET, DaemonProcess, committed_offsets, detector_settings, events, produce, wait_for

CLEAN_ENV = {name: value for name, value in os.environ.items() if not name.startswith("STREAM_AE_")}


def stream_ae(*args: str, env: dict[str, str] | None = None, timeout_s: float = 180) -> subprocess.CompletedProcess:
    """``python -m stream_ae ARGS`` with none of the caller's ``STREAM_AE_...`` variables."""
    return subprocess.run([sys.executable, "-m", "stream_ae", *args], capture_output=True, text=True,
                          timeout=timeout_s, env={**CLEAN_ENV, "PYTHONUNBUFFERED": "1", **(env or {})})


def assert_one_line_error(result: subprocess.CompletedProcess, command: str, code: int, *phrases: str) -> str:
    """The run failed with ``code`` and its stderr ends in ``stream-ae COMMAND: error: ...``
    holding every phrase, with no traceback; returns that line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr[-3000:]
    assert lines and lines[-1].startswith(f"stream-ae {command}: error: "), result.stderr[-3000:]
    for phrase in phrases:
        assert phrase in lines[-1], (phrase, lines[-1])
    assert "Traceback" not in result.stderr
    return lines[-1]


def readyz(port: int) -> int | None:
    """The status of ``/readyz``; None while nothing answers."""
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3).status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


# -- input files -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good and bad dataset files, a checkpoint trained on the good one (through the CLI),
    and a checkpoint file of random bytes."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(15)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (rng.random(400) < 0.05).astype(np.int8)
    paths = {name: folder / name for name in (
        "good.npz", "other.npz", "short_y.npz", "long_y.npz", "flat_x.npz", "text.csv", "card.parquet",
        "model.pt", "random.pt")}
    np.savez(paths["good.npz"], X=x, y=y)
    np.savez(paths["other.npz"], X=rng.gamma(2.0, 3.0, size=(300, 6)), y=(rng.random(300) < 0.1).astype(np.int8))
    np.savez(paths["short_y.npz"], X=x, y=y[:300])
    np.savez(paths["long_y.npz"], X=x, y=np.concatenate([y, y]))
    np.savez(paths["flat_x.npz"], X=x[:, 0], y=y)
    table = pd.DataFrame(x[:, :4], columns=list("abcd"))
    table["city"] = rng.choice(["Brussels", "Liège"], 400)
    table["label"] = y
    table.to_csv(paths["text.csv"], index=False)
    pd.DataFrame(DATASET.values[:300], columns=CARD_FEATURES).to_parquet(paths["card.parquet"])  # no Class
    paths["random.pt"].write_bytes(os.urandom(4096))
    trained = stream_ae("train", "--data", str(paths["good.npz"]), "--epochs", "3", "--device", "cpu",
                        "--output", str(paths["model.pt"]))
    assert trained.returncode == 0, trained.stderr[-3000:]
    return paths


@pytest.mark.parametrize("arguments, phrases", [
    (["--data", "text.csv", "--label-column", "label"], ["text.csv: column 'city' is not numeric",
                                                         "--ignore-non-numeric"]),
    (["--data", "card.parquet"], ["card.parquet: no label column 'Class'", "--unlabelled"]),
    (["--data", "short_y.npz"], ["short_y.npz: y has shape (300,) but X has 400 rows"]),
    (["--data", "long_y.npz"], ["long_y.npz: y has shape (800,) but X has 400 rows"]),
    (["--data", "flat_x.npz"], ["flat_x.npz: X has shape (400,); expected (rows, features)"]),
    (["--data", "absent.csv"], ["dataset file not found", "absent.csv"]),
    (["--data", "good.npz", "--epochs", "0"], ["argument --epochs: 0 is too small: it must be at least 1"]),
    (["--data", "good.npz", "--epochs", "-1"], ["argument --epochs: -1 is too small"]),
    (["--data", "good.npz", "--batch-size", "0"], ["argument --batch-size: 0 is too small"]),
    (["--data", "good.npz", "--learning-rate", "0"], ["argument --learning-rate: 0 is too small: it must be above 0"]),
    (["--data", "good.npz", "--device", "banana"], ["argument --device: 'banana' is not one of auto, cpu, cuda"]),
    (["--data", "good.npz", "--output", "text.csv/sub/model.pt"], ["argument --output: cannot write",
                                                                   "text.csv is a file, not a folder"]),
], ids=["text column", "card without Class", "short y", "long y", "1-D X", "missing file", "epochs 0",
        "epochs -1", "batch size 0", "learning rate 0", "unknown device", "unwritable output"])
def test_train_refuses_bad_input_up_front_in_one_line_and_writes_nothing(files, tmp_path, arguments, phrases):
    folder = files["good.npz"].parent
    arguments = [str(folder / value) if value.endswith((".csv", ".npz", ".parquet", ".pt")) else value
                 for value in arguments]
    output = [] if "--output" in arguments else ["--output", str(tmp_path / "model.pt")]
    device = [] if "--device" in arguments else ["--device", "cpu"]
    result = stream_ae("train", *arguments, *output, *device)
    assert_one_line_error(result, "train", 2, *phrases)
    assert "training deep" not in result.stderr, "refused before any training (no progress bar)"
    assert list(tmp_path.iterdir()) == [], "no checkpoint written"


@pytest.mark.parametrize("name, flag", [("text.csv", "--ignore-non-numeric"), ("card.parquet", "--unlabelled")])
def test_what_train_refuses_it_reads_when_asked_explicitly(files, tmp_path, name, flag):
    label = ["--label-column", "label"] if name == "text.csv" else []
    result = stream_ae("train", "--data", str(files[name]), *label, flag, "--epochs", "1", "--device", "cpu",
                       "--output", str(tmp_path / "model.pt"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "model.pt").is_file()


def test_a_checkpoint_of_random_bytes_is_our_one_line_error(files, tmp_path):
    noise = str(files["random.pt"])
    for command, arguments in (("evaluate", ["--model", noise, "--data", str(files["good.npz"]),
                                             "--report", str(tmp_path / "report")]),
                               ("run", ["--checkpoint", noise, "--bootstrap-servers", "127.0.0.1:1"])):
        result = stream_ae(command, *arguments)
        assert_one_line_error(result, command, 2, f"{files['random.pt']} is not a stream-ae checkpoint")
        assert "weights_only" not in result.stderr and "torch" not in result.stderr


def test_evaluate_warns_when_the_data_is_not_what_the_model_was_trained_on(files, tmp_path):
    other = stream_ae("evaluate", "--model", str(files["model.pt"]), "--data", str(files["other.npz"]),
                      "--device", "cpu", "--report", str(tmp_path / "other"))
    assert other.returncode == 0, other.stderr[-3000:]
    warnings = [line for line in other.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and f"{files['other.npz']} is not the file {files['model.pt']} was trained on " \
        "(good, sha256 " in warnings[0]
    same = stream_ae("evaluate", "--model", str(files["model.pt"]), "--data", str(files["good.npz"]),
                     "--device", "cpu", "--report", str(tmp_path / "same"))
    assert same.returncode == 0 and " WARNING " not in same.stderr


def test_debug_shows_the_traceback_and_still_ends_in_the_one_line(files, tmp_path):
    result = stream_ae("train", "--data", str(files["short_y.npz"]), "--log-level", "DEBUG",
                       "--output", str(tmp_path / "model.pt"))
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr and "DatasetError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("stream-ae train: error: ")


def test_log_level_is_taken_after_the_sub_command_too(files, tmp_path):
    result = stream_ae("train", "--data", str(files["good.npz"]), "--epochs", "1", "--device", "cpu",
                       "--output", str(tmp_path / "model.pt"), "--log-level", "WARNING")
    assert result.returncode == 0, result.stderr[-3000:]


# -- settings on the command line --------------------------------------------------------------

def test_a_flag_beats_the_environment_and_a_comma_separated_list_is_taken(files):
    # the flag names the random file and the environment a good one: the error shows which won
    result = stream_ae("run", "--checkpoint", str(files["random.pt"]),
                       env={"STREAM_AE_MODEL__CHECKPOINT": str(files["model.pt"]),
                            "STREAM_AE_TOPICS__INPUT": "events,payments"})
    assert_one_line_error(result, "run", 2, str(files["random.pt"]))  # the settings were valid


def test_a_wrong_setting_is_one_line_naming_the_field_and_the_missing_config_file(files, tmp_path):
    bad = stream_ae("run", "--checkpoint", str(files["model.pt"]), env={"STREAM_AE_CONSUMER__MAX_WAIT_MS": "soon"})
    assert_one_line_error(bad, "run", 2, "invalid configuration: consumer.max_wait_ms: Input should be a valid integer")
    missing = stream_ae("run", "--config", str(tmp_path / "absent.yaml"))
    assert_one_line_error(missing, "run", 2, f"cannot read config file {tmp_path / 'absent.yaml'}: No such file")


@pytest.mark.parametrize("arguments, phrase", [
    (["--rate", "-100"], "argument --rate: -100 is too small: it must be above 0"),
    (["--rate", "0"], "argument --rate: 0 is too small"),
    (["--limit", "0"], "argument --limit: 0 is too small: it must be at least 1"),
    (["--limit", "-1"], "argument --limit: -1 is too small"),
    (["--partitions", "0"], "argument --partitions: 0 is too small: it must be at least 1"),
    (["--limit", "ten"], "argument --limit: 'ten' is not a whole number"),
])
def test_replay_arguments_are_checked_by_the_parser(files, arguments, phrase):
    result = stream_ae("replay", "--data", str(files["good.npz"]), *arguments, "--bootstrap-servers", "127.0.0.1:1")
    assert_one_line_error(result, "replay", 2, phrase)


def test_every_flag_has_help_with_its_default_and_the_help_has_no_internal_text():
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, command in [("stream-ae", parser), *subcommands.items()]:
        text = command.format_help()
        assert "``" not in text and ":mod:" not in text, name
        for action in command._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, (name, action.option_strings)
            if action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in command._get_formatter()._get_help_string(action), (name, action.option_strings)
    assert "calls one module" not in parser.format_help()


# -- the broker --------------------------------------------------------------------------------

def closed_port() -> int:
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


def test_replay_with_no_broker_exits_in_one_line_within_seconds(files):
    started = time.monotonic()
    result = stream_ae("replay", "--data", str(files["good.npz"]), "--bootstrap-servers", f"127.0.0.1:{closed_port()}")
    assert_one_line_error(result, "replay", 1, "no broker of 127.0.0.1:", "answered within 3 s")
    assert time.monotonic() - started < 60, "the probe gives up in seconds (the rest is start-up on a busy CPU)"


def test_a_taken_metrics_port_is_one_line_and_exit_1(files):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = stream_ae("run", "--checkpoint", str(files["model.pt"]), "--bootstrap-servers", "127.0.0.1:1",
                           env={"STREAM_AE_METRICS__PORT": str(port)})
    assert_one_line_error(result, "run", 1, f"cannot serve metrics on 127.0.0.1:{port}: Address already in use",
                          "metrics.port")


@pytest.mark.integration
def test_run_waits_for_an_unreachable_broker_not_ready_and_serves_once_it_comes(
        synthetic_checkpoint, topic_names, tmp_path):
    _, path = synthetic_checkpoint
    port = closed_port()
    settings = load_settings(kafka={"bootstrap_servers": f"127.0.0.1:{port}"}, model={"checkpoint": str(path)},
                             topics={"input": [topic_names("events")], "alerts": topic_names("alerts"),
                                     "dead_letter": topic_names("dead"), "state": None},
                             consumer={"group_id": topic_names("group"), "session_timeout_ms": 6000,
                                       "heartbeat_interval_ms": 1000, "max_wait_ms": 50})
    daemon = DaemonProcess(settings, tmp_path, "waiting").start()
    broker = None
    try:
        wait_for(lambda: "unreachable" in daemon.log_path.read_text(), 60, "the daemon to say the broker is away")
        assert readyz(daemon.port) == 503
        time.sleep(12)  # two more attempts at least
        assert daemon.process.poll() is None, daemon.log_path.read_text()[-3000:]
        assert readyz(daemon.port) == 503
        broker = LocalBroker(port=port, log_path=tmp_path / "broker.log").start()
        ensure_topics(settings.kafka.connection(), {settings.topics.input[0]: 1})
        daemon.wait_ready(timeout_s=120)
        produce(settings, settings.topics.input[0], events(np.arange(20)))
        wait_for(lambda: daemon.value("stream_ae_events_scored_total") >= 20, 90, "the events to be scored")
    finally:
        exit_code = daemon.terminate()
        if broker is not None:
            broker.stop()
    log = daemon.log_path.read_text()
    assert exit_code == 0, log[-3000:]
    said = [line for line in log.splitlines() if "unreachable" in line]
    assert len(said) == 1 and f"Kafka cluster at 127.0.0.1:{port} unreachable" in said[0], said
    assert "answers after" in log
    assert "Traceback" not in log and " ERROR kafka" not in log, log[-3000:]


# -- the daemon and poison records -------------------------------------------------------------

def produce_large(settings, topic: str, values: list[bytes]) -> None:
    """Produce with a client whose request limit (32 MiB) is above the daemon's."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, max_request_size=32 << 20)
    try:
        for value in values:
            producer.send(topic, value)
        producer.flush(60)
    finally:
        producer.close()


def card_event(event_id: str, **values: object) -> bytes:
    """A JSON card event of :data:`DATASET`'s first row, with ``values`` written over it as
    raw JSON text (``V1="1e20"``: the token as written)."""
    event = orjson.dumps({"id": event_id, **dict(zip(CARD_FEATURES, DATASET.values[0].tolist()))})
    for name, token in values.items():
        event = event.replace(f'"{name}":'.encode(), f'"{name}":{token},"_{name}":'.encode(), 1)
    return event


POISON = [  # (value, reason of its dead letter, the start of its detail)
    (b'{"id": "x", "V1": ' + b"x" * (9 << 20) + b"}", "oversize", "9437"),
    (card_event("p1", V1="1e20"), "out_of_range", "feature 'V1' = 1e+20 lies"),
    (card_event("p2", V2="1e25"), "out_of_range", "feature 'V2' = 1e+25 lies"),
    (card_event("p3", V3="3e38"), "out_of_range", "feature 'V3' = 3e+38 lies"),
    (card_event("p4", Amount="1" + "0" * 30), "out_of_range", "feature 'Amount' = 1e+30 lies"),
    (card_event("p5", V4="NaN"), "non_finite", "feature 'V4' is NaN"),
    (card_event("p6", V5="Infinity"), "non_finite", "feature 'V5' is Infinity"),
    (card_event("p7", V6="1e300"), "non_finite", "feature 'V6' = 1e300 is beyond float32's range"),
    (card_event("p8")[:40], "invalid_json", ""),
    (card_event("p9", V7='"1.5"'), "non_numeric", "feature: str"),
    (card_event("p10").replace(b'"V8":', b'"W8":'), "missing_field", "field 'V8' is absent"),
    (b"\xff" + card_event("p11"), "not_utf8", ""),
    (b"", "empty", "record has no value"),
    (b"[1, 2, 3]", "not_an_object", "JSON list"),
    (b"\xaeA\x01\x00\x02\x00\x00\x00" + b"\x00" * 8, "binary_wrong_count", "2 values, expected 29"),
]


@pytest.mark.integration
def test_no_record_stops_the_daemon_and_each_is_scored_or_dead_lettered_with_its_reason(
        broker, topic_names, synthetic_checkpoint, tmp_path):
    _, path = synthetic_checkpoint
    settings = detector_settings(broker, topic_names, path, topics={"state": topic_names("state")})
    topic = settings.topics.input[0]
    # the input topic takes the 9 MiB record (Apache Kafka refuses records over 1 MiB by default;
    # Tansu has no limit); the daemon's own producer limit stays 8 MiB
    ensure_topics(settings.kafka.connection(), {topic: 1}, configs={"max.message.bytes": str(32 << 20)})
    ensure_topics(settings.kafka.connection(), {settings.topics.dead_letter: 1, settings.topics.scores: 1})
    good = events(np.arange(30))
    values = good[:10] + [value for value, _, _ in POISON] + good[10:]
    daemon = DaemonProcess(settings, tmp_path, "poison").start()
    try:
        daemon.wait_ready()
        produce_large(settings, topic, values)
        wait_for(lambda: daemon.value("stream_ae_events_consumed_total") >= len(values), 120,
                 "every record to be consumed")
        wait_for(lambda: committed_offsets(settings, topic, 1)[0] == len(values), 60, "the last commit")
        scored = daemon.value("stream_ae_events_scored_total")
        dead = sum(value for (name, _), value in daemon.metrics().items() if name == "stream_ae_dead_lettered_total")
        assert daemon.process.poll() is None
    finally:
        exit_code = daemon.terminate()
    assert exit_code == 0
    assert (scored, dead) == (len(good), len(POISON)), "events in = scored + dead-lettered"

    letters = {int(dict(r.headers)[SOURCE_HEADER].decode().rsplit("-", 1)[1]): r
               for r in read_topic(settings.kafka.connection(), settings.topics.dead_letter, len(POISON))}
    assert sorted(letters) == list(range(10, 10 + len(POISON)))
    for offset, (value, reason, detail) in enumerate(POISON, start=10):
        headers = dict(letters[offset].headers)
        assert headers[REASON_HEADER].decode() == reason
        assert headers[DETAIL_HEADER].decode().startswith(detail), headers[DETAIL_HEADER]
        if reason == "oversize":  # over the producer's 8 MiB limit: a reference
            assert orjson.loads(letters[offset].value) == {"topic": topic, "partition": 0, "offset": offset,
                                                           "size": len(value), "reason": "oversize"}
        else:
            assert (letters[offset].value or b"") == value, "the record as it came"
    scores = read_topic(settings.kafka.connection(), settings.topics.scores, len(good))
    assert len(scores) >= len(good)
    for record in scores:
        score = json.loads(record.value, parse_constant=lambda token: pytest.fail(f"{token} in a score record"))
        assert all(score[name] is not None for name in ("score", "reconstruction_error", "threshold", "zscore"))


@pytest.mark.integration
def test_over_a_lowered_request_limit_dead_letters_go_as_references_and_refused_scores_are_counted_once(
        broker, topic_names, synthetic_checkpoint, tmp_path):
    _, path = synthetic_checkpoint
    settings = detector_settings(broker, topic_names, path, kafka={"max_request_bytes": 65536},
                                 topics={"state": None})
    topic = settings.topics.input[0]
    ensure_topics(settings.kafka.connection(), {topic: 1, settings.topics.dead_letter: 1, settings.topics.scores: 1})
    large_bad = b'{"id": "' + b"y" * 200_000 + b'"'  # under events.max_record_bytes, but truncated JSON
    long_ids = [card_event("z" * 100_000 + str(n)) for n in range(2)]  # their score records are over 64 KiB
    values = events(np.arange(5)) + [large_bad] + long_ids + events(np.arange(5, 10))
    daemon = DaemonProcess(settings, tmp_path, "lowered").start()
    try:
        daemon.wait_ready()
        produce_large(settings, topic, values)
        wait_for(lambda: committed_offsets(settings, topic, 1)[0] == len(values), 120, "every batch to commit")
        refused = daemon.value("stream_ae_refused_records_total", topic=settings.topics.scores,
                               reason="record_too_large")
        scored = daemon.value("stream_ae_events_scored_total")
    finally:
        exit_code = daemon.terminate()
    assert exit_code == 0
    assert refused == 2 and scored == 12
    log = daemon.log_path.read_text()
    said = [line for line in log.splitlines() if "refused for good" in line and settings.topics.scores in line]
    assert len(said) == 1 and "record_too_large" in said[0], "logged once, for two refusals"
    assert "Traceback" not in log
    letter, = read_topic(settings.kafka.connection(), settings.topics.dead_letter, 1)
    assert dict(letter.headers)[REASON_HEADER] == b"invalid_json"
    assert orjson.loads(letter.value) == {"topic": topic, "partition": 0, "offset": 5, "size": len(large_bad),
                                          "reason": "oversize"}
    scores = read_topic(settings.kafka.connection(), settings.topics.scores, 10)
    assert sorted(orjson.loads(r.value)["offset"] for r in scores) == [0, 1, 2, 3, 4, 8, 9, 10, 11, 12]
