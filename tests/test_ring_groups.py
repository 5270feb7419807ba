"""An Asterisk Dial to several phones at once (docs/trace-rules.md, "A call to a hunt group").

`Dial(SIP/301&SIP/302&SIP/303,20)` rings the three phones together. Asterisk up to 11
writes one record for it: the caller's channel, `dstchannel` set to each phone in turn as
it is called, and left at the last one called (or at the one that answered); the dialled
phones' own records are never posted (cdr.c: "don't post CDRs that are for dialed
channels"). Phones 301 and 303 rang with no record naming them, and a *57 from 301 that
passed over the call would name the caller of an older one: an innocent person. The
record's `lastdata` still names every phone dialled. Asterisk 12 and later write a
record per phone dialled, each with the same `uniqueid`: each phone's own record names
its call.
"""
from __future__ import annotations

import numpy as np
import pytest

import cdrtrace
from cdrtrace.config import Feed
from cdrtrace.parsing import formats, numbers
from cdrtrace.parsing.parsers import get_format, make_parser
from cdrtrace.parsing.reference import CdrParser as Reference
from conftest import held_from_the_customer

AT = "2026-03-02T10:00:00Z"
INNOCENT, HARASSER = "7205550100", "7205550199"


def record(caller: str, dst: str, dstchannel: str, data: str, start: str, *, answered: bool = False,
           disposition: str | None = None, seconds: int = 20, uniqueid: str = "1772442600.7",
           app: str = "Dial") -> str:
    """One row of Master.csv (18 columns), begun at 2026-03-02 `start` (UTC)."""
    hh, mm = (int(x) for x in start.split(":"))
    end = f"2026-03-02 {hh:02d}:{mm + seconds // 60:02d}:{seconds % 60:02d}"
    answer = f'"2026-03-02 {hh:02d}:{mm:02d}:05"' if answered else ""
    disposition = disposition or ("ANSWERED" if answered else "NO ANSWER")
    return (f'"","{caller}","{dst}","from-pstn","""Caller"" <{caller}>","PJSIP/trunk-00000001",'
            f'"{dstchannel}","{app}","{data}","2026-03-02 {hh:02d}:{mm:02d}:00",{answer},"{end}",'
            f'{seconds},{seconds - 5 if answered else 0},"{disposition}","DOCUMENTATION","{uniqueid}",""')


OLDER = [record(INNOCENT, "301", "SIP/301-00000001", "SIP/301,20", "09:00", answered=True,
                uniqueid="1772442000.1"),
         record(INNOCENT, "302", "SIP/302-00000002", "SIP/302,20", "09:05", answered=True,
                uniqueid="1772442300.2"),
         record(INNOCENT, "303", "SIP/303-00000003", "SIP/303,20", "09:10", answered=True,
                uniqueid="1772442600.3")]
GROUP = "SIP/301&SIP/302&SIP/303,20,tT"


@pytest.fixture
def store(store_either):
    return store_either     # native and reference tracers (conftest)


def ingest(store, tmp_path, *rows: str):
    path = tmp_path / "Master.csv"
    path.write_text("\n".join(rows) + "\n")
    return cdrtrace.ingest(store, [str(path)], fmt="asterisk")


def traced(store, line: str) -> tuple[str, str | None]:
    result = store.trace(line, at=AT)
    record_ = store.trace_records(line, analyst="cic")[-1]
    return result.outcome.value, (record_["call"] or {}).get("calling")


