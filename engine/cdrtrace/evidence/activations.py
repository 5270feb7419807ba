"""Traces a switch recorded itself: *57s and malicious-call-id invocations found in its CDRs.

Ingest queues them (Catalog.queue_activations: `activations_due` in the index
environment, inside the commit of their records); once their calls are in the index they are traced by the normal rules,
each exactly once: the trace's evidence commits with the activation's key
(`activations` in the evidence environment), so a crash between the two steps neither
loses nor doubles one.
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import TraceError
from ..store import folds, index
from .outcomes import TraceResult
from .traces import Tracer, result_of


def run(tracer: Tracer) -> list[TraceResult]:
    """Trace every queued activation, once."""
    envs, db = tracer.envs, tracer.db
    with envs.read() as txn:
        due = [(bytes(k), json.loads(v)) for k, v in txn.cursor(db["activations_due"])]
    results = []
    for key, where in due:
        feed, line, at_us = (int.from_bytes(key[:2], "big"), int.from_bytes(key[2:10], "big"),
                             int.from_bytes(key[10:], "big"))

        def work(txn: Any, key: bytes = key, where: dict = where, feed: int = feed,
                 line: int = line, at_us: int = at_us) -> dict | None:
            if txn.get(key, db=db["activations"]) is not None:
                return None
            by = {"switch_record": True, "feed": feed, **where}
            # the repeated hours of the zone the switch wrote the time in (UTC's: none, for
            # an instant); one queued before the zone was kept: every zone the store noted
            zone = by.pop("zone", True)
            repeated = None if zone is True else folds.of_zone(zone or "UTC")
            with envs.read() as index_txn:
                by["source"] = tracer.catalog.source_name(index_txn, where["source"])
                try:
                    record = tracer.record(txn, index_txn, index.line_key(line), line, at_us,
                                           activated_by=by, own=(where["offset"], where["source"]),
                                           feed=feed, activation_folds=repeated)
                except TraceError as exc:     # its call is no longer held
                    record = None
                    by["error"] = str(exc)
            txn.put(key, json.dumps({"trace_id": record["trace_id"] if record else None,
                                     **by}).encode(), db=db["activations"])
            return record
        record = envs.ewrite(work)
        if record is not None:
            results.append(result_of(record))

    def done(txn: Any) -> None:
        for key, _ in due:
            txn.delete(key, db=db["activations_due"])
    if due:
        envs.write(done)
    return results
