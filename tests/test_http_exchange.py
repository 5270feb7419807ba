"""The switches' POST /v1/trace exchanged in C (ext/_http.h, service.http_native): which
requests C answers, which it hands to uvicorn, and that either way the answer is the
reference listener's (CDRTRACE_HTTP=python); its bounds, timeouts and headers."""
from __future__ import annotations

import email.utils
import json
import logging
import re
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_service import (
    AT,
    CALLER,
    LINE,
    QUIET,
    Service,
    _closed,
    _logged,
    _trickle,
    agi,
    asterisk,
    endless_head,
    expect,
    held_record,
)

from conftest import cdr, read_to_end, refusal


@pytest.fixture
def listening(store, ingest_records, monkeypatch):
    """The service over one store twice: HTTP exchanged in C, and the reference; and the
    C listener's events, as they come (kind, reason)."""
    from cdrtrace.service.http_native import NativeHTTP

    ingest_records(cdr(src=CALLER, dst=LINE, start="2026-03-02 14:03:00",
                       answer="2026-03-02 14:03:05", end="2026-03-02 14:03:30") + b"\n")
    events: list[tuple[int, int]] = []
    original = NativeHTTP.event

    def seeing(self, kind, conn, reason, *rest):
        events.append((kind, reason))
        return original(self, kind, conn, reason, *rest)
    monkeypatch.setattr(NativeHTTP, "event", seeing)
    services = {}
    for listener in ("native", "python"):
        monkeypatch.setenv("CDRTRACE_HTTP", listener)
        services[listener] = Service(store)
    tokens = {role: store.tokens.create(f"{role}-1", role) for role in ("switch", "care")}
    yield store, services, tokens, events
    for running in services.values():
        running.stop()


