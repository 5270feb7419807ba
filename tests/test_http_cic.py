"""The CIC over HTTP does what its CLI commands do: each report (its rows as the rules
give them, and as the document describes them), the trace table, a request for action
closed or settled by the case that answers it, and the case report for the police; each
read audited under the token's name."""
from __future__ import annotations

import io

import pyarrow.parquet as pq
import pydantic
import pytest
from test_service import Service, call

import cdrtrace
from cdrtrace import testing
from cdrtrace.service import schemas
from conftest import cdr, cdr_file

LINE, CALLER, OTHER = "3035550110", "7205550101", "7205550202"
ROLES = ("switch", "care", "analyst", "legal", "operator")
AUTHORITY = {"kind": "subpoena", "reference": "S-1", "agency": "Denver PD", "officer": "Lee",
             "case_number": "26-001234"}


@pytest.fixture
def cic(tmp_path):
    """A store with a call archive: three unanswered calls from CALLER to LINE, each
    traced five minutes later, and a busy call from OTHER (it never rang the line)."""
    path = tmp_path / "store"
    store = cdrtrace.open(path, create=True, archive_dir=str(tmp_path / "archive"))
    records = [cdr(src=CALLER, dst=LINE, start=f"2026-03-02 {h}:03:00",
                   end=f"2026-03-02 {h}:03:20", disposition="NO ANSWER") for h in (14, 15, 16)]
    records.append(cdr(src=OTHER, dst=LINE, start="2026-03-02 16:30:00",
                       end="2026-03-02 16:30:00", disposition="BUSY"))   # busy at once
    cdrtrace.ingest(store, [cdr_file(tmp_path, *records)])
    running = Service(store)
    tokens = {role: store.tokens.create(f"{role}-1", role) for role in ROLES}
    for hour in (14, 15, 16):
        traced = call(running, "POST", "/v1/trace", tokens["switch"],
                      json={"line": LINE, "at": f"2026-03-02T{hour}:05:00Z"})
        assert traced.json()["outcome"] == "success"
    yield store, running, tokens
    running.stop()
    store.close()


def rows(answer, model):
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    return pydantic.TypeAdapter(list[model]).validate_json(answer.content)


def test_each_report_gives_the_rows_of_the_rules(cic):
    store, running, tokens = cic
    analyst = tokens["analyst"]
    repeat = rows(call(running, "GET", "/v1/reports/repeat-origins", analyst), schemas.RepeatOrigin)
    assert [r.model_dump() for r in repeat] == [{       # R8: 3 traced calls reach the threshold
        "line": "+13035550110", "origin": "+17205550101", "traced_calls": 3,
        "first_call": "2026-03-02T14:03:00Z", "last_call": "2026-03-02T16:03:00Z",
        "eligible": True}]
    assert rows(call(running, "GET", "/v1/reports/repeat-origins?min_calls=4", analyst),
                schemas.RepeatOrigin) == []
    hot = rows(call(running, "GET", "/v1/reports/hot-origins?min_lines=1", analyst),
               schemas.HotOrigin)
    assert [(h.origin, h.lines, h.traced_calls) for h in hot] == [("+17205550101", 1, 3)]
    assert rows(call(running, "GET", "/v1/reports/hot-origins", analyst), schemas.HotOrigin) == []
    timeline = rows(call(running, "GET", f"/v1/reports/timeline?line={LINE}&origin={CALLER}",
                         analyst), schemas.TimelineEntry)
    assert [(t.time[11:16], t.event, t.trace_id, t.outcome) for t in timeline] == [
        ("14:03", "call", None, "no_answer"), ("14:05", "trace", "T00000001", "success"),
        ("15:03", "call", None, "no_answer"), ("15:05", "trace", "T00000002", "success"),
        ("16:03", "call", None, "no_answer"), ("16:05", "trace", "T00000003", "success")]
    calls = rows(call(running, "GET", f"/v1/reports/calls?line={LINE}", analyst),
                 schemas.ArchivedCall)
    assert [(c.start[11:16], c.calling, c.disposition, c.received) for c in calls] == [
        ("14:03", "+17205550101", "no_answer", True), ("15:03", "+17205550101", "no_answer", True),
        ("16:03", "+17205550101", "no_answer", True), ("16:30", "+17205550202", "busy", False)]
    assert len(rows(call(running, "GET", f"/v1/reports/calls?line={LINE}&origin={OTHER}",
                         analyst), schemas.ArchivedCall)) == 1
    assert rows(call(running, "GET", f"/v1/reports/calls?line={LINE}&days=30", analyst),
                schemas.ArchivedCall) == []                   # March's calls, months ago
    table = call(running, "GET", "/v1/reports/trace-table", analyst)
    assert table.status_code == 200 and table.headers["content-type"] == "application/vnd.apache.parquet"
    traces = pq.read_table(io.BytesIO(table.content)).to_pylist()
    assert [(t["trace"], t["outcome"], t["origin"]) for t in traces] == [
        (n, 1, store.line(CALLER)) for n in (1, 2, 3)]
    from cdrtrace.service import cic as routes

    assert routes.EXPORTING.acquire(timeout=5)     # one under way (the one above is done)
    try:                                           # a second waits for none
        busy = call(running, "GET", "/v1/reports/trace-table", analyst)
    finally:
        routes.EXPORTING.release()
    assert busy.status_code == 503 and "another trace table" in busy.json()["error"]
    assert call(running, "GET", "/v1/reports/trace-table", analyst).status_code == 200
    audited = [(e["actor"], e["action"]) for e in testing.audit_entries(store)]
    for action in ("read_trace_table", "read_timeline", "read_archive"):
        assert ("token:analyst-1", action) in audited
    for path in ("/v1/reports/trace-table", f"/v1/reports/calls?line={LINE}"):
        assert call(running, "GET", path, tokens["care"]).status_code == 403
        assert call(running, "GET", path).status_code == 401


