"""Real switch data (docs/trace-rules.md: "Who called", "Imperfect data"): the trace never names the wrong call.

Each test builds the records a real switch writes in the case at hand and states the
expected answer from the rules, by hand. Native and reference parsers must agree.
"""
from __future__ import annotations

import json
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cdrtrace
from cdrtrace.parsing import reference as twin
from cdrtrace.parsing.parsers import get_format, make_parser
from conftest import cdr, cdr_file, held_from_the_customer, parse_all, show_freeswitch_legs

AT = "2026-03-02T15:00:00Z"
OLD = dict(src="7205550100", clid='"Innocent" <7205550100>', start="2026-03-02 14:00:00",
           answer="2026-03-02 14:00:05", end="2026-03-02 14:01:00", uniqueid="old.1")


def fs(*fields: str, sep: bytes = b",") -> bytes:
    """A FreeSWITCH mod_cdr_csv record: every field quoted, nothing escaped."""
    return sep.join(b'"' + f.encode("latin-1") + b'"' for f in fields)


def fs_call(name: str, number: str, line: str, start: str, answer: str = "", end: str = "",
            cause: str = "NORMAL_CLEARING", uuid: str = "u-1", bleg: str = "") -> bytes:
    return fs(name, number, line, "public", start, answer, end or start, "20",
              "15" if answer else "0", cause, uuid, bleg, "", "PCMU", "PCMU")


def both_parsers(fmt, data: bytes, zone="UTC"):
    """(rows, rejects) from the native parser, checked equal to the reference's."""
    native = parse_all(data, parser=make_parser(fmt, zone))
    form = get_format(fmt)
    dispositions, presentations = form.vocabularies()
    reference = parse_all(data, parser=twin.CdrParser(form.dialect(), zone, dispositions=dispositions,
                                                      presentations=presentations))
    assert native == reference
    return native


def trace(store, line, at=AT):
    result = store.trace(line, at=at)
    record = store.trace_records(line, analyst="cic")[-1]
    return result.outcome.value, record


# ------------------------------------------------------------------ fail closed

def test_freeswitch_name_with_unescaped_quote_comma_quote_is_recovered(store, tmp_path):
    old = fs_call("Innocent", "7205550100", "3035550110", "2026-03-02 14:00:00",
                  "2026-03-02 14:00:05", "2026-03-02 14:01:00", uuid="u-old")
    # a SIP display name holding "," and one written "Jones", Bob: both unescaped
    new1 = fs_call('Evil","Name', "7205550199", "3035550110", "2026-03-02 14:30:00", uuid="u-1",
                   cause="ORIGINATOR_CANCEL")
    new2 = fs_call('"Jones", Bob', "7205550198", "3035550111", "2026-03-02 14:31:00", uuid="u-2",
                   cause="ORIGINATOR_CANCEL")
    rows, rejects = both_parsers("freeswitch", old + b"\n" + new1 + b"\n" + new2 + b"\n")
    assert rejects == []
    assert [r["calling"] for r in rows][1:] == [cdrtrace.parsing.parsers.normalize_number("7205550199"),
                                                cdrtrace.parsing.parsers.normalize_number("7205550198")]
    show_freeswitch_legs(store, tmp_path)
    summary = cdrtrace.ingest(store, [cdr_file(tmp_path, old, new1, new2)], fmt="freeswitch")
    assert (summary.records, summary.rejected) == (3, 0)
    outcome, record = trace(store, "3035550110")
    assert (outcome, record["call"]["calling"]) == ("success", "+17205550199")


@pytest.mark.parametrize("bad", [
    cdr(start="2026-03-02 14:30:00", end="2026-03-02 14:30:20", disposition="NO ANSWER",
        answer="2026-03-02 14:30:99", uniqueid="new.1"),                     # bad answer time
    cdr(start="2026-03-02 14:30:00", end="2026-03-02 14:30:20", disposition="NO ANSWR",
        uniqueid="new.1"),                                                     # unknown disposition
    cdr(start="2026-03-02 14:30:00", end="2026-03-02 14:30:20", uniqueid="new.1")[:200],  # cut short
], ids=["bad-answer-time", "bad-disposition", "cut-short"])
def test_a_rejected_record_never_lets_the_trace_blame_the_previous_caller(store, tmp_path, bad):
    summary = cdrtrace.ingest(store, [cdr_file(tmp_path, cdr(**OLD), bad)])
    assert (summary.records, summary.rejected, summary.unreadable) == (2, 1, 1)
    outcome, record = trace(store, "3035550110")
    # the call that rang the line at 14:30 is unreadable: untraceable, never the 14:00 caller
    assert outcome == "untraceable"
    assert record["call"]["start"] == "2026-03-02T14:30:00Z"
    assert record["call"]["disposition"] == "unreadable" and record["call"]["calling"] is None
    assert "could not be read" in record["reason"]
    assert record["unreadable"]["record"] == 2 and record["unreadable"]["time_estimated"] is False
    assert "+17205550100" not in str(record)
    # a second *57 is not "already traced" for the old call either
    assert store.trace("3035550110", at="2026-03-02T15:05:00Z").outcome.value == "untraceable"
    assert store.disclose({"kind": "subpoena", "reference": "S-1", "agency": "PD", "officer": "O",
                           "case_number": "1"}, analyst="cic", line="3035550110") == []


@pytest.mark.parametrize("zeros", [8, 4096, 200_000])
@pytest.mark.parametrize("how", ["ingest", "follow"])
def test_zeros_a_crash_left_never_hide_the_call_written_after_them(tmp_path, zeros, how):
    """A switch's host crashed: the file's size had reached the disk, its last page had
    not, so where Lee's call to 3035550177 was being written it reads as zeros, from the
    page's start (in Lee's record) to where the file ended. The switch came back and
    wrote Mal's 14:30 call to 3035550110 after them. Before, the zeros and Mal's record
    were one line, rejected: the *57 at 15:00 named the Innocent 14:00 caller (past 64
    KiB of zeros, Mal's line was not even held). Now Mal's call is named, and Lee's line,
    its record cut short, is held as an unreadable call (fail closed)."""
    from cdrtrace.ingestion import following
    from cdrtrace.ingestion.live import StreamOptions

    lee = cdr(src="7205550188", dst="3035550177", start="2026-03-02 14:20:00",
              answer="2026-03-02 14:20:05", end="2026-03-02 14:21:00", uniqueid="lee.1")
    mal = cdr(src="7205550199", clid='"Mal" <7205550199>', start="2026-03-02 14:30:00",
              answer="", end="2026-03-02 14:30:20", disposition="NO ANSWER", uniqueid="mal.1")
    path = tmp_path / "Master.csv"
    path.write_bytes(cdr(**OLD) + b"\n" + lee[:120] + b"\0" * zeros + mal + b"\n")
    store = cdrtrace.open(tmp_path / "store", create=True)
    if how == "ingest":
        summary = cdrtrace.ingest(store, [str(path)], chunk_bytes=4096)
    else:
        summary = following.follow(store, str(path), options=StreamOptions(
            batch_ms=1, poll_ms=1, heartbeat_s=0.01, idle_exit_s=0.2))
    assert (summary.records, summary.rejected, summary.indexed) == (4, 2, 2)
    outcome, record = trace(store, "3035550110")
    assert (outcome, record["call"]["start"], record["call"]["calling"]) == (
        "success", "2026-03-02T14:30:00Z", "+17205550199")
    assert trace(store, "3035550177")[0] == "untraceable"
    store.close()


def test_an_unreadable_call_fails_closed_even_with_a_caller_in_its_entry():
    """The rule itself (evidence.outcomes.outcome_for): a call whose record could not be
    read is untraceable whatever its index entry says of the caller. The salvage writes no
    caller for such a call today; the rule does not rest on that."""
    from cdrtrace.evidence.outcomes import Outcome, outcome_for
    from cdrtrace.parsing.formats import Disposition, Presentation
    from cdrtrace.parsing.numbers import normalize

    entry = {"flags": Disposition.UNREADABLE << 4, "calling": normalize("+17205550100"),
             "presentation": Presentation.ALLOWED}
    assert outcome_for(entry) is Outcome.UNTRACEABLE
    for readable in (Disposition.ANSWERED, Disposition.NO_ANSWER, Disposition.CANCELLED):
        assert outcome_for({**entry, "flags": readable << 4}) is Outcome.SUCCESS


def test_a_reject_whose_time_is_unreadable_takes_its_neighbours_time(store, tmp_path):
    bad = cdr(start="2026-02-31 14:30:00", end="2026-02-31 14:30:20", uniqueid="new.1")
    later = cdr(dst="3035550111", start="2026-03-02 14:40:00", answer="2026-03-02 14:40:05",
                end="2026-03-02 14:41:00", uniqueid="other.1")
    cdrtrace.ingest(store, [cdr_file(tmp_path, cdr(**OLD), bad, later)])
    outcome, record = trace(store, "3035550110")
    # it was written after the 14:00 call ended: taken to start then, failing closed
    assert (outcome, record["call"]["start"]) == ("untraceable", "2026-03-02T14:01:00Z")
    assert record["unreadable"]["time_estimated"] is True


