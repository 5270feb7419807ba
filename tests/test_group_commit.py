"""Group commit: concurrent works share one durable commit, and a work that fails is
undone alone (evidence.groupcommit)."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from cdrtrace.evidence.groupcommit import GroupCommit


def _wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def _committed(store, key: bytes) -> bool:
    with store.envs.eread() as txn:
        return txn.get(key, db=store.envs.db["emeta"]) is not None


def _writes(store, key: bytes, result=None, fail=False, gate=None):
    db = store.envs.db["emeta"]

    def work(txn, opened):
        if gate is not None:
            assert gate.wait(10)
        txn.put(key, b"written", db=db)
        if fail:
            raise ValueError(f"{key.decode()} failed after writing")
        return result, opened
    return work


@pytest.mark.parametrize("way_in", ["thread", "event loop"])
def test_a_failing_work_is_undone_alone_and_the_others_share_one_commit(store, way_in):
    openings = []

    @contextlib.contextmanager
    def opened(txn):
        openings.append(txn)
        yield len(openings)
    group = GroupCommit(store.envs, opened)
    gate, answers = threading.Event(), {}

    def run(name, work):
        try:
            answers[name] = group.run(work)
        except ValueError as exc:
            answers[name] = exc
    first = threading.Thread(target=run, args=("first", _writes(store, b"first", 0, gate=gate)))
    first.start()
    names = ["a", "b", "bad", "c"]
    works = {n: _writes(store, n.encode(), n, fail=n == "bad") for n in names}
    threads: list[threading.Thread] = []
    try:
        _wait_until(lambda: group.leading)        # the first commit is under way, held
        if way_in == "thread":
            threads = [threading.Thread(target=run, args=(n, works[n])) for n in names]
        else:
            async def queue_all():
                results = await asyncio.gather(*(group.run_async(works[n]) for n in names),
                                               return_exceptions=True)
                answers.update(zip(names, results, strict=True))
            threads = [threading.Thread(target=asyncio.run, args=(queue_all(),))]
        for t in threads:
            t.start()
        _wait_until(lambda: len(group.waiting) == len(names), seconds=5)
    finally:                                      # let every thread end, whatever failed
        gate.set()
        for t in [first, *threads]:
            t.join(10)
    assert answers["first"] == (0, 1)
    assert isinstance(answers["bad"], ValueError)
    for n in ("a", "b", "c"):                     # the second commit's value of opened
        assert answers[n][0] == n and answers[n][1] == len(openings)
    assert [_committed(store, k) for k in (b"first", b"a", b"b", b"c")] == [True] * 4
    assert not _committed(store, b"bad")          # written, then undone with its failure
    assert (group.commits, group.carried) == (2, 5)


def test_a_trace_alone_commits_in_its_thread_and_the_waiting_ones_on_the_committer(store):
    """run(): alone, the work commits in the caller's thread (no hand-off); behind a
    commit under way, the works wait for the committer thread, which commits them
    together once that commit is done, each caller waiting for its own answer (not on
    the queue, where every commit would wake them all)."""
    group = GroupCommit(store.envs)
    db = store.envs.db["emeta"]

    def where(key, gate=None):
        def work(txn, opened):
            if gate is not None:
                assert gate.wait(10)
            txn.put(key, b"written", db=db)
            return threading.current_thread().name
        return work
    assert group.run(where(b"alone")) == threading.current_thread().name
    gate, answers = threading.Event(), {}

    def run(name, work):
        answers[name] = group.run(work)
    first = threading.Thread(target=run, args=("first", where(b"first", gate)),
                             name="caller-first")
    first.start()
    others = [threading.Thread(target=run, args=(n, where(n.encode())), name=f"caller-{n}")
              for n in ("a", "b", "c")]
    try:
        _wait_until(lambda: group.leading)        # the first commit is under way, held
        for t in others:
            t.start()
        _wait_until(lambda: len(group.waiting) == 3, seconds=5)
    finally:                                      # let every thread end, whatever failed
        gate.set()
        for t in [first, *others]:
            if t.ident is not None:               # started
                t.join(10)
    assert answers == {"first": "caller-first", "a": "cdrtrace-group-commit",
                       "b": "cdrtrace-group-commit", "c": "cdrtrace-group-commit"}
    assert (group.commits, group.carried) == (3, 5)
    assert all(_committed(store, k) for k in (b"alone", b"first", b"a", b"b", b"c"))


def test_without_sharing_each_work_commits_alone(store, monkeypatch):
    monkeypatch.setenv("CDRTRACE_GROUP_COMMIT", "0")
    group = GroupCommit(store.envs)
    assert group.run(_writes(store, b"one", 1))[0] == 1
    with pytest.raises(ValueError):
        group.run(_writes(store, b"two", 2, fail=True))
    assert _committed(store, b"one") and not _committed(store, b"two")
    assert (group.commits, group.carried) == (2, 2)


def test_a_submitted_work_is_answered_by_a_call_once_durable(store):
    """submit(): then(outcome) runs on the committer thread after the commit is durable; a
    failing work's then gets its error, and a then that raises is logged without keeping
    the others from their answers."""
    group = GroupCommit(store.envs)
    gate = threading.Event()
    calls, done = [], threading.Event()

    def then(name, raises=False):
        def called(outcome):
            calls.append((name, outcome, threading.current_thread().name,
                          _committed(store, name.encode())))
            if len(calls) == 4:
                done.set()
            if raises:
                raise RuntimeError("the answer failed")
        return called
    group.submit(_writes(store, b"held", "held", gate=gate), then("held"))
    _wait_until(lambda: group.leading)             # that commit is under way, held
    group.submit(_writes(store, b"raises", "r"), then("raises", raises=True))
    group.submit(_writes(store, b"bad", "b", fail=True), then("bad"))
    group.submit(_writes(store, b"after", "a"), then("after"))
    gate.set()
    assert done.wait(10)
    by_name = {name: (outcome, thread, durable) for name, outcome, thread, durable in calls}
    assert by_name["held"][0] == (("held", None), None)
    assert by_name["raises"][0] == (("r", None), None) and by_name["after"][0][0][0] == "a"
    assert by_name["bad"][0][0] is None and isinstance(by_name["bad"][0][1], ValueError)
    assert {thread for _, thread, _ in by_name.values()} == {"cdrtrace-group-commit"}
    assert [by_name[n][2] for n in ("held", "raises", "after", "bad")] == [True] * 3 + [False]


def test_failing_traces_do_not_hold_reader_slots(store):
    """A trace that raises (here: an index entry with a presentation no rule knows) is
    refused; its error reaches the caller, and the read transactions its commit opened
    are let go at once, not when the collector finds its traceback's frames: a flood of
    such traces must not use up LMDB's reader slots (126) and stop every other trace."""
    import gc

    import numpy as np

    from cdrtrace.parsing import numbers
    from cdrtrace.store import index
    packed = numbers.normalize("3035550110")
    entry = np.zeros(1, index.ENTRY_DTYPE)
    entry["start_us"], entry["calling"] = 1, numbers.normalize("7205550101")
    entry["presentation"], entry["flags"] = 3, 1 << 4          # 3: no presentation has it
    with store.envs.env.begin(write=True) as w:
        w.put(index.line_key(packed), entry.tobytes(), db=store.envs.db["index"])
    gc.disable()                          # as if no collection ran meanwhile
    try:
        errors = []
        for _ in range(200):
            try:
                store.trace("3035550110", at=10**15)
            except ValueError as exc:
                errors.append(type(exc))
        assert errors == [ValueError] * 200
        assert store.envs.env.info()["num_readers"] < 10, store.envs.env.readers()
    finally:
        gc.enable()
