"""CDR files as other systems' tools leave their text (docs/formats.md).

In UTF-16 or UTF-32: what Windows tools save as "Unicode" (PowerShell's Out-File,
Excel's Unicode text) when an export passes through them. Before, such a file was read
as bytes: every record rejected, no line found to hold (the digits have NUL bytes
between them), and a *57 for its calls named the caller before them, from an earlier
file. With lines that end in CR alone (classic Mac OS) or in CR CR LF (CRLF converted
to CRLF again): before, the whole file was one reject (only its first record's line
held), or every record was rejected.
"""
from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

import cdrtrace
from cdrtrace.errors import FormatError
from cdrtrace.ingestion.text import Relined
from cdrtrace.parsing.parsers import line_ends, wide_encoding
from conftest import cdr

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
OLD = cdr(src="7205550100", clid='"Innocent" <7205550100>', start="2026-03-02 14:00:00",
          answer="2026-03-02 14:00:05", end="2026-03-02 14:01:00", uniqueid="old.1")
MAL = cdr(src="7205550199", clid='"José Mal" <7205550199>'.encode().decode("latin-1"),
          start="2026-03-02 14:30:00", answer="", end="2026-03-02 14:30:20",
          disposition="NO ANSWER", uniqueid="mal.1")
OTHER = cdr(src="7205550111", dst="3035550177", start="2026-03-02 14:40:00",
            answer="2026-03-02 14:40:05", end="2026-03-02 14:41:00", uniqueid="other.1")
# the file a Windows tool saved: Mal's call, then another, CRLF line ends
TEXT = (MAL + b"\r\n" + OTHER + b"\r\n").decode("utf-8")
AT = "2026-03-02T15:00:00Z"

ENCODED = {
    "utf-16-le-marked": ("\ufeff" + TEXT).encode("utf-16-le"),
    "utf-16-be-marked": ("\ufeff" + TEXT).encode("utf-16-be"),
    "utf-16-le-unmarked": TEXT.encode("utf-16-le"),
    "utf-16-be-unmarked": TEXT.encode("utf-16-be"),
    "utf-32-le-marked": ("\ufeff" + TEXT).encode("utf-32-le"),
    "utf-32-be-marked": ("\ufeff" + TEXT).encode("utf-32-be"),
}


def older_store(tmp_path):
    """A store holding the innocent 14:00 call to 3035550110, from an earlier file."""
    store = cdrtrace.open(tmp_path / "store", create=True)
    (tmp_path / "earlier.csv").write_bytes(OLD + b"\n")
    cdrtrace.ingest(store, [str(tmp_path / "earlier.csv")])
    return store


def assert_mal_named(store):
    result = store.trace("3035550110", at=AT)
    assert (result.outcome.value, result.call_time) == ("success", "2026-03-02T14:30:00Z")
    (record,) = store.trace_records("3035550110", analyst="cic")
    assert record["call"]["calling"] == "+17205550199"
    assert store.trace("3035550177", at=AT).call_time == "2026-03-02T14:40:00Z"


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("encoding", sorted(ENCODED))
def test_a_file_in_utf16_or_utf32_is_read_and_its_calls_traced(tmp_path, encoding, compressed):
    data = ENCODED[encoding]
    path = tmp_path / ("export.csv.gz" if compressed else "export.csv")
    path.write_bytes(gzip.compress(data) if compressed else data)
    store = older_store(tmp_path)
    try:
        summary = cdrtrace.ingest(store, [str(path)], chunk_bytes=64)
        assert (summary.records, summary.rejected) == (2, 0)
        assert_mal_named(store)
        # the same file again: its content is known, skipped
        assert cdrtrace.ingest(store, [str(path)]).skipped == [str(path)]
    finally:
        store.close()


def test_a_code_unit_that_is_no_character_rejects_only_its_own_line(tmp_path):
    """An odd byte at the end (a copy cut short): it reads as U+FFFD on a line of its
    own, one reject; the records before it are read."""
    path = tmp_path / "export.csv"
    path.write_bytes(ENCODED["utf-16-le-marked"] + b"1")
    store = older_store(tmp_path)
    try:
        summary = cdrtrace.ingest(store, [str(path)])
        assert (summary.records, summary.rejected) == (3, 1)
        assert_mal_named(store)
    finally:
        store.close()


