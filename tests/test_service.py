"""The trace service over real loopback clients: an HTTP client (httpx) and a FastAGI
client that speaks as Asterisk's res_agi does."""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import json
import os
import re
import socket
import ssl
import threading
import time
import warnings

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cdrtrace
from cdrtrace import cli, testing
from cdrtrace.evidence.outcomes import Outcome, TraceResult
from cdrtrace.service.server import serve
from conftest import cdr, read_to_end, refusal, show_freeswitch_legs

LINE = "3035550110"
CALLER = "7205550101"
AT = "2026-03-02T23:00:00Z"
QUIET = "3035550199"            # a line no call reached: every trace of it is no_call


class Service:
    """`cdrtrace serve` in a thread, on ports the system picks."""

    def __init__(self, store, agi_allow=None, tls=None, agi="127.0.0.1:0", agi_key=None):
        self.ports, started = {}, threading.Event()

        def ready(ports, stop):
            self.ports, self.stop_event = ports, stop
            self.loop = asyncio.get_running_loop()
            started.set()
        self.thread = threading.Thread(target=asyncio.run, args=(serve(
            store, "127.0.0.1:0", agi, agi_allow, ready=ready, tls=tls,
            agi_keys=(agi_key,) if agi_key else ()),),
            daemon=True)
        self.thread.start()
        assert started.wait(10)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.ports['http']}"

    def stop(self):
        if self.thread.is_alive():
            try:
                self.loop.call_soon_threadsafe(self.stop_event.set)
            except RuntimeError:            # its loop closed since: stopping already (by the test)
                pass
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_the_helper_stops_a_service_whose_loop_closed_after_it_looked():
    """A test that stops the service itself races the helper's stop: the thread may still
    be alive when looked at, its loop closed a moment later. Stopping it then is no error
    (it failed a full run once, 'Event loop is closed')."""
    running = Service.__new__(Service)
    running.loop = asyncio.new_event_loop()
    running.loop.close()
    running.stop_event = asyncio.Event()
    running.thread = threading.Thread(target=time.sleep, args=(0.2,))
    running.thread.start()
    running.stop()
    assert not running.thread.is_alive()


def _serving(store, ingest_records):
    ingest_records(cdr(src=CALLER, dst=LINE, start="2026-03-02 14:03:00",
                       answer="2026-03-02 14:03:05", end="2026-03-02 14:03:30") + b"\n")
    running = Service(store)
    tokens = {role: store.tokens.create(f"{role}-1", role) for role in
              ("switch", "care", "analyst", "legal", "operator")}
    yield store, running, tokens
    running.stop()


HTTP_LISTENERS = ["native", "python"]    # switch traces exchanged in C, or all by uvicorn


@pytest.fixture(params=HTTP_LISTENERS)
def service(request, store, ingest_records, monkeypatch):
    """The service with each HTTP listener in turn (CDRTRACE_HTTP)."""
    monkeypatch.setenv("CDRTRACE_HTTP", request.param)
    yield from _serving(store, ingest_records)


AGI_LISTENERS = ["native", "python"]     # the C exchange, and its pure-Python reference


@pytest.fixture(params=AGI_LISTENERS)
def agi_service(request, store, ingest_records, monkeypatch):
    """The service with each FastAGI listener in turn (CDRTRACE_AGI)."""
    monkeypatch.setenv("CDRTRACE_AGI", request.param)
    yield from _serving(store, ingest_records)


def call(running, method, path, token=None, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, running.url + path, headers=headers, timeout=10, **kw)


# ------------------------------------------------------------------ tokens

def test_a_token_is_shown_once_stored_hashed_and_revoked_at_once(tmp_path, capsys):
    db = str(tmp_path / "db")
    assert cli.main(["init", "--db", db]) == 0
    capsys.readouterr()
    assert cli.main(["token", "create", "--name", "pbx-1", "--role", "switch", "--db", db,
                     "--json"]) == 0
    token = json.loads(capsys.readouterr().out)["token"]
    assert cli.main(["token", "list", "--db", db, "--json"]) == 0
    listed = capsys.readouterr().out
    assert "pbx-1" in listed and token not in listed and token[4:] not in listed
    with cdrtrace.open(db) as store:
        assert store.tokens.principal(token).role == "switch"
        assert store.tokens.principal(token + "x") is None
        actions = [e["action"] for e in testing.audit_entries(store)]
        assert actions[-1] == "token_create"
    assert cli.main(["token", "revoke", "pbx-1", "--db", db]) == 0
    with cdrtrace.open(db) as store:
        assert store.tokens.principal(token) is None
    assert cli.main(["token", "create", "--name", "x", "--role", "root", "--db", db]) == 2


def test_a_token_given_a_life_is_refused_once_it_is_over(tmp_path, capsys):
    """token create --expires-days: the token works until then, over HTTP too, and is
    refused from then on as a revoked one is (401), even where its reading is kept; list
    and the audit log say when. A life of 0 days or less, or past 100 years, is refused."""
    from cdrtrace.evidence import tokens as tokens_module

    db = str(tmp_path / "db")
    assert cli.main(["init", "--db", db]) == 0
    assert cli.main(["token", "create", "--name", "care-1", "--role", "care", "--db", db,
                     "--expires-days", "30", "--json"]) == 0
    capsys.readouterr()
    assert cli.main(["token", "list", "--db", db]) == 0
    listed = capsys.readouterr().out
    assert "care-1" in listed and "  expires 20" in listed
    store = cdrtrace.open(db)
    running = Service(store)
    try:
        (entry,) = store.tokens.listed()
        assert 29.99 < (entry["expires_us"] - entry["created_us"]) / 86_400e6 <= 30
        created = [e for e in testing.audit_entries(store) if e["action"] == "token_create"]
        assert created[-1]["details"]["expires"].startswith("20")
        life = 1.5                                        # seconds
        token = store.tokens.create("pbx-1", "switch", days=life / 86_400)
        born = time.monotonic()
        assert store.tokens.principal(token).name == "pbx-1"
        answer = call(running, "POST", "/v1/trace", token, json={"line": LINE, "at": AT})
        assert answer.status_code != 401 or time.monotonic() - born >= life
        time.sleep(max(0.0, life - (time.monotonic() - born)) + 0.1)
        assert store.tokens.principal(token) is None      # though its reading is kept
        assert call(running, "POST", "/v1/trace", token,
                    json={"line": LINE, "at": AT}).status_code == 401
        assert call(running, "GET", "/v1/status/3035550110", token).status_code == 401
        listed = call(running, "GET", "/v1/tokens", store.tokens.create("op", "operator"))
        assert {t["name"]: t["expires_us"] is not None for t in listed.json()} == {
            "care-1": True, "pbx-1": True, "op": False}
        store.tokens.revoke("pbx-1")            # /metrics: when each live one is refused from
        expiry = [line for line in call(running, "GET", "/metrics").text.splitlines()
                  if line.startswith("cdrtrace_token_expiry_timestamp_seconds{")]
        assert len(expiry) == 1, expiry
        assert 'token="care-1"' in expiry[0] and 'role="care"' in expiry[0]
        assert float(expiry[0].rpartition(" ")[2]) == pytest.approx(entry["expires_us"] / 1e6)
        for days in (0, -1, 36_501, True, "1"):
            with pytest.raises(cdrtrace.CdrTraceError, match="a token's life is more than 0"):
                store.tokens.create(f"x{days}", "switch", days=days)
        assert tokens_module.MAX_DAYS == 36_500
    finally:
        running.stop()
        store.close()
    assert cli.main(["token", "create", "--name", "y", "--role", "care", "--db", db,
                     "--expires-days", "0"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["token", "list", "--expires-days", "3"], "token list takes no --expires-days"),
    (["token", "revoke", "pbx-1", "--role", "care", "--name", "x"],
     "token revoke takes no --name, --role (only token create does)"),
    (["token", "list", "pbx-1"], "token list takes no name"),
    (["token", "create", "pbx-1", "--role", "switch"], "takes its name as --name pbx-1"),
])
def test_a_token_command_says_which_of_its_flags_it_does_not_take(tmp_path, capsys, argv,
                                                                   message):
    """A flag a token command would leave unread is refused, not ignored (a --expires-days
    given to list expires nothing), and nothing is changed."""
    db = str(tmp_path / "db")
    assert cli.main(["init", "--db", db]) == 0
    assert cli.main(["token", "create", "--name", "pbx-1", "--role", "switch", "--db", db]) == 0
    capsys.readouterr()
    assert cli.main([*argv, "--db", db]) == 2
    assert message in capsys.readouterr().err
    with cdrtrace.open(db) as store:
        assert [(t["name"], t["revoked_us"]) for t in store.tokens.listed()] == [("pbx-1", None)]


@pytest.mark.parametrize("reads", ["native", "python"])
def test_a_token_whose_record_changed_is_read_again_at_the_next_request(tmp_path, monkeypatch,
                                                                        reads):
    """principal() keeps its reading of a token's record, not the answer: a record marked
    revoked with its hash entry left (no cdrtrace writes that, a store might hold it)
    refuses the token at once. Its two entries are read in C, or by py-lmdb."""
    if reads == "python":
        monkeypatch.setenv("CDRTRACE_INDEX_WRITER", "python")
    with cdrtrace.open(str(tmp_path / "db"), create=True) as store:
        assert store.tokens._native is (reads == "native")
        token = store.tokens.create("pbx-1", "switch")
        assert store.tokens.principal(token).role == "switch"
        assert store.tokens.principal(token).role == "switch"      # from what it kept

        def mark(txn):
            db = store.envs.db["tokens"]
            record = json.loads(txn.get(b"n:pbx-1", db=db))
            txn.put(b"n:pbx-1", json.dumps({**record, "revoked_us": 1}).encode(), db=db)
        store.envs.ewrite(mark)
        assert store.tokens.principal(token) is None
        other = store.tokens.create("pbx-2", "switch")
        assert store.tokens.principal(other).name == "pbx-2"
        store.tokens.revoke("pbx-2")              # the hash entry deleted
        assert store.tokens.principal(other) is None
        assert store.tokens.principal("cdt_" + "0" * 40) is None
        third = store.tokens.create("pbx-3", "switch")
        store.envs.ewrite(lambda txn: txn.delete(b"n:pbx-3", db=store.envs.db["tokens"]))
        assert store.tokens.principal(third) is None     # a hash entry without its record


# ------------------------------------------------------------------ HTTP

def test_each_role_has_exactly_its_rights(service):
    store, running, tokens = service
    allowed = {
        ("POST", "/v1/trace", "switch"): {"json": {"line": LINE, "at": AT}},
        ("GET", f"/v1/status/{LINE}", "care"): {},
        ("GET", f"/v1/last-calls/{LINE}", "analyst"): {},
        ("GET", "/v1/cases", "analyst"): {},
        ("GET", "/v1/reports/repeat-origins?min_calls=1", "analyst"): {},
        ("POST", "/v1/disclose", "legal"): {"json": {
            "kind": "subpoena", "reference": "S-1", "agency": "PD", "officer": "O",
            "case_number": "1", "line": LINE}},
        ("GET", "/v1/stats", "operator"): {},
    }
    for (method, path, role), kw in allowed.items():
        assert call(running, method, path, **kw).status_code == 401          # no token
        assert call(running, method, path, "cdt_forged", **kw).status_code == 401
        for other in tokens:
            got = call(running, method, path, tokens[other], **kw)
            assert got.status_code == (200 if other == role else 403), (path, other, got.text)


def test_switch_and_care_answers_never_name_the_caller(service):
    store, running, tokens = service
    traced = call(running, "POST", "/v1/trace", tokens["switch"], json={"line": LINE, "at": AT})
    status = call(running, "GET", f"/v1/status/{LINE}", tokens["care"])
    assert traced.json()["outcome"] == "success" and traced.json()["announcement_id"] == "COT-SUCCESS"
    assert status.json()["progress"][0]["origin"] == "Caller A"
    for text in (traced.text, status.text):
        assert CALLER not in text and "Pat" not in text
    assert store.trace_records(LINE, analyst="ann")[0]["requested_by"] == "token:switch-1"
    calls = call(running, "GET", f"/v1/last-calls/{LINE}", tokens["analyst"]).json()
    assert calls[0]["calling"] == "+1" + CALLER
    entry = testing.audit_entries(store)[-1]
    assert (entry["actor"], entry["action"]) == ("token:analyst-1", "read_last_calls")


def test_a_switch_trace_on_the_service_s_clock_distrusts_a_call_stamped_after_it(
        service, ingest_records):
    """A *57 posted with no time is activated on the service's clock: a call already
    recorded but stamped after it (its switch's clock runs ahead) may be the call before
    the *57, and none is named. Given the switch's time, the rules are as ever."""
    store, running, tokens = service
    now = time.time()

    def stamp(seconds: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now + seconds))
    ingest_records(cdr(src="7205550101", dst="3035550177", start=stamp(-3600),
                       answer=stamp(-3595), end=stamp(-3500)) + b"\n"
                   + cdr(src="7205550102", dst="3035550177", disposition="NO ANSWER",
                         answer="", start=stamp(60), end=stamp(80), uniqueid="u2") + b"\n")
    clocked = call(running, "POST", "/v1/trace", tokens["switch"], json={"line": "3035550177"})
    assert clocked.json()["outcome"] == "untraceable"
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    given = call(running, "POST", "/v1/trace", tokens["switch"],
                 json={"line": "3035550177", "at": at})
    assert given.json()["outcome"] == "success"


def test_metrics_show_a_feed_whose_follower_died(service):
    """A stalled feed holds its lines' traces pending: /metrics says so, for an alert."""
    store, running, _ = service
    testing.pretend_live_feed(store, 0)
    assert 'cdrtrace_feed_stalled{feed="(no feed)"} 0.0' in call(running, "GET", "/metrics").text
    testing.stall_feed(store, 0)
    assert 'cdrtrace_feed_stalled{feed="(no feed)"} 1.0' in call(running, "GET", "/metrics").text


def test_metrics_show_a_feed_held_until_its_switch_shows_it_logs_every_call(service, tmp_path):
    """A feed whose switch may leave calls that rang a line unlogged, and that has shown
    none logged (FreeSWITCH's A legs alone, here), names no caller: /metrics says so."""
    store, running, _ = service
    held = 'cdrtrace_feed_held{feed="(no feed)"} '
    assert held + "0.0" in call(running, "GET", "/metrics").text      # Asterisk's calls
    a_leg = (b'"Pat","7205550101","2001","public","2026-03-02 14:00:00","2026-03-02 14:00:05",'
             b'"2026-03-02 14:01:00","60","55","NORMAL_CLEARING","a-1","b-1","","PCMU","PCMU"\n')
    (path := tmp_path / "fs.csv").write_bytes(a_leg)
    cdrtrace.ingest(store, [str(path)], fmt="freeswitch")
    assert held + "1.0" in call(running, "GET", "/metrics").text
    show_freeswitch_legs(store, tmp_path)
    assert held + "0.0" in call(running, "GET", "/metrics").text


def test_a_revoked_token_stops_at_once(service):
    store, running, tokens = service
    assert call(running, "GET", f"/v1/status/{LINE}", tokens["care"]).status_code == 200
    store.tokens.revoke("care-1")
    assert call(running, "GET", f"/v1/status/{LINE}", tokens["care"]).status_code == 401


