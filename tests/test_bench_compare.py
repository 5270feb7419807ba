"""The CI smoke run of the benchmark comparison: `python -m bench.compare --quick` completes
and prints every row and every PERFORMANCE.md target. (It asserts no speed: tests never
assert wall-clock times.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = [
    "pyarrow read_csv, 4 typed columns, 1 thread", "python csv module", "cdrtrace (committed)",
    "duckdb read_csv > arg_max > Arrow, 1 thread (unpersisted)",
    "pyarrow read_csv + numpy + py-lmdb putmulti", "python csv + dict (unpersisted)",
    "python csv + SQLite UPSERT, one transaction", "raw py-lmdb get", "SQLite point SELECT",
    "python dict (in memory, unpersisted)", "cdrtrace trace()", "bare durable LMDB commit",
    "cdrtrace, from the store", "duckdb on a ready Arrow table", "pandas group-by on a ready frame",
    "cdrtrace cucm", "cdrtrace broadworks", "cdrtrace kamailio", "cdrtrace ingest (child process)",
    "cdrtrace ingest --follow", "python tail + csv + py-lmdb, same batching",
    "cdrtrace, from the line as typed, new read txn", "raw py-lmdb get, new read txn",
    "cdrtrace ingest (process)", "duckdb read_csv > arg_max > Arrow, 1 thread (process, unpersisted)",
    "cdrtrace ingest, 10 K lines", "import cdrtrace", "cdrtrace --help", "python alone",
]
TARGETS = ["parse only, one core", "ingest end to end, fresh store, committed", "index size",
           "ingest, steady state", "lookup", "trace() durable", "repeat-origin report from the store",
           "other formats", "memory (", "streaming append-to-visible",
           "steady-state re-ingest vs fresh (issue 14)",
           "trace-path lookup from the line as typed (issue 14)",
           "cdrtrace ingest whole process vs DuckDB, 1 thread (issue 14)",
           "the same per core used (issue 14)", "rate at 200,000 lines / at 10 K lines (issue 14)",
           "peak anonymous memory of an ingest (issue 14)",
           "import cdrtrace / cdrtrace --help, whole process (issue 14)"]


def test_quick_comparison_completes_and_prints_every_row(tmp_path):
    out = tmp_path / "compare.json"
    proc = subprocess.run([sys.executable, "-m", "bench.compare", "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CDRTRACE_BENCH_DATA": str(tmp_path / "data")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ROWS:
        assert f"  {name} " in proc.stdout, name
    targets = proc.stdout.split("[PERFORMANCE.md targets]")[1]
    for metric in TARGETS:
        assert f"  {metric}" in targets, metric
    result = json.loads(out.read_text())
    assert result["quick"] and len(result["targets"]) == len(TARGETS)
    assert all(t["status"] in ("met", "missed") for t in result["targets"])
