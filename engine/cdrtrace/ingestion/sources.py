"""CDR sources: files and stdin read in chunks, and the rejects file."""
from __future__ import annotations

import base64
import bz2
import concurrent.futures
import glob
import gzip
import io
import json
import lzma
import os
import stat
import sys
import threading
import zlib
from collections.abc import Iterable
from typing import IO, Any, Protocol

import xxhash

from ..errors import SourceError
from ..parsing.parsers import line_ends, wide_encoding
from ..store import private
from . import sqlite
from .text import Relined, Transcoding

CHUNK_BYTES = 4 << 20     # what every ingest reads a source in (batch, following, live)


GLOB_CHARS = set("*?[")
IDENTITY_CHUNK = 4 << 20
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
          (b"\x28\xb5\x2f\xfd", "zstd"))


def expand(names: list[str]) -> list[str]:
    """Sources as given: '-' (stdin), sqlite:// tables, files, directories (their files in
    name order) and glob patterns (matches in name order)."""
    out = []
    for name in names:
        if name == "-" or sqlite.is_url(name):
            out.append(name)
        elif os.path.isdir(name):
            files = sorted(os.path.join(name, f) for f in os.listdir(name)
                           if not f.startswith(".") and os.path.isfile(os.path.join(name, f)))
            if not files:
                raise SourceError(f"no files in directory {name}")
            out += files
        elif GLOB_CHARS & set(name) and not os.path.exists(name):
            matches = sorted(glob.glob(name))
            if not matches:
                raise SourceError(f"no file matches {name}")
            out += matches
        else:
            out.append(name)
    return out


class ByteStream(Protocol):
    """What a source is read through: a binary stream that reads into a buffer."""

    def readinto(self, buffer: Any, /) -> int | None: ...

    def close(self) -> None: ...


def open_source(name: str) -> tuple[ByteStream, int | None]:
    """(binary stream of CDR bytes, file size or None); '-' is stdin. gzip, bzip2, xz and
    zstd sources are recognised by their first bytes and decompressed as they stream; UTF-16
    and UTF-32 ones are read as UTF-8, and lines that end in CR alone or in CR CR LF with
    CRLF (_as_text)."""
    raw: Any
    if name == "-":
        raw = sys.stdin.buffer
    else:
        try:
            raw = open(name, "rb")  # noqa: SIM115 - closed by the caller
        except FileNotFoundError:
            raise SourceError(f"cannot read {name}: no such file") from None
        except IsADirectoryError:
            raise SourceError(f"cannot read {name}: it is a directory") from None
        except OSError as exc:
            raise SourceError(f"cannot read {name}: {exc.strerror}") from None
    head = raw.peek(HEAD)[:HEAD] if hasattr(raw, "peek") else b""
    kind = next((k for magic, k in _MAGIC if head.startswith(magic)), None)
    size = os.fstat(raw.fileno()).st_size if name != "-" else None
    if kind is None:
        return _as_text(raw, head, size)
    stream: Any
    if kind == "gzip":
        stream = gzip.GzipFile(fileobj=raw)
    elif kind == "bzip2":
        stream = bz2.BZ2File(raw)
    elif kind == "xz":
        stream = lzma.LZMAFile(raw)
    else:
        stream = _Zstd(raw)
    decompressing = _Decompressing(stream, raw, kind)
    return _as_text(decompressing, decompressing.peek_head(HEAD), None)


HEAD = 8192     # bytes of a source looked at for its text's encoding and line ends


def _as_text(stream: Any, head: bytes, size: int | None) -> tuple[ByteStream, int | None]:
    """The stream, read as UTF-8 where it is UTF-16 or UTF-32 (Transcoding), with CRLF
    line ends where its lines end in CR alone or in CR CR LF (Relined); size where it is
    read as it is."""
    if (codec := wide_encoding(head)) is not None:
        stream, size = Transcoding(stream, codec), None
        head = b""      # its line ends are not told from its bytes as they are
    if (ends := line_ends(head)) is not None:
        stream, size = Relined(stream, ends), None
    return stream, size


def is_plain(stream: ByteStream) -> bool:
    """Whether the stream's bytes are its file's own (not decompressed, not transcoded)."""
    return not isinstance(stream, _Decompressing | Transcoding | Relined)


class _Zstd:
    """zstd frames one after another, decompressed as they are read. Its stream reader
    ends at a frame cut short as at the end of a whole one (the rest silently lost): here
    that is EOFError, as gzip, bzip2 and xz raise it."""

    READ = 1 << 17

    def __init__(self, raw: Any):
        import zstandard  # a dependency: the stdlib has no zstd before Python 3.14

        self.raw, self.context = raw, zstandard.ZstdDecompressor()
        self.frame: Any = None      # the frame being decompressed, None between frames
        self.out = b""

    def readinto1(self, view: Any) -> int:
        while not self.out:
            data = self.raw.read(self.READ)
            if not data:
                if self.frame is not None:
                    raise EOFError("Compressed file ended before the end-of-stream marker "
                                   "was reached")
                return 0
            while data:
                self.frame = self.frame or self.context.decompressobj()
                self.out += self.frame.decompress(data)
                data = self.frame.unused_data if self.frame.eof else b""
                if self.frame.eof:
                    self.frame = None
        n = min(len(view), len(self.out))
        view[:n] = self.out[:n]
        self.out = self.out[n:]
        return n

    readinto = readinto1

    def close(self) -> None:
        """The file is closed by the stream that holds it."""


