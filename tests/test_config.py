"""cdrtrace.toml: feeds (format, zone, country code, served lines, ring time, feed id) and
configured dialects (a new switch by configuration, not code)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cdrtrace
from cdrtrace import config, testing
from cdrtrace.parsing import parsers
from cdrtrace.parsing import reference as twin
from cdrtrace.parsing.formats import Disposition, Presentation
from conftest import cdr, parse_all, show_freeswitch_legs

ACME = """
[dialects.acme]
header = true
delimiter = ";"
time = "epoch"
[dialects.acme.fields]
callid = "id"
calling = "from"
called = "to"
start = "begin"
answer = "connect"
end = "finish"
disposition = "status"
presentation = "privacy"
[dialects.acme.dispositions]
OK = "answered"
NOREPLY = "no_answer"
ABANDON = "cancelled"
BUSY = "busy"
[dialects.acme.presentations]
hidden = "restricted"
none = "unavailable"
"""

ACME_CDRS = (b"id;from;to;begin;connect;finish;status;privacy\n"
             b"1;7205550101;3035550110;1772460180;1772460185;1772460240;OK;\n"
             b"2;7205550102;3035550111;1772460180;0;1772460200;ABANDON;hidden\n"
             b"3;7205550103;3035550112;1772460180;0;1772460180;BUSY;\n"   # busy at once
             b"4;;3035550113;1772460180;0;1772460200;NOREPLY;none\n"
             b"5;7205550105;3035550114;1772460180;0;1772460200;LOST;\n")


def write(tmp_path, text, name="cdrtrace.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_configured_dialect_reads_a_new_switch(tmp_path):
    cfg = config.load(write(tmp_path, ACME))
    src = tmp_path / "acme.cdr"
    src.write_bytes(ACME_CDRS)
    store = cdrtrace.open(tmp_path / "s", create=True)
    summary = cdrtrace.ingest(store, [str(src)], fmt=cfg.format("acme"),
                              rejects_path=tmp_path / "r.jsonl")
    assert (summary.records, summary.rejected, summary.indexed) == (5, 1, 3)
    assert "unknown disposition in column 7" in (tmp_path / "r.jsonl").read_text()
    at = "2026-03-02T15:00:00Z"
    assert store.trace("3035550110", at=at).outcome.value == "success"
    assert store.trace("3035550111", at=at).outcome.value == "success"       # restricted
    assert store.last_calls("3035550111", analyst="a")[0]["presentation"] == "restricted"
    assert store.trace("3035550112", at=at).outcome.value == "no_call"       # busy
    assert store.trace("3035550113", at=at).outcome.value == "untraceable"   # unavailable


def test_dialect_native_equals_reference(tmp_path):
    form = config.load(write(tmp_path, ACME)).format("acme")
    header, skip = parsers.read_header(form, ACME_CDRS)
    native = parsers.make_parser(form, header=header, start_offset=skip)
    d1, d2 = form.vocabularies()
    reference = twin.CdrParser(form.dialect(header), "UTC", start_offset=skip,
                                    dispositions=d1, presentations=d2)
    got = parse_all(ACME_CDRS[skip:], parser=native, chunks=[7] * 100)
    assert got == parse_all(ACME_CDRS[skip:], parser=reference)
    assert [r["disposition"] for r in got[0]] == [Disposition.ANSWERED, Disposition.CANCELLED,
                                                  Disposition.BUSY, Disposition.NO_ANSWER]
    assert got[0][3]["presentation"] == Presentation.UNAVAILABLE


def test_freeswitch_with_the_operators_extra_columns(tmp_path):
    text = """
[dialects.fs-extended]
base = "freeswitch"
columns = ["caller_id_name", "caller_id_number", "destination_number", "context", "start_stamp",
           "answer_stamp", "end_stamp", "duration", "billsec", "hangup_cause", "uuid",
           "bleg_uuid", "accountcode", "read_codec", "write_codec", "progress_stamp",
           "sip_Privacy", "rdnis"]
"""
    form = config.load(write(tmp_path, text)).format("fs-extended")
    line = ('"Pat","7205550101","3035550110","public","2026-03-02 14:03:11","",'
            '"2026-03-02 14:03:29","18","0","NORMAL_CLEARING","u-1","","","PCMU","PCMU",'
            '"2026-03-02 14:03:13","id","3035550177"\n')
    (row,), bad = parse_all(line.encode(), parser=parsers.make_parser(form))
    assert bad == []
    assert row["disposition"] == Disposition.CANCELLED and row["received"]    # it rang
    assert row["presentation"] == Presentation.RESTRICTED
    assert cdrtrace.parsing.numbers.format_number(row["redirecting"]) == "+13035550177"


def test_a_dialects_own_disposition_column_is_read_by_its_table_alone(tmp_path):
    """FreeSWITCH's hangup causes read by the parser; a dialect that logs
    `${sip_hangup_disposition}` and names it the disposition column reads it by its
    table. A table on the base's own column would replace the parser's reading of the
    causes, and is refused (test_config_errors_say_where)."""
    text = """
