"""HTTP with the switches' `POST /v1/trace` exchanged in C: what `cdrtrace serve --http`
runs (CDRTRACE_HTTP=python: the reference, cdrtrace.service.protocol, alone).

A thread in C (cdrtrace.service._agi in HTTP mode, ext/_http.h) accepts the connections
and reads each request. A trace request as a switch sends it comes here with its body
and Authorization value; when the body and token are as a switch sends them
(Front.switch_request_of), its trace goes to the shared commit, and the committer
thread, once the trace is durable, hands the answer's status and JSON body to C, which
writes it: per trace no parser callbacks, task, future or hop back to the loop.
Anything else (another request, a body or token a switch would not send, a head past
the bound, a connection past the bound) is handed off: uvicorn serves the connection
from then on, the bytes C had read first, with the documented answers. A trace with a
wait, or of a line another shard holds, runs on the loop, as Front.answer runs it.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import Any

from ..errors import CdrTraceError
from ..evidence.outcomes import TraceResult
from . import _agi, native
from .http import json_body, status_of
from .metrics import TraceMetrics
from .native import NativeListener
from .protocol import INTERNAL, KEEP_ALIVE, HandedOff, requests

log = logging.getLogger("cdrtrace.service")
MAX_CONNECTIONS = 512            # kept alive here; those past it are uvicorn's (503 past its own)


class NativeHTTP(NativeListener):
    """The switches' traces of a Front (http.Front) in C; the rest to uvicorn's server."""

    http = True

    def __init__(self, front: Any, server: Any, cores: Iterable[int] = (),
                 metrics: TraceMetrics | None = None):
        super().__init__(cores, metrics)
        self.front = front
        # uvicorn's server, started (serve(sockets=[])): what is handed off is its
        self.protocol = functools.partial(HandedOff, config=server.config,
                                          server_state=server.server_state,
                                          app_state=server.lifespan.state)

    def start(self, sock: socket.socket) -> None:
        """Serve sock (bound and listening) from now on."""
        sock.setblocking(False)
        # C's one timeout: for an idle connection, and for a request's head and body from
        # its first byte (as protocol.REQUEST_TIMEOUT; bytes trickled in do not extend it)
        self.listen(sock, [], MAX_CONNECTIONS, KEEP_ALIVE)

    def event(self, kind: int, conn: int, reason: int, seconds: float, host: str, port: int,
              extra: Any) -> None:
        if kind == _agi.REQUEST:
            self._request(conn, extra)
        elif kind == _agi.DONE:
            result = self.answered.pop(conn, None)
            if not extra:                               # not written by C (respond's log)
                requests.info("http: POST /v1/trace %d in %.1f ms", reason, seconds * 1000)
            if result is not None:
                self.front.observe("http", result.outcome.value, seconds)
        elif kind == _agi.HANDOFF:
            fd, already = extra
            self._hand_off(fd, already)
        elif kind == _agi.CLOSED:
            self.answered.pop(conn, None)
            if reason == _agi.UNANSWERED:
                log.warning("http: %s closed: no answer within %g s", (host, port),
                            native.ANSWER_TIMEOUT)
                self.front.refused("unanswered")
            elif reason == _agi.SLOW:
                log.info("http: %s closed: a request not whole within %g s", (host, port),
                         KEEP_ALIVE)
                self.front.refused("slow")

    def _request(self, conn: int, values: tuple) -> None:
        """A trace request read whole: traced on the shared commit and answered from there
        (_answer), or on the loop; or handed off."""
        body, authorization, forwarded = values[:3]
        try:
            request = self.front.switch_request_of(
                None if authorization is None else authorization.decode("latin-1"), body,
                forwarded is None)
            if request is None:                     # not as a switch sends it: uvicorn
                self.respond(conn, b"", 0)
                return
            line, at, wait, found, forward, feed = request
            if not wait and self.front.router.trace_then(
                    line, at, functools.partial(self._answer, conn), str(found), forward, feed):
                return
        except CdrTraceError as exc:                # the request's own fault: not a line, ...
            self.answer(conn, json_body({"error": str(exc)}), status_of(exc))
            return
        except Exception:                           # noqa: BLE001 - this request, not the others
            log.exception("http: the trace failed")
            self.answer(conn, INTERNAL, 500)
            return
        except BaseException:
            self.answer(conn, INTERNAL, 500)
            raise
        self.spawn(self._trace(conn, request))

    async def _trace(self, conn: int, request: tuple) -> None:
        """A trace that waits for a feed, or is forwarded: on the loop, as Front runs it."""
        status, body = 500, INTERNAL
        try:
            status, body = await self.front.answer(request, time.perf_counter())
        except Exception:                           # noqa: BLE001 - as uvicorn: logged, a 500
            log.exception("http: the trace failed")
        finally:
            self.answer(conn, body, status)

    def _answer(self, conn: int, result: TraceResult | None, error: BaseException | None
                ) -> None:
        """A trace's answer to C, on the committer thread once it is durable."""
        answered = None
        if error is not None and not isinstance(error, CdrTraceError):
            self.answer(conn, INTERNAL, 500)        # a fault: 500, and the committer logs it
            raise error
        try:
            if error is None:
                assert result is not None
                status, body = 200, json_body(result.to_dict())
                answered = result               # logged and counted once done
            else:                                   # refused by the rules
                status, body = status_of(error), json_body({"error": str(error)})
        except Exception:                           # noqa: BLE001 - as uvicorn: logged, a 500
            log.exception("http: the trace's answer failed")
            status, body = 500, INTERNAL
        self.answer(conn, body, status, answered)

    def answer(self, conn: int, body: bytes, status: int, result: TraceResult | None = None
               ) -> None:
        """A request's answer to C, with its log line for C to write once it is sent (and
        the trace answered, if any: see NativeListener.respond)."""
        self.respond(conn, body, status, requests.for_c(f"http: POST /v1/trace {status}"),
                     result)

    def _hand_off(self, fd: int, already: bytes) -> None:
        """uvicorn serves the connection from now on, starting with the bytes read."""
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            raise
        self.spawn(self._serve(sock, already))

    async def _serve(self, sock: socket.socket, already: bytes) -> None:
        assert self.loop is not None
        try:
            await self.loop.connect_accepted_socket(
                functools.partial(self.protocol, already, _loop=self.loop), sock)
        except Exception:                           # noqa: BLE001 - that connection alone
            log.exception("http: a connection could not be handed over")
            sock.close()
