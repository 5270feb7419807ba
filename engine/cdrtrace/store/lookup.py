"""The index's read path: a line's last calls, callers' identities and the unreadable-record
log, all from one read snapshot of the index environment (never blocked by ingest)."""
from __future__ import annotations

import json
from typing import Any

import lmdb
import numpy as np

from ..parsing import numbers, salvage, timezones
from ..parsing.formats import UNLOGGED_CLEARED, UNLOGGED_LEGS, Disposition
from . import feedlists, folds, hunts, index
from .environments import Environments

UNREADABLE_WINDOW_US = 3600 * 1_000_000   # unreadable records noted from this long before a traced call
# A call stamped this long after now cannot have begun yet: its feed's time zone (--tz) or
# its switch's clock is wrong, and so may be every time it gave (docs/trace-rules.md,
# "Imperfect data"): a trace of its line is untraceable, `stats` says so of its feed
STAMPED_AHEAD_US = 300 * 1_000_000
# a feed whose switch may leave a call that rang a line unlogged (Format.
# unconnected_shown_by: CUCM, Kamailio's transaction rows, FreeSWITCH's A legs alone)
# names no call that began before it showed a record that proves it logs them: in the
# index's meta, per feed (UNCONNECTED + 2 bytes, then LEGS for FreeSWITCH's kind), the
# earliest start of such a record as int64 little-endian, or NEVER while it has shown
# none; and each source of such a format (UNCONNECTED_SOURCE + 4 bytes -> the suffix of
# its feed's mark), so that the calls of other formats ingested under the same feed (the
# unnamed feed 0) are not held to it
UNCONNECTED, UNCONNECTED_SOURCE, NEVER = b"unconnected/", b"unconnected-source/", 2**63 - 1
# a source whose compressed data was found damaged once some of it was committed (gzip
# checks its checksum at its end: what it gave before may be damaged unseen): in the
# index's meta, DAMAGED_SOURCE + 4 bytes -> what was found, as text
DAMAGED_SOURCE = b"damaged-source/"
LEGS = b"/legs"
# what a held call's view names its reason by, by its mark's suffix
UNLOGGED_VIEW = {b"": "unconnected_unlogged", LEGS: "legs_unlogged"}
# the feeds that have indexed a call to a line that is not an E.164 number (an extension,
# other digits, a SIP user: a switch's own, which another switch may have too), in the
# index's meta: their ids, 2 bytes each, ascending (note_local_feed, shared_local)
LOCAL_FEEDS = b"local_feeds"
# the tenants a feed's records name for such lines (a BroadWorks group, a FreeSWITCH
# domain's context: CdrParser.take_tenants), in the index's meta, TENANTS + the feed (2
# bytes, big-endian): the two least distinct (hashed), uint64 little-endian, ascending.
# Two show a switch that hosts several customers' PBXs in one feed (tenants_shared)
TENANTS = b"tenants/"
TENANT_NAMES = b"tenant_names/"    # + the feed: their names, JSON {hex tenant: name}
_frombuffer = np.frombuffer
_read_value, _NativeError = index._index.read_value, index._index.NativeLmdbError
_ENTRY, _EMPTY = index.ENTRY_DTYPE, index.EMPTY


def unconnected_proof(columns: dict, kind: str) -> int | None:
    """The earliest start among parsed records that show their switch logs what it may
    leave unlogged (Format.unconnected_shown_by's kind); None if there is none.
    UNLOGGED_CLEARED (CUCM): a call its caller cleared before it connected (origCause 16,
    destCause 0, never connected: `cancelled`), written only with the 'CDR Log Calls with
    Zero Duration Flag' on, the flag that also has it log the calls that rang unanswered
    (CUCM writes busy and failed calls regardless). UNLOGGED_FAILED (Kamailio's
    transaction rows): any failed call, never answered; a call: an INVITE's row (another
    method's, a BYE's that failed, has no called line: it shows that transaction's flag,
    not the INVITEs'). UNLOGGED_LEGS (FreeSWITCH): two legs of one call (legs_proof)."""
    if kind == UNLOGGED_LEGS:
        return legs_proof(columns)
    disposition = columns["disposition"]
    shown = (disposition == Disposition.CANCELLED if kind == UNLOGGED_CLEARED
             else (disposition != Disposition.ANSWERED) & (columns["called"] != 0))
    return int(columns["start_us"][shown].min()) if shown.any() else None


