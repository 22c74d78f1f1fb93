"""``stream-ae``: the command line. Each sub-command parses its flags and calls one module.

Every failure ends in one line on stderr, ``stream-ae CMD: error: ...``, and the exit
status says its kind (:func:`main`); the traceback is logged only at ``--log-level DEBUG``.
Flags are checked by the parser (:func:`at_least`, :func:`device_name`,
:func:`writable_path`), so that an impossible value fails before any work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stream_ae.kafka.backends import client_errors
from stream_ae.kafka.ends import DeliveryError
from stream_ae.kafka.local_broker import BrokerError
from stream_ae.kafka.options import Connection
from stream_ae.kafka.topics import probe_cluster
from stream_ae.model.autoencoders import DEFAULT_MODEL, MODEL_BUILDERS
from stream_ae.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stream_ae.model.datasets import LabelledDataset, load_dataset, synthetic_transactions
from stream_ae.model.device import device_name_fault
from stream_ae.model.memory_bank import BankOptions
from stream_ae.model.training import SCORES, TrainingOptions
from stream_ae.pipeline.threshold.adaptive import DEFAULT_FALSE_ALARM_RATE
from stream_ae.service.config import load_settings

log = logging.getLogger("stream_ae")

EXIT_FAULT = 1  # a runtime fault: the broker, a port, the disk
EXIT_USAGE = 2  # a usage or input error: a flag, a setting, a file's contents
DESCRIPTION = """Streaming anomaly detection for Kafka: train an autoencoder on normal events, run the
detector daemon, replay datasets into a topic, evaluate, benchmark, or try it all with demo.
Settings: command-line flags win over STREAM_AE_<SECTION>__<FIELD> environment variables,
which win over the --config file, which wins over the defaults."""
EPILOG = ("exit status: 0 done, 1 a runtime fault (broker, port, disk), 2 a usage or input error; "
          "'stream-ae CMD --help' describes each command")


class _Help(argparse.HelpFormatter):
    """Help that shows every flag's default (unless it has none, or the text shows it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or "default:" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def at_least(low: float, kind: Callable[[str], Any] = int, above: bool = False) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)``, refused below ``low`` (at or below, with ``above``)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value != value or value < low or (above and value == low):  # NaN too
            raise argparse.ArgumentTypeError(f"{text} is too small: it must be {'above' if above else 'at least'} "
                                             f"{low:g}")
        return value
    return parse


