"""R8 counts a line's traced calls per origin, and an origin is one caller. An E.164 number
names one caller the world over, whichever switch's record named it; a caller a switch
numbers itself (an extension, a SIP user) is that switch's alone: two PBXs' 4417s are two
people, and traces of calls from each must never add up to one caller's three. Where one
feed hosts several customers' PBXs (it names two tenants), its records cannot tell one
tenant's 4417 from another's: each such call is an origin of its own
(docs/trace-rules.md, "Who called")."""
from __future__ import annotations

import pytest
from test_tenants import LEGS, fs  # FreeSWITCH records; both legs, so none left unlogged

import cdrtrace
from cdrtrace.config import Feed
from cdrtrace.errors import CaseError
from cdrtrace.evidence import pseudonyms
from cdrtrace.evidence.outcomes import customer_status
from cdrtrace.parsing.parsers import get_format
from cdrtrace.reports import analytics
from conftest import cdr, cdr_file

LINE = "3035550142"          # the harassed customer, an E.164 line
EXT = "4417"                 # a caller known by its extension alone
ASTERISK = get_format("asterisk")
FREESWITCH = get_format("freeswitch")


def call(src: str, clock: str, uniqueid: str, dst: str = LINE) -> bytes:
    """An answered Asterisk call from src on 2026-03-02 at clock (HH:MM), a minute long."""
    return cdr(src=src, dst=dst, clid=f'"" <{src}>', start=f"2026-03-02 {clock}:00",
               answer=f"2026-03-02 {clock}:05", end=f"2026-03-02 {clock}:59", uniqueid=uniqueid)




def ingest(store, tmp_path, feed: str, *records: bytes, fmt=ASTERISK) -> None:
    path = cdr_file(tmp_path, *records, name=f"{feed}-{len(list(tmp_path.iterdir()))}.csv")
    cdrtrace.ingest(store, [path], feed=Feed(feed, fmt))


def traced_after(store, tmp_path, feed: str, record: bytes, clock: str, fmt=ASTERISK) -> None:
    """Ingest one call, then trace the line five minutes after it began: a success."""
    ingest(store, tmp_path, feed, record, fmt=fmt)
    hour, minute = clock.split(":")
    got = store.trace(LINE, at=f"2026-03-02T{hour}:{int(minute) + 5:02d}:00Z")
    assert got.outcome.value == "success"
    assert EXT not in repr(got)


def progress(store) -> list[tuple[str, int, bool]]:
    status = store.status(LINE)
    assert EXT not in repr(status) and EXT not in status.to_json()     # never the caller
    return [(p.label, p.traced_calls, p.eligible_for_action) for p in status.progress]


def test_two_switches_extensions_written_alike_are_two_callers(store_either, tmp_path):
    """East's 4417 called the line twice and west's 4417 once: three traced calls, but
    from two people; neither is past the threshold."""
    store = store_either
    traced_after(store, tmp_path, "east", call(EXT, "10:00", "e1"), "10:00")
    traced_after(store, tmp_path, "west", call(EXT, "11:00", "w1"), "11:00")
    traced_after(store, tmp_path, "east", call(EXT, "12:00", "e2"), "12:00")
    assert progress(store) == [("Caller A", 2, False), ("Caller B", 1, False)]
    east, west = (store.catalog.known_feed_id(f) for f in ("east", "west"))
    records = store.trace_records(LINE, analyst="cic")
    assert [r["origin"] for r in records] == [f"{EXT} (feed {east})", f"{EXT} (feed {west})",
                                              f"{EXT} (feed {east})"]
    assert [r["call"]["calling"] for r in records] == [EXT] * 3      # the CIC reads the caller
    with pytest.raises(CaseError, match="2 of 3"):
        store.request_action(LINE, "Caller A")