def test_one_record_of_a_dial_to_several_phones_holds_the_phones_it_does_not_name(store, tmp_path):
    """Asterisk 11: the 09:30 group call rang 301, 302 and 303 unanswered; its one record
    names 303, the last phone called. 303's trace names the harasser; 301's and 302's
    last recorded calls are older (the innocent caller's): untraceable, never a success
    against them."""
    ingest(store, tmp_path, *OLDER, record(HARASSER, "600", "SIP/303-00000004", GROUP, "09:30"))
    assert traced(store, "303") == ("success", "+17205550199")
    assert traced(store, "600") == ("success", "+17205550199")
    for line, start in (("301", "09:00"), ("302", "09:05")):
        held = held_from_the_customer(store, line, AT, INNOCENT, f"2026-03-02T{start}:00Z")
        assert held["call"]["hunt_unnamed"] == {"pilot": "600", "start": "2026-03-02T09:30:00Z",
                                                "named": "303"}
        assert "ring group 600 began at 2026-03-02T09:30:00Z" in held["reason"]
        assert "Asterisk up to 11" in held["reason"]
        assert HARASSER not in repr(store.status(line))


def test_the_phone_that_answered_is_named_and_the_others_are_held(store, tmp_path):
    """302 answered the group call: the record names it (dstchannel), ANSWERED. 301 and
    303 rang too."""
    ingest(store, tmp_path, *OLDER,
           record(HARASSER, "600", "SIP/302-00000005", GROUP, "09:30", answered=True))
    assert traced(store, "302") == ("success", "+17205550199")
    held_from_the_customer(store, "301", AT, INNOCENT, "2026-03-02T09:00:00Z")
    held_from_the_customer(store, "303", AT, INNOCENT, "2026-03-02T09:10:00Z")


def test_a_record_per_phone_dialled_names_each_phones_call(store, tmp_path):
    """Asterisk 12 and later: a record per phone dialled, the same uniqueid, the same
    lastdata. Each phone's own record is its line's last call, and the group call is
    traced from each; a phone with no record of its own (303, not reachable) is held."""
    group = [record(HARASSER, "600", f"SIP/{phone}-0000000{k}", GROUP, "09:30", uniqueid="1772443800.9")
             for k, phone in enumerate(("301", "302"), 5)]
    ingest(store, tmp_path, *OLDER, *group)
    assert traced(store, "301") == ("success", "+17205550199")
    assert traced(store, "302") == ("success", "+17205550199")
    held_from_the_customer(store, "303", AT, INNOCENT, "2026-03-02T09:10:00Z")


def sixteen(row: str) -> str:
    """The row as cdr_csv writes it as shipped (no loguniqueid, no loguserfield): 16
    columns, no uniqueid, so each record has an id of its own."""
    return row.rsplit(",", 2)[0]


OTHER = "7205550177"


def test_records_per_phone_with_no_uniqueid_are_one_call(store, tmp_path):
    """Asterisk 12+ with cdr_csv as shipped: a record per phone dialled, none with a
    uniqueid. The record naming 302 began with 301's, from the same caller: it is the
    same call, and 301's trace names it; 303, which has none, is held."""
    group = [sixteen(record(HARASSER, "600", f"SIP/{phone}-0000000{k}", GROUP, "09:30"))
             for k, phone in enumerate(("301", "302"), 5)]
    ingest(store, tmp_path, *OLDER, *group)
    assert traced(store, "301") == ("success", "+17205550199")
    assert traced(store, "302") == ("success", "+17205550199")
    held_from_the_customer(store, "303", AT, INNOCENT, "2026-03-02T09:10:00Z")


def group_records(phones, answered: str | None = None) -> list[str]:
    """The 09:30 group call's records per phone as cdr_csv writes them as shipped (16
    columns: each an id of its own), all dialled to 600; `answered` the phone that took it."""
    return [sixteen(record(HARASSER, "600", f"SIP/{phone}-0000000{k}", GROUP, "09:30",
                           answered=phone == answered))
            for k, phone in enumerate(phones, 5)]


@pytest.mark.parametrize("order", [("301", "302", "303"), ("303", "302", "301"),
                                   ("302", "301", "303")])
