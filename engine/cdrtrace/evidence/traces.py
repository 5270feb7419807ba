"""Traces: resolving a *57 by the rules, and writing its evidence.

The evidence environment holds, per trace: `traces` (8-byte trace number -> the evidence
record, JSON), `by_line` (line + "t" + trace number -> "", and line + "c" + call id ->
trace id: a call counts once per line; in a format 3 store also the line's pseudonyms,
evidence.pseudonyms), its report row (evidence.rows), and while a live feed is behind
it, `pending` (activation time + trace number -> line key).

A trace reads the index from a read snapshot and commits only evidence, so it never
waits for an ingest. The rules are in docs/trace-rules.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import lmdb
import orjson

from ..errors import TraceError
from ..parsing import numbers, timezones
from ..store import index, lookup
from ..store.catalog import Catalog
from ..store.environments import Environments
from ..store.liveness import Liveness
from ..store.lookup import Lookup
from . import _trace, later, pseudonyms, replication, resolution
from . import rows as trace_rows
from .groupcommit import GroupCommit
from .marks import CALL_MARK, TRACE_MARK
from .outcomes import Outcome, TraceResult, call_time, untraceable_reason

log = logging.getLogger("cdrtrace.trace")
MAX_AT_US = 7_258_118_400 * 1_000_000     # 2200-01-01T00:00:00Z
PENDING_POLL = 0.005     # how often a waiting trace looks at the watermark again
_NativeTxn = index._index.Txn
_PRESENTATIONS, _DISPOSITIONS = resolution.PRESENTATIONS, resolution.DISPOSITIONS
# the same names for the native record (_trace.record): by value, None where there is none
_PRESENTATION_NAMES = tuple(_PRESENTATIONS.get(i) for i in range(max(_PRESENTATIONS) + 1))
_DISPOSITION_NAMES = tuple(_DISPOSITIONS.get(i) for i in range(max(_DISPOSITIONS) + 1))


def u64(value: int) -> bytes:
    return int(value).to_bytes(8, "big")


def trace_id(number: int) -> str:
    return f"T{number:08d}"


def id_number(text: Any, letter: str, width: int) -> int | None:
    """The number of an id written as the store writes its ids (letter, then the number
    zero-padded to width: T00000001, C000001, R000001); None for any other text."""
    if not isinstance(text, str) or not (text[1:].isascii() and text[1:].isdigit()):
        return None
    number = int(text[1:])
    return number if f"{letter}{number:0{width}d}" == text and number < 1 << 64 else None


def encode(record: dict) -> bytes:
    """An evidence record as stored: JSON, written by orjson (json.dumps took a tenth of a
    trace's write), or by json.dumps for what orjson refuses (an integer past 64 bits, a
    string that is not Unicode text), so that no record is lost to its form."""
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError:
        return json.dumps(record).encode()


_OUTCOMES = {outcome.value: outcome for outcome in Outcome}   # Outcome(value), in a third of the time


def result_of(record: dict) -> TraceResult:
    """The customer's result of an evidence record: never the caller."""
    return TraceResult(record["trace_id"], record["line"], _OUTCOMES.get(record["outcome"])
                       or Outcome(record["outcome"]),
                       timezones.format_utc(record["activated_us"]), call_time(record["call"]))


def unrecorded(packed: int, at_us: int, exc: Exception) -> TraceResult:
    """No evidence, no answer: the switch tells the customer to try later."""
    log.error("trace of %s at %s could not be recorded: %s",
              numbers.format_number(packed), timezones.format_utc(at_us), exc)
    return TraceResult("", numbers.format_number(packed), Outcome.FAILURE,
                       timezones.format_utc(at_us), None)


def enrichment(txn: Any, db: dict, calling: int) -> dict | None:
    """A served caller's directory entry, as it is now (snapshotted as evidence)."""
    entry = txn.get(u64(calling), db=db["directory"])
    found = json.loads(entry) if entry is not None else None
    if found is None or not found["served"]:
        return None
    value = txn.get(b"directory_import", db=db["emeta"])
    found["directory_import"] = int(value) if value else None
    return found


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """What every trace of one commit reads: one index read transaction, and the
    attached feeds as it shows them. native: (the commit's evidence transaction, it and the
    index's as index.native_txn gives them in C), made once for the commit's traces,
    when their common case is made in C (NativeRecord); else None."""
    txn: Any
    feeds: dict[int, dict]
    native: tuple[Any, Any, Any] | None = None

    @classmethod
    def of(cls, index_txn: Any, liveness: Liveness,
           native: tuple[Any, Any, Any] | None = None) -> Snapshot:
        return cls(index_txn, liveness.attached(index_txn), native)