def test_health_metrics_and_documentation_without_a_token(service):
    store, running, tokens = service
    assert call(running, "GET", "/healthz").json() == {"ok": True}
    assert call(running, "GET", "/readyz").json() == {"ready": True}
    for _ in range(3):       # the call once, then twice already traced
        call(running, "POST", "/v1/trace", tokens["switch"], json={"line": LINE, "at": AT})
    metrics = call(running, "GET", "/metrics").text
    assert 'cdrtrace_traces_total{outcome="success",via="http"} 1.0' in metrics
    assert 'cdrtrace_traces_total{outcome="already_traced",via="http"} 2.0' in metrics
    assert 'cdrtrace_trace_seconds_count{via="http"} 3.0' in metrics
    assert "cdrtrace_trace_seconds_bucket" in metrics and "cdrtrace_feed_records" in metrics
    # one at a time, each trace had a commit of its own
    assert "cdrtrace_trace_commits_total 3.0" in metrics
    assert "cdrtrace_traces_committed_total 3.0" in metrics
    spec = call(running, "GET", "/openapi.json").json()
    assert "/v1/trace" in spec["paths"] and "/v1/disclose" in spec["paths"]
    page = call(running, "GET", "/docs").text
    assert "/openapi.json" in page and "http://" not in page and "https://" not in page
    assert call(running, "POST", "/v1/trace", tokens["switch"],
                content=b"x" * (70 << 10)).status_code == 413


# a self-signed pair for localhost and 127.0.0.1, for these tests only (tests/tls)
TLS = (os.path.join(os.path.dirname(__file__), "tls", "cert.pem"),
       os.path.join(os.path.dirname(__file__), "tls", "key.pem"))


def own_key(folder, mode=0o600) -> str:
    """The tests' TLS key copied into folder with mode (a checkout's is 0644, which
    `serve` refuses)."""
    import shutil

    key = os.path.join(folder, "key.pem")
    shutil.copyfile(TLS[1], key)
    os.chmod(key, mode)
    return key


@pytest.mark.parametrize("listener", HTTP_LISTENERS)
def test_the_http_api_over_tls(store, ingest_records, monkeypatch, listener):
    """With a certificate every request is served over TLS (the switches' traces too:
    the C exchange cannot read them, so CDRTRACE_HTTP does not matter), with the same
    answers and rights; a request in clear text gets nothing."""
    monkeypatch.setenv("CDRTRACE_HTTP", listener)
    ingest_records(cdr(src=CALLER, dst=LINE, start="2026-03-02 14:03:00",
                       answer="2026-03-02 14:03:05", end="2026-03-02 14:03:30") + b"\n")
    running = Service(store, tls=TLS)
    try:
        switch = store.tokens.create("switch-1", "switch")
        trusting = ssl.create_default_context(cafile=TLS[0])
        with httpx.Client(base_url=running.url, verify=trusting, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            assert client.post("/v1/trace", json={"line": LINE, "at": AT}).status_code == 401
            answer = client.post("/v1/trace", json={"line": LINE, "at": AT},
                                 headers={"Authorization": f"Bearer {switch}"})
            assert answer.status_code == 200 and answer.json()["outcome"] == "success"
            assert CALLER[-7:] not in answer.text
        with pytest.raises(httpx.HTTPError):          # not TLS: no answer at all
            httpx.post(f"http://127.0.0.1:{running.ports['http']}/v1/trace",
                       json={"line": LINE}, headers={"Authorization": f"Bearer {switch}"},
                       timeout=5)
        with pytest.raises(httpx.ConnectError):       # a client that checks: not its CA's
            httpx.get(running.url + "/healthz", timeout=5)
    finally:
        running.stop()


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01"])     # nothing, a ClientHello's start
def test_a_tls_handshake_has_the_keep_alive_to_end(store, monkeypatch, sent):
    """A connection that does not end its handshake is closed after the keep-alive, as an
    idle one is (asyncio's own limit is 60 s, and uvicorn's bound on connections counts
    only those past their handshake), and counted in /metrics (asyncio drops it unseen);
    then one that does, and says nothing, is closed too, and not counted."""
    from cdrtrace.service import http

    monkeypatch.setattr(http, "KEEP_ALIVE", 0.3)
    running = Service(store, tls=TLS)
    client = ssl.create_default_context(cafile=TLS[0])

    def handshakes_refused() -> int:
        text = httpx.get(running.url + "/metrics", verify=client, timeout=10).text
        found = re.search(r'^cdrtrace_refused_total\{reason="handshake",via="http"\} (\S+)$',
                          text, re.M)
        return int(float(found.group(1))) if found else 0
    try:
        with socket.create_connection(("127.0.0.1", running.ports["http"]), 5) as raw:
            raw.sendall(sent)
            started = time.monotonic()
            assert _closed(raw) and time.monotonic() - started < 2
        deadline = time.monotonic() + 10
        while handshakes_refused() != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", running.ports["http"]), 5) as raw, \
                client.wrap_socket(raw, server_hostname="localhost") as tls:
            started = time.monotonic()
            assert tls.recv(100) == b"" and time.monotonic() - started < 2
        time.sleep(0.3 + 1.0 + 0.3)                       # past the count's own time
        assert handshakes_refused() == 1                  # the /metrics reads: not counted
    finally:
        running.stop()


def test_the_api_s_tls_takes_only_forward_secret_aead_suites(store):
    """TLS 1.3, or 1.2 with ECDHE and AES-GCM or ChaCha20; a client offering only an older
    suite (CBC with SHA-1 or SHA-384 MACs) or an older version gets no session."""
    running = Service(store, tls=TLS)
    try:
        def handshake(version, ciphers=None):
            client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            client.load_verify_locations(TLS[0])
            with warnings.catch_warnings():     # TLS 1.1 is deprecated: hence the test
                warnings.simplefilter("ignore", DeprecationWarning)
                client.minimum_version = client.maximum_version = version
            if ciphers:
                client.set_ciphers(ciphers + ":@SECLEVEL=0")
            with socket.create_connection(("127.0.0.1", running.ports["http"]), 5) as raw, \
                    client.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.version(), tls.cipher()[0]
        assert handshake(ssl.TLSVersion.TLSv1_3)[0] == "TLSv1.3"
        assert handshake(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256") == (
            "TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")
        for weak in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                handshake(ssl.TLSVersion.TLSv1_2, weak)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(ssl.TLSVersion.TLSv1_1, "ALL")
    finally:
        running.stop()


@pytest.mark.parametrize("http, tls, plain, refused", [
    ("127.0.0.1:8057", None, False, False),
    ("[::1]:8057", None, False, False),
    ("localhost:8057", None, False, False),
    (":8057", None, False, False),                   # no host: loopback
    ("0.0.0.0:8057", None, False, True),
    ("10.20.0.5:8057", None, False, True),
    ("[::]:8057", None, False, True),
    ("api.carrier.example:8057", None, False, True),
    ("0.0.0.0:8057", TLS, False, False),
    ("0.0.0.0:8057", None, True, False),
])
def test_the_api_without_tls_listens_on_loopback_unless_told(http, tls, plain, refused):
    from cdrtrace.service.server import check_exposure
    if refused:
        with pytest.raises(cdrtrace.CdrTraceError, match="clear text: give --tls-cert"):
            check_exposure(http, tls, plain)
    else:
        check_exposure(http, tls, plain)


@pytest.mark.parametrize("flags, message", [
    (["--http", "0.0.0.0:0"], "without TLS would send bearer tokens"),
    (["--http", "127.0.0.1:0", "--tls-cert", TLS[0]], "--tls-cert and --tls-key go together"),
    (["--http", "127.0.0.1:0", "--tls-cert", TLS[1], "--tls-key", TLS[1]],
     "cannot serve TLS with --tls-cert"),
    (["--http", "127.0.0.1:0", "--tls-cert", TLS[0], "--tls-key", "/nonexistent/key.pem"],
     "cannot serve TLS with --tls-cert"),
    (["--agi", "127.0.0.1:0", "--agi-allow", "10.0.0.0/8", "--agi-allow", "10.0.0.0/33"],
     "--agi-allow '10.0.0.0/33' is not a network"),
])
def test_serve_refuses_an_exposed_or_broken_api_before_listening(tmp_path, flags, message):
    """In a process of its own: one that did not refuse would serve until stopped."""
    import subprocess
    import sys

    db = str(tmp_path / "s")
    assert cli.main(["init", "--db", db]) == 0
    done = subprocess.run([sys.executable, "-m", "cdrtrace.cli", "serve", "--db", db, *flags],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr


@pytest.mark.parametrize("flag, agi_impl", [("--http", "native"), ("--agi", "native"),
                                             ("--agi", "python")])
def test_serve_names_the_address_it_cannot_listen_on(tmp_path, flag, agi_impl):
    """A port taken by another program, or an address not this machine's: one line naming
    the option and the address (before: "Address already in use" alone), exit 2."""
    import subprocess
    import sys

    db = str(tmp_path / "s")
    assert cli.main(["init", "--db", db]) == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        for where, reason in ((busy, "Address already in use"),
                              ("192.0.2.7:0", "Cannot assign requested address")):
            done = subprocess.run(
                [sys.executable, "-m", "cdrtrace.cli", "serve", "--db", db, flag, where,
                 "--plain-http"],
                capture_output=True, text=True, timeout=60,
                env={**os.environ, "CDRTRACE_AGI": agi_impl})
            assert (done.returncode, done.stderr) == (
                2, f"cdrtrace: error: cannot listen on {flag} {where}: {reason}\n")


def test_serve_refuses_a_tls_key_every_user_may_read(tmp_path):
    """A key others may read lets any user of the machine pose as the service, to the
    switches and to the CIC's analysts: refused, saying the fix. Its group may read it
    (Debian's ssl-cert group), and its owner of course."""
    import subprocess
    import sys

    from cdrtrace.service.server import tls_of

    key = own_key(tmp_path)
    for mode in (0o600, 0o640, 0o400):
        os.chmod(key, mode)
        assert tls_of(TLS[0], key) == (TLS[0], key)
    for mode in (0o644, 0o604, 0o602, 0o601):
        os.chmod(key, mode)
        with pytest.raises(cdrtrace.CdrTraceError, match=rf"open to every user .*\(mode {mode:o}\)"):
            tls_of(TLS[0], key)
    db = str(tmp_path / "s")
    assert cli.main(["init", "--db", db]) == 0
    done = subprocess.run([sys.executable, "-m", "cdrtrace.cli", "serve", "--db", db, "--http",
                           "127.0.0.1:0", "--tls-cert", TLS[0], "--tls-key", key],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"run `chmod 600 {key}`" in done.stderr


GOOD_KEY = "0123456789abcdef" * 4


@pytest.mark.parametrize("content, mode, message", [
    (None, 0o600, "cannot read --agi-key-file"),
    (GOOD_KEY, 0o640, "is readable by other users (mode 640): run `chmod 600"),
    ("short", 0o600, "line 1: a key is at least 32"),
    (GOOD_KEY[:31], 0o600, "line 1: a key is at least 32"),
    (GOOD_KEY + "&x=1", 0o600, "line 1: a key is at least 32"),
    (f"{GOOD_KEY}\n\n{GOOD_KEY}x y", 0o600, "line 3: a key is at least 32"),
    ("\n".join([GOOD_KEY] * 9), 0o600, "must hold 1 to 8 keys, one a line (it holds 9)"),
    ("  \n", 0o600, "must hold 1 to 8 keys, one a line (it holds 0)"),
    ("\u00e9" * 40, 0o600, "cannot read --agi-key-file"),
    ("/dev/zero", None, "is not a key file"),
    ("x" * 5000, 0o600, "is not a key file"),
])
def test_serve_refuses_an_agi_key_file_it_cannot_trust(tmp_path, content, mode, message):
    """A key others can read, or one a URL would not carry as it is, is refused before
    anything opens (exit 2, in a process of its own), saying which line; good ones are
    read as their lines, blank ones left out."""
    import subprocess
    import sys

    from cdrtrace.store import private

    db, key_file = str(tmp_path / "s"), tmp_path / "agi.key"
    assert cli.main(["init", "--db", db]) == 0
    named = content if mode is None else str(key_file)
    if content is not None and mode is not None:
        key_file.write_text(content + "\n", encoding="utf-8")
        key_file.chmod(mode)
    done = subprocess.run([sys.executable, "-m", "cdrtrace.cli", "serve", "--db", db, "--agi",
                           "127.0.0.1:0", "--agi-key-file", named],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    key_file.write_text(f"  {GOOD_KEY}\n", encoding="ascii")
    key_file.chmod(0o600)
    assert private.read_key(key_file, "--agi-key-file") == GOOD_KEY
    assert private.read_keys(key_file, "--agi-key-file") == (GOOD_KEY,)
    key_file.write_text(f"{GOOD_KEY}\n\n {GOOD_KEY[::-1]}\n", encoding="ascii")
    assert private.read_keys(key_file, "--agi-key-file") == (GOOD_KEY, GOOD_KEY[::-1])


@pytest.mark.parametrize("listener", AGI_LISTENERS)
def test_fastagi_with_a_key_traces_only_for_a_request_that_names_it(
        store, ingest_records, monkeypatch, listener, caplog):
    """FastAGI has no authentication, and any local user can reach a loopback listener
    (and choose the trace's time with agi_arg_1). With --agi-key-file, only a dialplan
    that names the key traces: any other request gets a VERBOSE for Asterisk's log and
    no trace, and is logged, the key never."""
    import logging

    from cdrtrace.service import agi as agi_module

    monkeypatch.setenv("CDRTRACE_AGI", listener)
    caplog.set_level(logging.INFO, logger="cdrtrace.service")
    ingest_records(cdr(src=CALLER, dst=LINE, start="2026-03-02 14:03:00",
                       answer="2026-03-02 14:03:05", end="2026-03-02 14:03:30") + b"\n")
    running = Service(store, agi_key=GOOD_KEY)
    try:
        def asking(script):
            return agi(running, asterisk(agi_arg_1=AT, agi_network_script=script,
                                         agi_request="agi://127.0.0.1:4573/" + script),
                       replies=("200 result=1",) * 3)[0]
        refused = ["trace", "trace?key=", f"trace?key={GOOD_KEY[:-1]}",
                   f"trace?key={GOOD_KEY}x", f"trace?key=x&key={GOOD_KEY}",
                   f"trace?other={GOOD_KEY}", f"trace?key={GOOD_KEY.upper()}"]
        for script in refused:
            assert asking(script) == [agi_module.NOT_KEYED], script
        assert store.trace_records(analyst="ann") == []
        assert sum("its key is missing or wrong" in r.getMessage()
                   for r in caplog.records) == len(refused)
        assert asking(f"trace?key={GOOD_KEY}")[0] == 'SET VARIABLE COT_OUTCOME "success"'
        assert asking(f"trace?x=1&key={GOOD_KEY}")[0] == \
            'SET VARIABLE COT_OUTCOME "already_traced"'
        assert len(store.trace_records(analyst="ann")) == 2     # each activation recorded
        assert not any(GOOD_KEY.lower() in r.getMessage().lower() for r in caplog.records)
    finally:
        running.stop()


def endless_head(port: int, start: bytes) -> bytes:
    """A request's start, then 200 KiB of headers, never ended: what the service answers
    until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(start)
        answer = b""
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            for i in range(200):
                sock.sendall(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1024))
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(4096):
                answer += chunk
    return answer


def test_http_bounds_the_request_head_and_a_chunked_body(service):
    store, running, tokens = service
    answer = endless_head(running.ports["http"], b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert "headers too large" in refusal(answer, 400)
    with socket.create_connection(("127.0.0.1", running.ports["http"]), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n")      # no colon
        assert refusal(read_to_end(sock), 400) == "Invalid HTTP request received."

    def chunks():
        for _ in range(80):                              # 80 KiB, no Content-Length
            yield b"x" * 1024
    response = httpx.post(running.url + "/v1/trace", content=chunks(), timeout=10,
                          headers={"Authorization": f"Bearer {tokens['switch']}"})
    assert response.status_code == 413
    assert store.trace_records(analyst="ann") == []


def test_a_trace_request_a_switch_would_not_send_gets_the_documented_error(service):
    store, running, tokens = service
    for body in ({"line": 3035550110}, {"line": LINE, "wait": 11}, {"line": LINE, "wait": -1},
                 {"line": "3" * 65}, {"at": AT}, [LINE]):
        response = call(running, "POST", "/v1/trace", tokens["switch"], json=body)
        assert response.status_code == 422, body          # FastAPI's validation error
    response = call(running, "POST", "/v1/trace", tokens["switch"], content=b"{not json")
    assert response.status_code == 422
    # numbers JSON cannot give back (1e999 is read as infinity): the same 422, the value
    # as text (FastAPI's own handler failed on them: a 500)
    for raw, shown in ((b'{"line": 1e999}', "inf"), (b'{"line": NaN}', "nan"),
                       (b'{"line": "3035550110", "wait": -Infinity}', "-inf")):
        response = httpx.post(running.url + "/v1/trace", content=raw, timeout=10, headers={
            "Authorization": f"Bearer {tokens['switch']}", "Content-Type": "application/json"})
        assert response.status_code == 422, (raw, response.text)
        assert response.json()["detail"][0]["input"] == shown
    assert call(running, "POST", "/v1/trace", None, json={"line": LINE}).status_code == 401
    assert call(running, "POST", "/v1/trace", tokens["care"], json={"line": LINE}).status_code == 403
    assert store.trace_records(analyst="ann") == []
    response = call(running, "POST", "/v1/trace", tokens["switch"], json={"line": "anonymous"})
    assert response.status_code == 400 and "error" in response.json()
    response = call(running, "POST", "/v1/trace", tokens["switch"], json={"line": LINE, "at": AT})
    assert response.status_code == 200 and response.json()["outcome"] == "success"


def _exchange(port: int, data: bytes, answers: int) -> list[bytes]:
    """Send raw bytes on one connection; the first `answers` HTTP responses, in order."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        got, responses = b"", []
        while len(responses) < answers:
            head_end = got.find(b"\r\n\r\n")
            if head_end >= 0:
                length = int(next(h.split(b":")[1] for h in got[:head_end].split(b"\r\n")
                                  if h.lower().startswith(b"content-length:")))
                if len(got) >= head_end + 4 + length:
                    responses.append(got[:head_end + 4 + length])
                    got = got[head_end + 4 + length:]
                    continue
            chunk = sock.recv(65536)
            assert chunk, responses
            got += chunk
    return responses


def _post(line: str, token: str, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    body = json.dumps({"line": line, "at": AT}).encode()
    return (b"POST /v1/trace HTTP/" + version + b"\r\nHost: x\r\nAuthorization: Bearer " +
            token.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " +
            str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def test_a_switch_trace_is_answered_on_the_connection_the_same_as_through_the_app(service, monkeypatch):
    from cdrtrace.service.http import Front

    store, running, tokens = service
    through_app = []
    original = Front.__call__

    async def counting(self, scope, receive, send):
        through_app.append(scope["path"])
        return await original(self, scope, receive, send)
    monkeypatch.setattr(Front, "__call__", counting)
    port = running.ports["http"]
    (plain,) = _exchange(port, _post(LINE, tokens["switch"]), 1)
    assert through_app == []                       # answered by the connection itself
    # the same request the usual way (Connection: close), for the same answer
    (usual,) = _exchange(port, _post(LINE, tokens["switch"], b"Connection: close\r\n"), 1)
    assert through_app == ["/v1/trace"]
    first, second = plain.split(b"\r\n\r\n")[1], usual.split(b"\r\n\r\n")[1]
    assert plain.startswith(b"HTTP/1.1 200 OK\r\n") and usual.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-type: application/json" in plain.lower()
    a, b = json.loads(first), json.loads(second)
    assert (a["outcome"], b["outcome"]) == ("success", "already_traced")
    assert set(a) == set(b) and a["trace_id"] != b["trace_id"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["trace_id", "line", "announcement", "call_time"]),
                       st.none() | st.text()))
def test_a_trace_answered_on_the_connection_is_rendered_as_fastapi_renders_it(value):
    """The hot path's JSON (orjson) is byte for byte Starlette's JSONResponse, whatever the
    text (a carrier's wording of an announcement is any text); what neither can encode
    (a lone surrogate) fails the same way."""
    from starlette.responses import JSONResponse

    from cdrtrace.service.http import json_body
    try:
        expected: bytes | type = JSONResponse(value).body
    except UnicodeEncodeError:
        expected = UnicodeEncodeError
    try:
        got: bytes | type = json_body(value)
    except UnicodeEncodeError:
        got = UnicodeEncodeError
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["http", "agi"]),
                          st.sampled_from(["success", "untraceable", "no_call"]),
                          st.sampled_from([0.0, 0.0005, 0.0007, 0.001, 0.003, 5.0, 7.5])
                          | st.floats(0, 10, allow_nan=False)), max_size=30))
