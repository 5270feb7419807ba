"""Parse rate per format of the cdrtrace this interpreter imports, one core.

Prints one JSON line {format: records/s}: median of --rounds over the same generated
calls. Run it with two builds (two virtual environments) in alternation to compare them
on one machine in one session.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from cdrtrace import synth

from . import workloads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=500_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    columns, _ = synth.generate(args.calls, max(args.calls // 2, 1), seed=2026)
    n = len(columns["line"])
    rates = {}
    for fmt, write in workloads.FORMAT_WRITERS.items():
        run = workloads.format_parser(fmt, write(columns, n))
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            got = run()
            times.append(time.perf_counter() - started)
            assert got == n, (fmt, got, n)
        rates[fmt] = round(n / statistics.median(times))
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
