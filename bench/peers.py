"""What a carrier would script instead of cdrtrace, written as well as plain Python allows.

    python -m bench.peers follow PATH DB [--batch-ms 50] [--batch-records 20000]

follow: a `tail -F` loop: read what the switch appended, keep a partial last line for
later, split complete lines with the csv module, put each received call under its dialled
line in py-lmdb (newest wins), commit durably when N lines or T ms are waiting.
"""
from __future__ import annotations

import argparse
import csv
import os
import signal
import sys
import time

import lmdb


def follow(path: str, db: str, batch_ms: float = 50.0, batch_records: int = 200_000) -> int:
    env = lmdb.open(db, map_size=1 << 34, max_dbs=4, subdir=True)
    table = env.open_db(b"calls")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    while not os.path.exists(path):
        time.sleep(0.01)
    fd = os.open(path, os.O_RDONLY)
    tail = b""
    waiting: dict[bytes, bytes] = {}
    count, first = 0, None
    while not stopping:
        data = os.read(fd, 4 << 20)
        if data:
            data = tail + data
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
            rows = csv.reader(data[:cut].decode("latin-1").splitlines())
            for row in rows:
                if len(row) < 16 or row[14] not in ("ANSWERED", "NO ANSWER", "BUSY"):
                    continue
                waiting[row[2].encode()] = f"{row[9]},{row[1]},{row[16]}".encode()
                count += 1
            first = first or time.monotonic()
        if waiting and (count >= batch_records or not data
                        or (time.monotonic() - first) * 1000 >= batch_ms):
            with env.begin(write=True, db=table) as txn:
                txn.cursor().putmulti(sorted(waiting.items()))
            waiting, count, first = {}, 0, None
        if not data:
            time.sleep(0.005)   # as often as cdrtrace looks (StreamOptions.poll_ms)
    env.close()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="peer", required=True)
    p = sub.add_parser("follow")
    p.add_argument("path")
    p.add_argument("db")
    p.add_argument("--batch-ms", type=float, default=50.0)
    p.add_argument("--batch-records", type=int, default=200_000)
    args = ap.parse_args(argv)
    return follow(args.path, args.db, args.batch_ms, args.batch_records)


if __name__ == "__main__":
    sys.exit(main())