def test_evidence_counts_unreadable_records_of_the_feed_near_the_call(store, tmp_path):
    # the line cannot be recovered (no called number), the time can
    lineless = cdr(dst="", dstchannel="", start="2026-03-02 14:20:00", end="2026-03-02 14:20:10",
                   disposition="NO ANSWR", uniqueid="x.1")
    far = cdr(dst="", dstchannel="", start="2026-03-02 10:00:00", end="2026-03-02 10:00:10",
              disposition="NO ANSWR", uniqueid="x.2")
    cdrtrace.ingest(store, [cdr_file(tmp_path, far, cdr(**OLD), lineless)])
    outcome, record = trace(store, "3035550110")
    assert outcome == "success"
    # an hour before the 14:00 call up to the activation: the 14:20 reject, not the 10:00 one
    assert record["unreadable_nearby"] == {"from": "2026-03-02T13:00:00Z", "to": AT,
                                           "records": 1, "without_line": 1}
    # no call at all: every feed's unreadable records in the hour before the activation
    outcome, record = trace(store, "3035550199")
    assert outcome == "no_call"
    assert record["unreadable_nearby"] == {"from": "2026-03-02T14:00:00Z", "to": AT,
                                           "records": 1, "without_line": 1}


def test_salvage_agrees_native_and_reference():
    form = get_format("asterisk")
    native = make_parser(form, "America/Denver")
    reference = twin.CdrParser(form.dialect(), "America/Denver")
    samples = [cdr(disposition="NO ANSWR"), cdr()[:150], cdr(start="bad"), b"", b'"",,,',
               cdr(clid='"A","B" <1>'), cdr(dst="ch1", dstchannel="SIP/301-0007")[:170]]
    for raw in samples:
        assert native.salvage(raw) == reference.salvage(raw), raw


# ------------------------------------------------------------------ calls, not legs

def ring_group(order):
    """Asterisk ring group through Local channels: the ;2 halves ring the phones, dst is the
    Local name (ch1, ch2); 301 is not answered, 302 answers. Legs share uniqueid and linkedid."""
    common = dict(src="7205550199", clid='"Caller" <7205550199>', start="2026-03-02 14:30:00",
                  end="2026-03-02 14:31:00", uniqueid="1772461800.7", linkedid="1772461800.7")
    legs = [
        cdr(21, dst="ch1", channel="Local/ch1@rg-00000001;2", dstchannel="SIP/301-00000007",
            disposition="NO ANSWER", answer="", **common),
        cdr(21, dst="ch2", channel="Local/ch2@rg-00000002;2", dstchannel="SIP/302-00000008",
            disposition="ANSWERED", answer="2026-03-02 14:30:08", **common),
        cdr(21, dst="600", channel="SIP/trunk-00000006", dstchannel="Local/ch2@rg-00000002;1",
            disposition="ANSWERED", answer="2026-03-02 14:30:08", **common),
    ]
    return [legs[i] for i in order]


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_ring_group_phones_are_indexed_from_the_destination_channel(store, tmp_path, order):
    both_parsers("asterisk", b"\n".join(ring_group(order)) + b"\n")
    cdrtrace.ingest(store, [cdr_file(tmp_path, cdr(21, dst="301", **OLD), *ring_group(order))])
    outcome, record = trace(store, "301")
    assert (outcome, record["call"]["start"], record["call"]["calling"]) == \
        ("success", "2026-03-02T14:30:00Z", "+17205550199")
    assert (record["call"]["answered"], record["call"]["disposition"]) == (False, "no_answer")
    _, record = trace(store, "302")
    assert (record["call"]["answered"], record["call"]["disposition"]) == (True, "answered")
    calls = store.last_calls("600", analyst="cic")
    assert len(calls) == 1 and calls[0]["answered"] and calls[0]["disposition"] == "answered"


def direct_group(start="2026-03-02 14:30:00", uid="1772461800.7"):
    """Dial(SIP/301&SIP/302) on 700: one record per dialled leg, the same uniqueid; 301 rang
    unanswered, 302 answered."""
    common = dict(src="7205550199", clid='"Caller" <7205550199>', dst="700", start=start,
                  end=start[:-2] + "50", uniqueid=uid)
    return [cdr(dstchannel="SIP/301-00000007", disposition="NO ANSWER", answer="", **common),
            cdr(dstchannel="SIP/302-00000008", disposition="ANSWERED",
                answer=start[:-2] + "08", **common)]


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_legs_of_one_call_are_one_call_to_the_dialled_line(store, tmp_path, order):
    legs = direct_group()
    cdrtrace.ingest(store, [cdr_file(tmp_path, *(legs[i] for i in order))])
    calls = store.last_calls("700", analyst="cic")
    assert [(c["start"], c["answered"], c["disposition"]) for c in calls] == \
        [("2026-03-02T14:30:00Z", True, "answered")]
    # each phone a leg rang received the call, with its own answered flag
    assert [c["answered"] for c in store.last_calls("301", analyst="cic")] == [False]
    assert [c["answered"] for c in store.last_calls("302", analyst="cic")] == [True]


@settings(max_examples=25, deadline=None)
@given(st.permutations(range(5)))
def test_legs_of_one_call_merge_whatever_the_order(tmp_path_factory, order):
    """Two calls to 700 in legs, and a leg replayed: the analyst's view of 700 is the same
    in any file order, one entry per call ("Who called")."""
    first = direct_group()
    second = direct_group("2026-03-02 14:40:00", "1772462400.9")
    records = first + second + [second[0]]
    records = [records[i] for i in order]
    store = cdrtrace.open(tmp_path_factory.mktemp("legs") / "s", create=True)
    path = tmp_path_factory.mktemp("f") / "Master.csv"
    path.write_bytes(b"\n".join(records) + b"\n")
    cdrtrace.ingest(store, [str(path)])
    view = [(c["start"], c["answered"], c["disposition"], c["indexed_as"])
            for c in store.last_calls("700", analyst="cic")]
    assert view == [("2026-03-02T14:40:00Z", True, "answered", "dialled"),
                    ("2026-03-02T14:30:00Z", True, "answered", "dialled")]
    store.close()


def test_freeswitch_a_and_b_legs_are_one_call(store, tmp_path):
    a_leg = fs_call("Caller", "7205550199", "3035550110", "2026-03-02 14:30:00",
                    "2026-03-02 14:30:06", "2026-03-02 14:31:00", uuid="aaaa", bleg="bbbb")
    b_leg = fs_call("Caller", "7205550199", "3035550110", "2026-03-02 14:30:01",
                    "2026-03-02 14:30:06", "2026-03-02 14:31:00", uuid="bbbb")
    older = [fs_call("Old", f"720555010{i}", "3035550110", f"2026-03-02 1{i}:00:00",
                     uuid=f"old-{i}", cause="ORIGINATOR_CANCEL") for i in range(3)]
    cdrtrace.ingest(store, [cdr_file(tmp_path, *older, b_leg, a_leg)], fmt="freeswitch")
    calls = store.last_calls("3035550110", analyst="cic")
    # one slot for the call (started at its earliest leg), the three older calls kept
    assert [c["start"] for c in calls] == ["2026-03-02T14:30:00Z", "2026-03-02T12:00:00Z",
                                           "2026-03-02T11:00:00Z", "2026-03-02T10:00:00Z"]
    assert calls[0]["answered"]


def test_no_answer_with_an_answer_time_is_not_answered_by_the_line(store, tmp_path):
    voicemail = cdr(disposition="NO ANSWER", answer="2026-03-02 14:30:25", start="2026-03-02 14:30:00",
                    end="2026-03-02 14:31:00", uniqueid="vm.1")
    rows, _ = both_parsers("asterisk", voicemail + b"\n")
    assert rows[0]["answer_us"] == 0
    cdrtrace.ingest(store, [cdr_file(tmp_path, voicemail)])
    _, record = trace(store, "3035550110")
    assert (record["call"]["answered"], record["call"]["disposition"]) == (False, "no_answer")


@pytest.mark.parametrize("nothing", [
    cdr(dstchannel="", start="2026-03-02 14:30:00", uniqueid="n.1"),   # ANSWERED, broken Dial
    cdr(dst="3035550110", channel="Local/3035550110@outbound-00000001;2",
        dstchannel="PJSIP/mytrunk-00000009", start="2026-03-02 14:30:00", uniqueid="n.2"),
    cdr(dst="3035550110", channel="Local/301@from-internal-00000003;2",
        dstchannel="Local/301@from-internal-00000003;1", disposition="CONGESTION",
        start="2026-03-02 14:30:00", uniqueid="n.3"),
], ids=["answered-no-dstchannel", "outbound-through-local", "congestion-half"])
def test_records_where_nothing_rang_do_not_mask_the_last_call(store, tmp_path, nothing):
    rows, _ = both_parsers("asterisk", nothing + b"\n")
    assert [r["received"] for r in rows] == [False]
    cdrtrace.ingest(store, [cdr_file(tmp_path, cdr(**OLD), nothing)])
    outcome, record = trace(store, "3035550110")
    assert (outcome, record["call"]["start"]) == ("success", "2026-03-02T14:00:00Z")