class NativeRecord:
    """Tracer.record's common case in C (_trace.record), given what it needs: the
    databases (again after a reopen replaces them) and the helpers it shares with
    Tracer.record, its reference."""

    def __init__(self, tracer: Tracer):
        self.db, self.keep = tracer.db, tracer.config["keep"]
        self.dbs: tuple = ()
        self.keep_dbs()
        tracer.envs.on_reopen.append(self.keep_dbs)
        self.helpers = (timezones.format_utc, tracer.catalog.source_name,
                        lambda txn, calling: enrichment(txn, self.db, calling),
                        tracer.lookup.unreadable_near, encode, TraceError,
                        _PRESENTATION_NAMES, _DISPOSITION_NAMES, index.ROLE_NAMES, replication,
                        lookup.UNREADABLE_WINDOW_US, json.loads, lookup.STAMPED_AHEAD_US)

    def keep_dbs(self) -> None:
        names = ("index", "traces", "emeta", "by_line", "pseudonyms", "trace_rows")
        self.dbs = (*(self.db[name] for name in names), self.db.get("unreadable"), self.db["meta"])

    def wrapped(self, txn: Any, index_txn: Any) -> tuple[Any, Any, Any] | None:
        """(txn, it and index_txn as index.native_txn gives them) for a commit's traces,
        made once (Snapshot.native); None where it gives py-lmdb's own calls."""
        made = (index.native_txn(txn, self.db["traces"]),
                index.native_txn(index_txn, self.db["index"]))
        if type(made[0]) is not _NativeTxn or type(made[1]) is not _NativeTxn:
            return None
        return (txn, *made)

    def __call__(self, txn: Any, index_txn: Any, key: bytes, packed: int, at_us: int,
                 requested_by: str | None, line: str | None = None,
                 current: bool = False) -> dict | None:
        """The record written, or None (nothing written) for Tracer.record to make. txn,
        index_txn: as index.native_txn gives them (where it gives py-lmdb's own calls,
        index.PyTxn, this makes nothing: None). line: the line's text, if known."""
        if type(txn) is not _NativeTxn or type(index_txn) is not _NativeTxn:
            return None
        return _trace.record(txn, index_txn, self.dbs, key, packed, at_us,
                             line or numbers.format_number(packed), requested_by, self.keep,
                             self.helpers, current)


