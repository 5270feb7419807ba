"""A call to a hunt group (docs/trace-rules.md, "A call to a hunt group").

Cisco UCM writes one record for a call to a hunt pilot, and it names the pilot and at
most the member that answered, never the members' phones that rang unanswered. Its CDR
guide's hunt list examples: phone 1000 calls hunt pilot 2000, whose hunt list holds
3001-3004; the call is offered at 3001.
- answered, 'Show Line Group Member DN in finalCalledPartyNumber CDR Field' off (the
  default): originalCalledPartyNumber 2000, finalCalledPartyNumber 2000, huntPilotDN 2000;
- answered, that parameter on: finalCalledPartyNumber 3001, huntPilotDN 2000;
- not answered (abandoned): finalCalledPartyNumber 2000, huntPilotDN empty,
  calledPartyPatternUsage 7 (PATTERN_HUNT_PILOT).
In each, 3001's phone rang. A *57 from 3001 that passed over that call would name the
caller of an older call to 3001: an innocent person. Such a trace fails closed.
"""
from __future__ import annotations

import numpy as np
import pytest

import cdrtrace
from cdrtrace.config import Feed
from cdrtrace.parsing import formats, numbers
from cdrtrace.parsing.parsers import get_format, make_parser, read_header
from cdrtrace.parsing.reference import CdrParser as Reference
from conftest import held_from_the_customer

T14 = 1772460000            # 2026-03-02T14:00:00Z
AT = "2026-03-02T15:00:00Z"
NAMES = formats.CUCM_RELEASES[129]
INNOCENT, HARASSER = "7205550100", "7205550199"


def call(call_id: int, start: int, caller: str, original: str, final: str | None = None, *,
         answered: bool = True, dest_cause: str = "16", hunt_pilot: str = "",
         pattern: str = "2") -> dict:
    """A CUCM record (release 11's 129 fields): answered after 5 s, or cleared by its
    caller while it rang (origCause 16, destCause 0); ended 20 s in."""
    row = dict.fromkeys(NAMES, "0")
    row.update(globalCallID_callManagerId="1", globalCallID_callId=str(call_id),
               callingPartyNumber=caller, originalCalledPartyNumber=original,
               finalCalledPartyNumber=final or original, lastRedirectDn="", comment="",
               dateTimeOrigination=str(start), dateTimeConnect=str(start + 5 if answered else 0),
               dateTimeDisconnect=str(start + 20), origCause_value="16",
               destCause_value=dest_cause if answered else "0", huntPilotDN=hunt_pilot,
               huntPilotPartition="", calledPartyPatternUsage=pattern)
    return row


def off_hook(start: int) -> dict:
    """A phone taken off hook and put back: written only with the cluster's Zero Duration
    flag on, so the feed is trusted to log calls that never connected from then on."""
    row = call(start, start, "3009", "", answered=False)
    row.update(originalCalledPartyNumber="", finalCalledPartyNumber="")
    return row


def cucm_file(tmp_path, name: str, *rows: dict) -> str:
    path = tmp_path / name
    path.write_text("\n".join([",".join(NAMES)] + [",".join(r[n] for n in NAMES)
                                                    for r in (off_hook(T14 - 3600), *rows)]) + "\n")
    return str(path)


def ingest(store, tmp_path, *rows: dict, feed: Feed | None = None) -> None:
    cdrtrace.ingest(store, [cucm_file(tmp_path, f"cdr_{rows[0]['globalCallID_callId']}", *rows)],
                    fmt=None if feed else "cucm", feed=feed)


@pytest.fixture
def store(store_either):
    return store_either     # native and reference tracers (conftest)


ANSWERED_PILOT_NAMED = dict(final="2000", hunt_pilot="2000", pattern="7")
ABANDONED = dict(final="2000", answered=False, pattern="7")


@pytest.mark.parametrize("hunt", [ANSWERED_PILOT_NAMED, ABANDONED], ids=["answered", "abandoned"])
def test_a_hunt_call_that_names_no_member_holds_every_line_of_its_feed(store, tmp_path, hunt):
    """14:00 an answered call to 3001; 14:30 a call to hunt pilot 2000 that rang 3001, its
    record naming no member. By the records alone 3001's last call is the 14:00 one: the
    trace would name its innocent caller. It is untraceable, and its record says why."""
    ingest(store, tmp_path, call(1, T14, INNOCENT, "3001"),
           call(2, T14 + 1800, HARASSER, "2000", **hunt))
    record = held_from_the_customer(store, "3001", AT, INNOCENT, "2026-03-02T14:00:00Z")
    assert record["call"]["hunt_unnamed"] == {"pilot": "2000", "start": "2026-03-02T14:30:00Z",
                                              "named": None}
    assert "hunt pilot, queue or ring group 2000 began at 2026-03-02T14:30:00Z" in record["reason"]
    assert HARASSER not in repr(store.status("3001"))


