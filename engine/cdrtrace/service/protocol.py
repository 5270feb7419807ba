"""The HTTP connection: uvicorn's httptools protocol (llhttp, in C) with these additions.

- A bound on a request's head, which llhttp does not have: a peer still sending headers
  past MAX_HEAD bytes gets 400 and is cut off.
- Bounds in time, which uvicorn has only between requests: a connection that sends
  nothing is closed after the keep-alive timeout, as an idle one is, and a request not
  whole (head and body) REQUEST_TIMEOUT seconds after its first byte gets 408 and is cut
  off, however its bytes trickle in. Without them a peer sending a header line every few
  seconds held one of uvicorn's connections for as long as it liked, and a thousand such
  peers had every switch's trace answered 503.
- The connection's own refusals are JSON, `{"error": ...}`, as every route's are: a
  request llhttp cannot read (400), one not whole in time (408), one past uvicorn's
  connection bound (503, with Retry-After). uvicorn writes them as plain text.
- Over TLS, a handshake that does not end (asyncio drops it before this protocol has the
  connection) is counted as refused, `handshake` (await_handshake).
- An idle TLS connection closed (at shutdown, or past the keep-alive timeout) gets
  TLS_CLOSE_GRACE seconds to answer TLS's close_notify, then is dropped: an idle client
  does not read, and asyncio would wait 30 s for its answer (a SIGTERM with it).
- The switches' hot path answered on the connection itself. A `POST /v1/trace` whose
  head is plain (HTTP/1.1, kept alive, a Content-Length within the body bound, nothing
  pipelined ahead of it) has its body collected here. If body and token are as a switch
  sends them (Front.switch_request), the trace runs and its answer is written in one
  piece, without the ASGI request cycle, Front's wrappers or uvicorn's response
  assembly. Otherwise the parser's calls are replayed into uvicorn, and the request
  goes the usual way (Front, then FastAPI's documented errors). The answer is the same
  either way; this way costs the event loop less per trace (BENCHMARKS.md).

A request pipelined behind a trace in flight waits in uvicorn's own queue: while the
trace runs, a stand-in cycle marks the connection busy.
"""
from __future__ import annotations

import asyncio
import http
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .requestlog import RequestLog

log = logging.getLogger("cdrtrace.service")
requests = RequestLog(log)       # the line per trace
MAX_BODY = 64 << 10           # bytes a request body may have
MAX_HEAD = 16 << 10           # bytes of request line and headers
INTERNAL = b'{"error": "Internal Server Error"}'    # a trace's fault's answer
TLS_CLOSE_GRACE = 1.0         # seconds an idle TLS connection has to end cleanly
KEEP_ALIVE = 5                # seconds a connection is kept idle (uvicorn's keep-alive)
REQUEST_TIMEOUT = 5.0         # seconds a request's head and body have from its first byte
FULL = "the service is at its bound of connections: ask again in a second"


def json_answer(status: int, body: bytes, default_headers: list, close: bool) -> bytes:
    """A whole HTTP/1.1 answer of a JSON body, as this connection writes it itself."""
    return b"".join([b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode()),
                     *(name + b": " + value + b"\r\n" for name, value in default_headers),
                     b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
                     b"connection: close\r\n" if close else b"", b"\r\n", body])


def refusal(status: int, message: str, default_headers: list) -> bytes:
    """An answer the connection gives itself, then closes: `{"error": message}`."""
    return json_answer(status, json.dumps({"error": message}).encode(), default_headers, True)


async def unavailable(scope: Any, receive: Any, send: Any) -> None:
    """uvicorn's 503 past limit_concurrency, as JSON (its own is plain text)."""
    body = json.dumps({"error": FULL}).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _TraceInFlight:
    """Where uvicorn looks for the connection's current request cycle, while a trace
    answered here is in flight: a pipelined request queues behind it, a shutdown asks
    for the connection to close after the answer, a lost connection is noted."""

    def __init__(self) -> None:
        self.response_complete = False
        self.keep_alive = True
        self.disconnected = False
        self.message_event = asyncio.Event()