class Tracer:
    """Resolves and records traces of one store."""

    def __init__(self, envs: Environments, catalog: Catalog, lookup: Lookup, liveness: Liveness):
        self.envs, self.catalog, self.lookup, self.liveness = envs, catalog, lookup, liveness
        self.db = envs.db
        self.config = envs.config
        self.replica: tuple[int, int] | None = None   # (K, N) when a shard's replicas share evidence
        self.group = GroupCommit(envs, self.opened)   # concurrent traces share durable commits
        self.native = index.native_calls()
        self.traced = later.TracedLines(self)     # the lines ingest checks (evidence.later)
        self.native_record = NativeRecord(self)       # the common case in C

    def trace(self, packed: int, at_us: int, feed: int | None = None, wait: float = 0.0,
              by: str | None = None, clocked: bool = False) -> TraceResult:
        """*57 on the line `packed` at at_us: see Store.trace. by: the service's caller
        (a token), kept in the evidence. The pending traces whose feeds passed them are
        resolved in the same commit, before this one (the commit's opening)."""
        deadline = time.monotonic() + wait
        while wait > 0 and self.liveness.behind(packed, at_us) and time.monotonic() < deadline:
            time.sleep(min(PENDING_POLL, max(0.0, deadline - time.monotonic())))
        try:
            return result_of(self.group.run(self._work(packed, at_us, by, clocked, feed)))
        except (lmdb.Error, OSError) as exc:   # no evidence, no answer: the switch says "later"
            return unrecorded(packed, at_us, exc)

    async def trace_async(self, packed: int, at_us: int, feed: int | None = None,
                          wait: float = 0.0, by: str | None = None,
                          clocked: bool = False) -> TraceResult:
        """trace() from an event loop: the same steps, but waiting (for a live feed, for
        the shared commit) without holding a thread. Without a wait, nothing here reads
        the store: the committer decides from the commit's snapshot."""
        if wait > 0:
            import asyncio  # here: a command that only traces never loads it
            deadline = time.monotonic() + wait
            while self.liveness.behind(packed, at_us) and time.monotonic() < deadline:
                await asyncio.sleep(min(PENDING_POLL, max(0.0, deadline - time.monotonic())))
        try:
            return result_of(await self.group.run_async(self._work(packed, at_us, by, clocked,
                                                                   feed)))
        except (lmdb.Error, OSError) as exc:
            return unrecorded(packed, at_us, exc)

    def _work(self, packed: int, at_us: int, by: str | None,
              clocked: bool = False, feed: int | None = None) -> Callable[[Any, Any], dict]:
        """The trace's write, for a shared commit: pending while a live feed that may carry
        the line is still behind at_us in the commit's snapshot. clocked: at_us is the
        service's clock at the activation (no time was given)."""
        key = index.line_key(packed)
        line = numbers.format_number(packed)        # here, not on the committer's thread

        def work(txn: Any, snapshot: Snapshot) -> dict:
            pending = self.liveness.behind(packed, at_us, feeds=snapshot.feeds)
            return self.record(txn, snapshot.txn, key, packed, at_us, pending=pending,
                               requested_by=by, line=line, made=snapshot.native, current=clocked,
                               feed=feed)
        return work

    @contextlib.contextmanager
    def opened(self, txn: Any) -> Iterator[Snapshot]:
        """A shared commit's opening: one snapshot of the index for all of its traces (it
        never waits for an ingest), and the pending traces their feeds have passed
        resolved first, in their own nested transaction (if that fails, they wait for
        the next commit)."""
        with self.envs.read() as index_txn:
            native = (self.native_record.wrapped(txn, index_txn)    # as record() decides
                      if self.native and self.replica is None else None)
            snapshot = Snapshot.of(index_txn, self.liveness, native)
            if txn.stat(self.db["pending"])["entries"]:
                child = self.envs.eenv.begin(write=True, parent=txn)
                try:
                    self._pending_work(child, snapshot)
                    child.commit()
                except (lmdb.Error, OSError) as exc:
                    child.abort()
                    log.warning("pending traces not resolved now: %s", exc)
                except Exception:           # noqa: BLE001 - the new traces are still made
                    child.abort()
                    log.exception("pending traces not resolved now")
            yield snapshot

    def resolve(self, txn: Any, index_txn: Any, key: bytes, at_us: int,
                own: tuple[int, int] | None = None, current: bool = False,
                feed: int | None = None, activation_folds: Any = None) -> tuple:
        """The rules on one line's entries (resolution.resolve)."""
        return resolution.resolve(self, txn, index_txn, key, at_us, own, current, feed,
                                  activation_folds)

    def call_view(self, index_txn: Any, e: Any) -> dict:
        """An index entry as the CIC reads it (identifying)."""
        return resolution.call_view(self.lookup, self.catalog, index_txn, e)

    def record(self, txn: Any, index_txn: Any, key: bytes, packed: int, at_us: int,
               pending: bool = False, number: int | None = None,
               activated_by: dict | None = None, requested_by: str | None = None,
               own: tuple[int, int] | None = None, line: str | None = None,
               made: tuple[Any, Any, Any] | None = None, current: bool = False,
               feed: int | None = None, activation_folds: Any = None) -> dict:
        """Resolve and write one trace's evidence record and report row. A pending trace
        is written with no call; resolving it later (number given) rewrites both.
        own: (offset, source) of the record a switch recorded the activation in, where that
        may be the traced call's own (resolve). line: the line's text, if known. made:
        Snapshot.native, the two transactions as index.native_txn gives them, made once for
        a commit's traces (used when txn is the commit's own). current: a trace on the
        service's clock, made as it is activated (resolve). feed: the feed the trace
        names (resolve). activation_folds: the repeated hours of the zone a switch wrote
        the activation's time in (resolve)."""
        e: Any
        # its dozen reads and writes made in C, holding the GIL (index.native_txn)
        if made is not None and made[0] is txn:
            txn, index_txn = made[1], made[2]
        else:
            txn, index_txn = (index.native_txn(txn, self.db["traces"], self.native),
                              index.native_txn(index_txn, self.db["index"], self.native))
        if (self.native and not pending and number is None and activated_by is None
                and self.replica is None and feed is None and self.lookup.unnoted is None):
            # the common case made in C (ext/_trace.pyx): this method is its reference,
            # and makes what it leaves (it then has written nothing). C reads the feeds
            # noted as sharing extensions, not those a read-only open found unnoted
            done = self.native_record(txn, index_txn, key, packed, at_us, requested_by, line,
                                      current)
            if done is not None:
                return done
        if pending:
            outcome, call, e, original = Outcome.PENDING, None, None, None
        else:
            outcome, call, e, original = self.resolve(txn, index_txn, key, at_us, own, current,
                                                      feed, activation_folds)
        resolving = number is not None
        if number is None:   # never reused, even once a purge emptied the table
            last = txn.last_key(self.db["traces"])
            number = replication.next_number(
                max(int.from_bytes(last, "big") if last else 0,
                    int(txn.get(b"last_trace", b"0", db=self.db["emeta"]))),
                *(self.replica or (0, 1)))
            txn.put(b"last_trace", str(number).encode(), db=self.db["emeta"])
        enriched = enrichment(txn, self.db, int(e["calling"])) if outcome is Outcome.SUCCESS else None
        origin = None if call is None else self.origin(index_txn, call, int(e["calling"]))
        record: dict[str, Any] = {
            "trace_id": trace_id(number), "line": numbers.format_number(packed),
            "activated_us": at_us, "traced_at_us": time.time_ns() // 1000,
            "outcome": outcome.value, "call": call, "origin": origin, "enrichment": enriched,
            "original_trace": original.decode() if original else None,
        }
        if activated_by is not None:
            record["activated_by"] = activated_by
        if requested_by is not None:
            record["requested_by"] = requested_by
        if feed is not None:     # resolved among that feed's calls, where the line is its own
            record["feed_named"] = feed
        if call is not None and (reason := untraceable_reason(call)) is not None:
            record["reason"] = reason
        if call is not None and call["disposition"] == "unreadable":
            logged = self.lookup.unreadable_record(index_txn, int(e["feed"]), int(e["start_us"]),
                                                   int(e["call_id"]))
            if logged is not None:
                record["unreadable"] = logged
        if not pending:
            record["unreadable_nearby"] = self.lookup.unreadable_near(
                index_txn, int(e["feed"]) if e is not None else None,
                int(e["start_us"]) if e is not None else at_us, at_us)
        if call is not None:
            row = trace_rows.pack(number, packed, outcome.value, at_us, int(e["calling"]),
                                  int(e["call_id"]), int(e["start_us"]), int(e["presentation"]),
                                  enriched is not None, trace_rows.scope_of(origin))
        else:
            row = trace_rows.pack(number, packed, outcome.value, at_us)
        if pending:
            # the line, and the feed the trace named (resolved among its calls)
            txn.put(u64(at_us) + u64(number), key + (b"" if feed is None else feed.to_bytes(2, "big")),
                    db=self.db["pending"])
        if outcome is Outcome.SUCCESS:
            txn.put(key + CALL_MARK + u64(int(e["call_id"])), trace_id(number).encode(),
                    db=self.db["by_line"])
            pseudonyms.assign(txn, self.db["pseudonyms"], key, str(origin))
        call_id = int(e["call_id"]) if e is not None else None
        if resolving:   # a pending trace resolved: same id, its record completed
            earlier = json.loads(txn.get(u64(number), db=self.db["traces"]))
            record["traced_at_us"] = earlier["traced_at_us"]
            record["resolved_at_us"] = time.time_ns() // 1000
            encoded = encode(record)
            txn.put(u64(number), encoded, db=self.db["traces"])
            trace_rows.replace(txn, self.db["trace_rows"], self.db["trace_segments"], row)
        else:
            encoded = encode(record)
            if not txn.put(u64(number), encoded, db=self.db["traces"], append=True):
                raise TraceError(f"trace number {number} is not past the last recorded: "
                                 "the evidence was not written")
            trace_rows.append_one(txn, self.db["trace_rows"], number, row)
            txn.put(key + TRACE_MARK + u64(number), b"", db=self.db["by_line"])
        if self.replica is not None:      # for the shard's other replicas (evidence.replication)
            replication.outbox_entry(txn, self.db, self.replica[0], number, encoded, row, key,
                                     call_id)
        return record

    # ------------------------------------------------------------ pending traces

    def has_pending(self) -> bool:
        with self.envs.eread() as txn:
            return txn.stat(self.db["pending"])["entries"] > 0

    def resolve_pending(self) -> list[TraceResult]:
        """Resolve every pending trace whose live feeds have passed its activation time (or
        are no longer live), by the normal rules. Run by the write side: a live ingest
        after its commits and as it stops, a batch ingest, and every trace's commit."""
        if not self.has_pending():
            return []

        def work(txn: Any) -> list[dict]:
            with self.envs.read() as index_txn:
                return self._pending_work(txn, Snapshot.of(index_txn, self.liveness))
        return [result_of(r) for r in self.envs.ewrite(work)]

    def _pending_work(self, txn: Any, snapshot: Snapshot) -> list[dict]:
        done = []
        for k, value in list(txn.cursor(self.db["pending"])):
            at_us, number = int.from_bytes(k[:8], "big"), int.from_bytes(k[8:], "big")
            key, named = bytes(value[:8]), value[8:]     # the line, the feed named if any
            packed = int.from_bytes(key, "big")
            if self.liveness.behind(packed, at_us, feeds=snapshot.feeds):
                continue
            done.append(self._resolve_one(txn, snapshot.txn, k, key, packed, at_us, number,
                                          int.from_bytes(named, "big") if named else None))
        return done

    def _resolve_one(self, txn: Any, index_txn: Any, k: bytes, key: bytes, packed: int,
                     at_us: int, number: int, feed: int | None = None) -> dict:
        """One pending trace, by the normal rules, in the evidence transaction."""
        try:
            record = self.record(txn, index_txn, key, packed, at_us, number=number, feed=feed)
        except TraceError as exc:   # the call was pushed out of the index meanwhile
            record = json.loads(txn.get(u64(number), db=self.db["traces"]))
            record["error"] = str(exc)
            txn.put(u64(number), encode(record), db=self.db["traces"])
        txn.delete(k, db=self.db["pending"])
        return record

    # ------------------------------------------------------------ reading the evidence

    def origin(self, index_txn: Any, call: dict, calling: int) -> str | None:
        """The origin a call's trace counts toward (pseudonyms.origin_key). A caller its
        switch numbers itself, from a feed that names several tenants, is noted in the
        call's view (`caller_tenants_shared`): whose tenant's it is the records cannot tell."""
        local = lookup.local_line(calling)
        if calling and local and lookup.tenants_shared(index_txn, self.lookup.db["meta"],
                                                       int(call["feed"])):
            call["caller_tenants_shared"] = True
        return pseudonyms.origin_key(call, local)

    def labels(self, line_key: bytes, records: list[dict]) -> dict[str, str]:
        """origin -> its pseudonym on this line ("Caller A"): one place computes them."""
        with self.envs.eread() as txn:
            return pseudonyms.of_line(txn, self.db["pseudonyms"], line_key, records)

    def records(self, line_key: bytes | None = None) -> list[dict]:
        """Every evidence record, or a line's, in trace order (identifying: callers audit)."""
        with self.envs.eread() as txn:
            if line_key is None:
                found = [json.loads(v) for _, v in txn.cursor(self.db["traces"])]
            else:
                prefix = line_key + TRACE_MARK
                cursor = txn.cursor(self.db["by_line"])
                found = []
                if cursor.set_range(prefix):
                    for k, _ in cursor:
                        if not k.startswith(prefix):
                            break
                        found.append(json.loads(txn.get(k[9:], db=self.db["traces"])))
            later.beside(self, txn, found)     # what came in after them
            return found


