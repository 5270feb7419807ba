"""Kamailio's accounting beyond db_flatstore's dialog CDRs: the db_text layout (typed
header, '\\:' escapes, newest row first), the transaction rows (acc, missed_calls), and
tables in SQLite (`ingest sqlite:///acc.db?table=...`), without Kamailio itself
(tests/test_kamailio.py runs the real switch)."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cdrtrace
from cdrtrace import testing
from cdrtrace.ingestion import sqlite as sqlite_source
from cdrtrace.parsing import native as parsing_native
from cdrtrace.parsing import parsers, timezones
from cdrtrace.parsing import reference as twin
from cdrtrace.parsing.formats import FORMATS, Disposition
from conftest import parse_all

SCHEMA = Path(__file__).parent.parent / "docs" / "kamailio" / "sqlite.sql"
VICTIM, T0 = "3035550110", 1796041750
AFTER = (T0 + 3600) * 1_000_000


def both(fmt: str, data: bytes):
    """(rows, rejects) of the native parser and of the reference on one file."""
    form = FORMATS[fmt]
    header, skip = parsers.read_header(form, data)
    dialect = form.dialect(header)
    dispositions, presentations = form.vocabularies()
    starts, offsets = timezones.zone_table("UTC")
    native = parsing_native.CdrParser(dialect, starts, offsets, start_offset=skip,
                                      dispositions=dispositions, presentations=presentations)
    ref = twin.CdrParser(dialect, "UTC", start_offset=skip, dispositions=dispositions,
                         presentations=presentations)
    return parse_all(data[skip:], parser=native), parse_all(data[skip:], parser=ref)


def traced_caller(tmp_path, files, fmt="auto", at=AFTER):
    store = cdrtrace.open(tmp_path / "store", create=True)
    summary = cdrtrace.ingest(store, files, fmt=fmt)
    result = store.trace(VICTIM, at=at)
    call = None
    if result.trace_id is not None:
        call = next(r for r in store.trace_records(analyst="ann")
                    if r["trace_id"] == result.trace_id)["call"]
    store.close()
    return summary, result.outcome.value, (call or {}).get("calling")


# ------------------------------------------------------------------ db_text

DBTEXT = (  # columns by name, in an order of the operator's; newest row first
    b"id(int,auto) callid(string) sip_reason(string) sip_code(string) invite_time(string) "
    b"src_user(string,null) dst_ouser(string,null) start_time(int) end_time(int)\n"
    b"2:b@[2001\\:db8\\:\\:1]:Busy\\: here \\\\:486:1796041760:2125550102:3035550110:"
    b"1796041760:1796041760\n"
    b"1:a@[2001\\:db8\\:\\:1]:OK:200:1796041750:2125550101:3035550110:1796041751:1796041790\n")


def test_db_text_values_keep_their_escaped_colons(tmp_path):
    """'\\:' is a colon inside a value and '\\\\' a backslash: the columns stay where the
    header names them, so the busy call (newest) never rang and the trace names the call
    before it."""
    path = tmp_path / "acc_cdrs"
    path.write_bytes(DBTEXT)
    assert parsers.detect_format(DBTEXT) == "kamailio-dbtext"
    native, reference = both("kamailio-dbtext", DBTEXT)
    assert native == reference and native[1] == []
    assert [(r["disposition"], r["received"]) for r in native[0]] == [(4, False), (1, True)]
    summary, outcome, caller = traced_caller(tmp_path, [str(path)])
    assert (summary.records, summary.rejected, outcome, caller) == (2, 0, "success",
                                                                    "+12125550101")


def test_a_db_text_header_must_be_typed_and_name_the_columns(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"id method callid\n1:INVITE:x\n")
    with pytest.raises(cdrtrace.ParseError, match="no kamailio-dbtext header"):
        cdrtrace.ingest(cdrtrace.open(tmp_path / "s1", create=True), [str(plain)],
                        fmt="kamailio-dbtext")
    lacking = tmp_path / "lacking"
    lacking.write_bytes(b"id(int,auto) callid(string) time(int)\n1:x:1796041750\n")
    with pytest.raises(cdrtrace.ParseError, match="lacks the column.*src_user.*dst_ouser"):
        cdrtrace.ingest(cdrtrace.open(tmp_path / "s2", create=True), [str(lacking)],
                        fmt="kamailio-dbtext")


# ------------------------------------------------------------------ transaction rows

def acc_row(method, code, reason, when, caller, callee, callid="c1", dst=None, rang=None):
    """A transaction row; with rang (its column, the shipped configuration's last), 14
    columns, else 13 (a configuration without it)."""
    return (f"{method}|ft|tt|{callid}|{code}|{reason}|{when}|{caller}|||{callee}|"
            f"{dst or callee}|{'' if rang is None else '|' + rang}\n").encode()


def test_a_bye_row_is_no_call(tmp_path):
    """The callee hung up: the BYE's From is the victim and its To the caller. Only the
    INVITE's row is a call; the BYE would put a call on the caller's line."""
    path = tmp_path / "acc.log"
    path.write_bytes(acc_row("INVITE", 200, "OK", T0, "2125550101", VICTIM)
                     + acc_row("BYE", 200, "OK", T0 + 30, VICTIM, "2125550101"))
    assert parsers.detect_format(path.read_bytes()) == "kamailio-acc"
    native, reference = both("kamailio-acc", path.read_bytes())
    assert native == reference and [r["received"] for r in native[0]] == [True, False]
    store = cdrtrace.open(tmp_path / "store", create=True)
    cdrtrace.ingest(store, [str(path)], fmt="auto")
    assert len(testing.line_entries(store, VICTIM)) == 1
    assert len(testing.line_entries(store, "2125550101")) == 0
    entry = testing.line_entries(store, VICTIM)[0]
    assert int(entry["flags"]) & 1                   # a 200's time is when it was answered


def test_missed_call_rows_trace_by_the_final_reply(tmp_path):
    """missed_calls: a 487 (cancelled while ringing) is received; a 486 after it whose
    `rang` is empty (busy at once) never rang, so the trace names the cancelled call, not
    an older answered one."""
    acc, missed = tmp_path / "acc.log", tmp_path / "missed_calls.log"
    acc.write_bytes(acc_row("INVITE", 200, "OK", T0, "2125550101", VICTIM, "c1", rang="1"))
    missed.write_bytes(acc_row("INVITE", 487, "Request Terminated", T0 + 60, "2125550102",
                               VICTIM, "c2", rang="1")
                       + acc_row("INVITE", 486, "Busy Here", T0 + 120, "2125550103", VICTIM,
                                 "c3", rang=""))
    summary, outcome, caller = traced_caller(tmp_path, [str(acc), str(missed)])
    assert (summary.records, outcome, caller) == (3, "success", "+12125550102")


@pytest.mark.parametrize("code, reason, disposition", [
    (486, "Busy Here", "late_refusal"), (600, "Busy Everywhere", "late_refusal"),
    (503, "Service Unavailable", "late_failure")])
def test_a_refused_row_without_rang_may_have_rung(tmp_path, code, reason, disposition):
    """A transaction row has one time, the final reply's: it cannot tell how long the call
    rang before a 486 (a user who rejected the ringing call, as many phones answer) or a
    503 (a phone whose ring time ran out). Without `rang` (a configuration before it), the
    call may have rung: a trace that reaches it is untraceable, never a success against
    the 487's caller before it. A 404 (no such user) reached no phone: passed over."""
    acc, missed = tmp_path / "acc.log", tmp_path / "missed_calls.log"
    acc.write_bytes(acc_row("INVITE", 200, "OK", T0, "2125550101", VICTIM, "c1"))
    missed.write_bytes(acc_row("INVITE", 487, "Request Terminated", T0 + 60, "2125550102",
                               VICTIM, "c2")
                       + acc_row("INVITE", code, reason, T0 + 120, "2125550103", VICTIM, "c3")
                       + acc_row("INVITE", 404, "Not Found", T0 + 180, "2125550104", VICTIM,
                                 "c4"))
    native, reference = both("kamailio-acc", missed.read_bytes())
    assert native == reference
    assert [(r["disposition"], r["received"]) for r in native[0]] == [
        (Disposition.CANCELLED, True), (Disposition[disposition.upper()], True),
        (Disposition.UNALLOCATED, False)]
    summary, outcome, caller = traced_caller(tmp_path, [str(acc), str(missed)])
    assert (summary.records, outcome, caller) == (4, "untraceable", "+12125550103")


@pytest.mark.parametrize("code", ["487", "480", "408"])
def test_a_call_the_records_show_never_rang_is_passed_over(tmp_path, code):
    """The shipped configuration logs `rang` (a 180, a 183 or a 603 came back). A call
    cancelled, refused or timed out whose record has it empty never alerted the line: the
    trace names the call before it. A record without the column (the configuration before
    it was added) cannot tell, and the call counts as received."""
    def row(t, caller, sip, rang=None):
        fields = [t, t, "0.000000", f"c{caller}", t, caller, "", "", VICTIM, VICTIM, "", sip, "x"]
        return "|".join(str(v) for v in fields + ([] if rang is None else [rang])) + "\n"
    logged = tmp_path / "acc_cdrs_1.log"
    logged.write_text(row(T0, "2125550101", "200", "1") + row(T0 + 60, "2125550102", code, ""))
    summary, outcome, caller = traced_caller(tmp_path / "a", [str(logged)])
    assert (summary.rejected, outcome, caller) == (0, "success", "+12125550101")
    older = tmp_path / "acc_cdrs_0.log"
    older.write_text(row(T0, "2125550101", "200") + row(T0 + 60, "2125550102", code))
    summary, outcome, caller = traced_caller(tmp_path / "b", [str(older)])
    assert (summary.rejected, outcome, caller) == (0, "success", "+12125550102")


def test_calls_in_the_same_second_are_ordered_by_the_microseconds_kamailio_logs(tmp_path):
    """The shipped configuration logs invite_time as $TV(Sn), seconds.microseconds: of two
    calls to the line in one second, the later one is the last call, whatever their ids."""
    def row(t, caller, callid):
        return (f"{T0}|{T0}|0.000000|{callid}|{t}|{caller}|||{VICTIM}|{VICTIM}||480|x|1\n")
    for first, second in (("a", "z"), ("z", "a")):        # call ids in both orders
        path = tmp_path / f"acc_cdrs_{first}.log"
        path.write_text(row(f"{T0}.900001", "2125550102", second)
                        + row(f"{T0}.100000", "2125550101", first))
        summary, outcome, caller = traced_caller(tmp_path / first, [str(path)])
        assert (summary.rejected, outcome, caller) == (0, "success", "+12125550102")
    bad = tmp_path / "bad.log"
    bad.write_text(row(f"{T0}.1234567", "2125550101", "c") + row(f"{T0}.", "2125550101", "d"))
    summary, _, _ = traced_caller(tmp_path / "bad", [str(bad)])
    assert summary.rejected == 2                               # 7 digits; no digits


# ------------------------------------------------------------------ SQLite

def kamailio_julian(t: int) -> float:
    """A time_t as Kamailio's db_sqlite writes it (timet_to_sqlite)."""
    return ((t - 0.5) / 86400.0) + 2440587.5


@given(st.integers(946684800, 4102444800))          # 2000 to 2100
def test_kamailio_julian_days_read_back_to_the_second(t):
    assert sqlite_source.julian_to_epoch(kamailio_julian(t)) == t


def acc_db(path: Path, calls) -> None:
    with sqlite3.connect(path) as db:
        if not db.execute("SELECT name FROM sqlite_master WHERE name = 'acc_cdrs'").fetchone():
            db.executescript(SCHEMA.read_text())
        db.executemany(
            "INSERT INTO acc_cdrs (start_time, end_time, duration, callid, invite_time, "
            "src_user, dst_ouser, dst_user, sip_code, sip_reason, rang) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(kamailio_julian(t), kamailio_julian(t), 0.0, f"call-{t}:1", str(t), caller,
              VICTIM, VICTIM, code, "x", "" if code == "486" else "1")
             for t, caller, code in calls])