def test_a_utf8_byte_order_mark_is_not_data(store, tmp_path):
    data = b"\xef\xbb\xbf" + cdr(**OLD) + b"\n"
    rows, rejects = both_parsers("asterisk", data)
    assert (len(rows), rejects, rows[0]["offset"]) == (1, [], 3)
    for cut in range(1, 5):       # in any chunking
        assert parse_all(data, chunks=[cut], parser=make_parser("asterisk")) == (rows, [])
    path = tmp_path / "bom.csv"
    path.write_bytes(data)
    summary = cdrtrace.ingest(store, [str(path)], fmt="auto")
    assert (summary.records, summary.rejected) == (1, 0)


def test_a_call_starting_exactly_at_the_activation_is_not_the_traced_call(store, tmp_path):
    cdrtrace.ingest(store, [cdr_file(tmp_path, cdr(**OLD), cdr(
        start="2026-03-02 15:00:00", end="2026-03-02 15:00:20", disposition="NO ANSWER",
        src="7205550199", clid="", uniqueid="at.1"))])
    outcome, record = trace(store, "3035550110", at="2026-03-02T15:00:00Z")
    assert (outcome, record["call"]["start"]) == ("success", "2026-03-02T14:00:00Z")


def test_records_shuffled_give_the_same_traces(tmp_path):
    records = ring_group((0, 1, 2)) + [cdr(**OLD), cdr(disposition="NO ANSWR", uniqueid="z")]
    answers = set()
    for seed in range(4):
        random.Random(seed).shuffle(records)
        store = cdrtrace.open(tmp_path / f"s{seed}", create=True)
        cdrtrace.ingest(store, [cdr_file(tmp_path, *records, name=f"m{seed}.csv")])
        answers.add(tuple(trace(store, line)[0] for line in ("301", "302", "600", "3035550110")))
        store.close()
    assert answers == {("success", "success", "success", "untraceable")}


# ------------------------------------------------------------------ rules the mutations found unpinned

def test_unavailable_presentation_with_a_number_delivered_is_untraceable(store, tmp_path):
    # R4: presentation unavailable means untraceable, even where the CDR holds a number
    cdrtrace.ingest(store, [cdr_file(tmp_path, cdr(**OLD), cdr(
        src="7205550199", userfield="unavailable", start="2026-03-02 14:30:00",
        answer="2026-03-02 14:30:05", end="2026-03-02 14:31:00", uniqueid="u.1"))])
    outcome, record = trace(store, "3035550110")
    assert (outcome, record["call"]["start"]) == ("untraceable", "2026-03-02T14:30:00Z")


def test_a_disclosure_naming_neither_traces_nor_a_line_releases_nothing(store, tmp_path):
    cdrtrace.ingest(store, [cdr_file(tmp_path, cdr(**OLD))])
    assert trace(store, "3035550110")[0] == "success"
    authority = {"kind": "subpoena", "reference": "S-1", "agency": "PD", "officer": "O",
                 "case_number": "1"}
    with pytest.raises(cdrtrace.AccessError, match="name the trace ids or the line to disclose"):
        store.disclose(authority, analyst="cic")


def test_a_forwarded_call_is_indexed_only_under_the_served_lines(store, tmp_path):
    from cdrtrace.config import Feed

    # dialled 7205550110 (not served), forwarded by it (userfield) to 3035550110 (served),
    # which rang extension 1001 (served by its bare digits)
    call = cdr(dst="7205550110", userfield="7205550110", dstchannel="PJSIP/3035550110-01",
               start="2026-03-02 14:30:00", answer="2026-03-02 14:30:05",
               end="2026-03-02 14:31:00", uniqueid="f.1")
    feed = Feed("denver", get_format("asterisk"), served=("+1303",))
    cdrtrace.ingest(store, [cdr_file(tmp_path, call)], feed=feed)
    assert trace(store, "3035550110")[0] == "success"
    assert trace(store, "7205550110")[0] == "no_call"


# ------------------------------------------------------------------ real layouts

SAMPLES = __import__("pathlib").Path(__file__).resolve().parent.parent / "data" / "samples"
CUCM_TRACES = {"3035550110": ("success", "2026-03-02T14:03:00Z"),
               "3035550113": ("no_call", None),
               "3035550116": ("untraceable", "2026-03-02T15:23:00Z"),   # the unreadable record
               "2001": ("success", "2026-03-02T15:13:00Z")}


def ingest_sample(store, tmp_path, name, **kw):
    return cdrtrace.ingest(store, [str(SAMPLES / name)], fmt="auto",
                           rejects_path=tmp_path / "r.jsonl", **kw)


def test_cucm_records_cut_out_by_grep_map_by_the_release_field_count(store, tmp_path):
    # no header, no types line, 131 fields (release 12.x), CRLF
    summary = ingest_sample(store, tmp_path, "cucm/cdr_grep_headerless_r12.csv")
    assert (summary.records, summary.rejected, summary.markers) == (11, 1, 0)
    for line, expected in CUCM_TRACES.items():
        result = store.trace(line, at="2026-11-02T00:00:00Z")
        assert (result.outcome.value, result.call_time) == expected, line
    # dialled 42000, which forwarded it (lastRedirectDn 42000), rang 41533: forwarded
    for line in ("42000", "41533"):
        _, record = trace(store, line, at="2026-11-02T00:00:00Z")
        assert (record["outcome"], record["call"]["forwarded"]) == ("success", True), line
        assert record["call"]["calling"] == "+17205550199"


def test_cucm_export_with_an_unquoted_header_and_no_types_line_keeps_its_first_record(store, tmp_path):
    summary = ingest_sample(store, tmp_path, "cucm/car_export_no_types.csv")
    assert (summary.records, summary.rejected, summary.markers) == (4, 0, 1)
    assert store.trace("3035550110", at="2026-11-02T00:00:00Z").outcome.value == "success"


def test_cucm_headerless_file_of_no_release_layout_is_a_clear_error(store, tmp_path):
    path = tmp_path / "cdr.csv"
    path.write_bytes(b"1,2,3\n")
    with pytest.raises(cdrtrace.FormatError, match="has no cucm header, and its first line has 3 "
                       "fields, which is no release's layout \\(129, 131, 133\\)"):
        cdrtrace.ingest(store, [str(path)], fmt="cucm")


def test_broadworks_as_the_server_writes_it(store, tmp_path):
    """No header: a version line, Start/End marker records (a restart mid-file), positional
    records longer than the fields cdrtrace reads."""
    summary = ingest_sample(store, tmp_path, "broadworks/BW-CDR-20260302150000-1-000002.csv")
    assert (summary.records, summary.rejected, summary.markers) == (7, 1, 5)
    rejects = [__import__("json").loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(r["record"], r["reason"]) for r in rejects] == [(11, "bad timestamp in column 10")]
    expected = {"3035550110": ("success", "2026-03-02T14:03:00.125000Z"),
                "3035550120": ("success", "2026-03-02T14:30:00Z"),
                "3035550113": ("untraceable", "2026-03-02T14:50:00Z"),
                "3035550114": ("untraceable", "2026-03-02T15:00:30Z"),
                "7205550101": ("no_call", None)}
    for line, want in expected.items():
        result = store.trace(line, at="2026-11-02T00:00:00Z")
        assert (result.outcome.value, result.call_time) == want, line


def test_markers_are_checked_native_and_reference_alike():
    data = (SAMPLES / "broadworks/BW-CDR-20260302150000-1-000002.csv").read_bytes()
    data += b"0100,,Stop\nversion=\n"           # not markers: rejected
    form = get_format("broadworks")
    native, reference = make_parser(form), twin.CdrParser(form.dialect(), "UTC")
    got = parse_all(data, parser=native)
    assert got == parse_all(data, parser=reference)
    assert native.markers == reference.markers == 5
    assert [r[0] for r in got[1]] == [11, 13, 14]


def test_one_russian_caller_written_three_ways_is_one_origin(tmp_path):
    """R8 counts traced calls per origin: 8 924..., 810 7 924... and +7 924... are one caller."""
    store = cdrtrace.open(tmp_path / "s", create=True, country_code=7, zone="Europe/Moscow")
    forms = ["89245555937", "81079245555937", "+79245555937"]
    calls = [cdr(src=src, clid="", dst="84951234567", dstchannel="SIP/84951234567-01",
                 start=f"2026-03-02 1{i}:00:00", answer=f"2026-03-02 1{i}:00:05",
                 end=f"2026-03-02 1{i}:01:00", uniqueid=f"ru.{i}") for i, src in enumerate(forms)]
    for i, call in enumerate(calls):
        cdrtrace.ingest(store, [cdr_file(tmp_path, call, name=f"{i}.csv")])
        assert store.trace("8 495 123-45-67", at=f"2026-03-02T1{i}:30:00+03:00").outcome.value == "success"
    (origin,) = store.status("+74951234567").progress
    assert (origin.label, origin.traced_calls, origin.eligible_for_action) == ("Caller A", 3, True)
    assert {c["calling"] for c in store.last_calls("+74951234567", analyst="cic")} == {"+79245555937"}
    store.close()


