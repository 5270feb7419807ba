"""Pseudonyms: the customer knows each origin of their traces as "Caller A", "Caller B",
... in the order a successful trace first named it. A label is assigned once per line
and stored (line + "o" + origin -> its number, line + "#" -> how many the line has), so it
never shifts, not even after a purge removes the traces that first named it; a case
opened for "Caller A" names the origin the customer saw under that label. A format 3
store keeps them in `by_line`, beside the line's traces (a trace then changes one page
of the line's, not two); a format 2 store in a `pseudonyms` sub-database of its own.
Either way the store's `db["pseudonyms"]` is where they are.

An origin is a caller as R8 counts it (docs/trace-rules.md, "Who called"), and a trace
records the one its call counts toward (origin_key). An E.164 number names one caller the
world over, whichever switch's record named it. A caller a switch numbers itself (an
extension, a SIP user) is that switch's alone: feed 3's 1002 is "1002 (feed 3)", and
another feed's 1002 another origin. Where the feed names several tenants (a switch that
hosts several customers' PBXs, each with its own 1002), the records cannot tell one
tenant's 1002 from another's, and the call is an origin of its own: two people are never
counted as one. A record written before origins were recorded counts toward its caller's
text, as it did then (origin_of)."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

ORIGIN, COUNT = b"o", b"#"
_SCOPED = re.compile(r"(.*) \(feed (\d+)(, call [0-9a-f]+ at [^)]+)?\)", re.DOTALL)


def origin_key(call: dict, local: bool) -> str | None:
    """The origin a call's trace counts toward: None for a call that delivered no caller.
    local: its caller is one the switch numbers itself (store.lookup.local_line of its
    packed number); the call's view says, by `caller_tenants_shared`, that its feed
    names several tenants."""
    calling = call["calling"]
    if calling is None or not local:
        return calling
    if call.get("caller_tenants_shared"):
        # a call: its id and its start, as a switch reuses ids
        return f"{calling} (feed {call['feed']}, call {call['call_id']} at {call['start']})"
    return f"{calling} (feed {call['feed']})"


def origin_of(record: dict) -> str | None:
    """The origin a trace record counts toward: the one it recorded, or for a record
    written before origins were (it has no `origin`), its caller's text."""
    if "origin" in record:
        return record["origin"]
    call = record.get("call")
    return None if call is None else call["calling"]


def caller_of(origin: str) -> tuple[str, int | None, bool]:
    """An origin's caller as written, the feed it is scoped to (None: E.164, or an origin
    recorded before callers were scoped), and whether it is one call's alone."""
    scoped = _SCOPED.fullmatch(origin)
    return (scoped[1], int(scoped[2]), bool(scoped[3])) if scoped else (origin, None, False)


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
        if r["outcome"] == "success" and (origin := origin_of(r)) not in found:
            found[str(origin)] = following
            following += 1
    return {origin: label(n) for origin, n in sorted(found.items(), key=lambda kv: kv[1])}