[dialects.fs-sip]
base = "freeswitch"
columns = ["caller_id_name", "caller_id_number", "destination_number", "context", "start_stamp",
           "answer_stamp", "end_stamp", "duration", "billsec", "hangup_cause", "uuid",
           "bleg_uuid", "accountcode", "read_codec", "write_codec", "sip_hangup_disposition"]
[dialects.fs-sip.fields]
disposition = "sip_hangup_disposition"
[dialects.fs-sip.dispositions]
recv_bye = "answered"
recv_cancel = "cancelled"
send_refuse = "busy"
"""
    form = config.load(write(tmp_path, text)).format("fs-sip")
    rows = [f'"Pat","7205550101","3035550110","public","2026-03-02 14:03:11",{answer},'
            f'"2026-03-02 14:03:29","18","{billsec}","{cause}","u-{k}","","","PCMU","PCMU",'
            f'"{value}"' for k, (answer, billsec, cause, value) in enumerate((
                ('"2026-03-02 14:03:13"', 16, "NORMAL_CLEARING", "recv_bye"),
                ('""', 0, "NORMAL_CLEARING", "recv_cancel"),
                ('""', 0, "USER_BUSY", "send_refuse"),
                ('""', 0, "ORIGINATOR_CANCEL", "send_bye")))]
    got, bad = parse_all(("\n".join(rows) + "\n").encode(), parser=parsers.make_parser(form))
    assert [row["disposition"] for row in got] == [
        Disposition.ANSWERED, Disposition.CANCELLED, Disposition.LATE_REFUSAL]
    assert [(record, reason) for record, _, reason, _ in bad] == [
        (4, "unknown disposition in column 16")]    # not in the table: the cause is not read


DB_EXPORT = """
[dialects.asterisk-db]
base = "asterisk"
header = true
[dialects.asterisk-db.fields]
start = "calldate"
"""


def test_a_dialect_without_an_end_column_ends_each_call_its_duration_after_its_start(tmp_path):
    """Asterisk's database table (cdr_mysql, cdr_adaptive_odbc), exported with its column
    names: `calldate` is the start, and no column holds the answer or the end, only
    `duration` (end - start) and `billsec` (end - answer). A user who refused the 10:00 call with the phone's reject
    key, 6 s after it began, is logged BUSY: that call may have rung (a late refusal), so
    a trace of 200 is untraceable, never a success against the 09:00 caller. Read with
    the end at the start, the refusal looked immediate (never rang) and the older caller
    was named."""
    form = config.load(write(tmp_path, DB_EXPORT)).format("asterisk-db")
    head = ('"calldate","clid","src","dst","dcontext","channel","dstchannel","lastapp",'
            '"lastdata","duration","billsec","disposition","amaflags","accountcode",'
            '"uniqueid","userfield"')
    rows = [f'"2026-03-02 {start}","""Caller"" <{caller}>","{caller}","200","from-pstn",'
            f'"PJSIP/trunk-0000000{k}","PJSIP/200-0000000{k}","Dial","PJSIP/200,20","{seconds}",'
            f'"{billsec}","{disposition}","3","","1772442000.{k}",""'
            for k, (start, caller, seconds, billsec, disposition) in enumerate((
                ("09:00:00", "7205550100", 60, 50, "ANSWERED"),
                ("10:00:00", "7205550199", 6, 0, "BUSY"),
                ("10:10:00", "7205550199", 0, 0, "BUSY"),
                ("10:20:00", "7205550101", 5, 9, "ANSWERED")))]   # billsec past duration
    data = ("\n".join([head, *rows]) + "\n").encode()
    header, skip = parsers.read_header(form, data)
    got = []
    for parser in (parsers.make_parser(form, header=header),
                   twin.CdrParser(form.dialect(header), "UTC")):
        (answered, refused, busy, odd), bad = parse_all(data[skip:], parser=parser)
        assert bad == []
        got.append([(row["end_us"] - row["start_us"]) // 1_000_000
                    for row in (answered, refused, busy)])
        # nor an answer column: billsec (50 s) is the end less the answer
        assert answered["answer_us"] == answered["start_us"] + 10_000_000
        assert refused["answer_us"] == busy["answer_us"] == 0
        assert odd["answer_us"] == odd["start_us"]       # never before the start
        assert refused["disposition"] == Disposition.LATE_REFUSAL and refused["received"]
        assert busy["disposition"] == Disposition.BUSY and not busy["received"]
    assert got == [[60, 6, 0]] * 2
    path = tmp_path / "cdr-export.csv"
    path.write_bytes(data)
    store = cdrtrace.open(tmp_path / "s", create=True)
    cdrtrace.ingest(store, [str(path)], fmt=form, zone="UTC")
    result = store.trace("200", at="2026-03-02T10:15:00Z")
    assert (result.outcome.value, result.call_time) == ("untraceable", "2026-03-02T10:00:00Z")
    assert "7205550100" not in repr(result) and "7205550199" not in repr(result)
    (record,) = store.trace_records("200", analyst="cic")
    assert (record["call"]["start"], record["call"]["disposition"]) == (
        "2026-03-02T10:00:00Z", "late_refusal")