def trace_then(tracer: Tracer, packed: int, at_us: int, feed: int | None, by: str | None,
               then: Callable[[TraceResult | None, BaseException | None], None],
               clocked: bool = False) -> None:
    """tracer.trace() with no wait, answered on the committer thread rather than to the
    caller: then(result, None) once the evidence is durable (a failure the switch
    announces when it could not be recorded), or then(None, error) for an error of the
    rules (TraceError). Returns at once."""
    def settled(outcome: tuple[Any, BaseException | None]) -> None:
        record, error = outcome
        if error is None:
            then(result_of(record), None)
        elif isinstance(error, (lmdb.Error, OSError)):
            then(unrecorded(packed, at_us, error), None)
        else:
            then(None, error)
    tracer.group.submit(tracer._work(packed, at_us, by, clocked, feed), settled)


def activation_us(at: str | int | None, zone: str, window_days: float) -> int:
    """An activation time: now, or a given one (an instant, read in zone where it names
    none) no later than now plus window_days (the store's activation_window_days) and
    within 1970-2200, refused (TraceError) before anything is written."""
    now_us = time.time_ns() // 1000
    if at is None:
        return now_us
    at_us = at if isinstance(at, int) else timezones.parse_instant(at, zone)
    latest = min(MAX_AT_US, now_us + int(window_days * 86400e6))
    if not 0 <= at_us <= latest:
        raise TraceError(f"activation time {at!r} out of range: traces are activated from "
                         f"1970 up to {timezones.format_utc(latest)}")
    return at_us
