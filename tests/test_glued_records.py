"""A whole record glued to a record cut short (docs/trace-rules.md, "A record cut short,
and the next written on after it"): the call it records is never passed over.

A crash that cuts a record mid-write, with the switch writing its next record on after it
on the same line, or two files joined where the first lacked its last newline: the line
is rejected. Before, only what the line's start told was held, so a *57 for the call
written whole at its end named the older, innocent caller before it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cdrtrace
from cdrtrace.parsing import glued, salvage
from cdrtrace.parsing import reference as twin
from cdrtrace.parsing.parsers import get_format, make_parser, read_header
from conftest import cdr

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
# (format, file, zone): one of each format's samples, and the real-data layouts
FILES = [
    ("asterisk", "asterisk/Master.csv", "America/Denver"),
    ("asterisk-custom", "asterisk-custom/Master.csv", "UTC"),
    ("cucm", "cucm/cdr_StandAloneCluster_01_202603021403_1", "UTC"),
    ("cucm", "cucm/cdr_HuntCluster_01_202603021500_1", "UTC"),
    ("broadworks", "broadworks/BW-CDR-20260302140000-2-000001.csv", "UTC"),
    ("kamailio", "kamailio/acc_cdrs.log", "UTC"),
    ("kamailio-dbtext", "kamailio/acc_cdrs.dbtext", "UTC"),
    ("freeswitch", "freeswitch/Master.csv", "America/Denver"),
    ("asterisk", "real/asterisk-ring-groups-ru.csv", "UTC"),
    ("freeswitch", "real/freeswitch-groups-kr.csv", "UTC"),
]

# the samples with a forwarded call (a redirecting line) after another record
FORWARDED = {"asterisk/Master.csv", "cucm/cdr_StandAloneCluster_01_202603021403_1",
             "broadworks/BW-CDR-20260302140000-2-000001.csv", "kamailio/acc_cdrs.log",
             "kamailio/acc_cdrs.dbtext"}

OLD = cdr(src="7205550100", clid='"Innocent" <7205550100>', start="2026-03-02 14:00:00",
          answer="2026-03-02 14:00:05", end="2026-03-02 14:01:00", uniqueid="old.1")
LEE = cdr(src="7205550188", dst="3035550177", clid='"Lee" <7205550188>',
          start="2026-03-02 14:20:00", answer="2026-03-02 14:20:05", end="2026-03-02 14:21:00",
          uniqueid="lee.1")
MAL = cdr(src="7205550199", clid='"Mal" <7205550199>', start="2026-03-02 14:30:00", answer="",
          end="2026-03-02 14:30:20", disposition="NO ANSWER", uniqueid="mal.1")
AT = "2026-03-02T15:00:00Z"
LEE_AT, MAL_AT = 1772461200000000, 1772461800000000      # 14:20 and 14:30 UTC, in us


def parser_maker(fmt: str, name: str, zone: str, reference: bool):
    """(a function making a parser for the sample's records, the records' lines)."""
    data = (SAMPLES / name).read_bytes()
    form = get_format(fmt)
    names, pos = read_header(form, data[:65536])
    if reference:
        dispositions, presentations = form.vocabularies()

        def make():
            return twin.CdrParser(form.dialect(names), zone, dispositions=dispositions,
                                  presentations=presentations)
    else:
        def make():
            return make_parser(form, zone, header=names)
    return make, [line.rstrip(b"\r") for line in data[pos:].split(b"\n") if line.strip()]


def read(make, data: bytes, zone: str):
    """(rows as (called, start, calling, final, disposition, redirecting), the lines held
    as unreadable calls as (line, start), the unreadable result) of data read whole."""
    parser = make()
    columns, bad, _ = parser.feed(data, True)
    rows = list(zip(*(columns[c].tolist() for c in (
        "called", "start_us", "calling", "final", "disposition", "redirecting")), strict=True))
    lost = salvage.unreadable(parser, bad, columns, 0, None, zone)
    held = set()
    if lost.batch is not None:
        c = lost.batch.columns
        for role in ("called", "final", "redirecting"):
            held |= {(line, start) for line, start in zip(
                c[role].tolist(), c["start_us"].tolist(), strict=True) if line}
    return rows, held, lost


@pytest.mark.parametrize("reference", [False, True], ids=["native", "reference"])
@pytest.mark.parametrize("fmt,name,zone", FILES, ids=[f[1] for f in FILES])
def test_a_record_glued_to_one_cut_short_is_never_passed_over_at_any_cut(fmt, name, zone,
                                                                         reference):
    """Each record of the sample cut after every byte (the reference after every
    thirteenth: it is slow), the next written on after it: the next record's call, as the
    parser reads that record alone, is read as that call (caller and all), or its lines
    (dialled, final, and the one that forwarded it) are held at its start as an
    unreadable call. Never lost: a trace would pass over it."""
    make, lines = parser_maker(fmt, name, zone, reference)
    tried = forwarded = 0
    for a, b in zip(lines, lines[1:], strict=False):
        alone, _, _ = read(make, b + b"\n", zone)
        if len(alone) != 1 or alone[0][0] == 0:
            continue        # rejected alone, or no line: nothing to find
        (whole,) = alone
        its_lines = {(line, whole[1]) for line in (whole[0], whole[3], whole[5]) if line}
        for cut in range(1, len(a), 13 if reference else 1):
            rows, held, _ = read(make, a[:cut] + b + b"\n", zone)
            same_time = [r for r in rows if r[:2] == whole[:2]]
            assert same_time == [whole] or (not same_time and its_lines <= held), (cut, a[:cut])
            tried += 1
            forwarded += whole[5] != 0
    assert tried >= 20 and bool(forwarded) == (name in FORWARDED)


@pytest.mark.parametrize("fmt,name,zone", FILES, ids=[f[1] for f in FILES])
def test_native_and_reference_find_the_same_glued_records(fmt, name, zone):
    make, lines = parser_maker(fmt, name, zone, False)
    make_twin, _ = parser_maker(fmt, name, zone, True)
    for a, b in zip(lines, lines[1:], strict=False):
        for cut in range(1, len(a), 29):
            bad = make().feed(a[:cut] + b + b"\n", True)[1]
            mine = {k: [(t.at, t.called, t.rang, t.redirecting, t.start_us, t.pilot, t.members)
                        for t in tails] for k, tails in glued.search(make(), bad).items()}
            theirs = {k: [(t.at, t.called, t.rang, t.redirecting, t.start_us, t.pilot, t.members)
                          for t in tails] for k, tails in glued.search(make_twin(), bad).items()}
            assert mine == theirs


@pytest.mark.parametrize("fmt,name,zone", FILES, ids=[f[1] for f in FILES])
def test_a_record_with_one_bad_value_has_no_glued_record(fmt, name, zone):
    """A record rejected for one value that is not what its column holds is one record:
    no tail of it is taken for a call of its own (its line is held by the salvage, as
    before), whichever field is bad."""
    make, lines = parser_maker(fmt, name, zone, False)
    delimiter = bytes([make().delimiter])
    rejected = 0
    for line in lines:
        fields = line.split(delimiter)
        for i in range(len(fields)):
            if fields[i].endswith(b"\\"):
                continue        # an escaped separator (db_text's `\:`): not a field's end
            for value in (b"x", b"", b"99999999999999"):
                _, _, lost = read(make, delimiter.join([*fields[:i], value, *fields[i + 1:]]) + b"\n",
                                  zone)
                rejected += lost.batch is not None or bool(lost.log)
                assert lost.glued == {}, (i, value, line)
    assert rejected > 20


def test_the_search_is_bounded_on_a_long_line():
    """Start positions tried: at most WINDOW per line, each tail at most LONGEST bytes,
    none in a first field the dialect reads; where it does not read it, from the line's
    second byte, and only the first position of each run of letters and digits."""
    raw = b"x" * 100 + b"," * 60_000 + b"y" * 100
    tried = glued.starts(raw, ord(","), 16)
    assert len(tried) == glued.WINDOW
    assert min(tried) >= 101 and len(raw) - min(tried) <= glued.LONGEST
    assert len(glued.starts(b"a,b,c", ord(","), 16)) == 0       # too few fields
    # a line of exactly the fewest fields: no tail past its first field has them
    assert len(glued.starts(b",".join([b"f"] * 16), ord(","), 16)) == 0
    line = b"ab,cd ef," + b",".join([b"f"] * 15)
    assert glued.starts(line, ord(","), 16).tolist() == [3, 4, 5, 6, 7, 8]
    assert glued.starts(line, ord(","), 16, every=False).tolist() == [2, 3, 5, 6, 8]
    parser = make_parser("asterisk")
    bad = parser.feed(raw + b"\n", True)[1]
    assert glued.search(parser, bad) == {}


def glued_file(tmp_path, cut: int | None) -> Path:
    """The innocent 14:00 call to 3035550110; Lee's 14:20 call to 3035550177 cut after
    `cut` bytes (None: whole, its newline lost), Mal's 14:30 call to 3035550110 on after it."""
    path = tmp_path / "Master.csv"
    path.write_bytes(OLD + b"\n" + (LEE if cut is None else LEE[:cut]) + MAL + b"\n")
    return path