def test_a_dialect_that_tells_no_time_a_call_lasted_reads_each_end_as_one_that_may_have_rung(
        tmp_path):
    """A layout with one time a record (no end, no duration, no alerting) cannot tell a
    line busy at once from a user who refused the ringing call, nor a failure before it
    rang from one after: busy is a late refusal, a failure a late failure and an unknown
    end received (each untraceable), and a call that rang unanswered meets any minimum
    ring time. An unallocated number still reached no phone."""
    text = """
[dialects.one-time]
columns = ["at", "from", "to", "status"]
[dialects.one-time.fields]
start = "at"
calling = "from"
called = "to"
disposition = "status"
[dialects.one-time.dispositions]
BUSY = "busy"
FAIL = "failed"
GONE = "unknown"
RANG = "no_answer"
NONE = "unallocated"
"""
    form = config.load(write(tmp_path, text)).format("one-time")
    data = "".join(f"2026-03-02 10:0{k}:00,7205550101,3035550110,{status}\n"
                   for k, status in enumerate(("BUSY", "FAIL", "GONE", "RANG", "NONE"))).encode()
    want = [(Disposition.LATE_REFUSAL, True), (Disposition.LATE_FAILURE, True),
            (Disposition.UNKNOWN, True), (Disposition.NO_ANSWER, True),
            (Disposition.UNALLOCATED, False)]
    for parser in (parsers.make_parser(form, min_ring_seconds=2),
                   twin.CdrParser(form.dialect(None), "UTC", min_ring_seconds=2,
                                  dispositions=form.vocabularies()[0])):
        rows, bad = parse_all(data, parser=parser)
        assert bad == [] and [(r["disposition"], r["received"]) for r in rows] == want


def test_a_record_whose_end_is_empty_tells_no_time_its_call_lasted(tmp_path):
    """A layout with an end column, where a record leaves it empty (the column is not
    required): that record cannot tell how long its call rang before it was refused, and
    its busy is a late refusal; the same record ended in its first second never rang."""
    text = """
[dialects.ends]
columns = ["at", "until", "from", "to", "status"]
[dialects.ends.fields]
start = "at"
end = "until"
calling = "from"
called = "to"
disposition = "status"
[dialects.ends.dispositions]
BUSY = "busy"
"""
    form = config.load(write(tmp_path, text)).format("ends")
    data = (b"2026-03-02 10:00:00,,7205550101,3035550110,BUSY\n"
            b"2026-03-02 10:01:00,2026-03-02 10:01:00,7205550101,3035550110,BUSY\n")
    for parser in (parsers.make_parser(form),
                   twin.CdrParser(form.dialect(None), "UTC", dispositions=form.vocabularies()[0])):
        rows, bad = parse_all(data, parser=parser)
        assert bad == [] and [(r["disposition"], r["received"]) for r in rows] == [
            (Disposition.LATE_REFUSAL, True), (Disposition.BUSY, False)]


FS_15 = ('"caller_id_name", "caller_id_number", "destination_number", "context", "start_stamp", '
         '"answer_stamp", "end_stamp", "duration", "billsec", "hangup_cause", "uuid", '
         '"bleg_uuid", "accountcode", "read_codec", "write_codec"')
FS_ALERTING = {"progress": '"progress_stamp"',
               "both": '"progress_stamp", "progress_media_stamp"'}


@pytest.mark.parametrize("cause, disposition", [
    ("USER_BUSY", Disposition.BUSY), ("CALL_REJECTED", Disposition.REJECTED),
    ("RECOVERY_ON_TIMER_EXPIRE", Disposition.FAILED)])