_LEG_FIELDS = ("called", "start_us", "answer_us", "end_us", "disposition")


def legs_proof(columns: dict) -> int | None:
    """The earliest start among records of a call that show two different legs of it: a
    FreeSWITCH feed that writes its B legs (`legs` = `ab`), whose A leg's `bleg_uuid` is
    the B leg's `uuid` (one call id), and which differ in the number dialled (a DID and
    the phone it rang), a time or the end. Two records alike in all of them (a record
    written twice, a message delivered twice) show nothing. A feed of A legs alone
    (FreeSWITCH's shipped `legs` = `a`) never shows one: each call is one record."""
    ids = columns["call_id"]
    if len(ids) < 2:
        return None
    alike = np.sort(ids)                 # (a feed of A legs has no id twice: only this sort)
    if not (alike[1:] == alike[:-1]).any():
        return None
    order = np.argsort(ids)
    ids = ids[order]
    pair = ids[1:] == ids[:-1]
    differs = np.zeros(len(pair), bool)
    for name in _LEG_FIELDS:
        values = columns[name][order]
        differs |= values[1:] != values[:-1]
    shown = pair & differs
    if not shown.any():
        return None
    start = columns["start_us"][order]
    return int(min(start[:-1][shown].min(), start[1:][shown].min()))


LEGS_SEAM = 64      # the records each side of a read's end that legs_across compares


def begins_before(start_us: int, columns: dict, tail: dict | None) -> bool:
    """Whether a read (columns), or the tail legs_across kept before it, holds a call
    begun before start_us."""
    return any(len(c["start_us"]) and int(c["start_us"].min()) < start_us
               for c in (columns, tail) if c is not None)


def legs_across(tail: dict | None, columns: dict) -> tuple[int | None, dict]:
    """legs_proof across the end of a read: FreeSWITCH writes a call's legs one after the
    other, and a read (a chunk of a file, what a followed file had grown by) may end
    between them. tail: the last records read before columns (as this returned it; None
    before the first read). Returns (the proof of the seam, or None; the tail for the
    next read)."""
    keys = ("call_id", *_LEG_FIELDS)
    shown = None
    if tail is not None and len(columns["call_id"]):
        shown = legs_proof({k: np.concatenate([tail[k], columns[k][:LEGS_SEAM]]) for k in keys})
    last = {k: (columns[k][-LEGS_SEAM:] if tail is None
                else np.concatenate([tail[k], columns[k][-LEGS_SEAM:]])) for k in keys}
    return shown, {k: v[-LEGS_SEAM:].copy() for k, v in last.items()}


def unconnected_mark(txn: Any, meta_db: Any, feed: int, suffix: bytes = b"") -> int | None:
    """A feed's UNCONNECTED mark (suffix: LEGS for FreeSWITCH's): the earliest start of
    a record that showed it logs what it may leave unlogged (NEVER: none yet); None for
    a feed with no such switch."""
    held = txn.get(UNCONNECTED + feed.to_bytes(2, "big") + suffix, db=meta_db)
    return None if held is None else int.from_bytes(held, "little", signed=True)


def mark_suffix(kind: str) -> bytes:
    """The suffix of a feed's mark for a kind of unlogged records (Format.
    unconnected_shown_by): FreeSWITCH's legs apart from the unconnected calls."""
    return LEGS if kind == UNLOGGED_LEGS else b""


def note_unconnected(txn: Any, meta_db: Any, feed: int, since: int | None,
                     sources: Any = (), kind: str = UNLOGGED_CLEARED) -> None:
    """Note, in an index write, what a batch of a feed that may leave calls that rang a
    line unlogged has shown (unconnected_proof of its kind; None: nothing), and its
    sources, whose calls are held to it."""
    suffix = mark_suffix(kind)
    for source in sources:
        txn.put(UNCONNECTED_SOURCE + source.to_bytes(4, "big"), suffix, db=meta_db)
    held = unconnected_mark(txn, meta_db, feed, suffix)
    mark = min(NEVER if held is None else held, NEVER if since is None else since)
    if mark != held:
        txn.put(UNCONNECTED + feed.to_bytes(2, "big") + suffix,
                mark.to_bytes(8, "little", signed=True), db=meta_db)


