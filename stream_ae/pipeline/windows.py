"""Windows per series key: the samples of each series cut into windows inside the consumer.

Each series keeps its last ``length - 1`` samples (and their times); a window of ``length``
consecutive samples ends at every ``stride``-th sample of the series, counted from its
first sample: sample ``e`` (0-based) ends a window when ``e >= length - 1`` and
``(e - length + 1) % stride == 0``. So a series' windows depend only on its samples, never
on how they were split into records or batches.

Work is per series and per batch, with array slices: the records of one series in a
batch are joined and cut with one ``sliding_window_view``; no Python work per sample.
Memory is bounded by ``max_series``: beyond it, once a batch is scored, the least recently
seen series are evicted (:meth:`SeriesWindower.evict`; one starts again, warming, if it returns).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from stream_ae.pipeline.samples import SampleBatch


@dataclass
class SeriesTail:
    """What a series keeps between batches.

    Attributes:
        values: float32 ``(<= length - 1, channels)`` its last samples.
        times_ms: float64 ``(<= length - 1,)`` their times, ms since the epoch.
        seen: samples of the series consumed so far.
    """

    values: np.ndarray
    times_ms: np.ndarray
    seen: int = 0

    @property
    def last_ms(self) -> float:
        """The time of the series' last sample (-inf before its first)."""
        return float(self.times_ms[-1]) if len(self.times_ms) else -np.inf


def _put_back(tail: SeriesTail, values: np.ndarray, times_ms: np.ndarray, seen: int) -> None:
    tail.values, tail.times_ms, tail.seen = values, times_ms, seen


@dataclass(frozen=True)
class Windows:
    """The windows that one micro-batch completed, grouped by series, in time order within each.

    Attributes:
        values: float32 ``(windows, length, channels)`` raw samples.
        series: the distinct series keys of the batch.
        series_index: int32 ``(windows,)`` indexing ``series``.
        end_sample: int64 ``(windows,)`` the index of the window's last sample in its series
            (0-based, counted since the series was first seen or last evicted).
        first_ms, last_ms: float64 ``(windows,)`` times of the window's first and last sample.
        record: int64 ``(windows,)`` the sample record (index into the :class:`SampleBatch`)
            that held the window's last sample.
        sample_in_record: int64 ``(windows,)`` that sample's index within its record: with
            ``record``'s partition and offset, a key unique per window.
    """

    values: np.ndarray
    series: list[str]
    series_index: np.ndarray
    end_sample: np.ndarray
    first_ms: np.ndarray
    last_ms: np.ndarray
    record: np.ndarray
    sample_in_record: np.ndarray

    def __len__(self) -> int:
        return len(self.end_sample)


@dataclass
class _Cut:
    """The windows of one series in one batch, before they are joined."""

    values: list[np.ndarray] = field(default_factory=list)
    series_index: list[np.ndarray] = field(default_factory=list)
    end_sample: list[np.ndarray] = field(default_factory=list)
    first_ms: list[np.ndarray] = field(default_factory=list)
    last_ms: list[np.ndarray] = field(default_factory=list)
    record: list[np.ndarray] = field(default_factory=list)
    sample_in_record: list[np.ndarray] = field(default_factory=list)


