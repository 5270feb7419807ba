"""What calls through a hunt pilot cost a trace: the same day's calls with a share of them
ring groups (an Asterisk Dial to the line and one other phone, each a call through a
pilot that lists its phones) and without, and the same traces at the day's end in each.

A trace looks for a call through a pilot that began after the call it names and may
have rung its line (docs/trace-rules.md, "A call to a hunt group"): every group call of
the line's feeds in that time that lists other phones is passed over. `python -m
bench.hunt_traces [--calls N] [--groups F] [--traces N]` prints each side's time a trace
and the ratio.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cdrtrace
from cdrtrace.parsing import numbers

from .later_calls import write_day


def traced(folder: Path, name: str, day: str, traces: int) -> tuple[float, int]:
    """Ingest the day into a store of its own, trace its first lines at the day's end:
    the seconds a trace, and how many calls through a pilot the store noted."""
    store = cdrtrace.open(folder / name, create=True, audit_key_file=str(folder / "audit.key"))
    cdrtrace.ingest(store, [day])
    with store.envs.read() as txn:
        keys = [int.from_bytes(k, "big") for k, _ in txn.cursor(store.envs.db["index"])]
        noted = sum(1 for _ in txn.cursor(store.envs.db["hunts"]))
    lines = [numbers.format_number(k) for k in keys[:traces]]
    started = time.perf_counter()
    for line in lines:
        store.trace(line, at="2026-03-02T23:59:59Z")
    took = (time.perf_counter() - started) / len(lines)
    store.close()
    return took, noted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--groups", type=float, default=0.1)
    parser.add_argument("--traces", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cdrtrace-hunts-") as name:
        folder, lines = Path(name), max(args.calls // 10, 1)
        plain = write_day(folder, "plain.csv", args.calls, lines, 11, "2026-03-02")
        grouped = write_day(folder, "groups.csv", args.calls, lines, 11, "2026-03-02", args.groups)
        without, _ = traced(folder, "plain", plain, args.traces)
        with_groups, noted = traced(folder, "groups", grouped, args.traces)
    print(f"{args.calls:,} calls over {lines:,} lines, {args.traces:,} traces at the day's "
          f"end: {without * 1e3:.3f} ms a trace without ring groups, "
          f"{with_groups * 1e3:.3f} ms with {args.groups:.0%} of the calls ring groups "
          f"({noted:,} calls through a pilot noted), ratio {with_groups / without:.2f}x")

if __name__ == "__main__":
    main()
