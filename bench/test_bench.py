"""cdrtrace beside what a carrier would otherwise use, in the same run (PERFORMANCE.md)."""
from __future__ import annotations

import csv
import io
import random
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import lmdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

import cdrtrace
from cdrtrace.sources import reader_for

from .conftest import LINES, record

FIELDS = ["accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp",
          "lastdata", "start", "answer", "end", "duration", "billsec", "disposition",
          "amaflags", "uniqueid", "userfield"]
CHUNK = 16 << 20


def run(benchmark, group, name, fn, rounds=3, setup=None, per=1, rate_of=None, **extra):
    benchmark.group = group
    result = benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1)
    median = benchmark.stats.stats.median
    rate = rate_of / median if rate_of else None
    record(group, name, median, per, **({"rate": rate} if rate else {}), **extra)
    return result


# ---------------------------------------------------------------- parse only

def test_parse_cdrtrace(benchmark, cdr_path, cdr_bytes, n_records):
    def parse():   # the way ingest reads a file: mapped, a window at a time
        parser = cdrtrace.make_parser()
        with open(cdr_path, "rb") as stream:
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
    assert run(benchmark, "parse", "cdrtrace", parse, rounds=5, rate_of=n_records) == n_records


def test_parse_pyarrow_needed_columns(benchmark, cdr_path, n_records):
    def parse():
        table = pacsv.read_csv(
            str(cdr_path),
            read_options=pacsv.ReadOptions(column_names=FIELDS, use_threads=False,
                                           block_size=CHUNK),
            convert_options=pacsv.ConvertOptions(
                include_columns=["src", "dst", "start", "disposition"],
                column_types={"src": pa.string(), "dst": pa.string(),
                              "start": pa.timestamp("s"), "disposition": pa.string()}))
        return table.num_rows
    assert run(benchmark, "parse", "pyarrow read_csv, 4 typed columns, 1 thread", parse,
               rounds=5, rate_of=n_records) == n_records


def test_parse_python_csv(benchmark, cdr_bytes, n_records):
    def parse():
        return sum(1 for _ in csv.reader(io.StringIO(cdr_bytes.decode("latin-1"))))
    assert run(benchmark, "parse", "python csv module", parse, rounds=2,
               rate_of=n_records) == n_records


# ---------------------------------------------------------------- ingest end to end

