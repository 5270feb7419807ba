"""The hand-built sample in data/samples: every record's expected result."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

import cdrtrace
from cdrtrace import config
from cdrtrace.parsing import parsers
from cdrtrace.parsing import reference as twin
from cdrtrace.parsing.parsers import detect_format
from conftest import held_from_the_customer, parse_all, show_freeswitch_legs

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "samples" / "asterisk" / "Master.csv"
AT = "2026-11-02T00:00:00Z"


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sample")
    store = cdrtrace.open(folder / "store", create=True)
    summary = cdrtrace.ingest(store, [str(SAMPLE)], zone="America/Denver",
                              rejects_path=folder / "rejects.jsonl")
    rejects = [json.loads(x) for x in (folder / "rejects.jsonl").read_text().splitlines()]
    return store, summary, rejects


def test_a_reject_with_no_time_is_placed_alike_however_the_file_is_read(tmp_path):
    """Record 11 (31 February) is placed when record 10 ended, at every chunk size: before,
    a chunk that began with it placed it at the start of the record after it, record 12
    (November's repeated hour), and a trace activated between the two found no unreadable
    call and named 3035550116's older call. Live, a read of a followed file that begins with
    such a record is such a chunk."""
    size = len(SAMPLE.read_bytes())
    for chunk in (64, 300, 700, 1500, size):
        store = cdrtrace.open(tmp_path / f"s{chunk}", create=True)
        try:
            cdrtrace.ingest(store, [str(SAMPLE)], zone="America/Denver", chunk_bytes=chunk,
                            rejects_path=tmp_path / f"r{chunk}.jsonl")
            (call,) = store.last_calls("3035550116", analyst="ann")
            assert (call["start"], call["disposition"]) == ("2026-03-03T00:30:20Z",
                                                            "unreadable"), chunk
            result = store.trace("3035550116", at="2026-03-04T00:00:00Z")
            assert (result.outcome.value, result.call_time) == ("untraceable",
                                                                "2026-03-03T00:30:20Z"), chunk
        finally:
            store.close()


def test_sample_counts_and_the_one_reject(sample_store):
    _, summary, rejects = sample_store
    assert (summary.records, summary.rejected) == (13, 1)
    assert [(r["record"], r["reason"]) for r in rejects] == [(11, "bad timestamp in column 10")]
    assert SAMPLE.read_bytes()[rejects[0]["offset"]:].startswith(b'"","3035550142","3035550116"')


@pytest.mark.parametrize("line,outcome,call_time,calling,presentation", [
    ("3035550110", "success", "2026-03-02T21:03:11Z", "+13035550142", "allowed"),
    ("1001", "success", "2026-03-02T21:03:11Z", "+13035550142", "allowed"),
    ("3035550111", "success", "2026-03-02T22:00:00Z", "+17205550101", "allowed"),
    ("3035550112", "success", "2026-03-02T22:30:00Z", "+17205550177", "restricted"),
    ("3035550113", "untraceable", "2026-03-02T23:00:00Z", None, "unavailable"),
    ("3035550120", "success", "2026-03-02T23:30:00Z", "+17205550104", "allowed"),
    ("3035550121", "success", "2026-03-02T23:30:00Z", "+17205550104", "allowed"),
    ("7205550130", "success", "2026-03-02T23:30:00Z", "+17205550104", "allowed"),
    ("3035550114", "success", "2026-03-03T00:00:00Z", "+13035550199", "allowed"),
    ("3035550115", "success", "2026-03-03T00:30:00Z", "+13035550188", "allowed"),
    # record 11 (31 February) fails closed: an unreadable call to 3035550116, at the
    # end of the good record before it since its own times cannot be read
    ("3035550116", "untraceable", "2026-03-03T00:30:20Z", None, "unavailable"),
    ("3035550117", "success", "2026-11-01T07:30:00Z", "+17205550105", "allowed"),
    ("3035550118", "success", "2026-03-03T01:00:00Z", "+17205550106", "allowed"),
])
def test_sample_traces(sample_store, line, outcome, call_time, calling, presentation):
    store, _, _ = sample_store
    result = store.trace(line, at=AT)
    assert (result.outcome.value, result.call_time) == (outcome, call_time)
    record = store.trace_records(line, analyst="cic")[-1]
    if record["call"]:
        assert (record["call"]["calling"], record["call"]["presentation"]) == (calling, presentation)
    else:
        assert calling is None


# ------------------------------------------------------------------ the other formats

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
# the FreeSWITCH sample's calls, traced on a feed that has shown it writes both legs
FREESWITCH_NAMED = {"3035550110": ("success", "2026-03-02T14:03:00Z"),
                    "3035550111": ("success", "2026-03-02T14:10:00Z"),
                    "3035550112": ("untraceable", "2026-03-02T14:20:00Z"),
                    "3035550114": ("success", "2026-03-02T14:40:00Z"),
                    "3035550115": ("untraceable", "2026-03-02T14:50:00Z"),   # unreadable
                    "3035550116": ("success", "2026-11-01T07:30:00Z")}
OTHER = {
    "asterisk-custom": ("asterisk-custom/Master.csv", "UTC", 4,
                        [(4, "bad duration in column 13")],
                        {"3035550110": ("success", "2026-03-02T14:03:00Z"),
                         "3035550111": ("success", "2026-03-02T14:10:00Z"),   # restricted
                         "3035550112": ("no_call", None),
                         "3035550113": ("untraceable", "2026-03-02T14:30:00Z")}),  # unreadable
    # format: (file, zone, records, [(record, reason)], {line: (outcome, call time)})
    "cucm": ("cucm/cdr_StandAloneCluster_01_202603021403_1", "UTC", 10,
             [(9, "bad cause in column 34")],
             {"3035550110": ("success", "2026-03-02T14:03:00Z"),
              "3035550111": ("success", "2026-03-02T14:13:00Z"),
              "3035550112": ("success", "2026-03-02T14:23:00Z"),
              "3035550113": ("no_call", None),
              "3035550120": ("success", "2026-03-02T14:43:00Z"),
              "3035550121": ("success", "2026-03-02T14:43:00Z"),
              "7205550199": ("success", "2026-03-02T14:43:00Z"),
              "3035550114": ("untraceable", "2026-03-02T14:53:00Z"),
              "3035550115": ("no_call", None),
              "3035550116": ("untraceable", "2026-03-02T15:23:00Z"),   # unreadable
              "2001": ("success", "2026-03-02T15:13:00Z")}),
    "broadworks": ("broadworks/BW-CDR-20260302140000-2-000001.csv", "UTC", 7,
                   [(7, "bad timestamp in column 10")],
                   {"3035550110": ("success", "2026-03-02T14:03:00.125000Z"),
                    "3035550111": ("success", "2026-03-02T14:20:00Z"),
                    "3035550120": ("success", "2026-03-02T14:30:00Z"),
                    "3035550121": ("success", "2026-03-02T14:30:00Z"),
                    "7205550199": ("success", "2026-03-02T14:30:00Z"),
                    "3035550112": ("no_call", None),
                    "3035550113": ("untraceable", "2026-03-02T14:50:00Z"),
                    # unreadable: its start time is malformed, its release time is not
                    "3035550114": ("untraceable", "2026-03-02T15:00:30Z"),
                    "7205550101": ("no_call", None)}),       # its originating record
    # the shipped `legs` = `a`: A legs alone, so no call is named (FREESWITCH_NAMED: once
    # the feed has shown two legs of a call)
    "freeswitch": ("freeswitch/Master.csv", "America/Denver", 7,
                   [(6, "unknown disposition in column 10")],
                   {**{line: ("untraceable", None) for line in FREESWITCH_NAMED},
                    "3035550113": ("no_call", None)}),
    # made by a real Kamailio 5.6 in tests/test_kamailio.py (data/samples/README.md); traced
    # after its last call (2026-12-02 16:50:31 UTC): each line's last call that rang
    "kamailio": ("kamailio/acc_cdrs.log", "UTC", 12, [],
                 {"3035550110": ("success", "2026-12-02T16:50:31.051522Z"),  # rejected ringing
                  "3035550199": ("success", "2026-12-02T16:50:26.050955Z"),  # R2: it forwarded
                  "3035550120": ("no_call", None),                     # 404: offline
                  "3035550130": ("no_call", None)}),                   # 302: redirected
}


TRACE_AT = {"kamailio": "2026-12-03T00:00:00Z"}     # after the Kamailio sample's calls


def test_the_kamailio_sample_as_the_wire_made_it(tmp_path):
    """Each record of the real Kamailio's acc_cdrs, as tests/test_kamailio.py placed it."""
    from cdrtrace.parsing.numbers import format_number

    parser = cdrtrace.make_parser("kamailio", "UTC")
    rows, rejects, _ = parser.feed((SAMPLES / "kamailio" / "acc_cdrs.log").read_bytes(), True)
    assert rejects == []
    got = [(format_number(int(c)), int(p), format_number(int(f)), format_number(int(r)),
            int(d), bool(rec))
           for c, p, f, r, d, rec in zip(rows["calling"], rows["presentation"], rows["final"],
                                         rows["redirecting"], rows["disposition"],
                                         rows["received"], strict=True)]
    D = cdrtrace.Disposition
    assert got == [
        ("+12125550101", 0, "", "", D.ANSWERED, True),
        ("+12125550102", 0, "", "", D.CANCELLED, True),      # 487 while it rang
        ("+12125550103", 0, "", "", D.BUSY, False),          # 486 never rang
        ("+12125550104", 0, "", "", D.NO_ANSWER, True),      # 603: rang, declined
        ("+12125550105", 0, "", "", D.NO_ANSWER, True),      # 480 after ringing
        ("+12125550106", 1, "", "", D.ANSWERED, True),       # PAI over From, Privacy: id
        ("+12125550107", 0, "+13035550110", "+13035550199", D.ANSWERED, True),   # forwarded
        ("+12125550110", 0, "", "", D.CANCELLED, False),     # 487 before it rang (`rang` empty)
        ("+12125550111", 0, "", "", D.NO_ANSWER, False),     # 480 at once: do not disturb
        ("+12125550108", 0, "", "", D.UNALLOCATED, False),   # 404: offline
        ("+12125550109", 0, "", "", D.FAILED, False),        # 302: redirected, never rang
        ("+12125550112", 0, "", "", D.BUSY, True),           # 180, then 486: its user rejected it
    ]


def test_kamailio_records_from_before_rang_was_logged_are_read_as_they_are():
    """The sample's records without their last column (13 columns, as the configuration
    wrote them before `rang`): every one read, native and reference alike; without the
    column, a 487 or a 480 counts as received (nothing says it did not ring), and a 486
    as never rung (nothing says it did)."""
    from cdrtrace.parsing.numbers import format_number

    data = b"".join(line.rsplit(b"|", 1)[0] + b"\n" for line in
                    (SAMPLES / "kamailio" / "acc_cdrs.log").read_bytes().splitlines())
    form = parsers.get_format("kamailio")
    rows, rejects = parse_all(data, parser=parsers.make_parser(form, "UTC"))
    sip_codes, presentations = form.vocabularies()
    assert (rows, rejects) == parse_all(data, parser=twin.CdrParser(
        form.dialect(), "UTC", dispositions=sip_codes, presentations=presentations))
    assert rejects == [] and len(rows) == 12
    received = {format_number(r["calling"]): bool(r["received"]) for r in rows}
    assert [c for c, rang in received.items() if rang] == [
        "+12125550101", "+12125550102", "+12125550104", "+12125550105", "+12125550106",
        "+12125550107", "+12125550110", "+12125550111"]


@pytest.mark.parametrize("fmt", sorted(OTHER))
def test_other_format_samples(tmp_path, fmt):
    name, zone, records, rejected, traces = OTHER[fmt]
    store = cdrtrace.open(tmp_path / "s", create=True)
    path = SAMPLES / name
    summary = cdrtrace.ingest(store, [str(path)], fmt=fmt, zone=zone,
                              rejects_path=tmp_path / "r.jsonl")
    assert (summary.records, summary.rejected) == (records, len(rejected))
    written = tmp_path / "r.jsonl"         # written only when a record was rejected
    got = [json.loads(x) for x in written.read_text().splitlines()] if written.exists() else []
    assert [(r["record"], r["reason"]) for r in got] == rejected
    data = path.read_bytes()
    for r in got:   # the offset points at the rejected record's own bytes
        assert data[r["offset"]:].startswith(base64.b64decode(r["raw_b64"])[:20])
    assert detect_format(data[:65536]) == fmt
    assert cdrtrace.ingest(store, [str(path)], fmt="auto", zone=zone).skipped == [str(path)]
    for line, expected in traces.items():
        result = store.trace(line, at=TRACE_AT.get(fmt, AT))
        assert (result.outcome.value, result.call_time) == expected, line


def test_the_freeswitch_sample_on_a_feed_that_writes_both_legs(tmp_path):
    """The sample's A legs, ingested into a feed that has shown it writes B legs too
    (the sample's own calls all come after): each line's last call is named."""
    store = cdrtrace.open(tmp_path / "s", create=True)
    show_freeswitch_legs(store, tmp_path)
    cdrtrace.ingest(store, [str(SAMPLES / "freeswitch" / "Master.csv")], fmt="freeswitch",
                    zone="America/Denver")
    for line, expected in FREESWITCH_NAMED.items():
        result = store.trace(line, at=AT)
        assert (result.outcome.value, result.call_time) == expected, line
    assert store.trace("3035550113", at=AT).outcome.value == "no_call"


# ------------------------------------------------------------------ shapes seen in real files
# Built by hand after public switch files (data/samples/README.md says where each was seen);
# every expected answer below was worked out from the records, by the rules.

def real_store(tmp_path, name, fmt, **settings):
    store = cdrtrace.open(tmp_path / "s", create=True, **settings)
    summary = cdrtrace.ingest(store, [str(SAMPLES / "real" / name)], fmt=fmt,
                              rejects_path=tmp_path / "r.jsonl")
    return store, summary


def traced(store, line, at):
    result = store.trace(line, at=at)
    record = store.trace_records(line, analyst="cic")[-1]
    call = record["call"] or {}
    return result.outcome.value, call.get("start"), call.get("calling"), call.get("answered")


def test_real_asterisk_ring_groups_with_russian_callers(tmp_path):
    store, summary = real_store(tmp_path, "asterisk-ring-groups-ru.csv", "auto",
                                zone="Asia/Irkutsk", country_code=7)
    assert (summary.records, summary.rejected) == (14, 0)
    # 301 rang in the unanswered ring group at 09:20 (through Local/ch1), the caller wrote
    # 810 7 924...; it answered the one at 09:40 (Local half, then the bridged record)
    assert traced(store, "301", "2024-02-05T09:30:00+08:00") == (
        "success", "2024-02-05T01:20:00Z", "+79241110003", False)
    assert traced(store, "301", "2024-02-05T10:00:00+08:00") == (
        "success", "2024-02-05T01:40:00Z", "+79241110004", True)
    # the same caller at 10:30 with the trunk prefix 8: one origin, two traced calls
    assert traced(store, "301", "2024-02-05T11:00:00+08:00") == (
        "success", "2024-02-05T02:30:00Z", "+79241110003", False)
    progress = {p.label: p.traced_calls for p in store.status("301").progress}
    assert progress == {"Caller A": 2, "Caller B": 1}
    # the DID: its Dial legs (301 unanswered, the trunk answered) are one answered call;
    # the busy record at 10:00 never rang
    assert traced(store, "411553", "2024-02-05T09:10:00+08:00") == (
        "success", "2024-02-05T01:03:20Z", "+79241110002", True)
    assert traced(store, "411553", "2024-02-05T11:00:00+08:00") == (
        "success", "2024-02-05T01:40:00Z", "+79241110004", True)
    # an IVR that answered and hung up rang no line
    assert traced(store, "411474", "2024-02-05T11:00:00+08:00")[0] == "no_call"


def test_real_asterisk_custom_with_sip_users(tmp_path):
    store, summary = real_store(tmp_path, "asterisk-custom-sip-users.csv", "auto")
    assert (summary.records, summary.rejected) == (4, 0)
    assert traced(store, "6001", "2023-08-01T10:07:00Z") == (
        "success", "2023-08-01T10:00:00Z", "alice", True)
    assert traced(store, "6001", "2023-08-01T10:30:00Z") == (
        "success", "2023-08-01T10:10:00Z", "alice", False)
    assert traced(store, "6002", "2023-08-01T10:10:00Z") == (
        "success", "2023-08-01T10:05:00Z", "bob", False)
    assert traced(store, "6002", "2023-08-01T10:30:00Z")[0] == "untraceable"     # anonymous
    assert [p.traced_calls for p in store.status("6001").progress] == [2]       # one origin


def test_real_asterisk_queue_answered_by_the_queue_not_the_line(tmp_path):
    """A call centre's Master.csv (GSM gateway trunks, a Queue): the Queue answers the
    caller's channel at once, so a call no agent picked up is NO ANSWER with an answer
    time; the uniqueid column is empty; userfield repeats the DID."""
    store, summary = real_store(tmp_path, "asterisk-queue-ua.csv", "auto",
                                zone="Europe/Kyiv", country_code=380)
    assert (summary.records, summary.rejected) == (3, 0)
    did, before_r2 = "+380661110000", "2018-06-30T18:00:00+03:00"
    # the DID and the agent whose phone rang both received the 17:59:35 call; the line
    # did not answer it, whatever the answer column says
    first = ("success", "2018-06-30T14:59:35Z", "+380991110001", False)
    assert traced(store, did, before_r2) == first
    assert traced(store, "8006", before_r2) == first
    # the next call, answered by agent 8007
    answered = ("success", "2018-06-30T15:05:10Z", "+380501110002", True)
    assert traced(store, did, "2018-06-30T18:10:00+03:00") == answered
    assert traced(store, "8007", "2018-06-30T18:10:00+03:00") == answered
    # the first caller again at 18:20: without a uniqueid, still a call of its own
    again = ("success", "2018-06-30T15:20:00Z", "+380991110001", False)
    assert traced(store, did, "2018-06-30T18:25:00+03:00") == again
    assert traced(store, "8006", "2018-06-30T18:25:00+03:00") == again
    assert {p.label: p.traced_calls for p in store.status(did).progress} == {
        "Caller A": 2, "Caller B": 1}
    # the DID written nationally (trunk prefix 0) is the same line: that call is traced
    assert traced(store, "0661110000", "2018-06-30T18:30:00+03:00")[0] == "already_traced"


def test_real_freeswitch_queue_ring_group_and_pickup_legs(tmp_path):
    store, summary = real_store(tmp_path, "freeswitch-groups-kr.csv", "auto",
                                zone="Asia/Seoul", country_code=82)
    assert (summary.records, summary.rejected) == (17, 0)
    at = "2023-10-11T{}:00+09:00".format
    # the feed shows two different legs of a call first at 08:43:13 (the queue's DID and its
    # agent's phone): the 08:30 call's legs are alike in all that is read (the phone's own
    # number, the same second), and a call before 08:43:13 is not named
    older = ("untraceable", "2023-10-10T23:30:00Z", "+82215550101", True)
    assert traced(store, "2002", at("08:55")) == older
    # the queue's A leg (answered by the queue at once) and the agent's B leg, written
    # first, are one call: started at the earliest leg, answered by the agent
    queued = ("success", "2023-10-10T23:43:13Z", "+82215550142", True)
    assert traced(store, "3000", at("08:45")) == queued
    assert traced(store, "2001", at("08:45")) == queued
    # the caller left the queue while the agent's phone rang: the agent's leg rang
    assert traced(store, "2001", at("08:55")) == (
        "success", "2023-10-10T23:50:02Z", "+82215550177", False)
    assert traced(store, "3000", at("08:55"))[:3] == (
        "success", "2023-10-10T23:50:01Z", "+82215550177")
    # the ring group rang 2001, 2002 and 2003; 2001 answered, the others lost the race
    # (LOSE_RACE): they rang, so their last call is this one, not the older caller's
    group = ("success", "2023-10-11T00:00:00Z", "+82315550123")
    assert traced(store, "2002", at("09:05")) == (*group, False)
    assert traced(store, "2003", at("09:05")) == (*group, False)
    assert traced(store, "2001", at("09:05")) == (*group, True)
    assert traced(store, "6000", at("09:05")) == (*group, True)
    assert [r["call"]["disposition"] for r in store.trace_records("2003", analyst="cic")] == [
        "answered_elsewhere"]
    # 2002 rang in the group again and 2003 picked it up with **2002 (PICKED_OFF): 2002
    # received the call; 2003's pickup was its own outgoing call, not one it received
    assert traced(store, "2002", at("09:15")) == (
        "success", "2023-10-11T00:10:01Z", "+82215550142", False)
    assert traced(store, "2003", at("09:15"))[:2] == ("already_traced", group[1])
    # nobody answered the group: each phone rang until its own ring time ran out
    # (ALLOTTED_TIMEOUT), then voicemail took the caller's leg
    again = ("success", "2023-10-11T00:20:00Z", "+82215550177", False)
    assert traced(store, "2001", at("09:25")) == again
    assert traced(store, "2003", at("09:25")) == again
    assert traced(store, "6000", at("09:25"))[:3] == again[:3]
    # 2001's callers: the queue's (once), the one who left the queue and rang the group
    # again (twice), the group's first caller (once)
    assert {p.label: p.traced_calls for p in store.status("2001").progress} == {
        "Caller A": 1, "Caller B": 2, "Caller C": 1}
    # 2002's: the group's caller and the one whose call was picked off it (the 08:30 call,
    # not named, counts for nobody)
    assert {p.label: p.traced_calls for p in store.status("2002").progress} == {
        "Caller A": 1, "Caller B": 1}


def test_real_asterisk_reject_key_is_a_call_that_may_have_rung(tmp_path):
    """A PJSIP PBX's Master.csv (Germany, callers written nationally): a user who refused a
    ringing call with the phone's reject key (486, logged BUSY 6 s after the call began),
    and a line busy at once (BUSY, 0 s). Asterisk logs no alerting: the first may have
    rung, so it is the line's last call and untraceable, never the older caller's; the
    second never rang."""
    store, summary = real_store(tmp_path, "asterisk-reject-key-de.csv", "auto",
                                zone="Europe/Berlin", country_code=49)
    assert (summary.records, summary.rejected) == (5, 0)
    # 200 at 10:05 (CET): the 10:00 call its user refused, not the 09:00 caller's
    assert traced(store, "200", "2023-11-14T10:05:00+01:00") == (
        "untraceable", "2023-11-14T09:00:00Z", "+4915112345678", False)
    record = store.trace_records("200", analyst="cic")[-1]
    assert record["call"]["disposition"] == "late_refusal" and "rang" in record["reason"]
    # 201 at 10:25: busy at 10:20 within its first second, it never rang; the 09:30 call
    assert traced(store, "201", "2023-11-14T10:25:00+01:00") == (
        "success", "2023-11-14T08:30:00Z", "+494011111111", True)
    # 200 at 10:45: the same caller's next call rang unanswered: traced, the first count
    assert traced(store, "200", "2023-11-14T10:45:00+01:00") == (
        "success", "2023-11-14T09:40:00Z", "+4915112345678", False)
    assert [p.traced_calls for p in store.status("200").progress] == [1]


def test_real_asterisk_11_ring_all_group(tmp_path):
    """A small chan_sip PBX on Asterisk 1.8/11 (France, callers written nationally), whose
    ring group 900 is Dial(SIP/6001&SIP/6002&SIP/6003,10). Its one record of a group call
    names the last phone called (dstchannel) or the one that answered; the other phones
    rang with no record of their own. Before this rule, 6001's *57 at 09:50 named
    Camille's 09:00 call: an innocent person."""
    store, summary = real_store(tmp_path, "asterisk-11-ring-all-fr.csv", "auto",
                                zone="Europe/Paris", country_code=33)
    assert (summary.records, summary.rejected) == (6, 0)
    at = "2013-03-12T{}:00+01:00".format
    # 09:40 the group rang unanswered, its record naming 6003: 6003 and the group's number
    # name the caller; 6001 and 6002 may have rung, and are held
    assert traced(store, "6003", at("09:50")) == (
        "success", "2013-03-12T08:40:00Z", "+33699887766", False)
    assert traced(store, "900", at("09:50")) == (
        "success", "2013-03-12T08:40:00Z", "+33699887766", False)
    assert traced(store, "6001", at("09:50")) == (
        "untraceable", "2013-03-12T08:00:00Z", "+33145678901", True)
    held = store.trace_records("6001", analyst="cic")[-1]
    assert held["call"]["hunt_unnamed"] == {"pilot": "900", "start": "2013-03-12T08:40:00Z",
                                            "named": "6003"}
    assert traced(store, "6002", at("09:50")) == (
        "untraceable", "2013-03-12T08:10:00Z", "+33478123456", True)
    # 10:05 6002 answered the group: its call; 6003 rang too (after its 09:40 call)
    assert traced(store, "6002", at("10:30")) == (
        "success", "2013-03-12T09:05:00Z", "+33388112233", True)
    assert traced(store, "6003", at("10:30")) == (
        "untraceable", "2013-03-12T08:40:00Z", "+33699887766", False)


def test_real_asterisk_11_queue(tmp_path):
    """A small chan_sip office on Asterisk 11 (Italy, callers written nationally), whose
    queue `assistenza` at 700 rings 201, 202 and 203 (queues.conf, ringall), cdr.conf as
    shipped. The dialplan answers the caller before Queue, so a call no member answered
    is written ANSWERED with no dstchannel; one a member answered names it. The members
    that rang are in no record. Before this rule, 201's *57 at 09:40 named Giulia's 09:00
    call: an innocent person."""
    store, summary = real_store(tmp_path, "asterisk-11-queue-it.csv", "auto",
                                zone="Europe/Rome", country_code=39)
    assert (summary.records, summary.rejected) == (6, 0)
    at = "2013-03-12T{}:00+01:00".format
    # 09:30 a caller waited 45 s in the queue and no member answered: every
    # line of the feed may have rung (no members listed for 700), and each is held
    for line, start, caller in (("201", "08:00", "+390612345678"), ("202", "08:05", "+393331234567"),
                                ("203", "08:08", "+390287654321")):
        assert traced(store, line, at("09:40")) == (
            "untraceable", f"2013-03-12T{start}:00Z", caller, True)
        held = store.trace_records(line, analyst="cic")[-1]
        assert held["call"]["hunt_unnamed"] == {"pilot": "700", "start": "2013-03-12T08:30:00Z",
                                                "named": None}
    (feed,) = store.stats()["feeds"]
    assert feed["hunt_pilots_unlisted"] == ["700"]
    # 10:00 202 answered a queue call: its call, named by the record
    assert traced(store, "202", at("10:10")) == (
        "success", "2013-03-12T09:00:00Z", "+390551234567", True)


def test_real_asterisk_13_ring_group_without_uniqueid(tmp_path):
    """A small PJSIP office on Asterisk 13 (Spain, callers written nationally), cdr_csv
    as shipped: 16 columns, no uniqueid. Its ring group 600, Dial(PJSIP/101&PJSIP/102&
    PJSIP/103,20), writes a record per phone dialled, each an id of its own. Before this
    rule each phone's record held the others': even 102, which answered the caller at
    10:00, could not trace the call (untraceable)."""
    store, summary = real_store(tmp_path, "asterisk-13-ring-group-es.csv", "auto",
                                zone="Europe/Madrid", country_code=34)
    assert (summary.records, summary.rejected) == (10, 0)
    at = "2024-05-14T{}:00+02:00".format
    # 10:00 the group rang 101, 102 and 103 together; 102 answered
    assert traced(store, "102", at("10:10")) == (
        "success", "2024-05-14T08:00:00Z", "+34698765432", True)
    for line in ("101", "103"):
        assert traced(store, line, at("10:10")) == (
            "success", "2024-05-14T08:00:00Z", "+34698765432", False)
    # the number dialled, 600, holds the three records (one call, ids of their own), and
    # all three still once the 10:30 call's have come in: named by 102's, answered (the
    # build before named the first record's, unanswered)
    assert traced(store, "600", at("10:10")) == (
        "success", "2024-05-14T08:00:00Z", "+34698765432", True)
    # 10:30 the same caller again, nobody answered: each phone's second traced call
    assert traced(store, "101", at("10:40")) == (
        "success", "2024-05-14T08:30:00Z", "+34698765432", False)
    assert {p.label: p.traced_calls for p in store.status("101").progress} == {"Caller A": 2}


def test_real_asterisk_transfers(tmp_path):
    """A small PJSIP office in Poland on Asterisk 13 (callers written nationally), cdr_csv
    with newcdrcolumns (21 columns: linkedid). At 10:00 the receptionist, 200, takes a
    caller's call and transfers it to 201 with FreePBX's attended transfer code: the
    consultation call through a Local channel from 200 at 10:02 shares the caller's
    linkedid, as does the record of the caller with 201 from the transfer (10:03), its dst
    the number dialled. 201's call is one call whose records name two callers: its trace
    fails closed (the build before named the receptionist). At 10:20 200 transfers another
    caller blind to 202, which does not answer (the caller's channel up, its record has an
    answer time)."""
    store, summary = real_store(tmp_path, "asterisk-13-transfers-pl.csv", "auto",
                                zone="Europe/Warsaw", country_code=48)
    assert (summary.records, summary.rejected) == (6, 0)
    at = "2025-03-11T{}:00+01:00".format
    record = held_from_the_customer(store, "201", at("10:10"), "225550199",
                                    "2025-03-11T09:02:00Z")
    assert record["call"]["disposition"] == "callers_differ"
    assert traced(store, "201", at("09:30")) == (
        "success", "2025-03-11T08:00:00Z", "+48601100200", True)
    assert traced(store, "200", at("10:10")) == (
        "success", "2025-03-11T09:00:00Z", "+48225550199", True)
    assert traced(store, "202", at("10:30")) == (
        "success", "2025-03-11T09:21:00Z", "+48501300400", False)
    assert traced(store, "200", at("10:30")) == (
        "success", "2025-03-11T09:20:00Z", "+48501300400", True)


def test_real_asterisk_database_export(tmp_path):
    """A FreePBX office (the Netherlands, callers written nationally) whose CDRs are in
    Asterisk's database table, exported with its column names as phpMyAdmin writes CSV
    (every value quoted): `calldate` is the start, no column holds the answer or the end.
    Read by the dialect docs/formats.md gives. At 10:00 200's user refused a ringing
    call with the reject key, 7 s in (BUSY): it may have rung, so 200's trace is
    untraceable; the build that ended each call when it began read that refusal as
    immediate and named Jan de Vries's 09:00 call. The line busy at once at 10:10 (201)
    never rang. Read as `auto` or as cdr_csv, the file is refused, naming the dialect."""
    path = SAMPLES / "real" / "asterisk-db-export-nl.csv"
    store = cdrtrace.open(tmp_path / "s", create=True, zone="Europe/Amsterdam", country_code=31)
    for fmt in ("auto", "asterisk"):       # read as cdr_csv, its columns would be misread
        with pytest.raises(cdrtrace.FormatError, match="Asterisk's database table.*dialect"):
            cdrtrace.ingest(store, [str(path)], fmt=fmt, rejects_path=tmp_path / "r.jsonl")
    assert not (tmp_path / "r.jsonl").exists()
    (tmp_path / "cdrtrace.toml").write_text(
        '[dialects.asterisk-db]\nbase = "asterisk"\nheader = true\n'
        '[dialects.asterisk-db.fields]\nstart = "calldate"\n')
    form = config.load(str(tmp_path / "cdrtrace.toml")).format("asterisk-db")
    summary = cdrtrace.ingest(store, [str(path)], fmt=form, rejects_path=tmp_path / "r.jsonl")
    assert (summary.records, summary.rejected) == (5, 0)
    at = "2026-03-02T{}:00+01:00".format
    assert traced(store, "200", at("09:50")) == (
        "success", "2026-03-02T08:00:00Z", "+31201110001", True)
    assert traced(store, "200", at("10:05")) == (
        "untraceable", "2026-03-02T09:00:00Z", "+31612345678", False)
    assert store.trace_records("200", analyst="cic")[-1]["call"]["disposition"] == "late_refusal"
    assert traced(store, "201", at("10:15")) == (
        "success", "2026-03-02T08:30:00Z", "+31611100002", True)


def test_real_freeswitch_ring_timeouts(tmp_path):
    """A PBX's phones behind DIDs, both legs logged: a phone that gave up on a ringing
    call answered it `408 Request Timeout` (RECOVERY_ON_TIMER_EXPIRE, which PBX software's
    own reports count with the unanswered calls), a softphone whose ring time ran out
    answered `503` (NORMAL_TEMPORARY_FAILURE), and a phone that sent nothing before the
    bridge's progress_timeout (PROGRESS_TIMEOUT) never rang. The template logs no
    alerting: the first two may have rung, so each is its line's last call, untraceable,
    never a success against the caller before it (the build before named Dana's and
    Priya's calls); the third never rang."""
    store, summary = real_store(tmp_path, "freeswitch-ring-timeout.csv", "auto",
                                zone="America/Chicago")
    assert (summary.records, summary.rejected) == (14, 0)
    at = "2026-03-02T{}:00-06:00".format
    timed_out = ("untraceable", "2026-03-02T16:30:00Z", "+17735550188", False)
    assert traced(store, "2001", at("10:35")) == timed_out
    assert traced(store, "3125550100", at("10:35")) == timed_out     # the DID: the same call
    record = store.trace_records("2001", analyst="cic")[-1]
    assert record["call"]["disposition"] == "late_failure"
    assert "gives up on a ringing call" in record["reason"]
    assert traced(store, "2001", at("10:20")) == (
        "success", "2026-03-02T15:00:00Z", "+13125550147", True)
    assert traced(store, "2004", at("11:05")) == (
        "untraceable", "2026-03-02T17:00:00Z", "+14085550166", False)
    assert traced(store, "2004", at("10:30")) == (
        "success", "2026-03-02T16:15:00Z", "+16505550122", True)
    # no progress before the timeout: it never rang; the caller who hung up while it rang
    assert traced(store, "2003", at("10:55")) == (
        "success", "2026-03-02T16:20:00Z", "+12245550111", False)
    assert traced(store, "2002", at("10:45")) == (
        "success", "2026-03-02T16:10:00Z", "+18155550161", True)


def test_real_freeswitch_file_rewritten_by_a_spreadsheet(tmp_path):
    store, summary = real_store(tmp_path, "freeswitch-after-spreadsheet.csv", "freeswitch")
    assert (summary.records, summary.rejected) == (3, 3)
    rejects = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rejects} == {
        "bad timestamp in column 5 (dates or numbers as a spreadsheet writes them: saved from a "
        "spreadsheet?)"}
    # the two records for 2002 still show its number and, written the spreadsheet's way,
    # their times (taken at the end of the minute): they fail closed
    assert summary.unreadable == 2
    assert traced(store, "2002", "2021-03-04T09:09:00Z")[:2] == ("untraceable", "2021-03-04T09:07:59Z")
    assert traced(store, "2002", "2021-03-04T10:00:00Z")[:2] == ("untraceable", "2021-03-04T09:10:59Z")