def test_a_userfield_keeping_the_caller_id_names_no_redirecting_line(store, tmp_path):
    """Asterisk operators put numbers in userfield, and cdrtrace reads one there as the
    line that forwarded the call (a Diversion). A dialplan that keeps the original caller
    id there (`Set(CDR(userfield)=${CALLERID(num)})`) names the caller: read as a
    forwarding line, each call the customer made was indexed as one the customer's own
    line received, and their *57 named their own call. No caller forwards its own call."""
    harassing = cdr(src="7205550199", clid='"" <7205550199>', dst="3035550110",
                    start="2026-03-02 14:30:00", answer="", end="2026-03-02 14:30:20",
                    disposition="NO ANSWER", uniqueid="h.1", userfield="7205550199")
    # then the customer calls someone, and the dialplan keeps their number in userfield
    outgoing = cdr(src="3035550110", clid='"" <3035550110>', dst="7205550123",
                   dstchannel="PJSIP/trunk-00000022", start="2026-03-02 14:40:00",
                   answer="2026-03-02 14:40:05", end="2026-03-02 14:42:00", uniqueid="o.1",
                   userfield="3035550110")
    rows, _ = both_parsers("asterisk", harassing + b"\n" + outgoing + b"\n")
    assert [r["redirecting"] for r in rows] == [0, 0]
    cdrtrace.ingest(store, [cdr_file(tmp_path, harassing, outgoing)])
    got, record = trace(store, "3035550110")
    assert (got, record["call"]["calling"]) == ("success", "+17205550199")
    assert [c["indexed_as"] for c in store.last_calls("3035550110", analyst="cic")] == ["dialled"]


def test_numbers_written_as_uri_user_parts_are_the_numbers(store, tmp_path):
    """A SIP proxy logs user parts as the request carried them. A carrier's number
    portability dip adds parameters to the dialled number (`+13035550110;npdi;rn=...`,
    RFC 4694), a trunk adds `;cpc=ordinary` to the caller, and a URI may come whole
    (`sip:...@host`, `tel:...`). Read as no number, the call that rang 3035550110 was
    indexed nowhere, and a *57 named the call before it."""
    older = b"1772460000|1772460060|60.0|c-1|1772459995.000000|2125550101|||3035550110|3035550110||200|OK|1"
    ported = (b"1772461800|1772461800|0.0|c-2|1772461790.000000|+17205550199;cpc=ordinary|||"
              b"+13035550110;npdi;rn=+13035559999|sip:+13035550110;npdi;rn=+13035559999@10.0.0.7|"
              b"sips:3035550177@pbx.example|487|Request Terminated|1")
    other = b"1772461900|1772461900|0.0|c-3|1772461890.000000|2125550103|||tel:+13035550188|||487|Request Terminated|1"
    data = older + b"\n" + ported + b"\n" + other + b"\n"
    rows, bad = both_parsers("kamailio", data)
    assert bad == [] and rows[1]["called"] == rows[0]["called"] != 0
    path = tmp_path / "acc_cdrs.log"
    path.write_bytes(data)
    cdrtrace.ingest(store, [str(path)], fmt="kamailio")
    got, record = trace(store, "3035550110")
    assert (got, record["call"]["calling"]) == ("success", "+17205550199")
    assert store.last_calls("3035550177", analyst="cic")[0]["indexed_as"] == "redirecting"
    assert store.last_calls("3035550188", analyst="cic")[0]["calling"] == "+12125550103"
    from cdrtrace.parsing import numbers
    for written in ("3035550110;npdi", "tel:+1-303-555-0110", "sips:3035550110@pbx", "3035550110@pbx"):
        assert numbers.format_number(numbers.normalize(written)) == "+13035550110", written
    assert numbers.normalize("alice@pbx.example") == 0          # an identity, as before


def test_sip_user_callers_are_identities_traced_and_counted(store, tmp_path):
    """"Who called": a SIP user the switch authenticated is an identity, not 'unavailable';
    anonymity markers still mean no identity. The customer never sees it."""
    calls = [cdr(src=src, clid=clid, start=f"2026-03-02 1{i}:00:00", answer=f"2026-03-02 1{i}:00:05",
                 end=f"2026-03-02 1{i}:01:00", uniqueid=f"sip.{i}")
             for i, (src, clid) in enumerate([("client1", '"Client One" <client1>'),
                                               ("sip:Client1", ""), ("Client1", ""),
                                               ("Anonymous", '"Anonymous" <anonymous>')])]
    for i, call in enumerate(calls):
        cdrtrace.ingest(store, [cdr_file(tmp_path, call, name=f"{i}.csv")])
        outcome, record = trace(store, "3035550110", at=f"2026-03-02T1{i}:30:00Z")
        if i < 3:
            assert (outcome, record["call"]["calling"]) == ("success", "client1"), i
        else:
            assert (outcome, record["call"]["presentation"]) == ("untraceable", "unavailable")
    status = store.status("3035550110")
    (origin,) = status.progress            # one identity written three ways: one origin
    assert (origin.label, origin.traced_calls) == ("Caller A", 3)
    assert "client" not in repr(status).lower() and "client" not in status.to_json().lower()
    # an identity never collides with a number, nor with another identity
    assert len({cdrtrace.parsing.numbers.caller(x) for x in ("client1", "client2", "1", "+13035550110")}) == 4


# ------------------------------------------------------------------ traces a switch recorded

# a BroadWorks file with a header naming its columns and the service field of the *57s it
# recorded (customerOriginatedTrace.invocationTime), and one of its records
BW_HEADER = (",".join(cdrtrace.parsing.formats.BROADWORKS_COLUMNS)
             + ",customerOriginatedTrace.invocationTime\n")


def bw(**values) -> str:
    row = dict.fromkeys(cdrtrace.parsing.formats.BROADWORKS_COLUMNS, "")
    row.update(values)
    cot = row.pop("cot", "")
    return ",".join(row[c] for c in cdrtrace.parsing.formats.BROADWORKS_COLUMNS) + f",{cot}\n"


def test_a_broadworks_cot_invocation_is_a_trace_of_that_line(store, tmp_path):
    call = bw(recordId="0001", userNumber="+13035550110", direction="Terminating",
              callingNumber="+17205550199", callingPresentationIndicator="Public",
              calledNumber="3035550110", startTime="20260302140000.000", answerIndicator="No",
              releaseTime="20260302140020.000", terminationCause="016")
    # the victim hangs up and dials *57: BroadWorks records it on the user's originating call
    star57 = bw(recordId="0002", userNumber="+13035550110", direction="Originating",
                callingNumber="+13035550110", calledNumber="*57", startTime="20260302140100.000",
                answerIndicator="Yes", answerTime="20260302140101.000",
                releaseTime="20260302140110.000", terminationCause="016", cot="20260302140105.000")
    path = tmp_path / "bw.csv"
    path.write_text(BW_HEADER + call + star57)
    summary = cdrtrace.ingest(store, [str(path)], fmt="broadworks")
    assert (summary.records, summary.switch_traces) == (2, 1)
    with store.envs.read() as txn:              # traced: nothing left due for the next run
        assert txn.stat(store.envs.db["activations_due"])["entries"] == 0
    (record,) = store.trace_records("3035550110", analyst="cic")
    assert (record["outcome"], record["call"]["calling"]) == ("success", "+17205550199")
    assert record["activated_us"] == 1772460065000000 and record["activated_by"]["record"] == 2
    # the same file again (or replayed by a feed) adds no second trace
    assert cdrtrace.ingest(store, [str(path)], fmt="broadworks", force=True).switch_traces == 0
    assert len(store.trace_records("3035550110", analyst="cic")) == 1
    assert store.status("3035550110").progress[0].traced_calls == 1


