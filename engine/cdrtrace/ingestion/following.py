"""Following live sources: a CDR file as the switch appends to it (through rotation and
truncation), and stdin while its pipe is open. Both feed a LiveFeed (ingestion.live),
which commits micro-batches with their positions.
"""
from __future__ import annotations

import os
import select
import sys
import threading

from ..errors import FormatError, SourceError
from ..parsing.formats import Format
from ..parsing.parsers import MAX_HEADER, check_named_format, check_text, read_header
from ..store.catalog import Position
from .live import LiveFeed, StreamOptions, StreamSummary, log
from .sources import ChunkReader

# -------------------------------------------------------------------- follow a file

def _file_id(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _find_generation(path: str, dev: int, ino: int) -> str | None:
    """The file that is (dev, ino): path itself or a rotated sibling (Master.csv.1, ...)."""
    directory = os.path.dirname(os.path.abspath(path))
    candidates = [os.path.abspath(path)]
    try:
        candidates += sorted(e.path for e in os.scandir(directory)
                             if e.path != os.path.abspath(path))
    except OSError:
        pass
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if _file_id(st) == (dev, ino):
            return candidate
    return None


class _Generation:
    """One open generation of a followed file (one inode), read from offset on."""

    def __init__(self, live: LiveFeed, label: str, handle, offset: int, source: int,
                 record: int, header, key: bytes, saved: Position | None = None):
        self.handle = handle
        self.id = _file_id(os.fstat(handle.fileno()))
        self.reader = ChunkReader(handle, live.options.chunk_bytes)
        self.read_to = offset                         # bytes of the file read so far
        store = live.store

        def checkpoint(txn, offset, record, archive=None, dev=self.id[0], ino=self.id[1]):
            store.catalog.save_position(txn, key, Position(source, offset, record, archive,
                                                           (dev, ino)))
        mark = saved.archive if saved is not None and live.archive_root else None
        if mark and mark.offset is not None:   # read again from where the archive was complete
            live.start_source(label, source, header, mark.offset, mark.record, checkpoint,
                              archive_files=mark.files, skip_until=record, index_offset=offset)
            handle.seek(mark.offset)
            self.read_to = mark.offset
        else:
            live.start_source(label, source, header, offset, record, checkpoint)

    def pump(self, live: LiveFeed, final: bool = False) -> int:
        """Read what the file has now and parse it; returns bytes read."""
        got = self.reader.fill()
        self.read_to += got
        with self.reader.pending() as buffer:
            consumed = live.feed(buffer, final=final and got == 0)
        self.reader.consume(consumed)
        return got


def follow(store, path: str, fmt: str | Format | None = None, *, zone=None, country_code=None,
           feed=None, options: StreamOptions | None = None, stop: threading.Event | None = None,
           rejects_path=None, archive=None) -> StreamSummary:
    """Follow a CDR file as the switch appends to it, until stop is set (or the file has
    been idle options.idle_exit_s). Records split across writes wait for their end; a
    partial last line waits until the switch completes it. Rotation (the file renamed and
    a new one created) drains the old file, its last partial line included, then reads the
    new one from its start; truncation (copytruncate) restarts at offset 0. The position
    (file identity and offset) commits with the index, so a restart resumes exactly where
    the last commit ended, even if the file was rotated meanwhile."""
    options = options or StreamOptions()
    stop = stop or threading.Event()
    live = LiveFeed(store, fmt, zone, country_code, feed, options=options,
                    rejects_path=rejects_path, label=f"follow {path}", archive=archive)
    key = b"follow:" + os.path.abspath(path).encode()
    with store.envs.writer(f"follow {path}"):
        saved = store.catalog.position(key)
        if saved is None:
            _warn_of_rotated(path)
        generation = None
        if saved and saved.file:
            found = _find_generation(path, *saved.file)
            if found is not None:
                generation = _open_generation(live, found, key, saved)
                live.summary.resumed = True
        try:
            while not stop.is_set():
                if generation is None:
                    generation = _open_generation(live, path, key, None)
                    if generation is None:       # not there yet: a new file will appear
                        if live.idle():
                            break
                        stop.wait(options.poll_ms / 1000)
                        continue
                    # Which file this is (its inode) commits before anything is read: a
                    # follower killed before its first batch and restarted after the
                    # switch rotated the file then finds and drains it, instead of
                    # starting on the new file and losing this one.
                    live.commit()
                got = generation.pump(live)
                if got:
                    live.busy()
                    if live.due():
                        live.commit()
                    continue
                change = _changed(path, generation)
                if change is not None:      # rotated or truncated: finish this generation
                    if change == "rotated":
                        stop.wait(options.poll_ms / 1000)     # the switch's last write to it
                        while generation.pump(live):
                            pass
                    generation.pump(live, final=True)         # its partial last line, if any
                    live.flush_archive()                      # the generation's calls, all
                    live.commit(extra=lambda txn: store.catalog.clear_position(txn, key))
                    generation.handle.close()
                    generation = None
                    if change == "rotated":
                        live.summary.rotations += 1
                    else:
                        live.summary.truncations += 1
                    log.info("follow %s: %s; reading %s", path, change,
                             "the new file" if change == "rotated" else "it from the start")
                    continue
                if live.idle():
                    break
                stop.wait(options.poll_ms / 1000)
        except BaseException:
            live.failed = True       # what was read past the last commit is read again
            raise
        finally:
            if generation is not None:
                generation.handle.close()
            live.close(stopped=stop.is_set())
    return live.summary


def _changed(path: str, generation: _Generation) -> str | None:
    """'rotated' if path now names another file (or none), 'truncated' if it shrank below
    what was read, else None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "rotated"
    if _file_id(st) != generation.id:
        return "rotated"
    if st.st_size < generation.read_to:
        return "truncated"
    return None


def _warn_of_rotated(path: str) -> None:
    """A follower with no position saved for path reads the file at path alone: say so
    where rotated files lie beside it (Master.csv.1, Master.csv-20260302.gz), whose calls
    no follower may have read."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        rotated = sorted(e.name for e in os.scandir(directory)
                         if e.name.startswith(name) and e.name != name and e.is_file())
    except OSError:
        return
    if rotated:
        shown = ", ".join(rotated[:3]) + (f" and {len(rotated) - 3} more" if len(rotated) > 3 else "")
        log.warning("follow %s: first start (no position saved), and %s lie(s) beside it: a "
                    "follower reads only the file now at %s, so calls in those files that no "
                    "follower read are not indexed; ingest them with `cdrtrace ingest` (files "
                    "already ingested are skipped)", path, shown, path)