def test_one_switchs_extension_is_one_caller(store_either, tmp_path):
    store = store_either
    for n, clock in enumerate(("10:00", "11:00", "12:00")):
        traced_after(store, tmp_path, "east", call(EXT, clock, f"e{n}"), clock)
    assert progress(store) == [("Caller A", 3, True)]
    assert store.request_action(LINE, "Caller A")["state"] == "queued"


def test_an_e164_caller_is_one_whichever_switch_recorded_it(store_either, tmp_path):
    store = store_either
    for n, (feed, clock) in enumerate((("east", "10:00"), ("west", "11:00"), ("east", "12:00"))):
        traced_after(store, tmp_path, feed, call("3035550177", clock, f"c{n}"), clock)
    assert progress(store) == [("Caller A", 3, True)]
    assert {r["origin"] for r in store.trace_records(LINE, analyst="cic")} == {"+13035550177"}


def test_a_sip_user_is_its_switchs_alone(store, tmp_path):
    """A SIP user the switch authenticated is an identity, scoped like an extension."""
    records = [call("client7", "10:00", "e1"), call("client7", "11:00", "w1")]
    traced_after(store, tmp_path, "east", records[0], "10:00")
    traced_after(store, tmp_path, "west", records[1], "11:00")
    assert progress(store) == [("Caller A", 1, False), ("Caller B", 1, False)]


def test_a_feed_of_several_tenants_counts_each_extension_call_alone(store_either, tmp_path):
    """A hosted FreeSWITCH whose records name two domains: each domain may have a 4417,
    and its calls out name the caller without saying whose. Before it named the second,
    its 4417 was one caller."""
    store = store_either
    ingest(store, tmp_path, "pbx", *LEGS,
           fs("3035550900", "2001", "a.example.com", "09:00", "t-a"), fmt=FREESWITCH)
    traced_after(store, tmp_path, "pbx", fs(EXT, "+1" + LINE, "a.example.com", "10:00", "x-1"),
                 "10:00", fmt=FREESWITCH)
    ingest(store, tmp_path, "pbx", fs("3035550901", "2002", "b.example.com", "09:30", "t-b"),
           fmt=FREESWITCH)
    traced_after(store, tmp_path, "pbx", fs(EXT, "+1" + LINE, "a.example.com", "11:00", "x-2"),
                 "11:00", fmt=FREESWITCH)
    traced_after(store, tmp_path, "pbx", fs(EXT, "+1" + LINE, "b.example.com", "12:00", "x-3"),
                 "12:00", fmt=FREESWITCH)
    assert progress(store) == [("Caller A", 1, False), ("Caller B", 1, False),
                               ("Caller C", 1, False)]
    records = store.trace_records(LINE, analyst="cic")
    pbx = store.catalog.known_feed_id("pbx")
    assert records[0]["origin"] == f"{EXT} (feed {pbx})"
    assert "caller_tenants_shared" not in records[0]["call"]
    for r in records[1:]:
        assert r["call"]["caller_tenants_shared"] is True
        assert r["origin"] == f"{EXT} (feed {pbx}, call {r['call']['call_id']} at {r['call']['start']})"
        assert r["call"]["calling"] == EXT


def test_a_case_names_one_switchs_extension(store, tmp_path):
    """The CIC names an origin by number: an extension two switches' callers wrote alike
    is refused (the customer's labels name each); one switch's is that switch's."""
    traced_after(store, tmp_path, "east", call(EXT, "10:00", "e1"), "10:00")
    traced_after(store, tmp_path, "west", call(EXT, "11:00", "w1"), "11:00")
    officer = {"agency": "Denver PD", "officer": "Sgt. Ruiz", "case_number": "2026-1"}
    with pytest.raises(CaseError, match=r"2 callers written 4417.*Caller A, Caller B"):
        store.open_case(LINE, EXT, analyst="cic", **officer)
    with pytest.raises(CaseError, match="no traced call from 4418"):
        store.open_case(LINE, "4418", analyst="cic", **officer)
    case = store.open_case(LINE, "Caller B", analyst="cic", waive_reason="threats", **officer)
    west = store.catalog.known_feed_id("west")
    assert case["origin"] == f"{EXT} (feed {west})"
    timeline = store.case(case["case_id"], analyst="cic")["timeline"]
    assert [t["call_time"] for t in timeline] == ["2026-03-02T11:00:00Z"]    # west's alone
    assert progress(store) == [("Caller A", 1, False), ("Caller B", 1, True)]   # waived


