"""The native Asterisk parser: every layout, the ugly cases, exact errors, and equality with
the pure-Python reference on generated and mutated input, fed in arbitrary chunks."""
from __future__ import annotations

import base64
import datetime
import json
import weakref

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cdrtrace
from cdrtrace import synth
from cdrtrace.parsing import _parse, numbers, parsers, timezones
from cdrtrace.parsing import native as parsing_native
from cdrtrace.parsing import reference as twin
from cdrtrace.parsing.formats import ASTERISK, COLUMN_NAMES, CallBatch, Disposition, Presentation
from conftest import cdr, cdr_file, q
from conftest import parse_all as _parse_all


def parse_all(data: bytes, zone="UTC", chunks=None, parser=None, **kw):
    return _parse_all(data, chunks=chunks, parser=parser or native(zone, **kw))


def native(zone="UTC", **kw):
    starts, offsets = timezones.zone_table(zone)
    return parsing_native.CdrParser(ASTERISK.dialect(), starts, offsets, **kw)


def reference(data: bytes, zone="UTC", **kw):
    return parse_all(data, parser=twin.CdrParser(ASTERISK.dialect(), zone, **kw))


# the native parser's structural scans (AVX2 where the processor has it, and the baseline
# every processor runs): the tests that place structural bytes run under each
SCANS = ["baseline"] + (["avx2"] if _parse.structural_scan() == "avx2" else [])


@pytest.fixture(params=SCANS)
def scan(request):
    was = _parse.structural_scan(request.param)
    yield request.param
    _parse.structural_scan(was)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(block=st.lists(st.sampled_from(b'",|;\t\'\r\nab\x00\xff\xa2'), min_size=64, max_size=64),
       delim=st.sampled_from(b",|;\t"), quote=st.sampled_from(b"\"'"))
def test_block_masks_mark_each_quote_delimiter_and_line_end(scan, block, delim, quote):
    q, d, e = _parse.block_masks(bytes(block), delim, quote)
    assert q == sum(1 << i for i, b in enumerate(block) if b == quote)
    assert d == sum(1 << i for i, b in enumerate(block) if b == delim)
    assert e == sum(1 << i for i, b in enumerate(block) if b in b"\r\n")


# ------------------------------------------------------------------ layouts and values

@pytest.mark.parametrize("columns", [16, 17, 18, 19, 20, 21])
def test_every_column_layout_parses(columns):
    rows, rejects = parse_all(cdr(columns) + b"\n")
    assert rejects == []
    (row,) = rows
    assert numbers.format_number(row["calling"]) == "+13035550142"
    assert numbers.format_number(row["called"]) == "+13035550110"
    assert row["disposition"] == Disposition.ANSWERED and row["received"]
    assert row["start_us"] == 1772460191 * 1_000_000
    assert row["answer_us"] == 1772460195 * 1_000_000
    assert row["offset"] == 0 and row["record"] == 1


def test_documentation_example_line():
    line = (b'"","3035550142","3035550110","from-pstn","""Pat Doe"" <3035550142>",'
            b'"PJSIP/trunk-0000001a","PJSIP/1001-0000001b","Dial","PJSIP/1001,30,tT",'
            b'"2026-03-02 14:03:11",,"2026-03-02 14:03:20",9,0,"NO ANSWER","DOCUMENTATION",'
            b'"1772460191.52",""')
    (row,), rejects = parse_all(line)   # no newline at the end
    assert rejects == []
    assert row["answer_us"] == 0 and row["disposition"] == Disposition.NO_ANSWER
    assert row["received"]
    assert numbers.format_number(row["final"]) == "1001"   # the extension that rang


def test_quotes_commas_newlines_and_latin1_inside_fields():
    record = cdr(clid=q(b'"Jos\xe9 ""JJ"" N\xfa\xf1ez, Jr.\nline two" <3035550142>'),
                 lastdata="PJSIP/1001,30,tT")
    rows, rejects = parse_all(record + b"\r\n" + cdr(src="7205550101") + b"\r\n")
    assert rejects == [] and len(rows) == 2
    assert rows[1]["offset"] == len(record) + 2


@pytest.mark.parametrize("inside", [b'""', b",", b"\r\n", b"\n"])
def test_quoted_data_at_every_offset_of_a_record_is_data(scan, inside):
    """Quotes, delimiters and line ends are found 64 bytes at a time from a record's
    start: a doubled quote, a comma or a line end inside a quoted name, at every offset
    across the first two block edges, is part of the name."""
    for length in range(0, 140):
        name = b"x" * length
        for at in range(0, length + 1, 1 if length in (20, 63, 64, 90, 127) else 17):
            clid = b'"' + name[:at] + inside + name[at:] + b'" <3035550142>'
            data = cdr(src="") + b"\n" + cdr(src="", clid=q(clid)) + b"\n"
            rows, rejects = parse_all(data)
            assert rejects == [] and len(rows) == 2, (length, at)
            assert numbers.format_number(rows[1]["calling"]) == "+13035550142"
            assert rows[1]["offset"] == len(cdr(src="")) + 1


