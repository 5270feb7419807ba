"""The service's line per request, written as the logging module would write it, for less.

`cdrtrace serve` logs one info line per request (never a caller's number). Through the
logging module each line builds a record, formats it through the formatter's style and
takes the handler's lock: a tenth of a trace's CPU in the service (BENCHMARKS.md). When
the logging is as `serve` set it up (the root's one stream handler, with serve's FORMAT,
no filters anywhere on the way, info enabled), the hot paths' lines are written here:
the same text, to the same stream, under the same lock. Set up any other way (an
operator's handlers, a test's capture), every line goes through the logging module.
Inside together(), the direct lines are kept and written at its end in one write (the C
FastAGI listener's answered traces come in batches).
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class RequestLog:
    """logger.info(message, *args) for one logger, written directly where that is the same."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.checked: tuple = ()        # the root's handler and formatter found as serve's
        self.second = -1
        self.stamp = ""
        self.kept: _Kept | None = None          # inside together(): the lines to write

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
        kept = self.kept
        if kept is not None and kept.handler in (None, handler):
            kept.lines.append(line)
            kept.handler = handler
            return
        _write(handler, line)

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """The direct lines of the block, each stamped when it was logged, written in one
        write at its end."""
        kept = self.kept = _Kept()
        try:
            yield
        finally:
            self.kept = None
            if kept.lines and kept.handler is not None:
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


class _Kept:
    __slots__ = ("lines", "handler")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.handler: logging.Handler | None = None


def _write(handler: logging.Handler, text: str) -> None:
    stream = handler.stream                    # type: ignore[attr-defined]
    with handler.lock:                         # type: ignore[union-attr]
        stream.write(text)
        stream.flush()