def test_a_case_by_number_of_one_switchs_extension(store, tmp_path):
    traced_after(store, tmp_path, "east", call(EXT, "10:00", "e1"), "10:00")
    case = store.open_case(LINE, EXT, analyst="cic", agency="Denver PD", officer="Sgt. Ruiz",
                           case_number="2026-2")
    assert case["origin"] == f"{EXT} (feed {store.catalog.known_feed_id('east')})"
    assert len(store.case(case["case_id"], analyst="cic")["timeline"]) == 1


def test_an_origin_names_its_caller_and_feed():
    call_ = {"calling": EXT, "feed": 3, "call_id": "00000000000000ab",
             "start": "2026-03-02T10:00:00.000120Z"}
    assert pseudonyms.origin_key(call_, True) == "4417 (feed 3)"
    assert pseudonyms.caller_of("4417 (feed 3)") == ("4417", 3, False)
    assert pseudonyms.origin_key({**call_, "caller_tenants_shared": True}, True) == \
        "4417 (feed 3, call 00000000000000ab at 2026-03-02T10:00:00.000120Z)"
    assert pseudonyms.caller_of("4417 (feed 3, call 00000000000000ab at 2026-03-02T10:00:00Z)") \
        == ("4417", 3, True)
    assert pseudonyms.origin_key({**call_, "calling": "+13035550177"}, False) == "+13035550177"
    assert pseudonyms.caller_of("+13035550177") == ("+13035550177", None, False)
    assert pseudonyms.origin_key({**call_, "calling": None}, True) is None


def test_a_record_from_before_origins_counts_toward_its_callers_text():
    """A trace recorded by a release that wrote no origin counted toward its caller's text:
    it still does, so its customer's labels and progress do not move."""
    def success(n: int, calling: str, origin: str | None = None) -> dict:
        r = {"trace_id": f"T{n:08d}", "activated_us": n, "outcome": "success",
             "call": {"calling": calling, "call_id": f"{n:016x}", "start_us": n, "feed": n % 2,
                      "start": f"2026-03-02T10:00:0{n}Z"}}
        return r if origin is None else {**r, "origin": origin}
    old = [success(1, EXT), success(2, EXT)]
    assert [pseudonyms.origin_of(r) for r in old] == [EXT, EXT]
    new = success(3, EXT, f"{EXT} (feed 1)")
    labels = {EXT: "Caller A", f"{EXT} (feed 1)": "Caller B"}
    status = customer_status(LINE, [*old, new], 3, labels)
    assert [(p.label, p.traced_calls) for p in status.progress] == [("Caller A", 2), ("Caller B", 1)]