def test_the_number_dialled_names_the_record_that_says_the_call_was_answered(
        store, tmp_path, order):
    """Each record of the group call is indexed under the number dialled, 600, at one
    instant, from one caller: one call. 302 answered it. The evidence of 600's trace
    names the call as answered, whichever record the index ranks first."""
    ingest(store, tmp_path, *group_records(order, answered="302"))
    assert store.trace("600", at=AT).outcome.value == "success"
    call = store.trace_records("600", analyst="cic")[-1]["call"]
    assert (call["calling"], call["answered"], call["disposition"]) == (
        "+17205550199", True, "answered")


def test_a_trace_of_one_record_of_a_call_has_named_the_call_for_its_others(store, tmp_path):
    """The records of the phones that did not answer come in first (Asterisk writes each
    leg's record as it ends), and 600's trace names the call by one of them. The record
    of 302, which answered, comes in later: a second trace names the same call, so it is
    already traced, and the caller counts once toward action."""
    path = tmp_path / "Master.csv"
    early, late = group_records(("301", "303")), group_records(("302",), answered="302")
    path.write_text("\n".join(early) + "\n")
    cdrtrace.ingest(store, [str(path)], fmt="asterisk")
    assert store.trace("600", at=AT).outcome.value == "success"
    with path.open("a") as f:
        f.write("\n".join(late) + "\n")
    cdrtrace.ingest(store, [str(path)], fmt="asterisk")
    assert store.trace("600", at=AT).outcome.value == "already_traced"
    assert [p.traced_calls for p in store.status("600").progress] == [1]
    assert store.trace_records("600", analyst="cic")[-1]["call"]["answered"] is True


def test_another_callers_group_call_in_the_same_second_holds_the_line(store, tmp_path):
    """With no uniqueid, a group call is told from another by its caller and start: one
    from another caller in the same second, its record naming 302, may have rung 301
    after 301's own record of the 09:30 call: 301 is held, with that call."""
    ingest(store, tmp_path, *OLDER, sixteen(record(HARASSER, "600", "SIP/301-00000005", GROUP, "09:30")),
           sixteen(record(OTHER, "600", "SIP/302-00000006", GROUP, "09:30")))
    held = held_from_the_customer(store, "301", AT, HARASSER, "2026-03-02T09:30:00Z")
    assert held["call"]["hunt_unnamed"] == {"pilot": "600", "start": "2026-03-02T09:30:00Z",
                                            "named": "302"}


def test_an_unknown_callers_records_per_phone_hold_each_other(store, tmp_path):
    """With no uniqueid and no caller's number ('anonymous'), the records cannot tell
    one call from two in the same second: each phone is held (fail closed)."""
    group = [sixteen(record("anonymous", "600", f"SIP/{phone}-0000000{k}", GROUP, "09:30"))
             for k, phone in enumerate(("301", "302"), 5)]
    ingest(store, tmp_path, *OLDER, *group)
    for line in ("301", "302"):
        result = store.trace(line, at=AT)
        assert (result.outcome.value, result.call_time) == ("untraceable", None)


def test_the_same_callers_later_group_call_holds_the_line(store, tmp_path):
    """The same caller's group call ten minutes later, its one record naming 302, may
    have rung 301 after 301's record of the first: 301 is held, with the later call."""
    ingest(store, tmp_path, *OLDER, sixteen(record(HARASSER, "600", "SIP/301-00000005", GROUP, "09:30")),
           sixteen(record(HARASSER, "600", "SIP/302-00000006", GROUP, "09:40")))
    held = held_from_the_customer(store, "301", AT, HARASSER, "2026-03-02T09:30:00Z")
    assert held["call"]["hunt_unnamed"] == {"pilot": "600", "start": "2026-03-02T09:40:00Z",
                                            "named": "302"}