@pytest.fixture
def scratch():
    folder = Path(tempfile.mkdtemp(prefix="cdrtrace-bench-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_ingest_cdrtrace_fresh_store(benchmark, cdr_path, scratch, n_records):
    stores = iter(range(100))

    def setup():
        folder = scratch / f"store-{next(stores)}"
        return (cdrtrace.open(folder, create=True),), {}

    def ingest(store):
        summary = cdrtrace.ingest(store, [str(cdr_path)])
        stat = store.index_stat()
        store.close()
        return summary, stat

    summary, stat = run(benchmark, "ingest", "cdrtrace", ingest, setup=setup, rate_of=n_records)
    assert summary.records == n_records and summary.rejected == 0
    record("ingest", "cdrtrace", benchmark.stats.stats.median, rate=n_records /
           benchmark.stats.stats.median, index_bytes_per_line=round(stat["bytes"] / stat["lines"]))


def test_ingest_cdrtrace_steady_state(benchmark, cdr_path, scratch, n_records):
    store = cdrtrace.open(scratch / "steady", create=True)
    cdrtrace.ingest(store, [str(cdr_path)])
    summary = run(benchmark, "ingest (store already holds every line)", "cdrtrace",
                  lambda: cdrtrace.ingest(store, [str(cdr_path)], force=True), rate_of=n_records)
    assert summary.records == n_records and not summary.skipped   # really ingested again


def test_ingest_duckdb_last_call(benchmark, cdr_path, n_records):
    columns = ", ".join(f"'{f}': 'VARCHAR'" for f in FIELDS)
    query = f"""
        SELECT dst AS line, arg_max(src, "start") AS calling, max("start") AS start
        FROM read_csv('{cdr_path}', header=false, columns={{{columns}}}, auto_detect=false)
        WHERE disposition IN ('ANSWERED', 'NO ANSWER', 'CANCEL')
        GROUP BY dst"""

    def pipeline():
        con = duckdb.connect()
        con.execute("SET threads = 1")
        return con.sql(query).to_arrow_table().num_rows
    assert run(benchmark, "ingest", "duckdb read_csv > arg_max > arrow, 1 thread (unpersisted)",
               pipeline, rate_of=n_records) > LINES // 3


def test_ingest_python_csv_dict(benchmark, cdr_path, n_records):
    def pipeline():
        last = {}
        with open(cdr_path, encoding="latin-1", newline="") as f:
            for row in csv.reader(f):
                if row[14] in ("ANSWERED", "NO ANSWER", "CANCEL"):
                    seen = last.get(row[2])
                    if seen is None or row[9] >= seen[0]:
                        last[row[2]] = (row[9], row[1])
        return len(last)
    assert run(benchmark, "ingest", "python csv + dict (unpersisted)", pipeline, rounds=2,
               rate_of=n_records) > LINES // 3


# ---------------------------------------------------------------- lookup

LOOKUPS = 200_000


@pytest.fixture(scope="module")
def loaded(cdr_path, tmp_path_factory):
    store = cdrtrace.open(tmp_path_factory.mktemp("loaded") / "store", create=True)
    cdrtrace.ingest(store, [str(cdr_path)])
    with store.read() as txn:
        keys = [k for k, _ in txn.cursor(store.db["index"])]
    random.Random(1).shuffle(keys)
    return store, (keys * (LOOKUPS // len(keys) + 1))[:LOOKUPS]


def _per_op(fn, keys):
    """Time every call; return (p50, p99) in microseconds."""
    clock = time.perf_counter_ns
    times = np.empty(len(keys), np.int64)
    for i, key in enumerate(keys):
        t0 = clock()
        fn(key)
        times[i] = clock() - t0
    return np.percentile(times, 50) / 1e3, np.percentile(times, 99) / 1e3


def test_lookup_cdrtrace(benchmark, loaded):
    store, keys = loaded
    with store.read() as txn:
        lookup = lambda key: store.last_calls_raw(key, txn)   # noqa: E731
        assert len(lookup(keys[0])) >= 1
        run(benchmark, "lookup", "cdrtrace", lambda: [lookup(k) for k in keys], per=len(keys))
        p50, p99 = _per_op(lookup, keys)
    record("lookup", "cdrtrace", benchmark.stats.stats.median, per=len(keys),
           p50_us=round(p50, 2), p99_us=round(p99, 2))


def test_lookup_raw_lmdb_get(benchmark, loaded):
    store, keys = loaded
    db = store.db["index"]
    with store.read() as txn:
        get = lambda key: txn.get(key, db=db)   # noqa: E731
        run(benchmark, "lookup", "raw py-lmdb get", lambda: [get(k) for k in keys], per=len(keys))
        p50, p99 = _per_op(get, keys)
    record("lookup", "raw py-lmdb get", benchmark.stats.stats.median, per=len(keys),
           p50_us=round(p50, 2), p99_us=round(p99, 2))


# ---------------------------------------------------------------- durable trace

TRACES = 300


def test_trace_cdrtrace(benchmark, loaded):
    store, keys = loaded
    numbers = [f"+{int.from_bytes(k, 'big') & ((1 << 56) - 1)}" for k in keys[:TRACES]]
    lines = [n for n in numbers if len(n) == 12]  # E.164 NANP lines
    at = "2026-03-03T00:00:00Z"
    trace = lambda line: store.trace(line, at=at)   # noqa: E731
    run(benchmark, "durable trace", "cdrtrace", lambda: [trace(n) for n in lines],
        per=len(lines))
    p50, p99 = _per_op(trace, lines)
    record("durable trace", "cdrtrace", benchmark.stats.stats.median, per=len(lines),
           p50_us=round(p50, 1), p99_us=round(p99, 1))


def test_trace_bare_durable_lmdb_commit(benchmark, scratch):
    env = lmdb.open(str(scratch / "bare"), map_size=1 << 30, sync=True)
    keys = [i.to_bytes(8, "big") for i in range(TRACES)]
    value = b"x" * 400

    def commit(key):
        with env.begin(write=True) as txn:
            txn.put(key, value)
    run(benchmark, "durable trace", "bare durable LMDB commit", lambda: [commit(k) for k in keys],
        per=len(keys))
    p50, p99 = _per_op(commit, keys)
    record("durable trace", "bare durable LMDB commit", benchmark.stats.stats.median,
           per=len(keys), p50_us=round(p50, 1), p99_us=round(p99, 1))
