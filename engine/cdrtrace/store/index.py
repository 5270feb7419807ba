"""The last-call index: per line, its most recent received calls, newest first (LMDB).

Key: the line's packed number, 8 bytes big-endian (so key order is numeric order).
Value: up to `keep` 40-byte entries (ENTRY_DTYPE), newest first, and past them any that
began at the same instant as the keep-th (LINE_ROOM in all at most). A received call is
indexed under its dialled line, its redirecting line and the line that finally rang
(docs/trace-rules.md, "Which call a trace names"); calls that never alerted
the line are not indexed.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ..errors import NativeModuleError

try:
    from . import _index
except ImportError as exc:   # never fall back silently: say what to do
    raise NativeModuleError(
        f"cdrtrace's native index kernel did not import ({exc}); reinstall with `pip install .` "
        "so the extensions are built") from exc
from ..parsing.formats import CallBatch, Disposition

# An index entry as the native kernel declares it (ext/_cdr.pxd, Entry: packed,
# little-endian). What each field holds:
ENTRY_DOCS = {
    "start_us": "the call's start, UTC microseconds",
    "calling": "the caller, packed (parsing.numbers)",
    "call_id": "the call's id: legs of one call share it",
    "offset": "byte offset of its record in its source",
    "source": "the source's id (catalog)",
    "feed": "the feed's id",
    "presentation": "Presentation",
    "flags": "bit 0 answered, bit 1 forwarded, bits 2-3 role, bits 4-7 disposition",
}


def entry_dtype(fields: tuple[tuple[str, str], ...], size: int) -> np.dtype:
    """The numpy dtype of a native entry layout, checked against the documented fields."""
    dtype = np.dtype(list(fields))
    if tuple(ENTRY_DOCS) != dtype.names or dtype.itemsize != size:
        raise NativeModuleError(
            f"cdrtrace's native index kernel declares {size}-byte entries {list(dtype.names or ())}, "
            f"this cdrtrace {list(ENTRY_DOCS)}: reinstall with `pip install .`")
    return dtype


ENTRY_DTYPE = entry_dtype(_index.ENTRY_FIELDS, _index.ENTRY_BYTES)


def check_native(kernel) -> None:
    """The compiled kernel must share this module's entry layout, default depth and the
    disposition it gives a call whose legs name two callers."""
    if (kernel.ENTRY_BYTES, kernel.DEF_KEEP, kernel.CALLERS_DIFFER) != (
            ENTRY_DTYPE.itemsize, DEFAULT_KEEP, Disposition.CALLERS_DIFFER):
        raise NativeModuleError(
            f"cdrtrace's native index kernel was built for {kernel.ENTRY_BYTES}-byte entries, "
            f"{kernel.DEF_KEEP} per line, callers_differ {kernel.CALLERS_DIFFER}; this cdrtrace "
            f"uses {ENTRY_DTYPE.itemsize}, {DEFAULT_KEEP} and {int(Disposition.CALLERS_DIFFER)}: "
            "reinstall with `pip install .`")
EMPTY = np.empty(0, ENTRY_DTYPE)
EMPTY.flags.writeable = False

ANSWERED, FORWARDED = 0x01, 0x02
# the most entries a line holds: `keep`, and past them the calls of the keep-th's instant
LINE_ROOM: int = _index.ROOM
ROLE_DIALLED, ROLE_REDIRECTING, ROLE_FINAL = 0, 1, 2
ROLE_NAMES = ("dialled", "redirecting", "final")
DEFAULT_KEEP = 4
check_native(_index)


line_key = _index.line_key    # a line's key: the packed number, 8 bytes big-endian
CALL_SPAN_US = _index.CALL_SPAN_US   # records of one call id further apart are two calls


def decode(value: bytes | None) -> np.ndarray:
    """The entries of one stored value (newest first)."""
    return np.frombuffer(value, ENTRY_DTYPE) if value else EMPTY


_POW10 = np.array([10 ** k for k in range(20)], dtype=np.uint64)


def served_mask(lines: np.ndarray, prefixes) -> np.ndarray:
    """Which lines start with one of the prefixes ('+1303' for E.164 numbers, bare digits
    for extensions and other numbers)."""
    kind = lines >> np.uint64(62)
    length = ((lines >> np.uint64(56)) & np.uint64(63)).astype(np.int64)
    value = lines & np.uint64((1 << 56) - 1)
    mask = np.zeros(len(lines), bool)
    for prefix in prefixes:
        e164 = prefix.startswith("+")
        digits = prefix.lstrip("+")
        want = int(digits)
        room = length - len(digits)
        ok = (room >= 0) & ((kind == 1) if e164 else (kind >= 2))
        shift = _POW10[np.clip(room, 0, 19)]
        mask |= ok & (value // shift == np.uint64(want))
    return mask


def entries_for_batch(batch: CallBatch, source: int, served=(),
                      into: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(lines, entries) for every (line, received call) pair in the batch; with served
    prefixes, only the lines this carrier serves. into(n), if given, supplies the two
    arrays of n to write them in (a pending batch's own arrays, not new ones)."""
    c = batch.columns
    received = c["received"] & (c["called"] != 0)
    redirected = received & (c["redirecting"] != 0)
    rang = received & (c["final"] != 0) & (c["final"] != c["redirecting"])
    if served:
        received = received & served_mask(c["called"], served)
        redirected = redirected & served_mask(c["redirecting"], served)
        rang = rang & served_mask(c["final"], served)
    parts = [(received, c["called"], ROLE_DIALLED),
             (redirected, c["redirecting"], ROLE_REDIRECTING),
             (rang, c["final"], ROLE_FINAL)]
    total = int(received.sum() + redirected.sum() + rang.sum())
    lines, entries = (into(total) if into is not None else
                      (np.empty(total, np.uint64), np.empty(total, ENTRY_DTYPE)))
    at = 0
    for mask, line_column, role in parts:
        idx = np.flatnonzero(mask)
        n = len(idx)
        if n == 0:
            continue
        part = entries[at:at + n]
        lines[at:at + n] = line_column[idx]
        part["start_us"] = c["start_us"][idx]
        part["calling"] = c["calling"][idx]
        part["call_id"] = c["call_id"][idx]
        part["offset"] = c["offset"][idx]
        part["source"] = source
        part["feed"] = c["feed"][idx]
        part["presentation"] = c["presentation"][idx]
        flags = (c["answer_us"][idx] != 0).astype(np.uint8) | (role << 2)
        flags |= (c["redirecting"][idx] != 0).astype(np.uint8) << 1
        flags |= c["disposition"][idx].astype(np.uint8) << 4
        part["flags"] = flags
        at += n
    return lines, entries


