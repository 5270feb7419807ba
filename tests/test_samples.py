"""The hand-built sample in data/samples: every record's expected result."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import cdrtrace

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "samples" / "asterisk" / "Master.csv"
AT = "2026-11-02T00:00:00Z"


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sample")
    store = cdrtrace.open(folder / "store", create=True)
    summary = cdrtrace.ingest(store, [str(SAMPLE)], zone="America/Denver",
                              rejects_path=folder / "rejects.jsonl")
    rejects = [json.loads(x) for x in (folder / "rejects.jsonl").read_text().splitlines()]
    return store, summary, rejects


def test_sample_counts_and_the_one_reject(sample_store):
    _, summary, rejects = sample_store
    assert (summary.records, summary.rejected) == (13, 1)
    assert [(r["record"], r["reason"]) for r in rejects] == [(11, "bad timestamp in column 10")]
    assert SAMPLE.read_bytes()[rejects[0]["offset"]:].startswith(b'"","3035550142","3035550116"')


@pytest.mark.parametrize("line,outcome,call_time,calling,presentation", [
    ("3035550110", "success", "2026-03-02T21:03:11Z", "+13035550142", "allowed"),
    ("1001", "success", "2026-03-02T21:03:11Z", "+13035550142", "allowed"),
    ("3035550111", "success", "2026-03-02T22:00:00Z", "+17205550101", "allowed"),
    ("3035550112", "success", "2026-03-02T22:30:00Z", "+17205550177", "restricted"),
    ("3035550113", "untraceable", "2026-03-02T23:00:00Z", None, "unavailable"),
    ("3035550120", "success", "2026-03-02T23:30:00Z", "+17205550104", "allowed"),
    ("3035550121", "success", "2026-03-02T23:30:00Z", "+17205550104", "allowed"),
    ("7205550130", "success", "2026-03-02T23:30:00Z", "+17205550104", "allowed"),
    ("3035550114", "success", "2026-03-03T00:00:00Z", "+13035550199", "allowed"),
    ("3035550115", "success", "2026-03-03T00:30:00Z", "+13035550188", "allowed"),
    ("3035550116", "no_call", None, None, None),
    ("3035550117", "success", "2026-11-01T07:30:00Z", "+17205550105", "allowed"),
    ("3035550118", "success", "2026-03-03T01:00:00Z", "+17205550106", "allowed"),
])
def test_sample_traces(sample_store, line, outcome, call_time, calling, presentation):
    store, _, _ = sample_store
    result = store.trace(line, at=AT)
    assert (result.outcome.value, result.call_time) == (outcome, call_time)
    record = store.trace_records(line)[-1]
    if record["call"]:
        assert (record["call"]["calling"], record["call"]["presentation"]) == (calling, presentation)
    else:
        assert calling is None