def test_an_sqlite_table_is_ingested_once_and_read_on_as_it_grows(tmp_path):
    db = tmp_path / "acc.db"
    acc_db(db, [(T0, "2125550101", "200"), (T0 + 60, "2125550102", "486")])
    url = f"sqlite://{db}?table=acc_cdrs"
    store = cdrtrace.open(tmp_path / "store", create=True)
    first = cdrtrace.ingest(store, [url], fmt="auto")
    assert (first.records, first.rejected) == (2, 0)
    assert store.trace(VICTIM, at=AFTER).outcome.value == "success"    # 486 never rang
    again = cdrtrace.ingest(store, [url])
    assert again.skipped == [url] and again.records == 0
    acc_db(db, [(T0 + 120, "2125550103", "487")])
    grown = cdrtrace.ingest(store, [url])
    assert grown.appended == [url] and grown.records == 1               # only the new row
    records = store.trace_records(VICTIM, analyst="ann")
    assert [r["call"]["calling"] for r in records] == ["+12125550101"]
    assert store.trace(VICTIM, at=AFTER + 1).outcome.value == "success"  # the 487 rang
    rendered = Path(store.path) / "rendered"
    assert os.listdir(rendered) == []                  # the copy with callers is not kept
    assert stat.S_IMODE(os.stat(rendered).st_mode) == 0o700
    store.close()


