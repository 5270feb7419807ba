"""The native index writer (ext/_index.pyx write_native) against the Python writer.

The native writer merges inside py-lmdb's own write transaction through the engine
table py-lmdb exports; it must give the same index, byte for byte, as the Python writer
(getmulti, merge, putmulti), and refuse anything it cannot verify.
"""
from __future__ import annotations

import itertools

import lmdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cdrtrace
from cdrtrace.store import _index, index


def rows(entries: np.ndarray) -> np.ndarray:
    return entries.view(np.uint8).reshape(-1, 40)


def entries_from(draw_lines, starts, call_ids, flags, ordered=True) -> tuple[np.ndarray, np.ndarray]:
    order = (np.argsort(np.asarray(draw_lines, np.uint64), kind="stable") if ordered
             else np.arange(len(draw_lines)))
    lines = np.asarray(draw_lines, np.uint64)[order]
    e = np.zeros(len(lines), index.ENTRY_DTYPE)
    e["start_us"] = np.asarray(starts, np.int64)[order]
    e["call_id"] = np.asarray(call_ids, np.uint64)[order]
    e["calling"] = e["call_id"] * 7 + 1
    # where the record lies: from its content, so a record given twice or moved is the same
    e["offset"] = (lines.astype(np.int64) * 1000 + e["start_us"]) * 100 + e["call_id"].astype(np.int64)
    e["source"] = 3
    e["flags"] = np.asarray(flags, np.uint8)[order]
    return lines, e


def open_env(path) -> tuple[lmdb.Environment, object]:
    env = lmdb.open(str(path), max_dbs=4, map_size=1 << 26)
    return env, env.open_db(b"index")


def dump(env, db) -> list[tuple[bytes, bytes]]:
    with env.begin() as txn:
        return list(txn.cursor(db))


batch = st.lists(st.tuples(st.integers(1, 40), st.integers(0, 30), st.integers(0, 12),
                           st.integers(0, 255)), min_size=1, max_size=120)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(batch, min_size=1, max_size=4), keep=st.integers(1, 6))
def test_native_and_python_writers_give_the_same_index(tmp_path_factory, batches, keep):
    """Several transactions of colliding lines, call ids (legs) and start times; lines
    above the stored ones take the append path, the rest the read-merge-put path."""
    folder = tmp_path_factory.mktemp("writers")
    native, python = open_env(folder / "native"), open_env(folder / "python")
    for drawn in batches:
        lines, e = entries_from(*zip(*drawn, strict=True), ordered=False)
        with native[0].begin(write=True) as txn:       # radix order, then write_native
            assert index.native_writer(txn, native[1])
            assert index.write_entries(txn, native[1], lines, e, keep) == len(lines)
        with python[0].begin(write=True) as txn:
            index.write_entries_py(txn, python[1], *index.sort_by_line(lines, e), keep)
    stored = dump(*native)
    assert stored == dump(*python)
    for _, value in stored:     # the newest keep, and past them the keep-th's instant's
        starts = np.frombuffer(value, index.ENTRY_DTYPE)["start_us"]
        assert 0 < len(starts) <= index.LINE_ROOM
        assert len(starts) <= keep or (starts[keep - 1:] == starts[keep - 1]).all()


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2**63, 2**64 - 1]),
                     max_size=300),
       shift=st.integers(0, 60))
def test_line_order_is_a_stable_sort(keys, shift):
    lines = np.array([k >> shift for k in keys], np.uint64)   # a few varying bits, or all
    ordered, order = _index.line_order(lines)
    expected = sorted(range(len(keys)), key=lambda i: int(lines[i]))   # sorted() is stable
    assert order.tolist() == expected
    assert ordered.tolist() == [int(lines[i]) for i in expected]


def test_a_store_writes_through_the_native_writer(tmp_path):
    """With the py-lmdb this project installs, the native writer is what runs: a change
    in py-lmdb's layout fails here instead of quietly falling back."""
    store = cdrtrace.open(tmp_path / "s", create=True)
    db = store.envs.db["index"]
    assert store.envs.write(lambda txn: (_index.native_writer_check(txn, db),
                                         index.native_writer(txn, db))) == (None, True)


