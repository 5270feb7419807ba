"""The HTTP API's contract: what each request may carry, and what each answer holds.

Requests are read strictly: a JSON value of another type is refused (422), never converted
(`false` is not 0 days of retention), and so is a field the request does not have (a
misspelt `trace_ids` would otherwise widen a disclosure to the whole line). The answers a
switch and customer care get are described field by field, and no other field is allowed:
the OpenAPI document itself says they never name a caller. Every refusal is
`{"error": "..."}`, but a request that does not fit its schema (422: FastAPI's list of what
was wrong, under `detail`).
"""
from __future__ import annotations

from typing import Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ..evidence.outcomes import Outcome


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


CUSTOMER_FEED = ("the customer's switch's feed: needed for an extension two feeds' switches "
                 "number alike, whose traces are then that feed's customer's alone")


class TraceRequest(Strict):
    line: str = Field(max_length=64, description="the line that dialled *57")
    at: str | None = Field(None, max_length=40, description=(
        "activation time, ISO-8601 (default now); without an offset, in the store's zone, "
        "refused where its clocks show it twice or never"))
    wait: float = Field(0.0, ge=0, le=10, description="seconds to wait for a live feed to catch up")
    feed: str | None = Field(None, max_length=64, description=(
        "the feed of the switch the *57 was dialled on: an extension is traced among its "
        "calls (needed once two feeds index extensions); an E.164 line among every feed's"))


class ActionRequest(Strict):
    line: str = Field(max_length=64)
    origin: str = Field(max_length=40, description="the customer's label: 'Caller A'")
    feed: str | None = Field(None, max_length=64, description=CUSTOMER_FEED)


class CaseRequest(Strict):
    line: str = Field(max_length=64)
    origin: str = Field(max_length=64, description="'Caller A' or a number")
    agency: str = Field(max_length=200)
    officer: str = Field(max_length=200)
    case_number: str = Field(max_length=200)
    waive: str | None = Field(None, max_length=500, description="reason to waive the threshold")
    request: str | None = Field(None, max_length=40, description=(
        "the customer's request for action this case answers (R000001): settled with it"))
    feed: str | None = Field(None, max_length=64, description=CUSTOMER_FEED)


class CloseRequest(Strict):
    reason: str = Field(min_length=1, max_length=500,
                        description="why no case is opened: the customer sees it")


class DiscloseRequest(Strict):
    kind: str = Field(max_length=40, description="subpoena, court_order or law_enforcement_request")
    reference: str = Field(max_length=200)
    agency: str = Field(max_length=200)
    officer: str = Field(max_length=200)
    case_number: str = Field(max_length=200)
    trace_ids: list[str] | None = Field(None, max_length=1000)
    line: str | None = Field(None, max_length=64)


class PurgeRequest(Strict):
    older_than_days: float | None = Field(
        None, ge=0, le=36_500, description="the retention, in days (default the store's)")


LINE = Path(max_length=64, description="the subscriber's line, in any common written form")
FEED = Query(None, max_length=64, description=CUSTOMER_FEED)
OPTIONAL_LINE = Query(None, max_length=64, description="only this line's")
REQUIRED_LINE = Query(max_length=64, description="the subscriber's line")
ORIGIN = Query(max_length=64, description="the calling number")
OPTIONAL_ORIGIN = Query(None, max_length=64, description="only the calls from this number")
CASE_ID = Path(max_length=40, description="C000001")
REQUEST_ID = Path(max_length=40, description="R000001")
LIMIT = Query(1000, ge=1, le=10_000, description="at most this many in the page")
OFFSET = Query(0, ge=0, le=1_000_000_000, description=(
    "rows of the report left out before the page: ask again with `offset` grown by "
    "`limit` until a page comes back short"))
AFTER_CASE = Query(None, pattern=r"^C[0-9]{6,19}$",
                   description="the last case id of the page before: the page starts after it")
AFTER_REQUEST = Query(None, pattern=r"^R[0-9]{6,19}$", description=(
    "the last request id of the page before: the page starts after it"))
# POST /v1/trace/text: a form in, the announcement's id out (as plain text)
_FORM = {"type": "object", "required": ["line", "token"], "properties": {
    "line": {"type": "string", "maxLength": 64}, "token": {"type": "string"},
    "at": {"type": "string", "maxLength": 40}, "wait": {"type": "number", "minimum": 0, "maximum": 10},
    "feed": {"type": "string", "maxLength": 64}}}