def response(port: int, data: bytes | list[bytes], timeout: float = 10) -> bytes:
    """Send the request (in parts, if a list) on a new connection: the first final answer
    (a 100 Continue skipped), head and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for part in data if isinstance(data, list) else [data]:
            sock.sendall(part)
        got = b""
        while True:
            end = got.find(b"\r\n\r\n")
            if end >= 0 and got.startswith(b"HTTP/1.1 100 "):
                got = got[end + 4:]
                continue
            if end >= 0:
                found = re.search(rb"(?im)^content-length: *(\d+)", got[:end])
                if found and len(got) >= end + 4 + int(found.group(1)):
                    return got[:end + 4 + int(found.group(1))]
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk


def request(token: str, body: bytes | None = None, head: bytes = b"POST /v1/trace HTTP/1.1",
            headers: list[bytes] | None = None, eol: bytes = b"\r\n") -> bytes:
    if body is None:
        body = json.dumps({"line": QUIET, "at": AT}).encode()
    if headers is None:
        headers = [b"Host: x", b"Authorization: Bearer " + token.encode(),
                   b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    return head + eol + b"".join(h + eol for h in headers) + eol + body


def alike(answer: bytes) -> tuple[bytes, object]:
    """An answer's status line and body, a trace's id and the Date aside."""
    head, _, body = answer.partition(b"\r\n\r\n")
    try:
        value = json.loads(body)
    except ValueError:
        return head.split(b"\r\n")[0], body
    if isinstance(value, dict) and "trace_id" in value:
        value["trace_id"] = "T"
    return head.split(b"\r\n")[0], value


def cases(token: str, care: str) -> list[tuple[str, bytes | list[bytes], str]]:
    """(what, the request, by whom it is answered): 'C'; 'Python' when C reads it whole
    but Python finds the body or token not as a switch sends them, and hands it off;
    'uvicorn' when C hands it off unread."""
    plain = json.dumps({"line": QUIET, "at": AT}).encode()
    length = b"Content-Length: %d" % len(plain)
    auth = b"Authorization: Bearer " + token.encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(plain), plain)
    big = b"x" * (70 << 10)
    return [
        ("as a switch sends it", request(token), "C"),
        ("names in any case", request(token, headers=[
            b"host: x", b"AUTHORIZATION: Bearer " + token.encode(), b"content-LENGTH: %d"
            % len(plain)]), "C"),
        ("values with spaces and tabs around", request(token, headers=[
            b"Authorization:\t Bearer " + token.encode() + b" \t", length]), "C"),
        ("kept alive by name", request(token, headers=[auth, length,
                                                       b"Connection: keep-alive"]), "C"),
        ("forwarded by another shard", request(token, headers=[auth, length,
                                                                b"X-Cdrtrace-Forwarded: 1"]), "C"),
        ("with a wait", request(token, json.dumps({"line": QUIET, "at": AT, "wait": 0.05})
                                .encode()), "C"),
        ("not a line", request(token, json.dumps({"line": "anonymous"}).encode()), "C"),
        ("HTTP/1.0", request(token, head=b"POST /v1/trace HTTP/1.0"), "uvicorn"),
        ("to be closed", request(token, headers=[auth, length, b"Connection: close"]),
         "uvicorn"),
        ("an upgrade", request(token, headers=[auth, length, b"Connection: Upgrade",
                                               b"Upgrade: h2c"]), "uvicorn"),
        ("chunked", request(token, chunked, headers=[auth, b"Transfer-Encoding: chunked"]),
         "uvicorn"),
        ("chunked with a length too", request(token, chunked, headers=[
            auth, b"Content-Length: %d" % len(chunked), b"Transfer-Encoding: chunked"]),
         "uvicorn"),
        ("an upgrade asked alone", request(token, headers=[auth, length, b"Upgrade: h2c"]),
         "uvicorn"),
        ("a space in a name", request(token, headers=[auth, length, b"X Note: a"]),
         "uvicorn"),
        ("expecting 100 Continue", request(token, headers=[auth, length,
                                                           b"Expect: 100-continue"]), "uvicorn"),
        ("no length", request(token, b"", headers=[auth]), "uvicorn"),
        ("two lengths", request(token, headers=[auth, length, length]), "uvicorn"),
        ("a length that is not digits", request(token, headers=[
            auth, b"Content-Length: +%d" % len(plain)]), "uvicorn"),
        ("a length with a decimal point", request(token, headers=[
            auth, b"Content-Length: %d.0" % len(plain)]), "uvicorn"),
        ("a body past the bound", request(token, big), "uvicorn"),
        ("lines ending LF alone", request(token, eol=b"\n"), "uvicorn"),
        ("a space before the colon", request(token, headers=[auth, b"Content-Length : %d"
                                                             % len(plain)]), "uvicorn"),
        ("a control byte in a value", request(token, headers=[auth, length,
                                                              b"X-Note: a\x01b"]), "uvicorn"),
        ("a folded header", request(token, headers=[auth, b"X-Note: a", b" b", length]),
         "uvicorn"),
        ("a method in lower case", request(token, head=b"post /v1/trace HTTP/1.1"), "uvicorn"),
        ("a query", request(token, head=b"POST /v1/trace?x=1 HTTP/1.1"), "uvicorn"),
        ("another route", request(token, head=b"POST /v1/request-action HTTP/1.1"), "uvicorn"),
        ("no token", request(token, headers=[length]), "Python"),
        ("a care token", request(care), "Python"),
        ("two tokens", request(token, headers=[auth, auth, length]), "uvicorn"),
        ("not JSON", request(token, b"{not json"), "Python"),
        ("UTF-16 JSON", request(token, json.dumps({"line": QUIET, "at": AT})
                                .encode("utf-16")), "Python"),
        ("in pieces", [request(token)[:7], request(token)[7:40], request(token)[40:]], "C"),
    ]


def test_c_answers_only_a_trace_as_a_switch_sends_it_and_the_reference_answers_the_same(
        listening):
    """Each request, by the rule of ext/_http.h: answered in C, or handed to uvicorn with
    the bytes read; either way the answer is the reference listener's."""
    from cdrtrace.service import _agi

    store, services, tokens, events = listening
    native, reference = (services[k].ports["http"] for k in ("native", "python"))
    for what, data, by in cases(tokens["switch"], tokens["care"]):
        events.clear()
        got = response(native, data)
        deadline = time.monotonic() + 5
        while not any(kind in (_agi.DONE, _agi.HANDOFF) for kind, _ in events):
            assert time.monotonic() < deadline, (what, events)
            time.sleep(0.005)
        kinds = [kind for kind, _ in events if kind != _agi.CLOSED]    # the client's close
        assert {(_agi.REQUEST, _agi.DONE): "C", (_agi.REQUEST, _agi.HANDOFF): "Python",
                (_agi.HANDOFF,): "uvicorn"}.get(tuple(kinds)) == by, (what, kinds)
        assert alike(got) == alike(response(reference, data)), what
        assert got.startswith(b"HTTP/1.1 "), what
    # what C answered is a trace, and the answer a switch reads
    got = response(native, request(tokens["switch"]))
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(got.partition(b"\r\n\r\n")[2])["outcome"] == "no_call"


