"""The customer's trace log and the guide: every field the carrier's guide asks for is
there, and no caller's number, name or address, over generated traffic (the text is
extracted from the PDF)."""
from __future__ import annotations

import io

import numpy as np
import pypdf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cdrtrace
from cdrtrace import cli, synth
from cdrtrace.documents.trace_log import POLICE_FIELDS, customer_log, guide
from cdrtrace.parsing import numbers

CARRIER = {"name": "Front Range Telephone", "follow_up_phone": "1-800-555-0199",
           "follow_up_hours": "Mon-Fri 8am-5pm MT", "law_enforcement_phone": "1-800-555-0142",
           "star_code": "*57"}


def text_of(pdf: bytes) -> str:
    return " ".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs")
    columns, truth = synth.generate(3000, 200, seed=5, campaigns=4)
    store = cdrtrace.open(folder / "s", create=True, zone="America/Denver")
    events = sorted((call["trace_at_s"], campaign["victim"]) for campaign in truth["campaigns"]
                    for call in campaign["calls"])
    ends, written = columns["end"], 0
    for n, (at, victim) in enumerate(events):          # CDRs arrive as calls end, as live
        upto = int(np.searchsorted(ends, at, side="right"))
        if upto > written:
            (folder / f"m{n}.csv").write_bytes(synth.format_asterisk(columns, written, upto))
            cdrtrace.ingest(store, [str(folder / f"m{n}.csv")])
            written = upto
        store.trace(victim, at=at * 1_000_000)
    callers = {numbers.format_number(int(c))[2:] for c in columns["caller"] if int(c)}
    names = {n.decode("latin-1") for n in synth.FIRST + synth.LAST}
    yield store, truth, callers, names
    store.close()


def test_the_trace_log_holds_every_field_and_no_caller(traffic):
    store, truth, callers, names = traffic
    victim = truth["campaigns"][0]["victim"]
    status = store.status(victim)
    page = customer_log(status, CARRIER, "America/Denver", "2026-03-03T12:00:00Z")
    text = " ".join(text_of(page.pdf_bytes()).split())
    for needed in [victim, "Front Range Telephone", "1-800-555-0199", "Mon-Fri 8am-5pm MT",
                   "1-800-555-0142", "Caller A", *POLICE_FIELDS,
                   *(t["trace_id"] for t in status.traces)]:
        assert needed in text, needed
    assert "MST" in text                              # times in the customer's zone
    assert not any(c in text for c in callers)
    html = page.html_text()
    assert all(t["trace_id"] in html for t in status.traces) and "Officer" in html
    assert not any(c in html for c in callers)


def test_the_trace_log_is_the_same_bytes_for_the_same_status(traffic):
    store, truth, *_ = traffic
    status = store.status(truth["campaigns"][0]["victim"])
    first = customer_log(status, CARRIER, "UTC", "2026-03-03T12:00:00Z").pdf_bytes()
    assert first == customer_log(status, CARRIER, "UTC", "2026-03-03T12:00:00Z").pdf_bytes()


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(0, 10_000))
def test_no_trace_log_names_a_caller_over_generated_traffic(traffic, pick):
    store, truth, callers, names = traffic
    lines = [c["victim"] for c in truth["campaigns"]]
    status = store.status(lines[pick % len(lines)])
    text = text_of(customer_log(status, CARRIER, "UTC", "2026-03-03T12:00:00Z").pdf_bytes())
    assert not any(c in text for c in callers)
    assert not any(f" {n} " in f" {text} " for n in names if len(n) > 3)


def test_the_guide_fills_in_the_carrier(tmp_path):
    text = " ".join(text_of(guide(CARRIER).pdf_bytes()).split())
    for needed in ["*57", "Front Range Telephone", "1-800-555-0199", "1-800-555-0142",
                   "three times", "does not tell you who called", *POLICE_FIELDS]:
        assert needed in text, needed
    assert cli.main(["guide", "--pdf", str(tmp_path / "guide.pdf")]) == 0
    assert "Call Trace" in text_of((tmp_path / "guide.pdf").read_bytes())


def test_status_writes_the_log_from_the_command_line(traffic, tmp_path):
    store, truth, callers, _ = traffic
    (store.path / "cdrtrace.toml").write_text(
        "[carrier]\n" + "".join(f'{k} = "{v}"\n' for k, v in CARRIER.items()))
    victim = truth["campaigns"][0]["victim"]
    pdf, html = tmp_path / "log.pdf", tmp_path / "log.html"
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "cdrtrace.cli", "status", victim, "--db",
                    str(store.path), "--pdf", str(pdf), "--html", str(html)], check=True,
                   capture_output=True)          # another process: the store is open here
    text = text_of(pdf.read_bytes())
    assert "Front Range Telephone" in text and "Case number" in text
    assert not any(c in text + html.read_text() for c in callers)
    (store.path / "cdrtrace.toml").unlink()


