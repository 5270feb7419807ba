"""Call Identification Center (R6, R7): directory enrichment snapshotted into evidence,
audited identifying reads, disclosure only under a legal authority, a tamper-evident
audit log."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import cdrtrace
from cdrtrace import AccessError, Outcome, testing
from cdrtrace.evidence.audit import AuditError
from conftest import cdr, cdr_file

LINE = "3035550110"
AT = "2026-03-02T23:00:00Z"
AUTHORITY = {"kind": "subpoena", "reference": "SUB-2026-0042", "agency": "Denver PD",
             "officer": "Det. R. Alvarez", "case_number": "26-001234"}


def directory_file(tmp_path, rows, name="directory.csv"):
    path = tmp_path / name
    path.write_text("number,name,address,served\n" + "".join(f"{r}\n" for r in rows))
    return str(path)


@pytest.fixture
def traced(store, ingest_records, tmp_path):
    """Two calls to LINE: one from a served subscriber, then a trace of each."""
    store.import_directory(directory_file(tmp_path, [
        '303-555-0142,"Pat Doe","1 Elm St, Denver CO",true',
        '+17205550199,"Lee Smith","9 Oak Ave",false']), operator="ops")
    ingest_records(cdr(src="3035550142", start="2026-03-02 14:03:00", end="2026-03-02 14:04:00"))
    first = store.trace(LINE, at="2026-03-02T14:05:00Z")
    ingest_records(cdr(src="7205550199", start="2026-03-02 15:03:00", end="2026-03-02 15:04:00"))
    second = store.trace(LINE, at="2026-03-02T15:05:00Z")
    return store, first, second


def test_r6_served_callers_are_snapshotted_into_evidence(traced, tmp_path):
    store, first, second = traced
    records = {r["trace_id"]: r for r in store.trace_records(LINE, analyst="ann")}
    snap = records[first.trace_id]["enrichment"]
    assert (snap["name"], snap["address"], snap["directory_import"]) == (
        "Pat Doe", "1 Elm St, Denver CO", 1)
    assert records[second.trace_id]["enrichment"] is None       # not served by this carrier
    store.import_directory(directory_file(tmp_path, ['3035550142,"Pat Doe-Jones","2 Elm St",yes'],
                                          "v2.csv"), operator="ops")
    again = {r["trace_id"]: r for r in store.trace_records(LINE, analyst="ann")}
    assert again[first.trace_id]["enrichment"]["name"] == "Pat Doe"   # evidence unchanged


def test_r7_customer_outputs_hold_no_name_or_address(traced):
    store, first, second = traced
    text = " ".join([repr(first), first.to_json(), repr(second), second.to_json(),
                     repr(store.status(LINE)), store.status(LINE).to_json()])
    for secret in ("Pat", "Doe", "Elm", "Denver CO", "Lee", "Smith", "Oak", "3035550142",
                   "7205550199"):
        assert secret not in text


def test_directory_import_errors_say_which_row(store, tmp_path):
    bad = directory_file(tmp_path, ['3035550142,"Pat","1 Elm",true', 'hello,"X","Y",true'])
    with pytest.raises(cdrtrace.CdrTraceError, match=f"{bad} row 3: not a telephone number: 'hello'"):
        store.import_directory(bad, operator="ops")
    path = tmp_path / "bad.csv"
    path.write_text("number,name\n3035550142,Pat\n")
    with pytest.raises(cdrtrace.CdrTraceError, match="lacks the column\\(s\\) address"):
        store.import_directory(str(path), operator="ops")
    flags = directory_file(tmp_path, ['3035550142,"Pat","1 Elm",maybe'], "flags.csv")
    with pytest.raises(cdrtrace.CdrTraceError, match="row 2: served must be true or false"):
        store.import_directory(flags, operator="ops")
    # one number, two subscribers (the old holder's row kept, here written another way):
    # a trace would snapshot whichever came last
    twice = directory_file(tmp_path, ['303-555-0142,"Pat","1 Elm",true',
                                      '+17205550199,"Lee","9 Oak",true',
                                      '+1 303 555 0142,"Sam","4 Ash",true'], "twice.csv")
    with pytest.raises(cdrtrace.CdrTraceError, match=re.escape(
            f"{twice} rows 2 and 4: one number ('303-555-0142', '+1 303 555 0142') with two "
            "different subscribers; keep one row for it")):
        store.import_directory(twice, operator="ops")
    same = directory_file(tmp_path, ['303-555-0142,"Pat","1 Elm",true',
                                     '303\u2013555\u20130142,"Pat","1 Elm",yes'], "same.csv")
    assert store.import_directory(same, operator="ops") == 1     # the same row twice: one


@pytest.mark.parametrize("content, where", [
    # a Latin-1 export (it was the reader's 'In CSV column #1: ... invalid UTF8 data')
    (b'number,name,address\n3035550142,"Jos\xe9","1 Elm"\n', "row 2 (byte {}) is not UTF-8 text"),
    # in the header (it was an internal error, exit 70)
    (b'number,n\xe4me,address\n3035550142,"Pat","1 Elm"\n', "row 1 (byte {}) is not UTF-8 text"),
    # after a byte-order mark, in a row of another field count
    (b'\xef\xbb\xbfnumber,name,address\n3035550142,Pat,"1 Elm"\n720555,L\xe9e\n',
     "row 3 (byte {}) is not UTF-8 text"),
    # a row of another field count, after an address over two lines and a blank line (it
    # was the row's text)
    (b'number,name,address\n3035550142,Pat,"1 Elm\nDenver"\n\n7205550199,Lee\n',
     "row 5 has 2 field(s), not 3"),
])
def test_a_directory_the_reader_refuses_is_an_error_saying_which_row(store, tmp_path, content,
                                                                     where):
    """Not the reader's words alone, which named no row, or the row's own text (names,
    addresses), or an internal error; nothing of the file is imported, the refusal audited."""
    path = tmp_path / "directory.csv"
    path.write_bytes(content)
    at = next((i for i, b in enumerate(content) if b in b"\xe4\xe9"), None)
    with pytest.raises(cdrtrace.DirectoryError,
                       match=re.escape(f"cannot read {path}: {where.format(at)}")):
        store.import_directory(str(path), operator="ops")
    assert [e["action"] for e in testing.audit_entries(store)] == ["directory_import_refused"]


@pytest.mark.parametrize("columns, message", [
    ({"number": [[3035550142]]}, "{}: its column number holds list<element: int64>, not text"),
    ({"name": [{"first": "Pat"}]}, "{}: its column name holds struct<first: string>, not text"),
    ({"number": [b"3035550142", b"303555\xe90143"]}, "{} row 3: its number is not UTF-8 text"),
])
def test_a_parquet_directory_whose_column_holds_no_text_is_an_error_saying_which(
        store, tmp_path, columns, message):
    """A Parquet file's columns have types of their own: one that holds no text (it was
    an internal error: Arrow cannot cast it), or bytes that are not UTF-8 (the row)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = len(next(iter(columns.values())))
    table = {"number": ["3035550142"] * rows, "name": ["Pat"] * rows, "address": ["1 Elm"] * rows,
             **columns}
    path = tmp_path / "directory.parquet"
    pq.write_table(pa.table(table), path)
    with pytest.raises(cdrtrace.DirectoryError, match=f"^{re.escape(message.format(path))}$"):
        store.import_directory(str(path), operator="ops")