def test_the_python_writer_when_asked(tmp_path, monkeypatch):
    env, db = open_env(tmp_path / "e")
    lines, e = entries_from([5, 9], [1, 2], [1, 2], [0, 0])

    def refuse(*args):
        raise AssertionError("the native writer ran")
    monkeypatch.setenv("CDRTRACE_INDEX_WRITER", "python")
    monkeypatch.setattr(_index, "write_native", refuse)
    with env.begin(write=True) as txn:
        assert index.write_entries(txn, db, lines, e) == 2
    assert [k for k, _ in dump(env, db)] == [index.line_key(5), index.line_key(9)]


def test_what_it_cannot_verify_it_refuses(tmp_path):
    env, db = open_env(tmp_path / "e")
    other, other_db = open_env(tmp_path / "other")
    lines, e = entries_from([5], [1], [1], [0])
    with env.begin() as txn:
        assert _index.native_writer_check(txn, db) == "a read-only transaction"
        assert not index.native_writer(txn, db)
    with env.begin(write=True) as txn:
        assert "not of one open environment" in _index.native_writer_check(txn, other_db)
        assert _index.native_writer_check(txn.cursor(db), db) == "not py-lmdb's CPython objects"
        with pytest.raises(RuntimeError, match="cannot write here: the transaction and the database"):
            _index.write_native(txn, other_db, lines, rows(e))
        with pytest.raises(ValueError, match="lines must be sorted"):
            _index.write_native(txn, db, np.array([9, 5], np.uint64), rows(np.zeros(2, index.ENTRY_DTYPE)))
    assert dump(env, db) == []


def test_lmdb_errors_reach_the_store_as_py_lmdb_errors(tmp_path):
    """A full map is py-lmdb's MapFullError, which the store's write loop answers by
    growing the map (test_index.test_map_grows_instead_of_failing, end to end)."""
    env = lmdb.open(str(tmp_path / "tiny"), max_dbs=4, map_size=1 << 16)
    db = env.open_db(b"index")
    lines, e = entries_from(list(range(1, 5001)), [1] * 5000, list(range(5000)), [0] * 5000)
    with pytest.raises(lmdb.MapFullError, match="index write: MDB_MAP_FULL"):
        with env.begin(write=True) as txn:
            index.write_entries(txn, db, lines, e)


def test_py_lmdb_cursors_see_what_the_native_writer_wrote(tmp_path):
    env, db = open_env(tmp_path / "e")
    lines, e = entries_from([5, 9], [1, 2], [1, 2], [0, 0])
    with env.begin(write=True) as txn:
        _index.write_native(txn, db, lines, rows(e))
    with env.begin(write=True) as txn:
        cursor = txn.cursor(db)
        assert cursor.set_key(index.line_key(5)) and len(cursor.value()) == 40
        newer, more = entries_from([5, 5], [7, 8], [3, 4], [0, 0])
        _index.write_native(txn, db, newer, rows(more))
        assert cursor.key() == index.line_key(5)
        assert len(cursor.value()) == 3 * 40


def test_no_resize_of_the_index_map_while_its_write_runs(tmp_path):
    """The native writer runs LMDB without the GIL and unseen by py-lmdb's guard, so a
    resize from another thread of the process waits for the write; the evidence
    environment's writes (traces) never wait for the index's."""
    import threading

    store = cdrtrace.open(tmp_path / "s", create=True)
    seen = {}

    def other_thread():
        seen["index"] = store.envs.resizing.acquire(blocking=False)
        seen["evidence"] = store.envs.ewrite(lambda txn: "written")

    def work(txn):
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    store.envs.write(work)
    assert seen == {"index": False, "evidence": "written"}
    assert store.envs.resizing.acquire(blocking=False)


def test_a_batch_grows_the_map_before_writing_not_after_failing(tmp_path, monkeypatch):
    """The store grows the index's map ahead of a batch (Environments.reserve), so a
    batch's transaction runs once: a full map would abort it and run it again."""
    from cdrtrace import synth, testing

    store = cdrtrace.open(tmp_path / "s", create=True)
    testing.set_map_size(store, 1 << 20)
    columns, _ = synth.generate(30_000, 15_000, seed=4)
    path = tmp_path / "day.csv"
    path.write_bytes(synth.format_asterisk(columns, 0, len(columns["line"])))
    runs = []
    original = index.write_entries

    def write(txn, db, lines, entries, keep=4, order=None):   # run again: the same pairs
        runs.append((len(lines), lines[:8].tobytes(), lines[-8:].tobytes()))
        return original(txn, db, lines, entries, keep, order)
    monkeypatch.setattr(index, "write_entries", write)
    summary = cdrtrace.ingest(store, [str(path)], batch_pairs=10_000)
    assert summary.indexed > 20_000 and len(runs) >= 2
    assert len(set(runs)) == len(runs)
    assert testing.map_size(store) > 1 << 20


