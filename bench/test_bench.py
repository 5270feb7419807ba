"""cdrtrace beside what a carrier would otherwise use, in the same run (PERFORMANCE.md)."""
from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import lmdb
import pytest

import cdrtrace

from . import peers, workloads
from .conftest import LINES, record


def run(benchmark, group, name, fn, rounds=3, setup=None, per=1, rate_of=None, **extra):
    benchmark.group = group
    result = benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1)
    median = benchmark.stats.stats.median
    rate = rate_of / median if rate_of else None
    record(group, name, median, per, **({"rate": rate} if rate else {}), **extra)
    return result


# ---------------------------------------------------------------- parse only

def test_parse_cdrtrace(benchmark, cdr_path, n_records):
    assert run(benchmark, "parse", "cdrtrace", lambda: workloads.parse_file(cdr_path), rounds=5,
               rate_of=n_records) == n_records


def test_parse_pyarrow_needed_columns(benchmark, cdr_path, n_records):
    assert run(benchmark, "parse", "pyarrow read_csv, 4 typed columns, 1 thread",
               lambda: peers.parse_pyarrow(cdr_path), rounds=5, rate_of=n_records) == n_records


def test_parse_python_csv(benchmark, cdr_bytes, n_records):
    assert run(benchmark, "parse", "python csv module", lambda: peers.parse_python_csv(cdr_bytes),
               rounds=2, rate_of=n_records) == n_records


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
        stat = store.stats()["index"]
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
    assert run(benchmark, "ingest", "duckdb read_csv > arg_max > arrow, 1 thread (unpersisted)",
               lambda: peers.ingest_duckdb(cdr_path, 1), rate_of=n_records) > LINES // 3


def test_ingest_python_csv_dict(benchmark, cdr_path, n_records):
    assert len(run(benchmark, "ingest", "python csv + dict (unpersisted)",
                   lambda: peers.ingest_python_csv_dict(cdr_path), rounds=2,
                   rate_of=n_records)) > LINES // 3


def test_ingest_pyarrow_numpy_lmdb(benchmark, cdr_path, scratch, n_records):
    dbs = iter(range(100))
    assert run(benchmark, "ingest", "pyarrow read_csv + numpy + py-lmdb putmulti",
               lambda d: peers.ingest_pyarrow_numpy_lmdb(cdr_path, d),
               setup=lambda: ((scratch / f"pal-{next(dbs)}",), {}), rate_of=n_records) > LINES // 3


def test_ingest_sqlite_upsert(benchmark, cdr_path, scratch, n_records):
    dbs = iter(range(100))
    assert run(benchmark, "ingest", "python csv + SQLite UPSERT, one transaction",
               lambda d: peers.ingest_sqlite_upsert(cdr_path, d), rounds=1,
               setup=lambda: ((scratch / f"upsert-{next(dbs)}.sqlite",), {}),
               rate_of=n_records) > LINES // 3


# ---------------------------------------------------------------- lookup

LOOKUPS = 200_000


@pytest.fixture(scope="module")
def loaded(cdr_path, tmp_path_factory):
    store = cdrtrace.open(tmp_path_factory.mktemp("loaded") / "store", create=True)
    cdrtrace.ingest(store, [str(cdr_path)])
    with store.envs.read() as txn:
        keys = [k for k, _ in txn.cursor(store.envs.db["index"])]
    random.Random(1).shuffle(keys)
    return store, (keys * (LOOKUPS // len(keys) + 1))[:LOOKUPS]


def _per_op(fn, keys):
    """Time every call; return (p50, p99) in microseconds."""
    return workloads.per_op(fn, keys)[:2]


def test_lookup_cdrtrace(benchmark, loaded):
    store, keys = loaded
    with store.envs.read() as txn:
        lookup = lambda key: store._last_calls_raw(key, txn)   # noqa: E731
        assert len(lookup(keys[0])) >= 1
        run(benchmark, "lookup", "cdrtrace", lambda: [lookup(k) for k in keys], per=len(keys))
        p50, p99 = _per_op(lookup, keys)
    record("lookup", "cdrtrace", benchmark.stats.stats.median, per=len(keys),
           p50_us=round(p50, 2), p99_us=round(p99, 2))


def test_lookup_raw_lmdb_get(benchmark, loaded):
    store, keys = loaded
    db = store.envs.db["index"]
    with store.envs.read() as txn:
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