def test_the_trace_metrics_are_exposed_as_prometheus_clients_own(observed):
    """service.metrics counts for less, and /metrics reads the same as prometheus_client's
    Counter and Histogram given the same traces (bucket bounds included), _created times
    aside."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from cdrtrace.service.metrics import BUCKETS, TraceMetrics
    reference, ours = CollectorRegistry(), CollectorRegistry()
    traces = Counter("cdrtrace_traces_total", "Traces by outcome", ["outcome", "via"],
                     registry=reference)
    latency = Histogram("cdrtrace_trace_seconds", "Trace latency, durable", ["via"],
                        buckets=BUCKETS, registry=reference)
    metrics = TraceMetrics()
    ours.register(metrics)
    for via, outcome, seconds in observed:
        traces.labels(outcome, via).inc()
        latency.labels(via).observe(seconds)
        metrics.observe(via, outcome, seconds)

    def text(registry):
        return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())
    assert text(ours) == text(reference)


def test_the_workers_counts_are_summed_whichever_worker_answers(tmp_path):
    """serve --workers: /metrics sums the counts every worker last wrote (metrics.Workers),
    a series' _created time being its first worker's; every worker answers the same."""
    from prometheus_client import CollectorRegistry, generate_latest

    from cdrtrace.service.metrics import Refusals, TraceMetrics, Workers

    def exposed(*collectors):
        registry = CollectorRegistry()
        for collector in collectors:
            registry.register(collector)
        return generate_latest(registry).decode()

    def created(text, series):
        return float(re.search(re.escape(series) + r" (\S+)", text).group(1))

    def masked(text):
        return sorted(re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", text).splitlines())
    first, second, alone = [(TraceMetrics(), Refusals()) for _ in range(3)]
    for traces, refusals in (first, alone):
        traces.observe("agi", "success", 0.0007)
        refusals.count("agi", "slow")
    time.sleep(0.01)
    for traces, refusals in (second, alone):
        traces.observe("agi", "success", 0.003)
        traces.observe("http", "no_call", 0.2)
        refusals.count("agi", "slow")
        refusals.count("http", "unauthorized")
    workers = [Workers(str(tmp_path), collectors, name)      # each writes its file
               for collectors, name in ((first, "1"), (second, "2"))]
    (tmp_path / "worker-3.json.new").write_text("[[")       # a write cut off: not read
    summed = exposed(workers[0])
    assert exposed(workers[1]) == summed
    for line in ('cdrtrace_traces_total{outcome="success",via="agi"} 2.0',
                 'cdrtrace_traces_total{outcome="no_call",via="http"} 1.0',
                 'cdrtrace_trace_seconds_bucket{le="0.001",via="agi"} 1.0',
                 'cdrtrace_trace_seconds_bucket{le="0.005",via="agi"} 2.0',
                 'cdrtrace_trace_seconds_count{via="agi"} 2.0',
                 'cdrtrace_refused_total{reason="slow",via="agi"} 2.0',
                 'cdrtrace_refused_total{reason="unauthorized",via="http"} 1.0'):
        assert line in summed.splitlines(), line
    for series in ('cdrtrace_traces_created{outcome="success",via="agi"}',
                   'cdrtrace_trace_seconds_created{via="agi"}',
                   'cdrtrace_refused_created{reason="slow",via="agi"}'):
        earlier = created(exposed(*first), series)
        assert earlier < created(exposed(*second), series)
        assert created(summed, series) == earlier
    assert masked(summed) == masked(exposed(*alone))      # as one process that saw it all


def test_a_worker_whose_supervisor_is_gone_clears_what_it_leaves(tmp_path, monkeypatch):
    """metrics.Workers.leave: under its supervisor, nothing is removed (a worker it starts
    again adds on the counts); without it, the worker's file and those of workers no
    longer running go, and the folder with the last of them; a running worker's stays,
    another user's too (which this user may not signal)."""
    import subprocess
    import sys

    from cdrtrace.service.metrics import TraceMetrics, Workers

    others, kill = 4_194_305, os.kill          # above any pid Linux gives (PID_MAX_LIMIT)

    def signalled(pid, signum):
        if pid == others:
            raise PermissionError(1, "Operation not permitted")
        return kill(pid, signum)
    monkeypatch.setattr(os, "kill", signalled)

    folder = tmp_path / "counts"
    folder.mkdir()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (ended.pid, running.pid, others):
            (folder / f"worker-{pid}-1.json").write_text("[]")
        (folder / f"worker-{ended.pid}-2.json.new").write_text("[[")
        (folder / "notes.txt").write_text("not a worker's")
        mine = Workers(str(folder), [TraceMetrics()])
        mine.leave()                         # its parent, as when it started, runs on
        assert len(list(folder.iterdir())) == 6
        mine.supervisor = -1                             # as if it had been killed
        mine.leave()
        assert sorted(p.name for p in folder.iterdir()) == sorted([
            "notes.txt", f"worker-{running.pid}-1.json", f"worker-{others}-1.json"])
    finally:
        running.kill()
        running.wait()
    (folder / "notes.txt").unlink()
    (folder / f"worker-{others}-1.json").unlink()
    mine.leave()                                          # the last one: the folder too
    assert not folder.exists()


def test_a_switch_body_the_hot_path_does_not_read_gets_the_same_answer_the_usual_way(service):
    """orjson reads only UTF-8: a UTF-16 body (which JSON allows, and FastAPI reads) goes
    the usual way, and is traced the same."""
    store, running, tokens = service
    body = json.dumps({"line": LINE, "at": AT}).encode("utf-16")
    request = (b"POST /v1/trace HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               + tokens["switch"].encode() + b"\r\nContent-Type: application/json\r\n"
               + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    (answer,) = _exchange(running.ports["http"], request, 1)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(answer.split(b"\r\n\r\n")[1])["outcome"] == "success"


def test_requests_pipelined_behind_a_switch_trace_are_answered_in_order(service):
    store, running, tokens = service
    pipelined = (_post(LINE, tokens["switch"]) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                 + _post(LINE, tokens["switch"]) + _post(LINE, "not-a-token"))
    answers = _exchange(running.ports["http"], pipelined, 4)
    assert [r.split(b"\r\n")[0] for r in answers] == [
        b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 401 Unauthorized"]
    bodies = [json.loads(r.split(b"\r\n\r\n")[1]) for r in answers]
    assert bodies[0]["outcome"] == "success" and bodies[1] == {"ok": True}
    assert bodies[2]["outcome"] == "already_traced" and "error" in bodies[3]
    assert len(store.trace_records(analyst="ann")) == 2


def test_a_shutdown_while_a_trace_body_arrives_answers_it_then_closes(service):
    import gc

    from cdrtrace.service.protocol import BoundedHttpTools

    def until(condition):
        deadline = time.monotonic() + 10
        while not any(isinstance(o, BoundedHttpTools) and condition(o) for o in gc.get_objects()):
            assert time.monotonic() < deadline
            time.sleep(0.02)

    store, running, tokens = service
    request = _post(LINE, tokens["switch"])
    port = running.ports["http"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
        sock.sendall(request[:-5])                       # the head, most of the body
        if os.environ["CDRTRACE_HTTP"] == "python":
            until(lambda p: p.collecting is not None)
        else:   # C reads ready connections in order: once a later request is answered,
            # it has read the part sent (that answer leaves `idle` idle, kept alive)
            idle.sendall(_post("anonymous", tokens["switch"]))
            assert idle.recv(65536).startswith(b"HTTP/1.1 400 ")
        running.loop.call_soon_threadsafe(running.stop_event.set)     # SIGTERM, as serve has it
        if os.environ["CDRTRACE_HTTP"] == "python":
            until(lambda p: p.closing)
        else:
            assert idle.recv(65536) == b""               # idle ones closed: stopping
        sock.sendall(request[-5:])
        answer = b""
        while chunk := sock.recv(65536):                 # to the close
            answer += chunk
    running.stop()
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in answer.lower()
    assert json.loads(answer.split(b"\r\n\r\n")[1])["outcome"] == "success"
    assert len(store.trace_records(analyst="ann")) == 1


def test_an_http_1_0_switch_gets_its_trace_the_usual_way(service):
    store, running, tokens = service
    (answer,) = _exchange(running.ports["http"], _post(LINE, tokens["switch"], version=b"1.0"), 1)
    assert answer.startswith(b"HTTP/1.1 200") and json.loads(answer.split(b"\r\n\r\n")[1])["outcome"] == "success"


def test_concurrent_traces_of_one_call_name_it_once(service):
    store, running, tokens = service
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(lambda _: call(
            running, "POST", "/v1/trace", tokens["switch"], json={"line": LINE, "at": AT}
        ).json()["outcome"], range(16)))
    assert sorted(outcomes) == ["already_traced"] * 15 + ["success"]


# ------------------------------------------------------------------ FastAGI

def agi(running, variables: dict, replies=("200 result=1",) * 3, raw: bytes | None = None,
        host="127.0.0.1"):
    """Speak as Asterisk: the variables, a blank line, then a reply per command."""
    sock = socket.create_connection((host, running.ports["agi"]), timeout=10)
    stream = sock.makefile("rwb")
    head = raw if raw is not None else b"".join(
        f"{k}: {v}\n".encode() for k, v in variables.items()) + b"\n"
    commands, rest = [], b""
    try:
        stream.write(head)
        stream.flush()
        for reply in replies:
            line = stream.readline()
            if not line:
                break
            commands.append(line.decode().strip())
            stream.write(reply.encode() + b"\n")
            stream.flush()
        rest = stream.read()      # the service closes the connection when it is done
    except (ConnectionResetError, BrokenPipeError):
        pass                      # closed on us: what a refused peer sees
    sock.close()
    return commands, rest


def asterisk(callerid=LINE, **extra):
    return {"agi_network": "yes", "agi_network_script": "trace",
            "agi_request": "agi://127.0.0.1/trace", "agi_channel": "PJSIP/303-00000001",
            "agi_language": "en", "agi_type": "PJSIP", "agi_uniqueid": "1772496000.1",
            "agi_version": "20.5.0", "agi_callerid": callerid, "agi_calleridname": "Home",
            "agi_dnid": "*57", "agi_context": "from-subscribers", "agi_extension": "*57",
            "agi_priority": "2", "agi_enhanced": "0.0", "agi_accountcode": "",
            "agi_threadid": "140230", **extra}


def test_fastagi_sets_the_outcome_for_the_dialplan(agi_service):
    store, running, tokens = agi_service
    commands, _ = agi(running, asterisk(agi_arg_1=AT))
    trace_id = store.trace_records(LINE, analyst="ann")[0]["trace_id"]
    assert commands == ['SET VARIABLE COT_OUTCOME "success"',
                        'SET VARIABLE COT_ANNOUNCEMENT "COT-SUCCESS"',
                        f'SET VARIABLE COT_TRACE_ID "{trace_id}"']
    commands, _ = agi(running, asterisk(agi_arg_1=AT))          # the same call again
    assert commands[0] == 'SET VARIABLE COT_OUTCOME "already_traced"'
    assert all(CALLER not in c for c in commands)


@given(st.sampled_from(list(Outcome)), st.text(max_size=12) | st.sampled_from(["", 'T1"', "T\\2"]))
def test_the_c_exchange_s_answer_is_the_three_commands(outcome, trace_id):
    """agi.answer (what the C exchange sends) is agi.commands (what the Python listener
    sends, one at a time), each ended by a newline: for every outcome and any trace id,
    quotes and backslashes included."""
    from cdrtrace.service import agi as fastagi

    result = TraceResult(trace_id, LINE, outcome, "2026-03-03T12:00:00Z", None)
    assert fastagi.answer(result) == "".join(c + "\n" for c in fastagi.commands(result)).encode()


def test_the_readme_s_asterisk_recipe_traces_at_the_switch_s_own_time(agi_service):
    """The README's *57 dialplan passes the switch's time of the *57 as the AGI's argument
    (STRFTIME of EPOCH, in UTC), so the activation is on the clock that stamped the CDRs:
    a call the switch stamped seconds before it is the one traced, whatever the service's
    own clock says. Asterisk's expansion, done here with the same strftime format."""
    import calendar

    store, running, tokens = agi_service
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    found = re.search(r"AGI\(agi://127\.0\.0\.1:4573/trace,"
                      r"\$\{STRFTIME\(\$\{EPOCH\},UTC,([^)]*)\)\}\)", readme)
    assert found, "the README's dialplan passes no time"
    switch_now = calendar.timegm((2026, 3, 2, 14, 3, 4))   # 4 s after the call began
    commands, _ = agi(running, asterisk(agi_arg_1=time.strftime(found[1],
                                                                time.gmtime(switch_now))))
    assert commands[0] == 'SET VARIABLE COT_OUTCOME "success"'
    record = store.trace_records(LINE, analyst="ann")[0]
    assert record["activated_us"] == switch_now * 1_000_000
    assert record["call"]["calling"] == "+1" + CALLER


@pytest.mark.parametrize("uniqueid", ["{epoch}.17", "pbx-denver-{epoch}.17"])
def test_without_a_time_argument_fastagi_traces_at_the_switch_s_time_of_the_57(
        store, ingest_records, monkeypatch, uniqueid):
    """A dialplan that passes no time: the activation is when Asterisk created the *57's
    channel, the epoch second agi_uniqueid begins with ([SYSTEMNAME-]EPOCH.SEQUENCE), on
    the clock that stamped the CDRs, not the service's. A switch's clock 2 minutes ahead
    of the service's stamps the call that rang the line 1 minute after the service's now:
    traced at the service's clock, that call would seem to come after the *57, and the
    trace would name the caller before it."""
    now = int(time.time())
    stamp = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))   # noqa: E731
    ingest_records(cdr(src="7205550100", dst=LINE, start=stamp(now - 3600),
                       answer=stamp(now - 3595), end=stamp(now - 3500), uniqueid="old.1")
                   + b"\n" + cdr(src=CALLER, dst=LINE, start=stamp(now + 60),
                                  answer=stamp(now + 65), end=stamp(now + 90),
                                  uniqueid="new.1") + b"\n")
    for listener in AGI_LISTENERS:
        monkeypatch.setenv("CDRTRACE_AGI", listener)
        running = Service(store)
        try:
            variables = asterisk(agi_uniqueid=uniqueid.format(epoch=now + 120))
            commands, _ = agi(running, variables)
        finally:
            running.stop()
        record = store.trace_records(LINE, analyst="ann")[-1]
        assert record["activated_us"] == (now + 120) * 1_000_000, listener
        assert record["call"]["calling"] == "+1" + CALLER
        assert commands[0] == ('SET VARIABLE COT_OUTCOME "success"' if listener == "native"
                               else 'SET VARIABLE COT_OUTCOME "already_traced"')


