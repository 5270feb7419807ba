"""A call that came in after a trace and shows the trace named the wrong call.

A trace names the newest received call before its activation among the calls ingested
when it is made. A record ingested later (a switch's file read after another's, a record
a feed delivers late) may be of a call to the line that began between the call named and
the activation, from another caller or from none known: the call that rang the line last
was not the one named, and the success is evidence against the wrong person
(docs/trace-rules.md, "A call that comes in after the trace").

Ingest (ingestion.commits) queues, inside the commit of its records, each (line, call)
pair of a line that has traces (DUE in the index's meta: the line, then the entry's 40
bytes), and, once written, those of lines traced while it was written (from a snapshot
before it); `run` then checks each queued call against its line's successful traces, and
every trace not yet checked against its line's index (a trace made while those records
were being committed), and notes each trace such a call
contradicts (NOTED in the evidence's meta: the trace's number -> where and when the call
began, never its caller). A noted trace keeps its record as written; it no longer counts
toward action (R8), the CIC's reports read it as `contested`, and its record, read, holds
the note as `later_call`. A crash between the commit and the notes leaves the queue to
the next ingest's start. Calls through a hunt pilot, which may have rung lines their
records do not name, are queued alike (hunts.LATER_DUE) and checked against the successes
they came between. Unreadable records read after a trace near its call are counted again
when its record is read (beside).
"""
from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from ..parsing import timezones
from ..parsing.formats import Disposition
from ..store import hunts, index, lookup
from . import rows as trace_rows
from .marks import TRACE_MARK

DUE = index.LATER_DUE        # index meta: + line (8 bytes) + entry (40): a traced line's call
NOTED = b"later_call/"       # evidence meta: + trace number (8 bytes) -> JSON, the call
CHECKED = b"later_checked"   # evidence meta: the traces up to this number were checked
# evidence meta: + trace number (8 bytes) -> line (8) + activation (8, signed): a success
# another replica of the shard made (evidence.replication), applied here after traces of
# higher numbers were checked, to be checked as one made here
APPLIED = b"later_applied/"
# evidence meta: every success was checked against the calls through a hunt pilot (once,
# in a store from a release that checked the index alone)
HUNTS_CHECKED = b"later_hunts_checked"
_ENTRY = index.ENTRY_DTYPE
_FIELDS: tuple[str, ...] = _ENTRY.names or ()
# a trace that is or may become a success (a pending one), as TracedLines keeps it: a call
# through a hunt pilot that began from call_start_us on and before activated_us may
# contradict it (the earliest instant where its call is not known yet)
_MAYBE = np.dtype([("trace", "<u8"), ("line", "<u8"), ("call_start_us", "<i8"),
                   ("activated_us", "<i8")])
_EARLIEST = np.iinfo(np.int64).min