def test_freeswitch_logging_alerting_shows_a_rejected_call_rang(tmp_path, cause, disposition):
    """R3: with progress_stamp and progress_media_stamp logged, a call that alerted the
    line was received however it ended (a user who rejects a ringing call: USER_BUSY or
    CALL_REJECTED); one that shows neither, with the same cause, never alerted: not
    received."""
    text = f"""
[dialects.fs-progress]
base = "freeswitch"
columns = [{FS_15}, {FS_ALERTING["both"]}]
"""
    form = config.load(write(tmp_path, text)).format("fs-progress")
    row = ('"Pat","7205550101","3035550110","public","2026-03-02 14:03:11","",'
           '"2026-03-02 14:03:29","18","0","{}","u-{}","","","PCMU","PCMU","{}",""\n').format
    data = (row(cause, 1, "2026-03-02 14:03:13") + row(cause, 2, "")).encode()
    got = parse_all(data, parser=parsers.make_parser(form))
    assert got == parse_all(data, parser=twin.CdrParser(form.dialect(), "UTC"))
    (rang, silent), bad = got
    assert bad == [] and rang["disposition"] == silent["disposition"] == disposition
    assert (bool(rang["received"]), bool(silent["received"])) == (True, False)


def _fs_alerting(tmp_path, logs: str, cause: str, ringing: str, early_media: str):
    """(the trace's outcome, its record) on a FreeSWITCH dialect that logs `logs` of the
    alerting stamps: an answered call to 3035550110 at 14:00 from 7205550100, then one at
    14:30 from 7205550199 that ended with `cause` 8 s later, its progress_stamp
    `ringing` and progress_media_stamp `early_media`; native and reference alike."""
    text = f"""
[dialects.fs-{logs}]
base = "freeswitch"
columns = [{FS_15}, {FS_ALERTING[logs]}]
"""
    form = config.load(write(tmp_path, text)).format(f"fs-{logs}")
    both = logs == "both"

    def row(name, number, start, answer, end, cause, uuid, ringing, media):
        return (f'"{name}","{number}","3035550110","public","2026-03-02 {start}",'
                f'"{answer and "2026-03-02 " + answer}","2026-03-02 {end}","8","0","{cause}",'
                f'"{uuid}","","","PCMU","PCMU","{ringing}"' + (f',"{media}"' if both else "")
                + "\n")
    data = (row("Innocent", "7205550100", "14:00:00", "14:00:05", "14:01:00", "NORMAL_CLEARING",
                "old", "2026-03-02 14:00:01", "") +
            row("Caller", "7205550199", "14:30:00", "", "14:30:08", cause, "new", ringing,
                early_media)).encode()
    got = parse_all(data, parser=parsers.make_parser(form))
    assert got == parse_all(data, parser=twin.CdrParser(form.dialect(), "UTC"))
    assert got[1] == []
    (path := tmp_path / "cdr.csv").write_bytes(data)
    store = cdrtrace.open(tmp_path / "store", create=True)
    show_freeswitch_legs(store, tmp_path)      # the feed writes B legs (same feed: held to it)
    cdrtrace.ingest(store, [str(path)], fmt=form)
    result = store.trace("3035550110", at="2026-03-02T14:32:00Z")
    return result.outcome.value, store.trace_records("3035550110", analyst="cic")[-1]


@pytest.mark.parametrize("cause", ["USER_BUSY", "CALL_REJECTED"])
@pytest.mark.parametrize("logs, early_media", [
    ("progress", ""), ("progress", "2026-03-02 14:30:01"), ("both", "2026-03-02 14:30:01")])
def test_freeswitch_early_media_without_ringing_fails_closed(tmp_path, logs, early_media, cause):
    """FreeSWITCH stamps progress_stamp on a 180 Ringing, and only progress_media_stamp on
    a 183 Session Progress with early media (as gateways and carriers signal a ringing
    line). So an empty progress_stamp does not show that the line never rang: a call its
    user refused 8 s after it began is a late refusal, untraceable (R3), never a success
    against the older caller, unless the record also logs progress_media_stamp, empty."""
    outcome, record = _fs_alerting(tmp_path, logs, cause, "", early_media)
    assert (outcome, record["call"]["start"], record["call"]["disposition"]) == (
        "untraceable", "2026-03-02T14:30:00Z", "late_refusal")
    assert "may have refused it while it rang" in record["reason"]


@pytest.mark.parametrize("ringing, early_media, outcome, start", [
    ("", "", "success", "2026-03-02T14:00:00Z"),                    # neither: it never rang
    ("2026-03-02 14:30:01", "", "success", "2026-03-02T14:30:00Z"),  # it rang: refused
    ("2026-03-02 14:30:01", "2026-03-02 14:30:02", "success", "2026-03-02T14:30:00Z")])
def test_freeswitch_logging_both_alerting_stamps_decides(tmp_path, ringing, early_media, outcome,
                                                          start):
    """With progress_stamp and progress_media_stamp both logged, a refused call with
    neither never alerted the line (not received, R3: the trace names the call before
    it), and one with progress_stamp rang (its user refused it: the trace names it)."""
    got, record = _fs_alerting(tmp_path, "both", "USER_BUSY", ringing, early_media)
    assert (got, record["call"]["start"]) == (outcome, start)