@pytest.mark.parametrize("uniqueid", ["", "1772496000", "abc.1", "{far}.1", "{ahead}.1",
                                      "{epoch}.1x"])
def test_fastagi_keeps_the_service_s_clock_when_agi_uniqueid_tells_no_time(uniqueid):
    """agi_uniqueid tells the *57's time only as [SYSTEMNAME-]EPOCH.SEQUENCE within a day
    behind and the stamped-ahead margin ahead of the service's clock (a channel's id given
    by an originate may be any text); otherwise the activation is the service's clock."""
    from cdrtrace.service import agi as fastagi
    from cdrtrace.store.lookup import STAMPED_AHEAD_US

    now = int(time.time())
    value = uniqueid.format(far=now - 2 * 86400, epoch=now,
                            ahead=now + STAMPED_AHEAD_US // 1_000_000 + 60)
    assert fastagi.activation(None, value) is None
    assert fastagi.activation(AT, value) == AT                 # the dialplan's own time
    assert fastagi.activation(None, f"{now - 30}.4") == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 30))


def test_a_caller_id_holding_a_line_break_cannot_choose_the_line_or_time_traced(agi_service):
    """Asterisk writes each agi_ variable once, its value as it is. A caller's name or
    number that held a line break would end its line there, and what follows could pose
    as another variable: the line to trace, read after the real one, or the time. Each
    listener refuses a block that names a variable a trace reads twice: no trace."""
    store, running, tokens = agi_service
    for name, value in (("agi_calleridname", f"Home\nagi_callerid: {LINE}"),
                        ("agi_callerid", f"{QUIET}\nagi_arg_1: {AT}")):
        variables = asterisk(QUIET, agi_arg_1=AT)
        variables[name] = value           # QUIET's own *57, its name or number forged
        assert agi(running, variables) == ([], b"")
    assert store.trace_records(LINE, analyst="ann") == []
    assert store.trace_records(QUIET, analyst="ann") == []
    commands, _ = agi(running, asterisk(QUIET, agi_arg_1=AT))     # the same, unforged
    assert commands[0] == 'SET VARIABLE COT_OUTCOME "no_call"'


def test_fastagi_hangup_mid_way_and_asterisk_errors(agi_service):
    store, running, tokens = agi_service
    commands, _ = agi(running, asterisk(agi_arg_1=AT),
                      replies=("HANGUP\n511 result=-1 Command Not Permitted on a dead channel",))
    assert len(commands) == 1                                 # nothing more after the hangup
    assert len(store.trace_records(LINE, analyst="ann")) == 1    # the trace is recorded
    commands, _ = agi(running, asterisk(agi_arg_1=AT), replies=(
        "520-Invalid command syntax.  Proper usage follows:\n520 End of proper usage.",))
    assert len(commands) == 1


def test_fastagi_refuses_what_asterisk_would_not_send(agi_service):
    store, running, tokens = agi_service
    assert agi(running, {}, raw=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == ([], b"")
    assert agi(running, {}, raw=b"agi_network: yes\n" * 200 + b"\n") == ([], b"")
    assert agi(running, asterisk(agi_network_script="other", agi_request="agi://h/other"),
               replies=("200 result=1",))[0][0].startswith("VERBOSE")
    commands, _ = agi(running, asterisk(callerid="anonymous"))
    assert commands[0] == 'SET VARIABLE COT_OUTCOME "failure"'
    assert store.trace_records(analyst="ann") == []


def _resolving(fault):
    """Tracer.record raising, in the shared commit: a rule's refusal (TraceError) or a
    fault of the code (RuntimeError); undone by the returned call."""
    from cdrtrace.errors import TraceError
    from cdrtrace.evidence.traces import Tracer

    def record(self, txn, index_txn, key, packed, at_us, **kw):
        raise fault("older calls are no longer held") if fault is TraceError else fault()
    patch = pytest.MonkeyPatch()
    patch.setattr(Tracer, "record", record)
    return patch.undo


@pytest.mark.parametrize("fault", ["rules", "code"])
def test_fastagi_answers_a_refused_trace_and_closes_on_a_fault(agi_service, fault):
    """Raised in the shared commit: the rules' refusal is a failure the switch announces,
    a fault of the code closes the connection; either way nothing is recorded, and the
    next trace is answered (the commit's thread goes on)."""
    from cdrtrace.errors import TraceError

    store, running, tokens = agi_service
    undo = _resolving(TraceError if fault == "rules" else RuntimeError)
    commands, _ = agi(running, asterisk(agi_arg_1=AT))
    undo()
    if fault == "rules":
        assert commands[0] == 'SET VARIABLE COT_OUTCOME "failure"' and len(commands) == 3
    else:
        assert commands == []
    assert store.trace_records(analyst="ann") == []
    commands, _ = agi(running, asterisk(agi_arg_1=AT))
    assert commands[0] == 'SET VARIABLE COT_OUTCOME "success"'


@pytest.mark.parametrize("fault", ["rules", "code"])
def test_http_answers_a_refused_trace_and_a_fault(service, fault):
    from cdrtrace.errors import TraceError

    store, running, tokens = service
    undo = _resolving(TraceError if fault == "rules" else RuntimeError)
    refused = call(running, "POST", "/v1/trace", tokens["switch"], json={"line": LINE, "at": AT})
    undo()
    if fault == "rules":
        assert refused.status_code == 400 and "no longer held" in refused.json()["error"]
    else:
        assert (refused.status_code, refused.json()) == (500, {"error": "Internal Server Error"})
    assert store.trace_records(analyst="ann") == []
    traced = call(running, "POST", "/v1/trace", tokens["switch"], json={"line": LINE, "at": AT})
    assert traced.json()["outcome"] == "success"


def test_a_time_the_store_s_clocks_show_twice_is_refused_over_http_and_fastagi(tmp_path):
    """A store in Denver: '2026-11-01T01:30' names 07:30 and 08:30 UTC. Over HTTP the
    trace is refused (400, naming both), the switch over FastAGI announces a failure, and
    nothing is recorded; with its offset it is traced."""
    store = cdrtrace.open(tmp_path / "denver", create=True, zone="America/Denver")
    switch = store.tokens.create("switch-1", "switch")
    running = Service(store)
    try:
        refused = httpx.post(running.url + "/v1/trace", timeout=10,
                             json={"line": LINE, "at": "2026-11-01T01:30"},
                             headers={"Authorization": f"Bearer {switch}"})
        assert refused.status_code == 400
        assert "2026-11-01T07:30:00Z or 2026-11-01T08:30:00Z" in refused.json()["error"]
        commands, _ = agi(running, asterisk(agi_arg_1="2026-11-01T01:30"))
        assert commands[0] == 'SET VARIABLE COT_OUTCOME "failure"'
        assert store.trace_records(analyst="ann") == []
        traced = httpx.post(running.url + "/v1/trace", timeout=10,
                            json={"line": LINE, "at": "2026-11-01T01:30-07:00"},
                            headers={"Authorization": f"Bearer {switch}"})
        assert traced.json()["activated_at"] == "2026-11-01T08:30:00Z"
    finally:
        running.stop()
        store.close()


def test_http_answers_500_when_a_durable_trace_cannot_be_written_out(service, monkeypatch):
    """The answer's JSON fails after the trace is durable: a 500 (the trace is recorded),
    never a connection left waiting; the next trace is answered."""
    from cdrtrace.evidence.outcomes import TraceResult

    store, running, tokens = service
    to_dict = TraceResult.to_dict

    def failing(self):
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "a lone surrogate")
    monkeypatch.setattr(TraceResult, "to_dict", failing)
    failed = call(running, "POST", "/v1/trace", tokens["switch"], json={"line": LINE, "at": AT})
    monkeypatch.setattr(TraceResult, "to_dict", to_dict)
    assert failed.status_code == 500
    assert len(store.trace_records(analyst="ann")) == 1
    traced = call(running, "POST", "/v1/trace", tokens["switch"], json={"line": LINE, "at": AT})
    assert traced.json()["outcome"] == "already_traced"


def _environment(*chunks: bytes):
    """read_environment over a peer fed these chunks of data: the variables, or the reason
    the connection is refused."""
    from cdrtrace.service import agi as agi_module

    async def read():
        listener = agi_module.FastAGI(lambda line, at: None)
        listener.loop = asyncio.get_running_loop()
        peer = agi_module.Peer(listener)
        for chunk in chunks:
            peer.data_received(chunk)
        peer.eof_received()
        try:
            return await agi_module.read_environment(peer), list(peer.lines)
        except agi_module.Rejected as exc:
            return str(exc)
    return asyncio.run(read())


def test_fastagi_reads_the_variable_block_as_asterisk_writes_it():
    assert _environment(b"agi_request: agi://10.0.0.5:4573/trace?x=1\nagi_callerid:3035550110",
                        b"\nagi_arg_1 :  2026-03-02T23:00:00Z \n\n200 result=1\n") == (
        {"agi_request": "agi://10.0.0.5:4573/trace?x=1", "agi_callerid": "3035550110",
         "agi_arg_1": "2026-03-02T23:00:00Z"}, [b"200 result=1"])      # the rest kept
    assert _environment(b"agi_network: yes\r\nagi_callerid: 1\r\nagi_network: no\r\n\r\n") == (
        {"agi_callerid": "1"}, [])            # CRLF; what no trace reads: not kept, even twice
    assert _environment(b"agi_callerid: 1\nagi_arg_1: 2026-03-02T14:00:00Z\nagi_arg_1: 1\n\n") \
        == "a variable sent twice: 'agi_arg_1'"       # a line break in a value: refused
    assert _environment(b"agi_empty:\n\n") == ({}, [])                 # a block all the same
    assert _environment(b"agi_callerid: 1\r\r\n\r\r\n") == ({"agi_callerid": "1"}, [])
    assert _environment(b"agi_network: yes\nagi_callerid 3035550110\nagi_dnid: *57\n\n") == \
        "not an AGI variable line: 'agi_callerid 3035550110'"
    assert _environment(b"agi_network: yes\n x_agi_y: 1\n\n") == \
        "not an AGI variable line: ' x_agi_y: 1'"
    assert _environment(b"\n") == "no agi_ variables"
    assert _environment(b"agi_network: yes\n") == "the peer hung up"     # no blank line
    assert _environment(b"agi_x: " + b"y" * 5000 + b"\n\n") == "a line over 4 KiB"
    assert _environment(b"agi_x: 1\n" * 129 + b"\n") == "more than 128 variable lines"


def test_each_fastagi_listener_refuses_a_block_for_the_reason_the_reference_gives(
        agi_service, caplog):
    import logging

    store, running, tokens = agi_service
    caplog.set_level(logging.INFO, logger="cdrtrace.service")
    refused = {
        b"agi_network: yes\nagi_callerid 3035550110\nagi_dnid: *57\n\n":
            "not an AGI variable line: 'agi_callerid 3035550110'",
        b"agi_network: yes\r\n x_agi_y: 1\r\n\r\n": "not an AGI variable line: ' x_agi_y: 1'",
        b"\n": "no agi_ variables",
        b"agi_x: " + b"y" * 5000 + b"\n\n": "a line over 4 KiB",
        b"agi_x: 1\n" * 129 + b"\n": "more than 128 variable lines",
        b"agi_network: yes\n": "the peer hung up",                     # then a hang-up
        b"agi_callerid: 1\nagi_callerid : 2\n\n": "a variable sent twice: 'agi_callerid'",
    }
    for block, reason in refused.items():
        with socket.create_connection(("127.0.0.1", running.ports["agi"]), timeout=5) as sock:
            sock.sendall(block)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(100) == b""                               # closed, nothing sent
        deadline = time.monotonic() + 5
        while not any(r.getMessage().endswith(f" closed: {reason}") for r in caplog.records):
            assert time.monotonic() < deadline, (reason, [r.getMessage() for r in caplog.records])
            time.sleep(0.01)
    # a reply that is not Asterisk's: refused after the first command
    commands, _ = agi(running, asterisk(agi_arg_1=AT), replies=("HELLO",))
    assert commands == ['SET VARIABLE COT_OUTCOME "success"']
    deadline = time.monotonic() + 5
    while not any(r.getMessage().endswith(" closed: an unexpected reply: 'HELLO'")
                  for r in caplog.records):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert len(store.trace_records(LINE, analyst="ann")) == 1         # recorded all the same