def test_the_member_a_hunt_call_names_traces_it_and_the_others_are_held(store, tmp_path):
    """With 'Show Line Group Member DN in finalCalledPartyNumber CDR Field' on, an answered
    hunt call names the member that answered (3001): its line's trace names that call.
    3002 may have rung too (a broadcast hunt, or a member tried before 3001). The record
    is known by its huntPilotDN, whatever its pattern usage says (here a directory
    number's, 2)."""
    ingest(store, tmp_path, call(1, T14, INNOCENT, "3001"), call(2, T14 + 60, INNOCENT, "3002"),
           call(3, T14 + 1800, HARASSER, "2000", "3001", hunt_pilot="2000"))
    got = store.trace("3001", at=AT)
    (record,) = store.trace_records("3001", analyst="cic")
    assert (got.outcome.value, record["call"]["calling"]) == ("success", "+17205550199")
    record = held_from_the_customer(store, "3002", AT, INNOCENT, "2026-03-02T14:01:00Z")
    assert record["call"]["hunt_unnamed"]["named"] == "3001"
    assert "(its CDR names 3001 too)" in record["reason"]


REJECTED = {"abandoned": dict(hunt=ABANDONED, pilot="2000"),
            "answered": dict(hunt=dict(final="2000", hunt_pilot="2000"), pilot="2000"),
            "pilot-unreadable": dict(hunt=dict(final="2000", hunt_pilot="2O00"), pilot="2000"),
            "pilot-beyond-dialled": dict(hunt=dict(final="2100", hunt_pilot="2100"), pilot="2100")}


@pytest.mark.parametrize("shape", REJECTED.values(), ids=REJECTED.keys())
def test_a_rejected_hunt_call_holds_the_lines_it_may_have_rung(store, tmp_path, shape):
    """The 14:30 hunt call's record cannot be read (its dateTimeConnect is no time). It is
    rejected, yet it still names a hunt pilot: by huntPilotDN (even one that is no
    number: the call came through a pilot, taken to be the line it dialled), or by
    pattern usage 7. Its members' phones may have rung, so 3001's trace does not pass
    over it to the innocent 14:00 caller."""
    bad = call(2, T14 + 1800, HARASSER, "2000", **shape["hunt"])
    bad["dateTimeConnect"] = "x17"
    ingest(store, tmp_path, call(1, T14, INNOCENT, "3001"), bad)
    record = held_from_the_customer(store, "3001", AT, INNOCENT, "2026-03-02T14:00:00Z")
    assert record["call"]["hunt_unnamed"]["pilot"] == shape["pilot"]
    assert record["call"]["hunt_unnamed"]["start"] == "2026-03-02T14:30:00Z"
    assert store.trace("2000", at=AT).outcome.value == "untraceable"    # its own line


def test_a_rejected_records_hunt_pilot_is_read_alike_by_the_native_parser_and_its_reference(tmp_path):
    """What salvage reads of each rejected record: its dialled line, no line beyond it
    unless the record names one, and the pilot its call came through (0: none)."""
    shapes = [*(shape["hunt"] for shape in REJECTED.values()), {}]
    rows = [{**call(k, T14 + 60 * k, HARASSER, "2000", **hunt), "dateTimeConnect": "x17"}
            for k, hunt in enumerate(shapes)]
    data = open(cucm_file(tmp_path, "cdr_x", *rows), "rb").read()
    form = get_format("cucm")
    header, skip = read_header(form, data)
    native, reference = make_parser(form, header=header), Reference(form.dialect(header))
    rejected = [raw for *_, raw in native.feed(data[skip:], True)[1]]
    assert len(rejected) == len(shapes)
    line, pilot_2100 = (numbers.normalize(n, 1) for n in (b"2000", b"2100"))
    for k, raw in enumerate(rejected):
        got = native.salvage(raw)
        assert got == reference.salvage(raw), raw
        assert got == (line, pilot_2100 if k == 3 else 0, (T14 + 60 * k) * 1_000_000,
                       [line, line, line, pilot_2100, 0][k], ())


