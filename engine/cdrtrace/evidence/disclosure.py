"""What the Call Identification Center may read, and under which authority.

Every read of identifying data (callers' numbers, names, addresses) needs an analyst's
identity and is audited; releasing trace records outside the CIC needs a recorded legal
authority (a subpoena, a court order or a law-enforcement request), and a refusal is
audited too.
"""
from __future__ import annotations

import os
import time
import unicodedata
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

from ..errors import AccessError, StoreError
from ..parsing import numbers
from ..store import archive
from ..store.environments import Environments
from . import rows as trace_rows
from .audit import UNPRINTABLE, AuditLog
from .outcomes import Outcome
from .traces import Tracer

AUTHORITY_KINDS = ("subpoena", "court_order", "law_enforcement_request")
AUTHORITY_FIELDS = ("kind", "reference", "agency", "officer", "case_number")


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

    def trace_records(self, key: bytes | None, line: str | None, analyst: str) -> list[dict]:
        """Full trace records (numbers, enrichment) of a line, or all."""
        who = self.audit.actor(analyst, "reading trace records")
        records = self.tracer.records(key)
        self.audit.add_now(who, "read_trace_records", line=line, traces=len(records))
        return records

    def disclose(self, authority: dict, *, analyst: str, trace_ids: Any = None,
                 key: bytes | None = None) -> list[dict]:
        """Successful trace records released under a legal authority (see Store.disclose)."""
        who = self.audit.actor(analyst, "a disclosure", os_role="legal")
        authority = {str(k): (str(v).strip() if v is not None else "") for k, v in
                     (authority or {}).items()}
        missing = [f for f in AUTHORITY_FIELDS if not authority.get(f)]
        unreadable = [k for k, v in authority.items() if not _text(v)]
        problem = None
        if unreadable:
            authority = {k: v if _text(v) else ascii(v) for k, v in authority.items()}
            problem = f"the legal authority's {', '.join(unreadable)} is not readable text"
        elif missing:
            problem = f"the legal authority lacks {', '.join(missing)}"
        elif authority["kind"] not in AUTHORITY_KINDS:
            problem = (f"the legal authority's kind must be one of {', '.join(AUTHORITY_KINDS)}, "
                       f"not {authority['kind']!r}")
        elif not trace_ids and key is None:
            problem = "name the trace ids or the line to disclose"
        if problem:
            self.audit.add_now(who, "disclosure_refused", reason=problem, authority=authority)
            raise audited(AccessError(f"disclosure refused: {problem}"))
        records = self.tracer.records(key)
        if trace_ids:
            wanted = set(trace_ids)
            records = [r for r in records if r["trace_id"] in wanted]
            unknown = wanted - {r["trace_id"] for r in records}
            if unknown:
                self.audit.add_now(who, "disclosure_refused", reason="unknown trace ids",
                                   trace_ids=sorted(unknown), authority=authority)
                raise audited(AccessError(f"disclosure refused: no trace {', '.join(sorted(unknown))}"))
        records = [r for r in records if r["outcome"] == Outcome.SUCCESS.value]
        self.audit.add_now(who, "disclosure", authority=authority,
                           trace_ids=[r["trace_id"] for r in records])
        return records

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
            return trace_rows.read_all(txn, self.db["trace_rows"], self.db["trace_segments"])

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
