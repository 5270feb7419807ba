"""One call in two switches' records (docs/trace-rules.md, "One call in two switches'
records"): a call that passed through two switches whose CDRs are both ingested (an SBC
and the PBX behind it; a line of one switch forwarded to a line of another) is traced
once from a line, and counts once toward action (R8), whichever record a trace named
first. Expected answers come from the rules, worked out by hand."""
from __future__ import annotations

from test_formats import broadworks_file, bw_row

import cdrtrace
from cdrtrace.evidence import _trace
from cdrtrace.store import lookup
from conftest import cdr, cdr_file

LINE = "3035550110"
MAL = dict(src="7205550100", clid='"Mal" <7205550100>')
INNOCENT = cdr(src="7205550199", clid='"Innocent" <7205550199>', start="2026-03-02 13:00:00",
               answer="2026-03-02 13:00:05", end="2026-03-02 13:01:00", uniqueid="pbx.0")


def ingest(store, tmp_path, feed: int, *records: bytes) -> None:
    path = cdr_file(tmp_path, *records, name=f"feed{feed}-{len(list(tmp_path.iterdir()))}.csv")
    cdrtrace.ingest(store, [path], fmt="asterisk", zone="UTC", feed_id=feed)


def traced(store, at: str) -> tuple[str, str | None]:
    result = store.trace(LINE, at=at)
    return result.outcome.value, result.call_time


def progress(store) -> list[tuple[str, int]]:
    return [(p.label, p.traced_calls) for p in store.status(LINE).progress]


def test_a_call_an_sbc_and_its_pbx_both_recorded_is_traced_once(store_either, tmp_path):
    """The SBC (feed 1) stamps the call a second before the PBX behind it (feed 2). A *57
    made while only the SBC's file was in names its record; the PBX's record of the same
    call, in later, is that call: a second *57 is already_traced, and the caller has one
    traced call, not two."""
    store = store_either
    ingest(store, tmp_path, 1, INNOCENT, cdr(**MAL, start="2026-03-02 14:03:11", uniqueid="sbc.1"))
    assert traced(store, "2026-03-02T14:10:00Z") == ("success", "2026-03-02T14:03:11Z")
    ingest(store, tmp_path, 2, cdr(**MAL, start="2026-03-02 14:03:12", uniqueid="pbx.1"))
    assert traced(store, "2026-03-02T14:11:00Z") == ("already_traced", "2026-03-02T14:03:12Z")
    assert progress(store) == [("Caller A", 1)]
    first, second = store.trace_records(LINE, analyst="cic")
    assert second["original_trace"] == first["trace_id"]
    twin = second["call"]["recorded_by_another_feed"]
    assert (twin["feed"], twin["start"], twin["call_id"]) == (1, "2026-03-02T14:03:11Z",
                                                              first["call"]["call_id"])
    assert "7205550100" not in repr(store.status(LINE))


def test_a_call_forwarded_from_another_switch_is_one_call_and_a_redial_another(store_either,
                                                                                tmp_path):
    """Line 3035550177 on switch west (feed 1) forwards unanswered calls after 20 s to
    3035550110 on switch east (feed 2). Each call the harasser makes is in both switches'
    records, east's 20 s after west's: one call. His second call two minutes later is
    another, though it too lies within a forward's reach of his first call's west record."""
    store = store_either
    def west(start, uid):
        return cdr(**MAL, dst="3035550177", dstchannel=f"PJSIP/{LINE}-0001", start=start,
                   uniqueid=uid)

    def east(start, uid):
        return cdr(**MAL, dst=LINE, userfield="3035550177", start=start, uniqueid=uid)

    ingest(store, tmp_path, 1, INNOCENT, west("2026-03-02 14:03:11", "west.1"))
    assert traced(store, "2026-03-02T14:04:30Z") == ("success", "2026-03-02T14:03:11Z")
    # east's file, late: the first call's record and the second call's (west's not in yet)
    ingest(store, tmp_path, 2, east("2026-03-02 14:03:31", "east.1"),
           east("2026-03-02 14:05:20", "east.2"))
    assert traced(store, "2026-03-02T14:06:00Z") == ("success", "2026-03-02T14:05:20Z")
    assert progress(store) == [("Caller A", 2)]
    # west's record of the second call: that call again
    ingest(store, tmp_path, 1, west("2026-03-02 14:05:00", "west.2"))
    assert traced(store, "2026-03-02T14:07:00Z") == ("already_traced", "2026-03-02T14:05:20Z")
    # and the first call, traced from east's record at a time between: already traced
    assert traced(store, "2026-03-02T14:04:00Z") == ("already_traced", "2026-03-02T14:03:31Z")
    assert progress(store) == [("Caller A", 2)]