@pytest.mark.parametrize("cot", ["20261101073000.000", "20261101074500.000"])
def test_a_cot_invocation_in_gmt_names_one_instant_whatever_zones_the_store_noted(store, tmp_path,
                                                                                  cot):
    """BroadWorks writes the *57's invocation time in GMT: one instant, even in the hour
    Denver's clocks repeat (07:00-08:00 UTC on 1 November), in a store that an Asterisk
    file in Denver's local times has made note that hour. A call to the line at 07:50,
    after the invocation, is no candidate: the 06:30 call is named (a local time there
    would have named two instants, and the 07:50 call could have been the last)."""
    def call(record, caller, start, release):
        return bw(recordId=record, userNumber="+13035550110", direction="Terminating",
                  callingNumber=caller, callingPresentationIndicator="Public",
                  calledNumber="3035550110", startTime=start, answerIndicator="No",
                  releaseTime=release, terminationCause="016")
    star57 = bw(recordId="0003", userNumber="+13035550110", direction="Originating",
                callingNumber="+13035550110", calledNumber="*57", startTime=cot,
                answerIndicator="Yes", answerTime=cot, releaseTime=cot, terminationCause="016",
                cot=cot)
    cdrtrace.ingest(store, [cdr_file(tmp_path, cdr(dst="3035550999", start="2026-11-01 01:10:00",
                                                   answer="", end="2026-11-01 01:10:30",
                                                   disposition="NO ANSWER"), name="denver.csv")],
                    zone="America/Denver")
    path = tmp_path / "bw.csv"
    path.write_text(BW_HEADER + call("0001", "+17205550101", "20261101063000.000",
                                  "20261101063020.000")
                    + call("0002", "+17205550102", "20261101075000.000", "20261101075020.000")
                    + star57)
    assert cdrtrace.ingest(store, [str(path)], fmt="broadworks").switch_traces == 1
    (record,) = store.trace_records("3035550110", analyst="cic")
    assert (record["outcome"], record["call"]["calling"]) == ("success", "+17205550101")
    assert "zone" not in record["activated_by"]
    # one queued by a build that kept no zone with it is read against every zone the
    # store noted (Denver's): the 07:50 call may then have been the last
    line, at_us = cdrtrace.parsing.numbers.normalize("3035550110"), record["activated_us"] + 1
    key = record["activated_by"]["feed"].to_bytes(2, "big") + line.to_bytes(8, "big") + \
        at_us.to_bytes(8, "big")
    source = store.trace_records("3035550110", analyst="cic")[0]["call"]["source"]
    store.envs.write(lambda txn: txn.put(key, json.dumps(
        {"source": 2, "record": 3, "offset": 0}).encode(), db=store.envs.db["activations_due"]))
    (legacy,) = store.run_activations()
    assert legacy.outcome.value == "untraceable" and source.endswith("bw.csv")


def test_a_cucm_malicious_call_id_is_a_trace_of_the_flagged_call(store, tmp_path):
    names = cdrtrace.parsing.formats.CUCM_RELEASES[129]
    row = dict.fromkeys(names, "0")
    row.update(huntPilotDN="", globalCallID_callManagerId="1", globalCallID_callId="77",
               callingPartyNumber="7205550199",
               originalCalledPartyNumber="3035550110", finalCalledPartyNumber="3035550110",
               dateTimeOrigination="1772460000", dateTimeConnect="1772460005",
               dateTimeDisconnect="1772460100", origCause_value="16", destCause_value="16",
               comment="callFlag=MALICIOUS", lastRedirectDn="")
    path = tmp_path / "cdr_mcid"
    path.write_text("\n".join([",".join(names)] + [",".join(r[n] for n in names)
                                                    for r in (_cucm_off_hook(1772459990), row)]) + "\n")
    summary = cdrtrace.ingest(store, [str(path)], fmt="cucm")
    assert summary.switch_traces == 1
    (record,) = store.trace_records("3035550110", analyst="cic")
    assert (record["outcome"], record["call"]["start"]) == ("success", "2026-03-02T14:00:00Z")
    assert record["activated_us"] == 1772460100 * 1_000_000


def test_only_the_cucm_calls_of_a_feed_wait_for_it_to_show_it_logs_unanswered_ones(store, tmp_path):
    """Files ingested with no feed named share feed 0. A CUCM file that has shown no call
    that never connected holds its own calls to that, not an Asterisk file's."""
    cdrtrace.ingest(store, [_cucm_file(tmp_path, "cdr_1", [_cucm_call(1772460000, 1772460005, "16",
                                                                      "7205550100", "76")])],
                    fmt="cucm")
    cdrtrace.ingest(store, [cdr_file(tmp_path, cdr(**OLD, dst="3035550177"))])
    assert store.trace("3035550110", at=AT).outcome.value == "untraceable"
    got, record = trace(store, "3035550177")
    assert (got, record["call"]["calling"]) == ("success", "+17205550100")


def test_a_cucm_malicious_call_id_names_the_flagged_call_not_one_waiting(store, tmp_path):
    """The customer presses MCID during the harassing call; CUCM flags that call's own
    record, written when it ends. A call that began during it (call waiting: it rang and
    was not answered) is newer, and by time alone would be the last call before the
    activation: the trace would name the waiting caller. It names the flagged call."""
    names = cdrtrace.parsing.formats.CUCM_RELEASES[129]
    flagged = _cucm_call(1772460000, 1772460005, "16", "7205550199", "77")
    flagged.update(dateTimeDisconnect="1772460100", comment="callFlag=MALICIOUS")
    waiting = _cucm_call(1772460030, 0, "0", "7205550100", "78")     # rang 14:00:30, unanswered
    waiting.update(origCause_value="16", dateTimeDisconnect="1772460045")
    path = tmp_path / "cdr_mcid_cw"
    path.write_text("\n".join([",".join(names)] + [",".join(r[n] for n in names)
                                                    for r in (_cucm_off_hook(1772459990), waiting, flagged)]) + "\n")
    assert cdrtrace.ingest(store, [str(path)], fmt="cucm").switch_traces == 1
    (record,) = store.trace_records("3035550110", analyst="cic")
    assert (record["outcome"], record["call"]["calling"]) == ("success", "+17205550199")
    assert record["activated_us"] == 1772460100 * 1_000_000
    # a *57 dialled afterwards traces the last call as ever: the waiting one
    _, dialled = trace(store, "3035550110", at="2026-03-02T14:05:00Z")
    assert (dialled["outcome"], dialled["call"]["calling"]) == ("success", "+17205550100")


def test_a_malicious_call_id_names_its_call_over_one_waiting_from_the_same_second(store, tmp_path):
    """CUCM's times are whole seconds. A call that began waiting in the second the flagged
    call began ties with it by time, from another caller: by time alone the records could
    not tell which was the last (untraceable). The switch flagged one of them by its own
    record, and that call is named, in either order of the records."""
    names = cdrtrace.parsing.formats.CUCM_RELEASES[129]
    flagged = _cucm_call(1772460000, 1772460005, "16", "7205550199", "77")
    flagged.update(dateTimeDisconnect="1772460100", comment="callFlag=MALICIOUS")
    waiting = _cucm_call(1772460000, 0, "0", "7205550100", "78")     # the same second
    waiting.update(origCause_value="16", dateTimeDisconnect="1772460020")
    for i, rows in enumerate(((waiting, flagged), (flagged, waiting))):
        path = tmp_path / f"cdr_mcid_tie_{i}"
        path.write_text("\n".join([",".join(names)] + [",".join(r[n] for n in names)
                                                        for r in (_cucm_off_hook(1772459990), *rows)]) + "\n")
        db = cdrtrace.open(tmp_path / f"s{i}", create=True)
        assert cdrtrace.ingest(db, [str(path)], fmt="cucm").switch_traces == 1
        (record,) = db.trace_records("3035550110", analyst="cic")
        assert (record["outcome"], record["call"]["calling"]) == ("success", "+17205550199"), i
        # a *57 dialled afterwards has no flag to go by: the two calls tie
        _, dialled = trace(db, "3035550110", at="2026-03-02T14:05:00Z")
        assert dialled["outcome"] == "untraceable" and dialled["call"]["tied_with"], i
        db.close()


def test_a_trace_the_switch_recorded_minutes_ago_names_the_call_it_flagged(store, tmp_path):
    """A trace a switch recorded is timed by the switch's own clock, as its calls are: a
    call stamped after its activation began after it (here the harasser calling again a
    minute after the MCID). It is not the clocks disagreeing, which a trace made on the
    service's clock, as it is activated, takes such a call for."""
    names = cdrtrace.parsing.formats.CUCM_RELEASES[129]
    now = int(time.time())
    flagged = _cucm_call(now - 200, now - 195, "16", "7205550199", "77")
    flagged.update(dateTimeDisconnect=str(now - 100), comment="callFlag=MALICIOUS")
    again = _cucm_call(now - 60, 0, "0", "7205550199", "78")
    again.update(origCause_value="16", dateTimeDisconnect=str(now - 40))
    path = tmp_path / "cdr_mcid_again"
    path.write_text("\n".join([",".join(names)] + [",".join(r[n] for n in names)
                                                    for r in (_cucm_off_hook(now - 300), flagged, again)]) + "\n")
    assert cdrtrace.ingest(store, [str(path)], fmt="cucm").switch_traces == 1
    (record,) = store.trace_records("3035550110", analyst="cic")
    assert (record["outcome"], record["call"]["start_us"]) == ("success", (now - 200) * 1_000_000)


def _cucm_off_hook(start: int) -> dict:
    """A phone taken off hook and put back: CUCM writes its record (no called number, the
    caller cleared, never connected) only with its Zero Duration flag on, as it must be."""
    names = cdrtrace.parsing.formats.CUCM_RELEASES[129]
    row = dict.fromkeys(names, "0")
    row.update(huntPilotDN="", globalCallID_callManagerId="1", globalCallID_callId=str(start),
               callingPartyNumber="2001",
               originalCalledPartyNumber="", finalCalledPartyNumber="", lastRedirectDn="",
               dateTimeOrigination=str(start), dateTimeDisconnect=str(start + 5),
               origCause_value="16", destCause_value="0", comment="")
    return row


