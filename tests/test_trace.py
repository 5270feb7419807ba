"""The trace rules (docs/trace-rules.md), one scenario each; R1-R10 name them as the
carrier's rule book numbers them."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

import cdrtrace
from cdrtrace import ANNOUNCEMENTS, Outcome
from cdrtrace.parsing import timezones
from conftest import cdr, cdr_file, show_freeswitch_legs

LINE = "3035550110"
AFTER = "2026-03-02T23:00:00Z"


@pytest.fixture(autouse=True, params=["native", "python"])
def _store_calls(request, monkeypatch):
    """Every rule twice: the trace's reads and writes made in C (store._index.Txn), and by
    py-lmdb (the reference)."""
    if request.param == "python":
        monkeypatch.setenv("CDRTRACE_INDEX_WRITER", "python")


def call(minute: int, **kw) -> bytes:
    """A call to LINE starting at 14:MM:00 and lasting 30 s; a busy, failed or congested
    one ends at once (it never rang: a busy 30 s on may have, docs/trace-rules.md)."""
    kw.setdefault("dst", LINE)
    seconds = "00" if kw.get("disposition") in ("BUSY", "FAILED", "CONGESTION") else "30"
    return cdr(start=f"2026-03-02 14:{minute:02d}:00", end=f"2026-03-02 14:{minute:02d}:{seconds}",
               answer=kw.pop("answer", f"2026-03-02 14:{minute:02d}:05"), **kw)


# R1: answered or not
@pytest.mark.parametrize("disposition", ["ANSWERED", "NO ANSWER", "CANCEL"])
def test_r1_r3_a_call_that_rang_is_traced_answered_or_not(store, ingest_records, disposition):
    ingest_records(call(3, disposition=disposition,
                        answer="2026-03-02 14:03:05" if disposition == "ANSWERED" else ""))
    result = store.trace(LINE, at=AFTER)
    assert result.outcome is Outcome.SUCCESS
    assert result.call_time == "2026-03-02T14:03:00Z"


# R3: calls that never alerted the line are not received
@pytest.mark.parametrize("disposition", ["BUSY", "FAILED", "CONGESTION"])
def test_r3_a_call_that_never_rang_is_not_the_last_call(store, ingest_records, disposition):
    ingest_records(call(3, src="7205550101"), call(9, src="7205550102", disposition=disposition))
    result = store.trace(LINE, at=AFTER)
    assert result.outcome is Outcome.SUCCESS and result.call_time == "2026-03-02T14:03:00Z"
    (record,) = store.trace_records(LINE, analyst="cic")
    assert record["call"]["calling"] == "+17205550101"


def test_r3_a_call_refused_after_it_may_have_rung_fails_closed(store, ingest_records):
    """Asterisk logs a user's reject key as BUSY, as it logs a busy line: one that ended 4 s
    after it began may have rung, so it is the last call, and untraceable (fail closed)."""
    ingest_records(call(3, src="7205550101"),
                   cdr(dst=LINE, src="7205550102", disposition="BUSY", answer="",
                       start="2026-03-02 14:09:00", end="2026-03-02 14:09:04"))
    result = store.trace(LINE, at=AFTER)
    assert result.outcome is Outcome.UNTRACEABLE and result.call_time == "2026-03-02T14:09:00Z"


def test_r3_no_received_call_is_no_call(store, ingest_records):
    ingest_records(call(3, disposition="BUSY"))
    result = store.trace(LINE, at=AFTER)
    assert result.outcome is Outcome.NO_CALL and result.call_time is None


def test_r3_minimum_ring_time_is_configurable(tmp_path):
    store = cdrtrace.open(tmp_path / "s", create=True, min_ring_seconds=10)
    path = tmp_path / "c.csv"
    path.write_bytes(call(3, src="7205550101") + b"\n" +
                     cdr(dst=LINE, src="7205550102", disposition="CANCEL",
                         start="2026-03-02 14:09:00", end="2026-03-02 14:09:04") + b"\n")
    cdrtrace.ingest(store, [str(path)])
    store.trace(LINE, at=AFTER)
    assert store.trace_records(LINE, analyst="cic")[0]["call"]["calling"] == "+17205550101"


# R2: forwarded calls
def test_r2_forwarded_call_traceable_from_each_line_once(store, ingest_records):
    ingest_records(call(3, userfield="3035550177", dstchannel="PJSIP/7205550199-0001"))
    for line in (LINE, "3035550177", "7205550199"):
        assert store.trace(line, at=AFTER).outcome is Outcome.SUCCESS
        assert store.trace(line, at=AFTER).outcome is Outcome.ALREADY_TRACED


# R4: unavailable
def test_r4_unavailable_caller_is_untraceable_and_masks_earlier_calls(store, ingest_records):
    ingest_records(call(3, src="7205550101"), call(9, src="anonymous", clid='"Anonymous" <>'))
    result = store.trace(LINE, at=AFTER)
    assert result.outcome is Outcome.UNTRACEABLE
    assert result.call_time == "2026-03-02T14:09:00Z"
    assert store.trace(LINE, at="2026-03-02T14:05:00Z").outcome is Outcome.SUCCESS


# R5: restricted
def test_r5_restricted_caller_is_traced(store, ingest_records):
    ingest_records(call(3, src="anonymous", clid='"Anonymous" <7205550101>'))
    assert store.trace(LINE, at=AFTER).outcome is Outcome.SUCCESS
    (record,) = store.trace_records(LINE, analyst="cic")
    assert record["call"]["presentation"] == "restricted"
    assert record["call"]["calling"] == "+17205550101"


# which call: only the most recent one, before the time of the trace
def test_trace_resolves_the_newest_call_before_activation(store, ingest_records):
    ingest_records(call(3, src="7205550101"), call(9, src="7205550102"),
                   call(20, src="7205550103"))
    store.trace(LINE, at="2026-03-02T14:10:00Z")
    store.trace(LINE, at="2026-03-02 14:20:30")           # no offset: the store's zone (UTC)
    store.trace(LINE, at="2026-03-02T07:08:00-07:00")     # 14:08 UTC
    callers = [r["call"]["calling"] for r in store.trace_records(LINE, analyst="cic")]
    assert callers == ["+17205550102", "+17205550103", "+17205550101"]


def test_calls_from_two_callers_in_the_same_second_name_neither(store, ingest_records):
    """CDR times have whole seconds: of two calls from different callers that began in the
    same second, the records cannot tell which was the last. The trace fails closed
    (untraceable, the CIC's record holds both); a later call is traced as usual, and two
    calls of one caller in one second name that caller."""
    ingest_records(call(3, src="7205550100"),
                   call(5, src="7205550101", uniqueid="u-a"), call(5, src="7205550102", uniqueid="u-b"))
    result = store.trace(LINE, at="2026-03-02T14:06:00Z")
    assert result.outcome is Outcome.UNTRACEABLE
    assert "720555" not in json.dumps(result.to_dict())          # never a caller, still
    (record,) = store.trace_records(LINE, analyst="cic")
    named = {record["call"]["calling"]} | {t["calling"] for t in record["call"]["tied_with"]}
    assert named == {"+17205550101", "+17205550102"} and "cannot tell" in record["reason"]
    ingest_records(call(7, src="7205550103", uniqueid="u-c"), call(7, src="7205550103",
                                                                      uniqueid="u-d"))
    assert store.trace(LINE, at=AFTER).outcome is Outcome.SUCCESS
    assert store.trace_records(LINE, analyst="cic")[-1]["call"]["calling"] == "+17205550103"


@pytest.mark.parametrize("ids", [("u-a", "u-b"), ("u-b", "u-a")])
def test_one_callers_records_of_an_instant_are_one_call_named_as_answered(store, ingest_records,
                                                                         ids):
    """Two records from one caller that began in the same second, ids of their own (cdr_csv
    as shipped writes no uniqueid): a phone that rang unanswered, its record written first,
    and the one that answered. Traced before the second came in, the call is named; traced
    again after, it is the same call (already traced, counted once), and the evidence
    names the record that says it was answered, whichever the index ranks first."""
    ingest_records(call(5, src="7205550103", uniqueid=ids[0], disposition="NO ANSWER", answer=""))
    assert store.trace(LINE, at=AFTER).outcome is Outcome.SUCCESS
    ingest_records(call(5, src="7205550103", uniqueid=ids[1]))
    assert store.trace(LINE, at=AFTER).outcome is Outcome.ALREADY_TRACED
    records = store.trace_records(LINE, analyst="cic")
    assert [(r["call"]["answered"], r["call"]["disposition"]) for r in records] == [
        (False, "no_answer"), (True, "answered")]
    assert [p.traced_calls for p in store.status(LINE).progress] == [1]


@pytest.mark.parametrize("ids", [("u-a", "u-b"), ("u-b", "u-a")])
def test_one_callers_records_of_an_instant_name_the_one_that_rang(store, ingest_records, ids):
    """One caller's two records of one second, neither answered: a phone that rang
    unanswered, and one whose user refused it 30 s in (BUSY, no alerting logged: a late
    refusal, which alone fails closed). One call that rang the line: the trace names it by
    the record that rang, whichever the index ranks first."""
    refused = cdr(dst=LINE, src="7205550103", start="2026-03-02 14:05:00", answer="",
                  end="2026-03-02 14:05:30", disposition="BUSY", uniqueid=ids[0])
    ingest_records(refused, call(5, src="7205550103", uniqueid=ids[1], disposition="NO ANSWER",
                                 answer=""))
    assert store.trace(LINE, at=AFTER).outcome is Outcome.SUCCESS
    (record,) = store.trace_records(LINE, analyst="cic")
    assert (record["call"]["calling"], record["call"]["disposition"]) == ("+17205550103",
                                                                        "no_answer")


@pytest.mark.parametrize("uuids", [("fs-a", "fs-b"), ("fs-b", "fs-a")])
def test_a_phone_that_lost_the_race_rang_beside_one_that_may_have(store, tmp_path, uuids):
    """FreeSWITCH, one caller's two B legs of one second to the line: one lost the race to
    answer (LOSE_RACE: it rang, another phone took the call), the other ended unanswered
    with NORMAL_CLEARING 12 s in (unknown: it may have rung, which alone fails closed). The
    call rang the line: named by the leg that lost the race, whichever ranks first."""
    show_freeswitch_legs(store, tmp_path)

    def leg(uuid: str, cause: str) -> bytes:
        return (f'"Caller","7205550103","{LINE}","default","2026-03-02 14:05:00","",'
                f'"2026-03-02 14:05:12","12","0","{cause}","{uuid}","","","PCMU","PCMU"').encode()

    path = cdr_file(tmp_path, leg(uuids[0], "LOSE_RACE"), leg(uuids[1], "NORMAL_CLEARING"),
                    name="legs.csv")
    cdrtrace.ingest(store, [path], fmt="freeswitch")
    assert store.trace(LINE, at=AFTER).outcome is Outcome.SUCCESS
    (record,) = store.trace_records(LINE, analyst="cic")
    assert record["call"]["disposition"] == "answered_elsewhere"


def _utc_text(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def test_a_feed_read_in_the_wrong_zone_fails_closed_once_a_call_is_stamped_ahead(
        store, ingest_records):
    """Asterisk writes UTC with usegmtime=yes; read as Denver's time, every call is placed
    7 h after it began. The call that rang 2 min before the *57 seems to begin after it,
    and a trace now would name the call of 8 h ago, with success. A call cannot begin
    after the trace is made: where the line's newest call is stamped more than 5 minutes
    ahead of the service's clock, its feed's times cannot be trusted, and the trace is
    untraceable, with the reason for the CIC."""
    now = time.time()

    def written(ago: float, src: str) -> bytes:          # as Asterisk writes it, in UTC
        return cdr(src=src, dst=LINE, disposition="NO ANSWER", start=_utc_text(now - ago),
                   answer="", end=_utc_text(now - ago + 20), uniqueid=f"u{src}")
    ingest_records(written(8 * 3600, "7205550101"), written(120, "7205550102"),
                   zone="America/Denver")
    result = store.trace(LINE)
    assert result.outcome is Outcome.UNTRACEABLE
    assert result.call_time is None                           # not a time it knows
    assert [t["call_time"] for t in store.status(LINE).traces] == [None]
    (record,) = store.trace_records(LINE, analyst="cic")
    assert record["call"]["calling"] == "+17205550102"       # the call stamped ahead
    assert "time zone or its switch's clock is wrong" in record["reason"]
    assert "720555" not in json.dumps(result.to_dict())


def test_a_call_stamped_within_the_clocks_margin_is_traced_as_usual(store, ingest_records):
    """A switch's clock a few minutes ahead of the service's is within the margin: the
    line's calls are traced by the usual rules (the trace at the switch's own time)."""
    now = time.time()
    ingest_records(cdr(src="7205550101", dst=LINE, start=_utc_text(now - 3600),
                       answer=_utc_text(now - 3595), end=_utc_text(now - 3500)),
                   cdr(src="7205550102", dst=LINE, disposition="NO ANSWER", answer="",
                       start=_utc_text(now + 240), end=_utc_text(now + 260), uniqueid="u2"))
    result = store.trace(LINE, at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 270)))
    assert result.outcome is Outcome.SUCCESS
    assert store.trace_records(LINE, analyst="cic")[0]["call"]["calling"] == "+17205550102"


def test_a_call_recorded_before_the_trace_but_stamped_after_it_names_no_call(store, ingest_records):
    """A switch whose clock runs 90 s ahead of the service's: the call that rang the line
    30 s before the *57 is stamped 60 s after it, and a trace made now named the call of an
    hour ago, with success. A trace on the service's clock (no time given) made at once
    sees only calls already recorded, so begun; one stamped after the activation shows
    the clocks disagree, and it may be the last call before the *57: untraceable, with the
    reason, the customer told no call time. A trace given a time (the switch's own, or an
    earlier moment) is not held to it: the calls after it may have begun after it."""
    now = time.time()
    ingest_records(cdr(src="7205550101", dst=LINE, start=_utc_text(now - 3600),
                       answer=_utc_text(now - 3595), end=_utc_text(now - 3500)),
                   cdr(src="7205550102", dst=LINE, disposition="NO ANSWER", answer="",
                       start=_utc_text(now + 60), end=_utc_text(now + 80), uniqueid="u2"),
                   cdr(src="7205550103", dst=LINE, disposition="NO ANSWER", answer="",
                       start=_utc_text(now + 90), end=_utc_text(now + 95), uniqueid="u3"))
    result = store.trace(LINE)
    assert result.outcome is Outcome.UNTRACEABLE and result.call_time is None
    (record,) = store.trace_records(LINE, analyst="cic")
    assert record["call"]["calling"] == "+17205550102"       # the first stamped after it
    assert "after the activation, was already recorded when the trace was made" in record["reason"]
    earlier = store.trace(LINE, at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 30)))
    assert earlier.outcome is Outcome.SUCCESS                # a time given: as usual


def test_a_pending_trace_resolved_later_names_the_call_before_it(store, ingest_records):
    """A trace that waited for a live feed resolves once the feed passes it; a call stamped
    after its activation may then have begun after it (the harasser calling again): the
    call before the activation is named, as the rules say."""
    from cdrtrace import testing

    now = time.time()
    ingest_records(cdr(src="7205550101", dst=LINE, start=_utc_text(now - 3600),
                       answer=_utc_text(now - 3595), end=_utc_text(now - 3500)))
    testing.pretend_live_feed(store, 9)                          # behind the activation
    assert store.trace(LINE).outcome is Outcome.PENDING           # on the service's clock
    ingest_records(cdr(src="7205550102", dst=LINE, disposition="NO ANSWER", answer="",
                       start=_utc_text(now + 2), end=_utc_text(now + 20), uniqueid="u2"))
    testing.pretend_live_feed(store, 9, idle_seen_us=time.time_ns() // 1000)   # caught up
    (resolved,) = store.resolve_pending()
    assert resolved.outcome is Outcome.SUCCESS
    assert store.trace_records(LINE, analyst="cic")[0]["call"]["calling"] == "+17205550101"


@pytest.mark.parametrize("other_zone", [None, "Europe/Berlin"])
def test_calls_in_the_repeated_autumn_hour_that_could_swap_name_neither(store, ingest_records,
                                                                         other_zone):
    """Denver's clocks go back at 02:00 on 2026-11-01: 01:00-02:00 happens twice, and
    Asterisk writes it twice alike. 01:50 is read in the first pass (07:50 UTC); 01:10 may
    be the second pass (08:10 UTC), after it, though read as 07:10 UTC. A trace at 08:12
    UTC cannot tell which call was the last: untraceable, never the 01:50 caller with
    success; its evidence names both, and the customer is told no call time. So too where
    another feed's zone (Berlin's, a week earlier each year) read local times first."""
    if other_zone:
        ingest_records(call(3, dst="3035550177"), zone=other_zone)
    def at(clock: str, src: str) -> bytes:
        return cdr(src=src, dst=LINE, start=f"2026-11-01 {clock}", answer="",
                   end=f"2026-11-01 {clock[:-2]}30", disposition="NO ANSWER", uniqueid=src)
    ingest_records(at("01:50:00", "7205550101"), at("01:10:00", "7205550102"),
                   zone="America/Denver")
    result = store.trace(LINE, at="2026-11-01T08:12:00Z")
    assert result.outcome is Outcome.UNTRACEABLE and result.call_time is None
    (record,) = store.trace_records(LINE, analyst="cic")
    assert {c["calling"] for c in record["call"]["folded"]} == {"+17205550101", "+17205550102"}
    assert "daylight saving repeats" in record["reason"]


@pytest.mark.parametrize(("zone", "second", "at", "named"), [
    ("America/Denver", "03:10:00", "2026-11-02T00:00:00Z", "+17205550102"),  # after the hour
    ("America/Denver", "00:30:00", "2026-11-02T00:00:00Z", "+17205550101"),  # before it
    ("UTC", "01:10:00", "2026-11-02T00:00:00Z", "+17205550101"),             # no DST: 01:50 last
])
def test_calls_in_the_repeated_hour_that_cannot_swap_are_traced(store, ingest_records, zone,
                                                                 second, at, named):
    """Where reading a repeated-hour call an hour later changes nothing, the trace names
    its call: 01:50 (first pass) and a call at 03:10, after the hour (the 03:10 call);
    01:50 and a call at 00:30, before it (01:50, whichever pass: both are after 00:30 and
    before the trace); and a zone with no repeated hour (01:50)."""
    def call_at(clock: str, src: str) -> bytes:
        return cdr(src=src, dst=LINE, start=f"2026-11-01 {clock}", answer="",
                   end=f"2026-11-01 {clock[:-2]}30", disposition="NO ANSWER", uniqueid=src)
    ingest_records(call_at("01:50:00", "7205550101"), call_at(second, "7205550102"), zone=zone)
    assert store.trace(LINE, at=at).outcome is Outcome.SUCCESS
    assert store.trace_records(LINE, analyst="cic")[0]["call"]["calling"] == named


def test_a_repeated_hour_call_read_later_still_after_the_activation_changes_nothing(
        store, ingest_records):
    """Denver's 01:10 (read 07:10 UTC, perhaps 08:10) and a call at 08:00:00 UTC from a
    feed whose times name one instant (the end of the repeated hour, not in it). A trace
    at 08:05: read either way, the 01:10 call is not the last before it (08:10 is after
    the activation), so the 08:00 call is named."""
    ingest_records(cdr(src="7205550101", dst=LINE, start="2026-11-01 01:10:00", answer="",
                       end="2026-11-01 01:10:30", disposition="NO ANSWER", uniqueid="d"),
                   zone="America/Denver")
    ingest_records(cdr(src="7205550102", dst=LINE, start="2026-11-01 08:00:00", answer="",
                       end="2026-11-01 08:00:30", disposition="NO ANSWER", uniqueid="u"),
                   zone="UTC")
    assert store.trace(LINE, at="2026-11-01T08:05:00Z").outcome is Outcome.SUCCESS
    assert store.trace_records(LINE, analyst="cic")[0]["call"]["calling"] == "+17205550102"


@pytest.mark.parametrize(("cot", "second", "named"), [
    ("01:10:00", "01:40:00", None),            # 07:10 or 08:10 UTC: the 01:40 call between
    ("01:10:00", "02:30:00", "+17205550101"),  # 02:30 (09:30 UTC) after either reading
    ("00:45:00", "01:40:00", "+17205550101"),  # 06:45 UTC, one instant: 01:40 after it
    ("mcid", "01:40:00", "+17205550104"),      # the call flagged in its own record
])
def test_a_switch_recorded_activation_in_the_repeated_hour_may_be_an_hour_later(
        tmp_path, cot, second, named):
    """A switch that records *57s in its CDRs at local times (a dialect's `cot` column):
    in the hour Denver's clocks show twice, an activation stamped 01:10 may be 07:10 or
    08:10 UTC. A call at 01:40 of the first pass (07:40 UTC) lies between: read at 07:10,
    the trace would name the 00:30 caller, though at 08:10 the 01:40 call was the last.
    It is untraceable, the 01:40 call in its record. With no call between the two
    readings, or an activation the clocks show once, the 00:30 call is named. A call the
    switch flagged in its own record (malicious call id, at its end, 01:10) is named."""
    from cdrtrace import config

    (tmp_path / "cdrtrace.toml").write_text(
        '[dialects.recorder]\nheader = true\ndelimiter = ";"\ntime = "local"\n'
        '[dialects.recorder.fields]\ncallid = "id"\ncalling = "from"\ncalled = "to"\n'
        'start = "begin"\nanswer = "connect"\nend = "finish"\ndisposition = "status"\n'
        'cot = "trace"\ncomment = "note"\n[dialects.recorder.dispositions]\nOK = "answered"\nBUSY = "busy"\n')
    form = config.load(tmp_path / "cdrtrace.toml").format("recorder")
    rows = ["id;from;to;begin;connect;finish;status;trace;note",
            "1;7205550101;3035550110;2026-11-01 00:30:00;2026-11-01 00:30:05;"
            "2026-11-01 00:31:00;OK;;",
            f"2;7205550102;3035550110;2026-11-01 {second};;2026-11-01 {second};BUSY;;",
            f"3;7205550103;3035550110;2026-11-01 {second};2026-11-01 {second};"
            f"2026-11-01 {second[:-2]}59;OK;;",
            f"4;3035550110;3035550110;2026-11-01 {cot};;2026-11-01 {cot};BUSY;2026-11-01 {cot};"
            if cot != "mcid" else "4;7205550104;3035550110;2026-11-01 01:05:00;"
            "2026-11-01 01:05:02;2026-11-01 01:10:00;OK;;callFlag=MALICIOUS"]
    if named is None:       # and a call at 01:20 (07:20 UTC), between the readings too
        rows.append("5;7205550105;3035550110;2026-11-01 01:20:00;2026-11-01 01:20:05;"
                    "2026-11-01 01:20:30;OK;;")
    (tmp_path / "calls.cdr").write_text("\n".join(rows) + "\n")
    store = cdrtrace.open(tmp_path / "s", create=True, zone="America/Denver")
    summary = cdrtrace.ingest(store, [str(tmp_path / "calls.cdr")], fmt=form,
                              zone="America/Denver")
    assert summary.switch_traces == 1
    (record,) = store.trace_records(LINE, analyst="cic")
    if named is None:
        assert record["outcome"] == "untraceable"
        assert [c["calling"] for c in record["call"]["activation_folded"]] == [
            "+17205550103", "+17205550105"]
        assert record["call"]["calling"] == "+17205550103"      # the last, read later
        assert "names two instants an hour apart" in record["reason"]
        assert store.status(LINE).traces[0]["call_time"] is None
    else:
        assert (record["outcome"], record["call"]["calling"]) == ("success", named)
    store.close()


def test_only_local_times_bring_their_zone_s_repeated_hours(store, ingest_records):
    """CUCM's epoch times name one instant each, in any zone: its ingest notes no repeated
    hour; an Asterisk file's local times bring their zone's (and no more once noted)."""
    from cdrtrace.store import folds

    sample = os.path.join(os.path.dirname(__file__), "..", "data", "samples", "cucm",
                          "cdr_StandAloneCluster_01_202603021403_1")
    cdrtrace.ingest(store, [sample], fmt="cucm", zone="America/Denver")
    with store.envs.read() as txn:
        assert len(store._tracer.lookup.folds(txn)) == 0
    ingest_records(call(3), zone="America/Denver")
    ingest_records(call(4), zone="America/Denver")
    with store.envs.read() as txn:
        held = store._tracer.lookup.folds(txn)
        assert txn.get(folds.FOLD_ZONES, db=store.envs.db["meta"]) == b'["America/Denver"]'
        # the zone is the Asterisk file's feed's (the unnamed feed 0), not every feed's
        assert txn.get(folds.FOLD_FEEDS, db=store.envs.db["meta"]) == b'{"0": ["America/Denver"]}'
    first = 1_793_516_400 * 10**6                     # 2026-11-01T07:00:00Z: 01:00 MDT
    assert [first, first + 3600 * 10**6, 3600 * 10**6] in held.tolist()
    assert len(held) == len(timezones.fold_intervals("America/Denver"))


def test_zones_noted_before_their_feeds_were_hold_every_feed(store):
    """A store whose repeated hours were noted before the feeds that read them were kept
    (FOLDS and FOLD_ZONES alone) holds every feed's calls of those hours as ones that may
    have begun later, and still does once a feed's own zone is noted beside them."""
    from cdrtrace.store import folds

    meta, hour = store.envs.db["meta"], 3600 * 10**6
    denver = 1_793_518_200 * 10**6        # 2026-11-01T07:30:00Z, Denver's repeated hour
    london = 1_792_887_600 * 10**6        # 2026-10-25T00:20:00Z, London's

    def legacy(txn):
        txn.put(folds.FOLDS, folds.of_zone("America/Denver").tobytes(), db=meta)
        txn.put(folds.FOLD_ZONES, b'["America/Denver"]', db=meta)
    store.envs.write(legacy)
    with store.envs.read() as txn:
        assert folds.shifts(txn, meta, [(5, denver), (5, london)]) == [hour, 0]
    store.envs.write(lambda txn: folds.add_zone(txn, meta, "Europe/London", 2))
    with store.envs.read() as txn:
        assert json.loads(txn.get(folds.FOLD_FEEDS, db=meta)) == {
            "*": ["America/Denver"], "2": ["Europe/London"]}
        assert folds.shifts(txn, meta, [(5, denver), (5, london), (2, london), (2, denver)]) == [
            hour, 0, hour, hour]


def test_no_call_before_any_call(store, ingest_records):
    ingest_records(call(3))
    assert store.trace(LINE, at="2026-03-02T14:00:00Z").outcome is Outcome.NO_CALL
    assert store.trace("7205550100", at=AFTER).outcome is Outcome.NO_CALL


def test_a_trace_older_than_the_held_calls_is_refused_clearly(store, ingest_records):
    ingest_records(*(call(m, src=f"72055501{m:02d}") for m in range(10, 16)))
    with pytest.raises(cdrtrace.TraceError, match="the index holds the last 4 calls of "
                       r"\+13035550110 and all began after 2026-03-02T14:05:00Z"):
        store.trace(LINE, at="2026-03-02T14:05:00Z")


def test_bad_line_and_time_are_clear_errors(store):
    with pytest.raises(cdrtrace.NumberError, match="not a telephone line: 'hello'"):
        store.trace("hello")
    with pytest.raises(cdrtrace.TraceError, match="not an ISO-8601 time: 'noon'"):
        store.trace(LINE, at="noon")


@pytest.mark.parametrize(("at", "named"), [
    ("2026-11-01T01:30-07:00", "+17205550102"),     # the hour's second pass: 08:30 UTC
    ("2026-11-01T01:30-06:00", "+17205550101"),     # its first pass: 07:30 UTC
    ("2026-11-01T03:00", "+17205550102"),           # no offset, one instant: 10:00 UTC
    ("2026-11-01T00:59", "+17205550101"),           # no offset, one instant: 06:59 UTC
])
def test_an_activation_time_the_zone_shows_twice_or_never_is_refused(tmp_path, at, named):
    """A store in Denver, a feed whose times name their instant (UTC): a call at 06:30
    UTC (00:30 in Denver), then one at 08:10 UTC (01:10, the second time Denver's clocks
    show that hour). '01:30' with no offset is 07:30 or 08:30 UTC: read as either, the
    trace could name the 06:30 caller for a *57 made after the 08:10 call. It is
    refused, naming both instants and offsets, and nothing is recorded; a time with an
    offset, or one the clocks show once, is traced. '02:30' on 8 March, an hour Denver's
    clocks skip, is refused too."""
    store = cdrtrace.open(tmp_path / "denver", create=True, zone="America/Denver")
    path = cdr_file(tmp_path, cdr(src="7205550101", dst=LINE, start="2026-11-01 06:30:00",
                                  answer="", end="2026-11-01 06:30:30", disposition="NO ANSWER",
                                  uniqueid="a"),
                    cdr(src="7205550102", dst=LINE, start="2026-11-01 08:10:00", answer="",
                        end="2026-11-01 08:10:30", disposition="NO ANSWER", uniqueid="b"))
    cdrtrace.ingest(store, [path], zone="UTC")
    with pytest.raises(cdrtrace.TraceError, match=re.escape(
            "the time '2026-11-01T01:30' is shown twice by the clocks of America/Denver (they "
            "go back across it): 2026-11-01T07:30:00Z or 2026-11-01T08:30:00Z; give its "
            "offset, -06:00 or -07:00")):
        store.trace(LINE, at="2026-11-01T01:30")
    with pytest.raises(cdrtrace.TraceError, match=re.escape(
            "the time '2026-03-08T02:30' is never shown by the clocks of America/Denver (they "
            "go forward across it); give its offset")):
        store.trace(LINE, at="2026-03-08T02:30")
    assert store.trace_records(LINE, analyst="cic") == []
    assert store.trace(LINE, at=at).outcome is Outcome.SUCCESS
    (record,) = store.trace_records(LINE, analyst="cic")
    assert (record["trace_id"], record["call"]["calling"]) == ("T00000001", named)
    store.close()


# once per call per line; R8: three distinct traced calls
def test_r8_progress_counts_distinct_traced_calls_per_origin(store, ingest_records):
    harasser, other = "7205550666", "7205550777"
    ingest_records(call(1, src=harasser))
    assert store.trace(LINE, at="2026-03-02T14:02:00Z").successful
    assert store.trace(LINE, at="2026-03-02T14:02:10Z").outcome is Outcome.ALREADY_TRACED
    ingest_records(call(5, src=other))
    store.trace(LINE, at="2026-03-02T14:06:00Z")
    ingest_records(call(10, src=harasser, disposition="NO ANSWER", answer=""))
    store.trace(LINE, at="2026-03-02T14:11:00Z")
    status = store.status(LINE)
    assert [(p.label, p.traced_calls, p.eligible_for_action) for p in status.progress] == [
        ("Caller A", 2, False), ("Caller B", 1, False)]
    assert not status.eligible_for_action
    ingest_records(call(30, src=harasser))
    store.trace(LINE, at="2026-03-02T14:31:00Z")
    status = store.status(LINE)
    assert [(p.label, p.traced_calls, p.eligible_for_action) for p in status.progress] == [
        ("Caller A", 3, True), ("Caller B", 1, False)]
    assert status.eligible_for_action
    assert [t["outcome"] for t in status.traces] == [
        "success", "already_traced", "success", "success", "success"]


def test_r8_threshold_is_configurable(tmp_path):
    store = cdrtrace.open(tmp_path / "s", create=True, threshold=2)
    path = tmp_path / "c.csv"
    path.write_bytes(call(1, src="7205550666") + b"\n")
    cdrtrace.ingest(store, [str(path)])
    store.trace(LINE, at=AFTER)
    (progress,) = store.status(LINE).progress
    assert (progress.traced_calls, progress.threshold, progress.eligible_for_action) == (1, 2, False)


# R9: dates and times kept
def test_r9_trace_record_keeps_call_and_trace_times_and_evidence(store, ingest_records, tmp_path):
    ingest_records(call(3, src="7205550101", uniqueid="1772460180.7"))
    result = store.trace(LINE, at="2026-03-02T14:04:00Z")
    (record,) = store.trace_records(LINE, analyst="cic")
    assert record["trace_id"] == result.trace_id
    assert record["activated_us"] == 1772460240 * 10**6
    assert record["call"]["start_us"] == 1772460180 * 10**6
    assert record["call"]["calling"] == "+17205550101"
    assert record["call"]["answered"] is True and record["call"]["forwarded"] is False
    assert record["call"]["source"].endswith(".csv") and record["call"]["offset"] == 0
    assert record["call"]["feed"] == 0 and len(record["call"]["call_id"]) == 16
    assert record["traced_at_us"] >= record["activated_us"]


SYNC_SPY = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>
static void note(const char *what, int fd) {      /* which file each sync flushed */
    char link[64], path[512], line[600];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    path[n > 0 ? n : 0] = 0;
    int len = snprintf(line, sizeof line, "SYNC %s %s\n", what, path);
    (void)!write(2, line, len);
}
int fdatasync(int fd) { static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fdatasync");
                        note("fdatasync", fd); return real(fd); }
int fsync(int fd) { static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fsync");
                    note("fsync", fd); return real(fd); }
"""


def test_success_is_durable_before_the_announcement(tmp_path):
    """The trace's evidence is flushed to the disk (fdatasync of the evidence file, seen by
    a spy on the C library) before trace() returns; and a child that exits right after
    returning left it in the store."""
    db = tmp_path / "s"
    store = cdrtrace.open(db, create=True)
    path = tmp_path / "c.csv"
    path.write_bytes(call(3) + b"\n")
    cdrtrace.ingest(store, [str(path)])
    store.close()
    (tmp_path / "spy.c").write_text(SYNC_SPY)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "spy.so"),
                    str(tmp_path / "spy.c"), "-ldl"], check=True)
    code = ("import cdrtrace, os, sys; s = cdrtrace.open(sys.argv[1]); "
            "print('TRACING', file=sys.stderr, flush=True); "
            "r = s.trace(sys.argv[2], at='2026-03-02T15:00:00Z'); "
            "print('RETURNED', file=sys.stderr, flush=True); "
            "print(r.outcome.value, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code, str(db), LINE], capture_output=True,
                         text=True, check=True,
                         env={**os.environ, "LD_PRELOAD": str(tmp_path / "spy.so")})
    assert out.stdout.strip() == "success"
    during = out.stderr.split("TRACING\n", 1)[1].split("RETURNED\n", 1)[0]
    assert f"{db}/evidence/data.mdb" in during, out.stderr      # flushed before the answer
    reopened = cdrtrace.open(db)
    assert [r["outcome"] for r in reopened.trace_records(LINE, analyst="cic")] == ["success"]


# R10: a fixed announcement per outcome
def test_r10_every_outcome_has_a_fixed_announcement(store, ingest_records):
    ingest_records(call(3))
    result = store.trace(LINE, at=AFTER)
    assert (result.announcement_id, result.announcement) == ANNOUNCEMENTS[Outcome.SUCCESS]
    assert json.loads(result.to_json())["announcement_id"] == "COT-SUCCESS"
    ids = [ANNOUNCEMENTS[o][0] for o in Outcome]
    assert len(set(ids)) == len(Outcome)
    for outcome in Outcome:
        text = ANNOUNCEMENTS[outcome][1]
        assert ("not successful" in text) == (outcome in (Outcome.UNTRACEABLE, Outcome.NO_CALL))


def test_extensions_and_numbers_never_collide(store, ingest_records):
    ingest_records(call(3, dst="1001", src="7205550101"),
                   call(4, dst="+1 (303) 555-1001", src="7205550102"))
    store.trace("1001", at=AFTER)
    store.trace("13035551001", at=AFTER)
    assert store.trace_records("1001", analyst="cic")[0]["call"]["calling"] == "+17205550101"
    assert store.trace_records("303.555.1001", analyst="cic")[0]["call"]["calling"] == "+17205550102"


def test_analyst_view_needs_an_identity(store, ingest_records):
    ingest_records(call(3))
    with pytest.raises(cdrtrace.AccessError, match="needs an analyst identity"):
        store.last_calls(LINE, analyst="  ")
    assert store.last_calls(LINE, analyst="ann")[0]["calling"] == "+13035550142"


# ------------------------------------------------------------------ reads write nothing

def test_opening_status_stats_and_feeds_write_nothing(store, ingest_records, tmp_path):
    from cdrtrace import cli, testing

    ingest_records(call(3))
    store.trace(LINE, at=AFTER)
    path = store.path
    store.close()
    before = None
    for readonly_index in (False, True):
        with cdrtrace.open(path, readonly_index=readonly_index) as reader:
            before = before or testing.commits(reader)
            reader.status(LINE)
            reader.stats()
            reader.live_feeds()
            assert testing.commits(reader) == before
    assert cli.main(["feeds", "--db", str(path), "--json"]) == 0
    assert cli.main(["status", LINE, "--db", str(path)]) == 0
    with cdrtrace.open(path) as reader:
        assert testing.commits(reader) == before
        reader.trace(LINE, at=AFTER)                 # a write: the evidence moves on
        assert testing.commits(reader)[1] > before[1]


def test_status_shows_a_pending_trace_and_the_next_trace_resolves_it(store, ingest_records):
    from cdrtrace import testing

    ingest_records(call(3))
    testing.pretend_live_feed(store, 9)              # a follower, behind every activation
    assert store.trace(LINE, at=AFTER).outcome is Outcome.PENDING
    testing.pretend_live_feed(store, 9, idle_seen_us=2**62)   # it caught up, then stopped
    commits = testing.commits(store)
    assert store.status(LINE).traces[0]["outcome"] == "pending"   # a read resolves nothing
    assert testing.commits(store) == commits and testing.pending_traces(store) == 1
    again = store.trace(LINE, at=AFTER)
    assert again.outcome is Outcome.ALREADY_TRACED  # the first, resolved first, named the call
    assert [t["outcome"] for t in store.status(LINE).traces] == ["success", "already_traced"]
    assert testing.pending_traces(store) == 0


def test_an_evidence_record_reads_back_as_written_whatever_its_values():
    """Records are written by orjson; what it refuses (an integer past 64 bits, a lone
    surrogate) by json: either way the stored bytes read back as the record."""
    from cdrtrace.evidence.traces import encode
    record = {"trace_id": "T00000001", "line": "+13035550110", "enrichment": None,
              "call": {"calling": "id:zoë@pbx.example", "start_us": 1772480783000000,
                       "answered": True}, "tied": [1, 2]}
    for value in (record, {**record, "big": 1 << 70}, {**record, "odd": "\ud800"}):
        assert json.loads(encode(value)) == value


def test_a_trace_number_not_past_the_last_writes_no_evidence(store, ingest_records, monkeypatch):
    """The record is appended under its number; a number not past the last (which the
    numbering never gives) fails the trace, and nothing of it is kept."""
    from cdrtrace.evidence import replication
    ingest_records(call(3, src="7205550101"))
    assert store.trace(LINE, at=AFTER).outcome is Outcome.SUCCESS
    monkeypatch.setattr(replication, "next_number", lambda last, replica, replicas: 1)
    with pytest.raises(cdrtrace.TraceError, match="not past the last"):
        store.trace("3035550111", at=AFTER)
    assert len(store.trace_records(analyst="cic")) == 1


@pytest.mark.parametrize("given", [
    {"at": 12.5}, {"at": True}, {"at": b"2026-03-02T14:05:00Z"}, {"wait": "1"}, {"wait": -1},
    {"wait": float("nan")}, {"wait": float("inf")}, {"wait": True}, {"wait": 3601}])
def test_a_trace_with_an_activation_time_or_wait_of_another_kind_is_refused_unrecorded(
        store, ingest_records, given):
    """The Python API as other switch software calls it: `at` is ISO-8601 text or
    microseconds, `wait` seconds from 0 to an hour. Anything else is a TraceError saying
    so, before a trace record is written (True was 1 us after 1970: a trace recorded as
    activated then; a float time or a text wait ended in an AttributeError or TypeError)."""
    ingest_records(cdr())
    with pytest.raises(cdrtrace.TraceError, match="activation time is|wait is seconds"):
        store.trace("3035550110", **given)
    assert store.trace_records(analyst="ann") == []


@pytest.mark.parametrize("files", [1, 2])
def test_a_call_id_the_switch_reused_days_later_is_another_call(store, tmp_path, files):
    """CUCM's call ids are unique "at least for some days" (4.x reused them under heavy
    traffic); records with one id are legs of one call only within a day of each other.
    A call that reused the id of one the line received three days earlier merged into it:
    the new call vanished, and the *57 named the older, innocent caller (success). Its
    trace names the new call, which is not `already_traced` for the old call's trace;
    a second *57 of the new call is."""
    from test_formats import T0, cucm_file, cucm_row

    later = T0 + 3 * 86_400
    proof = cucm_row(5, T0 - 60, orig=16, dest=0, calling="7205550170",   # cleared: the flag
                     original="7205550171", final="7205550171")
    old = cucm_row(7, T0, T0 + 5, calling="3035550142", original=LINE, final=LINE)
    new = cucm_row(7, later, later + 5, calling="3035550199", original=LINE, final=LINE)
    new_leg = cucm_row(7, later + 20, later + 25, calling="3035550199", original=LINE,
                       final=LINE)                    # its second leg, written first
    legs = [cucm_row(8, t, t + 5, calling="3035550142", original="3035550188",
                     final="3035550188") for t in (later + 3600, later + 3600 + 86_399)]
    if files == 1:
        cdrtrace.ingest(store, [cucm_file(tmp_path, [proof, new_leg, old, new] + legs)],
                        fmt="cucm")
    else:     # the new call and the later leg merged into what the store holds
        for part, batch in enumerate(([proof, old, legs[0]], [new_leg, new, legs[1]])):
            (tmp_path / str(part)).mkdir()
            cdrtrace.ingest(store, [cucm_file(tmp_path / str(part), batch)], fmt="cucm")
    utc = timezones.format_utc
    assert [c["start"] for c in store.last_calls(LINE, analyst="cic")] == [
        utc(later * 1_000_000), utc(T0 * 1_000_000)]
    assert len(store.last_calls("3035550188", analyst="cic")) == 1   # within a day: one call
    first = store.trace(LINE, at=utc((T0 + 60) * 1_000_000))
    assert first.outcome is Outcome.SUCCESS
    second = store.trace(LINE, at=utc((later + 60) * 1_000_000))
    assert second.outcome is Outcome.SUCCESS
    named = {r["trace_id"]: r["call"]["calling"] for r in store.trace_records(LINE, analyst="cic")}
    assert (named[first.trace_id], named[second.trace_id]) == ("+13035550142", "+13035550199")
    again = store.trace(LINE, at=utc((later + 120) * 1_000_000))
    assert again.outcome is Outcome.ALREADY_TRACED


def test_three_calls_from_one_caller_are_three_whatever_ids_the_switch_reused(store, tmp_path):
    """A caller's calls are counted toward the customer's three as calls: a call id the
    switch reused days later is another call (the customer's status, the CIC's report)."""
    from test_formats import T0, cucm_file, cucm_row

    from cdrtrace.reports import analytics

    days = [T0 + k * 3 * 86_400 for k in range(3)]
    rows = [cucm_row(5, T0 - 60, orig=16, dest=0, calling="7205550170",
                     original="7205550171", final="7205550171")]
    rows += [cucm_row(7, t, t + 5, calling="3035550142", original=LINE, final=LINE) for t in days]
    cdrtrace.ingest(store, [cucm_file(tmp_path, rows)], fmt="cucm")
    for t in days:
        assert store.trace(LINE, at=timezones.format_utc((t + 60) * 1_000_000)).successful
    (progress,) = store.status(LINE).progress
    assert (progress.traced_calls, progress.eligible_for_action) == (3, True)
    table = store.trace_columns(analyst="cic", columns=analytics.REPEAT_COLUMNS)
    (row,) = analytics.repeat_origins(table, 3, 2).to_pylist()
    assert (row["traced_calls"], row["eligible"]) == (3, True)
    (hot,) = analytics.hot_origins(table, 1).to_pylist()
    assert hot["traced_calls"] == 3
