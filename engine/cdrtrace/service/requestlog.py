"""The service's line per request, written as the logging module would write it, for less.

`cdrtrace serve` logs one info line per request (never a caller's number). Through the
logging module each line builds a record, formats it through the formatter's style and
takes the handler's lock: a tenth of a trace's CPU in the service (BENCHMARKS.md). When
the logging is as `serve` set it up (the root's one stream handler, with serve's FORMAT,
no filters anywhere on the way, info enabled), the hot paths' lines are written here:
the same text, to the same stream, under the same lock. Set up any other way (an
operator's handlers, a test's capture), every line goes through the logging module.
On an event loop, the direct lines of one round of the loop are written together when it
ends, in one write: a commit's answered traces come in one round (a write a trace was
the service's largest system call after the answer's own). A listener whose exchange is
in C has its requests' lines written by its C thread instead (for_c), when the stream
is a file's: the same text again, its time read as asctime reads it.
"""
from __future__ import annotations

import asyncio
import logging
import time

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class RequestLog:
    """logger.info(message, *args) for one logger, written directly where that is the same."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.checked: tuple = ()        # the root's handler and formatter found as serve's
        self.second = -1
        self.stamp = ""
        self.kept: _Kept | None = None          # this round's lines, on a loop
        _LOGS.append(self)

    def info(self, message: str, *args: object) -> None:
        handler = self._direct()
        if handler is None:
            self.logger.info(message, *args)
            return
        now = time.time()
        second = int(now)
        if second != self.second:              # logging's default asctime, in local time
            self.second, self.stamp = second, time.strftime("%Y-%m-%d %H:%M:%S",
                                                            time.localtime(second))
        line = (f"{self.stamp},{int((now - second) * 1000):03d} {self.logger.name} INFO "
                f"{message % args if args else message}\n")
        loop = asyncio._get_running_loop()     # None off a loop (asyncio.events.__all__ has it)
        if loop is None:
            _write(handler, line)
            return
        kept = self.kept
        if kept is None or kept.loop is not loop or kept.handler is not handler:
            self.flush()
            kept = self.kept = _Kept(loop, handler)
            loop.call_soon(self.flush)         # once this round's callbacks have run
        kept.lines.append(line)

    def for_c(self, message: str) -> tuple[bytes, int] | None:
        """The line `info(message)` would write, from after its time, and the descriptor
        to write it to, for a C exchange to write (ext/_agi.h, agi_log), which adds the
        time and " in D ms"; None when it cannot be written that way (logging not as
        serve sets it up, a stream that is not a file's): then info() writes it."""
        handler = self._direct()
        if handler is None:
            return None
        try:
            fd = handler.stream.fileno()       # type: ignore[attr-defined]
        except (AttributeError, OSError, ValueError):
            return None
        return f" {self.logger.name} INFO {message}".encode(), fd

    def flush(self) -> None:
        """Write the lines kept."""
        kept, self.kept = self.kept, None
        if kept is not None and kept.lines:
            _write(kept.handler, "".join(kept.lines))

    def _direct(self) -> logging.Handler | None:
        """The root's stream handler when a line written to it directly reads exactly as
        the logging module would write it; None otherwise."""
        root = logging.root
        if len(root.handlers) != 1 or not self.logger.isEnabledFor(logging.INFO):
            return None
        handler = root.handlers[0]
        formatter = handler.formatter
        if self.checked != (handler, formatter):
            if (type(handler) is not logging.StreamHandler or formatter is None
                    or type(formatter) is not logging.Formatter or formatter._fmt != FORMAT
                    or formatter.datefmt is not None
                    or formatter.default_time_format != "%Y-%m-%d %H:%M:%S"
                    or formatter.default_msec_format != "%s,%03d"
                    or formatter.converter is not time.localtime):
                return None
            self.checked = (handler, formatter)
        if handler.filters or handler.level > logging.INFO or root.filters:
            return None
        logger: logging.Logger | None = self.logger
        while logger is not None and logger is not root:   # nothing else on the way up
            if logger.handlers or logger.filters or not logger.propagate:
                return None
            logger = logger.parent
        return handler


_LOGS: list[RequestLog] = []


def flush() -> None:
    """Write every request log's kept lines (serve, as it stops)."""
    for log in _LOGS:
        log.flush()


class _Kept:
    __slots__ = ("loop", "handler", "lines")

    def __init__(self, loop: asyncio.AbstractEventLoop, handler: logging.Handler):
        self.loop, self.handler = loop, handler
        self.lines: list[str] = []


def _write(handler: logging.Handler, text: str) -> None:
    stream = handler.stream                    # type: ignore[attr-defined]
    with handler.lock:                         # type: ignore[union-attr]
        stream.write(text)
        stream.flush()
