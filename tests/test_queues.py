"""A call to an Asterisk Queue (docs/trace-rules.md, "A call to a hunt group").

`exten => 600,1,Queue(support,t)` rings the queue's members, which queues.conf lists
(`member => SIP/301`), not the record. Asterisk up to 11 writes the caller's record of
the call: `app_queue` sets its `dstchannel` only once a member answers
(`ast_cdr_setdestchan(qe->chan->cdr, peer->name)` in `try_calling`); `ring_entry` fills a
member's own record only with cdr.conf's `unanswered = yes`. A call no member answered
names none: its `dstchannel` empty, its disposition the queue's (ANSWERED where the
dialplan answered the caller to play music on hold; BUSY where a member was busy or
paused, `ast_cdr_busy` in `ring_entry`; with `unanswered = no`, the default, only an
ANSWERED one is written). Members 301 and 302 rang with no record naming them, and a
*57 from 301 that passed over the call would name the caller of an older one: an
innocent person. Asterisk 12 and later write a record per member rung, each with the
caller's `uniqueid`.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ring_groups import AT, HARASSER, INNOCENT, OLDER, record, rejected, sixteen, traced

import cdrtrace
from cdrtrace.config import Feed
from cdrtrace.parsing import numbers
from cdrtrace.parsing.parsers import get_format, make_parser
from cdrtrace.parsing.reference import CdrParser as Reference
from conftest import held_from_the_customer, parse_all

ASTERISK = get_format("asterisk")


def queue_call(dst: str = "600", dstchannel: str = "", *, disposition: str | None = None,
               seconds: int = 40, uniqueid: str = "1772443800.4", data: str = "support,t,,,60",
               answered: bool = True) -> str:
    """The caller's record of a 09:30 call that waited `seconds` in queue `support`: the
    dialplan answered it (music on hold), so ANSWERED unless told otherwise."""
    return record(HARASSER, dst, dstchannel, data, "09:30", answered=answered,
                  disposition=disposition, seconds=seconds, uniqueid=uniqueid, app="Queue")


@pytest.fixture
def store(store_either):
    return store_either     # native and reference tracers (conftest)


def ingest(store, tmp_path, *rows: str, feed: Feed | None = None, name: str = "Master.csv"):
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return cdrtrace.ingest(store, [str(path)], fmt=None if feed else "asterisk", feed=feed)


@pytest.mark.parametrize("disposition", ["ANSWERED", "NO ANSWER", "BUSY", "FAILED"])
def test_a_queue_call_no_member_answered_holds_every_line_when_its_members_are_not_listed(
        store, tmp_path, disposition):
    """The 09:30 queue call named no member, however the queue ended it; the feed lists
    no members for 600: any of its lines may have rung. 301's, 302's and 303's last
    recorded calls are the innocent caller's: untraceable, never a success against him."""
    ingest(store, tmp_path, *OLDER, queue_call(disposition=disposition,
                                               answered=disposition == "ANSWERED"))
    for line, start in (("301", "09:00"), ("302", "09:05"), ("303", "09:10")):
        held = held_from_the_customer(store, line, AT, INNOCENT, f"2026-03-02T{start}:00Z")
        assert held["call"]["hunt_unnamed"] == {"pilot": "600", "start": "2026-03-02T09:30:00Z",
                                                "named": None}
        assert "queue or ring group 600 began at 2026-03-02T09:30:00Z" in held["reason"]
        assert "a call to a Queue" in held["reason"]
        assert HARASSER not in repr(store.status(line))
    (feed,) = store.stats()["feeds"]
    assert feed["hunt_pilots_unlisted"] == ["600"]


def test_listed_members_hold_their_lines_alone(store, tmp_path):
    """cdrtrace.toml lists 600's members, 301 and 302: 303 is not one, and its trace
    names its last call, the innocent caller's (nothing rang it since)."""
    feed = Feed("pbx", ASTERISK, hunt_groups=(("600", ("301", "302")),))
    ingest(store, tmp_path, *OLDER, queue_call(), feed=feed)
    held_from_the_customer(store, "301", AT, INNOCENT, "2026-03-02T09:00:00Z")
    held_from_the_customer(store, "302", AT, INNOCENT, "2026-03-02T09:05:00Z")
    assert traced(store, "303") == ("success", "+17205550100")
    (listed,) = store.stats()["feeds"]
    assert listed["hunt_pilots_unlisted"] == []


