"""A call through a hunt pilot or a Dial group, read after a trace, that may have rung the
traced line between the call the trace named and its *57 (docs/trace-rules.md, "A call
that comes in after the trace"): its record names at most one phone, so no line's index
holds it for the others, and a trace made once it is in is untraceable. The success made
before it came in is contested; calls through a pilot that could not have rung the line
in that time contest nothing. Expected values follow from the rules: the window is from
the call named (its instant included) to the activation; the phones a group may have rung
are those its record names (an Asterisk Dial's devices), else the configuration's, else
any of its feed's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_documents import AUTHORITY, text_of
from test_stream import Runner, append, stamp, wait_until

import cdrtrace
from cdrtrace.config import Feed
from cdrtrace.evidence import later
from cdrtrace.evidence.outcomes import Outcome
from cdrtrace.ingestion import following
from cdrtrace.ingestion.live import StreamOptions
from cdrtrace.parsing.parsers import get_format
from conftest import cdr, cdr_file

LINE = "6001"
AT = "2026-03-02T14:10:00Z"
GROUP = "SIP/6001&SIP/6002&SIP/6003,10"
NUMBERS = ("7205550199", "7205550100")


def call(src: str, start: str, uid: str, dst: str = LINE, **more) -> bytes:
    """A call to dst (the phone in dstchannel, unless given) begun at start (a time on 2
    March 2026, or a date and time), UTC, ended within its minute."""
    start = start if " " in start else f"2026-03-02 {start}"
    more.setdefault("end", f"{start[:17]}59")
    more.setdefault("dstchannel", f"SIP/{dst}-0000{uid[-2:]}")
    return cdr(src=src, clid=f'"Someone" <{src}>', start=start, dst=dst, uniqueid=uid, **more)


def group(start: str, uid: str, rang: str = "6003", data: str = GROUP,
          src: str = "7205550100") -> bytes:
    """Mal's call to the group's number, 900, that nobody answered: a Dial to several
    phones, its record naming the last dialled (rang)."""
    return call(src, start, uid, dst="900", dstchannel=f"SIP/{rang}-0000{uid[-2:]}",
                lastdata=data, disposition="NO ANSWER", answer="")


PAT = call("7205550199", "13:00:00", "sw.01")        # Pat's call to 6001, answered


def ingest(store, tmp_path, *records: bytes, feed: int = 1):
    path = cdr_file(tmp_path, *records, name=f"cdr-{len(list(tmp_path.iterdir()))}.csv")
    return cdrtrace.ingest(store, [path], fmt="asterisk", zone="UTC", feed_id=feed)


def first_trace(store, tmp_path, *more: bytes) -> None:
    ingest(store, tmp_path, PAT, *more)
    result = store.trace(LINE, at=AT)
    assert (result.outcome.value, result.call_time) == ("success", "2026-03-02T13:00:00Z")


def note_of(store, line: str = LINE) -> dict | None:
    return store.trace_records(line, analyst="cic")[0].get("later_call")


def checked(store, tmp_path) -> None:
    """Another file read: its ingest checks the traces made since the last (the calls
    through a pilot that come later are then checked as their commit queues them)."""
    ingest(store, tmp_path, call("7205550144", "16:00:00", "sw.08", dst="6009"))


@pytest.mark.parametrize("check_first", [True, False], ids=["checked", "unchecked"])
def test_a_group_call_read_later_that_may_have_rung_the_line_contests_its_trace(
        store_either, tmp_path, check_first):
    """Pat's 13:00 call traced at 14:10; then Mal's 14:03 call to the group 900, which
    dialled 6001, 6002 and 6003 (its record names 6003), is read: 6001 may have rung last.
    (The trace checked by an ingest between, or first by this one.)"""
    store = store_either
    first_trace(store, tmp_path)
    assert [p.traced_calls for p in store.status(LINE).progress] == [1]
    if check_first:
        checked(store, tmp_path)
    summary = ingest(store, tmp_path, group("14:03:00", "sw.02"))
    assert summary.contested == 1
    note = note_of(store)
    assert {k: note[k] for k in ("start", "through_hunt_pilot", "named")} == {
        "start": "2026-03-02T14:03:00Z", "through_hunt_pilot": "900", "named": "6003"}
    assert not any(n in repr(note) for n in NUMBERS)
    status = store.status(LINE)
    assert status.progress == ()                    # counts toward nothing
    assert status.traces[0]["call_time"] is None
    assert not any(n in repr(status) for n in NUMBERS)
    timeline = store.timeline(LINE, "7205550199", analyst="cic").to_pylist()
    assert [r["outcome"] for r in timeline if r["trace_id"]] == ["contested"]
    # a *57 now fails closed, as the first would have with the group call in
    assert store.trace(LINE, at=AT).outcome is Outcome.UNTRACEABLE


def test_a_group_call_of_the_named_call_s_instant_from_another_caller_contests(store, tmp_path):
    """Whole-second times: a group call that began at 13:00:00 too, from another caller, may
    have rung the line after Pat's call."""
    first_trace(store, tmp_path)
    checked(store, tmp_path)
    ingest(store, tmp_path, group("13:00:00", "sw.02"))
    assert note_of(store)["start"] == "2026-03-02T13:00:00Z"


