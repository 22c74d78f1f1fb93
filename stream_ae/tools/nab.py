"""``stream-ae nab``: the detector run causally over the Numenta Anomaly Benchmark, NAB-scored.

Every series of a NAB-style folder (``data/<category>/<series>.csv`` with columns
``timestamp,value``, and a windows file, NAB's ``combined_windows.json``) goes through the
daemon's own scoring stages, in process: sample batches
(:class:`stream_ae.pipeline.samples.SampleBatch`), windows per series
(:class:`stream_ae.pipeline.windows.SeriesWindower`) and the per-series detector
(:class:`stream_ae.model.series.SeriesDetector`). All series advance together, a chunk of
each per micro-batch, in time order, so state is kept for every series at once as the
daemon keeps it. Each series' detector learns, before it scores, only from the series'
probationary period (``min(floor(0.15 n), 750)`` rows, which NAB never scores); a row's
score uses no later row.

The scores are then NAB-scored (:mod:`stream_ae.tools.nab_scoring`) for the three
profiles, overall and per category, beside the published scoreboard
(``results/final_results.json`` where the folder has it) and, per category, beside the
detectors whose per-row results the folder holds (``results/<detector>/``), scored here
by the same code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stream_ae.kafka.records import PartitionKey
from stream_ae.model.series import SeriesDetector, SeriesSettings
from stream_ae.pipeline.samples import SampleBatch
from stream_ae.pipeline.windows import SeriesWindower
from stream_ae.tools.nab_scoring import (
    PROFILES,
    ScoredSeries,
    best_threshold,
    load_windows,
    normalised_score,
    probationary_rows,
)

DETECTOR_NAME = "streamAE"
"""The name our rows are written under in NAB's results layout."""

NAB_PARTITION: PartitionKey = ("nab", 0)


class NabError(ValueError):
    """A folder that is not laid out like NAB's, or a series or windows file that cannot be read."""


@dataclass(frozen=True)
class Series:
    """One labelled series.

    Attributes:
        name: ``<category>/<file>.csv``, as the windows file names it.
        timestamps: ``datetime64[ms]`` ``(n,)``, in file order (NAB's clocks may repeat or step back).
        values: float64 ``(n,)``.
        windows: the labelled anomaly windows, ``(start, end)`` timestamps.
    """

    name: str
    timestamps: np.ndarray
    values: np.ndarray
    windows: list[tuple[str, str]]

    @property
    def category(self) -> str:
        """The folder the series lies in."""
        return self.name.split("/")[0]


def load_corpus(path: Path, windows_file: Path | None = None) -> list[Series]:
    """Every series under ``path/data`` (or ``path`` itself when it has no ``data`` folder)
    with its labelled windows.

    Args:
        path: a NAB checkout, or a folder laid out like NAB's ``data/``.
        windows_file: the windows; default ``path/combined_windows.json`` or
            ``path/labels/combined_windows.json``.

    Raises:
        NabError: no series, no windows file, a series the windows file does not name, or a
            CSV without ``timestamp,value`` columns in time order.
    """
    data = path / "data" if (path / "data").is_dir() else path
    if windows_file is None:
        found = [f for f in (path / "combined_windows.json", path / "labels" / "combined_windows.json") if f.is_file()]
        if not found:
            raise NabError(f"{path}: no combined_windows.json (nor labels/combined_windows.json); give --windows")
        windows_file = found[0]
    labelled = load_windows(windows_file)
    files = sorted(data.glob("*/*.csv"))
    if not files:
        raise NabError(f"{data}: no <category>/<series>.csv files")
    corpus = []
    for file in files:
        name = f"{file.parent.name}/{file.name}"
        if name not in labelled:
            raise NabError(f"{windows_file} has no windows for {name}")
        table = pd.read_csv(file)
        if list(table.columns[:2]) != ["timestamp", "value"]:
            raise NabError(f"{file}: columns {list(table.columns)}, expected timestamp,value")
        times = pd.to_datetime(table["timestamp"]).to_numpy("datetime64[ms]")
        corpus.append(Series(name, times, table["value"].to_numpy(np.float64), labelled[name]))
    return corpus


@dataclass(frozen=True)
class Chunks:
    """One series cut into sample records of ``chunk_rows`` rows, as a producer sends them.

    Attributes:
        starts: int64 ``(records,)`` each record's first row.
        counts: int64 ``(records,)`` rows per record.
        first_ms: float64 ``(records,)`` the first row's time, ms since the epoch.
        interval_ms: float64 ``(records,)`` the record's sampling interval (its rows' span
            over their count less one; 0 for one row).
    """

    starts: np.ndarray
    counts: np.ndarray
    first_ms: np.ndarray
    interval_ms: np.ndarray


