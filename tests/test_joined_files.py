"""Files joined, each saved with a UTF-8 byte-order mark (docs/formats.md): `cat a.csv
b.csv`, where a Windows tool (Excel's "CSV UTF-8", PowerShell's UTF8 encoding) wrote
each file with a mark. The mark lands at the start of b's first record.

Before, that record was rejected ("quote inside unquoted field"): a good call lost,
held as an unreadable one (its trace `untraceable`). The mark is no data: skipped where
a record begins, the records read as they were in their own files.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cdrtrace
from cdrtrace.parsing import reference as twin
from cdrtrace.parsing.formats import BOM
from cdrtrace.parsing.parsers import get_format, make_parser, read_header
from conftest import cdr, parse_all

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
FILES = [
    ("asterisk", "asterisk/Master.csv", "America/Denver"),
    ("asterisk-custom", "asterisk-custom/Master.csv", "UTC"),
    ("freeswitch", "freeswitch/Master.csv", "America/Denver"),
    ("kamailio", "kamailio/acc_cdrs.log", "UTC"),
    ("broadworks", "broadworks/BW-CDR-20260302150000-1-000002.csv", "UTC"),
    ("cucm", "cucm/cdr_grep_headerless_r12.csv", "UTC"),
    ("asterisk", "real/asterisk-ring-groups-ru.csv", "UTC"),
]
CHUNKINGS = (None, [1] * 3000 + [10_000] * 30, [2] * 2000 + [9_000] * 30, [3] * 2000 + [9_000] * 30,
             [7] * 2000 + [9_000] * 30, [64] * 1000)


def parsers_of(fmt: str, name: str, zone: str):
    data = (SAMPLES / name).read_bytes()
    form = get_format(fmt)
    names, pos = read_header(form, data[:65536])
    dispositions, presentations = form.vocabularies()
    return (data[pos:], lambda: make_parser(form, zone, header=names),
            lambda: twin.CdrParser(form.dialect(names), zone, dispositions=dispositions,
                                   presentations=presentations))


def without_offsets(parsed, shift_from: int):
    """(rows, rejects) with every offset past shift_from moved back by the mark's length."""
    rows, rejects = parsed
    def back(offset):
        return offset - len(BOM) if offset > shift_from else offset
    return ([{**r, "offset": back(r["offset"])} for r in rows],
            [(n, back(o), why, raw) for n, o, why, raw in rejects])


@pytest.mark.parametrize("fmt,name,zone", FILES, ids=[f[1] for f in FILES])
def test_a_mark_between_joined_files_is_no_data(fmt, name, zone):
    """Each sample cut in two at a line's end, the second part behind a mark: the same
    records and rejects as the file itself (offsets past the mark 3 bytes on), in any
    chunking, native and reference alike."""
    body, native, reference = parsers_of(fmt, name, zone)
    lines = body.split(b"\n")
    for cut in (1, len(lines) // 2, len(lines) - 2):
        head = b"\n".join(lines[:cut]) + b"\n"
        joined = head + BOM + body[len(head):]
        expected = parse_all(body, parser=native())
        for chunks in CHUNKINGS:
            got = parse_all(joined, chunks=chunks, parser=native())
            assert without_offsets(got, len(head)) == expected, (cut, chunks)
        assert parse_all(joined, parser=reference()) == got
        assert parse_all(joined, chunks=[3] * 3000, parser=reference()) == got


def test_only_a_whole_mark_is_passed_over():
    """Two bytes of a mark, or a mark's bytes inside a record, are data: the record is
    rejected, and held by the salvage (fail closed), as before."""
    pat, mal = cdr(), cdr(src="7205550199", start="2026-03-02 14:30:00")
    for broken in (BOM[:2] + mal, mal[:3] + BOM + mal[3:]):
        data = pat + b"\n" + broken + b"\n"
        for chunks in (None, [1] * 2000, [len(pat) + 2] + [1] * 2000):
            rows, rejects = parse_all(data, chunks=chunks, parser=make_parser("asterisk"))
            assert len(rows) == 1 and [r[3] for r in rejects] == [broken], chunks


def test_files_joined_on_stdin_name_the_last_caller(tmp_path):
    old = cdr(src="7205550100", start="2026-03-02 14:00:00", answer="2026-03-02 14:00:05",
              end="2026-03-02 14:01:00", uniqueid="old.1")
    mal = cdr(src="7205550199", start="2026-03-02 14:30:00", answer="", end="2026-03-02 14:30:20",
              disposition="NO ANSWER", uniqueid="mal.1")
    db = str(tmp_path / "db")
    run = [sys.executable, "-m", "cdrtrace.cli"]
    subprocess.run([*run, "init", "--db", db], check=True, capture_output=True)
    proc = subprocess.run([*run, "ingest", "-", "--db", db],
                          input=BOM + old + b"\r\n" + BOM + mal + b"\r\n", capture_output=True,
                          check=False)
    assert proc.returncode == 0 and b"rejected 0" in proc.stdout, proc.stdout + proc.stderr
    store = cdrtrace.open(db)
    try:
        result = store.trace("3035550110", at="2026-03-02T15:00:00Z")
        assert (result.outcome.value, result.call_time) == ("success", "2026-03-02T14:30:00Z")
        (record,) = store.trace_records("3035550110", analyst="cic")
        assert record["call"]["calling"] == "+17205550199"
    finally:
        store.close()
