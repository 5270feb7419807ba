"""Asterisk FastAGI: `AGI(agi://HOST:PORT/trace[,AT])` from the *57 dialplan.

The protocol as Asterisk's res_agi speaks it: the channel's `agi_*` variables, one per
line, then a blank line; then one command per line from us, each answered by a line
`200 result=...`. A caller that hangs up sends `HANGUP` (with AGISIGHUP), and commands on
a dead channel are answered `511`; a command Asterisk does not understand is answered
`520`, possibly over several lines ending in `520 End of proper usage.`.

The traced line is `agi_callerid`, the subscriber who dialled *57; `agi_arg_1`, if
given, is the activation time. We set `COT_OUTCOME`, `COT_ANNOUNCEMENT` and
`COT_TRACE_ID`, and the dialplan plays the announcement. FastAGI has no authentication:
only peers in the allowed networks are served.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import CdrTraceError
from ..evidence.outcomes import ANNOUNCEMENTS, Outcome, TraceResult

log = logging.getLogger("cdrtrace.service")
MAX_HEADER_LINES = 128
MAX_LINE = 4096
READ_TIMEOUT = 5.0          # seconds a silent peer is given, per line
DEFAULT_ALLOW = ("127.0.0.0/8", "::1/128")


class Rejected(Exception):
    """A peer that broke the protocol: the connection is closed."""


async def _line(reader: asyncio.StreamReader) -> str:
    try:
        raw = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
    except (TimeoutError, asyncio.LimitOverrunError, ValueError):
        raise Rejected("a silent or oversized peer") from None
    if not raw:
        raise Rejected("the peer hung up")
    if len(raw) > MAX_LINE:
        raise Rejected("a line over 4 KiB")
    return raw.decode("utf-8", "replace").rstrip("\r\n")


async def read_environment(reader: asyncio.StreamReader) -> dict[str, str]:
    """The agi_* variables, up to the blank line that ends them."""
    env: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        line = await _line(reader)
        if line == "":
            if not env:
                raise Rejected("no agi_ variables")
            return env
        name, sep, value = line.partition(":")
        if not sep or not name.startswith("agi_"):
            raise Rejected(f"not an AGI variable line: {line[:60]!r}")
        env[name.strip()] = value.strip()
    raise Rejected("more than 128 variable lines")


async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: str) -> bool:
    """Send one command; True if Asterisk carried it out, False on a dead channel."""
    writer.write(text.encode() + b"\n")
    await writer.drain()
    while True:
        reply = await _line(reader)
        if reply == "HANGUP":                  # AGISIGHUP: the caller hung up; a reply follows
            continue
        if reply.startswith("200"):
            return True
        if reply.startswith("511"):
            return False
        if reply.startswith("520-"):           # multi-line usage text
            while not (await _line(reader)).startswith("520 "):
                pass
            return False
        if reply.startswith("520"):
            return False
        raise Rejected(f"an unexpected reply: {reply[:60]!r}")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FastAGI:
    """The FastAGI listener: one trace per connection."""

    def __init__(self, trace: Callable[[str, str | None], TraceResult],
                 allow: Iterable[str] = DEFAULT_ALLOW, observe: Callable[..., None] | None = None):
        self.trace = trace
        self.allow = [ipaddress.ip_network(n, strict=False) for n in allow]
        self.observe = observe or (lambda *_: None)
        self.active: set[asyncio.Task] = set()

    def allowed(self, peer: Any) -> bool:
        try:
            address = ipaddress.ip_address(peer[0] if isinstance(peer, tuple) else peer)
        except (ValueError, TypeError):
            return False
        return any(address in net for net in self.allow)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        task = asyncio.current_task()
        if task is not None:
            self.active.add(task)
        started = time.perf_counter()
        try:
            if not self.allowed(peer):
                log.warning("agi: refused %s: not in --agi-allow", peer)
                return
            env = await read_environment(reader)
            script = env.get("agi_network_script") or env.get("agi_request", "").rsplit("/", 1)[-1]
            if script.split("?")[0] != "trace":
                await command(reader, writer, 'VERBOSE "cdrtrace serves only agi://.../trace" 1')
                return
            line, at = env.get("agi_callerid", ""), env.get("agi_arg_1") or None
            try:
                result = await asyncio.to_thread(self.trace, line, at)
            except CdrTraceError as exc:            # not a line (anonymous), a bad time
                log.info("agi: no trace for %s: %s", peer, exc)
                result = TraceResult("", "", Outcome.FAILURE, "", None)
            for name, value in (("COT_OUTCOME", result.outcome.value),
                                ("COT_ANNOUNCEMENT", ANNOUNCEMENTS[result.outcome][0]),
                                ("COT_TRACE_ID", result.trace_id)):
                if not await command(reader, writer, f"SET VARIABLE {name} {_quoted(value)}"):
                    break                            # hung up: the trace is recorded anyway
            log.info("agi: trace %s %s in %.1f ms", result.trace_id or "-", result.outcome.value,
                     (time.perf_counter() - started) * 1000)
            self.observe("agi", result.outcome.value, time.perf_counter() - started)
        except Rejected as exc:
            log.info("agi: %s closed: %s", peer, exc)
        except (ConnectionError, OSError) as exc:
            log.info("agi: %s closed: %s", peer, exc)
        finally:
            if task is not None:
                self.active.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass


def dial(host: str, port: int, callerid: str, at: str | None = None,
         timeout: float = 10.0) -> dict[str, str]:
    """Dial *57 into a FastAGI listener as Asterisk's AGI() would (for the demo and for
    checking a deployment): the channel variables it set."""
    import socket

    variables: dict[str, str] = {}
    with socket.create_connection((host, port), timeout=timeout) as sock:
        stream = sock.makefile("rwb")
        head = {"agi_network": "yes", "agi_network_script": "trace",
                "agi_request": f"agi://{host}:{port}/trace", "agi_channel": "PJSIP/demo-00000001",
                "agi_callerid": callerid, "agi_dnid": "*57", "agi_extension": "*57",
                **({"agi_arg_1": at} if at else {})}
        stream.write("".join(f"{k}: {v}\n" for k, v in head.items()).encode() + b"\n")
        stream.flush()
        while True:
            line = stream.readline().decode().strip()
            if not line:
                return variables
            if line.startswith("SET VARIABLE "):
                name, _, value = line[len("SET VARIABLE "):].partition(" ")
                variables[name] = value.strip('"')
            stream.write(b"200 result=1\n")
            stream.flush()
