"""The HTTP API's identifying calls: what the CLI's CIC commands do (last-calls, report,
case, disclose), for an `analyst` token (a `legal` one discloses). Each is audited under
the token's name by the store, as the CLI's are under --analyst.

Every list comes a page at a time (`limit`, at most 10,000): the reports by `offset`, the
cases and the request queue after an id. The reports over every trace (repeat-origins,
hot-origins) hold the trace table's columns in memory while they are made: two at once at
most, a third asked meanwhile is a 503, as a second trace table is."""
from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Query, Response

from ..errors import NotReadyError
from ..evidence.tokens import Principal
from . import schemas as contract

PARQUET, PDF = "application/vnd.apache.parquet", "application/pdf"
EXPORTING = threading.Lock()     # held while a trace table is made: one at a time
WHOLE_TABLE_REPORTS = 2          # reports over every trace made at once, at most
REPORTING = threading.BoundedSemaphore(WHOLE_TABLE_REPORTS)


@contextlib.contextmanager
def reporting() -> Iterator[None]:
    """Room for a report over every trace (NotReadyError, a 503, when there is none)."""
    if not REPORTING.acquire(blocking=False):
        raise NotReadyError(f"{WHOLE_TABLE_REPORTS} reports over every trace are being made: "
                            "ask again once one is done")
    try:
        yield
    finally:
        REPORTING.release()


BUSY: dict[int | str, dict[str, Any]] = {503: {"model": contract.Error, "description": (
    f"{WHOLE_TABLE_REPORTS} reports over every trace are being made already (each holds the "
    "trace table's columns in memory): ask again once one is done")}}


def page(table: Any, offset: int, limit: int) -> list[dict]:
    """The rows offset .. offset + limit of a report (an Arrow table), as JSON-ready rows:
    only those become Python objects."""
    from ..reports import analytics

    return analytics.plain_rows(table.slice(offset, limit))


def after_id(entries: list[dict], key: str, after: str | None, limit: int) -> list[dict]:
    """The entries (in id order) whose id's number is past after's, at most limit."""
    first = int(after[1:]) if after else -1
    return [e for e in entries if int(e[key][1:]) > first][:limit]