def test_the_cucm_hunt_group_sample(tmp_path):
    """A cluster with 'Show Line Group Member DN in finalCalledPartyNumber CDR Field' off
    (its default): the 14:30 call to hunt pilot 2000 was answered on 3002's phone, the
    14:40 one rang 3001's and was abandoned (destDeviceName names the phones, the numbers
    name the pilot alone), the 14:45 one found every member busy. No member of 2000 is
    listed, so each line whose last call is older than 14:40 is held; 3004's call came
    after, and the pilot's own line names its last call that rang."""
    store = cdrtrace.open(tmp_path / "s", create=True)
    summary = cdrtrace.ingest(store, [str(SAMPLES / "cucm" / "cdr_HuntCluster_01_202603021500_1")],
                              fmt="auto")
    assert (summary.records, summary.rejected, summary.markers) == (8, 0, 2)
    expected = {"3001": ("untraceable", None), "3002": ("untraceable", None),
                "3003": ("untraceable", None), "3004": ("success", "2026-03-02T14:50:00Z"),
                "2000": ("success", "2026-03-02T14:40:00Z"), "3009": ("no_call", None)}
    for line, outcome in expected.items():
        result = store.trace(line, at="2026-03-02T15:00:00Z")
        assert (result.outcome.value, result.call_time) == outcome, line
    (record,) = store.trace_records("3001", analyst="cic")
    assert record["call"]["hunt_unnamed"] == {"pilot": "2000", "start": "2026-03-02T14:30:00Z",
                                              "named": None}
    store.close()


