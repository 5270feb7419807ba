"""Every switch format: the same calls give the same index and traces; each format's own
rules (CUCM causes and header names, BroadWorks direction and presentation); the native
parser equals the reference on each dialect, generated and mutated."""
from __future__ import annotations

import csv
import io
import json
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cdrtrace
from cdrtrace import synth, testing
from cdrtrace.ingestion import following
from cdrtrace.ingestion.following import StreamOptions
from cdrtrace.parsing import native as parsing_native
from cdrtrace.parsing import numbers, parsers, timezones
from cdrtrace.parsing import reference as twin
from cdrtrace.parsing.formats import BROADWORKS, CUCM, Disposition, Presentation
from cdrtrace.parsing.timezones import format_utc
from cdrtrace.store import index
from conftest import parse_all

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"

FORMATS = ("asterisk", "asterisk-custom", "freeswitch", "cucm", "broadworks", "kamailio",
           "kamailio-acc", "kamailio-dbtext")


def write(columns, fmt: str, path, cucm_fields: int = 129, zone: str = "America/Denver"):
    n = len(columns["line"])
    if fmt == "asterisk":
        data = synth.format_asterisk(columns, 0, n, zone)
    elif fmt == "asterisk-custom":
        data = synth.format_asterisk_custom(columns, 0, n, zone)
    elif fmt == "freeswitch":
        data = synth.format_freeswitch(columns, 0, n, zone)
    elif fmt == "cucm":
        data = synth.cucm_header(cucm_fields) + synth.format_cucm(columns, 0, n, cucm_fields)
    elif fmt == "kamailio":
        data = synth.format_kamailio(columns, 0, n)
    elif fmt == "kamailio-dbtext":
        data = synth.KAMAILIO_DBTEXT_HEADER + synth.format_kamailio_dbtext(columns, 0, n)
    elif fmt == "kamailio-acc":
        data = synth.format_kamailio_acc(columns, 0, n)
    else:
        data = synth.broadworks_header() + synth.format_broadworks(columns, 0, n)
    path.write_bytes(data)
    return str(path)


def projection(store, dialled_only=False):
    """Per line: its received calls as (start, calling, answered, disposition), sorted."""
    out = {}
    for key, decoded in testing.index_items(store):
        entries = [e for e in decoded
                   if not dialled_only or (int(e["flags"]) >> 2) & 3 == index.ROLE_DIALLED]
        if len(entries) >= store.config["keep"]:   # a full line: calls tied at the cut
            oldest = min(int(e["start_us"]) for e in entries)   # may be kept in any order
            entries = [e for e in entries if int(e["start_us"]) != oldest]
        if entries:
            out[key] = sorted((int(e["start_us"]), int(e["calling"]), int(e["flags"]) & 1,
                               int(e["flags"]) >> 4) for e in entries)
    return out


@pytest.fixture(scope="module")
def same_calls(tmp_path_factory):
    columns, truth = synth.generate(4000, 300, seed=11, campaigns=8)
    folder = tmp_path_factory.mktemp("formats")
    stores = {}
    for fmt, extra in [("asterisk", {}), ("asterisk-custom", {}), ("freeswitch", {}),
                       ("cucm", {"cucm_fields": 129}), ("cucm", {"cucm_fields": 133}),
                       ("broadworks", {}), ("kamailio", {}), ("kamailio-dbtext", {})]:
        name = f"{fmt}-{extra.get('cucm_fields', '')}"
        path = write(columns, fmt, folder / f"{name}.csv", **extra)
        store = cdrtrace.open(folder / name, create=True, keep=64)
        zone = "America/Denver" if fmt in ("asterisk", "asterisk-custom", "freeswitch") else "UTC"
        summary = cdrtrace.ingest(store, [path], fmt=fmt, zone=zone)
        assert summary.rejected == 0 and summary.records == len(columns["line"])
        stores[name] = store
    return columns, truth, stores


