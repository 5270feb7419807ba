"""Asterisk FastAGI: `AGI(agi://HOST:PORT/trace[,AT])` from the *57 dialplan.

The protocol as Asterisk's res_agi speaks it: the channel's `agi_*` variables, one per
line, then a blank line; then one command per line from us, each answered by a line
`200 result=...`. A caller that hangs up sends `HANGUP` (with AGISIGHUP), and commands on
a dead channel are answered `511`; a command Asterisk does not understand is answered
`520`, possibly over several lines ending in `520 End of proper usage.`.

The traced line is `agi_callerid`, the subscriber who dialled *57; `agi_arg_1`, if
given, is the activation time; else the time Asterisk created the *57's channel, which
`agi_uniqueid` begins with (activation()). `agi_arg_2`, if given, names the feed of the
switch the *57 was dialled on: an extension is traced among that feed's calls. We set
`COT_OUTCOME`, `COT_ANNOUNCEMENT` and `COT_TRACE_ID`, and the dialplan plays the
announcement. FastAGI has no authentication: only peers in the allowed networks are
served.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
import socket
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from ..errors import CdrTraceError
from ..evidence.outcomes import ANNOUNCEMENTS, Outcome, TraceResult
from ..store.lookup import STAMPED_AHEAD_US
from .requestlog import RequestLog

log = logging.getLogger("cdrtrace.service")
requests = RequestLog(log)       # the line per trace
MAX_HEADER_LINES = 128
MAX_LINE = 4096
READ_TIMEOUT = 5.0          # seconds a peer has for its whole block, and for each whole reply
MAX_CONNECTIONS = 1024      # FastAGI connections at once; more are closed at once
DEFAULT_ALLOW = ("127.0.0.0/8", "::1/128")
KEPT = ("agi_callerid", "agi_arg_1", "agi_network_script", "agi_request",   # what a trace reads
        "agi_uniqueid", "agi_arg_2")
# Asterisk's channel id: [SYSTEMNAME-]EPOCH.SEQUENCE, the epoch second it made the channel
UNIQUEID = re.compile(r"(?:^|-)([0-9]{9,11})\.[0-9]{1,12}$")
UNIQUEID_BEHIND = 86400      # seconds a *57's channel may have been up (a day: no older)


def activation(arg_1: str | None, uniqueid: str | None) -> str | None:
    """A *57's activation time: the dialplan's agi_arg_1 when it passes one; else the
    second Asterisk created the *57's channel, from agi_uniqueid, on the switch's clock
    (the one that stamped its CDRs: a call that rang the line just before the *57 is
    before it, whatever the service's clock says), as ISO-8601 UTC. None (the service's
    clock) when agi_uniqueid is not such an id (an originate may name a channel any
    text), or names a time more than a day behind the service's clock or more than the
    stamped-ahead margin ahead of it."""
    if arg_1:
        return arg_1
    found = UNIQUEID.search(uniqueid or "")
    if found is None:
        return None
    epoch, now = int(found[1]), time.time()
    if not now - UNIQUEID_BEHIND <= epoch <= now + STAMPED_AHEAD_US / 1e6:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def networks(allow: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """--agi-allow's networks (CIDR; an address alone is its own network); CdrTraceError,
    naming the first that is not one."""
    found = []
    for text in allow:
        try:
            found.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise CdrTraceError(f"--agi-allow {text!r} is not a network (a CIDR such as "
                                "10.20.0.0/16, or an address)") from None
    return found


def listening_socket(host: str, port: int) -> socket.socket:
    """The FastAGI listener's socket, bound and listening, non-blocking: SO_REUSEPORT
    (--workers share it), no Nagle wait (each command goes at once; the connections
    accepted inherit it). An IPv6 host listens on both stacks whatever the system's
    default: on [::], IPv4 peers come as ::ffff:a.b.c.d, and --agi-allow matches them by
    their IPv4 address (FastAGI.allowed, and its C twin)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Rejected(Exception):
    """A peer that broke the protocol: the connection is closed."""


