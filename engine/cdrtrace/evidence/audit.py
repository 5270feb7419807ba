"""The audit log: append-only, chained and keyed, in the store; checkpoints outside it.

Each entry holds its sequence number, time, the declared actor and the operating-system
user, the action and its details, the MAC of the entry before it and its own MAC:
HMAC-SHA256, under the store's audit key, over the previous MAC and the entry's
canonical JSON. The key lives outside the store directory (created by `init`, readable
only by the service user), so whoever can rewrite the store's files but not read the
key cannot forge an entry, re-chain the log without some entries, or rewrite the head
to hide a cut tail. A checkpoint (the head's sequence number and MAC, and the time,
itself MAC'd) is appended to a file or log outside the store; verifying against the
checkpoints proves the log still extends each of them, which catches a wipe or a
truncation even by someone holding the key. A store created before keys existed keeps
an unkeyed SHA-256 chain (its config names no key).
"""
from __future__ import annotations

import grp
import hashlib
import hmac
import json
import os
import pwd
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AccessError, AuditError, StoreError
from ..store.environments import Environments

GENESIS = "0" * 64
FIELDS = ("seq", "at_us", "actor", "action", "details", "prev", "hash")


def _key(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


def mac(prev: str, body: dict, key: bytes | None) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    data = (prev + canonical).encode("utf-8", "surrogateescape")
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def read_key(path: str | os.PathLike) -> bytes:
    try:
        text = Path(path).read_text().strip()
        return bytes.fromhex(text)
    except (OSError, ValueError) as exc:
        raise AuditError(f"the audit key {path} cannot be read ({exc}): audited acts are "
                         "refused until it can") from None


def os_user() -> str:
    """Who the process runs as, by its effective uid (not the spoofable $USER)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def append(txn: Any, db: Any, meta_db: Any, actor: str, action: str,
           key: bytes | None = None, **details: Any) -> dict:
    """Add one entry inside the caller's write transaction (it commits with the act):
    the declared actor and the operating-system user the process runs as."""
    seq, prev = _head(txn.get(b"audit_head", db=meta_db)) or (0, GENESIS)
    body = {"seq": seq + 1, "at_us": time.time_ns() // 1000, "actor": actor,
            "os_user": os_user(), "action": action, "details": details, "prev": prev}
    entry = {**body, "hash": mac(prev, body, key)}
    txn.put(_key(seq + 1), json.dumps(entry, sort_keys=True).encode(), db=db, append=True)
    txn.put(b"audit_head", json.dumps({"seq": seq + 1, "hash": entry["hash"]}).encode(),
            db=meta_db)
    return entry


def _head(value: bytes | None) -> tuple[int, str] | None:
    if value is None:
        return None
    try:
        head = json.loads(value)
        return int(head["seq"]), str(head["hash"])
    except (ValueError, KeyError, TypeError):
        raise AuditError("audit log broken at its end: the head is not readable") from None


def page(after: Any, limit: Any, what: str, after_is: type = int) -> None:
    """A page's bounds as the Python API takes them: after (None, or an after_is: a
    number, or a trace id's text) and limit (None: all; else a whole number, 1 or more);
    StoreError saying which is wrong."""
    negative = isinstance(after, int) and after < 0
    if after is not None and (isinstance(after, bool) or not isinstance(after, after_is)
                              or negative):
        mark = "an entry number, 0 or more" if after_is is int else "a trace id"
        raise StoreError(f"a page of {what} starts after {mark} (not {after!r})")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise StoreError(f"a page of {what} holds a whole number of them, 1 or more "
                         f"(not {limit!r})")


def entries(txn: Any, db: Any, first: int = 1):
    """Every entry from number first in key order, as stored (AuditError for one that is
    not JSON)."""
    cursor = txn.cursor(db)
    if first >= 1 << 64 or not cursor.set_range(max(first, 0).to_bytes(8, "big")):
        return
    for key, value in cursor:
        seq = int.from_bytes(key, "big")
        try:
            entry = json.loads(value)
        except ValueError:
            raise AuditError(f"audit log broken at entry {seq}: it is not readable") from None
        if not isinstance(entry, dict) or any(f not in entry for f in FIELDS):
            raise AuditError(f"audit log broken at entry {seq}: it lacks its fields")
        yield seq, entry


def verify(txn: Any, db: Any, meta_db: Any, key: bytes | None = None) -> int:
    """Check the whole chain; return the number of entries or raise AuditError saying where."""
    prev, expected = GENESIS, 1
    for seq, entry in entries(txn, db):
        if seq != expected or entry.get("seq") != expected:
            raise AuditError(f"audit log broken at entry {expected}: found entry "
                             f"{entry.get('seq')} under key {seq} (deleted, inserted or reordered)")
        body = {k: v for k, v in entry.items() if k != "hash"}
        if entry.get("prev") != prev:
            raise AuditError(f"audit log broken at entry {seq}: it does not follow entry {seq - 1}")
        if not hmac.compare_digest(mac(prev, body, key), str(entry.get("hash"))):
            raise AuditError(f"audit log broken at entry {seq}: its content was altered "
                             "(or it was written without the store's audit key)")
        prev, expected = entry["hash"], expected + 1
    head = _head(txn.get(b"audit_head", db=meta_db))
    count = expected - 1
    if head:
        if head != (count, prev):
            raise AuditError(f"audit log broken at its end: the head says entry {head[0]}, "
                             f"the log ends at entry {count}")
    elif count:
        raise AuditError("audit log has entries but no head")
    return count


def checkpoint_line(seq: int, head: str, at_us: int, store: str, key: bytes | None) -> dict:
    """A checkpoint: the head's sequence number and MAC, when, which store; MAC'd."""
    body = {"seq": seq, "hash": head, "at_us": at_us, "store": store}
    return {**body, "mac": mac("checkpoint", body, key)}


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


def os_groups() -> set[str]:
    """The names of the groups the process acts with."""
    names = set()
    for gid in {os.getegid(), *os.getgroups()}:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.add(str(gid))
    return names


class AuditLog:
    """The audit log of one store's evidence environment, and who may act: with roles
    configured ([roles] in the store's own cdrtrace.toml), an act needs the operating-
    system user, or one of its groups, to be listed for the act's role."""

    def __init__(self, envs: Environments, roles: dict[str, tuple[str, ...]] | None = None):
        self.envs = envs
        self.db = envs.db
        self.key_file = envs.config.get("audit_key_file")
        self.roles = roles

    def actor(self, who: str | None, what: str, role: str = "analyst",
              os_role: str | None = None) -> str:
        """The declared identity an act is audited under (see actor()), once the process's
        operating-system user is found in the act's role (os_role, else role)."""
        name = actor(who, what, role)
        needed = os_role or role
        if self.roles is not None:
            allowed = self.roles.get(needed, ())
            user = os_user()
            if user not in allowed and not any(f"@{g}" in allowed for g in os_groups()):
                raise AccessError(f"{what}: the operating-system user {user!r} is not in the "
                                  f"{needed} role ([roles] {needed} in the store's cdrtrace.toml)")
        return name

    @property
    def key(self) -> bytes | None:
        """The store's audit key (read at each use: it may be rotated out of band)."""
        return read_key(self.key_file) if self.key_file else None

    def add(self, txn: Any, actor: str, action: str, **details: Any) -> dict:
        """Inside the evidence transaction of the act: it commits with it."""
        return append(txn, self.db["audit"], self.db["emeta"], actor, action, self.key, **details)

    def add_now(self, actor: str, action: str, **details: Any) -> dict:
        """An act that writes nothing else (a read of identifying data), in its own commit."""
        return self.envs.ewrite(lambda txn: self.add(txn, actor, action, **details))

    def verify(self, checkpoints: list[dict] | None = None) -> int:
        """Check the chain and, given checkpoints, that the log still extends each."""
        key = self.key
        with self.envs.eread() as txn:
            count = verify(txn, self.db["audit"], self.db["emeta"], key)
            for n, point in enumerate(checkpoints or (), 1):
                self._check(txn, n, point, count, key)
        return count

    def _check(self, txn: Any, n: int, point: dict, count: int, key: bytes | None) -> None:
        try:
            body = {f: point[f] for f in ("seq", "hash", "at_us", "store")}
            seq = int(body["seq"])
        except (KeyError, TypeError, ValueError):
            raise AuditError(f"checkpoint {n} is not readable") from None
        expected = checkpoint_line(seq, str(body["hash"]), body["at_us"], str(body["store"]), key)
        if not hmac.compare_digest(expected["mac"], str(point.get("mac"))):
            raise AuditError(f"checkpoint {n} does not verify under the store's audit key")
        if seq > count:
            raise AuditError(f"audit log broken: checkpoint {n} (entry {seq}) is past its end, "
                             f"entry {count}: entries were removed (wiped or truncated)")
        stored = txn.get(_key(seq), db=self.db["audit"]) if seq else None
        if seq and (stored is None or json.loads(stored).get("hash") != body["hash"]):
            raise AuditError(f"audit log broken: entry {seq} is not the one checkpoint {n} "
                             "recorded (the log was rewritten)")

    def checkpoint(self) -> dict:
        """The head as a checkpoint to keep outside the store, MAC'd under the key."""
        key = self.key
        with self.envs.eread() as txn:
            head = _head(txn.get(b"audit_head", db=self.db["emeta"])) or (0, GENESIS)
        return checkpoint_line(head[0], head[1], time.time_ns() // 1000, str(self.envs.path), key)

    def entries(self) -> list[dict]:
        with self.envs.eread() as txn:
            return [entry for _, entry in entries(txn, self.db["audit"])]

    def matching(self, keep: Callable[[dict], bool]) -> list[dict]:
        """The entries keep() accepts, in order: the log is read through once, holding
        only those (it grows with every identifying read, for years)."""
        with self.envs.eread() as txn:
            return [entry for _, entry in entries(txn, self.db["audit"]) if keep(entry)]

    def export(self, operator: str, after: int = 0, limit: int | None = None) -> list[dict]:
        """Every entry, for an operator, or a page: those after entry number `after`, at
        most `limit`. The export itself is audited, in the same transaction, as the entry
        after the last one."""
        who = self.actor(operator, "exporting the audit log", "operator")
        page(after, limit, "audit entries")

        def work(txn: Any) -> list[dict]:
            found: list[dict] = []
            for _, entry in entries(txn, self.db["audit"], after + 1):
                if limit is not None and len(found) >= limit:
                    break
                found.append(entry)
            self.add(txn, who, "audit_export", entries=len(found),
                     **({"after": after} if after else {}))
            return found
        return self.envs.ewrite(work)