def test_a_rejected_call_through_no_hunt_pilot_holds_no_other_line(store, tmp_path):
    """A rejected call to 3002 that names no hunt pilot holds 3002's line alone."""
    bad = call(2, T14 + 1800, HARASSER, "3002")
    bad["dateTimeConnect"] = "x17"
    ingest(store, tmp_path, call(1, T14, INNOCENT, "3001"), bad)
    assert store.trace("3001", at=AT).outcome.value == "success"
    assert store.trace("3002", at=AT).outcome.value == "untraceable"


def test_a_hunt_call_outside_the_window_changes_nothing(store, tmp_path):
    """A hunt call before the line's last call, or after the activation, cannot be a call
    between them: the trace names the last call as ever."""
    ingest(store, tmp_path, call(1, T14 - 600, HARASSER, "2000", **ABANDONED),
           call(2, T14, INNOCENT, "3001"),
           call(3, T14 + 3600 + 60, HARASSER, "2000", **ABANDONED))   # 15:01
    got = store.trace("3001", at=AT)
    (record,) = store.trace_records("3001", analyst="cic")
    assert (got.outcome.value, record["call"]["calling"]) == ("success", "+17205550100")


def test_a_hunt_call_that_never_rang_holds_no_line(store, tmp_path):
    """Every member busy: the call ends busy at once, and rang no phone."""
    busy = call(2, T14 + 1800, HARASSER, "2000", dest_cause="17", **ABANDONED)
    busy.update(destCause_value="17", dateTimeDisconnect=str(T14 + 1800))
    ingest(store, tmp_path, call(1, T14, INNOCENT, "3001"), busy)
    assert store.trace("3001", at=AT).outcome.value == "success"


def test_configured_members_hold_their_own_lines_alone(store, tmp_path):
    """A feed that lists a pilot's members (cdrtrace.toml's hunt_groups) holds only them:
    3003 is not a member of 2000, and its trace names its last call."""
    feed = Feed("cucm-east", get_format("cucm"),
                hunt_groups=(("2000", ("3001", "3002")), ("2100", ("3004",))))
    ingest(store, tmp_path, call(1, T14, INNOCENT, "3001"), call(2, T14 + 60, INNOCENT, "3003"),
           call(3, T14 + 1200, HARASSER, "2100", **ABANDONED),
           call(4, T14 + 1800, HARASSER, "2000", **ABANDONED), feed=feed)
    held_from_the_customer(store, "3001", AT, INNOCENT, "2026-03-02T14:00:00Z")
    assert store.trace("3003", at=AT).outcome.value == "success"


def test_stats_name_the_pilots_whose_members_are_not_listed(store, tmp_path):
    """An operator reads in `cdrtrace stats` which pilots hold every line of their feed."""
    import subprocess
    import sys
    feed = Feed("cucm-east", get_format("cucm"), hunt_groups=(("2000", ("3001",)),))
    ingest(store, tmp_path, call(1, T14, INNOCENT, "3001"),
           call(2, T14 + 1200, HARASSER, "2100", **ABANDONED),
           call(3, T14 + 1800, HARASSER, "2000", **ABANDONED), feed=feed)
    ingest(store, tmp_path, call(4, T14 + 2400, HARASSER, "2200", **ABANDONED), feed=feed)
    (east,) = store.stats()["feeds"]
    assert east["hunt_pilots_unlisted"] == ["2100", "2200"]
    shown = subprocess.run([sys.executable, "-m", "cdrtrace.cli", "stats", "--db", str(store.path)],
                           capture_output=True, text=True, check=True).stdout
    assert "HUNT PILOTS WITH NO MEMBERS LISTED (2100, 2200)" in shown


def test_a_hunt_call_of_another_feed_holds_no_line_it_never_reached(store, tmp_path):
    """An unconfigured pilot may ring any line of its own feed, not another switch's."""
    east = Feed("cucm-east", get_format("cucm"))
    west = Feed("cucm-west", get_format("cucm"))
    ingest(store, tmp_path, call(1, T14, INNOCENT, "+13035550111"), feed=east)
    ingest(store, tmp_path, call(2, T14 + 1800, HARASSER, "2000", **ABANDONED), feed=west)
    assert store.trace("3035550111", at=AT).outcome.value == "success"


def test_a_malicious_call_id_names_its_flagged_call_through_a_hunt_call(store, tmp_path):
    """A member flags a harassing call (CUCM's malicious call id, written in that call's
    own record): a hunt call that began during it rang the member, but the call flagged
    is the one its record names."""
    flagged = call(1, T14, HARASSER, "3001")
    flagged.update(dateTimeDisconnect=str(T14 + 100), comment="callFlag=MALICIOUS")
    ingest(store, tmp_path, flagged, call(2, T14 + 30, INNOCENT, "2000", **ABANDONED))
    (record,) = store.trace_records("3001", analyst="cic")
    assert (record["outcome"], record["call"]["calling"]) == ("success", "+17205550199")