def test_the_member_that_answered_is_named_and_the_others_are_held(store, tmp_path):
    """302 answered: the record names it (dstchannel). 301 rang too."""
    ingest(store, tmp_path, *OLDER, queue_call(dstchannel="SIP/302-00000005"))
    assert traced(store, "302") == ("success", "+17205550199")
    held = held_from_the_customer(store, "301", AT, INNOCENT, "2026-03-02T09:00:00Z")
    assert held["call"]["hunt_unnamed"]["named"] == "302"


def test_a_record_per_member_rung_names_each_members_call(store, tmp_path):
    """Asterisk 12 and later: a record per member rung, each with the caller's uniqueid.
    301 and 302 are traced to the queue call; 303, a member that was not rung (paused),
    has no record of it and is held: the records cannot tell it did not ring."""
    feed = Feed("pbx", ASTERISK, hunt_groups=(("600", ("301", "302", "303")),))
    rung = [queue_call(dstchannel="SIP/301-00000005", disposition="NO ANSWER", answered=False,
                       uniqueid="1772443800.9"),
            queue_call(dstchannel="SIP/302-00000006", uniqueid="1772443800.9")]
    ingest(store, tmp_path, *OLDER, *rung, feed=feed)
    assert traced(store, "301") == ("success", "+17205550199")
    assert traced(store, "302") == ("success", "+17205550199")
    held_from_the_customer(store, "303", AT, INNOCENT, "2026-03-02T09:10:00Z")


def test_records_per_member_with_no_uniqueid_are_one_call(store, tmp_path):
    """Asterisk 12+ with cdr_csv as shipped (16 columns, no uniqueid): a record per member
    tried, each its own id. 301 rang unanswered and 302 answered: the same call, from the
    same caller in the same second, and each member's trace names it. 303 was busy at once:
    its record names a phone that never rang, and notes nothing that would hold the others.
    303 itself is held (a queue call followed its last call: the records cannot tell it did
    not ring)."""
    feed = Feed("pbx", ASTERISK, hunt_groups=(("600", ("301", "302", "303")),))
    tried = [sixteen(queue_call(dstchannel="SIP/301-00000005", disposition="NO ANSWER",
                                answered=False)),
             sixteen(queue_call(dstchannel="SIP/303-00000006", disposition="BUSY", answered=False,
                                seconds=0)),
             sixteen(queue_call(dstchannel="SIP/302-00000007"))]
    ingest(store, tmp_path, *OLDER, *tried, feed=feed)
    assert traced(store, "301") == ("success", "+17205550199")
    assert traced(store, "302") == ("success", "+17205550199")
    held_from_the_customer(store, "303", AT, INNOCENT, "2026-03-02T09:10:00Z")


def test_a_queue_reached_at_no_number_holds_every_line(store, tmp_path):
    """A dialplan that queues its callers in extension `s` (an analogue line's context)
    dials no number: the call may have rung any line of the feed, and no configuration
    can list its members, so `cdrtrace stats` has no pilot to show."""
    ingest(store, tmp_path, *OLDER, queue_call(dst="s"))
    held = held_from_the_customer(store, "301", AT, INNOCENT, "2026-03-02T09:00:00Z")
    assert held["call"]["hunt_unnamed"] == {"pilot": "", "start": "2026-03-02T09:30:00Z",
                                            "named": None}
    assert "a call through a queue reached at no number began at" in held["reason"]
    (feed,) = store.stats()["feeds"]
    assert feed["hunt_pilots_unlisted"] == []


def test_a_queue_call_shorter_than_the_feeds_least_ring_is_not_held(store, tmp_path):
    """A feed whose calls ring a line 5 s at least before a phone can be reached
    (min_ring_seconds): a queue call of 3 s rang no member; one of 5 s may have."""
    feed = Feed("pbx", ASTERISK, min_ring_seconds=5)
    ingest(store, tmp_path, *OLDER, queue_call(seconds=3, answered=False), feed=feed)
    assert traced(store, "301") == ("success", "+17205550100")
    ingest(store, tmp_path, queue_call(seconds=5, uniqueid="1772443800.5"), feed=feed,
           name="Master-2.csv")
    held_from_the_customer(store, "302", AT, INNOCENT, "2026-03-02T09:05:00Z")