def test_the_cucm_transfer_sample(tmp_path):
    """A cluster's transfers in the shapes of Cisco's CDR guide (its transfer examples):
    the harasser's 14:00 call to the receptionist 3001, her 14:02 consultation call to
    3002 and the final call between the harasser and 3002 (dated at the harasser's
    origination, under the original call's id, 3001 its last redirecting party); a 15:00
    call to 3001 she transferred blind to 3003 at 15:01 (the consultation call split while
    it rang, the final call dated at the transfer, under the consultation's id). The
    consultation and final records carry the target's leg (destLegIdentifier): one call
    to the target, which the final record names. 3002 names the harasser (the build
    before named the receptionist, its newest record by start the consultation call);
    3001 and 3003 name the 15:00 caller, through the final record (its start, 15:01)."""
    store = cdrtrace.open(tmp_path / "s", create=True)
    summary = cdrtrace.ingest(store, [str(SAMPLES / "cucm" / "cdr_TransferCluster_01_202603021600_1")],
                              fmt="auto")
    assert (summary.records, summary.rejected, summary.markers) == (8, 0, 2)
    expected = {"3002": ("2026-03-02T14:00:00Z", "+17205550199"),
                "3001": ("2026-03-02T15:01:00Z", "+17205550188"),
                "3003": ("2026-03-02T15:01:00Z", "+17205550188")}
    for line, (start, caller) in expected.items():
        result = store.trace(line, at="2026-03-02T16:00:00Z")
        (record,) = store.trace_records(line, analyst="cic")
        assert (result.outcome.value, result.call_time, record["call"]["calling"],
                record["call"]["disposition"]) == ("success", start, caller, "answered"), line
    assert "7205550199" not in repr(store.status("3002"))
    store.close()