class Peer(asyncio.Protocol):
    """One FastAGI connection: its lines, awaited one at a time. A protocol with a
    future per wait and one timer per connection, not a StreamReader and wait_for: the
    service's CPU per trace is what bounds its rate."""

    def __init__(self, listener: FastAGI):
        self.listener = listener
        self.buffer = b""
        self.lines: deque[bytes] = deque()
        self.waiter: asyncio.Future | None = None
        self.ended: str | None = None          # why no more lines will come
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        # what is awaited (the variable block, a command's reply) has READ_TIMEOUT seconds
        # from the connection or the command: bytes trickled in do not extend it
        self.waiting_since = self.loop.time()
        self.heard = False                     # bytes came since: slow, not silent
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # uvloop's is not a subclass
        self.listener.start(self)

    def data_received(self, data: bytes) -> None:
        if self.ended is not None:
            return
        self.heard = True
        if b"\n" in data:
            *complete, self.buffer = (self.buffer + data).split(b"\n")
            self.lines.extend(complete)
        else:
            self.buffer += data
        if len(self.buffer) > MAX_LINE:
            self._end("a line over 4 KiB")
        elif len(self.lines) > MAX_HEADER_LINES + 1:
            self._end("more than 128 variable lines")
        self._wake()

    def eof_received(self) -> bool:
        self._end("the peer hung up")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end("the peer hung up")
        if self.timer is not None:
            self.timer.cancel()

    def _end(self, why: str) -> None:
        if self.ended is None:
            self.ended = why
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _expired(self) -> None:
        """The connection's one timer: a wait for what has not all come READ_TIMEOUT
        seconds after the wait began ends it (a silent peer if nothing came, else a slow
        one); otherwise it is set again for when that could next be so."""
        self.timer = None
        if self.ended is not None:
            return
        now = self.loop.time()
        if self.waiter is not None and now - self.waiting_since >= READ_TIMEOUT:
            self._end("a slow peer" if self.heard else "a silent peer")
            return
        start = self.waiting_since if self.waiter is not None else now
        self.timer = self.loop.call_at(start + READ_TIMEOUT, self._expired)

    async def line(self) -> str:
        return (await self.raw_line()).decode("utf-8", "replace").rstrip("\r")

    async def raw_line(self) -> bytes:
        """The next line as it came (without its newline), once it has come (woken by
        each piece of it, until it is whole)."""
        while not self.lines and self.ended is None:
            self.waiter = self.loop.create_future()
            if self.timer is None:
                self.timer = self.loop.call_at(self.waiting_since + READ_TIMEOUT, self._expired)
            try:
                await self.waiter
            finally:
                self.waiter = None
        if self.ended is not None and (not self.lines or self.ended != "the peer hung up"):
            raise Rejected(self.ended)
        if len(raw := self.lines.popleft()) > MAX_LINE:
            raise Rejected("a line over 4 KiB")
        return raw

    def write(self, text: str) -> None:
        """Send a command: its reply is awaited from now."""
        if self.transport is None or self.transport.is_closing():
            raise Rejected("the peer hung up")
        self.waiting_since, self.heard = self.loop.time(), False
        self.transport.write(text.encode() + b"\n")


async def read_environment(peer: Peer) -> dict[str, str]:
    """The agi_* variables a trace reads (KEPT), up to the blank line that ends the block:
    every line is checked, none other is kept (a connection holds 16 KiB of them at most,
    not 128 lines of 4 KiB, as in the C listener). Asterisk writes each variable once,
    with its value as it is: one a trace reads sent twice means a value (a caller's name
    or number) held a line break, and the line after it could pose as the line to trace
    or the activation time; the block is refused."""
    env: dict[str, str] = {}
    variables = 0
    for _ in range(MAX_HEADER_LINES):
        raw = peer.lines.popleft() if peer.lines and len(peer.lines[0]) <= MAX_LINE \
            else await peer.raw_line()         # those already here without a wait
        if not raw.rstrip(b"\r"):              # blank, but for CRs (as the C listener)
            if not variables:
                raise Rejected("no agi_ variables")
            return env
        line = raw.decode("utf-8", "replace")
        name, sep, value = line.partition(":")
        if not sep or not name.startswith("agi_"):
            raise Rejected(f"not an AGI variable line: {line.rstrip(chr(13))[:60]!r}")
        variables += 1
        if (name := name.strip()) in KEPT:
            if name in env:
                raise Rejected(f"a variable sent twice: {name!r}")
            env[name] = value.strip()
    raise Rejected("more than 128 variable lines")


async def command(peer: Peer, text: str) -> bool:
    """Send one command; True if Asterisk carried it out, False on a dead channel."""
    peer.write(text)
    while True:
        reply = await peer.line()
        if reply == "HANGUP":                  # AGISIGHUP: the caller hung up; a reply follows
            continue
        if reply.startswith("200"):
            return True
        if reply.startswith("511"):
            return False
        if reply.startswith("520-"):           # multi-line usage text
            while not (await peer.line()).startswith("520 "):
                pass
            return False
        if reply.startswith("520"):
            return False
        raise Rejected(f"an unexpected reply: {reply[:60]!r}")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


