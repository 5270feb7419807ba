"""Group commit: concurrent traces share one durable commit of the evidence environment.

A trace's evidence must be on disk before its answer, and a durable LMDB commit costs a
flush (~200-400 us here) however little it writes. Traces that arrive while a commit is
under way wait for the next one, which takes them all: each runs in its own nested
transaction of one write transaction (a trace that fails is rolled back alone), they
commit once, then all are answered. Under load, N traces cost one flush instead of N.
The queue is bounded: a trace that finds it full waits for room.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from ..store.environments import Environments

MAX_WAITING = 4096          # traces queued at most; more wait for room


class _Slot:
    __slots__ = ("work", "done", "result", "error")

    def __init__(self, work: Callable[[Any], Any]):
        self.work, self.done = work, threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """Runs work(txn) for concurrent callers in shared, durable evidence commits. The
    first caller to find no commit under way leads: it takes every trace waiting (its
    own first), commits them, answers them, and hands the lead to a trace still waiting.
    Alone, a trace commits in its own thread, with no hand-off."""

    def __init__(self, envs: Environments):
        self.envs = envs
        self.waiting: list[_Slot] = []
        self.cond = threading.Condition()
        self.leading = False
        self.commits = 0              # how many commits carried how many traces: measured
        self.carried = 0
        # CDRTRACE_GROUP_COMMIT=0: one commit per trace, for measuring what sharing saves
        self.enabled = os.environ.get("CDRTRACE_GROUP_COMMIT", "1") != "0"

    def run(self, work: Callable[[Any], Any]) -> Any:
        """work(txn) in a shared commit; its result once the commit is durable."""
        if not self.enabled:                 # the benchmarks' baseline: a commit per trace
            return self.envs.ewrite(work)
        slot = _Slot(work)
        with self.cond:
            while len(self.waiting) >= MAX_WAITING:
                self.cond.wait()
            self.waiting.append(slot)
            while not slot.done.is_set() and self.leading:
                self.cond.wait()
            if not slot.done.is_set():        # nobody is committing: lead
                self.leading = True
                batch, self.waiting = self.waiting, []
            else:
                batch = []
        if batch:
            try:
                self._commit(batch)
            finally:
                with self.cond:
                    self.leading = False
                    self.cond.notify_all()    # the answered return; a waiter leads next
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _commit(self, batch: list[_Slot]) -> None:
        def work(txn: Any) -> None:
            for slot in batch:               # again from the start if LMDB retries the txn
                slot.result, slot.error = None, None
                child = self.envs.eenv.begin(write=True, parent=txn)
                try:
                    slot.result = slot.work(child)
                    child.commit()
                except Exception as exc:     # noqa: BLE001 - this trace fails, not the others
                    child.abort()
                    slot.error = exc
        try:
            self.envs.ewrite(work)
            self.commits += 1
            self.carried += len(batch)
        except BaseException as exc:         # the commit failed: every trace in it did
            for slot in batch:
                slot.result, slot.error = None, exc
        for slot in batch:
            slot.done.set()