def _open_generation(live: LiveFeed, path: str, key: bytes, saved: Position | None):
    """Open path for following: from the saved position, or from the start as a new
    source. None if the file does not exist yet or its header is not complete yet."""
    try:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by follow
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    header, skip = None, 0
    st = os.fstat(handle.fileno())
    if saved is not None and st.st_size < saved.offset:
        log.warning("follow %s: the file is shorter than the saved position; reading it "
                    "from the start", path)
        saved = None
    first = os.pread(handle.fileno(), MAX_HEADER, 0)
    try:
        check_text(first, path)              # UTF-16, CR line ends: read where they are
        if saved is None and b"\n" in first:
            check_named_format(live.form, first, path)   # not another format's file
    except FormatError:
        handle.close()
        raise
    if live.form.header_lines:
        if first.count(b"\n") < live.form.header_lines:
            handle.close()                        # the header is still being written
            return None
        header, skip = read_header(live.form, first, path)
    if saved is not None:
        offset, record, source = saved.offset, saved.record, saved.source
        label = live.store.catalog.source_label(source)
        live.rejects.forget(source, record)      # written past the last commit: again soon
    else:
        offset, record = skip, 0
        label = f"{path} (inode {st.st_ino})"
        source = live.store.catalog.register_source(label, None, None, live.form.name)
    handle.seek(offset)
    return _Generation(live, label, handle, offset, source, record, header, key, saved)


# -------------------------------------------------------------------- stdin

def stream_stdin(store, fmt: str | Format | None = None, *, zone=None, country_code=None,
                 feed=None, options: StreamOptions | None = None,
                 stop: threading.Event | None = None, stream=None, rejects_path=None,
                 archive=None) -> StreamSummary:
    """Ingest a pipe as it flows: records are committed (visible to trace) in micro-batches
    while the pipe is still open. A pipe cannot be re-read, so a crash loses what was
    read and not committed; use follow or Kafka where exactly-once matters."""
    options = options or StreamOptions()
    stop = stop or threading.Event()
    raw = stream if stream is not None else sys.stdin.buffer.raw  # type: ignore[union-attr]
    live = LiveFeed(store, fmt, zone, country_code, feed, options=options,
                    rejects_path=rejects_path, label="stdin", archive=archive)
    with store.envs.writer("stream stdin"):
        reader = ChunkReader(raw, options.chunk_bytes)
        header_pending = bool(live.form.header_lines)
        unchecked = True         # the first line not yet seen to be no other format's
        source = store.catalog.register_source("<stdin stream>", None, None, live.form.name)
        if not header_pending:
            live.start_source("<stdin>", source)
        try:
            while not stop.is_set():
                ready, _, _ = select.select([raw], [], [], options.poll_ms / 1000)
                if not ready:
                    if live.idle():
                        break
                    continue
                live.busy()
                got = reader.fill()
                if unchecked:
                    with reader.pending() as head:
                        first = bytes(head[:MAX_HEADER])
                    if b"\n" in first or not got:
                        unchecked = False
                        check_named_format(live.form, first, "<stdin>")
                if header_pending:
                    with reader.pending() as head:
                        first = bytes(head[:MAX_HEADER])
                    if first.count(b"\n") < live.form.header_lines and got:
                        continue
                    header, skip = read_header(live.form, first, "<stdin>")
                    reader.consume(skip)
                    live.start_source("<stdin>", source, header, skip)
                    header_pending = False
                with reader.pending() as buffer:
                    consumed = live.feed(buffer, final=got == 0)
                reader.consume(consumed)
                if got == 0:
                    break                                  # the pipe closed
                if live.due():
                    live.commit()
        except BaseException:
            live.failed = True       # nothing half-processed commits
            raise
        finally:
            live.close(stopped=stop.is_set())
    return live.summary
