"""`cdrtrace serve`: the FastAGI and HTTP listeners in one process, over one store.

Traces wait on the event loop for a shared commit made by one committer thread (LMDB and
the evidence's fsync release the GIL); reads run
from snapshots and never wait for a trace's commit or an ingest. SIGTERM stops the
listeners, lets in-flight requests finish, then exits 0.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import ipaddress
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..api import shared_commits
from ..errors import CdrTraceError
from ..store import private
from . import requestlog
from .agi import DEFAULT_ALLOW, MAX_CONNECTIONS, FastAGI, listening_socket, networks
from .metrics import PERIOD, WORKERS_DIR
from .routing import Router

log = logging.getLogger("cdrtrace.service")
YOUNG_OBJECTS = 10_000       # the cyclic collector's first threshold, once serving (_settled)
SPARE = 256                  # descriptors beyond the connections: the store, its log, ...
RESTARTS, RESTART_WINDOW = 5, 60.0   # --workers: a worker's restarts in that many seconds
WATCH = 0.1                  # seconds between the supervisor's looks at its workers
PR_SET_PDEATHSIG = 1         # prctl(2): the signal a process gets when its parent dies
READERS = 60.0               # seconds between two frees of dead processes' read slots
# the cores this process could use before --pin kept it on one: the exchanges' threads in
# C (FastAGI's, HTTP's) take no interpreter lock, so they run on any of them
UNPINNED: set[int] = set()


def address(text: str, what: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 hosts in brackets) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CdrTraceError(f"{what} must be HOST:PORT (not {text!r})")
    return host.strip("[]") or "127.0.0.1", int(port)


@contextlib.contextmanager
def listening(flag: str, text: str) -> Iterator[None]:
    """Where a listener binds its address: one it cannot have (taken, not this machine's,
    a name that does not resolve) is one line naming the option and the address. Before,
    "Address already in use" alone did not say which of the two listeners."""
    try:
        yield
    except OSError as exc:
        raise CdrTraceError(f"cannot listen on {flag} {text}: {exc.strerror or exc}") from None


def tls_of(cert: str | None, key: str | None) -> tuple[str, str] | None:
    """--tls-cert and --tls-key: (certificate chain, private key), both PEM, checked now
    (a server context loads them), or None for plain HTTP. CdrTraceError for one
    without the other, files that do not make a certificate and its key, or a key every
    user of the machine may read (its group may: Debian's ssl-cert keys are 0640)."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise CdrTraceError("--tls-cert and --tls-key go together: the certificate chain "
                            "and its private key, both PEM")
    try:
        import ssl
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (OSError, ValueError) as exc:       # ssl.SSLError is an OSError
        raise CdrTraceError(f"cannot serve TLS with --tls-cert {cert} and --tls-key {key}: "
                            f"{exc}") from None
    mode = os.stat(key).st_mode & 0o777
    if mode & 0o007:
        raise CdrTraceError(f"--tls-key {key} is open to every user of this machine (mode "
                            f"{mode:o}), who could then pose as this service: run "
                            f"`chmod 600 {key}` (or 640, for its group)")
    return cert, key


def check_exposure(http: str | None, tls: tuple[str, str] | None, plain: bool) -> None:
    """The HTTP API carries bearer tokens (a legal token discloses callers): without TLS
    it listens on loopback only (a TLS proxy on the same machine in front), unless
    --plain-http says that the network it listens on is trusted. CdrTraceError else."""
    if not http or tls is not None or plain:
        return
    host = address(http, "--http")[0]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:                          # a name: whatever it resolves to, not known
        loopback = host == "localhost"
    if not loopback:
        raise CdrTraceError(
            f"--http {http} without TLS would send bearer tokens, and the callers a legal "
            "token discloses, over the network in clear text: give --tls-cert and "
            "--tls-key, or listen on loopback behind a TLS proxy, or say --plain-http "
            "if that network is trusted")