def _cucm_call(start: int, connect: int, dest_cause: str, caller: str, call_id: str) -> dict:
    names = cdrtrace.parsing.formats.CUCM_RELEASES[129]
    row = dict.fromkeys(names, "0")
    row.update(huntPilotDN="", globalCallID_callManagerId="1", globalCallID_callId=call_id, callingPartyNumber=caller,
               originalCalledPartyNumber="3035550110", finalCalledPartyNumber="3035550110",
               dateTimeOrigination=str(start), dateTimeConnect=str(connect),
               dateTimeDisconnect=str(start + 20), origCause_value="16" if connect else "0",
               destCause_value=dest_cause, lastRedirectDn="", comment="")
    return row


def _bw_call(record_id: str, caller: str, start: str, answered: bool, cause: str,
             indicator: str = "Yes") -> str:
    columns = cdrtrace.parsing.formats.BROADWORKS_COLUMNS
    row = dict.fromkeys(columns, "")
    row.update(recordId=record_id, userNumber="+13035550110", direction="Terminating",
               callingNumber=caller, callingPresentationIndicator="Public",
               calledNumber="3035550110", startTime=start + ".000",
               answerIndicator=indicator if answered else "No",
               answerTime=start[:-2] + "05.000" if answered else "",
               releaseTime=start[:-2] + "20.000", terminationCause=cause)
    return ",".join(row[c] for c in columns)


def _cucm_file(tmp_path, name: str, rows) -> str:
    names = cdrtrace.parsing.formats.CUCM_RELEASES[129]
    path = tmp_path / name
    path.write_text("\n".join([",".join(names)] + [",".join(r[n] for n in names) for r in rows]) + "\n")
    return str(path)


def test_a_cucm_feed_that_logs_no_unconnected_call_names_no_caller(store, tmp_path):
    """CUCM writes no record of a call that never connected (one that rang unanswered and
    its caller hung up) while its 'CDR Log Calls with Zero Duration Flag' service parameter
    is off, its default. Such a feed shows connected calls and failed ones only (busy,
    a bad number: CUCM writes those regardless), and a call that rang the line after the
    last recorded one is missing: its caller hung up at 14:30 with no record, and the trace
    would name the 14:00 caller. Until the feed shows a record only that flag writes (a
    call its caller cleared before it connected), no call it recorded before is named."""
    busy = _cucm_call(1772460300, 0, "17", "7205550155", "70")       # failed: always written
    busy.update(originalCalledPartyNumber="3035550177", finalCalledPartyNumber="3035550177",
                dateTimeDisconnect="1772460300")
    default = _cucm_file(tmp_path, "cdr_1", [_cucm_call(1772460000, 1772460005, "16", "7205550100", "76"),
                                             busy])
    cdrtrace.ingest(store, [default], fmt="cucm")
    record = held_from_the_customer(store, "3035550110", AT, "7205550100", "2026-03-02T14:00:00Z")
    assert "has not shown a record of a call that never connected" in record["reason"]
    assert "Zero Duration" in record["reason"]
    # the flag turned on: its first abandoned call (to another line) comes at 14:10, after
    # the 14:00 call, whose line may still have had a call unrecorded in between
    abandoned = _cucm_call(1772460600, 0, "0", "7205550166", "71")
    abandoned.update(originalCalledPartyNumber="3035550188", finalCalledPartyNumber="3035550188",
                     origCause_value="16")
    cdrtrace.ingest(store, [_cucm_file(tmp_path, "cdr_2", [abandoned])], fmt="cucm")
    _, record = trace(store, "3035550110", at="2026-03-02T15:01:00Z")
    assert record["outcome"] == "untraceable"
    assert "first showed a record of a call that never connected at 2026-03-02T14:10:00Z" in record["reason"]
    # a call after it is named, from this feed, and so is one that came before it in a
    # file read later (out of order): the feed logs them from 14:10 on
    later = _cucm_call(1772461200, 1772461205, "16", "7205550101", "72")
    cdrtrace.ingest(store, [_cucm_file(tmp_path, "cdr_3", [later])], fmt="cucm")
    got, record = trace(store, "3035550110", at="2026-03-02T15:02:00Z")
    assert (got, record["call"]["calling"]) == ("success", "+17205550101")
    assert store.trace("3035550188", at=AT).outcome.value == "success"
    early = _cucm_call(1772459000, 0, "0", "7205550102", "73")      # 13:43, cleared while ringing
    early.update(originalCalledPartyNumber="3035550199", finalCalledPartyNumber="3035550199",
                 origCause_value="16")
    cdrtrace.ingest(store, [_cucm_file(tmp_path, "cdr_0", [early])], fmt="cucm")
    got, record = trace(store, "3035550110", at="2026-03-02T15:03:00Z")
    assert (got, record["call"]["calling"]) == ("already_traced", "+17205550101")
    assert store.trace("3035550199", at=AT).outcome.value == "success"   # 13:43: shown from then


def _older_then_unanswered(fmt: str, cause: str) -> bytes:
    """An answered call to 3035550110 at 14:00 from 7205550100, then one at 14:30 from
    7205550199 that rang it and ended unanswered with `cause`."""
    if fmt == "freeswitch":
        return b"\n".join((
            fs_call("Innocent", "7205550100", "3035550110", "2026-03-02 14:00:00",
                    "2026-03-02 14:00:05", "2026-03-02 14:01:00", uuid="old"),
            fs_call("Caller", "7205550199", "3035550110", "2026-03-02 14:30:00",
                    end="2026-03-02 14:30:07", cause=cause, uuid="new"))) + b"\n"
    if fmt == "cucm":
        names = cdrtrace.parsing.formats.CUCM_RELEASES[129]
        rows = (_cucm_off_hook(1772459990),
                _cucm_call(1772460000, 1772460005, "16", "7205550100", "76"),
                _cucm_call(1772461800, 0, cause, "7205550199", "77"))
        return "\n".join([",".join(names)] + [",".join(r[n] for n in names) for r in rows]
                         ).encode() + b"\n"
    header = ",".join(cdrtrace.parsing.formats.BROADWORKS_COLUMNS)
    return "\n".join((header, _bw_call("0001", "+17205550100", "20260302140000", True, "016"),
                      _bw_call("0002", "+17205550199", "20260302143000", False, cause))
                     ).encode() + b"\n"


@pytest.mark.parametrize("indicator, outcome, disposition", [
    ("Yes-PostRedirection", "success", "answered_elsewhere"),
    ("YES-POSTREDIRECTION", "success", "answered_elsewhere"),
    ("yes", "success", "answered"),
    ("Yes-Maybe", "untraceable", "unreadable"),      # a value BroadWorks never writes
])
def test_a_broadworks_call_answered_after_the_line_forwarded_it(store, tmp_path, indicator,
                                                                 outcome, disposition):
    """BroadWorks writes `Yes-PostRedirection` in the forwarding user's own terminating
    record (as in a public sample of a real server's record: no redirecting columns, the
    user's number called): the line forwarded the call (no answer, busy, always) and
    another phone or voicemail answered it. The line received it (R2) and did not answer."""
    header = ",".join(cdrtrace.parsing.formats.BROADWORKS_COLUMNS)
    data = "\n".join((header, _bw_call("0001", "+17205550100", "20260302140000", True, "016"),
                      _bw_call("0002", "+17205550199", "20260302143000", True, "016",
                               indicator=indicator))).encode() + b"\n"
    if disposition != "unreadable":
        rows, _ = both_parsers("broadworks", data)
        assert rows[1]["answer_us"] == (1772461805000000 if disposition == "answered" else 0)
    path = tmp_path / "bw.csv"
    path.write_bytes(data)
    cdrtrace.ingest(store, [str(path)], fmt="broadworks", rejects_path=tmp_path / "r.jsonl")
    got, record = trace(store, "3035550110")
    assert (got, record["call"]["disposition"]) == (outcome, disposition)
    assert record["call"]["start"] == "2026-03-02T14:30:00Z"     # never the 14:00 caller
    if outcome == "success":
        assert record["call"]["calling"] == "+17205550199"
        assert record["call"]["answered"] is (disposition == "answered")


@pytest.mark.parametrize("fmt, cause, disposition", [
    ("freeswitch", "LOSE_RACE", "answered_elsewhere"),
    ("freeswitch", "PICKED_OFF", "answered_elsewhere"),
    ("freeswitch", "ALLOTTED_TIMEOUT", "no_answer"),
    ("cucm", "26", "answered_elsewhere"), ("broadworks", "026", "answered_elsewhere")])