def test_the_cics_reports_count_each_switchs_extension_apart(store_either, tmp_path):
    """The repeat-origins and hot-origins reports count as the customer's progress does:
    east's 4417 twice on one line, west's 4417 once there and once on another line."""
    store = store_either
    traced_after(store, tmp_path, "east", call(EXT, "10:00", "e1"), "10:00")
    traced_after(store, tmp_path, "west", call(EXT, "11:00", "w1"), "11:00")
    traced_after(store, tmp_path, "east", call(EXT, "12:00", "e2"), "12:00")
    ingest(store, tmp_path, "west", call(EXT, "13:00", "w2", dst="3035550143"))
    assert store.trace("3035550143", at="2026-03-02T13:05:00Z").outcome.value == "success"
    east, west = (store.catalog.known_feed_id(f) for f in ("east", "west"))
    table = store.trace_columns(analyst="cic", columns=analytics.REPEAT_COLUMNS)
    repeat = analytics.repeat_origins(table, threshold=3, min_calls=1).to_pylist()
    assert [(r["line"], r["origin"], r["traced_calls"], r["eligible"]) for r in repeat] == [
        ("+13035550142", f"{EXT} (feed {east})", 2, False),
        ("+13035550142", f"{EXT} (feed {west})", 1, False),
        ("+13035550143", f"{EXT} (feed {west})", 1, False)]
    hot = analytics.hot_origins(table, min_lines=1).to_pylist()
    assert [(r["origin"], r["lines"], r["traced_calls"]) for r in hot] == [
        (f"{EXT} (feed {west})", 2, 2), (f"{EXT} (feed {east})", 1, 2)]
    # the rows say what each trace's record says it counted
    rows = store.trace_table(analyst="cic").to_pylist()
    assert [(r["origin_scope"], r["origin_feed"]) for r in rows] == [
        (1, east), (1, west), (1, east), (1, west)]


def test_the_reports_count_a_tenants_feeds_extension_call_alone(store_either, tmp_path):
    store = store_either
    ingest(store, tmp_path, "pbx", *LEGS, fs("3035550900", "2001", "a.example.com", "09:00", "t-a"),
           fs("3035550901", "2002", "b.example.com", "09:30", "t-b"), fmt=FREESWITCH)
    for n, clock in enumerate(("10:00", "11:00")):
        traced_after(store, tmp_path, "pbx", fs(EXT, "+1" + LINE, "a.example.com", clock, f"x-{n}"),
                     clock, fmt=FREESWITCH)
    table = store.trace_columns(analyst="cic", columns=analytics.REPEAT_COLUMNS)
    repeat = analytics.repeat_origins(table, threshold=3, min_calls=1).to_pylist()
    records = store.trace_records(LINE, analyst="cic")
    assert sorted(r["origin"] for r in repeat) == sorted(r["origin"] for r in records)
    assert [r["traced_calls"] for r in repeat] == [1, 1]
    rows = store.trace_table(analyst="cic").to_pylist()
    assert {(r["origin_scope"], r["origin_feed"]) for r in rows} == {
        (2, store.catalog.known_feed_id("pbx"))}


AUTHORITY = {"kind": "subpoena", "reference": "SUB-2026-7", "agency": "Denver PD",
             "officer": "Sgt. Ruiz", "case_number": "26-0077"}


def report_text(store, case: dict) -> str:
    import io

    import pypdf

    store.disclose(AUTHORITY, analyst="lee", line=LINE)
    pdf = store.case_report(case["case_id"], analyst="ann")
    return " ".join(" ".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf)).pages)
                    .split())


def open_case(store, label: str) -> dict:
    return store.open_case(LINE, label, analyst="ann", waive_reason="threats",
                           **{k: AUTHORITY[k] for k in ("agency", "officer", "case_number")})


def test_a_case_report_lists_the_calls_of_its_origins_switch_alone(tmp_path):
    """West's 4417 is the case's origin: the report's archived calls are west's, not those
    east's 4417 made to the same line."""
    store = cdrtrace.open(tmp_path / "s", create=True, archive_dir=str(tmp_path / "archive"))
    traced_after(store, tmp_path, "east", call(EXT, "10:00", "e1"), "10:00")
    traced_after(store, tmp_path, "west", call(EXT, "11:00", "w1"), "11:00")
    ingest(store, tmp_path, "east", call(EXT, "12:00", "e2"))
    text = report_text(store, open_case(store, "Caller B"))
    assert "Every call from the origin to the line" in text
    assert "2026-03-02 11:00:00 UTC" in text
    assert "2026-03-02 10:00:00" not in text and "2026-03-02 12:00:00" not in text
    store.close()