def test_the_same_calls_in_every_format_give_the_same_index(same_calls):
    _, _, stores = same_calls
    views = {name: projection(store) for name, store in stores.items() if name != "freeswitch-"}
    first = views["asterisk-"]
    assert len(first) > 250
    for name, view in views.items():
        assert view == first, name
    # FreeSWITCH's templates name only the dialled number (forwarding needs an operator's
    # rdnis column), so its index is the dialled-line part of the others'
    assert projection(stores["freeswitch-"]) == projection(stores["asterisk-"], dialled_only=True)


def test_the_same_calls_in_every_format_give_the_same_traces(same_calls):
    columns, truth, stores = same_calls
    at = format_utc(int(columns["end"].max() + 60) * 1_000_000)
    lines = sorted({f"+1{int(x)}" for x in columns["line"]})[:120]
    outcomes = {name: [(s.trace(line, at=at).outcome.value, s.trace(line, at=at).outcome.value)
                       for line in lines] for name, s in stores.items() if name != "freeswitch-"}
    first = outcomes["asterisk-"]
    assert {"success", "already_traced"} <= {o for pair in first for o in pair}
    for name, got in outcomes.items():
        assert got == first, name


# ------------------------------------------------------------------ CUCM

def cucm_file(tmp_path, rows: list[dict], fields: int = 129, order=None):
    """A CUCM file from dicts of the columns that matter (others empty or 0)."""
    names = synth.CUCM_FIELDS[fields]
    order = order or list(range(len(names)))
    out = io.StringIO()
    out.write(",".join(f'"{names[i]}"' for i in order) + "\n")
    out.write(",".join("INTEGER" if names[i] in synth.CUCM_INTEGERS else "VARCHAR(50)"
                       for i in order) + "\n")
    for row in rows:
        cells = []
        for i in order:
            name = names[i]
            value = str(row.get(name, "0" if name in synth.CUCM_INTEGERS else ""))
            cells.append(value if name in synth.CUCM_INTEGERS else f'"{value}"')
        out.write(",".join(cells) + "\r\n")
    path = tmp_path / "cdr_StandAloneCluster_01_202603021403_1"
    path.write_text(out.getvalue(), encoding="latin-1")
    return str(path)


def cucm_row(call_id, start, connect=0, orig=16, dest=16, calling="3035550142",
             original="3035550110", final="3035550110", redirect="", end=None):
    return {"globalCallID_callManagerId": 1, "globalCallID_callId": call_id,
            "dateTimeOrigination": start, "dateTimeConnect": connect,
            "dateTimeDisconnect": end or start + 30, "callingPartyNumber": calling,
            "originalCalledPartyNumber": original, "finalCalledPartyNumber": final,
            "lastRedirectDn": redirect, "origCause_value": orig, "destCause_value": dest,
            "duration": 0}


T0 = 1772460180   # 2026-03-02T14:03:00Z


@pytest.mark.parametrize("connect,orig,dest,received,disposition", [
    (T0 + 5, 16, 16, True, Disposition.ANSWERED),
    (0, 0, 19, True, Disposition.NO_ANSWER),
    (0, 0, 18, True, Disposition.NO_ANSWER),
    (0, 16, 0, True, Disposition.CANCELLED),        # the caller cleared while it rang
    (0, 0, 17, False, Disposition.BUSY),
    (0, 0, 21, False, Disposition.REJECTED),
    (0, 0, 1, False, Disposition.UNALLOCATED),
    (0, 0, 41, False, Disposition.FAILED),
    # busy or rejected a second or more after it began: its user may have refused it
    # while it rang (CUCM logs no alerting), so it may have been received
    (0, 0, 17, True, Disposition.LATE_REFUSAL),
    (0, 0, 21, True, Disposition.LATE_REFUSAL),
])
def test_cucm_causes_decide_received(tmp_path, connect, orig, dest, received, disposition):
    # a refusal at once (the call's end in its start's second) unless the case is a late one
    end = T0 + 30 if received else T0
    path = cucm_file(tmp_path, [cucm_row(7, T0, connect, orig, dest, end=end)])
    header, skip = parsers.read_header(CUCM, open(path, "rb").read())
    cols, bad, _ = parsers.make_parser("cucm", header=header, start_offset=skip).feed(
        open(path, "rb").read()[skip:], True)
    assert bad == []
    assert (bool(cols["received"][0]), int(cols["disposition"][0])) == (received, disposition)
    assert cols["offset"][0] == skip and cols["start_us"][0] == T0 * 10**6


