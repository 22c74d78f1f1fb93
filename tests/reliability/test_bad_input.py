"""Property-based bad input: whatever arrives, every record is scored or dead-lettered with its reason.

One daemon per event kind runs for the whole module; each hypothesis example produces a
few records, waits until the daemon has accounted for them, and checks the new
dead-letter records: the reason of each, its original bytes, and the exact count
``events in = scored + dead-lettered``.
"""

from __future__ import annotations

import string

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, TopicPartition

from stream_ae.kafka.topics import ensure_topics
from stream_ae.model.checkpoint import save_checkpoint
from stream_ae.model.datasets import CARD_FEATURES, LabelledDataset
from stream_ae.model.training import TrainingOptions, train_autoencoder
from stream_ae.pipeline.alerts import REASON_HEADER
from stream_ae.pipeline.codec import REASONS
from stream_ae.tools.daemon_thread import DaemonThread
from tests.helpers import detector_settings, produce

pytestmark = pytest.mark.integration

MAX_BYTES = 8_000
WINDOW = 16
ANY_REASON = "(any reason)"
numbers = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
not_numbers = st.one_of(st.text(max_size=5), st.booleans(), st.none(), st.lists(numbers, max_size=2),
                        st.dictionaries(st.text(max_size=3), numbers, max_size=2))


class Stream:
    """A running daemon, its settings and a reader of its dead-letter topic."""

    def __init__(self, running: DaemonThread, settings) -> None:
        self.running = running
        self.settings = settings
        self.dead = KafkaConsumer(**settings.kafka.connection().kafka_python(), group_id=None,
                                  enable_auto_commit=False, fetch_max_wait_ms=20)
        self.dead.assign([TopicPartition(settings.topics.dead_letter, 0)])
        self.dead.seek_to_beginning()

    def send(self, records: list[tuple[bytes, str | None]]) -> None:
        """Produce ``(value, expected reason or None for valid)`` and check the outcome."""
        before = self.running.daemon.metrics.totals()
        produce(self.settings, self.settings.topics.input[0], [value for value, _ in records])
        after = self.running.wait_accounted(before["events_in"] + len(records))
        expected_dead = [(value, reason) for value, reason in records if reason is not None]
        dead = []
        while len(dead) < len(expected_dead):
            for batch in self.dead.poll(timeout_ms=500).values():
                dead.extend(batch)
        assert after["events_in"] - before["events_in"] == len(records)
        assert after["events_in"] == after["events_scored"] + after["dead_lettered"]
        assert after["events_scored"] - before["events_scored"] == len(records) - len(expected_dead)
        got = {(r.value or b""): dict(r.headers)[REASON_HEADER].decode() for r in dead}
        assert sorted(r.value or b"" for r in dead) == sorted(value for value, _ in expected_dead)
        assert set(got.values()) <= set(REASONS)
        for value, reason in expected_dead:  # the codec gives equal bytes the same reason
            assert reason in (ANY_REASON, got[value]), (value[:80], got[value], reason)


@pytest.fixture(scope="module")
def streams(broker, synthetic_checkpoint, tmp_path_factory):
    """A transaction daemon and a window daemon, each on its own topics."""
    checkpoint, path = synthetic_checkpoint
    rng = np.random.default_rng(0)
    phases = rng.uniform(0, 2 * np.pi, (400, 1))
    windows = np.sin(np.linspace(0, 2 * np.pi, WINDOW)[None, :] + phases).astype(np.float32)
    window_data = LabelledDataset("sines", "window", windows, np.zeros(400, np.int8),
                                  [f"t{i}" for i in range(WINDOW)], "sines")
    window_checkpoint = train_autoencoder(window_data, TrainingOptions(epochs=3, progress=False))
    window_path = tmp_path_factory.mktemp("window") / "window.pt"
    save_checkpoint(window_checkpoint, window_path)

    opened = {}
    for kind, ckpt, ckpt_path in (("transaction", checkpoint, path),
                                  ("window", window_checkpoint, window_path)):
        names = lambda base, kind=kind: f"{base}-bad-{kind}"  # noqa: E731
        settings = detector_settings(broker, names, ckpt_path,
                                     events={"max_record_bytes": MAX_BYTES},
                                     topics={"scores": None, "state": None})
        ensure_topics(settings.kafka.connection(), {settings.topics.input[0]: 2, settings.topics.dead_letter: 1})
        running = DaemonThread(settings, ckpt).__enter__()
        opened[kind] = (Stream(running, settings), running)
    yield {kind: stream for kind, (stream, _) in opened.items()}
    for stream, running in opened.values():
        stream.dead.close()
        running.__exit__(None, None, None)