def device_name(text: str) -> str:
    """An argparse ``type``: a device the model can run on (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""
    if fault := device_name_fault(text):
        raise argparse.ArgumentTypeError(fault)
    return text


def rate_in_open_interval(text: str) -> float:
    """An argparse ``type``: a false-alarm rate, a number strictly between 0 and 0.5."""
    value = at_least(0.0, float, above=True)(text)
    if not value < 0.5:
        raise argparse.ArgumentTypeError(f"{text} is too large: a false-alarm rate must be below 0.5")
    return float(value)


def writable_path(path: Path, folder: bool = False) -> Path:
    """``path`` once it is known that a file (with ``folder``: a folder) can be written there.

    Raises:
        ValueError: the path is of the other kind, a parent is a file, or its nearest
            existing folder does not let us create files.
    """
    if path.exists() and path.is_dir() != folder:
        raise ValueError(f"{path} is a {'file' if folder else 'folder'}, not a {'folder' if folder else 'file'}")
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write {path}: {existing} is a file, not a folder")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {existing} is not writable ({exc.strerror})") from None
    if path.is_file() and not os.access(path, os.W_OK):
        raise ValueError(f"cannot write {path}: the file is read-only")
    return path


def _output_file(text: str) -> Path:
    try:
        return writable_path(Path(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    defaults = TrainingOptions()
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODEL_BUILDERS),
                        help="autoencoder to train")
    parser.add_argument("--epochs", type=at_least(1), default=defaults.epochs,
                        help="most passes over the training rows (early stopping may end sooner)")
    parser.add_argument("--batch-size", type=at_least(1), default=defaults.batch_size,
                        help="rows per optimiser step")
    parser.add_argument("--learning-rate", type=at_least(0.0, float, above=True), default=defaults.learning_rate,
                        help="Adam's step size")
    parser.add_argument("--patience", type=at_least(1), default=defaults.patience,
                        help="epochs without validation improvement before stopping")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seeds the split, the weights and the order")
    parser.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--score", default=defaults.score, choices=SCORES,
                        help="memory-bank: distance to the nearest normal training rows in the autoencoder's "
                             "view; reconstruction: the reconstruction error alone")
    parser.add_argument("--bank-rows", type=at_least(1), default=defaults.bank.max_rows,
                        help="most training rows kept in the memory bank; its scoring cost per event grows "
                             "with it")


def _training_options(args: argparse.Namespace, progress: bool = True) -> TrainingOptions:
    return TrainingOptions(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                           learning_rate=args.learning_rate, patience=args.patience, seed=args.seed,
                           device=args.device, progress=progress, score=args.score,
                           bank=BankOptions(max_rows=args.bank_rows))


def _add_threshold_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--false-alarm-rate", type=rate_in_open_interval, default=DEFAULT_FALSE_ALARM_RATE,
                        help="the daemon's threshold.false_alarm_rate: k is calibrated so that the starting "
                             "threshold flags this share of normal events")
    parser.add_argument("--k", type=at_least(0.0, float, above=True), default=None,
                        help="use mean + k·std with this k instead of a calibrated one (threshold.k)")


def _threshold(args: argparse.Namespace) -> dict[str, Any]:
    """``false_alarm_rate`` and ``k`` as the daemon would take them: an explicit ``--k`` wins."""
    return {"false_alarm_rate": None, "k": args.k} if args.k is not None else \
        {"false_alarm_rate": args.false_alarm_rate, "k": 3.0}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if getattr(args, "bootstrap_servers", None):
        overrides["kafka"] = {"bootstrap_servers": args.bootstrap_servers}
    if getattr(args, "checkpoint", None):
        overrides["model"] = {"checkpoint": args.checkpoint}
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    """``stream-ae train``: fit on a dataset's normal rows and write the checkpoint."""
    from stream_ae.model.training import train_autoencoder

    dataset = _dataset(args)
    checkpoint = train_autoencoder(dataset, _training_options(args))
    save_checkpoint(checkpoint, args.output)
    training = checkpoint.training
    print(f"wrote {args.output}: {checkpoint.describe()}; {training['epochs_run']} epochs in "
          f"{training['wall_time_s']:.1f} s; validation score mean {checkpoint.score_mean:.4g}, "
          f"std {checkpoint.score_std:.4g}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``stream-ae evaluate``: metrics, report and plots of a checkpoint on a labelled dataset."""
    from stream_ae.tools.evaluate import evaluate, headline

    report_dir = writable_path(args.report or args.model.with_name(f"{args.model.stem}-evaluation"), folder=True)
    report = evaluate(args.model, args.data, report_dir, args.label_column, args.device, args.ignore_non_numeric,
                      **_threshold(args))
    summary = headline(report["metrics"])
    rows = "held-out" if report["held_out_rows"] else "all"
    target = summary["target_false_alarm_rate"]
    print(f"evaluated {report['model']} on {report['events']:,} {rows} rows of {report['dataset']} "
          f"({report['anomalies']:,} anomalies): AUC-ROC {summary['auc_roc']:.4f}, AUC-PR {summary['auc_pr']:.4f}; "
          f"at the starting threshold (k = {summary['k']:.3g}"
          + ("" if target is None else f", target false-alarm rate {target:.2%}")
          + f"): false-alarm rate {summary['false_alarm_rate']:.2%}, precision {summary['precision']:.4f}, "
          f"recall {summary['recall']:.4f}, F1 {summary['f1']:.4f}; report in {report_dir}")
    print(json.dumps(summary))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``stream-ae compare``: the default detector beside kNN and IsolationForest on datasets."""
    from stream_ae.tools.compare import compare, table

    result = compare(args.paths, args.label_column, args.max_rows, _training_options(args, progress=False),
                     progress=not args.json, **_threshold(args))
    print(table(result))
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_nab(args: argparse.Namespace) -> int:
    """``stream-ae nab``: the per-series detector over NAB-style series, NAB-scored."""
    from stream_ae.tools.nab import run_nab
    from stream_ae.tools.nab_stream import stream

    def streamed(corpus: Any) -> list[np.ndarray]:
        run = stream(corpus, args.bootstrap_servers, args.chunk, args.format == "binary", progress=True)
        print(f"streamed {run.records:,} sample records ({args.chunk} rows each, {args.format}); the detector "
              f"scored {run.windows_scored:,} windows in {run.seconds:.1f} s", file=sys.stderr)
        return run.scores

    report, text = run_nab(args.path, args.windows, args.write, compare_published=not args.no_published,
                           streamed=streamed if args.stream else None, chunk_rows=args.chunk)
    print(text)
    if args.json:
        print(json.dumps({"overall": report.overall, "thresholds": report.thresholds,
                          "categories": report.categories, "windows": report.windows}))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``stream-ae run``: the daemon, until SIGTERM/SIGINT; SIGHUP reloads the checkpoint."""
    from stream_ae.service.daemon import Daemon

    settings = load_settings(args.config, **_overrides(args))
    daemon = Daemon(settings)

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("%s received: finishing the batch in flight", signal.Signals(signum).name)
        daemon.stop()

    def request_reload(signum: int, _frame: Any) -> None:
        log.info("SIGHUP received: loading %s before the next batch", settings.model.checkpoint)
        daemon.request_reload()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    daemon.run()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """``stream-ae replay``: produce a dataset's rows into a topic as events."""
    from stream_ae.kafka.topics import ensure_topics
    from stream_ae.tools.replay import replay

    settings = load_settings(args.config, **_overrides(args))
    connection = settings.kafka.connection()
    probe_cluster(connection)  # fail in seconds, before reading the data
    dataset = _dataset(args)
    if args.held_out_of:
        checkpoint = load_checkpoint(args.held_out_of)
        if checkpoint.dataset_sha256 != dataset.sha256:
            raise CheckpointError(f"{args.held_out_of} was not trained on {args.data}")
        rows = np.asarray(checkpoint.training["split"]["test"])
    else:
        rows = np.arange(len(dataset.values))
    if args.shuffle:
        rows = np.random.default_rng(args.seed).permutation(rows)
    if args.limit is not None:
        rows = rows[:args.limit]
    ensure_topics(connection, {args.topic: args.partitions})
    report = replay(dataset, rows, connection, args.topic, args.rate, payload_format=args.format)
    print(f"replayed {report.events:,} events into {args.topic} in {report.seconds:.1f} s "
          f"({report.events_per_second:,.0f} events/s)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``stream-ae demo``: the whole product end to end on this machine."""
    from stream_ae.tools.demo import print_summary, run_demo

    summary = run_demo(args.data, args.label_column, _training_options(args, progress=not args.json),
                       args.rate or None, progress=not args.json)
    print_summary(summary)
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``stream-ae bench``: throughput and latency figures against the local broker."""
    from stream_ae.tools.bench.options import BenchOptions
    from stream_ae.tools.bench.report import markdown, table, to_json
    from stream_ae.tools.bench.run import run_bench

    given = {"events": args.events, "rounds": args.rounds, "latency_seconds": args.latency_seconds,
             "payload": args.format,
             "max_batch_size": args.batch_size, "max_wait_ms": args.max_wait_ms,
             "batch_budget_ms": args.batch_budget_ms,
             "clients": tuple(args.clients) if args.clients else None,
             "scale_out": False if args.no_scale_out else None,
             "compile": False if args.no_compile else None, "torch_threads": args.torch_threads,
             "data": args.data, "checkpoint": args.checkpoint, "device": args.device,
             "bootstrap_servers": args.bootstrap_servers, "progress": not args.json,
             "guarantee": args.guarantee}
    given = {name: value for name, value in given.items() if value is not None}  # unset: the defaults
    if args.no_batch_budget:
        given["batch_budget_ms"] = None
    options = BenchOptions.quick(**given) if args.quick else BenchOptions(**given)
    if args.bootstrap_servers:
        probe_cluster(Connection(args.bootstrap_servers))  # fail in seconds, before any training
    summary = run_bench(options)
    print(markdown(summary) if args.markdown else table(summary))
    if args.save:
        args.save.write_text(to_json(summary) + "\n")
    if args.json:
        print(to_json(summary))
    return 0


SYNTHETIC = "synthetic"
"""The ``--data`` of train and replay that names generated card-shaped transactions, not a file."""


def _dataset(args: argparse.Namespace) -> LabelledDataset:
    """The dataset ``--data`` names: a file, or ``synthetic`` (the demo's transactions, seeded)."""
    if str(args.data) == SYNTHETIC and not args.data.exists():
        return synthetic_transactions()
    return load_dataset(args.data, args.label_column, args.unlabelled, args.ignore_non_numeric)


def _add_data_flags(parser: argparse.ArgumentParser, help_text: str, unlabelled: bool = True) -> None:
    parser.add_argument("--data", type=Path, required=True, help=help_text)
    parser.add_argument("--label-column", metavar="NAME",
                        help="label column of a generic table (non-zero = anomaly); the card and ECG5000 "
                        "layouts name their own")
    if unlabelled:
        parser.add_argument("--unlabelled", action="store_true",
                            help="the file has no label column and every row is normal (else refused)")
    parser.add_argument("--ignore-non-numeric", action="store_true",
                        help="leave out a generic table's non-numeric columns (else the file is refused)")


def _add_cluster_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--config", type=Path, metavar="YAML", help=f"settings file ({what}; default: none)")
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT,...",
                        help="the Kafka cluster: sets kafka.bootstrap_servers over the environment and the file "
                        "(default: 127.0.0.1:9092)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    levels = ["DEBUG", "INFO", "WARNING", "ERROR"]
    parser = argparse.ArgumentParser(prog="stream-ae", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Help)
    parser.add_argument("--log-level", default="INFO", choices=levels,
                        help="log detail on stderr; DEBUG adds the traceback of a failure and the Kafka client's "
                        "connection warnings")
    common = argparse.ArgumentParser(add_help=False)  # --log-level after the sub-command as well
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=levels,
                        help="as before the sub-command (default: INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                                   parents=[common], formatter_class=_Help)

    train = command("train", "fit an autoencoder on the normal rows of a dataset")
    _add_data_flags(train, f"CSV, parquet or npz dataset, or '{SYNTHETIC}': generated card-shaped "
                    "transactions (20,000 rows, 2%% anomalies, seeded), as the demo trains on")
    train.add_argument("--output", type=_output_file, default="model.pt", metavar="CKPT",
                       help="checkpoint to write (checked writable before training)")
    _add_training_flags(train)
    train.set_defaults(handler=cmd_train)

    evaluate = command("evaluate", "score a labelled dataset: metrics, report and plots")
    evaluate.add_argument("--model", type=Path, required=True, metavar="CKPT", help="checkpoint to evaluate")
    _add_data_flags(evaluate, "labelled dataset; the checkpoint's own training file is scored on its held-out rows",
                    unlabelled=False)
    evaluate.add_argument("--report", type=Path, metavar="DIR",
                          help="folder for report.json, report.md and the plots (default: CKPT's stem + -evaluation)")
    evaluate.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    _add_threshold_flags(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

    compare = command("compare", "the default detector beside kNN and IsolationForest on labelled datasets, "
                      "one table")
    compare.add_argument("paths", type=Path, nargs="+", metavar="PATH",
                         help="dataset files, or folders (every .csv, .csv.gz, .parquet, .npz directly in them)")
    compare.add_argument("--label-column", metavar="NAME",
                         help="label column of generic tables (non-zero = anomaly); the card and ECG5000 layouts "
                         "name their own")
    compare.add_argument("--max-rows", type=at_least(2), default=40_000,
                         help="larger tables are subsampled, seeded, anomalies kept up to 10%%")
    compare.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    _add_training_flags(compare)
    _add_threshold_flags(compare)
    compare.set_defaults(handler=cmd_compare)

    nab = command("nab", "the per-series detector over the Numenta Anomaly Benchmark (or series laid out "
                  "like it), NAB-scored beside the scoreboard")
    nab.add_argument("path", type=Path, metavar="PATH",
                     help="a NAB folder: data/<category>/<series>.csv (timestamp,value) and combined_windows.json")
    nab.add_argument("--windows", type=Path, metavar="JSON",
                     help="labelled windows (default: PATH/combined_windows.json or PATH/labels/...)")
    nab.add_argument("--write", type=Path, metavar="DIR",
                     help="also write the per-row scores as NAB's results files, DIR/<category>/"
                     "streamAE_<series>.csv")
    nab.add_argument("--no-published", action="store_true",
                     help="skip scoring the published detectors' rows under PATH/results per category")
    nab.add_argument("--stream", action="store_true",
                     help="send the series through Kafka as sample records and score what the daemon returns "
                     "(and check it against the in-process run)")
    nab.add_argument("--chunk", type=at_least(1), default=1, help="with --stream: rows per sample record")
    nab.add_argument("--format", choices=["json", "binary"], default="json", help="with --stream: payload")
    nab.add_argument("--bootstrap-servers", help="with --stream: a cluster of one's own (default: start the "
                     "local broker)")
    nab.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    nab.set_defaults(handler=cmd_nab)

    run = command("run", "run the detector daemon")
    _add_cluster_flags(run, "every section")
    run.add_argument("--checkpoint", type=Path, metavar="CKPT",
                     help="checkpoint to serve: sets model.checkpoint over the environment and the file "
                     "(default: model.pt)")
    run.set_defaults(handler=cmd_run)

    replay = command("replay", "produce a dataset's rows into a topic as events")
    _add_data_flags(replay, f"CSV, parquet or npz dataset, or '{SYNTHETIC}': the transactions that "
                    f"'train --data {SYNTHETIC}' trains on")
    replay.add_argument("--topic", default="events", help="topic to produce to")
    replay.add_argument("--partitions", type=at_least(1), default=3, help="partitions if the topic is created")
    _add_cluster_flags(replay, "its kafka section")
    replay.add_argument("--rate", type=at_least(0.0, float, above=True),
                        help="events per second (default: as fast as possible)")
    replay.add_argument("--held-out-of", type=Path, metavar="CKPT",
                        help="replay only the rows this checkpoint held out of training (default: every row)")
    replay.add_argument("--shuffle", action="store_true", help="shuffle the rows (seeded by --seed)")
    replay.add_argument("--seed", type=int, default=42, help="seed of --shuffle")
    replay.add_argument("--limit", type=at_least(1), help="send at most this many events (default: all)")
    replay.add_argument("--format", choices=["json", "binary"], default="json",
                        help="payload: JSON objects, or the compact float32 binary layout")
    replay.set_defaults(handler=cmd_replay)

    bench = command("bench", "throughput and latency figures, all in one run")
    bench.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, figures not meaningful")
    bench.add_argument("--events", type=at_least(1), help="records in the topic (default: 200,000; --quick 3,000)")
    bench.add_argument("--rounds", type=at_least(1), help="detector runs, each between two consume-limit runs "
                       "(default: 5; --quick 1)")
    bench.add_argument("--format", choices=["json", "binary"], help="payload of the records (default: json)")
    bench.add_argument("--batch-size", type=at_least(1), help="consumer.max_batch_size (default: 4096)")
    bench.add_argument("--max-wait-ms", type=at_least(0), help="consumer.max_wait_ms (default: 50)")
    bench.add_argument("--batch-budget-ms", type=at_least(0.0, float, above=True),
                       help="consumer.batch_budget_ms (default: the daemon's, 100)")
    bench.add_argument("--no-batch-budget", action="store_true",
                       help="consumer.batch_budget_ms null: batches of --batch-size whatever they cost")
    bench.add_argument("--latency-seconds", type=at_least(0.0, float, above=True),
                       help="paced-producer time per load level (default: 8)")
    bench.add_argument("--clients", nargs="+", choices=["kafka-python", "confluent-kafka"],
                       help="clients to measure (default: both; confluent-kafka only where installed)")
    bench.add_argument("--no-scale-out", action="store_true", help="skip the two-process measurement")
    bench.add_argument("--no-compile", action="store_true", help="skip torch.compile in the accuracy check")
    bench.add_argument("--torch-threads", type=at_least(1), help="torch intra-op threads per detector (default: 1)")
    bench.add_argument("--data", type=Path, help="labelled dataset (default: synthetic transactions)")
    bench.add_argument("--checkpoint", type=Path, help="a model trained on --data (default: train briefly)")
    bench.add_argument("--device", type=device_name, help="auto, cpu, cuda or cuda:N (default: auto)")
    bench.add_argument("--bootstrap-servers", help="an existing cluster (default: start the local broker)")
    bench.add_argument("--guarantee", choices=["at_least_once", "exactly_once"],
                       help="the detectors' delivery.guarantee (default: at_least_once; exactly_once "
                       "needs a broker that isolates transactions, e.g. --bootstrap-servers of Apache Kafka)")
    bench.add_argument("--markdown", action="store_true",
                       help="print the body of docs/performance.md's generated section")
    bench.add_argument("--save", type=Path, metavar="JSON", help="also write the figures to this file")
    bench.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    bench.set_defaults(handler=cmd_bench)

    demo = command("demo", "the whole product on this machine, end to end")
    demo.add_argument("--data", type=Path, help="labelled dataset (default: synthetic transactions)")
    demo.add_argument("--label-column", metavar="NAME", help="label column of a generic table (non-zero = anomaly)")
    demo.add_argument("--rate", type=at_least(0.0, float), default=2000.0,
                      help="replay rate, events/s; 0 for as fast as possible")
    demo.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    _add_training_flags(demo)
    demo.set_defaults(handler=cmd_demo)
    return parser


def _configure_logging(level: str) -> None:
    """Log records at ``level`` to stderr. kafka-python logs only its warnings (its debug
    records may quote the client's configuration), and its connection warnings only at
    DEBUG: the daemon reports whether the cluster answers itself, in one line."""
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("kafka.net").setLevel(logging.NOTSET if level == "DEBUG" else logging.CRITICAL)


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (lines joined with ``; ``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stream-ae`` command. Returns the process exit code.

    Every failure ends in one line ``stream-ae CMD: error: ...`` on stderr: exit 2
    (:data:`EXIT_USAGE`) for a usage or input error (a flag, a setting, a dataset or
    checkpoint file: the ``ValueError`` family), 1 (:data:`EXIT_FAULT`) for a runtime fault
    (the broker, a port, the disk); 130 after Ctrl-C. The traceback is logged at
    ``--log-level DEBUG`` only.
    """
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_level)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"stream-ae {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        log.debug("stream-ae %s failed", args.command, exc_info=True)
        expected: tuple[type[Exception], ...] = (ValueError, OSError, DeliveryError, BrokerError, *client_errors())
        message = _one_line(exc) if isinstance(exc, expected) else (
            f"{type(exc).__name__}: {_one_line(exc)} (--log-level DEBUG shows where)")
        print(f"stream-ae {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAULT


if __name__ == "__main__":
    sys.exit(main())
