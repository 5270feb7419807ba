"""Whole records glued to the end of a rejected line.

A switch whose host crashed while it wrote a record leaves that record cut short, and
writes its next record on after it, on the same line; two files joined where the first
lacked its last newline do the same. The line is rejected, and the call written whole at
its end would go with it: a *57 would pass over it to an older, innocent caller. So each
rejected line is searched for a tail that the parser itself, by its own rules, reads as
one whole valid record. A tail is tried from each byte past the line's first field that
leaves the format's fewest fields room (its separators), within WINDOW positions of the
shortest such and no longer than LONGEST (where the dialect does not read its first
column, from the line's second byte on, and of a run of letters and digits from its
first byte only: the others read alike). A line rejected for one bad value has no such
tail, or a few; a record cut anywhere and glued to the next has one that begins where
the next record does.

What a tail found tells (its lines, its time, the hunt pilot it went through) is held by
the salvage as an unreadable call, never read as a call: a tail that parses may still be
the end of a record that was only damaged, so its caller is never named (fail closed).
"""
from __future__ import annotations

import numpy as np

WINDOW = 512        # start positions tried in one line, back from the shortest tail's
LONGEST = 8192      # the longest tail tried: switches' records are far shorter
_BATCH = 1 << 22    # bytes of tails parsed in one feed
# between tails: a record never reads across a run of NUL bytes (a row holds none)
_APART = b"\n" + b"\0" * 8 + b"\n"


class Tail:
    """A whole record read from a rejected line's end: where in the line it begins, its
    bytes, and what it tells (as CdrParser.salvage tells of a reject)."""

    __slots__ = ("at", "raw", "called", "rang", "redirecting", "start_us", "pilot", "members")

    def __init__(self, at: int, raw: bytes, called: int, rang: int, redirecting: int,
                 start_us: int, pilot: int = 0, members: tuple[int, ...] = ()):
        self.at, self.raw, self.called, self.rang = at, raw, called, rang
        self.redirecting, self.start_us, self.pilot, self.members = redirecting, start_us, pilot, members


def starts(raw: bytes, delimiter: int, min_fields: int, every: bool = True) -> np.ndarray:
    """The positions in raw a glued record is looked for from (see the module). With
    `every` (the dialect reads its first column), each position past the line's first
    field: a tail cut inside a first field that is read would read a damaged value as
    another (an epoch time's digits). Else each from its second byte, but of the
    positions inside a run of letters and digits only the first: tails that begin in one
    run differ only in a first field that is not read, so they read alike."""
    data = np.frombuffer(raw, np.uint8)
    at = np.flatnonzero(data == delimiter)
    need = max(min_fields - 1, 1)        # separators a whole record holds at least
    if len(at) <= need:
        return np.empty(0, np.int64)
    last = int(at[len(at) - need])       # the last start that leaves `need` of them
    first = 1 if not every else int(at[0]) + 1    # a first field read is never cut
    tried = np.arange(max(first, last - WINDOW + 1, len(raw) - LONGEST), last + 1)
    if every or not len(tried):
        return tried
    plain = _ALNUM[data]
    return tried[~(plain[tried] & plain[tried - 1])]


_ALNUM = np.zeros(256, bool)
_ALNUM[[*range(48, 58), *range(65, 91), *range(97, 123)]] = True


def search(parser, bad: list) -> dict[int, list[Tail]]:
    """The whole records glued to the ends of rejects (the parser's (record, offset,
    reason, raw) list), by the reject's index: for each, the distinct calls its tails
    read as, each at the first (longest) tail that reads so."""
    found: dict[int, dict[tuple[int, int, int, int], Tail]] = {}
    batch = _Batch()
    every = parser.reads_first_field
    for k, (_, _, _, raw) in enumerate(bad):
        raw = bytes(raw)
        tried = starts(raw, parser.delimiter, parser.min_fields, every)
        if len(tried):
            batch.add(k, raw, tried)
            if batch.size >= _BATCH:
                batch.read(parser, found)
                batch = _Batch()
    if batch.size:
        batch.read(parser, found)
    return {k: list(calls.values()) for k, calls in sorted(found.items())}


class _Batch:
    """Tails of rejected lines, in one buffer (each followed by _APART), with where each
    begins in it, the reject it is of and where in that reject's line it begins."""

    def __init__(self) -> None:
        self.parts: list[bytes] = [b"\n"]     # a blank line first: no tail taken for a BOM
        self.size = 1
        self.begins: list[np.ndarray] = []
        self.lines: list[tuple[int, bytes, np.ndarray]] = []

    def add(self, k: int, raw: bytes, tried: np.ndarray) -> None:
        spans = len(raw) - tried + len(_APART)
        self.begins.append(self.size + np.concatenate(([0], np.cumsum(spans)[:-1])))
        self.lines.append((k, raw, tried))
        self.parts.append(_APART.join([raw[p:] for p in tried.tolist()]) + _APART)
        self.size += int(spans.sum())

    def read(self, parser, found: dict[int, dict[tuple[int, int, int, int], Tail]]) -> None:
        """Parse the tails with a fresh parser like `parser`, and note each that reads as
        one valid record into found."""
        reader = parser.fresh()
        rows = reader.rows_of(b"".join(self.parts))
        if not len(rows["offset"]):
            return
        pilots: dict[int, tuple[int, tuple[int, ...]]] = {}
        hunts, members = reader.take_hunts(), reader.take_hunt_members()
        m = 0
        for hunt in hunts:
            n = int(hunt["members"])
            pilots[int(hunt["call_id"])] = (int(hunt["pilot"]), tuple(int(v) for v in members[m:m + n]))
            m += n
        begins = np.concatenate(self.begins) + reader.offset - self.size
        which = np.searchsorted(begins, rows["offset"])
        owner = np.repeat(np.arange(len(self.lines)), [len(t) for _, _, t in self.lines])
        at = np.concatenate([t for _, _, t in self.lines])
        for j in np.flatnonzero(begins[np.minimum(which, len(begins) - 1)] == rows["offset"]).tolist():
            k, raw, _ = self.lines[int(owner[which[j]])]
            p = int(at[which[j]])
            called, rang = int(rows["called"][j]), int(rows["final"][j])
            if rang == called:
                rang = 0
            start, redirecting = int(rows["start_us"][j]), int(rows["redirecting"][j])
            pilot, named = pilots.get(int(rows["call_id"][j]), (0, ()))
            calls = found.setdefault(k, {})
            if (called, rang, redirecting, start) not in calls:
                calls[(called, rang, redirecting, start)] = Tail(p, raw[p:], called, rang,
                                                                 redirecting, start, pilot, named)


def annotate(bad: list, glued: dict[int, list[Tail]]) -> list:
    """The rejects with what their glued records say added to their reason."""
    if not glued:
        return bad
    out = list(bad)
    for k, tails in glued.items():
        record, offset, reason, raw = out[k]
        at = min(t.at for t in tails)
        out[k] = (record, offset, reason + f" (from byte {at} of the line on, it reads as a whole "
                  "record: a record cut short with the next written on after it, or fields added "
                  "to one; its call is held as unreadable)", raw)
    return out
