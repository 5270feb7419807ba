"""A call that comes in after the trace (docs/trace-rules.md, "A call that comes in after
the trace"): a record ingested after a successful trace, of a call to the line from
another caller (or none known) that began between the call named and the activation,
shows the trace named the wrong call. The trace is noted (`later_call`, never the later
caller's number), no longer counts toward action (R8), the customer is told no call time
for it, and the CIC's reports read it as `contested`. Expected answers come from the
rules, worked out by hand."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from test_documents import AUTHORITY, text_of
from test_real_data import _cucm_call, _cucm_off_hook

import cdrtrace
from cdrtrace.config import Feed
from cdrtrace.evidence import later
from cdrtrace.ingestion import following
from cdrtrace.ingestion.live import StreamOptions
from cdrtrace.parsing.formats import CUCM_RELEASES
from cdrtrace.parsing.parsers import get_format
from cdrtrace.reports import analytics
from conftest import cdr, cdr_file

LINE = "3035550110"
AT = "2026-03-02T14:10:00Z"


def call(src: str, start: str, uid: str, **more) -> bytes:
    more.setdefault("end", f"2026-03-02 {start[:6]}59")
    return cdr(src=src, clid=f'"Someone" <{src}>', start=f"2026-03-02 {start}", uniqueid=uid,
               **more)


INNOCENT = call("7205550199", "13:00:00", "sw.0")      # Pat's call, answered
MAL = call("7205550100", "14:03:12", "sw.9")           # the harasser's, read late


def ingest(store, tmp_path, *records: bytes, feed: int = 1):
    path = cdr_file(tmp_path, *records, name=f"cdr-{len(list(tmp_path.iterdir()))}.csv")
    return cdrtrace.ingest(store, [path], fmt="asterisk", zone="UTC", feed_id=feed)


def first_trace(store, tmp_path) -> None:
    ingest(store, tmp_path, INNOCENT)
    result = store.trace(LINE, at=AT)
    assert (result.outcome.value, result.call_time) == ("success", "2026-03-02T13:00:00Z")


def record(store, n: int = 0) -> dict:
    return store.trace_records(LINE, analyst="cic")[n]


def test_a_call_read_after_a_trace_that_came_between_contests_it(store_either, tmp_path):
    store = store_either
    first_trace(store, tmp_path)
    assert [p.traced_calls for p in store.status(LINE).progress] == [1]
    summary = ingest(store, tmp_path, MAL, feed=2)   # the other switch's file, read after the *57
    assert summary.contested == 1
    note = record(store)["later_call"]
    assert (note["start"], note["feed"], note["disposition"]) == (
        "2026-03-02T14:03:12Z", 2, "answered")
    assert "7205550100" not in repr(note) and "7205550199" not in repr(note)
    status = store.status(LINE)
    assert status.progress == ()                              # counts toward nothing
    assert status.traces[0]["outcome"] == "success" and status.traces[0]["call_time"] is None
    assert not any(n in repr(status) for n in ("7205550100", "7205550199"))
    # the reports: no repeat origin, and the trace read as contested
    assert analytics.repeat_origins(store.trace_table(analyst="cic"), min_calls=1).num_rows == 0
    timeline = store.timeline(LINE, "7205550199", analyst="cic").to_pylist()
    assert [r["outcome"] for r in timeline if r["trace_id"]] == ["contested"]
    # the evidence record itself is as written: the note is read beside it
    with store.envs.eread() as txn:
        stored = json.loads(bytes(txn.get((1).to_bytes(8, "big"), db=store.envs.db["traces"])))
    assert stored["outcome"] == "success" and "later_call" not in stored
    # a *57 now names the call that rang the line last
    result = store.trace(LINE, at=AT)
    assert (result.outcome.value, result.call_time) == ("success", "2026-03-02T14:03:12Z")
    assert [p.traced_calls for p in store.status(LINE).progress] == [1]
    # purged past retention, the trace takes its note with it
    now = 1772460600 * 10**6 + 60 * 10**6          # a minute after both were activated
    assert store.purge(operator="ops", older_than_days=1 / 86400 * 30, now_us=now)["traces"] == 2
    with store.envs.eread() as txn:
        assert txn.get(later.NOTED + (1).to_bytes(8, "big"), db=store.envs.db["emeta"]) is None


def test_calls_read_later_that_show_nothing_contest_nothing(store_either, tmp_path):
    """Not the call named (another of its legs, its id, from its caller), not from another
    caller (the same caller's other call names the same caller), not between the call named
    and the activation (before the call, after the *57), or a call that never rang the
    line: the trace stands."""
    store = store_either
    first_trace(store, tmp_path)
    ingest(store, tmp_path,
           call("7205550199", "13:30:00", "sw.1"),                     # Pat again
           call("7205550188", "12:59:00", "sw.2"),                     # before Pat's call
           call("7205550177", "14:10:00", "sw.3"),                     # at the *57 itself
           call("7205550166", "13:40:00", "sw.4", disposition="BUSY",  # busy at once
                end="2026-03-02 13:40:00", duration="0", billsec="0"),
           feed=2)
    # another record of Pat's call (its id, its switch), the caller's number written apart
    # (another caller's would leave the call neither's: test_asterisk_transfers.py)
    ingest(store, tmp_path, call("+1 720 555 0199", "13:05:00", "sw.0"))
    assert "later_call" not in record(store)
    assert [p.traced_calls for p in store.status(LINE).progress] == [1]
    assert [r["outcome"] for r in store.timeline(LINE, "7205550199", analyst="cic").to_pylist()
            if r["trace_id"]] == ["success"]


def test_an_unreadable_record_read_later_contests_the_trace(store, tmp_path):
    """A record that cannot be read, for the line, at 14:03 (its caller not known): had it
    been in, the trace would have been untraceable."""
    first_trace(store, tmp_path)
    ingest(store, tmp_path, call("7205550100", "14:03:12", "sw.9", billsec="x"), feed=2)
    note = record(store)["later_call"]
    assert (note["start"], note["disposition"]) == ("2026-03-02T14:03:12Z", "unreadable")
    assert store.status(LINE).progress == ()


def test_the_call_is_noted_though_newer_calls_push_it_out_of_the_index(store, tmp_path):
    """The late file also holds four calls after the *57: the line's index keeps its newest
    four and no longer holds the 14:03 call, but the commit that brought it checked it."""
    first_trace(store, tmp_path)
    after = [call(f"72055502{n}0", f"15:0{n}:00", f"sw.a{n}") for n in range(4)]
    ingest(store, tmp_path, MAL, *after, feed=2)
    assert [c["start"] for c in store.last_calls(LINE, analyst="cic")][-1] == "2026-03-02T15:00:00Z"
    assert record(store)["later_call"]["start"] == "2026-03-02T14:03:12Z"


def test_a_trace_the_commit_did_not_see_is_checked_at_the_next_ingest(store, tmp_path,
                                                                    monkeypatch):
    """A trace recorded while the late file was being committed (its lines read before the
    trace was in): the next ingest checks it against the index."""
    first_trace(store, tmp_path)
    with monkeypatch.context() as m:
        m.setattr(store, "traced_lines", lambda: (np.empty(0, np.uint64), np.empty(0, np.int64)))
        m.setattr(store, "note_later_calls", lambda: 0)
        ingest(store, tmp_path, MAL, feed=2)
    assert "later_call" not in record(store)
    ingest(store, tmp_path, call("7205550144", "16:00:00", "sw.x"), feed=3)
    assert record(store)["later_call"]["start"] == "2026-03-02T14:03:12Z"


def test_a_queued_call_a_crash_left_is_checked_at_the_next_ingest(store, tmp_path, monkeypatch):
    """The commit queued the late call with its records, and the process stopped before
    checking it (and the call is no longer in the index): the next ingest checks it."""
    first_trace(store, tmp_path)
    after = [call(f"72055502{n}0", f"15:0{n}:00", f"sw.a{n}") for n in range(4)]
    with monkeypatch.context() as m:
        m.setattr(store, "note_later_calls", lambda: 0)
        ingest(store, tmp_path, MAL, *after, feed=2)
    assert "later_call" not in record(store)
    ingest(store, tmp_path, call("7205550144", "16:00:00", "sw.x", dst="3035550199"), feed=3)
    assert record(store)["later_call"]["start"] == "2026-03-02T14:03:12Z"


def test_calls_a_trace_s_rules_pass_over_contest_nothing(store, tmp_path):
    """A call to another switch's extension of the same number, where the trace named its
    feed (and a group call of that switch that dialled it); a call that began waiting
    during the call a customer flagged with CUCM's malicious call id (the switch named its
    call), and calls through a hunt pilot then: read later, none contests."""
    east, west = Feed("east", get_format("asterisk")), Feed("west", get_format("asterisk"))
    cdrtrace.ingest(store, [cdr_file(tmp_path, call("3035550100", "14:00:00", "e1", dst="2001"),
                                     name="east.csv")], feed=east)
    assert store.trace("2001", at="2026-03-02T14:30:00Z", feed="east").outcome.value == "success"
    cdrtrace.ingest(store, [cdr_file(tmp_path, call("3035550100", "15:00:00", "e2", dst="2009"),
                                     name="east2.csv")], feed=east)   # checks the trace
    cdrtrace.ingest(store, [cdr_file(tmp_path, call("3035550177", "14:20:00", "w1", dst="2001"),
                                     call("3035550166", "14:25:00", "w2", dst="900",
                                          dstchannel="SIP/2002-00000002", answer="",
                                          lastdata="SIP/2001&SIP/2002,10",
                                          disposition="NO ANSWER"),   # a group that dialled 2001
                                     name="west.csv")], feed=west)
    assert "later_call" not in store.trace_records("2001", analyst="cic")[0]
    assert [p.traced_calls for p in store.status("2001", "east").progress] == [1]

    names = CUCM_RELEASES[129]
    flagged = _cucm_call(1772460000, 1772460005, "16", "7205550199", "77")
    flagged.update(dateTimeDisconnect="1772460100", comment="callFlag=MALICIOUS")
    waiting = _cucm_call(1772460030, 0, "0", "7205550100", "78")     # rang 14:00:30, unanswered
    waiting.update(origCause_value="16", dateTimeDisconnect="1772460045")
    # and calls through a hunt pilot, offered to its members (pattern usage 7) at 14:00:35
    # (in the flagged call's file) and 14:00:40 (read later)
    hunted = [_cucm_call(start, 0, "0", "7205550111", call_id)
              for start, call_id in ((1772460035, "80"), (1772460040, "79"))]
    for row in hunted:
        row.update(originalCalledPartyNumber="2000", finalCalledPartyNumber="2000",
                   calledPartyPatternUsage="7", origCause_value="16")
    for n, records in enumerate(((_cucm_off_hook(1772459990), flagged, hunted[0]),
                                 (waiting, hunted[1]))):
        path = tmp_path / f"cdr_mcid_{n}"
        path.write_text("\n".join([",".join(names)] + [",".join(r[k] for k in names)
                                                        for r in records]) + "\n")
        cdrtrace.ingest(store, [str(path)], fmt="cucm", feed_id=5)
    (record,) = store.trace_records(LINE, analyst="cic")
    assert (record["outcome"], record["call"]["calling"]) == ("success", "+17205550199")
    assert "later_call" not in record


def test_a_case_report_says_which_traces_are_contested_and_hashes_them_as_kept(tmp_path):
    """Pat's calls at 10:00, 11:00 and 12:00 were traced; another caller's call at 11:00:10,
    read later, came before the second trace's *57 at 11:00:30. The case report lists the
    second trace as contested, and each record's SHA-256 is that of the record as the
    store keeps it (the note is not part of it)."""
    store = cdrtrace.open(tmp_path / "s", create=True)
    ingest(store, tmp_path, *(call("7205550199", f"1{h}:00:00", f"p{h}") for h in range(3)))
    for h in range(3):
        assert store.trace(LINE, at=f"2026-03-02T1{h}:00:30Z").outcome.value == "success"
    ingest(store, tmp_path, call("7205550100", "11:00:10", "m1"), feed=2)
    assert [p.traced_calls for p in store.status(LINE).progress] == [2]
    case = store.open_case(LINE, "Caller A", agency=AUTHORITY["agency"],
                           officer=AUTHORITY["officer"], case_number=AUTHORITY["case_number"],
                           analyst="ann", waive_reason="threats")
    store.disclose(AUTHORITY, analyst="ann", line=LINE)
    text = " ".join(text_of(store.case_report(case["case_id"], analyst="ann")).split())
    assert "Traces contested by a call that came in later" in text
    assert "T00000002 a call to the line that began 2026-03-02T11:00:10Z" in text
    assert "7205550100" not in text                      # the later caller is not released
    with store.envs.eread() as txn:
        kept = [bytes(v) for _, v in txn.cursor(store.envs.db["traces"])]
    for stored in kept:
        canonical = json.dumps(json.loads(stored), sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)
        assert hashlib.sha256(canonical.encode()).hexdigest() in text
    store.close()


def test_a_late_record_a_follower_reads_contests_the_trace(store, tmp_path):
    """A followed file: Pat's call, the *57 traced, then the switch writes Mal's record
    of 14:03 late; the follower's commit notes the trace, as a batch ingest's does."""
    once = StreamOptions(batch_ms=5, poll_ms=2, heartbeat_s=0.05, idle_exit_s=0.1)
    path = tmp_path / "Master.csv"
    path.write_bytes(INNOCENT + b"\n")
    assert following.follow(store, str(path), options=once).records == 1
    assert store.trace(LINE, at=AT).outcome.value == "success"
    with path.open("ab") as f:
        f.write(MAL + b"\n")
    late = following.follow(store, str(path), options=once)
    assert (late.records, late.contested) == (1, 1)
    assert record(store)["later_call"]["start"] == "2026-03-02T14:03:12Z"
    assert store.status(LINE).progress == ()


def test_a_real_pbx_file_read_in_two_parts_contests_the_trace_of_the_first(store, tmp_path):
    """data/samples/real/asterisk-reject-key-de.csv read in two parts, a *57 between: the
    user of 200 refused Mal's ringing call at 10:00 with the reject key (a late refusal);
    read whole, a *57 at 10:05 is untraceable. With only the 09:00 and 09:30 records read,
    it named the 09:00 caller; the rest, read after, contests that trace."""
    real = (Path(__file__).resolve().parent.parent / "data/samples/real/"
            "asterisk-reject-key-de.csv").read_bytes().splitlines(keepends=True)
    for n, part in enumerate((real[:2], real[2:])):
        (tmp_path / f"part{n}.csv").write_bytes(b"".join(part))
        summary = cdrtrace.ingest(store, [str(tmp_path / f"part{n}.csv")], fmt="asterisk",
                                  zone="Europe/Berlin", country_code=49)
        if n == 0:
            got = store.trace("200", at="2023-11-14T10:05:00+01:00")
            assert (got.outcome.value, got.call_time) == ("success", "2023-11-14T08:00:00Z")
    assert summary.contested == 1
    note = store.trace_records("200", analyst="cic")[0]["later_call"]
    assert (note["start"], note["disposition"]) == ("2023-11-14T09:00:00Z", "late_refusal")
    assert store.status("200").progress == ()


def test_unreadable_records_read_after_a_trace_are_counted_beside_its_evidence(tmp_path):
    """The trace found no unreadable record near Pat's call; a file read after holds one
    of the feed's, 12:30 (in the hour before the call), whose line cannot be recovered (no called number): the record,
    read, counts it now beside the count written, and its hash is the record's as kept."""
    store = cdrtrace.open(tmp_path / "s", create=True)
    first_trace(store, tmp_path)
    written = record(store)["unreadable_nearby"]
    assert (written["records"], "unreadable_nearby_now" in record(store)) == (0, False)
    lineless = cdr(dst="", dstchannel="", start="2026-03-02 12:30:00", end="2026-03-02 12:30:10",
                   disposition="NO ANSWR", uniqueid="x.1")
    far = cdr(dst="", dstchannel="", start="2026-03-02 10:00:00", end="2026-03-02 10:00:10",
              disposition="NO ANSWR", uniqueid="x.2")          # before the hour: not counted
    ingest(store, tmp_path, far, lineless)
    read = record(store)
    assert read["unreadable_nearby"] == written                 # as written
    assert read["unreadable_nearby_now"] == {**written, "records": 1, "without_line": 1}
    assert "later_call" not in read                             # the line is not known
    ingest(store, tmp_path, cdr(dst="", dstchannel="", start="2026-03-02 13:40:00",
                                end="2026-03-02 13:40:10", disposition="NO ANSWR",
                                uniqueid="x.3"), feed=2)        # another switch's: not its feed
    assert record(store)["unreadable_nearby_now"]["records"] == 1
    case = store.open_case(LINE, "Caller A", agency=AUTHORITY["agency"],
                           officer=AUTHORITY["officer"], case_number=AUTHORITY["case_number"],
                           analyst="ann", waive_reason="threats")
    store.disclose(AUTHORITY, analyst="ann", line=LINE)
    text = " ".join(text_of(store.case_report(case["case_id"], analyst="ann")).split())
    with store.envs.eread() as txn:
        stored = bytes(txn.get((1).to_bytes(8, "big"), db=store.envs.db["traces"]))
    canonical = json.dumps(json.loads(stored), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    assert hashlib.sha256(canonical.encode()).hexdigest() in text
    store.close()


def test_a_trace_made_while_the_late_call_is_committed_is_contested(store, tmp_path,
                                                                    monkeypatch):
    """The *57 is traced while the file holding Mal's 14:03 call and four calls after the
    *57 is being committed (from the index as it was before: Pat's call), a commit after
    the file's first (which checked the traces), two records a commit. Once the file is in,
    the line's index no longer holds the 14:03 call; the commit, seeing a trace made while
    it was written, checks its calls of that line all the same."""
    ingest(store, tmp_path, INNOCENT)
    after = [call(f"72055502{n}0", f"15:0{n}:00", f"sw.a{n}") for n in range(4)]
    late = cdr_file(tmp_path, *(call("7205550144", f"16:0{n}:00", f"sw.x{n}", dst="3035550199")
                                for n in range(2)), MAL, *after, name="late.csv")
    made, commits = [], []
    ranges = cdrtrace.store.index.key_ranges

    def trace_meanwhile(ordered, *args, **kwargs):
        commits.append(ordered.tolist())
        if len(commits) == 2:             # the commit of the 14:03 call
            made.append(store.trace(LINE, at=AT))
        return ranges(ordered, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(cdrtrace.store.index, "key_ranges", trace_meanwhile)
        summary = cdrtrace.ingest(store, [late], fmt="asterisk", zone="UTC", feed_id=2,
                                  chunk_bytes=64, batch_pairs=1)
    assert len(commits) == 4
    assert (made[0].outcome.value, made[0].call_time) == ("success", "2026-03-02T13:00:00Z")
    assert "2026-03-02T14:03:12Z" not in repr(store.last_calls(LINE, analyst="cic"))
    assert summary.contested == 1
    assert record(store)["later_call"]["start"] == "2026-03-02T14:03:12Z"