def test_a_phone_that_rang_and_did_not_answer_received_the_call(store, tmp_path, fmt, cause,
                                                                disposition):
    """R3: a ring group's phones that lost the race to answer, a ringing phone whose call
    was picked up from another (FreeSWITCH LOSE_RACE, PICKED_OFF; Q.850 cause 26,
    non-selected user clearing) were alerted, as was a group's phone that rang until its
    own ring time ran out (ALLOTTED_TIMEOUT, FreeSWITCH's leg_timeout): the call is their
    last, not an older one."""
    data = _older_then_unanswered(fmt, cause)
    form = get_format(fmt)
    header, skip = cdrtrace.parsing.parsers.read_header(form, data)
    native = parse_all(data[skip:], parser=make_parser(form, "UTC", header=header))
    assert native == parse_all(data[skip:], parser=twin.CdrParser(form.dialect(header), "UTC"))
    (path := tmp_path / "cdr.csv").write_bytes(data)
    if fmt == "freeswitch":
        show_freeswitch_legs(store, tmp_path)
    assert cdrtrace.ingest(store, [str(path)], fmt=fmt).rejected == 0
    outcome, record = trace(store, "3035550110")
    call = record["call"]
    assert (outcome, call["start"], call["calling"], call["answered"]) == (
        "success", "2026-03-02T14:30:00Z", "+17205550199", False)
    # not answered by this phone; where another took it, the evidence says so (answered
    # elsewhere: another phone of its group, or another device of the line itself)
    assert call["disposition"] == disposition


def _refused(fmt: str, cause: str, after: int) -> bytes:
    """An answered call to 3035550110 at 14:00 from 7205550100, then one at 14:30 from
    7205550199 that ended `after` seconds later, refused with `cause` (busy or rejected)."""
    if fmt == "asterisk":
        refused = cdr(src="7205550199", clid='"Caller" <7205550199>', disposition=cause,
                      start="2026-03-02 14:30:00", end=f"2026-03-02 14:30:{after:02d}",
                      duration=str(after), billsec="0", uniqueid="new.1")
        return cdr(**OLD) + b"\n" + refused + b"\n"
    data = _older_then_unanswered(fmt, cause)
    end, refused_end = {
        "freeswitch": (b'"2026-03-02 14:30:07"', f'"2026-03-02 14:30:{after:02d}"'),
        "cucm": (b",1772461820,", f",{1772461800 + after},"),
        "broadworks": (b"20260302143020.000", f"2026030214300{after}.900")}[fmt]
    assert data.count(end) == 1          # the refused call's end, and only it, moves
    return data.replace(end, refused_end.encode())


def _traced_after_ending(tmp_path, fmt: str, cause: str, after: int):
    """(outcome, record) of a trace of 3035550110 at 15:00 on a store of _refused(fmt,
    cause, after) alone; both parsers read it alike and reject nothing."""
    data = _refused(fmt, cause, after)
    form = get_format(fmt)
    header, skip = cdrtrace.parsing.parsers.read_header(form, data)
    native = parse_all(data[skip:], parser=make_parser(form, "UTC", header=header))
    assert native == parse_all(data[skip:], parser=twin.CdrParser(form.dialect(header), "UTC"))
    assert native[1] == []
    (path := tmp_path / f"cdr-{after}.csv").write_bytes(data)
    s = cdrtrace.open(tmp_path / f"store-{after}", create=True)
    if fmt == "freeswitch":
        show_freeswitch_legs(s, tmp_path)
    assert cdrtrace.ingest(s, [str(path)], fmt=fmt).rejected == 0
    return trace(s, "3035550110")


@pytest.mark.parametrize("fmt, cause", [
    ("asterisk", "BUSY"), ("freeswitch", "USER_BUSY"), ("freeswitch", "CALL_REJECTED"),
    ("cucm", "17"), ("cucm", "21"), ("broadworks", "017"), ("broadworks", "021")])
def test_a_call_refused_after_it_may_have_rung_fails_closed(tmp_path, fmt, cause):
    """A phone's user who refuses a ringing call (its reject key: 486 Busy Here, 603
    Decline) leaves a busy or rejected record, as a busy line does. Where the record logs
    no alerting, one that ended a second or more after it began may have rung (R3): it is
    the line's last call, and untraceable, never a success against the older caller. One
    that ended in the second it began never rang: busy, not received (R3)."""
    for after in (6, 0):
        outcome, record = _traced_after_ending(tmp_path, fmt, cause, after)
        if after:
            assert (outcome, record["call"]["start"], record["call"]["disposition"]) == (
                "untraceable", "2026-03-02T14:30:00Z", "late_refusal")
            assert "may have refused it while it rang" in record["reason"]
        else:
            assert (outcome, record["call"]["start"], record["call"]["calling"]) == (
                "success", "2026-03-02T14:00:00Z", "+17205550100")


@pytest.mark.parametrize("fmt, cause, rang", [
    ("asterisk", "FAILED", True), ("asterisk", "CONGESTION", True),
    ("freeswitch", "RECOVERY_ON_TIMER_EXPIRE", True),
    ("freeswitch", "NORMAL_TEMPORARY_FAILURE", True),
    ("freeswitch", "PROGRESS_TIMEOUT", False),        # no ringing nor progress: never rang
    ("cucm", "102", True), ("cucm", "41", True),
    ("cucm", "27", False),                            # destination out of order
    ("broadworks", "102", True), ("broadworks", "047", True),
    ("broadworks", "020", False)])                    # subscriber absent
def test_a_call_that_failed_after_it_may_have_rung_fails_closed(tmp_path, fmt, cause, rang):
    """A phone or proxy that gives up on a ringing call ends it with a timeout (SIP 408,
    which gateways map to Q.850 102 and FreeSWITCH to RECOVERY_ON_TIMER_EXPIRE) or with
    the reply its software is set to send (a 503, cause 41 or 47): the record says it
    failed. Where the record logs no alerting, one that ended a second or more after it
    began may have rung (R3): it is the line's last call, and untraceable, never a success
    against the older caller. A cause that says the call reached no phone, or a failure
    within the second it began, never rang: the older call is traced."""
    for after in (6, 0):
        outcome, record = _traced_after_ending(tmp_path, fmt, cause, after)
        if after and rang:
            assert (outcome, record["call"]["start"], record["call"]["disposition"]) == (
                "untraceable", "2026-03-02T14:30:00Z", "late_failure")
            assert "gives up on a ringing call" in record["reason"]
        else:
            assert (outcome, record["call"]["start"], record["call"]["calling"]) == (
                "success", "2026-03-02T14:00:00Z", "+17205550100")


@pytest.mark.parametrize("after, outcome, start", [
    (20, "untraceable", "2026-03-02T14:30:00Z"),     # it may have rung: the last call
    (0, "success", "2026-03-02T14:00:00Z")])         # over in its first second: never rang
def test_a_freeswitch_call_cleared_unanswered_may_have_rung(tmp_path, after, outcome, start):
    """A dialplan that bridges to the line, then hangs up when nobody answers (continue_on_
    fail, then `hangup`), logs the A leg unanswered with NORMAL_CLEARING: the templates'
    record cannot tell whether the line rang first. One that lasted a second or more may
    have: it is the line's last call, untraceable, never a success against the caller
    before it. One over within its first second never rang (R3)."""
    data = _older_then_unanswered("freeswitch", "NORMAL_CLEARING").replace(
        b'"2026-03-02 14:30:07"', f'"2026-03-02 14:30:{after:02d}"'.encode())
    rows, bad = both_parsers("freeswitch", data)
    assert bad == [] and rows[1]["disposition"] == cdrtrace.parsing.formats.Disposition.UNKNOWN
    (path := tmp_path / "cdr.csv").write_bytes(data)
    s = cdrtrace.open(tmp_path / "store", create=True)
    show_freeswitch_legs(s, tmp_path)
    assert cdrtrace.ingest(s, [str(path)], fmt="freeswitch").rejected == 0
    got, record = trace(s, "3035550110")
    assert (got, record["call"]["start"]) == (outcome, start)
    if after:
        assert record["call"]["disposition"] == "unknown"
        assert "does not tell whether the line rang" in record["reason"]


def test_a_leg_that_rang_outranks_a_leg_that_may_have(tmp_path):
    """Legs of one call to one line are one call, and a leg known to have rung decides it
    over one that only may have: the A leg's unexplained end (NORMAL_CLEARING unanswered,
    20 s) beside its B leg picked up from another phone (PICKED_OFF) is a call that rang,
    answered elsewhere, and traceable."""
    a_leg = fs_call("Caller", "7205550199", "3035550110", "2026-03-02 14:30:00",
                    end="2026-03-02 14:30:20", uuid="a-1", bleg="b-1")
    b_leg = fs_call("Caller", "7205550199", "3035550110", "2026-03-02 14:30:01",
                    end="2026-03-02 14:30:19", cause="PICKED_OFF", uuid="b-1")
    old = fs_call("Innocent", "7205550100", "3035550110", "2026-03-02 14:00:00",
                  "2026-03-02 14:00:05", "2026-03-02 14:01:00", uuid="old")
    rows, bad = both_parsers("freeswitch", b"\n".join((old, a_leg, b_leg)) + b"\n")
    assert bad == [] and all(r["received"] for r in rows)
    for n, legs in enumerate(((old, a_leg, b_leg), (old, b_leg, a_leg))):   # either order
        s = cdrtrace.open(tmp_path / f"store-{n}", create=True)
        path = cdr_file(tmp_path, *legs, name=f"cdr-{n}.csv")
        assert cdrtrace.ingest(s, [path], fmt="freeswitch").rejected == 0
        outcome, record = trace(s, "3035550110")
        assert (outcome, record["call"]["start"], record["call"]["disposition"]) == (
            "success", "2026-03-02T14:30:00Z", "answered_elsewhere")
        s.close()


