"""The rule of a line a switch numbers itself (docs/trace-rules.md), checked over
generated traffic against a model written from the rule's text, not from the code: three
switches' feeds call two extensions and one E.164 number, and *57s name a feed or none.

The model: the index holds a line's newest `keep` calls, of every feed. An E.164 line is
traced among all of them, whatever feed the trace names. An extension is traced among
the named feed's calls alone; with no feed named it is `untraceable` once two or more
feeds have indexed calls to extensions. The newest held call that began before the
activation is the one named: `success` the first time, `already_traced` after a trace
named it; with none, `no_call`, or refused where the line holds `keep` calls (older
ones are no longer held). A feed no calls were ingested under is refused. Each
customer's status counts, by origin, the calls traced for them: on an extension, for
the feed the trace named, else for its call's feed; on an E.164 line, every one."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cdrtrace
from cdrtrace.config import Feed
from cdrtrace.errors import TraceError
from cdrtrace.parsing.parsers import get_format
from conftest import cdr, cdr_file

FEEDS = ("east", "west", "trunk")
LINES = ("2001", "2002", "3035550110")
CALLERS = ("7205550101", "7205550102", "7205550103")
EXTENSIONS = {"2001", "2002"}


def clock(minute: int, second: int = 0) -> str:
    return f"2026-03-02 {10 + minute // 60:02d}:{minute % 60:02d}:{second:02d}"


calls = st.lists(st.tuples(st.sampled_from(FEEDS), st.sampled_from(LINES),
                           st.sampled_from(CALLERS)), min_size=1, max_size=14)
traces = st.lists(st.tuples(st.sampled_from(LINES), st.sampled_from((None, *FEEDS)),
                            st.integers(0, 30)), min_size=1, max_size=10)


def expected(made: list[tuple], line: str, feed: str | None, minute: int, keep: int,
             traced: set) -> tuple[str, int | None]:
    """(outcome, the named call's minute) by the rule; outcome 'refused' for a trace
    the store refuses, 'unknown' for a feed no calls were ingested under. made: (minute,
    feed, line, caller) of every call."""
    if feed is not None and feed not in {c[1] for c in made}:
        return "unknown", None
    held = sorted((c for c in made if c[2] == line), reverse=True)[:keep]
    local = line in EXTENSIONS
    candidates = [c for c in held if c[0] <= minute and (not local or feed is None or c[1] == feed)]
    if not candidates:
        return ("refused" if len(held) >= keep else "no_call"), None
    newest = candidates[0]
    sharing = {c[1] for c in made if c[2] in EXTENSIONS}
    if local and feed is None and len(sharing) > 1:
        return "untraceable", None
    if (line, newest) in traced:
        return "already_traced", newest[0]
    traced.add((line, newest))
    return "success", newest[0]


def customer(line: str, feed: str | None, call: tuple | None) -> str | None:
    """Whose switch's customer a trace was made for (their status shows it, and R8
    counts it for them if it succeeded): on an extension, the feed it named, else that of
    its call (a call named on a line not shared then); an E.164 line has one customer
    (None). A trace that named no call and no feed is no one's, nor is one left
    untraceable because the line was shared."""
    if line not in EXTENSIONS:
        return None
    return feed or (call[1] if call is not None else "no one")


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(calls, traces, st.sampled_from((4 << 20, 300)))
def test_a_trace_names_the_call_the_rule_names(tmp_path_factory, calls, traces, chunk):
    folder = tmp_path_factory.mktemp("shared")
    store = cdrtrace.open(folder / "store", create=True)
    try:
        keep = store.config["keep"]
        # one call a minute (distinct starts: no two callers tie), a minute apart or more
        made = [(2 * i, feed, line, caller) for i, (feed, line, caller) in enumerate(calls)]
        for feed in FEEDS:
            records = [cdr(src=caller, dst=line, start=clock(minute), answer=clock(minute, 5),
                           end=clock(minute, 50), uniqueid=f"{feed}-{minute}")
                       for minute, f, line, caller in made if f == feed]
            if records:
                path = cdr_file(folder, *records, name=f"{feed}.csv")
                cdrtrace.ingest(store, [path], feed=Feed(feed, get_format("asterisk")),
                                chunk_bytes=chunk)    # whole, or a record or two a read
        traced: set = set()
        counted: dict[tuple, int] = {}       # (line, customer, caller) -> traced calls
        made_for: list[tuple] = []            # (line, customer, activation) of each trace
        for line, feed, minute in traces:
            at = clock(minute, 30).replace(" ", "T") + "Z"
            want, when = expected(made, line, feed, minute, keep, traced)
            if want in ("refused", "unknown"):
                with pytest.raises(TraceError, match="no longer held" if want == "refused"
                                   else f"no feed named {feed!r}"):
                    store.trace(line, at=at, feed=feed)
                continue
            got = store.trace(line, at=at, feed=feed)
            assert got.outcome.value == want, (line, feed, at)
            call_time = None if when is None or want == "untraceable" else \
                clock(when).replace(" ", "T") + "Z"
            assert got.call_time == call_time, (line, feed, at)
            call = next((c for c in made if c[0] == when and c[2] == line), None)
            whose = customer(line, feed, call)
            made_for.append((line, "no one" if want == "untraceable" else whose, at))
            if want == "success":
                mine = (line, whose, call[3])
                counted[mine] = counted.get(mine, 0) + 1
        # each customer's status counts their own traced calls by origin, and no other's
        for line in LINES:
            for feed in (FEEDS if line in EXTENSIONS else (None,)):
                if feed is not None and feed not in {c[1] for c in made}:
                    continue
                want_counts = sorted(n for (ln, who, _), n in counted.items()
                                     if ln == line and who == feed)
                status = store.status(line, feed)
                assert sorted(p.traced_calls for p in status.progress if p.traced_calls) == \
                    want_counts, (line, feed)
                assert sorted(t["activated_at"] for t in status.traces) == sorted(
                    at for ln, who, at in made_for if ln == line and who == feed), (line, feed)
    finally:
        store.close()


def test_the_model_sees_a_shared_extension():
    """The model itself: east's and west's calls to extensions share them."""
    made = [(0, "east", "2001", CALLERS[0]), (2, "west", "2002", CALLERS[1])]
    assert expected(made, "2001", None, 5, 4, set()) == ("untraceable", None)
    assert expected(made, "2001", "east", 5, 4, set()) == ("success", 0)
    assert expected(made, "2001", "west", 5, 4, set()) == ("no_call", None)
    full = [(2 * i, "west", "2001", CALLERS[0]) for i in range(1, 5)] + [(0, "east", "2001", CALLERS[1])]
    assert expected(full, "2001", "east", 1, 4, set()) == ("refused", None)
    assert expected(made, "2001", "east", 0, 4, set()) == ("success", 0)   # begun at :00, *57 at :30
    assert expected(made, "2001", "trunk", 5, 4, set()) == ("unknown", None)