def test_a_rejected_record_of_a_queue_call_holds_its_lines(store, tmp_path):
    """The queue call's record cannot be read (its answer time is no time): it still
    names the number dialled, the queue's."""
    summary = ingest(store, tmp_path, *OLDER, rejected(queue_call(answered=False)))
    assert (summary.records, summary.rejected) == (4, 1)
    held = held_from_the_customer(store, "301", AT, INNOCENT, "2026-03-02T09:00:00Z")
    assert held["call"]["hunt_unnamed"] == {"pilot": "600", "start": "2026-03-02T09:30:00Z",
                                            "named": None}


def test_a_rejected_record_of_a_queue_call_at_no_number_holds_every_line(store, tmp_path):
    """A queue in extension `s` whose record cannot be read: no line and no number to note
    it by, yet the call may have rung any line of the feed, as its good record would say.
    301's last recorded call is the innocent caller's: held (before, a success against
    him). What salvage reads of it, natively and by the reference: no line, pilot -1."""
    row = rejected(queue_call(dst="s", answered=False))
    summary = ingest(store, tmp_path, *OLDER, row)
    assert (summary.records, summary.rejected) == (4, 1)
    held = held_from_the_customer(store, "301", AT, INNOCENT, "2026-03-02T09:00:00Z")
    assert held["call"]["hunt_unnamed"] == {"pilot": "", "start": "2026-03-02T09:30:00Z",
                                            "named": None}
    for parser in (make_parser(ASTERISK), Reference(ASTERISK.dialect(None))):
        assert parser.salvage(row.encode()) == (0, 0, 1772443800 * 1_000_000, -1, ())


def test_stats_and_the_cli_name_an_unlisted_queue(tmp_path):
    with cdrtrace.open(tmp_path / "store", create=True) as s:
        ingest(s, tmp_path, *OLDER, queue_call())
    shown = subprocess.run([sys.executable, "-m", "cdrtrace.cli", "stats", "--db",
                            str(tmp_path / "store")], capture_output=True, text=True,
                           check=True).stdout
    assert "HUNT PILOTS WITH NO MEMBERS LISTED (600)" in shown


def test_queue_calls_are_noted_alike_by_the_native_parser_and_its_reference():
    """What each parser notes, against the rule: every Queue record (any case of its
    name, answered or not) whose call lasted the feed's least ring, its pilot the number
    dialled (0: none, also where the member that answered is the record's only line),
    named the member that answered; not a Dial to one phone, not an application that
    merely starts with 'Queue'."""
    line = {n: numbers.normalize(n.encode(), 1) for n in ("301", "302", "600")}
    rows = [queue_call(uniqueid="q.1"),
            queue_call(dstchannel="SIP/302-00000006", uniqueid="q.2"),
            queue_call(dst="s", uniqueid="q.3").replace('"Queue"', '"QUEUE"'),
            queue_call(dst="s", dstchannel="SIP/301-00000008", uniqueid="q.7"),
            queue_call(seconds=1, uniqueid="q.4", answered=False),
            queue_call(uniqueid="q.5").replace('"Queue"', '"QueueLog"'),
            record(HARASSER, "301", "SIP/301-00000007", "SIP/301,20", "09:30", uniqueid="q.6")]
    want = [(line["600"], 0), (line["600"], line["302"]), (0, 0), (0, 0)]
    data = ("\n".join(rows) + "\n").encode()
    for parser in (make_parser(ASTERISK, min_ring_seconds=2),
                   Reference(ASTERISK.dialect(None), min_ring_seconds=2)):
        parser.feed(data, True)
        noted = parser.take_hunts()
        assert [(int(r["pilot"]), int(r["named"])) for r in noted] == want, parser
        assert noted["members"].tolist() == [0, 0, 0, 0]
        assert noted["start_us"].tolist() == [1772443800 * 1_000_000] * 4


