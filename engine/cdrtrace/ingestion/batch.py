"""Batch ingest: source bytes -> native parser -> columnar batch -> index, one LMDB
write transaction per batch (a crash leaves the last committed batch)."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..config import Feed, both_served
from ..errors import ConfigError, FormatError, ParseError, SourceError
from ..parsing.formats import TIME_LOCAL, CallBatch, Format
from ..parsing.parsers import (
    MAX_HEADER,
    check_named_format,
    cucm_cmr,
    detect_format,
    get_format,
    make_parser,
    normalizer,
    read_header,
)
from ..store import index, lookup
from ..store.catalog import ArchiveMark, Position
from . import sqlite
from .commits import Committer, Pending
from .sources import (
    CHUNK_BYTES,
    CUT_RECORD,
    CorruptData,
    IdentityThread,
    RejectsWriter,
    cut_message,
    expand,
    identity,
    is_plain,
    open_source,
    reader_for,
)

BATCH_PAIRS = 1 << 20   # (line, call) pairs per write transaction: about 48 MB in flight


@dataclasses.dataclass(frozen=True)
class FeedSettings:
    """What an ingest of one feed runs with, batch and live alike."""

    fmt: str | Format           # a format, a name, or "auto" (batch only)
    zone: str
    country_code: int
    feed_id: int
    min_ring_seconds: float
    served: tuple[str, ...]
    cdr_delay_seconds: float | None
    hunt_groups: dict[int, tuple[int, ...]] = dataclasses.field(default_factory=dict)


def feed_settings(store, feed: Feed | None = None, fmt: str | Format | None = None,
                  zone: str | None = None, country_code: int | None = None,
                  feed_id: int = 0) -> FeedSettings:
    """Resolve a feed's settings, one rule for every ingest path: what is given explicitly
    wins, then the feed's (cdrtrace.toml), then the store's; the format defaults to
    asterisk."""
    cfg = store.config
    if feed is not None:
        feed_id = feed_id or store.catalog.feed_id(feed.name)
    served = tuple(feed.served) if feed is not None else ()
    shard = getattr(store, "shard", None)
    if shard is not None:                 # a shard's store indexes only its own lines
        served = both_served(served, shard.prefixes)
        if not served:
            raise ConfigError(f"feed {feed.name if feed else '(none)'} serves no line of shard "
                              f"{shard.name} ({', '.join(shard.prefixes)})")
    return FeedSettings(
        fmt=fmt or (feed.format if feed is not None else None) or "asterisk",
        zone=zone or (feed.zone if feed is not None else None) or cfg["zone"],
        country_code=country_code or (feed.country_code if feed is not None else None)
        or cfg["country_code"],
        feed_id=feed_id,
        min_ring_seconds=feed.min_ring_seconds if feed is not None else cfg["min_ring_seconds"],
        served=served,
        cdr_delay_seconds=feed.cdr_delay_seconds if feed is not None else None,
        hunt_groups=_hunt_groups(feed))


def _hunt_groups(feed: Feed | None) -> dict[int, tuple[int, ...]]:
    """A feed's hunt pilots' members (Feed.hunt_groups) as the index writes lines."""
    if feed is None:
        return {}
    number = normalizer(feed.country_code)
    return {number(pilot): tuple(number(m) for m in members)
            for pilot, members in feed.hunt_groups}


@dataclasses.dataclass
class IngestSummary:
    sources: int = 0
    records: int = 0
    indexed: int = 0        # (line, call) pairs written to the index
    unreadable: int = 0     # (line, unreadable call) pairs held for rejects (fail closed)
    switch_traces: int = 0  # traces the switch itself recorded (docs/trace-rules.md), run
    contested: int = 0      # successes a call it read contradicts (evidence.later)
    rejected: int = 0
    markers: int = 0        # header, types, version, Start and End lines: checked, not calls
    bytes: int = 0
    seconds: float = 0.0
    rejects_path: str | None = None
    skipped: list = dataclasses.field(default_factory=list)   # already ingested
    resumed: list = dataclasses.field(default_factory=list)   # continued after a crash
    appended: list = dataclasses.field(default_factory=list)  # grown since: read from its end
    failed: list = dataclasses.field(default_factory=list)    # {source, reason}: not read
    no_calls: list = dataclasses.field(default_factory=list)  # {source, reason}: not CDRs

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["records_per_second"] = round(self.records_per_second)
        d["seconds"] = round(self.seconds, 3)
        return d


def ingest(store, sources: Iterable[str], fmt: str | Format | None = None,
           zone: str | None = None, force: bool = False, feed: Feed | None = None,
           archive: str | os.PathLike | None = None,
           country_code: int | None = None, feed_id: int = 0,
           rejects_path: str | os.PathLike | None = None, chunk_bytes: int = CHUNK_BYTES,
           batch_pairs: int = BATCH_PAIRS,
           progress: Callable[[int, int | None], None] | None = None,
           keep_going: bool = False) -> IngestSummary:
    """Ingest CDR sources into the store's index: files, directories, globs, '-' for stdin,
    compressed or not. fmt may be 'auto'. A file whose content was already ingested is
    skipped (listed in summary.skipped) unless force is set. keep_going: a source that
    cannot be read (missing, unknown format, no header) is listed in summary.failed with
    the reason and the others are still ingested; otherwise its error is raised."""
    settings = feed_settings(store, feed, fmt, zone, country_code, feed_id)
    run = _Run(store, settings,
               store.envs.adopt_archive(archive) if archive else store.envs.archive_dir(),
               RejectsWriter(rejects_path or store.path / "rejects.jsonl"), force, chunk_bytes,
               batch_pairs, progress)
    summary = IngestSummary()
    started = time.perf_counter()
    held = contextlib.ExitStack()
    held.enter_context(store.envs.writer("ingest"))   # one ingest at a time; a second is refused
    held.enter_context(_no_cycle_collection())
    summary.switch_traces += len(store.run_activations())   # left by a crash, if any
    try:
        for name in _expand(sources, summary, keep_going):
            rendered = None
            try:
                read = name
                if sqlite.is_url(name):        # a table, written out as db_text to read
                    read = str(rendered := sqlite.render(name, store.path / "rendered"))
                counted = (summary.records, summary.bytes, run.rejects.count)
                try:
                    read_it = _ingest_source(run, name, read, rendered is not None, summary)
                except _KnownContent as known:
                    # the identity, hashed while the source was parsed, names content the
                    # store holds or was interrupted in: nothing was committed; again, as
                    # any source whose identity is known from the start
                    summary.records, summary.bytes, run.rejects.count = counted
                    read_it = _ingest_source(run, name, read, rendered is not None, summary,
                                             known.identity)
                summary.sources += read_it
            except (SourceError, FormatError) as exc:
                if not keep_going:
                    raise
                summary.failed.append({"source": name, "reason": str(exc)})
            finally:
                if rendered is not None:       # the table's copy holds callers: not kept
                    rendered.unlink(missing_ok=True)
    finally:
        run.rejects.close()
        held.close()
    summary.seconds = time.perf_counter() - started
    summary.rejected = run.rejects.count
    summary.rejects_path = run.rejects.path if run.rejects.count else None
    return summary


@dataclasses.dataclass
class _Run:
    """What every source of one ingest() is read with."""

    store: Any
    settings: FeedSettings
    archive: str | os.PathLike | None
    rejects: RejectsWriter
    force: bool
    chunk_bytes: int
    batch_pairs: int
    progress: Callable[[int, int | None], None] | None


class _KnownContent(Exception):
    """The identity hashed beside the parse names content the store already knows."""

    def __init__(self, identity: str):
        super().__init__(identity)
        self.identity = identity


def _ingest_source(run: _Run, name: str, read: str, rendered: bool, summary: IngestSummary,
                   known: str | None = None) -> bool:
    """One source, from its identity to its last commit. A plain file with no earlier
    version at its path, and no archive to write, is parsed while its identity is hashed
    on another thread: until the first commit nothing depends on the identity but the
    source's id, registered provisionally; just before that commit the identity is checked
    as it would have been first, and content the store knows raises _KnownContent. known:
    that identity, for the second go, which takes the ordinary path. False if skipped
    (ingested before)."""
    store, rejects, force = run.store, run.rejects, run.force
    s = run.settings
    stream, size = open_source(read)
    reader = hashing = None
    try:
        path = os.path.abspath(read) if name != "-" else None
        plain = is_plain(stream)
        versions = (store.catalog.ingested_versions(path)
                    if path and plain and not force else [])
        prefixes: dict[int, str] = {}
        if known is None and path and plain and not run.archive and not versions:
            hashing, ident = IdentityThread(read), None
        elif known is not None:
            ident = known
        else:
            ident, prefixes = identity(read, [v["size"] for v in versions])
        if not force and store.catalog.source_with_identity(ident):
            summary.skipped.append(name)
            return False
        # the same file, grown since it was ingested: read on where that ended
        grown = next((v for v in sorted(versions, key=lambda v: -v["size"])
                      if prefixes.get(v["size"]) == v["identity"]), None)
        reader = reader_for(stream, run.chunk_bytes, name)
        try:
            # a format and its header are read from the first two lines (within MAX_HEADER
            # bytes), however small the chunk
            while (reader.fill() and reader.end - reader.start < MAX_HEADER
                   and reader.buffer.count(b"\n", reader.start, reader.end) < 2):
                pass
        except SourceError as exc:
            raise SourceError(f"cannot read {name}: {exc}") from None
        with reader.pending() as head:
            first = bytes(head[:MAX_HEADER])
        fmt = s.fmt
        form = (fmt if isinstance(fmt, Format) else
                get_format(detect_format(first, name) if fmt == "auto" else fmt))
        if form.types_line and cucm_cmr(first):
            summary.no_calls.append({"source": name, "reason": (
                "a CUCM CMR file (call management records: voice quality, no calls)")})
            return False
        if rendered and not form.typed_header:
            form = get_format("kamailio-dbtext")     # what the table became
        elif fmt != "auto":
            check_named_format(form, first, name)    # not another format's file
        header, skip = read_header(form, first, name)
        reader.consume(skip)
        # an interrupted earlier run of this content resumes where it committed;
        # what it wrote past that commit (rejects, archive files) is taken back
        resume = store.catalog.position(ident.encode()) if ident and not force else None
        if resume is None and grown is not None:
            resume = Position(grown["source"], grown["size"], grown["records"],
                              ArchiveMark(grown["size"], grown["records"],
                                          grown.get("archive_files", 0)))
            summary.appended.append(name)
        if resume:
            _skip(reader, resume.offset - skip, name)
            skip, source = resume.offset, resume.source
            if grown is None or resume.source != grown["source"]:
                summary.resumed.append(name)
            rejects.forget(source, resume.record)
        elif ((source := store.catalog.unfinished_source(ident) if ident and not force else None)
              or (source := store.catalog.provisional_source(path, size) if path else None)):
            rejects.forget(source, 0)      # killed before its first commit: again
        else:
            source = store.catalog.register_source(name if name != "-" else "<stdin>", size,
                                                   ident, form.name,
                                                   path=path if hashing is not None else None)
        try:
            parser = make_parser(form, s.zone, s.country_code, s.feed_id, s.min_ring_seconds,
                                 header, start_offset=skip,
                                 start_record=resume.record if resume else 0)
        except ParseError as exc:     # the header's layout: say whose
            raise ParseError(f"{name}: {exc}") from None
        archiver = None
        if run.archive:
            from ..store.archive import ArchiveWriter  # Arrow, only when archiving
            archiver = ArchiveWriter(run.archive, source,
                                     resume.archive.files if resume and resume.archive else 0)
            archiver.prune()
        known_identity = _IdentityCheck(store, hashing, ident, force, source, path, rejects)
        checkpoint = (functools.partial(_checkpoint, store, known_identity, source, archiver)
                      if hashing is not None or ident else None)
        _ingest_stream(store, reader, parser, source, name, rejects, summary, size,
                       run.progress, run.batch_pairs, s.served, archiver,
                       finish=functools.partial(_finish, store, source, known_identity, path,
                                                parser, archiver),
                       checkpoint=checkpoint, zone=s.zone, confirm=known_identity.confirm,
                       local=form.time_kind == TIME_LOCAL,
                       omits_unconnected=form.unconnected_shown_by(header),
                       hunt_groups=s.hunt_groups if form.groups_in_one_record() else {})
        if archiver is not None:
            archiver.close()
        if not resume:
            summary.markers += first[:skip].count(b"\n")
        summary.markers += parser.markers
        return True
    finally:
        if hashing is not None:
            hashing.stop()
        if reader is not None:
            reader.close()
        if stream is not sys.stdin.buffer:
            stream.close()


class _IdentityCheck:
    """The source's identity for its commits: known from the start, or hashed beside the
    parse and checked by confirm() before the first commit."""

    def __init__(self, store, hashing: IdentityThread | None, ident: str | None, force: bool,
                 source: int, path: str | None, rejects: RejectsWriter):
        self.store, self.hashing, self.value, self.force = store, hashing, ident, force
        self.source, self.path, self.rejects = source, path, rejects

    def confirm(self) -> None:
        """Before the first commit: the hashed identity checked as an identity known from
        the start is (skip, resume, reuse); content the store knows is handed back."""
        if self.hashing is None or self.value is not None:
            return
        ident = self.value = self.hashing.result()
        catalog = self.store.catalog
        if ident and not self.force and (catalog.source_with_identity(ident)
                                         or catalog.position(ident.encode())
                                         or catalog.unfinished_source(ident)):
            assert self.path is not None
            self.rejects.forget(self.source, 0)
            catalog.forget_source(self.source, self.path)
            raise _KnownContent(ident)

    def key(self) -> bytes:
        assert self.value is not None, "confirm() runs before the first commit"
        return self.value.encode()


@contextlib.contextmanager
def _no_cycle_collection():
    """The cyclic garbage collector paused for a batch ingest: the writer makes a Python
    pair per line and none is in a cycle, yet the collector kept scanning them (10% of the
    user CPU of 2 M records). Reference counting still frees them; a batch ends."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _expand(sources: Iterable[str], summary: IngestSummary, keep_going: bool) -> list[str]:
    """The files of every source given; with keep_going, a source naming none is listed
    as failed instead of stopping the others."""
    names = []
    for given in sources:
        try:
            names += expand([given])
        except SourceError as exc:
            if not keep_going:
                raise
            summary.failed.append({"source": given, "reason": str(exc)})
    return names