@pytest.mark.parametrize("data, disposition, seconds", [
    ("SIP/301,20", "NO ANSWER", 20),                                # one phone: it is named
    (GROUP, "BUSY", 0),                                             # every phone busy: none rang
    ("Local/301@from-internal/n&Local/302@from-internal/n,20", "NO ANSWER", 20),
    ("DAHDI/g1/5551234&SIP/trunk/5559999,20", "NO ANSWER", 20),     # no phone of a line
], ids=["one-phone", "busy", "local-channels", "trunks"])
def test_a_dial_that_names_no_other_phone_of_a_line_holds_none(store, tmp_path, data, disposition,
                                                                seconds):
    """A Local channel runs the dialplan, whose own record names the phone it rang; a
    trunk's device names no line; a busy group rang no phone."""
    ingest(store, tmp_path, *OLDER, record(HARASSER, "600", "SIP/302-00000005", data, "09:30",
                                           disposition=disposition, seconds=seconds))
    assert traced(store, "301") == ("success", "+17205550100")
    assert traced(store, "303") == ("success", "+17205550100")


def ingest_fed(store, tmp_path, *rows: str, groups=(("600", ("301", "302", "303")),)):
    """As ingest, through a feed whose cdrtrace.toml lists group 600's members."""
    path = tmp_path / "Master.csv"
    path.write_text("\n".join(rows) + "\n")
    return cdrtrace.ingest(store, [str(path)], feed=Feed("pbx", get_format("asterisk"),
                                                         hunt_groups=groups))


def test_a_call_to_a_listed_group_holds_its_members_whatever_its_record_names(store, tmp_path):
    """`exten => 600,1,Dial(SIP/301,15)`, then `Dial(SIP/302,15)`, then `VoiceMail(600)`:
    Asterisk up to 11 writes one record, naming 302 (the last Dial's dstchannel) and
    VoiceMail, its lastdata no longer the Dials'. 301 rang first. The feed lists 600's
    members: 301 and 303 are held, 302 names the call."""
    ingest_fed(store, tmp_path, *OLDER,
               record(HARASSER, "600", "SIP/302-00000005", "600@default,u", "09:30", answered=True,
                      app="VoiceMail"))
    assert traced(store, "302") == ("success", "+17205550199")
    held = held_from_the_customer(store, "301", AT, INNOCENT, "2026-03-02T09:00:00Z")
    assert held["call"]["hunt_unnamed"] == {"pilot": "600", "start": "2026-03-02T09:30:00Z",
                                            "named": "302"}
    held_from_the_customer(store, "303", AT, INNOCENT, "2026-03-02T09:10:00Z")


@pytest.mark.parametrize("disposition, seconds, held", [
    ("ANSWERED", 40, True),      # voicemail answered after the queue timed out
    ("NO ANSWER", 40, True),     # cdr.conf's unanswered = yes
    ("BUSY", 0, False),          # every member busy at once: none rang
    ("FAILED", 0, False),
], ids=["voicemail", "no-answer", "busy-at-once", "failed-at-once"])
def test_a_call_to_a_listed_group_that_names_no_phone(store, tmp_path, disposition, seconds, held):
    """`Queue(support)` in 600, then `VoiceMail(600)` when it timed out: the record names
    no phone (dstchannel empty) and no Queue (lastapp VoiceMail)."""
    ingest_fed(store, tmp_path, *OLDER,
               record(HARASSER, "600", "", "600@default,u", "09:30", answered=disposition == "ANSWERED",
                      disposition=disposition, seconds=seconds, app="VoiceMail"))
    if held:
        held_from_the_customer(store, "301", AT, INNOCENT, "2026-03-02T09:00:00Z")
    else:
        assert traced(store, "301") == ("success", "+17205550100")


def test_a_rejected_record_of_a_call_to_a_listed_group_holds_its_members(store, tmp_path):
    """The queue-then-voicemail call's record cannot be read (its answer time is no
    time): it was still dialled to 600, whose members the feed lists."""
    summary = ingest_fed(store, tmp_path, *OLDER, rejected(
        record(HARASSER, "600", "", "600@default,u", "09:30", app="VoiceMail")))
    assert (summary.records, summary.rejected) == (4, 1)
    held = held_from_the_customer(store, "301", AT, INNOCENT, "2026-03-02T09:00:00Z")
    assert held["call"]["hunt_unnamed"] == {"pilot": "600", "start": "2026-03-02T09:30:00Z",
                                            "named": None}