class BoundedHttpTools(HttpToolsProtocol):
    head_bytes = 0                 # the current request's head so far; -1 once complete
    collecting: list[bytes] | None = None   # the body of a trace answered here
    started = 0.0
    closing = False                # shut down while a trace's body was still arriving
    arriving: asyncio.TimerHandle | None = None    # the request's REQUEST_TIMEOUT, until whole
    handshake: asyncio.TimerHandle | None = None   # over TLS: until its handshake has ended

    def await_handshake(self, seconds: float) -> None:
        """Over TLS, made before the handshake: asyncio gives the connection to this
        protocol only once the handshake has ended, and drops it unseen if it does not end
        within its timeout (or fails): counted as refused, `handshake`, if that has not
        come `seconds` from now."""
        self.handshake = self.loop.call_later(seconds, self._refused, "handshake")

    def connection_made(self, transport: Any) -> None:
        if self.handshake is not None:
            self.handshake.cancel()
            self.handshake = None
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(   # idle until the first byte
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.arriving is not None:
            self.arriving.cancel()
            self.arriving = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.head_bytes >= 0:
            self.head_bytes += len(data)
        super().data_received(data)
        if self.head_bytes > MAX_HEAD and not self.transport.is_closing():
            self._refused("too_large")
            self.send_400_response("Request headers too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_bytes = 0
        if self.arriving is None:
            self.arriving = self.loop.call_later(REQUEST_TIMEOUT, self._too_slow)

    def _too_slow(self) -> None:
        """REQUEST_TIMEOUT seconds after its first byte, the request is not whole: 408 if
        no answer is under way (its head, or a trace's body, still arriving), else the
        connection is closed. Unless the peer's bytes are not being read (a request
        pipelined behind one being answered): then it waits again."""
        self.arriving = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            self.arriving = self.loop.call_later(REQUEST_TIMEOUT, self._too_slow)
            return
        log.info("http: %s closed: a request not whole within %g s", self.client,
                 REQUEST_TIMEOUT)
        self._refused("slow")
        if self.head_bytes >= 0 or self.collecting is not None:
            self.collecting = None
            self.transport.write(refusal(
                408, f"the request was not whole {REQUEST_TIMEOUT:g} s after its first byte",
                self.server_state.default_headers))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's 400 for a request llhttp cannot read (or a head past MAX_HEAD)."""
        self.transport.write(refusal(400, msg, self.server_state.default_headers))
        self.transport.close()

    def on_headers_complete(self) -> None:
        self.head_bytes = -1
        self.started = time.perf_counter()
        if self._plain_trace():
            self.collecting = []
            return
        self._to_uvicorn()

    def _to_uvicorn(self) -> None:
        """uvicorn's on_headers_complete: the request goes the usual way (its 503 past
        limit_concurrency counted, where uvicorn gives it)."""
        if not self._full() or (self.parser.should_upgrade() and self._should_upgrade()):
            super().on_headers_complete()
            return
        self._refused("full")
        log.warning("http: %s refused: %d connections or requests already", self.client,
                    self.limit_concurrency)
        app, limit = self.app, self.limit_concurrency    # uvicorn's 503, as JSON
        self.app, self.limit_concurrency = unavailable, None
        try:
            super().on_headers_complete()
        finally:
            self.app, self.limit_concurrency = app, limit

    def _full(self) -> bool:
        """Past uvicorn's bound: its 503 for a request now."""
        return self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency
            or len(self.tasks) >= self.limit_concurrency)

    def _refused(self, reason: str) -> None:
        """Count a request or connection refused for reason (metrics.Refusals)."""
        if isinstance(self.app, Answering):
            self.app.refused(reason)

    def on_body(self, body: bytes) -> None:
        if self.collecting is not None:
            self.collecting.append(body)      # within the Content-Length checked above
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self.arriving is not None:
            self.arriving.cancel()
            self.arriving = None
        if self.collecting is None:
            super().on_message_complete()
            return
        body, self.collecting = b"".join(self.collecting), None
        front = self.app
        request = front.switch_request(self.headers, body)
        if request is None:                   # not as a switch sends it: the usual way
            self._to_uvicorn()
            if self.closing and self.cycle is not None:
                self.cycle.keep_alive = False
            if body:
                super().on_body(body)
            super().on_message_complete()
            return
        in_flight = self.cycle = _TraceInFlight()      # type: ignore[assignment]
        in_flight.keep_alive = not self.closing
        task = self.loop.create_task(self._answer(front, request, in_flight))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def shutdown(self) -> None:
        if self.collecting is not None:       # uvicorn would answer it, then close: so here
            self.closing = True
            return
        if self.cycle is None or self.cycle.response_complete:
            self._close_idle()
            return
        super().shutdown()

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self._close_idle()

    def _close_idle(self) -> None:
        """Close a connection with no request under way; over TLS, drop it if its peer has
        not answered the close within TLS_CLOSE_GRACE (see the module's note)."""
        self.transport.close()
        if self.transport.get_extra_info("sslcontext") is not None:
            self.loop.call_later(TLS_CLOSE_GRACE, self.transport.abort)

    def _plain_trace(self) -> bool:
        """A POST /v1/trace this connection can answer itself (see the module's note)."""
        if self.url != b"/v1/trace" or self.parser.get_method() != b"POST":
            return False
        if (self.parser.get_http_version() != "1.1" or not self.parser.should_keep_alive()
                or self.expect_100_continue or self.parser.should_upgrade()):
            return False
        if not isinstance(self.app, Answering) or self.pipeline or not (
                self.cycle is None or self.cycle.response_complete):
            return False
        if self._full():
            return False                      # uvicorn's 503, the usual way
        length = None
        for name, value in self.headers:
            if name == b"transfer-encoding":
                return False
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return False
                length = int(value)
        return length is not None and length <= MAX_BODY

    async def _answer(self, front: Any, request: tuple, in_flight: _TraceInFlight) -> None:
        try:
            status, body = await front.answer(request, self.started)
        except Exception:                     # as uvicorn: logged, and a 500
            log.exception("http: the trace failed")
            status, body = 500, INTERNAL
        if not self.transport.is_closing() and not in_flight.disconnected:
            self.transport.write(json_answer(status, body, self.server_state.default_headers,
                                             not in_flight.keep_alive))
            if not in_flight.keep_alive:
                self.transport.close()
        requests.info("http: POST /v1/trace %d in %.1f ms", status,
                      (time.perf_counter() - self.started) * 1000)
        in_flight.response_complete = True
        self.on_response_complete()


class HandedOff(BoundedHttpTools):
    """A connection the C exchange (http_native) handed off, with the bytes it had read
    and not answered: they are the first this protocol reads."""

    def __init__(self, already: bytes, **kwargs: Any):
        super().__init__(**kwargs)
        self.already = already

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        already, self.already = self.already, b""
        if already:
            self.data_received(already)


class Answering:
    """What an app served with BoundedHttpTools offers for the hot path (Front), and
    refused(reason): where it counts what is refused (metrics.Refusals)."""

    refused: Callable[[str], None]

    def switch_request(self, headers: list, body: bytes) -> tuple | None:
        raise NotImplementedError

    async def answer(self, request: tuple, started: float) -> tuple[int, bytes]:
        raise NotImplementedError