class SeriesWindower:
    """Cuts each series' samples into windows of ``length`` samples every ``stride`` samples.

    Args:
        length: samples per window.
        stride: samples between the ends of consecutive windows.
        channels: values per sample.
        max_series: series held at most; the least recently seen is evicted beyond it.
        on_evict: called with the key of each series evicted (to drop what else is kept for it).

    Raises:
        ValueError: a length, stride, channel count or bound below 1.

    Example:
        >>> from stream_ae.kafka.records import ConsumedBatch
        >>> from stream_ae.pipeline.samples import SampleDecoder
        >>> consumed = ConsumedBatch.from_columns(
        ...     [b'{"samples": [1, 2, 3, 4, 5], "interval_ms": 1000, "timestamp": 0}'], ["m"], [0], [9], [0],
        ...     record_at=lambda index: None, record_keys=[b"cpu"])
        >>> samples, _ = SampleDecoder().decode(consumed)
        >>> windows, rejected = SeriesWindower(length=3, stride=2).cut(samples)
        >>> windows.values[..., 0].tolist(), windows.end_sample.tolist(), windows.first_ms.tolist()
        ([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]], [2, 4], [0.0, 2000.0])
    """

    def __init__(self, length: int, stride: int = 1, channels: int = 1, max_series: int = 100_000,
                 on_evict: Callable[[str], None] | None = None) -> None:
        for name, number in (("length", length), ("stride", stride), ("channels", channels),
                             ("max_series", max_series)):
            if number < 1:
                raise ValueError(f"{name} must be at least 1, got {number}")
        self.length, self.stride, self.channels, self.max_series = length, stride, channels, max_series
        self.tails: OrderedDict[str, SeriesTail] = OrderedDict()  # least recently seen first
        self.evicted = 0
        self.on_evict = on_evict
        self.undo: list[Callable[[], object]] | None = None  # while set, cut() logs how to take itself back

    def tail(self, series: str) -> SeriesTail:
        """The series' state (a new, empty one for a series not held); marks it recently seen."""
        held = self.tails.get(series)
        undo = self.undo
        if held is None:
            held = SeriesTail(np.empty((0, self.channels), np.float32), np.empty(0, np.float64))
            self.tails[series] = held
            if undo is not None:
                undo.append(partial(self.tails.pop, series, None))
        else:
            self.tails.move_to_end(series)
            if undo is not None:
                values, times, seen = held.values, held.times_ms, held.seen  # replaced, never changed in place
                undo.append(partial(_put_back, held, values, times, seen))
        return held

    def evict(self, undo: list[Callable[[], object]] | None = None) -> list[str]:
        """Evict the least recently seen series beyond ``max_series`` (``on_evict`` is called
        for each); a step of its own, after the batch's windows were scored, so that a batch
        of more series than the bound still scores them all.

        Args:
            undo: where to log how to take the evictions back.

        Returns:
            The keys evicted, least recently seen first.
        """
        evicted = []
        while len(self.tails) > self.max_series:
            series, tail = self.tails.popitem(last=False)
            self.evicted += 1
            evicted.append(series)
            if undo is not None:
                undo.append(partial(self._evicted_back, series, tail))
            if self.on_evict is not None:
                self.on_evict(series)
        return evicted

    def _evicted_back(self, series: str, tail: SeriesTail) -> None:
        self.tails[series] = tail
        self.tails.move_to_end(series, last=False)
        self.evicted -= 1

    def cut(self, batch: SampleBatch, undo: list[Callable[[], object]] | None = None
            ) -> tuple[Windows, list[tuple[int, str]]]:
        """Add a batch's samples to their series and cut the windows they complete.

        Args:
            batch: decoded sample records.
            undo: where to log how to take the batch back (called in reverse order, they
                leave every series as it was before; :meth:`ServedSeries.take_back
                <stream_ae.pipeline.series_stage.ServedSeries.take_back>`).

        Returns:
            ``(windows, backwards)``: ``backwards`` lists ``(record, detail)`` for each
            record (index into ``batch``) that starts before its series' last sample: a
            dead letter of reason ``timestamp_backwards``; its samples are not added.
        """
        self.undo = undo
        try:
            return self._cut(batch)
        finally:
            self.undo = None

    def _cut(self, batch: SampleBatch) -> tuple[Windows, list[tuple[int, str]]]:
        cut = _Cut()
        backwards: list[tuple[int, str]] = []
        starts = batch.starts
        order = np.argsort(batch.series_index, kind="stable")
        bounds = np.flatnonzero(np.diff(batch.series_index[order])) + 1
        for records in np.split(order, bounds) if len(order) else []:
            slot = int(batch.series_index[records[0]])
            state = self.tail(batch.series[slot])
            kept = []
            last = state.last_ms
            for record in records.tolist():
                if batch.first_ms[record] < last:
                    backwards.append((record, f"series {batch.series[slot]!r}: first sample at "
                                              f"{batch.first_ms[record]:.0f} ms, before its last sample at "
                                              f"{last:.0f} ms"))
                    continue
                kept.append(record)
                last = batch.first_ms[record] + (batch.counts[record] - 1) * batch.interval_ms[record]
            if kept:
                self._add(state, slot, np.asarray(kept, np.int64), batch, starts, cut)
        return self._join(cut, batch.series), backwards

    def _add(self, state: SeriesTail, slot: int, records: np.ndarray, batch: SampleBatch,
             starts: np.ndarray, cut: _Cut) -> None:
        counts = batch.counts[records]
        total = int(counts.sum())
        rows = np.concatenate([np.arange(starts[r], starts[r] + batch.counts[r]) for r in records.tolist()])
        within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        times = np.repeat(batch.first_ms[records], counts) + within * np.repeat(batch.interval_ms[records], counts)
        values = np.concatenate((state.values, batch.values[rows]))
        all_times = np.concatenate((state.times_ms, times))
        before = len(state.values)  # samples of the tail, ahead of the new ones
        ends = np.arange(state.seen, state.seen + total)
        ends = ends[(ends >= self.length - 1) & ((ends - self.length + 1) % self.stride == 0)]
        if len(ends):
            last = ends - state.seen + before  # index into values of each window's last sample
            views = np.lib.stride_tricks.sliding_window_view(values, self.length, axis=0)
            cut.values.append(views[last - self.length + 1].transpose(0, 2, 1))
            cut.series_index.append(np.full(len(ends), slot, np.int32))
            cut.end_sample.append(ends)
            cut.first_ms.append(all_times[last - self.length + 1])
            cut.last_ms.append(all_times[last])
            owner = last - before
            cut.record.append(np.repeat(records, counts)[owner])
            cut.sample_in_record.append(within[owner])
        keep = max(len(values) - self.length + 1, 0)  # the tail: the last length - 1 samples at most
        state.values, state.times_ms = values[keep:].copy(), all_times[keep:].copy()
        state.seen += total

    def _join(self, cut: _Cut, series: list[str]) -> Windows:
        if not cut.values:
            empty = np.empty(0, np.int64)
            return Windows(np.empty((0, self.length, self.channels), np.float32), series,
                           np.empty(0, np.int32), empty, np.empty(0), np.empty(0), empty, empty)
        return Windows(np.concatenate(cut.values).astype(np.float32, copy=False), series,
                       np.concatenate(cut.series_index), np.concatenate(cut.end_sample),
                       np.concatenate(cut.first_ms), np.concatenate(cut.last_ms),
                       np.concatenate(cut.record), np.concatenate(cut.sample_in_record))

