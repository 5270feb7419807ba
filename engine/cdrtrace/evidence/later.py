"""A call that came in after a trace and shows the trace named the wrong call.

A trace names the newest received call before its activation among the calls ingested
when it is made. A record ingested later (a switch's file read after another's, a record
a feed delivers late) may be of a call to the line that began between the call named and
the activation, from another caller or from none known: the call that rang the line last
was not the one named, and the success is evidence against the wrong person
(docs/trace-rules.md, "A call that comes in after the trace").

Ingest (ingestion.commits) queues, inside the commit of its records, each (line, call)
pair of a line that has traces (DUE in the index's meta: the line, then the entry's 40
bytes); `run` then checks each queued call against its line's successful traces, and
every trace not yet checked against its line's index (a trace made while those records
were being committed, from a snapshot before them), and notes each trace such a call
contradicts (NOTED in the evidence's meta: the trace's number -> where and when the call
began, never its caller). A noted trace keeps its record as written; it no longer counts
toward action (R8), the CIC's reports read it as `contested`, and its record, read, holds
the note as `later_call`. A crash between the commit and the notes leaves the queue to
the next ingest's start.
"""
from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from ..parsing import timezones
from ..store import index, lookup
from . import rows as trace_rows
from .marks import TRACE_MARK

DUE = index.LATER_DUE        # index meta: + line (8 bytes) + entry (40): a traced line's call
NOTED = b"later_call/"       # evidence meta: + trace number (8 bytes) -> JSON, the call
CHECKED = b"later_checked"   # evidence meta: the traces up to this number were checked
# evidence meta: + trace number (8 bytes) -> line (8) + activation (8, signed): a success
# another replica of the shard made (evidence.replication), applied here after traces of
# higher numbers were checked, to be checked as one made here
APPLIED = b"later_applied/"
_ENTRY = index.ENTRY_DTYPE


