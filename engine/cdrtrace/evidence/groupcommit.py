"""Group commit: concurrent traces share one durable commit of the evidence environment.

A trace's evidence must be on disk before its answer, and a durable LMDB commit costs a
flush (~200-400 us here) however little it writes. Traces that arrive while a commit is
under way wait for the next one, which takes them all: they run one after the other in
one write transaction, commit once, then all are answered. Under load, N traces cost one
flush instead of N. A trace that fails is rolled back alone: the commit is then made again
from the start, each trace in its own nested transaction (nesting every trace always cost
two more LMDB calls a trace, each letting go of the interpreter lock).

Every work of a commit gets the value of opened(txn), a context entered once per commit:
the tracer's is one index snapshot for all of the commit's traces, with the pending
traces resolved first.

Three ways in: run(work) from a thread (the Python API), which commits the work itself
when it is alone (no commit under way, none waiting), and otherwise queues it for the
committer thread and waits for its own answer; run_async(work) from an event loop (the
service), which only queues the work, so the service needs no thread per trace; and
submit(work, then), which queues the work and returns: then(outcome) is called on the
committer thread once the commit is durable (the C FastAGI listener answers the switch
from there, with no future or loop hop per trace). A thread waiting in run() is woken
once, by its own answer (a lock let go, not a Future's condition): when each waited on
the queue's condition and a caller led, every commit woke all of them (BENCHMARKS.md,
the seventh and fourteenth sessions). run's queue is bounded: a trace that finds it full
waits for room; the listeners' connection limits bound the others.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lmdb

from ..store.environments import Environments

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("cdrtrace.trace")
MAX_WAITING = 4096          # traces queued at most; more wait for room
Settled = tuple[Any, BaseException | None]     # a work's (result, None) or (None, its error)


class _Answer:
    """What a thread in run() waits on: a lock taken at the start and let go once the
    outcome is set. A concurrent.futures.Future did the same with a condition, costing
    the interpreter lock several times as much a trace (BENCHMARKS.md)."""
    __slots__ = ("lock", "outcome")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.outcome: Settled = (None, None)

    def set(self, outcome: Settled) -> None:
        self.outcome = outcome
        self.lock.release()

    def result(self) -> Any:
        self.lock.acquire()
        result, error = self.outcome
        if error is not None:
            raise error
        return result


class _Slot:
    __slots__ = ("work", "future", "loop", "then", "answer")

    def __init__(self, work: Callable[[Any, Any], Any],
                 loop: asyncio.AbstractEventLoop | None = None,
                 then: Callable[[Settled], None] | None = None, answer: _Answer | None = None):
        self.work, self.loop, self.then, self.answer = work, loop, then, answer
        self.future: Any = loop.create_future() if loop is not None else None


class GroupCommit:
    """Runs work(txn) for concurrent callers in shared, durable evidence commits. Alone, a
    trace commits in its own thread, with no hand-off; the others wait for the committer
    thread, which takes every trace waiting once a commit is done, commits them together
    and answers them."""

    def __init__(self, envs: Environments,
                 opened: Callable[[Any], contextlib.AbstractContextManager[Any]] | None = None):
        self.envs = envs
        self.opened = opened or (lambda txn: contextlib.nullcontext())
        self.waiting: list[_Slot] = []
        self.cond = threading.Condition()
        self.leading = False
        self.committer: threading.Thread | None = None   # leads for submit(); started once
        self.commits = 0              # how many commits carried how many traces: measured
        self.carried = 0
        # CDRTRACE_GROUP_COMMIT=0: one commit per trace, for measuring what sharing saves
        self.enabled = os.environ.get("CDRTRACE_GROUP_COMMIT", "1") != "0"

    def run(self, work: Callable[[Any, Any], Any]) -> Any:
        """work(txn, opened) in a shared commit; its result once the commit is durable."""
        answer = _Answer()
        slot = _Slot(work, answer=answer)
        if not self.enabled:                 # the benchmarks' baseline: a commit per trace
            self._commit([slot])
            return answer.result()
        with self.cond:
            while len(self.waiting) >= MAX_WAITING:
                self.cond.wait()
            alone = not self.leading and not self.waiting
            if alone:
                self.leading = True
            else:
                self._queue(slot)
        if alone:
            self._lead([slot])
        return answer.result()               # woken by its answer alone

    async def run_async(self, work: Callable[[Any, Any], Any]) -> Any:
        """work(txn, opened) in a shared commit, from an event loop: its result once the commit
        is durable. The committer thread answers a whole commit's traces in one call into
        the loop. The connection limits of the listeners bound what waits here."""
        import asyncio  # here: only the service's loop comes this way

        slot = _Slot(work, asyncio.get_running_loop())
        self._hand_over(slot)
        return await slot.future

    def submit(self, work: Callable[[Any, Any], Any], then: Callable[[Settled], None]) -> None:
        """work(txn, opened) in a shared commit, without waiting for it: then(outcome) is
        called on the committer thread once the commit is durable, or has failed. An
        error then raises is logged, and the others are answered."""
        self._hand_over(_Slot(work, then=then))

    def _hand_over(self, slot: _Slot) -> None:
        with self.cond:
            self._queue(slot)

    def _queue(self, slot: _Slot) -> None:
        """Under the lock: queue a slot for the committer thread (started with the first)."""
        self.waiting.append(slot)
        if self.committer is None:
            self.committer = threading.Thread(target=self._commit_forever, daemon=True,
                                              name="cdrtrace-group-commit")
            self.committer.start()
        self.cond.notify_all()

    def _take(self) -> list[_Slot]:
        """Under the lock: lead, taking every trace waiting (the first alone when sharing
        is off: the committer then makes one commit per trace)."""
        self.leading = True
        if not self.enabled:
            return [self.waiting.pop(0)]
        batch, self.waiting = self.waiting, []
        return batch

    def _lead(self, batch: list[_Slot]) -> None:
        try:
            self._commit(batch)
        finally:
            with self.cond:
                self.leading = False
                self.cond.notify_all()        # the committer takes what waits; run() has room

    def _commit_forever(self) -> None:
        while True:
            with self.cond:
                while not self.waiting or self.leading:
                    self.cond.wait()
                batch = self._take()
            self._lead(batch)

    def _commit(self, batch: list[_Slot]) -> None:
        results: list[Settled] = []

        def together(txn: Any) -> None:
            results.clear()                  # again from the start if LMDB retries the txn
            with self.opened(txn) as opened:
                for slot in batch:
                    try:
                        results.append((slot.work(txn, opened), None))
                    except (lmdb.MapFullError, lmdb.MapResizedError):
                        raise                # ewrite grows the map and runs this again
                    except Exception as exc:  # noqa: BLE001 - undone with the whole txn
                        raise _OneFailed from exc

        def nested(txn: Any) -> None:
            results.clear()
            with self.opened(txn) as opened:
                for slot in batch:
                    child = self.envs.eenv.begin(write=True, parent=txn)
                    try:
                        results.append((slot.work(child, opened), None))
                        child.commit()
                    except Exception as exc:  # noqa: BLE001 - this trace fails, not the others
                        child.abort()
                        results.append((None, exc))
        try:
            try:
                self.envs.ewrite(together)
            except _OneFailed:               # nothing of the first try was kept
                self.envs.ewrite(nested)
            self.commits += 1
            self.carried += len(batch)
        except BaseException as exc:         # the commit failed: every trace in it did
            results = [(None, exc)] * len(batch)
        for _, error in results:
            if error is not None:
                _let_go(error)
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for slot, outcome in zip(batch, results, strict=True):
            if slot.loop is not None:               # a future of that loop
                by_loop.setdefault(slot.loop, []).append((slot, outcome))
            else:
                _settle(slot, outcome)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:             # that loop has closed: nobody waits any more
                pass


def _let_go(error: BaseException) -> None:
    """Clear the variables of the finished frames an error's traceback holds (its cause's
    and context's too): a failed trace's read transactions are let go now, with their
    LMDB reader slots, not when the collector breaks the error's cycle. A flood of failing
    traces used up the 126 slots and every trace then failed. The traceback still says
    where it was raised (tests/test_group_commit.py)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        stack += [e.__cause__, e.__context__]


class _OneFailed(Exception):
    """A trace of a commit failed: the commit is made again, each trace nested."""


def _settle(slot: _Slot, outcome: Settled) -> None:
    if slot.answer is not None:
        slot.answer.set(outcome)
        return
    if slot.then is not None:
        try:
            slot.then(outcome)
        except Exception:                    # noqa: BLE001 - the other traces are answered
            log.exception("a trace's answer failed")
        return
    future = slot.future
    if future.done():                        # an awaiting task was cancelled
        return
    result, error = outcome
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _settle_all(settled: list) -> None:
    for slot, outcome in settled:
        _settle(slot, outcome)