def test_identifying_reads_are_audited(traced):
    store, _, _ = traced
    store.last_calls(LINE, analyst="ann")
    store.trace_records(LINE, analyst="bob")
    actions = [(e["actor"], e["action"]) for e in testing.audit_entries(store)]
    assert actions[-2:] == [("ann", "read_last_calls"), ("bob", "read_trace_records")]
    assert actions[0] == ("ops", "directory_import")
    with pytest.raises(AccessError, match="reading trace records needs an analyst identity"):
        store.trace_records(LINE, analyst="")
    assert store.audit_verify() == len(actions) + 1            # the refusal is audited too
    assert testing.audit_entries(store)[-1]["actor"] == "(none)"
    assert testing.audit_entries(store)[-1]["action"] == "read_trace_records_refused"


def test_disclosure_under_authority_is_audited(traced):
    store, first, second = traced
    released = store.disclose(AUTHORITY, analyst="ann", trace_ids=[first.trace_id])
    assert [(r["call"]["calling"], r["enrichment"]["name"]) for r in released] == [
        ("+13035550142", "Pat Doe")]
    entry = testing.audit_entries(store)[-1]
    assert (entry["action"], entry["details"]["authority"], entry["details"]["trace_ids"]) == (
        "disclosure", AUTHORITY, [first.trace_id])
    by_line = store.disclose(AUTHORITY, analyst="ann", line=LINE)
    assert [r["trace_id"] for r in by_line] == [first.trace_id, second.trace_id]