NOT_SERVED = 'VERBOSE "cdrtrace serves only agi://.../trace" 1'
NOT_KEYED = 'VERBOSE "cdrtrace: the key of agi://.../trace?key=KEY is missing or wrong" 1'


def _script(network_script: str | None, request: str | None) -> str:
    """The request's script and query: agi_network_script, or the last part of agi_request."""
    return network_script or (request or "").rsplit("/", 1)[-1]


def serves(network_script: str | None, request: str | None) -> bool:
    """Is this AGI request the trace?"""
    return _script(network_script, request).split("?")[0] == "trace"


def keyed(network_script: str | None, request: str | None, keys: tuple[str, ...]) -> bool:
    """Does the request's URL name one of the keys (`trace?key=KEY`, --agi-key-file)?
    Any does when there is none. Each key is compared, whichever matches."""
    if not keys:
        return True
    query = _script(network_script, request).partition("?")[2]
    given = urllib.parse.parse_qs(query).get("key", [""])
    matches = [hmac.compare_digest(given[-1].encode(), key.encode()) for key in keys]
    return len(given) == 1 and any(matches)


def commands(result: TraceResult) -> list[str]:
    """The SET VARIABLE commands that answer a trace, in the order they are sent."""
    return [*_FIXED[result.outcome], _command("COT_TRACE_ID", result.trace_id)]


def _command(name: str, value: str) -> str:
    return f"SET VARIABLE {name} {_quoted(value)}"


# each outcome's first two commands: the same for every trace of it
_FIXED = {outcome: (_command("COT_OUTCOME", outcome.value),
                    _command("COT_ANNOUNCEMENT", ANNOUNCEMENTS[outcome][0])) for outcome in Outcome}
_FIXED_LINES = {outcome: "".join(c + "\n" for c in fixed) for outcome, fixed in _FIXED.items()}


def answer(result: TraceResult) -> bytes:
    """commands(result) as a C exchange sends them, each ended by a newline: only the
    trace id differs between two traces of one outcome (a quarter of the cost of building
    the three commands, on the committer's thread)."""
    return (_FIXED_LINES[result.outcome] + _command("COT_TRACE_ID", result.trace_id)
            + "\n").encode()


def refusal(why: str) -> str | None:
    """The reason (metrics.Refusals) a connection closed for why (Rejected's words) is
    counted under; None for a peer that hung up, which is not refused."""
    if why == "the peer hung up":
        return None
    return {"a silent peer": "silent", "a slow peer": "slow"}.get(why, "malformed")


