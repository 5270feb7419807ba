"""The public API: `Store`, a thin façade over a store directory's parts.

    store = cdrtrace.open("/var/lib/cdrtrace", create=True)
    store.trace("303-555-0110")            # *57: the customer's view, no caller identity
    store.status("303-555-0110")           # their traces and progress per origin
    store.trace_records(analyst="cic-1")   # the CIC's view: identifying, audited

Each part lives in the module named after it (docs/architecture.md): `store.envs`
(store.environments), `store.catalog` (sources, positions, feeds), `store.liveness`
(live feeds), and, private because they read callers' numbers without an audit entry,
`_lookup` (the index's read path), `_tracer` (evidence.traces), `_audit`,
`_disclosure` and `_casebook`. Callers' numbers leave the public API only through
audited calls.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

from .errors import CaseError, CdrTraceError, NumberError, TraceError
from .evidence import activations, directory, later, retention, traces
from .evidence import rows as trace_rows
from .evidence.audit import UNPRINTABLE, AuditLog, actor
from .evidence.cases import Cases
from .evidence.disclosure import Disclosure
from .evidence.outcomes import CustomerStatus, TraceResult, customer_status, traced_for
from .evidence.requests import Requests
from .evidence.tokens import Tokens
from .evidence.traces import Tracer
from .parsing import numbers, timezones
from .parsing.parsers import normalizer
from .store import index, lookup, shards
from .store.catalog import NO_FEED, Catalog
from .store.environments import Environments
from .store.liveness import Liveness
from .store.lookup import Lookup

MAX_WAIT = 3600.0          # seconds a trace may wait for a live feed (the API: 10)
F = TypeVar("F", bound=Callable[..., Any])


def _refusals_audited(action: str) -> Callable[[F], F]:
    """An identifying request that is refused or fails (a bad line, origin, case,
    authority or identity) leaves an audit entry `<action>_refused` saying why, unless
    the refusal was audited where it happened."""
    def wrap(method: F) -> F:
        @functools.wraps(method)
        def audited(self: Store, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except CdrTraceError as exc:
                if not getattr(exc, "audited", False):
                    who = kwargs.get("analyst", kwargs.get("operator", kwargs.get("by")))
                    self._audit.add_now(printable(who), f"{action}_refused", reason=str(exc),
                                        request=[printable(a) for a in args])
                raise
        return cast(F, audited)
    return wrap


def _own_config(store: Path) -> Any:
    """The store's own cdrtrace.toml (or None): who may act, and the carrier's contacts.
    A configuration a user names (--config, $CDRTRACE_CONFIG) adds feeds and dialects,
    never a role."""
    from . import config

    path = store / "cdrtrace.toml"
    return config.load(path) if path.is_file() else None


def printable(value: Any) -> str:
    """A requested value as the audit log records it: itself, or its repr when it holds
    characters that do not print (or do not encode)."""
    text = "(none)" if value is None or not str(value).strip() else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return ascii(text)
    return ascii(text) if any(unicodedata.category(c) in UNPRINTABLE for c in text) else text


def open(path: str | os.PathLike, create: bool = False, readonly_index: bool = False,  # noqa: A001
         **settings: Any) -> Store:
    """Open the store at path (a directory); create it if asked. settings apply at creation.
    readonly_index: for processes that only trace and read (they never wait for ingest);
    such a store cannot ingest."""
    return Store(path, create=create, readonly_index=readonly_index, **settings)


def _check_trace_inputs(at: Any, wait: Any) -> None:
    """TraceError for an activation time that is neither text nor microseconds (a bool,
    a float), or a wait that is not seconds from 0 to MAX_WAIT (NaN, a bool, text)."""
    if at is not None and (isinstance(at, bool) or not isinstance(at, (str, int))):
        raise TraceError(f"an activation time is ISO-8601 text or microseconds since 1970 "
                         f"(not {at!r})")
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_WAIT:
        raise TraceError(f"wait is seconds, from 0 to {MAX_WAIT:g} (not {wait!r})")


_FOLLOW_UP = ("name", "follow_up_phone", "follow_up_hours")   # the carrier's, for the customer
_Activation = tuple[int, int, int | None]    # a trace's line, time and feed (Store._activation)


class Store:
    """A cdrtrace store. Safe to share between threads of one process."""

    def __init__(self, path: str | os.PathLike, create: bool = False,
                 readonly_index: bool = False, **settings: Any):
        self.envs = Environments(path, create, readonly_index, settings)
        self.path: Path = self.envs.path
        self.config: dict[str, Any] = self.envs.config
        self.catalog = Catalog(self.envs)
        self.liveness = Liveness(self.envs)
        self._lookup = Lookup(self.envs)
        # A line's index entries (newest first; in the caller's read transaction if given):
        # the trace path's unaudited lookup, private (callers only through audited calls).
        self._last_calls_raw: Callable[..., np.ndarray] = self._lookup.last_calls
        self._normalize = normalizer(self.config["country_code"])   # a line as typed -> packed
        self._tracer = Tracer(self.envs, self.catalog, self._lookup, self.liveness)
        own = _own_config(self.path)
        self.carrier: dict[str, Any] = (own.carrier if own is not None else None) or {}
        self.shard = own.shard if own is not None else None     # the lines this store holds
        self._tracer.replica = shards.residue(self.shard)    # trace numbers among replicas
        # traced lines and each one's latest activation: ingest checks calls before it (later.py)
        self.traced_lines: Callable[[], tuple] = self._tracer.traced.get
        self._audit = AuditLog(self.envs, own.roles if own is not None else None)
        self._requests = Requests(self.envs, self._audit)
        self._disclosure = Disclosure(self.envs, self._tracer, self._audit)
        self._casebook = Cases(self.envs, self._tracer, self._audit, self.line)
        self.tokens = Tokens(self.envs, self._audit)        # the trace service's callers

    def close(self) -> None:
        self.envs.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line(self, text: str) -> int:
        """A line as its packed number; NumberError if it is not a telephone line."""
        try:
            packed = self._normalize(numbers.typed(str(text)))
        except (UnicodeError, ValueError):     # not text a number is written in
            packed = 0
        if packed == 0:
            raise NumberError(f"not a telephone line: {text!r}")
        return packed

    def _key(self, line: str) -> bytes:
        return index.line_key(self.line(line))

    # ------------------------------------------------------------ the customer's side

    def trace(self, line: str, at: str | int | None = None, wait: float = 0.0,
              by: str | None = None, feed: str | None = None) -> TraceResult:
        """*57: trace the last received call to line before `at` (default now).

        A trace record is committed durably before this returns, whatever the outcome.
        While a live feed that may carry the line's calls has not caught up with `at`,
        this waits up to `wait` seconds for it; if it is still behind, the trace is
        recorded as pending and resolves by the normal rules once the feed passes `at`
        (resolve_pending: run by the live ingest, batch ingest and every trace).
        feed: the switch's, whose calls alone an extension is traced among (_activation)."""
        return self._worded(self._tracer.trace(*self._activation(line, at, wait, feed), wait, by, at is None))

    async def trace_async(self, line: str, at: str | int | None = None, wait: float = 0.0,
                          by: str | None = None, feed: str | None = None) -> TraceResult:
        """trace() for an event loop: concurrent traces share commits, no thread each."""
        return self._worded(await self._tracer.trace_async(*self._activation(line, at, wait, feed),
                                                           wait, by, at is None))

    def _activation(self, line: str, at: str | int | None, wait: float = 0.0, feed: str | None = None) -> _Activation:
        """(line packed, activation time, Catalog.named_feed), of a line this shard traces now."""
        _check_trace_inputs(at, wait)
        packed = self.line(line)
        at_us = traces.activation_us(at, self.config["zone"], self.config["activation_window_days"])
        if self.shard is not None:
            shards.check(self.shard, self.liveness, packed)
        return packed, at_us, self.catalog.named_feed(feed)

    def _worded(self, result: TraceResult) -> TraceResult:
        """The carrier's own wording of the announcement, if it set one."""
        text = self.carrier.get("announcements", {}).get(result.announcement_id)
        return dataclasses.replace(result, text=text) if text else result

    def status(self, line: str, feed: str | None = None) -> CustomerStatus:
        """The customer's view: their traces and progress per pseudonymous origin. A read:
        it writes nothing (a pending trace shows as pending until the write side resolves it)."""
        packed = self.line(line)
        key, line_text = index.line_key(packed), numbers.format_number(packed)
        records = _customer_records(self, packed, key, mine := self.catalog.named_feed(feed))
        waived, requests = _customer_requests(self, packed, line_text, mine)
        follow_up = {k: v for k, v in self.carrier.items() if k in _FOLLOW_UP} or None
        return customer_status(line_text, records, self.config["threshold"],
                               self._tracer.labels(key, records), waived, requests, follow_up)

    @_refusals_audited("action_request")
    def request_action(self, line: str, origin: str, *, by: str = "customer", feed: str | None = None) -> dict:
        """The customer asks the carrier to act against one origin ('Caller A'): refused
        before the threshold unless the CIC waived it; queued for the CIC. by: who took
        the request (a care agent, the self-care channel). Never holds the caller."""
        line_text = numbers.format_number(packed := self.line(line))
        status = self.status(line, feed)
        mine = next((p for p in status.progress if p.label.lower() == str(origin).strip().lower()),
                    None)
        if mine is None:
            labels = ", ".join(p.label for p in status.progress) or "none"
            raise CaseError(f"line {line_text} has no traced origin {origin!r} (its origins: {labels})")
        if not mine.eligible_for_action:
            raise CaseError(f"{mine.label} has {mine.traced_calls} of {mine.threshold} traced "
                            f"calls: action can be requested after {mine.threshold}, or sooner "
                            "if the carrier waives it for threatening calls")
        number = self._casebook.origin(packed, mine.label, None)
        request = self._requests.add(line_text, number, mine.label, actor(by, "a request", "care"),
                                     _customer_feed(self, packed, feed))
        return {k: request[k] for k in ("request_id", "line", "label", "state")} | {
            "requested_at": timezones.format_utc(request["requested_us"])}

    @_refusals_audited("read_request_queue")
    def request_queue(self, *, analyst: str) -> list[dict]:
        """The requests waiting for the CIC, with their origins (identifying: audited)."""
        who = self._audit.actor(analyst, "reading the request queue")
        queued = [r for r in self._requests.all() if r["state"] == "queued"]
        self._audit.add_now(who, "read_request_queue", requests=len(queued))
        return queued

    @_refusals_audited("request_close")
    def close_request(self, request_id: str, reason: str, *, analyst: str) -> dict:
        """Close a queued request without a case, saying why (the customer sees it)."""
        who = self._audit.actor(analyst, "closing a request")
        return self._requests.settle(request_id, who=who, reason=reason)

    def resolve_pending(self) -> list[TraceResult]:
        """Resolve the pending traces whose live feeds have passed them, by the rules."""
        return self._tracer.resolve_pending()

    def run_activations(self) -> list[TraceResult]:
        """Trace the *57s the switches recorded in ingested CDRs, each once."""
        return activations.run(self._tracer)

    def note_later_calls(self) -> int:
        """Note each success a call ingested after it contradicts (evidence.later)."""
        return later.run(self._tracer)

    # ------------------------------------------------------------ operations

    def stats(self, now_us: int | None = None) -> dict:
        """Per feed: records, records/s, rejects, watermark and lag; the index's size."""
        now_us = now_us or time.time_ns() // 1000
        with self.envs.read() as txn:
            live, local = self.liveness.attached(txn, now_us), self._lookup.local_feeds(txn)
            feeds = self.catalog.feed_stats(txn, live, now_us, local)
        return {"feeds": feeds, "index": self._lookup.stat()}

    def live_feeds(self, now_us: int | None = None) -> dict[int, dict]:
        return self.liveness.live_feeds(None, now_us)    # the live feeds, their watermarks

    def detach_feed(self, name: str, *, operator: str) -> int:
        """Liveness.retire a stalled feed; the traces it held resolve (how many); audited."""
        who = self._audit.actor(operator, "detaching a feed", "operator")
        self.liveness.retire(0 if name == NO_FEED else self.catalog.known_feed_id(name), name)
        self._audit.add_now(who, "feed_detached", feed=name)
        return len(self.resolve_pending())

    @_refusals_audited("purge")
    def purge(self, *, operator: str, older_than_days: float | None = None,
              now_us: int | None = None) -> dict:
        """Remove trace records activated before the retention period (the store's
        retention_days unless given), with their per-line entries, and archived calls past
        the archive's retention; audited."""
        return retention.purge(self.envs, self._audit, operator=operator,
                               older_than_days=older_than_days, now_us=now_us)

    # ------------------------------------------------------------ the Call Identification Center

    @_refusals_audited("directory_import")
    def import_directory(self, path: str | os.PathLike, operator: str) -> int:
        """Replace the subscriber directory with a CSV or Parquet file; returns its rows."""
        return directory.import_file(self.envs, self._audit, path, operator)

    @_refusals_audited("read_last_calls")
    def last_calls(self, line: str, analyst: str) -> list[dict]:
        """The analyst's view of a line's last calls, with numbers; audited."""
        return self._disclosure.last_calls(self._key(line), analyst)

    @_refusals_audited("read_trace_records")
    def trace_records(self, line: str | None = None, *, analyst: str, after: str | None = None,
                      limit: int | None = None) -> list[dict]:
        """Full trace records (numbers, enrichment), audited under the analyst's identity;
        a page: those after the trace id `after`, at most `limit` (None: all)."""
        key = self._key(line) if line is not None else None
        return self._disclosure.trace_records(key, line, analyst, after, limit)

    @_refusals_audited("disclosure")
    def disclose(self, authority: dict, *, analyst: str, trace_ids: Any = None,
                 line: str | None = None) -> list[dict]:
        """Release trace records (numbers, enrichment) under a recorded legal authority.

        authority: kind (subpoena, court_order, law_enforcement_request), reference,
        agency, officer, case_number. Anything missing: refused, and the refusal audited."""
        key = self._key(line) if line is not None else None
        return self._disclosure.disclose(authority, analyst=analyst, trace_ids=trace_ids, key=key)

    @_refusals_audited("read_archive")
    def archived_calls(self, line: str, *, analyst: str, origin: str | None = None,
                       days: float | None = None, now_us: int | None = None) -> pa.Table:
        """Every archived call to a line (from one origin, in the last days), oldest first:
        the caller as text, presentation and disposition by name; audited."""
        from .reports import analytics

        return self.named(analytics.calls(self._disclosure.archived_calls(
            line, self.line(line), self.line(origin) if origin else None, analyst=analyst,
            origin_text=origin, days=days, now_us=now_us)))

    @_refusals_audited("read_trace_table")
    def report_rows(self, *, analyst: str) -> np.ndarray:
        """Every trace as packed rows (evidence.rows.ROW_DTYPE), identifying: audited."""
        return self._disclosure.report_rows(analyst)

    def trace_table(self, *, analyst: str, columns: tuple[str, ...] = trace_rows.FIELDS) -> pa.Table:
        """Every trace as an Arrow table of packed numbers, of the columns a report reads (identifying: audited)."""
        return self._disclosure.trace_table(analyst, columns)

    def trace_columns(self, *, analyst: str, columns: tuple[str, ...] = trace_rows.FIELDS) -> dict:
        """The same as numpy views over one copy of the rows: what reports hand DuckDB."""
        return self._disclosure.trace_columns(analyst, columns)

    def named(self, report: pa.Table) -> pa.Table:
        """A report (cdrtrace.reports.analytics) with each SIP identity caller by its text."""
        from .reports import analytics

        return self._disclosure.named(report, analytics.named)

    @_refusals_audited("read_timeline")
    def timeline(self, line: str, origin: str, *, analyst: str) -> pa.Table:
        """Every trace (and archived call) between a line and an origin, in time order; audited (line, origin)."""
        from .reports import analytics

        packed, from_packed = self.line(line), self.line(origin)
        columns = self._disclosure.timeline_columns(packed, from_packed, analyst)
        return analytics.timeline(columns, packed, from_packed, self.envs.archive_dir())

    @_refusals_audited("case_open")
    def open_case(self, line: str, origin: str, *, agency: str, officer: str, case_number: str,
                  analyst: str, waive_reason: str | None = None,
                  request_id: str | None = None, feed: str | None = None) -> dict:
        """Open a case for a line and an origin (its label, 'Caller A', or its number);
        waive_reason lets the customer request action before the threshold. feed: the
        switch's, whose customer an extension's case is for (else its request's)."""
        packed = self.line(line)
        given = None if str(origin).strip().lower().startswith("caller ") else self.line(origin)
        settling = (None if request_id is None    # the customer's request becomes this case
                    else functools.partial(self._requests.settle_in, rid=request_id))
        return self._casebook.open(packed, origin, given, agency=agency, officer=officer,
                                   case_number=case_number, analyst=analyst, waive_reason=waive_reason,
                                   settling=settling, feed=_case_feed(self, packed, feed, request_id))

    @_refusals_audited("case_report")
    def case_report(self, case_id: str, *, analyst: str, generated: str | None = None) -> bytes:
        """The case report for law enforcement (PDF), for a case whose case number a
        recorded disclosure authority names; identifying, audited. Same case, same bytes
        (apart from `generated`, the time printed on it)."""
        from .documents.case_report import case_report

        who = self._audit.actor(analyst, "a case report")
        case, releases, covering = self._casebook.released(case_id)
        records = self._casebook.traced_calls(case)
        calls = self._casebook.archived_calls(case, records, self._disclosure.case_calls)
        page = case_report(case, releases[-1]["details"]["authority"], releases[-1], records, calls, covering,
                           self.carrier, self.config["zone"], generated or timezones.format_utc(time.time_ns() // 1000),
                           self.config["threshold"])
        self._audit.add_now(who, "case_report", case_id=case_id, traces=len(records))
        return page.pdf_bytes()

    @_refusals_audited("case_list")
    def cases(self, *, analyst: str) -> list[dict]:
        """Every case; audited."""
        return self._casebook.listed(analyst)

    @_refusals_audited("case_read")
    def case(self, case_id: str, *, analyst: str) -> dict:
        """A case and its timeline: every trace between its line and origin, in order;
        with the carrier's Law Enforcement Support contact, when configured."""
        case = self._casebook.read(case_id, analyst)
        if self.carrier.get("law_enforcement_phone"):
            case["law_enforcement_support"] = self.carrier["law_enforcement_phone"]
        return case

    def audit_verify(self, checkpoints: list[dict] | None = None) -> int:
        """Check the audit chain under the store's key and, given checkpoints, that the
        log still extends each; the number of entries, or AuditError saying where."""
        return self._audit.verify(checkpoints)

    def audit_checkpoint(self) -> dict:
        """The audit log's head, MAC'd, to keep outside the store (audit_verify checks it)."""
        return self._audit.checkpoint()

    @_refusals_audited("audit_export")
    def audit_export(self, *, operator: str, after: int = 0, limit: int | None = None) -> list[dict]:
        """Every audit entry (or those after entry `after`, at most `limit`); audited."""
        return self._audit.export(operator, after, limit)


__all__ = ["Store", "open"]


def _customer_records(store: Store, packed: int, key: bytes, feed: int | None) -> list[dict]:
    """A line's trace records as its customer reads them (Store.status; feed: the one
    named, Catalog.named_feed). Of a line its switch numbers itself (an extension) that
    two feeds' switches may both have, only the named feed's customer's
    (outcomes.traced_for): the other switch's customer's traces and progress are not
    theirs to see, nor to count toward action. Without a feed named, such a line is
    refused; an E.164 line's are all its customer's."""
    records = store._tracer.records(key)
    if not lookup.local_line(packed):
        return records
    if feed is None:
        _customer_feed(store, packed, None)      # refused where the line is shared
        return records
    return [r for r in records if traced_for(r) == feed]


def _customer_feed(store: Store, packed: int, feed: str | None) -> int | None:
    """The feed whose switch's customer a request for action or a case is for: none for an
    E.164 line; for a line its switch numbers itself, the feed named, else the one feed
    that has indexed such lines. Where two or more have, the records cannot tell whose
    customer it is: refused, with the feeds named."""
    if not lookup.local_line(packed):
        return None
    number = store.catalog.named_feed(feed)
    if number is not None:
        return number
    with store.envs.read() as txn:
        feeds = store._lookup.local_feeds(txn)
        known = store.catalog.feed_names(txn) if len(feeds) > 1 else {}
    if len(feeds) > 1:
        raise TraceError(f"line {numbers.format_number(packed)} is an extension the switches of "
                         f"feeds {', '.join(known.get(f, str(f)) for f in feeds)} number "
                         "alike: name the customer's feed")
    return feeds[0] if feeds else None


def _case_feed(store: Store, packed: int, feed: str | None, request_id: str | None) -> int | None:
    """The feed whose customer a case is for (_customer_feed): the one named, else that of
    the customer's request it answers."""
    if feed is None and request_id is not None and lookup.local_line(packed):
        return store._requests.feed_of(request_id)
    return _customer_feed(store, packed, feed)


def _customer_requests(store: Store, packed: int, line_text: str,
                       feed: int | None) -> tuple[set[str], dict[str, dict]]:
    """The origins the CIC waived the threshold for, and the latest request for action
    against each origin, of the customer whose status names feed (Catalog.named_feed): on
    a line its switch numbers itself, those made for that feed (or before requests and
    cases were kept by feed); on an E.164 line, or with no feed named, all the line's."""
    def mine(items: list[dict]) -> list[dict]:
        if feed is None or not lookup.local_line(packed):
            return items
        return [i for i in items if i.get("feed", feed) == feed]
    waived = {c["origin"] for c in mine(store._casebook.of_line(line_text)) if c["waiver"]}
    return waived, {r["origin"]: r for r in mine(store._requests.of_line(line_text))}


def shared_commits(store: Store) -> tuple[int, int]:
    """(traces, commits): what a store's shared evidence commits have carried since it was
    opened (their ratio is what a trace's latency waits on)."""
    group = store._tracer.group
    return group.carried, group.commits


def trace_then(store: Store, line: str, at: str | int | None,
               then: Callable[[TraceResult | None, BaseException | None], None],
               by: str | None = None, feed: str | None = None) -> None:
    """store.trace() with no wait, for a listener that answers from the shared commit's
    thread: then(result, None), or then(None, error) for a rule's error
    (evidence.traces.trace_then). What is wrong with the request itself (not a line, a bad time,
    another shard's line) is raised here."""
    traces.trace_then(store._tracer, *store._activation(line, at, feed=feed), by,
                      lambda result, error: then(None if result is None else store._worded(result),
                                                 error), at is None)