def test_utf16_on_stdin_is_read(tmp_path):
    store = older_store(tmp_path)
    store.close()
    proc = subprocess.run([sys.executable, "-m", "cdrtrace.cli", "ingest", "-", "--db",
                           str(tmp_path / "store")], input=ENCODED["utf-16-le-marked"],
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    store = cdrtrace.open(tmp_path / "store")
    try:
        assert_mal_named(store)
    finally:
        store.close()


@pytest.mark.parametrize("encoding", ["utf-16-le-marked", "utf-16-be-unmarked",
                                      "utf-32-le-marked"])
def test_following_or_streaming_utf16_is_refused_with_what_to_do(tmp_path, encoding):
    from cdrtrace.ingestion import following
    from cdrtrace.ingestion.live import StreamOptions

    path = tmp_path / "Master.csv"
    path.write_bytes(ENCODED[encoding])
    name = "UTF-32" if "32" in encoding else "UTF-16"
    store = cdrtrace.open(tmp_path / "store", create=True)
    try:
        with pytest.raises(FormatError, match=f"is {name} text .*iconv -f {name} -t UTF-8"):
            following.follow(store, str(path), options=StreamOptions(
                batch_ms=1, poll_ms=1, heartbeat_s=0.01, idle_exit_s=0.2))
    finally:
        store.close()
    proc = subprocess.run([sys.executable, "-m", "cdrtrace.cli", "ingest", "--follow", "-",
                           "--db", str(tmp_path / "store")], input=ENCODED[encoding],
                          capture_output=True, text=False, check=False)
    assert proc.returncode == 2 and f"is {name} text".encode() in proc.stderr


@pytest.mark.parametrize("name", ["asterisk/Master.csv", "cucm/cdr_StandAloneCluster_01_202603021403_1",
                                  "freeswitch/Master.csv", "kamailio/acc_cdrs.dbtext",
                                  "broadworks/BW-CDR-20260302150000-1-000002.csv"])
def test_no_sample_reads_as_wide_text(name):
    head = (SAMPLES / name).read_bytes()[:64]
    assert wide_encoding(head) is None
    assert wide_encoding(b"\xef\xbb\xbf" + head) is None
    assert wide_encoding("é,ü,ß".encode("latin-1") * 20) is None


def test_wide_encoding_needs_sixteen_characters_of_text_without_a_mark():
    assert wide_encoding('"","3035'.encode("utf-16-le")) is None          # 8: too few to tell
    assert wide_encoding('"","3035550142",'.encode("utf-16-le")) == "utf-16-le"      # 16
    assert wide_encoding(b"\x01\x00" * 16) is None                      # not text


def older_calls_store(tmp_path):
    """A store holding innocent older calls to 3035550110 and 3035550177."""
    store = older_store(tmp_path)
    (tmp_path / "earlier2.csv").write_bytes(cdr(
        src="7205550101", dst="3035550177", start="2026-03-02 14:02:00",
        answer="2026-03-02 14:02:05", end="2026-03-02 14:03:00", uniqueid="old.2") + b"\n")
    cdrtrace.ingest(store, [str(tmp_path / "earlier2.csv")])
    return store


@pytest.mark.parametrize("chunk_bytes", [64, 4 << 20])
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("ends", [b"\r", b"\r\r\n"], ids=["cr", "crcrlf"])
def test_lines_ending_in_cr_alone_or_cr_cr_lf_are_read(tmp_path, ends, compressed, chunk_bytes):
    data = TEXT.encode("utf-8").replace(b"\r\n", ends)
    path = tmp_path / ("export.csv.gz" if compressed else "export.csv")
    path.write_bytes(gzip.compress(data) if compressed else data)
    store = older_calls_store(tmp_path)
    try:
        summary = cdrtrace.ingest(store, [str(path)], chunk_bytes=chunk_bytes)
        assert (summary.records, summary.rejected) == (2, 0)
        assert_mal_named(store)
        (record,) = store.trace_records("3035550177", analyst="cic")
        assert record["call"]["calling"] == "+17205550111"
    finally:
        store.close()


@pytest.mark.parametrize("ends", [b"\r", b"\r\r\n"], ids=["cr", "crcrlf"])
def test_following_lines_ending_in_cr_alone_or_cr_cr_lf_is_refused(tmp_path, ends):
    from cdrtrace.ingestion import following
    from cdrtrace.ingestion.live import StreamOptions

    path = tmp_path / "Master.csv"
    path.write_bytes(TEXT.encode("utf-8").replace(b"\r\n", ends))
    store = cdrtrace.open(tmp_path / "store", create=True)
    try:
        with pytest.raises(FormatError, match="lines end in CR .*a batch ingest"):
            following.follow(store, str(path), options=StreamOptions(
                batch_ms=1, poll_ms=1, heartbeat_s=0.01, idle_exit_s=0.2))
    finally:
        store.close()


def test_line_ends_are_told_only_where_they_are_so():
    assert line_ends(b"a,b\nc,d\n") is None and line_ends(b"a,b\r\nc,d\r\n") is None
    assert line_ends(b"a,b\r") is None                 # one record, a CR at its end
    assert line_ends(b'"x\ry",b\r\nc\r\n') is None    # a CR inside a field
    assert line_ends(b"a,b\rc,d\r") == "cr"
    assert line_ends(b"a,b\r\r\nc,d\r\r\n") == "crcrlf"
    for name in ("asterisk/Master.csv", "cucm/cdr_StandAloneCluster_01_202603021403_1",
                 "freeswitch/Master.csv", "kamailio/acc_cdrs.dbtext"):
        assert line_ends((SAMPLES / name).read_bytes()[:8192]) is None


class Dribble:
    """A raw stream that gives a few bytes a read."""

    def __init__(self, data: bytes, sizes):
        self.data, self.sizes, self.at = data, sizes, 0

    def read(self, n):
        k = min(n, next(self.sizes))
        out, self.at = self.data[self.at:self.at + k], self.at + k
        return out


@pytest.mark.parametrize("ends,expected", [("crcrlf", b"a\r\nb\r\n\r\nc\r\n"),
                                           ("cr", b"a\r\nb\r\n\r\nc\r\n")])
def test_relined_reads_alike_however_its_source_is_read(ends, expected):
    data = (b"a\r\r\nb\r\r\n\r\r\nc\r\r\n" if ends == "crcrlf" else b"a\rb\r\rc\r")
    for sizes in ([1], [2], [3], [1, 2], [5, 1], [1 << 16]):
        def cycle(sizes=sizes):
            while True:
                yield from sizes
        stream = Relined(Dribble(data, cycle()), ends)
        out, buffer = b"", bytearray(3)
        while n := stream.readinto(buffer):
            out += bytes(buffer[:n])
        assert out == expected, sizes


def excel_saved(record: bytes, day_first: bool = False, two_digit_year: bool = False) -> bytes:
    """A record as a spreadsheet saves it: quotes only where needed, times as its locale
    shows them (3/2/2026 14:30, no seconds; 2/3/2026 day first)."""
    import csv
    import io

    fields = next(csv.reader([record.decode("latin-1")]))
    for i in (9, 10, 11):                     # start, answer, end
        if fields[i]:
            date, clock = fields[i].split(" ")
            y, m, d = date.split("-")
            y = y[2:] if two_digit_year else y
            fields[i] = f"{int(d)}/{int(m)}/{y} {clock[:5]}" if day_first else \
                f"{int(m)}/{int(d)}/{y} {clock[:5]}"
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue().encode("latin-1")


@pytest.mark.parametrize("day_first,two_digit_year", [(False, False), (True, False), (False, True)])
def test_a_file_saved_from_a_spreadsheet_holds_its_calls_at_each_reading(tmp_path, day_first,
                                                                         two_digit_year):
    """Every record of a CDR file opened in a spreadsheet and saved is rejected (its
    times are 3/2/2026 14:30). Before, no time was read in any, so nothing was held, and
    the *57 named the innocent caller of an earlier file. Now each record's first such
    date is read both ways where day and month could be either (2 March or 3 February),
    at the end of its minute, and its line held at each reading."""
    path = tmp_path / "saved.csv"
    path.write_bytes(excel_saved(MAL, day_first, two_digit_year) + b"\r\n" +
                     excel_saved(OTHER, day_first, two_digit_year) + b"\r\n")
    store = older_calls_store(tmp_path)
    try:
        summary = cdrtrace.ingest(store, [str(path)])
        assert (summary.records, summary.rejected, summary.unreadable) == (2, 2, 4)
        for at, call in (("2026-03-02T15:00:00Z", "2026-03-02T14:30:59Z"),    # after both
                         ("2026-02-10T12:00:00Z", "2026-02-03T14:30:59Z")):   # between them
            result = store.trace("3035550110", at=at)
            assert (result.outcome.value, result.call_time) == ("untraceable", call), at
    finally:
        store.close()


def test_spreadsheet_dates_are_read_every_way_they_can_be():
    from cdrtrace.parsing.salvage import loose_times

    march, feb = 1772461859000000, 1770129059000000      # 2 March, 3 February, 14:30:59 UTC
    assert loose_times(b"x,3/2/2026 14:30,y", "UTC") == [feb, march]
    assert loose_times(b"x,02.03.26 14:30,y", "UTC") == [feb, march]
    assert loose_times(b"x,2/13/2026 14:30:05,y", "UTC") == [1770993005000000]   # 13 Feb only
    assert loose_times(b"x,13/2/2026 14:30:05,y", "UTC") == [1770993005000000]
    assert loose_times(b"x,2026/3/2 14:30,y", "UTC") == [march]                   # year first
    assert loose_times(b"x,13/13/2026 14:30,y", "UTC") == []                      # no date
    assert loose_times(b'"","3035550110","2026-03-02 14:30:00"', "UTC") == []