def test_a_case_report_of_a_tenants_feeds_caller_lists_its_call_alone(tmp_path):
    store = cdrtrace.open(tmp_path / "s", create=True, archive_dir=str(tmp_path / "archive"))
    ingest(store, tmp_path, "pbx", *LEGS, fs("3035550900", "2001", "a.example.com", "09:00", "t-a"),
           fs("3035550901", "2002", "b.example.com", "09:30", "t-b"), fmt=FREESWITCH)
    for n, clock in enumerate(("10:00", "11:00")):
        traced_after(store, tmp_path, "pbx", fs(EXT, "+1" + LINE, "a.example.com", clock, f"x-{n}"),
                     clock, fmt=FREESWITCH)
    text = report_text(store, open_case(store, "Caller B"))
    assert "2026-03-02 11:00:00 UTC" in text and "2026-03-02 10:00:00" not in text
    store.close()


def test_a_case_on_an_extension_line_names_its_feeds_caller(store, tmp_path):
    """East's 2001 and west's 2001 were each called by their own switch's 4417. A case for
    east's customer, its origin given by number, is east's 4417: west's is not its."""
    ingest(store, tmp_path, "east", call(EXT, "10:00", "e1", dst="2001"))
    ingest(store, tmp_path, "west", call(EXT, "11:00", "w1", dst="2001"))
    for feed in ("east", "west"):
        assert store.trace("2001", at="2026-03-02T12:00:00Z", feed=feed).outcome.value == "success"
    case = store.open_case("2001", EXT, analyst="cic", agency="Denver PD", officer="Sgt. Ruiz",
                           case_number="2026-3", feed="east")
    assert case["origin"] == f"{EXT} (feed {store.catalog.known_feed_id('east')})"
    assert [t["call_time"] for t in store.case(case["case_id"], analyst="cic")["timeline"]] == [
        "2026-03-02T10:00:00Z"]


def test_a_call_without_a_caller_has_no_caller_to_scope(store_either, tmp_path):
    store = store_either
    ingest(store, tmp_path, "pbx", *LEGS, fs("3035550900", "2001", "a.example.com", "09:00", "t-a"),
           fs("3035550901", "2002", "b.example.com", "09:30", "t-b"),
           fs("anonymous", "+1" + LINE, "a.example.com", "10:00", "x-0"), fmt=FREESWITCH)
    assert store.trace(LINE, at="2026-03-02T10:05:00Z").outcome.value == "untraceable"
    record = store.trace_records(LINE, analyst="cic")[-1]
    assert record["origin"] is None and "caller_tenants_shared" not in record["call"]
    assert store.status(LINE).progress == ()


def test_a_feed_numbered_past_255_is_kept_whole_in_the_rows(store_either, tmp_path):
    store = store_either
    store.envs.write(lambda txn: txn.put(b"next_feed", b"299", db=store.envs.db["meta"]))
    traced_after(store, tmp_path, "east", call(EXT, "10:00", "e1"), "10:00")
    assert store.catalog.known_feed_id("east") == 300
    rows = store.trace_table(analyst="cic").to_pylist()
    assert [(r["origin_scope"], r["origin_feed"]) for r in rows] == [(1, 300)]


def test_labels_of_traces_kept_without_them_follow_the_origins(tmp_path):
    """A line whose labels were not kept (traces recorded before they were) labels its
    origins in the order its traces first named them: two feeds' 4417s are two."""
    import lmdb

    env = lmdb.open(str(tmp_path / "env"), max_dbs=1)
    db = env.open_db(b"pseudonyms")
    records = [{"outcome": "success", "origin": origin, "call": {"calling": EXT}}
               for origin in ("4417 (feed 1)", "4417 (feed 2)", "4417 (feed 1)")]
    with env.begin(db=db) as txn:
        labels = pseudonyms.of_line(txn, db, b"\x00" * 8, records)
    assert labels == {"4417 (feed 1)": "Caller A", "4417 (feed 2)": "Caller B"}
    env.close()


