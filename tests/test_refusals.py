"""What the service refuses or cuts off is counted in /metrics by listener and reason
(`cdrtrace_refused_total`), on every listener: an attack shows there, not only in the
log. Each case below makes its reason happen a known number of times."""
from __future__ import annotations

import contextlib
import socket
import time

import httpx
import pytest
from test_http_exchange import request
from test_service import (
    AGI_LISTENERS,
    AT,
    CALLER,
    HTTP_LISTENERS,
    LINE,
    QUIET,
    Service,
    _closed,
    _trickle,
    agi,
    asterisk,
    endless_head,
    expect,
    refused,
)

from conftest import cdr, read_to_end, refusal

KEY = "k" * 40


@pytest.mark.parametrize("listener", AGI_LISTENERS)
def test_fastagi_counts_each_refusal_by_its_reason(store, ingest_records, monkeypatch,
                                                  listener):
    from cdrtrace.service import agi as agi_module

    monkeypatch.setenv("CDRTRACE_AGI", listener)
    monkeypatch.setattr(agi_module, "READ_TIMEOUT", 0.3)
    ingest_records(cdr(src=CALLER, dst=LINE, start="2026-03-02 14:03:00",
                       answer="2026-03-02 14:03:05", end="2026-03-02 14:03:30") + b"\n")
    running = Service(store, agi_key=KEY)
    port = running.ports["agi"]

    def asking(script, **kw):
        return agi(running, asterisk(agi_arg_1=AT, agi_network_script=script,
                                     agi_request="agi://127.0.0.1/" + script), **kw)[0]
    try:
        expect(running, {})
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
            assert _closed(silent)                         # silent past the timeout
        counts = {("agi", "silent"): 1}
        expect(running, counts)
        block = b"".join(f"{k}: {v}\n".encode() for k, v in asterisk().items()) + b"\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            _trickle(slow, block, 0.03)                    # 1.6 s, past the 0.3
            assert _closed(slow)
        expect(running, counts | {("agi", "slow"): 1})
        assert agi(running, {}, raw=b"hello\n\n") == ([], b"")    # not a variable line
        counts |= {("agi", "slow"): 1, ("agi", "malformed"): 1}
        expect(running, counts)
        assert asking("other") == [agi_module.NOT_SERVED]
        assert asking("trace?key=wrong") == [agi_module.NOT_KEYED]
        counts |= {("agi", "not_served"): 1, ("agi", "wrong_key"): 1}
        expect(running, counts)
        # traced, then a reply outside the protocol: cut off, as malformed
        assert asking(f"trace?key={KEY}", replies=("999 what",)) == [
            'SET VARIABLE COT_OUTCOME "success"']
        counts[("agi", "malformed")] = 2
        expect(running, counts)
        # a peer hanging up is not refused: nothing more counted
        with socket.create_connection(("127.0.0.1", port), timeout=10) as gone:
            gone.sendall(b"agi_network: yes\n")
        assert asking(f"trace?key={KEY}")[0] == 'SET VARIABLE COT_OUTCOME "already_traced"'
        time.sleep(0.5)                                    # past the timeout, had it waited
        expect(running, counts)
    finally:
        running.stop()
    outside = Service(store, agi_allow=["10.0.0.0/8"])
    try:
        assert agi(outside, asterisk(agi_arg_1=AT)) == ([], b"")
        expect(outside, {("agi", "not_allowed"): 1})
    finally:
        outside.stop()
    monkeypatch.setattr(agi_module, "MAX_CONNECTIONS", 1)
    bounded = Service(store)
    try:
        with socket.create_connection(("127.0.0.1", bounded.ports["agi"]), timeout=10) as held:
            with socket.create_connection(("127.0.0.1", bounded.ports["agi"]),
                                          timeout=10) as second:
                assert _closed(second)                     # past the bound of 1
            expect(bounded, {("agi", "full"): 1})
            assert _closed(held)                           # and then silent
        expect(bounded, {("agi", "full"): 1, ("agi", "silent"): 1})
    finally:
        bounded.stop()