def test_group_calls_read_later_that_could_not_have_rung_it_contest_nothing(store, tmp_path):
    """Before the call named, at the *57 itself, a Dial that did not dial 6001, a group
    of another switch (6001 is an extension of feed 1's), and the call named itself in
    another record (Asterisk 12+ writes one per phone dialled, each its own id, here the
    one of 6002 that did not answer): the trace stands."""
    own = "SIP/6001&SIP/6002,10"          # Pat's call to 800, answered by 6001
    first_trace(store, tmp_path, call("7205550199", "13:00:00", "sw.01", dst="800",
                                      dstchannel="SIP/6001-00000001", lastdata=own))
    checked(store, tmp_path)
    store.trace("6009", at="2026-03-02T16:30:00Z")     # a trace after 14:10 (of another line)
    ingest(store, tmp_path,
           group("12:59:00", "sw.03"),                                      # before it
           group("14:10:00", "sw.04"),                                      # at the *57
           group("14:03:00", "sw.05", data="SIP/6002&SIP/6003,10"),         # not 6001
           group("13:00:00", "sw.06", rang="6002", data=own, src="7205550199"))   # Pat's
    assert note_of(store) is None
    assert [p.traced_calls for p in store.status(LINE).progress] == [1]
    assert store.trace(LINE, at=AT).outcome is Outcome.ALREADY_TRACED      # as made now
    ingest(store, tmp_path, group("14:03:00", "sw.07"), feed=2)             # another switch
    assert note_of(store) is None


def test_the_named_call_s_own_record_read_again_contests_nothing(store, tmp_path):
    """Pat's call through the group 800, answered by 6001, traced; four newer calls push
    it out of 6001's index; a file that repeats its record (a replay) is read: the same
    call, not a later one."""
    pats = call("7205550199", "13:00:00", "sw.01", dst="800", dstchannel="SIP/6001-00000001",
                lastdata="SIP/6001&SIP/6002,10")
    first_trace(store, tmp_path, pats)
    ingest(store, tmp_path, *(call(f"72055502{n}0", f"15:0{n}:00", f"sw.a{n}") for n in range(4)))
    assert "2026-03-02T13:00:00Z" not in repr(store.last_calls(LINE, analyst="cic"))
    ingest(store, tmp_path, pats)
    assert note_of(store) is None


def test_a_trace_the_commit_did_not_see_is_checked_against_group_calls_at_the_next_ingest(
        store, tmp_path, monkeypatch):
    """A trace recorded while the group call's file was being committed (read before the
    trace was in): the next ingest checks it against the calls through a pilot too."""
    first_trace(store, tmp_path)
    with monkeypatch.context() as m:
        m.setattr(store, "traced_lines", lambda: (np.empty(0, np.uint64), np.empty(0, np.int64)))
        m.setattr(store, "note_later_calls", lambda: 0)
        ingest(store, tmp_path, group("14:03:00", "sw.02"))
    assert note_of(store) is None
    checked(store, tmp_path)
    assert note_of(store)["through_hunt_pilot"] == "900"