def test_a_disclosure_releases_successful_traces_only_and_the_ones_named(traced):
    """Only a successful trace names a call from a caller: a line's no_call and
    already_traced traces are not released (nor counted as released in the audit). With
    a line and trace ids, only those."""
    store, first, second = traced
    none = store.trace(LINE, at="2026-03-02T10:00:00Z")       # before either call
    again = store.trace(LINE, at="2026-03-02T15:06:00Z")      # the second call, again
    assert (none.outcome, again.outcome) == (Outcome.NO_CALL, Outcome.ALREADY_TRACED)
    by_line = store.disclose(AUTHORITY, analyst="ann", line=LINE)
    assert [r["trace_id"] for r in by_line] == [first.trace_id, second.trace_id]
    assert testing.audit_entries(store)[-1]["details"]["trace_ids"] == [
        first.trace_id, second.trace_id]
    named = store.disclose(AUTHORITY, analyst="ann", line=LINE, trace_ids=[second.trace_id])
    assert [r["trace_id"] for r in named] == [second.trace_id]


@pytest.mark.parametrize("change,reason", [
    ({"kind": None}, "the legal authority lacks kind"),
    ({"reference": ""}, "the legal authority lacks reference"),
    ({"agency": " "}, "the legal authority lacks agency"),
    ({"officer": None, "case_number": None}, "the legal authority lacks officer, case_number"),
    ({"kind": "hunch"}, "the legal authority's kind must be one of subpoena, court_order, "
                        "law_enforcement_request, not 'hunch'"),
])
def test_disclosure_refusals_are_audited(traced, change, reason):
    store, first, _ = traced
    authority = {**AUTHORITY, **change}
    with pytest.raises(AccessError) as info:
        store.disclose(authority, analyst="ann", trace_ids=[first.trace_id])
    assert str(info.value) == f"disclosure refused: {reason}"
    entry = testing.audit_entries(store)[-1]
    assert (entry["action"], entry["actor"], entry["details"]["reason"]) == (
        "disclosure_refused", "ann", reason)


@pytest.mark.parametrize(("authority", "ids", "reason"), [
    ("a subpoena", None, "the legal authority is its fields"),
    ([("kind", "subpoena")], None, "the legal authority is its fields"),
    ({**AUTHORITY}, "T00000001", "trace_ids is a list of trace ids (not 'T00000001')"),
    ({**AUTHORITY}, 1, "trace_ids is a list of trace ids (not 1)")])
def test_a_disclosure_given_other_shapes_is_refused_and_audited(traced, authority, ids, reason):
    """The Python API's disclose as other software may call it: an authority that is not
    its fields, or trace ids that are one text (read before as its characters: 'no trace
    0, 1, T') or a number (a TypeError), refused saying why, and the refusal audited."""
    store, first, _ = traced
    with pytest.raises(AccessError, match=re.escape(f"disclosure refused: {reason}")):
        store.disclose(authority, analyst="ann", trace_ids=ids, line=None if ids else LINE)
    entry = testing.audit_entries(store)[-1]
    assert (entry["action"], entry["details"]["reason"][:30]) == ("disclosure_refused", reason[:30])


def test_a_case_given_a_field_of_another_type_is_refused_and_nothing_is_opened(traced):
    store, first, _ = traced
    for field in ("agency", "officer", "case_number", "waive_reason"):
        details = {"agency": "PD", "officer": "O", "case_number": "1", field: 5}
        with pytest.raises(cdrtrace.CaseError, match=f"a case's {field} is text"):
            store.open_case(LINE, "Caller A", analyst="ann", **details)
    assert store.cases(analyst="ann") == []


def test_disclosure_of_an_unknown_trace_is_refused(traced):
    store, _, _ = traced
    with pytest.raises(AccessError, match="disclosure refused: no trace T99999999"):
        store.disclose(AUTHORITY, analyst="ann", trace_ids=["T99999999"])
    assert testing.audit_entries(store)[-1]["action"] == "disclosure_refused"


def test_a_disclosure_by_trace_id_reads_those_records_not_the_stores(traced, monkeypatch):
    """Released by id, each record is read by its key: a store of millions of traces is
    not read whole to release two. An id written otherwise than trace ids are (T2 for
    T00000002) names no trace; with a line, an id of another line's trace is unknown."""
    store, first, second = traced
    from cdrtrace.evidence import traces

    real = traces.Tracer.records

    def a_line_only(self, line_key=None):
        assert line_key is not None, "the whole store was read"
        return real(self, line_key)
    monkeypatch.setattr(traces.Tracer, "records", a_line_only)
    both = store.disclose(AUTHORITY, analyst="ann", trace_ids=[second.trace_id, first.trace_id])
    assert [r["trace_id"] for r in both] == [first.trace_id, second.trace_id]   # trace order
    for odd in ("T2", "t00000002", "T00000002 ", "2", "T000000002"):
        with pytest.raises(AccessError, match="disclosure refused: no trace"):
            store.disclose(AUTHORITY, analyst="ann", trace_ids=[first.trace_id, odd])
        entry = testing.audit_entries(store)[-1]
        assert (entry["action"], entry["details"]["trace_ids"]) == ("disclosure_refused", [odd])
    with pytest.raises(AccessError, match=f"no trace {second.trace_id}"):
        store.disclose(AUTHORITY, analyst="ann", trace_ids=[second.trace_id], line="3035550199")