@pytest.mark.parametrize("insert", [b'"', b'""', b",", b"\r", b"\n", b"\r\n", b'","', b'"\r\n',
                                    b'\r"'])
def test_native_equals_reference_with_a_structural_byte_at_every_offset(scan, insert):
    """The same, for bytes that break a record as much as for those that do not: the
    native parser reads every record the reference reads, rejects every one it rejects."""
    line = cdr(clid=q('"Pat Doe, Jr." <3035550142>')) + b"\r\n"
    for at in range(len(line) + 1):
        data = line + line[:at] + insert + line[at:] + line
        assert parse_all(data) == reference(data), at


def test_crlf_and_missing_final_newline():
    data = cdr() + b"\r\n" + cdr(src="7205550101")
    rows, rejects = parse_all(data)
    assert [numbers.format_number(r["calling"]) for r in rows] == ["+13035550142", "+17205550101"]


def test_blank_lines_are_not_records():
    rows, rejects = parse_all(b"\n\r\n" + cdr() + b"\n\n")
    assert len(rows) == 1 and rejects == [] and rows[0]["record"] == 1


@pytest.mark.parametrize("disposition,seconds,received", [
    ("ANSWERED", 69, True), ("NO ANSWER", 69, True), ("CANCEL", 69, True), ("BUSY", 0, False),
    ("FAILED", 0, False), ("CONGESTION", 0, False),
    # failed 69 s on, alerting not logged: a phone or proxy may have ended its ringing so
    ("FAILED", 69, True), ("CONGESTION", 69, True), ("FAILED", 1, True),
    ("UNKNOWN", 69, True),     # an end the record does not explain: the line may have rung
    ("UNKNOWN", 0, False),
    ("BUSY", 1, True),    # refused a second on: its user may have refused it while it rang
    ("BUSY", -5, True)])  # ended 5 s before its start (clocks apart): no time told, it may have
def test_disposition_decides_received(disposition, seconds, received):
    end = f"2026-03-02 14:{3 + (11 + seconds) // 60:02d}:{(11 + seconds) % 60:02d}"
    (row,), _ = parse_all(cdr(disposition=disposition, end=end, duration=str(max(seconds, 0))))
    assert bool(row["received"]) is received


def test_minimum_ring_time_applies_to_unanswered_calls_only():
    short = cdr(disposition="NO ANSWER", end="2026-03-02 14:03:13", duration="2", billsec="0")
    answered = cdr(end="2026-03-02 14:03:13", duration="2", billsec="0",
                   answer="2026-03-02 14:03:12")
    rows, _ = parse_all(short + b"\n" + answered, min_ring_seconds=5)
    assert [bool(r["received"]) for r in rows] == [False, True]
    rows, _ = parse_all(short, min_ring_seconds=0)
    assert rows[0]["received"]


@given(st.integers(0, 4102444800 * 10**6 - 1))
def test_utc_text_reads_back_to_the_microsecond(us):
    text = timezones.format_utc(us)
    assert text.endswith("Z") and "+" not in text
    assert timezones.parse_instant(text) == us


UTC_FIRST_US, UTC_LAST_US = -62135596800 * 10**6, 253402300799 * 10**6 + 999_999   # years 1-9999


@pytest.mark.parametrize("write", [timezones.format_utc, timezones.reference_format_utc],
                         ids=["native", "reference"])
@given(us=st.one_of(st.integers(UTC_FIRST_US, UTC_LAST_US),
                    st.integers(-86_400 * 10**6, 86_400 * 10**6),       # around the epoch
                    st.sampled_from([UTC_FIRST_US, UTC_LAST_US, 0, -1, 951_782_400 * 10**6,
                                     4_107_542_400 * 10**6 - 1])))    # 2000-02-29, 2100-02-28
def test_utc_text_is_datetimes_to_the_microsecond_from_its_kept_seconds_too(write, us):
    reference = (datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=us)).isoformat()
    assert write(us) == reference + "Z"
    assert write(us) == reference + "Z"      # its second now kept (the reference's)
    whole = us - us % 1_000_000
    assert write(whole) == reference[:19] + "Z"   # no fraction: none written