@pytest.mark.parametrize("listener", HTTP_LISTENERS)
def test_http_counts_each_refusal_by_its_reason(store, ingest_records, monkeypatch, listener):
    from cdrtrace.service import http, http_native, protocol

    monkeypatch.setenv("CDRTRACE_HTTP", listener)
    monkeypatch.setattr(http, "KEEP_ALIVE", 0.3)
    monkeypatch.setattr(http_native, "KEEP_ALIVE", 0.3)
    monkeypatch.setattr(protocol, "REQUEST_TIMEOUT", 0.3)
    running = Service(store)
    port = running.ports["http"]
    tokens = {role: store.tokens.create(f"{role}-1", role) for role in ("switch", "care")}

    def post(path, token, **kw):
        return httpx.post(running.url + path, headers={"Authorization": f"Bearer {token}"},
                          timeout=10, **kw).status_code
    try:
        expect(running, {})
        assert post("/v1/trace", "not-a-token", json={"line": LINE}) == 401
        assert post("/v1/trace/text", "x", data={"line": LINE, "token": "x"}) == 401
        assert post("/v1/trace", tokens["care"], json={"line": LINE}) == 403
        assert post("/v1/trace", tokens["switch"], content=b"x" * (70 << 10)) == 413
        answer = endless_head(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert answer.startswith(b"HTTP/1.1 400")
        counts = {("http", "unauthorized"): 2, ("http", "forbidden"): 1,
                  ("http", "too_large"): 2}
        expect(running, counts)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            _trickle(sock, request(tokens["switch"]), 0.05)    # 1.4 s, past the 0.3
            with contextlib.suppress(ConnectionResetError):    # 408 (uvicorn), then closed
                while sock.recv(65536):
                    pass
        counts[("http", "slow")] = 1
        expect(running, counts)
        # neither an idle connection nor a trace answered is refused
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
            assert _closed(idle)
        assert post("/v1/trace", tokens["switch"], json={"line": QUIET, "at": AT}) == 200
        expect(running, counts)
    finally:
        running.stop()


@pytest.mark.parametrize("listener", HTTP_LISTENERS)
def test_http_counts_the_requests_past_uvicorns_bound(store, monkeypatch, listener):
    """uvicorn answers 503 past its bound on connections (and C hands it those past its
    own): counted as full."""
    from cdrtrace.service import http, http_native

    monkeypatch.setenv("CDRTRACE_HTTP", listener)
    monkeypatch.setattr(http, "LIMIT_CONCURRENCY", 2)
    monkeypatch.setattr(http_native, "MAX_CONNECTIONS", 1)
    running = Service(store)
    token = store.tokens.create("switch-1", "switch")
    port = running.ports["http"]
    # kept alive: C's one, then uvicorn's (its own connection is within its bound)
    held = [socket.create_connection(("127.0.0.1", port), timeout=10)
            for _ in range(2 if listener == "native" else 1)]
    try:
        for sock in held:
            sock.sendall(request(token))
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as third:
            third.sendall(request(token))
            full = read_to_end(third)
            assert "bound of connections" in refusal(full, 503)        # JSON, as a route's
            assert b"\r\nretry-after: 1\r\n" in full
        with socket.create_connection(("127.0.0.1", port), timeout=10) as fourth:
            fourth.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert "bound of connections" in refusal(read_to_end(fourth), 503)
    finally:
        for sock in held:
            sock.close()
    try:
        # each 503 is counted, those /metrics may get while the held ones close too
        answered, deadline = 2, time.monotonic() + 10
        while (got := httpx.get(running.url + "/metrics", timeout=10)).status_code == 503:
            answered += 1
            assert time.monotonic() < deadline
        assert got.status_code == 200
        assert refused(running) == {("http", "full"): answered}
    finally:
        running.stop()
