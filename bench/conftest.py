"""Benchmark fixtures: generated CDR input (cached, never committed) and the ratio table.

Run: python -m pytest bench -q    (CDRTRACE_BENCH_RECORDS, default 2,000,000; lines = half)
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """One process (`-n auto`, pyproject.toml's default, asks here): pytest-benchmark
    turns itself off under pytest-xdist, and two benchmarks at once would time each other."""
    return 0


RECORDS = int(os.environ.get("CDRTRACE_BENCH_RECORDS", 2_000_000))
LINES = int(os.environ.get("CDRTRACE_BENCH_LINES", RECORDS // 2))
DATA = Path(os.environ.get("CDRTRACE_BENCH_DATA", Path(__file__).parent / ".data"))

RESULTS: dict[str, dict[str, dict]] = {}   # group -> name -> {median, unit, extra}


def record(group: str, name: str, seconds: float, per: int = 1, **extra) -> None:
    """Remember one measurement: the median of its rounds, per operation."""
    RESULTS.setdefault(group, {})[name] = {"seconds": seconds / per, **extra}


@pytest.fixture(scope="session")
def cdr_path() -> Path:
    from cdrtrace import synth

    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"asterisk-{RECORDS}-{LINES}.csv"
    if not path.exists():
        synth.write(path, RECORDS, LINES, seed=2026)
    return path


@pytest.fixture(scope="session")
def cdr_bytes(cdr_path) -> bytes:
    return cdr_path.read_bytes()


@pytest.fixture(scope="session")
def n_records(cdr_bytes) -> int:
    """Records in the input (synth writes no newline inside a field)."""
    return cdr_bytes.count(b"\n")


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    write = terminalreporter.write_line
    write("")
    write(f"cdrtrace side by side (about {RECORDS:,} records, {LINES:,} lines; medians)")
    for group, rows in RESULTS.items():
        ours = rows.get("cdrtrace")
        write(f"  [{group}]")
        for name, row in rows.items():
            rate = row.get("rate")
            shown = (f"{rate / 1e6:8.2f} M rec/s" if rate else f"{row['seconds'] * 1e6:10.2f} us/op")
            extra = "  ".join(f"{k} {v}" for k, v in row.items() if k not in ("seconds", "rate"))
            ratio = ""
            if ours and name != "cdrtrace" and name.startswith("cdrtrace "):
                ratio = f"  {ours['seconds'] / row['seconds']:.2f} of the Asterisk rate"
            elif ours and name != "cdrtrace":
                ratio = f"  cdrtrace is {row['seconds'] / ours['seconds']:.2f}x the speed of this"
            write(f"    {name:<34}{shown}  {extra}{ratio}")