def test_utc_text_outside_datetimes_years_is_refused_as_the_reference_does():
    """C writes years 1-9999; outside them, and past 64 bits, it is the reference's
    OverflowError; any integer type is read as int() reads it."""
    for us in (UTC_FIRST_US - 1, UTC_LAST_US + 1, -(2**63), 2**63 - 1, 2**64, -(2**70)):
        with pytest.raises(OverflowError):
            timezones.reference_format_utc(us)
        with pytest.raises(OverflowError):
            timezones.format_utc(us)
    assert timezones.format_utc(np.int64(1_500_000)) == "1970-01-01T00:00:01.500000Z"
    assert timezones.format_utc(True) == timezones.reference_format_utc(True)


@pytest.mark.parametrize("min_ring", [0, 5])
def test_a_call_that_ends_before_it_starts_rang(min_ring):
    """Clocks apart (an end stamped before the start) tell no ring time: the call counts
    as received, so a trace names it rather than pass over it to an older caller."""
    skewed = cdr(disposition="NO ANSWER", start="2026-03-02 14:03:13",
                 end="2026-03-02 14:03:12", duration="0", billsec="0")
    (row,), rejects = parse_all(skewed, min_ring_seconds=min_ring)
    assert rejects == [] and row["received"]
    (twin_row,), _ = reference(skewed, min_ring_seconds=min_ring)
    assert twin_row["received"]


@pytest.mark.parametrize("src,clid,userfield,calling,presentation", [
    ("3035550142", '"Pat" <3035550142>', "", "+13035550142", Presentation.ALLOWED),
    ("anonymous", '"Anonymous" <3035550142>', "", "+13035550142", Presentation.RESTRICTED),
    ("anonymous", '"Anonymous" <>', "", "", Presentation.UNAVAILABLE),
    ("", '"" <>', "", "", Presentation.UNAVAILABLE),
    ("OUT OF AREA", '"OUT OF AREA" <OUT OF AREA>', "", "", Presentation.UNAVAILABLE),
    ("Restricted", '"Restricted"', "", "", Presentation.UNAVAILABLE),
    ("3035550142", '"Pat" <3035550142>', "prohib_passed_screen", "+13035550142",
     Presentation.RESTRICTED),
    ("3035550142", '"Pat" <3035550142>', "unavailable", "+13035550142", Presentation.UNAVAILABLE),
    ("+44 20 7946 0018", '"" <>', "allowed", "+442079460018", Presentation.ALLOWED),
])
def test_caller_number_and_presentation(src, clid, userfield, calling, presentation):
    (row,), _ = parse_all(cdr(src=src, clid=clid, userfield=userfield))
    assert numbers.format_number(row["calling"]) == calling
    assert row["presentation"] == presentation


def test_forwarding_columns():
    record = cdr(dst="3035550110", userfield="3035550177",
                 dstchannel="PJSIP/7205550199-00000042")
    (row,), _ = parse_all(record)
    assert numbers.format_number(row["redirecting"]) == "+13035550177"
    assert numbers.format_number(row["final"]) == "+17205550199"
    (row,), _ = parse_all(cdr(dstchannel="Local/1002@from-internal-00000001;1"))
    assert numbers.format_number(row["final"]) == "1002"
    (row,), _ = parse_all(cdr(dstchannel="PJSIP/trunk-0000001b"))
    assert row["final"] == 0


def test_call_id_from_uniqueid_is_stable_and_distinct():
    a, b = cdr(uniqueid="1772460191.52"), cdr(uniqueid="1772460191.53")
    rows, _ = parse_all(a + b"\n" + b + b"\n" + a)
    assert rows[0]["call_id"] == rows[2]["call_id"] != rows[1]["call_id"]
    rows16, _ = parse_all(cdr(16) + b"\n" + cdr(16) + b"\r\n")  # no uniqueid: hash of the record
    assert rows16[0]["call_id"] == rows16[1]["call_id"]


def test_arrow_batch_is_zero_copy():
    cols, _, _ = native().feed(cdr() + b"\n" + cdr(src="7205550101") + b"\n", True)
    arrow = CallBatch(cols).to_arrow()
    assert arrow.num_rows == 2 and arrow.schema.names == list(COLUMN_NAMES)
    for name in ("start_us", "calling", "call_id"):
        assert arrow.column(name).buffers()[1].address == cols[name].ctypes.data
    assert arrow.column("calling").type == pa.uint64()


# ------------------------------------------------------------------ time zones

