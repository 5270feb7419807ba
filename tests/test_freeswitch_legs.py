"""FreeSWITCH's mod_cdr_csv writes the A legs only unless told otherwise: the shipped
cdr_csv.conf.xml sets `legs` to `a` ("may be a b or ab"). An A leg names the number
dialled, not the phones the call rang: a ring group's members, a forwarded call's
target, a queue's agent. Those phones' lines get no record of it, and a *57 from one of
them would name the call before it. A FreeSWITCH feed is trusted from the first call it
shows two different legs of (docs/trace-rules.md, "Imperfect data")."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import cdrtrace
from cdrtrace.ingestion import following
from cdrtrace.ingestion.live import StreamOptions
from cdrtrace.parsing.formats import CUCM_RELEASES
from cdrtrace.parsing.parsers import get_format
from cdrtrace.store import lookup
from conftest import cdr_file, held_from_the_customer

AT = "2026-03-02T15:00:00Z"


def leg(number: str, line: str, start: str, end: str, *, answer: str = "",
        cause: str = "NORMAL_CLEARING", uuid: str, bleg: str = "", context: str = "public") -> bytes:
    """One record of the shipped `example` template (every field quoted)."""
    fields = ("Caller", number, line, context, start, answer, end, "20", "15" if answer else "0",
              cause, uuid, bleg, "", "PCMU", "PCMU")
    return b",".join(b'"' + f.encode() + b'"' for f in fields)


# legs=a: an answered call dialled to 2001 at 14:00 (bridged: its B leg is not written),
# then at 14:30 a call to the ring group 6000, whose phones 2001 and 2002 rang and nobody
# answered: the caller hung up. Nothing in the file names 2001 for it.
ANSWERED = leg("7205550100", "2001", "2026-03-02 14:00:00", "2026-03-02 14:01:00",
               answer="2026-03-02 14:00:05", uuid="a-1", bleg="b-1", context="default")
GROUP = leg("7205550199", "6000", "2026-03-02 14:30:00", "2026-03-02 14:30:25",
            cause="ORIGINATOR_CANCEL", uuid="a-2")


def test_a_feed_of_a_legs_alone_names_no_caller(store, tmp_path):
    cdrtrace.ingest(store, [cdr_file(tmp_path, ANSWERED, GROUP)], fmt="freeswitch")
    # the call that rang 2001 last is the 14:30 one, which its records cannot show
    record = held_from_the_customer(store, "2001", AT, "7205550100", "2026-03-02T14:00:00Z")
    assert "has not shown two legs of a call" in record["reason"]
    assert "legs" in record["reason"] and "cdr_csv.conf.xml" in record["reason"]
    # the group's own number is no better off: its calls may have rung elsewhere too
    assert store.trace("6000", at=AT).outcome.value == "untraceable"


def pair(number: str, dialled: str, phone: str, start: str, rang_at: str, end: str, *,
         answer: str, a: str, b: str) -> tuple[bytes, bytes]:
    """A call's two legs as `legs` = `ab` writes them: the caller's A leg, dialled to a
    number, whose bleg_uuid is the B leg's uuid; the B leg, to the phone it rang."""
    return (leg(number, dialled, start, end, answer=answer, uuid=a, bleg=b),
            leg(number, phone, rang_at, end, answer=answer, uuid=b, context="default"))