class FastAGI:
    """The FastAGI listener: one trace per connection. keys: the shared keys one of which
    each request's URL must name, or none (--agi-key-file; SIGHUP sets them anew).
    observe(via, outcome, seconds) counts a trace answered, refused(reason) a connection
    refused (metrics.Refusals)."""

    def __init__(self, trace: Callable[[str, str | None, str | None], Awaitable[TraceResult]],
                 allow: Iterable[str] = DEFAULT_ALLOW, observe: Callable[..., None] | None = None,
                 submit: Callable[..., bool] | None = None, keys: tuple[str, ...] = (),
                 refused: Callable[[str], None] | None = None):
        self.trace = trace
        self.keys = keys
        self.submit = submit        # trace answered on the commit's thread (Router.trace_then)
        self.allow = networks(allow)
        self.observe = observe or (lambda *_: None)
        self.refused = refused or (lambda _: None)
        self.active: set[asyncio.Task] = set()
        self.allowed_peers: dict[str, bool] = {}     # address -> allowed, remembered

    def allowed(self, peer: Any) -> bool:
        host = peer[0] if isinstance(peer, tuple) else peer
        if (known := self.allowed_peers.get(host)) is not None:
            return known
        try:
            address = ipaddress.ip_address(host)
        except (ValueError, TypeError):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped     # an IPv4 peer of a dual-stack listener
        verdict = any(address in net for net in self.allow)
        if len(self.allowed_peers) < 4096:
            self.allowed_peers[host] = verdict
        return verdict

    def protocol(self) -> Peer:
        """The protocol factory for loop.create_server."""
        return Peer(self)

    def start(self, peer: Peer) -> None:
        """A connection arrived: serve it in its own task, if it may be served."""
        assert peer.transport is not None
        address = peer.transport.get_extra_info("peername")
        if not self.allowed(address):
            log.warning("agi: refused %s: not in --agi-allow", address)
            self.refused("not_allowed")
            peer.transport.close()
        elif len(self.active) >= MAX_CONNECTIONS:
            log.warning("agi: refused %s: %d connections already", address, MAX_CONNECTIONS)
            self.refused("full")
            peer.transport.close()
        else:
            task = asyncio.get_running_loop().create_task(self.handle(peer, address))
            self.active.add(task)
            task.add_done_callback(self.active.discard)

    async def traced(self, callerid: str | None, arg_1: str | None, address: Any,
                     feed: str | None = None) -> TraceResult:
        """The trace of agi_callerid at agi_arg_1 (now, without one), among the calls of
        agi_arg_2's feed where it names one; a failure, for the switch to announce, when
        they are not a line, a time or a feed."""
        try:
            return await self.trace(callerid or "", arg_1 or None, feed or None)
        except CdrTraceError as exc:            # not a line (anonymous), a bad time
            return self.failed(exc, address)

    def traced_then(self, callerid: str | None, arg_1: str | None, address: Any,
                    then: Callable[[TraceResult | None], None], feed: str | None = None) -> bool:
        """traced() without the event loop: then(result) is called on the shared commit's
        thread once the trace is durable (at once, for a request that is not a line or a
        time); then(None) if the trace raised an error that is not the request's (the
        error is then raised to the committer, which logs it). False, with nothing done,
        when the trace needs the loop (a line another shard holds): traced() does it."""
        if self.submit is None:
            return False

        def settled(result: TraceResult | None, error: BaseException | None) -> None:
            if error is None:
                then(result)
            elif isinstance(error, CdrTraceError):
                then(self.failed(error, address))
            else:
                then(None)
                raise error
        try:
            return self.submit(callerid or "", arg_1 or None, settled, feed=feed or None)
        except CdrTraceError as exc:
            then(self.failed(exc, address))
            return True

    @staticmethod
    def failed(exc: CdrTraceError, address: Any) -> TraceResult:
        """No trace (not a line, a bad time, refused by the rules): a failure the switch
        announces."""
        log.info("agi: no trace for %s: %s", address, exc)
        return TraceResult("", "", Outcome.FAILURE, "", None)

    def done(self, result: TraceResult, seconds: float, logged: bool = False) -> None:
        """A trace answered to the switch: its line of log (unless written already: see
        log_line) and its metrics."""
        if not logged:
            requests.info("agi: trace %s %s in %.1f ms", result.trace_id or "-",
                          result.outcome.value, seconds * 1000)
        self.observe("agi", result.outcome.value, seconds)

    @staticmethod
    def log_line(result: TraceResult) -> tuple[bytes, int] | None:
        """done()'s line for a C exchange to write (RequestLog.for_c), or None."""
        return requests.for_c(f"agi: trace {result.trace_id or '-'} {result.outcome.value}")

    async def handle(self, peer: Peer, address: Any) -> None:
        started = time.perf_counter()
        try:
            env = await read_environment(peer)
            if not serves(env.get("agi_network_script"), env.get("agi_request")):
                self.refused("not_served")
                await command(peer, NOT_SERVED)
                return
            if not keyed(env.get("agi_network_script"), env.get("agi_request"), self.keys):
                log.warning("agi: refused %s: its key is missing or wrong", address)
                self.refused("wrong_key")
                await command(peer, NOT_KEYED)
                return
            result = await self.traced(env.get("agi_callerid"),
                                       activation(env.get("agi_arg_1"), env.get("agi_uniqueid")),
                                       address, env.get("agi_arg_2"))
            for text in commands(result):
                if not await command(peer, text):
                    break                            # hung up: the trace is recorded anyway
            took = time.perf_counter() - started
            self.done(result, took)
        except Rejected as exc:
            log.info("agi: %s closed: %s", address, exc)
            if (reason := refusal(str(exc))) is not None:
                self.refused(reason)
        finally:
            assert peer.transport is not None
            peer.transport.close()


def dial(host: str, port: int, callerid: str, at: str | None = None,
         timeout: float = 10.0, feed: str | None = None) -> dict[str, str]:
    """Dial *57 into a FastAGI listener as Asterisk's AGI() would (for the demo and for
    checking a deployment): the channel variables it set."""
    import socket

    variables: dict[str, str] = {}
    with socket.create_connection((host, port), timeout=timeout) as sock:
        stream = sock.makefile("rwb")
        head = {"agi_network": "yes", "agi_network_script": "trace",
                "agi_request": f"agi://{host}:{port}/trace", "agi_channel": "PJSIP/demo-00000001",
                "agi_callerid": callerid, "agi_dnid": "*57", "agi_extension": "*57",
                **({"agi_arg_1": at or ""} if at or feed else {}),
                **({"agi_arg_2": feed} if feed else {})}
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