def test_a_purge_of_hunt_calls_holds_the_lines_whose_last_call_is_older(store, tmp_path):
    """A purge removes the note of hunt calls older than the retention period, and with it
    what rang after such a line's last call: the trace fails closed, not open. A line
    whose last call is newer than the purge's cutoff is traced as before."""
    ingest(store, tmp_path, call(1, T14, INNOCENT, "3001"),
           call(2, T14 + 1800, HARASSER, "2000", **ABANDONED),
           call(3, T14 + 2400, INNOCENT, "3002"))
    store.purge(operator="ops", older_than_days=1, now_us=(T14 + 2100 + 86400) * 1_000_000)
    record = held_from_the_customer(store, "3001", AT, INNOCENT, "2026-03-02T14:00:00Z")
    assert record["call"]["hunt_unnamed"] == {"trimmed_to": "2026-03-02T14:35:00Z"}
    assert "a purge removed the note" in record["reason"]
    assert store.trace("3002", at=AT).outcome.value == "success"


def test_hunt_calls_are_found_alike_by_the_native_parser_and_its_reference(tmp_path):
    busy = call(6, T14 + 300, HARASSER, "2000", dest_cause="17", **ABANDONED)
    busy.update(destCause_value="17", dateTimeDisconnect=str(T14 + 300))
    rows = [call(1, T14, INNOCENT, "3001"), busy,
            call(2, T14 + 60, HARASSER, "2000", **ANSWERED_PILOT_NAMED),
            call(3, T14 + 120, HARASSER, "2000", "3001", hunt_pilot="2000", pattern="7"),
            call(4, T14 + 180, HARASSER, "2000", **ABANDONED),
            call(5, T14 + 240, HARASSER, "2000", hunt_pilot="2000 ", pattern="7"),
            call(7, T14 + 360, HARASSER, "3050", "2000", hunt_pilot="2000")]   # forwarded to it
    data = open(cucm_file(tmp_path, "cdr_x", *rows), "rb").read()
    form = get_format("cucm")
    header, skip = read_header(form, data)
    found = []
    for parser in (make_parser(form, header=header), Reference(form.dialect(header))):
        parser.feed(data[skip:], True)
        found.append(parser.take_hunts())
    native, reference = found
    assert native.dtype == reference.dtype == formats.HUNT_DTYPE
    assert np.array_equal(native, reference)
    assert list(native["start_us"] // 1_000_000 - T14) == [60, 120, 180, 240, 360]
    assert len(set(native["pilot"].tolist())) == 1 and native["pilot"][0] != 0
    assert [bool(n) for n in native["named"]] == [False, True, False, False, True]


def test_a_live_cucm_feed_notes_its_hunt_calls_and_their_configured_members(store, tmp_path):
    """A follower of a CUCM cluster notes hunt calls with its calls, as a batch ingest
    does, with the members its feed lists."""
    from cdrtrace.ingestion import following
    from cdrtrace.ingestion.live import StreamOptions
    feed = Feed("cucm-live", get_format("cucm"), hunt_groups=(("2000", ("3001",)),))
    path = cucm_file(tmp_path, "cdr_live", call(1, T14, INNOCENT, "3001"),
                     call(2, T14 + 60, INNOCENT, "3003"),
                     call(3, T14 + 1800, HARASSER, "2000", **ABANDONED))
    options = StreamOptions(batch_ms=1, poll_ms=1, heartbeat_s=0.01, idle_exit_s=0.2)
    following.follow(store, path, feed=feed, options=options)
    held_from_the_customer(store, "3001", AT, INNOCENT, "2026-03-02T14:00:00Z")
    assert store.trace("3003", at=AT).outcome.value == "success"


def test_calls_dialled_to_a_listed_pilot_are_noted_as_through_it():
    """store.hunts.dialled_to_listed against the rule: a call dialled to a listed pilot
    that may have rung (received, however it ended: a record that logs alerting shows a
    busy one rang; or answered, unanswered, unknown, late), not one that ended at once
    busy, failed or refused, nor one dialled elsewhere, nor one the parser noted."""
    from cdrtrace.store import hunts

    D = formats.Disposition
    pilot, other = numbers.normalize(b"2000", 1), numbers.normalize(b"3001", 1)
    rows = [  # called, received, disposition, call id
        (pilot, True, D.BUSY, 1),           # it rang, then the member was busy: noted
        (pilot, False, D.ANSWERED, 2),      # voicemail answered, no phone named: noted
        (pilot, False, D.LATE_FAILURE, 3),  # noted
        (pilot, False, D.BUSY, 4),          # busy at once
        (pilot, False, D.REJECTED, 5),
        (other, True, D.ANSWERED, 6),       # not a pilot
        (pilot, True, D.NO_ANSWER, 7),      # the parser noted it
    ]
    columns = {"called": np.array([r[0] for r in rows], np.uint64),
               "received": np.array([r[1] for r in rows]),
               "disposition": np.array([r[2] for r in rows], np.uint8),
               "call_id": np.array([r[3] for r in rows], np.uint64),
               "start_us": np.arange(len(rows), dtype=np.int64) * 1_000_000,
               "final": np.full(len(rows), other, np.uint64)}
    noted = np.zeros(1, formats.HUNT_DTYPE)
    noted["call_id"] = 7
    calls = hunts.dialled_to_listed(columns, {pilot: (other,)}, noted)
    assert calls["call_id"].tolist() == [1, 2, 3]
    assert calls["pilot"].tolist() == [pilot] * 3 and calls["named"].tolist() == [other] * 3
    assert calls["start_us"].tolist() == [0, 1_000_000, 2_000_000]
    assert calls["members"].tolist() == [0, 0, 0]


@pytest.mark.parametrize("name, groups", [
    ("asterisk", True), ("asterisk-custom", True), ("cucm", True), ("freeswitch", False),
    ("broadworks", False), ("kamailio", False), ("kamailio-acc", False), ("kamailio-dbtext", False)])
def test_which_formats_write_one_record_of_a_group_call(name, groups):
    """Cisco UCM (a hunt pilot's call) and Asterisk (a Dial to several phones, Dials in
    turn, a Queue) may write one record naming at most one phone rung; FreeSWITCH writes
    a B leg per phone, Kamailio a row per branch's transaction, BroadWorks a record per
    user alerted. A dialect that reads CUCM's pattern usage alone notes calls too."""
    import dataclasses

    assert get_format(name).groups_in_one_record() is groups
    cucm = get_format("cucm")
    pattern_only = {role: column for role, column in cucm.roles.items() if role != "hunt"}
    assert dataclasses.replace(cucm, roles=pattern_only).groups_in_one_record()


@pytest.mark.parametrize("live", [False, True], ids=["batch", "live"])
def test_a_freeswitch_feeds_listed_group_holds_nothing(tmp_path, live):
    """A FreeSWITCH feed whose cdrtrace.toml lists ring group 2000 (2001, 2002): its
    records name each phone rung (a B leg each), so the 09:30 call to 2000, whose one B
    leg rang 2001, did not ring 2002, whose trace names its own last call."""
    from conftest import FS_TWO_LEGS

    feed = Feed("fs", get_format("freeswitch"), hunt_groups=(("2000", ("2001", "2002")),))
    rows = (b'"Pat","7205550100","2002","public","2026-03-02 09:00:00","2026-03-02 09:00:05",'
            b'"2026-03-02 09:02:00","120","115","NORMAL_CLEARING","inno-a","","","PCMU","PCMU"\n'
            b'"Sam","7205550199","2000","public","2026-03-02 09:30:00","2026-03-02 09:30:06",'
            b'"2026-03-02 09:31:00","60","54","NORMAL_CLEARING","grp-a","grp-b","","PCMU","PCMU"\n'
            b'"Sam","7205550199","2001","default","2026-03-02 09:30:01","2026-03-02 09:30:06",'
            b'"2026-03-02 09:31:00","59","54","NORMAL_CLEARING","grp-b","","","PCMU","PCMU"\n')
    path = tmp_path / "Master.csv"
    path.write_bytes(FS_TWO_LEGS + rows)
    with cdrtrace.open(tmp_path / "store", create=True) as s:
        if live:
            from cdrtrace.ingestion import following
            from cdrtrace.ingestion.live import StreamOptions
            following.follow(s, str(path), feed=feed, options=StreamOptions(
                batch_ms=1, poll_ms=1, heartbeat_s=0.01, idle_exit_s=0.2))
        else:
            cdrtrace.ingest(s, [str(path)], feed=feed)
        assert s.trace("2001", at=AT).outcome.value == "success"
        result = s.trace("2002", at=AT)
        assert result.outcome.value == "success", s.trace_records("2002", analyst="cic")
        assert s.trace_records("2002", analyst="cic")[-1]["call"]["calling"] == "+17205550100"
