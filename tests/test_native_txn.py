"""A transaction's reads and writes in C (store._index.Txn), against py-lmdb's own calls
(store.index.PyTxn, the reference): the same answers and the same stored bytes, the same
errors, and py-lmdb's cursors on the transaction kept right."""
from __future__ import annotations

import json

import lmdb
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cdrtrace.parsing import salvage
from cdrtrace.store import _index, index
from cdrtrace.store.lookup import UNREADABLE_WINDOW_US, Lookup

KEYS = st.binary(min_size=1, max_size=12)
OPS = st.lists(st.one_of(
    st.tuples(st.just("get"), KEYS),
    st.tuples(st.just("put"), KEYS, st.binary(max_size=300)),
    st.tuples(st.just("append"), KEYS, st.binary(max_size=40)),
    st.tuples(st.just("last_key")),
    st.tuples(st.just("next_key"), st.binary(max_size=12)),
    st.tuples(st.just("range"), st.binary(max_size=12), st.binary(max_size=12)),
), max_size=60)


def open_env(path, map_size=1 << 24):
    env = lmdb.open(str(path), map_size=map_size, max_dbs=4)
    return env, env.open_db(b"t")


def apply(w, db, op):
    kind, *args = op
    if kind == "get":
        return w.get(args[0], b"absent", db=db)
    if kind == "put":
        return w.put(args[0], args[1], db=db)
    if kind == "append":
        return w.put(args[0], args[1], db=db, append=True)
    if kind == "last_key":
        return w.last_key(db)
    if kind == "next_key":
        return w.next_key(args[0], db=db)
    return w.range(args[0], args[1], db=db)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_native_calls_answer_and_store_as_py_lmdb_does(tmp_path_factory, ops):
    folder = tmp_path_factory.mktemp("e")
    (env_a, db_a), (env_b, db_b) = open_env(folder / "a"), open_env(folder / "b")
    with env_a.begin(write=True) as ta, env_b.begin(write=True) as tb:
        native, reference = _index.Txn(ta, db_a), index.PyTxn(tb)
        assert type(index.native_txn(ta, db_a)) is _index.Txn
        for op in ops:
            assert apply(native, db_a, op) == apply(reference, db_b, op), op
    with env_a.begin() as ta, env_b.begin() as tb:
        assert list(ta.cursor(db_a)) == list(tb.cursor(db_b))
        for op in ops:       # a read-only transaction: all but put
            if op[0] not in ("put", "append"):
                assert apply(_index.Txn(ta, db_a), db_a, op) == apply(index.PyTxn(tb), db_b, op)


def test_append_of_a_key_not_past_the_last_is_refused_as_py_lmdb_does(tmp_path):
    env, db = open_env(tmp_path / "e")
    with env.begin(write=True) as txn:
        w = _index.Txn(txn, db)
        assert w.put(b"\x02", b"b", db=db, append=True)
        assert w.put(b"\x01", b"a", db=db, append=True) is False
        assert txn.put(b"\x01", b"a", db=db, append=True) is False
        assert w.get(b"\x01", db=db) is None


@pytest.mark.parametrize("native", [True, False])
def test_a_range_holds_its_start_and_not_its_stop(tmp_path, native):
    env, db = open_env(tmp_path / "e")
    with env.begin(write=True) as txn:
        for key in (b"a", b"ab", b"b", b"b\x00", b"ba", b"c"):
            txn.put(key, key.upper(), db=db)
        w = index.native_txn(txn, db, native)
        assert w.range(b"ab", b"b", db=db) == [(b"ab", b"AB")]
        assert w.range(b"b", b"ba", db=db) == [(b"b", b"B"), (b"b\x00", b"B\x00")]
        assert w.range(b"", b"ab", db=db) == [(b"a", b"A")]
        assert w.range(b"c", b"a", db=db) == []
        assert w.next_key(b"b\x01", db=db) == b"ba" and w.next_key(b"d", db=db) is None
        assert w.next_key(b"", db=db) == b"a" and w.last_key(db) == b"c"


def test_a_cursor_of_the_transaction_sees_what_was_put_natively(tmp_path):
    """py-lmdb's cursors re-read their position after a write they did not make."""
    env, db = open_env(tmp_path / "e")
    with env.begin(write=True) as txn:
        for i in range(0, 200, 2):
            txn.put(bytes([i]), b"old" * 50, db=db)
        cursor = txn.cursor(db)
        assert cursor.set_key(bytes([100]))
        w = _index.Txn(txn, db)
        for i in range(1, 200, 2):
            w.put(bytes([i]), b"new" * 60, db=db)
        assert cursor.key() == bytes([100]) and cursor.value() == b"old" * 50
        assert cursor.next() and cursor.key() == bytes([101]) and cursor.value() == b"new" * 60