def test_a_feed_is_trusted_from_the_first_call_it_shows_two_legs_of(store, tmp_path):
    cdrtrace.ingest(store, [cdr_file(tmp_path, ANSWERED, GROUP, name="a.csv")], fmt="freeswitch")
    # mod_cdr_csv set to legs=ab: at 14:40 a call to the DID 3035550110 rang phone 2003
    legs = pair("7205550122", "3035550110", "2003", "2026-03-02 14:40:00", "2026-03-02 14:40:01",
                "2026-03-02 14:41:00", answer="2026-03-02 14:40:04", a="a-3", b="b-3")
    direct = pair("7205550111", "2001", "2001", "2026-03-02 14:50:00", "2026-03-02 14:50:00",
                  "2026-03-02 14:51:00", answer="2026-03-02 14:50:03", a="a-4", b="b-4")
    cdrtrace.ingest(store, [cdr_file(tmp_path, *legs, *direct, name="ab.csv")], fmt="freeswitch")
    (feed,) = store.stats()["feeds"]
    assert feed["legs_logged_from"] == "2026-03-02T14:40:00Z"     # the earlier of its legs
    got = store.trace("2001", at=AT)
    assert (got.outcome.value, got.call_time) == ("success", "2026-03-02T14:50:00Z")
    assert store.trace_records("2001", analyst="cic")[-1]["call"]["calling"] == "+17205550111"
    assert store.trace("2003", at=AT).outcome.value == "success"    # the phone the DID rang
    assert store.trace("3035550110", at=AT).outcome.value == "success"
    # a call before the feed showed it (the group's, at 14:30) is held still
    got = store.trace("6000", at=AT)
    assert (got.outcome.value, got.call_time) == ("untraceable", None)
    reason = store.trace_records("6000", analyst="cic")[-1]["reason"]
    assert "first showed two legs of a call at 2026-03-02T14:40:00Z, after this call" in reason


def test_records_alike_are_not_two_legs(store, tmp_path):
    """A record written twice (a file joined to itself, a message delivered twice), or a
    call's two legs alike in all that is read of them (a phone dialled by its own number,
    in the same second), show nothing: the feed may still write A legs alone."""
    alike = pair("7205550111", "2001", "2001", "2026-03-02 14:50:00", "2026-03-02 14:50:00",
                 "2026-03-02 14:51:00", answer="2026-03-02 14:50:03", a="a-4", b="b-4")
    cdrtrace.ingest(store, [cdr_file(tmp_path, ANSWERED, ANSWERED, GROUP, GROUP, *alike)],
                    fmt="freeswitch")
    assert store.stats()["feeds"][0]["legs_logged_from"] is None
    got = store.trace("2001", at=AT)
    assert (got.outcome.value, got.call_time) == ("untraceable", None)
    assert "has not shown two legs" in store.trace_records("2001", analyst="cic")[-1]["reason"]


def test_each_kind_of_switch_is_held_to_its_own_proof(store, tmp_path):
    """Files of two formats under one feed (the unnamed feed, say): a CUCM record that
    shows it logs calls that never connected says nothing of FreeSWITCH's legs, and two
    legs of a FreeSWITCH call say nothing of CUCM's unconnected calls."""
    cdrtrace.ingest(store, [cdr_file(tmp_path, ANSWERED, name="fs.csv")], fmt="freeswitch")
    # 13:50, a call to 3035550188 its caller cleared while it rang: CUCM shows it logs them
    cleared = cucm_row("70", 1772459400, 0, "3035550188", orig="16", dest="0")
    cdrtrace.ingest(store, [cucm_file(tmp_path, "cdr_1", cleared)], fmt="cucm")
    (feed,) = store.stats()["feeds"]
    assert (feed["unconnected_logged_from"], feed["legs_logged_from"]) == ("2026-03-02T13:50:00Z", None)
    assert store.trace("2001", at=AT).outcome.value == "untraceable"     # FreeSWITCH's: held
    assert store.trace("3035550188", at=AT).outcome.value == "success"   # CUCM's: shown
    # and the other way round: two FreeSWITCH legs at 13:00 do not trust a CUCM call of
    # 13:40, before CUCM showed it logs unconnected calls
    legs = pair("7205550122", "3035550110", "2003", "2026-03-02 13:00:00", "2026-03-02 13:00:01",
                "2026-03-02 13:01:00", answer="2026-03-02 13:00:04", a="a-3", b="b-3")
    cdrtrace.ingest(store, [cdr_file(tmp_path, *legs, name="ab.csv")], fmt="freeswitch")
    answered = cucm_row("71", 1772458800, 1772458805, "3035550199", orig="16", dest="0")
    cdrtrace.ingest(store, [cucm_file(tmp_path, "cdr_0", answered)], fmt="cucm")
    assert store.trace("2001", at=AT).outcome.value == "success"         # 14:00, after 13:00
    assert store.trace("3035550199", at=AT).outcome.value == "untraceable"   # 13:40 < 13:50


