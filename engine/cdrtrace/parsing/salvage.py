"""Failing closed on records that cannot be read.

A rejected record may still have been the last call to a line. If the trace passed over
it, it would name an older, innocent caller. So each reject is searched for what it
still tells: the line or lines it was for, and when it started (parser.salvage, native
and reference alike). Where a line is found, the line's index gets an *unreadable call*:
a trace that resolves to it is untraceable, with the reason in the evidence. Every reject
with a time, line or not, is also logged per feed, so a trace's evidence can say how many
unreadable records its feed had around the traced call. A reject that names a hunt
pilot, or an Asterisk Dial to several devices, is noted as a call through it, as a good
record is (store.hunts): it may have rung phones no record names (a Queue reached at no
number, any line of its feed). A whole record glued to a reject's end (parsing.glued) is
held as an unreadable call of its own.
"""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from . import glued as glued_records
from .formats import COLUMNS, HUNT_DTYPE, CallBatch, Disposition, Presentation


def _call_id(feed: int, raw: bytes) -> int:
    digest = hashlib.blake2b(raw, digest_size=8, person=b"cdrtrace-unread",
                             salt=feed.to_bytes(2, "big")).digest()
    return int.from_bytes(digest, "little")


class Unreadable:
    """The unreadable calls of one parsed chunk: a batch to index, log entries, and the
    calls through a hunt pilot among them (HUNT_DTYPE) with the members their records
    name (as CdrParser.take_hunt_members)."""

    __slots__ = ("batch", "log", "hunts", "members", "glued")

    def __init__(self, batch: CallBatch | None, log: list[tuple[bytes, bytes]],
                 hunts: np.ndarray | None = None, members: np.ndarray | None = None,
                 glued: dict[int, list[glued_records.Tail]] | None = None):
        self.batch = batch
        self.log = log
        self.hunts = np.empty(0, HUNT_DTYPE) if hunts is None else hunts
        self.members = np.empty(0, np.uint64) if members is None else members
        self.glued = glued or {}      # whole records glued to rejects' ends, by reject


def log_key(feed: int, start_us: int, call_id: int) -> bytes:
    """Unreadable-record log key: feed, then start time, so a time window is one range."""
    return feed.to_bytes(2, "big") + start_us.to_bytes(8, "big", signed=False) + call_id.to_bytes(8, "big")


# year-first dates in a form no built-in format writes: 2020/2/10 22:41, 2020.02.10 22:41
_LOOSE_TIME = re.compile(rb"(?<!\d)(\d{4})[/.](\d{1,2})[/.](\d{1,2})[ T](\d{1,2}):(\d\d)(?::(\d\d))?")


def loose_time(raw: bytes, zone: str) -> int | None:
    """The first year-first date and time in a record written in a form no built-in
    format uses (2020/2/10 22:41: a spreadsheet's), read in the feed's zone; a time
    without seconds is taken at the end of its minute (fail closed: later)."""
    from . import timezones

    for match in _LOOSE_TIME.finditer(raw):
        y, mo, d, h, mi = (int(match.group(k)) for k in range(1, 6))
        sec = int(match.group(6)) if match.group(6) else 59
        try:
            return timezones.local_to_utc_seconds(y, mo, d, h, mi, sec, zone) * 1_000_000
        except (ValueError, OverflowError):
            continue
    return None


# dates as a spreadsheet writes them, day and month in the order of its locale: 3/2/2026
# 14:30 (month first), 02.03.26 14:30:11 (day first)
_SHEET_TIME = re.compile(rb"(?<![\d/.])(\d{1,2})[/.](\d{1,2})[/.](\d{4}|\d\d)(?![\d/.])[ T]"
                         rb"(\d{1,2}):(\d\d)(?::(\d\d))?")


def loose_times(raw: bytes, zone: str) -> list[int]:
    """A reject's own time in a form its format does not use: the year-first one
    (loose_time), else the first date a spreadsheet wrote, read both ways where its day
    and month could be either (3/2/2026: 2 March or 3 February). The call is held at each
    reading: at the later one a trace after it fails closed, at the earlier one a trace
    between the two (where the call was the earlier, it was the last). Ascending."""
    from . import timezones

    one = loose_time(raw, zone)
    if one is not None:
        return [one]
    for match in _SHEET_TIME.finditer(raw):
        a, b, y, h, mi = (int(match.group(k)) for k in range(1, 6))
        y += 2000 if len(match.group(3)) == 2 else 0
        sec = int(match.group(6)) if match.group(6) else 59     # as loose_time: fail closed
        found = set()
        for mo, d in ((a, b), (b, a)):
            try:
                found.add(timezones.local_to_utc_seconds(y, mo, d, h, mi, sec, zone) * 1_000_000)
            except (ValueError, OverflowError):
                continue
        if found:
            return sorted(found)
    return []


