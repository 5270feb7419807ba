"""The last-call index: what is indexed, how much is kept, idempotence, order, crashes."""
from __future__ import annotations

import random

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cdrtrace
from cdrtrace import synth, testing
from cdrtrace.store import index
from conftest import cdr, cdr_file


def dump(store) -> list[tuple[bytes, bytes]]:
    return testing.index_bytes(store)


def identity(store):
    """The index without provenance (source id and byte offset)."""
    out = []
    for key, value in dump(store):
        e = index.decode(value)
        out.append((key, [(int(x["start_us"]), int(x["calling"]), int(x["call_id"]),
                           int(x["presentation"]), int(x["flags"]), int(x["feed"])) for x in e]))
    return out


def test_only_received_calls_are_indexed(store, ingest_records):
    summary = ingest_records(
        cdr(dst="3035550101", disposition="ANSWERED"),
        cdr(dst="3035550102", disposition="NO ANSWER"),
        cdr(dst="3035550103", disposition="CANCEL"),
        cdr(dst="3035550104", disposition="BUSY", end="2026-03-02 14:03:11"),   # at once
        cdr(dst="3035550105", disposition="FAILED", end="2026-03-02 14:03:11"),
        cdr(dst="3035550106", disposition="CONGESTION", end="2026-03-02 14:03:11"),
        cdr(dst="s"),                                    # no indexable line
    )
    assert summary.records == 7 and summary.indexed == 3
    assert [int.from_bytes(k, "big") for k, _ in dump(store)] == [
        store.line(n) for n in ("3035550101", "3035550102", "3035550103")]


def test_forwarded_call_is_indexed_under_every_line(store, ingest_records):
    ingest_records(cdr(dst="3035550110", userfield="3035550177",
                       dstchannel="PJSIP/7205550199-0001"))
    for line, role in (("3035550110", "dialled"), ("3035550177", "redirecting"),
                       ("7205550199", "final")):
        (call,) = store.last_calls(line, analyst="ann")
        assert call["indexed_as"] == role and call["calling"] == "+13035550142"
        assert call["forwarded"]


def test_a_call_forwarded_to_the_line_that_forwarded_it_is_held_once_there(store,
                                                                          ingest_records):
    """The forwarding line and the line that rang are one (it rang there at last): one
    (line, call) pair for it there, counted once in what the ingest says it indexed."""
    summary = ingest_records(cdr(dst="3035550110", userfield="3035550177",
                                 dstchannel="PJSIP/3035550177-0001"))
    assert summary.indexed == 2
    (call,) = store.last_calls("3035550177", analyst="ann")
    assert call["indexed_as"] == "redirecting" and call["forwarded"]
    assert len(store.last_calls("3035550110", analyst="ann")) == 1


def test_keeps_the_newest_four_calls_newest_first(store, ingest_records):
    calls = [cdr(start=f"2026-03-02 10:0{i}:00", end=f"2026-03-02 10:0{i}:30") for i in range(7)]
    random.Random(1).shuffle(calls)
    ingest_records(*calls[:3])
    ingest_records(*calls[3:])
    starts = [c["start"] for c in store.last_calls("3035550110", analyst="ann")]
    assert starts == [f"2026-03-02T10:0{i}:00Z" for i in (6, 5, 4, 3)]
    assert store.stats()["index"]["lines"] == 1


def at_second(minute: int, caller: str) -> bytes:
    return cdr(src=caller, clid=f'"" <{caller}>', start=f"2026-03-02 10:0{minute}:00",
               answer=f"2026-03-02 10:0{minute}:05", end=f"2026-03-02 10:0{minute}:30")


@pytest.mark.parametrize("later", [None, "7205550101", "7205550102"])
def test_past_the_fourth_call_it_keeps_the_calls_of_the_fourths_instant(store, ingest_records,
                                                                        later):
    """Two callers' calls began in the same second, the fourth newest: the index keeps both
    (a trace resolving to that second must see that it cannot tell them apart), whether the
    second's record comes in with the others or once the line holds four calls. Before, it
    kept the one whose call id ranked first, and a trace made once three later calls were
    in named its caller. A later call moves the fourth place to a newer call, and the two
    are let go."""
    calls = [at_second(m, "7205550103") for m in (2, 3, 4)]
    first = [at_second(1, c) for c in ("7205550101", "7205550102") if c != later]
    ingest_records(*first, *calls)
    if later:
        ingest_records(at_second(1, later))
    starts = [c["start"] for c in store.last_calls("3035550110", analyst="ann")]
    assert starts == [f"2026-03-02T10:0{m}:00Z" for m in (4, 3, 2, 1, 1)]
    result = store.trace("3035550110", at="2026-03-02T10:01:40Z")
    assert result.outcome is cdrtrace.Outcome.UNTRACEABLE
    assert "720555" not in repr(result) + repr(store.status("3035550110"))   # no caller
    (record,) = store.trace_records("3035550110", analyst="cic")
    assert {record["call"]["calling"], *(t["calling"] for t in record["call"]["tied_with"])} == {
        "+17205550101", "+17205550102"}
    ingest_records(at_second(5, "7205550103"))
    starts = [c["start"] for c in store.last_calls("3035550110", analyst="ann")]
    assert starts == [f"2026-03-02T10:0{m}:00Z" for m in (5, 4, 3, 2)]


