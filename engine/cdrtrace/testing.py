"""What a test needs to see or arrange in a store, without reaching into its internals.

For cdrtrace's own tests and for switch software testing against it. Nothing here is
needed in production; the functions that write bypass the rules on purpose (a forged
heartbeat, a tampered audit log) to prove the store notices.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .api import Store
from .parsing.formats import CallBatch
from .store import index
from .store.catalog import Position


def index_items(store: Store) -> list[tuple[bytes, np.ndarray]]:
    """Every (line key, entries) of the last-call index, in line order (a copy)."""
    with store.envs.read() as txn:
        return [(bytes(k), index.decode(bytes(v)))
                for k, v in txn.cursor(store.envs.db["index"])]


def index_bytes(store: Store) -> list[tuple[bytes, bytes]]:
    """The last-call index as stored: (line key, value) pairs."""
    with store.envs.read() as txn:
        return [(bytes(k), bytes(v)) for k, v in txn.cursor(store.envs.db["index"])]


def line_entries(store: Store, line: str) -> np.ndarray:
    """A line's index entries, newest first."""
    return store._lookup.last_calls(index.line_key(store.line(line)))


def write_batch(store: Store, batch: CallBatch, source: int) -> int:
    """Index a parsed batch directly, in one commit (no positions, no counters)."""
    return store.envs.write(lambda txn: index.write_batch(txn, store.envs.db["index"], batch,
                                                          source, store.config["keep"]))


def positions(store: Store, prefix: bytes = b"") -> dict[bytes, Position]:
    """The saved positions of interrupted or live sources, by key."""
    return store.catalog.positions(prefix)


def position(store: Store, key: bytes) -> Position | None:
    return store.catalog.position(key)


def sources(store: Store) -> list[dict]:
    """Every registered source (id, name, size, format, content identity)."""
    return store.catalog.sources()


def ingested(store: Store, identity: str) -> bool:
    """Is a source with this content identity fully ingested?"""
    return store.catalog.source_with_identity(identity) is not None


def feed_id(store: Store, name: str) -> int | None:
    """A feed's number, if it ingested anything."""
    return store.catalog.known_feed_id(name)


def pretend_live_feed(store: Store, feed: int, *, idle_seen_us: int | None = None,
                      delay_us: int = 0, served: tuple = ()) -> None:
    """Heart-beat a live feed that ingests nothing: as a follower that fell behind."""
    store.envs.write(lambda txn: store.liveness.heartbeat(
        txn, feed, idle_seen_us=idle_seen_us, delay_us=delay_us, served=served))


def stall_feed(store: Store, feed: int, seconds: float = 60.0) -> None:
    """Move a live feed's last heartbeat this long back: as its follower died then."""
    def back(txn: Any) -> None:
        key, meta = f"live:{feed}".encode(), store.envs.db["meta"]
        live = json.loads(txn.get(key, db=meta))
        live["heartbeat_us"] -= int(seconds * 1e6)
        txn.put(key, json.dumps(live).encode(), db=meta)
    store.envs.write(back)


def pending_traces(store: Store) -> int:
    """How many traces wait for a live feed."""
    with store.envs.eread() as txn:
        return int(txn.stat(store.envs.db["pending"])["entries"])


@contextlib.contextmanager
def index_writer_held(store: Store) -> Iterator[None]:
    """Hold the index environment's LMDB writer as a long ingest commit does."""
    with store.envs.env.begin(write=True):
        yield


def map_size(store: Store) -> int:
    """The index environment's current map size in bytes."""
    return int(store.envs.env.info()["map_size"])


def set_map_size(store: Store, size: int) -> None:
    """Shrink or grow the index environment's map (it grows by itself when full)."""
    store.envs.env.set_mapsize(size)


def edit_audit_log(store: Store, edit: Callable[[Any, Any, list[tuple[bytes, bytes]]], None]) -> None:
    """Tamper with the audit log: edit(txn, db, entries) runs in an evidence write
    transaction with every (key, value) of the log."""
    db = store.envs.db["audit"]
    with store.envs.eenv.begin(write=True) as txn:
        edit(txn, db, [(bytes(k), bytes(v)) for k, v in txn.cursor(db)])


def audit_head(store: Store) -> dict | None:
    with store.envs.eread() as txn:
        head = txn.get(b"audit_head", db=store.envs.db["emeta"])
    return json.loads(head) if head else None


def commits(store: Store) -> tuple[int, int]:
    """The last committed transaction ids of the index and evidence environments: a read
    that leaves both unchanged wrote nothing."""
    return (int(store.envs.env.info()["last_txnid"]), int(store.envs.eenv.info()["last_txnid"]))


def audit_entries(store: Store) -> list[dict]:
    """The audit log as stored, unaudited (the API's audit_export is audited)."""
    return store._audit.entries()


def forge_audit_log(store: Store, entries: list[dict], head: tuple[int, str] | None) -> None:
    """Replace the whole audit log and its head, as an attacker with write access to the
    store's files would: entry k (from 1) under key k, the head as given (None: none)."""
    audit_db, meta_db = store.envs.db["audit"], store.envs.db["emeta"]
    with store.envs.eenv.begin(write=True) as txn:
        txn.drop(audit_db, delete=False)
        for k, entry in enumerate(entries, 1):
            txn.put(k.to_bytes(8, "big"), json.dumps(entry, sort_keys=True).encode(), db=audit_db)
        if head is None:
            txn.delete(b"audit_head", db=meta_db)
        else:
            txn.put(b"audit_head", json.dumps({"seq": head[0], "hash": head[1]}).encode(),
                    db=meta_db)


def audit_key(store: Store) -> bytes | None:
    """The store's audit key (what an attacker holding it could sign with)."""
    return store._audit.key


@contextlib.contextmanager
def evidence_writer_held(store: Store) -> Iterator[None]:
    """Hold the evidence environment's LMDB writer as a trace's commit does."""
    with store.envs.eenv.begin(write=True):
        yield