def sort_by_line(lines: np.ndarray, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # the merge's result does not depend on the order within a line: no stable sort needed
    order = np.argsort(lines)
    # gathering 40-byte rows as opaque void items is ~10x faster than a structured gather
    return lines[order], np.take(entries.view("V40"), order).view(ENTRY_DTYPE)


def write_batch(txn, db, batch: CallBatch, source: int, keep: int = DEFAULT_KEEP) -> int:
    """Merge a batch into the index inside txn; returns the number of (line, call) pairs."""
    return write_entries(txn, db, *entries_for_batch(batch, source), keep)


SLICE_PAIRS = 1 << 17   # Python key/value objects alive at once while writing

# LMDB's error codes the store acts on, as py-lmdb's exceptions (the write loop grows
# the map on MapFullError, re-reads its size on MapResizedError, reopens on PanicError)
_LMDB_ERRORS = {-30792: "MapFullError", -30785: "MapResizedError", -30795: "PanicError"}


def native_writer(txn, db) -> bool:
    """Whether write_entries merges in C (the default) for this transaction; the Python
    writer (the reference) when CDRTRACE_INDEX_WRITER=python or py-lmdb is not laid out
    as the native writer expects (_index.native_writer_check says why)."""
    return native_calls() and _index.native_writer_check(txn, db) is None


def native_calls() -> bool:
    """Whether a store's hot reads and writes are made in C (the native writer and read,
    native_txn): unless CDRTRACE_INDEX_WRITER=python. Read once, where a store opens."""
    return os.environ.get("CDRTRACE_INDEX_WRITER", "native") != "python"


def native_txn(txn, db, native: bool = True) -> _index.Txn | PyTxn:
    """txn's gets, puts and ordered reads (db: any database of its environment) made in C
    with the GIL held (_index.Txn: a trace's dozen reads and writes); or by py-lmdb itself
    (PyTxn, the reference) when not native or py-lmdb is not laid out as expected."""
    if native:
        try:
            return _index.Txn(txn, db)
        except RuntimeError:
            pass
    return PyTxn(txn)


class PyTxn:
    """_index.Txn's calls, made by py-lmdb."""
    __slots__ = ("txn", "get", "put")

    def __init__(self, txn):
        self.txn, self.get, self.put = txn, txn.get, txn.put

    def last_key(self, db=None) -> bytes | None:
        cursor = self.txn.cursor(db)
        return bytes(cursor.key()) if cursor.last() else None

    def next_key(self, key: bytes, db=None) -> bytes | None:
        cursor = self.txn.cursor(db)
        return bytes(cursor.key()) if cursor.set_range(key) else None

    def next_hunt(self, start: bytes, stop: bytes, line: int, call_id: int,
                  db=None) -> tuple[bytes, bytes] | None:
        cursor = self.txn.cursor(db)
        if cursor.set_range(start):
            for key, value in cursor:
                if key >= stop:
                    break
                listed = bytes(value)[16:]
                if int.from_bytes(key[10:18], "big") != call_id and (not listed or any(
                        int.from_bytes(listed[i:i + 8], "little") == line
                        for i in range(0, len(listed), 8))):
                    return bytes(key), bytes(value)
        return None

    def range(self, start: bytes, stop: bytes, db=None) -> list[tuple[bytes, bytes]]:
        found = []
        cursor = self.txn.cursor(db)
        if cursor.set_range(start):
            for key, value in cursor:
                if key >= stop:
                    break
                found.append((bytes(key), bytes(value)))
        return found


def write_entries(txn, db, lines: np.ndarray, entries: np.ndarray, keep: int = DEFAULT_KEEP,
                  order: np.ndarray | None = None) -> int:
    """Merge (line, entry) pairs into the index inside txn: lines in any order, or, with
    order (from line_order), lines sorted and entries[order[i]] the entry of lines[i]."""
    if order is None:
        lines, order = line_order(lines)
    if not native_writer(txn, db):
        return write_entries_py(txn, db, lines, np.take(entries.view("V40"), order).view(ENTRY_DTYPE),
                                keep)
    try:
        return _index.write_native(txn, db, lines, entries.view(np.uint8).reshape(-1, 40), keep,
                                   order)
    except _index.NativeLmdbError as exc:
        code, message = exc.args
        import lmdb
        raise getattr(lmdb, _LMDB_ERRORS.get(code, "Error"))(f"index write: {message}") from None


line_order = _index.line_order   # (sorted lines, order): a radix sort, no copy of the entries
DIRTY_BUDGET = 16 << 20           # bytes of the index one transaction may rewrite (its copies)


def key_ranges(ordered: np.ndarray, index_bytes: int, budget: int | None = None) -> list[slice]:
    """Slices of sorted lines, each ending on a line boundary, so that writing each in a
    transaction of its own rewrites at most about budget bytes of an index of
    index_bytes: a batch of random lines touches nearly every page of the index, and LMDB
    keeps a copy of every page a transaction touches until it commits."""
    n = len(ordered)
    parts = max(1, min(-(-index_bytes // (budget or DIRTY_BUDGET)), n // 1024 or 1))
    cuts = [0]
    for k in range(1, parts):
        at = int(np.searchsorted(ordered, ordered[n * k // parts], side="left"))
        if at > cuts[-1]:
            cuts.append(at)
    cuts.append(n)
    return [slice(a, b) for a, b in zip(cuts, cuts[1:], strict=False)]


def write_entries_py(txn, db, lines: np.ndarray, entries: np.ndarray, keep: int = DEFAULT_KEEP,
                     slice_pairs: int = SLICE_PAIRS) -> int:
    """The Python writer: the same merge through py-lmdb's getmulti and putmulti, of
    pairs sorted by line.

    Works through the pairs in slices that end on a line boundary, so the Python
    objects py-lmdb needs stay bounded whatever the size of the transaction.
    """
    rows = entries.view(np.uint8).reshape(-1, 40)
    cursor = txn.cursor(db)
    lo = 0
    while lo < len(lines):
        hi = min(len(lines), lo + slice_pairs)
        if hi < len(lines):   # do not split a line's entries between slices
            hi = int(np.searchsorted(lines, lines[hi - 1], side="right"))
        part = lines[lo:hi]
        append = not cursor.last() or cursor.key() < line_key(part[0])
        if append:
            pairs = _index.merge(part, rows[lo:hi], None, None, keep)
        else:
            keys = _index.line_keys(part)
            pairs = _index.merge(part, rows[lo:hi], keys, cursor.getmulti(keys), keep)
        cursor.putmulti(pairs, append=append)
        lo = hi
    return len(lines)


# a call indexed on a line that has traces, queued in the index's meta with its commit for
# the evidence to check (evidence.later): + the line (8 bytes) + the entry (40)
LATER_DUE = b"later_due/"


def later_due(traced: tuple[np.ndarray, np.ndarray], ordered: np.ndarray, order: np.ndarray,
              entries: np.ndarray) -> list[bytes]:
    """The LATER_DUE keys of a batch's pairs (ordered: its lines sorted, order:
    entries[order[i]] is the entry of ordered[i]) whose line has a trace activated after
    the call began (traced: the lines, sorted, and each one's latest activation)."""
    lines, until = traced
    if not len(lines) or not len(ordered):
        return []
    lo, hi = np.searchsorted(ordered, lines, "left"), np.searchsorted(ordered, lines, "right")
    held = lo < hi
    lo, counts, until = lo[held], (hi - lo)[held], until[held]
    if not len(lo):
        return []
    # every pair of those lines: its place in ordered, and its line's latest activation
    at = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
    at = at[entries["start_us"][order[at]] < np.repeat(until, counts)]
    raw = entries.view(np.uint8).reshape(-1, ENTRY_DTYPE.itemsize)
    return [LATER_DUE + int(ordered[i]).to_bytes(8, "big") + raw[order[i]].tobytes()
            for i in at.tolist()]