@pytest.mark.parametrize("local,utc", [
    ("2026-03-02 14:03:11", "2026-03-02T21:03:11Z"),    # MST, UTC-7
    ("2026-07-02 14:03:11", "2026-07-02T20:03:11Z"),    # MDT, UTC-6
    ("2026-11-01 01:30:00", "2026-11-01T07:30:00Z"),    # repeated hour: the earlier instant
    ("2026-11-01 02:30:00", "2026-11-01T09:30:00Z"),
    ("2026-03-08 02:30:00", "2026-03-08T09:30:00Z"),    # spring gap: offset before the change
    ("2026-03-08 03:00:00", "2026-03-08T09:00:00Z"),
])
def test_local_times_convert_across_dst(local, utc):
    (row,), _ = parse_all(cdr(start=local, end=local, answer=local), zone="America/Denver")
    assert timezones.format_utc(row["start_us"]) == utc
    (ref,), _ = reference(cdr(start=local, end=local, answer=local), zone="America/Denver")
    assert ref["start_us"] == row["start_us"]


@settings(max_examples=150, deadline=None)
@given(st.datetimes(min_value=__import__("datetime").datetime(1970, 1, 2),
                    max_value=__import__("datetime").datetime(2099, 12, 30)),
       st.sampled_from(["America/Denver", "Europe/London", "Australia/Lord_Howe",
                        "America/St_Johns", "Asia/Kolkata", "UTC"]))
def test_zone_table_matches_zoneinfo(moment, zone):
    stamp = moment.strftime("%Y-%m-%d %H:%M:%S")
    (row,), _ = parse_all(cdr(start=stamp, end=stamp, answer=stamp), zone=zone)
    expected = timezones.local_to_utc_seconds(moment.year, moment.month, moment.day,
                                              moment.hour, moment.minute, moment.second, zone)
    assert row["start_us"] == expected * 1_000_000


# ------------------------------------------------------------------ rejects

@pytest.mark.parametrize("record,reason", [
    (b"just,three,fields", "wrong field count: 3 (expected 16 to 21)"),
    (cdr() + b',"x","y","z","w"', "wrong field count: 22 (expected 16 to 21)"),
    (cdr(start="2026-02-30 10:00:00"), "bad timestamp in column 10"),
    (cdr(answer="2026-03-02 14:03"), "bad timestamp in column 11"),
    (cdr(end="yesterday"), "bad timestamp in column 12"),
    (cdr(start="1969-12-31 23:59:59"), "bad timestamp in column 10"),
    (cdr(duration="-4"), "bad duration in column 13"),
    (cdr(billsec="1.5"), "bad duration in column 14"),
    (cdr(disposition="ANSWERD"), "unknown disposition in column 15"),
    (cdr(clid=q(b'"Pat\x00" <3035550142>')), "NUL byte"),
    (cdr(dcontext=b'"from-pstn"x'), "unexpected character after closing quote"),
    (cdr(duration=b'6"9'), "quote inside unquoted field"),
    (cdr(lastapp=b'"Di\ral"').replace(b'"Di\ral"', b"Di\ral"), "carriage return inside a record"),
])
def test_malformed_records_are_rejected_with_exact_reasons(record, reason):
    good = cdr(src="7205550101")
    data = good + b"\n" + record + b"\n" + good + b"\n"
    rows, rejects = parse_all(data)
    assert len(rows) == 2, "the good records around a bad one are kept"
    assert rejects == [(2, len(good) + 1, reason, record)]
    assert reference(data) == (rows, rejects)


@pytest.mark.parametrize("record,reason", [
    (lambda pad: cdr(dcontext=b'"' + pad + b'"x'), "unexpected character after closing quote"),
    (lambda pad: cdr(dcontext=pad + b'"x"'), "quote inside unquoted field"),
    (lambda pad: cdr(dcontext=pad + b"\rx"), "carriage return inside a record"),
])
def test_a_misplaced_quote_or_return_is_rejected_at_every_offset(scan, record, reason):
    """Where the fault sits against the parser's 64-byte blocks changes nothing: the
    record is rejected with its reason, and the records around it are kept."""
    good = cdr(src="7205550101")
    for length in range(1, 200):
        bad = record(b"f" * length)
        rows, rejects = parse_all(good + b"\n" + bad + b"\n" + good + b"\n")
        assert len(rows) == 2 and rejects == [(2, len(good) + 1, reason, bad)], length


@pytest.mark.parametrize("clock,seconds", [
    ("00:00:00", 0), ("23:59:59", 86399), ("09:05:07", 32707), ("24:00:00", None),
    ("23:60:00", None), ("23:00:60", None), ("23-00-00", None), ("2:00:000", None),
    ("23:0a:00", None), ("23:00:0/", None), ("23:00:0:", None), ("\xb2\xb3:00:00", None),
    ("23;00:00", None), ("12:34800", None),
])
def test_a_start_time_of_day_in_range_or_the_record_is_rejected(clock, seconds):
    """A time of day is HH:MM:SS, hours to 23, minutes and seconds to 59 (the native
    parser reads the eight bytes as one word)."""
    record = cdr(start="2026-03-02 " + clock)
    rows, rejects = parse_all(record + b"\n")
    if seconds is None:
        assert rows == [] and [r[2] for r in rejects] == ["bad timestamp in column 10"]
    else:
        assert rejects == [] and rows[0]["start_us"] == (1772409600 + seconds) * 1_000_000
    assert reference(record + b"\n") == (rows, rejects)