class TracedLines:
    """The lines that have a trace (any outcome: a pending one may succeed), sorted, and
    beside each the latest activation among its traces (a call that began after it
    contradicts none of them), read from the report rows as traces are added."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self.lines = np.empty(0, np.uint64)
        self.until = np.empty(0, np.int64)
        self.upto = 0        # the last trace number read

    def get(self) -> tuple[np.ndarray, np.ndarray]:
        envs, db = self.tracer.envs, self.tracer.db
        with envs.eread() as txn:
            last = int(txn.get(b"last_trace", b"0", db=db["emeta"]))
            applied = [bytes(v) for _, v in _items(txn, db["emeta"], APPLIED)]
            if last <= self.upto and not applied:
                return self.lines, self.until
            new = trace_rows.read_since(txn, db["trace_rows"], db["trace_segments"], self.upto)
        more = np.frombuffer(b"".join(applied), np.dtype([("line", ">u8"), ("at", ">i8")]))
        lines, at = np.unique(np.concatenate([self.lines, new["line"].astype(np.uint64),
                                              more["line"].astype(np.uint64)]), return_inverse=True)
        until = np.full(len(lines), np.iinfo(np.int64).min, np.int64)
        np.maximum.at(until, at, np.concatenate([self.until, new["activated_us"],
                                                 more["at"].astype(np.int64)]))
        self.lines, self.until, self.upto = lines, until, max(last, self.upto)
        return lines, until


def contradicts(tracer: Any, index_txn: Any, key: bytes, record: dict, e: Any) -> bool:
    """Whether the call of entry e (a received call to the line, key) shows that the
    successful trace of the record named the wrong call: e began before the activation and
    no earlier than the call named, is not that call (not its id, not its caller: a
    caller's other call names the same caller), and is a call the trace's rules would
    have looked at (its feed's, where the trace named the feed of a line of its own; not
    one a switch's malicious call id passed over, its flagged call named by the switch)."""
    call = record["call"]
    if not call["start_us"] <= int(e["start_us"]) < record["activated_us"]:
        return False
    if f"{int(e['call_id']):016x}" == call["call_id"]:
        return False
    if tracer.lookup.caller_text(index_txn, int(e["calling"])) == call["calling"]:
        return False
    named_feed = record.get("feed_named")
    if named_feed is not None and int(e["feed"]) != named_feed and \
            lookup.local_line(int.from_bytes(key, "big")):
        return False
    by = record.get("activated_by") or {}
    return not (by.get("switch_record") and (by.get("offset"), by.get("source")) ==
                (call["offset"], call["source"]))


def _note(tracer: Any, txn: Any, index_txn: Any, number: int, e: Any) -> bool:
    """Note that the call of entry e contradicts trace number's success (the first noted
    stands). True if noted now."""
    key = NOTED + number.to_bytes(8, "big")
    if txn.get(key, db=tracer.db["emeta"]) is not None:
        return False
    view = tracer.call_view(index_txn, e)
    txn.put(key, json.dumps({
        "start": view["start"], "start_us": view["start_us"], "feed": view["feed"],
        "source": view["source"], "offset": view["offset"],
        "disposition": view["disposition"],
        "noted_at": timezones.format_utc(time.time_ns() // 1000),
    }).encode(), db=tracer.db["emeta"])
    return True


def _successes(tracer: Any, txn: Any, key: bytes) -> list[tuple[int, dict]]:
    """A line's successful traces: (number, record)."""
    found = []
    for k, _ in _items(txn, tracer.db["by_line"], key + TRACE_MARK):
        number = bytes(k[len(key) + len(TRACE_MARK):])
        record = json.loads(txn.get(number, db=tracer.db["traces"]))
        if record["outcome"] == "success":
            found.append((int.from_bytes(number, "big"), record))
    return found


def run(tracer: Any) -> int:
    """Check the queued calls and the traces not yet checked; note each contradicted
    trace. Returns how many were noted."""
    envs, db = tracer.envs, tracer.db
    with envs.read() as index_txn:
        due = [bytes(k) for k, _ in _items(index_txn, db["meta"], DUE)]

    def work(txn: Any) -> int:
        noted = 0
        with envs.read() as index_txn:     # after the commit that queued them
            lines: dict[bytes, list] = {}
            for k in due:
                lines.setdefault(k[len(DUE):len(DUE) + 8], []).append(
                    np.frombuffer(k[len(DUE) + 8:], _ENTRY)[0])
            for key, calls in lines.items():
                for number, record in _successes(tracer, txn, key):
                    hit = next((e for e in calls
                                if contradicts(tracer, index_txn, key, record, e)), None)
                    noted += hit is not None and _note(tracer, txn, index_txn, number, hit)
            checked = int(txn.get(CHECKED, b"0", db=db["emeta"]))
            new = trace_rows.read_since(txn, db["trace_rows"], db["trace_segments"], checked)
            for number, line in new[["trace", "line"]][new["outcome"] == 1].tolist():
                record = json.loads(txn.get(number.to_bytes(8, "big"), db=db["traces"]))
                key = line.to_bytes(8, "big")
                hit = next((e for e in tracer.lookup.last_calls(key, index_txn)
                            if contradicts(tracer, index_txn, key, record, e)), None)
                noted += hit is not None and _note(tracer, txn, index_txn, number, hit)
            if len(new):
                txn.put(CHECKED, str(int(new["trace"].max())).encode(), db=db["emeta"])
            for k, v in _items(txn, db["emeta"], APPLIED):   # another replica's successes
                number, key = int.from_bytes(bytes(k)[len(APPLIED):], "big"), bytes(v)[:8]
                record = json.loads(txn.get(number.to_bytes(8, "big"), db=db["traces"]))
                hit = next((e for e in tracer.lookup.last_calls(key, index_txn)
                            if contradicts(tracer, index_txn, key, record, e)), None)
                noted += hit is not None and _note(tracer, txn, index_txn, number, hit)
                txn.delete(bytes(k), db=db["emeta"])
        return noted
    noted = envs.ewrite(work)
    if due:
        envs.write(lambda txn: [txn.delete(k, db=db["meta"]) for k in due])
    return noted


def applied(txn: Any, db: dict, number: int, key: bytes, record: dict) -> None:
    """A success another replica made, applied here (evidence.replication): its line is
    a traced line, and the trace is checked at the next ingest's commit, whatever traces
    of higher numbers were checked before it came."""
    if record["outcome"] == "success":
        txn.put(APPLIED + number.to_bytes(8, "big"),
                key + int(record["activated_us"]).to_bytes(8, "big", signed=True), db=db["emeta"])


def noted(tracer: Any, txn: Any) -> dict[int, dict]:
    """Every noted trace: number -> the later call's note."""
    return {int.from_bytes(bytes(k)[len(NOTED):], "big"): json.loads(bytes(v))
            for k, v in _items(txn, tracer.db["emeta"], NOTED)}


def _items(txn: Any, db: Any, prefix: bytes) -> list:
    cursor, found = txn.cursor(db), []
    if cursor.set_range(prefix):
        for k, v in cursor:
            if not bytes(k).startswith(prefix):
                break
            found.append((k, v))
    return found


def contest(rows: np.ndarray, numbers: set[int]) -> np.ndarray:
    """The report rows with each noted trace's outcome read as CONTESTED (a copy where
    any is)."""
    if not numbers or not len(rows):
        return rows
    hit = np.isin(rows["trace"], np.fromiter(numbers, np.uint64))
    if not hit.any():
        return rows
    rows = rows.copy()
    rows["outcome"][hit] = trace_rows.CONTESTED
    return rows
