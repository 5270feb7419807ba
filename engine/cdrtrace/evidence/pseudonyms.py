"""Pseudonyms: the customer knows each origin of their traces as "Caller A", "Caller B",
... in the order a successful trace first named it. A label is assigned once per line
and stored (line + "o" + origin -> its number, line + "#" -> how many the line has), so it
never shifts, not even after a purge removes the traces that first named it; a case
opened for "Caller A" names the origin the customer saw under that label. A format 3
store keeps them in `by_line`, beside the line's traces (a trace then changes one page
of the line's, not two); a format 2 store in a `pseudonyms` sub-database of its own.
Either way the store's `db["pseudonyms"]` is where they are."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ORIGIN, COUNT = b"o", b"#"


def label(number: int) -> str:
    """The label of the number-th origin (0: Caller A; 26: Caller AA; ...)."""
    name, n = "", number
    while True:
        name = chr(ord("A") + n % 26) + name
        n = n // 26 - 1
        if n < 0:
            return f"Caller {name}"


def assign(txn: Any, db: Any, line_key: bytes, origin: str) -> None:
    """Inside the trace's evidence transaction: give the origin the line's next label if
    it has none (of_line reads them)."""
    key = line_key + ORIGIN + origin.encode()
    if txn.get(key, db=db) is not None:
        return
    number = int(txn.get(line_key + COUNT, b"0", db=db))
    txn.put(key, str(number).encode(), db=db)
    txn.put(line_key + COUNT, str(number + 1).encode(), db=db)


def of_line(txn: Any, db: Any, line_key: bytes, records: Iterable[dict]) -> dict[str, str]:
    """origin -> label for a line. Origins of successful traces recorded before labels
    were stored (an older store) get the next labels, in the order of their traces."""
    found: dict[str, int] = {}
    cursor = txn.cursor(db)
    prefix = line_key + ORIGIN
    if cursor.set_range(prefix):
        for key, value in cursor:
            if not key.startswith(prefix):
                break
            found[bytes(key[len(prefix):]).decode()] = int(value)
    following = max(found.values(), default=-1) + 1
    for r in records:
        if r["outcome"] == "success" and r["call"]["calling"] not in found:
            found[r["call"]["calling"]] = following
            following += 1
    return {origin: label(n) for origin, n in sorted(found.items(), key=lambda kv: kv[1])}