def test_unterminated_quote_loses_only_its_own_line():
    good = [cdr(src=f"720555010{i}") for i in range(4)]
    broken = good[1][:36]   # cut inside the quoted "from-pstn"
    assert broken.endswith(b"\"from-p")
    data = b"\n".join([good[0], broken, good[2], good[3]]) + b"\n"
    rows, rejects = parse_all(data)
    assert [numbers.format_number(r["calling"]) for r in rows] == [
        "+17205550100", "+17205550102", "+17205550103"]
    assert [r[2] for r in rejects] == ["unterminated quote"]
    assert rejects[0][1] == len(good[0]) + 1
    assert reference(data) == (rows, rejects)


def test_quote_open_at_end_of_input():
    data = cdr() + b'\n"","3035550142","unterminated'
    rows, rejects = parse_all(data)
    assert len(rows) == 1 and [r[2] for r in rejects] == ["unterminated quote"]


def test_record_over_64_kib_is_rejected_and_parsing_resumes():
    huge = cdr(lastdata="x" * 70_000)
    data = cdr() + b"\n" + huge + b"\n" + cdr(src="7205550101") + b"\n"
    for chunks in (None, [4096] * 100, [65_000, 10, 70_000]):
        rows, rejects = parse_all(data, chunks=chunks)
        assert len(rows) == 2
        assert [(r[0], r[1], r[2]) for r in rejects] == [(2, len(cdr()) + 1, "record over 64 KiB")]
        assert len(rejects[0][3]) == 65536


# ------------------------------------------------------------------ zeros where records were

ZEROS = ("a run of NUL bytes where records should be (a crash, or a file truncated while its "
         "writer kept its place): whatever records they replaced are lost")
CUT = "cut short by a run of NUL bytes"
PAT = cdr(src="7205550101")
CHUNKINGS = (None, [1] * 600 + [10_000] * 30, [7] * 2000 + [9_000] * 30, [4096] * 100,
             [65_000, 10, 70_000, 70_000, 70_000], [65_536 + 3] * 6,
             # a read that ends 4 bytes into zeros that begin 65,533 bytes into a line
             [len(PAT) + 1 + 65_537] + [1] * 20 + [10_000] * 30)


def _zeros_cases():
    """(data, rows' callers, rejects) for the shapes zeros take in a switch's file: after a
    crash (the file's size written, its last pages never: zeros from a page's start to
    where the file ended, in the middle of a record) or a rotation that truncated the
    file under a writer that kept its offset (zeros from the file's start), the switch
    writes on after them. The expected rejects follow from the rule: eight NUL bytes or
    more in a row are no record's; they end the record they cut into, and the record
    after them is read."""
    pat, mal = PAT, cdr(src="7205550199", start="2026-03-02 11:00:00")
    lee = cdr(src="7205550188", dst="3035550177")
    cut = lee[:150]
    for run in (8, 300, 4096, 70_000):
        zeros = b"\0" * run
        yield (pat + b"\n" + zeros + mal + b"\n", ["+17205550101", "+17205550199"],
               [(2, len(pat) + 1, ZEROS, b"")])
        yield (zeros + mal + b"\n", ["+17205550199"], [(1, 0, ZEROS, b"")])
        yield (pat + b"\n" + cut + zeros + mal + b"\n", ["+17205550101", "+17205550199"],
               [(2, len(pat) + 1, CUT, cut), (3, len(pat) + 1 + len(cut), ZEROS, b"")])
        yield (pat + b"\n" + zeros + b"\n" + mal, ["+17205550101", "+17205550199"],
               [(2, len(pat) + 1, ZEROS, b"")])
        # a line too long to keep, then zeros: the reject keeps its first 64 KiB, and
        # the record after the zeros is read
        junk = b"x" * 70_000
        yield (pat + b"\n" + junk + zeros + mal + b"\n", ["+17205550101", "+17205550199"],
               [(2, len(pat) + 1, "record over 64 KiB", junk[:65_536]),
                (3, len(pat) + 1 + len(junk), ZEROS, b"")])
        # ... or just short of what is kept: the zeros cut it short
        junk = b"x" * 65_533
        yield (pat + b"\n" + junk + zeros + mal + b"\n", ["+17205550101", "+17205550199"],
               [(2, len(pat) + 1, CUT, junk), (3, len(pat) + 1 + len(junk), ZEROS, b"")])