def test_the_native_read_returns_what_py_lmdb_reads(tmp_path):
    env, db = open_env(tmp_path / "e")
    lines, e = entries_from([5, 9, 9, 12], [1, 2, 3, 4], [1, 2, 3, 4], [0, 0, 0, 0])
    with env.begin(write=True) as txn:
        index.write_entries(txn, db, lines, e)
    with env.begin() as txn:
        for line in (1, 5, 9, 12, 2**64 - 1):
            key = index.line_key(line)
            assert _index.read_value(env, db, key) == txn.get(key, db=db)
    other, other_db = open_env(tmp_path / "other")
    with pytest.raises(RuntimeError, match="not of this environment"):
        _index.read_value(env, other_db, index.line_key(5))
    with pytest.raises(RuntimeError, match="not py-lmdb's CPython objects"):
        _index.read_value(object(), db, index.line_key(5))
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        _index.read_value(env, db, index.line_key(5))


def test_a_trace_reads_natively_and_falls_back_when_it_cannot(tmp_path, monkeypatch):
    from conftest import cdr, cdr_file

    store = cdrtrace.open(tmp_path / "s", create=True)
    cdrtrace.ingest(store, [cdr_file(tmp_path, cdr(dst="3035550101"))])
    key = index.line_key(store.line("3035550101"))
    expected = store.envs.read().get(key, db=store.envs.db["index"])
    used = []
    import cdrtrace.store.lookup as lookup
    real = lookup._read_value
    monkeypatch.setattr(lookup, "_read_value", lambda *a: used.append(1) or real(*a))
    assert store._last_calls_raw(key).tobytes() == expected and used == [1]

    def refused(*args):          # py-lmdb not laid out as expected: its own read, from then on
        used.append("refused")
        raise RuntimeError("the native read cannot read here")
    monkeypatch.setattr(lookup, "_read_value", refused)
    for _ in range(2):
        assert store._last_calls_raw(key).tobytes() == expected
    assert used == [1, "refused"]


def test_the_native_read_follows_a_map_another_process_grew(tmp_path):
    """A map grown by another process is MDB_MAP_RESIZED to the native read; the
    lookup then takes the store's slow read, which adopts the new size."""
    import subprocess
    import sys

    from conftest import cdr, cdr_file

    store = cdrtrace.open(tmp_path / "s", create=True)
    first = cdr_file(tmp_path, cdr(dst="3035550101"), name="a.csv")
    cdrtrace.ingest(store, [first])
    store._last_calls_raw(index.line_key(store.line("3035550101")))   # read before it grows
    second = cdr_file(tmp_path, cdr(dst="3035550102"), name="b.csv")
    grow = ("import sys, cdrtrace; from cdrtrace import testing; s = cdrtrace.open(sys.argv[1]); "
            "testing.set_map_size(s, 1 << 31); meta = s.envs.db['meta']; "   # 100 MB in, out
            "s.envs.write(lambda txn: txn.put(b'junk', bytes(100 << 20), db=meta)); "
            "s.envs.write(lambda txn: txn.delete(b'junk', db=meta)); "
            "cdrtrace.ingest(s, [sys.argv[2]])")
    subprocess.run([sys.executable, "-c", grow, str(tmp_path / "s"), str(second)], check=True)
    key = index.line_key(store.line("3035550102"))
    with pytest.raises(_index.NativeLmdbError) as raised:
        _index.read_value(store.envs.env, store.envs.db["index"], key)
    assert raised.value.args[0] == -30785             # MDB_MAP_RESIZED
    assert len(store._last_calls_raw(key)) == 1
    assert _index.read_value(store.envs.env, store.envs.db["index"], key) is not None


