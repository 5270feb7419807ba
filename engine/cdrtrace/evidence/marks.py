"""A line's marks in `by_line`, beside its calls' entries (keys of 8 bytes, the line's):

- key + TRACE_MARK + the trace's number -> b"": each trace of the line, in trace order;
- key + CALL_MARK + the call's id -> the id of the trace that named the call (`success`).
  A second trace of that call is `already_traced`.

A switch reuses its call ids (CUCM's are unique "at least for some days"): a mark whose
trace named a call that started more than CALL_SPAN_US from this one is another call's,
as the index holds them apart (store.index)."""
from __future__ import annotations

import json
from typing import Any

from ..store.index import CALL_SPAN_US

TRACE_MARK = b"t"
CALL_MARK = b"c"


def traced_as(txn: Any, db: dict, key: bytes, call_id: int, start_us: int) -> bytes | None:
    """The id of the trace that named this call of the line (key), or None. A mark
    whose trace record is gone (never: purged with it) counts as this call's."""
    original = txn.get(key + CALL_MARK + int(call_id).to_bytes(8, "big"), db=db["by_line"])
    if original is None:
        return None
    held = txn.get(int(original[1:]).to_bytes(8, "big"), db=db["traces"])
    if held is not None and abs(json.loads(held)["call"]["start_us"] - start_us) > CALL_SPAN_US:
        return None
    return original