@contextlib.contextmanager
def held_record():
    """Every trace's record (Tracer.record) held until release is set: (reached, release)."""
    from cdrtrace.evidence.traces import Tracer

    reached, release = threading.Event(), threading.Event()
    record = Tracer.record

    def held(self, *args, **kw):
        reached.set()
        assert release.wait(10)
        return record(self, *args, **kw)
    patch = pytest.MonkeyPatch()
    patch.setattr(Tracer, "record", held)
    try:
        yield reached, release
    finally:
        release.set()
        patch.undo()


def test_fastagi_bounds_what_a_peer_sends_while_its_trace_runs(agi_service, caplog):
    """Nothing is expected from Asterisk while the trace runs: what comes is kept for the
    replies, within the bound of a block; past it the connection is closed (for that
    reason, with no more than one command sent), and the trace is recorded all the same."""
    import gc
    import logging

    from cdrtrace.service import agi as agi_module

    store, running, tokens = agi_service
    caplog.set_level(logging.INFO, logger="cdrtrace.service")
    too_many = " closed: more than 128 variable lines"
    with held_record() as (reached, release):
        with socket.create_connection(("127.0.0.1", running.ports["agi"]), timeout=10) as sock:
            sock.sendall(b"".join(f"{k}: {v}\n".encode()
                                  for k, v in asterisk(agi_arg_1=AT).items()) + b"\n")
            assert reached.wait(10)                              # the trace is running
            try:
                sock.sendall((b"x" * 4000 + b"\n") * 150)        # 600 KB of lines
            except (ConnectionResetError, BrokenPipeError):
                pass                                             # closed while sending
            # the lines past the bound received before the trace is let go (sent is not
            # received: a slow listener would otherwise read them as replies)
            deadline = time.monotonic() + 10
            while not (any(r.getMessage().endswith(too_many) for r in caplog.records)
                       if os.environ["CDRTRACE_AGI"] == "native" else
                       any(isinstance(o, agi_module.Peer) and o.ended == too_many[9:]
                           for o in gc.get_objects())):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            release.set()
            answer = b""
            try:
                while chunk := sock.recv(4096):
                    answer += chunk
            except ConnectionResetError:
                pass
            # closed: at once by the C listener; after its first command by the reference
            assert answer in (b"", b'SET VARIABLE COT_OUTCOME "success"\n'), answer
    deadline = time.monotonic() + 5
    while not any(r.getMessage().endswith(too_many) for r in caplog.records):
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.01)
    deadline = time.monotonic() + 5
    while len(store.trace_records(LINE, analyst="ann")) != 1:    # recorded all the same
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _closed(sock: socket.socket) -> bool:
    """The service has closed sock (read to its end, or reset for what came after)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def _trickle(sock: socket.socket, data: bytes, pause: float, size: int = 8) -> None:
    """Send data size bytes at a time, pause seconds apart, until it is sent or refused."""
    for at in range(0, len(data), size):
        try:
            sock.sendall(data[at:at + size])
        except (BrokenPipeError, ConnectionResetError):
            return
        time.sleep(pause)


def refused(running) -> dict[tuple[str, str], int]:
    """(via, reason) -> count, as /metrics shows them."""
    text = httpx.get(running.url + "/metrics", timeout=10).text
    return {(via, reason): int(float(n)) for reason, via, n in re.findall(
        r'^cdrtrace_refused_total\{reason="(\w+)",via="(\w+)"\} (\S+)$', text, re.M)}


def expect(running, counts: dict[tuple[str, str], int]) -> None:
    """Wait (10 s at most) until /metrics counts exactly these refusals."""
    deadline = time.monotonic() + 10
    while (got := refused(running)) != counts:
        assert time.monotonic() < deadline, (got, counts)
        time.sleep(0.02)


def _logged(caplog, text: str, count: int = 1) -> None:
    """Wait (10 s at most) until count of the service's log lines hold text."""
    deadline = time.monotonic() + 10
    while sum(text in r.getMessage() for r in caplog.records) < count:
        assert time.monotonic() < deadline, text
        time.sleep(0.01)


@pytest.mark.parametrize("listener", AGI_LISTENERS)
def test_fastagi_bounds_silent_peers_and_connections(store, ingest_records, monkeypatch,
                                                      listener, caplog):
    import logging

    from cdrtrace.service import agi as agi_module

    caplog.set_level(logging.INFO, logger="cdrtrace.service")
    monkeypatch.setenv("CDRTRACE_AGI", listener)
    monkeypatch.setattr(agi_module, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(agi_module, "READ_TIMEOUT", 0.3)
    serving = _serving(store, ingest_records)
    store, running, tokens = next(serving)
    held = [socket.create_connection(("127.0.0.1", running.ports["agi"]), timeout=5)
            for _ in range(2)]
    held[0].sendall(b"agi_network: yes\n")               # then nothing more
    time.sleep(0.1)
    third = socket.create_connection(("127.0.0.1", running.ports["agi"]), timeout=1)
    assert third.recv(100) == b""       # over the limit: closed at once, not after 5 s
    third.close()
    _logged(caplog, "connections already")   # refused for that (the read timeout closes it too)
    for sock in held:
        sock.close()
    time.sleep(0.1)
    with socket.create_connection(("127.0.0.1", running.ports["agi"]), timeout=5) as silent:
        assert _closed(silent)                           # silent past the timeout: closed
    _logged(caplog, "closed: a silent peer")
    assert agi(running, asterisk(agi_arg_1=AT))[0][0] == 'SET VARIABLE COT_OUTCOME "success"'
    assert len(store.trace_records(LINE, analyst="ann")) == 1
    # the block has the timeout in all, from the connection: a peer trickling it (8 bytes
    # every 0.03 s), never silent that long but slower in all, is closed before it ends
    block = b"".join(f"{k}: {v}\n".encode() for k, v in asterisk(callerid=QUIET).items()) + b"\n"
    with socket.create_connection(("127.0.0.1", running.ports["agi"]), timeout=5) as slow:
        started = time.monotonic()
        _trickle(slow, block, 0.03)                      # ~55 pieces: 1.6 s, 5x the timeout
        assert time.monotonic() - started < 1.2 and _closed(slow)
    _logged(caplog, "closed: a slow peer")
    assert store.trace_records(QUIET, analyst="ann") == []   # not traced
    # and each reply has it from its command: the trace is recorded, no more is sent
    with socket.create_connection(("127.0.0.1", running.ports["agi"]), timeout=5) as slow:
        slow.sendall(block)
        stream = slow.makefile("rb")
        assert stream.readline().startswith(b'SET VARIABLE COT_OUTCOME "no_call"')
        _trickle(slow, b"200 result=1" + b" " * 400 + b"\n", 0.03)
        assert stream.read() == b""                      # closed: no second command
    _logged(caplog, "closed: a slow peer", 2)
    assert len(store.trace_records(QUIET, analyst="ann")) == 1
    # a trace slower than the timeout: each reply has the timeout from its command
    with held_record() as (reached, release), socket.create_connection(
            ("127.0.0.1", running.ports["agi"]), timeout=5) as sock:
        sock.sendall(block)
        assert reached.wait(10)
        time.sleep(0.6)                                  # twice the timeout
        release.set()
        stream, commands = sock.makefile("rb"), []
        while command := stream.readline():
            commands.append(command.split()[2])
            time.sleep(0.1)                              # a third of the timeout
            sock.sendall(b"200 result=1\n")
    assert commands == [b"COT_OUTCOME", b"COT_ANNOUNCEMENT", b"COT_TRACE_ID"]
    assert len(store.trace_records(QUIET, analyst="ann")) == 2
    next(serving, None)                                  # stopped


@pytest.mark.parametrize("listener", AGI_LISTENERS)
def test_fastagi_reads_a_block_and_replies_that_come_in_pieces(store, ingest_records,
                                                                monkeypatch, listener):
    """Lines cut anywhere by the network, each piece read while the listener waits: the
    block is read whole, and so is each reply (the Python listener once took the first
    piece of a line for the whole of it)."""
    monkeypatch.setenv("CDRTRACE_AGI", listener)
    serving = _serving(store, ingest_records)
    store, running, tokens = next(serving)
    block = b"".join(f"{k}: {v}\n".encode() for k, v in asterisk(agi_arg_1=AT).items()) + b"\n"
    with socket.create_connection(("127.0.0.1", running.ports["agi"]), timeout=5) as sock:
        _trickle(sock, block, 0.005)
        stream = sock.makefile("rb")
        commands = []
        for _ in range(3):
            commands.append(stream.readline().decode().strip())
            _trickle(sock, b"200 resu", 0.05)
            sock.sendall(b"lt=1\n")
        assert stream.read() == b""
    trace_id = store.trace_records(LINE, analyst="ann")[0]["trace_id"]
    assert commands == ['SET VARIABLE COT_OUTCOME "success"',
                        'SET VARIABLE COT_ANNOUNCEMENT "COT-SUCCESS"',
                        f'SET VARIABLE COT_TRACE_ID "{trace_id}"']
    next(serving, None)                                  # stopped


@pytest.mark.parametrize("listener", AGI_LISTENERS)
def test_fastagi_serves_only_the_allowed_networks(store, monkeypatch, listener):
    monkeypatch.setenv("CDRTRACE_AGI", listener)
    running = Service(store, agi_allow=["10.0.0.0/8"])
    try:
        assert agi(running, asterisk(agi_arg_1=AT)) == ([], b"")
    finally:
        running.stop()


@pytest.mark.parametrize("listener", AGI_LISTENERS)
def test_fastagi_on_both_stacks_matches_an_ipv4_peer_by_its_ipv4_address(store, monkeypatch,
                                                                          listener):
    """Listening on [::], IPv4 peers come as ::ffff:a.b.c.d: the allowed networks are
    matched against the IPv4 address (loopback by default; not in 10/8), and an IPv6
    peer against the IPv6 networks only."""
    monkeypatch.setenv("CDRTRACE_AGI", listener)
    for allow, peer, served in ((None, "127.0.0.1", True), (None, "::1", True),
                                (["10.0.0.0/8"], "127.0.0.1", False),
                                (["127.0.0.0/8"], "127.0.0.1", True),
                                (["127.0.0.0/8"], "::1", False)):
        running = Service(store, agi_allow=allow, agi="[::]:0")
        try:
            commands, _ = agi(running, asterisk(agi_arg_1=AT), host=peer)
            assert bool(commands) == served, (allow, peer)
        finally:
            running.stop()


@pytest.mark.parametrize("path", ["http", "fastagi"])
def test_sigterm_under_load_loses_no_answered_trace(tmp_path, path):
    import signal
    import subprocess
    import sys
    import time

    db = tmp_path / "db"
    store = cdrtrace.open(db, create=True)
    source = tmp_path / "m.csv"
    source.write_bytes(b"".join(
        cdr(src=CALLER, dst=f"30355{m:05d}", start="2026-03-02 14:03:00", answer="",
            end="2026-03-02 14:03:30", disposition="NO ANSWER", uniqueid=f"u{m}") + b"\n"
        for m in range(400)))
    cdrtrace.ingest(store, [str(source)])
    token = store.tokens.create("pbx", "switch")
    store.close()
    with socket.socket() as s1, socket.socket() as s2:
        s1.bind(("127.0.0.1", 0))
        s2.bind(("127.0.0.1", 0))
        http_port, agi_port = s1.getsockname()[1], s2.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cdrtrace.cli", "serve", "--db", str(db),
                             "--http", f"127.0.0.1:{http_port}", "--agi", f"127.0.0.1:{agi_port}"],
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{http_port}"
    try:
        _wait_ready(url, 20)
    except BaseException:
        proc.kill()
        raise
    answered, stop = [], threading.Event()

    def over_http(k):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=10) as c:
            m = k
            while not stop.is_set() and m < 400:
                try:
                    got = c.post("/v1/trace", json={"line": f"30355{m:05d}", "at": AT})
                except httpx.HTTPError:
                    return                           # the service went away: fine
                if got.status_code == 200:
                    answered.append(got.json())
                m += 8

    def over_fastagi(k):
        m = k
        while not stop.is_set() and m < 400:
            try:
                commands, _ = agi(Ports(agi_port), asterisk(f"30355{m:05d}", agi_arg_1=AT))
            except OSError:
                return                               # the service went away: fine
            if len(commands) == 3:                   # the whole answer reached the switch
                answered.append({"outcome": commands[0].split('"')[1],
                                 "trace_id": commands[2].split('"')[1]})
            m += 8
    client = over_http if path == "http" else over_fastagi
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30       # under load: traces answered, more under way
    try:
        while len(answered) < 16:
            assert time.monotonic() < deadline and any(t.is_alive() for t in threads)
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGTERM)    # failed or not: no service left running
    assert proc.wait(30) == 0, proc.stderr.read()
    stop.set()
    for t in threads:
        t.join(10)
    log = proc.stderr.read()
    assert ("http: POST /v1/trace 200" if path == "http" else "agi: trace T") in log
    assert answered and all(a["outcome"] == "success" for a in answered)
    with cdrtrace.open(db) as reopened:
        held = {r["trace_id"] for r in reopened.trace_records(analyst="ann")}
    assert {a["trace_id"] for a in answered} <= held      # every answer is in the evidence