def test_trace_records_and_audit_entries_come_a_page_at_a_time(store, ingest_records):
    """after and limit: the records after a trace id, at most limit; the audit entries
    after an entry number. The pages together are the whole, each record once."""
    for minute in range(5):
        ingest_records(cdr(src=f"72055501{minute:02d}", start=f"2026-03-02 14:0{minute}:00",
                           end=f"2026-03-02 14:0{minute}:20"))
        store.trace(LINE, at=f"2026-03-02T14:0{minute}:30Z")
    whole = [r["trace_id"] for r in store.trace_records(analyst="ann")]
    assert whole == [f"T0000000{n}" for n in range(1, 6)]
    pages, after = [], None
    for _ in range(5):                      # three pages are enough: never more
        page = store.trace_records(analyst="ann", after=after, limit=2)
        pages.append([r["trace_id"] for r in page])
        if len(page) < 2:
            break
        after = page[-1]["trace_id"]
    assert pages == [whole[:2], whole[2:4], whole[4:]]
    assert [r["trace_id"] for r in store.trace_records(LINE, analyst="ann", after="T00000003",
                                                       limit=1)] == ["T00000004"]
    assert testing.audit_entries(store)[-1]["details"] == {
        "line": LINE, "traces": 1, "after": "T00000003"}
    for bad in ("T3", "3"):
        with pytest.raises(cdrtrace.StoreError, match="not a trace id"):
            store.trace_records(analyst="ann", after=bad)
    for bad in ({"limit": 0}, {"limit": True}, {"limit": "2"}, {"limit": 2.5}, {"after": 3}):
        with pytest.raises(cdrtrace.StoreError, match="a page of trace records"):
            store.trace_records(analyst="ann", **bad)
    for bad in ({"after": -1}, {"after": "3"}, {"after": True}, {"limit": 0}, {"limit": "2"}):
        with pytest.raises(cdrtrace.StoreError, match="a page of audit entries"):
            store.audit_export(operator="ops", **bad)
    log = testing.audit_entries(store)
    first = store.audit_export(operator="ops", after=0, limit=3)
    assert [e["seq"] for e in first] == [1, 2, 3] and first == log[:3]
    rest = store.audit_export(operator="ops", after=3)
    assert rest == testing.audit_entries(store)[3:-1]                 # up to this export
    assert [e["seq"] for e in first + rest] == list(range(1, len(log) + 2))
    assert store.audit_export(operator="ops", after=10**30) == []


# ------------------------------------------------------------------ tamper evidence

def tamper(store, how):
    testing.edit_audit_log(store, lambda txn, db, items: _tamper(txn, db, items, how))


def _tamper(txn, db, items, how):
        key = lambda n: n.to_bytes(8, "big")   # noqa: E731
        if how == "alter":
            entry = json.loads(items[1][1])
            entry["actor"] = "mallory"
            txn.put(items[1][0], json.dumps(entry).encode(), db=db)
        elif how == "delete":
            txn.delete(items[1][0], db=db)
        elif how == "insert":
            forged = json.loads(items[1][1])
            for n in range(len(items), 1, -1):       # shift entries 2.. up by one
                txn.put(key(n + 1), txn.get(key(n), db=db), db=db)
            forged["seq"] = 2
            txn.put(key(2), json.dumps(forged).encode(), db=db)
        elif how == "reorder":
            txn.put(items[1][0], items[2][1], db=db)
            txn.put(items[2][0], items[1][1], db=db)
        elif how == "truncate":
            txn.delete(items[-1][0], db=db)


@pytest.mark.parametrize("how,message", [
    ("alter", "audit log broken at entry 2: its content was altered"),
    ("delete", "audit log broken at entry 2: found entry 3 under key 3"),
    ("insert", "audit log broken at entry 3: found entry 2 under key 3"),
    ("reorder", "audit log broken at entry 2: found entry 3 under key 2"),
    ("truncate", "audit log broken at its end: the head says entry"),
])
def test_audit_verify_detects_tampering(traced, how, message):
    store, _, _ = traced
    for analyst in ("ann", "bob", "cy"):
        store.last_calls(LINE, analyst=analyst)
    assert store.audit_verify() == 4
    tamper(store, how)
    with pytest.raises(AuditError) as info:
        store.audit_verify()
    assert str(info.value).startswith(message)


