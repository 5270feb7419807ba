"""What a carrier would use instead of cdrtrace, each written as well as its tool allows.
bench.compare and the pytest benches run them beside cdrtrace on the same input.

Every ingest peer keeps, per dialled line, its newest call that reached the line
(ANSWERED, NO ANSWER, CANCEL), from an Asterisk cdr_csv file.

    python -m bench.peers follow PATH DB [--batch-ms 50] [--batch-records 200000]

follow: a `tail -F` loop: read what the switch appended, keep a partial last line for
later, split complete lines with the csv module, put each received call under its dialled
line in py-lmdb (newest wins), commit durably when N lines or T ms are waiting.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import signal
import sqlite3
import sys
import time

import duckdb
import lmdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

FIELDS = ["accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp",
          "lastdata", "start", "answer", "end", "duration", "billsec", "disposition",
          "amaflags", "uniqueid", "userfield"]
RECEIVED = ("ANSWERED", "NO ANSWER", "CANCEL")
BLOCK = 16 << 20


# ------------------------------------------------------------------ parse only

def parse_pyarrow(path) -> int:
    """pyarrow read_csv of the 4 needed columns, typed, one thread."""
    return _read_needed(path).num_rows


def _read_needed(path) -> pa.Table:
    return pacsv.read_csv(
        str(path),
        read_options=pacsv.ReadOptions(column_names=FIELDS, use_threads=False, block_size=BLOCK),
        convert_options=pacsv.ConvertOptions(
            include_columns=["src", "dst", "start", "disposition"],
            column_types={"src": pa.string(), "dst": pa.string(), "start": pa.timestamp("s"),
                          "disposition": pa.string()}))


def parse_python_csv(data: bytes) -> int:
    return sum(1 for _ in csv.reader(io.StringIO(data.decode("latin-1"))))


# ------------------------------------------------------------------ ingest

def ingest_python_csv_dict(path) -> dict:
    """The script a carrier engineer writes first (nothing persisted)."""
    last = {}
    with open(path, encoding="latin-1", newline="") as f:
        for row in csv.reader(f):
            if row[14] in RECEIVED:
                seen = last.get(row[2])
                if seen is None or row[9] >= seen[0]:
                    last[row[2]] = (row[9], row[1])
    return last


def ingest_pyarrow_numpy_lmdb(path, db) -> int:
    """pyarrow read_csv, numpy last-per-line, py-lmdb putmulti of sorted keys (durable)."""
    table = _read_needed(path)
    table = table.filter(pc.is_in(table["disposition"], pa.array(RECEIVED)))
    dst = pc.dictionary_encode(table["dst"]).combine_chunks()
    line = dst.indices.to_numpy(zero_copy_only=False)
    start = table["start"].combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)
    order = np.lexsort((start, line))
    last = order[np.r_[line[order][1:] != line[order][:-1], True]]     # newest per line
    keys = pc.take(dst.dictionary, pa.array(line[last])).to_pylist()
    src = pc.take(table["src"], pa.array(last)).to_pylist()
    stamps = start[last].astype(">i8").tobytes()
    pairs = sorted((k.encode(), stamps[8 * i:8 * i + 8] + (s or "").encode())
                   for i, (k, s) in enumerate(zip(keys, src, strict=True)))
    env = lmdb.open(str(db), map_size=1 << 34, subdir=True)
    with env.begin(write=True) as txn:
        txn.cursor().putmulti(pairs, append=True)
    env.close()
    return len(pairs)


def ingest_duckdb(path, threads: int = 1) -> int:
    """DuckDB read_csv, arg_max last call per line, to Arrow (nothing persisted)."""
    columns = ", ".join(f"'{f}': 'VARCHAR'" for f in FIELDS)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    return con.sql(f"""
        SELECT dst AS line, arg_max(src, "start") AS calling, max("start") AS start
        FROM read_csv('{path}', header=false, columns={{{columns}}}, auto_detect=false)
        WHERE disposition IN ('ANSWERED', 'NO ANSWER', 'CANCEL')
        GROUP BY dst""").to_arrow_table().num_rows


def ingest_sqlite_upsert(path, db) -> int:
    """Python csv into SQLite with UPSERT, one transaction (AstDB-style store, durable)."""
    con = sqlite3.connect(str(db))
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("CREATE TABLE IF NOT EXISTS last (line TEXT PRIMARY KEY, start TEXT, calling TEXT)")

    def rows():
        with open(path, encoding="latin-1", newline="") as f:
            for row in csv.reader(f):
                if row[14] in RECEIVED:
                    yield row[2], row[9], row[1]
    with con:
        con.executemany("""INSERT INTO last VALUES (?, ?, ?) ON CONFLICT (line) DO UPDATE
                           SET start = excluded.start, calling = excluded.calling
                           WHERE excluded.start >= last.start""", rows())
    count = con.execute("SELECT count(*) FROM last").fetchone()[0]
    con.close()
    return count


# ------------------------------------------------------------------ lookup

def sqlite_lookup(db):
    con = sqlite3.connect(str(db))
    statement = "SELECT start, calling FROM last WHERE line = ?"
    return lambda line: con.execute(statement, (line,)).fetchone()


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
