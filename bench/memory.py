"""Peak memory of a command, split into anonymous and file-backed (mapped store) pages.

    python -m bench.memory cdrtrace ingest big.csv --db /tmp/store

VmHWM (peak RSS, what /usr/bin/time reports) counts the LMDB store's mapped file pages;
RssAnon is the process's own memory. Both are sampled every 20 ms.
"""
from __future__ import annotations

import subprocess
import sys
import time


def status(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) // 1024
    return fields


def main(argv: list[str]) -> int:
    proc = subprocess.Popen(argv)
    peak = {"VmHWM": 0, "RssAnon": 0, "RssFile": 0}
    while proc.poll() is None:
        try:
            for key, value in status(proc.pid).items():
                peak[key] = max(peak[key], value)
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.02)
    print(f"peak RSS {peak['VmHWM']} MB (anonymous {peak['RssAnon']} MB, "
          f"file-backed {peak['RssFile']} MB)", file=sys.stderr)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
