"""Parsers by format name: the native core, or the reference when CDRTRACE_PURE=1."""
from __future__ import annotations

import csv
import functools
import os
import re
from collections.abc import Callable

from ..errors import FormatError, NativeModuleError, ParseError
from . import native, timezones
from .formats import (
    BOM,
    CUCM_RELEASES,
    FORMATS,
    KAMAILIO,
    KAMAILIO_ACC,
    LATE_REFUSAL_US,
    Disposition,
    Format,
    Presentation,
)
from .numbers import dialling_plan

MAX_HEADER = 1 << 16


def use_reference() -> bool:
    return os.environ.get("CDRTRACE_PURE") == "1"


def check_native(module) -> None:
    """The compiled parser must number dispositions and presentations as formats.py does."""
    for name, enum, compiled in (("disposition", Disposition, module.DISPOSITION_CODES),
                                 ("presentation", Presentation, module.PRESENTATION_CODES)):
        ours = {member.name: int(member) for member in enum   # two never produced by a parser
                if member not in (Disposition.UNREADABLE, Disposition.CALLERS_DIFFER)}
        if ours != dict(compiled):
            raise NativeModuleError(f"cdrtrace's native parser numbers {name}s {dict(compiled)}, "
                                    f"this cdrtrace {ours}: reinstall with `pip install .`")
    if module.LATE_REFUSAL_MICROSECONDS != LATE_REFUSAL_US:
        raise NativeModuleError("cdrtrace's native parser times a late refusal from "
                                f"{module.LATE_REFUSAL_MICROSECONDS} us, this cdrtrace from "
                                f"{LATE_REFUSAL_US} us: reinstall with `pip install .`")


check_native(native._parse)


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise FormatError(f"unknown format {name!r} (known: {', '.join(FORMATS)})") from None


def _fields(line: bytes, delimiter: str = ",", quote: str = '"', *, source: str = "source",
            start: int = 0) -> list[str]:
    """The fields of a source's first line (its header, or a record read for its format),
    which starts at byte `start` of the source; ParseError, saying where, for one the csv
    module cannot read: a carriage return inside it (files joined or edited on another
    system), not the line's end."""
    try:
        return [f.strip() for f in next(csv.reader([line.decode("latin-1")], delimiter=delimiter,
                                                   quotechar=quote, skipinitialspace=True), [])]
    except csv.Error as exc:
        raise _unreadable(line, source, start, str(exc)) from None


def _unreadable(line: bytes, source: str, start: int, why: str = "") -> ParseError:
    cr = line.find(b"\r")
    where = f"a carriage return at byte {start + cr}" if cr >= 0 else why
    return ParseError(f"{source}: its first line cannot be read: {where}")


def _asterisk_table(source: str, fields: list[str]) -> FormatError | None:
    """The error for a first line naming the columns of Asterisk's database table
    (cdr_mysql, cdr_pgsql, cdr_adaptive_odbc), which no built-in format reads: its
    `calldate` is the start, and the table has no answer or end column."""
    if not {"calldate", "dst", "dstchannel", "disposition"} <= set(fields):
        return None
    return FormatError(f"{source} is an export of Asterisk's database table (calldate, no "
                       "end column): read it with a dialect of base asterisk, header = true "
                       "and start = \"calldate\" (docs/formats.md, Asterisk's database "
                       "backends)")


def detect_format(head: bytes, source: str = "source") -> str:
    """The format of a source from its first bytes, or FormatError naming the candidates."""
    start = len(BOM) if head.startswith(BOM) else 0
    first = head[start:].split(b"\n", 1)[0].rstrip(b"\r")
    try:
        fields = _fields(first, source=source, start=start)
    except ParseError as exc:
        raise ParseError(f"{exc}; its format cannot be told (name it with --format)") from None
    if table := _asterisk_table(source, fields):
        raise table
    if fields[:1] == ["cdrRecordType"] or (
            fields[:1] in (["1"], ["2"]) and len(fields) in CUCM_RELEASES):
        return "cucm"           # a header, quoted or not, or a headerless record
    if first.startswith(b"version=") or {"recordId", "direction", "callingNumber",
                                          "startTime"} <= set(fields):
        return "broadworks"
    if (len(fields) == 3 and fields[1] == "" and fields[2] in ("Start", "End")) or (
            len(fields) >= 41 and fields[5] in ("Originating", "Terminating")):
        return "broadworks"     # headerless: a marker record, or a positional record
    pipes = first.decode("latin-1").split("|")
    if (KAMAILIO.min_cols <= len(pipes) <= len(KAMAILIO.columns or ())
            and all(p.isdigit() for p in pipes[:2])
            and re.match(r"^\d+(\.\d+)?$", pipes[2]) and pipes[11].isdigit()):
        return "kamailio"       # acc_cdrs by db_flatstore: epoch times, duration, SIP code
    if (KAMAILIO_ACC.min_cols <= len(pipes) <= len(KAMAILIO_ACC.columns or ())
            and re.match(r"^[A-Z]+$", pipes[0])
            and re.match(r"^\d{3}$", pipes[4]) and pipes[6].isdigit()):
        return "kamailio-acc"   # acc or missed_calls by db_flatstore: method, code, time
    names = typed_names(first)
    if names and {"callid", "sip_code"} <= set(names):
        return "kamailio-dbtext"
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
    raise ParseError(f"cannot tell the format of {source}: it looks like none of "
                      f"{', '.join(FORMATS)} (name it with --format)")