def _wait_ready(url: str, seconds: float) -> None:
    """Until a `cdrtrace serve` process answers /readyz (at most seconds)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url + "/readyz", timeout=1)
            return
        except httpx.HTTPError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


class Ports:
    """What agi() needs of a running service: its ports."""

    def __init__(self, agi_port):
        self.ports = {"agi": agi_port}


def test_a_form_posting_switch_gets_the_announcement_as_text(service):
    store, running, tokens = service
    body = {"line": LINE, "at": AT, "token": tokens["switch"]}
    got = httpx.post(running.url + "/v1/trace/text", data=body, timeout=10)
    assert (got.status_code, got.text) == (200, "COT-SUCCESS")
    assert httpx.post(running.url + "/v1/trace/text", data={**body, "token": tokens["care"]},
                      timeout=10).status_code == 403
    assert httpx.post(running.url + "/v1/trace/text", data={**body, "token": "cdt_x"},
                      timeout=10).text == "COT-FAILURE"
    for wait in ("11", "-1", "soon"):             # wait: 0 to 10 seconds, or refused
        refused = httpx.post(running.url + "/v1/trace/text", data={**body, "wait": wait},
                             timeout=10)
        assert (refused.status_code, refused.text) == (400, "COT-FAILURE")
    again = httpx.post(running.url + "/v1/trace/text", data={**body, "wait": "0.5"}, timeout=10)
    assert (again.status_code, again.text) == (200, "COT-ALREADY-TRACED")


# ------------------------------------------------------------------ privacy, live feeds

def test_no_switch_or_care_answer_names_a_caller_over_generated_traffic(tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from cdrtrace import synth
    from cdrtrace.parsing import numbers

    columns, _ = synth.generate(3000, 300, seed=21, campaigns=4)
    store = cdrtrace.open(tmp_path / "s", create=True)
    (tmp_path / "m.csv").write_bytes(synth.format_asterisk(columns, 0, len(columns["line"])))
    cdrtrace.ingest(store, [str(tmp_path / "m.csv")])
    tokens = {r: store.tokens.create(f"{r}-1", r) for r in ("switch", "care")}
    lines = sorted({int(x) for x in columns["line"]})
    callers = {numbers.format_number(int(c))[2:] for c in columns["caller"] if int(c)}
    running = Service(store)
    try:
        @settings(max_examples=60, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(line=st.sampled_from(lines), hour=st.integers(0, 23))
        def answers(line, hour):
            at = f"2026-03-02T{hour:02d}:59:00Z"
            traced = call(running, "POST", "/v1/trace", tokens["switch"],
                          json={"line": str(line), "at": at})
            status = call(running, "GET", f"/v1/status/{line}", tokens["care"])
            assert status.status_code == 200
            assert traced.status_code == 200 or "no longer held" in traced.json()["error"]
            for text in (traced.text, status.text):
                assert not any(c in text for c in callers), text
        answers()
    finally:
        running.stop()


def test_the_service_beside_a_live_ingest_in_another_process(tmp_path):
    import datetime as dt
    import subprocess
    import sys
    import time

    def stamp(seconds):
        return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")

    db = tmp_path / "db"
    store = cdrtrace.open(db, create=True)
    tokens = {r: store.tokens.create(f"{r}-1", r) for r in ("switch", "care")}
    master = tmp_path / "Master.csv"
    master.write_bytes(cdr(src=CALLER, dst="7205550100", start=stamp(-30), answer="",
                           end=stamp(-29), disposition="NO ANSWER", uniqueid="a") + b"\n")
    log = open(tmp_path / "follower.log", "w")      # a file: a pipe nobody reads can fill
    follower = subprocess.Popen(
        [sys.executable, "-m", "cdrtrace.cli", "ingest", "--follow", str(master), "--db", str(db),
         "--batch-ms", "5", "--cdr-delay", "3600"], stderr=log, text=True)
    running = Service(store)
    try:
        deadline = time.monotonic() + 20
        while not store.live_feeds():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        at = stamp(-5).replace(" ", "T") + "Z"
        traced = call(running, "POST", "/v1/trace", tokens["switch"],
                      json={"line": "7205550100", "at": at})
        assert traced.json()["outcome"] == "pending"          # the feed is behind the *57
        with open(master, "ab") as f:                        # the call's CDR, then a later one
            f.write(cdr(src=CALLER, dst="7205550100", start=stamp(-10), answer="",
                        end=stamp(-9), disposition="NO ANSWER", uniqueid="b") + b"\n")
            f.write(cdr(src="7205550199", dst="7205559999", start=stamp(0), answer="",
                        end=stamp(1), disposition="NO ANSWER", uniqueid="c") + b"\n")
        while True:
            status = call(running, "GET", "/v1/status/7205550100", tokens["care"]).json()
            if status["traces"][0]["outcome"] != "pending":
                break
            assert time.monotonic() < deadline + 20
            time.sleep(0.05)
        assert status["traces"][0]["outcome"] == "success"
        assert status["traces"][0]["trace_id"] == traced.json()["trace_id"]
    finally:
        running.stop()
        follower.terminate()
        try:    # it commits what waits, detaches, and exits (test_stream's stop tests)
            follower.wait(20)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait()
            raise AssertionError("the follower did not stop within 20 s of SIGTERM; its log:\n"
                                 + (tmp_path / "follower.log").read_text()) from None
        finally:
            log.close()


def test_status_and_last_calls_never_wait_for_an_ingest_or_a_trace_commit(service):
    """Status reads snapshots only: it answers while both writers are held. Last-calls
    reads the index's snapshot while an ingest holds its writer; its audit entry is a
    short commit of the evidence, beside the traces' (not tested against a held one)."""
    store, running, tokens = service
    held, release, answers = threading.Event(), threading.Event(), {}

    def hold(evidence: bool):
        with testing.index_writer_held(store), (
                testing.evidence_writer_held(store) if evidence else contextlib.nullcontext()):
            held.set()
            release.wait(30)

    for evidence, path, token in ((True, f"/v1/status/{LINE}", "care"),
                                  (False, f"/v1/last-calls/{LINE}", "analyst")):
        held.clear()
        release.clear()
        writer = threading.Thread(target=hold, args=(evidence,))
        writer.start()
        held.wait(10)
        try:
            answers[path] = call(running, "GET", path, tokens[token]).status_code
            assert not release.is_set()       # answered while the writers were held
        finally:
            release.set()
            writer.join(10)
    assert set(answers.values()) == {200}


def _unanswered() -> bytes:
    """The one call of _serve_one_call's store, as most tests want it: unanswered."""
    return cdr(src=CALLER, dst=LINE, start="2026-03-02 14:03:00", answer="",
               end="2026-03-02 14:03:30", disposition="NO ANSWER")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_one_call(tmp_path, record: bytes, *flags: str, preexec_fn=None):
    """`cdrtrace serve` as a process over a store of one call: (process, port, switch token)."""
    import subprocess
    import sys

    db = tmp_path / "db"
    store = cdrtrace.open(db, create=True)
    (tmp_path / "m.csv").write_bytes(record + b"\n")
    cdrtrace.ingest(store, [str(tmp_path / "m.csv")])
    token = store.tokens.create("pbx", "switch")
    store.close()
    with socket.socket() as s1:
        s1.bind(("127.0.0.1", 0))
        port = s1.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cdrtrace.cli", "serve", "--db", str(db),
                             "--http", f"127.0.0.1:{port}", *flags],
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
    return proc, port, token


@pytest.mark.parametrize("hard", [8192, 1500])
def test_serve_raises_its_descriptor_limit_to_what_its_bounds_hold(tmp_path, hard):
    """Started with the usual soft limit of 1024, serve would run out of descriptors
    before its listeners' bounds (FastAGI's 1024 connections, HTTP's 512 in C and 512 in
    uvicorn): it raises the soft limit to what they hold, and says so if the hard limit
    does not allow it."""
    import resource
    import signal

    from cdrtrace.service import agi as agi_module
    from cdrtrace.service import http, http_native, server

    need = (agi_module.MAX_CONNECTIONS + http_native.MAX_CONNECTIONS + http.LIMIT_CONCURRENCY
            + server.SPARE)
    assert server.descriptors(True, True) == need == 2304
    assert server.descriptors(False, True) == agi_module.MAX_CONNECTIONS + server.SPARE
    proc, port, _ = _serve_one_call(
        tmp_path, _unanswered(),
        "--agi", "127.0.0.1:0",
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard)))
    try:
        _wait_ready(f"http://127.0.0.1:{port}", 30)
        with open(f"/proc/{proc.pid}/limits") as f:
            row = next(line for line in f if line.startswith("Max open files")).split()
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert (int(row[3]), int(row[4])) == (min(need, hard), hard)
    warned = f"serve may hold {need} descriptors and may open {hard}" in proc.stderr.read()
    assert warned == (hard < need)


def test_once_serving_the_collector_leaves_start_up_alone_and_runs_less_often():
    """serve's ready step: what start-up built leaves the collector's generations (frozen),
    and the youngest generation is collected past server.YOUNG_OBJECTS, not Python's 700
    (a commit's traces in flight passed 700 at every few commits)."""
    import gc

    from cdrtrace.service import server

    was = gc.get_threshold()
    try:
        server._settled({}, asyncio.Event())
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (server.YOUNG_OBJECTS, *was[1:])
        assert server.YOUNG_OBJECTS >= 10 * 700
    finally:
        gc.unfreeze()
        gc.set_threshold(*was)


def test_serve_is_ready_only_once_both_ports_listen(store):
    """ready() (and the "serving" line) come once each listener takes connections: a
    health check, or a peer, that comes at once is not refused."""
    refused = []

    def ready(ports, stop):
        for name in ("http", "agi"):
            try:
                socket.create_connection(("127.0.0.1", ports[name]), timeout=2).close()
            except OSError as exc:
                refused.append((name, exc))
        stop.set()
    asyncio.run(serve(store, "127.0.0.1:0", "127.0.0.1:0", ready=ready))
    assert refused == []


@pytest.mark.parametrize("tls", [False, True])
def test_workers_share_the_ports_and_stop_together(tmp_path, tls, monkeypatch):
    """--workers N: each worker serves (over TLS too: the supervisor passes it on, and
    FastAGI's key), and /metrics, whichever worker answers it, counts all of theirs."""
    import signal

    from cdrtrace.service import agi as agi_module

    monkeypatch.setenv("TMPDIR", str(tmp_path))     # where the workers' counts are kept
    agi_port = _free_port()
    (tmp_path / "agi.key").write_text(GOOD_KEY)
    (tmp_path / "agi.key").chmod(0o600)
    proc, port, token = _serve_one_call(
        tmp_path, _unanswered(), "--workers", "2",
        "--agi", f"127.0.0.1:{agi_port}", "--agi-key-file", str(tmp_path / "agi.key"),
        *(["--tls-cert", TLS[0], "--tls-key", own_key(tmp_path)] if tls else []))
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=TLS[0]) if tls else True
    deadline, outcomes = time.monotonic() + 30, []
    try:
        while len(outcomes) < 6:
            try:
                got = httpx.post(url + "/v1/trace", json={"line": LINE, "at": AT}, timeout=5,
                                 headers={"Authorization": f"Bearer {token}"}, verify=verify)
                outcomes.append(got.json()["outcome"])
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        lines: list[str] = []               # both workers serving before the checks below
        threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
        while sum(", http on port" in line for line in lines) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(8):      # the kernel spreads them: each worker has the key
            assert agi(Ports(agi_port), asterisk(agi_arg_1=AT))[0] == [agi_module.NOT_KEYED]
        # the counts of both workers, each second; then every answer the same
        counted = {'cdrtrace_traces_total{outcome="success",via="http"} 1.0',
                   'cdrtrace_traces_total{outcome="already_traced",via="http"} 5.0',
                   'cdrtrace_trace_seconds_count{via="http"} 6.0',
                   "cdrtrace_trace_commits_total 6.0", "cdrtrace_traces_committed_total 6.0",
                   'cdrtrace_refused_total{reason="wrong_key",via="agi"} 8.0'}
        prefixes = tuple({line.split("{")[0].split()[0] for line in counted})
        answers = []
        while len(answers) < 10:
            text = httpx.get(url + "/metrics", timeout=5, verify=verify).text
            got = {line for line in text.splitlines() if line.startswith(prefixes)}
            if got == counted:
                answers.append(got)
            else:
                assert not answers and time.monotonic() < deadline, got
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)    # passed on to the workers, failed or not
    assert proc.wait(30) == 0
    assert sorted(outcomes) == ["already_traced"] * 5 + ["success"]
    assert not list(tmp_path.glob("cdrtrace-metrics-*"))       # removed once stopped


def test_workers_refuse_what_would_stop_them_before_any_starts(tmp_path, monkeypatch,
                                                              capsys):
    """A store that does not open, or no folder for the workers' counts: one clear error,
    exit 2, before any worker starts (each would fail, and be started again)."""
    import tempfile

    assert cli.main(["serve", "--db", str(tmp_path / "none"), "--http", "127.0.0.1:0",
                     "--workers", "2"]) == 2
    assert "no cdrtrace store at" in capsys.readouterr().err

    def cannot(**kw):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "mkdtemp", cannot)
    assert cli.main(["init", "--db", str(tmp_path / "db")]) == 0
    assert cli.main(["serve", "--db", str(tmp_path / "db"), "--http", "127.0.0.1:0",
                     "--workers", "2"]) == 2
    assert "--workers keeps the workers' counts in a folder under TMPDIR" in \
        capsys.readouterr().err


def test_a_worker_that_ends_is_started_again(tmp_path):
    """A worker killed (the OOM killer, a fault) is started again, so the service keeps
    its capacity: before, the other went on alone, and nothing said so."""
    import signal

    proc, port, token = _serve_one_call(
        tmp_path, _unanswered(), "--workers", "2")
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    children = f"/proc/{proc.pid}/task/{proc.pid}/children"
    deadline = time.monotonic() + 30
    try:
        while sum(", http on port" in line or "serving http" in line for line in lines) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first = open(children).read().split()
        os.kill(int(first[0]), signal.SIGKILL)
        while not any(f"(pid {first[0]}) ended (exit -9): started again" in line
                      for line in lines):
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        while sum("serving http" in line for line in lines) < 3:    # the new one serves
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        now = open(children).read().split()
        assert len(now) == 2 and first[0] not in now and first[1] in now
        url = f"http://127.0.0.1:{port}"
        outcomes = [httpx.post(url + "/v1/trace", json={"line": LINE, "at": AT}, timeout=5,
                               headers={"Authorization": f"Bearer {token}"}).json()["outcome"]
                    for _ in range(6)]
        assert sorted(outcomes) == ["already_traced"] * 5 + ["success"]
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def _killed_while_reading(path) -> int:
    """A process that opened the store at path and died (SIGKILL) inside a read
    transaction of each environment: its pid."""
    import signal
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, cdrtrace\n"
        "s = cdrtrace.open(sys.argv[1])\n"
        "held = s.envs.env.begin(), s.envs.eenv.begin()\n"
        "print('reading', flush=True)\n"
        "time.sleep(60)"), str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "reading\n"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    return child.pid


def _reading(store, pid: int) -> bool:
    """Does a read slot of either of store's environments name pid?"""
    return any(re.search(rf"^\s*{pid}\s", env.readers(), re.M)
               for env in (store.envs.env, store.envs.eenv))


def test_the_read_slots_of_a_process_that_died_are_freed_at_open(store):
    """LMDB frees a dead process's read slots only when no process has the store open;
    until then its snapshot's pages are never reused and the files grow. Opening the
    store frees them."""
    import subprocess
    import sys

    pid = _killed_while_reading(store.path)
    assert _reading(store, pid)                  # held, while this process has it open
    opened = subprocess.run([sys.executable, "-c", (
        "import sys, cdrtrace\n"
        "s = cdrtrace.open(sys.argv[1])\n"
        "print(s.envs.env.readers() + s.envs.eenv.readers())"), str(store.path)],
        capture_output=True, text=True, check=True)
    assert str(pid) not in opened.stdout and not _reading(store, pid)


def test_serve_frees_the_read_slots_of_a_process_that_died(store, monkeypatch, caplog):
    """A worker killed, or an ingest, while `serve` has the store open: serve frees its
    read slots within READERS seconds, and says so."""
    import logging

    from cdrtrace.service import server

    monkeypatch.setattr(server, "READERS", 0.2)
    caplog.set_level(logging.WARNING, logger="cdrtrace.service")
    running = Service(store)
    try:
        pid = _killed_while_reading(store.path)
        _logged(caplog, "freed 2 read slots of the store left by processes that died")
        assert not _reading(store, pid)
    finally:
        running.stop()


