"""Streaming ingest's core, LiveFeed, shared by every live source: following a file or
stdin (ingestion.following) and Kafka partitions (ingestion.kafka).

In a LiveFeed records are parsed as bytes arrive and committed in
micro-batches (N records or T milliseconds, whichever first). Each commit carries, in the
same LMDB write transaction, the source's position (exactly once through crashes), the
feed's counters and watermark, and the feed's heartbeat, which marks it live so traces
activated after its watermark wait or are recorded as pending (docs/trace-rules.md). After each
commit, pending traces the feed has caught up with are resolved.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import numpy as np

from ..errors import ConfigError, SourceError
from ..parsing.formats import TIME_LOCAL, CallBatch, Format
from ..parsing.parsers import get_format, make_parser
from ..store import index, liveness
from ..store.archive import FLUSH_ROWS, ArchiveWriter
from ..store.catalog import ArchiveMark
from .batch import feed_settings
from .commits import Pending
from .sources import CHUNK_BYTES, RejectsWriter

log = logging.getLogger("cdrtrace.stream")
DEFAULT_CDR_DELAY = 2.0   # seconds: a switch writes a CDR this soon after the call ends
# A record read at the source's live end longer than the CDR delay after its call ended
# shows a switch that holds finished calls' records (Asterisk's cdr.conf batch=yes: up to
# 300 s): the feed's delay grows to that lateness, up to this bound; later than it is no
# buffer but times that are wrong (a zone, a clock), and is only logged
LEARNED_DELAY_MAX_US = 900 * 1_000_000


@dataclasses.dataclass
class StreamOptions:
    """How a live feed batches, beats and reports."""

    batch_records: int = 200_000    # commit when this many records are waiting ...
    batch_ms: float = 50.0          # ... or the oldest waiting record is this old
    poll_ms: float = 5.0            # how often an idle source is looked at again
    heartbeat_s: float = 1.0        # an idle feed still commits its heartbeat this often
    cdr_delay_s: float | None = None  # how late the switch writes a CDR (default: the
                                      # feed's cdr_delay_seconds, else DEFAULT_CDR_DELAY)
    log_every_s: float = 10.0       # one log line per interval, never per record
    idle_exit_s: float | None = None  # stop once the source has been idle this long
    archive_every_s: float = 60.0   # write the call archive at most this often (or per
                                    # FLUSH_ROWS calls): Parquet files, not one per batch
    chunk_bytes: int = CHUNK_BYTES

    def __post_init__(self):
        if self.batch_records < 1:
            raise ConfigError("--batch-records must be at least 1")
        if not all(math.isfinite(v) and v > 0 for v in (self.batch_ms, self.poll_ms, self.heartbeat_s)):
            raise ConfigError("--batch-ms, --poll-ms and the heartbeat must be positive numbers")
        if self.cdr_delay_s is not None and self.cdr_delay_s < 0:
            raise ConfigError("--cdr-delay must not be negative")


@dataclasses.dataclass
class StreamSummary:
    records: int = 0
    indexed: int = 0
    unreadable: int = 0           # (line, unreadable call) pairs held for rejects
    rejected: int = 0
    commits: int = 0
    rotations: int = 0
    truncations: int = 0
    resolved: int = 0             # pending traces resolved by this feed
    contested: int = 0            # successes a call it read contradicts (evidence.later)
    seconds: float = 0.0
    resumed: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d


class LiveFeed:
    """The part every live source shares: the parser of the current source, the
    uncommitted micro-batch, heartbeats, pending-trace resolution and the interval log."""

    def __init__(self, store, fmt: str | Format | None = None, zone: str | None = None,
                 country_code: int | None = None, feed=None, feed_id: int = 0,
                 options: StreamOptions | None = None, rejects_path=None, label: str = "stream",
                 archive=None):
        settings = feed_settings(store, feed, fmt, zone, country_code, feed_id)
        if settings.fmt == "auto":
            raise SourceError("a live feed needs its format named (auto reads a whole file)")
        feed_id = settings.feed_id
        self.store = store
        self.form = settings.fmt if isinstance(settings.fmt, Format) else get_format(settings.fmt)
        self.zone = settings.zone
        self.country_code = settings.country_code
        self.min_ring = settings.min_ring_seconds
        self.served = settings.served
        self.options = options or StreamOptions()
        delay = self.options.cdr_delay_s
        if delay is None:
            delay = settings.cdr_delay_seconds
        self.delay_us = int((DEFAULT_CDR_DELAY if delay is None else delay) * 1e6)
        self.feed_id = feed_id
        self.label = label
        self.rejects = RejectsWriter(rejects_path or store.path / "rejects.jsonl")
        self.summary = StreamSummary()
        self.parser: Any = None
        self.source = 0
        self.name = label
        self.checkpoint: Any = None   # checkpoint(txn, offset, record): the source's position
        self.pending = Pending(store)
        self.pending.feed = feed_id
        self.pending.hunt_groups = settings.hunt_groups if self.form.groups_in_one_record() else {}
        self.pending.zone = self.zone
        self.pending.local_zone = self.zone if self.form.time_kind == TIME_LOCAL else None
        # the call archive: archive=False turns it off (a source that cannot archive)
        self.archive_root = None if archive is False else (
            store.envs.adopt_archive(archive) if archive else store.envs.archive_dir())
        self.archiver: ArchiveWriter | None = None
        self.archive_mark: ArchiveMark | None = None   # the archive is complete to here
        self.archived_at = time.monotonic()
        self.skip_until = -1        # records up to this number are archived, not indexed
        self.first_waiting: float | None = None   # when the oldest uncommitted record arrived
        self.fed_newest: int | None = None      # the newest call start of the last feed()
        self.last_commit = 0.0
        self.idle_seen_us: int | None = None   # wall time the source was last seen idle at its end
        self.idle_since: float | None = None   # monotonic time it became idle (None: busy)
        self.at_tail = False        # seen idle at its end once: what comes now is fresh
        # the latest a fresh record came after its call ended, as this feed's followers
        # learned it (kept in the store: a restart does not forget a switch's buffer)
        with store.envs.read() as txn:
            self.late_us, self.late_seen_us = liveness.learned_delay(txn, store.envs.db["meta"], feed_id)
        self.late_said = (self.late_us, self.late_seen_us)   # as the store holds it
        if self.late_us > self.delay_us:
            log.info("%s: keeps the CDR delay its feed learned, %.1f s (its switch holds "
                     "records back)", label, self.late_us / 1e6)
        self.warned_late = False    # a record came later than any buffer explains: said once
        self.started = time.monotonic()
        self.last_log = self.started
        self.logged_records = 0
        self.failed = False         # an error broke the feed: it commits nothing more

    # ---------------------------------------------------------------- sources

    def start_source(self, name: str, source: int, header=None, offset: int = 0,
                     record: int = 0, checkpoint=None, archive_files: int = 0,
                     skip_until: int = -1, index_offset: int = 0) -> None:
        """Parse a new source (a file generation, a pipe, a partition) from offset.

        With an archive, a restart reads again from where the archive was last complete
        (offset, record): records up to skip_until are already indexed, so they are only
        archived. archive_files: the source's archive files written by then; later ones
        came from an interrupted run and are removed."""
        self.use(name, source, self.new_parser(header, offset, record), checkpoint)
        self.skip_until = skip_until
        # the position commits never move back: while records are read again for the
        # archive, the committed index position stays where it was
        self.pending.position = (index_offset, skip_until) if skip_until >= 0 else (offset, record)
        if self.archive_root:
            self.archiver = ArchiveWriter(self.archive_root, source, archive_files)
            self.archiver.prune()
            self.archive_mark = ArchiveMark(offset, record, archive_files)
            self.archived_at = time.monotonic()

    def new_parser(self, header=None, offset: int = 0, record: int = 0):
        # which records show the switch logs the calls that never connected, if it may not
        self.pending.omits_unconnected = self.form.unconnected_shown_by(header)
        return make_parser(self.form, self.zone, self.country_code, self.feed_id, self.min_ring,
                           header, start_offset=offset, start_record=record)

    def use(self, name: str, source: int, parser, checkpoint=None, archiver=None,
            skip_until: int = -1) -> None:
        """Parse the next bytes as this source's (sources that interleave: partitions)."""
        self.parser, self.name, self.source, self.checkpoint = parser, name, source, checkpoint
        self.archiver, self.skip_until = archiver, skip_until

    def feed(self, buffer, final: bool = False, offsets=None) -> int:
        """Parse complete records in buffer (all of it when final); returns bytes consumed.
        offsets, if given, maps the batch's byte offsets to the source's own positions
        (Kafka message offsets)."""
        columns, bad, consumed = self.parser.feed(buffer, final)
        batch = CallBatch(columns, self.source)
        if self.at_tail and len(batch):
            self.note_lateness(columns)
        if self.archiver is not None:
            self.archiver.add(batch)
        if self.skip_until >= 0:           # read again for the archive: indexed already
            fresh = columns["record"] > self.skip_until
            if not fresh.all():
                columns = {k: v[fresh] for k, v in columns.items()}
                batch = CallBatch(columns, self.source)
            bad = [b for b in bad if b[0] > self.skip_until]
        if offsets is not None:
            if len(batch):
                columns["offset"] = offsets(columns["offset"])
            if bad:
                where = offsets(np.array([b[1] for b in bad], np.int64))
                bad = [(r, int(o), reason, raw) for (r, _, reason, raw), o in zip(bad, where, strict=True)]
        if len(batch):
            index.entries_for_batch(batch, self.source, self.served, into=self.pending.room_for)
        bad = self.pending.note_parsed(self.parser, bad, columns, self.source, self.served)
        if self.parser.record >= self.pending.position[1]:
            self.pending.position = (self.parser.offset, self.parser.record)
        self.fed_newest = self.pending.note(batch, len(bad))
        self.rejects.write(self.name, bad, self.source)
        got = len(batch) + len(bad)
        self.summary.records += got
        self.summary.rejected += len(bad)
        if got and self.first_waiting is None:
            self.first_waiting = time.monotonic()
        return consumed

    # ---------------------------------------------------------------- commits

    def due(self) -> bool:
        """Is the micro-batch full, or its oldest record T milliseconds old?"""
        if self.first_waiting is None:
            return time.monotonic() - self.last_commit >= self.options.heartbeat_s
        return (self.pending.records >= self.options.batch_records
                or (time.monotonic() - self.first_waiting) * 1000 >= self.options.batch_ms)

    def note_lateness(self, columns) -> None:
        """How long after their calls ended fresh records arrive: beyond the CDR delay,
        the feed's delay grows to it (the switch holds records back, and an idle feed's
        watermark would pass a *57 while the call that rang the line is still held)."""
        ended = int(np.maximum(columns["end_us"], columns["start_us"]).min())
        now = time.time_ns() // 1000
        late = now - ended
        if late <= self.delay_us:
            return
        if late > LEARNED_DELAY_MAX_US:
            if not self.warned_late:
                self.warned_late = True
                log.warning("%s: a record came %.0f s after its call ended: no switch's CDR "
                            "buffer explains that; its zone (--tz) or its switch's clock may be "
                            "wrong", self.label, late / 1e6)
            return
        self.late_seen_us = now            # the switch still holds its records back
        if late <= self.late_us:
            return
        said, self.late_us = self.late_us, late
        if late >= 2 * said:                 # said once, and again as it doubles
            log.warning("%s: a record came %.1f s after its call ended, more than the feed's "
                        "CDR delay (%.1f s): the switch holds its records back (Asterisk: "
                        "batch=yes in cdr.conf); traces now wait that long for it (set "
                        "cdr_delay_seconds)", self.label, late / 1e6, self.delay_us / 1e6)

    def idle(self) -> bool:
        """The source has nothing more for now: the store is complete up to this moment
        (less the CDR delay); commit what waits and beat. True once the source has been
        idle options.idle_exit_s (time to stop)."""
        self.idle_seen_us = time.time_ns() // 1000
        self.at_tail = True
        if self.first_waiting is not None or time.monotonic() - self.last_commit >= self.options.heartbeat_s:
            self.commit()
        self.idle_since = self.idle_since or time.monotonic()
        return (self.options.idle_exit_s is not None
                and time.monotonic() - self.idle_since >= self.options.idle_exit_s)

    def busy(self) -> None:
        """The source delivered something: it is not idle."""
        self.idle_since = None

    def archive_due(self) -> bool:
        return self.archiver is not None and (
            sum(self.archiver.rows.values()) >= FLUSH_ROWS
            or time.monotonic() - self.archived_at >= self.options.archive_every_s)

    def flush_archive(self) -> None:
        """Write the archive's pending calls: it is complete up to the parser's position."""
        if self.archiver is None:
            return
        self.archiver.flush()
        self.archive_mark = ArchiveMark(self.parser.offset, self.parser.record, self.archiver.files)
        self.archived_at = time.monotonic()

    def claim(self, newest: int | None) -> None:
        """For a source of several streams (Kafka's partitions): the call start up to
        which the next commit claims the feed's calls read (its watermark), in place of
        the newest start pending (None: no claim)."""
        self.pending.newest = newest

    def commit(self, detach: bool = False, extra=None, stopped: bool = False) -> None:
        """One write transaction: the waiting records, the feed's counters, the source's
        position (extra(txn) for a source that keeps its own), the heartbeat. The archive
        is written first when due (always on detach), and where it is complete commits
        with the position. If it fails, the feed is failed: nothing more commits (the
        records it held are read again from the last committed position)."""
        if self.failed:
            raise RuntimeError("a failed live feed commits nothing more")
        try:
            self._commit(detach, extra, stopped)
        except BaseException:
            self.failed = True
            raise

    def _commit(self, detach: bool, extra, stopped: bool) -> None:
        if detach or stopped or self.archive_due():
            self.flush_archive()
        store, position, checkpoint = self.store, self.pending.position, self.checkpoint
        mark = self.archive_mark
        learned = ((self.late_us, self.late_seen_us)
                   if self.late_us and (self.late_us, self.late_seen_us) != self.late_said else None)
        self.rejects.flush()              # durable before the commit that covers them

        def finish(txn):
            if checkpoint is not None:
                checkpoint(txn, offset=position[0], record=position[1], archive=mark)
            if extra is not None:
                extra(txn)
            if learned is not None:
                store.liveness.learn(txn, self.feed_id, *learned)
            if detach:
                store.liveness.detach(txn, self.feed_id)
            else:
                store.liveness.heartbeat(txn, self.feed_id, idle_seen_us=self.idle_seen_us,
                                         delay_us=max(self.delay_us, self.late_us),
                                         served=self.served, source=self.name, stopped=stopped)
        self.summary.indexed += self.pending.commit(finish)
        if learned is not None:
            self.late_said = learned
        self.summary.unreadable = self.pending.unreadable_total
        self.summary.contested = self.pending.later_calls
        self.summary.commits += 1
        self.first_waiting = None
        self.last_commit = time.monotonic()
        self.summary.resolved += len(store.resolve_pending())
        if not (detach or stopped):       # the last commit is logged by finish
            self.maybe_log()

    def maybe_log(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_log < self.options.log_every_s:
            return
        rate = (self.summary.records - self.logged_records) / max(now - self.last_log, 1e-9)
        feed: dict = next((f for f in self.store.stats()["feeds"] if f["feed_id"] == self.feed_id), {})
        log.info("%s: %d records (%.0f/s), %d rejected, %d commits, watermark %s (lag %s s), "
                 "%d pending traces resolved", self.label, self.summary.records, rate,
                 self.summary.rejected, self.summary.commits, feed.get("watermark") or "-",
                 "-" if feed.get("lag_seconds") is None else feed["lag_seconds"],
                 self.summary.resolved)
        if feed.get("ahead_of_clock"):
            log.warning("%s: its newest call is stamped %s s after the clock: its zone (--tz) "
                        "or its switch's clock is wrong, and traces of its lines are "
                        "untraceable", self.label, -feed["lag_seconds"])
        self.last_log, self.logged_records = now, self.summary.records

    def close(self, stopped: bool = False) -> StreamSummary:
        """Commit what waits. If the source ended (a pipe closed, idle for --until-idle),
        the feed detaches: its data is complete as ingested. A follower stopped while its
        switch goes on writing (stopped: a signal) leaves its feed attached and stalled:
        traces of its lines wait for the next follower (a restart), or for an operator
        to detach the feed. A feed that failed (an error while reading, parsing or
        committing) commits nothing and stalls likewise; a restart reads again from the
        last committed position."""
        if self.failed:
            return self.abandon()
        self.commit(detach=not stopped, stopped=stopped)
        if stopped:
            log.info("%s: stopped; its feed stays attached (stalled): traces of its lines "
                     "wait for the next follower (or: cdrtrace feeds --detach FEED "
                     "--operator NAME, if the feed is retired)", self.label)
        return self.finish()

    def abandon(self) -> StreamSummary:
        """Stall the feed without committing anything of what waits (best effort: the
        heartbeat goes stale anyway if the store cannot be written)."""
        self.failed = True
        try:
            self.store.envs.write(lambda txn: self.store.liveness.halt(txn, self.feed_id))
        except Exception as exc:   # noqa: BLE001 - already failing: the original error wins
            log.warning("%s: could not mark the failed feed stalled: %s", self.label, exc)
        return self.finish()

    def finish(self) -> StreamSummary:
        self.rejects.close()
        self.summary.seconds = time.monotonic() - self.started
        self.maybe_log(force=True)
        return self.summary
