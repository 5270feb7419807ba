"""What an ingest has parsed and not yet committed, and the thread its commits run on:
one LMDB write transaction per batch of (line, call) pairs, with everything the batch
adds besides (rejects' unreadable calls, caller identities, the switch's own traces, the
feed's counters and the source's position) in the same transaction."""
from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from ..parsing import glued, salvage
from ..parsing.formats import UNLOGGED_LEGS
from ..store import folds, hunts, index, lookup


class Pending:
    """(line, entry) pairs parsed but not yet committed: one write transaction per batch."""

    def __init__(self, store, pairs: int = 1 << 16):
        self.store = store
        self.pairs = pairs              # about how many pairs a batch holds (its room's size)
        self.count = 0
        self._room: _Room | None = None  # the pending pairs, in arrays kept from batch to batch
        self._free: list[_Room] = []     # rooms whose commits have ended (appended on their thread)
        self.position = (0, 0)      # (offset, record) up to which the source is pending
        self.checkpoint: Any = None  # checkpoint(txn, offset=, record=): saved with the commit
        self.feed = 0               # the feed whose counters commit with these pairs
        self.records = self.rejected = 0
        self.newest: int | None = None   # newest call start among the pending records
        self.unreadable: list[tuple[bytes, bytes]] = []   # (key, value) of the unreadable-record log
        self.lost_pairs = 0         # pending pairs that are unreadable calls
        self.switch_traces = 0      # traces run for activations the switch recorded
        self.later_calls = 0        # successes a call committed since contradicts (evidence.later)
        self.later_checked = False  # this run has checked them once
        self.unreadable_total = 0   # unreadable-call pairs committed
        self.identities: dict[int, str] = {}   # caller identities parsed: {packed: text}
        self.activations: list[tuple[int, Any]] = []   # (source, traces the switch recorded) parsed
        self.last_end: int | None = None   # when the last good record ended: time for a reject without one
        self.zone = "UTC"           # the feed's zone, for times a reject writes in another form
        self.local_zone: str | None = None   # the zone, where the format's times are local
        # the feed's switch may leave calls that never connected unlogged (CUCM, Kamailio's
        # transaction rows): which records show it does not (Format.unconnected_shown_by;
        # None: it always logs them), and what the pending ones show goes with the commit
        # (lookup.note_unconnected)
        self.omits_unconnected: str | None = None
        self.unconnected: int | None = None
        self.unconnected_sources: set[int] = set()
        self.legs_from: int | None = None    # the earliest call this run found FreeSWITCH's legs of
        self.legs_tail: dict | None = None   # the last records read, for legs a read's end split
        self.local_noted = False    # this run noted its feed indexes local lines (lookup.LOCAL_FEEDS)
        self.tenants: tuple[int, ...] = ()   # the tenants its records named (lookup.TENANTS)
        self.tenant_names: dict[int, str] = {}                  # ... and their names
        # calls through a hunt pilot parsed (store.hunts), and the members their records name
        self.hunts: list[tuple[np.ndarray, np.ndarray | None]] = []
        self.hunt_groups: dict[int, tuple[int, ...]] = {}   # the feed's pilots' members, configured

    def note_parsed(self, parser, bad, columns, source: int, served=()) -> list:
        """What a parsed chunk adds besides its calls: the text of new caller identities,
        and failing closed on its rejects (cdrtrace.salvage): an unreadable call in the
        index of each line found, and every reject with a time in the feed's log. Returns
        the rejects, their likely cause added to the reason (salvage.explain)."""
        self.identities.update(parser.take_identities())
        if tenants := parser.take_tenants():
            names, held = parser.take_tenant_names(), self.tenant_names
            self.tenants = lookup.least_two(self.tenants, tenants)
            self.tenant_names = {t: held.get(t) or names[t] for t in self.tenants}
        if self.omits_unconnected:
            self.unconnected_sources.add(source)
            if (shown := self._unconnected_shown(columns, self.omits_unconnected)) is not None:
                self.unconnected = shown if self.unconnected is None else min(self.unconnected, shown)
        taken = parser.take_activations()
        if taken:
            self.activations.append((source, taken))
        self._note_hunts(parser.take_hunts(), parser.take_hunt_members(), columns)
        before = self.last_end      # the good record before this chunk's: a reject's time
        if len(columns["start_us"]):
            self.last_end = max(int(columns["end_us"][-1]), int(columns["start_us"][-1]) + 1)
        if not bad:
            return bad
        bad = salvage.explain(bad, parser.delimiter, 3)
        lost = salvage.unreadable(parser, bad, columns, source, before, self.zone)
        if lost.batch is not None:
            lines, _ = index.entries_for_batch(lost.batch, source, served, into=self.room_for)
            self.lost_pairs += len(lines)
        self.unreadable += lost.log
        self._note_hunts(lost.hunts, lost.members, None if lost.batch is None else lost.batch.columns)
        return glued.annotate(bad, lost.glued)

    def _unconnected_shown(self, columns, kind: str) -> int | None:
        """The earliest start among the records read that show the feed's switch logs what
        it may leave unlogged (lookup.unconnected_proof); for FreeSWITCH's two legs, those
        of a call the end of the last read fell between too (lookup.legs_across)."""
        if kind != UNLOGGED_LEGS:
            return lookup.unconnected_proof(columns, kind)
        # two legs are sought (a sort of each read's call ids) until found, and then only in
        # a read with a call begun before the one found: in a file written as calls end,
        # seldom. (A read passed over leaves the tail as it was: a proof with a leg of an
        # older read is still a call's two legs.)
        if self.legs_from is not None and not lookup.begins_before(
                self.legs_from, columns, self.legs_tail):
            return None
        shown = lookup.unconnected_proof(columns, kind)
        across, self.legs_tail = lookup.legs_across(self.legs_tail, columns)
        if across is not None:
            shown = across if shown is None else min(shown, across)
        if shown is not None:
            self.legs_from = shown if self.legs_from is None else min(self.legs_from, shown)
        return shown

    def _note_hunts(self, noted, members, columns) -> None:
        """Calls through a hunt pilot: the parser's (or salvage's) notes with the members
        their records name, and the calls of columns dialled to a pilot the feed lists
        that it did not note (store.hunts.dialled_to_listed)."""
        if len(noted):
            self.hunts.append((noted, members))
        if self.hunt_groups and columns is not None and len(
                listed := hunts.dialled_to_listed(columns, self.hunt_groups, noted)):
            self.hunts.append((listed, None))

    def room_for(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Arrays for the next n pairs (lines, entries), pending from now on: the caller
        fills them before asking for more (index.entries_for_batch's into)."""
        if self._room is None:
            self._room = self._free.pop() if self._free else _Room(self.pairs)
        at, self.count = self.count, self.count + n
        return self._room.take(at, n)

    def note(self, batch, rejected: int) -> int | None:
        """Count a parsed chunk toward the feed's statistics (committed with its pairs);
        its newest call start (None: no call)."""
        self.records += len(batch) + rejected
        self.rejected += rejected
        if not len(batch):
            return None
        newest = int(batch["start_us"].max())
        self.newest = newest if self.newest is None else max(self.newest, newest)
        return newest

    def commit(self, finish=None) -> int:
        """Write the pending pairs in one transaction; finish(txn), if given, runs in it
        (the source's completion mark commits with its last records)."""
        return self.take(finish)()

    def take(self, finish=None) -> Callable[[], int]:
        """The commit of what is pending, to run now or on the committer's thread: it
        holds everything it writes (the position too), and this is empty again."""
        if not self.count and finish is None and not self.records:
            return lambda: 0
        room, self._room = self._room, None
        pairs = room.pairs(self.count) if room is not None and self.count else None
        self.count = 0
        db, keep = self.store.envs.db["index"], self.store.config["keep"]
        counts = (self.records, self.rejected, self.newest)
        self.records = self.rejected = 0
        self.newest = None
        unreadable, self.unreadable = self.unreadable, []
        log_db = self.store.envs.db["unreadable"]
        lost, self.lost_pairs = self.lost_pairs, 0
        identities, self.identities = self.identities, {}
        identity_db = self.store.envs.db["identities"]
        activations, self.activations = self.activations, []
        hunted, self.hunts = self.hunts, []
        hunt_db = self.store.envs.db["hunts"]
        checkpoint, (offset, record) = self.checkpoint, self.position
        local_zone, meta_db = self.local_zone, self.store.envs.db["meta"]
        omits, unconnected, self.unconnected = self.omits_unconnected, self.unconnected, None
        sources, self.unconnected_sources = self.unconnected_sources, set()
        # a feed that indexes a line of its switch's own (an extension) shares that
        # numbering with every other such feed (lookup.shared_local), noted once a run
        # (a failed commit ends the run: the next run, a new Pending, notes it again)
        local = (not self.local_noted and pairs is not None
                 and lookup.has_local_lines(pairs[0]))
        self.local_noted = self.local_noted or local
        (tenants, names), self.tenants, self.tenant_names = (self.tenants, self.tenant_names), (), {}

        def work(txn, last: dict | None, due: list[bytes]):
            written = index.write_entries(txn, db=db, keep=keep, **last) if last else 0
            for key in due:                # calls of lines with traces, and through hunt
                txn.put(key, b"", db=meta_db)  # pilots before a trace (evidence.later)
            if local:
                lookup.note_local_feed(txn, meta_db, self.feed)
            if tenants:                    # whose extensions its records are (lookup.TENANTS)
                lookup.note_tenants(txn, meta_db, self.feed, tenants, names)
            if local_zone is not None:     # its repeated hours, for the trace (store.folds)
                folds.add_zone(txn, meta_db, local_zone, self.feed)
            if omits:                      # what it showed of calls that never connected
                lookup.note_unconnected(txn, meta_db, self.feed, unconnected, sources, omits)
            for key, value in unreadable:
                txn.put(key, value, db=log_db)
            for packed, text in identities.items():
                txn.put(packed.to_bytes(8, "big"), text.encode("latin-1"), db=identity_db)
            if hunted:
                hunts.note_feed(txn, meta_db, self.feed)
                for part, named in hunted:
                    txn.cursor(hunt_db).putmulti(hunts.items(self.feed, part, self.hunt_groups, named))
                    hunts.note_unlisted(txn, meta_db, self.feed, part, self.hunt_groups)
            for source, taken in activations:
                self.store.catalog.queue_activations(txn, self.feed, source, taken, local_zone)
            self.store.catalog.count_feed(txn, self.feed, *counts)
            if finish is not None:
                finish(txn)
            elif checkpoint is not None:
                checkpoint(txn, offset=offset, record=record)
            return written

        def run() -> int:
            written, last = 0, None
            due = hunts.later_due(self.store.traced_lines(), self.feed, hunted,
                                  self.hunt_groups) if hunted else []
            try:
                if pairs is not None:
                    lines, entries = pairs
                    self.store.envs.reserve(len(lines))
                    ordered, order = index.line_order(lines)
                    seen = self.store.traced_lines()
                    due += index.later_due(seen, ordered, order, entries)
                    ranges = [{"lines": ordered[part], "entries": entries, "order": order[part]}
                              for part in index.key_ranges(ordered, self.store.envs.index_bytes())]
                    # all but the last range of lines in transactions of their own, so no
                    # commit holds a copy of the whole index: merging is idempotent, so a
                    # crash before the last (which saves the position) only merges them again
                    *ranges, last = ranges
                    for part in ranges:
                        written += self.store.envs.write(functools.partial(
                            index.write_entries, db=db, keep=keep, **part))
                written += self.store.envs.write(functools.partial(work, last=last, due=due))
                if pairs is not None and (now := self.store.traced_lines())[0] is not seen[0]:
                    # a trace made while this was written (from a snapshot before it): its
                    # line's calls here are queued too, before newer calls push them out
                    more = sorted(set(index.later_due(now, ordered, order, entries)) - set(due))
                    if more:
                        self.store.envs.write(lambda txn: [txn.put(k, b"", db=meta_db)
                                                           for k in more])
                        due += more
            finally:
                if room is not None and len(self._free) < 2:
                    self._free.append(room)      # written or not, nothing reads it again
            self.unreadable_total += lost
            if activations:          # their calls are in the index now: trace them
                self.switch_traces += len(self.store.run_activations())
            if due or not self.later_checked:   # calls of traced lines (and, once a run,
                # any a crash left queued): do they contradict a success?
                self.later_calls += self.store.note_later_calls()
                self.later_checked = True
            return written - lost
        return run


ENTRY = index.ENTRY_DTYPE.itemsize      # bytes of one index entry


class _Room:
    """The arrays a batch's (line, entry) pairs are written in as they are parsed, grown if
    a batch outgrows them and used again for a later batch once its commit has ended.
    (Each chunk's pairs in arrays of their own, joined into new arrays at the commit,
    faulted in 48 MB of fresh memory a million pairs on the parse thread.)"""

    def __init__(self, pairs: int) -> None:
        self.lines = np.empty(pairs, np.uint64)     # pages are touched as pairs arrive
        self.entries = np.empty(pairs, index.ENTRY_DTYPE)

    def take(self, at: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Views of pairs at..at+n, the arrays grown (the first at pairs kept) if needed."""
        end = at + n
        if end > len(self.lines):
            grown = max(end, 2 * len(self.lines))
            lines, entries = np.empty(grown, np.uint64), np.empty(grown, index.ENTRY_DTYPE)
            lines[:at] = self.lines[:at]
            # the entries' bytes as they are (a structured copy goes field by field)
            entries.view(np.uint8)[:at * ENTRY] = self.entries.view(np.uint8)[:at * ENTRY]
            self.lines, self.entries = lines, entries
        return self.lines[at:end], self.entries[at:end]

    def pairs(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        return self.lines[:count], self.entries[:count]



class Committer:
    """Batch ingest's commits on a thread of their own, one at a time and in order, while
    the next records are parsed: the parser and the native index writer both run without
    the GIL, on the two cores. A commit's error is raised where the next one is handed over
    (or at the end); nothing after a failed commit commits."""

    def __init__(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cdrtrace-commit")
        self.future: concurrent.futures.Future[int] | None = None

    def submit(self, job: Callable[[], int]) -> int:
        """Wait for the commit in flight (returning what it wrote), then start job."""
        done = self.wait()
        self.future = self.pool.submit(job)
        return done

    def wait(self) -> int:
        future, self.future = self.future, None
        return future.result() if future is not None else 0

    def close(self) -> None:
        self.pool.shutdown(wait=True)