def test_trace_records_come_a_page_at_a_time_over_http(cic):
    store, running, tokens = cic
    analyst = tokens["analyst"]

    def ids(query):
        answer = call(running, "GET", f"/v1/trace-records{query}", analyst)
        assert answer.status_code == 200, answer.text
        return [r["trace_id"] for r in answer.json()]
    assert ids("") == ["T00000001", "T00000002", "T00000003"]
    assert ids("?limit=2") == ["T00000001", "T00000002"]
    assert ids("?after=T00000002&limit=2") == ["T00000003"]
    assert ids(f"?line={LINE}&after=T00000001&limit=1") == ["T00000002"]
    assert ids("?after=T00000003") == []
    for query in ("?limit=0", "?limit=10001", "?after=T2", "?after=T00000001x"):
        assert call(running, "GET", f"/v1/trace-records{query}", analyst).status_code == 422
    page = call(running, "GET", "/openapi.json").json()["paths"]["/v1/trace-records"]["get"]
    limit = next(p for p in page["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["default"], limit["maximum"]) == (1000, 10_000)


def test_a_reports_wrong_request_is_refused_saying_why(cic, tmp_path):
    store, running, tokens = cic
    analyst = tokens["analyst"]
    missing = call(running, "GET", f"/v1/reports/timeline?line={LINE}", analyst)
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["query", "origin"]
    assert call(running, "GET", "/v1/reports/calls", analyst).status_code == 422
    assert call(running, "GET", f"/v1/reports/calls?line={LINE}&days=-1", analyst).status_code == 422
    unknown = call(running, "GET", "/v1/reports/cold-origins", analyst)
    assert unknown.status_code == 404 and "error" in unknown.json()
    bad_line = call(running, "GET", "/v1/reports/calls?line=not-a-line", analyst)
    assert bad_line.status_code == 400 and "error" in bad_line.json()
    plain = cdrtrace.open(tmp_path / "plain", create=True)         # no call archive
    other = Service(plain)
    try:
        token = plain.tokens.create("ann", "analyst")
        refused = call(other, "GET", f"/v1/reports/calls?line={LINE}", token)
        assert refused.status_code == 400 and "keeps no call archive" in refused.json()["error"]
    finally:
        other.stop()
        plain.close()


def test_a_request_for_action_is_closed_or_settled_by_its_case_over_http(cic):
    store, running, tokens = cic
    analyst, care = tokens["analyst"], tokens["care"]

    def request():
        made = call(running, "POST", "/v1/request-action", care,
                    json={"line": LINE, "origin": "Caller A"})
        assert made.status_code == 200, made.text
        return made.json()["request_id"]

    def state():
        status = call(running, "GET", f"/v1/status/{LINE}", care).json()
        return status["progress"][0]["request"]
    first = request()
    assert call(running, "POST", f"/v1/requests/{first}/close", analyst,
                json={"reason": ""}).status_code == 422
    assert call(running, "POST", f"/v1/requests/{first}/close", care,
                json={"reason": "duplicate"}).status_code == 403
    closed = call(running, "POST", f"/v1/requests/{first}/close", analyst,
                  json={"reason": "the calls stopped"})
    assert closed.status_code == 200 and closed.json()["state"] == "closed"
    assert (state()["state"], state()["reason"]) == ("closed", "the calls stopped")
    again = call(running, "POST", f"/v1/requests/{first}/close", analyst, json={"reason": "x"})
    assert again.status_code == 400 and "already closed" in again.json()["error"]
    assert call(running, "POST", "/v1/requests/R000009/close", analyst,
                json={"reason": "x"}).status_code == 404
    second = request()
    case = {"line": LINE, "agency": "Denver PD", "officer": "Lee", "case_number": "26-001234"}
    wrong = call(running, "POST", "/v1/cases", analyst,
                 json={**case, "origin": OTHER, "waive": "threats", "request": second})
    assert wrong.status_code == 400 and f"request {second} is for Caller A" in wrong.json()["error"]
    assert call(running, "POST", "/v1/cases", analyst,
                json={**case, "origin": "Caller A", "request": "R000009"}).status_code == 404
    assert call(running, "GET", "/v1/cases", analyst).json() == []       # nothing opened
    opened = call(running, "POST", "/v1/cases", analyst,
                  json={**case, "origin": "Caller A", "request": second})
    assert opened.status_code == 200, opened.text
    assert state()["state"] == "case_opened"
    assert state()["case_id"] == opened.json()["case_id"]


def test_the_case_report_is_given_once_a_disclosure_names_the_case(cic):
    store, running, tokens = cic
    analyst = tokens["analyst"]
    opened = call(running, "POST", "/v1/cases", analyst, json={
        "line": LINE, "origin": "Caller A", "agency": "Denver PD", "officer": "Lee",
        "case_number": "26-001234"}).json()
    path = f"/v1/cases/{opened['case_id']}/report"
    early = call(running, "GET", path, analyst)                     # no legal authority yet
    assert early.status_code == 403 and "no recorded legal authority" in early.json()["error"]
    released = call(running, "POST", "/v1/disclose", tokens["legal"],
                    json={**AUTHORITY, "line": LINE})
    assert released.status_code == 200 and len(released.json()) == 3
    assert call(running, "GET", path, tokens["legal"]).status_code == 403
    report = call(running, "GET", path, analyst)
    assert report.status_code == 200 and report.headers["content-type"] == "application/pdf"
    assert report.content.startswith(b"%PDF-")
    assert call(running, "GET", "/v1/cases/C000009/report", analyst).status_code == 404
    assert ("token:analyst-1", "case_report") in [
        (e["actor"], e["action"]) for e in testing.audit_entries(store)]


def test_every_list_comes_a_page_at_a_time_in_the_reports_order(tmp_path):
    """Lines 3035550111-114, each called and traced from its own caller 1, 2, 3 and 4
    times: repeat-origins ranks the pairs by traced calls (most first), hot-origins the
    callers by lines then traced calls, whichever page they come in."""
    store = cdrtrace.open(tmp_path / "store", create=True)
    records, traced = [], []
    for n in range(1, 5):
        line, caller = f"303555011{n}", f"720555030{n}"
        for hour in range(10, 10 + n):
            records.append(cdr(src=caller, dst=line, start=f"2026-03-02 {hour}:03:00",
                               end=f"2026-03-02 {hour}:03:20", disposition="NO ANSWER"))
            traced.append((line, f"2026-03-02T{hour}:05:00Z"))
    cdrtrace.ingest(store, [cdr_file(tmp_path, *records)])
    for line, at in sorted(traced, key=lambda t: t[1]):
        assert store.trace(line, at=at).outcome.value == "success"
    running = Service(store)
    try:
        analyst = store.tokens.create("ann", "analyst")

        def pages(path, size, *, key=None, after="offset"):
            got, start = [], None
            for _ in range(12):                      # a page that never ends: a failure
                if after == "offset":
                    query = f"offset={len(got)}&limit={size}"
                else:
                    query = f"limit={size}" + (f"&after={start}" if start else "")
                answer = call(running, "GET", f"{path}{'&' if '?' in path else '?'}{query}",
                              analyst)
                assert answer.status_code == 200, answer.text
                page_rows = answer.json()
                assert len(page_rows) <= size
                got += page_rows
                if len(page_rows) < size:
                    return got
                start = page_rows[-1][key] if key else None
            raise AssertionError(f"{path}: pages past all of its rows")
        ranked = [("+1303555011" + n, "+1720555030" + n, int(n)) for n in "4321"]
        for size in (1, 2, 3, 1000):
            repeat = pages("/v1/reports/repeat-origins?min_calls=1", size)
            assert [(r["line"], r["origin"], r["traced_calls"]) for r in repeat] == ranked
            hot = pages("/v1/reports/hot-origins?min_lines=1", size)
            assert [(h["origin"], h["lines"], h["traced_calls"]) for h in hot] == [
                (origin, 1, calls) for _, origin, calls in ranked]
        timeline = pages("/v1/reports/timeline?line=3035550114&origin=7205550304", 3)
        assert [(t["time"][11:16], t["event"]) for t in timeline] == [
            (f"{hour}:05", "trace") for hour in range(10, 14)]
        for n in range(1, 5):
            store.open_case(f"303555011{n}", "Caller A", agency="Denver PD", officer="Lee",
                            case_number=f"26-00{n}", analyst="ann", waive_reason="threats")
        cases = pages("/v1/cases", 3, key="case_id", after="id")
        assert [c["case_id"] for c in cases] == ["C000001", "C000002", "C000003", "C000004"]
        assert [c["case_number"] for c in cases] == ["26-001", "26-002", "26-003", "26-004"]
        for n in (3, 4):                      # Caller A of lines 3 and 4: eligible (3 calls)
            store.request_action(f"303555011{n}", "Caller A")
        queued = pages("/v1/requests", 1, key="request_id", after="id")
        assert [(r["request_id"], r["line"]) for r in queued] == [
            ("R000001", "+13035550113"), ("R000002", "+13035550114")]
        for query in ("offset=-1", "limit=0", "limit=10001"):
            assert call(running, "GET", f"/v1/reports/hot-origins?{query}",
                        analyst).status_code == 422
        for path in ("/v1/cases?after=R000001", "/v1/requests?after=C000001"):
            assert call(running, "GET", path, analyst).status_code == 422
    finally:
        running.stop()
        store.close()


def test_reports_over_every_trace_are_made_two_at_a_time(cic):
    """A third report over the whole trace table, asked while two are made, is a 503 that
    says why; once one is done, it is made."""
    store, running, tokens = cic
    from cdrtrace.service import cic as routes

    held = sum(routes.REPORTING.acquire(blocking=False)
               for _ in range(routes.WHOLE_TABLE_REPORTS))
    try:
        assert held == 2
        for path in ("/v1/reports/repeat-origins", "/v1/reports/hot-origins"):
            busy = call(running, "GET", path, tokens["analyst"])
            assert busy.status_code == 503 and "reports over every trace" in busy.json()["error"]
        assert call(running, "GET", f"/v1/reports/calls?line={LINE}",    # one line's: not held
                    tokens["analyst"]).status_code == 200
        routes.REPORTING.release()
        held -= 1
        assert call(running, "GET", "/v1/reports/repeat-origins",
                    tokens["analyst"]).status_code == 200
    finally:
        for _ in range(held):
            routes.REPORTING.release()
