"""The bench's figures: the summary with its targets, and the text, Markdown and JSON forms."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import torch

from stream_ae.tools.bench.latency import FIXED_RATE_EPS
from stream_ae.tools.bench.options import CLIENTS, BenchOptions


def summarise(results: dict[str, Any], options: BenchOptions, fill_eps: float, wall_s: float) -> dict[str, Any]:
    """The figures of a run as one flat dictionary (see :func:`run.run_bench`), with each
    target's value, bound and verdict, and the run's context (machine, options, wall time)."""
    clients = results["clients"]
    summary: dict[str, Any] = {}
    for client, prefix in (("kafka-python", ""), ("confluent-kafka", "confluent_")):
        if client not in clients:
            continue
        figures = clients[client]
        half = figures["latency"]["50%"]
        summary.update({
            f"{prefix}consume_limit_eps": figures["consume_limit_eps"],
            f"{prefix}detector_eps": figures["detector_eps"],
            f"{prefix}ratio": figures["ratio"],
            f"{prefix}latency_p50_s": half["p50_s"],
            f"{prefix}latency_p95_s": half["p95_s"],
            f"{prefix}latency_p99_s": half["p99_s"],
        })
    default = clients.get("kafka-python") or next(iter(clients.values()))
    summary["per_event_baseline_eps"] = results["per_event_baseline_eps"]
    summary["baseline_ratio"] = default["detector_eps"] / results["per_event_baseline_eps"]
    summary["model_per_event_eps"] = results["model_per_event_eps"]
    summary["model_per_event_ratio"] = default["detector_eps"] / results["model_per_event_eps"]
    if "scale_out_eps" in results:
        summary["scale_out_eps"] = results["scale_out_eps"]
        summary["scale_out_speedup"] = results["scale_out_eps"] / default["detector_eps"]
    summary["stage_share"] = {client: figures["stage_share"] for client, figures in clients.items()}
    summary["runs"] = {client: {"consume_limit_eps": figures["consume_limit_runs_eps"],
                                "detector_eps": figures["detector_runs_eps"], "ratio": figures["ratio_runs"]}
                       for client, figures in clients.items()}
    summary["latency"] = {client: figures["latency"] for client, figures in clients.items()}
    if "accuracy" in results:
        summary["accuracy"] = results["accuracy"]
    if "samples" in results:
        summary["samples"] = results["samples"]
    if "score_heads" in results:
        summary["score_heads"] = results["score_heads"]
    # the targets of the default (memory-bank) score on a CPU (see the package docstring)
    bound = options.max_wait_ms / 1000 + 0.030
    both = {"confluent-kafka", "kafka-python"} <= clients.keys()
    fixed = f"{FIXED_RATE_EPS:g}/s"
    at_least, above, at_most = float.__ge__, float.__gt__, float.__le__
    bank = results.get("score_heads", {}).get("memory-bank", {})
    targets = {  # name: (value, bound, how the value must compare with the bound)
        "kafka-python ratio >= 0.4": (clients.get("kafka-python", {}).get("ratio"), 0.4, at_least),
        "confluent ratio >= 0.4": (clients.get("confluent-kafka", {}).get("ratio"), 0.4, at_least),
        "confluent / kafka-python eps > 1": (
            clients["confluent-kafka"]["detector_eps"] / clients["kafka-python"]["detector_eps"]
            if both else None, 1.0, above),
        "p99 at 50% load <= 100 ms (s)": (summary.get("latency_p99_s"), 0.100, at_most),
        f"p99 at {fixed} <= {bound * 1000:.0f} ms (s)": (
            default["latency"].get(fixed, {}).get("p99_s"), bound, at_most),
        "detector / per-event baseline >= 50": (summary["baseline_ratio"], 50.0, at_least),
        "memory-bank score stage <= 10 us/event (s)": (bank.get("score_s_per_event"), 10e-6, at_most),
    }
    summary["targets"] = {
        name: {"value": value, "bound": limit, "met": None if value is None else bool(compare(float(value), limit))}
        for name, (value, limit, compare) in targets.items()}
    summary["skipped_clients"] = results.get("skipped_clients", [])
    summary["context"] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
                   f"({torch.get_num_threads()} threads), "
                   f"CUDA {'available' if torch.cuda.is_available() else 'absent'}",
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "fill_eps": fill_eps,
        "wall_s": wall_s,
    }
    return summary


def _eps(value: float) -> str:
    return f"{value:,.0f}"


def table(summary: dict[str, Any]) -> str:
    """The figures as a fixed-width text table."""
    lines = [f"{'':34}{'kafka-python':>16}{'confluent-kafka':>18}"]

    def row(label: str, key: str, fmt: Callable[[float], str]) -> None:
        cells = [fmt(summary[p + key]) if (p + key) in summary else "-" for p in ("", "confluent_")]
        lines.append(f"{label:34}{cells[0]:>16}{cells[1]:>18}")
    row("consume limit (events/s)", "consume_limit_eps", _eps)
    row("detector (events/s)", "detector_eps", _eps)
    row("ratio to the consume limit", "ratio", lambda v: f"{v:.2f}")
    for level in ("50%", "90%", f"{FIXED_RATE_EPS:g}/s"):
        for q in ("p50", "p95", "p99"):
            cells = [f"{summary['latency'][c][level][q + '_s'] * 1000:.1f}" if c in summary["latency"] else "-"
                     for c in CLIENTS]
            where = f"{level} load" if level.endswith("%") else level
            lines.append(f"{f'latency {q} at {where} (ms)':34}{cells[0]:>16}{cells[1]:>18}")
    stages = dict.fromkeys(stage for shares in summary["stage_share"].values() for stage in shares)
    for stage in stages:
        cells = [f"{summary['stage_share'][c][stage] * 100:.1f}%" if stage in summary["stage_share"].get(c, {}) else "-"
                 for c in CLIENTS]
        lines.append(f"{f'time in {stage}':34}{cells[0]:>16}{cells[1]:>18}")
    if "confluent-kafka" in summary.get("skipped_clients", []):
        lines.append("confluent-kafka is not installed (pip install 'stream-ae[confluent]'): its column and "
                     "targets are not measured")
    lines.append("")
    for client, runs in summary["runs"].items():
        lines.append(f"{client}, each run in order (medians above): consume limit "
                     f"{' '.join(_eps(v) for v in runs['consume_limit_eps'])}; detector "
                     f"{' '.join(_eps(v) for v in runs['detector_eps'])}; ratio "
                     f"{' '.join(f'{v:.2f}' for v in runs['ratio'])}")
    lines.append(f"per-event baseline (naive loop)   {_eps(summary['per_event_baseline_eps'])} events/s; "
                 f"detector is {summary['baseline_ratio']:.0f}x")
    lines.append(f"model alone, one call per event   {_eps(summary['model_per_event_eps'])} events/s; "
                 f"detector is {summary['model_per_event_ratio']:.1f}x")
    if "scale_out_eps" in summary:
        lines.append(f"scale-out, 2 processes, 1 group   {_eps(summary['scale_out_eps'])} events/s "
                     f"({summary['scale_out_speedup']:.2f}x one detector)")
    heads = summary.get("score_heads")
    if heads:
        lines.append(f"score heads ({heads['client']}, same model, {len(heads['ratio_runs'])} rounds each; memory bank "
                     f"of {heads['bank_rows']:,} rows):")
        for name in ("memory-bank", "reconstruction"):
            figures = heads[name]
            lines.append(f"  {name:15} {_eps(figures['detector_eps']):>9} events/s; score stage "
                         f"{figures['score_s_per_event'] * 1e6:.2f} us/event; scorer alone per "
                         f"{heads['batch_events']:,}-event batch {figures['score_s_per_batch'] * 1000:.1f} ms "
                         f"on 1 thread, {figures['score_s_per_batch_all_threads'] * 1000:.1f} ms on "
                         f"{heads['cores']}")
        lines.append(f"  memory-bank / reconstruction events/s: {heads['ratio']:.2f} (runs "
                     f"{' '.join(f'{v:.2f}' for v in heads['ratio_runs'])})")
    samples = summary.get("samples")
    if samples:
        lines.append("sample records (kafka-python, one detector; windows cut, scored or warming):")
        for name, figures in samples.items():
            keeps = (f"{figures['series_at_1hz']:,.0f} series at 1 sample/s" if "series_at_1hz" in figures
                     else f"{figures['sources_at_360hz']:,.0f} sources at 360 Hz")
            lines.append(f"  {name:8} {_eps(figures['records_per_s']):>9} records/s x {figures['samples_per_record']} "
                         f"= {_eps(figures['samples_per_s'])} samples/s, {_eps(figures['windows_per_s'])} windows/s: "
                         f"keeps up with {keeps}")
    for name, figures in summary.get("accuracy", {}).items():
        if isinstance(figures, dict) and "max_abs_diff" in figures:
            lines.append(f"{name:5} vs fp32 on {summary['accuracy']['rows']:,} held-out rows: max |score diff| "
                         f"{figures['max_abs_diff']:.2e} (relative {figures['max_rel_diff']:.2e}), "
                         f"AUC-ROC change {figures['auc_change']:+.5f}")
        elif isinstance(figures, dict):
            lines.append(f"{name:5} unavailable: {figures['error']}")
    lines.append("")
    for name, target in summary["targets"].items():
        verdict = "n/a" if target["met"] is None else ("met" if target["met"] else "MISSED")
        value = "-" if target["value"] is None else f"{target['value']:.3g}"
        lines.append(f"target {name:40} {value:>10}  {verdict}")
    context = summary["context"]
    lines.append(f"\n{context['machine']}; load average {context['load_average']:.1f} at the end; "
                 f"{context['options']['events']:,} events ({context['options']['payload']}), "
                 f"batches of {context['options']['max_batch_size']}, max_wait_ms "
                 f"{context['options']['max_wait_ms']}, {context['options']['guarantee']}; "
                 f"{context['wall_s']:.0f} s")
    return "\n".join(lines)


def markdown(summary: dict[str, Any]) -> str:
    """The figures as the body of docs/performance.md's generated section (a table in a code block)."""
    return ("Measured by `stream-ae bench` in one run on this machine (figures from a shared "
            "machine vary from run to run; ratios within one run are what the bench compares):\n\n"
            "```text\n" + table(summary) + "\n```\n")


def to_json(summary: dict[str, Any]) -> str:
    """One line of JSON."""
    return orjson.dumps(summary, option=orjson.OPT_SERIALIZE_NUMPY).decode()