def test_records_further_apart_or_of_one_switch_are_two_calls(store_either, tmp_path):
    """Not forwarded, records of two feeds 3 s apart are two calls (a redial), as are two
    records of one feed a second apart under two call ids, and two feeds' records of two
    callers a second apart: each is traced and counted."""
    store = store_either
    ingest(store, tmp_path, 1, INNOCENT, cdr(**MAL, start="2026-03-02 14:03:11", uniqueid="a.1"))
    assert traced(store, "2026-03-02T14:10:00Z") == ("success", "2026-03-02T14:03:11Z")
    ingest(store, tmp_path, 2, cdr(**MAL, start="2026-03-02 14:03:14", uniqueid="b.1"))
    assert traced(store, "2026-03-02T14:11:00Z") == ("success", "2026-03-02T14:03:14Z")
    ingest(store, tmp_path, 2, cdr(**MAL, start="2026-03-02 14:03:15", uniqueid="b.2"))
    assert traced(store, "2026-03-02T14:12:00Z") == ("success", "2026-03-02T14:03:15Z")
    assert progress(store) == [("Caller A", 3)]
    ingest(store, tmp_path, 1, cdr(src="7205550123", clid='"Pat" <7205550123>',
                                   start="2026-03-02 14:03:16", uniqueid="a.2"))
    assert traced(store, "2026-03-02T14:13:00Z") == ("success", "2026-03-02T14:03:16Z")
    # Pat's call, read after the first three traces, came before their *57s: it contests
    # them (docs/trace-rules.md, "A call that comes in after the trace")
    assert progress(store) == [("Caller B", 1)]


def test_the_native_record_defers_every_pair_the_reference_may_make():
    """The C record hands a call with another feed's record of its caller this near to the
    reference: as far as a forwarded pair may lie apart."""
    assert _trace.TWIN_US == lookup.FORWARDED_CALL_US >= lookup.SAME_CALL_US


def test_a_call_in_the_second_before_written_in_whole_seconds_leaves_the_last_unknown(
        store_either, tmp_path):
    """Pat's call reached the line through an Asterisk (whole seconds: 14:03:11 is any
    instant of that second); Mal's through a BroadWorks (milliseconds: 14:03:11.400). Mal's
    seems the newer, but Pat's may have begun at 14:03:11.9: the records cannot tell which
    was the last (docs/trace-rules.md, "Two callers at the same instant"). A second later,
    or the same caller, it can."""
    store = store_either
    ingest(store, tmp_path, 1, INNOCENT, cdr(src="7205550123", clid='"Pat" <7205550123>',
                                             start="2026-03-02 14:03:11", uniqueid="a.1"))
    rows = [bw_row("0001", calling="+17205550100", start="20260302140311.400"),
            bw_row("0002", calling="+17205550100", start="20260302140412.400"),
            bw_row("0003", calling="+17205550123", start="20260302140413.200")]
    cdrtrace.ingest(store, [broadworks_file(tmp_path, rows)], fmt="broadworks", feed_id=2)
    got = store.trace(LINE, at="2026-03-02T14:04:00Z")
    assert (got.outcome.value, got.call_time) == ("untraceable", "2026-03-02T14:03:11.400000Z")
    record = store.trace_records(LINE, analyst="cic")[-1]
    assert [c["calling"] for c in record["call"]["within_a_second"]] == ["+17205550123"]
    assert "less than a second before" in record["reason"]
    assert "7205550123" not in repr(got) + repr(store.status(LINE))
    assert traced(store, "2026-03-02T14:04:12.300Z") == ("untraceable", "2026-03-02T14:03:11.400000Z")
    # Mal's call at 14:04:12.400 began after any instant of Pat's second: named
    assert traced(store, "2026-03-02T14:04:13Z") == ("success", "2026-03-02T14:04:12.400000Z")
    # Pat's call through both switches (14:04:13, and 14:04:13.200): one caller, named
    ingest(store, tmp_path, 1, cdr(src="7205550123", clid='"Pat" <7205550123>',
                                   start="2026-03-02 14:04:13", uniqueid="a.2"))
    assert traced(store, "2026-03-02T14:05:00Z") == ("success", "2026-03-02T14:04:13.200000Z")
