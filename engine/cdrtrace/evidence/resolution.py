"""Which call a trace names: the rules (docs/trace-rules.md) on one line's index entries,
and a call as the CIC reads it. Tracer.record writes what these decide; the common case
is also made in C (ext/_trace.pyx), tested against this."""
from __future__ import annotations

import time
from typing import Any

from ..errors import TraceError
from ..parsing import numbers, timezones
from ..parsing.formats import Disposition, Presentation
from ..store import folds, index, lookup
from ..store.catalog import Catalog
from ..store.lookup import Lookup
from . import marks
from .outcomes import Outcome, outcome_for

_FIELDS: tuple[str, ...] = index.ENTRY_DTYPE.names or ()   # an entry's fields, as tolist() gives them
_START, _OFFSET, _SOURCE, _FEED = (_FIELDS.index(f) for f in ("start_us", "offset", "source",
                                                              "feed"))
# an entry's presentation and disposition as a call's view names them
PRESENTATIONS = {int(p): p.name.lower() for p in Presentation}
DISPOSITIONS = {int(d): d.name.lower() for d in Disposition}


def call_view(lookup: Lookup, catalog: Catalog, index_txn: Any, e: Any) -> dict:
    """An index entry as the CIC reads it (identifying)."""
    flags = int(e["flags"])
    presentation, disposition = int(e["presentation"]), flags >> 4
    return {
        "start": timezones.format_utc(int(e["start_us"])),
        "start_us": int(e["start_us"]),
        "calling": lookup.caller_text(index_txn, int(e["calling"])),
        "presentation": PRESENTATIONS.get(presentation) or Presentation(presentation).name.lower(),
        "answered": bool(flags & index.ANSWERED),
        "forwarded": bool(flags & index.FORWARDED),
        "indexed_as": index.ROLE_NAMES[(flags >> 2) & 3],
        "disposition": DISPOSITIONS.get(disposition) or Disposition(disposition).name.lower(),
        "call_id": f"{int(e['call_id']):016x}",
        "feed": int(e["feed"]),
        "source": catalog.source_name(index_txn, int(e["source"])),
        "offset": int(e["offset"]),
    }


