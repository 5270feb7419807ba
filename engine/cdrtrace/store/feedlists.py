"""Lists of feeds kept in the index's meta under a key: each feed's id in 2 bytes,
big-endian, ascending (lookup.LOCAL_FEEDS, hunts.HUNT_FEEDS)."""
from __future__ import annotations

from typing import Any


def read(txn: Any, meta_db: Any, key: bytes) -> list[int]:
    """The feeds listed under key."""
    held = bytes(txn.get(key, b"", db=meta_db))
    return [int.from_bytes(held[i:i + 2], "big") for i in range(0, len(held), 2)]


def add(txn: Any, meta_db: Any, key: bytes, feed: int) -> None:
    """List a feed under key, in an index write (once)."""
    feeds = read(txn, meta_db, key)
    if feed not in feeds:
        txn.put(key, b"".join(f.to_bytes(2, "big") for f in sorted([*feeds, feed])), db=meta_db)
