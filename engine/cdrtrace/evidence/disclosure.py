"""What the Call Identification Center may read, and under which authority.

Every read of identifying data (callers' numbers, names, addresses) needs an analyst's
identity and is audited; releasing trace records outside the CIC needs a recorded legal
authority (a subpoena, a court order or a law-enforcement request), and a refusal is
audited too.
"""
from __future__ import annotations

import json
import os
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

from ..errors import AccessError, StoreError
from ..parsing import numbers
from ..store import archive
from ..store.environments import Environments
from . import later
from . import rows as trace_rows
from .audit import UNPRINTABLE, AuditLog, page
from .outcomes import Outcome
from .traces import Tracer, id_number, u64

AUTHORITY_KINDS = ("subpoena", "court_order", "law_enforcement_request")
AUTHORITY_FIELDS = ("kind", "reference", "agency", "officer", "case_number")


def trace_number(text: str) -> int:
    """A trace id's number, the id written as trace ids are (T00000001): StoreError for
    any other text."""
    number = id_number(text, "T", 8)
    if number is None:
        raise StoreError(f"not a trace id: {text!r} (T and 8 digits, T00000001)")
    return number


class Disclosure:
    """The CIC's audited reads of one store."""

    def __init__(self, envs: Environments, tracer: Tracer, audit: AuditLog):
        self.envs, self.tracer, self.audit = envs, tracer, audit
        self.db = envs.db

    def last_calls(self, key: bytes, analyst: str) -> list[dict]:
        """A line's last calls, with their callers."""
        who = self.audit.actor(analyst, "reading caller numbers")
        with self.envs.read() as txn:
            calls = [self.tracer.call_view(txn, e) for e in self.tracer.lookup.last_calls(key, txn)]
        self.audit.add_now(who, "read_last_calls",
                           line=numbers.format_number(int.from_bytes(key, "big")), calls=len(calls))
        return calls

    def trace_records(self, key: bytes | None, line: str | None, analyst: str,
                      after: str | None = None, limit: int | None = None) -> list[dict]:
        """Full trace records (numbers, enrichment) of a line, or all, in trace order;
        those after the trace id `after`, at most `limit` of them (None: every one)."""
        who = self.audit.actor(analyst, "reading trace records")
        page(after, limit, "trace records", str)
        start = 0 if after is None else trace_number(after) + 1
        if key is not None:             # a line's: a handful
            records = [r for r in self.tracer.records(key)
                       if trace_number(r["trace_id"]) >= start][:limit]
        else:
            records = []
            with self.envs.eread() as txn:
                cursor = txn.cursor(self.db["traces"])
                if cursor.set_range(u64(start)):
                    for _, value in cursor:
                        if limit is not None and len(records) >= limit:
                            break
                        records.append(json.loads(value))
        self.audit.add_now(who, "read_trace_records", line=line, traces=len(records),
                           **({"after": after} if after else {}))
        return records

    def _by_id(self, trace_ids: Any) -> tuple[list[dict], list[str]]:
        """The records the trace ids name, in trace order, each read by its key (not the
        whole store's), and the ids no record has."""
        wanted: dict[int, str] = {}
        unknown = set()
        for given in trace_ids:
            try:
                wanted[trace_number(str(given))] = str(given)
            except StoreError:
                unknown.add(str(given))
        found = []
        with self.envs.eread() as txn:
            for number in sorted(wanted):
                value = txn.get(u64(number), db=self.db["traces"])
                if value is None:
                    unknown.add(wanted[number])
                else:
                    found.append(json.loads(value))
        return found, sorted(unknown)

    def disclose(self, authority: Any, *, analyst: str, trace_ids: Any = None,
                 key: bytes | None = None) -> list[dict]:
        """Successful trace records released under a legal authority (see Store.disclose)."""
        who = self.audit.actor(analyst, "a disclosure", os_role="legal")
        problem = None
        if not isinstance(authority, Mapping):
            problem = f"the legal authority is its fields ({', '.join(AUTHORITY_FIELDS)})"
            authority = {"given": ascii(authority)[:200]}
        elif trace_ids is not None and (isinstance(trace_ids, (str, bytes)) or not isinstance(
                trace_ids, Iterable)):
            problem = f"trace_ids is a list of trace ids (not {ascii(trace_ids)[:60]})"
        authority = {str(k): (str(v).strip() if v is not None else "") for k, v in
                     (authority or {}).items()}
        missing = [f for f in AUTHORITY_FIELDS if not authority.get(f)]
        unreadable = [k for k, v in authority.items() if not _text(v)]
        if problem is None:
            if unreadable:
                authority = {k: v if _text(v) else ascii(v) for k, v in authority.items()}
                problem = f"the legal authority's {', '.join(unreadable)} is not readable text"
            elif missing:
                problem = f"the legal authority lacks {', '.join(missing)}"
            elif authority["kind"] not in AUTHORITY_KINDS:
                problem = (f"the legal authority's kind must be one of "
                           f"{', '.join(AUTHORITY_KINDS)}, not {authority['kind']!r}")
            elif not trace_ids and key is None:
                problem = "name the trace ids or the line to disclose"
        if problem:
            self.audit.add_now(who, "disclosure_refused", reason=problem, authority=authority)
            raise audited(AccessError(f"disclosure refused: {problem}"))
        if trace_ids and key is None:
            records, unknown = self._by_id(trace_ids)
        else:                           # a line's (the trace ids, if named, among them)
            records = self.tracer.records(key)
            wanted = set(trace_ids or ())
            if wanted:
                records = [r for r in records if r["trace_id"] in wanted]
            unknown = sorted(wanted - {r["trace_id"] for r in records})
        if unknown:
            self.audit.add_now(who, "disclosure_refused", reason="unknown trace ids",
                               trace_ids=unknown, authority=authority)
            raise audited(AccessError(f"disclosure refused: no trace {', '.join(unknown)}"))
        records = [r for r in records if r["outcome"] == Outcome.SUCCESS.value]
        self.audit.add_now(who, "disclosure", authority=authority,
                           trace_ids=[r["trace_id"] for r in records])
        return records

    def case_calls(self, line: int, origin: int, feed: int | None = None) -> list[dict]:
        """The archived calls from origin to line (packed), for a case report (audited
        there): each one's start and answer in microseconds and its disposition's code;
        none without an archive. feed: the case's (Cases.open), whose calls alone are its."""
        root = self.envs.archive_dir()
        return [] if root is None else [
            {"start_us": _us(row["start"]), "answer_us": _us(row["answer"]),
             "disposition": row["disposition"]}
            for row in archive.calls(root, line, origin).to_pylist()
            if feed is None or row["feed"] == feed]

    def report_rows(self, analyst: str) -> np.ndarray:
        """Every trace as packed rows (rows.ROW_DTYPE), identifying."""
        who = self.audit.actor(analyst, "reading trace records")
        rows = self._rows()
        self.audit.add_now(who, "read_trace_table", traces=len(rows))
        return rows

    def _rows(self) -> np.ndarray:
        self.envs.ewrite(lambda txn: trace_rows.compact(txn, self.db["trace_rows"],
                                                       self.db["trace_segments"], self.db["emeta"]))
        with self.envs.eenv.begin(buffers=True) as txn:   # views into the map: one copy in all
            rows = trace_rows.read_all(txn, self.db["trace_rows"], self.db["trace_segments"])
            # a success a call that came in later contests counts no more (evidence.later)
            return later.contest(rows, set(later.noted(self.tracer, txn)))

    def timeline_columns(self, line: int, origin: int, analyst: str) -> dict:
        """The trace rows a timeline between one line and one origin reads (a report
        builds it); audited with the line and origin."""
        who = self.audit.actor(analyst, "reading a timeline")
        columns = trace_rows.columns_of(self._rows())
        self.audit.add_now(who, "read_timeline", line=numbers.format_number(line),
                           origin=numbers.format_number(origin))
        return columns

    def trace_table(self, analyst: str, columns: tuple[str, ...] = trace_rows.FIELDS) -> pa.Table:
        return trace_rows.to_arrow(self.report_rows(analyst), columns)

    def trace_columns(self, analyst: str, columns: tuple[str, ...] = trace_rows.FIELDS) -> dict:
        return trace_rows.columns_of(self.report_rows(analyst), columns)

    def named(self, report: pa.Table, naming: Callable[..., pa.Table]) -> pa.Table:
        """A report with each caller identity written by the text the index keeps for it:
        naming(report, text_of(packed) -> its text or None), reports.analytics.named."""
        db = self.db.get("identities")
        if db is None:          # an older store, before identities were kept
            return report
        with self.envs.read() as txn:
            def text_of(packed: int) -> str | None:
                stored = txn.get(packed.to_bytes(8, "big"), db=db)
                return None if stored is None else bytes(stored).decode()
            return naming(report, text_of)

    def archived_calls(self, line: str, packed: int, origin: int | None, *, analyst: str,
                       origin_text: str | None = None, days: float | None = None,
                       now_us: int | None = None) -> pa.Table:
        """Every archived call to a line (from one origin, in the last days)."""
        who = self.audit.actor(analyst, "reading the call archive")
        root: str | os.PathLike | None = self.envs.archive_dir()
        if not root:
            raise StoreError("this store keeps no call archive (set archive_dir)")
        since = None
        if days is not None:
            since = (now_us or time.time_ns() // 1000) - int(days * 86400 * 1_000_000)
        table = archive.calls(root, packed, origin, since)
        self.audit.add_now(who, "read_archive", line=line, origin=origin_text,
                           calls=table.num_rows)
        return table


def audited(exc: Exception) -> Exception:
    """Mark a refusal as audited where it happened (the façade audits the others)."""
    exc.audited = True  # type: ignore[attr-defined]
    return exc


def _text(value: str) -> bool:
    """Printable text that encodes: what an authority's fields must be."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(unicodedata.category(c) in UNPRINTABLE for c in value)


def _us(when: Any) -> int | None:
    """An archive timestamp (naive UTC) as microseconds."""
    if when is None:
        return None
    import datetime as dt

    return int(when.replace(tzinfo=dt.UTC).timestamp() * 1_000_000)