def note_damaged(txn: Any, meta_db: Any, source: int, found: str) -> None:
    """Note, in an index write, that a source's data was found damaged (DAMAGED_SOURCE)."""
    txn.put(DAMAGED_SOURCE + source.to_bytes(4, "big"), found.encode(), db=meta_db)


def local_line(packed: int) -> bool:
    """Whether a line is a switch's own (docs/trace-rules.md, "A line a switch numbers
    itself"): not an E.164 number, which names one line the world over."""
    return packed >> 62 != numbers.E164


def local_feeds(txn: Any, meta_db: Any) -> list[int]:
    """The feeds that have indexed calls to lines of their switch's own (LOCAL_FEEDS)."""
    return feedlists.read(txn, meta_db, LOCAL_FEEDS)


def note_local_feed(txn: Any, meta_db: Any, feed: int) -> None:
    """Note, in an index write, that a feed indexed a call to a line of its switch's own."""
    feedlists.add(txn, meta_db, LOCAL_FEEDS, feed)


def least_two(held: tuple[int, ...], more: tuple[int, ...]) -> tuple[int, ...]:
    """The two least distinct nonzero tenants of held and more, ascending: what a feed
    notes (TENANTS), the same whatever order its records came in."""
    return tuple(sorted({v for v in held + more if v})[:2])


def tenants_of(txn: Any, meta_db: Any, feed: int) -> tuple[int, ...]:
    """The tenants a feed noted (TENANTS): at most two, ascending."""
    held = txn.get(TENANTS + feed.to_bytes(2, "big"), b"", db=meta_db)
    return tuple(np.frombuffer(bytes(held), "<u8").tolist())


def tenant_names(txn: Any, meta_db: Any, feed: int) -> list[str]:
    """The names of the tenants a feed noted (TENANT_NAMES), in their order."""
    held = json.loads(txn.get(TENANT_NAMES + feed.to_bytes(2, "big"), b"{}", db=meta_db))
    return [held[f"{t:016x}"] for t in tenants_of(txn, meta_db, feed) if f"{t:016x}" in held]


def note_tenants(txn: Any, meta_db: Any, feed: int, tenants: tuple[int, ...],
                 names: dict[int, str] | None = None) -> None:
    """Note, in an index write, tenants a feed's records named (CdrParser.take_tenants),
    and their names (take_tenant_names)."""
    held = tenants_of(txn, meta_db, feed)
    merged = least_two(held, tenants)
    if merged != held:
        key = feed.to_bytes(2, "big")
        known = json.loads(txn.get(TENANT_NAMES + key, b"{}", db=meta_db))
        given = {f"{t:016x}": n for t, n in (names or {}).items()}
        kept = {h: n for h in (f"{t:016x}" for t in merged) if (n := known.get(h) or given.get(h))}
        txn.put(TENANTS + key, np.array(merged, "<u8").tobytes(), db=meta_db)
        txn.put(TENANT_NAMES + key, json.dumps(kept).encode(), db=meta_db)


def tenants_shared(txn: Any, meta_db: Any, feed: int) -> bool:
    """Whether a feed's records name two or more tenants for lines their switch numbers
    itself: whose extension a trace of one is, the records cannot tell."""
    return len(tenants_of(txn, meta_db, feed)) > 1


# the first key of a line its switch numbers itself: its kind (bits 62-63) 2 or 3
LOCAL_KEYS = (numbers.EXTENSION << 62).to_bytes(8, "big")


def feeds_held(txn: Any, db: Any) -> list[int]:
    """The feeds of the calls an index (db) holds on lines of their switch's own (their
    keys sort from LOCAL_KEYS on), read from its entries."""
    cursor, feeds = txn.cursor(db), set()
    if cursor.set_range(LOCAL_KEYS):
        for _, value in cursor:
            feeds.update(np.frombuffer(value, index.ENTRY_DTYPE)["feed"].tolist())
    return sorted(feeds)


def note_feeds_held(envs: Environments) -> list[int] | None:
    """A store indexed by a release before LOCAL_FEEDS notes, at its first writable open
    (an ingest's), the feeds of the calls its index holds on lines their switches number
    themselves: those feeds' extensions were shared, or not, before the note began. A
    read-only open (serve, trace) writes nothing: it gets those feeds back, to hold in
    its place until an ingest notes them. None where nothing is to be noted."""
    db, meta = envs.db["index"], envs.db["meta"]
    with envs.read() as txn:
        if txn.get(LOCAL_FEEDS, db=meta) is not None or not txn.cursor(db).set_range(LOCAL_KEYS):
            return None
        if envs.readonly_index:
            return feeds_held(txn, db)

    def work(txn: Any) -> None:
        for feed in feeds_held(txn, db):
            note_local_feed(txn, meta, feed)
    envs.write(work)
    return None