def _checkpoint(store, ident: _IdentityCheck, source: int, archiver, txn, offset: int,
                record: int, files: int | None = None) -> None:
    """The source's position, and how many archive files hold its calls up to it (files:
    as counted when the batch was taken; the archive may have gone on since)."""
    mark = None
    if archiver is not None:
        mark = ArchiveMark(offset, record, archiver.files if files is None else files)
    store.catalog.save_position(txn, ident.key(), Position(source, offset, record, archive=mark))
    if ident.path is not None:     # a source registered provisionally is so no longer
        store.catalog.clear_pending(txn, ident.path)


def _finish(store, source: int, ident: _IdentityCheck, path: str | None, parser, archiver,
            txn) -> None:
    """Inside the commit of a source's last records: it is ingested, as it is now."""
    store.catalog.mark_ingested(txn, source, ident.value, size=parser.offset, records=parser.record,
                                archive_files=archiver.files if archiver is not None else 0,
                                path=path)


def _skip(reader, count: int, name: str) -> None:
    """Pass over count bytes the store already holds (a resumed source)."""
    while count > 0:
        available = reader.end - reader.start
        if available >= count:
            reader.consume(count)
            return
        reader.consume(available)
        count -= available
        if reader.fill() == 0:
            raise SourceError(f"cannot resume {name}: it is shorter than its saved position")