def chunks(series: Series, chunk_rows: int = 1) -> Chunks:
    """The records a series is sent as: ``chunk_rows`` consecutive rows each, in file order.

    NAB feeds rows in file order; where a clock repeats or steps back (NAB's has both: a
    daylight-saving change, a gap), sample times are held at their running maximum, so that
    no record starts before its series' last sample.
    """
    times = np.maximum.accumulate(series.timestamps.astype(np.int64)).astype(np.float64)
    starts = np.arange(0, len(times), chunk_rows, dtype=np.int64)
    counts = np.minimum(starts + chunk_rows, len(times)) - starts
    first, last = times[starts], times[starts + counts - 1]
    return Chunks(starts, counts, first, np.where(counts > 1, (last - first) / np.maximum(counts - 1, 1), 0.0))


def probations(corpus: Sequence[Series]) -> dict[str, int]:
    """Each series' probationary period, its warm-up: ``min(floor(0.15 n), 750)`` rows."""
    return {series.name: probationary_rows(len(series.values)) for series in corpus}


def detect(corpus: Sequence[Series], settings: SeriesSettings | None = None, chunk_rows: int = 1,
           batch_records: int = 64) -> list[np.ndarray]:
    """Run the per-series detector over every series at once, in time order.

    Each series is cut into records (:func:`chunks`); micro-batch ``k`` holds records
    ``[k * batch_records, (k + 1) * batch_records)`` of every series that has them, and the
    windows they complete are scored in one call per batch.

    Args:
        corpus: the series.
        settings: the detector's settings (default: :class:`SeriesSettings`'s); each
            series warms up on its probationary period.
        chunk_rows: rows per sample record.
        batch_records: records of each series per micro-batch.

    Returns:
        Per series, float64 ``(n,)`` the anomaly score of each row in ``[0, 1]``; rows with
        no score (the probationary period) hold 0.
    """
    settings = settings or SeriesSettings()
    names = [series.name for series in corpus]
    detector = SeriesDetector(settings, warmup_of=probations(corpus))
    windower = SeriesWindower(settings.length, 1, 1, max_series=max(len(corpus), 1))
    scores = [np.zeros(len(series.values)) for series in corpus]
    cut = [chunks(series, chunk_rows) for series in corpus]
    most = max((len(one.starts) for one in cut), default=0)
    for first in range(0, most, batch_records):
        taking = [k for k, one in enumerate(cut) if len(one.starts) > first]
        parts = [slice(first, first + batch_records)] * len(taking)
        counts = np.concatenate([cut[k].counts[part] for k, part in zip(taking, parts)])
        records = np.array([len(cut[k].counts[part]) for k, part in zip(taking, parts)])
        rows = [slice(int(cut[k].starts[part][0]), int(cut[k].starts[part][-1] + cut[k].counts[part][-1]))
                for k, part in zip(taking, parts)]
        total = len(counts)
        batch = SampleBatch([names[k] for k in taking], np.repeat(np.arange(len(taking), dtype=np.int32), records),
                            counts, np.concatenate([corpus[k].values[row] for k, row in zip(taking, rows)]
                                                   ).astype(np.float32)[:, None],
                            np.concatenate([cut[k].first_ms[part] for k, part in zip(taking, parts)]),
                            np.concatenate([cut[k].interval_ms[part] for k, part in zip(taking, parts)]),
                            [NAB_PARTITION], np.zeros(total, np.int32), np.arange(total, dtype=np.int64),
                            np.arange(total, dtype=np.int64))
        windows, backwards = windower.cut(batch)
        assert not backwards, "sample times are held at their running maximum"
        window_scores, scored = detector.score(windows.values, windows.series, windows.series_index,
                                               windows.end_sample, windows.last_ms)
        keys = np.asarray(taking)[windows.series_index]
        for k in np.unique(keys[scored]):
            mine = scored & (keys == k)
            scores[k][windows.end_sample[mine]] = window_scores[mine]
    return scores


@dataclass(frozen=True)
class NabReport:
    """NAB scores of one detector over a corpus.

    Attributes:
        overall: per profile, the normalised score (0 detects nothing, 100 is perfect).
        thresholds: per profile, the corpus threshold that gave it.
        categories: per category with windows, the standard profile's normalised score with
            the category's own best threshold.
        windows: labelled windows in the corpus.
    """

    overall: dict[str, float]
    thresholds: dict[str, float]
    categories: dict[str, float]
    windows: int


def nab_report(corpus: Sequence[Series], scores: Sequence[np.ndarray]) -> NabReport:
    """Score a corpus' per-row anomaly scores as NAB does, per profile and per category.

    Args:
        corpus: the series.
        scores: per series, float ``(n,)`` anomaly scores.
    """
    scored = [ScoredSeries(series.timestamps, series.windows, one) for series, one in zip(corpus, scores)]
    windows = sum(one.windows for one in scored)
    overall, thresholds = {}, {}
    for name, profile in PROFILES.items():
        thresholds[name], raw = best_threshold(scored, profile)
        overall[name] = normalised_score(raw, windows, profile)
    categories = {}
    for category in sorted({series.category for series in corpus}):
        members = [one for one, series in zip(scored, corpus) if series.category == category]
        count = sum(one.windows for one in members)
        if count:
            standard = PROFILES["standard"]
            categories[category] = normalised_score(best_threshold(members, standard)[1], count, standard)
    return NabReport(overall, thresholds, categories, windows)


