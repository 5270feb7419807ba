"""A trace's evidence written in C (evidence._trace.record, the common case) against
Tracer.record's Python (the reference): over generated line histories, the same record,
the same stored bytes in every evidence database, and the reference left exactly the
cases the native record says it leaves, with nothing written for them."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import cdrtrace
from cdrtrace.parsing import numbers, salvage
from cdrtrace.store import folds, index, lookup

# how far apart two switches' records of one call may begin: the native record leaves such
# a success to the reference (ext/_trace.pyx)
TWIN_US = 300_000_000

A, B = numbers.normalize("7205550101"), numbers.normalize("7205550102")
IDENTITY = numbers.pack_identity("alice@pbx.example")
SERVED = numbers.normalize("3035550177")       # a caller the directory serves
LOCAL = numbers.pack(numbers.EXTENSION, "0042")
CALLERS = (A, B, 0, IDENTITY, SERVED, LOCAL)
T0 = 1_772_460_000_000_000
STARTS = tuple(T0 + k * 60_000_000 for k in range(5))    # few: calls tie
AHEAD = 4_102_444_800_000_000            # 2100-01-01: stamped after any trace is made
# a repeated hour (as store.folds.FOLDS holds them) over the fourth start, and one long before
FOLDS = ((T0 - 10**12, T0 - 10**12 + 3_600_000_000, 3_600_000_000),
         (STARTS[3], STARTS[3] + 60_000_000, 3_600_000_000))
EVIDENCE = ("traces", "emeta", "by_line", "pseudonyms", "trace_rows")
# feeds whose switch may leave calls that rang unlogged (lookup.UNCONNECTED): since when
# each has shown it logs them, by kind; feed 1 has not yet shown unconnected calls, feed 2
# two legs. Only the calls of source 1 (CUCM's, say) and 2 (FreeSWITCH's) are held to
# their kind's mark, and with none for their feed (feed 0's unconnected calls, feed 1's
# legs: a store could not hold that) they are held still; source 99's are another
# format's under the same feeds
UNLOGGED = {1: lookup.NEVER, 2: STARTS[2]}
LEGS_SHOWN = {0: STARTS[1], 2: lookup.NEVER}
HELD = {1: (UNLOGGED, "cleared"), 2: (LEGS_SHOWN, "legs")}

ENTRY = st.fixed_dictionaries({
    "start_us": st.sampled_from(STARTS) | st.just(AHEAD),
    "calling": st.sampled_from(CALLERS) | st.integers(0, 2**64 - 1),   # any packed value
    "call_id": st.integers(1, 6),
    "offset": st.integers(0, 10_000),
    "source": st.sampled_from((1, 2, 99)),            # 99: no source registered
    "feed": st.integers(0, 2),
    "presentation": st.sampled_from((0, 0, 1, 2, 3)) | st.integers(0, 255),   # 3-255: none known
    "flags": st.builds(lambda a, f, role, d: a | f << 1 | role << 2 | d << 4,
                       st.integers(0, 1), st.integers(0, 1), st.sampled_from((0, 1, 2, 2, 3)),
                       st.sampled_from((1, 1, 2, 3, 9, 10, 11, 0, 12)) | st.integers(0, 15)),
})                                         # disposition 10: unreadable; 0, 12-15: none known
HISTORY = st.lists(ENTRY, max_size=5)
AT = st.sampled_from(STARTS[1:] + (STARTS[-1] + 1,) * 4)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = cdrtrace.open(tmp_path_factory.mktemp("native-record") / "s", create=True)
    with s.envs.env.begin(write=True) as w:
        for source, name in ((1, "feed.csv"), (2, "Master.csv")):
            w.put(source.to_bytes(4, "big"), json.dumps({"name": name}).encode(),
                  db=s.envs.db["sources"])
        for feed, start, call_id, found in ((0, STARTS[1] - 5, 9, True), (1, STARTS[2] + 7, 9, False)):
            w.put(salvage.log_key(feed, start, call_id),
                  json.dumps({"line_found": found, "offset": 1}).encode(),
                  db=s.envs.db["unreadable"])
    with s.envs.eenv.begin(write=True) as w:
        w.put(SERVED.to_bytes(8, "big"), json.dumps({"served": True, "name": "X"}).encode(),
              db=s.envs.db["directory"])
        w.put(b"directory_import", b"3", db=s.envs.db["emeta"])
    with s.envs.env.begin(write=True) as w:
        w.put(folds.FOLDS, np.array(FOLDS, np.int64).tobytes(), db=s.envs.db["meta"])
        for source, (marks, kind) in HELD.items():
            for feed, since in marks.items():
                lookup.note_unconnected(w, s.envs.db["meta"], feed,
                                        None if since == lookup.NEVER else since, (source,), kind)
    yield s
    s.close()


def leaves(history: list[dict], at_us: int, keep: int, shared: bool = False,
           line: int = 0) -> bool:
    """Whether the native record leaves this trace to the reference, by its documented
    cases, worked out from the history (not from either implementation). shared: the
    line is one its switch numbers itself and two feeds have indexed such lines
    (lookup.LOCAL_FEEDS); line: the line, packed (a call from the line itself names no one)."""
    if history and history[0]["start_us"] == AHEAD:    # the first held (the index: the newest)
        return True
    before = [e for e in history if e["start_us"] < at_us]
    if not before:
        return len(history) >= keep
    if any(first <= c["start_us"] < end for c in before for first, end, _ in FOLDS):
        return True                       # a time that names two instants
    e = before[0]
    disposition, role = e["flags"] >> 4, (e["flags"] >> 2) & 3
    calling = e["calling"]
    identity = calling >> 62 == numbers.OTHER and (calling >> 56) & 0x3F == numbers.IDENTITY_LENGTH
    return (disposition in (9, 10) or identity      # unknown (it may have rung), unreadable
            or (line != 0 and calling == line)      # the line itself as its caller
            or any(t["start_us"] == e["start_us"] for t in before[1:])   # another call then
            or held(history, at_us)                                  # a later call may be missing
            or shared                                 # whose line dialled *57 is not known
            or e["presentation"] > 2 or not 1 <= disposition <= 11 or role == 3
            # a success with a record of its caller's in another feed within TWIN_US of it:
            # another switch's record of the call, maybe (lookup.same_call_elsewhere)
            or (calling != 0 and e["presentation"] != 2
                and any(t["feed"] != e["feed"] and t["calling"] == calling
                        and abs(t["start_us"] - e["start_us"]) <= TWIN_US for t in history)))


def named(before: list[dict]) -> dict:
    """The entry a trace resolves to of those before its activation (as stored: newest
    first): of one caller's entries of the newest instant, one that says it was answered,
    else the first by disposition rank, answered elsewhere with the ones that rang
    (docs/trace-rules.md, "Two callers at the same instant"); else the newest."""
    tied = [e for e in before if e["start_us"] == before[0]["start_us"]]
    if any(e["calling"] != before[0]["calling"] for e in tied):
        return before[0]
    return min(tied, key=lambda e: (not e["flags"] & 1,
                                    7 if e["flags"] >> 4 == 11 else 2 * (e["flags"] >> 4)))


def held(history: list[dict], at_us: int) -> bool:
    """Whether the last call before at_us (the entry a trace names of it) is from a source
    held to its feed's mark (HELD) and began before it (or its feed has none of that kind)."""
    before = [e for e in history if e["start_us"] < at_us]
    if not before:
        return False
    e = named(before)
    return e["source"] in HELD and HELD[e["source"]][0].get(e["feed"], lookup.NEVER) > e["start_us"]