def test_a_dial_names_its_members_over_the_listed_ones(store, tmp_path):
    """The record's own Dial names 301 and 302 of the listed 301-303: 303 did not ring."""
    ingest_fed(store, tmp_path, *OLDER,
               record(HARASSER, "600", "SIP/302-00000005", "SIP/301&SIP/302,20", "09:30"))
    held_from_the_customer(store, "301", AT, INNOCENT, "2026-03-02T09:00:00Z")
    assert traced(store, "303") == ("success", "+17205550100")


def test_dial_arguments_as_asterisk_1_4_wrote_them(store, tmp_path):
    """Asterisk 1.4 separated an application's arguments with '|'."""
    ingest(store, tmp_path, *OLDER,
           record(HARASSER, "600", "SIP/303-00000004", "SIP/301&SIP/303|20|tT", "09:30"))
    held_from_the_customer(store, "301", AT, INNOCENT, "2026-03-02T09:00:00Z")
    assert traced(store, "302") == ("success", "+17205550100")


def rejected(row: str) -> str:
    """The row with an answer time that is no time: rejected, its fields in place."""
    return row.replace('"2026-03-02 09:30:00",,', '"2026-03-02 09:30:00",x,')


def test_a_rejected_record_of_a_dial_to_several_phones_holds_them(store, tmp_path):
    """The group call's record cannot be read: it still names the phones it dialled, and
    only those (304 was not dialled)."""
    other = record(INNOCENT, "304", "SIP/304-00000009", "SIP/304,20", "09:20", answered=True,
                   uniqueid="1772443200.4")
    summary = ingest(store, tmp_path, *OLDER, other,
                     rejected(record(HARASSER, "600", "SIP/303-00000004", GROUP, "09:30")))
    assert (summary.records, summary.rejected) == (5, 1)
    assert traced(store, "304") == ("success", "+17205550100")
    held = held_from_the_customer(store, "301", AT, INNOCENT, "2026-03-02T09:00:00Z")
    assert held["call"]["hunt_unnamed"] == {"pilot": "600", "start": "2026-03-02T09:30:00Z",
                                            "named": "303"}
    assert store.trace("303", at=AT).outcome.value == "untraceable"    # its unreadable call


def test_what_salvage_reads_of_a_rejected_dial_alike_native_and_reference():
    form = get_format("asterisk")
    native, reference = make_parser(form), Reference(form.dialect(None))
    line = {n: numbers.normalize(n.encode(), 1) for n in ("301", "302", "303", "600")}
    start = 1772443800 * 1_000_000      # 09:30
    group = rejected(record(HARASSER, "600", "SIP/303-00000004", GROUP, "09:30")).encode()
    # a stray quote: not CSV, so split at every comma (Dial's arguments too: the fields
    # after them are found counted from the back)
    cut = group.replace(b'"DOCUMENTATION"', b'"DOCUMENT"ATION"')
    local = rejected(record(HARASSER, "600", "SIP/303-00000004",
                            "SIP/301&Local/302@from-internal/n,20", "09:30")).encode()
    queue = rejected(record(HARASSER, "600", "SIP/303-00000004", GROUP, "09:30",
                            app="Queue")).encode()
    expected = {group: (line["600"], line["303"], start, line["600"],
                        (line["301"], line["302"], line["303"])),
                cut: (line["600"], line["303"], start, line["600"],
                      (line["301"], line["302"], line["303"])),
                local: (line["600"], line["303"], start, 0, ()),
                queue: (line["600"], line["303"], start, line["600"], ())}
    for raw, want in expected.items():
        assert native.salvage(raw) == reference.salvage(raw) == want, raw


