"""Windows per series: the same windows however a series is split into records and batches."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ae.kafka.records import ConsumedBatch
from stream_ae.pipeline.samples import SampleDecoder, encode_samples
from stream_ae.pipeline.windows import SeriesWindower
from tests.helpers import FakeRecord

INTERVAL = 250.0


def series_values(seed: int, samples: int, channels: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(samples, channels)).astype(np.float32)


def chunked(values: dict[str, np.ndarray], rng: np.random.Generator, most: int) -> list[FakeRecord]:
    """Every series cut into chunks of 1..most samples, the series' chunks interleaved at random."""
    queues = {}
    for key, rows in values.items():
        cuts = np.cumsum(rng.integers(1, most + 1, size=len(rows)))
        cuts = cuts[cuts < len(rows)]
        queues[key] = [(start, part) for start, part in zip(np.concatenate(([0], cuts)), np.split(rows, cuts))]
    records = []
    while any(queues.values()):
        key = rng.choice([k for k, q in queues.items() if q])
        start, part = queues[key].pop(0)
        records.append(FakeRecord(encode_samples(part, 1e12 + start * INTERVAL, INTERVAL), key=key.encode(),
                                  offset=len(records)))
    return records


def run(windower: SeriesWindower, records: list[FakeRecord], batch_sizes: np.ndarray, channels: int):
    decoder = SampleDecoder(channels=channels)
    out: dict[str, list] = {}
    at = 0
    for size in batch_sizes:
        part = records[at:at + size]
        at += size
        samples, rejected = decoder.decode(ConsumedBatch.from_records(part))
        windows, backwards = windower.cut(samples)
        assert rejected == [] and backwards == []
        for n in range(len(windows)):
            record = part[samples.positions[windows.record[n]]]
            out.setdefault(windows.series[windows.series_index[n]], []).append(
                (windows.values[n], int(windows.end_sample[n]), windows.first_ms[n], windows.last_ms[n],
                 record.offset, int(windows.sample_in_record[n])))
    assert at >= len(records)
    return out


@pytest.mark.parametrize("length, stride, channels, most", [(4, 1, 1, 1), (7, 3, 2, 5), (16, 16, 1, 40), (1, 2, 3, 4)])
def test_windows_do_not_depend_on_how_samples_were_chunked_or_batched(length, stride, channels, most):
    rng = np.random.default_rng(length * 100 + stride)
    values = {f"series-{k}": series_values(k, int(rng.integers(20, 120)), channels) for k in range(5)}
    records = chunked(values, rng, most)
    got = run(SeriesWindower(length, stride, channels), records, rng.integers(1, 9, size=len(records)), channels)
    for key, rows in values.items():
        ends = [e for e in range(length - 1, len(rows)) if (e - length + 1) % stride == 0]
        windows = got.get(key, [])
        assert [w[1] for w in windows] == ends, key
        for window, end, first_ms, last_ms, offset, within in windows:
            np.testing.assert_array_equal(window, rows[end - length + 1:end + 1])
            assert first_ms == 1e12 + (end - length + 1) * INTERVAL and last_ms == 1e12 + end * INTERVAL
            record = records[offset]
            assert record.key == key.encode()
            first = (np.frombuffer(record.value[12:20], "<f8")[0] - 1e12) / INTERVAL
            assert first + within == end, "the window's last sample is the record's sample_in_record-th"


def test_a_chunk_that_starts_before_its_series_last_sample_is_refused_and_adds_nothing():
    decoder, windower = SampleDecoder(), SeriesWindower(length=2)
    records = [FakeRecord(encode_samples(np.array([1.0, 2.0]), 1000.0, 10.0), key=b"a", offset=0),
               FakeRecord(encode_samples(np.array([9.0]), 1005.0, 0.0), key=b"a", offset=1),   # before 1010
               FakeRecord(encode_samples(np.array([3.0]), 1010.0, 0.0), key=b"a", offset=2),   # equal: accepted
               FakeRecord(encode_samples(np.array([5.0]), 0.0, 0.0), key=b"b", offset=3)]
    samples, _ = decoder.decode(ConsumedBatch.from_records(records))
    windows, backwards = windower.cut(samples)
    assert [(samples.offsets[r], "1005" in detail) for r, detail in backwards] == [(1, True)]
    assert windows.values[..., 0].tolist() == [[1.0, 2.0], [2.0, 3.0]]
    later, _ = decoder.decode(ConsumedBatch.from_records([FakeRecord(b'{"value": 4, "timestamp": 1009}', key=b"a")]))
    assert [r for r, _ in windower.cut(later)[1]] == [0], "checked against the last batch too"


def test_series_beyond_the_bound_evict_the_least_recently_seen():
    decoder, windower = SampleDecoder(), SeriesWindower(length=2, max_series=2)

    def feed(key: str, value: float, at: float) -> int:
        samples, _ = decoder.decode(ConsumedBatch.from_records(
            [FakeRecord(encode_samples(np.array([value]), at), key=key.encode())]))
        cut = len(windower.cut(samples)[0])
        windower.evict()
        return cut

    assert [feed("a", 1, 0), feed("b", 1, 0), feed("a", 2, 1)] == [0, 0, 1]
    assert feed("c", 1, 0) == 0 and list(windower.tails) == ["a", "c"] and windower.evicted == 1
    assert feed("b", 2, 1) == 0, "an evicted series starts again"
    assert list(windower.tails) == ["c", "b"] and windower.evicted == 2