def test_customer_care_gets_the_log_and_the_guide_over_http_never_a_caller(traffic):
    """GET /v1/status/{line}/log and /v1/guide (a care token): the documents the CLI
    writes, as PDF or HTML, with the traces and no caller's number or name."""
    from test_service import Service, call

    store, truth, callers, names = traffic
    running = Service(store)
    try:
        care = store.tokens.create("desk-docs", "care")
        analyst = store.tokens.create("ann-docs", "analyst")
        for campaign in truth["campaigns"]:
            victim = campaign["victim"]
            status = store.status(victim)
            pdf = call(running, "GET", f"/v1/status/{victim}/log", care)
            assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
            html = call(running, "GET", f"/v1/status/{victim}/log?format=html", care)
            assert html.headers["content-type"] == "text/html; charset=utf-8"
            for text in (" ".join(text_of(pdf.content).split()), html.text):
                assert all(t["trace_id"] in text for t in status.traces)
                assert all(p.label in text for p in status.progress)
                assert not any(c in text for c in callers)
                assert not any(f" {n} " in f" {text} " for n in names if len(n) > 3)
        guide_pdf = call(running, "GET", "/v1/guide", care)
        assert "does not tell you who called" in " ".join(text_of(guide_pdf.content).split())
        assert "Call Trace" in call(running, "GET", "/v1/guide?format=html", care).text
        victim = truth["campaigns"][0]["victim"]
        assert call(running, "GET", f"/v1/status/{victim}/log", analyst).status_code == 403
        assert call(running, "GET", "/v1/guide").status_code == 401
        assert call(running, "GET", "/v1/guide?format=doc", care).status_code == 422
        assert call(running, "GET", f"/v1/status/{victim}/log?format=doc", care).status_code == 422
        assert call(running, "GET", "/v1/status/not-a-line/log", care).status_code == 400
    finally:
        running.stop()


def render(pdf: bytes, page: int = 0):
    """A page as a picture (for looking at; docs/examples keeps one of each document)."""
    import pypdfium2

    return pypdfium2.PdfDocument(pdf)[page].render(scale=1).to_pil()


def test_a_page_renders_as_a_picture():
    picture = render(guide(CARRIER).pdf_bytes())
    assert picture.size == (612, 792)                  # US Letter at 72 dpi
    assert picture.convert("L").getextrema()[0] < 50   # there is ink on it


# ------------------------------------------------------------------ the case report

AUTHORITY = {"kind": "subpoena", "reference": "SUB-2026-42", "agency": "Denver Police Department",
             "officer": "Det. Alvarez", "case_number": "26-001234"}


def test_the_case_report_needs_an_authority_and_can_be_authenticated(tmp_path):
    from cdrtrace import testing
    from cdrtrace.documents.case_report import record_hash
    from conftest import cdr

    store = cdrtrace.open(tmp_path / "s", create=True, zone="America/Denver",
                          archive_dir=str(tmp_path / "archive"))
    (tmp_path / "dir.csv").write_text("number,name,address,served\n"
                                      "+17205550666,Pat Doe,12 Elm St Denver,true\n")
    store.import_directory(tmp_path / "dir.csv", operator="ops")
    (tmp_path / "m.csv").write_bytes(b"".join(
        cdr(src="7205550666", dst="3035550110", start=f"2026-03-02 1{h}:00:00",
            end=f"2026-03-02 1{h}:00:20", answer="", disposition="NO ANSWER",
            uniqueid=f"u{h}") + b"\n" for h in range(4)))
    cdrtrace.ingest(store, [str(tmp_path / "m.csv")])
    for h in range(3):
        store.trace("3035550110", at=f"2026-03-02 1{h}:00:30")     # the store's zone
    case = store.open_case("3035550110", "Caller A", agency=AUTHORITY["agency"],
                           officer=AUTHORITY["officer"], case_number=AUTHORITY["case_number"],
                           analyst="ann")
    with pytest.raises(cdrtrace.AccessError, match="has no recorded legal authority"):
        store.case_report(case["case_id"], analyst="ann")
    assert testing.audit_entries(store)[-1]["action"] == "case_report_refused"
    store.disclose(AUTHORITY, analyst="ann", line="3035550110")
    pdf = store.case_report(case["case_id"], analyst="ann", generated="2026-03-05T09:00:00Z")
    again = store.case_report(case["case_id"], analyst="ann", generated="2026-03-05T09:00:00Z")
    assert pdf == again                                  # the same case, the same bytes
    assert testing.audit_entries(store)[-1]["action"] == "case_report"
    text = " ".join(text_of(pdf).split())
    records = store.trace_records("3035550110", analyst="ann")
    for needed in ["SUB-2026-42", "subpoena", "Denver Police Department", "Det. Alvarez",
                   "26-001234", "+17205550666", "+13035550110", "Pat Doe", "12 Elm St Denver",
                   "MST", "UTC", *(r["trace_id"] for r in records),
                   *(record_hash(r) for r in records), "disclosure", "case_open"]:
        assert needed in text, needed
    (tmp_path / "case.png").write_bytes(b"")
    render(pdf).save(tmp_path / "case.png")              # to look at