@pytest.mark.parametrize("logs, ringing, outcome, start, disposition", [
    ("both", "", "success", "2026-03-02T14:00:00Z", "answered"),    # it never alerted
    ("both", "2026-03-02 14:30:01", "success", "2026-03-02T14:30:00Z", "failed"),  # it rang
    ("progress", "", "untraceable", "2026-03-02T14:30:00Z", "late_failure")])  # no telling
def test_a_failure_after_it_may_have_rung_where_alerting_is_logged(tmp_path, logs, ringing,
                                                                   outcome, start, disposition):
    """A call that failed 8 s after it began (RECOVERY_ON_TIMER_EXPIRE: a 408, as a phone
    that gave up on its ringing answers) is a late failure only where the record cannot
    tell whether the line alerted: with both stamps logged, none shows it never rang (the
    trace names the call before it), progress_stamp shows it rang (the trace names it)."""
    got, record = _fs_alerting(tmp_path, logs, "RECOVERY_ON_TIMER_EXPIRE", ringing, "")
    assert (got, record["call"]["start"], record["call"]["disposition"]) == (
        outcome, start, disposition)


def test_a_dialect_reads_answered_elsewhere_and_its_alerting(tmp_path):
    """A dialect's value meaning answered_elsewhere (a group's phone another took the call
    from) is received like no_answer, and, where the dialect logs alerting, only once the
    phone alerted; native and reference alike."""
    text = ACME.replace('BUSY = "busy"', 'BUSY = "busy"\nTAKEN = "answered_elsewhere"').replace(
        'presentation = "privacy"', 'presentation = "privacy"\nprogress = "rang"')
    form = config.load(write(tmp_path, text)).format("acme")
    data = (b"id;from;to;begin;connect;finish;status;privacy;rang\n"
            b"1;7205550101;3035550110;1772460180;0;1772460200;TAKEN;;1\n"
            b"2;7205550102;3035550111;1772460180;0;1772460200;TAKEN;;\n")
    header, skip = parsers.read_header(form, data)
    d1, d2 = form.vocabularies()
    got = parse_all(data[skip:], parser=parsers.make_parser(form, header=header, start_offset=skip))
    assert got == parse_all(data[skip:], parser=twin.CdrParser(
        form.dialect(header), "UTC", start_offset=skip, dispositions=d1, presentations=d2))
    (rang, silent), bad = got
    assert bad == [] and rang["disposition"] == silent["disposition"] == Disposition.ANSWERED_ELSEWHERE
    assert (bool(rang["received"]), bool(silent["received"])) == (True, False)


def test_kamailio_with_the_operators_extra_columns(tmp_path):
    """A Kamailio whose cdr_extra logs more (the source address, the user agent), in its
    own order: the dialect names the columns, the rest is the kamailio format's."""
    text = """
[dialects.kam-extended]
base = "kamailio"
delimiter = "|"
columns = ["start_time", "end_time", "duration", "src_ip", "callid", "invite_time", "src_user",
           "pai", "privacy", "dst_ouser", "dst_user", "diversion", "ua", "sip_code", "sip_reason"]
[dialects.kam-extended.dispositions]    # added to the SIP codes the format knows
499 = "cancelled"
"""
    form = config.load(write(tmp_path, text)).format("kam-extended")
    line = ("1796041753|1796041753|0.000000|192.0.2.7|c1@[2001:db8::57]|1796041752|anonymous|"
            "2125550106|id|3035550110|3035550110||Yealink T46U|487|Request Terminated\n")
    added = line.replace("c1@", "c2@").replace("|487|", "|499|")
    (row, other), bad = parse_all((line + added).encode(), parser=parsers.make_parser(form))
    assert bad == [] and other["disposition"] == Disposition.CANCELLED
    assert row["disposition"] == Disposition.CANCELLED and row["received"]    # it rang
    assert row["presentation"] == Presentation.RESTRICTED                   # Privacy: id
    assert cdrtrace.parsing.numbers.format_number(row["calling"]) == "+12125550106"   # PAI
    assert row["start_us"] == 1796041752 * 1_000_000                         # invite_time


def test_feeds_set_format_zone_served_lines_and_feed_id(tmp_path):
    store = cdrtrace.open(tmp_path / "s", create=True)
    write(tmp_path / "s", """
[feeds.denver]
format = "asterisk"
zone = "America/Denver"
served = ["+1303"]
min_ring_seconds = 5

[feeds.other]
format = "cucm"
""")
    cfg = config.load(config.find(None, store.path))
    src = tmp_path / "m.csv"
    src.write_bytes(b"\n".join([
        cdr(dst="3035550110"), cdr(dst="7205550110"),
        cdr(dst="3035550111", disposition="CANCEL", end="2026-03-02 14:03:13"),   # 2 s ring
    ]) + b"\n")
    summary = cdrtrace.ingest(store, [str(src)], feed=cfg.feed("denver"))
    assert (summary.records, summary.indexed) == (3, 1)
    (call,) = store.last_calls("3035550110", analyst="a")
    assert call["feed"] == testing.feed_id(store, "denver") == 1 and testing.feed_id(store, "other") is None
    assert call["start"] == "2026-03-02T21:03:11Z"          # read in the feed's zone
    assert store.last_calls("7205550110", analyst="a") == []   # not served by this carrier
    assert store.last_calls("3035550111", analyst="a") == []   # rang 2 s < 5 s


