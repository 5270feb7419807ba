"""FastAGI with its wire exchange in C: the listener `cdrtrace serve --agi` runs.

The protocol is cdrtrace.service.agi's, which stays as its pure-Python reference (and is
what runs with CDRTRACE_AGI=python): the same variables read, the same commands sent, the
same replies understood, the same refusals, limits and timeout, the same log lines. Here
a thread in C (cdrtrace.service._agi, ext/_agi.h) accepts the connections, reads each
agi_* block and, once a trace is answered, sends its three SET VARIABLE commands each
after Asterisk's reply to the one before; Python only traces. The event loop hands each
request to the shared commit (Router.trace_then), and the committer thread, once the
commit is durable, hands the commands to C: per trace no task, future or hop back to the
loop, and not the dozen protocol callbacks and writes of the Python listener
(BENCHMARKS.md, "The trace service"). A line another shard holds is traced on the loop,
which forwards it.
"""
from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Iterable
from typing import Any

from ..evidence.outcomes import TraceResult
from . import _agi, agi, native
from .metrics import TraceMetrics
from .native import NativeListener

log = logging.getLogger("cdrtrace.service")

# why the C side closed a connection (ext/_agi.h, enum agi_reason), as agi.Rejected says it
_REASONS = {1: "a line over 4 KiB", 2: "more than 128 variable lines",
            3: "not an AGI variable line", 4: "no agi_ variables", 5: "a silent peer",
            6: "the peer hung up", 7: "an unexpected reply", _agi.SLOW: "a slow peer",
            _agi.TWICE: "a variable sent twice"}
_NOT_ALLOWED, _FULL = 8, 9


class NativeFastAGI(NativeListener):
    """The listener of an agi.FastAGI (its trace, allowed networks and metrics), with the
    exchange in C."""

    def __init__(self, listener: agi.FastAGI, cores: Iterable[int] = (),
                 metrics: TraceMetrics | None = None):
        super().__init__(cores, metrics)
        self.listener = listener

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (agi.listening_socket): the port bound."""
        sock = agi.listening_socket(host, port)
        networks = [(socket.AF_INET if net.version == 4 else socket.AF_INET6,
                     net.network_address.packed, net.prefixlen) for net in self.listener.allow]
        self.listen(sock, networks, agi.MAX_CONNECTIONS, agi.READ_TIMEOUT)
        return sock.getsockname()[1]

    def event(self, kind: int, conn: int, reason: int, seconds: float, host: str, port: int,
              extra: Any) -> None:
        address = (host, port)
        if kind == _agi.REQUEST:
            self._request(conn, address, extra)
        elif kind == _agi.DONE:
            result = self.answered.pop(conn, None)
            if result is not None:
                self.listener.done(result, seconds, logged=bool(extra))
        elif kind == _agi.CLOSED:
            self.answered.pop(conn, None)
            if reason == _agi.UNANSWERED:
                log.warning("agi: %s closed: no answer within %g s", address,
                            native.ANSWER_TIMEOUT)
                self.listener.refused("unanswered")
                return
            why = _REASONS.get(reason, f"reason {reason}")
            if (counted := agi.refusal(why)) is not None:
                self.listener.refused(counted)
            if extra is not None:       # the offending line, as agi.Rejected shows it
                why += ": " + repr(extra.decode("utf-8", "replace").rstrip("\r")[:60])
            log.info("agi: %s closed: %s", address, why)
        elif kind == _agi.REFUSED:
            if reason == _NOT_ALLOWED:
                log.warning("agi: refused %s: not in --agi-allow", address)
                self.listener.refused("not_allowed")
            else:
                log.warning("agi: refused %s: %d connections already", address,
                            agi.MAX_CONNECTIONS)
                self.listener.refused("full")

    def _request(self, conn: int, address: tuple, values: tuple) -> None:
        """A connection's agi_* block has come: its trace handed to the shared commit,
        answered from there (_answer); or traced on the loop (another shard's line)."""
        try:
            callerid, arg_1, script, request, uniqueid, feed = (
                None if v is None else v.decode("utf-8", "replace").strip() for v in values)
            arg_1 = agi.activation(arg_1, uniqueid)
            if not agi.serves(script, request):
                self.listener.refused("not_served")
                self.respond(conn, agi.NOT_SERVED.encode() + b"\n")
                return
            if not agi.keyed(script, request, self.listener.keys):
                log.warning("agi: refused %s: its key is missing or wrong", address)
                self.listener.refused("wrong_key")
                self.respond(conn, agi.NOT_KEYED.encode() + b"\n")
                return
            if self.listener.traced_then(callerid, arg_1, address,
                                         functools.partial(self._answer, conn), feed):
                return
        except Exception:                   # noqa: BLE001 - this connection, not the batch's others
            log.exception("agi: the trace for %s failed", address)
            self.respond(conn, b"")
            return
        except BaseException:
            self.respond(conn, b"")
            raise
        self.spawn(self._trace(conn, address, callerid, arg_1, feed))

    async def _trace(self, conn: int, address: tuple, callerid: str | None,
                     arg_1: str | None, feed: str | None) -> None:
        """Trace on the loop, then hand the commands to C."""
        result = None                       # none: the connection is closed
        try:
            result = await self.listener.traced(callerid, arg_1, address, feed)
        finally:
            self._answer(conn, result)

    def _answer(self, conn: int, result: TraceResult | None) -> None:
        """A trace's commands to C (on the committer thread, or the loop); None: the
        connection is closed."""
        answer, log, answered = b"", None, None
        try:
            if result is not None:
                answered = result               # logged and counted once done
                answer = agi.answer(result)
                log = self.listener.log_line(result)    # written by C, once done
        finally:
            self.respond(conn, answer, 0, log, answered)
