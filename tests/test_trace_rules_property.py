"""The trace rules (docs/trace-rules.md), checked over generated Asterisk traffic against
a model written from their text, not from the code.

Two lines are called by callers who present their number, restrict it, or deliver none,
with every disposition `cdr_csv` writes; some calls are forwarded from one line to the
other. The records are ingested shuffled, in small batches. The model:

- a call that rang the line was received (R3): answered, unanswered or cancelled while
  ringing; a busy or failed call within its first second never rang; a refusal a second
  or more after the start may have rung (received, `untraceable` if named);
- a forwarded call is a call to the dialled line and to the line that rang (R2), traced
  once from each;
- the index holds a line's newest four received calls; a trace names the newest of them
  that began before its activation (R1): `untraceable` if its caller delivered no number
  (R4, however withheld its display: a restricted number is traced, R5), `already_traced`
  if a trace named it before, `success` otherwise; with none, `no_call`, or refused where
  the line holds four calls, all begun after it (older ones are no longer held);
- a customer's status counts, by origin, the calls traced with success (R8)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cdrtrace
from cdrtrace.errors import TraceError
from conftest import cdr

LINES = ("3035550110", "3035550111")
# (src, clid, userfield, delivers a number)
CALLERS = (("7205550101", '"Pat" <7205550101>', "", True),
           ("7205550102", '"Sam" <7205550102>', "prohib_passed_screen", True),   # restricted
           ("anonymous", '"Anonymous" <anonymous>', "", False),
           ("7205550103", '"Lee" <7205550103>', "unavailable", False))
# (disposition, seconds to its end, answered, received, named as a late refusal)
ENDS = (("ANSWERED", 60, True, True, False), ("NO ANSWER", 20, False, True, False),
        ("CANCEL", 9, False, True, False), ("BUSY", 0, False, False, False),
        ("BUSY", 8, False, True, True), ("FAILED", 0, False, False, False),
        ("CONGESTION", 0, False, False, False))


def clock(minute: int, second: int = 0) -> str:
    minute, second = minute + second // 60, second % 60
    return f"2026-03-02 {10 + minute // 60:02d}:{minute % 60:02d}:{second:02d}"


calls = st.lists(st.tuples(st.sampled_from(LINES), st.booleans(), st.integers(0, len(CALLERS) - 1),
                           st.integers(0, len(ENDS) - 1)), min_size=1, max_size=16)
traces = st.lists(st.tuples(st.sampled_from(LINES), st.integers(0, 34)), min_size=1, max_size=10)


def record(minute: int, line: str, forwarded: bool, caller: int, end: int) -> bytes:
    src, clid, userfield, _ = CALLERS[caller]
    disposition, seconds, answered, _, _ = ENDS[end]
    rang = LINES[1 - LINES.index(line)] if forwarded else line
    return cdr(src=src, clid=clid, userfield=userfield, dst=line,
               dstchannel=f"PJSIP/{rang}-0000001b", start=clock(minute),
               answer=clock(minute, 5) if answered else "", end=clock(minute, seconds),
               disposition=disposition, uniqueid=f"1772445600.{minute}")


def expected(made: list[tuple], line: str, minute: int, keep: int, traced: set) -> str:
    """The outcome by the rules; 'refused' for a trace the store refuses. made: (minute,
    dialled line, forwarded, caller, end) of every call."""
    def lines_of(c: tuple) -> set:
        return {c[1], LINES[1 - LINES.index(c[1])]} if c[2] else {c[1]}
    held = sorted((c for c in made if ENDS[c[4]][3] and line in lines_of(c)), reverse=True)[:keep]
    candidates = [c for c in held if c[0] <= minute]      # begun at :00, *57 at :30
    if not candidates:
        return "refused" if len(held) >= keep else "no_call"
    newest = candidates[0]
    if ENDS[newest[4]][4] or not CALLERS[newest[3]][3]:
        return "untraceable"
    if (line, newest) in traced:
        return "already_traced"
    traced.add((line, newest))
    return "success"


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(calls, traces, st.integers(1, 5), st.randoms(use_true_random=False))
def test_a_trace_names_the_call_the_rules_name(tmp_path_factory, calls, traces, batch, shuffle):
    folder = tmp_path_factory.mktemp("rules")
    store = cdrtrace.open(folder / "store", create=True)
    try:
        keep = store.config["keep"]
        made = [(2 * i, *c) for i, c in enumerate(calls)]   # two minutes apart: no ties
        records = [record(*c) for c in made]
        shuffle.shuffle(records)
        (folder / "Master.csv").write_bytes(b"\n".join(records) + b"\n")
        cdrtrace.ingest(store, [str(folder / "Master.csv")], batch_pairs=batch)
        traced: set = set()
        for line, minute in traces:
            at = clock(minute, 30).replace(" ", "T") + "Z"
            want = expected(made, line, minute, keep, traced)
            if want == "refused":
                with pytest.raises(TraceError, match="no longer held"):
                    store.trace(line, at=at)
                continue
            got = store.trace(line, at=at)
            assert got.outcome.value == want, (line, at)
        for line in LINES:
            counts: dict[int, int] = {}
            for traced_line, call in traced:
                if traced_line == line:
                    counts[call[3]] = counts.get(call[3], 0) + 1
            progress = store.status(line).progress
            assert sorted(p.traced_calls for p in progress) == sorted(counts.values()), line
            assert not any(CALLERS[c][0] in repr(progress) for c in counts)   # R7
    finally:
        store.close()


def test_the_model_reads_the_rules():
    """The model itself, on cases the rules spell out."""
    answered, busy_at_once, late_busy, anonymous = (0, 0), (0, 3), (0, 4), (2, 0)
    one = [(0, LINES[0], False, *answered)]
    assert expected(one, LINES[0], 0, 4, set()) == "success"
    assert expected(one, LINES[1], 0, 4, set()) == "no_call"
    forwarded = [(0, LINES[0], True, *answered)]
    assert [expected(forwarded, line, 3, 4, set()) for line in LINES] == ["success", "success"]
    masked = one + [(2, LINES[0], False, *busy_at_once)]
    assert expected(masked, LINES[0], 3, 4, set()) == "success"          # never rang
    assert expected(one + [(2, LINES[0], False, *late_busy)], LINES[0], 3, 4, set()) == "untraceable"
    assert expected(one + [(2, LINES[0], False, *anonymous)], LINES[0], 3, 4, set()) == "untraceable"
    full = [(2 * i, LINES[0], False, *answered) for i in range(1, 5)]
    assert expected(full, LINES[0], 1, 4, set()) == "refused"
    traced: set = set()
    assert [expected(one, LINES[0], 5, 4, traced) for _ in range(2)] == ["success", "already_traced"]