def published_scores(path: Path) -> dict[str, dict[str, float]]:
    """NAB's published scoreboard, ``results/final_results.json`` under ``path`` ({} if absent)."""
    file = path / "results" / "final_results.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def published_rows(path: Path, corpus: Sequence[Series]) -> dict[str, list[np.ndarray]]:
    """Per detector with a complete ``results/<detector>/`` folder, its per-row anomaly scores
    of every series of ``corpus`` (NAB's ``<category>/<detector>_<series>.csv[.gz]`` files)."""
    found: dict[str, list[np.ndarray]] = {}
    results = path / "results"
    for folder in sorted(p for p in results.glob("*") if p.is_dir()) if results.is_dir() else []:
        rows = []
        for series in corpus:
            category, file = series.name.split("/")
            stem = folder / category / f"{folder.name}_{file}"
            existing = [f for f in (stem, Path(f"{stem}.gz")) if f.is_file()]
            if not existing:
                break
            rows.append(pd.read_csv(existing[0], usecols=["anomaly_score"])["anomaly_score"].to_numpy(np.float64))
        else:
            found[folder.name] = rows
    return found


def write_results(folder: Path, corpus: Sequence[Series], scores: Sequence[np.ndarray],
                  detector: str = DETECTOR_NAME) -> list[Path]:
    """Write per-row scores as NAB's results files: ``folder/<category>/<detector>_<series>.csv``
    with columns ``timestamp,value,anomaly_score,label`` (label 1 inside a window)."""
    written = []
    for series, one in zip(corpus, scores):
        category, file = series.name.split("/")
        label = np.zeros(len(one), np.int64)
        for start, end in series.windows:
            label[(series.timestamps >= np.datetime64(start)) & (series.timestamps <= np.datetime64(end))] = 1
        out = folder / category / f"{detector}_{file}"
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": pd.to_datetime(series.timestamps).strftime("%Y-%m-%d %H:%M:%S"),
                      "value": series.values, "anomaly_score": one, "label": label}).to_csv(out, index=False)
        written.append(out)
    return written


def format_tables(ours: NabReport, published: dict[str, dict[str, float]],
                  others: dict[str, NabReport], seconds: float) -> str:
    """Markdown: the overall scores beside the scoreboard, then the standard profile per category."""
    lines = ["| detector | standard | reward_low_FP_rate | reward_low_FN_rate |", "|---|---:|---:|---:|"]
    board = {f"**stream-ae** (this run, {seconds:.0f} s)": ours.overall}
    board.update((name, scores) for name, scores in published.items() if name != "null")
    for name, figures in sorted(board.items(), key=lambda item: -item[1]["standard"]):
        lines.append(f"| {name} | " + " | ".join(f"{figures[p]:.1f}" for p in PROFILES) + " |")
    columns = ["stream-ae", *others]
    lines += ["", "Standard profile per category (each category's own best threshold; "
              "the others' rows scored by the same code):", "",
              "| category | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for category, score in ours.categories.items():
        row = [score] + [report.categories.get(category, float("nan")) for report in others.values()]
        lines.append(f"| {category} | " + " | ".join(f"{figure:.1f}" for figure in row) + " |")
    return "\n".join(lines)


def run_nab(path: Path, windows_file: Path | None = None, write: Path | None = None,
            settings: SeriesSettings | None = None, compare_published: bool = True,
            streamed: Callable[[Sequence[Series]], list[np.ndarray]] | None = None,
            chunk_rows: int = 1) -> tuple[NabReport, str]:
    """Run, score and format: what ``stream-ae nab PATH`` prints.

    Args:
        path, windows_file: the corpus (:func:`load_corpus`).
        write: a folder for NAB's results files of the scores reported.
        settings: the detector's settings.
        chunk_rows: rows per sample record (:func:`chunks`).
        compare_published: score the published detectors' rows per category too.
        streamed: given, the scores reported are what it returns for the corpus (a run
            through Kafka), and the text says whether every row equals the in-process run's.

    Returns:
        ``(report, text)``: our scores and the tables.

    Raises:
        NabError: the folder is not laid out like NAB's.
    """
    corpus = load_corpus(path, windows_file)
    started = time.perf_counter()
    scores = detect(corpus, settings, chunk_rows)
    seconds = time.perf_counter() - started
    lines = []
    if streamed is not None:
        in_process = scores
        scores = streamed(corpus)
        equal = sum(int((a == b).sum()) for a, b in zip(scores, in_process))
        rows = sum(len(one) for one in scores)
        worst = max(float(np.abs(a - b).max()) for a, b in zip(scores, in_process))
        lines.append(f"streamed through Kafka: {equal:,} of {rows:,} row scores equal the in-process run's "
                     f"(largest difference {worst:.3g})\n")
    if write is not None:
        write_results(write, corpus, scores)
    report = nab_report(corpus, scores)
    others = ({name: nab_report(corpus, rows) for name, rows in published_rows(path, corpus).items()}
              if compare_published else {})
    return report, "\n".join(lines) + format_tables(report, published_scores(path), others, seconds)