def test_a_line_whose_room_one_instant_fills_names_no_call_of_it(store, ingest_records):
    """One caller's calls, more in one second than a line's value has room for: a call of
    that second beyond them, another caller's, may be the last, so a trace resolving to it
    names none (untraceable), however many of the held ones are that caller's. One fewer
    than the room names the caller."""
    flood = [cdr(src="7205550101", start="2026-03-02 10:01:00", end="2026-03-02 10:01:30",
                 uniqueid=f"flood.{k}") for k in range(index.LINE_ROOM + 2)]
    ingest_records(*flood[:index.LINE_ROOM - 1])
    assert len(store.last_calls("3035550110", analyst="ann")) == index.LINE_ROOM - 1
    assert store.trace("3035550110", at="2026-03-02T10:02:00Z").outcome is cdrtrace.Outcome.SUCCESS
    ingest_records(*flood[index.LINE_ROOM - 1:])
    assert len(store.last_calls("3035550110", analyst="ann")) == index.LINE_ROOM
    result = store.trace("3035550110", at="2026-03-02T10:03:00Z")
    assert result.outcome is cdrtrace.Outcome.UNTRACEABLE
    assert "720555" not in repr(result)                     # no caller for the customer
    record = store.trace_records("3035550110", analyst="cic")[-1]
    assert record["call"]["tie_not_held"] == index.LINE_ROOM
    assert "no longer held" in record["reason"]


def test_ingesting_the_same_file_twice_leaves_the_index_byte_identical(store, tmp_path):
    columns, _ = synth.generate(3000, 400, seed=5)
    path = tmp_path / "day.csv"
    path.write_bytes(synth.format_asterisk(columns, 0, len(columns["line"])))
    cdrtrace.ingest(store, [str(path)])
    first = dump(store)
    assert len(first) > 300
    cdrtrace.ingest(store, [str(path)], chunk_bytes=7919)   # other chunk boundaries too
    assert dump(store) == first
    cdrtrace.ingest(store, [str(path)], chunk_bytes=7919, batch_pairs=500)
    assert dump(store) == first


def test_same_source_replayed_is_byte_identical(tmp_path):
    """Provenance included: the same bytes from the same source id give the same index."""
    columns, _ = synth.generate(2000, 300, seed=8)
    data = synth.format_asterisk(columns, 0, len(columns["line"]))
    store = cdrtrace.open(tmp_path / "s", create=True)
    parser = cdrtrace.make_parser()
    cols, _, _ = parser.feed(data, True)
    batch = cdrtrace.CallBatch(cols, 1)
    testing.write_batch(store, batch, 1)
    once = dump(store)
    testing.write_batch(store, batch, 1)
    assert dump(store) == once


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), shuffle=st.randoms(use_true_random=False),
       batch_pairs=st.integers(1, 400))
def test_shuffled_records_give_the_same_index(tmp_path_factory, seed, shuffle, batch_pairs):
    columns, _ = synth.generate(800, 60, seed=seed, campaigns=3)   # busy lines: eviction matters
    rows = synth.format_asterisk(columns, 0, len(columns["line"])).splitlines(keepends=True)
    shuffled = rows[:]
    shuffle.shuffle(shuffled)
    folder = tmp_path_factory.mktemp("shuffle")
    stores = []
    for name, lines in (("ordered", rows), ("shuffled", shuffled)):
        (folder / f"{name}.csv").write_bytes(b"".join(lines))
        store = cdrtrace.open(folder / name, create=True)
        cdrtrace.ingest(store, [str(folder / f"{name}.csv")], batch_pairs=batch_pairs)
        stores.append(store)
    assert identity(stores[0]) == identity(stores[1])
    assert len(identity(stores[0])) > 20


def test_a_failed_batch_leaves_the_last_committed_state(store, tmp_path, monkeypatch):
    first = cdr_file(tmp_path, cdr(dst="3035550101"), name="a.csv")
    cdrtrace.ingest(store, [first])
    before = dump(store)
    original = index.write_entries

    def crash(txn, db, lines, entries, keep=4, order=None):
        original(txn, db, lines, entries, keep, order)   # written inside the transaction...
        raise OSError("power lost")               # ...which never commits

    monkeypatch.setattr(index, "write_entries", crash)
    second = cdr_file(tmp_path, cdr(dst="3035550102"), cdr(dst="3035550101",
                      start="2026-03-02 15:00:00", end="2026-03-02 15:01:00"), name="b.csv")
    with pytest.raises(OSError, match="power lost"):
        cdrtrace.ingest(store, [second])
    assert dump(store) == before