@pytest.mark.parametrize("fields", [129, 131, 133])
def test_cucm_maps_by_header_name_in_any_release_or_order(tmp_path, fields):
    names = synth.CUCM_FIELDS[fields]
    order = list(range(len(names)))
    random.Random(fields).shuffle(order)
    # a phone off hook and back first: the cluster logs calls that never connected
    off_hook = cucm_row(8, T0 - 10, 0, 16, 0, calling="2001", original="", final="")
    path = cucm_file(tmp_path, [off_hook, cucm_row(9, T0, T0 + 4, original="3035550110",
                                                   redirect="3035550177", final="7205550199")],
                     fields, order)
    store = cdrtrace.open(tmp_path / "s", create=True)
    summary = cdrtrace.ingest(store, [path], fmt="cucm")
    assert (summary.records, summary.rejected, summary.indexed) == (2, 0, 3)
    for line, role in (("3035550110", "dialled"), ("3035550177", "redirecting"),
                       ("7205550199", "final")):
        (call,) = store.last_calls(line, analyst="ann")
        assert (call["indexed_as"], call["calling"], call["answered"]) == (role, "+13035550142", True)
        assert store.trace(line, at=format_utc((T0 + 60) * 10**6)).successful


def test_cucm_header_lacking_a_needed_column_is_a_clear_error(tmp_path):
    path = tmp_path / "cdr.csv"
    path.write_bytes(b'"cdrRecordType","dateTimeOrigination"\nINTEGER,INTEGER\n1,1772460180\n')
    store = cdrtrace.open(tmp_path / "s", create=True)
    with pytest.raises(cdrtrace.FormatError, match="cucm header lacks the column\\(s\\) "
                       "callingPartyNumber, originalCalledPartyNumber, finalCalledPartyNumber"):
        cdrtrace.ingest(store, [str(path)], fmt="cucm")
    path.write_bytes(b'"cdrRecordType"')
    with pytest.raises(cdrtrace.FormatError, match="no complete cucm header \\(2 line\\(s\\)\\)"):
        cdrtrace.ingest(store, [str(path)], fmt="cucm")


@pytest.mark.parametrize("fmt, sample, bom", [
    ("cucm", "cucm/cdr_StandAloneCluster_01_202603021403_1", False),   # in a quoted name
    ("cucm", "cucm/car_export_no_types.csv", True),                    # an unquoted header
    ("broadworks", "broadworks/BW-CDR-20260302140000-2-000001.csv", False),
    ("auto", "broadworks/BW-CDR-20260302140000-2-000001.csv", True),
    ("auto", "asterisk/Master.csv", False),
])
def test_a_carriage_return_inside_the_first_line_is_a_clear_error_saying_where(tmp_path, fmt,
                                                                              sample, bom):
    """A header (or, read as auto, a first line) cut by a stray carriage return, as files
    joined or edited on another system give: the csv module cannot read it. Refused
    whole, with the byte it stands at (it was an internal error, exit 70); nothing of it
    is indexed or rejected; a follower refuses it alike."""
    data = b"\xef\xbb\xbf" * bom + (SAMPLE_DIR / sample).read_bytes()   # a byte-order mark
    at = data.index(b",", 40) + 3
    path = tmp_path / "cdr_x.csv"
    path.write_bytes(data[:at] + b"\r" + data[at:])
    store = cdrtrace.open(tmp_path / "s", create=True)
    message = f"{path}: its first line cannot be read: a carriage return at byte {at}"
    hint = "; its format cannot be told (name it with --format)" if fmt == "auto" else ""
    with pytest.raises(cdrtrace.ParseError, match=f"^{re.escape(message + hint)}$"):
        cdrtrace.ingest(store, [str(path)], fmt=fmt)
    assert store.stats()["index"]["lines"] == 0 and not (store.path / "rejects.jsonl").exists()
    if fmt != "auto":
        options = StreamOptions(batch_ms=1, poll_ms=1, heartbeat_s=0.01, idle_exit_s=0.2)
        with pytest.raises(cdrtrace.ParseError, match=f"^{re.escape(message)}$"):
            following.follow(store, str(path), fmt=fmt, options=options)


