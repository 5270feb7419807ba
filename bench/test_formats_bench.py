"""Parse rate of every format, side by side with Asterisk in the same run, on the same
generated calls (PERFORMANCE.md: none below 50% of the Asterisk rate)."""
from __future__ import annotations

import os

import pytest

from cdrtrace import synth

from . import workloads
from .conftest import record

CALLS = int(os.environ.get("CDRTRACE_BENCH_FORMAT_RECORDS", 500_000))


@pytest.fixture(scope="module")
def calls():
    columns, _ = synth.generate(CALLS, CALLS // 2, seed=2026)
    return columns


@pytest.mark.parametrize("fmt", list(workloads.FORMAT_WRITERS))
def test_parse_rate(benchmark, calls, fmt):
    n = len(calls["line"])
    data = workloads.FORMAT_WRITERS[fmt](calls, n)
    run = workloads.format_parser(fmt, data)

    benchmark.group = "parse by format"
    assert benchmark.pedantic(run, rounds=5, iterations=1) == n
    median = benchmark.stats.stats.median
    record("parse by format", "cdrtrace" if fmt == "asterisk" else f"cdrtrace {fmt}",
           median, rate=n / median, bytes_per_record=round(len(data) / n))