async def serve(store: Any, http: str | None, agi: str | None,
                agi_allow: list[str] | None = None, ready: Any = None,
                tls: tuple[str, str] | None = None, agi_keys: tuple[str, ...] = (),
                agi_key_file: str | None = None) -> None:
    """Run until SIGTERM (or SIGINT); ready(ports), if given, once listening. tls: the
    HTTP API's (certificate chain, private key) files (tls_of), or None; agi_keys: the
    keys one of which each FastAGI request's URL must name, or none; agi_key_file: the
    file they were read from. SIGHUP reads both files again (_reloading)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reload: list[Callable[[], None]] = [
        lambda: log.info("SIGHUP: not serving yet, nothing reloaded")]
    for sig, handler in ((signal.SIGTERM, stop.set), (signal.SIGINT, stop.set),
                         (signal.SIGHUP, lambda: reload[0]())):
        try:
            loop.add_signal_handler(sig, handler)
        except (NotImplementedError, RuntimeError, ValueError):   # not the main thread (tests)
            pass
    ports: dict[str, int] = {}
    servers = []
    app = None
    router = Router(store)             # a line another shard holds is traced there
    if http:
        from .http import build_app

        app = build_app(store, router)
    observe = (lambda kind, outcome, seconds: app.state.observe(kind, outcome, seconds)) if app \
        else None
    refused = (lambda reason: app.state.refused("agi", reason)) if app else None
    listener = FastAGI(lambda line, at, feed: router.trace(line, at=at, feed=feed),
                       agi_allow or DEFAULT_ALLOW,
                       observe, router.trace_then, agi_keys, refused)
    native = None
    if agi:
        host, port = address(agi, "--agi")
        if os.environ.get("CDRTRACE_AGI", "native") != "python":   # the reference: python
            from .agi_native import NativeFastAGI

            native = NativeFastAGI(listener, UNPINNED,
                                   app.state.trace_metrics if app is not None else None)
            with listening("--agi", agi):
                ports["agi"] = await native.start(host, port)
        else:
            with listening("--agi", agi):
                sock = listening_socket(host, port)
            agi_server = await loop.create_server(listener.protocol, sock=sock)
            servers.append(agi_server)
            ports["agi"] = agi_server.sockets[0].getsockname()[1]
    http_task, reloads = None, None
    if http and app is not None:
        from .http import run_http

        host, port = address(http, "--http")
        with listening("--http", http):
            http_task, ports["http"], reloads = await run_http(app, host, port, stop,
                                                               UNPINNED, tls)
    reload[0] = _reloading(reloads, listener, agi_key_file)
    replicating = _replicate(store)
    workers = app.state.workers if app is not None else None     # --workers' counts
    repeating = [_every(loop, READERS, lambda: _clear_readers(store))]
    if workers is not None:
        repeating.append(_every(loop, PERIOD, lambda: _write_counts(workers)))
    log.info("serving %s", ", ".join(f"{k} on port {v}" for k, v in ports.items()) or "nothing")
    if ready is not None:
        ready(ports, stop)
    await stop.wait()
    for s in servers:
        s.close()
    if native is not None:
        native.stop_accepting()
    if listener.active:                                  # in-flight traces finish
        await asyncio.wait(list(listener.active), timeout=30)
    if native is not None:
        await native.drain(30)
        native.close()
    if http_task is not None:
        await http_task
    for s in servers:
        await s.wait_closed()
    requestlog.flush()
    for handle in repeating:
        handle[0].cancel()
    if workers is not None:
        workers.leave()
    log.info("stopped: traces %d, in shared commits %d", *shared_commits(store))
    if replicating is not None:       # the last traces' evidence sent before exiting
        replicating[0].set()
        await loop.run_in_executor(None, replicating[1].join, 15)


def _every(loop: asyncio.AbstractEventLoop, seconds: float, work: Any) -> list:
    """work() on the loop every `seconds` from now on: [the next call's handle]."""
    handle: list = []

    def call() -> None:
        work()
        handle[:] = [loop.call_later(seconds, call)]
    handle.append(loop.call_later(seconds, call))
    return handle


def _write_counts(workers: Any) -> None:
    """This worker's counts, for /metrics in every worker (metrics.Workers)."""
    try:
        workers.write()
    except OSError as exc:             # /metrics shows the last written; the service goes on
        log.warning("cannot write this worker's counts for /metrics: %s", exc)


def _clear_readers(store: Any) -> None:
    """The store's read slots left by processes that died (a worker killed, an ingest),
    freed: while held, the store's files grow with every write."""
    if cleared := store.envs.clear_stale_readers():
        log.warning("freed %d read slots of the store left by processes that died", cleared)


def descriptors(http: bool, agi: bool) -> int:
    """How many descriptors serve may hold at once: a connection for each its listeners'
    bounds allow, and SPARE for the store, its log and the rest."""
    need = SPARE + (MAX_CONNECTIONS if agi else 0)
    if http:
        from . import http as api
        from . import http_native
        need += http_native.MAX_CONNECTIONS + api.LIMIT_CONCURRENCY
    return need


def raise_descriptor_limit(need: int) -> None:
    """The soft limit on open descriptors raised to need (to the hard limit at most). A
    service started with the usual soft limit of 1024 ran out of descriptors before its
    listeners' bounds: its connections past it waited in the kernel, on every port (1,200
    FastAGI peers held a switch's HTTP trace back 4 s), and FastAGI never refused one.
    A warning, saying the fix, if the hard limit is below need."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < need:
        log.warning("serve may hold %d descriptors and may open %d (its hard limit): past "
                    "it no port accepts; raise the limit (systemd: LimitNOFILE=%d)",
                    need, want, need)


def _replicate(store: Any) -> tuple[threading.Event, threading.Thread] | None:
    """A shard replica sharing evidence ([shard] evidence): the replicator's thread."""
    if store.shard is None or not store.shard.evidence:
        return None
    from ..evidence.replication import Replicator

    done = threading.Event()
    thread = threading.Thread(target=Replicator(store, store.shard.evidence).run, args=(done,),
                              name="replication", daemon=True)
    thread.start()
    return done, thread


def _reloading(tls: Callable[[], None] | None, listener: FastAGI,
               key_file: str | None) -> Callable[[], None]:
    """What SIGHUP does: tls() (http.tls_reloader: the TLS files read again), and the
    FastAGI keys read again from key_file, so that a key is changed with no restart (the
    old and the new in the file while the switches move to the new one). Files that are
    wrong now are logged, and what was read before is kept."""
    def reload() -> None:
        if tls is not None:
            tls()
        if key_file is not None:
            try:
                listener.keys = private.read_keys(key_file, "--agi-key-file")
            except CdrTraceError as exc:
                log.error("SIGHUP: the FastAGI keys were not read again, those read before "
                          "are kept: %s", exc)
            else:
                log.info("SIGHUP: the FastAGI keys read again from %s: %d", key_file,
                         len(listener.keys))
        if tls is None and key_file is None:
            log.info("SIGHUP: nothing to reload (no TLS, no --agi-key-file)")
    return reload


def run(args: Any) -> None:
    from ..cli.common import open_store

    if not args.http and not args.agi:
        raise CdrTraceError("serve needs --http HOST:PORT, --agi HOST:PORT, or both")
    if not 1 <= args.workers <= 64:
        raise CdrTraceError("--workers must be 1 to 64")
    tls = tls_of(args.tls_cert, args.tls_key)
    check_exposure(args.http, tls, args.plain_http)
    networks(args.agi_allow or ())             # refused before anything opens
    agi_keys = private.read_keys(args.agi_key_file, "--agi-key-file") if args.agi_key_file \
        else ()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=requestlog.FORMAT)
    # a line per request: skip what the format never shows (the logging documentation's
    # "Optimization": the caller's frame, thread, process names)
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    if args.workers > 1:
        open_store(args, readonly_index=True).close()   # its faults before any worker
        supervise(args)
        return
    raise_descriptor_limit(descriptors(bool(args.http), bool(args.agi)))
    if getattr(args, "pin", False):
        pin(started_on())
    elif os.environ.get("CDRTRACE_AGI_CORES"):         # a worker pinned by its supervisor
        UNPINNED.update(int(c) for c in os.environ["CDRTRACE_AGI_CORES"].split(","))
    store = open_store(args, readonly_index=True)
    with asyncio.Runner(loop_factory=event_loop()) as runner:
        runner.run(serve(store, args.http, args.agi, args.agi_allow, ready=_settled, tls=tls,
                         agi_keys=agi_keys, agi_key_file=args.agi_key_file))


