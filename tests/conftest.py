"""Shared fixtures: a real local broker, fresh topic names, a small model.

Helpers that are not fixtures (datasets, settings, waiting, producing, reading back) live
in :mod:`tests.helpers`.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from stream_ae.model.checkpoint import Checkpoint, save_checkpoint
from stream_ae.model.datasets import synthetic_transactions
from stream_ae.model.training import TrainingOptions, train_autoencoder
from tests.helpers import make_broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A real broker on a free port of 127.0.0.1 for the whole session, of the kind that
    ``STREAM_AE_TEST_BROKER`` names: ``apache`` (Apache Kafka, one KRaft node; what ``.ci/run``
    uses) or ``tansu`` (the default when unset, so that a bare ``pytest`` needs neither Java
    nor Maven). Its log is in pytest's temporary folder (``broker0/broker.log``). With
    ``STREAM_AE_TEST_BOOTSTRAP_SERVERS=host:port,...`` the tests use that broker instead, a
    broker of one's own (the tests that stop a broker are skipped)."""
    with make_broker(tmp_path_factory.mktemp("broker") / "broker.log") as running:
        yield running


_names = itertools.count()


@pytest.fixture
def topic_names():
    """Fresh topic and group names for one test: ``topic_names("events") -> "events-7"``."""
    suffix = next(_names)
    return lambda base: f"{base}-{os.getpid()}-{suffix}"


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory) -> tuple[Checkpoint, Path]:
    """A deep autoencoder trained briefly on synthetic transactions, saved to a file."""
    dataset = synthetic_transactions(rows=6000)
    checkpoint = train_autoencoder(dataset, TrainingOptions(epochs=15, seed=3, progress=False))
    path = tmp_path_factory.mktemp("model") / "synthetic.pt"
    save_checkpoint(checkpoint, path)
    return checkpoint, path
