"""Parse one format's generated file once, for instruction counts under callgrind.

    python -m bench.parse_once --make-inputs DIR     # the same 50,000 calls in each format
    valgrind --tool=callgrind --collect-atstart=no \\
        --toggle-collect='__pyx_pf_*CdrParser_*feed*' python -m bench.parse_once FORMAT DIR

Run the second line with two builds (two virtual environments) over the same DIR to
compare them: the count is the same for the same binary and input, whatever else the
machine does.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import workloads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("format", nargs="?")
    ap.add_argument("dir", nargs="?")
    ap.add_argument("--make-inputs", metavar="DIR")
    ap.add_argument("--calls", type=int, default=50_000)
    args = ap.parse_args()
    if args.make_inputs:
        from cdrtrace import synth

        columns, _ = synth.generate(args.calls, max(args.calls // 2, 1), seed=2026)
        n = len(columns["line"])
        Path(args.make_inputs).mkdir(parents=True, exist_ok=True)
        for fmt, write in workloads.FORMAT_WRITERS.items():
            (Path(args.make_inputs) / fmt).write_bytes(write(columns, n))
        return
    data = (Path(args.dir) / args.format).read_bytes()
    print(workloads.format_parser(args.format, data)())


if __name__ == "__main__":
    main()
