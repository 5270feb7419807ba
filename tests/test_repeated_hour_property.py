"""The repeated autumn hour, property-tested: a trace never names a call the records
cannot show was the last before the *57.

Two switches write calls to the same two lines: one in Denver that writes local times
with no offset (Asterisk, as shipped), one that writes UTC; each a feed of its own, or
both ingested under one feed. On 2026-11-01 Denver's clocks
show 01:00-02:00 twice (07:00-08:00 UTC, then 08:00-09:00 UTC); the Denver switch writes
a call of either pass alike, and it is read at the earlier instant. By the rules
(docs/trace-rules.md, "The repeated autumn hour"), a trace names the newest call begun
before it only where every reading of the hour's calls (each at its earlier or its later
instant) names that same call; else it is `untraceable`. The model below tries every
reading; the calls' true instants are what the switches saw, and a `success` must name
the caller whose call was truly the last whenever the model names one."""
from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import cdrtrace
from cdrtrace import Outcome
from conftest import cdr, cdr_file

LINES = ("3035550110", "3035550111")
DENVER = zoneinfo.ZoneInfo("America/Denver")
START = dt.datetime(2026, 11, 1, 6, 0, tzinfo=dt.UTC)     # 00:00 in Denver, daylight time
BACK = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)      # 02:00 daylight -> 01:00 standard
HOUR = 3600 * 10**6


def us(when: dt.datetime) -> int:
    return (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def written(when: dt.datetime, denver: bool) -> str:
    """The time as the switch writes it: Denver's wall clock, or UTC."""
    local = when.astimezone(DENVER) if denver else when
    return local.strftime("%Y-%m-%d %H:%M:%S")


def read_as(when: dt.datetime, denver: bool) -> int:
    """The instant a written time names when read: the earlier, where it names two."""
    if not denver:
        return us(when)
    wall = when.astimezone(DENVER).replace(tzinfo=None)
    return us(wall.replace(tzinfo=DENVER, fold=0).astimezone(dt.UTC))


# (line, seconds after 06:00 UTC, the Denver switch's, answered)
calls = st.lists(st.tuples(st.sampled_from(LINES), st.integers(1800, 3 * 3600 + 1800),
                           st.booleans(), st.booleans()), min_size=1, max_size=6)
# (line, a call, seconds after it began; the *57 is made half a second later)
traces = st.lists(st.tuples(st.sampled_from(LINES), st.integers(0, 5),
                            st.integers(-600, 2 * 3600)), min_size=1, max_size=8)


def expected(made: list[tuple], line: str, at: int, traced: set) -> tuple[str, str | None]:
    """(outcome, caller named) by the rules. made: (line, true instant, instant read,
    names two, caller) of each call."""
    mine = [c for c in made if c[0] == line]
    readings = [(c[2], c[2] + HOUR) if c[3] else (c[2],) for c in mine]
    last = set()
    for instants in itertools.product(*readings):
        before = [(t, c[4]) for t, c in zip(instants, mine, strict=True) if t < at]
        last.add(max(before)[1] if before else None)
    if len(last) > 1:
        return "untraceable", None
    (caller,) = last
    if caller is None:
        return "no_call", None
    truly = max((c[1], c[4]) for c in mine if c[1] < at)[1]
    assert caller == truly          # the model never names a call that was not the last
    if (line, caller) in traced:
        return "already_traced", None
    traced.add((line, caller))
    return "success", caller


def record_of(n: int, call: tuple, caller: str) -> bytes:
    """The record of call n (as the strategy gives it) from its switch: answered 5 s in,
    or not answered, over after 20 s."""
    line, second, denver, answered = call
    when = START + dt.timedelta(seconds=second)
    return cdr(src=caller[2:], dst=line, clid=f'"" <{caller[2:]}>', start=written(when, denver),
               answer=written(when + dt.timedelta(seconds=5), denver) if answered else "",
               end=written(when + dt.timedelta(seconds=20), denver), duration="20",
               billsec="15" if answered else "0",
               disposition="ANSWERED" if answered else "NO ANSWER", uniqueid=f"1793520000.{n}")


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(calls=calls, traces=traces, chunk=st.sampled_from((4 << 20, 200)),
       denver_first=st.booleans(), one_feed=st.booleans())
def test_a_trace_names_a_call_of_the_repeated_hour_only_where_every_reading_agrees(
        tmp_path_factory, calls, traces, chunk, denver_first, one_feed):
    made = []
    for n, (line, second, denver, _) in enumerate(calls):
        when = START + dt.timedelta(seconds=second)
        assume(not BACK - dt.timedelta(seconds=60) <= when < BACK)   # a call ends in its pass
        read = read_as(when, denver)
        made.append((line, us(when), read, denver, f"+17205550{n:03d}"))
    # a call stamped in the hour's first pass may have begun an hour later where its feed
    # read Denver's local times: the Denver switch's feed; both switches' where the two
    # files are ingested under one feed (which of its records were local is not kept)
    noted = any(c[3] for c in made)
    made = [(line, true, read, (denver or one_feed and noted)
             and us(BACK) - HOUR <= read < us(BACK), caller)
            for line, true, read, denver, caller in made]
    for line in LINES:              # no two readings of one line's calls at one instant
        instants = [t for c in made if c[0] == line for t in ((c[2], c[2] + HOUR) if c[3]
                                                             else (c[2],))]
        assume(len(instants) == len(set(instants)))
        assume(sum(c[0] == line for c in made) <= 3)    # fewer than the index keeps
    folder = tmp_path_factory.mktemp("autumn")
    store = cdrtrace.open(folder / "store", create=True)
    try:
        files = {}
        for denver in (True, False):
            records = [record_of(n, call, made[n][4]) for n, call in enumerate(calls)
                       if call[2] == denver]
            if records:
                name = "denver.csv" if denver else "utc.csv"
                files[denver] = cdr_file(folder, *records, name=name)
        for denver in ((True, False) if denver_first else (False, True)):
            if denver in files:
                cdrtrace.ingest(store, [files[denver]], fmt="asterisk",
                                zone="America/Denver" if denver else "UTC", chunk_bytes=chunk,
                                feed_id=0 if one_feed else 1 + denver)
        traced: set = set()
        for line, after, second in traces:
            at = made[after % len(made)][1] + second * 10**6 + 500_000
            want, caller = expected(made, line, at, traced)
            text = (START + dt.timedelta(microseconds=at - us(START))).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ")
            got = store.trace(line, at=text)
            assert got.outcome.value == want, (line, text, made)
            if want == "success":
                (record,) = [r for r in store.trace_records(line, analyst="cic")
                             if r["trace_id"] == got.trace_id]
                assert record["call"]["calling"] == caller, (line, text, made)
            if got.outcome is not Outcome.SUCCESS:
                assert got.call_time is None or want == "already_traced"
    finally:
        store.close()