def cucm_cmr(head: bytes) -> bool:
    """Whether a source is a CUCM CMR file (call management records: a call's voice
    quality, per phone, with no caller or number dialled), which CUCM writes beside its
    CDR files (cmr_CLUSTER_NODE_DATETIME_SEQ) when call diagnostics are on. Its header
    begins as a CDR file's does."""
    try:
        fields = _fields(head.removeprefix(BOM).split(b"\n", 1)[0].rstrip(b"\r"))
    except ParseError:
        return False            # not a CMR header: read_header says what the line is
    return (fields[:1] in (["cdrRecordType"], ["cmrRecordType"])
            and {"numberPacketsSent", "directoryNum"} <= set(fields)
            and "dateTimeOrigination" not in fields)


# text written two or four bytes a character (a Windows tool's "Unicode"), by its
# byte-order mark: the codec that reads it (and drops the mark)
_WIDE_MARKS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
               (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def wide_encoding(head: bytes) -> str | None:
    """The codec of a source written in UTF-16 or UTF-32 (PowerShell's and Excel's
    "Unicode"), else None: by its byte-order mark, or, with none, by a NUL byte beside
    each of its first 16 characters, all ASCII text (UTF-16 without a mark). Read as
    bytes, every record of it is rejected, and no line is found to hold."""
    for mark, codec in _WIDE_MARKS:
        if head.startswith(mark):
            return codec
    sample = head[:32]
    if len(sample) < 32:
        return None
    text = set(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
    for chars, zeros, codec in ((sample[0::2], sample[1::2], "utf-16-le"),
                                (sample[1::2], sample[0::2], "utf-16-be")):
        if not any(zeros) and all(c in text for c in chars):
            return codec
    return None


def line_ends(head: bytes) -> str | None:
    """How a source's lines end where it is not as the parser reads them: `cr` (CR
    alone, classic Mac OS: two or more in its head, and no LF), `crcrlf` (its first line
    ends in CR CR LF: CRLF converted to CRLF again); else None."""
    if b"\n" not in head:
        return "cr" if head.count(b"\r") >= 2 else None
    return "crcrlf" if head.split(b"\n", 1)[0].endswith(b"\r\r") else None


# how to convert a source whose lines end so, and what to call those ends
CONVERT = {"cr": "tr '\\r' '\\n'", "crcrlf": "sed 's/\\r\\r$/\\r/'"}
ENDS = {"cr": "CR alone (as classic Mac OS wrote them)",
        "crcrlf": "CR CR LF (CRLF converted to CRLF again)"}


def check_text(head: bytes, source: str = "source") -> None:
    """FormatError for a source in UTF-16 or UTF-32, or with lines that end in CR alone
    or in CR CR LF (line_ends), where it is read as bytes as it comes (following a file,
    a stream): what to do instead."""
    if (ends := line_ends(head)) is not None and wide_encoding(head) is None:
        raise FormatError(f"{source}'s lines end in {ENDS[ends]}: to stream it, convert it "
                          f"({CONVERT[ends]}); a batch ingest (without --follow) reads it as "
                          "it is")
    if (codec := wide_encoding(head)) is not None:
        name = codec.upper().removesuffix("-LE").removesuffix("-BE")
        raise FormatError(f"{source} is {name} text (two or four bytes a character, as Windows "
                          f"tools write \"Unicode\"): to stream it, convert it to UTF-8 (iconv -f "
                          f"{name} -t UTF-8); a batch ingest (without --follow) reads it as it is")


def check_named_format(form: Format, head: bytes, source: str = "source") -> None:
    """FormatError where a source read as a built-in format begins as another one does,
    beyond doubt (detect_format names that one alone): read as named, every record would
    be rejected, and what its columns seemed to hold taken for lines and times. A source
    in UTF-16 or UTF-32, or whose lines end in CR alone or CR CR LF, is refused
    (check_text: a batch ingest reads them as UTF-8 text with CRLF line ends first)."""
    check_text(head, source)
    if FORMATS.get(form.name) is not form:
        return                  # a configured dialect: its layout is the operator's
    first = head.removeprefix(BOM).split(b"\n", 1)[0].rstrip(b"\r")
    try:
        table = _asterisk_table(source, _fields(first))
    except ParseError:
        table = None            # read_header or the records say what is wrong
    if table is not None:
        raise table             # read as named, its columns would be taken for others
    try:
        seen = detect_format(head, source)
    except FormatError:
        return                  # no other format shows either: the records say what is wrong
    if seen != form.name:
        raise FormatError(f"{source} begins as {seen} files do, not as {form.name} ones: name "
                          f"its format (--format {seen}, or auto) or a feed of that format")


TYPED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\([a-z]+(,[a-z]+)*\)$")


def typed_names(line: bytes) -> list[str] | None:
    """The column names of a Kamailio db_text header (`id(int,auto) method(string) ...`),
    or None when the line is not one."""
    words = line.decode("latin-1").split()
    found = [TYPED.match(w) for w in words]
    return [m.group(1) for m in found] if words and all(found) else None  # type: ignore[union-attr]


ASTERISK_DISPOSITIONS = {"ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION", "CANCEL", "UNKNOWN"}
TYPE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*(\(\d+\))?$")    # INTEGER, VARCHAR(50), UNIQUEIDENTIFIER


def read_header(fmt: Format, head: bytes, source: str = "source") -> tuple[list[str] | None, int]:
    """(column names, bytes before the first record) at the start of a source.

    Each line is checked for being what it claims: a header names the format's required
    columns; a types line (CUCM) holds only type names, else it is the first record. A
    format whose header is optional maps a file without one by its fixed columns, or by
    the release layout of its first record's field count. (None, 0) for formats without
    a header."""
    if not fmt.header_lines:
        return None, 0
    pos = len(BOM) if head.startswith(BOM) else 0
    lines = []
    at = pos
    for _ in range(max(fmt.header_lines, 2 if fmt.types_line else 1)):
        nl = head.find(b"\n", at, MAX_HEADER)
        if nl < 0:
            break
        lines.append((head[at:nl].rstrip(b"\r"), nl + 1))
        at = nl + 1
    if not lines:
        raise ParseError(f"{source}: no complete {fmt.name} header "
                          f"({fmt.header_lines} line(s)) in its first {MAX_HEADER} bytes")
    if fmt.typed_header:
        typed = typed_names(lines[0][0])
        if typed is None:
            raise ParseError(f"{source}: its first line is no {fmt.name} header "
                             "(`name(type)` words, as db_text writes them)")
        return typed, lines[0][1]
    if fmt.types_line and cucm_cmr(lines[0][0]):
        raise ParseError(f"{source} is a CUCM CMR file (call management records: voice "
                         "quality, no calls): read the cdr_ files beside it")
    names = _fields(lines[0][0], fmt.delimiter, fmt.quote, source=source, start=pos)
    if any("\r" in name for name in names):    # inside quotes: no column is named so
        raise _unreadable(lines[0][0], source, pos)
    required = [fmt.roles[r] for r in fmt.required]
    known = fmt.columns or next(iter((fmt.releases or {}).values()), ())
    if not fmt.header_optional or set(required) <= set(names) or names[:1] == list(known[:1]):
        if len(lines) < (1 if fmt.types_line else fmt.header_lines):
            raise ParseError(f"{source}: no complete {fmt.name} header "
                              f"({fmt.header_lines} line(s)) in its first {MAX_HEADER} bytes")
        pos = lines[0][1] if fmt.types_line else lines[-1][1]
        if fmt.types_line and len(lines) > 1:
            try:
                types = _fields(lines[1][0], fmt.delimiter, fmt.quote)
            except ParseError:
                types = []      # no types line: a record, which its parse accepts or rejects
            if len(types) == len(names) and all(TYPE_NAME.match(t) for t in types):
                pos = lines[1][1]
        return names, pos
    if fmt.columns is not None:
        return None, pos             # positional: the parser reads the first line as a record
    layout = (fmt.releases or {}).get(len(names))
    if layout is None:
        raise ParseError(
            f"{source} has no {fmt.name} header, and its first line has {len(names)} fields, "
            f"which is no release's layout ({', '.join(str(n) for n in sorted(fmt.releases or {}))})")
    return list(layout), pos


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
        from .reference import CdrParser as Reference

        return Reference(dialect, zone, country_code, feed_id, min_ring_seconds, start_offset,
                         dispositions, presentations, start_record)
    starts, offsets = timezones.zone_table(zone)
    return native.CdrParser(dialect, starts, offsets, country_code, feed_id, min_ring_seconds,
                              start_offset, dispositions, presentations, start_record,
                              dialling_plan(country_code).as_tuple())


@functools.cache
def _plan(country_code: int) -> tuple:
    return dialling_plan(country_code).as_tuple()


def normalize_number(text: str | bytes, country_code: int = 1) -> int:
    """A number as the store keys it (0 when it is not one)."""
    return normalizer(country_code)(text)


@functools.cache
def normalizer(country_code: int = 1) -> Callable[[str | bytes], int]:
    """normalize_number for one country, its dialling plan built once: the trace path's
    first step (a store keeps one)."""
    if PURE:
        from .numbers import normalize

        return functools.partial(normalize, country_code=country_code)
    return native.Normalizer(country_code, _plan(country_code))


PURE = use_reference()                 # read once: os.environ.get costs 0.9 us a call