@pytest.mark.parametrize("case", range(24))
def test_zeros_where_records_were_are_one_reject_and_the_records_after_them_are_read(case):
    """Before, zeros and the record written after them were one line: rejected, the call
    in it lost (past 64 KiB of zeros unseen, so that its line was not even held), and a
    *57 named the caller before it."""
    data, callers, rejects = list(_zeros_cases())[case]
    for chunks in CHUNKINGS:
        got = parse_all(data, chunks=chunks)
        assert [numbers.format_number(r["calling"]) for r in got[0]] == callers, chunks
        assert got[1] == rejects, chunks
    assert reference(data) == got


@pytest.mark.parametrize("run", [1, 7])
def test_fewer_than_eight_nul_bytes_leave_the_line_one_reject(run):
    """A NUL byte or a few inside a line are a damaged record, not zeros where records
    were: the line is one reject, its line and time held by the salvage (fail closed)."""
    pat, mal = PAT, cdr(src="7205550199")
    for line in (b"\0" * run + mal, mal[:150] + b"\0" * run + mal[150:]):
        data = pat + b"\n" + line + b"\n" + pat + b"\n"
        for chunks in CHUNKINGS[:4]:
            rows, rejects = parse_all(data, chunks=chunks)
            assert len(rows) == 2 and [(r[0], r[1], r[3]) for r in rejects] == [
                (2, len(pat) + 1, line)], chunks
        assert reference(data) == (rows, rejects)


@settings(max_examples=150, deadline=None)
@given(case=st.integers(0, 23), chunk=st.integers(1, 9000), cut=st.integers(0, 200))
def test_zeros_read_in_any_chunking_as_the_reference_reads_them(case, chunk, cut):
    data, _, _ = list(_zeros_cases())[case]
    data = data[:len(data) - cut]             # cut anywhere near the end as well
    assert parse_all(data, chunks=[chunk] * (len(data) // chunk + 2)) == reference(data)


@pytest.mark.parametrize("chunk_bytes", [1000, 70_000, 4 << 20])
def test_ingest_in_any_chunk_size_keeps_every_good_record(store, tmp_path, chunk_bytes):
    records = [cdr(src=f"72055501{i:02d}", dst=f"30355501{i:02d}") for i in range(40)]
    records[7] = cdr(lastdata="x" * 70_000)          # over 64 KiB
    records[20] = cdr(clid=q(b'"Multi\nline" <3035550142>'), dst="3035550199")
    path = cdr_file(tmp_path, *records, end=b"\r\n")
    summary = cdrtrace.ingest(store, [path], chunk_bytes=chunk_bytes,
                              rejects_path=tmp_path / "r.jsonl")
    assert (summary.records, summary.rejected, summary.bytes) == (40, 1, len(open(path, "rb").read()))
    assert summary.indexed == 39
    assert store.last_calls("3035550199", analyst="ann")[0]["calling"] == "+13035550142"


@pytest.mark.parametrize("fmt", ["cucm", "auto"])
def test_a_header_longer_than_a_chunk_is_read_whole(store, tmp_path, fmt):
    """A CUCM file's two header lines run to kilobytes: read in chunks smaller than them,
    the format and header are still found (before, such an ingest stopped with 'no
    complete cucm header in its first 65536 bytes')."""
    from test_formats import cucm_file
    rows = [{"globalCallID_callManagerId": 1, "globalCallID_callId": 70 + i,
             "dateTimeOrigination": 1772445600 + 60 * i, "dateTimeConnect": 1772445605 + 60 * i,
             "dateTimeDisconnect": 1772445660 + 60 * i, "callingPartyNumber": "7205550101",
             "originalCalledPartyNumber": "3035550110", "finalCalledPartyNumber": "3035550110",
             "origCause_value": 16, "destCause_value": 16, "duration": 55} for i in range(3)]
    path = cucm_file(tmp_path, rows)
    header = len(b"".join(open(path, "rb").readlines()[:2]))
    for chunk in (64, 1000, header - 1, header, header + 1):
        summary = cdrtrace.ingest(store, [path], fmt=fmt, chunk_bytes=chunk, force=True)
        assert (summary.records, summary.rejected, summary.indexed) == (3, 0, 3), chunk
    assert len(store.last_calls("3035550110", analyst="ann")) == 3


def test_a_reject_with_no_time_holds_its_line_whatever_the_chunk(tmp_path):
    """3035550110 was called at 09:00 by Pat (answered); the next record, for 3035550110
    too, has a start that is no time; a call to another line ended at 12:00. The reject
    ended after 09:00's call (records are written as calls end), so a *57 at 11:00 may
    be for it: untraceable, at every chunk size. Before, a read that began with the
    reject placed it at the start of the 12:00 record, and the *57 named Pat."""
    path = cdr_file(tmp_path,
                    cdr(dst="3035550199", start="2026-03-02 08:00:00", answer="2026-03-02 08:00:05",
                        end="2026-03-02 08:01:00"),
                    cdr(start="2026-03-02 09:00:00", answer="2026-03-02 09:00:05",
                        end="2026-03-02 09:01:00"),
                    cdr(src="7205550188", clid='"Lee" <7205550188>', start="2026-02-31 09:30:00",
                        answer="", end="2026-02-31 10:30:00", disposition="NO ANSWER"),
                    cdr(dst="3035550198", start="2026-03-02 12:00:00", answer="2026-03-02 12:00:05",
                        end="2026-03-02 12:01:00"))
    for chunk in range(40, 900, 11):
        store = cdrtrace.open(tmp_path / f"s{chunk}", create=True)
        try:
            cdrtrace.ingest(store, [path], chunk_bytes=chunk, rejects_path=tmp_path / "r.jsonl")
            result = store.trace("3035550110", at="2026-03-02T11:00:00Z")
            assert (result.outcome.value, result.call_time) == (
                "untraceable", "2026-03-02T09:01:00Z"), chunk
        finally:
            store.close()


def test_ingest_writes_rejects_file_and_counts(store, tmp_path):
    bad = cdr(disposition="ANSWERD")
    path = cdr_file(tmp_path, cdr(), bad, cdr(src="7205550101"))
    summary = cdrtrace.ingest(store, [path], rejects_path=tmp_path / "rejects.jsonl")
    assert (summary.records, summary.rejected, summary.indexed) == (3, 1, 2)
    (entry,) = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert entry == {"source": path, "source_id": 1, "record": 2, "offset": len(cdr()) + 1,
                     "reason": "unknown disposition in column 15",
                     "raw_b64": base64.b64encode(bad).decode()}


# ------------------------------------------------------------------ native == reference

def _sample(seed: int, n: int = 300) -> bytes:
    columns, _ = synth.generate(n, 60, seed=seed, campaigns=3)
    return synth.format_asterisk(columns, 0, len(columns["line"]), zone="America/Denver")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), chunk=st.integers(1, 5000))