@settings(max_examples=40, deadline=None)
@given(drawn=batch, budget=st.integers(1, 5000))
def test_a_batch_written_in_key_ranges_gives_the_same_index(tmp_path_factory, drawn, budget):
    """key_ranges cuts a sorted batch on line boundaries; each range written in its own
    transaction (entries reached through a slice of the order) gives the index one
    transaction gives."""
    folder = tmp_path_factory.mktemp("ranges")
    lines, e = entries_from(*zip(*drawn, strict=True), ordered=False)
    ordered, order = index.line_order(lines)
    ranges = index.key_ranges(ordered, index_bytes=4096 * 1024, budget=budget)
    assert ranges[0].start == 0 and ranges[-1].stop == len(lines)
    for a, b in zip(ranges, ranges[1:], strict=False):
        assert a.stop == b.start and ordered[a.stop - 1] != ordered[b.start]   # line boundaries
    split, whole = open_env(folder / "split"), open_env(folder / "whole")
    for part in ranges:
        with split[0].begin(write=True) as txn:
            index.write_entries(txn, split[1], ordered[part], e, 4, order[part])
    with whole[0].begin(write=True) as txn:
        index.write_entries(txn, whole[1], lines, e, 4)
    assert dump(*split) == dump(*whole)


def test_an_ingest_over_a_large_index_commits_in_key_ranges(tmp_path, monkeypatch):
    """With the index larger than a transaction's budget, a batch is written in several
    transactions (bounded memory); the index is the same, and a crash between them is
    made good by the rerun (the position commits with the last range only)."""
    from cdrtrace import synth

    columns, _ = synth.generate(12_000, 6000, seed=5)
    path = tmp_path / "day.csv"
    path.write_bytes(synth.format_asterisk(columns, 0, len(columns["line"])))
    whole = cdrtrace.open(tmp_path / "whole", create=True)
    cdrtrace.ingest(whole, [str(path)])
    monkeypatch.setattr(index, "DIRTY_BUDGET", 4096)
    calls = []
    original = index.write_entries

    def crash_in_third(*args, **kwargs):
        lines = kwargs.get("lines", args[2] if len(args) > 2 else None)
        calls.append((int(lines[0]), int(lines[-1])))
        if len(calls) == 3:
            raise OSError("killed")
        return original(*args, **kwargs)
    monkeypatch.setattr(index, "write_entries", crash_in_third)
    split = cdrtrace.open(tmp_path / "split", create=True)
    with pytest.raises(OSError, match="killed"):
        cdrtrace.ingest(split, [str(path)], batch_pairs=3000, chunk_bytes=65536)
    # the second batch's first range, then its next: ascending, disjoint
    assert len(calls) == 3 and calls[1][1] < calls[2][0]
    monkeypatch.setattr(index, "write_entries", original)
    rerun = cdrtrace.ingest(split, [str(path)], batch_pairs=3000, chunk_bytes=65536)
    assert 0 < rerun.records < len(columns["line"])     # on from the first batch's position
    with whole.envs.read() as a, split.envs.read() as b:
        assert list(a.cursor(whole.envs.db["index"])) == list(b.cursor(split.envs.db["index"]))


def test_legs_merge_before_calls_compete_for_the_places():
    """One call's legs are one call, ranked by its earliest leg (docs/trace-rules.md). A
    late leg seen first must not push out a call the whole call ranks behind: with one
    place, X's legs at 10 and 5 and Y at 9 keep Y, in every order."""

    legs = [(1, 10, 7, 1), (1, 9, 8, 0), (1, 5, 7, 0)]      # line, start, call id, flags
    for perm in itertools.permutations(legs):
        lines, e = entries_from(*zip(*perm, strict=True), ordered=True)
        for keep in (1, 2):
            merged = np.frombuffer(b"".join(v for _, v in _index.merge(lines, rows(e), None, None, keep)),
                                   index.ENTRY_DTYPE)
            expected = [(9, 8), (5, 7)][:keep]              # Y@9, then X at its earliest leg
            assert [(int(x["start_us"]), int(x["call_id"])) for x in merged] == expected
            if keep == 2:
                assert merged[1]["flags"] & 1               # answered: one of X's legs was