def has_local_lines(lines: np.ndarray) -> bool:
    """Whether any of a batch's indexed lines (packed) is a switch's own (local_line)."""
    return bool(((lines >> np.uint64(62)) != np.uint64(numbers.E164)).any())


_NAMES = index.ENTRY_DTYPE.names or ()      # an entry's fields, as tolist() gives them
_START, _OFFSET, _SOURCE, _FEED, _CALLING, _FLAGS = (
    _NAMES.index(name) for name in ("start_us", "offset", "source", "feed", "calling", "flags"))
# Two switches' records of one call (docs/trace-rules.md, "One call in two switches'
# records"): an E.164 line's call that passed through two switches whose CDRs are both
# ingested (an SBC and the PBX behind it; a line of one switch forwarded to a line of
# another) is in the line's index twice, under two feeds and two call ids, its starts
# apart by the switches' rounding to whole seconds and their clocks (SAME_CALL_US), or,
# where it was forwarded, by the ring time before the forward as well (FORWARDED_CALL_US:
# past a forward on no answer's ring time, which a phone's setting puts at 120 s at most)
SAME_CALL_US = 2_000_000
FORWARDED_CALL_US = 300_000_000
# a time written in whole seconds is any instant of its second (within_its_second)
SECOND_US = 1_000_000


def disposition_rank(flags: int) -> int:
    """Where an entry's disposition ranks among one call's records, as the index ranks a
    call's legs (ext/_index.pyx): answered, then the ones that rang (answered elsewhere
    with them), then the ones that only may have (a trace of them fails closed)."""
    disposition = flags >> 4
    return 7 if disposition == Disposition.ANSWERED_ELSEWHERE else 2 * disposition


def surest_first(before: list) -> list:
    """Of a line's entries that began before an activation (as tolist() gives them, newest
    first), the same entries, but where every call of the newest instant is from one
    caller, the one that says most surely that the call rang the line goes first: one
    that says it was answered, else by disposition_rank. Those are records of one call
    (Asterisk 12 and later, without a uniqueid, write one per phone a ring group dialled,
    each an id of its own, each indexed under the number dialled), and which of them the
    trace names must not turn on the order the index holds them in: a phone's refusal
    (a late refusal, which may have rung) beside another phone's ringing is a call that
    rang."""
    tied = [i for i, r in enumerate(before) if i and r[_START] == before[0][_START]]
    if not tied or any(before[i][_CALLING] != before[0][_CALLING] for i in tied):
        return before       # callers apart: the records cannot tell which was the last
    i = min([0, *tied], key=lambda k: (not before[k][_FLAGS] & index.ANSWERED,
                                       disposition_rank(before[k][_FLAGS]), k))
    return before if i == 0 else [before[i]] + before[:i] + before[i + 1:]


def up_to_own_call(before: list, own: tuple[int, int] | None) -> list:
    """Of a line's entries that began before an activation (as tolist() gives them, newest
    first), those that began no later than the call whose own record a switch recorded
    the activation in (own: that record's offset and source), where it is one of them,
    that call first. CUCM flags a call for malicious call id in its record, written at its
    end: a call that began during it (call waiting), even within the same second, is not
    the one the customer flagged."""
    flagged = None if own is None else next((r for r in before if (r[_OFFSET], r[_SOURCE]) == own), None)
    if flagged is None:
        return before
    return [flagged] + [r for r in before if r is not flagged and r[_START] <= flagged[_START]]


def same_call_elsewhere(entries: list, e: list) -> list:
    """Of a line's entries (as tolist() gives them), the records other feeds wrote of the
    call whose entry is e (one of them): per other feed, its entry from e's caller nearest
    e in time, within SAME_CALL_US of it (FORWARDED_CALL_US where either says the call was
    forwarded), where e is in turn its own feed's entry from that caller nearest that one.
    A caller who calls again soon makes a record in each feed per call: each call's are
    nearest each other."""
    def nearest(of: list, feed: int) -> list | None:
        near = [r for r in entries if r[_FEED] == feed and r[_CALLING] == of[_CALLING]
                and abs(r[_START] - of[_START]) <= (
                    FORWARDED_CALL_US if (r[_FLAGS] | of[_FLAGS]) & index.FORWARDED
                    else SAME_CALL_US)]
        return min(near, key=lambda r: abs(r[_START] - of[_START]), default=None)
    twins = (nearest(e, feed) for feed in sorted({r[_FEED] for r in entries} - {e[_FEED]}))
    return [r for r in twins if r is not None and nearest(r, e[_FEED]) is e]