def dump(store, txn) -> dict:
    return {name: [(bytes(k), bytes(v)) for k, v in txn.cursor(store.envs.db[name])]
            for name in EVIDENCE}


def comparable(state: dict) -> dict:
    """Stored evidence with each record's traced_at_us (the clock's) set aside."""
    traces = []
    for k, v in state["traces"]:
        record = json.loads(v)
        record.pop("traced_at_us")
        traces.append((k, record))
    return {**state, "traces": traces}


def run(store, native: bool, key: bytes, packed: int, at_us: int, by: str | None):
    """Tracer.record in a write transaction that is then undone: (record or the error
    raised, the evidence as the transaction left it)."""
    tracer = store._tracer
    saved, tracer.native = tracer.native, native
    txn = store.envs.eenv.begin(write=True)
    try:
        with store.envs.read() as index_txn:
            try:
                outcome = tracer.record(txn, index_txn, key, packed, at_us, requested_by=by)
            except Exception as exc:     # noqa: BLE001 - compared between the two
                outcome = exc
        return outcome, dump(store, txn)
    finally:
        txn.abort()
        tracer.native = saved


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=HISTORY, at_us=AT, by=st.sampled_from((None, "switch-1")),
       traced_before=st.booleans(), line=st.integers(0, 10**6),
       kind=st.sampled_from(("other", "e164", "extension")),
       local_feeds=st.sampled_from((b"", b"\x00\x01", b"\x00\x00\x00\x02")))
