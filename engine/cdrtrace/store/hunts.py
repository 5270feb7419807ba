"""Calls through a hunt pilot: the phones they rang that their records do not name.

Cisco UCM writes one record for a call to a hunt pilot. It names the pilot, and at most
the member that answered: `finalCalledPartyNumber` holds the pilot unless the cluster's
'Show Line Group Member DN in finalCalledPartyNumber CDR Field' service parameter is on
(off by default), and a call no member answered names none. The members' phones that
rang are in no record, so a trace of such a phone's line would pass over the call to an
older one (docs/trace-rules.md, "A call to a hunt group"). Ingest notes each such call
(CdrParser.take_hunts) here; a trace whose call is older than one of them that may have
rung its line fails closed. An Asterisk Dial to several phones at once is noted alike: up
to Asterisk 11 its one record names at most one of them, and its members are the phones
its devices name (CdrParser.take_hunt_members). So is a call to an Asterisk Queue, whose
one record up to Asterisk 11 names at most the member that answered: its pilot is the
number dialled (0 where none: any line of the feed), its members the configuration's.

The index environment's `hunts` database: feed (2 bytes), start (8) and call id (8),
big-endian, to the pilot and the number named beyond it (0: none), then the members the
call's record names, else those the feed's configuration lists for the pilot (8 bytes
each, little-endian; none: any line of the feed may have rung). HUNT_FEEDS in the
index's meta lists the feeds that have noted any, 2 bytes each, ascending; TRIMMED, the
time before which a purge removed them (int64, little-endian): a trace whose call is
older cannot know what rang after it; UNLISTED + the feed (2 bytes), the pilots it noted
calls of with no members listed (8 bytes each, ascending, at most MAX_UNLISTED), for
`cdrtrace stats`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..parsing import numbers, timezones
from ..parsing.formats import HUNT_DTYPE, Disposition
from . import feedlists

HUNT_FEEDS, TRIMMED, UNLISTED = b"hunt_feeds", b"hunts_trimmed", b"hunt_unlisted/"
MAX_UNLISTED = 1000
_KEY = np.dtype([("feed", ">u2"), ("start_us", ">i8"), ("call_id", ">u8")])
_HEAD = np.dtype([("pilot", "<u8"), ("named", "<u8")])


def items(feed: int, hunts: np.ndarray, groups: dict[int, tuple[int, ...]],
          named: np.ndarray | None = None) -> list[tuple[bytes, bytes]]:
    """The (key, value) pairs that note a feed's calls through a hunt pilot (HUNT_DTYPE).
    groups: the members configured for each pilot of the feed (packed lines); named: the
    lines the calls' own records name as rung, each call's `members` of them in order (an
    Asterisk Dial to several devices), which are its members whatever is configured."""
    keys = np.empty(len(hunts), _KEY)
    keys["feed"], keys["start_us"], keys["call_id"] = feed, hunts["start_us"], hunts["call_id"]
    heads = np.empty(len(hunts), _HEAD)
    for name in _HEAD.names or ():
        heads[name] = hunts[name]
    members = {pilot: np.array(lines, "<u8").tobytes() for pilot, lines in groups.items()}
    own = (np.empty(0, "<u8") if named is None else named.astype("<u8")).tobytes()
    # sliced from one buffer each, and the members added to the few that have any (a
    # numpy scalar's tobytes costs a microsecond a note: a call centre's file of queue
    # calls is a note a record)
    kb, hb, ks, hs = keys.tobytes(), heads.tobytes(), _KEY.itemsize, _HEAD.itemsize
    values = [hb[i:i + hs] for i in range(0, len(hb), hs)]
    ends = np.cumsum(hunts["members"]) * 8
    listed = np.isin(hunts["pilot"], np.array(list(members), np.uint64))
    for i in np.flatnonzero((hunts["members"] > 0) | listed).tolist():
        n, end = int(hunts["members"][i]), int(ends[i])
        values[i] += own[end - 8 * n:end] if n else members[int(hunts["pilot"][i])]
    return list(zip([kb[i:i + ks] for i in range(0, len(kb), ks)], values, strict=True))


# how a call that may have rung a pilot's members ended, where its own line did not ring
# (a Queue or Dial that went on to voicemail; a call the switch's record names no phone of)
_MAY_RING = np.array([Disposition.ANSWERED, Disposition.NO_ANSWER, Disposition.CANCELLED,
                      Disposition.UNKNOWN, Disposition.ANSWERED_ELSEWHERE,
                      Disposition.LATE_REFUSAL, Disposition.LATE_FAILURE], np.uint8)


def dialled_to_listed(columns: dict, groups: dict[int, tuple[int, ...]],
                      noted: np.ndarray) -> np.ndarray:
    """The calls of a parsed chunk (its columns) dialled to a pilot the feed lists members
    for (groups), as calls through it (HUNT_DTYPE): whatever the record says of the phones
    it rang (Asterisk's one record of Dials made in turn, or of a Queue the dialplan left
    for voicemail, names the last phone at most), they may have rung its members. Not one
    that ended at once busy, failed or refused (no member rang), nor a call the parser
    noted (noted: its own notes, whose members the record may name)."""
    pilots = np.fromiter(groups, np.uint64, len(groups))
    mask = np.isin(columns["called"], pilots) & (
        columns["received"] | np.isin(columns["disposition"], _MAY_RING))
    if len(noted):
        mask &= ~np.isin(columns["call_id"], noted["call_id"])
    at = np.flatnonzero(mask)
    calls = np.zeros(len(at), HUNT_DTYPE)
    for name, column in (("start_us", "start_us"), ("call_id", "call_id"), ("pilot", "called"),
                         ("named", "final")):
        calls[name] = columns[column][at]
    return calls


# a call through a hunt pilot that began before a trace's activation, queued in the index's
# meta with its commit for the evidence to check (evidence.later): + its key here
LATER_DUE = b"later_hunt/"


def later_due(traced: tuple[np.ndarray, np.ndarray], feed: int,
              hunted: list[tuple[np.ndarray, np.ndarray | None]],
              groups: dict[int, tuple[int, ...]]) -> list[bytes]:
    """The LATER_DUE keys of a commit's calls through a hunt pilot of feed (as items takes
    them: each HUNT_DTYPE array with the members its records name, groups the members
    configured) that began before the latest activation of a traced line (traced: the
    lines, sorted, and each one's latest activation) and may have rung one: its members
    are not known, or list one. Each may have rung that line after the call its trace
    named."""
    lines, until = traced
    if not len(until) or not hunted:
        return []
    latest = int(until.max())
    pilots = np.fromiter(groups, np.uint64, len(groups))
    reach = np.fromiter((p for p, members in groups.items()
                         if np.isin(np.array(members, np.uint64), lines).any()), np.uint64)
    keys = []
    for part, named in hunted:
        listing = np.zeros(len(part), bool)
        if named is not None and len(named):
            owner = np.repeat(np.arange(len(part)), part["members"])
            listing[owner[np.isin(named, lines)]] = True
        may = np.where(part["members"] > 0, listing,
                       ~np.isin(part["pilot"], pilots) | np.isin(part["pilot"], reach))
        calls = part[may & (part["start_us"] < latest)]
        raw = np.empty(len(calls), _KEY)
        raw["feed"], raw["start_us"], raw["call_id"] = feed, np.maximum(calls["start_us"], 0), \
            calls["call_id"]
        kb, size = raw.tobytes(), _KEY.itemsize
        keys += [LATER_DUE + kb[i:i + size] for i in range(0, len(kb), size)]
    return keys


# calls through a hunt pilot as due_calls reads them
DUE_DTYPE = np.dtype([("feed", "<u2"), ("start_us", "<i8"), ("call_id", "<u8"), ("pilot", "<u8"),
                      ("named", "<u8"), ("members", "<u4")])


def due_calls(txn: Any, db: Any, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The calls through a hunt pilot of LATER_DUE keys that are still held (a purge may
    have removed some), in order of their start (DUE_DTYPE, each call's count of
    members), and the lines their members list, sorted, beside each the call that lists
    it (its place among the calls)."""
    heads, members = [], []
    for k in keys:
        value = txn.get(k[len(LATER_DUE):], db=db)
        if value is not None:
            value = bytes(value)
            heads.append(k[len(LATER_DUE):] + value[:_HEAD.itemsize])
            members.append(value[_HEAD.itemsize:])
    both = np.dtype(_KEY.descr + _HEAD.descr)
    read = np.frombuffer(b"".join(heads), both)
    calls = np.empty(len(read), DUE_DTYPE)
    for name in both.names or ():
        calls[name] = read[name]
    calls["members"] = [len(m) // 8 for m in members]
    order = np.argsort(calls["start_us"], kind="stable")
    place = np.empty(len(order), np.int64)
    place[order] = np.arange(len(order))
    listed = np.frombuffer(b"".join(members), "<u8")
    owner = place[np.repeat(np.arange(len(calls)), calls["members"])]
    by = np.argsort(listed, kind="stable")
    return calls[order], listed[by], owner[by]


def noted_feeds(txn: Any, meta_db: Any) -> list[int]:
    """The feeds that have noted calls through a hunt pilot (HUNT_FEEDS)."""
    return feedlists.read(txn, meta_db, HUNT_FEEDS)


def note_feed(txn: Any, meta_db: Any, feed: int) -> None:
    """Note, in an index write, that a feed noted calls through a hunt pilot."""
    feedlists.add(txn, meta_db, HUNT_FEEDS, feed)


def note_unlisted(txn: Any, meta_db: Any, feed: int, hunts: np.ndarray,
                  groups: dict[int, tuple[int, ...]]) -> None:
    """Note, in an index write, the pilots of a feed's calls (HUNT_DTYPE) that its
    configuration lists no members for (UNLISTED), and whose records name none (not 0:
    an Asterisk queue reached at no number, which no configuration can list)."""
    pilots = set(np.unique(hunts["pilot"][hunts["members"] == 0]).tolist()) - set(groups) - {0}
    if pilots:
        key = UNLISTED + feed.to_bytes(2, "big")
        held = set(unlisted(txn, meta_db, feed))
        if not pilots <= held:
            merged = sorted(held | pilots)[:MAX_UNLISTED]
            txn.put(key, np.array(merged, "<u8").tobytes(), db=meta_db)


def unlisted(txn: Any, meta_db: Any, feed: int) -> list[int]:
    """The pilots a feed noted calls of with no members listed (UNLISTED)."""
    held = txn.get(UNLISTED + feed.to_bytes(2, "big"), b"", db=meta_db)
    return np.frombuffer(bytes(held), "<u8").tolist()


def trim(txn: Any, db: Any, meta_db: Any, cutoff: int) -> None:
    """Remove, in an index write, the calls through a hunt pilot that began before cutoff
    (a purge's), and note that their time is no longer known (TRIMMED)."""
    old = [bytes(k) for k, _ in txn.cursor(db) if int.from_bytes(k[2:10], "big") < cutoff]
    for key in old:
        txn.delete(key, db=db)
    if old:
        held = txn.get(TRIMMED, db=meta_db)
        since = max(cutoff, int.from_bytes(held, "little", signed=True) if held else cutoff)
        txn.put(TRIMMED, since.to_bytes(8, "little", signed=True), db=meta_db)


def view(pilot: int, start_us: int, named: int) -> dict:
    """A call through a hunt pilot as the CIC reads it: its pilot, start and the number its
    record names beyond the pilot (None: none)."""
    return {"pilot": numbers.format_number(pilot), "start": timezones.format_utc(start_us),
            "named": numbers.format_number(named) or None}


def _start(us: int) -> bytes:
    return max(us, 0).to_bytes(8, "big")


def rang_unnamed(txn: Any, db: Any, meta_db: Any, feeds: set[int], line: int, after_us: int,
                 call_id: int, before_us: int,
                 same_call: Callable[[int, int], bool] | None = None) -> dict | None:
    """The first call through a hunt pilot, of one of feeds, that began from after_us on
    and before before_us, is not the call call_id, and may have rung line without naming
    it (its pilot's members are not configured, or list the line; a member it names has
    the call in its line's index): its pilot, start and the number its record names
    beyond the pilot (None: none) as the CIC reads them; where a purge removed the calls
    after after_us (TRIMMED), when it removed them to; None if there is none. txn: the
    index's (index.native_txn). same_call(named, the note's call id): whether a call that
    began at after_us is the call call_id itself, written in another record (an Asterisk
    12+ record per phone dialled, in a file with no uniqueid: each its own id)."""
    if db is None or not (feeds := feeds.intersection(noted_feeds(txn, meta_db))):
        return None
    held = txn.get(TRIMMED, db=meta_db)
    if held is not None and after_us < (trimmed := int.from_bytes(held, "little", signed=True)):
        return {"trimmed_to": timezones.format_utc(trimmed)}
    for feed in sorted(feeds):
        prefix = feed.to_bytes(2, "big")
        start, stop = prefix + _start(after_us), prefix + _start(before_us)
        # the next call that is not call_id and lists no member or the line (sought in C:
        # a busy PBX's day holds thousands of group calls that list other phones)
        while (found := txn.next_hunt(start, stop, line, call_id, db=db)) is not None:
            key, value = found
            head = np.frombuffer(value, _HEAD, 1)[0]
            began, note_id = int.from_bytes(key[2:10], "big"), int.from_bytes(key[10:18], "big")
            if not (same_call is not None and began == after_us
                    and same_call(int(head["named"]), note_id)):
                return view(int(head["pilot"]), began, int(head["named"]))
            start = key + b"\x00"
    return None