def within_its_second(before: list) -> list:
    """Of a line's entries that began before an activation (newest first), the calls from
    other callers than the newest's, written in whole seconds, that began less than a
    second before it, where its own time is finer (a switch that writes milliseconds,
    beside one that writes seconds): such a call may have begun up to a second after the
    time written, after the newest, and the records cannot tell which was the last."""
    start, calling = before[0][_START], before[0][_CALLING]
    return [r for r in before[1:] if 0 < start - r[_START] < SECOND_US
            and r[_START] % SECOND_US == 0 and r[_CALLING] != calling]


def of_feed(entries: list, feed: int) -> list:
    """Of a line's entries (as tolist() gives them), those a feed indexed."""
    return [r for r in entries if r[_FEED] == feed]


class Lookup:
    """Reads of the last-call index and what explains its entries."""

    def __init__(self, envs: Environments):
        self.envs = envs
        self.db = envs.db
        self._index_db = envs.db["index"]      # the hot path's handle, kept across reopens
        envs.on_reopen.append(lambda: setattr(self, "_index_db", envs.db["index"]))
        # the read in C (index._index.read_value), unless py-lmdb is not as it expects
        self._native = index.native_calls()
        # the feeds of an index not yet noted (LOCAL_FEEDS), found by a read-only open
        self.unnoted = note_feeds_held(envs)

    def folds(self, txn: Any) -> np.ndarray:
        """The repeated hours of the zones that read local times into the index (folds)."""
        return folds.held(txn, self.db["meta"])

    def shared_local(self, txn: Any, key: bytes) -> list[int] | None:
        """The feeds that index lines of their switch's own, where the line of key is one
        and they are two or more: the records cannot tell whose line it is. Else None."""
        if not local_line(int.from_bytes(key, "big")):
            return None
        feeds = self.local_feeds(txn)
        return feeds if len(feeds) > 1 else None

    def local_feeds(self, txn: Any) -> list[int]:
        """The feeds that have indexed calls to lines of their switch's own: as noted
        (LOCAL_FEEDS), else as a read-only open found them (unnoted)."""
        return local_feeds(txn, self.db["meta"]) or self.unnoted or []

    def damaged(self, txn: Any, e: dict) -> str | None:
        """What was found damaged in the source of entry e's call (note_damaged), or None."""
        held = txn.get(DAMAGED_SOURCE + int(e["source"]).to_bytes(4, "big"), db=self.db["meta"])
        return None if held is None else bytes(held).decode()

    def unlogged_after(self, txn: Any, e: dict) -> tuple[str, str | None] | None:
        """None if no call may be missing after the call of entry e for want of its
        switch logging every call that rang a line (its source is not marked
        UNCONNECTED_SOURCE, or its feed showed it logs them by the call); else the view's
        name for why (UNLOGGED_VIEW) and when its feed first showed it, after the call
        (the time's text), or None: not yet (unconnected_mark)."""
        meta = self.db["meta"]
        suffix = txn.get(UNCONNECTED_SOURCE + int(e["source"]).to_bytes(4, "big"), db=meta)
        if suffix is None:
            return None
        suffix = bytes(suffix)
        since = unconnected_mark(txn, meta, int(e["feed"]), suffix)
        if since is not None and since <= e["start_us"]:
            return None
        # (a feed with no mark of its source's kind, which no ingest leaves: held, fail closed)
        return (UNLOGGED_VIEW.get(suffix, "unconnected_unlogged"),
                None if since in (None, NEVER) else timezones.format_utc(since))

    def hunt_after(self, txn: Any, key: bytes, feeds: set[int], e: dict, at_us: int) -> dict | None:
        """A call through a hunt pilot, of a feed of the line's calls (feeds), that began
        from the call of entry e on and before at_us, and may have rung the line without
        its record naming it (store.hunts.rang_unnamed); else None.
        One that began with e, whose record names a line that has it as a call from e's
        caller (a known one), is e's call written in another record: the phones of a group
        call each have one in Asterisk 12+, and with no uniqueid each its own id. (Were it
        another call from that caller in the same second, the caller it names is e's.)"""
        start, calling = int(e["start_us"]), int(e["calling"])
        return hunts.rang_unnamed(txn, self.db.get("hunts"), self.db["meta"],
                                  feeds, int.from_bytes(key, "big"), start, int(e["call_id"]),
                                  at_us, lambda named, note_id: self.written_again(
                                      txn, named, note_id, calling))

    def written_again(self, txn: Any, named: int, note_id: int, calling: int) -> bool:
        """Whether the call through a hunt pilot note_id, whose record names the line named,
        is a call from calling (a known caller) that the index holds for that line: a call
        from that caller written in another record than the one a trace named."""
        if not named or not calling:
            return False
        rows = self.last_calls(named.to_bytes(8, "big"), txn)
        return bool(((rows["call_id"] == note_id) & (rows["calling"] == calling)).any())

    def last_calls(self, line_key: bytes, txn: Any = None) -> np.ndarray:
        """The index entries of a line (index.ENTRY_DTYPE, newest first): the trace lookup.

        Pass a read transaction to look up many lines in one snapshot (and save its cost)."""
        if txn is None:
            try:
                if self._native:
                    value = _read_value(self.envs.env, self._index_db, line_key)
                else:
                    with self.envs.env.begin() as txn:
                        value = txn.get(line_key, db=self._index_db)
            except RuntimeError:   # not laid out as the native read expects: py-lmdb's
                self._native = False
                return self.last_calls(line_key)
            except (lmdb.Error, _NativeError):   # a grown map, a reopen after MDB_PANIC
                with self.envs.read() as txn:
                    value = txn.get(line_key, db=self._index_db)
        else:
            value = txn.get(line_key, db=self._index_db)
        return _frombuffer(value, _ENTRY) if value else _EMPTY

    def stat(self) -> dict[str, int]:
        """How many lines the index holds, and its size in bytes."""
        with self.envs.read() as txn:
            stat = txn.stat(self.db["index"])
        return {"lines": stat["entries"],
                "bytes": (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"])
                * stat["psize"]}

    def caller_text(self, txn: Any, packed: int) -> str | None:
        """A caller as written for the CIC: its number, or its SIP identity's text."""
        text = numbers.format_number(packed) or None
        if text and text.startswith("id:") and self.db.get("identities") is not None:
            stored = txn.get(packed.to_bytes(8, "big"), db=self.db["identities"])
            if stored is not None:
                return stored.decode()
        return text

    def unreadable_record(self, txn: Any, feed: int, start_us: int, call_id: int) -> dict | None:
        """The logged reject behind an unreadable call (its place and reason), if logged."""
        db = self.db.get("unreadable")
        logged = None if db is None else txn.get(salvage.log_key(feed, start_us, call_id), db=db)
        return json.loads(logged) if logged is not None else None

    def unreadable_near(self, txn: Any, feed: int | None, call_us: int, at_us: int) -> dict:
        """Unreadable records (with or without a line) of the call's feed, or of every feed
        when there is no call, from an hour before the traced call to the activation: the
        CIC's measure of how far the data around a trace can be trusted. txn: the index's,
        as index.native_txn gives it."""
        since = call_us - UNREADABLE_WINDOW_US
        found: dict[str, Any] = {"from": timezones.format_utc(since), "to": timezones.format_utc(at_us),
                                 "records": 0, "without_line": 0}
        db = self.db.get("unreadable")
        if db is None:
            return found
        start, stop = max(since, 0).to_bytes(8, "big"), max(at_us, 0).to_bytes(8, "big")
        if feed is not None:
            feeds: Any = (feed,)
        else:                       # each feed that has any record from `since` on
            feeds, f = [], 0
            while f <= 0xFFFF and (key := txn.next_key(f.to_bytes(2, "big") + start, db=db)):
                f = int.from_bytes(key[:2], "big")
                if key[2:10] < stop:
                    feeds.append(f)
                f += 1
        for f in feeds:
            prefix = f.to_bytes(2, "big")
            for _, value in txn.range(prefix + start, prefix + stop, db=db):
                found["records"] += 1
                found["without_line"] += not json.loads(value)["line_found"]
        return found