def test_an_sqlite_row_that_cannot_be_read_is_rejected_by_its_place(tmp_path):
    db = tmp_path / "acc.db"
    acc_db(db, [(T0, "2125550101", "200"), (T0 + 60, "2125550102", "20O"),
                (T0 + 120, "2125550103", "200")])
    store = cdrtrace.open(tmp_path / "store", create=True)
    summary = cdrtrace.ingest(store, [f"sqlite://{db}?table=acc_cdrs"])
    assert (summary.records, summary.rejected) == (3, 1)
    rejects = [json.loads(line) for line in open(summary.rejects_path)]
    assert [(r["record"], r["source"]) for r in rejects] == [
        (2, f"sqlite://{db}?table=acc_cdrs")]
    # the unreadable call is the newest before the third: failing closed, not the first
    result = store.trace(VICTIM, at=(T0 + 100) * 1_000_000)
    assert result.outcome.value == "untraceable"
    store.close()


@pytest.mark.parametrize("column, value, rejected", [
    ("sip_reason", b"Occup\xe9", 0),       # not UTF-8 (was: the whole table refused)
    ("start_time", "2026-02-30 10:00:00", 1),   # no such day (was: an internal error)
    ("start_time", "1e999", 1),            # an infinite Julian day (was: an internal error)
])
def test_an_sqlite_value_that_is_no_text_or_time_is_its_rows_alone(tmp_path, column, value,
                                                                  rejected):
    """A value of one row that is not UTF-8 text, or a time that is none, costs no other
    row: text is read as its bytes (as a file's would be), a bad time rejects its row by its
    place, which fails closed, and the rows around it are read."""
    db = tmp_path / "acc.db"
    acc_db(db, [(T0, "2125550101", "200"), (T0 + 60, "2125550102", "486"),
                (T0 + 120, "2125550103", "200")])
    with sqlite3.connect(db) as conn:
        stored = (f"CAST(x'{value.hex()}' AS TEXT)" if isinstance(value, bytes) else
                  value if value == "1e999" else f"'{value}'")
        conn.execute(f"UPDATE acc_cdrs SET {column} = {stored} WHERE callid = 'call-{T0 + 60}:1'")
    store = cdrtrace.open(tmp_path / "store", create=True)
    summary = cdrtrace.ingest(store, [f"sqlite://{db}?table=acc_cdrs"])
    assert (summary.records, summary.rejected) == (3, rejected)
    if rejected:
        (reject,) = [json.loads(line) for line in open(summary.rejects_path)]
        assert (reject["record"], reject["reason"]) == (2, "bad timestamp in column 2")
    assert store.trace(VICTIM, at=(T0 + 30) * 1_000_000).outcome.value == "success"
    assert store.trace(VICTIM, at=(T0 + 180) * 1_000_000).outcome.value == "success"
    assert [r["call"]["calling"] for r in store.trace_records(VICTIM, analyst="ann")] == [
        "+12125550101", "+12125550103"]
    store.close()