def test_workers_stop_when_their_supervisor_is_killed(tmp_path, monkeypatch):
    """SIGKILL to the supervisor (nothing passes the SIGTERM on): each worker is sent
    SIGTERM by the kernel, finishes and stops. Before, they served on, unwatched,
    holding the ports. The last to stop removes the folder of their counts, which the
    supervisor would have (before, each such stop left one in TMPDIR)."""
    import signal

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    proc, port, token = _serve_one_call(
        tmp_path, _unanswered(), "--workers", "2")
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    deadline = time.monotonic() + 30
    while sum("serving http" in line for line in lines) < 2:
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
    workers = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    def running(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    try:
        while any(running(pid) for pid in workers):
            assert time.monotonic() < deadline, [p for p in workers if running(p)]
            time.sleep(0.05)
        while sum("stopped: " in line for line in lines) < 2:  # each stopped as on SIGTERM
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        assert not list(tmp_path.glob("cdrtrace-metrics-*"))
    finally:
        for pid in workers:                                    # none left, whatever failed
            if running(pid):
                os.kill(int(pid), signal.SIGKILL)


class _Worker:
    """What the supervisor's watch (server._watch) uses of a worker's process."""

    def __init__(self, code=None):
        self.returncode, self.pid, self.signals = code, 1000, []

    def poll(self):
        return self.returncode

    def send_signal(self, signum):
        self.signals.append(signum)
        self.returncode = -signum


def _watched(children, start, stopping):
    """server._watch(...), which must end within 10 s."""
    from cdrtrace.service import server

    given_up: list = []
    thread = threading.Thread(daemon=True, target=lambda: given_up.append(
        server._watch(children, start, stopping)))
    thread.start()
    thread.join(10)
    assert given_up, "the watch did not end"
    return given_up[0]


def test_a_worker_ending_again_and_again_stops_the_service(monkeypatch):
    """Started again RESTARTS times within RESTART_WINDOW seconds, a worker that ends
    once more stops the others, and serve fails with its exit code; ends further apart
    are started again for as long as they come."""
    import signal

    from cdrtrace.service import server

    monkeypatch.setattr(server, "WATCH", 0)
    started: list[int] = []

    def crashing(i):
        started.append(i)
        return _Worker(-9)
    children, stopping = [_Worker(), _Worker(-9)], []
    assert _watched(children, crashing, stopping) == -9
    assert started == [1] * server.RESTARTS
    assert children[0].signals == [signal.SIGTERM] and stopping
    # the same ends, each past the window: started again, until a SIGTERM
    monkeypatch.setattr(server, "RESTART_WINDOW", 0)
    started.clear()
    children, stopping = [_Worker(), _Worker(-9)], []

    def until_stopped(i):
        started.append(i)
        if len(started) < 3 * server.RESTARTS:
            return _Worker(-9)
        stopping.append(signal.SIGTERM)                  # as a SIGTERM does (forward)
        children[0].send_signal(signal.SIGTERM)
        return _Worker(-signal.SIGTERM)
    assert _watched(children, until_stopped, stopping) is None
    assert started == [1] * (3 * server.RESTARTS)


@pytest.mark.parametrize("stop", ["SIGTERM", "Ctrl-C"])
def test_workers_stopped_while_still_starting_are_not_a_failure(tmp_path, stop):
    """SIGTERM as soon as the supervisor has started its workers (still importing, before
    their own handlers): each ends by it, and the supervisor exits 0, not 'a worker
    failed' (exit 2), which a `systemctl stop` right after a start got. The same for a
    Ctrl-C in a terminal, which sends SIGINT to the supervisor and its workers at once."""
    import signal

    proc, _, _ = _serve_one_call(
        tmp_path, _unanswered(), "--workers", "2",
        preexec_fn=os.setpgrp)                   # a process group of its own, as a terminal's
    children = f"/proc/{proc.pid}/task/{proc.pid}/children"
    deadline = time.monotonic() + 30
    while len(open(children).read().split()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    workers = open(children).read().split()
    if stop == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(30) == 0, proc.stderr.read()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)


def test_traces_the_c_exchanges_log_are_counted_once_in_the_metrics(tmp_path):
    """`cdrtrace serve` as it runs (its log a file the C exchanges write to): FastAGI and
    HTTP traces answered in C are each logged once, and counted once in /metrics, by
    outcome and way in, with their latency, though none of them comes back to the event
    loop once answered."""
    import signal

    agi_port = _free_port()
    proc, port, token = _serve_one_call(
        tmp_path, _unanswered(),
        "--agi", f"127.0.0.1:{agi_port}")
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, 30)
        outcomes = [agi(Ports(agi_port), asterisk(agi_arg_1=AT))[0][0] for _ in range(3)]
        assert outcomes == ['SET VARIABLE COT_OUTCOME "success"'] + [
            'SET VARIABLE COT_OUTCOME "already_traced"'] * 2
        for _ in range(2):
            assert httpx.post(url + "/v1/trace", json={"line": LINE, "at": AT}, headers={
                "Authorization": f"Bearer {token}"}).json()["outcome"] == "already_traced"
        metrics = httpx.get(url + "/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert 'cdrtrace_traces_total{outcome="success",via="agi"} 1.0' in metrics
    assert 'cdrtrace_traces_total{outcome="already_traced",via="agi"} 2.0' in metrics
    assert 'cdrtrace_trace_seconds_count{via="agi"} 3.0' in metrics
    assert 'cdrtrace_trace_seconds_bucket{le="+Inf",via="agi"} 3.0' in metrics
    assert 'cdrtrace_traces_total{outcome="already_traced",via="http"} 2.0' in metrics
    assert 'cdrtrace_trace_seconds_count{via="http"} 2.0' in metrics
    assert 'cdrtrace_traces_total{outcome="success",via="http"}' not in metrics
    log = proc.stderr.read()
    assert len(re.findall(r"agi: trace T\d+ (success|already_traced) in [\d.]+ ms\n", log)) == 3
    assert len(re.findall(r"http: POST /v1/trace 200 in [\d.]+ ms\n", log)) == 2


def test_a_fastagi_trace_c_logs_and_counts_comes_back_to_the_loop_no_more(
        store, ingest_records, monkeypatch):
    """FastAGI in C: a trace answered with a log line C writes is counted by C, and posts
    no DONE event once its exchange is over; nothing is kept for it on the loop's side.
    One whose line C cannot write comes back (DONE) and is logged and counted there."""
    import gc
    import os
    import types

    from cdrtrace.service import _agi
    from cdrtrace.service.agi_native import NativeFastAGI
    from cdrtrace.service.metrics import OUTCOME_INDEX

    monkeypatch.setenv("CDRTRACE_AGI", "native")
    events: list[int] = []
    original = NativeFastAGI.event

    def seeing(self, kind, *rest):
        events.append(kind)
        return original(self, kind, *rest)
    monkeypatch.setattr(NativeFastAGI, "event", seeing)
    serving = _serving(store, ingest_records)
    _, running, tokens = next(serving)
    try:
        (native,) = [o for o in gc.get_objects() if isinstance(o, NativeFastAGI) and o.sock]
        out, into = os.pipe()
        respond, logged_by_c = native.respond, True

        def logging_to_a_pipe(self, conn, answer, status=0, log=None, result=None):
            respond(conn, answer, status, (b" a line", into) if logged_by_c else None, result)
        native.respond = types.MethodType(logging_to_a_pipe, native)
        try:
            for _ in range(3):
                assert len(agi(running, asterisk(agi_arg_1=AT))[0]) == 3
            assert native.answered == {}
            logged_by_c = False
            assert len(agi(running, asterisk(agi_arg_1=AT))[0]) == 3
            deadline = time.monotonic() + 10
            while _agi.DONE not in events and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            del native.respond
        assert [k for k in events if k in (_agi.REQUEST, _agi.DONE)] == (
            [_agi.REQUEST] * 4 + [_agi.DONE])
        assert native.answered == {}
        os.set_blocking(out, False)
        assert os.read(out, 65536).count(b" a line in ") == 3
        os.close(out)
        os.close(into)
        counts, _, buckets, _, _ = native._counted()
        assert counts[OUTCOME_INDEX[Outcome.SUCCESS]] == 1
        assert counts[OUTCOME_INDEX[Outcome.ALREADY_TRACED]] == 2 and sum(counts) == 3
        assert sum(buckets) == 3
        metrics = call(running, "GET", "/metrics").text
        assert 'cdrtrace_traces_total{outcome="already_traced",via="agi"} 3.0' in metrics
        assert 'cdrtrace_trace_seconds_count{via="agi"} 4.0' in metrics
    finally:
        next(serving, None)


def test_one_log_line_per_request_with_the_route_never_a_number(service, caplog):
    import logging

    from cdrtrace.service import agi

    store, running, tokens = service
    caplog.set_level(logging.INFO, logger="cdrtrace.service")
    call(running, "POST", "/v1/trace", tokens["switch"], json={"line": LINE, "at": AT})
    call(running, "GET", f"/v1/status/{LINE}", tokens["care"])
    call(running, "GET", f"/v1/last-calls/{LINE}", tokens["analyst"])
    call(running, "GET", f"/v1/last-calls/{LINE}", tokens["care"])          # 403
    call(running, "GET", f"/v1/status/{LINE}")                               # 401
    agi.dial("127.0.0.1", running.ports["agi"], LINE, AT)
    running.stop()                           # every request answered and logged
    lines = [r.getMessage() for r in caplog.records if r.name == "cdrtrace.service"]
    http = [m.split(" in ")[0] for m in lines if m.startswith("http: ")]
    assert http == ["http: POST /v1/trace 200", "http: GET /v1/status/{line} 200",
                    "http: GET /v1/last-calls/{line} 200", "http: GET /v1/last-calls/{line} 403",
                    "http: GET /v1/status/{line} 401"]
    by = [m.rpartition(" by ")[2] for m in lines if m.startswith("http: GET")]
    assert by == ["token:care-1", "token:analyst-1", "token:care-1", "-"]   # 403 named too
    records = store.trace_records(LINE, analyst="ann")             # a trace: in its evidence
    assert [r.get("requested_by") for r in records] == ["token:switch-1", None]   # FastAGI's
    assert len([m for m in lines if m.startswith("agi: trace ")]) == 1
    for number in (LINE, CALLER, LINE[-7:], CALLER[-7:]):
        assert not any(number in m for m in lines), number


def test_request_action_over_http_is_for_care(service):
    store, running, tokens = service
    call(running, "POST", "/v1/trace", tokens["switch"], json={"line": LINE, "at": AT})
    body = {"line": LINE, "origin": "Caller A"}
    assert call(running, "POST", "/v1/request-action", tokens["switch"], json=body).status_code == 403
    refused = call(running, "POST", "/v1/request-action", tokens["care"], json=body)
    assert refused.status_code == 400 and "has 1 of 3 traced calls" in refused.json()["error"]
    assert call(running, "GET", "/v1/requests", tokens["analyst"]).json() == []


def _cores(pid: int, tid: int | None = None) -> str:
    path = f"/proc/{pid}/task/{tid}/status" if tid else f"/proc/{pid}/status"
    with open(path) as f:
        return next(line.split(":")[1].strip() for line in f if line.startswith("Cpus_allowed_list"))


@pytest.mark.parametrize("workers", [1, 2])
def test_pin_keeps_each_service_process_and_its_threads_on_one_core(tmp_path, workers,
                                                                  monkeypatch):
    import signal

    monkeypatch.setenv("CDRTRACE_HTTP", "native")    # their exchange threads are looked for
    monkeypatch.setenv("CDRTRACE_AGI", "native")
    agi_port = _free_port()
    proc, port, token = _serve_one_call(
        tmp_path, cdr(src=CALLER, dst=LINE, start="2026-03-02 14:03:00"),
        "--workers", str(workers), "--pin", "--agi", f"127.0.0.1:{agi_port}")
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 30
        servers: list[int] = []
        def names(pid: int) -> list[str]:
            found = []
            for t in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(FileNotFoundError):
                    found.append(open(f"/proc/{pid}/task/{t}/comm").read().strip())
            return found

        # trace until every service process has started its commit thread (the kernel
        # hands each new connection to either worker) and both exchange threads (a worker
        # may answer HTTP before its FastAGI listener has started, and the other worker
        # may have started neither when the first one answers)
        while len(servers) < workers or any(
                len(names(p)) < 4 or not {"cdrtrace-agi", "cdrtrace-http"} <= set(names(p))
                for p in servers):
            assert time.monotonic() < deadline
            try:
                got = httpx.post(url + "/v1/trace", json={"line": LINE, "at": AT}, timeout=5,
                                 headers={"Authorization": f"Bearer {token}"})
                assert got.status_code == 200
            except httpx.HTTPError:              # not listening yet
                time.sleep(0.05)
                continue
            if workers == 1:
                servers = [proc.pid]
            else:
                with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                    servers = [int(c) for c in f.read().split()]
        assert len(servers) == workers
        allowed = sorted(os.sched_getaffinity(0))
        pinned = []
        for pid in servers:
            threads = os.listdir(f"/proc/{pid}/task")    # the loop, the committer, ...
            named = {t: open(f"/proc/{pid}/task/{t}/comm").read().strip() for t in threads}
            exchanges = ("cdrtrace-agi", "cdrtrace-http")
            cores = {_cores(pid, int(t)) for t in threads if named[t] not in exchanges}
            assert len(cores) == 1 and int(cores.pop()) in allowed   # one core, every thread
            pinned.append(int(_cores(pid)))
            # but the exchanges' threads in C (no interpreter lock) on every core
            for name in exchanges:
                exchange = [t for t in threads if named[t] == name]
                assert len(exchange) == 1, name
                assert _cores(pid, int(exchange[0])) == _cores(os.getpid())
        if workers == 2 and len(allowed) >= 2:
            assert sorted(pinned) == allowed[:2]         # worker i on the i-th core
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


@pytest.fixture
def serve_logging(monkeypatch):
    """serve_logging(): the root's logging as `cdrtrace serve` sets it up, into a buffer
    (called in the test: pytest adds its own handlers to the root after the fixtures)."""
    import logging

    from cdrtrace.service import requestlog

    def set_up(path=None) -> io.StringIO:
        stream = io.StringIO() if path is None else open(path, "w", encoding="utf-8")  # noqa: SIM115
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(requestlog.FORMAT))
        monkeypatch.setattr(logging.root, "handlers", [handler])
        logging.root.setLevel(logging.INFO)    # setLevel: the loggers' caches are cleared
        return stream
    level = logging.root.level
    yield set_up
    logging.root.setLevel(level)


def test_the_direct_request_line_reads_as_the_logging_module_writes_it(serve_logging,
                                                                         monkeypatch):
    import logging

    from cdrtrace.service.requestlog import RequestLog

    stream = serve_logging()
    log = logging.getLogger("cdrtrace.service")
    direct = RequestLog(log)
    monkeypatch.setattr(time, "time", lambda: 1764552000.0426)   # both read the same clock
    direct.info("agi: trace %s %s in %.1f ms", "T00000001", "success", 1.25)
    log.info("agi: trace %s %s in %.1f ms", "T00000001", "success", 1.25)
    first, second = stream.getvalue().splitlines()
    assert first == second and first.endswith(
        ",042 cdrtrace.service INFO agi: trace T00000001 success in 1.2 ms")
    assert direct.checked == (logging.root.handlers[0], logging.root.handlers[0].formatter)

    # set up any other way, the line goes through the logging module as it is set up
    logging.root.handlers[0].setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    direct.info("http: POST /v1/trace %d in %.1f ms", 200, 0.5)
    logging.root.handlers[0].setFormatter(logging.Formatter(
        "%(asctime)s %(name)s %(levelname)s %(message)s"))
    def hiding(record):
        return "hidden" not in record.getMessage()
    log.addFilter(hiding)
    direct.info("hidden")
    log.removeFilter(hiding)
    logging.root.setLevel(logging.WARNING)
    direct.info("below the level")
    assert stream.getvalue().splitlines()[2:] == ["INFO http: POST /v1/trace 200 in 0.5 ms"]


def _counting_writes(stream) -> list:
    writes = []
    original = stream.write
    stream.write = lambda text: writes.append(text) or original(text)
    return writes


def test_a_loop_rounds_lines_are_written_in_one_write_as_logged(serve_logging, monkeypatch):
    import logging

    from cdrtrace.service import requestlog

    stream = serve_logging()
    writes = _counting_writes(stream)
    log = logging.getLogger("cdrtrace.service")
    direct = requestlog.RequestLog(log)

    async def rounds():
        direct.info("agi: trace %s %s in %.1f ms", "T00000001", "success", 1.25)
        direct.info("agi: trace %s %s in %.1f ms", "T00000002", "no_call", 2.5)
        assert writes == []                    # kept until the round ends
        await asyncio.sleep(0)
        assert len(writes) == 1
        direct.info("agi: trace %s", "T00000003")
        requestlog.flush()                     # as serve stops: nothing kept is lost
        assert len(writes) == 2
        await asyncio.sleep(0)
    asyncio.run(rounds())
    direct.info("agi: trace %s", "T00000004")  # off a loop: at once
    assert len(writes) == 3
    lines = stream.getvalue().splitlines()
    assert [line.split(" INFO ")[1] for line in lines] == [
        "agi: trace T00000001 success in 1.2 ms", "agi: trace T00000002 no_call in 2.5 ms",
        "agi: trace T00000003", "agi: trace T00000004"]
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} cdrtrace\.service INFO ")
    assert all(stamp.match(line) for line in lines), lines

    other = io.StringIO()                      # the handler replaced within a round
    replacing = logging.StreamHandler(other)
    replacing.setFormatter(logging.Formatter(requestlog.FORMAT))

    async def replaced():
        direct.info("agi: trace %s", "T00000005")
        monkeypatch.setattr(logging.root, "handlers", [replacing])
        direct.info("agi: trace %s", "T00000006")
        await asyncio.sleep(0)
    asyncio.run(replaced())
    assert stream.getvalue().splitlines()[-1].endswith("agi: trace T00000005")
    assert other.getvalue().splitlines()[-1].endswith("agi: trace T00000006")


