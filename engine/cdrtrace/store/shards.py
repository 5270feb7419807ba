"""A shard's store (cdrtrace.toml [shard]; docs/operations.md, "Shards and replicas"):
which lines it holds, which shard holds the others, and whether it may answer a trace.

A shard's store never answers for a line it does not hold: its index has none of that
line's calls, so it would say "no call" about a call that rang. It refuses instead
(WrongShardError), and the trace service forwards the trace to the shard that holds it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import NotReadyError, WrongShardError
from ..parsing import numbers
from . import index


def holds(prefixes: tuple[str, ...], packed: int) -> bool:
    """Is the packed line one these prefixes admit?"""
    return bool(index.served_mask(np.array([packed], np.uint64), prefixes)[0])


def owner(shard: Any, packed: int) -> Any:
    """The peer shard (cdrtrace.toml [shard.peers.NAME]) that holds a line; None if none."""
    return next((peer for peer in shard.peers if holds(peer.prefixes, packed)), None)


def residue(shard: Any) -> tuple[int, int] | None:
    """(this replica, the shard's replicas) when they share trace evidence: its trace
    numbers are those of its residue class (evidence.replication); else None."""
    return (shard.replica, shard.replicas) if shard is not None and shard.evidence else None


def check(shard: Any, liveness: Any, packed: int) -> None:
    """Refuse a trace this shard's store must not answer: a line it does not hold
    (WrongShardError, naming the shard that does), or any line while it is too far behind
    its feeds (NotReadyError)."""
    if not holds(shard.prefixes, packed):
        peer = owner(shard, packed)
        raise WrongShardError(
            f"line {numbers.format_number(packed)} is not in shard {shard.name} "
            f"({', '.join(shard.prefixes)})"
            + (f"; shard {peer.name} holds it" if peer else "; no shard of the map holds it"),
            peer)
    if (why := liveness.stale(shard)) is not None:
        raise NotReadyError(why)
