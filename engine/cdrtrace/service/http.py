"""The HTTP API: JSON, `Authorization: Bearer TOKEN`; a token has exactly the rights of
its role (401 without a valid token, 403 for a role without the right).

FastAPI gives the OpenAPI document and request validation; uvicorn serves it (with
httptools, llhttp in C) with bounded connections, headers and bodies. The documentation page is served from the
package (no CDN: carrier networks are closed).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any, Literal

import orjson
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ..errors import AccessError, CdrTraceError, NotFoundError, NotReadyError, WrongShardError
from ..evidence.tokens import Principal
from ..parsing.timezones import format_utc
from . import cic, operator
from . import schemas as contract
from .metrics import FeedMetrics, Refusals, SharedCommits, TokenExpiry, TraceMetrics, counted
from .protocol import KEEP_ALIVE, MAX_BODY, TLS_CLOSE_GRACE, Answering, BoundedHttpTools
from .routing import FORWARDED, Router

log = logging.getLogger("cdrtrace.service")
RIGHTS = {                    # what each role's token may call
    "trace": "switch", "status": "care", "identifying": "analyst", "disclose": "legal",
    "operate": "operator",
}
# the answers that refuse a request, counted by reason (metrics.Refusals)
_REFUSED = {401: "unauthorized", 403: "forbidden", 413: "too_large"}
_TRACE_FIELDS = frozenset(contract.TraceRequest.model_fields)
BY = "cdrtrace.by"      # the scope's key for the request's token ("token:NAME"), once known


def status_of(exc: CdrTraceError) -> int:
    """The HTTP status of a refusal: 403 a right the caller lacks, 404 a case that does not
    exist, 421 a line another shard holds (not forwarded), 503 a replica not ready, 400
    anything else wrong."""
    return (403 if isinstance(exc, AccessError) else 404 if isinstance(exc, NotFoundError)
            else 421 if isinstance(exc, WrongShardError)
            else 503 if isinstance(exc, NotReadyError) else 400)


def _finite(value: Any) -> Any:
    """value with every float JSON cannot carry (inf, -inf, nan) as its text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def build_app(store: Any, router: Router | None = None) -> FastAPI:
    app = FastAPI(title="cdrtrace", version="1", docs_url=None, redoc_url=None,
                  description="*57 call trace over switch CDRs. Customer-facing answers never "
                              "name a caller; identifying reads are audited.")
    registry = CollectorRegistry()
    traces, refusals = TraceMetrics(), Refusals()   # traces by outcome and latency; refusals
    app.state.workers = counted(registry, [traces, SharedCommits(store), refusals])
    registry.register(TokenExpiry(store))
    registry.register(FeedMetrics(store))
    app.state.observe, app.state.refused = traces.observe, refusals.count
    app.state.trace_metrics = traces     # the C exchanges' counts are added to it

    # Front is no middleware but before FastAPI's whole stack (run_http): POST /v1/trace passes none of it
    router = router or Router(store)
    app.state.store, app.state.router = store, router

    @app.exception_handler(CdrTraceError)
    async def refused(request: Request, exc: CdrTraceError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=status_of(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_refused(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """The routes' and Starlette's own refusals in the same words as every other
        ({"error": ...}); a 405 names every method of the path (Starlette's, only those of
        the first route it found)."""
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(sorted({
                method for route in request.app.router.routes
                if route.matches(request.scope)[0] is not Match.NONE
                for method in getattr(route, "methods", None) or ()}))
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own 422, but a value JSON cannot carry (1e999 read as infinity, NaN)
        given back as text: FastAPI's handler failed on it, a 500."""
        return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))},
                            status_code=422)

    def who(right: str) -> Any:
        async def principal(request: Request,
                            authorization: str | None = Header(None)) -> Principal:
            token = (authorization or "").removeprefix("Bearer ").strip()
            found = store.tokens.principal(token) if authorization else None
            if found is None:
                raise HTTPException(401, "a valid bearer token is needed",
                                    headers={"WWW-Authenticate": "Bearer"})
            request.scope[BY] = str(found)         # Front's log line names it, 403 or not
            if found.role != RIGHTS[right]:
                raise HTTPException(403, f"a {found.role} token cannot do this")
            return found
        return Depends(principal)

    as_switch, as_care, as_analyst, as_legal, as_operator = (
        who(right) for right in ("trace", "status", "identifying", "disclose", "operate"))

    @app.post("/v1/trace", tags=["switch"], response_model=None,
              responses=contract.answers(contract.TraceAnswer, 400, 401, 403, 413, 421, 503))
    async def trace(body: contract.TraceRequest, principal: Principal = as_switch,
                    forwarded: str | None = Header(None, alias=FORWARDED)) -> dict:
        """*57: trace the last call to the line (forwarded to the shard that holds it).
        The answer never names the caller."""
        started = time.perf_counter()
        result = await router.trace(body.line, at=body.at, wait=body.wait, by=str(principal),
                                    forward=forwarded is None, feed=body.feed)
        app.state.observe("http", result.outcome.value, time.perf_counter() - started)
        return result.to_dict()

    @app.post("/v1/trace/text", tags=["switch"], response_class=PlainTextResponse,
              openapi_extra=contract.TEXT_TRACE)
    async def trace_text(request: Request) -> PlainTextResponse:
        """*57 for a switch whose HTTP client can only post a form and read text (FreeSWITCH
        mod_curl, Kamailio http_client): form fields line, token, and optionally at and
        wait (seconds, up to 10, for a live feed to catch up) and feed; the answer is the
        announcement id alone (COT-SUCCESS, ...), the sound the switch plays."""
        form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        found = store.tokens.principal(token)
        if found is None or found.role != "switch":
            return PlainTextResponse("COT-FAILURE", status_code=401 if found is None else 403)
        line, at = (form.get("line") or [""])[0], next(iter(form.get("at") or []), None)
        feed = next(iter(form.get("feed") or []), None)
        try:
            wait = float((form.get("wait") or ["0"])[0])
        except ValueError:
            wait = -1.0
        if not 0 <= wait <= 10:
            return PlainTextResponse("COT-FAILURE", status_code=400)
        started = time.perf_counter()
        try:
            result = await router.trace(line, at, wait, str(found), feed=feed)
        except CdrTraceError:
            return PlainTextResponse("COT-FAILURE", status_code=400)
        app.state.observe("http", result.outcome.value, time.perf_counter() - started)
        return PlainTextResponse(result.announcement_id)

    @app.get("/v1/status/{line}", tags=["care"], response_model=None,
             responses=contract.answers(contract.StatusAnswer, 400, 401, 403))
    def status(line: str = contract.LINE, feed: str | None = contract.FEED,
               principal: Principal = as_care) -> dict:
        """A customer's traces and progress per pseudonymous origin."""
        return store.status(line, feed).to_dict()

    @app.get("/v1/status/{line}/log", tags=["care"], response_class=Response,
             responses=contract.answers(None, 400, 401, 403) | contract.document(
                 "the line's printable trace log (`cdrtrace status --pdf/--html`)"))
    def trace_log(line: str = contract.LINE, format: Literal["pdf", "html"] = "pdf",
                  feed: str | None = contract.FEED, principal: Principal = as_care) -> Response:
        """The customer's printable trace log: their traces, progress per caller, the
        carrier's contacts and the blanks for a police report; never a caller."""
        from ..documents.trace_log import customer_log

        page = customer_log(store.status(line, feed), store.carrier, store.config["zone"],
                            format_utc(time.time_ns() // 1000))
        return _document(page, format, "trace-log")

    @app.get("/v1/guide", tags=["care"], response_class=Response,
             responses=contract.answers(None, 401, 403) | contract.document(
                 "the guide to *57 with the carrier's settings (`cdrtrace guide`)"))
    def guide(format: Literal["pdf", "html"] = "pdf",
              principal: Principal = as_care) -> Response:
        """What *57 does and does not do, to hand a customer."""
        from ..documents.trace_log import guide

        return _document(guide(store.carrier), format, "guide")

    @app.post("/v1/request-action", tags=["care"], response_model=None,
              responses=contract.answers(contract.ActionAnswer, 400, 401, 403, 413))
    def request_action(body: contract.ActionRequest, principal: Principal = as_care) -> dict:
        """The customer asks the carrier to act against one origin ('Caller A')."""
        return store.request_action(body.line, body.origin, by=str(principal), feed=body.feed)

    cic.add_routes(app, store, as_analyst, as_legal)
    operator.add_routes(app, store, as_operator)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/readyz", tags=["service"])
    def readyz() -> JSONResponse:
        try:
            store.stats()
            stale = store.liveness.stale(store.shard) if store.shard is not None else None
        except Exception as exc:   # noqa: BLE001 - not ready, whatever the cause
            return JSONResponse({"ready": False, "error": str(exc)}, status_code=503)
        if stale is not None:      # a shard's replica too far behind: no traces from it
            return JSONResponse({"ready": False, "error": stale}, status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus: traces by outcome, trace latency, per-feed records, rejects, lag,
        stall and hold, what was refused, the shared commits, and when each token given a
        life expires."""
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs() -> HTMLResponse:
        page = resources.files("cdrtrace.service").joinpath("docs.html").read_text()
        return HTMLResponse(page)

    return app


class Front(Answering):
    """What every request passes first, as plain ASGI in front of the FastAPI app and its
    middleware stack (which costs more than a trace): the body bound (413), one log line
    (the route's template, never a number, and the token that asked, once known: a
    switch's trace names its token in its evidence record instead); and POST /v1/trace
    itself, the switches' hot path, answered here when its body and token are as a switch
    sends them. Anything else (a malformed body, a bad token) goes on to the FastAPI
    route, which gives the documented errors."""

    def __init__(self, app: FastAPI):
        self.app: Any = app            # called as plain ASGI
        self.store, self.router = app.state.store, app.state.router
        self.observe = app.state.observe
        # refused(reason): an HTTP connection or request refused, counted (metrics.Refusals)
        self.refused = functools.partial(app.state.refused, "http")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [0]
        body_seen = [0]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                if status[0]:                      # a 413 went first: the app is cut off
                    return
                status[0] = message["status"]
            elif status[0] == 413 and body_seen[0] > MAX_BODY:
                return
            await send(message)

        async def receiving() -> dict:
            message = await receive()
            body_seen[0] += len(message.get("body", b""))
            if body_seen[0] > MAX_BODY:            # a chunked body past the bound
                if not status[0]:
                    await _answer(send, 413, b'{"error": "request body too large"}')
                    status[0] = 413
                return {"type": "http.disconnect"}
            return message
        length = _header(scope["headers"], b"content-length")
        path = scope["path"]
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await _answer(send, 413, b'{"error": "request body too large"}')
            status[0] = 413
        elif scope["method"] == "POST" and path == "/v1/trace":
            body = b""
            while True:
                message = await receiving()
                if message["type"] != "http.request":
                    return
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            if not await self.trace(scope, body, sending, started):
                replayed = [{"type": "http.request", "body": body, "more_body": False}]

                async def replay() -> dict:
                    return replayed.pop() if replayed else await receive()
                await self.app(scope, replay, sending)
        else:
            await self.app(scope, receiving, sending)
        route = getattr(scope.get("route"), "path", None) or \
            (path if path == "/v1/trace" else "(no route)")
        log.info("http: %s %s %d in %.1f ms by %s", scope["method"], route, status[0],
                 (time.perf_counter() - started) * 1000, scope.get(BY, "-"))
        if status[0] in _REFUSED:
            self.refused(_REFUSED[status[0]])

    async def trace(self, scope: dict, body: bytes, send: Any, started: float) -> bool:
        """POST /v1/trace from a switch; False to let the FastAPI route answer instead."""
        request = self.switch_request(scope["headers"], body)
        if request is None:
            return False
        await _answer(send, *await self.answer(request, started))
        return True

    def switch_request(self, headers: list, body: bytes) -> tuple | None:
        """(line, at, wait, principal, forward, feed) when the body and token are as a switch
        sends them; None otherwise (the FastAPI route then gives the documented error)."""
        return self.switch_request_of(_header(headers, b"authorization"), body,
                                      _header(headers, FORWARDED.lower().encode()) is None)

    def switch_request_of(self, authorization: str | None, body: bytes,
                          forward: bool) -> tuple | None:
        """switch_request, given the Authorization header's value (None: not sent) and
        whether the request was not forwarded by another shard."""
        try:        # orjson: UTF-8 JSON only; what it refuses goes the usual way
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(request, dict) or not request.keys() <= _TRACE_FIELDS:
            return None
        line, at, wait = request.get("line"), request.get("at"), request.get("wait", 0.0)
        feed = request.get("feed")
        if not (isinstance(line, str) and len(line) <= 64
                and (at is None or isinstance(at, str) and len(at) <= 40)
                and (feed is None or isinstance(feed, str) and len(feed) <= 64)
                and isinstance(wait, int | float) and not isinstance(wait, bool)
                and 0 <= wait <= 10):
            return None
        found = self.store.tokens.principal((authorization or "").removeprefix("Bearer ").strip())
        if found is None or found.role != RIGHTS["trace"]:
            return None
        return line, at, float(wait), found, forward, feed

    async def answer(self, request: tuple, started: float) -> tuple[int, bytes]:
        """A switch's trace, run: the answer's status and JSON body."""
        line, at, wait, found, forward, feed = request
        try:
            result = await self.router.trace(line, at=at, wait=wait, by=str(found),
                                             forward=forward, feed=feed)
        except CdrTraceError as exc:
            return status_of(exc), json_body({"error": str(exc)})
        self.observe("http", result.outcome.value, time.perf_counter() - started)
        return 200, json_body(result.to_dict())


def _document(page: Any, form: str, name: str) -> Response:
    """A documents.render.Page as the PDF or the HTML page asked for."""
    if form == "html":
        return Response(page.html_text(), media_type="text/html; charset=utf-8")
    return Response(page.pdf_bytes(), media_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="{name}.pdf"'})


def json_body(value: Any) -> bytes:
    """As FastAPI's JSONResponse renders it (compact, no ASCII escapes, no NaN): orjson
    writes these same bytes for the strings and None of an answer, in a tenth of the
    time; json for what orjson refuses (a string that is not Unicode text), as FastAPI."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return _ENCODER.encode(value).encode()


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _header(headers: list, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    """uvicorn inside our loop: `serve` owns the signals (SIGTERM stops both listeners)."""

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


LIMIT_CONCURRENCY = 512     # uvicorn's connections (and requests) at once; 503 past them
# TLS 1.2's suites kept to forward-secret AEAD ones (TLS 1.3's are all such)
TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def tls_reloader(context: Any, tls: tuple[str, str]) -> Callable[[], None]:
    """What SIGHUP does over TLS: the certificate chain and key files read again into the
    listener's context, so that new connections present them (a renewed certificate, with
    no restart); those open keep theirs. The files are checked first as at start-up, on a
    context of their own (server.tls_of): if they are wrong (a key that is not the
    certificate's, one every user may read), the ones loaded before are kept, and the
    error is logged."""
    def reload() -> None:
        from .server import tls_of

        try:
            tls_of(*tls)
            context.load_cert_chain(*tls)
        except (CdrTraceError, OSError, ValueError) as exc:   # ssl.SSLError is an OSError
            log.error("SIGHUP: the TLS certificate and key were not reloaded, the ones "
                      "loaded before are kept: %s", exc)
            return
        log.info("SIGHUP: the TLS certificate and key reloaded from %s and %s", *tls)
    return reload


async def run_http(app: FastAPI, host: str, port: int, stop: asyncio.Event,
                   cores: Iterable[int] = (), tls: tuple[str, str] | None = None
                   ) -> tuple[asyncio.Task, int, Callable[[], None] | None]:
    """Serve app until stop is set; (the task, the port bound, what reloads the TLS files
    or None). The switches' traces are exchanged in C (http_native) unless
    CDRTRACE_HTTP=python or over TLS (tls: the certificate chain and key files; uvicorn
    then serves every request, as C cannot read them); cores: where its thread may run."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio then sets TCP_NODELAY on every connection (without it a
    # kept-alive request waited 40 ms for a delayed ACK); the C exchange's connections
    # inherit it from the listening socket
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)     # --workers share it
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    # proxy_headers off: nothing here reads the client's address, and uvicorn's middleware
    # for it cost 5% of a trace's samples; no Server header (the C exchange sends none)
    front = Front(app)
    config = uvicorn.Config(front, log_level="warning", lifespan="off",
                            limit_concurrency=LIMIT_CONCURRENCY, http=BoundedHttpTools,
                            timeout_keep_alive=KEEP_ALIVE, timeout_graceful_shutdown=30,
                            proxy_headers=False, server_header=False,
                            ssl_certfile=tls[0] if tls else None,
                            ssl_keyfile=tls[1] if tls else None, ssl_ciphers=TLS_CIPHERS)
    server = _Server(config)
    config.load()                 # uvicorn's imports done here, not when a peer may be waiting
    native = os.environ.get("CDRTRACE_HTTP", "native") != "python" and tls is None
    if native or tls:             # uvicorn listens on nothing: C hands it its connections,
        sock.listen(config.backlog)     # or the TLS listener below is made here
    serving = asyncio.create_task(server.serve(sockets=[] if native or tls else [sock]))
    while not server.started and not serving.done():   # listening before serve says so
        await asyncio.sleep(0.005)
    if serving.done():
        sock.close()
        serving.result()          # its start-up failed: that error
    if tls:     # uvicorn's own listener leaves a handshake asyncio's 60 s, and its bound on
        # connections counts none that has not ended its handshake: a peer opening
        # connections and saying nothing held as many as it liked. Closed with uvicorn's.
        def handshaking() -> BoundedHttpTools:
            protocol = BoundedHttpTools(config=config, server_state=server.server_state,
                                        app_state=server.lifespan.state)
            protocol.await_handshake(KEEP_ALIVE + TLS_CLOSE_GRACE)
            return protocol
        server.servers.append(await asyncio.get_running_loop().create_server(
            handshaking, sock=sock, ssl=config.ssl, backlog=config.backlog,
            ssl_handshake_timeout=KEEP_ALIVE))
    exchange = None
    if native:
        from .http_native import NativeHTTP

        exchange = NativeHTTP(front, server, cores, app.state.trace_metrics)
        exchange.start(sock)
    bound = sock.getsockname()[1]

    async def run() -> None:
        await stop.wait()
        if exchange is not None:  # its traces answered, then uvicorn's (handed-off) ones
            exchange.stop_accepting()
            await exchange.drain(30)
        server.should_exit = True
        await serving
        if exchange is not None:
            exchange.close()
    return (asyncio.create_task(run()), bound,
            tls_reloader(config.ssl, tls) if tls else None)