CUT_RECORD = "cut short where the source's compressed data ends"


def cut_message(name: str, cut: CorruptData, records: int) -> str:
    return (f"cannot read {name}: {cut}: its {records:,} record(s) to the cut were ingested, "
            "as a file's ending there would be, the record it cuts rejected; ingest a whole "
            "copy for the rest (what is read again changes nothing)")


class CorruptData(SourceError):
    """A compressed source's data is damaged here, or ends before its end (truncated: what
    came before it is the source's own; damage may have reached what came before it
    unseen: a stream's checksum is checked at its end)."""

    def __init__(self, message: str, truncated: bool):
        super().__init__(message)
        self.truncated = truncated


class _Decompressing(io.RawIOBase):
    """A decompressing stream whose errors name the compression and the bytes read before
    them (CorruptData), closing its file too."""

    def __init__(self, stream, raw, kind: str):
        self.stream, self.raw, self.kind = stream, raw, kind
        self.read_some = getattr(stream, "readinto1", stream.readinto)
        self.done = 0
        self.error: CorruptData | None = None
        self.head = b""         # bytes peek_head read, given first

    def readable(self) -> bool:
        return True

    def peek_head(self, n: int) -> bytes:
        """Up to the first n bytes, read now and given again by the next read (damage
        met is raised after them, as readinto raises it)."""
        buffer = bytearray(n)
        try:
            got = self.readinto(buffer)
        except CorruptData as exc:
            self.error, got = exc, 0
        self.head = bytes(buffer[:got])
        return self.head

    def readinto(self, buffer) -> int:
        """Fills buffer a read of the compressed file at a time (readinto1, which returns
        what one read gave: a larger read that meets the damage loses what it decompressed
        before it); at damaged data returns what came before it, and raises CorruptData at
        the next call (at once if nothing came before it)."""
        if self.head:
            with memoryview(buffer) as view:
                n = min(len(view), len(self.head))
                view[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        if self.error is not None:
            raise self.error
        total = 0
        with memoryview(buffer) as view:
            while total < len(view):
                try:
                    got = self.read_some(view[total:])
                except (OSError, EOFError, lzma.LZMAError, ValueError, zlib.error) as exc:
                    self.error = self._corrupt(exc, total)
                except Exception as exc:   # zstandard.ZstdError is not an OSError
                    if type(exc).__name__ != "ZstdError":
                        raise
                    self.error = self._corrupt(exc, total)
                if self.error is not None:
                    if total:
                        break
                    raise self.error
                if not got:
                    break
                total += got
        self.done += total
        return total

    def _corrupt(self, exc: Exception, more: int) -> CorruptData:
        done = self.done + more
        if isinstance(exc, EOFError):
            return CorruptData(f"its {self.kind} data is cut short after {done:,} bytes of CDRs",
                               truncated=True)
        return CorruptData(f"corrupt {self.kind} data after {done:,} bytes of CDRs ({exc})",
                           truncated=False)

    def close(self) -> None:
        if not self.closed:
            self.stream.close()
            if self.raw is not sys.stdin.buffer:
                self.raw.close()
        super().close()


def identity(name: str, prefixes: Iterable[int] = (),
             stop: threading.Event | None = None) -> tuple[str | None, dict[int, str]]:
    """A file's content identity: xxh3-128 over all its bytes, streamed. The hash runs at
    over 20 GB/s here; reading the file (the kernel's copy from the page cache) costs
    most of the 0.09 s of a 540 MB file. With it, for each size in prefixes, the
    identity the file's first that many bytes have: whether it is a file ingested
    before, since grown by what the switch appended. (None, {}) for stdin, or once stop
    is set (the caller no longer wants it)."""
    if name == "-":
        return None, {}
    wanted = sorted({int(n) for n in prefixes if n > 0})
    digest = xxhash.xxh3_128()
    found: dict[int, str] = {}
    buffer = bytearray(IDENTITY_CHUNK)
    view = memoryview(buffer)
    done = 0
    try:
        with open(name, "rb", buffering=0) as f:
            while True:
                got = f.readinto(buffer)
                if not got:
                    break
                if stop is not None and stop.is_set():
                    return None, {}
                start = 0
                while wanted and wanted[0] <= done + got:     # a prefix ends in this chunk
                    cut = wanted.pop(0) - done
                    digest.update(view[start:cut])
                    start = cut
                    found[done + cut] = digest.hexdigest()
                digest.update(view[start:got])
                done += got
    except OSError as exc:
        raise SourceError(f"cannot read {name}: {exc.strerror or exc}") from None
    return digest.hexdigest(), found


class IdentityThread:
    """A file's identity, hashed on a thread of its own while the caller does other work
    (xxhash and the reads release the GIL): result() waits for it (an error in the hash is
    raised there), stop() abandons it."""

    def __init__(self, name: str):
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cdrtrace-identity")
        self._future = self._pool.submit(identity, name, (), self._stop)

    def result(self) -> str | None:
        return self._future.result()[0]

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)


