"""NAB-style series through Kafka and the daemon: the streamed scores equal the in-process ones."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ae.tools.nab import detect, load_corpus
from stream_ae.tools.nab_stream import stream
from tests.test_nab_tool import nab_folder

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("chunk_rows, binary", [(1, False), (7, True)])
def test_streamed_scores_equal_the_in_process_run(broker, tmp_path, chunk_rows, binary):
    corpus = load_corpus(nab_folder(tmp_path / "nab"))
    run = stream(corpus, broker.bootstrap_servers, chunk_rows, binary, progress=False, timeout_s=120)
    expected = detect(corpus, chunk_rows=chunk_rows)
    assert run.records == sum(-(-len(series.values) // chunk_rows) for series in corpus)
    assert run.windows_scored == sum(len(series.values) - int(0.15 * len(series.values)) for series in corpus)
    for got, want in zip(run.scores, expected):
        np.testing.assert_array_equal(got, want)
    assert max(float(one.max()) for one in run.scores) > 0.99, "the labelled spikes are found"
