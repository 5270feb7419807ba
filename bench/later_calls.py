"""What checking ingested calls against past traces costs an ingest (evidence.later).

A store whose index holds a day of generated calls, and traces of some of its lines;
then the next day's calls ingested, with the check and with it patched off (the same
build, in turn, in the same run), each into its own copy of that store. Then the one
check of every trace against its line's index that the first ingest after the traces
makes, timed alone. With `--late`, the second file is another switch's file of the same
day, read after the traces: every call of a traced line in it began before its trace and
is checked, and `--groups` of its records (a fraction) are a Dial to two phones (the line
and another), each a call through a pilot checked against the successes it came
before. `python -m bench.later_calls [--calls N] [--lines N] [--traced N ...] [--rounds N]
[--late [--groups F]]` prints the seconds and the ratio.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import cdrtrace
from cdrtrace import synth
from cdrtrace.evidence import later
from cdrtrace.parsing import numbers


def write_day(folder: Path, name: str, calls: int, lines: int, seed: int, start: str,
              groups: float = 0.0) -> str:
    """A day's calls as an Asterisk file; groups: the fraction of them made a Dial to the
    line and phone 7000 at once (a ring group: a call through a pilot)."""
    columns, _ = synth.generate(calls, lines, seed=seed, start=start)
    data = synth.format_asterisk(columns, 0, len(columns["line"]))
    if groups:
        rows, every = data.splitlines(keepends=True), round(1 / groups)
        rows[::every] = [re.sub(rb'"PJSIP/([^",]+),30,tT"', rb'"PJSIP/\1&PJSIP/7000,30,tT"', r)
                         for r in rows[::every]]
        data = b"".join(rows)
    path = folder / name
    path.write_bytes(data)
    return str(path)


def base_store(folder: Path, first: str, traced: int) -> tuple[Path, float]:
    """A store with the first day ingested and `traced` of its lines traced at its end;
    the seconds the traces took."""
    path = folder / f"base-{traced}"
    store = cdrtrace.open(path, create=True, audit_key_file=str(folder / "audit.key"))
    cdrtrace.ingest(store, [first])
    with store.envs.read() as txn:
        keys = [int.from_bytes(k, "big") for k, _ in txn.cursor(store.envs.db["index"])]
    started = time.perf_counter()
    for packed in keys[:traced]:
        store.trace(numbers.format_number(packed), at="2026-03-02T23:59:59Z")
    took = time.perf_counter() - started
    store.close()
    return path, took


def timed_ingest(base: Path, copy: Path, second: str, check: bool, feed: int = 0) -> float:
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(base, copy)
    store = cdrtrace.open(copy, audit_key_file=str(base.parent / "audit.key"))
    if not check:           # the same build with the check patched off
        store.traced_lines = lambda: (np.empty(0, np.uint64), np.empty(0, np.int64))
        store.note_later_calls = lambda: 0
    started = time.perf_counter()
    cdrtrace.ingest(store, [second], feed_id=feed)
    took = time.perf_counter() - started
    store.close()
    return took


def check_alone(base: Path, copy: Path) -> float:
    """The first check of every trace against its line's index, timed alone."""
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(base, copy)
    store = cdrtrace.open(copy, audit_key_file=str(base.parent / "audit.key"))
    store.envs.ewrite(lambda txn: txn.put(later.CHECKED, b"0", db=store.envs.db["emeta"]))
    started = time.perf_counter()
    store.note_later_calls()
    took = time.perf_counter() - started
    store.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--traced", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--late", action="store_true",
                        help="the second file: another switch's of the same day, read late")
    parser.add_argument("--groups", type=float, default=0.0,
                        help="with --late, the fraction of its calls made ring-group Dials")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cdrtrace-later-"))
    try:
        first = write_day(folder, "day1.csv", args.calls, args.lines, 11, "2026-03-02")
        second = write_day(folder, "day2.csv", args.calls, args.lines, 12,
                           "2026-03-02" if args.late else "2026-03-03",
                           args.groups if args.late else 0.0)
        feed = 2 if args.late else 0
        what = (f"another switch's {args.calls:,} calls of the same day"
                + (f" ({args.groups:.0%} ring groups)" if args.groups else "")
                if args.late else f"next day's {args.calls:,} calls")
        for traced in args.traced:
            base, tracing = base_store(folder, first, traced)
            on, off = [], []
            for _ in range(args.rounds):     # alternating, so drift falls on both
                off.append(timed_ingest(base, folder / "copy", second, False, feed))
                on.append(timed_ingest(base, folder / "copy", second, True, feed))
            alone = check_alone(base, folder / "copy")
            print(f"{traced:,} lines traced of {args.lines:,} ({tracing:.1f} s to trace): "
                  f"{what} ingested in {statistics.median(on):.3f} s "
                  f"with the check, {statistics.median(off):.3f} s without (median of "
                  f"{args.rounds}), ratio {statistics.median(on) / statistics.median(off):.2f}x; "
                  f"the first check of the {traced:,} traces alone {alone:.3f} s "
                  f"({alone / traced * 1e6:.1f} us a trace)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
