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
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

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

    async def trace(self, line: str, at: str | int | None = None, wait: float = 0.0,
                    by: str | None = None, forward: bool = True) -> TraceResult:
        try:
            return await self.store.trace_async(line, at=at, wait=wait, by=by)
        except WrongShardError as exc:
            if not forward or exc.peer is None:
                raise
            peer = exc.peer
        when = at if isinstance(at, str) and at else timezones.format_utc(
            at if isinstance(at, int) else time.time_ns() // 1000)
        self.forwarded += 1
        return await asyncio.to_thread(self._post, peer, line, when, wait)

    def _post(self, peer: Any, line: str, at: str, wait: float) -> TraceResult:
        body = json.dumps({"line": line, "at": at, "wait": wait}).encode()
        tried = []
        for replica in peer.replicas:
            request = urllib.request.Request(
                replica + "/v1/trace", data=body, method="POST",
                headers={"Authorization": f"Bearer {self.tokens[peer.name]}",
                         "Content-Type": "application/json", FORWARDED: "1"})
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT + wait) as answer:
                    got = json.loads(answer.read())
            except urllib.error.HTTPError as exc:
                if exc.code == 503:                    # not ready: the next replica
                    tried.append(f"{replica}: not ready")
                    continue
                detail = _error_of(exc)
                raise TraceError(f"shard {peer.name} ({replica}) refused the trace: "
                                 f"{exc.code} {detail}") from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                tried.append(f"{replica}: {getattr(exc, 'reason', exc)}")
                continue
            log.info("routing: a trace for shard %s answered by %s", peer.name, replica)
            return TraceResult(got["trace_id"], got["line"], Outcome(got["outcome"]),
                               got["activated_at"], got["call_time"])
        raise NotReadyError(f"no replica of shard {peer.name} answered ({'; '.join(tried)})")


def _error_of(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        return ""
    return str(body.get("error") or body.get("detail") or "")