def transaction_event(draw) -> dict:
    return {"id": draw(st.text(string.ascii_letters, max_size=8)),
            **{name: draw(numbers) for name in CARD_FEATURES}}


@st.composite
def transaction_record(draw) -> tuple[bytes, str | None]:
    """A record and the reason it must be dead-lettered for (None: it is valid)."""
    event = transaction_event(draw)
    kind = draw(st.sampled_from(["valid", "extra_fields", "truncated", "huge", "wrong_type", "missing",
                                 "nan_or_inf", "not_utf8", "empty", "not_object", "random_bytes"]))
    field = draw(st.sampled_from(CARD_FEATURES))
    valid = orjson.dumps(event)
    if kind == "valid":
        return valid, None
    if kind == "extra_fields":
        extra = draw(st.dictionaries(st.text(min_size=1, max_size=6).filter(lambda k: k not in event),
                                     st.one_of(numbers, st.text(max_size=5)), max_size=3))
        return orjson.dumps(event | extra), None
    if kind == "truncated":
        return valid[:draw(st.integers(1, len(valid) - 1))], "invalid_json"
    if kind == "huge":
        return orjson.dumps(event | {"padding": "x" * MAX_BYTES}), "oversize"
    if kind == "wrong_type":
        return orjson.dumps(event | {field: draw(not_numbers)}), "non_numeric"
    if kind == "missing":
        return orjson.dumps({k: v for k, v in event.items() if k != field}), "missing_field"
    if kind == "nan_or_inf":
        token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"]))
        return valid.replace(f'"{field}":'.encode(), f'"{field}":'.encode() + token + b',"_":', 1), "non_finite"
    if kind == "not_utf8":
        cut = draw(st.integers(0, len(valid)))
        return valid[:cut] + b"\xff" + valid[cut:], "not_utf8"
    if kind == "empty":
        return b"", "empty"
    if kind == "not_object":
        not_an_object = draw(st.one_of(numbers, st.text(max_size=5), st.lists(numbers, max_size=3)))
        return orjson.dumps(not_an_object), "not_an_object"
    # too short to hold 29 fields, so never valid; which reason applies is the codec's business
    return draw(st.binary(min_size=1, max_size=64)), ANY_REASON


@st.composite
def window_record(draw) -> tuple[bytes, str | None]:
    samples = draw(st.lists(numbers, min_size=WINDOW, max_size=WINDOW))
    kind = draw(st.sampled_from(["valid", "short", "long", "wrong_type", "no_samples", "nan"]))
    if kind == "valid":
        return orjson.dumps({"id": "w", "samples": samples}), None
    if kind in ("short", "long"):
        length = draw(st.integers(0, WINDOW - 1) if kind == "short" else st.integers(WINDOW + 1, 3 * WINDOW))
        return orjson.dumps({"id": "w", "samples": (samples * 3)[:length]}), "wrong_window_length"
    if kind == "wrong_type":
        index = draw(st.integers(0, WINDOW - 1))
        wrong = samples[:index] + [draw(not_numbers)] + samples[index + 1:]
        return orjson.dumps({"id": "w", "samples": wrong}), "non_numeric"
    if kind == "no_samples":
        return orjson.dumps({"id": "w"}), "missing_field"
    token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"]))
    return orjson.dumps({"id": "w", "samples": samples[1:]}).replace(b"[", b"[" + token + b",", 1), "non_finite"


examples = hypothesis_settings(max_examples=25, deadline=None,
                               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow, HealthCheck.data_too_large])


@examples
@given(records=st.lists(transaction_record(), min_size=1, max_size=12))
def test_transactions_any_input_is_scored_or_dead_lettered(streams, records):
    streams["transaction"].send(records)


@examples
@given(records=st.lists(window_record(), min_size=1, max_size=12))
def test_windows_any_input_is_scored_or_dead_lettered(streams, records):
    streams["window"].send(records)
