"""A source's text made what the parser reads: UTF-16 and UTF-32 read as UTF-8
(Transcoding), lines that end in CR alone or in CR CR LF read as ending in CRLF
(Relined). Only a batch ingest reads through them: a followed file or a stream is read
where its bytes are, and such a source is refused there (parsing.parsers.check_text)."""
from __future__ import annotations

import codecs
import io
import sys
from typing import Any


class _Converting(io.RawIOBase):
    """Another stream's bytes made over (convert), a read of it at a time."""

    def __init__(self, raw: Any):
        self.raw = raw
        self.pending = b""
        self.ended = False

    def convert(self, data: bytes, ended: bool) -> bytes:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending and not self.ended:
            data = self.raw.read(1 << 16) or b""
            self.ended = not data
            self.pending = self.convert(data, self.ended)
        with memoryview(buffer) as view:
            n = min(len(view), len(self.pending))
            view[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def close(self) -> None:
        if not self.closed and self.raw is not sys.stdin.buffer:
            self.raw.close()
        super().close()


class Transcoding(_Converting):
    """A source written in UTF-16 or UTF-32, read as UTF-8: what the parser reads, its
    offsets those of the UTF-8 text. A code unit that is no character (an odd byte at the
    end, a lone surrogate) reads as U+FFFD: the record it is in is rejected, and held."""

    def __init__(self, raw: Any, codec: str):
        super().__init__(raw)
        self.codec = codec
        self.decoder = codecs.getincrementaldecoder(codec)(errors="replace")

    def convert(self, data: bytes, ended: bool) -> bytes:
        return self.decoder.decode(data, final=ended).encode("utf-8")


class Relined(_Converting):
    """A source whose lines end in CR alone (`cr`: classic Mac OS) or in CR CR LF
    (`crcrlf`: CRLF converted to CRLF again, by unix2dos or a text-mode transfer), read
    with CRLF line ends: read as it is, its whole text was one line (one reject), or every
    record held a carriage return (each rejected). Its offsets are those of the text so
    read, as a decompressed source's are its decompressed bytes'."""

    def __init__(self, raw: Any, ends: str):
        super().__init__(raw)
        self.ends = ends
        self.carry = b""        # CRs at the end of the last read: what follows tells

    def convert(self, data: bytes, ended: bool) -> bytes:
        data = self.carry + data
        keep = 0 if ended else len(data) - len(data.rstrip(b"\r"))
        self.carry = data[len(data) - keep:] if keep else b""
        data = data[:len(data) - keep]
        return (data.replace(b"\r", b"\r\n") if self.ends == "cr"
                else data.replace(b"\r\r\n", b"\r\n"))
