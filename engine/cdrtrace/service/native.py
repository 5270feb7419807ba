"""What the listeners whose wire exchange runs in C share (cdrtrace.service._agi, one
thread in C each): FastAGI's (agi_native) and HTTP's switch traces (http_native).

The C thread accepts and reads the connections, and posts events (a request, an answer
sent, a connection closed or handed off); the event loop takes them when the thread's
eventfd is readable, a round of them at a time. A request's answer is handed back to C
from whichever thread has it: the committer's, once the trace is durable (no task,
future or hop back to the loop per trace), or the loop's. An answer given its trace's
outcome is counted in C once done (the metrics read it: add_source), and one whose log
line C writes too posts nothing more: no event per trace once it is answered.
"""
from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine, Iterable
from typing import Any

from ..evidence.outcomes import TraceResult
from . import _agi
from .metrics import BUCKETS, OUTCOME_INDEX, Counted, TraceMetrics

# seconds a request read by C may wait for its answer: past it (a fault of the code, a
# trace's wait and a forward to another shard take at most 15 s) the connection is closed
ANSWER_TIMEOUT = 60.0


class NativeListener:
    """A listener over a C exchange: its socket, its events, its answers, its stop."""

    http = False                       # the exchange's protocol: HTTP's, or FastAGI's

    def __init__(self, cores: Iterable[int] = (), metrics: TraceMetrics | None = None):
        self.cores = sorted(cores)          # where the C thread may run (empty: as the loop)
        self.metrics = metrics              # where /metrics reads what C counted
        self.server: Any = None
        self.sock: socket.socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        # connection -> its trace's result, for one that C does not log (DONE says when)
        self.answered: dict[int, TraceResult | None] = {}
        self.tasks: set[asyncio.Task] = set()
        self.closing = threading.Lock()     # the committer's respond, against close()

    def listen(self, sock: socket.socket, networks: list, max_connections: int,
               timeout: float) -> None:
        """Serve sock (bound, listening, non-blocking; closed by close()) from now on."""
        self.loop = asyncio.get_running_loop()
        try:
            self.server = _agi.Server(sock.fileno(), networks, max_connections, timeout,
                                      ANSWER_TIMEOUT, self.cores, self.http, BUCKETS)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.loop.add_reader(self.server.wakeup_fd, self._events)
        if self.metrics is not None:
            self.metrics.add_source("http" if self.http else "agi", self._counted)

    def _counted(self) -> Counted | None:
        """What C has counted (while it runs)."""
        with self.closing:
            return self.server.metrics() if self.server is not None else None

    def _events(self) -> None:
        for event in self.server.take():
            self.event(*event)

    def event(self, kind: int, conn: int, reason: int, seconds: float, host: str, port: int,
              extra: Any) -> None:
        raise NotImplementedError

    def respond(self, conn: int, answer: bytes, status: int = 0,
                log: tuple[bytes, int] | None = None, result: TraceResult | None = None
                ) -> None:
        """An answer to C, from any thread; log: its log line and where to write it
        (RequestLog.for_c), or None (see _agi.Server.respond). result: the trace answered,
        counted by C once done if C writes its log line; else kept for the DONE event."""
        line, fd = log or (None, -1)
        outcome = -1
        if result is not None:
            if line is None:
                self.answered[conn] = result
            else:
                outcome = OUTCOME_INDEX[result.outcome]
        with self.closing:
            if self.server is not None:
                self.server.respond(conn, answer, status, line, fd, outcome)

    def spawn(self, work: Coroutine) -> None:
        """Run work on the loop, kept until done (drain waits for it)."""
        assert self.loop is not None
        task = self.loop.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

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
        """Stop the C thread (closing any connection still open), after taking what it
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
