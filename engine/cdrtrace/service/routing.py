"""Forwarding a trace to the shard that holds its line (cdrtrace.toml [shard.peers];
docs/operations.md, "Shards and replicas").

A switch may reach any shard's service. A line this store's shard does not hold is traced
by the shard that does: the activation time is fixed here, when the customer dialled,
and the trace is posted to that shard's replicas in turn; one that is not ready answers
503 and the next is tried. The answer is the owning replica's, which records the
evidence (under the router's token); this store records nothing. A forwarded trace is
never forwarded again, so two maps that disagree cannot bounce a trace between them.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import logging
import queue
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from .. import api
from ..errors import CdrTraceError, NotReadyError, TraceError, WrongShardError
from ..evidence.outcomes import Outcome, TraceResult
from ..parsing import timezones

log = logging.getLogger("cdrtrace.service")
FORWARDED = "X-Cdrtrace-Forwarded"      # the header a forwarded trace carries
TIMEOUT = 5.0                            # seconds a replica is given, beyond the trace's wait


class Router:
    """Traces through this store, or forwarded to the shard that holds the line."""

    def __init__(self, store: Any):
        self.store = store
        self.tokens: dict[str, str] = {}
        for peer in store.shard.peers if store.shard is not None else ():
            try:
                with open(peer.token_file, encoding="utf-8") as f:
                    self.tokens[peer.name] = f.read().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise CdrTraceError(f"shard.peers.{peer.name}: cannot read its token_file "
                                    f"{peer.token_file}: {exc}") from None
        self.forwarded = 0                # traces this service forwarded: measured
        self.idle: dict[str, queue.LifoQueue] = {}   # replica -> kept-alive connections

    async def trace(self, line: str, at: str | int | None = None, wait: float = 0.0,
                    by: str | None = None, forward: bool = True,
                    feed: str | None = None) -> TraceResult:
        try:
            return await self.store.trace_async(line, at=at, wait=wait, by=by, feed=feed)
        except WrongShardError as exc:
            if not forward or exc.peer is None:
                raise
            peer = exc.peer
        # the instant in UTC: a time without an offset is read in this store's zone, which
        # the peer's need not be (read there, it could name another call)
        when = timezones.format_utc(
            at if isinstance(at, int) else timezones.parse_instant(at, self.store.config["zone"])
            if isinstance(at, str) and at else time.time_ns() // 1000)
        self.forwarded += 1
        return await asyncio.to_thread(self._post, peer, line, when, wait, feed)

    def trace_then(self, line: str, at: str | None,
                   then: Callable[[TraceResult | None, BaseException | None], None],
                   by: str | None = None, forward: bool = True, feed: str | None = None) -> bool:
        """trace() answered on the shared commit's thread (api.trace_then; by: who asked):
        False, with nothing done, for a line another shard holds, which trace() forwards;
        unless forward is False (the trace was forwarded here): then its WrongShardError."""
        try:
            api.trace_then(self.store, line, at, then, by, feed)
        except WrongShardError as exc:
            if not forward or exc.peer is None:
                raise
            return False
        return True

    def _post(self, peer: Any, line: str, at: str, wait: float,
              feed: str | None = None) -> TraceResult:
        body = json.dumps({"line": line, "at": at, "wait": wait,
                           **({"feed": feed} if feed is not None else {})}).encode()
        headers = {"Authorization": f"Bearer {self.tokens[peer.name]}",
                   "Content-Type": "application/json", FORWARDED: "1"}
        tried = []
        for replica in peer.replicas:
            try:
                status, answer = self._exchange(replica, body, headers, TIMEOUT + wait)
            except (OSError, http.client.HTTPException) as exc:
                tried.append(f"{replica}: {exc or type(exc).__name__}")
                continue
            if status == 503:                              # not ready: the next replica
                tried.append(f"{replica}: not ready")
                continue
            try:
                got = json.loads(answer)
            except ValueError:
                got = {}
            if status != 200:
                detail = str(got.get("error") or got.get("detail") or "")
                raise TraceError(f"shard {peer.name} ({replica}) refused the trace: "
                                 f"{status} {detail}")
            log.info("routing: a trace for shard %s answered by %s", peer.name, replica)
            return TraceResult(got["trace_id"], got["line"], Outcome(got["outcome"]),
                               got["activated_at"], got["call_time"])
        raise NotReadyError(f"no replica of shard {peer.name} answered ({'; '.join(tried)})")

    def _exchange(self, replica: str, body: bytes, headers: dict,
                  timeout: float) -> tuple[int, bytes]:
        """POST /v1/trace over a kept-alive connection to the replica, or a new one if none
        is idle or the idle one was closed meanwhile: (status, body)."""
        pool = self.idle.setdefault(replica, queue.LifoQueue(maxsize=64))
        try:
            kept = pool.get_nowait()
        except queue.Empty:
            kept = None
        for connection in ([kept] if kept is not None else []) + [None]:
            fresh = connection is None
            if connection is None:
                url = urllib.parse.urlsplit(replica)
                kind = (http.client.HTTPSConnection if url.scheme == "https"
                        else http.client.HTTPConnection)
                connection = kind(url.hostname or "127.0.0.1", url.port, timeout=timeout)
            try:
                connection.timeout = timeout
                connection.request("POST", "/v1/trace", body, headers)
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                if fresh:
                    raise
                continue                  # the kept one had been closed: a new one
            try:
                pool.put_nowait(connection)
            except queue.Full:
                connection.close()
            return response.status, answer
        raise AssertionError("unreachable: a fresh connection answers or raises")

