"""cdrtrace's side of the benchmarks, shared by bench.compare and the pytest benches."""
from __future__ import annotations

import time

import numpy as np

import cdrtrace
from cdrtrace import synth
from cdrtrace.evidence import rows as trace_rows
from cdrtrace.ingestion.sources import CHUNK_BYTES, reader_for
from cdrtrace.parsing import numbers, parsers

CHUNK = CHUNK_BYTES     # as ingest reads

FORMAT_WRITERS = {
    "asterisk": lambda c, n: synth.format_asterisk(c, 0, n),
    "asterisk-custom": lambda c, n: synth.format_asterisk_custom(c, 0, n),
    "freeswitch": lambda c, n: synth.format_freeswitch(c, 0, n),
    "cucm": lambda c, n: synth.cucm_header() + synth.format_cucm(c, 0, n),
    "broadworks": lambda c, n: synth.broadworks_header() + synth.format_broadworks(c, 0, n),
    "kamailio": lambda c, n: synth.format_kamailio(c, 0, n),
    "kamailio-dbtext": lambda c, n: synth.KAMAILIO_DBTEXT_HEADER + synth.format_kamailio_dbtext(c, 0, n),
}


def per_op(fn, keys) -> tuple[float, float, float]:
    """(p50, p99, mean) microseconds of fn over keys, each call timed."""
    clock = time.perf_counter_ns
    times = np.empty(len(keys), np.int64)
    for i, key in enumerate(keys):
        t0 = clock()
        fn(key)
        times[i] = clock() - t0
    return (float(np.percentile(times, 50)) / 1e3, float(np.percentile(times, 99)) / 1e3,
            float(times.mean()) / 1e3)


def parse_file(path) -> int:
    """Parse a file the way ingest reads it (mapped, a window at a time); records seen."""
    parser = cdrtrace.make_parser()
    with open(path, "rb") as stream:
        reader = reader_for(stream, CHUNK)
        n = 0
        while True:
            reader.fill()
            with reader.pending() as buffer:
                cols, bad, used = parser.feed(buffer, reader.eof)
            reader.consume(used)
            n += len(cols["start_us"]) + len(bad)
            if reader.eof:
                reader.close()
                return n


def format_parser(fmt: str, data: bytes):
    """A function parsing data (a whole file in one format) in CHUNK slices: records seen."""
    header, skip = parsers.read_header(parsers.get_format(fmt), data[:65536])
    view = memoryview(data)

    def run() -> int:
        parser = parsers.make_parser(fmt, header=header, start_offset=skip)
        count, pos = 0, skip
        while pos < len(data):
            end = min(len(data), pos + CHUNK)
            cols, bad, used = parser.feed(view[pos:end], end == len(data))
            count += len(cols["start_us"]) + len(bad)
            pos += used if end < len(data) else end - pos
        return count
    return run


def synthetic_traces(count: int, seed: int = 57) -> np.ndarray:
    """count trace report rows: 1 M lines, heavy-tailed origins, 80% successful."""
    rng = np.random.default_rng(seed)
    rows = np.zeros(count, trace_rows.ROW_DTYPE)
    rows["trace"] = np.arange(1, count + 1)
    base = numbers.pack(numbers.E164, "13035550000")
    rows["line"] = base + rng.integers(0, 1_000_000, count).astype(np.uint64)
    rows["origin"] = base + 5_000_000 + (rng.pareto(1.2, count) * 1000).astype(np.uint64) % 200_000
    rows["call_id"] = rng.integers(0, 1 << 62, count, dtype=np.uint64)
    rows["call_start_us"] = 1772409600 * 10**6 + rng.integers(0, 30 * 86400 * 10**6, count)
    rows["activated_us"] = rows["call_start_us"] + 30 * 10**6
    rows["outcome"] = rng.choice([1, 2, 3, 4], count, p=[0.8, 0.05, 0.05, 0.1])
    return rows


def pandas_repeat_origins(frame):
    """The repeat-origins report as a pandas group-by (the peer)."""
    ok = frame[frame["outcome"] == 1]
    # a call is its id and its start; as one 64-bit value (the id is a 64-bit hash, so two
    # calls share it with odds of 2^-64), nunique stays the fastest pandas has
    ok = ok.assign(call=ok["call_id"].to_numpy() ^ ok["call_start_us"].to_numpy().astype(np.uint64))
    grouped = ok.groupby(["line", "origin"]).agg(
        traced=("call", "nunique"), first=("call_start_us", "min"),
        last=("call_start_us", "max")).reset_index()
    return grouped[grouped["traced"] >= 2]