def test_feeds_command_and_ingest_by_feed(tmp_path):
    db = tmp_path / "s"
    cdrtrace.open(db, create=True).close()
    write(db, '[feeds.denver]\nformat = "asterisk"\nzone = "America/Denver"\nserved = ["+1303"]\n')
    src = tmp_path / "m.csv"
    src.write_bytes(cdr() + b"\n")

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "cdrtrace.cli", *argv, "--db", str(db)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)

    listed = json.loads(run("feeds", "--json").stdout)
    assert listed == [{"feed": "denver", "format": "asterisk", "zone": "America/Denver",
                       "country_code": 1, "served": ["+1303"], "min_ring_seconds": 0.0,
                       "cdr_delay_seconds": None, "hunt_groups": {},
                       "feed_id": None}]       # listing writes nothing: no id before its first ingest
    assert json.loads(run("ingest", str(src), "--feed", "denver", "--json").stdout)["indexed"] == 1
    assert json.loads(run("feeds", "--json").stdout)[0]["feed_id"] == 1
    proc = run("ingest", str(src), "--feed", "boston")
    assert proc.returncode == 2
    assert proc.stderr == f"cdrtrace: error: no feed 'boston' in {db}/cdrtrace.toml (feeds: denver)\n"


@pytest.mark.parametrize("text,message", [
    ("[feeds.a]\nformat = 'sonus'\n", "feeds.a: unknown format 'sonus' (known: asterisk, "
     "asterisk-custom, freeswitch, cucm, broadworks, kamailio, kamailio-acc, kamailio-dbtext)"),
    ("[feeds.a]\nzone = 'Mars/Base'\n", "feeds.a: unknown time zone 'Mars/Base'"),
    ("[feeds.a]\nserved = '+1303'\n", "feeds.a: served must be a list of number prefixes"),
    ("[feeds.a]\ncolour = 'red'\n", "feeds.a: unknown key(s) colour"),
    ("[switches]\n", "unknown section(s) switches"),
    ("[dialects.x]\ncolumns = ['a']\n[dialects.x.fields]\ncalling = 'a'\n",
     "dialects.x.fields: needs called"),
    ("[dialects.x]\ncolumns = ['a']\n[dialects.x.fields]\ncaller = 'a'\n",
     "dialects.x.fields: unknown field(s) caller"),
    ("[dialects.x]\nbase = 'asterisk'\n[dialects.x.dispositions]\nOK = 'fine'\n",
     "dialects.x.dispositions: 'OK' = 'fine': must be one of answered, no_answer"),
    ("[dialects.asterisk]\n", "dialects.asterisk: 'asterisk' is a built-in format"),
    ("[dialects.x]\nbase = 'freeswitch'\n[dialects.x.dispositions]\nSITE_GAVE_UP = 'failed'\n",
     "dialects.x.dispositions: freeswitch reads its dispositions itself, and a table would "
     "replace that reading, not add to it"),
    ("[dialects.x]\nbase = 'cucm'\n[dialects.x.dispositions]\n'41' = 'failed'\n",
     "dialects.x.dispositions: cucm reads its dispositions itself"),
    ("[dialects.x]\nbase = 'asterisk'\n[dialects.x.presentations]\nprivate = 'restricted'\n",
     "dialects.x.presentations: asterisk reads its presentations itself, and a table would "
     "replace that reading"),
    ("[dialects.x]\nbase = 'asterisk'\ndelimiter = ';;'\n", "dialects.x: delimiter must be one character"),
    ("not toml [", "is not valid TOML"),
    ("[feeds.a]\nhunt_groups = ['2000']\n", "feeds.a: hunt_groups must be a table of hunt pilots"),
    ("[feeds.a.hunt_groups]\n'2000' = []\n",
     "feeds.a.hunt_groups: '2000' must be a non-empty list of its members' numbers"),
    ("[feeds.a.hunt_groups]\n'2000' = [3001]\n",
     "feeds.a.hunt_groups: '2000' must be a non-empty list of its members' numbers"),
    ("[feeds.a.hunt_groups]\n'2000' = '3001'\n",
     "feeds.a.hunt_groups: '2000' must be a non-empty list of its members' numbers"),
    ("[feeds.a.hunt_groups]\n'2000' = ['3001', 'front desk']\n",
     "feeds.a.hunt_groups: 'front desk' is not a number a line can have"),
    ("[feeds.a.hunt_groups]\n'pilot' = ['3001']\n",
     "feeds.a.hunt_groups: 'pilot' is not a number a line can have"),
])
def test_config_errors_say_where(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(f"{path}: ") or str(info.value).startswith(f"{path} ")
    assert message in str(info.value)


def test_stats_per_feed_with_watermark_and_lag(tmp_path):
    db = tmp_path / "s"
    store = cdrtrace.open(db, create=True)
    write(db, '[feeds.denver]\nzone = "America/Denver"\n[feeds.boston]\nzone = "America/New_York"\n')
    cfg = config.load(config.find(None, db))
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_bytes(cdr(start="2026-03-02 14:00:00", end="2026-03-02 14:01:00") + b"\n" +
                  cdr(start="2026-03-02 15:00:00", end="2026-03-02 15:01:00") + b"\nbad\n")
    b.write_bytes(cdr(start="2026-03-02 09:30:00", end="2026-03-02 09:31:00") + b"\n")
    cdrtrace.ingest(store, [str(a)], feed=cfg.feed("denver"), rejects_path=tmp_path / "r")
    cdrtrace.ingest(store, [str(b)], feed=cfg.feed("boston"))
    now = 1772470800 * 10**6                                   # 2026-03-02T17:00:00Z
    feeds = {f["feed"]: f for f in store.stats(now_us=now)["feeds"]}
    assert (feeds["denver"]["records"], feeds["denver"]["rejected"]) == (3, 1)
    assert feeds["denver"]["watermark"] == "2026-03-02T22:00:00Z"     # 15:00 in Denver
    assert feeds["boston"]["watermark"] == "2026-03-02T14:30:00Z"     # 09:30 in Boston
    assert feeds["boston"]["lag_seconds"] == 9000.0
    # Denver's newest call, 22:00 UTC, is 5 h after this clock: not a call yet
    assert (feeds["denver"]["ahead_of_clock"], feeds["boston"]["ahead_of_clock"]) == (True, False)
    assert store.stats(now_us=now + 5 * 3600 * 10**6 - 301 * 10**6)["feeds"][0]["ahead_of_clock"]
    assert not store.stats(now_us=now + 5 * 3600 * 10**6 - 299 * 10**6)["feeds"][0]["ahead_of_clock"]
    assert store.stats()["index"]["lines"] == 1
    store.close()
    out = subprocess.run([sys.executable, "-m", "cdrtrace.cli", "stats", "--db", str(db),
                          "--json"], capture_output=True, text=True, check=True).stdout
    assert {f["feed"] for f in json.loads(out)["feeds"]} == {"denver", "boston"}
    ahead = tmp_path / "ahead.csv"        # a call stamped an hour after the real clock
    ahead.write_bytes(cdr(start=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 3600)),
                          end=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 3660))))
    subprocess.run([sys.executable, "-m", "cdrtrace.cli", "ingest", "--db", str(db), str(ahead)],
                   capture_output=True, check=True)
    out = subprocess.run([sys.executable, "-m", "cdrtrace.cli", "stats", "--db", str(db)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line.split("  ")[0] for line in out if "AHEAD OF THE CLOCK" in line] == ["(no feed)"]


@pytest.mark.parametrize(("setting", "value"), [
    ("threshold", 0), ("threshold", -1), ("threshold", 2.5), ("threshold", True),
    ("threshold", "3"), ("country_code", 0), ("country_code", 1000),
    ("min_ring_seconds", -1), ("min_ring_seconds", float("nan")), ("keep", 0), ("keep", 65),
    ("retention_days", 0), ("retention_days", -5), ("retention_days", float("inf")),
    ("retention_days", 40_000), ("archive_retention_days", "x"),
    ("activation_window_days", -1.0), ("activation_window_days", 0),
    ("audit_checkpoints", 5)])
def test_a_store_made_with_a_setting_out_of_its_range_is_refused_before_it_is_made(
        tmp_path, setting, value):
    """The Python API's settings are checked as `init`'s flags are: a threshold of 0 would
    let a customer ask for action with no trace, a keep past 64 would make every ingest
    fail; refused, saying which setting, before any file of the store exists."""
    with pytest.raises(cdrtrace.ConfigError, match=f"the store setting {setting}"):
        cdrtrace.open(tmp_path / "s", create=True, **{setting: value})
    assert not (tmp_path / "s").exists()


def test_a_store_made_with_settings_in_range_keeps_them(tmp_path):
    settings = {"threshold": 1, "country_code": 44, "min_ring_seconds": 2.5, "keep": 64,
                "retention_days": 30, "archive_retention_days": 7.5,
                "activation_window_days": 0.5}
    with cdrtrace.open(tmp_path / "s", create=True, **settings) as store:
        assert {k: store.config[k] for k in settings} == settings


@pytest.mark.parametrize("reading", ["late_refusal", "late_failure", "transferred", "callers_differ"])
def test_a_dialect_cannot_map_a_value_to_a_late_refusal(tmp_path, reading):
    """late_refusal and late_failure are the parsers' reading of a busy, rejected or
    failed call's times, not a switch's value (transferred, their reading of CUCM's split
    causes; callers_differ, the index's of a call's legs): a dialect maps values to busy,
    rejected or failed, and its table says so."""
    text = ACME.replace('BUSY = "busy"', f'BUSY = "{reading}"')
    with pytest.raises(cdrtrace.errors.ConfigError, match=f"'BUSY' = '{reading}': must be one of"):
        config.load(write(tmp_path, text)).format("acme")


def test_a_feed_lists_its_hunt_pilots_members(tmp_path):
    feed = config.load(write(tmp_path, "[feeds.east]\nformat = 'cucm'\n[feeds.east.hunt_groups]\n"
                                       "'2000' = ['3001', '3002']\n'+13035550100' = ['3003']\n")).feed("east")
    assert feed.hunt_groups == (("2000", ("3001", "3002")), ("+13035550100", ("3003",)))
    assert feed.describe()["hunt_groups"] == {"2000": ["3001", "3002"], "+13035550100": ["3003"]}


def _untimed_forms():
    """The database table's dialect and a layout of one time a record (above), loaded
    once for the property test below."""
    import tempfile
    from pathlib import Path
    folder = Path(tempfile.mkdtemp())
    one_time = ('[dialects.one-time]\ncolumns = ["at", "from", "to", "status"]\n'
                '[dialects.one-time.fields]\nstart = "at"\ncalling = "from"\ncalled = "to"\n'
                'disposition = "status"\n[dialects.one-time.dispositions]\nBUSY = "busy"\n'
                'FAIL = "failed"\nGONE = "unknown"\nRANG = "no_answer"\nOK = "answered"\n')
    loaded = config.load(write(folder, DB_EXPORT + one_time))
    sample = (Path(__file__).parent.parent / "data" / "samples" / "real"
              / "asterisk-db-export-nl.csv").read_bytes()
    rows = b"".join(f"2026-03-02 10:0{k}:00,7205550101,3035550110,{s}\n".encode()
                    for k, s in enumerate(("BUSY", "FAIL", "GONE", "RANG", "OK", "BUSY")))
    return {"asterisk-db": (loaded.format("asterisk-db"), sample),
            "one-time": (loaded.format("one-time"), rows)}


UNTIMED = _untimed_forms()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(UNTIMED)),
       edits=st.lists(st.tuples(st.floats(0, 1), st.sampled_from(
           [b'"', b",", b"\n", b"", b"9", b"0", b"BUSY", b"ANSWERED", b" ", b"-", b":"]),
           st.integers(0, 3)), max_size=6),
       chunk=st.integers(1, 2000), min_ring=st.sampled_from([0, 2]))