def test_a_call_that_rang_one_device_of_the_line_is_traced_though_another_refused_it(
        store, tmp_path):
    """Legs of one call to one line: a device that rang unanswered (NO ANSWER) makes the
    call received and traceable, whatever another device of the line did (its user
    refused it after 5 s: a late refusal on its own)."""
    legs = [cdr(src="7205550199", clid='"Caller" <7205550199>', disposition=disposition,
                start="2026-03-02 14:30:00", end="2026-03-02 14:30:05", duration="5",
                billsec="0", uniqueid="new.1", dstchannel=f"PJSIP/3035550110-0000002{n}")
            for n, disposition in enumerate(("BUSY", "NO ANSWER"))]
    both_parsers("asterisk", b"\n".join(legs) + b"\n")
    cdrtrace.ingest(store, [cdr_file(tmp_path, cdr(**OLD), *legs)])
    outcome, record = trace(store, "3035550110")
    assert (outcome, record["call"]["start"], record["call"]["disposition"]) == (
        "success", "2026-03-02T14:30:00Z", "no_answer")


@pytest.mark.parametrize("line, cause", [
    (b'"accountcode","src","dst","dcontext","clid","channel","dstchannel","lastapp","lastdata",'
     b'"start","answer","end","duration","billsec","disposition","amaflags","uniqueid","userfield"',
     "(a header line: files joined together?)"),
    (cdr(**OLD).replace(b",", b";"), "(the fields look separated by ';', not ',')"),
    (cdr(**OLD).replace(b'"2026-03-02 14:00:00"', b'"3/2/2026 14:00"'),
     "(dates or numbers as a spreadsheet writes them: saved from a spreadsheet?)"),
], ids=["header", "semicolons", "spreadsheet"])
def test_rejects_name_their_likely_cause(store, tmp_path, line, cause):
    path = cdr_file(tmp_path, cdr(**OLD), line)
    cdrtrace.ingest(store, [path], rejects_path=tmp_path / "r.jsonl")
    (reject,) = [__import__("json").loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert reject["reason"].endswith(cause), reject["reason"]


def test_a_call_cancelled_before_a_full_ring_is_still_received(store, tmp_path):
    # R3: no minimum time on the line (the minimum ring time defaults to 0)
    zero = cdr(disposition="NO ANSWER", answer="", start="2026-03-02 14:30:00",
               end="2026-03-02 14:30:00", src="7205550199", clid="", uniqueid="z.0")
    cdrtrace.ingest(store, [cdr_file(tmp_path, cdr(**OLD), zero)])
    outcome, record = trace(store, "3035550110")
    assert (outcome, record["call"]["start"]) == ("success", "2026-03-02T14:30:00Z")


def test_generated_traffic_has_legs_unreadable_records_zero_rings_and_named_restricted(tmp_path):
    from cdrtrace import synth

    path = tmp_path / "day.csv"
    truth = synth.write(path, 20_000, 5_000, seed=3, legs=0.2, unreadable=0.01)
    data = path.read_bytes()
    rows = data.splitlines()
    fields = [next(__import__("csv").reader([r.decode("latin-1")])) for r in rows]
    legs = len(fields) - len({f[16] for f in fields})      # rows sharing a call's uniqueid
    broken = sum(f[14] in ("ANSWERD", "NO ANSWR", "BUSSY", "FAILD", "CONGESTON") for f in fields)
    assert legs > 1000 and broken > 100 and len(rows) == truth["calls"] + legs
    assert any(f[14] == "CANCEL" and f[9] == f[11] for f in fields)              # 0 s rings
    assert any(f[1] == "anonymous" and not f[4].startswith('"Anonymous"') for f in fields)
    store = cdrtrace.open(tmp_path / "s", create=True)
    summary = cdrtrace.ingest(store, [str(path)])
    assert summary.rejected == broken and summary.unreadable >= broken   # every one fails closed
    assert summary.records == len(rows)
    # legs merge: a line's analyst view holds one entry per call, whatever the legs
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    other = tmp_path / "shuffled.csv"
    other.write_bytes(b"\n".join(shuffled) + b"\n")
    again = cdrtrace.open(tmp_path / "s2", create=True)
    cdrtrace.ingest(again, [str(other)])
    lines = sorted({r.split(b",")[2].strip(b'"').decode() for r in rows[:300]})
    for line in lines:
        assert store.last_calls(line, analyst="cic") == [
            {**c, "source": store.last_calls(line, analyst="cic")[i]["source"],
             "offset": store.last_calls(line, analyst="cic")[i]["offset"]}
            for i, c in enumerate(again.last_calls(line, analyst="cic"))], line


@pytest.mark.parametrize("name, fmt", [
    ("asterisk/Master.csv", "asterisk"), ("asterisk-custom/Master.csv", "asterisk-custom"),
    ("freeswitch/Master.csv", "freeswitch"), ("cucm/cdr_StandAloneCluster_01_202603021403_1", "cucm"),
    ("cucm/cdr_grep_headerless_r12.csv", "cucm"), ("cucm/car_export_no_types.csv", "cucm"),
    ("broadworks/BW-CDR-20260302140000-2-000001.csv", "broadworks"),
    ("broadworks/BW-CDR-20260302150000-1-000002.csv", "broadworks"),
    ("real/asterisk-ring-groups-ru.csv", "asterisk"), ("real/asterisk-custom-sip-users.csv", "asterisk-custom"),
    ("real/freeswitch-after-spreadsheet.csv", "freeswitch"), ("real/asterisk-queue-ua.csv", "asterisk"),
    ("real/freeswitch-groups-kr.csv", "freeswitch"), ("real/asterisk-reject-key-de.csv", "asterisk"),
    ("real/freeswitch-multi-domain.csv", "freeswitch"),
])
@pytest.mark.parametrize("chunk", [None, 7, 4096])
def test_native_and_reference_agree_on_every_sample(name, fmt, chunk):
    """Rows, rejects, salvage, identities, markers and switch traces, in any chunking."""
    data = (SAMPLES / name).read_bytes()
    form = get_format(fmt)
    header, skip = cdrtrace.parsing.parsers.read_header(form, data[:65536])
    zone, cc = {"-ru": ("Asia/Irkutsk", 7), "-ua": ("Europe/Kyiv", 380),
                "-kr": ("Asia/Seoul", 82)}.get(
        name[-7:-4], ("America/Denver", 1))
    native = make_parser(form, zone, cc, header=header, start_offset=skip)
    reference = twin.CdrParser(form.dialect(header), zone, cc, start_offset=skip)
    chunks = None if chunk is None else [chunk] * (len(data) // chunk + 1)
    got = parse_all(data[skip:], chunks=chunks, parser=native)
    assert got == parse_all(data[skip:], chunks=chunks, parser=reference)
    assert [native.salvage(raw) for *_, raw in got[1]] == [reference.salvage(raw) for *_, raw in got[1]]
    assert native.take_identities() == reference.take_identities()
    assert native.take_activations() == reference.take_activations()
    assert native.take_tenants() == reference.take_tenants()
    assert native.take_tenant_names() == reference.take_tenant_names()
    assert (native.markers, native.record) == (reference.markers, reference.record)


def test_the_unreadable_record_log_is_kept_for_the_retention_period_only(store, tmp_path):
    from cdrtrace import testing

    early = cdr(dst="", dstchannel="", start="2026-03-02 10:00:00", end="2026-03-02 10:00:10",
                disposition="NO ANSWR", uniqueid="x.2")
    late = cdr(dst="", dstchannel="", start="2026-03-02 14:20:00", end="2026-03-02 14:20:10",
               disposition="NO ANSWR", uniqueid="x.1")
    cdrtrace.ingest(store, [cdr_file(tmp_path, early, cdr(**OLD), late)])
    noon = 1772452800 * 10**6                                   # 2026-03-02T12:00:00Z
    store.purge(operator="ops", older_than_days=0, now_us=noon)
    assert testing.audit_entries(store)[-1]["details"]["unreadable"] == 1   # the 10:00 reject
    outcome, record = trace(store, "3035550199")                # the 14:20 one is still known
    assert record["unreadable_nearby"]["records"] == 1
    store.purge(operator="ops", older_than_days=0, now_us=noon + 86400 * 10**6)
    assert testing.audit_entries(store)[-1]["details"]["unreadable"] == 1
    assert trace(store, "3035550199")[1]["unreadable_nearby"]["records"] == 0