def test_cli_disclose_audit_and_reports(traced, tmp_path):
    store, first, _ = traced
    db = str(store.path)

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "cdrtrace.cli", *argv, "--db", db],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)

    proc = run("disclose", "--trace", first.trace_id, "--kind", "court_order", "--analyst", "ann")
    assert proc.returncode == 2 and proc.stderr == (
        "cdrtrace: error: disclosure refused: the legal authority lacks reference, agency, "
        "officer, case_number\n")
    proc = run("disclose", "--trace", first.trace_id, "--kind", "court_order", "--reference", "CO-7",
               "--agency", "DPD", "--officer", "Alvarez", "--case-number", "26-1", "--analyst",
               "ann", "--json")
    assert json.loads(proc.stdout)[0]["enrichment"]["address"] == "1 Elm St, Denver CO"
    assert run("audit", "verify").stdout.startswith("audit log verified: ")
    exported = [json.loads(x) for x in run("audit", "export", "--operator", "ops").stdout.splitlines()]
    assert [e["action"] for e in exported][-2:] == ["disclosure_refused", "disclosure"]
    report = json.loads(run("report", "repeat-origins", "--analyst", "ann", "--min-calls", "1",
                            "--json").stdout)
    assert {(r["origin"], r["traced_calls"]) for r in report} == {("+13035550142", 1),
                                                                  ("+17205550199", 1)}
    # a report's times are ISO-8601 UTC, as every other answer's (the calls began at 14:03
    # and 15:03 in a store of zone UTC)
    assert {(r["origin"], r["first_call"], r["last_call"]) for r in report} == {
        ("+13035550142", "2026-03-02T14:03:00Z", "2026-03-02T14:03:00Z"),
        ("+17205550199", "2026-03-02T15:03:00Z", "2026-03-02T15:03:00Z")}
    timeline = run("report", "timeline", "--analyst", "ann", "--line", LINE, "--origin",
                   "303-555-0142")
    assert first.trace_id in timeline.stdout and timeline.returncode == 0
    events = json.loads(run("report", "timeline", "--analyst", "ann", "--line", LINE,
                            "--origin", "303-555-0142", "--json").stdout)
    assert {(e["event"], e["time"], e["call_time"]) for e in events} >= {
        ("trace", "2026-03-02T14:05:00Z", "2026-03-02T14:03:00Z")}


# ------------------------------------------------------------------ cases (R8, R9)

def test_case_by_pseudonym_with_waiver_makes_the_customer_eligible(traced):
    store, first, second = traced
    (a, b) = store.status(LINE).progress
    assert (a.label, a.traced_calls, a.eligible_for_action) == ("Caller A", 1, False)
    case = store.open_case(LINE, "Caller B", agency="Denver PD", officer="Alvarez",
                           case_number="26-001234", analyst="ann", waive_reason="death threat")
    assert (case["case_id"], case["origin"], case["waiver"]) == (
        "C000001", "+17205550199", {"reason": "death threat", "by": "ann"})
    progress = {p.label: p for p in store.status(LINE).progress}
    assert progress["Caller B"].eligible_for_action and progress["Caller B"].waived
    assert not progress["Caller A"].eligible_for_action
    assert "7205550199" not in store.status(LINE).to_json()        # the customer's view
    shown = store.case("C000001", analyst="bob")
    assert [t["trace_id"] for t in shown["timeline"]] == [second.trace_id]
    assert shown["timeline"][0]["call_time"] == "2026-03-02T15:03:00Z"
    actions = [e["action"] for e in testing.audit_entries(store)]
    assert actions[-2:] == ["case_open", "case_read"]


def test_case_by_number_and_errors(traced):
    store, first, _ = traced
    case = store.open_case(LINE, "303 555 0142", agency="DPD", officer="Alvarez",
                           case_number="26-9", analyst="ann")
    assert case["origin"] == "+13035550142" and case["waiver"] is None
    assert [c["case_id"] for c in store.cases(analyst="ann")] == ["C000001"]
    with pytest.raises(cdrtrace.TraceError, match="has no origin 'Caller Q' \\(its origins: "
                       "Caller A, Caller B\\)"):
        store.open_case(LINE, "Caller Q", agency="DPD", officer="A", case_number="1",
                        analyst="ann")
    with pytest.raises(cdrtrace.TraceError, match="a case needs officer, case_number"):
        store.open_case(LINE, "Caller A", agency="DPD", officer="", case_number=" ",
                        analyst="ann")
    with pytest.raises(cdrtrace.TraceError, match="no case C000009"):
        store.case("C000009", analyst="ann")