def test_native_equals_reference_on_generated_traffic_in_any_chunking(seed, chunk):
    data = _sample(seed, 120)
    ref = reference(data, zone="America/Denver")
    assert ref[1] == [] and len(ref[0]) == data.count(b"\n")   # synth writes no newline in a field
    assert parse_all(data, zone="America/Denver", chunks=[chunk] * (len(data) // chunk + 2)) == ref


BASE = _sample(7, 40)


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, len(BASE) - 1),
                                st.sampled_from([b'"', b",", b"\n", b"\r", b"\x00", b"", b"9",
                                                 b"\xe9", b"<", b"-", b" ", b'""', b"\r\n",
                                                 b"\x00" * 7, b"\x00" * 8, b"\x00" * 300]),
                                st.integers(0, 3)), min_size=1, max_size=8),
       chunk=st.integers(1, 3000))
def test_native_equals_reference_on_mutated_bytes(scan, edits, chunk):
    data = bytearray(BASE)
    for pos, insert, delete in edits:
        pos = min(pos, len(data))
        data[pos:pos + delete] = insert
    data = bytes(data)
    ref = reference(data, zone="America/Denver")
    got = parse_all(data, zone="America/Denver", chunks=[chunk] * (len(data) // chunk + 2))
    assert got == ref
    # nothing good is lost: every record the mutation did not touch still parses
    assert len(got[0]) + len(got[1]) >= 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_native_equals_reference_on_arbitrary_bytes(scan, data):
    assert parse_all(data) == reference(data)


# ------------------------------------------------------------------ output arrays reused

def test_a_column_handed_out_is_never_written_by_a_later_feed():
    """The parser writes a feed's columns into the last feed's arrays only when no column
    of them is held any more: a column kept (even one, even as a slice) keeps its values."""
    columns, _ = synth.generate(4000, 300, seed=8)
    first = synth.format_asterisk(columns, 0, 2000)
    second = synth.format_asterisk(columns, 2000, 4000)
    p = parsers.make_parser()
    rows, _, _ = p.feed(first)
    kept = {name: rows[name][5:] for name in ("calling", "start_us")}
    expected = {name: column.copy() for name, column in kept.items()}
    del rows
    for _ in range(3):
        later, _, _ = p.feed(second)
        del later
    assert all(np.array_equal(kept[name], expected[name]) for name in kept)


def test_a_feed_whose_columns_were_let_go_writes_the_same_arrays_again():
    """Fresh arrays for every feed fault their pages in again each time."""
    columns, _ = synth.generate(2000, 300, seed=8)
    data = synth.format_asterisk(columns, 0, 2000)
    held = parsers.make_parser()           # its first columns kept: fresh arrays next
    first, _, _ = held.feed(data)
    expected, _, _ = held.feed(data)
    p = parsers.make_parser()
    rows, _, _ = p.feed(data)
    arrays = {name: weakref.ref(column.base) for name, column in rows.items()}   # not held
    del rows
    again, _, _ = p.feed(data)
    assert all(again[name].base is arrays[name]() for name in arrays)
    assert all(np.array_equal(again[name], expected[name]) for name in expected)
    assert first["start_us"].base is not expected["start_us"].base


# ------------------------------------------------------------------ module selection

def test_reference_is_selected_only_on_request(monkeypatch):
    monkeypatch.setenv("CDRTRACE_PURE", "1")
    assert isinstance(parsers.make_parser(), twin.CdrParser)
    monkeypatch.delenv("CDRTRACE_PURE")
    assert isinstance(parsers.make_parser(), _parse.CdrParser)


def test_unknown_format_and_zone():
    with pytest.raises(cdrtrace.FormatError,
                       match="unknown format 'bogus' \\(known: asterisk, asterisk-custom, "
                             "freeswitch, cucm, broadworks, kamailio, kamailio-acc, kamailio-dbtext\\)"):
        parsers.make_parser("bogus")
    with pytest.raises(cdrtrace.CdrTraceError, match="unknown time zone 'Mars/Base'"):
        parsers.make_parser(zone="Mars/Base")


def test_a_missing_native_build_fails_import_loudly():
    """A build without its native modules: `import cdrtrace` itself says what to do."""
    import subprocess
    import sys

    code = ("import sys\n"
            "class Missing:\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name in ('cdrtrace.store._index', 'cdrtrace.parsing._parse'):\n"
            "            raise ImportError('no such file')\n"
            "sys.meta_path.insert(0, Missing())\n"
            "try:\n"
            "    import cdrtrace\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == ("NativeModuleError cdrtrace's native index kernel did not import (no such file); "
                   "reinstall with `pip install .` so the extensions are built\n")


def test_one_record_layout_from_the_native_declaration():
    from cdrtrace.parsing import formats
    from cdrtrace.store import _index, index

    columns, _, _ = parsers.make_parser().feed(cdr() + b"\n", True)
    assert [(name, col.dtype) for name, col in columns.items()] == list(formats.COLUMNS)
    assert [(f.name, f.type.to_pandas_dtype()) for f in formats.ARROW_SCHEMA] == [
        (name, dtype.type) for name, dtype in formats.COLUMNS]
    assert dict(formats.COLUMNS)["received"] == np.bool_ and dict(formats.COLUMNS)["feed"] == np.uint16
    assert index.ENTRY_DTYPE.itemsize == _index.ENTRY_BYTES == 40
    assert index.ENTRY_DTYPE["source"] == np.dtype("<u4") and index.ENTRY_DTYPE.fields["flags"][1] == 39
    renamed = tuple(("begin_us" if n == "start_us" else n, k) for n, k in _parse.CALL_FIELDS)
    with pytest.raises(cdrtrace.NativeModuleError, match="declares the columns"):
        formats.columns_of(renamed)
    with pytest.raises(cdrtrace.NativeModuleError, match="declares 41-byte entries"):
        index.entry_dtype((*_index.ENTRY_FIELDS, ("pad", "u1")), 41)


def test_native_rejects_come_back_as_codes_the_python_layer_words():
    from cdrtrace.errors import REJECT_REASONS
    from cdrtrace.parsing import native

    raw = _parse.CdrParser(ASTERISK.dialect(), *timezones.zone_table("UTC"))
    _, coded, _ = raw.feed(b'"a","b"\n', True)
    (record, offset, code, detail, line), = coded
    assert (record, offset, line) == (1, 0, b'"a","b"') and REJECT_REASONS[code].startswith("wrong field count")
    _, worded, _ = native.CdrParser(ASTERISK.dialect(), *timezones.zone_table("UTC")).feed(
        b'"a","b"\n', True)
    assert worded == [(1, 0, native.reject_message(code, detail, "16 to 21"), b'"a","b"')]
    assert worded[0][2] == "wrong field count: 2 (expected 16 to 21)"
