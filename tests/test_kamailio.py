"""A real switch in the test suite: Kamailio 5 (Debian's package) proxies real SIP calls
between phones of tests/sip.py, and its acc module writes the CDRs cdrtrace ingests as
--format kamailio. Every call kind's record, and the trace of it, is checked against what
happened on the wire. Skipped, saying why, where Kamailio is not installed (.ci/run
installs it)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sip import Phone

import cdrtrace
from cdrtrace import testing

KAMAILIO = shutil.which("kamailio") or next(
    (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if Path(p).exists()), None)
if KAMAILIO is None:
    pytest.skip("Kamailio is not installed (apt-get install kamailio): the real-switch "
                "tests need it", allow_module_level=True)
CONFIG = Path(__file__).parent.parent / "docs" / "kamailio" / "kamailio.cfg"   # as documented
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"      # mpath in kamailio.cfg
MISSING = [m for m in re.findall(r'loadmodule "([^"]+)"', CONFIG.read_text())
           if not (Path(MODULES) / m).exists()]
if MISSING:
    pytest.skip(f"Kamailio's modules {', '.join(MISSING)} are not installed (Debian's "
                "kamailio-sqlite-modules and kamailio-utils-modules): the real-switch tests "
                "need them", allow_module_level=True)
VICTIM, FORWARDER, OFFLINE, MOVED = "3035550110", "3035550199", "3035550120", "3035550130"


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group the test started (Kamailio forks its workers), and
    SIGKILL if it is still shutting down after 10 s (its shutdown sometimes waits on a
    child); the CDR files are flushed at every write, whichever."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:          # already gone
        pass


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    """Kamailio on a free loopback port, writing its accounting to a folder of the test;
    stopped (and its files complete) at the end of the module."""
    folder = tmp_path_factory.mktemp("kamailio")
    proc, port = start_kamailio(folder)
    yield port, folder, proc
    stop(proc)


def place_calls(port: int) -> list[dict]:
    """Every call kind, each in its own second (CDR times are whole seconds): what the
    wire did, for the records and traces to be checked against."""
    victim, moved = Phone(VICTIM, port), Phone(MOVED, port)
    victim.register()
    moved.register()
    placed = []

    def call(kind, caller, callee_phone, answer_how, to=VICTIM, headers=(), **kw):
        time.sleep(1.05 - time.time() % 1)   # a new second
        phone = Phone(caller, port)
        started = int(time.time())
        answering = None
        if callee_phone is not None:
            answering = threading.Thread(target=callee_phone.answer, args=(answer_how,),
                                         kwargs={"redirect_to": "3035550140"}
                                         if answer_how == "redirect" else {})
            answering.start()
        status = phone.call(to, headers=list(headers), **kw)
        if answering is not None:
            answering.join(10)
        phone.close()
        placed.append({"kind": kind, "caller": caller, "to": to, "status": status,
                       "second": started})

    call("answered", "2125550101", victim, "answer")
    call("cancelled while ringing", "2125550102", victim, "ring", cancel_after=0.3)
    call("busy", "2125550103", victim, "busy")
    call("declined", "2125550104", victim, "decline")
    call("no answer", "2125550105", victim, "no-answer")
    call("private, asserted identity", "anonymous", victim, "answer",
         headers=[("P-Asserted-Identity", "<sip:2125550106@127.0.0.1>"), ("Privacy", "id")])
    call("forwarded by the switch", "2125550107", victim, "answer", to=FORWARDER)
    call("cancelled before it rang", "2125550110", victim, "silent", give_up_after=0.3)
    call("do not disturb", "2125550111", victim, "dnd")
    call("offline", "2125550108", None, None, to=OFFLINE)
    call("redirected (302)", "2125550109", moved, "redirect", to=MOVED)
    call("rejected while ringing", "2125550112", victim, "reject")
    victim.close()
    moved.close()
    return placed


def test_kamailio_cdrs_of_every_call_kind_trace_as_the_wire_says(switch, tmp_path):
    port, folder, proc = switch
    placed = place_calls(port)
    assert [p["status"] for p in placed] == [200, 487, 486, 603, 480, 200, 200, 487, 480, 404, 302, 486]
    time.sleep(0.5)
    stop(proc)
    cdrs = sorted((folder / "acc").glob("acc_cdrs_*.log"))
    assert cdrs, list((folder / "acc").iterdir())
    keep = os.environ.get("CDRTRACE_KEEP_KAMAILIO")    # refresh data/samples/kamailio
    if keep:
        for table in ("acc_cdrs", "acc", "missed_calls"):
            shutil.copy(next((folder / "acc").glob(f"{table}_[0-9]*.log")),
                        Path(keep) / f"{table}.log")
    check_traces(tmp_path / "cdrs", [str(p) for p in cdrs], "kamailio", placed, len(placed))
    # the transaction rows: every call's final reply (acc: 200s, missed_calls: the others)
    rows = [str(next((folder / "acc").glob(f"{table}_[0-9]*.log")))
            for table in ("acc", "missed_calls")]
    check_traces(tmp_path / "rows", rows, "auto", placed, len(placed), rows=True)


@pytest.mark.parametrize("backend", ["dbtext", "sqlite"])
def test_kamailio_db_text_and_sqlite_tables_trace_as_the_wire_says(backend, tmp_path):
    """The same calls with the acc tables in db_text (written when Kamailio stops,
    newest row first) and in SQLite (read with ingest sqlite:///...?table=...)."""
    proc, port = start_kamailio(tmp_path, backend=backend)
    try:
        placed = place_calls(port)
    finally:
        stop(proc)
    assert [p["status"] for p in placed] == [200, 487, 486, 603, 480, 200, 200, 487, 480, 404, 302, 486]
    acc = tmp_path / "acc"
    keep = os.environ.get("CDRTRACE_KEEP_KAMAILIO")    # refresh data/samples/kamailio
    if keep:
        for name in ("acc_cdrs", "acc", "missed_calls") if backend == "dbtext" else ("acc.db",):
            shutil.copy(acc / name, Path(keep) / (f"{name}.dbtext" if backend == "dbtext" else name))

    def source(table):
        return str(acc / table) if backend == "dbtext" else f"sqlite://{acc}/acc.db?table={table}"
    if backend == "dbtext":      # newest first, as db_text writes on shutdown
        ids = [int(line.split(b":", 1)[0]) for line in (acc / "acc_cdrs").read_bytes().splitlines()[1:]]
        assert ids == sorted(ids, reverse=True) and len(ids) == len(placed)
    check_traces(tmp_path / "cdrs", [source("acc_cdrs")], "auto", placed, len(placed))
    check_traces(tmp_path / "rows", [source("acc"), source("missed_calls")], "auto", placed,
                 len(placed), rows=True)


def test_a_proxy_of_two_domains_names_no_extensions_caller(tmp_path):
    """A proxy that serves two customers' domains, each with its own 1001 (one phone
    registered here: the proxy finds it by its user alone, as the shipped configuration's
    usrloc does). a.example.com's 1001 is called at one second (after a call sent to the
    proxy's own address, which names no domain), b.example.com's at the next;
    a.example.com's customer dials *57. The build before named the second call:
    b's caller, to another customer's line. The records of both tables name each call's
    domain (`called_domain`), so the feed names two tenants and such a line fails closed;
    an E.164 line of the same proxy is traced as before."""
    proc, port = start_kamailio(tmp_path)
    try:
        phone, victim = Phone("1001", port), Phone(VICTIM, port)
        phone.register()
        victim.register()
        placed = []
        for caller, callee, domain, answering in (
                # (a failed call first: a feed of transaction rows is trusted from the first
                # one it shows, docs/formats.md)
                ("2125550100", OFFLINE, "127.0.0.1", None),
                ("2125550099", "1001", "127.0.0.1", phone),      # by the proxy's address
                ("2125550101", "1001", "a.example.com", phone),
                ("2125550102", "1001", "b.example.com", phone),
                ("2125550103", VICTIM, "127.0.0.1", victim)):
            time.sleep(1.05 - time.time() % 1)           # each in its own second
            answers = answering and threading.Thread(target=answering.answer, args=("answer",))
            if answers:
                answers.start()
            calling = Phone(caller, port)
            assert calling.call(callee, domain=domain) == (200 if answers else 404)
            if answers:
                answers.join(10)
            calling.close()
            placed.append(int(time.time()))
        phone.close()
        victim.close()
        time.sleep(0.5)
    finally:
        stop(proc)
    acc = tmp_path / "acc"
    at = (placed[-1] + 1) * 1_000_000
    # up to a.example.com's call: one customer's domain, and the proxy's own address,
    # which names none (the configuration logs no domain for it)
    cdrs = next(f for f in acc.glob("acc_cdrs_[0-9]*.log") if f.stat().st_size).read_bytes()
    (tmp_path / "first.log").write_bytes(b"".join(cdrs.splitlines(keepends=True)[:3]))
    store = cdrtrace.open(tmp_path / "first", create=True)
    assert cdrtrace.ingest(store, [str(tmp_path / "first.log")], fmt="kamailio").records == 3
    assert store.trace("1001", at=at).outcome.value == "success"
    assert store.trace_records("1001", analyst="cic")[-1]["call"]["calling"] == "+12125550101"
    assert store.stats()["feeds"][0]["tenants"] == ["a.example.com"]
    store.close()
    for name, tables in (("cdrs", ("acc_cdrs",)), ("rows", ("acc", "missed_calls"))):
        files = [str(f) for t in tables for f in acc.glob(f"{t}_[0-9]*.log") if f.stat().st_size]
        store = cdrtrace.open(tmp_path / name, create=True)
        summary = cdrtrace.ingest(store, files, fmt="auto")
        assert (summary.records, summary.rejected) == (5, 0), name
        assert store.trace("1001", at=at).outcome.value == "untraceable", name
        call = store.trace_records("1001", analyst="cic")[-1]["call"]
        assert call["calling"] == "+12125550102" and call["tenants_shared"], name
        feed = store.stats()["feeds"][0]
        assert (feed["tenants_shared"], sorted(feed["tenants"])) == (
            True, ["a.example.com", "b.example.com"]), name
        got = store.trace(VICTIM, at=at)
        assert got.outcome.value == "success", name
        assert store.trace_records(VICTIM, analyst="cic")[-1]["call"]["calling"] == "+12125550103"
        store.close()


def check_traces(db: Path, sources: list[str], fmt: str, placed: list[dict], count: int,
                 rows: bool = False) -> None:
    """Ingest Kamailio's records of the placed calls and trace each as of its own moment:
    the outcome and the call named must be what happened on the wire. rows: the
    transaction tables, which log a failed call only where configured to: a call from
    before the first failed one they show is untraceable (the acc table alone would not
    show the calls that rang unanswered)."""
    # the victim's 8 calls that rang all held (keep 9), so each can be traced as of its
    # own moment
    store = cdrtrace.open(db, create=True, keep=9)
    summary = cdrtrace.ingest(store, sources, fmt=fmt)
    assert summary.rejected == 0 and summary.records == count
    traced = {}
    for p in placed:                          # *57 right after each call, before the next
        at = (p["second"] + 1) * 1_000_000 - 1
        line = FORWARDER if p["to"] == FORWARDER else p["to"]
        traced[p["kind"]] = store.trace(VICTIM if p["to"] in (VICTIM, FORWARDER) else line,
                                        at=at)
    records = {r["trace_id"]: r for r in store.trace_records(analyst="ann")}

    def named(kind):
        result = traced[kind]
        return result.outcome.value, (records[result.trace_id]["call"] or {}).get("calling")
    assert named("answered") == ("untraceable" if rows else "success", "+12125550101")
    assert named("cancelled while ringing") == ("success", "+12125550102")     # it rang
    assert named("busy") == ("already_traced", "+12125550102")   # busy never rang: the one before
    assert named("declined") == ("success", "+12125550104")      # 603: it rang
    assert named("no answer") == ("success", "+12125550105")
    assert named("private, asserted identity") == ("success", "+12125550106")  # PAI, not From
    private = records[traced["private, asserted identity"].trace_id]["call"]
    assert private["presentation"] == "restricted"               # Privacy: id, traceable (R5)
    assert named("forwarded by the switch") == ("success", "+12125550107")
    # never alerted (no 180, so `rang` is empty): the last call that rang is still 107's
    assert named("cancelled before it rang") == ("already_traced", "+12125550107")
    assert named("do not disturb") == ("already_traced", "+12125550107")
    assert named("offline")[0] == "no_call"                       # 404: nothing rang
    assert named("redirected (302)")[0] == "no_call"              # 302: it did not ring
    # 180, then 486 when its user rejected it: `rang` shows it alerted the line (R3)
    assert named("rejected while ringing") == ("success", "+12125550112")
    forwarder = store.trace(FORWARDER, at=(placed[6]["second"] + 1) * 1_000_000 - 1)
    assert forwarder.outcome.value == "success"                  # R2: the forwarding line
    assert "2125550107" not in str(forwarder)                    # never the caller
    entries = testing.line_entries(store, VICTIM)
    assert len(entries) > 0
    store.close()


def start_kamailio(folder: Path, backend: str = "flatstore",
                   **substitutes) -> tuple[subprocess.Popen, int]:
    """Kamailio with the repository's configuration (its placeholders replaced) on a free
    loopback port, writing its accounting to folder/acc with db_flatstore, db_text or
    db_sqlite (the tables made from docs/kamailio's definitions): (process, port)."""
    text = CONFIG.read_text().replace("/var/log/kamailio/acc", str(folder / "acc"))
    for name, value in substitutes.items():
        text = text.replace(name, value, 1)         # the substdef line defines each once
    (folder / "acc").mkdir(exist_ok=True)
    defines = []
    if backend == "dbtext":
        for table in (CONFIG.parent / "dbtext").iterdir():
            shutil.copy(table, folder / "acc" / table.name)
        defines = ["-A", "WITH_DBTEXT"]
    elif backend == "sqlite":
        if not Path(MODULES, "db_sqlite.so").exists():
            pytest.skip("Kamailio's SQLite module is not installed (apt-get install "
                        "kamailio-sqlite-modules)")
        with sqlite3.connect(folder / "acc" / "acc.db") as db:
            db.executescript((CONFIG.parent / "sqlite.sql").read_text())
        defines = ["-A", "WITH_SQLITE"]
    (folder / "kamailio.cfg").write_text(text)
    port = free_udp_port()
    with open(folder / "kamailio.log", "w") as log:     # the child keeps its own copy
        proc = subprocess.Popen([KAMAILIO, *defines, "-f", str(folder / "kamailio.cfg"), "-l",
                                 f"udp:127.0.0.1:{port}", "-DD", "-E", "-n", "1", "-Y",
                                 str(folder), "-w", str(folder)], stdout=subprocess.DEVNULL,
                                stderr=log, start_new_session=True)
    probe, deadline = Phone("9999999999", port), time.monotonic() + 10
    while True:                              # listening once a REGISTER is answered
        try:
            probe.register()
            break
        except (TimeoutError, ConnectionRefusedError, AssertionError):
            if time.monotonic() > deadline or proc.poll() is not None:
                stop(proc)
                raise RuntimeError((folder / "kamailio.log").read_text()[-2000:]) from None
    probe.close()
    return proc, port


def test_the_readme_s_kamailio_recipe_asks_as_the_tested_configuration_does():
    """The README's *57 block builds its form as docs/kamailio/kamailio.cfg does, the
    configuration the test below runs: the From user encoded."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    forms = re.findall(r"^ *(\$var\(form\) = .*)$", readme, re.M)
    assert forms and all(form in CONFIG.read_text() for form in forms), forms


def test_a_phone_dials_star_57_through_kamailio_and_hears_the_outcome(tmp_path):
    """*57 from a SIP phone: Kamailio asks `cdrtrace serve` (http_client), which traces the
    call the live ingest of Kamailio's own CDRs indexed, at the proxy's own time of the
    *57, and answers the phone with the announcement id."""
    import httpx

    db = tmp_path / "store"
    store = cdrtrace.open(db, create=True)
    token = store.tokens.create("kamailio", "switch")
    store.close()
    http = free_udp_port()        # a free port number (TCP and UDP ports are separate)
    cli = [sys.executable, "-m", "cdrtrace.cli"]
    running = [subprocess.Popen([*cli, "serve", "--db", str(db), "--http", f"127.0.0.1:{http}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)]
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "cdrtrace serve did not start"
                time.sleep(0.1)
        kamailio, port = start_kamailio(
            tmp_path, **{"http://127.0.0.1:8080/v1/trace/text": f"http://127.0.0.1:{http}/v1/trace/text",
                         "cdt_put-the-switch-token-here": token})
        running.append(kamailio)
        victim, quiet = Phone(VICTIM, port), Phone("3035550150", port)
        victim.register()
        quiet.register()
        answering = threading.Thread(target=victim.answer, args=("answer",))
        answering.start()
        harasser = Phone("2125550166", port)
        placed = time.time()
        assert harasser.call(VICTIM) == 200
        answering.join(10)
        harasser.close()
        deadline = time.monotonic() + 10
        while not (found := [p for p in (tmp_path / "acc").glob("acc_cdrs_[0-9]*.log")
                             if p.stat().st_size]):      # written once the dialog ends
            assert time.monotonic() < deadline, "Kamailio wrote no CDR"
            time.sleep(0.05)
        cdrs = found[0]
        running.append(subprocess.Popen(      # the live ingest of Kamailio's CDR file
            [*cli, "ingest", "--db", str(db), "--follow", str(cdrs), "--format", "kamailio",
             "--cdr-delay", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        deadline = time.monotonic() + 30
        while True:                           # the follower attached and read the call
            stats = subprocess.run([*cli, "stats", "--db", str(db), "--json"],
                                   capture_output=True, text=True)
            feeds = json.loads(stats.stdout)["feeds"] if stats.returncode == 0 else []
            if any(f["live"] and f["records"] >= 1 for f in feeds):
                break
            assert time.monotonic() < deadline, stats.stdout + stats.stderr
            time.sleep(0.2)

        def dial_star_57(phone) -> str:
            assert phone.call("*57") == 603
            return phone.last_reply.get("X-COT-Announcement")
        # the recipe's time is whole seconds: a *57 comes seconds after the call it traces
        time.sleep(max(0.0, placed + 1.05 - time.time()))
        assert dial_star_57(victim) == "COT-SUCCESS"
        assert dial_star_57(victim) == "COT-ALREADY-TRACED"
        assert dial_star_57(quiet) == "COT-NO-CALL"
        assert "2125550166" not in str(victim.last_reply.render())   # never the caller
        # a From user may hold '&' and '=': the form carries it as the line, encoded, and
        # it adds no field of its own (a time chosen by the phone: one before every call
        # would be traced as no_call)
        forged = Phone(f"{VICTIM}&at=2020-01-01", port)
        assert dial_star_57(forged) == "COT-FAILURE"
        forged.close()
        victim.close()
        quiet.close()
    finally:
        for proc in reversed(running):
            stop(proc)
    store = cdrtrace.open(db)
    traced = store.trace_records(VICTIM, analyst="ann")
    assert [r["outcome"] for r in traced] == ["success", "already_traced"]
    assert traced[0]["call"]["calling"] == "+12125550166"
    assert traced[0]["requested_by"] == "token:kamailio"
    # activated at the proxy's time of the *57 ($utimef: whole seconds), not at the
    # service's clock (which would carry microseconds)
    activated = traced[0]["activated_us"]
    assert activated % 1_000_000 == 0 and abs(activated / 1e6 - time.time()) < 60
    store.close()
