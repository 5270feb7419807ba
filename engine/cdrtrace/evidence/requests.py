"""Requests for action: once an origin reaches the threshold (or the CIC waived it), the
customer may ask the carrier to act. The request is recorded with its time and queued
for the Call Identification Center, which opens a case from it or closes it with a
reason; the customer sees where it stands, never the caller.

`requests` (evidence environment): 8-byte request number -> the request (JSON: line,
origin as its E.164 text, the customer's label for it, times, state, case or reason,
and on a line its switch numbers itself, the feed of the switch whose customer asked).
`case_lines`: the line's text, NUL, C or R, and the case's or request's 8-byte number ->
nothing: a line's cases and requests found without reading the others' (a customer's
status reads them).
"""
from __future__ import annotations

import json
import time
from typing import Any

from ..errors import CaseError, UnknownRequestError
from ..store.environments import Environments
from .audit import AuditLog
from .traces import id_number

STATES = ("queued", "case_opened", "closed")


def case_line_key(line_text: str, kind: bytes, number: bytes = b"") -> bytes:
    """A case_lines key: the line's text, NUL, C (a case) or R (a request), its number."""
    return line_text.encode() + b"\0" + kind + number


def of_line(txn: Any, db: Any, line_text: str, kind: bytes, table: Any) -> list[dict]:
    """A line's cases (kind C, table the cases) or requests (R), in number order."""
    prefix = case_line_key(line_text, kind)
    found = []
    cursor = txn.cursor(db)
    if cursor.set_range(prefix):
        for key, _ in cursor:
            if not key.startswith(prefix):
                break
            value = txn.get(bytes(key[len(prefix):]), db=table)
            if value is not None:
                found.append(json.loads(value))
    return found


def index_lines(envs: Environments) -> None:
    """case_lines made again from the cases and requests when it does not hold one key for
    each (a store from before it, or written since by a cdrtrace without it)."""
    db = envs.db

    def count(txn: Any) -> tuple[int, int]:
        return (txn.stat(db["case_lines"])["entries"],
                txn.stat(db["cases"])["entries"] + txn.stat(db["requests"])["entries"])
    with envs.eread() as txn:
        held, wanted = count(txn)
    if held == wanted:
        return

    def work(txn: Any) -> None:
        txn.drop(db["case_lines"], delete=False)
        for kind, table in ((b"C", db["cases"]), (b"R", db["requests"])):
            for key, value in txn.cursor(table):
                txn.put(case_line_key(json.loads(value)["line"], kind, bytes(key)), b"",
                        db=db["case_lines"])
    envs.ewrite(work)


def request_id(number: int) -> str:
    return f"R{number:06d}"


def numbered(given: Any, letter: str) -> bytes | None:
    """The key of the case or request whose id (C000001, R000001) is given; None for text
    that is no such id."""
    number = id_number(given, letter, 6)
    return None if number is None else number.to_bytes(8, "big")


class Requests:
    """The requests for action of one store."""

    def __init__(self, envs: Environments, audit: AuditLog):
        self.envs, self.audit = envs, audit
        self.db = envs.db
        index_lines(envs)

    def add(self, line_text: str, origin: str, label: str, requested_by: str,
            feed: int | None = None) -> dict:
        """Record a request (the caller checks it is allowed); audited. feed: whose
        switch's customer made it, on a line switches number alike (an extension)."""
        def work(txn: Any) -> dict:
            for known in of_line(txn, self.db["case_lines"], line_text, b"R", self.db["requests"]):
                if (known["origin"], known["state"], known.get("feed")) == (origin, "queued", feed):
                    raise CaseError(f"{label} of {line_text} already has a request waiting "
                                    f"({known['request_id']})")
            cursor = txn.cursor(self.db["requests"])
            number = int.from_bytes(cursor.key(), "big") + 1 if cursor.last() else 1
            request = {"request_id": request_id(number), "line": line_text, "origin": origin,
                       "label": label, "requested_us": time.time_ns() // 1000,
                       "requested_by": requested_by, "state": "queued", "case_id": None,
                       "reason": None, "updated_us": None, "feed": feed}
            cursor.put(number.to_bytes(8, "big"), json.dumps(request).encode(), append=True)
            txn.put(case_line_key(line_text, b"R", number.to_bytes(8, "big")), b"",
                    db=self.db["case_lines"])
            self.audit.add(txn, requested_by, "action_requested",
                           request_id=request["request_id"], line=line_text, origin=label)
            return request
        return self.envs.ewrite(work)

    def all(self) -> list[dict]:
        with self.envs.eread() as txn:
            return [json.loads(v) for _, v in txn.cursor(self.db["requests"])]

    def of_line(self, line_text: str) -> list[dict]:
        with self.envs.eread() as txn:
            return of_line(txn, self.db["case_lines"], line_text, b"R", self.db["requests"])

    def feed_of(self, rid: str) -> int | None:
        """The feed of the customer who made a request (None: an E.164 line's, or one
        made before requests were kept by feed); UnknownRequestError if there is none."""
        key = numbered(rid, "R")
        with self.envs.eread() as txn:
            value = None if key is None else txn.get(key, db=self.db["requests"])
        if value is None:
            raise UnknownRequestError(f"no request {rid}")
        return json.loads(value).get("feed")

    def settle(self, rid: str, *, who: str, reason: str) -> dict:
        """A queued request closed with a reason, no case opened; audited."""
        if reason is None or not reason.strip():
            raise CaseError("settle a request with a case or with a reason to close it")
        return self.envs.ewrite(lambda txn: self.settle_in(txn, rid, who=who, reason=reason))

    def settle_in(self, txn: Any, rid: str, *, who: str, case: dict | None = None,
                  reason: str | None = None) -> dict:
        """Inside a write transaction: a queued request turned into the case (of the same
        line and origin, or refused), or closed with a reason; audited."""
        key = numbered(rid, "R")
        value = None if key is None else txn.get(key, db=self.db["requests"])
        if key is None or value is None:
            raise UnknownRequestError(f"no request {rid}")
        request = json.loads(value)
        if request["state"] != "queued":
            raise CaseError(f"request {rid} is already {request['state']}")
        if case is not None and request["line"] != case["line"]:
            raise CaseError(f"request {rid} is for line {request['line']}, not the "
                            f"case's {case['line']}")
        if case is not None and request["origin"] != case["origin"]:
            raise CaseError(f"request {rid} is for {request['label']}, not the case's origin")
        if case is not None and request.get("feed") != case["feed"]:
            raise CaseError(f"request {rid} is another switch's customer's than the case's")
        request.update(state="case_opened" if case else "closed",
                       case_id=case["case_id"] if case else None,
                       reason=reason.strip() if reason else None,
                       updated_us=time.time_ns() // 1000)
        txn.put(key, json.dumps(request).encode(), db=self.db["requests"])
        self.audit.add(txn, who, "request_settled", request_id=rid,
                       state=request["state"], case_id=request["case_id"])
        return request