def test_cli_cases(traced):
    store, _, _ = traced
    db = str(store.path)

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "cdrtrace.cli", *argv, "--db", db],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)

    opened = run("case", "open", LINE, "--origin", "Caller A", "--agency", "DPD", "--officer",
                 "Alvarez", "--case-number", "26-7", "--analyst", "ann")
    assert opened.stdout.startswith("C000001 opened: line +13035550110, origin +13035550142")
    shown = run("case", "show", "C000001", "--analyst", "ann")
    assert "call 2026-03-02T14:03:00Z  traced 2026-03-02T14:05:00Z" in shown.stdout
    listed = json.loads(run("case", "list", "--analyst", "ann", "--json").stdout)
    assert [c["case_number"] for c in listed] == ["26-7"]


def test_purge_removes_old_trace_records_and_is_audited(traced):
    store, first, second = traced
    now = 1772460180 * 10**6 + 30 * 60 * 10**6 + 15 * 60 * 10**6   # 2026-03-02T14:48Z
    result = store.purge(operator="ops", older_than_days=30 / 86400 * 60, now_us=now)
    assert result == {"traces": 1, "before": "2026-03-02T14:18:00Z", "archive_days": 0}
    assert [r["trace_id"] for r in store.trace_records(LINE, analyst="a")] == [second.trace_id]
    assert [t["trace_id"] for t in store.status(LINE).traces] == [second.trace_id]
    entry = [e for e in testing.audit_entries(store) if e["action"] == "purge"][0]
    assert (entry["actor"], entry["details"]["traces"]) == ("ops", 1)
    assert store.audit_verify() > 0
    assert store.purge(operator="ops", now_us=now)["traces"] == 0     # 365 days by default
    with pytest.raises(AccessError, match="a purge needs an operator identity"):
        store.purge(operator=" ")


def test_a_purge_keeps_a_trace_of_its_cutoff_and_leaves_no_mark_of_those_it_removes(traced):
    """A trace activated at the cutoff itself is kept, in the records and the report
    rows alike. One removed leaves nothing behind: the call it named, traced again, is a
    new success, not already_traced after a record that no longer exists."""
    store, first, second = traced
    at = store.trace_records(LINE, analyst="a")[1]["activated_us"]      # the second's
    store.purge(operator="ops", older_than_days=1, now_us=at + 86400 * 10**6)
    assert [r["trace_id"] for r in store.trace_records(LINE, analyst="a")] == [second.trace_id]
    assert [r["trace"] for r in store.trace_table(analyst="a").to_pylist()] == [2]
    again = store.trace(LINE, at="2026-03-02T14:05:30Z")          # the first call, again
    assert again.outcome is Outcome.SUCCESS and again.trace_id not in (first.trace_id,
                                                                       second.trace_id)
    record = store.trace_records(LINE, analyst="a")[-1]
    assert record["original_trace"] is None and record["call"]["calling"] == "+13035550142"


def test_report_rows_agree_with_the_evidence_records(traced):
    store, first, second = traced
    store.trace(LINE, at="2026-03-02T16:00:00Z")          # already traced: no new success
    records = store.trace_records(analyst="ann")
    table = store.trace_table(analyst="ann").to_pylist()
    assert [f"T{r['trace']:08d}" for r in table] == [r["trace_id"] for r in records]
    assert [r["call_start_us"] for r in table] == [r["call"]["start_us"] for r in records]
    from cdrtrace.reports import analytics
    rows = analytics.repeat_origins(store.trace_table(analyst="ann"), min_calls=1).to_pylist()
    assert analytics.repeat_origins(store.trace_columns(analyst="ann"), min_calls=1).to_pylist() == rows
    assert sorted((r["line"], r["origin"], r["traced_calls"]) for r in rows) == [
        ("+13035550110", "+13035550142", 1), ("+13035550110", "+17205550199", 1)]
    now = (1772460180 + 45 * 60) * 10**6
    store.purge(operator="ops", older_than_days=30 * 60 / 86400, now_us=now)
    assert [r["trace"] for r in store.trace_table(analyst="ann").to_pylist()] == [2, 3]


# ------------------------------------------------------------------ the call archive