def test_an_sqlite_database_in_a_folder_with_url_characters(tmp_path):
    """A path is percent-encoded in the URL ('#' and '?' would end it) and opened as
    that file, not as SQLite URI text."""
    folder = tmp_path / "acc #1?"
    folder.mkdir()
    acc_db(folder / "acc.db", [(T0, "2125550101", "200")])
    url = f"sqlite://{urllib.parse.quote(str(folder / 'acc.db'))}?table=acc_cdrs"
    store = cdrtrace.open(tmp_path / "store", create=True)
    assert cdrtrace.ingest(store, [url]).records == 1
    store.close()


@pytest.mark.parametrize("url,message", [
    ("sqlite://{db}", "expected sqlite:///PATH/TO/acc.db\\?table=NAME"),
    ("sqlite://{db}?table=acc;drop", "is not a table name"),
    ("sqlite://{db}?table=calls", "has no table calls"),
    ("sqlite://{tmp}/none.db?table=acc", "no such database file"),
])
def test_a_bad_sqlite_source_says_what_is_wrong(tmp_path, url, message):
    db = tmp_path / "acc.db"
    acc_db(db, [])
    store = cdrtrace.open(tmp_path / "store", create=True)
    with pytest.raises(cdrtrace.SourceError, match=message):
        cdrtrace.ingest(store, [url.format(db=db, tmp=tmp_path)])
    store.close()


