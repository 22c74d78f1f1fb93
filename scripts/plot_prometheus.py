#!/usr/bin/env python3
"""Throughput and latency of a detector run, plotted from Prometheus's own data.

Two ways to use it:

* against any Prometheus that scrapes stream-ae (the docker-compose stack, for one):

      python scripts/plot_prometheus.py --prometheus http://localhost:9090 --minutes 30

* ``--run``: make the data first, on this machine. Starts the local broker (Tansu), trains a
  checkpoint with ``stream-ae train``, runs ``stream-ae run --config deploy/config.yaml`` (the
  compose stack's settings; the broker address, checkpoint and metrics port set through
  ``STREAM_AE_...`` variables, as docker-compose.yml does), starts Prometheus (Debian's
  ``prometheus`` binary) with ``deploy/prometheus/prometheus.yml`` scraping it every second
  and ``deploy/prometheus/alerts.yml`` loaded, then replays the dataset's held-out rows with
  ``stream-ae replay`` at stepped rates, and plots the run:

      python scripts/plot_prometheus.py --run --output deploy/throughput-latency.png

Every curve is a ``/api/v1/query_range`` over the run: events consumed, scored and alerts per
second (``rate`` of the counters), end-to-end latency p50/p95/p99
(``histogram_quantile`` over ``stream_ae_end_to_end_latency_seconds_bucket``, so quantiles are
interpolated within the histogram's buckets), and the mean micro-batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "creditcard" / "creditcard_subset.parquet"
RATES = (250, 1000, 2000, 4000)   # events/s offered by the replayer, one step each
STEP_S = 25

JOB = 'job="stream-ae"'
SERIES = {
    "consumed": f"sum(rate(stream_ae_events_consumed_total{{{JOB}}}[{{w}}]))",
    "scored": f"sum(rate(stream_ae_events_scored_total{{{JOB}}}[{{w}}]))",
    "alerts": f"sum(rate(stream_ae_alerts_total{{{JOB}}}[{{w}}]))",
    "p50": f"histogram_quantile(0.5, sum by (le) (rate(stream_ae_end_to_end_latency_seconds_bucket{{{JOB}}}[{{w}}])))",
    "p95": f"histogram_quantile(0.95, sum by (le) (rate(stream_ae_end_to_end_latency_seconds_bucket{{{JOB}}}[{{w}}])))",
    "p99": f"histogram_quantile(0.99, sum by (le) (rate(stream_ae_end_to_end_latency_seconds_bucket{{{JOB}}}[{{w}}])))",
    "batch": (f"sum(rate(stream_ae_batch_size_events_sum{{{JOB}}}[{{w}}])) / "
              f"sum(rate(stream_ae_batch_size_events_count{{{JOB}}}[{{w}}]))"),
    "lag": f"sum(max by (topic, partition) (stream_ae_consumer_lag_events{{{JOB}}}))",
}


# -- reading Prometheus ------------------------------------------------------------------------
def query_range(url: str, expr: str, start: float, end: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """One series of ``/api/v1/query_range`` as (unix seconds, values); empty arrays if none."""
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=30) as response:
        body = json.loads(response.read())
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    result = body["data"]["result"]
    if not result:
        return np.array([]), np.array([])
    points = np.array(result[0]["values"], dtype=float)
    return points[:, 0], points[:, 1]


def fetch(url: str, start: float, end: float, step: float, window: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {name: query_range(url, expr.replace("{w}", window), start, end, step) for name, expr in SERIES.items()}


def plot(data: dict, start: float, output: Path, title: str,
         steps: list[tuple[float, float, str]] | None = None) -> None:
    """Three stacked panels over seconds since ``start``: throughput, latency, batch size/lag."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(10, 9), sharex=True,
                                              gridspec_kw={"height_ratios": [3, 3, 2]})
    def series(name):
        t, v = data[name]
        return t - start, v
    for name, style in (("consumed", "-"), ("scored", "--")):
        t, v = series(name)
        top.plot(t, v, style, label=f"events {name} / s", linewidth=1.6)
    alerts_axis = top.twinx()
    t, v = series("alerts")
    alerts_axis.plot(t, v, color="tab:red", linewidth=1.2, label="alerts / s (right axis)")
    alerts_axis.set_ylabel("alerts / s", color="tab:red")
    alerts_axis.tick_params(axis="y", colors="tab:red")
    alerts_axis.set_ylim(bottom=0)
    top.set_ylabel("events / s")
    top.set_ylim(bottom=0)
    handles = top.get_legend_handles_labels()[0] + alerts_axis.get_legend_handles_labels()[0]
    labels = top.get_legend_handles_labels()[1] + alerts_axis.get_legend_handles_labels()[1]
    top.legend(handles, labels, loc="upper left", fontsize=8)
    top.set_title(title, fontsize=11, pad=16)

    for name, color in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
        t, v = series(name)
        middle.plot(t, v * 1000, color=color, label=f"{name}", linewidth=1.4)
    middle.set_yscale("log")
    middle.set_ylabel("end-to-end latency (ms)")
    middle.axhline(1000, color="grey", linestyle=":", linewidth=1)
    middle.text(0.005, 1000, " objective: p99 < 1 s", color="grey", fontsize=8, va="bottom",
                transform=middle.get_yaxis_transform())
    middle.legend(loc="upper left", fontsize=8, title="record timestamp → alerts acked", title_fontsize=8)

    t, v = series("batch")
    bottom.plot(t, v, color="tab:purple", label="mean events per micro-batch", linewidth=1.4)
    bottom.set_ylabel("events per batch")
    bottom.set_ylim(bottom=0)
    lag_axis = bottom.twinx()
    t, v = series("lag")
    lag_axis.plot(t, v, color="tab:brown", linewidth=1, alpha=0.8, label="consumer lag (right axis)")
    lag_axis.set_ylabel("lag (events)", color="tab:brown")
    lag_axis.tick_params(axis="y", colors="tab:brown")
    lag_axis.set_ylim(bottom=0)
    handles = bottom.get_legend_handles_labels()[0] + lag_axis.get_legend_handles_labels()[0]
    labels = bottom.get_legend_handles_labels()[1] + lag_axis.get_legend_handles_labels()[1]
    bottom.legend(handles, labels, loc="upper left", fontsize=8)
    bottom.set_xlabel("seconds since the start of the run")

    for axis in (top, middle, bottom):
        axis.grid(True, alpha=0.3)
        for begin, finish, _label in steps or []:
            axis.axvspan(begin - start, finish - start, color="grey", alpha=0.06 if axis is not top else 0.1)
    for begin, finish, label in steps or []:
        top.text((begin + finish) / 2 - start, 1.01, label, transform=top.get_xaxis_transform(),
                 ha="center", va="bottom", fontsize=8, color="dimgrey")
    fig.text(0.99, 0.005, "source: Prometheus query_range over the run (scripts/plot_prometheus.py)",
             ha="right", fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.01, 1, 0.98))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    print(f"wrote {output}")