def unreadable(parser, bad: list, columns: dict, source: int, fallback_us: int | None,
               zone: str = "UTC") -> Unreadable:
    """What the rejects of one parsed chunk still tell.

    bad: the parser's (record, offset, reason, raw) rejects; columns: the good records of
    the same chunk. A reject whose time is written in another form (a spreadsheet's
    2020/2/10 22:41, or 3/2/2026 14:30 read both ways) is read loosely (loose_times),
    held at each reading. One with no time at all is placed as late as the file
    allows, failing closed: switches write a record when its call ends, so it ended after
    the good record just before it, and is taken to start when that one ended (at least
    a microsecond after it started): in the chunk, else at fallback_us (when the last good
    record before the chunk ended; however the source is cut into chunks, the same time);
    with no good record before it in the source, at the start of the one after it."""
    if not bad:
        return Unreadable(None, [])
    feed = int(parser.feed_id)
    offsets = columns["offset"]
    starts, ends = columns["start_us"], columns["end_us"]
    rows, log, hunted, members = [], [], [], []
    glued = glued_records.search(parser, bad)
    for k, (record, offset, reason, raw) in enumerate(bad):
        found = parser.salvage(raw)
        if found is None:          # not an incoming call (an originating record)
            continue
        called, rang, start, pilot, named = found
        estimated = start is None
        if k in glued and not estimated:   # a tail that tells what the line does: itself, shifted
            glued[k] = [t for t in glued[k] if t.start_us != start or t.redirecting
                        or {t.called, t.rang} - {called, rang, 0}]
        # its own time, else in a form the format does not use (a spreadsheet's: read
        # both ways where day and month could be either), else placed
        times = [start] if start is not None else loose_times(raw, zone)
        if not times:
            i = int(np.searchsorted(offsets, offset))
            if i > 0:
                times = [max(int(ends[i - 1]), int(starts[i - 1]) + 1)]
            elif fallback_us is not None:
                times = [fallback_us]
            elif i < len(starts):
                times = [int(starts[i])]
        call_id = _call_id(feed, raw)
        for when in times:         # none at all: the reject stays counted
            log.append((log_key(feed, when, call_id), json.dumps({
                "source": source, "record": int(record), "offset": int(offset),
                "line_found": bool(called), "time_estimated": estimated, "reason": reason,
                **({"times_read": len(times)} if len(times) > 1 else {})}).encode()))
            if called:
                rows.append((when, called, rang, 0, call_id, offset, record))
            if pilot:   # -1: a Queue reached at no number (pilot 0: it may have rung any line)
                hunted.append((when, call_id, max(pilot, 0), rang, len(named)))
                members += named
    glued = {k: tails for k, tails in glued.items() if tails}
    for k, tails in glued.items():      # whole records glued to a reject's end
        record, offset, reason, _ = bad[k]
        for tail in tails:
            call_id = _call_id(feed, tail.raw)
            log.append((log_key(feed, tail.start_us, call_id), json.dumps({
                "source": source, "record": int(record), "offset": int(offset) + tail.at,
                "line_found": bool(tail.called), "time_estimated": False,
                "reason": f"{reason}; from byte {tail.at} of the line on, a whole record, glued "
                          "to the record cut short before it"}).encode()))
            if tail.called:
                rows.append((tail.start_us, tail.called, tail.rang, tail.redirecting, call_id,
                             offset + tail.at, record))
            if tail.pilot:
                hunted.append((tail.start_us, call_id, tail.pilot, tail.rang, len(tail.members)))
                members += tail.members
    hunts, named_lines = np.array(hunted, HUNT_DTYPE), np.array(members, np.uint64)
    if not rows:
        return Unreadable(None, log, hunts, named_lines, glued)
    n = len(rows)
    cols = {name: np.zeros(n, dtype) for name, dtype in COLUMNS}
    for i, (start, called, rang, redirecting, call_id, offset, record) in enumerate(rows):
        cols["start_us"][i] = start
        cols["end_us"][i] = start
        cols["called"][i] = called
        cols["final"][i] = rang
        cols["redirecting"][i] = redirecting
        cols["call_id"][i] = call_id
        cols["offset"][i] = offset
        cols["record"][i] = record
    cols["presentation"][:] = Presentation.UNAVAILABLE
    cols["disposition"][:] = Disposition.UNREADABLE
    cols["received"][:] = True
    cols["feed"][:] = feed
    return Unreadable(CallBatch(cols, source), log, hunts, named_lines, glued)


HEADER_WORDS = frozenset(w.lower() for w in (
    "accountcode", "src", "dst", "dcontext", "clid", "calldate", "dstchannel", "disposition",
    "uniqueid", "cdrRecordType", "dateTimeOrigination", "callingPartyNumber", "recordId",
    "callingNumber", "startTime", "caller_id_name", "caller_id_number", "destination_number",
    "start_stamp", "hangup_cause"))
_SPREADSHEET = re.compile(rb"(^|[,;\t\"])\s*(\d{1,4}/\d{1,2}/\d{1,4}( \d{1,2}:\d\d(:\d\d)?)?|"
                          rb"\d\.\d+E\+\d+)\s*($|[,;\t\"])", re.I)


def explain(bad: list, delimiter: int, min_fields: int) -> list:
    """The rejects with a likely cause added to their reason where one shows: a header
    line (files joined together), another delimiter, or a spreadsheet's rewriting (dates
    as 3/2/2026, numbers as 3.03555E+09)."""
    out = []
    for record, offset, reason, raw in bad:
        fields = [f.strip(b' "').lower() for f in raw.split(bytes([delimiter]))]
        if sum(f.decode("latin-1") in HEADER_WORDS for f in fields) >= 2:
            reason += " (a header line: files joined together?)"
        elif len(fields) < min_fields and any(
                raw.count(other) >= min_fields - 1 for other in (b";", b"\t", b"|")
                if ord(other) != delimiter):
            found = next(o for o in (b";", b"\t", b"|") if raw.count(o) >= min_fields - 1)
            reason += f" (the fields look separated by {found.decode()!r}, not {chr(delimiter)!r})"
        elif _SPREADSHEET.search(raw):
            reason += " (dates or numbers as a spreadsheet writes them: saved from a spreadsheet?)"
        out.append((record, offset, reason, raw))
    return out