def test_stats_do_not_list_a_ring_group_as_a_pilot_with_no_members(store, tmp_path):
    """The Dial names its members: `cdrtrace stats` has nothing for the operator to list."""
    ingest(store, tmp_path, *OLDER, record(HARASSER, "600", "SIP/303-00000004", GROUP, "09:30"))
    (feed,) = store.stats()["feeds"]
    assert feed["hunt_pilots_unlisted"] == []


@pytest.mark.parametrize("app", ["Dial", "Queue"])
def test_a_record_is_noted_once_when_a_dialect_maps_both_a_pilot_and_a_dial(app):
    """A dialect may map a hunt pilot's column and a Dial's (here `accountcode` as the
    pilot): a record naming both is one note, the pilot's, so that the notes never
    outnumber the records (the native parser holds one a record)."""
    import dataclasses

    form = get_format("asterisk")
    both = dataclasses.replace(form, roles={**form.roles, "hunt": "accountcode"})
    row = record(HARASSER, "600", "SIP/303-00000004", GROUP, "09:30", app=app).replace('""', '"2000"', 1)
    for parser in (make_parser(both), Reference(both.dialect(None))):
        parser.feed((row + "\n").encode(), True)
        noted = parser.take_hunts()
        assert [(int(r["pilot"]), int(r["members"])) for r in noted] == [
            (numbers.normalize(b"2000", 1), 0)], parser
        assert len(parser.take_hunt_members()) == 0


def test_dial_groups_are_read_alike_by_the_native_parser_and_its_reference():
    rows = [*OLDER,
            record(HARASSER, "600", "SIP/303-00000004", GROUP, "09:30"),
            record(HARASSER, "s", "PJSIP/302-00000005", "PJSIP/302&PJSIP/301&PJSIP/302,20", "09:31"),
            record(HARASSER, "601", "SIP/301-00000006", "SIP/301& Local/302@from-internal,20", "09:32"),
            record(HARASSER, "602", "SIP/301-00000007", GROUP, "09:33", app="Queue"),
            record(HARASSER, "603", "SIP/301-00000007", " SIP/301 & SIP/303 ", "09:34"),
            record(HARASSER, "603", "", "SIP/301&SIP/303", "09:34", disposition="FAILED", seconds=0),
            record(HARASSER, "604", "SIP/303-00000008", "sip/301&sip/303", "09:35", app="dial"),
            record(HARASSER, "605", "SIP/303-00000009", "SIP/303|20&SIP/301", "09:36"),   # one device
            record(HARASSER, "606", "SIP/303-0000000a", "SIP/301&SIP/303|20|tT", "09:37")]
    data = ("\n".join(rows) + "\n").encode()
    form = get_format("asterisk")
    got = []
    for parser in (make_parser(form), Reference(form.dialect(None))):
        parser.feed(data, True)
        got.append((parser.take_hunts(), parser.take_hunt_members()))
    (native, native_members), (reference, reference_members) = got
    assert native.dtype == reference.dtype == formats.HUNT_DTYPE
    assert np.array_equal(native, reference) and np.array_equal(native_members, reference_members)
    line = {n: numbers.normalize(n.encode(), 1)
            for n in ("301", "302", "303", "600", "602", "603", "604", "606")}
    # the group call (named 303); the 's' call, whose line is the phone that rang (302, so
    # nothing beyond it is named); a Queue, whose members its data does not name
    # (tests/test_queues.py); devices written with spaces (a failure at once rang none);
    # the lowercase dial; Asterisk 1.4's arguments
    assert [(int(r["pilot"]), int(r["named"])) for r in native] == [
        (line["600"], line["303"]), (line["302"], 0), (line["602"], line["301"]),
        (line["603"], line["301"]), (line["604"], line["303"]), (line["606"], line["303"])]
    assert list(native["members"]) == [3, 2, 0, 2, 2, 2]
    assert native_members.tolist() == [line["301"], line["302"], line["303"], line["302"], line["301"],
                                       line["301"], line["303"], line["301"], line["303"],
                                       line["301"], line["303"]]
