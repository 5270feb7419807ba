"""Parsers by format name: the native core, or the reference when CDRTRACE_PURE=1."""
from __future__ import annotations

import csv
import os
import re

from . import timezones
from .errors import NativeModuleError
from .formats import FORMATS, Format, FormatError

try:
    from . import _parse as _native
except ImportError as exc:  # never fall back silently
    _native = None
    _native_error = exc

MAX_HEADER = 1 << 16
BOM = b"\xef\xbb\xbf"   # a UTF-8 byte-order mark: some exports start with one


def use_reference() -> bool:
    return os.environ.get("CDRTRACE_PURE") == "1"


def native():
    """The compiled parser module; raise a clear error if it did not import."""
    if _native is None:
        raise NativeModuleError(
            f"cdrtrace's native parser did not import ({_native_error}); reinstall with "
            "`pip install .` so the extensions are built (CDRTRACE_PURE=1 selects the slow "
            "reference parser for debugging)")
    return _native


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise FormatError(f"unknown format {name!r} (known: {', '.join(FORMATS)})") from None


def detect_format(head: bytes, source: str = "source") -> str:
    """The format of a source from its first bytes, or FormatError naming the candidates."""
    head = head.removeprefix(BOM)
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    if first.startswith(b'"cdrRecordType"'):
        return "cucm"
    text = first.decode("latin-1")
    names = {n.strip() for n in next(csv.reader([text]), [])}
    if {"recordId", "direction", "callingNumber", "startTime"} <= names:
        return "broadworks"
    fields = next(csv.reader([text], skipinitialspace=True), [])
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
    matches = []
    if 16 <= len(fields) <= 21 and stamp.match(fields[9]) and fields[14] in ASTERISK_DISPOSITIONS:
        matches.append("asterisk")
    if len(fields) == 19 and stamp.match(fields[8]) and fields[13] in ASTERISK_DISPOSITIONS:
        matches.append("asterisk-custom")
    if len(fields) in (13, 15) and stamp.match(fields[4]) and re.match(r"^[A-Z_0-9]+$", fields[9]):
        matches.append("freeswitch")
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise FormatError(f"{source} could be {' or '.join(matches)}: name it with --format")
    raise FormatError(f"cannot tell the format of {source}: it looks like none of "
                      f"{', '.join(FORMATS)} (name it with --format)")


ASTERISK_DISPOSITIONS = {"ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION", "CANCEL", "UNKNOWN"}


def read_header(fmt: Format, head: bytes, source: str = "source") -> tuple[list[str] | None, int]:
    """(column names, header bytes) at the start of a source; (None, 0) for a headerless format."""
    if not fmt.header_lines:
        return None, 0
    pos, lines = (len(BOM) if head.startswith(BOM) else 0), []
    for _ in range(fmt.header_lines):
        nl = head.find(b"\n", pos, MAX_HEADER)
        if nl < 0:
            raise FormatError(f"{source}: no complete {fmt.name} header "
                              f"({fmt.header_lines} line(s)) in its first {MAX_HEADER} bytes")
        lines.append(head[pos:nl].rstrip(b"\r"))
        pos = nl + 1
    names = next(csv.reader([lines[0].decode("latin-1")], delimiter=fmt.delimiter,
                            quotechar=fmt.quote), [])
    return [name.strip() for name in names], pos


def make_parser(fmt: str | Format = "asterisk", zone: str = "UTC", country_code: int = 1,
                feed_id: int = 0, min_ring_seconds: float = 0.0, header: list[str] | None = None,
                start_offset: int = 0, start_record: int = 0):
    """A streaming parser: feed(buffer, final) -> (columns, rejects, consumed).

    fmt is a format name or a Format (a configured dialect). Header formats (CUCM,
    BroadWorks) need the header's column names (read_header)."""
    form = fmt if isinstance(fmt, Format) else get_format(fmt)
    dialect = form.dialect(header)
    dispositions, presentations = form.vocabularies()
    if use_reference():
        from ._parse_py import CdrParser as Reference

        return Reference(dialect, zone, country_code, feed_id, min_ring_seconds, start_offset,
                         dispositions, presentations, start_record)
    starts, offsets = timezones.zone_table(zone)
    return native().CdrParser(dialect, starts, offsets, country_code, feed_id, min_ring_seconds,
                              start_offset, dispositions, presentations, start_record)


def normalize_number(text, country_code: int = 1) -> int:
    if use_reference():
        from .numbers import normalize

        return normalize(text, country_code)
    return native().normalize_number(text, country_code)