def test_errors_are_py_lmdb_s(tmp_path, monkeypatch):
    env, db = open_env(tmp_path / "e", map_size=64 << 10)
    other_env, other_db = open_env(tmp_path / "o")
    txn = env.begin(write=True)
    w = _index.Txn(txn, db)
    with pytest.raises(TypeError):
        w.get(b"k", db=other_db)            # not of this environment
    with pytest.raises(lmdb.BadValsizeError):
        w.put(b"", b"v", db=db)
    with pytest.raises(lmdb.MapFullError):  # the store grows its map on this one
        for i in range(1000):
            w.put(i.to_bytes(4, "big"), b"x" * 1000, db=db)
    txn.abort()
    with pytest.raises(lmdb.Error):         # a transaction ended
        w.get(b"k", db=db)
    with pytest.raises(RuntimeError, match="not py-lmdb's CPython objects"):
        _index.Txn(object(), db)
    with other_env.begin() as t:
        with pytest.raises(lmdb.Error):      # read-only: LMDB refuses the put
            _index.Txn(t, other_db).put(b"k", b"v", db=other_db)
    with env.begin() as t:    # where the native calls cannot work: py-lmdb's
        assert type(index.native_txn(t, db)) is _index.Txn
        assert type(index.native_txn(t, db, native=False)) is index.PyTxn

        def refused(txn, db):
            raise RuntimeError("not laid out as expected")
        monkeypatch.setattr(_index, "Txn", refused)
        assert type(index.native_txn(t, db)) is index.PyTxn


def unreadable(feed: int, start_us: int, call_id: int, line_found: bool) -> tuple[bytes, bytes]:
    return salvage.log_key(feed, start_us, call_id), json.dumps({"line_found": line_found}).encode()


H = UNREADABLE_WINDOW_US


@pytest.mark.parametrize("native", [True, False])
def test_unreadable_records_near_a_trace_are_counted_by_window_and_feed(tmp_path, native):
    """The call's feed only, from an hour before the call to (not at) the activation; with
    no call, every feed's, from an hour before the activation."""
    env, db = open_env(tmp_path / "e")
    call, at = 10 * H, 10 * H + 500
    records = [
        unreadable(3, call - H - 1, 1, True),      # before the window
        unreadable(3, call - H, 2, False),         # its first instant: counted
        unreadable(3, call + 7, 3, True),
        unreadable(3, at - 1, 4, False),           # its last instant: counted
        unreadable(3, at, 5, False),               # the activation's: not
        unreadable(4, call, 6, False),             # another feed
        unreadable(0, at - 2, 7, True),
        unreadable(0xFFFF, at - H + 1, 8, False),
        unreadable(9, at + 1, 9, True),            # after
    ]
    with env.begin(write=True) as txn:
        for key, value in records:
            txn.put(key, value, db=db)
    lookup = Lookup.__new__(Lookup)
    lookup.db = {"unreadable": db}
    with env.begin() as txn:
        w = index.native_txn(txn, db, native)
        assert type(w) is (_index.Txn if native else index.PyTxn)
        near = lookup.unreadable_near(w, 3, call, at)
        assert (near["records"], near["without_line"]) == (3, 2)
        assert lookup.unreadable_near(w, 4, call, at)["records"] == 1
        assert lookup.unreadable_near(w, 5, call, at)["records"] == 0
        everywhere = lookup.unreadable_near(w, None, at, at)    # no call: the hour before at
        assert (everywhere["records"], everywhere["without_line"]) == (5, 3)   # 3, 4, 6, 7, 8
        assert lookup.unreadable_near(w, None, call, at)["records"] == 6


HUNT_NOTES = st.dictionaries(
    st.tuples(st.integers(1, 2), st.integers(0, 12), st.integers(1, 3)),     # feed, start, id
    st.lists(st.integers(1, 4), max_size=3),                                 # members
    max_size=30)


def hunt_key(feed: int, start: int, call_id: int) -> bytes:
    return feed.to_bytes(2, "big") + start.to_bytes(8, "big") + call_id.to_bytes(8, "big")


@settings(max_examples=150, deadline=None)
@given(HUNT_NOTES, st.integers(1, 2), st.integers(0, 13), st.integers(0, 13),
       st.integers(1, 5), st.integers(0, 4))
@example({(1, 2, 1): [], (1, 3, 2): [2]}, 1, 0, 13, 2, 1)    # the call itself passed over
@example({(1, 2, 1): [1, 3], (1, 3, 2): [4, 2]}, 1, 0, 13, 2, 0)   # the line listed second
def test_the_next_call_through_a_pilot_that_may_have_rung_a_line(tmp_path_factory, notes, feed,
                                                                  after, before, line, call_id):
    """store.hunts' search (Txn.next_hunt, in C, and py-lmdb's): the first call of the range
    that is not call_id and lists no member or the line, as the definition reads."""
    env, db = open_env(tmp_path_factory.mktemp("h") / "e")
    with env.begin(write=True) as txn:
        for (f, start, note), members in notes.items():
            txn.put(hunt_key(f, start, note), bytes(16) + b"".join(
                m.to_bytes(8, "little") for m in members), db=db)
    expected = next(((hunt_key(*k), bytes(16) + b"".join(m.to_bytes(8, "little") for m in v))
                     for k, v in sorted(notes.items())
                     if k[0] == feed and after <= k[1] < before and k[2] != call_id
                     and (not v or line in v)), None)
    start, stop = hunt_key(feed, after, 0)[:10], hunt_key(feed, before, 0)[:10]
    with env.begin() as txn:
        assert _index.Txn(txn, db).next_hunt(start, stop, line, call_id, db=db) == expected
        assert index.PyTxn(txn).next_hunt(start, stop, line, call_id, db=db) == expected