# ------------------------------------------------------------------ the real switch's tables

SAMPLES = Path(__file__).parent.parent / "data" / "samples" / "kamailio"
RANG = ["+12125550112", "+12125550107", "+12125550106", "+12125550105", "+12125550104",
        "+12125550102", "+12125550101"]   # the calls that rang the victim, newest first: the
# last rejected while it rang (486 after 180); busy at once, cancelled before it rang, do
# not disturb, 404 and 302 did not ring


@pytest.mark.parametrize("tables", [
    ["acc_cdrs.log"], ["acc.log", "missed_calls.log"],                  # db_flatstore
    ["acc_cdrs.dbtext"], ["acc.dbtext", "missed_calls.dbtext"],         # db_text
    ["acc.db?table=acc_cdrs"], ["acc.db?table=acc", "acc.db?table=missed_calls"],   # db_sqlite
])
def test_every_table_of_the_real_kamailio_names_the_calls_that_rang(tmp_path, tables):
    """The samples a real Kamailio wrote of one round of calls (tests/test_kamailio.py),
    in each backend and table: the same calls rang the victim, a trace after the last
    names the call its user rejected while it rang, and the forwarding line's names the
    call it forwarded."""
    sources = [f"sqlite://{SAMPLES / t}" if ".db?" in t else str(SAMPLES / t) for t in tables]
    store = cdrtrace.open(tmp_path / "store", create=True, keep=8)
    summary = cdrtrace.ingest(store, sources, fmt="auto")
    # a call cancelled before it rang and one refused at once (do not disturb) are logged
    # with `rang` empty: they never rang
    assert summary.rejected == 0 and summary.records == 12
    from cdrtrace.parsing.numbers import format_number
    callers = [format_number(int(e["calling"])) for e in testing.line_entries(store, VICTIM)]
    assert callers == RANG
    at = "2026-12-03T00:00:00Z"
    outcomes = {line: store.trace(line, at=at).outcome.value
                for line in (VICTIM, "3035550199", "3035550120", "3035550130")}
    assert outcomes == {VICTIM: "success", "3035550199": "success", "3035550120": "no_call",
                        "3035550130": "no_call"}
    named = store.trace_records(VICTIM, analyst="ann")[0]["call"]
    assert named["calling"] == "+12125550112" and named["presentation"] == "allowed"
    assert (named["disposition"], named["answered"]) == ("busy", False)
    forwarded = store.trace_records("3035550199", analyst="ann")[0]["call"]
    assert forwarded["calling"] == "+12125550107"
    store.close()