def test_map_grows_instead_of_failing(tmp_path):
    store = cdrtrace.open(tmp_path / "small", create=True)
    testing.set_map_size(store, 1 << 20)            # 1 MiB: far too small for what follows
    columns, _ = synth.generate(40_000, 20_000, seed=2)
    path = tmp_path / "big.csv"
    path.write_bytes(synth.format_asterisk(columns, 0, len(columns["line"])))
    summary = cdrtrace.ingest(store, [str(path)])
    assert summary.indexed > 30_000
    assert testing.map_size(store) > 1 << 20
    roomy = cdrtrace.open(tmp_path / "roomy", create=True)
    cdrtrace.ingest(roomy, [str(path)])
    assert dump(store) == dump(roomy)


def test_merge_rejects_unsorted_lines():
    entries = np.zeros(2, index.ENTRY_DTYPE)
    with pytest.raises(ValueError, match="lines must be sorted"):
        index._index.merge(np.array([5, 3], np.uint64), entries.view(np.uint8).reshape(-1, 40),
                           None, None, 4)


def test_store_errors(tmp_path):
    with pytest.raises(cdrtrace.StoreError, match="no cdrtrace store at .*cdrtrace init"):
        cdrtrace.open(tmp_path / "missing")
    env = lmdb.open(str(tmp_path / "foreign"), max_dbs=8)
    env.close()
    with pytest.raises(cdrtrace.StoreError, match="is not a cdrtrace store"):
        cdrtrace.open(tmp_path / "foreign")


def test_the_native_layout_is_checked_against_python_at_import():
    """A native build whose record layout or numbering differs is refused, not misread."""
    import types

    from cdrtrace.parsing import _parse, parsers
    from cdrtrace.store import _index

    index.check_native(_index)             # the real build passes
    parsers.check_native(_parse)
    with pytest.raises(cdrtrace.NativeModuleError, match="built for 48-byte entries"):
        index.check_native(types.SimpleNamespace(ENTRY_BYTES=48, DEF_KEEP=4, CALLERS_DIFFER=15))
    with pytest.raises(cdrtrace.NativeModuleError, match="callers_differ 14"):
        index.check_native(types.SimpleNamespace(ENTRY_BYTES=40, DEF_KEEP=4, CALLERS_DIFFER=14))
    shifted = {**_parse.DISPOSITION_CODES, "BUSY": 5, "FAILED": 4}
    with pytest.raises(cdrtrace.NativeModuleError, match="numbers dispositions"):
        parsers.check_native(types.SimpleNamespace(DISPOSITION_CODES=shifted,
                                                 PRESENTATION_CODES=_parse.PRESENTATION_CODES))


def test_merge_refuses_too_few_keys_instead_of_crashing():
    from cdrtrace.store import _index

    lines = np.array([1, 2, 3], np.uint64)
    rows = np.zeros((3, index.ENTRY_DTYPE.itemsize), np.uint8)
    with pytest.raises(ValueError, match="one key per distinct line"):
        _index.merge(lines, rows, [index.line_key(1)], [], 4)


def _chunks(parts: int):
    """Parsed chunks of generated records, as ingest hands them to its pending batch."""
    from cdrtrace.parsing.formats import CallBatch
    from cdrtrace.parsing.parsers import make_parser
    columns, _ = synth.generate(6000, 500, seed=12)
    cuts = np.linspace(0, 6000, parts + 1).astype(int)
    parser = make_parser()
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        rows, _, _ = parser.feed(synth.format_asterisk(columns, int(a), int(b)))
        yield CallBatch({k: v.copy() for k, v in rows.items()}, 1)


@pytest.mark.parametrize("room", [1, 700, 1 << 16])
def test_a_pending_batch_commits_exactly_its_pairs_whatever_its_room(tmp_path, room):
    """Pairs are written into arrays that grow as needed and serve a later batch once the
    commit of the one before has ended. A batch taken and not yet committed keeps its
    pairs while the next batch is parsed."""
    from cdrtrace.ingestion.commits import Pending
    got = cdrtrace.open(tmp_path / "got", create=True)
    want = cdrtrace.open(tmp_path / "want", create=True)
    pending = Pending(got, room)
    chunks = list(_chunks(6))
    jobs = []
    for k, batch in enumerate(chunks):
        index.entries_for_batch(batch, 1, into=pending.room_for)
        if k % 2:
            jobs.append(pending.take())   # run later, after the next chunk is pending
        if len(jobs) == 2:
            jobs.pop(0)()
    for job in jobs:
        job()
    pending.commit()
    for batch in chunks:
        lines, entries = index.entries_for_batch(batch, 1)
        want.envs.write(lambda txn, lines=lines, entries=entries: index.write_entries(
            txn, want.envs.db["index"], lines, entries, want.config["keep"]))
    assert dump(got) == dump(want) and len(dump(want)) > 400