def test_call_archive_by_day_query_and_retention(tmp_path):
    from cdrtrace import synth

    archive_dir = tmp_path / "archive"
    store = cdrtrace.open(tmp_path / "s", create=True, archive_dir=str(archive_dir),
                          archive_retention_days=2)
    columns, truth = synth.generate(6000, 300, seed=8, days=3, campaigns=4)
    path = tmp_path / "three-days.csv"
    path.write_bytes(synth.format_asterisk(columns, 0, len(columns["line"])))
    cdrtrace.ingest(store, [str(path)])
    days = sorted(p.name for p in archive_dir.iterdir())
    assert days == ["day=2026-03-02", "day=2026-03-03", "day=2026-03-04"]
    campaign = truth["campaigns"][0]
    calls = store.archived_calls(campaign["victim"], analyst="ann", origin=campaign["origin"])
    assert len(calls) == len(campaign["calls"])                    # every planted call
    import datetime as dt
    epoch = dt.datetime(1970, 1, 1)
    assert [int((t - epoch).total_seconds()) for t in calls.column("start").to_pylist()] == [
        c["start_s"] for c in campaign["calls"]]
    victim_all = store.archived_calls(campaign["victim"], analyst="ann")
    assert len(victim_all) >= len(campaign["calls"])
    now = 1772409600 * 10**6 + 4 * 86400 * 10**6                  # 2026-03-06T00:00Z
    recent = store.archived_calls(campaign["victim"], analyst="ann", days=3, now_us=now)
    assert all(str(t) >= "2026-03-03" for t in recent.column("start").to_pylist())
    assert testing.audit_entries(store)[-1]["action"] == "read_archive"
    result = store.purge(operator="ops", now_us=now)
    assert result["archive_days"] == 2                             # keeps the last 2 days
    assert sorted(p.name for p in archive_dir.iterdir()) == ["day=2026-03-04"]