# -- making a run ------------------------------------------------------------------------------
def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def make_run(data: Path, epochs: int, workdir: Path) -> tuple[str, float, float, list, subprocess.Popen, callable]:
    """Broker, trained checkpoint, detector, Prometheus and a stepped replay; returns what to plot."""
    from stream_ae.kafka.local_broker import LocalBroker, free_port
    from stream_ae.kafka.topics import ensure_topics
    from stream_ae.service.config import load_settings

    prometheus_bin = shutil.which("prometheus")
    if prometheus_bin is None:
        sys.exit("--run needs the prometheus binary (apt-get install prometheus)")
    if not data.is_file():
        sys.exit(f"dataset {data} not found (give --data)")
    cli = [sys.executable, "-m", "stream_ae"]
    checkpoint = workdir / "model.pt"
    print(f"training on {data} ({epochs} epochs) ...", flush=True)
    subprocess.run(cli + ["train", "--data", str(data), "--output", str(checkpoint), "--epochs", str(epochs)],
                   check=True)

    broker = LocalBroker(log_path=workdir / "broker.log").start()
    metrics_port, prometheus_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_AE_")}
    env.update(STREAM_AE_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap_servers,
               STREAM_AE_MODEL__CHECKPOINT=str(checkpoint),
               STREAM_AE_MODEL__DEVICE="auto",
               STREAM_AE_METRICS__HOST="127.0.0.1", STREAM_AE_METRICS__PORT=str(metrics_port),
               STREAM_AE_CONSUMER__SESSION_TIMEOUT_MS="6000",
               STREAM_AE_CONSUMER__HEARTBEAT_INTERVAL_MS="1000")
    config = REPO / "deploy" / "config.yaml"
    os.environ.update({k: v for k, v in env.items() if k.startswith("STREAM_AE_")})
    settings = load_settings(config)
    ensure_topics(settings.kafka.connection(), {settings.topics.input[0]: 6, settings.topics.alerts: 3,
                                                settings.topics.dead_letter: 1})
    processes: list[subprocess.Popen] = []

    def cleanup() -> None:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        broker.stop()

    detector_log = (workdir / "detector.log").open("wb")
    processes.append(subprocess.Popen(cli + ["run", "--config", str(config)], env=env,
                                      stdout=detector_log, stderr=subprocess.STDOUT))
    _wait(lambda: _http_ok(f"http://127.0.0.1:{metrics_port}/readyz"), 90, "the detector to be ready")

    prom_config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    prom_config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    prom_config["rule_files"] = [str(REPO / "deploy" / "prometheus" / "alerts.yml")]
    job = next(j for j in prom_config["scrape_configs"] if j["job_name"] == "stream-ae")
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    prom_config["scrape_configs"] = [job]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
    url = f"http://127.0.0.1:{prometheus_port}"
    processes.append(subprocess.Popen(
        [prometheus_bin, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn"],
        stdout=(workdir / "prometheus.log").open("wb"), stderr=subprocess.STDOUT))
    _wait(lambda: _http_ok(f"{url}/-/ready"), 30, "prometheus to be ready")

    time.sleep(5)
    start = time.time()
    time.sleep(5)
    from stream_ae.model.checkpoint import load_checkpoint
    from stream_ae.model.datasets import load_dataset
    from stream_ae.tools.replay import replay

    dataset = load_dataset(data)
    held_out = np.asarray(load_checkpoint(checkpoint).training["split"]["test"])
    rng = np.random.default_rng(0)
    steps = []
    for rate in RATES:
        count = rate * STEP_S
        rows = np.concatenate([rng.permutation(held_out) for _ in range(count // len(held_out) + 1)])[:count]
        print(f"replaying {count:,} held-out events at {rate:,} events/s ...", flush=True)
        began = time.time()
        report = replay(dataset, rows, settings.kafka.connection(), settings.topics.input[0], rate,
                        progress=False)
        print(f"  sent at {report.events_per_second:,.0f} events/s", flush=True)
        steps.append((began, time.time(), f"{rate:,}/s offered"))
    time.sleep(10)
    end = time.time()
    return url, start, end, steps, processes[-1], cleanup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus", default="http://localhost:9090", help="Prometheus base URL")
    parser.add_argument("--minutes", type=float, default=30, help="plot the last N minutes (without --run)")
    parser.add_argument("--window", default=None, help="rate window (default 5s with --run, else 1m)")
    parser.add_argument("--step", type=float, default=None,
                        help="query_range step in s (default 1 with --run, else 15)")
    parser.add_argument("--output", type=Path, default=REPO / "deploy" / "throughput-latency.png")
    parser.add_argument("--run", action="store_true", help="make a local run first (see above)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset for --run")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs for --run")
    parser.add_argument("--dump", type=Path, help="also write the fetched series to this JSON file")
    parser.add_argument("--load", type=Path, help="plot a --dump file instead of querying")
    args = parser.parse_args(argv)

    if args.load:
        saved = json.loads(args.load.read_text())
        data = {name: (np.array(t), np.array(v)) for name, (t, v) in saved["series"].items()}
        plot(data, saved["start"], args.output, saved["title"], [tuple(s) for s in saved["steps"]])
        return 0

    if args.run:
        with tempfile.TemporaryDirectory(prefix="stream-ae-plot-") as tmp:
            url, start, end, steps, _, cleanup = make_run(args.data, args.epochs, Path(tmp))
            try:
                data = fetch(url, start, end, args.step or 1, args.window or "5s")
            finally:
                cleanup()
            device = "CPU" if not _cuda() else "GPU"
            title = (f"stream-ae on this machine: {args.data.name}, deploy/config.yaml, local broker, "
                     f"{os.cpu_count()} CPU cores, {device}")
            plot(data, start, args.output, title, steps)
            _dump(args.dump, data, start, title, steps)
            summary = {name: float(np.nanmax(v)) if len(v) else None for name, (_, v) in data.items()}
            print("peaks:", json.dumps(summary))
    else:
        end = time.time()
        start = end - args.minutes * 60
        data = fetch(args.prometheus, start, end, args.step or 15, args.window or "1m")
        title = f"stream-ae: the last {args.minutes:g} minutes ({args.prometheus})"
        plot(data, start, args.output, title)
        _dump(args.dump, data, start, title, [])
    return 0


def _dump(path: Path | None, data: dict, start: float, title: str, steps: list) -> None:
    if path is not None:
        series = {name: (t.tolist(), v.tolist()) for name, (t, v) in data.items()}
        path.write_text(json.dumps({"start": start, "title": title, "steps": steps, "series": series}))


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