def add_routes(app: FastAPI, store: Any, as_analyst: Any, as_legal: Any) -> None:
    """The CIC's routes on app; as_analyst and as_legal: the dependencies that admit the
    token of each role (http.build_app)."""
    from ..reports import analytics

    @app.get("/v1/requests", tags=["analyst"], response_model=None,
             responses=contract.answers(list[contract.ActionRequestEntry], 401, 403))
    def requests(after: str | None = contract.AFTER_REQUEST, limit: int = contract.LIMIT,
                 principal: Principal = as_analyst) -> list:
        """The requests for action waiting for the CIC (identifying), oldest first, a page
        at a time: ask again with `after` the last request id until a page comes back
        short."""
        return after_id(store.request_queue(analyst=str(principal)), "request_id", after, limit)

    @app.post("/v1/requests/{request_id}/close", tags=["analyst"], response_model=None,
              responses=contract.answers(contract.ActionRequestEntry, 400, 401, 403, 404, 413))
    def close_request(body: contract.CloseRequest, request_id: str = contract.REQUEST_ID,
                      principal: Principal = as_analyst) -> dict:
        """Close a waiting request without a case, saying why: the customer sees the reason
        (`cdrtrace case close-request`). A request answered by a case is settled by
        opening the case with it (POST /v1/cases, `request`)."""
        return store.close_request(request_id, body.reason, analyst=str(principal))

    @app.get("/v1/last-calls/{line}", tags=["analyst"], response_model=None,
             responses=contract.answers(list[contract.Call], 400, 401, 403))
    def last_calls(line: str = contract.LINE, principal: Principal = as_analyst) -> list:
        """A line's last calls, with their callers."""
        return store.last_calls(line, analyst=str(principal))

    @app.get("/v1/trace-records", tags=["analyst"], response_model=None,
             responses=contract.answers(list[contract.TraceRecord], 400, 401, 403))
    def trace_records(line: str | None = contract.OPTIONAL_LINE,
                      after: str | None = Query(None, pattern=r"^T[0-9]{8,19}$", description=(
                          "the last trace id of the page before: the page starts after it")),
                      limit: int = contract.LIMIT, principal: Principal = as_analyst) -> list:
        """The trace's evidence records, every line's or one's, in trace order, a page at a
        time: ask again with `after` the last trace id until a page comes back short."""
        return store.trace_records(line, analyst=str(principal), after=after, limit=limit)

    @app.get("/v1/reports/repeat-origins", tags=["analyst"], response_model=None,
             responses=contract.answers(list[contract.RepeatOrigin], 401, 403) | BUSY)
    def repeat_origins(min_calls: int = Query(2, ge=1, le=1_000_000,
                                              description="distinct traced calls at least"),
                       offset: int = contract.OFFSET, limit: int = contract.LIMIT,
                       principal: Principal = as_analyst) -> list:
        """Per line and origin, the calls traced successfully: eligible for action at the
        store's threshold (3). Most traced calls first; a page of the report."""
        with reporting():
            table = store.trace_columns(analyst=str(principal),
                                        columns=analytics.REPEAT_COLUMNS)
            report = store.named(analytics.repeat_origins(table, store.config["threshold"],
                                                          min_calls))
        return page(report, offset, limit)

    @app.get("/v1/reports/hot-origins", tags=["analyst"], response_model=None,
             responses=contract.answers(list[contract.HotOrigin], 401, 403) | BUSY)
    def hot_origins(min_lines: int = Query(2, ge=1, le=1_000_000,
                                           description="lines that traced it, at least"),
                    offset: int = contract.OFFSET, limit: int = contract.LIMIT,
                    principal: Principal = as_analyst) -> list:
        """Origins traced by many lines (serial harassers, robocallers), ranked; a page of
        the report."""
        with reporting():
            table = store.trace_columns(analyst=str(principal),
                                        columns=analytics.REPEAT_COLUMNS)
            report = store.named(analytics.hot_origins(table, min_lines))
        return page(report, offset, limit)

    @app.get("/v1/reports/timeline", tags=["analyst"], response_model=None,
             responses=contract.answers(list[contract.TimelineEntry], 400, 401, 403))
    def timeline(line: str = contract.REQUIRED_LINE, origin: str = contract.ORIGIN,
                 offset: int = contract.OFFSET, limit: int = contract.LIMIT,
                 principal: Principal = as_analyst) -> list:
        """Every trace between a line and an origin and, with a call archive, every call,
        in time order; a page of them."""
        return page(store.timeline(line, origin, analyst=str(principal)), offset, limit)

    @app.get("/v1/reports/calls", tags=["analyst"], response_model=None,
             responses=contract.answers(list[contract.ArchivedCall], 400, 401, 403))
    def calls(line: str = contract.REQUIRED_LINE, origin: str | None = contract.OPTIONAL_ORIGIN,
              days: float | None = Query(None, ge=0, le=36_500,
                                         description="only the calls of the last days"),
              offset: int = contract.OFFSET, limit: int = contract.LIMIT,
              principal: Principal = as_analyst) -> list:
        """Every call to the line the call archive holds (400 without one), oldest first; a
        page of them."""
        return page(store.archived_calls(line, analyst=str(principal), origin=origin,
                                         days=days), offset, limit)

    @app.get("/v1/reports/trace-table", tags=["analyst"], response_class=Response,
             responses=contract.answers(None, 401, 403) | {503: {
                 "model": contract.Error, "description": "another trace table is being made: "
                 "one at a time, as each is held in memory whole"}} | contract.binary(
                 PARQUET, "every trace, as Parquet (numbers packed: the layout is the CLI's "
                          "`report trace-table`)"))
    def trace_table(principal: Principal = as_analyst) -> Response:
        """Every trace as one Parquet file, for Spark or any Parquet engine. One is made at
        a time (held in memory whole: about 0.1 KB a trace); another asked meanwhile is a
        503."""
        import pyarrow.parquet as pq

        if not EXPORTING.acquire(blocking=False):
            raise NotReadyError("another trace table is being made: ask again once it is done")
        try:
            sink = io.BytesIO()
            pq.write_table(store.trace_table(analyst=str(principal)), sink, compression="zstd")
        finally:
            EXPORTING.release()
        return Response(sink.getvalue(), media_type=PARQUET, headers={
            "Content-Disposition": 'attachment; filename="traces.parquet"'})

    @app.get("/v1/cases", tags=["analyst"], response_model=None,
             responses=contract.answers(list[contract.Case], 401, 403))
    def cases(after: str | None = contract.AFTER_CASE, limit: int = contract.LIMIT,
              principal: Principal = as_analyst) -> list:
        """Every case, oldest first, a page at a time: ask again with `after` the last case
        id until a page comes back short."""
        return after_id(store.cases(analyst=str(principal)), "case_id", after, limit)

    @app.get("/v1/cases/{case_id}", tags=["analyst"], response_model=None,
             responses=contract.answers(contract.CaseRead, 401, 403, 404))
    def case(case_id: str = contract.CASE_ID, principal: Principal = as_analyst) -> dict:
        """A case and every trace between its line and origin."""
        return store.case(case_id, analyst=str(principal))

    @app.get("/v1/cases/{case_id}/report", tags=["analyst"], response_class=Response,
             responses=contract.answers(None, 401, 403, 404) | contract.binary(
                 PDF, "the case report for the police (403 until a disclosure under a legal "
                      "authority names the case's number)"))
    def case_report(case_id: str = contract.CASE_ID,
                    principal: Principal = as_analyst) -> Response:
        """The case report, a PDF (`cdrtrace case report`)."""
        return Response(store.case_report(case_id, analyst=str(principal)), media_type=PDF,
                        headers={"Content-Disposition": f'attachment; filename="{case_id}.pdf"'})

    @app.post("/v1/cases", tags=["analyst"], response_model=None,
              responses=contract.answers(contract.Case, 400, 401, 403, 404, 413))
    def open_case(body: contract.CaseRequest, principal: Principal = as_analyst) -> dict:
        """Open a case for a line and an origin; with `request`, the customer's request for
        action it answers (of the same line and origin) is settled with it."""
        return store.open_case(body.line, body.origin, agency=body.agency, officer=body.officer,
                               case_number=body.case_number, analyst=str(principal),
                               waive_reason=body.waive, request_id=body.request, feed=body.feed)

    @app.post("/v1/disclose", tags=["legal"], response_model=None,
              responses=contract.answers(list[contract.TraceRecord], 400, 401, 403, 413))
    def disclose(body: contract.DiscloseRequest, principal: Principal = as_legal) -> list:
        """Release trace records under a legal authority."""
        authority = body.model_dump(include={"kind", "reference", "agency", "officer",
                                             "case_number"})
        return store.disclose(authority, analyst=str(principal), trace_ids=body.trace_ids,
                              line=body.line)
