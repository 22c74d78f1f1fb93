"""A smoke run of ``stream-ae bench`` with tiny sizes: it runs end to end and reports every figure.

No timing is asserted here: the speed targets are measured by the bench itself.
"""

from __future__ import annotations

import json
import math

import pytest

from stream_ae.cli import main
from tests.helpers import skip_on_tansu

pytestmark = pytest.mark.integration


def test_bench_quick_reports_every_figure_as_one_json_line(broker, capsys):
    code = main(["bench", "--quick", "--json", "--bootstrap-servers", broker.bootstrap_servers])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    positive = ["consume_limit_eps", "detector_eps", "ratio", "per_event_baseline_eps", "baseline_ratio",
                "latency_p50_s", "latency_p95_s", "latency_p99_s", "model_per_event_eps", "scale_out_eps"]
    try:
        import confluent_kafka  # noqa: F401
        positive += ["confluent_consume_limit_eps", "confluent_detector_eps", "confluent_ratio",
                     "confluent_latency_p50_s", "confluent_latency_p99_s"]
    except ImportError:
        pass
    for key in positive:
        assert math.isfinite(summary[key]) and summary[key] > 0, key
    assert summary["latency_p50_s"] <= summary["latency_p95_s"] <= summary["latency_p99_s"]
    for client, shares in summary["stage_share"].items():
        assert set(shares) == {"poll", "decode", "score", "threshold", "produce", "commit"}
        assert sum(shares.values()) == pytest.approx(1.0), client
    for load in ("50%", "90%"):
        assert summary["latency"]["kafka-python"][load]["events"] > 0
    assert summary["accuracy"]["bf16"]["max_abs_diff"] >= 0
    heads = summary["score_heads"]  # the default memory-bank score beside the plain reconstruction error
    for name in ("memory-bank", "reconstruction"):
        assert heads[name]["detector_eps"] > 0 and heads[name]["score_s_per_batch"] > 0, name
        assert heads[name]["score_s_per_batch_all_threads"] > 0, name
    assert heads["cores"] >= 1
    assert heads["bank_rows"] > 0 and heads["ratio"] == pytest.approx(
        sorted(heads["ratio_runs"])[len(heads["ratio_runs"]) // 2])
    assert {"kafka-python ratio >= 0.4", "p99 at 50% load <= 100 ms (s)",
            "memory-bank score stage <= 10 us/event (s)"} <= set(summary["targets"]), "the default score's targets"
    assert summary["targets"]["memory-bank score stage <= 10 us/event (s)"]["value"] == \
        heads["memory-bank"]["score_s_per_event"]
    assert any(line.strip().startswith("memory-bank / reconstruction events/s") for line in out)
    assert {"value", "bound", "met"} <= set(next(iter(summary["targets"].values())))
    assert any(line.startswith("detector (events/s)") for line in out), "the table precedes the JSON line"
    samples = summary["samples"]  # sample records beside the transaction path, in the same run
    assert samples["metrics"]["samples_per_record"] == 1 and samples["ecg"]["samples_per_record"] == 36
    for load in ("metrics", "ecg"):
        figures = samples[load]
        assert figures["records_per_s"] > 0 and figures["windows_per_s"] > 0, load
        assert figures["samples_per_s"] == pytest.approx(figures["records_per_s"] * figures["samples_per_record"])
    assert samples["ecg"]["sources_at_360hz"] == pytest.approx(samples["ecg"]["samples_per_s"] / 360)
    assert any(line.strip().startswith("ecg ") and "sources at 360 Hz" in line for line in out)


def test_bench_measures_the_detector_in_exactly_once_mode(broker, capsys):
    skip_on_tansu("does not isolate transactions, so its exactly-once figures would mean nothing")
    code = main(["bench", "--quick", "--json", "--bootstrap-servers", broker.bootstrap_servers, "--no-scale-out",
                 "--clients", "kafka-python", "--guarantee", "exactly_once"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["context"]["options"]["guarantee"] == "exactly_once"
    assert summary["detector_eps"] > 0 and summary["latency"]["kafka-python"]["50%"]["events"] > 0
    assert any(line.rstrip().endswith("s") and "exactly_once" in line for line in out), "the table names the mode"