def test_a_group_call_after_a_purge_s_cutoff_still_contests(store, tmp_path):
    """A purge removed the calls through a pilot that began before 13:30 (the trace of Pat's
    13:00 call, at 14:10, is kept): a group call of 14:03 read after contests it, as the
    ones before the cutoff were checked when it was made."""
    first_trace(store, tmp_path, group("12:00:00", "sw.09", data="SIP/6002&SIP/6003,10"))
    now = 1772458200 * 10**6 + 86_400 * 10**6       # a day after 13:30, 2 March 2026
    store.purge(operator="ops", older_than_days=1.0, now_us=now)
    assert store.trace_records(LINE, analyst="cic")
    ingest(store, tmp_path, group("14:03:00", "sw.02"))
    assert note_of(store)["start"] == "2026-03-02T14:03:00Z"


def test_a_pending_trace_resolved_is_checked_against_group_calls_read_later(store, tmp_path):
    """A *57 ahead of a live feed pends, then resolves to Pat's call; a group call that
    began in between, read after from the switch's other file, contests it."""
    path = tmp_path / "Master.csv"
    append(path, call("7205550199", stamp(-600), "sw.01") + b"\n")
    options = StreamOptions(batch_ms=5, poll_ms=2, heartbeat_s=0.05, cdr_delay_s=3600,
                            idle_exit_s=1.0)
    run = Runner(following.follow, store=store, path=str(path), fmt="asterisk", zone="UTC",
                 options=options)
    wait_until(lambda: store.status(LINE).traces or store.last_calls(LINE, analyst="cic"))
    at = stamp(-60).replace(" ", "T") + "Z"
    assert store.trace(LINE, at=at).outcome is Outcome.PENDING
    # a late group call from before Pat's: its commit checks the traces, this one pending
    append(path, group(stamp(-700), "sw.09") + b"\n")
    wait_until(lambda: len(store.last_calls("900", analyst="cic")) == 1)
    assert store.status(LINE).traces[0]["outcome"] == "pending"
    run.thread.join(10.0)                  # its file idle: the data is complete
    assert run.finish().resolved == 1
    assert store.status(LINE).traces[0]["outcome"] == "success"
    ingest(store, tmp_path, group(stamp(-300), "sw.02"), feed=0)       # the follower's feed
    assert note_of(store)["through_hunt_pilot"] == "900"


def test_a_case_report_says_a_group_call_contests_the_trace(tmp_path):
    store = cdrtrace.open(tmp_path / "s", create=True)
    first_trace(store, tmp_path)
    ingest(store, tmp_path, group("14:03:00", "sw.02"))
    case = store.open_case(LINE, "Caller A", agency=AUTHORITY["agency"],
                           officer=AUTHORITY["officer"], case_number=AUTHORITY["case_number"],
                           analyst="ann", waive_reason="threats")
    store.disclose(AUTHORITY, analyst="ann", line=LINE)
    text = " ".join(text_of(store.case_report(case["case_id"], analyst="ann")).split())
    assert ("T00000001 a call through hunt pilot 900 that began 2026-03-02T14:03:00Z, "
            "ingested later") in text
    assert "7205550100" not in text
    store.close()


REAL = {   # file, zone, country code; the three phones' calls named before, and the late
    # record that contests each trace (its start, and the pilot it came through, if any)
    "ring-all": ("asterisk-11-ring-all-fr.csv", "Europe/Paris", 33,
                 {"6001": ("08:00", "900"), "6002": ("08:10", "900"), "6003": ("08:15", None)}),
    "queue": ("asterisk-11-queue-it.csv", "Europe/Rome", 39,
              {"201": ("08:00", "700"), "202": ("08:05", "700"), "203": ("08:08", "700")}),
}