def test_a_carriage_return_inside_what_may_be_cucms_types_line_leaves_it_a_record(tmp_path):
    """A CUCM file's second line is its types line or its first record: one the csv
    module cannot read is no types line, and its parse rejects it as the record it is,
    with its position, keeping the rest (it was an internal error, exit 70)."""
    data = (SAMPLE_DIR / "cucm/car_export_no_types.csv").read_bytes()
    second = data.index(b"\n") + 1
    at = data.index(b",", second) + 1
    path = tmp_path / "car.csv"
    path.write_bytes(data[:at] + b"\r" + data[at:])
    store = cdrtrace.open(tmp_path / "s", create=True)
    clean = cdrtrace.open(tmp_path / "c", create=True)
    whole = cdrtrace.ingest(clean, [str(SAMPLE_DIR / "cucm/car_export_no_types.csv")], fmt="cucm")
    summary = cdrtrace.ingest(store, [str(path)], fmt="cucm", rejects_path=tmp_path / "r.jsonl")
    assert (summary.records, summary.rejected) == (whole.records, 1)
    (reject,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert (reject["record"], reject["offset"]) == (1, second)
    assert "carriage return" in reject["reason"]


def test_cucm_bad_records_are_rejected_with_positions(tmp_path):
    rows = [cucm_row(1, T0), cucm_row(2, T0, dest="x9"), cucm_row(3, T0)]
    path = cucm_file(tmp_path, rows)
    raw = open(path, "rb").read()
    store = cdrtrace.open(tmp_path / "s", create=True)
    summary = cdrtrace.ingest(store, [path], fmt="cucm", rejects_path=tmp_path / "r.jsonl")
    assert (summary.records, summary.rejected) == (3, 1)
    (reject,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert reject["record"] == 2 and reject["reason"] == "bad cause in column 34"
    assert raw[reject["offset"]:].startswith(b"0,1,2,0,1772460180,")


# ------------------------------------------------------------------ BroadWorks

def broadworks_file(tmp_path, rows: list[dict]):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(synth.BROADWORKS_FIELDS)
    for row in rows:
        writer.writerow([row.get(name, "") for name in synth.BROADWORKS_FIELDS])
    path = tmp_path / "BW-CDR-20260302140000.csv"
    path.write_text(out.getvalue())
    return str(path)


def bw_row(record_id, direction="Terminating", calling="+17205550101", pres="Public",
           user="+13035550110", called="3035550110", start="20260302140300.398",
           answer="20260302140305.001", indicator="Yes", cause="016", redirecting=""):
    return {"recordId": record_id, "userNumber": user, "direction": direction,
            "callingNumber": calling, "callingPresentationIndicator": pres,
            "calledNumber": called, "startTime": start, "userTimeZone": "1-060000",
            "answerIndicator": indicator, "answerTime": answer,
            "releaseTime": "20260302140400.000", "terminationCause": cause,
            "redirectingNumber": redirecting}


def test_broadworks_terminating_records_are_the_incoming_calls(tmp_path):
    rows = [bw_row("0001", direction="Originating", user="+17205550101", calling="+17205550101",
                   called="3035550110"),
            bw_row("0002", pres="Private", calling="+17205550102")]
    store = cdrtrace.open(tmp_path / "s", create=True)
    summary = cdrtrace.ingest(store, [broadworks_file(tmp_path, rows)], fmt="broadworks")
    assert (summary.records, summary.rejected, summary.indexed) == (2, 0, 1)
    (call,) = store.last_calls("3035550110", analyst="ann")
    assert (call["calling"], call["presentation"]) == ("+17205550102", "restricted")
    assert call["start_us"] == 1772460180398000          # GMT, with the milliseconds
    result = store.trace("3035550110", at="2026-03-02T15:00:00Z")
    assert result.successful and result.call_time == "2026-03-02T14:03:00.398000Z"


@pytest.mark.parametrize("indicator,cause,received,disposition", [
    ("Yes", "016", True, Disposition.ANSWERED),
    ("Yes-PostRedirection", "016", True, Disposition.ANSWERED_ELSEWHERE),
    ("No", "016", True, Disposition.CANCELLED),
    ("No", "019", True, Disposition.NO_ANSWER),
    ("No", "018", True, Disposition.NO_ANSWER),
    ("No", "017", False, Disposition.BUSY),
    ("No", "021", False, Disposition.REJECTED),
    ("No", "001", False, Disposition.UNALLOCATED),
    ("No", "017", True, Disposition.LATE_REFUSAL),   # refused 59.6 s on: it may have rung
    ("No", "021", True, Disposition.LATE_REFUSAL),
])
def test_broadworks_answer_indicator_and_cause(tmp_path, indicator, cause, received, disposition):
    row = bw_row("1", indicator=indicator, cause=cause,
                 answer="" if indicator == "No" else "20260302140305.0")
    if not received:
        row["releaseTime"] = "20260302140301.397"    # 0.999 s after its start: at once
    path = broadworks_file(tmp_path, [row])
    data = open(path, "rb").read()
    header, skip = parsers.read_header(BROADWORKS, data)
    cols, bad, _ = parsers.make_parser("broadworks", header=header, start_offset=skip).feed(
        data[skip:], True)
    assert bad == []
    assert (bool(cols["received"][0]), int(cols["disposition"][0])) == (received, disposition)


def test_broadworks_forwarded_call_and_bad_time(tmp_path):
    rows = [bw_row("1", called="3035550110", user="+17205550199", redirecting="3035550177"),
            bw_row("2", start="2026-03-02 14:03:00")]
    store = cdrtrace.open(tmp_path / "s", create=True)
    summary = cdrtrace.ingest(store, [broadworks_file(tmp_path, rows)], fmt="broadworks",
                              rejects_path=tmp_path / "r.jsonl")
    assert (summary.records, summary.rejected, summary.indexed) == (2, 1, 3)
    assert "bad timestamp in column 10" in (tmp_path / "r.jsonl").read_text()
    roles = {store.last_calls(n, analyst="a")[0]["indexed_as"]
             for n in ("3035550110", "3035550177", "7205550199")}
    assert roles == {"dialled", "redirecting", "final"}


# ------------------------------------------------------------------ FreeSWITCH

FS = ('"{name}","{number}","3035550110","public","2026-03-02 14:03:11","{answer}",'
      '"2026-03-02 14:03:29","18","{billsec}","{cause}","0c4a2b9e-08d1-11ef-9a3c-6b1f2d3e4f50","",""'
      ',"PCMU","PCMU"')


def fs_parse(data: bytes):
    return parse_all(data, parser=parsers.make_parser("freeswitch", zone="America/Denver"))


def test_freeswitch_recovers_unescaped_quotes_in_names():
    line = FS.format(name='Robert "Bob" O"Neil, Jr.', number="7205550101",
                     answer="2026-03-02 14:03:15", billsec="14", cause="NORMAL_CLEARING")
    (row,), bad = fs_parse(line.encode("latin-1") + b"\r\n")
    assert bad == []
    assert numbers.format_number(row["calling"]) == "+17205550101"
    assert row["disposition"] == Disposition.ANSWERED and row["start_us"] == 1772485391 * 10**6


def test_freeswitch_default_template_with_its_stray_space():
    line = ('"Pat","7205550101","3035550110","default","2026-03-02 14:03:11","",'
            '"2026-03-02 14:03:29","18","0","ORIGINATOR_CANCEL","uuid-1","", "acct"')
    (row,), bad = fs_parse(line.encode())
    assert bad == [] and row["disposition"] == Disposition.CANCELLED and row["received"]


@pytest.mark.parametrize("cause,answered,received,disposition", [
    ("NORMAL_CLEARING", True, True, Disposition.ANSWERED),
    ("ORIGINATOR_CANCEL", False, True, Disposition.CANCELLED),
    ("NO_ANSWER", False, True, Disposition.NO_ANSWER),
    ("NO_USER_RESPONSE", False, True, Disposition.NO_ANSWER),
    ("LOSE_RACE", False, True, Disposition.ANSWERED_ELSEWHERE),    # another phone answered
    ("PICKED_OFF", False, True, Disposition.ANSWERED_ELSEWHERE),   # picked up from another
    ("ALLOTTED_TIMEOUT", False, True, Disposition.NO_ANSWER),  # its leg_timeout ran out
    ("ALLOTTED_TIMEOUT", True, True, Disposition.ANSWERED),    # a time limit on a call
    ("PROGRESS_TIMEOUT", False, False, Disposition.FAILED),    # it never rang
    ("USER_BUSY", False, False, Disposition.BUSY),
    ("CALL_REJECTED", False, False, Disposition.REJECTED),
    ("UNALLOCATED_NUMBER", False, False, Disposition.UNALLOCATED),
    ("NORMAL_TEMPORARY_FAILURE", False, False, Disposition.FAILED),
    ("NORMAL_CLEARING", False, False, Disposition.UNKNOWN),   # no alerting column: unknown
    # ... unknown 18 s after it began (a dialplan's hangup after its bridge): it may have rung
    ("NORMAL_CLEARING", False, True, Disposition.UNKNOWN),
    # refused 18 s after it began, and the template logs no alerting: it may have rung
    ("USER_BUSY", False, True, Disposition.LATE_REFUSAL),
    ("CALL_REJECTED", False, True, Disposition.LATE_REFUSAL),
])
def test_freeswitch_hangup_causes(cause, answered, received, disposition):
    line = FS.format(name="Pat", number="7205550101", cause=cause, billsec="0",
                     answer="2026-03-02 14:03:15" if answered else "")
    if not received:     # every record of the table ended in its start's second
        line = line.replace('"2026-03-02 14:03:29","18"', '"2026-03-02 14:03:11","0"')
    (row,), bad = fs_parse(line.encode())
    assert bad == []
    assert (bool(row["received"]), row["disposition"]) == (received, disposition)


# A failure (not busy, refused or an unknown number) in a record that logs no alerting:
# a phone or proxy that gives up on a ringing call may end it with a timeout (SIP 408,
# Q.850 102, FreeSWITCH RECOVERY_ON_TIMER_EXPIRE) or the reply it is set to send (a 5xx),
# so one that ended a second or more after it began may have rung (docs/trace-rules.md,
# "A call that failed after it may have rung"). A cause that says the call reached no
# phone (no route, absent, out of order, no progress before the timeout) never rang.
LATE_FAILURES = [
    ("cucm", "102", 30, True, Disposition.LATE_FAILURE),     # recovery on timer expiry
    ("cucm", "41", 25, True, Disposition.LATE_FAILURE),      # temporary failure (a 503)
    ("cucm", "31", 1, True, Disposition.LATE_FAILURE),       # a second on: it may have rung
    ("cucm", "102", 0, False, Disposition.FAILED),           # in its first second: it did not
    ("cucm", "27", 30, False, Disposition.FAILED),           # destination out of order
    ("cucm", "20", 30, False, Disposition.FAILED),           # subscriber absent
    ("cucm", "3", 30, False, Disposition.FAILED),            # no route to the destination
    ("broadworks", "102", 30, True, Disposition.LATE_FAILURE),
    ("broadworks", "041", 30, True, Disposition.LATE_FAILURE),
    ("broadworks", "102", 0, False, Disposition.FAILED),
    ("broadworks", "027", 30, False, Disposition.FAILED),
    ("broadworks", "028", 30, False, Disposition.FAILED),    # invalid number format
    ("freeswitch", "RECOVERY_ON_TIMER_EXPIRE", 30, True, Disposition.LATE_FAILURE),
    ("freeswitch", "NORMAL_TEMPORARY_FAILURE", 18, True, Disposition.LATE_FAILURE),
    ("freeswitch", "RECOVERY_ON_TIMER_EXPIRE", 0, False, Disposition.FAILED),
    ("freeswitch", "PROGRESS_TIMEOUT", 30, False, Disposition.FAILED),   # never rang
    ("freeswitch", "USER_NOT_REGISTERED", 18, False, Disposition.FAILED),
    ("freeswitch", "DESTINATION_OUT_OF_ORDER", 32, False, Disposition.FAILED),
    ("freeswitch", "NO_ROUTE_DESTINATION", 5, False, Disposition.FAILED),
    ("freeswitch", "SUBSCRIBER_ABSENT", 5, False, Disposition.FAILED),
    ("freeswitch", "INCOMPATIBLE_DESTINATION", 5, False, Disposition.FAILED),
    ("freeswitch", "INVALID_NUMBER_FORMAT", 5, False, Disposition.FAILED),
    ("freeswitch", "NUMBER_CHANGED", 5, False, Disposition.FAILED),
    ("freeswitch", "NO_ROUTE_TRANSIT_NET", 5, False, Disposition.FAILED),
]


def late_failure_record(tmp_path, fmt: str, cause: str, seconds: int) -> tuple[str, bytes]:
    if fmt == "cucm":
        return "cucm", open(cucm_file(tmp_path, [cucm_row(7, T0, 0, 0, int(cause),
                                                          end=T0 + seconds)]), "rb").read()
    if fmt == "broadworks":
        row = bw_row("1", indicator="No", cause=cause, answer="")
        row["releaseTime"] = f"202603021403{seconds:02d}.398"    # its start: 14:03:00.398
        return "broadworks", open(broadworks_file(tmp_path, [row]), "rb").read()
    line = FS.format(name="Pat", number="7205550101", cause=cause, billsec="0", answer="")
    return "freeswitch", line.replace('"2026-03-02 14:03:29","18"',
                                      f'"2026-03-02 14:03:{11 + seconds:02d}","{seconds}"').encode()


@pytest.mark.parametrize("pure", [False, True], ids=["native", "reference"])
@pytest.mark.parametrize("fmt,cause,seconds,received,disposition", LATE_FAILURES)
def test_a_failure_after_it_may_have_rung_is_received(tmp_path, monkeypatch, pure, fmt, cause,
                                                      seconds, received, disposition):
    if pure:
        monkeypatch.setenv("CDRTRACE_PURE", "1")
    name, data = late_failure_record(tmp_path, fmt, cause, seconds)
    form = cdrtrace.parsing.formats.FORMATS[name]
    header, skip = parsers.read_header(form, data)
    parser = parsers.make_parser(name, header=header, start_offset=skip)
    cols, bad, _ = parser.feed(data[skip:], True)
    assert bad == [] and len(cols["received"]) == 1
    assert (bool(cols["received"][0]), int(cols["disposition"][0])) == (received, disposition)
    assert cols["end_us"][0] - cols["start_us"][0] == seconds * 10**6


def test_freeswitch_anonymous_is_unavailable_and_bad_cause_rejected():
    good = FS.format(name="Anonymous", number="anonymous", answer="", billsec="0",
                     cause="ORIGINATOR_CANCEL")
    bad_cause = FS.format(name="Pat", number="7205550101", answer="", billsec="0",
                          cause="hung up")
    rows, bad = fs_parse((good + "\n" + bad_cause + "\n").encode())
    assert [r["presentation"] for r in rows] == [Presentation.UNAVAILABLE]
    assert [(r[0], r[2]) for r in bad] == [(2, "unknown disposition in column 10")]


# ------------------------------------------------------------------ native == reference

def both(fmt: str, data: bytes, chunk: int):
    form = cdrtrace.parsing.formats.FORMATS[fmt]
    header, skip = parsers.read_header(form, data)
    dialect = form.dialect(header)
    dispositions, presentations = form.vocabularies()     # Kamailio's SIP codes
    starts, offsets = timezones.zone_table("UTC")
    native = parsing_native.CdrParser(dialect, starts, offsets, start_offset=skip,
                                      dispositions=dispositions, presentations=presentations)
    ref = twin.CdrParser(dialect, "UTC", start_offset=skip, dispositions=dispositions,
                         presentations=presentations)
    body = data[skip:]
    # rows and rejects, then the tenants the records named (take_tenants)
    return ((*parse_all(body, parser=native, chunks=[chunk] * (len(body) // chunk + 2)),
             native.take_tenants(), native.take_tenant_names()),
            (*parse_all(body, parser=ref), ref.take_tenants(), ref.take_tenant_names()))


SAMPLES = {}


def sample(fmt: str) -> bytes:
    if fmt not in SAMPLES:
        columns, _ = synth.generate(40, 20, seed=3, campaigns=3)
        n = len(columns["line"])
        SAMPLES[fmt] = {
            "cucm": lambda: synth.cucm_header() + synth.format_cucm(columns, 0, n),
            "broadworks": lambda: synth.broadworks_header() + synth.format_broadworks(columns, 0, n),
            "freeswitch": lambda: synth.format_freeswitch(columns, 0, n),
            "kamailio": lambda: synth.format_kamailio(columns, 0, n),
            "kamailio-acc": lambda: synth.format_kamailio_acc(columns, 0, n),
            "kamailio-dbtext": lambda: (synth.KAMAILIO_DBTEXT_HEADER
                                        + synth.format_kamailio_dbtext(columns, 0, n)),
            "asterisk-custom": lambda: synth.format_asterisk_custom(columns, 0, n),
        }[fmt]()
    return SAMPLES[fmt]


HEADER_LINES = {"cucm": 2, "broadworks": 1, "freeswitch": 0, "asterisk-custom": 0, "kamailio": 0,
                "kamailio-acc": 0, "kamailio-dbtext": 1}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(sorted(HEADER_LINES)),
       edits=st.lists(st.tuples(st.floats(0, 1), st.sampled_from(
           [b'"', b",", b"\n", b"\r", b"\x00", b"", b"9", b"\xe9", b".", b"-", b"No", b"x", b"\\",
            b":", b"|", b"BYE", b"\x00" * 7, b"\x00" * 8, b"\x00" * 300]),
           st.integers(0, 3)), max_size=6),
       chunk=st.integers(1, 4000))
def test_native_equals_reference_for_every_format(fmt, edits, chunk):
    data = bytearray(sample(fmt))
    header_end = 0
    for _ in range(HEADER_LINES[fmt]):
        header_end = data.index(b"\n", header_end) + 1
    for where, insert, delete in edits:   # mutate the records, keep the header
        pos = header_end + int(where * (len(data) - header_end))
        data[pos:pos + delete] = insert
    native, reference = both(fmt, bytes(data), chunk)
    assert native == reference
    if not edits:
        assert native[1] == [] and len(native[0]) == bytes(data).count(b"\n") - HEADER_LINES[fmt]


@pytest.mark.parametrize("command", ["ingest", "synth"])
def test_every_format_is_listed_by_the_command(capsys, command):
    from cdrtrace import cli
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert ("one of: asterisk, asterisk-custom, freeswitch, cucm, broadworks, kamailio, "
            "kamailio-acc, kamailio-dbtext") in help_text
    assert set(FORMATS) == set(cdrtrace.parsing.formats.FORMATS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(sorted(FORMATS)), body=st.binary(max_size=600),
       chunk=st.integers(1, 700))
def test_fuzz_every_dialect_on_arbitrary_bytes(fmt, body, chunk):
    """No crash, no hang, and no record the reference disagrees with, whatever the bytes."""
    form = cdrtrace.parsing.formats.FORMATS[fmt]
    header = sample(fmt).split(b"\n", form.header_lines)[:form.header_lines] if form.header_lines else []
    data = b"".join(line + b"\n" for line in header) + body
    native, reference = both(fmt, data, chunk)
    assert native == reference