class ChunkReader:
    """Reads a stream into one reusable buffer: each fill keeps the bytes the parser has
    not consumed (a record cut by the chunk boundary) and reads after them. No copy of
    the data beyond that tail; the buffer grows only if a single record outgrows it."""

    def __init__(self, stream: ByteStream, size: int = CHUNK_BYTES, name: str | None = None):
        self.stream = stream
        self.buffer = bytearray(size)
        self.start = self.end = 0
        self.eof = False
        self.cut: CorruptData | None = None    # a compressed source cut short: it ends there
        self.name = name
        self.read_total = 0
        # a named file (batch ingest) is checked at its end for having shrunk; a followed
        # file is not: its truncation is a rotation the follower handles
        self.fileno = _regular_file(stream) if name is not None else None

    def fill(self) -> int:
        """Read more after the unconsumed bytes; return how many were read (0 at the end)."""
        tail = self.end - self.start
        if self.start:
            self.buffer[:tail] = self.buffer[self.start:self.end]
        elif tail == len(self.buffer):
            self.buffer.extend(bytes(len(self.buffer)))
        self.start, self.end = 0, tail
        with memoryview(self.buffer) as view:
            try:
                got = self.stream.readinto(view[tail:])
            except CorruptData as exc:
                if not exc.truncated:   # damage may have reached what came before it unseen
                    raise
                self.cut, got = exc, 0  # what came before the cut is the source's own
            except SourceError:
                raise
            except OSError as exc:
                raise SourceError(f"read failed: {exc.strerror or exc}") from None
        got = got or 0
        self.end += got
        self.read_total += got
        self.eof = got == 0
        if self.eof and self.fileno is not None:
            size = os.fstat(self.fileno).st_size
            if size < self.read_total:
                raise SourceError(f"{self.name} shrank while it was read (to {size:,} bytes, "
                                  f"after {self.read_total:,} were read): what was committed "
                                  "stays; ingest it again once the switch is done with it")
        return got

    def pending(self) -> memoryview:
        """The bytes read and not yet consumed (release the view before the next fill)."""
        return memoryview(self.buffer)[self.start:self.end]

    def consume(self, count: int) -> None:
        self.start += count

    def take_cut_record(self) -> bytes:
        """At a cut (self.cut): the record it ends inside, taken out of what is pending, so
        that it is not read as a whole one; b"" where the cut fell between records."""
        if self.cut is None:
            return b""
        last = self.buffer.rfind(b"\n", self.start, self.end) + 1 or self.start
        cut_record = bytes(self.buffer[last:self.end])
        self.end = last
        return cut_record if cut_record.strip() else b""

    def close(self) -> None:
        """Nothing to release: the buffer is ordinary memory."""


def _regular_file(stream: Any) -> int | None:
    try:
        fileno = stream.fileno()
        return fileno if stat.S_ISREG(os.fstat(fileno).st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


def reader_for(stream: ByteStream, size: int = CHUNK_BYTES, name: str = "the source") -> ChunkReader:
    """A reader for any source. Files are read, not memory-mapped: a file the switch
    truncates while it is read then ends early (and is reported), where a mapping would
    kill the process with SIGBUS; reading costs no measurable rate (BENCHMARKS.md)."""
    return ChunkReader(stream, size, name)


class RejectsWriter:
    """Malformed records as JSON lines: source (name and the store's id), record, offset,
    reason, raw (base64)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._file: IO[Any] | None = None
        self.count = 0
        self._dirty = False

    def flush(self) -> None:
        """Make what was written durable (before the index commit that covers it)."""
        if self._file is not None and self._dirty:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._dirty = False

    def forget(self, source_id: int, after_record: int) -> int:
        """Take back the rejects of source_id numbered after after_record: an interrupted
        run wrote them past its last commit, and the resumed run writes them again.
        Returns how many were removed."""
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return 0
        kept = []
        for line in lines:
            if not line.endswith("\n"):
                continue                      # a line cut by the crash
            entry = json.loads(line)
            if not (entry.get("source_id") == source_id and entry["record"] > after_record):
                kept.append(line)
        if len(kept) != len(lines):
            partial = self.path + ".partial"
            with private.open_file(partial, "w", encoding="utf-8") as f:
                f.writelines(kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, self.path)
        return len(lines) - len(kept)

    def write(self, source: str, rejects, source_id: int | None = None) -> None:
        if not rejects:
            return
        if self._file is None:
            self._file = private.open_file(self.path, "a", encoding="utf-8")
        for record, offset, reason, raw in rejects:
            self._file.write(json.dumps({
                "source": source, "source_id": source_id, "record": record, "offset": offset,
                "reason": reason,
                "raw_b64": base64.b64encode(raw).decode("ascii"),
            }) + "\n")
        self.count += len(rejects)
        self._dirty = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