def _settled(ports: dict, stop: asyncio.Event) -> None:
    """Once listening: what start-up built (modules, the web application, the store's
    handles) lives as long as the process, so it leaves the cyclic collector's
    generations. A full collection then walks only what traces leave behind: walking
    all of it paused the service for 43-48 ms (three times in 12,000 traces), the
    latency's whole tail (BENCHMARKS.md).

    And the youngest generation is collected past YOUNG_OBJECTS more objects than freed,
    not Python's 700: a trace's objects are freed by their counts as it is answered, but
    a commit's 30-60 traces in flight passed 700 at every few commits, and the collector
    ran 250 times in 12,000 traces (18 ms holding the interpreter lock, two full
    collections of 0.6-0.7 ms). Past 10,000, it did not run at all in such a run."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])


def event_loop() -> Any:
    """uvloop's event loop (libuv, in C) where it is installed: the service's CPU per
    request is what bounds its rate; asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def pin(core: int) -> None:
    """Keep this process, its threads and those it starts, on one core. A service process runs
    Python in two threads, the event loop and the committer, which share one interpreter
    lock: spread over two cores they hand it back and forth at every LMDB call (py-lmdb
    lets go of it there), and a profile under 64 FastAGI clients put a quarter of the
    service's samples in that hand-over (BENCHMARKS.md). The FastAGI exchange's thread in
    C, which takes no lock, is left the cores the process had (UNPINNED)."""
    UNPINNED.update(os.sched_getaffinity(0))
    try:
        for thread in os.listdir("/proc/self/task"):   # those already started too (BLAS's)
            os.sched_setaffinity(int(thread), {core})
    except OSError as exc:
        log.warning("cannot pin the service to core %d: %s", core, exc)
    else:
        log.info("pinned to core %d", core)