def test_a_reused_call_id_is_two_calls_in_every_order():
    """Records of one call id starting more than a day apart are two calls (a switch
    reuses its ids), each merged from its own legs: the call at 0, and the one three days
    later with its second leg 20 s on, whatever the order (docs/trace-rules.md)."""

    day = 86_400 * 1_000_000
    assert _index.CALL_SPAN_US == day
    legs = [(1, 0, 7, 0), (1, 3 * day, 7, 0), (1, 3 * day + 20_000_000, 7, 1), (1, day, 8, 0),
            (1, 2 * day, 8, 0)]                  # 8: legs a day apart, to the microsecond
    for perm in itertools.permutations(legs):
        lines, e = entries_from(*zip(*perm, strict=True), ordered=True)
        merged = np.frombuffer(b"".join(v for _, v in _index.merge(lines, rows(e), None, None, 4)),
                               index.ENTRY_DTYPE)
        assert [(int(x["start_us"]), int(x["call_id"]), int(x["flags"])) for x in merged] == [
            (3 * day, 7, 1), (day, 8, 0), (0, 7, 0)], perm
    hour = day // 24      # a chain: 20 h within a day of 0 and of 30 h, 30 h not of 0
    chain = [(1, 0, 9, 0), (1, 20 * hour, 9, 1), (1, 30 * hour, 9, 0)]
    for perm in itertools.permutations(chain):
        lines, e = entries_from(*zip(*perm, strict=True), ordered=True)
        merged = np.frombuffer(b"".join(v for _, v in _index.merge(lines, rows(e), None, None, 4)),
                               index.ENTRY_DTYPE)
        assert [(int(x["start_us"]), int(x["flags"])) for x in merged] == [
            (30 * hour, 0), (0, 1)], perm          # the earliest leg's call takes the next


@settings(max_examples=60, deadline=None)
@given(drawn=batch, keep=st.integers(1, 6), shuffle=st.randoms(use_true_random=False))
def test_a_batch_in_any_order_gives_the_same_index(tmp_path_factory, drawn, keep, shuffle):
    folder = tmp_path_factory.mktemp("order")
    stores = open_env(folder / "a"), open_env(folder / "b")
    shuffled = drawn[:]
    shuffle.shuffle(shuffled)
    for (env, db), records in zip(stores, (drawn, shuffled), strict=True):
        lines, e = entries_from(*zip(*records, strict=True), ordered=False)
        with env.begin(write=True) as txn:
            index.write_entries(txn, db, lines, e, keep)
    assert dump(*stores[0]) == dump(*stores[1])


@pytest.mark.parametrize("writer", ["native", "python"])
def test_a_stored_call_moves_down_before_new_calls_compete(tmp_path, monkeypatch, writer):
    """Stored: X's late leg (10), keep 1. A batch with X's earliest leg (5) and Y (9): X
    is merged first and moves down, then Y takes the place, whatever the order."""
    if writer == "python":
        monkeypatch.setenv("CDRTRACE_INDEX_WRITER", "python")
    env, db = open_env(tmp_path / "e")
    for batch_records in ([(1, 10, 7, 1)], [(1, 9, 3, 0), (1, 5, 7, 0)]):   # Y's id sorts first
        lines, e = entries_from(*zip(*batch_records, strict=True))
        with env.begin(write=True) as txn:
            index.write_entries(txn, db, lines, e, 1)
    (_, value), = dump(env, db)
    stored = np.frombuffer(value, index.ENTRY_DTYPE)
    assert [(int(x["start_us"]), int(x["call_id"])) for x in stored] == [(9, 3)]


# legs of few calls on one line (line, start, call id, the caller's number, disposition),
# some split off by a transfer (disposition 14), their callers apart or alike
legs = st.lists(st.tuples(st.just(1), st.integers(0, 6), st.integers(0, 2), st.integers(1, 2),
                          st.sampled_from([1, 2, 9, 14])), min_size=1, max_size=9)


@settings(max_examples=80, deadline=None)
@given(drawn=legs, keep=st.integers(1, 4), shuffle=st.randoms(use_true_random=False),
       cut=st.integers(0, 9))