@example(history=[{"start_us": STARTS[0], "calling": SERVED, "call_id": 1, "offset": 0,
                   "source": 1, "feed": 0, "presentation": 0, "flags": 1 << 4 | 1}],
         at_us=STARTS[1], by=None, traced_before=False, line=1,
         kind="other", local_feeds=b"")   # a served caller: enriched
@example(history=[{"start_us": s, "calling": A, "call_id": k, "offset": 0, "source": 1,
                   "feed": 0, "presentation": 0, "flags": 1 << 4 | 1}
                  for k, s in ((1, STARTS[1]), (2, STARTS[3]))],
         at_us=STARTS[2], by=None, traced_before=False, line=2,
         kind="other", local_feeds=b"")   # in a repeated hour, after
@example(history=[{"start_us": STARTS[2], "calling": A, "call_id": 1, "offset": 0, "source": 1,
                   "feed": 2, "presentation": 0, "flags": 1 << 4 | 1}],
         at_us=STARTS[3], by=None, traced_before=False, line=3,
         kind="other", local_feeds=b"")   # the feed shown to log them from then
@example(history=[{"start_us": STARTS[1], "calling": A, "call_id": 1, "offset": 0, "source": 2,
                   "feed": 0, "presentation": 0, "flags": 1 << 4 | 1}],
         at_us=STARTS[3], by=None, traced_before=False, line=4,
         kind="other", local_feeds=b"")   # its two legs shown from then
@example(history=[{"start_us": STARTS[0], "calling": A, "call_id": 1, "offset": 0, "source": 2,
                   "feed": 0, "presentation": 0, "flags": 1 << 4 | 1}],
         at_us=STARTS[3], by=None, traced_before=False, line=5,
         kind="other", local_feeds=b"")   # before: held
@example(history=[{"start_us": STARTS[0], "calling": A, "call_id": 1, "offset": 0, "source": 99,
                   "feed": 0, "presentation": 0, "flags": 1 << 4 | 1}],
         at_us=STARTS[3], by=None, traced_before=False, line=6006,
         kind="extension", local_feeds=b"\x00\x00\x00\x02")   # an extension two feeds index
@example(history=[{"start_us": s, "calling": A, "call_id": 1, "offset": 0, "source": 1,
                   "feed": feed, "presentation": 0, "flags": 1 << 4}
                  for s, feed in ((STARTS[2], 2), (STARTS[0], 0))],
         at_us=STARTS[3], by=None, traced_before=False, line=0,
         kind="other", local_feeds=b"")   # its caller's record in another feed, 2 min before
@example(history=[{"start_us": STARTS[1], "calling": 1, "call_id": 1, "offset": 0, "source": 1,
                   "feed": 0, "presentation": 0, "flags": 16},
                  {"start_us": STARTS[0], "calling": 5_404_319_570_050_145_301, "call_id": 1,
                   "offset": 0, "source": 1, "feed": 0, "presentation": 0, "flags": 16},
                  {"start_us": STARTS[0], "calling": 5_404_319_570_050_145_301, "call_id": 1,
                   "offset": 0, "source": 1, "feed": 0, "presentation": 0, "flags": 16},
                  {"start_us": STARTS[1], "calling": 1, "call_id": 1, "offset": 0, "source": 2,
                   "feed": 0, "presentation": 0, "flags": 17}],
         at_us=STARTS[2], by=None, traced_before=False, line=0,
         kind="other", local_feeds=b"")   # one caller's two records of an instant: the answered named
@example(history=[{"start_us": STARTS[2], "calling": numbers.normalize("30355000007"),
                   "call_id": 1, "offset": 0, "source": 1, "feed": 2, "presentation": 0,
                   "flags": 1 << 4 | 1}],
         at_us=STARTS[3], by=None, traced_before=False, line=7,
         kind="other", local_feeds=b"")   # a call from the line itself