def test_a_timeline_says_whose_each_extension_call_and_trace_is(tmp_path):
    store = cdrtrace.open(tmp_path / "s", create=True, archive_dir=str(tmp_path / "archive"))
    traced_after(store, tmp_path, "east", call(EXT, "10:00", "e1"), "10:00")
    ingest(store, tmp_path, "west", call(EXT, "11:00", "w1"))
    ingest(store, tmp_path, "east", call("3035550177", "12:00", "e2"))
    east, west = (store.catalog.known_feed_id(f) for f in ("east", "west"))
    rows = store.timeline(LINE, EXT, analyst="cic").to_pylist()
    assert [(r["event"], str(r["call_time"])[11:16], r["origin"]) for r in rows] == [
        ("call", "10:00", f"{EXT} (feed {east})"), ("trace", "10:00", f"{EXT} (feed {east})"),
        ("call", "11:00", f"{EXT} (feed {west})")]
    e164 = store.timeline(LINE, "3035550177", analyst="cic").to_pylist()
    assert [r["origin"] for r in e164] == ["+13035550177"]
    store.close()


def test_a_store_upgraded_keeps_its_earlier_traces_counts_and_labels(store, tmp_path):
    """A trace recorded by a release before origins (its record names none, its label is
    the extension's bare text, its row unscoped) keeps its label and count; a later trace
    of the same caller counts toward the scoped origin, apart: an undercount, as
    docs/operations.md says, never two callers counted as one."""
    import orjson

    from cdrtrace.evidence import rows as trace_rows
    from cdrtrace.store import index

    traced_after(store, tmp_path, "east", call(EXT, "10:00", "e1"), "10:00")
    east = store.catalog.known_feed_id("east")
    tracer, key = store._tracer, index.line_key(store.line(LINE))

    def as_before(txn) -> None:             # what the release before wrote
        number = (1).to_bytes(8, "big")
        record = orjson.loads(txn.get(number, db=tracer.db["traces"]))
        del record["origin"]
        txn.put(number, orjson.dumps(record), db=tracer.db["traces"])
        assert txn.delete(key + b"o" + f"{EXT} (feed {east})".encode(), db=tracer.db["pseudonyms"])
        txn.put(key + b"o" + EXT.encode(), b"0", db=tracer.db["pseudonyms"])
        row = trace_rows.read_all(txn, tracer.db["trace_rows"], tracer.db["trace_segments"]).copy()
        row["origin_scope"], row["origin_feed"] = 0, 0
        trace_rows.replace(txn, tracer.db["trace_rows"], tracer.db["trace_segments"], row[:1])
    store.envs.ewrite(as_before)
    assert progress(store) == [("Caller A", 1, False)]
    traced_after(store, tmp_path, "east", call(EXT, "11:00", "e2"), "11:00")
    assert progress(store) == [("Caller A", 1, False), ("Caller B", 1, False)]
    table = store.trace_columns(analyst="cic", columns=analytics.REPEAT_COLUMNS)
    assert sorted(r["origin"] for r in analytics.repeat_origins(table, 3, 1).to_pylist()) == [
        EXT, f"{EXT} (feed {east})"]
    case = open_case(store, "Caller A")
    assert case["origin"] == EXT
    assert [t["call_time"] for t in store.case(case["case_id"], analyst="cic")["timeline"]] == [
        "2026-03-02T10:00:00Z"]