def test_the_calls_report_names_each_caller_and_how_the_call_went(tmp_path):
    """A line's archived calls as the CIC reads them (R3: every call that rang it): the
    caller's number as written, never its packed integer; the presentation and the
    disposition by name; oldest first. The same rows from the Python API and the CLI."""
    store = cdrtrace.open(tmp_path / "s", create=True, archive_dir=str(tmp_path / "archive"))
    records = [cdr(src="7205550666", start="2026-03-02 14:03:00", end="2026-03-02 14:03:20",
                   disposition="NO ANSWER"),
               cdr(src="anonymous", clid='"Anonymous" <7205550177>', userfield="prohib_passed_screen",
                   start="2026-03-02 15:30:00", answer="2026-03-02 15:30:06",
                   end="2026-03-02 15:31:00"),
               cdr(src="", clid="", start="2026-03-02 16:00:00", end="2026-03-02 16:00:00",
                   disposition="BUSY")]     # busy at once: it never rang
    cdrtrace.ingest(store, [cdr_file(tmp_path, *records)])
    expected = [
        {"start": "2026-03-02T14:03:00Z", "answer": None, "end": "2026-03-02T14:03:20Z",
         "calling": "+17205550666", "presentation": "allowed", "disposition": "no_answer",
         "received": True},
        {"start": "2026-03-02T15:30:00Z", "answer": "2026-03-02T15:30:06Z",
         "end": "2026-03-02T15:31:00Z", "calling": "+17205550177",
         "presentation": "restricted", "disposition": "answered", "received": True},
        {"start": "2026-03-02T16:00:00Z", "answer": None, "end": "2026-03-02T16:00:00Z",
         "calling": None, "presentation": "unavailable", "disposition": "busy",
         "received": False},
    ]
    from cdrtrace.reports.analytics import plain_rows

    def without_source(rows):
        return [{k: v for k, v in r.items() if k not in ("feed", "record")} for r in rows]
    assert without_source(plain_rows(store.archived_calls(LINE, analyst="ann"))) == expected
    assert [r["record"] for r in plain_rows(store.archived_calls(LINE, analyst="ann"))] == [1, 2, 3]
    assert without_source(plain_rows(store.archived_calls(
        LINE, analyst="ann", origin="720-555-0177"))) == expected[1:2]
    store.close()
    printed = subprocess.run([sys.executable, "-m", "cdrtrace.cli", "report", "calls", "--line",
                              LINE, "--analyst", "ann", "--json", "--db", str(tmp_path / "s")],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert printed.returncode == 0, printed.stderr
    assert without_source(json.loads(printed.stdout)) == expected


def test_archive_is_optional(store):
    with pytest.raises(cdrtrace.StoreError, match="keeps no call archive"):
        store.archived_calls(LINE, analyst="ann")


def test_timeline_joins_archived_calls_and_traces(tmp_path):
    from cdrtrace.reports import analytics

    store = cdrtrace.open(tmp_path / "s", create=True, archive_dir=str(tmp_path / "archive"))
    harasser = "7205550666"
    for minute in (3, 30):
        path = tmp_path / f"m{minute}.csv"
        path.write_bytes(cdr(src=harasser, start=f"2026-03-02 14:{minute:02d}:00",
                             end=f"2026-03-02 14:{minute:02d}:20", disposition="NO ANSWER") + b"\n")
        cdrtrace.ingest(store, [str(path)])
        if minute == 3:
            store.trace(LINE, at="2026-03-02T14:05:00Z")
    table = analytics.timeline(store.trace_table(analyst="ann"), store.line(LINE),
                               store.line(harasser), store.config["archive_dir"])
    events = [(str(r["time"])[11:16], r["event"], r["outcome"]) for r in table.to_pylist()]
    assert events == [("14:03", "call", "no_answer"), ("14:05", "trace", "success"),
                      ("14:30", "call", "no_answer")]


def test_trace_rows_compaction_keeps_every_row_in_order(tmp_path, monkeypatch):
    import lmdb
    import numpy as np

    from cdrtrace.evidence import rows as trace_rows

    monkeypatch.setattr(trace_rows, "SEGMENT", 64)
    env = lmdb.open(str(tmp_path / "env"), max_dbs=4)
    blocks, segments, meta = (env.open_db(n) for n in (b"b", b"s", b"m"))
    rows = np.zeros(300, trace_rows.ROW_DTYPE)
    rows["trace"] = np.arange(1, 301)
    rows["activated_us"] = np.arange(300) * 10

    def read():
        with env.begin(buffers=True) as txn:
            return trace_rows.read_all(txn, blocks, segments).copy()

    for stop in (50, 130, 200, 300):                  # traces arrive; reports run between
        with env.begin(write=True) as txn:
            for n in range(int(read()["trace"][-1]) if len(read()) else 0, stop):
                trace_rows.append(txn, blocks, rows[n:n + 1])
            moved = trace_rows.compact(txn, blocks, segments, meta)
        assert moved % 64 == 0
        assert (read() == rows[:stop]).all()
    with env.begin() as txn:
        assert txn.stat(segments)["entries"] == 4      # traces 1..256
    with env.begin(write=True) as txn:                 # retention drops the oldest 100
        for db in (blocks, segments):
            trace_rows.rewrite(txn, db, lambda r: r["activated_us"] >= 1000)
    assert (read() == rows[100:]).all()


def test_directory_from_parquet_and_hot_origins(store, ingest_records, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cdrtrace.reports import analytics

    pq.write_table(pa.table({"number": ["+17205550666"], "name": ["Robo Caller Inc"],
                             "address": ["PO Box 1"], "served": ["true"]}),
                   tmp_path / "directory.parquet")
    assert store.import_directory(tmp_path / "directory.parquet", operator="ops") == 1
    for i, line in enumerate(("3035550110", "3035550111", "3035550112")):
        ingest_records(cdr(src="7205550666", dst=line, start=f"2026-03-02 14:0{i}:00",
                           end=f"2026-03-02 14:0{i}:30"))
        assert store.trace(line, at=AT).successful
    ingest_records(cdr(src="7205550777", dst="3035550113"))
    store.trace("3035550113", at=AT)
    hot = analytics.hot_origins(store.trace_columns(analyst="ann")).to_pylist()
    assert [(r["origin"], r["lines"], r["traced_calls"]) for r in hot] == [("+17205550666", 3, 3)]
    (record,) = [r for r in store.trace_records("3035550110", analyst="ann")]
    assert record["enrichment"]["name"] == "Robo Caller Inc"


def test_each_error_says_what_failed(store, tmp_path):
    with pytest.raises(cdrtrace.CaseError, match="no case C000001"):
        store.case("C000001", analyst="ann")
    with pytest.raises(cdrtrace.ConfigError, match="the retention period cannot be negative"):
        store.purge(operator="ops", older_than_days=-1)
    with pytest.raises(cdrtrace.ConfigError, match="must be a number of days .not False"):
        store.purge(operator="ops", older_than_days=False)     # not 0 days: every record
    with pytest.raises(cdrtrace.ParseError, match="no cucm header, and its first line has 2 fields"):
        cdrtrace.ingest(store, [cdr_file(tmp_path, b"a,b", name="x.cdr")], fmt="cucm")
    with pytest.raises(cdrtrace.ParseError, match="cannot tell the format of"):
        cdrtrace.ingest(store, [cdr_file(tmp_path, b"a,b", name="y.cdr")], fmt="auto")


def test_a_reports_times_are_iso_utc_to_the_microsecond():
    import datetime

    import pyarrow as pa

    from cdrtrace.reports.analytics import plain_rows
    table = pa.table({"t": pa.array([datetime.datetime(2026, 3, 2, 14, 3, 0, 123),
                                     datetime.datetime(1969, 12, 31, 23, 59, 59), None],
                                    pa.timestamp("us")), "n": [1, 2, 3]})
    assert plain_rows(table) == [{"t": "2026-03-02T14:03:00.000123Z", "n": 1},
                                 {"t": "1969-12-31T23:59:59Z", "n": 2}, {"t": None, "n": 3}]