@pytest.mark.parametrize("sample", REAL)
def test_a_real_pbx_file_read_in_two_parts_contests_the_traces_between(store, tmp_path, sample):
    """data/samples/real's two Asterisk 11 offices read in two parts, *57s at 09:50 between:
    the French one's 09:40 call to its group 900 dialled 6001, 6002 and 6003 (its one
    record names 6003); the Italian one's 09:30 call waited in its queue 700 (no members
    listed: any phone of the office may have rung). Read whole, the phones the records do
    not name are untraceable. With the first three records only (each phone's direct call),
    each named its caller; the rest, read after, contests every trace (6003's by the record
    that names it, the others' by the call through the pilot)."""
    name, zone, country_code, phones = REAL[sample]
    real = (Path(__file__).resolve().parent.parent / "data/samples/real" / name
            ).read_bytes().splitlines(keepends=True)
    for n, part in enumerate((real[:3], real[3:])):
        (tmp_path / f"part{n}.csv").write_bytes(b"".join(part))
        summary = cdrtrace.ingest(store, [str(tmp_path / f"part{n}.csv")], fmt="asterisk",
                                  zone=zone, country_code=country_code)
        if n == 0:
            assert [(r.outcome.value, r.call_time) for r in (
                store.trace(line, at="2013-03-12T09:50:00+01:00") for line in phones)] == [
                ("success", f"2013-03-12T{named}:00Z") for named, _ in phones.values()]
    assert summary.contested == 3
    late = "2013-03-12T08:40:00Z" if sample == "ring-all" else "2013-03-12T08:30:00Z"
    assert [(note_of(store, line)["start"], note_of(store, line).get("through_hunt_pilot"))
            for line in phones] == [(late, pilot) for _, pilot in phones.values()]
    assert all(store.status(line).progress == () for line in phones)


@pytest.mark.parametrize("listed", [(), ("3001", "3002")], ids=["unlisted", "listed"])
def test_a_cucm_hunt_cluster_s_file_read_in_two_parts_contests_the_traces_between(
        store, tmp_path, listed):
    """data/samples/cucm/cdr_HuntCluster_01_202603021500_1 read in two parts, *57s at 15:00
    between: its calls through the pilot 2000 from 14:30 name no member, so read whole,
    3001, 3002 and 3003 are untraceable where no member is listed for it. With only the
    direct calls of 14:00 to 14:10 read, each named its own caller; the pilot's calls, read
    after (an ingest of 3004's call between checked the traces), contest all three; where
    the feed lists 3001 and 3002 as its members, those two."""
    feed = Feed("hunts", get_format("cucm"), hunt_groups=(("2000", listed),) if listed else ())
    rows = (Path(__file__).resolve().parent.parent / "data/samples/cucm/"
            "cdr_HuntCluster_01_202603021500_1").read_bytes().splitlines(keepends=True)
    parts = (rows[:6], rows[:2] + rows[9:], rows[:2] + rows[6:9])   # 3004's call between
    for n, part in enumerate(parts):
        path = tmp_path / f"cdr_HuntCluster_01_20260302150{n}_1"
        path.write_bytes(b"".join(part))
        summary = cdrtrace.ingest(store, [str(path)], feed=feed)
        if n == 0:
            assert [store.trace(line, at="2026-03-02T15:00:00Z").call_time
                    for line in ("3001", "3002", "3003")] == [
                "2026-03-02T14:00:00Z", "2026-03-02T14:05:00Z", "2026-03-02T14:10:00Z"]
    members = listed or ("3001", "3002", "3003")
    assert summary.contested == len(members)
    assert [{k: note_of(store, line)[k] for k in ("start", "through_hunt_pilot", "named")}
            for line in members] == [
        {"start": "2026-03-02T14:30:00Z", "through_hunt_pilot": "2000", "named": None}] * len(members)
    assert listed == () or note_of(store, "3003") is None


def test_a_store_from_the_release_before_checks_its_successes_against_group_calls_once(
        store, tmp_path, monkeypatch):
    """A release before this one checked late calls against the lines' indexes alone: a
    group call read after a trace left it standing, and its store marks every trace
    checked. The first ingest of this release checks every success once against the
    calls through a pilot it holds."""
    first_trace(store, tmp_path)
    with monkeypatch.context() as m:      # as that release ingested it
        m.setattr(later, "hunt_between", lambda *args: None)
        m.setattr(later, "_due_hunts", lambda *args: 0)
        ingest(store, tmp_path, group("14:03:00", "sw.02"))
    assert note_of(store) is None
    store.envs.ewrite(lambda txn: txn.delete(later.HUNTS_CHECKED, db=store.envs.db["emeta"]))
    checked(store, tmp_path)
    assert note_of(store)["through_hunt_pilot"] == "900"
    # and once only: a success noted no more is not looked at again
    store.envs.ewrite(lambda txn: txn.delete(later.NOTED + (1).to_bytes(8, "big"),
                                             db=store.envs.db["emeta"]))
    ingest(store, tmp_path, call("7205550145", "16:05:00", "sw.09", dst="6009"))
    assert note_of(store) is None