def cucm_row(call_id: str, start: int, connect: int, line: str, *, orig: str, dest: str) -> dict:
    row = dict.fromkeys(CUCM_RELEASES[129], "0")
    row.update(huntPilotDN="", globalCallID_callManagerId="1", globalCallID_callId=call_id,
               callingPartyNumber="7205550155", originalCalledPartyNumber=line,
               finalCalledPartyNumber=line, lastRedirectDn="", comment="",
               dateTimeOrigination=str(start), dateTimeConnect=str(connect),
               dateTimeDisconnect=str(start + 20), origCause_value=orig, destCause_value=dest)
    return row


def cucm_file(tmp_path, name: str, row: dict) -> str:
    names = CUCM_RELEASES[129]
    return cdr_file(tmp_path, ",".join(names).encode(), ",".join(row[n] for n in names).encode(),
                    name=name)


@pytest.mark.parametrize("shipped", [True, False])
def test_every_freeswitch_template_is_held(shipped):
    """Every FreeSWITCH template is held, with its legs' ids or not (without `bleg_uuid`
    its records can show no two legs: held for good, fail closed); formats that write
    every call that rang are not (Asterisk)."""
    form = get_format("freeswitch")
    assert form.unconnected_shown_by() == "legs"
    names = list(form.columns) if shipped else [n for n in form.columns if n != "bleg_uuid"]
    assert form.unconnected_shown_by(names) == "legs"
    assert get_format("asterisk").unconnected_shown_by() is None


def test_the_proof_is_two_records_of_one_call_that_differ():
    base = {"call_id": [1, 2, 1, 3, 3], "called": [7, 8, 7, 9, 9],
            "start_us": [50, 10, 50, 30, 40], "answer_us": [0] * 5, "end_us": [60] * 5,
            "disposition": [1] * 5}
    columns = {k: np.array(v, np.uint64 if k in ("call_id", "called") else np.int64)
               for k, v in base.items()}
    assert lookup.legs_proof(columns) == 30          # call 3's legs began 30 and 40
    reversed_legs = {k: v.copy() for k, v in columns.items()}
    reversed_legs["start_us"][3:] = (40, 30)         # in either order: the earlier
    assert lookup.legs_proof(reversed_legs) == 30
    for name in ("called", "answer_us", "end_us", "disposition"):
        changed = {k: v.copy() for k, v in columns.items()}
        changed["start_us"][4] = 30                   # call 3's legs alike but for name
        changed[name][4] += 1
        assert lookup.legs_proof(changed) == 30, name
        changed[name][4] -= 1
        assert lookup.legs_proof(changed) is None, name   # records alike show nothing


def test_legs_a_read_ends_between_show_them(tmp_path):
    """A file is read a chunk at a time and a followed one as it grows, and FreeSWITCH
    writes a call's two legs one after the other: a read may end between them. They show
    the feed's legs all the same: at every chunk size, the feed is trusted from that call
    (before, a chunk that ended between them left the feed untrusted until a later call's
    legs fell in one read, and the calls between were untraceable)."""
    legs = pair("7205550122", "3035550110", "2003", "2026-03-02 14:40:00", "2026-03-02 14:40:01",
                "2026-03-02 14:41:00", answer="2026-03-02 14:40:04", a="a-3", b="b-3")
    path = cdr_file(tmp_path, ANSWERED, GROUP, *legs)
    for chunk in range(64, 640, 9):
        store = cdrtrace.open(tmp_path / f"store-{chunk}", create=True)
        try:
            cdrtrace.ingest(store, [path], fmt="freeswitch", chunk_bytes=chunk)
            (feed,) = store.stats()["feeds"]
            assert feed["legs_logged_from"] == "2026-03-02T14:40:00Z", chunk
            got = store.trace("2003", at=AT)
            assert (got.outcome.value, got.call_time) == ("success", "2026-03-02T14:40:01Z"), chunk
        finally:
            store.close()


