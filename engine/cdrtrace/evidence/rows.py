"""Trace records in columnar form for the Call Identification Center's reports.

Beside each JSON evidence record, a trace appends one fixed-width row (ROW_DTYPE) to a
block of BLOCK rows (one LMDB value per block, small enough to stay inline in a page).
Reading every trace for a report costs one bytes object per block and numpy copies:
no Python object per trace. Numbers stay packed (cdrtrace.numbers) until the report's
final projection, where DuckDB formats them.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np

from .pseudonyms import caller_of

if TYPE_CHECKING:
    import pyarrow as pa

ROW_DTYPE = np.dtype([
    ("trace", "<u8"), ("line", "<u8"), ("origin", "<u8"), ("call_id", "<u8"),
    ("call_start_us", "<i8"), ("activated_us", "<i8"),
    ("outcome", "u1"), ("presentation", "u1"), ("enriched", "u1"),
    ("origin_scope", "u1"), ("origin_feed", "<u2"), ("pad", "V2"),
])
# what the origin counted (evidence.pseudonyms) is beside its packed caller: the number
# the world over (and a row written before origins were scoped); the caller in its feed
# (an extension: origin_feed's alone); that one call alone (a feed of several tenants)
SCOPE_NONE, SCOPE_FEED, SCOPE_CALL = 0, 1, 2
assert ROW_DTYPE.itemsize == 56
BLOCK = 32                     # 32 x 56 = 1792 bytes: inline in a 4 KiB page
SEGMENT = 1 << 16              # rows per compacted segment (3.5 MiB, overflow pages)
OUTCOME_CODES = {"success": 1, "untraceable": 2, "no_call": 3, "already_traced": 4,
                 "pending": 5}
# a success a call that came in later contests, as the reports read its row (evidence.later)
CONTESTED = 6

_ROW = struct.Struct("<QQQQqqBBBBH2x")   # ROW_DTYPE's layout, for one row without numpy
assert _ROW.size == ROW_DTYPE.itemsize


def pack(trace: int, line: int, outcome: str, activated_us: int, origin: int = 0,
         call_id: int = 0, call_start_us: int = 0, presentation: int = 0,
         enriched: bool = False, scope: tuple[int, int] = (SCOPE_NONE, 0)) -> bytes:
    """One row as ROW_DTYPE bytes (a trace writes one: numpy's per-call cost is most of
    a small write's). scope: the origin's (origin_scope, origin_feed)."""
    return _ROW.pack(trace, line, origin, call_id, call_start_us, activated_us,
                     OUTCOME_CODES[outcome], presentation, enriched, *scope)


def scope_of(origin: str | None) -> tuple[int, int]:
    """(origin_scope, origin_feed) of an origin as a trace records it."""
    if origin is None:
        return SCOPE_NONE, 0
    _, feed, one_call = caller_of(origin)
    return (SCOPE_NONE, 0) if feed is None else (SCOPE_CALL if one_call else SCOPE_FEED, feed)


def append_one(txn, db, trace: int, row: bytes) -> None:
    """Append one packed row (the newest trace) to its block inside the caller's txn."""
    key = ((trace - 1) // BLOCK).to_bytes(8, "big")
    txn.put(key, (txn.get(key, db=db) or b"") + row, db=db)


def append(txn, db, rows: np.ndarray) -> None:
    """Append rows (sorted by trace number) to their blocks inside the caller's txn."""
    rows = np.asarray(rows, ROW_DTYPE)
    blocks = (rows["trace"] - 1) // BLOCK
    for block in np.unique(blocks):
        part = rows[blocks == block]
        key = int(block).to_bytes(8, "big")
        txn.put(key, (txn.get(key, db=db) or b"") + part.tobytes(), db=db)


def replace(txn, db, segments_db, row: np.ndarray | bytes) -> None:
    """Rewrite one trace's row in place (a pending trace resolved), in its block or, if
    that block was compacted meanwhile, in its segment."""
    row = np.frombuffer(row, ROW_DTYPE) if isinstance(row, bytes) else np.asarray(row, ROW_DTYPE)
    number = int(row["trace"][0])
    for table, key in ((db, (number - 1) // BLOCK), (segments_db, (number - 1) // SEGMENT)):
        value = txn.get(key.to_bytes(8, "big"), db=table)
        if value is None:
            continue
        rows = np.frombuffer(value, ROW_DTYPE).copy()
        at = np.flatnonzero(rows["trace"] == number)
        if len(at):
            rows[at[0]] = row[0]
            txn.put(key.to_bytes(8, "big"), rows.tobytes(), db=table)
            return
    raise KeyError(f"no report row for trace {number}")


def read_all(txn, db, segments_db=None) -> np.ndarray:
    """Every row, in trace order: compacted segments, then blocks. With a buffers=True
    transaction the values are views into the map and joining them is the one copy."""
    parts = list(txn.cursor(segments_db).iternext(keys=False)) if segments_db else []
    parts += txn.cursor(db).iternext(keys=False)
    return np.frombuffer(b"".join(parts), ROW_DTYPE)


def read_since(txn, db, segments_db, after: int) -> np.ndarray:
    """The rows of traces numbered past after, in trace order (a copy)."""
    parts = []
    for table, key in ((segments_db, after // SEGMENT), (db, after // BLOCK)):
        cursor = txn.cursor(table)
        if cursor.set_range(key.to_bytes(8, "big")):
            parts += [bytes(v) for v in cursor.iternext(keys=False)]
    rows = np.frombuffer(b"".join(parts), ROW_DTYPE)
    return rows[rows["trace"] > after]


def compact(txn, db, segments_db, meta_db) -> int:
    """Move every complete run of SEGMENT traces from blocks into one segment value, so a
    report iterates a few large values instead of many small ones. Returns rows moved."""
    done = int(txn.get(b"segments_done", b"0", db=meta_db))       # segments written so far
    cursor = txn.cursor(db)
    if not cursor.last():
        return 0
    last_trace = int(np.frombuffer(cursor.value(), ROW_DTYPE)["trace"][-1])
    complete = last_trace // SEGMENT                               # segments fully traced
    if complete <= done:
        return 0
    first_block, end_block = done * SEGMENT // BLOCK, complete * SEGMENT // BLOCK
    keys, values = [], []
    if cursor.set_range(first_block.to_bytes(8, "big")):
        for key, value in cursor:
            if int.from_bytes(key, "big") >= end_block:
                break
            keys.append(bytes(key))
            values.append(bytes(value))
    rows = np.frombuffer(b"".join(values), ROW_DTYPE)
    segment_of = (rows["trace"] - 1) // SEGMENT
    for segment in range(done, complete):
        txn.put(segment.to_bytes(8, "big"), rows[segment_of == segment].tobytes(),
                db=segments_db)
    for key in keys:
        txn.delete(key, db=db)
    txn.put(b"segments_done", str(complete).encode(), db=meta_db)
    return len(rows)


def rewrite(txn, db, keep) -> int:
    """Keep only rows for which keep(rows) is true (retention); returns rows removed."""
    removed = 0
    for key, value in list(txn.cursor(db)):
        rows = np.frombuffer(value, ROW_DTYPE)
        mask = keep(rows)
        if not mask.all():
            removed += int((~mask).sum())
            if mask.any():
                txn.put(key, rows[mask].tobytes(), db=db)
            else:
                txn.delete(key, db=db)
    return removed


FIELDS = tuple(name for name in ROW_DTYPE.names or () if name != "pad")


def columns_of(rows: np.ndarray, columns=FIELDS) -> dict:
    """The fields as numpy views (strided, no copy): DuckDB scans them in place."""
    return {name: rows[name] for name in columns}


def to_arrow(rows: np.ndarray, columns=FIELDS) -> pa.Table:
    import pyarrow as pa  # here: tracing and ingest never need Arrow

    """Columns as Arrow (each a contiguous copy of one field: vectorised, not per row)."""
    return pa.table({name: pa.array(np.ascontiguousarray(rows[name])) for name in columns})


def bulk_load(txn, db, rows: np.ndarray) -> None:
    """Load rows into an empty table, a block per BLOCK rows (rows numbered 1, 2, ...)."""
    rows = np.asarray(rows, ROW_DTYPE)
    if len(rows) and not (rows["trace"] == np.arange(1, len(rows) + 1)).all():
        raise ValueError("bulk_load takes rows numbered 1, 2, ... in order")
    raw = rows.tobytes()
    step = BLOCK * ROW_DTYPE.itemsize
    txn.cursor(db).putmulti(((i // step).to_bytes(8, "big"), raw[i:i + step])
                            for i in range(0, len(raw), step))