def test_a_fault_in_one_fastagi_request_closes_it_and_not_the_others_taken_with_it(caplog):
    """The C listener's requests come in batches: one whose trace raises on the loop is
    closed (and logged); the next of the same batch is still traced and answered."""
    import logging

    from cdrtrace.service import _agi, agi
    from cdrtrace.service.agi_native import NativeFastAGI

    def submit(line, at, then, feed=None):
        if line == "3035550001":
            raise RuntimeError("a fault")
        then(TraceResult("T00000007", line, Outcome.SUCCESS, AT, None), None)
        return True
    native = NativeFastAGI(agi.FastAGI(None, submit=submit))
    request = (b"trace", b"agi://127.0.0.1/trace")
    taken = [(_agi.REQUEST, conn, 0, 0.0, "127.0.0.1", 5000, (line, None, *request, None, None))
             for conn, line in ((1, b"3035550001"), (2, b"3035550002"))]
    responded = {}

    class Taking:
        def take(self):
            return taken

        def respond(self, conn, answer, status=0, log=None, log_fd=-1, outcome=-1):
            responded[conn] = answer
    native.server = Taking()
    caplog.set_level(logging.ERROR, logger="cdrtrace.service")
    native._events()
    assert responded[1] == b""                                   # closed
    assert responded[2].startswith(b'SET VARIABLE COT_OUTCOME "success"\n')
    assert any("the trace for ('127.0.0.1', 5000) failed" in r.getMessage()
               for r in caplog.records)


def test_the_c_listeners_answered_traces_are_logged_in_one_write(serve_logging):
    from cdrtrace.service import _agi, agi
    from cdrtrace.service.agi_native import NativeFastAGI

    stream = serve_logging()
    writes = _counting_writes(stream)
    observed = []
    native = NativeFastAGI(agi.FastAGI(None, observe=lambda *seen: observed.append(seen)))
    taken = [(_agi.DONE, conn, 0, 0.002, "127.0.0.1", 5000 + conn, None) for conn in (1, 2)]

    class Taking:
        def take(self):
            return taken
    native.server = Taking()
    native.answered = {conn: TraceResult(f"T{conn:08d}", LINE, Outcome.SUCCESS, AT, None)
                       for conn in (1, 2)}

    async def a_round():
        native._events()
        await asyncio.sleep(0)
    asyncio.run(a_round())
    assert len(writes) == 1 and writes[0].count("\n") == 2
    assert [line.split(" INFO ")[1] for line in stream.getvalue().splitlines()] == [
        "agi: trace T00000001 success in 2.0 ms", "agi: trace T00000002 success in 2.0 ms"]
    assert observed == [("agi", "success", 0.002)] * 2 and native.answered == {}


@pytest.mark.parametrize("to", ["a file", "a string"])
def test_requests_logged_directly_as_serve_sets_logging_up_never_name_a_number(
        service, serve_logging, tmp_path, monkeypatch, to):
    """Logged to a file, a C exchange's traces are logged by its thread, the line as the
    logging module would write it at the time it reads; to a stream that is not a file's,
    by Python (requestlog)."""
    import logging

    from cdrtrace.service import agi, requestlog

    store, running, tokens = service
    stream = serve_logging(tmp_path / "log" if to == "a file" else None)
    by_python = []
    info = requestlog.RequestLog.info
    monkeypatch.setattr(requestlog.RequestLog, "info", lambda self, message, *args: (
        by_python.append(message % args), info(self, message, *args)))
    call(running, "POST", "/v1/trace", tokens["switch"], json={"line": LINE, "at": AT})
    agi.dial("127.0.0.1", running.ports["agi"], LINE, AT)

    def written() -> str:
        return (tmp_path / "log").read_text() if to == "a file" else stream.getvalue()
    deadline = time.monotonic() + 5               # written while serving, not only at the end
    while written().count(" ms\n") < 2:
        assert time.monotonic() < deadline, written()
        time.sleep(0.01)
    running.stop()
    lines = [line for line in written().splitlines() if " httpx " not in line]
    stamp = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) cdrtrace\.service INFO "
    assert all(re.match(stamp, line) for line in lines), lines
    traced = [line for line in lines if re.search(
        r" INFO (http: POST /v1/trace 200|agi: trace T\d{8} already_traced) in \d+\.\d ms$",
        line)]
    assert len(traced) == 2, lines
    for number in (LINE, CALLER, LINE[-7:], CALLER[-7:]):
        assert not any(number in line for line in lines), number
    messages = [line.split(" INFO ", 1)[1] for line in traced]    # http's, then agi's
    in_c = (os.environ["CDRTRACE_HTTP"] == "native",                # which exchanges are C's
            os.environ.get("CDRTRACE_AGI", "native") != "python")
    by_c = [m for m, c in zip(messages, in_c, strict=True) if c]
    assert [m for m in by_python if m in messages] == (
        [m for m in messages if m not in by_c] if to == "a file" else messages)
    formatter = logging.Formatter(requestlog.FORMAT)
    for line in traced:                              # as the logging module writes it
        when, ms = re.match(stamp, line).groups()
        record = logging.LogRecord("cdrtrace.service", logging.INFO, __file__, 0,
                                   line.split(" INFO ", 1)[1], None, None)
        record.created = time.mktime(time.strptime(when, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000
        record.msecs = int(ms)
        assert formatter.format(record) == line
        assert abs(record.created - time.time()) < 60


def _agi_exchange(port: int, head: bytes, replies: list[bytes]) -> list[bytes]:
    """Send head, then a reply to each command received: the commands, in order. A head
    without its blank line is followed by a hang-up (not a wait for the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        commands = []
        try:
            stream.write(head)
            stream.flush()
            if not (head.startswith(b"\n") or head.endswith(b"\n\n") or head.endswith(b"\n\r\n")):
                sock.shutdown(socket.SHUT_WR)
            for reply in replies:
                line = stream.readline()
                if not line:
                    break
                commands.append(line)
                stream.write(reply)
                stream.flush()
            commands += stream.readlines()       # until the listener closes
        except (ConnectionResetError, BrokenPipeError):
            pass
        return commands


_LINES = st.sampled_from([b"agi_network: yes", b"agi_network_script: trace",
                          b"agi_network_script: other", b"agi_request: agi://h:4573/trace?a=b",
                          b"agi_callerid: anonymous", b"agi_callerid: 3035550199",
                          b"agi_callerid:   +1 (303) 555-0198  ", b"agi_callerid:",
                          b"agi_arg_1: 2026-03-02T23:00:00Z", b"agi_arg_1: soon",
                          b"agi_calleridname: \xc3\xa9\xff", b"agi_x : y",
                          b"agi_callerid: 3035550197\r"])
_BAD_LINES = st.sampled_from([b"agi_", b"not a variable", b" agi_lead: 1", b"agi_long: " + b"z" * 4100])
_BLOCKS = st.tuples(st.lists(_LINES, max_size=10), st.lists(_BAD_LINES, max_size=1),
                    st.integers(0, 10)).map(   # mostly well formed; a bad line at times
    lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:])
_REPLIES = st.sampled_from([b"200 result=1\n", b"HANGUP\n200 result=1\n",
                            b"HANGUP\n511 result=-1 Command Not Permitted on a dead channel\n",
                            b"520-Invalid command syntax.  Proper usage follows:\nx\n520 End.\n",
                            b"520 Invalid command\n", b"what\n", b"200 result=1\r\n"])


@given(_BLOCKS, st.sampled_from([b"\n", b"\r\n", b""]),
       st.lists(_REPLIES, min_size=3, max_size=3))
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_native_fastagi_listener_answers_as_its_python_reference(both_listeners, lines, end,
                                                                     replies):
    """Differential: any block of these lines and any replies get the same commands from
    the C exchange as from the Python listener (traces that cannot succeed, so that the
    order of the two does not matter)."""
    head = b"".join(line + b"\n" for line in lines) + end
    native, python = both_listeners
    numbered = re.compile(rb'COT_TRACE_ID "T\d+"')       # each trace gets its own number

    def said(port):
        return [numbered.sub(b'COT_TRACE_ID "T"', c) for c in _agi_exchange(port, head, replies)]
    assert said(native) == said(python)


@pytest.fixture(scope="module")
def both_listeners(tmp_path_factory):
    """(native port, python port): two services over one store without calls."""

    store = cdrtrace.open(tmp_path_factory.mktemp("both") / "db", create=True)
    running = []
    try:
        for listener in AGI_LISTENERS:
            os.environ["CDRTRACE_AGI"] = listener
            running.append(Service(store))
    finally:
        os.environ.pop("CDRTRACE_AGI", None)
    yield tuple(r.ports["agi"] for r in running)
    for r in running:
        r.stop()
    store.close()


def test_the_fastagi_thread_neither_spins_nor_stops_when_descriptors_run_out(tmp_path):
    """A local peer holding connections until the service has no descriptor left: the C
    exchange sets the listening socket aside (it would stay readable and spin its loop),
    and serves again once descriptors are free."""
    import resource
    import signal

    agi_port = _free_port()

    def few_descriptors():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    proc, port, token = _serve_one_call(
        tmp_path, _unanswered(),
        "--agi", f"127.0.0.1:{agi_port}", preexec_fn=few_descriptors)
    held = []
    try:
        deadline = time.monotonic() + 30
        while True:                                     # until both listeners are up
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    held.append(socket.create_connection(("127.0.0.1", agi_port), timeout=1))
                    break
            except (OSError, httpx.HTTPError):
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(80):                            # more than it has descriptors for
            held.append(socket.create_connection(("127.0.0.1", agi_port), timeout=1))
        time.sleep(0.5)
        before = _cpu_seconds(proc.pid)
        time.sleep(1.0)
        assert _cpu_seconds(proc.pid) - before < 0.3    # not spinning on accept
        for sock in held:
            sock.close()
        held = []
        deadline = time.monotonic() + 10
        while True:                                     # served again
            commands, _ = agi(Ports(agi_port), asterisk(agi_arg_1=AT))
            if commands:
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert commands[0] == 'SET VARIABLE COT_OUTCOME "success"'
    finally:
        for sock in held:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def _cpu_seconds(pid: int) -> float:

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _presented(port: int) -> bytes:
    """The certificate (DER) the service presents to a new TLS connection."""
    context = ssl.create_default_context(cafile=TLS[0])
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw) as tls:
        return tls.getpeercert(binary_form=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_the_tls_certificate_or_keeps_the_one_it_has(tmp_path, workers):
    """A renewed certificate is taken without a restart: after SIGHUP every new connection
    (whichever worker takes it) is given the files' new pair. Files that are wrong then
    (a certificate that is not the key's) are refused, and the pair loaded before is kept;
    the service serves on, and SIGTERM still ends it cleanly."""
    import shutil
    import signal

    pair = [os.path.join(os.path.dirname(__file__), "tls", name) for name in
            ("cert.pem", "key.pem", "cert2.pem", "key2.pem")]
    der = [ssl.PEM_cert_to_DER_cert(open(pair[i]).read()) for i in (0, 2)]
    cert, key = str(tmp_path / "api.pem"), own_key(tmp_path)
    shutil.copyfile(pair[0], cert)
    proc, port, token = _serve_one_call(
        tmp_path, _unanswered(),
        "--workers", str(workers), "--tls-cert", cert, "--tls-key", key)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()

    def logged(text: str, count: int) -> None:
        deadline = time.monotonic() + 30
        while sum(text in line for line in lines) < count:
            assert proc.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.05)
    try:
        logged("http on port", workers)                    # every worker serving
        assert {_presented(port) for _ in range(6)} == {der[0]}
        shutil.copyfile(pair[2], cert)                     # renewed: the second pair
        shutil.copyfile(pair[3], key)
        proc.send_signal(signal.SIGHUP)
        logged("SIGHUP: the TLS certificate and key reloaded", workers)
        assert {_presented(port) for _ in range(6)} == {der[1]}
        shutil.copyfile(pair[0], cert)                     # a certificate not key2's: were
        proc.send_signal(signal.SIGHUP)                    # it loaded, no key would be left
        logged("the ones loaded before are kept", workers)
        assert {_presented(port) for _ in range(6)} == {der[1]}
        context = ssl.create_default_context(cafile=pair[2])
        answer = httpx.post(f"https://127.0.0.1:{port}/v1/trace", json={"line": LINE, "at": AT},
                            headers={"Authorization": f"Bearer {token}"}, verify=context,
                            timeout=10)
        assert answer.status_code == 200 and answer.json()["outcome"] == "success"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, lines


def test_sighup_without_tls_changes_nothing(tmp_path):
    """A SIGHUP (a log rotation's, say) does not end a plain service: it says there is
    nothing to reload, and serves on."""
    import signal

    proc, port, token = _serve_one_call(
        tmp_path, cdr(src=CALLER, dst=LINE, start="2026-03-02 14:03:00", answer="",
                      end="2026-03-02 14:03:30", disposition="NO ANSWER"))
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    deadline = time.monotonic() + 30
    try:
        while not any("http on port" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)
        while not any("SIGHUP: nothing to reload" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.05)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, lines


def test_sighup_reads_the_fastagi_keys_again_so_a_key_changes_with_no_restart(tmp_path):
    """The key file may hold the old and the new key while the switches move over; a
    SIGHUP reads it again. A file that is wrong then is refused, and the keys read before
    are kept."""
    import signal

    from cdrtrace.service import agi as agi_module

    old, new = GOOD_KEY, GOOD_KEY[::-1]
    key_file = tmp_path / "agi.key"
    key_file.write_text(old + "\n")
    key_file.chmod(0o600)
    agi_port = _free_port()
    proc, _, _ = _serve_one_call(
        tmp_path, _unanswered(),
        "--agi", f"127.0.0.1:{agi_port}", "--agi-key-file", str(key_file))
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()

    def logged(text: str, count: int = 1) -> None:
        deadline = time.monotonic() + 30
        while sum(text in line for line in lines) < count:
            assert proc.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.05)

    def taken(key: str) -> bool:
        first = agi(Ports(agi_port), asterisk(
            agi_arg_1=AT, agi_network_script=f"trace?key={key}",
            agi_request=f"agi://127.0.0.1/trace?key={key}"))[0][0]
        return first != agi_module.NOT_KEYED

    def rewritten(text: str) -> None:
        key_file.write_text(text)
        proc.send_signal(signal.SIGHUP)
    try:
        logged("agi on port")
        assert (taken(old), taken(new)) == (True, False)
        rewritten(f"{old}\n{new}\n")                       # both, while the switches move
        logged("SIGHUP: the FastAGI keys read again", 1)
        assert (taken(old), taken(new)) == (True, True)
        rewritten(f"{new}\n")                              # the old one dropped
        logged("SIGHUP: the FastAGI keys read again", 2)
        assert (taken(old), taken(new)) == (False, True)
        rewritten("not a key\n")
        logged("the FastAGI keys were not read again, those read before are kept")
        assert (taken(old), taken(new)) == (False, True)
        assert not any(old in line or new in line for line in lines)   # never logged
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, lines
