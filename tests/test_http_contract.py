"""The HTTP API keeps to its OpenAPI document: what each request may carry, what each
answer holds, and every status it can give. schemathesis generates the requests from the
document itself (valid ones and ones that break it, for every operation and every
role's token); the tests after it pin the rules it cannot know."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import httpx
import pydantic
import pytest
from test_service import AT, CALLER, LINE, Service, _serving, call

import cdrtrace
from cdrtrace import testing
from cdrtrace.service import schemas
from conftest import cdr, cdr_file

ROLES = ("switch", "care", "analyst", "legal", "operator")
# A line is any text up to 64 characters to the document; what a telephone line is, is
# the number rules' (docs/trace-rules.md), and a text that is none is refused with 400,
# which the document gives for every operation that takes a line.
# A body past its bound is refused before it is read: 413, a refusal like the others.
SCHEMATHESIS_TOML = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428",
                     "429", "5xx"]
"""


def _schemathesis() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    found = beside if os.path.exists(beside) else shutil.which("schemathesis")
    assert found, "schemathesis is a test requirement (pip install '.[test]')"
    return found


@pytest.fixture
def served(store, ingest_records, monkeypatch, request):
    """The service, with the HTTP listener the test's indirect parameter names (native if
    none)."""
    listener = getattr(request, "param", None) or "native"
    monkeypatch.setenv("CDRTRACE_HTTP", listener)
    yield from _serving(store, ingest_records)


# each role's operations with the C exchange; a switch's again with uvicorn's (the only
# operation the two take different ways)
@pytest.mark.parametrize(("role", "served"), [(None, "native"), *((r, "native") for r in ROLES),
                                              ("switch", "python")], indirect=["served"])