def _flush_before_commit(rejects, archiver) -> None:
    """What the commit's records produced besides the index reaches disk first: after a
    crash, the resumed run takes back whatever lies past the committed position."""
    rejects.flush()
    if archiver is not None:
        archiver.flush()


def _ingest_stream(store, reader, parser, source, name, rejects, summary, size, progress,
                   batch_pairs=BATCH_PAIRS, served=(), archiver=None, finish=None,
                   checkpoint=None, zone="UTC", confirm=None, local=False,
                   omits_unconnected: str | None = None, hunt_groups=None):
    """Parse what the reader holds, index it, read more; until the end of the source.
    Each mid-source commit saves the source's position in the same transaction; confirm(),
    if given, runs once before the first. local: the format's times are local (zone's
    repeated hours are noted for the trace, store.folds). omits_unconnected: the switch
    may leave calls that never connected unlogged (lookup.note_unconnected). hunt_groups:
    the feed's hunt pilots' members (store.hunts)."""
    pending = Pending(store, batch_pairs + batch_pairs // 8)   # a last chunk's pairs past it
    pending.feed = parser.feed_id
    pending.zone = zone
    pending.local_zone = zone if local else None
    pending.omits_unconnected = omits_unconnected
    pending.hunt_groups = hunt_groups or {}
    done = reader.end            # the first fill was read to find the header
    summary.bytes += done
    committer = Committer()
    records = 0
    try:
        while True:
            cut = reader.take_cut_record()     # a compressed source cut short inside it
            with reader.pending() as buffer:
                columns, bad, consumed = parser.feed(buffer, reader.eof)
            reader.consume(consumed)
            if cut:                           # rejected, its line held: never read whole
                bad = [*bad, (parser.record + 1, parser.offset, CUT_RECORD, cut)]
            batch = CallBatch(columns, source)
            if len(batch):
                index.entries_for_batch(batch, source, served, into=pending.room_for)
                if archiver is not None:
                    archiver.add(batch)
            bad = pending.note_parsed(parser, bad, columns, source, served)
            pending.position = (parser.offset, parser.record)   # all before it: pending or in
            pending.note(batch, len(bad))
            rejects.write(name, bad, source)
            if pending.count >= batch_pairs:
                if confirm is not None:
                    confirm()
                    confirm = None
                _flush_before_commit(rejects, archiver)
                saved = (functools.partial(checkpoint, offset=pending.position[0], record=pending.position[1],
                                           files=archiver.files if archiver is not None else None)
                         if checkpoint is not None else None)
                summary.indexed += committer.submit(pending.take(saved))
            summary.records += len(batch) + len(bad)
            records += len(batch) + len(bad)
            if reader.eof:
                if confirm is not None:
                    confirm()
                _flush_before_commit(rejects, archiver)
                summary.indexed += committer.wait()
                summary.indexed += pending.commit(finish)
                summary.unreadable += pending.unreadable_total
                summary.switch_traces += pending.switch_traces
                summary.contested += pending.later_calls
                if reader.cut is not None:
                    raise SourceError(cut_message(name, reader.cut, records))
                return
            if progress:
                progress(done, size)
            try:
                got = reader.fill()
            except SourceError as exc:
                if isinstance(exc, CorruptData):      # what it committed may be damaged too
                    store.envs.write(functools.partial(
                        lookup.note_damaged, meta_db=store.envs.db["meta"], source=source,
                        found=f"{name}: {exc}"))
                raise SourceError(f"cannot read {name}: {exc}") from None
            done += got
            summary.bytes += got
    finally:
        committer.close()     # a parse error with a commit in flight: that commit ends first