def test_a_call_id_a_switch_reused_is_another_calls_origin():
    """A call is its id and its start (a switch reuses ids): two calls of a feed of several
    tenants with one id, days apart, are two origins, in the record and in the reports."""
    import numpy as np

    from cdrtrace.evidence import rows as trace_rows
    from cdrtrace.parsing import numbers

    call_ = {"calling": EXT, "feed": 3, "call_id": "00000000000000ab", "caller_tenants_shared": True}
    keys = {pseudonyms.origin_key({**call_, "start": s}, True)
            for s in ("2026-03-02T10:00:00Z", "2026-03-05T10:00:00Z")}
    assert len(keys) == 2
    rows = np.zeros(2, trace_rows.ROW_DTYPE)
    rows["trace"], rows["outcome"], rows["call_id"] = [1, 2], 1, 0xAB
    rows["line"], rows["origin"] = numbers.normalize("+1" + LINE), numbers.normalize(EXT)
    rows["call_start_us"] = [1772445600 * 10**6, 1772704800 * 10**6]
    rows["origin_scope"], rows["origin_feed"] = 2, 3
    repeat = analytics.repeat_origins(trace_rows.to_arrow(rows), 3, 1).to_pylist()
    assert sorted(r["origin"] for r in repeat) == sorted(keys)


def test_the_cics_reports_name_a_sip_user_by_its_text(tmp_path):
    """A SIP user is kept as a hash of its text; the reports name it as the evidence does
    (before, a 63-digit run of its hash's decimal digits, as if a number)."""
    from cdrtrace.parsing import numbers

    store = cdrtrace.open(tmp_path / "s", create=True, archive_dir=str(tmp_path / "archive"))
    for n, clock in enumerate(("10:00", "11:00")):
        traced_after(store, tmp_path, "east", call("client7", clock, f"e{n}"), clock)
    east = store.catalog.known_feed_id("east")
    table = store.trace_columns(analyst="cic", columns=analytics.REPEAT_COLUMNS)
    raw = analytics.repeat_origins(table, 3, 1).to_pylist()
    digest = numbers.pack_identity("client7") & ((1 << 56) - 1)
    assert [r["origin"] for r in raw] == [f"id:{digest:014x} (feed {east})"]
    named = store.named(analytics.repeat_origins(table, 3, 1)).to_pylist()
    assert [(r["origin"], r["traced_calls"]) for r in named] == [(f"client7 (feed {east})", 2)]
    assert [r["origin"] for r in store.named(analytics.hot_origins(table, 1)).to_pylist()] == [
        f"client7 (feed {east})"]
    timeline = store.named(analytics.timeline(     # (Store.timeline takes a number)
        store.trace_table(analyst="cic"), store.line(LINE), numbers.pack_identity("client7"),
        store.config["archive_dir"])).to_pylist()
    assert [(r["event"], r["origin"]) for r in timeline] == [
        (event, f"client7 (feed {east})") for event in ("call", "trace", "call", "trace")]
    calls = store.archived_calls(LINE, analyst="cic").to_pylist()
    assert [r["calling"] for r in calls] == ["client7", "client7"]
    # one the index keeps no text for stays written by its hash
    unknown = analytics.named(analytics.repeat_origins(table, 3, 1), lambda packed: None)
    assert unknown.to_pylist() == raw
    store.close()


def test_the_cli_and_http_reports_name_a_sip_user(tmp_path):
    import json
    import subprocess
    import sys

    from test_service import Service
    from test_service import call as http

    store = cdrtrace.open(tmp_path / "s", create=True)
    for n, clock in enumerate(("10:00", "11:00")):
        traced_after(store, tmp_path, "east", call("client7", clock, f"e{n}"), clock)
    origin = f"client7 (feed {store.catalog.known_feed_id('east')})"
    running = Service(store)
    try:
        token = store.tokens.create("ann", "analyst")
        for path in ("repeat-origins?min_calls=1", "hot-origins?min_lines=1"):
            answer = http(running, "GET", f"/v1/reports/{path}", token)
            assert [r["origin"] for r in answer.json()] == [origin], path
    finally:
        running.stop()
        store.close()
    for report, least in (("repeat-origins", "--min-calls"), ("hot-origins", "--min-lines")):
        printed = subprocess.run(
            [sys.executable, "-m", "cdrtrace.cli", "report", report, "--analyst", "ann", least,
             "1", "--json", "--db", str(tmp_path / "s")],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, check=True).stdout
        assert [r["origin"] for r in json.loads(printed)] == [origin], report
