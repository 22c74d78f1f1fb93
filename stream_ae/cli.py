"""``stream-ae``: the command line. Each sub-command parses its flags and calls one module."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np

from stream_ae.model.autoencoders import DEFAULT_MODEL, MODEL_BUILDERS
from stream_ae.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stream_ae.model.datasets import load_dataset
from stream_ae.model.memory_bank import BankOptions
from stream_ae.model.training import SCORES, TrainingOptions
from stream_ae.pipeline.threshold.adaptive import DEFAULT_FALSE_ALARM_RATE
from stream_ae.service.config import load_settings

log = logging.getLogger("stream_ae")


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    defaults = TrainingOptions()
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODEL_BUILDERS),
                        help="autoencoder to train (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="most epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--patience", type=int, default=defaults.patience,
                        help="epochs without validation improvement before stopping")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--score", default=defaults.score, choices=SCORES,
                        help="memory-bank: distance to the nearest normal training rows in the autoencoder's "
                             "view; reconstruction: the reconstruction error alone (default: %(default)s)")
    parser.add_argument("--bank-rows", type=int, default=defaults.bank.max_rows,
                        help="most training rows kept in the memory bank; its scoring cost per event grows "
                             "with it (default: %(default)s)")


def _training_options(args: argparse.Namespace, progress: bool = True) -> TrainingOptions:
    return TrainingOptions(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                           learning_rate=args.learning_rate, patience=args.patience, seed=args.seed,
                           device=args.device, progress=progress, score=args.score,
                           bank=BankOptions(max_rows=args.bank_rows))


def _add_threshold_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--false-alarm-rate", type=float, default=DEFAULT_FALSE_ALARM_RATE,
                        help="the daemon's threshold.false_alarm_rate: k is calibrated so that the starting "
                             "threshold flags this share of normal events (default: %(default)s)")
    parser.add_argument("--k", type=float, default=None,
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

    dataset = load_dataset(args.data, args.label_column)
    checkpoint = train_autoencoder(dataset, _training_options(args))
    save_checkpoint(checkpoint, args.output)
    training = checkpoint.training
    print(f"wrote {args.output}: {checkpoint.describe()}; {training['epochs_run']} epochs in "
          f"{training['wall_time_s']:.1f} s; validation score mean {checkpoint.error_mean:.4g}, "
          f"std {checkpoint.error_std:.4g}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``stream-ae evaluate``: metrics, report and plots of a checkpoint on a labelled dataset."""
    from stream_ae.tools.evaluate import evaluate, headline

    report_dir = args.report or args.model.with_name(f"{args.model.stem}-evaluation")
    report = evaluate(args.model, args.data, report_dir, args.label_column, args.device, **_threshold(args))
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


