"""Requests for action: once an origin reaches the threshold (or the CIC waived it), the
customer may ask the carrier to act. The request is recorded with its time and queued
for the Call Identification Center, which opens a case from it or closes it with a
reason; the customer sees where it stands, never the caller.

`requests` (evidence environment): 8-byte request number -> the request (JSON: line,
origin as its E.164 text, the customer's label for it, times, state, case or reason).
"""
from __future__ import annotations

import json
import time
from typing import Any

from ..errors import CaseError, UnknownRequestError
from ..store.environments import Environments
from .audit import AuditLog

STATES = ("queued", "case_opened", "closed")


def request_id(number: int) -> str:
    return f"R{number:06d}"


def numbered(given: str, letter: str) -> bytes | None:
    """The key of the case or request whose id (letter and 6 or more digits, as they are
    written: C000001, R000001) is given; None for text that is no such id."""
    text = str(given)
    if not (text[1:].isascii() and text[1:].isdigit()):
        return None
    number = int(text[1:])
    return number.to_bytes(8, "big") if f"{letter}{number:06d}" == text and number < 1 << 64 \
        else None


class Requests:
    """The requests for action of one store."""

    def __init__(self, envs: Environments, audit: AuditLog):
        self.envs, self.audit = envs, audit
        self.db = envs.db

    def add(self, line_text: str, origin: str, label: str, requested_by: str) -> dict:
        """Record a request (the caller checks it is allowed); audited."""
        def work(txn: Any) -> dict:
            for _, value in txn.cursor(self.db["requests"]):
                known = json.loads(value)
                if (known["line"], known["origin"], known["state"]) == (line_text, origin, "queued"):
                    raise CaseError(f"{label} of {line_text} already has a request waiting "
                                    f"({known['request_id']})")
            cursor = txn.cursor(self.db["requests"])
            number = int.from_bytes(cursor.key(), "big") + 1 if cursor.last() else 1
            request = {"request_id": request_id(number), "line": line_text, "origin": origin,
                       "label": label, "requested_us": time.time_ns() // 1000,
                       "requested_by": requested_by, "state": "queued", "case_id": None,
                       "reason": None, "updated_us": None}
            cursor.put(number.to_bytes(8, "big"), json.dumps(request).encode(), append=True)
            self.audit.add(txn, requested_by, "action_requested",
                           request_id=request["request_id"], line=line_text, origin=label)
            return request
        return self.envs.ewrite(work)

    def all(self) -> list[dict]:
        with self.envs.eread() as txn:
            return [json.loads(v) for _, v in txn.cursor(self.db["requests"])]

    def of_line(self, line_text: str) -> list[dict]:
        return [r for r in self.all() if r["line"] == line_text]

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
        request.update(state="case_opened" if case else "closed",
                       case_id=case["case_id"] if case else None,
                       reason=reason.strip() if reason else None,
                       updated_us=time.time_ns() // 1000)
        txn.put(key, json.dumps(request).encode(), db=self.db["requests"])
        self.audit.add(txn, who, "request_settled", request_id=rid,
                       state=request["state"], case_id=request["case_id"])
        return request