def test_legs_split_off_by_a_transfer_merge_alike_in_any_order(tmp_path_factory, drawn, keep,
                                                                shuffle, cut):
    """Which leg speaks for a call (a leg split off by a transfer never does where another
    is not, then the earliest), and whether its other legs name two callers (callers_differ),
    does not turn on the order the legs arrive in: in one batch
    whatever the line's room, or in two (the second merged into what the first stored)
    where the line has room for every call (three ids here). Past its room, a late leg
    read first may push out a call its earliest leg, read in a later batch, ranks behind:
    the index keeps no more than its room."""
    if cut:
        keep = 3
    folder = tmp_path_factory.mktemp("split")
    stores = open_env(folder / "a"), open_env(folder / "b")
    shuffled = drawn[:]
    shuffle.shuffle(shuffled)
    for (env, db), records in zip(stores, (drawn, shuffled), strict=True):
        for part in (records[:cut], records[cut:]):
            if not part:
                continue
            line, start, call_id, caller, disposition = zip(*part, strict=True)
            lines, e = entries_from(line, start, call_id, [d << 4 for d in disposition],
                                    ordered=False)
            e["calling"] = np.asarray(caller, np.uint64)
            e["offset"] += np.asarray(caller, np.int64) * 7 + np.asarray(disposition, np.int64)
            with env.begin(write=True) as txn:
                index.write_entries(txn, db, lines, e, keep)
    assert dump(*stores[0]) == dump(*stores[1])


X, Y, Z = 11, 22, 33                  # three callers
OWN = 5                               # the line itself, as a caller (the tests' line: 5)
ANSWERED, SPLIT, DIFFER = 1, 14, 15   # dispositions: answered, transferred, callers_differ


@pytest.mark.parametrize("legs,expected", [
    ([(0, X, ANSWERED), (3, X, ANSWERED)], (0, X, ANSWERED)),
    ([(0, X, ANSWERED), (2, Y, ANSWERED)], (0, X, DIFFER)),
    ([(0, X, ANSWERED), (2, Y, ANSWERED), (3, X, ANSWERED)], (0, X, DIFFER)),
    ([(2, Y, SPLIT), (3, X, ANSWERED)], (3, X, ANSWERED)),
    ([(0, X, SPLIT), (2, Y, SPLIT)], (0, X, SPLIT)),
    ([(2, Y, SPLIT), (3, X, ANSWERED), (4, Z, ANSWERED)], (3, X, DIFFER)),
    ([(0, X, ANSWERED), (2, OWN, ANSWERED)], (0, X, ANSWERED)),
    ([(0, OWN, ANSWERED), (2, X, ANSWERED)], (2, X, ANSWERED)),
    ([(2, OWN, ANSWERED), (3, X, ANSWERED), (4, Y, ANSWERED)], (3, X, DIFFER)),
    ([(0, OWN, ANSWERED), (2, OWN, ANSWERED)], (0, OWN, ANSWERED)),
    ([(0, Y, SPLIT), (2, OWN, ANSWERED)], (2, OWN, ANSWERED)),
], ids=["one-caller", "two-callers", "two-callers-three-legs", "split-and-not",
        "all-split", "split-and-two-callers", "own-after", "own-before", "own-and-two-callers",
        "own-only", "own-and-split"])
@pytest.mark.parametrize("batches", [1, 3], ids=["one-batch", "a-batch-each"])
def test_legs_of_one_call_that_name_two_callers_are_neither_callers(tmp_path_factory, legs,
                                                                    expected, batches):
    """Legs of one call on a line (one call id; start minutes, caller, disposition): the
    earliest leg speaks for the call but a leg a transfer split off never does where
    another was not, nor one whose caller is the line itself (its own phone's record)
    where another's is not; where the other legs name two callers, the call is
    callers_differ (a trace of it fails closed), in every order and batching of its legs."""
    for order in itertools.permutations(range(len(legs))):
        env, db = open_env(tmp_path_factory.mktemp("legs") / "i")
        drawn = [legs[i] for i in order]
        parts = [drawn] if batches == 1 else [[leg] for leg in drawn]
        for part in parts:
            minutes, callers, dispositions = zip(*part, strict=True)
            lines, e = entries_from([5] * len(part), [m * 60_000_000 for m in minutes],
                                    [9] * len(part), [d << 4 | 1 for d in dispositions])
            e["calling"] = np.asarray(callers, np.uint64)
            with env.begin(write=True) as txn:
                index.write_entries(txn, db, lines, e, 4)
        ((_, value),) = dump(env, db)
        (entry,) = np.frombuffer(value, index.ENTRY_DTYPE)
        got = (int(entry["start_us"]) // 60_000_000, int(entry["calling"]), int(entry["flags"]) >> 4)
        assert got == expected, order
        env.close()