def test_every_operation_keeps_to_the_openapi_document(served, tmp_path, role):
    """Every operation with no token, and each role's operations with its token: no
    server error, only the statuses the document gives, answers of the documented shape
    and content type, a request that breaks the schema refused, one that keeps to it not
    refused for its shape (422), and `Allow` naming the path's methods."""
    store, running, tokens = served
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_TOML)
    command = [_schemathesis(), "--no-color", "--config-file", str(config), "run",
               f"{running.url}/openapi.json", "--checks", "all", "--seed", "57",
               "--request-timeout", "10",
               "--suppress-health-check", "all"]   # about generating data, not the API
    if role is None:            # every operation refuses (401) but the service's own
        command += ["--max-examples", "10"]
    else:                       # a role's own operations (another's: test_service's 403s)
        command += ["--max-examples", "25", "--include-tag", role,
                    "-H", f"Authorization: Bearer {tokens[role]}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "generated" in done.stdout


@pytest.fixture
def contracted(tmp_path):
    """A line with three traced calls from one caller, its customer's request for
    action, and the carrier's follow-up contact: every field of the customer's answers."""
    path = tmp_path / "contract-store"
    cdrtrace.open(path, create=True).close()
    (path / "cdrtrace.toml").write_text(
        '[carrier]\nname = "Front Range Telephone"\nfollow_up_phone = "1-800-555-0199"\n'
        'follow_up_hours = "Mon-Fri 8am-5pm MT"\n')
    store = cdrtrace.open(path)
    starts = ("2026-03-02 14:03:00", "2026-03-02 15:03:00", "2026-03-02 16:03:00")
    cdrtrace.ingest(store, [cdr_file(tmp_path, *(
        cdr(src=CALLER, dst=LINE, start=s, end=s, disposition="NO ANSWER",
            billsec="0", duration="0") for s in starts))])
    running = Service(store)
    yield store, running, {role: store.tokens.create(f"{role}-1", role) for role in ROLES}
    running.stop()
    store.close()


def test_the_customers_answers_hold_their_documented_fields_and_no_other(contracted):
    """A switch's and customer care's answers, validated against the document's models,
    which allow no field they do not name: a caller's number, name or address would be
    one."""
    store, running, tokens = contracted
    switch, care = tokens["switch"], tokens["care"]
    for hour in ("14", "15", "16"):
        answer = call(running, "POST", "/v1/trace", switch,
                      json={"line": LINE, "at": f"2026-03-02T{hour}:05:00Z"})
        assert answer.status_code == 200
        assert schemas.TraceAnswer.model_validate_json(answer.content).outcome == "success"
    again = call(running, "POST", "/v1/trace", switch, json={"line": LINE, "at": AT})
    assert schemas.TraceAnswer.model_validate_json(again.content).outcome == "already_traced"
    requested = call(running, "POST", "/v1/request-action", care,
                     json={"line": LINE, "origin": "Caller A"})
    assert requested.status_code == 200
    schemas.ActionAnswer.model_validate_json(requested.content)
    status = schemas.StatusAnswer.model_validate_json(
        call(running, "GET", f"/v1/status/{LINE}", care).content)
    assert [p.traced_calls for p in status.progress] == [3]
    assert status.progress[0].request is not None and status.follow_up is not None
    assert status.follow_up.follow_up_phone == "1-800-555-0199"
    assert len(status.traces) == 4
    with pytest.raises(ValueError, match="Extra inputs"):     # the models do refuse a field
        schemas.TraceAnswer.model_validate_json(json.dumps({**again.json(), "calling": "+17205550101"}))


def test_the_identifying_answers_hold_their_documented_fields(contracted):
    """The CIC's and the operator's answers, validated against the document's models (an
    evidence record may carry fields they do not name, but none they name may be missing
    or of another type)."""
    store, running, tokens = contracted
    analyst, legal, operator = tokens["analyst"], tokens["legal"], tokens["operator"]
    for hour in ("14", "15", "16"):
        call(running, "POST", "/v1/trace", tokens["switch"],
             json={"line": LINE, "at": f"2026-03-02T{hour}:05:00Z"})
    call(running, "POST", "/v1/request-action", tokens["care"],
         json={"line": LINE, "origin": "Caller A"})

    def valid(kind, answer):
        assert answer.status_code == 200, answer.text
        return pydantic.TypeAdapter(kind).validate_json(answer.content)
    queue = valid(list[schemas.ActionRequestEntry], call(running, "GET", "/v1/requests", analyst))
    assert [r.label for r in queue] == ["Caller A"]
    calls = valid(list[schemas.Call], call(running, "GET", f"/v1/last-calls/{LINE}", analyst))
    assert {c.calling for c in calls} == {"+17205550101"}
    records = valid(list[schemas.TraceRecord],
                    call(running, "GET", f"/v1/trace-records?line={LINE}", analyst))
    assert [r.outcome for r in records] == ["success"] * 3
    opened = valid(schemas.Case, call(running, "POST", "/v1/cases", analyst, json={
        "line": LINE, "origin": "Caller A", "agency": "PD", "officer": "Lee",
        "case_number": "2026-9"}))
    assert [c.case_id for c in valid(list[schemas.Case], call(running, "GET", "/v1/cases",
                                                             analyst))] == [opened.case_id]
    read = valid(schemas.CaseRead, call(running, "GET", f"/v1/cases/{opened.case_id}", analyst))
    assert len(read.timeline) == 3
    disclosed = valid(list[schemas.TraceRecord], call(running, "POST", "/v1/disclose", legal, json={
        "kind": "subpoena", "reference": "S-1", "agency": "PD", "officer": "Lee",
        "case_number": "2026-9", "line": LINE}))
    assert {r.call.calling for r in disclosed if r.call} == {"+17205550101"}
    stats = valid(schemas.Stats, call(running, "GET", "/v1/stats", operator))
    assert stats.feeds[0].records == 3
    purged = valid(schemas.PurgeAnswer, call(running, "POST", "/v1/purge", operator,
                                             json={"older_than_days": 3650}))
    assert purged.traces == 0


@pytest.fixture(params=["native", "python"])
def either(request, store, ingest_records, monkeypatch):
    """The service with each HTTP listener: the switches' traces go their own way."""
    monkeypatch.setenv("CDRTRACE_HTTP", request.param)
    yield from _serving(store, ingest_records)


def test_a_value_of_another_type_or_a_field_no_request_has_is_refused_not_converted(either):
    """JSON `false` is not 0 days of retention, `true` is not a second of waiting, and a
    misspelt field is not left out: each is a 422 and nothing is done."""
    store, running, tokens = either
    first = call(running, "POST", "/v1/trace", tokens["switch"], json={"line": LINE, "at": AT})
    assert first.json()["outcome"] == "success"
    for body in ({"line": LINE, "at": AT, "wait": True}, {"line": LINE, "at": AT, "by": "x"},
                 {"line": LINE, "at": AT, "wait": "1"}, {"line": 3035550110}):
        refused = call(running, "POST", "/v1/trace", tokens["switch"], json=body)
        assert refused.status_code == 422, body
    for body in ({"older_than_days": False}, {"older_than_days": "0"},
                 {"older_than_day": 0}):
        refused = call(running, "POST", "/v1/purge", tokens["operator"], json=body)
        assert refused.status_code == 422, body
    assert [r["trace_id"] for r in store.trace_records(analyst="ann")] == [
        first.json()["trace_id"]]                        # no trace made, none purged
    disclosed = call(running, "POST", "/v1/disclose", tokens["legal"], json={
        "kind": "subpoena", "reference": "S-1", "agency": "PD", "officer": "Lee",
        "case_number": "2026-1", "line": LINE, "trace_id": ["T00000099"]})
    assert disclosed.status_code == 422 and "trace_id" in disclosed.text
    purged = call(running, "POST", "/v1/purge", tokens["operator"], json={"older_than_days": 0})
    assert purged.status_code == 200 and purged.json()["traces"] == 1


def test_refusals_say_why_in_one_shape_with_their_documented_status(served):
    store, running, tokens = served
    missing = call(running, "GET", "/v1/cases/C999999", tokens["analyst"])
    assert (missing.status_code, missing.json()) == (404, {"error": "no case C999999"})
    with pytest.raises(cdrtrace.NotFoundError):              # the Python API says so too
        store.case("C999999", analyst="ann")
    assert testing.audit_entries(store)[-1]["action"] == "case_read_refused"
    unauthorized = call(running, "GET", "/v1/stats")
    assert (unauthorized.status_code, unauthorized.json()) == (
        401, {"error": "a valid bearer token is needed"})
    assert unauthorized.headers["WWW-Authenticate"] == "Bearer"
    forbidden = call(running, "GET", "/v1/stats", tokens["care"])
    assert (forbidden.status_code, forbidden.json()) == (403, {"error": "a care token cannot do this"})
    wrong = httpx.request("DELETE", running.url + "/v1/cases",
                          headers={"Authorization": f"Bearer {tokens['analyst']}"})
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET, POST"
    assert call(running, "GET", "/v1/nowhere").json() == {"error": "Not Found"}
    document = call(running, "GET", "/openapi.json").json()
    case = document["paths"]["/v1/cases/{case_id}"]["get"]["responses"]
    assert set(case) == {"200", "401", "403", "404", "422"}
