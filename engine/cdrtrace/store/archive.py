"""The optional call archive: every parsed call as Parquet, partitioned by day (hive-style,
day=YYYY-MM-DD/), so analysts can ask "every call from this origin to this line in the
last 30 days" through DuckDB, and Spark or any Parquet engine can read the same files.
Numbers stay packed (cdrtrace.numbers); queries format them.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

from ..parsing.formats import CallBatch
from . import private

DAY_US = 86_400 * 1_000_000
FLUSH_ROWS = 1 << 18


class ArchiveWriter:
    """Collects a source's batches per day and writes them as Parquet files, numbered
    source-SSSSSS-NNNNN. Ingest flushes it before each index commit and commits the file
    count with the source's position, so a resumed ingest deletes the files written after
    the last commit (prune) and numbers on: every call is archived exactly once."""

    def __init__(self, root: str | os.PathLike, source: int, files: int = 0):
        self.root = Path(root)
        self.source = source
        self.pending: dict[int, list[pa.RecordBatch]] = {}
        self.rows: dict[int, int] = {}
        self.files = files

    def prune(self) -> int:
        """Delete this source's files numbered after self.files (written past the last
        commit by an interrupted run); returns how many."""
        removed = 0
        for path in self.root.glob(f"day=*/source-{self.source:06d}-*.parquet"):
            if int(path.stem.rsplit("-", 1)[1]) > self.files:
                path.unlink()
                removed += 1
        return removed

    def flush(self) -> None:
        """Write every pending day (before the index commit that covers these calls)."""
        for day in list(self.pending):
            self._flush(day)

    def add(self, batch: CallBatch) -> None:
        if not len(batch):
            return
        days = batch["start_us"] // DAY_US
        import pyarrow as pa  # here: loading Arrow is for stores that archive

        record = batch.to_arrow()
        for day in np.unique(days):
            part = record.filter(pa.array(days == day))
            self.pending.setdefault(int(day), []).append(part)
            self.rows[int(day)] = self.rows.get(int(day), 0) + part.num_rows
            if self.rows[int(day)] >= FLUSH_ROWS:
                self._flush(int(day))

    def close(self) -> None:
        self.flush()

    def _flush(self, day: int) -> None:
        batches = self.pending.pop(day, [])
        self.rows.pop(day, None)
        if not batches:
            return
        folder = self.root / f"day={np.datetime64(day, 'D')}"
        private.make_dir(folder)
        self.files += 1
        path = folder / f"source-{self.source:06d}-{self.files:05d}.parquet"
        with private.open_file(path, "wb") as sink:     # private before the first byte
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_batches(batches), sink, compression="zstd")


def calls(root: str | os.PathLike, line: int, origin: int | None = None,
          since_us: int | None = None) -> pa.Table:
    """Every archived call to a line (as dialled, redirecting or final), optionally from
    one origin and since a time, oldest first."""
    import pyarrow as pa

    files = day_files(root)
    if not files:                    # no call yet: the same columns, no row
        return pa.schema([("start", pa.timestamp("us")), ("answer", pa.timestamp("us")),
                          ("end", pa.timestamp("us")), ("calling", pa.uint64()),
                          ("presentation", pa.uint8()), ("disposition", pa.uint8()),
                          ("received", pa.bool_()), ("feed", pa.uint16()),
                          ("record", pa.int64())]).empty_table()
    where = ["(called = $line OR redirecting = $line OR final = $line)"]
    params: dict = {"line": line, "files": files}
    if origin is not None:
        where.append("calling = $origin")
        params["origin"] = origin
    if since_us is not None:
        where.append("start_us >= $since")
        params["since"] = since_us
    import duckdb  # here: only the archive's readers need DuckDB

    con = duckdb.connect()
    return con.sql(f"""
        SELECT make_timestamp(start_us) AS start, make_timestamp(NULLIF(answer_us, 0)) AS answer,
               make_timestamp(end_us) AS "end", calling, presentation, disposition, received,
               feed, record
        FROM read_parquet($files, hive_partitioning = true)
        WHERE {' AND '.join(where)}
        ORDER BY start_us, record
    """, params=params).to_arrow_table()


def _day(folder: Path) -> np.datetime64 | None:
    """The day a day=YYYY-MM-DD folder holds; None for anything else (left alone)."""
    name = folder.name[4:]
    if not (folder.is_dir() and len(name) == 10 and name[4] == name[7] == "-"):
        return None
    try:
        return np.datetime64(name, "D")
    except ValueError:
        return None


def day_files(root: str | os.PathLike) -> list[str]:
    """The archive's Parquet files, in its day folders only."""
    return sorted(str(f) for folder in Path(root).glob("day=*") if _day(folder) is not None
                  for f in folder.glob("*.parquet"))


def purge(root: str | os.PathLike, before_us: int) -> int:
    """Remove whole days older than before_us; returns the number of days removed."""
    removed = 0
    cutoff = np.datetime64(before_us // DAY_US, "D")
    for folder in Path(root).glob("day=*"):
        day = _day(folder)
        if day is not None and day < cutoff:
            shutil.rmtree(folder)
            removed += 1
    return removed