TEXT_TRACE = {
    "requestBody": {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": _FORM}}},
    "responses": {str(code): {"description": why, "content": {"text/plain": {
        "schema": {"type": "string"}}}} for code, why in (
            (200, "the announcement's id: COT-SUCCESS, ..."),
            (400, "COT-FAILURE: a wrong line, time, wait or feed"),
            (401, "COT-FAILURE: no valid token"), (403, "COT-FAILURE: not a switch's token"))}}
class TraceAnswer(Strict):
    """A trace as the switch and the customer learn it: never the caller."""
    trace_id: str
    line: str
    outcome: Outcome
    announcement_id: str = Field(description="the announcement the switch plays: COT-SUCCESS, ...")
    announcement: str
    activated_at: str
    call_time: str | None


class TraceEntry(Strict):
    trace_id: str
    activated_at: str
    call_time: str | None
    outcome: Outcome


class RequestState(Strict):
    request_id: str
    state: str
    requested_at: str
    case_id: str | None
    reason: str | None


class Progress(Strict):
    origin: str = Field(description="the caller's pseudonym on this line: 'Caller A'")
    traced_calls: int
    threshold: int
    threshold_waived: bool
    eligible_for_action: bool
    first_call: str
    last_call: str
    request: RequestState | None


class FollowUp(Strict):
    name: str | None = None
    follow_up_phone: str | None = None
    follow_up_hours: str | None = None


class StatusAnswer(Strict):
    """A customer's traces and progress per pseudonymous origin: never the caller."""
    line: str
    traces: list[TraceEntry]
    progress: list[Progress]
    eligible_for_action: bool
    follow_up: FollowUp | None


class ActionAnswer(Strict):
    request_id: str
    line: str
    label: str
    state: str
    requested_at: str


class Open(BaseModel):
    """An identifying answer: the fields it always has, and those it may have, named; an
    evidence record may carry more (why a trace failed closed, when a pending one
    resolved), so others are allowed."""
    model_config = ConfigDict(extra="allow")


class Call(Open):
    """A call as the index holds it: who called, how it was presented and where its CDR is."""
    start: str
    start_us: int
    calling: str | None = Field(description="the caller's number (null: none was delivered)")
    presentation: str
    answered: bool
    forwarded: bool
    indexed_as: str
    disposition: str = Field(description=(
        "answered, no_answer, cancelled, ..., or callers_differ: the call's records (one call "
        "id) name two callers, and a trace of it names none"))
    call_id: str
    feed: int
    source: str | None
    offset: int | None
    caller_tenants_shared: bool | None = Field(None, description=(
        "a caller its switch numbers itself, of a feed whose records name several tenants: "
        "whose tenant's it is the records cannot tell, and the call is an origin of its own"))


class TraceRecord(Open):
    """A trace's evidence record, as recorded."""
    trace_id: str
    line: str
    activated_us: int
    traced_at_us: int
    outcome: Outcome
    call: Call | None
    origin: str | None = Field(None, description=(
        "the origin the call counts toward (R8): an E.164 number, or a caller its switch "
        "numbers itself in its feed ('1002 (feed 3)'); absent from records made before"))
    enrichment: dict[str, Any] | None = Field(
        description="the directory's row for the caller when traced (name, address, ...)")
    original_trace: str | None
    requested_by: str | None = None
    reason: str | None = None
    unreadable_nearby: dict[str, Any] | None = None
    later_call: dict[str, Any] | None = Field(None, description=(
        "read beside the record, not part of it: a call read after this success that shows "
        "it named the wrong call (when and where it began; never its caller)"))
    unreadable_nearby_now: dict[str, Any] | None = Field(None, description=(
        "read beside the record, not part of it: unreadable_nearby as it is now, where more "
        "unreadable records near the call have been read since the trace"))


class ActionRequestEntry(Open):
    request_id: str
    line: str
    origin: str
    label: str
    requested_us: int
    requested_by: str
    state: str
    case_id: str | None
    reason: str | None
    updated_us: int | None
    feed: int | None = Field(None, description=(
        "on an extension switches number alike, the feed of the customer who asked"))


class Case(Open):
    case_id: str
    line: str
    origin: str
    agency: str
    officer: str
    case_number: str
    opened_by: str
    opened_us: int
    waiver: dict[str, Any] | None
    feed: int | None = Field(None, description=(
        "on an extension switches number alike, the feed of the customer the case is for"))


class CaseEvent(Open):
    trace_id: str
    outcome: Outcome
    call_time: str
    trace_time: str


class CaseRead(Case):
    timeline: list[CaseEvent]


class FeedStats(Open):
    feed: str
    feed_id: int
    live: bool
    stalled: bool = Field(description=(
        "its follower was stopped, failed or died while its source goes on: not live, and "
        "traces of its lines wait for it until a follower runs again or an operator "
        "detaches it"))
    source: str | None
    records: int
    records_per_second: float | None
    rejected: int
    watermark: str | None
    lag_seconds: float | None
    ahead_of_clock: bool = Field(description=(
        "its newest call is stamped more than 5 minutes after the clock: its zone or its "
        "switch's clock is wrong, and traces of its lines are untraceable"))
    local_lines: bool = Field(description=(
        "it indexed calls to lines its switch numbers itself (extensions): once two feeds "
        "have, a trace of such a line names its feed, or is untraceable"))
    tenants_shared: bool = Field(description=(
        "its records name two or more tenants for lines its switch numbers itself (a "
        "BroadWorks group, a FreeSWITCH domain): a switch hosting several customers' PBXs, "
        "whose extensions' traces are untraceable until each tenant has a feed of its own"))
    tenants: list[str] = Field(default_factory=list, description=(
        "two of the tenants its records named for such lines (the two least by their "
        "hash, whatever order the records came in), as they wrote them (BroadWorks: "
        "serviceProvider/group)"))
    last_commit: str | None


class Stats(Open):
    feeds: list[FeedStats]
    index: dict[str, Any]


class PurgeAnswer(Open):
    traces: int
    before: str
    archive_days: float | None


class TokenEntry(Strict):
    name: str
    role: Literal["switch", "care", "analyst", "legal", "operator"]
    created_us: int
    revoked_us: int | None
    expires_us: int | None = Field(description="refused from then on; null: until revoked")


class Revoked(Strict):
    revoked: str = Field(description="the token's name")


class Checkpoint(Strict):
    seq: int = Field(description="the number of the audit log's last entry")
    hash: str = Field(description="that entry's chained hash")
    at_us: int
    store: str
    mac: str = Field(description="HMAC-SHA256 of the above under the store's audit key")


class Row(BaseModel):
    """A report's row: these fields, no other."""
    model_config = ConfigDict(extra="forbid")


class RepeatOrigin(Row):
    line: str
    origin: str
    traced_calls: int = Field(description="distinct calls from the origin traced successfully")
    first_call: str
    last_call: str
    eligible: bool = Field(description="traced_calls reached the store's threshold")


class HotOrigin(Row):
    origin: str
    lines: int = Field(description="lines that traced a call from it")
    traced_calls: int
    first_call: str
    last_call: str


class TimelineEntry(Row):
    time: str
    event: Literal["call", "trace"]
    trace_id: str | None
    outcome: str | None = Field(description="a trace's outcome, or a call's disposition")
    call_time: str | None
    origin: str | None = Field(description=(
        "the origin a trace counted toward, or a call's caller; one its switch numbers "
        "itself (an extension) names its feed: '1002 (feed 3)'"))


class ArchivedCall(Row):
    start: str
    answer: str | None
    end: str
    calling: str | None = Field(description="the caller's number (null: none was delivered)")
    presentation: str | None = Field(description="allowed, restricted or unavailable")
    disposition: str | None = Field(
        description="answered, no_answer, cancelled, answered_elsewhere, late_refusal, late_failure, "
                    "transferred, busy, ...")
    received: bool = Field(
        description="the line was alerted (rang), or may have been (late_refusal, late_failure, unknown, transferred)")
    feed: int
    record: int = Field(description="the record's number in its source")


class Error(BaseModel):
    error: str


_WHY = {
    400: "a value the request carries is wrong (a line that is not one, a bad time, ...)",
    401: "no valid bearer token",
    403: "the token's role has no right to this",
    404: "no such case, request or report",
    413: "the request's body is over its bound",
    421: "a line another shard holds, in a trace forwarded here",
    503: "no replica of the line's shard may answer now",
}


def document(description: str) -> dict[int | str, dict[str, Any]]:
    """A route's 200 that is a printable document, as a PDF or an HTML page."""
    return {200: {"description": description, "content": {
        "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        "text/html": {"schema": {"type": "string"}}}}}


def binary(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """A route's 200 that is a file of media_type (with answers(None, ...))."""
    return {200: {"description": description, "content": {
        media_type: {"schema": {"type": "string", "format": "binary"}}}}}


def answers(ok: Any, *codes: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI's `responses` for a route: its 200 (a model, or a list of one; None: not
    described) and the refusals it can give, each `{"error": ...}`."""
    documented: dict[int | str, dict[str, Any]] = {
        code: {"model": Error, "description": _WHY[code]} for code in codes}
    if ok is not None:
        documented[200] = {"model": ok, "description": "the answer"}
    return documented
