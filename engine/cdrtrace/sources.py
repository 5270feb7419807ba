"""CDR sources: files and stdin read in chunks, and the rejects file."""
from __future__ import annotations

import base64
import json
import os
import sys
from typing import BinaryIO

from .errors import SourceError

CHUNK_BYTES = 16 << 20


def open_source(name: str) -> tuple[BinaryIO, int | None]:
    """(binary stream, size or None); '-' is stdin."""
    if name == "-":
        return sys.stdin.buffer, None
    try:
        stream = open(name, "rb")  # noqa: SIM115 - closed by the caller
    except FileNotFoundError:
        raise SourceError(f"cannot read {name}: no such file") from None
    except IsADirectoryError:
        raise SourceError(f"cannot read {name}: it is a directory") from None
    except OSError as exc:
        raise SourceError(f"cannot read {name}: {exc.strerror}") from None
    return stream, os.fstat(stream.fileno()).st_size


class ChunkReader:
    """Reads a stream into one reusable buffer: each fill keeps the bytes the parser has
    not consumed (a record cut by the chunk boundary) and reads after them. No copy of
    the data beyond that tail; the buffer grows only if a single record outgrows it."""

    def __init__(self, stream: BinaryIO, size: int = CHUNK_BYTES):
        self.stream = stream
        self.buffer = bytearray(size)
        self.start = self.end = 0
        self.eof = False

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
            except OSError as exc:
                raise SourceError(f"read failed: {exc.strerror}") from None
        got = got or 0
        self.end += got
        self.eof = got == 0
        return got

    def pending(self) -> memoryview:
        """The bytes read and not yet consumed (release the view before the next fill)."""
        return memoryview(self.buffer)[self.start:self.end]

    def consume(self, count: int) -> None:
        self.start += count


class RejectsWriter:
    """Malformed records as JSON lines: source, record, offset, reason, raw (base64)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._file = None
        self.count = 0

    def write(self, source: str, rejects) -> None:
        if not rejects:
            return
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        for record, offset, reason, raw in rejects:
            self._file.write(json.dumps({
                "source": source, "record": record, "offset": offset, "reason": reason,
                "raw_b64": base64.b64encode(raw).decode("ascii"),
            }) + "\n")
        self.count += len(rejects)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