def test_a_later_read_may_show_an_earlier_call_s_legs(tmp_path):
    """Records are written as calls end: a long call's legs come after a later, shorter
    call's. Read a few records at a time, the feed is still trusted from the earlier call
    (before, the legs were no longer sought once found, and the long call, its line's last
    before a *57 at 14:45, was untraceable)."""
    short = pair("7205550111", "3035550111", "2001", "2026-03-02 14:50:00", "2026-03-02 14:50:00",
                 "2026-03-02 14:51:00", answer="2026-03-02 14:50:03", a="a-5", b="b-5")
    long = pair("7205550122", "3035550110", "2003", "2026-03-02 14:40:00", "2026-03-02 14:40:01",
                "2026-03-02 14:58:00", answer="2026-03-02 14:40:04", a="a-6", b="b-6")
    path = cdr_file(tmp_path, *short, *long)
    for chunk in (100, 300, 1 << 20):
        store = cdrtrace.open(tmp_path / f"store-{chunk}", create=True)
        try:
            cdrtrace.ingest(store, [path], fmt="freeswitch", chunk_bytes=chunk)
            assert store.stats()["feeds"][0]["legs_logged_from"] == "2026-03-02T14:40:00Z", chunk
            got = store.trace("2003", at="2026-03-02T14:45:00Z")
            assert (got.outcome.value, got.call_time) == ("success", "2026-03-02T14:40:01Z"), chunk
        finally:
            store.close()


def test_the_seam_between_reads_is_searched_for_two_legs():
    """lookup.legs_across: the last records of one read and the first of the next, however
    few each read holds; a read of none changes nothing."""
    def read(ids, called, start):
        return {"call_id": np.array(ids, np.uint64), "called": np.array(called, np.uint64),
                "start_us": np.array(start, np.int64), "answer_us": np.zeros(len(ids), np.int64),
                "end_us": np.full(len(ids), 90, np.int64), "disposition": np.ones(len(ids), np.int64)}
    shown, tail = lookup.legs_across(None, read([1, 2], [7, 8], [10, 20]))
    assert shown is None                                   # nothing before the first read
    # a read is sought in once legs were found only where it, or the tail before it, holds
    # a call begun before theirs
    assert lookup.begins_before(15, read([], [], []), tail)
    assert lookup.begins_before(15, read([3], [9], [12]), None)
    assert not lookup.begins_before(10, read([3], [9], [12]), tail)
    shown, tail = lookup.legs_across(tail, read([], [], []))
    assert shown is None
    shown, tail = lookup.legs_across(tail, read([3], [9], [30]))
    assert shown is None
    assert lookup.legs_across(tail, read([2], [5], [21]))[0] == 20     # a read back
    far = read(list(range(100, 100 + lookup.LEGS_SEAM)), [1] * lookup.LEGS_SEAM,
               [40] * lookup.LEGS_SEAM)
    _, tail = lookup.legs_across(tail, far)
    assert lookup.legs_across(tail, read([2], [5], [21]))[0] is None  # no longer the last read
    assert lookup.legs_across(tail, read([100], [5], [41]))[0] == 40
    assert lookup.legs_across(tail, read([100], [1], [40]))[0] is None    # alike: nothing


def test_a_followed_feed_says_what_it_waits_for(store, tmp_path):
    """A FreeSWITCH file followed live: `stats` says the feed has shown no call's two legs
    and how to make FreeSWITCH write them; once it shows two, it names the calls after."""
    path = tmp_path / "Master.csv"
    path.write_bytes(ANSWERED + b"\n" + GROUP + b"\n")
    options = StreamOptions(batch_ms=1, poll_ms=1, heartbeat_s=0.01, idle_exit_s=0.2)
    following.follow(store, str(path), fmt="freeswitch", options=options)

    def stats() -> str:
        return subprocess.run([sys.executable, "-m", "cdrtrace.cli", "stats", "--db", str(store.path)],
                              capture_output=True, text=True, check=True).stdout
    assert "NO CALL'S TWO LEGS LOGGED YET" in stats() and "legs to ab" in stats()
    assert store.trace("2001", at=AT).outcome.value == "untraceable"
    legs = pair("7205550111", "3035550110", "2001", "2026-03-02 14:50:00", "2026-03-02 14:50:01",
                "2026-03-02 14:51:00", answer="2026-03-02 14:50:03", a="a-4", b="b-4")
    with open(path, "ab") as f:
        f.write(b"\n".join(legs) + b"\n")
    following.follow(store, str(path), fmt="freeswitch", options=options)
    got = store.trace("2001", at="2026-03-02T15:01:00Z")
    assert (got.outcome.value, got.call_time) == ("success", "2026-03-02T14:50:01Z")
    assert "both legs of calls logged from 2026-03-02T14:50:00Z" in stats()