def resolve(tracer: Any, txn: Any, index_txn: Any, key: bytes, at_us: int,
            own: tuple[int, int] | None = None, current: bool = False,
            feed: int | None = None, activation_folds: Any = None) -> tuple:
    """The rules on one line's entries: (outcome, the call's view, its entry, the trace
    that already named this call). own: (offset, source) of the record that recorded
    the activation, where the switch recorded it in the call's own record. current: a
    trace activated on the service's clock (no time given) and made at once (not a
    pending one resolved later), whose line's calls were all recorded before it. feed:
    the feed whose switch the *57 was dialled on, named by the trace (or the feed whose
    record recorded it): a line of a switch's own (an extension) is resolved among that
    feed's calls alone; an E.164 line among every feed's. activation_folds: for an
    activation a switch recorded, the repeated hours of the zone it wrote its time in
    (store.folds' rows; empty for an instant; None: every zone the store noted)."""
    keep = tracer.config["keep"]
    # the line's few entries as plain values (numpy costs more per field than it saves)
    entries = tracer.lookup.last_calls(key, index_txn).tolist()
    held = len(entries)
    oldest = entries[-1][_START] if entries else None     # the oldest call the index holds
    if feed is not None and lookup.local_line(int.from_bytes(key, "big")):
        entries, shared = lookup.of_feed(entries, feed), None
    else:
        shared = tracer.lookup.shared_local(index_txn, key)
    if entries and entries[0][_START] > time.time_ns() // 1000 + lookup.STAMPED_AHEAD_US:
        # the newest call has not begun yet: the line's times cannot be trusted
        e = dict(zip(_FIELDS, entries[0], strict=True))
        view = tracer.call_view(index_txn, e)
        view["stamped_ahead"] = True
        return Outcome.UNTRACEABLE, view, e, None
    before = [r for r in entries if r[_START] < at_us]    # started before the activation
    if current and len(before) < len(entries):
        # recorded, so begun, before the trace, yet stamped after its activation: the
        # switch's clock runs ahead, and this may be the call before the *57
        e = dict(zip(_FIELDS, entries[len(entries) - len(before) - 1], strict=True))
        view = tracer.call_view(index_txn, e)
        view["stamped_after_activation"] = True
        return Outcome.UNTRACEABLE, view, e, None
    # a malicious call id: the call flagged; else, of one caller's records of an instant, the
    # one that says most surely the call rang the line
    before = lookup.up_to_own_call(lookup.surest_first(before), own)
    if own is not None and not (before and (before[0][_OFFSET], before[0][_SOURCE]) == own) and (
            moved := folds.begun_before_a_later_reading(
                tracer.lookup.folds(index_txn) if activation_folds is None else activation_folds,
                [r[_START] for r in entries], at_us)):
        # a *57 its switch recorded at a local time of the hour daylight saving's end
        # repeats: an hour later, a call begun after its earlier reading came before it
        # (the newest of them would then be the last: its record names it)
        e = dict(zip(_FIELDS, entries[moved[0]], strict=True))
        view = tracer.call_view(index_txn, e)
        view["activation_folded"] = [tracer.call_view(index_txn, dict(zip(
            _FIELDS, entries[i], strict=True))) for i in moved]
        return Outcome.UNTRACEABLE, view, e, None
    if not before:
        if held >= keep:
            raise TraceError(
                f"the index holds the last {keep} calls of "
                f"{numbers.format_number(int.from_bytes(key, 'big'))}"
                + (f" (of every feed; none before the activation is feed {feed}'s)"
                   if len(entries) < held else "")
                + f" and all began after {timezones.format_utc(at_us)}; older calls are "
                "no longer held")
        return Outcome.NO_CALL, None, None, None
    e = dict(zip(_FIELDS, before[0], strict=True))
    outcome = outcome_for(e)
    view = tracer.call_view(index_txn, e)
    if (damage := tracer.lookup.damaged(index_txn, e)) is not None:
        # its file's compressed data was found damaged past it, after it was indexed: the
        # bytes it was read from may be damaged too (a digit of its caller's number)
        view["source_damaged"] = damage
        return Outcome.UNTRACEABLE, view, e, None
    if shared is not None:
        # an extension that two switches may each have: the records cannot tell whose line
        # dialled *57, and the last call to another's would be named
        view["line_shared"] = tracer.catalog.names_of(index_txn, shared)
        return Outcome.UNTRACEABLE, view, e, None
    if lookup.local_line(int.from_bytes(key, "big")) and lookup.tenants_shared(
            index_txn, tracer.lookup.db["meta"], e["feed"]):
        # a switch that hosts several customers' PBXs in the feed: whose extension dialled
        # *57 the records cannot tell, even where the trace names the feed
        view["tenants_shared"] = tracer.catalog.names_of(index_txn, [e["feed"]])[0]
        return Outcome.UNTRACEABLE, view, e, None
    if int(e["calling"]) == int.from_bytes(key, "big"):
        # the record names the line itself as the caller: the line's own phone's record (the
        # channel Asterisk writes for a phone that transferred a call), or a caller who sent
        # the line's own number: it names no one else
        view["caller_is_line"] = True
        return Outcome.UNTRACEABLE, view, e, None
    # the call whose own record the switch recorded the activation in: named by the switch
    flagged = own is not None and (e["offset"], e["source"]) == own
    tied = [] if flagged else [dict(zip(_FIELDS, r, strict=True)) for r in before[1:]
                               if r[_START] == e["start_us"]]
    if any(t["calling"] != e["calling"] for t in tied):
        # calls from different callers began at the same instant (whole-second CDR
        # times): the records cannot tell which was the last, so none is named
        view["tied_with"] = [tracer.call_view(index_txn, t) for t in tied]
        return Outcome.UNTRACEABLE, view, e, None
    if not flagged and (close := lookup.within_its_second(before)):
        # another caller's call written in whole seconds, in the second before this one's
        # finer time: it may have begun after it, and the records cannot tell the last
        view["within_a_second"] = [tracer.call_view(index_txn, dict(zip(_FIELDS, r, strict=True)))
                                   for r in close]
        return Outcome.UNTRACEABLE, view, e, None
    if not flagged and held >= index.LINE_ROOM and oldest == e["start_us"]:
        # past `keep`, the index holds every call of the keep-th's instant up to a line's
        # room, and this line's calls fill it: a call of the instant it let go (another
        # caller's) may have been the last
        view["tie_not_held"] = held
        return Outcome.UNTRACEABLE, view, e, None
    if not flagged and (moved := folds.may_be_later(
            folds.shifts(index_txn, tracer.lookup.db["meta"],
                         [(r[_FEED], r[_START]) for r in before]),
            [r[_START] for r in before], at_us)):
        # a local time in the hour daylight saving's end repeats: an hour later, the
        # last call before the activation would be another (not where the switch named
        # the call: its record's own times move together)
        view["folded"] = [tracer.call_view(index_txn, dict(zip(_FIELDS, before[i], strict=True)))
                          for i in moved]
        return Outcome.UNTRACEABLE, view, e, None
    if (unlogged := tracer.lookup.unlogged_after(index_txn, e)) is not None:
        view[unlogged[0]] = unlogged[1]     # a later call may be missing (CUCM, FreeSWITCH)
        return Outcome.UNTRACEABLE, view, e, None
    if not flagged and (
            hunt := tracer.lookup.hunt_after(index_txn, key, {r[_FEED] for r in entries}, e,
                                             at_us)) is not None:
        view["hunt_unnamed"] = hunt     # a later call through a hunt pilot may have rung it
        return Outcome.UNTRACEABLE, view, e, None
    original = None
    if outcome is Outcome.SUCCESS:
        # the call's other records of that instant (the caller's, each an id of its own):
        # a trace that named one of them, before the record that was answered came in,
        # named this call
        for r in [e, *tied]:
            original = marks.traced_as(txn, tracer.db, key, r["call_id"], r["start_us"])
            if original is not None:
                outcome = Outcome.ALREADY_TRACED
                break
        # the call's record in another switch's feed (a call through two switches): a
        # trace that named it, before this feed's record came in, named this call
        twins = [] if original is not None else lookup.same_call_elsewhere(entries, before[0])
        for t in (dict(zip(_FIELDS, twin, strict=True)) for twin in twins):
            original = marks.traced_as(txn, tracer.db, key, t["call_id"], t["start_us"])
            if original is not None:
                outcome = Outcome.ALREADY_TRACED
                view["recorded_by_another_feed"] = tracer.call_view(index_txn, t)
                break
    return outcome, view, e, original
