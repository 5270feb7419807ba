"""repeat-origins over many trace records, from the store, beside DuckDB on a ready Arrow
table and pandas group-by, in the same run (PERFORMANCE.md: within 1.3x of DuckDB)."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

import cdrtrace
from cdrtrace import analytics, numbers, trace_rows

from .conftest import record

TRACES = int(os.environ.get("CDRTRACE_BENCH_TRACES", 10_000_000))
GROUP = "repeat-origins over trace records"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    rng = np.random.default_rng(57)
    rows = np.zeros(TRACES, trace_rows.ROW_DTYPE)
    rows["trace"] = np.arange(1, TRACES + 1)
    base = numbers.pack(numbers.E164, "13035550000")
    rows["line"] = base + rng.integers(0, 1_000_000, TRACES).astype(np.uint64)
    rows["origin"] = base + 5_000_000 + (rng.pareto(1.2, TRACES) * 1000).astype(np.uint64) % 200_000
    rows["call_id"] = rng.integers(0, 1 << 62, TRACES, dtype=np.uint64)
    rows["call_start_us"] = 1772409600 * 10**6 + rng.integers(0, 30 * 86400 * 10**6, TRACES)
    rows["activated_us"] = rows["call_start_us"] + 30 * 10**6
    rows["outcome"] = rng.choice([1, 2, 3, 4], TRACES, p=[0.8, 0.05, 0.05, 0.1])
    store = cdrtrace.open(tmp_path_factory.mktemp("traces") / "store", create=True)
    store.write(lambda txn: trace_rows.bulk_load(txn, store.db["trace_rows"], rows))
    ready = trace_rows.to_arrow(rows, analytics.REPEAT_COLUMNS)
    return store, ready, analytics.repeat_origins(ready).num_rows


def test_repeat_origins_from_the_store(benchmark, loaded):
    store, _, expected = loaded
    benchmark.group = GROUP
    store.report_rows(analyst="bench")   # the first report compacts what trace() appended
    result = benchmark.pedantic(
        lambda: analytics.repeat_origins(
            store.trace_columns(analyst="bench", columns=analytics.REPEAT_COLUMNS)), rounds=3)
    assert result.num_rows == expected > 1000
    record(GROUP, "cdrtrace", benchmark.stats.stats.median, rows=TRACES)


def test_repeat_origins_duckdb_ready_arrow(benchmark, loaded):
    _, ready, expected = loaded
    benchmark.group = GROUP
    result = benchmark.pedantic(lambda: analytics.repeat_origins(ready), rounds=3)
    assert result.num_rows == expected
    record(GROUP, "duckdb on a ready Arrow table", benchmark.stats.stats.median)


def test_repeat_origins_pandas(benchmark, loaded):
    import pandas as pd  # a test dependency, for this peer

    _, ready, expected = loaded
    frame = ready.to_pandas()
    benchmark.group = GROUP

    def run():
        ok = frame[frame["outcome"] == 1]
        grouped = ok.groupby(["line", "origin"]).agg(
            traced=("call_id", "nunique"), first=("call_start_us", "min"),
            last=("call_start_us", "max")).reset_index()
        return grouped[grouped["traced"] >= 2]
    assert len(benchmark.pedantic(run, rounds=2)) == expected
    record(GROUP, "pandas group-by on a ready frame", benchmark.stats.stats.median)
    assert pd is not None and isinstance(ready, pa.Table)