@pytest.mark.parametrize("cut", [60, 150, 215, None])
@pytest.mark.parametrize("how", ["ingest", "small-reads", "follow"])
def test_the_call_glued_to_a_record_cut_short_is_untraceable_never_the_older_caller(
        tmp_path, cut, how):
    from cdrtrace.ingestion import following
    from cdrtrace.ingestion.live import StreamOptions

    path = glued_file(tmp_path, cut)
    store = cdrtrace.open(tmp_path / "store", create=True)
    try:
        if how == "follow":
            summary = following.follow(store, str(path), options=StreamOptions(
                batch_ms=1, poll_ms=1, heartbeat_s=0.01, idle_exit_s=0.2))
        else:
            summary = cdrtrace.ingest(store, [str(path)], chunk_bytes=64 if how == "small-reads"
                                      else 1 << 20, rejects_path=tmp_path / "rejects.jsonl")
        assert (summary.records, summary.rejected) == (2, 1)
        result = store.trace("3035550110", at=AT)
        assert (result.outcome.value, result.call_time) == ("untraceable", "2026-03-02T14:30:00Z")
        assert "7205550" not in repr(result) and "7205550" not in repr(store.status("3035550110"))
        (record,) = store.trace_records("3035550110", analyst="cic")
        assert (record["call"]["start"], record["call"]["disposition"]) == (
            "2026-03-02T14:30:00Z", "unreadable")
        # the record at the byte Mal's begins, or where Lee's empty last field `""` and
        # Mal's empty first one read as a first field `""""` (a quote), two bytes before
        mal_at = len(OLD) + 1 + (len(LEE) if cut is None else cut)
        assert mal_at - 2 <= record["call"]["offset"] <= mal_at
        assert "glued" in record["unreadable"]["reason"]
        # Lee's line, its record cut short, is held by what the line's start tells
        assert store.trace("3035550177", at=AT).outcome.value == "untraceable"
    finally:
        store.close()
    if how != "follow":
        (line,) = (tmp_path / "rejects.jsonl").read_text().splitlines()
        assert f"from byte {mal_at - len(OLD) - 1 - (cut is None) * 2} of the line on" in line