def test_a_queue_record_of_an_outgoing_call_is_not_noted():
    """A dialect that tells a record's direction (here Asterisk's userfield): the
    originating record of a call that ran Queue is no call to the number it names."""
    import dataclasses

    directed = dataclasses.replace(ASTERISK, roles={**ASTERISK.roles, "direction": "userfield"})
    rows = [queue_call(uniqueid=f"q.{k}")[:-2] + f'"{direction}"'
            for k, direction in enumerate(("Terminating", "Originating"))]
    data = ("\n".join(rows) + "\n").encode()
    for parser in (make_parser(directed), Reference(directed.dialect(None))):
        parser.feed(data, True)
        assert parser.take_hunts()["pilot"].tolist() == [numbers.normalize(b"600", 1)], parser


def test_a_record_of_a_member_that_never_rang_notes_nothing():
    """Asterisk 12+ writes a record per member tried: one busy at once names a phone that
    never rang (no note; the others' records note the call), while the caller's record
    of a call no member was rung for names none (noted)."""
    rows = [queue_call(dstchannel="SIP/303-00000009", disposition="BUSY", answered=False,
                       seconds=0, uniqueid="q.8"),
            queue_call(disposition="NO ANSWER", answered=False, seconds=0, uniqueid="q.9")]
    data = ("\n".join(rows) + "\n").encode()
    for parser in (make_parser(ASTERISK), Reference(ASTERISK.dialect(None))):
        parser.feed(data, True)
        noted = parser.take_hunts()
        assert [(int(r["pilot"]), int(r["named"])) for r in noted] == [
            (numbers.normalize(b"600", 1), 0)], parser


GROUP_CALLS = ("\n".join([
    *OLDER,
    record(HARASSER, "600", "SIP/303-00000004", "SIP/301&SIP/302&SIP/303,20,tT", "09:30"),
    record(HARASSER, "s", "PJSIP/302-00000005", "PJSIP/302&PJSIP/301&PJSIP/302,20", "09:31"),
    record(HARASSER, "601", "SIP/301-00000006", "SIP/301& Local/302@from-internal,20", "09:32"),
    record(HARASSER, "603", "", "SIP/301&SIP/303", "09:34", disposition="FAILED", seconds=0),
    record(HARASSER, "606", "SIP/303-0000000a", "SIP/301&SIP/303|20|tT", "09:37", app="dial"),
    queue_call(uniqueid="q.1"), queue_call(dstchannel="SIP/302-00000006", uniqueid="q.2"),
    queue_call(dst="s", uniqueid="q.3").replace('"Queue"', '"QUEUE"'),
    queue_call(seconds=1, uniqueid="q.4", answered=False),
    queue_call(dstchannel="SIP/303-00000009", disposition="BUSY", answered=False, seconds=0,
               uniqueid="q.8")]) + "\n").encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, len(GROUP_CALLS) - 1), st.sampled_from(
           [b'"', b",", b"\n", b"\r", b"\x00", b"", b"9", b"&", b"/", b"Local/", b"Queue",
            b"SIP/3", b"SIP/-", b" ", b"|", b"\xe9", b'""']), st.integers(0, 3)), max_size=6),
       chunk=st.integers(1, 3000), min_ring=st.sampled_from([0, 2]))
def test_the_notes_are_read_alike_by_the_native_parser_and_its_reference_whatever_the_bytes(
        edits, chunk, min_ring):
    """Group calls and queue calls, their bytes mutated, fed to the native parser in
    chunks and to the reference whole: the same records, rejects and notes."""
    data = bytearray(GROUP_CALLS)
    for pos, insert, delete in edits:
        pos = min(pos, len(data))
        data[pos:pos + delete] = insert
    data = bytes(data)
    native = make_parser(ASTERISK, min_ring_seconds=min_ring)
    reference = Reference(ASTERISK.dialect(None), min_ring_seconds=min_ring)
    got = parse_all(data, parser=native, chunks=[chunk] * (len(data) // chunk + 2))
    assert got == parse_all(data, parser=reference)
    assert np.array_equal(native.take_hunts(), reference.take_hunts())
    assert np.array_equal(native.take_hunt_members(), reference.take_hunt_members())
