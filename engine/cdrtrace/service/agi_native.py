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

import asyncio
import functools
import logging
import socket
import threading
from collections.abc import Iterable
from typing import Any

from ..evidence.outcomes import TraceResult
from . import _agi, agi

log = logging.getLogger("cdrtrace.service")

# why the C side closed a connection (ext/_agi.h, enum agi_reason), as agi.Rejected says it
_REASONS = {1: "a line over 4 KiB", 2: "more than 128 variable lines",
            3: "not an AGI variable line", 4: "no agi_ variables", 5: "a silent peer",
            6: "the peer hung up", 7: "an unexpected reply"}
_NOT_ALLOWED, _FULL = 8, 9


class NativeFastAGI:
    """The listener of an agi.FastAGI (its trace, allowed networks and metrics), with the
    exchange in C."""

    def __init__(self, listener: agi.FastAGI, cores: Iterable[int] = ()):
        self.listener = listener
        self.cores = sorted(cores)          # where the C thread may run (empty: as the loop)
        self.server: Any = None
        self.sock: socket.socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.answered: dict[int, TraceResult | None] = {}   # connection -> its trace's result
        self.tasks: set[asyncio.Task] = set()
        self.closing = threading.Lock()     # the committer's respond, against close()

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (SO_REUSEPORT: --workers share it): the port bound."""
        self.loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                             socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
            networks = [(socket.AF_INET if net.version == 4 else socket.AF_INET6,
                         net.network_address.packed, net.prefixlen) for net in self.listener.allow]
            self.server = _agi.Server(sock.fileno(), networks, agi.MAX_CONNECTIONS,
                                      agi.READ_TIMEOUT, self.cores)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.loop.add_reader(self.server.wakeup_fd, self._events)
        return sock.getsockname()[1]

    def _events(self) -> None:
        for kind, conn, reason, seconds, host, port, extra in self.server.take():
            address = (host, port)
            if kind == _agi.REQUEST:
                self._request(conn, address, extra)
            elif kind == _agi.DONE:
                result = self.answered.pop(conn, None)
                if result is not None:
                    self.listener.done(result, seconds)
            elif kind == _agi.CLOSED:
                self.answered.pop(conn, None)
                why = _REASONS.get(reason, f"reason {reason}")
                if extra is not None:       # the offending line, as agi.Rejected shows it
                    why += ": " + repr(extra.decode("utf-8", "replace").rstrip("\r")[:60])
                log.info("agi: %s closed: %s", address, why)
            elif kind == _agi.REFUSED:
                if reason == _NOT_ALLOWED:
                    log.warning("agi: refused %s: not in --agi-allow", address)
                else:
                    log.warning("agi: refused %s: %d connections already", address,
                                agi.MAX_CONNECTIONS)

    def _request(self, conn: int, address: tuple, values: tuple) -> None:
        """A connection's agi_* block has come: its trace handed to the shared commit,
        answered from there (_answer); or traced on the loop (another shard's line)."""
        try:
            callerid, arg_1, script, request = (
                None if v is None else v.decode("utf-8", "replace").strip() for v in values)
            if not agi.serves(script, request):
                self._respond(conn, agi.NOT_SERVED.encode() + b"\n")
                return
            if self.listener.traced_then(callerid, arg_1, address,
                                         functools.partial(self._answer, conn)):
                return
        except Exception:                   # noqa: BLE001 - this connection, not the batch's others
            log.exception("agi: the trace for %s failed", address)
            self._respond(conn, b"")
            return
        except BaseException:
            self._respond(conn, b"")
            raise
        assert self.loop is not None
        task = self.loop.create_task(self._trace(conn, address, callerid, arg_1))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _trace(self, conn: int, address: tuple, callerid: str | None,
                     arg_1: str | None) -> None:
        """Trace on the loop, then hand the commands to C."""
        result = None                       # none: the connection is closed
        try:
            result = await self.listener.traced(callerid, arg_1, address)
        finally:
            self._answer(conn, result)

    def _answer(self, conn: int, result: TraceResult | None) -> None:
        """A trace's commands to C (on the committer thread, or the loop); None: the
        connection is closed."""
        answer = b""
        try:
            if result is not None:
                self.answered[conn] = result
                answer = "".join(c + "\n" for c in agi.commands(result)).encode()
        finally:
            self._respond(conn, answer)

    def _respond(self, conn: int, answer: bytes) -> None:
        with self.closing:
            if self.server is not None:
                self.server.respond(conn, answer)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.stop_accepting()

    async def drain(self, timeout: float) -> None:
        """Until every connection open is served (or timeout seconds)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.server is not None and (self.tasks or self.server.open_connections()) \
                and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    def close(self) -> None:
        """Stop the C thread (closing any connection still open), after logging what it
        posted last."""
        if self.server is not None:
            if self.loop is not None:
                self.loop.remove_reader(self.server.wakeup_fd)
            self.server.stop_accepting()
            self._events()
            with self.closing:
                self.server.close()
                self.server = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