class TracedLines:
    """The lines that have a trace (any outcome: a pending one may succeed), sorted, and
    beside each the latest activation among its traces (a call that began after it
    contradicts none of them), read from the report rows as traces are added; and the
    traces that are or may become successes (maybe, _MAYBE), for the calls through a hunt
    pilot an ingest reads later."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self.lines = np.empty(0, np.uint64)
        self.until = np.empty(0, np.int64)
        self.maybe = np.empty(0, _MAYBE)
        self.upto = 0        # the last trace number read

    def get(self) -> tuple[np.ndarray, np.ndarray]:
        envs, db = self.tracer.envs, self.tracer.db
        with envs.eread() as txn:
            last = int(txn.get(b"last_trace", b"0", db=db["emeta"]))
            applied = [(bytes(k), bytes(v)) for k, v in _items(txn, db["emeta"], APPLIED)]
            if last <= self.upto and not applied:
                return self.lines, self.until
            new = trace_rows.read_since(txn, db["trace_rows"], db["trace_segments"], self.upto)
        more = np.frombuffer(b"".join(v for _, v in applied),
                             np.dtype([("line", ">u8"), ("at", ">i8")]))
        lines, at = np.unique(np.concatenate([self.lines, new["line"].astype(np.uint64),
                                              more["line"].astype(np.uint64)]), return_inverse=True)
        until = np.full(len(lines), _EARLIEST, np.int64)
        np.maximum.at(until, at, np.concatenate([self.until, new["activated_us"],
                                                 more["at"].astype(np.int64)]))
        new = new[(new["outcome"] == trace_rows.OUTCOME_CODES["success"])
                  | (new["outcome"] == trace_rows.OUTCOME_CODES["pending"])]
        maybe = np.empty(len(new) + len(more), _MAYBE)
        maybe["trace"] = [*new["trace"].tolist(),
                          *(int.from_bytes(k[len(APPLIED):], "big") for k, _ in applied)]
        maybe["line"] = np.concatenate([new["line"], more["line"]])
        maybe["call_start_us"] = np.concatenate([np.where(
            new["outcome"] == trace_rows.OUTCOME_CODES["success"], new["call_start_us"],
            _EARLIEST), np.full(len(more), _EARLIEST)])
        maybe["activated_us"] = np.concatenate([new["activated_us"], more["at"]])
        maybe = np.concatenate([self.maybe, maybe])
        if applied:      # (read again until checked; the rows' numbers are new each time)
            maybe = maybe[np.unique(maybe["trace"], return_index=True)[1]]
        self.maybe = maybe
        self.lines, self.until, self.upto = lines, until, max(last, self.upto)
        return lines, until


def contradicts(tracer: Any, index_txn: Any, key: bytes, record: dict, e: Any) -> bool:
    """Whether the call of entry e (a received call to the line, key) shows that the
    successful trace of the record named the wrong call: e began before the activation and
    no earlier than the call named, is not that call (not its id, not its caller: a
    caller's other call names the same caller), and is a call the trace's rules would
    have looked at (its feed's, where the trace named the feed of a line of its own; not
    one a switch's malicious call id passed over, its flagged call named by the switch).
    Or e is the call named, whose records now name two callers: a leg of it (not one a
    transfer split off, nor the line's own phone's, its caller the line) from another
    caller, or the index's call, callers_differ (a trace made now would name none:
    docs/trace-rules.md, "A transferred call")."""
    call = record["call"]
    if f"{int(e['call_id']):016x}" == call["call_id"] and \
            abs(int(e["start_us"]) - call["start_us"]) <= index.CALL_SPAN_US:
        disposition = int(e["flags"]) >> 4
        return not _flagged(record) and (disposition == Disposition.CALLERS_DIFFER or (
            disposition != Disposition.TRANSFERRED
            and int(e["calling"]) != int.from_bytes(key, "big")
            and tracer.lookup.caller_text(index_txn, int(e["calling"])) != call["calling"]))
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
    return not _flagged(record)


def _flagged(record: dict) -> bool:
    """Whether the trace named the call its switch flagged (a malicious call id)."""
    call, by = record["call"], record.get("activated_by") or {}
    return bool(by.get("switch_record")) and (by.get("offset"), by.get("source")) == (
        call["offset"], call["source"])


def _named(tracer: Any, index_txn: Any, key: bytes, record: dict) -> tuple[set[int], dict]:
    """The feeds of the line's (key) calls a successful trace's rules look at (a line of
    its switch's own: the feed the trace named), and the call it named as the index holds
    it (its caller tells its other records), else as the record names it (a call newer
    calls pushed out of the index)."""
    call = record["call"]
    entries = tracer.lookup.last_calls(key, index_txn)
    named_feed = record.get("feed_named")
    if named_feed is not None and lookup.local_line(int.from_bytes(key, "big")):
        entries = entries[entries["feed"] == named_feed]
    call_id = int(call["call_id"], 16)
    own = entries[(entries["call_id"] == call_id) & (entries["start_us"] == call["start_us"])]
    e = dict(zip(_FIELDS, own[0].tolist(), strict=True)) if len(own) else {
        "start_us": call["start_us"], "call_id": call_id, "calling": 0}
    return {*entries["feed"].tolist(), call["feed"]}, e


def hunt_between(tracer: Any, index_txn: Any, key: bytes, record: dict) -> dict | None:
    """A call through a hunt pilot that may have rung the line (key) and began from the
    call the successful trace of the record named on and before its activation, as a
    trace made now would find it (lookup.hunt_after: of a feed of the line's calls, not
    the call named written in another record), as the CIC reads it; None if there is
    none, or the switch named the call (a malicious call id)."""
    if _flagged(record) or not hunts.noted_feeds(index_txn, tracer.db["meta"]):
        return None       # (a store with no call through a pilot: the common case, at once)
    feeds, e = _named(tracer, index_txn, key, record)
    trimmed = index_txn.get(hunts.TRIMMED, db=tracer.db["meta"])
    if trimmed is not None and (since := int.from_bytes(trimmed, "little", signed=True)) > \
            e["start_us"]:
        # a purge removed the older calls through a pilot: the trace was checked against
        # them when it was made, and the calls since are looked at
        e = {"start_us": since, "call_id": e["call_id"], "calling": 0}
    return tracer.lookup.hunt_after(index.native_txn(index_txn, tracer.db["index"], tracer.native),
                                    key, feeds, e, int(record["activated_us"]))


def _due_hunts(tracer: Any, txn: Any, index_txn: Any, keys: list[bytes]) -> int:
    """Check the queued calls through a hunt pilot (hunts.LATER_DUE keys) against each
    success whose call and activation one came between (and each pending trace since
    resolved); note each so contradicted, by the rule of hunt_between, the queued calls
    alone looked at (the others were, when the trace was made or at their commit).
    Returns how many were noted."""
    calls, listed, owner = hunts.due_calls(index_txn, tracer.db["hunts"], keys)
    if not len(calls):
        return 0
    begun, unlisted, noted = calls["start_us"], np.flatnonzero(calls["members"] == 0), 0
    for number, line in _between(tracer.traced.maybe, begun):
        value = txn.get(number.to_bytes(8, "big"), db=tracer.db["traces"])
        record = None if value is None else json.loads(value)     # None: purged
        if (record is None or record["outcome"] != "success" or _flagged(record)
                or txn.get(NOTED + number.to_bytes(8, "big"), db=tracer.db["emeta"]) is not None):
            continue
        feeds, e = _named(tracer, index_txn, line.to_bytes(8, "big"), record)
        # the calls that may have rung the line (their members list it, or are not known),
        # of those that began in the time (calls are in order of their start)
        lo, hi = np.searchsorted(begun, [e["start_us"], record["activated_us"]], "left")
        lists = owner[np.searchsorted(listed, line, "left"):np.searchsorted(listed, line, "right")]
        near = np.union1d(lists[(lists >= lo) & (lists < hi)],
                          unlisted[np.searchsorted(unlisted, lo):np.searchsorted(unlisted, hi)])
        near = near[np.isin(calls["feed"][near], list(feeds)) & (calls["call_id"][near] != e["call_id"])]
        for _, start, call_id, pilot, named, _ in calls[near].tolist():
            if not (start == e["start_us"] and tracer.lookup.written_again(
                    index_txn, named, call_id, int(e["calling"]))):
                noted += _note(tracer, txn, number, _hunt_note(hunts.view(pilot, start, named)))
                break
    return noted


def _note(tracer: Any, txn: Any, number: int, note: dict) -> bool:
    """Note that a call (note: what the CIC reads of it) contradicts trace number's
    success (the first noted stands). True if noted now."""
    key = NOTED + number.to_bytes(8, "big")
    if txn.get(key, db=tracer.db["emeta"]) is not None:
        return False
    note["noted_at"] = timezones.format_utc(time.time_ns() // 1000)
    txn.put(key, json.dumps(note).encode(), db=tracer.db["emeta"])
    return True


def _call_note(tracer: Any, index_txn: Any, e: Any) -> dict:
    """The note of a call to the line (an index entry): where and when it began, how it
    ended; never its caller."""
    view = tracer.call_view(index_txn, e)
    return {k: view[k] for k in ("start", "start_us", "feed", "source", "offset", "disposition")}


def _hunt_note(hunt: dict) -> dict:
    """The note of a call through a hunt pilot (hunt_between's): when it began, its pilot
    and the number its record names beyond it; never its caller."""
    return {"start": hunt["start"], "through_hunt_pilot": hunt["pilot"], "named": hunt["named"]}


def _check(tracer: Any, txn: Any, index_txn: Any, number: int, key: bytes) -> bool:
    """Check a successful trace (its number; its line, key) against its line's index and
    the calls through a hunt pilot; note what contradicts it. True if noted now."""
    record = json.loads(txn.get(number.to_bytes(8, "big"), db=tracer.db["traces"]))
    hit = next((e for e in tracer.lookup.last_calls(key, index_txn)
                if contradicts(tracer, index_txn, key, record, e)), None)
    if hit is not None:
        return _note(tracer, txn, number, _call_note(tracer, index_txn, hit))
    hunt = hunt_between(tracer, index_txn, key, record)
    return hunt is not None and _note(tracer, txn, number, _hunt_note(hunt))


def _successes(tracer: Any, txn: Any, key: bytes) -> list[tuple[int, dict]]:
    """A line's successful traces: (number, record)."""
    found = []
    for k, _ in _items(txn, tracer.db["by_line"], key + TRACE_MARK):
        number = bytes(k[len(key) + len(TRACE_MARK):])
        record = json.loads(txn.get(number, db=tracer.db["traces"]))
        if record["outcome"] == "success":
            found.append((int.from_bytes(number, "big"), record))
    return found


def _between(maybe: np.ndarray, starts: np.ndarray) -> list[tuple[int, int]]:
    """The traces of maybe (_MAYBE) that a call begun at one of starts may contradict:
    (number, line) of each with one from its call's start on and before its activation."""
    at = np.sort(starts.astype(np.int64))
    i = np.minimum(np.searchsorted(at, maybe["call_start_us"], "left"), len(at) - 1)
    hit = (at[i] >= maybe["call_start_us"]) & (at[i] < maybe["activated_us"])
    return maybe[["trace", "line"]][hit].tolist()


def run(tracer: Any) -> int:
    """Check the queued calls and the traces not yet checked; note each contradicted
    trace. Returns how many were noted."""
    envs, db = tracer.envs, tracer.db
    with envs.read() as index_txn:
        due = [bytes(k) for k, _ in _items(index_txn, db["meta"], DUE)]
        hunts_due = [bytes(k) for k, _ in _items(index_txn, db["meta"], hunts.LATER_DUE)]
    tracer.traced.get()           # the traces, to the last (TracedLines.maybe)

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
                    noted += hit is not None and _note(
                        tracer, txn, number, _call_note(tracer, index_txn, hit))
            # calls through a hunt pilot, which may have rung lines their records do not name
            noted += _due_hunts(tracer, txn, index_txn, hunts_due) if hunts_due else 0
            if txn.get(HUNTS_CHECKED, db=db["emeta"]) is None:     # once a store
                old = trace_rows.read_since(txn, db["trace_rows"], db["trace_segments"], 0)
                for number, line in old[["trace", "line"]][old["outcome"] == 1].tolist():
                    record = json.loads(txn.get(number.to_bytes(8, "big"), db=db["traces"]))
                    hunt = hunt_between(tracer, index_txn, line.to_bytes(8, "big"), record)
                    noted += hunt is not None and _note(tracer, txn, number, _hunt_note(hunt))
                txn.put(HUNTS_CHECKED, b"1", db=db["emeta"])
            checked = int(txn.get(CHECKED, b"0", db=db["emeta"]))
            new = trace_rows.read_since(txn, db["trace_rows"], db["trace_segments"], checked)
            for number, line in new[["trace", "line"]][new["outcome"] == 1].tolist():
                noted += _check(tracer, txn, index_txn, number, line.to_bytes(8, "big"))
            if len(new):
                txn.put(CHECKED, str(int(new["trace"].max())).encode(), db=db["emeta"])
            for k, v in _items(txn, db["emeta"], APPLIED):   # another replica's successes
                noted += _check(tracer, txn, index_txn,
                                int.from_bytes(bytes(k)[len(APPLIED):], "big"), bytes(v)[:8])
                txn.delete(bytes(k), db=db["emeta"])
        return noted
    noted = envs.ewrite(work)
    if due or hunts_due:
        envs.write(lambda txn: [txn.delete(k, db=db["meta"]) for k in due + hunts_due])
    return noted


def applied(txn: Any, db: dict, number: int, key: bytes, record: dict) -> None:
    """A success another replica made, applied here (evidence.replication): its line is
    a traced line, and the trace is checked at the next ingest's commit, whatever traces
    of higher numbers were checked before it came."""
    if record["outcome"] == "success":
        txn.put(APPLIED + number.to_bytes(8, "big"),
                key + int(record["activated_us"]).to_bytes(8, "big", signed=True), db=db["emeta"])


def beside(tracer: Any, txn: Any, records: list[dict]) -> None:
    """Add to evidence records, as they are read (txn: the evidence's), what came in after
    them: the note of a call that contradicts a success (`later_call`), and where more
    unreadable records of a trace's feed near its call have been read since it was made,
    their count as it is now (`unreadable_nearby_now`, beside `unreadable_nearby` as
    written: the CIC's measure of how far the data around the trace can be trusted)."""
    with tracer.envs.read() as index_txn:
        near = index.native_txn(index_txn, tracer.db["index"], tracer.native)
        for record in records:
            if record["outcome"] == "success" and (note := txn.get(
                    NOTED + int(record["trace_id"][1:]).to_bytes(8, "big"), db=tracer.db["emeta"])):
                record["later_call"] = json.loads(note)
            written, call = record.get("unreadable_nearby"), record.get("call")
            if written is None:
                continue
            at = int(record["activated_us"])
            now = tracer.lookup.unreadable_near(near, None if call is None else int(call["feed"]),
                                                at if call is None else int(call["start_us"]), at)
            if now["records"] > written["records"]:     # (fewer: a purge removed some)
                record["unreadable_nearby_now"] = now


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
