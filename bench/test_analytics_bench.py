"""repeat-origins over many trace records, from the store, beside DuckDB on a ready Arrow
table and pandas group-by, in the same run (PERFORMANCE.md: within 1.3x of DuckDB)."""
from __future__ import annotations

import os

import pyarrow as pa
import pytest

import cdrtrace
from cdrtrace.evidence import rows as trace_rows
from cdrtrace.reports import analytics

from . import workloads
from .conftest import record

TRACES = int(os.environ.get("CDRTRACE_BENCH_TRACES", 10_000_000))
GROUP = "repeat-origins over trace records"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    rows = workloads.synthetic_traces(TRACES)
    store = cdrtrace.open(tmp_path_factory.mktemp("traces") / "store", create=True)
    store.envs.ewrite(lambda txn: trace_rows.bulk_load(txn, store.envs.db["trace_rows"], rows))
    ready = trace_rows.to_arrow(rows, analytics.REPEAT_COLUMNS)
    return store, ready, analytics.repeat_origins(ready).num_rows


def test_repeat_origins_from_the_store(benchmark, loaded):
    store, _, expected = loaded
    benchmark.group = GROUP
    store.report_rows(analyst="bench")   # the first report compacts what trace() appended
    result = benchmark.pedantic(
        lambda: analytics.repeat_origins(
            store.trace_columns(analyst="bench", columns=analytics.REPEAT_COLUMNS)), rounds=3)
    assert result.num_rows == expected > 0
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

    assert len(benchmark.pedantic(lambda: workloads.pandas_repeat_origins(frame), rounds=2)) == expected
    record(GROUP, "pandas group-by on a ready frame", benchmark.stats.stats.median)
    assert pd is not None and isinstance(ready, pa.Table)