@pytest.mark.parametrize("fmt", ["cucm", "auto"])
def test_a_cucm_cmr_file_beside_the_cdrs_is_not_ingested(tmp_path, fmt):
    """With call diagnostics on, CUCM writes a CMR file (call management records: each
    phone's voice quality, no caller, no number dialled) beside each CDR file, and its
    header begins as a CDR file's does. A directory of both is ingested: the CDR file's
    calls are indexed, the CMR file is named as holding no calls, and the run succeeds
    (before, it stopped on the CMR file, 'cucm header lacks the column(s) ...'). Read on
    its own (a followed file), it is refused, saying what it is."""
    folder = tmp_path / "cdr_repository"
    folder.mkdir()
    for name in ("cdr_StandAloneCluster_01_202603021403_1", "cmr_StandAloneCluster_01_202603021403_1"):
        (folder / name).write_bytes((SAMPLES / "cucm" / name).read_bytes())
    store = cdrtrace.open(tmp_path / "s", create=True)
    summary = cdrtrace.ingest(store, [str(folder)], fmt=fmt)
    cmr = str(folder / "cmr_StandAloneCluster_01_202603021403_1")
    assert summary.no_calls == [{"source": cmr, "reason": "a CUCM CMR file (call management "
                                 "records: voice quality, no calls)"}]
    assert (summary.sources, summary.failed, summary.rejected) == (1, [], 1)
    result = store.trace("3035550110", at="2026-03-02T15:00:00Z")
    assert (result.outcome.value, result.call_time) == ("success", "2026-03-02T14:03:00Z")
    store.close()
    with pytest.raises(cdrtrace.ParseError, match="is a CUCM CMR file .* read the cdr_ files"):
        parsers.read_header(parsers.get_format("cucm"), (SAMPLES / "cucm" / Path(cmr).name)
                            .read_bytes(), cmr)
    assert not parsers.cucm_cmr((SAMPLES / "cucm" / "cdr_StandAloneCluster_01_202603021403_1")
                                .read_bytes())