def test_two_files_joined_without_a_last_newline_on_stdin(tmp_path):
    """`cat a.csv b.csv | cdrtrace ingest -` where a.csv was saved without its last
    newline: b's first call is held, never passed over."""
    db = str(tmp_path / "db")
    run = [sys.executable, "-m", "cdrtrace.cli"]
    subprocess.run([*run, "init", "--db", db], check=True, capture_output=True)
    proc = subprocess.run([*run, "ingest", "-", "--db", db], input=OLD + b"\n" + LEE + MAL + b"\n",
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([*run, "trace", "3035550110", "--db", db, "--at", AT],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "untraceable" in proc.stdout and "7205550" not in proc.stdout


def test_rows_of_reads_the_records_feed_reads_and_returns_no_rejects():
    """The tails are parsed by rows_of: the rows feed(data, final=True) gives, its
    rejects not built (native: feed's rejects_wanted=False)."""
    from cdrtrace.parsing import _parse

    data = (SAMPLES / "asterisk" / "Master.csv").read_bytes() + LEE[:90] + MAL + b"\n"
    expected, bad, _ = make_parser("asterisk", "America/Denver").feed(data, True)
    assert len(bad) == 2        # the sample's 31 February, and the line glued
    for parser in (make_parser("asterisk", "America/Denver"), parser_maker(
            "asterisk", "asterisk/Master.csv", "America/Denver", True)[0]()):
        rows = parser.rows_of(data)
        assert {k: v.tolist() for k, v in rows.items()} == {k: v.tolist() for k, v in expected.items()}
    native = make_parser("asterisk", "America/Denver")
    assert _parse.CdrParser.feed(native, data, True, False)[1] == []
    assert len(_parse.CdrParser.feed(make_parser("asterisk", "America/Denver"), data, True)[1]) == 2


def test_a_freeswitch_record_glued_whole_to_another_is_no_caller_name(tmp_path):
    """FreeSWITCH does not escape quotes, so a caller name holding `","` is rebuilt from
    the field count: the separators beyond it are the name's. Before, a line of two whole
    records (files joined where the first lacked its last newline) was read as the second,
    the first's fields its caller's name: the first call lost with no reject, and a *57
    for it named the caller before it. A name holds at most two `","`; a line with more
    is rejected, the first record's line held, the glued one's too."""
    from test_real_data import fs_call

    from cdrtrace.parsing.parsers import normalize_number
    from conftest import show_freeswitch_legs

    old = fs_call("Innocent", "7205550100", "3035550177", "2026-03-02 14:00:00",
                  "2026-03-02 14:00:05", "2026-03-02 14:01:00", uuid="u-old")
    lee = fs_call("Lee", "7205550188", "3035550177", "2026-03-02 14:20:00",
                  "2026-03-02 14:20:05", "2026-03-02 14:21:00", uuid="u-lee")
    mal = fs_call("Mal", "7205550199", "3035550110", "2026-03-02 14:30:00", uuid="u-mal",
                  cause="ORIGINATOR_CANCEL")
    two = fs_call('Doe","John","Jr', "7205550111", "3035550112", "2026-03-02 14:35:00",
                  uuid="u-two", cause="ORIGINATOR_CANCEL")     # two `","`: still a name
    data = old + b"\n" + lee + mal + b"\n" + two + b"\n"
    for make in (lambda: make_parser("freeswitch"), parser_maker(
            "freeswitch", "freeswitch/Master.csv", "UTC", True)[0]):
        rows, held, lost = read(make, data, "UTC")
        assert [r[0] for r in rows] == [normalize_number("3035550177"),
                                        normalize_number("3035550112")]
        assert (normalize_number("3035550177"), LEE_AT) in held      # the first record's line
        assert (normalize_number("3035550110"), MAL_AT) in held      # the glued one's
        assert len(lost.log) == 2 and set(lost.glued) == {0}
    store = cdrtrace.open(tmp_path / "store", create=True)
    try:
        show_freeswitch_legs(store, tmp_path)
        (tmp_path / "Master.csv").write_bytes(data)
        summary = cdrtrace.ingest(store, [str(tmp_path / "Master.csv")], fmt="freeswitch")
        assert (summary.records, summary.rejected) == (3, 1)
        for line, start in (("3035550177", "2026-03-02T14:20:00Z"), ("3035550110", "2026-03-02T14:30:00Z")):
            result = store.trace(line, at=AT)
            assert (result.outcome.value, result.call_time) == ("untraceable", start), line
        result = store.trace("3035550112", at=AT)
        assert (result.outcome.value, result.call_time) == ("success", "2026-03-02T14:35:00Z")
        (record,) = store.trace_records("3035550112", analyst="cic")
        assert record["call"]["calling"] == "+17205550111"
    finally:
        store.close()