def test_the_native_record_writes_what_the_reference_writes(store, history, at_us, by,
                                                             traced_before, line, kind,
                                                             local_feeds):
    # the line: an E.164 number, or one a switch numbers itself (11 digits NANP's plan
    # does not read, an extension); and the feeds that index such lines (2 bytes each)
    packed = {"other": numbers.normalize(f"30355{line:06d}"),
              "e164": numbers.pack(numbers.E164, f"1303{line:07d}"),
              "extension": numbers.pack(numbers.EXTENSION, str(line))}[kind]
    shared = kind != "e164" and len(local_feeds) > 2
    key = index.line_key(packed)
    with store.envs.env.begin(write=True) as w:
        w.put(lookup.LOCAL_FEEDS, local_feeds, db=store.envs.db["meta"])
    value = np.array([tuple(e[f] for f in index.ENTRY_DTYPE.names) for e in history],
                     index.ENTRY_DTYPE).tobytes()
    with store.envs.env.begin(write=True) as w:
        w.put(key, value, db=store.envs.db["index"])
    if traced_before and not leaves(history, at_us, store.config["keep"], shared, packed):
        store.trace(numbers.format_number(packed), at=at_us)   # kept: traced already
    with store.envs.eread() as r:
        before = dump(store, r)

    reference, by_python = run(store, False, key, packed, at_us, by)
    native, by_native = run(store, True, key, packed, at_us, by)
    if isinstance(reference, Exception):
        assert type(native) is type(reference) and str(native) == str(reference)
    else:
        native.pop("traced_at_us"), reference.pop("traced_at_us")
        assert native == reference
        if held(history, at_us):       # its feed has not shown it logs what may be missing
            assert reference["outcome"] == "untraceable"
        if shared and reference["call"] is not None and "stamped_ahead" not in reference["call"]:
            # the extension another switch may have
            assert (reference["outcome"], reference["call"]["line_shared"]) == (
                "untraceable", ["(no feed)", "2"])           # feeds 0 and 2, by name
    assert comparable(by_native) == comparable(by_python)

    # what it leaves, the documented cases exactly, and with nothing written
    txn = store.envs.eenv.begin(write=True)
    try:
        with store.envs.read() as index_txn:
            tracer = store._tracer
            made = tracer.native_record(index.native_txn(txn, tracer.db["traces"]),
                                        index.native_txn(index_txn, tracer.db["index"]),
                                        key, packed, at_us, by)
        assert (made is None) == leaves(history, at_us, tracer.config["keep"], shared, packed)
        if made is None:
            assert dump(store, txn) == before
    finally:
        txn.abort()


def test_a_line_value_not_made_of_whole_entries_is_left_to_the_reference(store):
    """An index value the writer could not have written (41 bytes): the native record
    writes nothing and leaves it; the reference refuses it (numpy: not whole entries)."""
    packed = numbers.normalize("3035599999")
    key = index.line_key(packed)
    with store.envs.env.begin(write=True) as w:
        w.put(key, b"\x01" * 41, db=store.envs.db["index"])
    with store.envs.eread() as r:
        before = dump(store, r)
    tracer = store._tracer
    txn = store.envs.eenv.begin(write=True)
    try:
        with store.envs.read() as index_txn:
            made = tracer.native_record(index.native_txn(txn, tracer.db["traces"]),
                                        index.native_txn(index_txn, tracer.db["index"]),
                                        key, packed, STARTS[1], None)
            assert made is None and dump(store, txn) == before
            with pytest.raises(ValueError):
                tracer.record(txn, index_txn, key, packed, STARTS[1])
    finally:
        txn.abort()


def test_a_store_without_unreadable_records_counts_none_near_a_call(store, monkeypatch):
    """An index made before unreadable records were kept has no database of them: near
    a call both the native record and the reference count none, and say the window."""
    packed = numbers.normalize("3035588888")
    key = index.line_key(packed)
    call = {"start_us": STARTS[0], "calling": A, "call_id": 1, "offset": 0, "source": 1,
            "feed": 0, "presentation": 0, "flags": 1 << 4 | 1}
    with store.envs.env.begin(write=True) as w:
        w.put(key, np.array([tuple(call[f] for f in index.ENTRY_DTYPE.names)],
                            index.ENTRY_DTYPE).tobytes(), db=store.envs.db["index"])
    near = run(store, True, key, packed, STARTS[2], None)[0]["unreadable_nearby"]
    assert near["records"] == 1            # feed 0's, 5 us before STARTS[1]: in the window
    monkeypatch.delitem(store.envs.db, "unreadable")
    native_record = store._tracer.native_record
    monkeypatch.setattr(native_record, "dbs", (*native_record.dbs[:-2], None, native_record.dbs[-1]))
    reference, by_python = run(store, False, key, packed, STARTS[2], None)
    native, by_native = run(store, True, key, packed, STARTS[2], None)
    assert reference["unreadable_nearby"] == {
        "from": "2026-03-02T13:00:00Z", "to": "2026-03-02T14:02:00Z",   # an hour before: T0
        "records": 0, "without_line": 0}
    native.pop("traced_at_us"), reference.pop("traced_at_us")
    assert native == reference and comparable(by_native) == comparable(by_python)