@pytest.mark.parametrize("answered", ["acc.log", "acc.dbtext", "acc.db?table=acc"])
def test_a_transaction_table_of_answered_calls_alone_names_no_caller(tmp_path, answered):
    """The acc module writes a row to its `acc` table for an INVITE answered; one that
    failed (rang unanswered, cancelled, busy) only with `failed_transaction_flag`, or to
    the `missed_calls` table with `db_missed_flag`. Read alone, the real Kamailio's `acc`
    table holds none of the four calls that rang the victim unanswered, the last at
    16:50:31, and a trace named the answered call of 16:50:26 (`success`). Until its feed
    has shown a failed call, a trace of such a table's calls is untraceable; with the
    missed calls (any backend), it names the call that rang last."""
    def source(table):
        return f"sqlite://{SAMPLES / table}" if ".db?" in table else str(SAMPLES / table)
    missed = answered.replace("acc.log", "missed_calls.log").replace(
        "acc.dbtext", "missed_calls.dbtext").replace("table=acc", "table=missed_calls")
    store = cdrtrace.open(tmp_path / "store", create=True, keep=8)
    cdrtrace.ingest(store, [source(answered)], fmt="auto")
    at = "2026-12-03T00:00:00Z"
    assert store.trace(VICTIM, at=at).outcome.value == "untraceable"
    (record,) = store.trace_records(VICTIM, analyst="ann")
    assert record["call"]["calling"] == "+12125550107"       # what the table held last
    assert "has not shown a record of a call that never connected" in record["reason"]
    cdrtrace.ingest(store, [source(missed)], fmt="auto")
    again = store.trace(VICTIM, at=at)
    assert again.outcome.value == "success"
    (named,) = [r["call"] for r in store.trace_records(VICTIM, analyst="ann")
                if r["trace_id"] == again.trace_id]
    assert named["calling"] == "+12125550112"
    store.close()


def test_a_failed_bye_does_not_show_a_transaction_table_logs_failed_calls(tmp_path):
    """A script accounting BYEs too (`is_method("INVITE|BYE")`) writes a BYE's row, and
    with the failed flag set on it, one that failed (408: the caller's end was gone). It
    shows that this BYE's transaction was accounted, not that a call that rang unanswered
    would be: only a failed INVITE's row proves that. Until one, the table's calls name no
    caller (the first row's call is what it held last, below)."""
    acc = tmp_path / "acc.log"
    acc.write_bytes(acc_row("INVITE", 200, "OK", T0, "2125550101", VICTIM, "c1")
                    + acc_row("BYE", 408, "Request Timeout", T0 + 60, VICTIM, "2125550101",
                              "c1")
                    + acc_row("INVITE", 200, "OK", T0 + 120, "2125550103", VICTIM, "c3"))
    assert traced_caller(tmp_path / "1", [str(acc)])[1:] == ("untraceable", "+12125550103")


def test_any_failed_call_shows_a_transaction_table_logs_them(tmp_path):
    """Whatever made a call fail (busy at once here, a call that never rang the line), a
    row of it shows the feed logs failed calls: the answered call after it is named. Its
    answered call before it is not: failed calls may not have been logged yet."""
    acc, missed = tmp_path / "acc.log", tmp_path / "missed_calls.log"
    acc.write_bytes(acc_row("INVITE", 200, "OK", T0, "2125550101", VICTIM, "c1")
                    + acc_row("INVITE", 200, "OK", T0 + 120, "2125550103", VICTIM, "c3"))
    missed.write_bytes(acc_row("INVITE", 486, "Busy Here", T0 + 60, "2125550102", "3035550999",
                               "c2"))
    assert traced_caller(tmp_path / "1", [str(acc), str(missed)])[1:] == ("success",
                                                                          "+12125550103")
    assert traced_caller(tmp_path / "2", [str(acc), str(missed)], at=(T0 + 90) * 1_000_000)[1:] \
        == ("untraceable", "+12125550101")
