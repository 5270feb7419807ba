"""The audit log: append-only and hash-chained, in the store.

Each entry holds its sequence number, time, actor, action and details, the hash of the
entry before it and its own hash (SHA-256 over the previous hash and the entry's
canonical JSON). The store's meta keeps the head (last sequence number and hash), so
verify() detects an entry altered, deleted, inserted or reordered, and a truncated tail.
Whoever can rewrite the whole store file can rewrite the chain too; export the log (or
its head) to another system to anchor it.
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import time
import unicodedata
from typing import Any

from ..errors import AccessError, AuditError
from ..store.environments import Environments

GENESIS = "0" * 64


def _key(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


def _digest(prev: str, body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev + canonical).encode("utf-8")).hexdigest()


def os_user() -> str:
    """Who the process runs as, by its effective uid (not the spoofable $USER)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def append(txn, db, meta_db, actor: str, action: str, **details) -> dict:
    """Add one entry inside the caller's write transaction (it commits with the act):
    the declared actor and the operating-system user the process runs as."""
    head = txn.get(b"audit_head", db=meta_db)
    seq, prev = (json.loads(head)["seq"], json.loads(head)["hash"]) if head else (0, GENESIS)
    body = {"seq": seq + 1, "at_us": time.time_ns() // 1000, "actor": actor,
            "os_user": os_user(), "action": action, "details": details, "prev": prev}
    entry = {**body, "hash": _digest(prev, body)}
    txn.put(_key(seq + 1), json.dumps(entry, sort_keys=True).encode(), db=db, append=True)
    txn.put(b"audit_head", json.dumps({"seq": seq + 1, "hash": entry["hash"]}).encode(),
            db=meta_db)
    return entry


def entries(txn, db):
    """Every entry in key order, as stored."""
    for key, value in txn.cursor(db):
        yield int.from_bytes(key, "big"), json.loads(value)


def verify(txn, db, meta_db) -> int:
    """Check the whole chain; return the number of entries or raise AuditError saying where."""
    prev, expected = GENESIS, 1
    for key, entry in entries(txn, db):
        if key != expected or entry.get("seq") != expected:
            raise AuditError(f"audit log broken at entry {expected}: found entry "
                             f"{entry.get('seq')} under key {key} (deleted, inserted or reordered)")
        body = {k: v for k, v in entry.items() if k != "hash"}
        if entry.get("prev") != prev:
            raise AuditError(f"audit log broken at entry {key}: it does not follow entry {key - 1}")
        if _digest(prev, body) != entry.get("hash"):
            raise AuditError(f"audit log broken at entry {key}: its content was altered")
        prev, expected = entry["hash"], expected + 1
    head = txn.get(b"audit_head", db=meta_db)
    count = expected - 1
    if head:
        head = json.loads(head)
        if head["seq"] != count or head["hash"] != prev:
            raise AuditError(f"audit log broken at its end: the head says entry {head['seq']}, "
                             f"the log ends at entry {count}")
    elif count:
        raise AuditError("audit log has entries but no head")
    return count


UNPRINTABLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}   # controls, format, line separators


def actor(who: str | None, what: str, role: str = "analyst") -> str:
    """The identity an act is audited under; AccessError if there is none, or if it is
    not a printable name on one line (a newline or an invisible character could make
    two audit entries look alike)."""
    text = "" if who is None else str(who)
    if any(unicodedata.category(c) in UNPRINTABLE for c in text):
        raise AccessError(f"{what} needs an {role} identity that is printable, on one line: "
                          f"{text!r}")
    if not text.strip():
        raise AccessError(f"{what} needs an {role} identity")
    return text.strip()


class AuditLog:
    """The audit log of one store's evidence environment."""

    def __init__(self, envs: Environments):
        self.envs = envs
        self.db = envs.db

    def add(self, txn: Any, actor: str, action: str, **details: Any) -> dict:
        """Inside the evidence transaction of the act: it commits with it."""
        return append(txn, self.db["audit"], self.db["emeta"], actor, action, **details)

    def add_now(self, actor: str, action: str, **details: Any) -> dict:
        """An act that writes nothing else (a read of identifying data), in its own commit."""
        return self.envs.ewrite(lambda txn: self.add(txn, actor, action, **details))

    def verify(self) -> int:
        with self.envs.eread() as txn:
            return verify(txn, self.db["audit"], self.db["emeta"])

    def entries(self) -> list[dict]:
        with self.envs.eread() as txn:
            return [entry for _, entry in entries(txn, self.db["audit"])]

    def export(self, operator: str) -> list[dict]:
        """Every entry, for an operator; the export itself is audited, in the same
        transaction, as the entry after the last one exported."""
        who = actor(operator, "exporting the audit log", "operator")

        def work(txn: Any) -> list[dict]:
            found = [entry for _, entry in entries(txn, self.db["audit"])]
            self.add(txn, who, "audit_export", entries=len(found))
            return found
        return self.envs.ewrite(work)