def started_on() -> int:
    """The core this process is running on now (field 39 of /proc/self/stat), or the
    first it may use."""
    allowed = sorted(os.sched_getaffinity(0))
    try:
        with open("/proc/self/stat") as f:
            core = int(f.read().rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return allowed[0]
    return core if core in allowed else allowed[0]


def supervise(args: Any) -> None:
    """--workers N: N service processes on the same ports (SO_REUSEPORT: the kernel
    spreads the connections), each with its own store handle and group commit (LMDB
    serialises their commits); SIGTERM is passed on and each finishes its traces."""
    import subprocess

    argv = [sys.executable, "-m", "cdrtrace.cli", "serve", "--workers", "1"]
    for flag, value in (("--db", args.db), ("--http", args.http),
                        ("--agi", args.agi), ("--tls-cert", args.tls_cert),
                        ("--tls-key", args.tls_key), ("--agi-key-file", args.agi_key_file)):
        if value:
            argv += [flag, value]
    if args.plain_http:
        argv.append("--plain-http")
    for network in args.agi_allow or ():
        argv += ["--agi-allow", network]
    cores = sorted(os.sched_getaffinity(0))

    supervisor, prctl = os.getpid(), ctypes.CDLL(None, use_errno=True).prctl

    def prepared(i: int) -> Any:
        """What worker i does before exec: SIGTERM to it when the supervisor dies (killed:
        the workers would serve on, unwatched, holding the ports); on the i-th core."""
        def in_child() -> None:
            # a terminal's Ctrl-C reaches the workers as the supervisor's SIGTERM: one
            # still starting Python would otherwise die of the SIGINT itself, exit 1 ("Could
            # not import runpy module"), a failure; serve() handles SIGINT once it runs
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)      # the same, for a reload's
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != supervisor:            # died already: so do we
                os._exit(1)
            if args.pin:
                os.sched_setaffinity(0, {cores[i % len(cores)]})
        return in_child
    # the workers' counts, summed by whichever answers /metrics (metrics.Workers): a
    # folder only this user reads, removed once they have stopped
    try:
        folder = tempfile.mkdtemp(prefix="cdrtrace-metrics-")
    except OSError as exc:
        raise CdrTraceError(f"--workers keeps the workers' counts in a folder under TMPDIR "
                            f"({tempfile.gettempdir()}), and cannot make one: {exc}") from None
    env = {**os.environ, WORKERS_DIR: folder,
           **({"CDRTRACE_AGI_CORES": ",".join(map(str, cores))} if args.pin else {})}
    children: list[subprocess.Popen] = []         # worker i's process: children[i]
    stopping: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def reload(signum: int, frame: Any) -> None:
        for child in children:                    # each reads its TLS files and keys again
            if child.poll() is None:
                child.send_signal(signal.SIGHUP)

    def start(i: int) -> subprocess.Popen:
        child = subprocess.Popen(argv, preexec_fn=prepared(i), env=env)  # noqa: PLW1509
        if stopping:                      # (no threads here: preexec_fn is safe)
            child.send_signal(signal.SIGTERM)
        return child
    # before the first worker starts: a SIGTERM in between left the workers running on
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, reload)
    try:
        for i in range(args.workers):
            if stopping:
                break
            children.append(start(i))
        given_up = _watch(children, start, stopping)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    codes = [child.returncode for child in children]
    log.info("workers stopped: exit %s", codes)
    if given_up is not None:
        raise CdrTraceError(f"a worker ended {RESTARTS + 1} times within {RESTART_WINDOW:g} s "
                            f"(exit {given_up}): the service stopped")
    # a worker the SIGTERM passed on (or a terminal's Ctrl-C, sent to every process of its
    # group) found still starting ends by it: stopped, not failed
    failed = [c for c in codes
              if c and not (stopping and c in (-signal.SIGTERM, -signal.SIGINT))]
    if failed:
        raise CdrTraceError(f"a worker failed (exit {failed[0]})")


def _watch(children: list, start: Any, stopping: list[int]) -> int | None:
    """Until every worker has ended: one that ends while serve is not stopping is started
    again (a warning), so the service keeps its capacity; one that has ended RESTARTS + 1
    times within RESTART_WINDOW seconds stops them all instead, and its exit code is
    returned (else None)."""
    ended: list[list[float]] = [[] for _ in children]
    given_up = None
    while any(child.poll() is None for child in children) or not (stopping or given_up):
        for i, child in enumerate(children):
            if child.returncode is None or stopping or given_up is not None:
                continue
            now = time.monotonic()
            ended[i] = [t for t in ended[i] if now - t < RESTART_WINDOW] + [now]
            if len(ended[i]) > RESTARTS:
                log.error("worker %d ended %d times within %g s (exit %s): stopping the "
                          "service", i, len(ended[i]), RESTART_WINDOW, child.returncode)
                given_up = child.returncode
                stopping.append(signal.SIGTERM)
                for other in children:
                    if other.poll() is None:
                        other.send_signal(signal.SIGTERM)
            else:
                log.warning("worker %d (pid %d) ended (exit %s): started again", i, child.pid,
                            child.returncode)
                children[i] = start(i)
        time.sleep(WATCH)
    return given_up