def test_a_case_report_covers_its_own_case_and_successful_traces_only(tmp_path):
    """A disclosure releases the report of the case its authority names, not another
    case's; the report holds the case's own opening (not another case's) and its
    successful traces (not a trace that found the call already traced)."""
    from cdrtrace import testing
    from conftest import cdr

    store = cdrtrace.open(tmp_path / "s", create=True)
    (tmp_path / "m.csv").write_bytes(b"".join(
        cdr(src=src, dst="3035550110", start=f"2026-03-02 1{h}:00:00",
            end=f"2026-03-02 1{h}:00:20", answer="", disposition="NO ANSWER",
            uniqueid=f"u{h}") + b"\n"
        for h, src in ((0, "7205550666"), (1, "7205550666"), (2, "7205550666"),
                       (3, "7205550777"))))
    cdrtrace.ingest(store, [str(tmp_path / "m.csv")])
    for h in range(4):
        store.trace("3035550110", at=f"2026-03-02T1{h}:00:30Z")
    assert store.trace("3035550110", at="2026-03-02T13:00:40Z").outcome.value == \
        "already_traced"
    store.trace("3035550110", at="2026-03-02T12:00:40Z")      # Caller A's third, again
    other = {**AUTHORITY, "case_number": "26-009999"}
    mine = store.open_case("3035550110", "Caller A", agency=AUTHORITY["agency"],
                           officer=AUTHORITY["officer"], case_number=AUTHORITY["case_number"],
                           analyst="ann")
    theirs = store.open_case("3035550110", "caller b", agency=other["agency"],  # as typed
                             officer=other["officer"], case_number=other["case_number"],
                             analyst="ann", waive_reason="threats")
    store.disclose(AUTHORITY, analyst="lee", line="3035550110")
    with pytest.raises(cdrtrace.AccessError, match="has no recorded legal authority"):
        store.case_report(theirs["case_id"], analyst="ann")
    text = " ".join(text_of(store.case_report(mine["case_id"], analyst="ann")).split())
    assert testing.audit_entries(store)[-1]["details"]["traces"] == 3
    successes = [r["trace_id"] for r in store.trace_records("3035550110", analyst="ann")
                 if r["outcome"] == "success" and r["call"]["calling"] == "+17205550666"]
    again = [r["trace_id"] for r in store.trace_records("3035550110", analyst="ann")
             if r["outcome"] == "already_traced"]
    assert len(successes) == 3 and all(t in text for t in successes)
    assert again and not any(t in text for t in again)
    assert theirs["case_id"] not in text and "26-009999" not in text
    assert text.count("case_open") == 1 and text.count("disclosure") >= 1   # its own only


def test_from_the_demo_to_both_printed_documents_with_the_readme_commands(tmp_path):
    """The README's walk-through, command for command, in a subprocess each."""
    import os
    import re
    import subprocess
    import sys

    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    block = readme.split("From the demo to both printed documents")[1].split("```sh")[1]
    block = block.split("```")[0].replace("\\\n", " ")
    commands = [c.strip() for c in block.strip().splitlines() if c.strip()]
    env = {**os.environ}
    for command in commands:
        command = command.replace("/tmp/demo", str(tmp_path / "demo"))
        if command.startswith("export "):
            name, value = command[len("export "):].split("=", 1)
            env[name] = value
            continue
        argv = [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', command)]
        assert argv[0] == "cdrtrace"
        out = subprocess.run([sys.executable, "-m", "cdrtrace.cli", *argv[1:]], env=env,
                             cwd=tmp_path, capture_output=True, text=True)
        assert out.returncode == 0, (command, out.stderr)
    log = text_of((tmp_path / "trace-log.pdf").read_bytes())
    report = text_of((tmp_path / "case-report.pdf").read_bytes())
    assert "Caller A" in log and "request" in log.lower() and "+1888" not in log
    assert "SUB-2026-42" in report and "+1888" in report