def test_the_c_answers_headers(listening):
    store, services, tokens, events = listening
    got = response(services["native"].ports["http"], request(tokens["switch"]))
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|"
                        r"Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT", headers["date"])
    sent = email.utils.parsedate_to_datetime(headers["date"]).timestamp()
    assert abs(sent - time.time()) < 5


def test_the_bounds_c_shares_with_the_reference():
    from cdrtrace.service import _agi, protocol

    assert (_agi.MAX_HEAD, _agi.MAX_BODY) == (protocol.MAX_HEAD, protocol.MAX_BODY)


def test_a_head_still_coming_past_the_bound_is_handed_off_for_its_400(listening):
    """C reads no more than HTTP_MAX_HEAD of a head: past it, uvicorn has the connection,
    and answers 400 to a head still coming past its bound (as the reference does)."""
    from cdrtrace.service import _agi

    store, services, tokens, events = listening
    answer = endless_head(services["native"].ports["http"],
                          b"POST /v1/trace HTTP/1.1\r\nAuthorization: Bearer %s\r\n"
                          % tokens["switch"].encode())
    assert "headers too large" in refusal(answer, 400)
    assert (_agi.HANDOFF, 0) in events
    assert store.trace_records(QUIET, analyst="ann") == []


@pytest.fixture
def bounded(store, monkeypatch):
    """The C listener alone, with 2 connections and a 0.3 s keep-alive."""
    from cdrtrace.service import http_native

    monkeypatch.setattr(http_native, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(http_native, "KEEP_ALIVE", 0.3)
    monkeypatch.setenv("CDRTRACE_HTTP", "native")
    running = Service(store)
    yield store, running, store.tokens.create("switch-1", "switch")
    running.stop()


def test_connections_past_the_bound_are_handed_off_and_served(bounded):
    store, running, token = bounded
    port = running.ports["http"]
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        for sock in held:                                  # the two C keeps
            sock.sendall(request(token))
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        got = response(port, request(token))               # the third: uvicorn's
        assert got.startswith(b"HTTP/1.1 200 OK")
        assert json.loads(got.partition(b"\r\n\r\n")[2])["outcome"] == "no_call"
    finally:
        for sock in held:
            sock.close()
    assert len(store.trace_records(QUIET, analyst="ann")) == 3


@pytest.mark.parametrize("sent", [b"", b"POST /v1/trace HTTP/1.1\r\nHost: x\r\n"])
def test_an_idle_or_silent_connection_is_closed_after_the_keep_alive(bounded, sent):
    store, running, token = bounded
    with socket.create_connection(("127.0.0.1", running.ports["http"]), timeout=10) as sock:
        sock.sendall(request(token))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        sock.sendall(sent)
        assert sock.recv(65536) == b""                     # closed, well before 10 s


def test_a_request_trickling_into_c_is_closed_the_keep_alive_after_its_first_byte(bounded,
                                                                                caplog):
    """However its bytes trickle in (8 every 0.05 s, never silent for the 0.3 s), a
    request not whole 0.3 s after its first byte is closed: before, each byte gave the
    peer another 5 s, and a thousand such peers had every switch's trace answered 503."""
    store, running, token = bounded
    caplog.set_level(logging.INFO, logger="cdrtrace.service")
    with socket.create_connection(("127.0.0.1", running.ports["http"]), timeout=10) as sock:
        sock.sendall(request(token))                       # the first request is served
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        time.sleep(0.2)                                    # idle, then the next trickles
        started = time.monotonic()
        _trickle(sock, request(token), 0.05)               # ~28 pieces: 1.4 s
        assert time.monotonic() - started < 1.0 and _closed(sock)
    _logged(caplog, "a request not whole within 0.3 s")
    assert len(store.trace_records(QUIET, analyst="ann")) == 1


@pytest.fixture
def slow_bounded(store, monkeypatch):
    """uvicorn serving every request (CDRTRACE_HTTP=python), with 0.3 s to be idle and
    0.3 s for a request to arrive whole."""
    from cdrtrace.service import http, protocol

    monkeypatch.setattr(http, "KEEP_ALIVE", 0.3)
    monkeypatch.setattr(protocol, "REQUEST_TIMEOUT", 0.3)
    monkeypatch.setenv("CDRTRACE_HTTP", "python")
    running = Service(store)
    yield store, running, store.tokens.create("switch-1", "switch")
    running.stop()


@pytest.mark.parametrize("what", ["nothing", "a head", "a trace's body", "a body"])
def test_uvicorn_closes_a_connection_idle_from_its_start_or_a_request_trickling_in(
        slow_bounded, what, caplog):
    """uvicorn's own keep-alive starts only after an answer, and it has no bound on a
    request's arrival: a connection sending nothing, or a request trickling in, is closed;
    408 if no answer is under way yet (its head, or a trace's body, still coming)."""
    store, running, token = slow_bounded
    caplog.set_level(logging.INFO, logger="cdrtrace.service")
    head, _, body = request(token).partition(b"\r\n\r\n")
    if what == "a body":                                   # FastAPI reads it: no 408
        head = head.replace(b"POST /v1/trace", b"POST /v1/trace/text")
    at_once, trickled = {"nothing": (b"", b""), "a head": (b"", head)}.get(
        what, (head + b"\r\n\r\n", body[:12]))             # a body: its head at once
    with socket.create_connection(("127.0.0.1", running.ports["http"]), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(at_once)
        _trickle(sock, trickled, 0.05, 8 if what == "a head" else 1)    # 1 s or more
        got = read_to_end(sock)
        assert time.monotonic() - started < 1.0
    if what in ("a head", "a trace's body"):
        assert "not whole 0.3 s after its first byte" in refusal(got, 408)
    else:
        assert got == b""
    if what != "nothing":
        _logged(caplog, "a request not whole within 0.3 s")
    assert store.trace_records(QUIET, analyst="ann") == []
    got = response(running.ports["http"], request(token))  # and the service goes on
    assert got.startswith(b"HTTP/1.1 200 OK")


def test_uvicorn_answers_a_request_whole_in_time_however_long_its_answer_takes(slow_bounded):
    store, running, token = slow_bounded
    with held_record() as (reached, release), socket.create_connection(
            ("127.0.0.1", running.ports["http"]), timeout=10) as sock:
        sock.sendall(request(token))
        assert reached.wait(10)
        time.sleep(0.6)                        # twice the time a request has to arrive
        release.set()
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")


def test_a_request_pipelined_behind_a_slow_one_is_not_cut_off_while_it_is_not_read(
        store, monkeypatch):
    """uvicorn stops reading a connection whose request waits behind another's answer:
    the waiting request's body, sent meanwhile, is not the peer's delay, and the request is
    not cut off for it (its time runs again)."""
    from cdrtrace.service import protocol

    monkeypatch.setattr(protocol, "REQUEST_TIMEOUT", 1.0)
    monkeypatch.setenv("CDRTRACE_HTTP", "python")
    running = Service(store)
    token = store.tokens.create("switch-1", "switch")
    try:
        form = f"line={QUIET}&at={AT}&token={token}".encode()     # as mod_curl posts it
        second = request(token, form, head=b"POST /v1/trace/text HTTP/1.1", headers=[
            b"Host: x", b"Content-Type: application/x-www-form-urlencoded",
            b"Content-Length: %d" % len(form)])
        head, _, body = second.partition(b"\r\n\r\n")
        with held_record() as (reached, release), socket.create_connection(
                ("127.0.0.1", running.ports["http"]), timeout=10) as sock:
            sock.sendall(request(token) + head + b"\r\n\r\n")
            assert reached.wait(10)
            time.sleep(0.2)
            sock.sendall(body)                 # not read while the first is answered
            time.sleep(1.3)                    # past the second's time from its first byte
            release.set()
            got = b""
            while got.count(b"HTTP/1.1 200 OK") < 2 or not got.endswith(b"COT-NO-CALL"):
                chunk = sock.recv(65536)
                assert chunk, got
                got += chunk
    finally:
        running.stop()
    assert len(store.trace_records(QUIET, analyst="ann")) == 2


def test_requests_pipelined_past_the_bound_behind_a_trace_are_all_answered_in_order(
        listening):
    """While a trace runs, what is pipelined behind it is kept, and past HTTP_MAX_KEPT no
    longer read (the peer is pushed back); once the trace is answered all of it is: the
    traces C answers (here refused at once: not a line), then uvicorn's request."""
    store, services, tokens, events = listening
    refused = request(tokens["switch"], json.dumps({"line": "anonymous"}).encode())
    count = (150 << 10) // len(refused)                    # 150 KB behind the trace
    with held_record() as (reached, release), socket.create_connection(
            ("127.0.0.1", services["native"].ports["http"]), timeout=10) as sock:
        sock.sendall(request(tokens["switch"], json.dumps({"line": LINE, "at": AT}).encode()))
        assert reached.wait(10)
        sender = threading.Thread(target=sock.sendall, args=(
            refused * count + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",))
        sender.start()
        time.sleep(0.2)
        release.set()
        got = b""
        while not got.endswith(b'{"ok":true}'):
            chunk = sock.recv(1 << 20)
            assert chunk, got.count(b"HTTP/1.1 400 Bad Request")
            got += chunk
        sender.join(10)
    first, _, rest = got.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(rest[:rest.index(b"}") + 1])["outcome"] == "success"
    assert rest.count(b"HTTP/1.1 400 Bad Request\r\n") == count
    assert rest.index(b"HTTP/1.1 200 OK") > rest.rindex(b"HTTP/1.1 400 Bad Request")


def test_a_peer_pushing_behind_a_trace_is_held_back_past_the_bound(listening):
    """While a trace runs, C reads at most HTTP_MAX_KEPT bytes pipelined behind it, then
    stops reading that connection: a peer pushing more is held back by TCP (its sends
    block) instead of filling the service's memory. Socket buffers small on both sides,
    so that what the kernel holds is small beside the bound."""
    import gc

    from cdrtrace.service import _agi
    from cdrtrace.service.http_native import NativeHTTP

    store, services, tokens, events = listening
    (native,) = [o for o in gc.get_objects() if isinstance(o, NativeHTTP) and o.sock]
    native.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)   # accepted ones too
    kept = _agi.MAX_HEAD + _agi.MAX_BODY
    with held_record() as (reached, release), socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", services["native"].ports["http"]))
        sock.sendall(request(tokens["switch"], json.dumps({"line": LINE, "at": AT}).encode()))
        assert reached.wait(10)
        sock.setblocking(False)
        pushed, chunk, last_progress = 0, b"x" * 65536, time.monotonic()
        while pushed < 8 * kept and time.monotonic() - last_progress < 0.5:
            try:
                pushed += sock.send(chunk)
                last_progress = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
        release.set()
    assert kept <= pushed < 2 * kept, pushed


def test_answers_a_slow_reader_has_not_taken_go_before_the_next_request_is_read(listening):
    """A client pipelining requests and reading slowly, over a connection whose send
    buffer is small: answers wait to be sent, and each next request is read once the
    one before has gone; every answer comes, in order, then uvicorn's request's."""
    import gc

    from cdrtrace.service.http_native import NativeHTTP

    store, services, tokens, events = listening
    (native,) = [o for o in gc.get_objects() if isinstance(o, NativeHTTP) and o.sock]
    native.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)   # accepted ones too
    refused = request(tokens["switch"], json.dumps({"line": "anonymous"}).encode())
    count = 2000
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", services["native"].ports["http"]))
        sock.sendall(refused * count + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while not got.endswith(b'{"ok":true}'):
            time.sleep(0.0005)                             # slowly
            chunk = sock.recv(8192)
            assert chunk, got.count(b"HTTP/1.1 400 Bad Request")
            got += chunk
    assert got.count(b"HTTP/1.1 400 Bad Request\r\n") == count
    assert got.index(b"HTTP/1.1 200 OK") > got.rindex(b"HTTP/1.1 400 Bad Request")


def test_a_request_never_answered_is_closed_after_the_answer_timeout(store, monkeypatch,
                                                                     caplog):
    """A request C has read and Python never answers (a fault of the code) does not keep
    its connection for ever, on either C exchange: closed, and logged as a warning."""
    import logging

    from cdrtrace.service import native
    from cdrtrace.service.routing import Router

    monkeypatch.setattr(native, "ANSWER_TIMEOUT", 0.3)
    monkeypatch.setattr(Router, "trace_then", lambda self, *args, **kw: True)   # no answer
    monkeypatch.setenv("CDRTRACE_HTTP", "native")
    monkeypatch.setenv("CDRTRACE_AGI", "native")
    caplog.set_level(logging.WARNING, logger="cdrtrace.service")
    running = Service(store)
    token = store.tokens.create("switch-1", "switch")
    try:
        with socket.create_connection(("127.0.0.1", running.ports["http"]), timeout=10) as sock:
            sock.sendall(request(token))
            assert sock.recv(65536) == b""                     # closed, well before 10 s
        assert agi(running, asterisk(agi_arg_1=AT)) == ([], b"")
        expect(running, {("http", "unanswered"): 1, ("agi", "unanswered"): 1})
    finally:
        running.stop()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum(m.startswith("http: ") and m.endswith("closed: no answer within 0.3 s")
               for m in warned) == 1, warned
    assert sum(m.startswith("agi: ") and m.endswith("closed: no answer within 0.3 s")
               for m in warned) == 1, warned


def test_answers_taken_together_write_each_log_line_to_its_own_file(listening):
    """C writes a round's log lines together; an answer whose line goes to another file
    (the log reopened) first writes the lines kept for the one before. Two answers are
    handed to C at once, each with its own file, twenty times: every line is in its own
    file, whether or not the two shared a round (with the write at a change of file
    left out, the first line went to the second's file)."""
    import gc
    import os
    import types

    from cdrtrace.service.http_native import NativeHTTP

    store, services, tokens, events = listening
    (native,) = [o for o in gc.get_objects() if isinstance(o, NativeHTTP) and o.sock]
    files = [os.pipe(), os.pipe()]
    held: list[tuple] = []
    respond = native.respond

    def in_pairs(self, conn, answer, status=0, log=None, result=None):
        held.append((conn, answer, status, result))
        if len(held) == 2:                   # both at once, each with its own file
            for n, (c, a, s, r) in enumerate(held):
                respond(c, a, s, (b" file-%d" % n, files[n][1]), r)
            held.clear()
    native.respond = types.MethodType(in_pairs, native)
    port = services["native"].ports["http"]
    try:
        answers: list[bytes] = []

        def trace() -> None:
            answers.append(response(port, request(tokens["switch"])))
        for _ in range(20):
            pair = [threading.Thread(target=trace) for _ in range(2)]
            for thread in pair:
                thread.start()
            for thread in pair:
                thread.join(10)
        assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 40
        written: list[bytes] = [b"", b""]
        deadline = time.monotonic() + 10     # C writes a round's lines once it is over
        while min(w.count(b"\n") for w in written) < 20 and time.monotonic() < deadline:
            for n, (out, _) in enumerate(files):
                os.set_blocking(out, False)
                try:
                    written[n] += os.read(out, 65536)
                except BlockingIOError:
                    time.sleep(0.01)
    finally:
        del native.respond
        for pipe in files:
            for fd in pipe:
                os.close(fd)
    for n, text in enumerate(written):
        lines = text.splitlines()
        assert len(lines) == 20, lines
        assert all(b" file-%d in " % n in line for line in lines), lines


def test_a_peer_reading_none_of_its_answers_has_no_more_requests_answered(listening):
    """A peer pipelining requests and reading none of the answers: once an answer cannot
    go (the socket buffers full), C reads no further request of that connection, so what
    the service answers and holds for it is bounded by the buffers, not by what the peer
    sends. 3,000 requests pushed: 75-79 answered while nothing is read. Two checks keep
    it so, each enough alone (http_answer stops reading while its answer is going, and
    http_parse takes no request then): without both, all 3,000 were, their answers kept
    in memory."""

    from cdrtrace.service import _agi

    store, services, tokens, events = listening
    refused = request(tokens["switch"], json.dumps({"line": "anonymous"}).encode())
    with socket.socket() as sock:
        sent = _push_unread(sock, services["native"].ports["http"], refused * 3000, 1.0)
        time.sleep(1.0)                            # what C answers now, it answers at once
        answered = sum(kind == _agi.DONE for kind, _ in events)
    assert 0 < answered < 500, (answered, sent // len(refused))


def _push_unread(sock: socket.socket, port: int, pushing: bytes, patience: float) -> int:
    """Connect sock to the C listener with small buffers on both sides, and push until
    nothing more goes for patience seconds, reading nothing: the bytes sent."""
    import gc

    from cdrtrace.service.http_native import NativeHTTP

    (native,) = [o for o in gc.get_objects() if isinstance(o, NativeHTTP) and o.sock]
    native.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)   # accepted ones too
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    sent, last_progress = 0, time.monotonic()
    while sent < len(pushing) and time.monotonic() - last_progress < patience:
        try:
            sent += sock.send(pushing[sent:sent + 65536])
            last_progress = time.monotonic()
        except BlockingIOError:
            time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            break
    return sent


def test_a_peer_not_reading_its_answers_is_closed_as_such_not_as_slow(bounded, caplog):
    """A peer whose answer cannot go (it reads nothing), requests pipelined behind it, is
    closed after the keep-alive like an idle one: not logged as a request not whole."""
    store, running, token = bounded
    caplog.set_level(logging.INFO, logger="cdrtrace.service")
    pushing = request(token, json.dumps({"line": "anonymous"}).encode()) * 3000
    with socket.socket() as sock:
        _push_unread(sock, running.ports["http"], pushing, 0.5)
        time.sleep(1.0)                                    # past the 0.3 s
        sock.setblocking(True)
        sock.settimeout(5)                     # closed by then, or recv raises
        try:
            while sock.recv(65536):            # the answers it had sent, then the end
                pass
        except ConnectionResetError:
            pass
    assert not any("not whole" in r.getMessage() for r in caplog.records)


def test_a_trace_c_logs_and_counts_comes_back_to_the_loop_no_more(listening):
    """An answer handed to C with its trace (NativeListener.respond's result) and a log
    line C writes is counted by C once done, and posts no DONE event: the loop hears no
    more of it. One whose line C cannot write comes back (DONE), and Python counts it.
    /metrics adds the two."""
    import gc
    import os
    import types

    from cdrtrace.service import _agi
    from cdrtrace.service.http_native import NativeHTTP
    from cdrtrace.service.metrics import BUCKETS, OUTCOME_INDEX, OUTCOMES

    store, services, tokens, events = listening
    (native,) = [o for o in gc.get_objects() if isinstance(o, NativeHTTP) and o.sock]
    out, into = os.pipe()
    respond = native.respond
    logged_by_c = True

    def logging_to_a_pipe(self, conn, answer, status=0, log=None, result=None):
        respond(conn, answer, status, (b" a line", into) if logged_by_c else None, result)
    native.respond = types.MethodType(logging_to_a_pipe, native)
    port = services["native"].ports["http"]
    try:
        outcomes = []
        for _ in range(3):
            answer = response(port, request(tokens["switch"]))
            assert answer.startswith(b"HTTP/1.1 200 OK")
            outcomes.append(json.loads(answer.split(b"\r\n\r\n", 1)[1])["outcome"])
        logged_by_c = False                  # the fourth: its line for Python to write
        assert response(port, request(tokens["switch"])).startswith(b"HTTP/1.1 200 OK")
        deadline = time.monotonic() + 10     # the events in order: the fourth's DONE last
        while (_agi.DONE, 200) not in events and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        del native.respond                   # the class's again
    assert [k for k, _ in events if k in (_agi.REQUEST, _agi.DONE)] == (
        [_agi.REQUEST] * 4 + [_agi.DONE])          # (each connection's CLOSED aside)
    os.set_blocking(out, False)
    assert os.read(out, 65536).count(b" a line in ") == 3
    counts, since, buckets, total, timed = native._counted()
    counted = {o.value: counts[OUTCOME_INDEX[o]] for o in OUTCOMES if counts[OUTCOME_INDEX[o]]}
    assert counted == {outcomes[0]: 3} and outcomes == [outcomes[0]] * 3
    assert sum(buckets[:len(BUCKETS) + 1]) == 3 and total > 0 and timed > 0
    assert min(s for s in since if s) > time.time() - 60
    metrics = response(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").decode()
    assert f'cdrtrace_traces_total{{outcome="{outcomes[0]}",via="http"}} 4.0' in metrics
    assert 'cdrtrace_trace_seconds_count{via="http"} 4.0' in metrics
    os.close(out)
    os.close(into)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=True) | st.sampled_from([0.0, -0.0, 0.0005, 0.001, 5.0, 5.000001]))
def test_c_counts_a_latency_in_the_bucket_python_would(seconds):
    """The C exchange's bucket for a latency is bisect_left's over the same bounds, as
    TraceMetrics.observe (and prometheus_client's Histogram) place it."""
    import bisect

    from cdrtrace.service import _agi
    from cdrtrace.service.metrics import BUCKETS

    assert _agi.bucket(BUCKETS, seconds) == bisect.bisect_left(BUCKETS, seconds)
    assert _agi.bucket([], seconds) == 0


def test_every_outcome_and_bound_fits_what_the_c_exchange_counts():
    """The C exchanges count outcomes by their place in metrics.OUTCOMES and latencies by
    metrics.BUCKETS: an outcome or a bound added past what C keeps would fail each answer
    of it, so none is."""
    from cdrtrace.service import _agi
    from cdrtrace.service.metrics import BUCKETS, OUTCOMES

    assert len(OUTCOMES) <= _agi.OUTCOMES and len(BUCKETS) <= _agi.BOUNDS
    assert list(BUCKETS) == sorted(BUCKETS)