# An attended transfer on FreeSWITCH (legs = ab), in the shapes its source gives: the
# receptionist 1000 takes the harasser's call (A leg a1, its B leg b1 to her phone), puts
# it on hold and calls 1001 (A leg a2 from her phone, B leg b2 to 1001's), then transfers:
# her phone's REFER with Replaces makes mod_sofia bridge the harasser's A leg to 1001's B
# leg (switch_ivr_uuid_bridge) and end her two legs. The bridge gives each channel a new
# caller profile: since about 1.2 the B leg b2 is the bridge's originator, an outbound leg
# whose caller id is flipped to its callee's (1001's own number), its bleg_uuid the
# harasser's leg, and the harasser's leg, the originatee, takes b2's caller id; before,
# the harasser's leg was the originator and b2 took the harasser's number, its bleg_uuid
# left empty. Either way 1001's records must never name the receptionist, whose call
# began first, nor 1001's caller before.
HARASSER, RECEPTIONIST, TARGET, EARLIER = "7205550199", "1000", "1001", "7205550142"


def transfer(modern: bool, rang: str = "2026-03-02 10:01:00") -> list[bytes]:
    def fs_leg(number, line, start, end, cause, uuid, bleg, context="default"):
        return leg(number, line, start, end, answer=start, cause=cause, uuid=uuid, bleg=bleg,
                   context=context)
    return [
        *pair(EARLIER, TARGET, TARGET, "2026-03-02 09:00:00", "2026-03-02 09:00:00",
              "2026-03-02 09:05:00", answer="2026-03-02 09:00:02", a="a-0", b="b-0"),
        fs_leg(TARGET if modern else HARASSER, RECEPTIONIST, "2026-03-02 10:00:00",
               "2026-03-02 10:08:00", "NORMAL_CLEARING", "a-1", "" if modern else "b-1", "public"),
        fs_leg(HARASSER, RECEPTIONIST, "2026-03-02 10:00:00", "2026-03-02 10:03:00",
               "NORMAL_CLEARING", "b-1", ""),
        fs_leg(RECEPTIONIST, TARGET, "2026-03-02 10:01:00", "2026-03-02 10:03:00",
               "ATTENDED_TRANSFER", "a-2", "b-2"),
        fs_leg(TARGET if modern else HARASSER, TARGET, rang, "2026-03-02 10:08:00",
               "NORMAL_CLEARING", "b-2", "a-1" if modern else ""),
    ]


@pytest.mark.parametrize("modern, rang", [
    (True, "2026-03-02 10:01:00"),     # the B leg begun in its A leg's second: a tie
    (True, "2026-03-02 10:01:01"),     # or in the next: its caller is the line itself
    (False, "2026-03-02 10:01:00"),    # one call whose legs name two callers
])
def test_a_freeswitch_attended_transfer_never_names_the_receptionist(store_either, tmp_path,
                                                                      modern, rang):
    """Pinned from the source alone (no FreeSWITCH could be run here): each shape fails
    closed by a rule of its own (a tie of two callers, a caller that is the line itself,
    callers_differ)."""
    store = store_either
    cdrtrace.ingest(store, [cdr_file(tmp_path, *transfer(modern, rang))], fmt="freeswitch")
    at = "2026-03-02T10:10:00Z"
    result = store.trace(TARGET, at=at)
    assert result.outcome.value == "untraceable"
    (record,) = store.trace_records(TARGET, analyst="cic")
    assert record["call"]["start"] == rang.replace(" ", "T") + "Z"      # not the 09:00 call
    for number in (RECEPTIONIST, HARASSER, EARLIER):
        assert number not in repr(result) and number not in repr(store.status(TARGET))
    # the receptionist's own line names her caller, or no one: never the target
    named = store.trace(RECEPTIONIST, at=at)
    calls = [r["call"] for r in store.trace_records(RECEPTIONIST, analyst="cic")]
    assert named.outcome.value in ("success", "untraceable")
    assert named.outcome.value == "untraceable" or calls[-1]["calling"] == "+1" + HARASSER
