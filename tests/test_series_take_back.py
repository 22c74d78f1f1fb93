"""A batch of sample records read again (its output not acknowledged) is taken back first:
its series hold exactly what they held before it, so reading it again changes nothing."""

from __future__ import annotations

import copy

import numpy as np
import orjson
import pytest

from stream_ae.kafka.records import ConsumedBatch
from stream_ae.model.series import SeriesSettings
from stream_ae.pipeline.samples import encode_samples
from stream_ae.pipeline.series_stage import SeriesOptions, ServedSeries
from stream_ae.service.config import load_settings
from stream_ae.service.daemon import Daemon
from tests.helpers import FakeRecord, ScriptedSink, ScriptedSource

TOPIC = "metrics"
SETTINGS = SeriesSettings(length=3, warmup=40, drift_samples=8, history=30, quiet_share=0.1)


def batches(seed: int = 0) -> list[ConsumedBatch]:
    """Five series (one with a spike) in chunks of 1..9 samples, cut into batches of 12 records."""
    rng = np.random.default_rng(seed)
    records, offset = [], 0
    at = dict.fromkeys(range(5), 0)
    while any(n < 150 for n in at.values()):
        key = int(rng.choice([k for k, n in at.items() if n < 150]))
        count = int(min(rng.integers(1, 10), 150 - at[key]))
        t = np.arange(at[key], at[key] + count)
        values = np.sin(t / (3 + key)) + 0.05 * rng.normal(size=count) + 6.0 * (t == 120) * (key == 2)
        records.append(FakeRecord(encode_samples(values, 1e12 + t[0] * 1000.0, 1000.0), topic=TOPIC,
                                  key=f"s{key}".encode(), offset=offset))
        at[key] += count
        offset += 1
    return [ConsumedBatch.from_records(records[n:n + 12]) for n in range(0, len(records), 12)]


def picture(served: ServedSeries) -> dict:
    """Everything the series hold, as plain values."""
    return {"tails": {k: (v.values.tolist(), v.times_ms.tolist(), v.seen) for k, v in served.windower.tails.items()},
            "states": {k: (s.last_end, s.mean, s.std, s.lag, s.quiet, s.quiet_until, len(s.warm_values),
                           None if s.context is None else s.context.tolist(),
                           None if s.novelty_bank is None else s.novelty_bank.tolist(),
                           [list(r.arrival) for r in s.ranks], [list(r.ordered) for r in s.ranks])
                       for k, s in served.detector.states.items()}}


@pytest.mark.parametrize("max_series", [5, 3], ids=["every series held", "series evicted"])
def test_taking_batches_back_newest_first_restores_every_series_and_they_judge_alike_again(max_series):
    served = ServedSeries(SeriesOptions(SETTINGS, max_series=max_series))
    consumed = batches()
    before = []
    judged = []
    for one in consumed:
        before.append(copy.deepcopy(picture(served)))
        judged.append(served.judge(one, 0, True))
    assert sum(len(j.scores) for j in judged) > 100, "the batches fit series and score them"
    for back in (3, 1):  # take back the last three batches, then the last one
        for n in reversed(range(len(consumed) - back, len(consumed))):
            judged[n].take_back()
        assert picture(served) == before[len(consumed) - back]
        for n in range(len(consumed) - back, len(consumed)):
            again = served.judge(consumed[n], 0, True)
            assert again.scores == judged[n].scores and again.alerts == judged[n].alerts
            judged[n] = again


def test_the_loop_takes_a_refused_batch_back_before_it_is_read_again(monkeypatch):
    monkeypatch.setattr("stream_ae.pipeline.loop.time.sleep", lambda seconds: None)  # the retry back-off
    consumed = batches(1)
    settings = load_settings(topics={"input": [TOPIC], "scores": "scores", "state": None}, events={"kind": "samples"},
                             samples={"length": 3, "warmup": 40, "drift_samples": 8, "history": 30,
                                      "quiet_share": 0.1},
                             metrics={"enabled": False})

    def scores_of(refused: set[int], script: list[ConsumedBatch]) -> tuple[dict[bytes, float], ScriptedSource]:
        sink = ScriptedSink(refused=refused, answered_at_once=True)
        source = ScriptedSource(list(script))
        loop = Daemon(settings, None, source, sink).open()
        loop.ownership.assigned.update({(TOPIC, 0)})
        while loop.step() or source.batches:
            pass
        return {key: orjson.loads(value)["score"] for topic, key, value in sink.acknowledged_values
                if topic == "scores"}, source

    plain, _ = scores_of(set(), consumed)
    # batch 4's output is refused; the loop rewinds and the source hands batch 4 on again
    again, source = scores_of({4}, consumed[:6] + consumed[4:])
    assert source.rewinds, "the refused batch was read again"
    assert again == plain, "every window scored as in the run without a refusal"