def test_a_layout_without_an_end_or_an_answer_is_read_alike_by_both_parsers(
        name, edits, chunk, min_ring):
    """The end from the duration, the answer from billsec and a record that tells no
    time, in the native parser fed in chunks and in its reference fed whole."""
    form, data = UNTIMED[name]
    header, skip = parsers.read_header(form, data)
    body = bytearray(data[skip:])
    for where, insert, delete in edits:
        pos = int(where * len(body))
        body[pos:pos + delete] = insert
    body = bytes(body)
    native = parsers.make_parser(form, header=header, min_ring_seconds=min_ring)
    reference = twin.CdrParser(form.dialect(header), "UTC", min_ring_seconds=min_ring,
                               dispositions=form.vocabularies()[0])
    got = parse_all(body, parser=native, chunks=[chunk] * (len(body) // chunk + 2))
    assert got == parse_all(body, parser=reference)
    if not edits:
        assert got[1] == [] and len(got[0]) == body.count(b"\n")


@pytest.mark.parametrize("text,error", [
    ('roles = "analyst"\n', r"roles must be a table \(\[roles\]\)"),
    ('[roles]\nadmin = ["pat"]\n', r"roles: unknown role\(s\) admin \(roles: analyst, legal, operator\)"),
    ('[roles]\nanalyst = "pat"\n', "roles.analyst must be a list of user names"),
], ids=["not-a-table", "unknown-role", "not-a-list"])
def test_a_roles_section_that_names_no_roles_is_refused_with_where(tmp_path, text, error):
    """[roles] names each role's users: another shape, or a role cdrtrace has not, is an
    error naming the file and the section, never a role granted to nobody."""
    with pytest.raises(cdrtrace.errors.ConfigError, match=error):
        config.load(write(tmp_path, text))