def cmd_run(args: argparse.Namespace) -> int:
    """``stream-ae run``: the daemon, until SIGTERM/SIGINT; SIGHUP reloads the checkpoint."""
    from stream_ae.service.daemon import Daemon

    settings = load_settings(args.config, **_overrides(args))
    detector = Daemon(settings)

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("%s received: finishing the batch in flight", signal.Signals(signum).name)
        detector.stop()

    def request_reload(signum: int, _frame: Any) -> None:
        log.info("SIGHUP received: loading %s before the next batch", settings.model.checkpoint)
        detector.request_reload()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    detector.run()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """``stream-ae replay``: produce a dataset's rows into a topic as events."""
    from stream_ae.kafka.topics import ensure_topics
    from stream_ae.tools.replay import replay

    settings = load_settings(args.config, **_overrides(args))
    dataset = load_dataset(args.data, args.label_column)
    if args.held_out_of:
        checkpoint = load_checkpoint(args.held_out_of)
        if checkpoint.training.get("dataset_sha256") != dataset.sha256:
            raise CheckpointError(f"{args.held_out_of} was not trained on {args.data}")
        rows = np.asarray(checkpoint.training["split"]["test"])
    else:
        rows = np.arange(len(dataset.values))
    if args.shuffle:
        rows = np.random.default_rng(args.seed).permutation(rows)
    if args.limit:
        rows = rows[:args.limit]
    connection = settings.kafka.connection()
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
             "clients": tuple(args.clients) if args.clients else None,
             "scale_out": False if args.no_scale_out else None,
             "compile": False if args.no_compile else None, "torch_threads": args.torch_threads,
             "data": args.data, "checkpoint": args.checkpoint, "device": args.device,
             "bootstrap_servers": args.bootstrap_servers, "progress": not args.json,
             "guarantee": args.guarantee}
    given = {name: value for name, value in given.items() if value is not None}  # unset: the defaults
    options = BenchOptions.quick(**given) if args.quick else BenchOptions(**given)
    summary = run_bench(options)
    print(markdown(summary) if args.markdown else table(summary))
    if args.save:
        args.save.write_text(to_json(summary) + "\n")
    if args.json:
        print(to_json(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="stream-ae", description=__doc__)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fit an autoencoder on the normal rows of a dataset")
    train.add_argument("--data", type=Path, required=True, help="CSV, parquet or npz dataset")
    train.add_argument("--label-column", help="label column of a generic table")
    train.add_argument("--output", type=Path, default=Path("model.pt"), help="checkpoint to write")
    _add_training_flags(train)
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="score a labelled dataset: metrics, report and plots")
    evaluate.add_argument("--model", type=Path, required=True, metavar="CKPT", help="checkpoint to evaluate")
    evaluate.add_argument("--data", type=Path, required=True,
                          help="labelled dataset; the checkpoint's own training file is scored on its held-out rows")
    evaluate.add_argument("--label-column", help="label column of a generic table")
    evaluate.add_argument("--report", type=Path, metavar="DIR",
                          help="folder for report.json, report.md and the plots (default: CKPT's stem + -evaluation)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    _add_threshold_flags(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

    compare = commands.add_parser(
        "compare", help="the default detector beside kNN and IsolationForest on labelled datasets, one table")
    compare.add_argument("paths", type=Path, nargs="+", metavar="PATH",
                         help="dataset files, or folders (every .csv, .csv.gz, .parquet, .npz directly in them)")
    compare.add_argument("--label-column", help="label column of generic tables")
    compare.add_argument("--max-rows", type=int, default=40_000,
                         help="larger tables are subsampled, seeded, anomalies kept up to 10%% (default: %(default)s)")
    compare.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    _add_training_flags(compare)
    _add_threshold_flags(compare)
    compare.set_defaults(handler=cmd_compare)

    run = commands.add_parser("run", help="run the detector daemon")
    run.add_argument("--config", type=Path, help="YAML settings file")
    run.add_argument("--checkpoint", type=Path, help="overrides model.checkpoint")
    run.add_argument("--bootstrap-servers", help="overrides kafka.bootstrap_servers")
    run.set_defaults(handler=cmd_run)

    replay = commands.add_parser("replay", help="produce a dataset's rows into a topic as events")
    replay.add_argument("--data", type=Path, required=True)
    replay.add_argument("--label-column")
    replay.add_argument("--topic", default="events")
    replay.add_argument("--partitions", type=int, default=3, help="partitions if the topic is created")
    replay.add_argument("--config", type=Path, help="YAML settings file (for the kafka section)")
    replay.add_argument("--bootstrap-servers", help="overrides kafka.bootstrap_servers")
    replay.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    replay.add_argument("--held-out-of", type=Path, metavar="CHECKPOINT",
                        help="replay only the rows this checkpoint held out of training")
    replay.add_argument("--shuffle", action="store_true", help="shuffle the rows (seeded)")
    replay.add_argument("--seed", type=int, default=42)
    replay.add_argument("--limit", type=int, help="send at most this many events")
    replay.add_argument("--format", choices=["json", "binary"], default="json",
                        help="payload: JSON objects, or the compact float32 binary layout (default: %(default)s)")
    replay.set_defaults(handler=cmd_replay)

    bench = commands.add_parser("bench", help="throughput and latency figures, all in one run")
    bench.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, figures not meaningful")
    bench.add_argument("--events", type=int, help="records in the topic (default: 200,000; --quick 3,000)")
    bench.add_argument("--rounds", type=int, help="detector runs, each between two consume-limit runs "
                       "(default: 5; --quick 1)")
    bench.add_argument("--format", choices=["json", "binary"], help="payload of the records (default: json)")
    bench.add_argument("--batch-size", type=int, help="consumer.max_batch_size (default: 4096)")
    bench.add_argument("--max-wait-ms", type=int, help="consumer.max_wait_ms (default: 50)")
    bench.add_argument("--latency-seconds", type=float, help="paced-producer time per load level (default: 8)")
    bench.add_argument("--clients", nargs="+", choices=["kafka-python", "confluent-kafka"],
                       help="clients to measure (default: both; confluent-kafka only where installed)")
    bench.add_argument("--no-scale-out", action="store_true", help="skip the two-process measurement")
    bench.add_argument("--no-compile", action="store_true", help="skip torch.compile in the accuracy check")
    bench.add_argument("--torch-threads", type=int, help="torch intra-op threads per detector (default: 1)")
    bench.add_argument("--data", type=Path, help="labelled dataset (default: synthetic transactions)")
    bench.add_argument("--checkpoint", type=Path, help="a model trained on --data (default: train briefly)")
    bench.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    bench.add_argument("--bootstrap-servers", help="an existing cluster (default: start the local broker)")
    bench.add_argument("--guarantee", choices=["at_least_once", "exactly_once"],
                       help="the detectors' delivery.guarantee (default: at_least_once; exactly_once "
                       "needs a broker that isolates transactions, e.g. --bootstrap-servers of Apache Kafka)")
    bench.add_argument("--markdown", action="store_true", help="print the README's Performance section body")
    bench.add_argument("--save", type=Path, metavar="JSON", help="also write the figures to this file")
    bench.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    bench.set_defaults(handler=cmd_bench)

    demo = commands.add_parser("demo", help="the whole product on this machine, end to end")
    demo.add_argument("--data", type=Path, help="labelled dataset (default: synthetic transactions)")
    demo.add_argument("--label-column")
    demo.add_argument("--rate", type=float, default=2000.0,
                      help="replay rate, events/s; 0 for as fast as possible (default: %(default)s)")
    demo.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    _add_training_flags(demo)
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stream-ae`` command. Returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        return args.handler(args)
    except ValueError as exc:  # ConfigError, DatasetError, CheckpointError among them
        print(f"stream-ae {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
