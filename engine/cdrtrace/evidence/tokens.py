"""Bearer tokens for the trace service: who a network caller is, and its one role.

A token is shown once, when it is created; the store keeps only its SHA-256 (`tokens`
in the evidence environment: "n:" + name -> {role, hash, created_us, revoked_us,
expires_us}; "h:" + hash -> name). Revoking takes effect at the next request, and so does
a token's expiry, if it was given one. Every creation and revocation is audited; every
use is attributed (the principal is recorded with what the request did).
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import time
from typing import Any

import lmdb

from ..errors import AccessError, CdrTraceError, UnknownTokenError
from ..parsing.timezones import format_utc
from ..store import index
from ..store.environments import Environments
from .audit import AuditLog, os_user

ROLES = {
    "switch": "trace",
    "care": "a customer's status",
    "analyst": "identifying reads, reports, cases",
    "legal": "disclosure under legal authority",
    "operator": "directory import, purge, stats, tokens",
}
PREFIX = "cdt_"
_read_value, _NativeError = index._index.read_value, index._index.NativeLmdbError
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_DAYS = 36_500                # a token's life at most, when it is given one


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling the service: a token's name and role."""
    name: str
    role: str

    def __str__(self) -> str:
        return f"token:{self.name}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class Tokens:
    """The service's tokens in one store."""

    def __init__(self, envs: Environments, audit: AuditLog):
        self.envs, self.audit = envs, audit
        self.db = envs.db
        # see principal(): a token's name and record as read, who it is, when it expires
        self.known: dict[str, tuple[bytes, bytes, Principal, int | None]] = {}
        self._native = index.native_calls()

    def create(self, name: str, role: str, operator: str | None = None,
               token: str | None = None, days: float | None = None) -> str:
        """A new token for name in role: returned once, stored hashed; audited (under the
        operating-system user when no operator is named). token: one made by another
        store, installed here too (a shard's replicas accept the same router token).
        days: its life, after which it is refused as a revoked one is (None: until
        revoked)."""
        who = self.audit.actor(operator or os_user(), "creating a token", "operator")
        if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))
                                 or not 0 < days <= MAX_DAYS):
            raise AccessError(f"a token's life is more than 0 and at most {MAX_DAYS:,} days "
                              f"(not {days!r})")
        if not NAME.fullmatch(str(name)):
            raise AccessError(f"a token's name is 1 to 64 letters, digits, '.', '_' or '-' "
                              f"(not {name!r})")
        if role not in ROLES:
            raise AccessError(f"no role {role!r} (roles: {', '.join(ROLES)})")
        imported = token is not None
        if token is None:
            token = PREFIX + secrets.token_urlsafe(32)
        elif not re.fullmatch(re.escape(PREFIX) + r"[A-Za-z0-9_-]{32,124}", token):
            raise AccessError("not a cdrtrace token (cdt_ and 32 to 124 letters, digits, "
                              "'_' or '-')")
        digest = _digest(token)

        def work(txn: Any) -> str:
            if txn.get(b"n:" + name.encode(), db=self.db["tokens"]) is not None:
                raise AccessError(f"a token named {name!r} exists (revoke it, or pick another name)")
            now = time.time_ns() // 1000
            expires = None if days is None else now + round(days * 86_400_000_000)
            txn.put(b"n:" + name.encode(), json.dumps(
                {"role": role, "hash": digest, "created_us": now, "revoked_us": None,
                 "expires_us": expires}).encode(), db=self.db["tokens"])
            txn.put(b"h:" + digest.encode(), name.encode(), db=self.db["tokens"])
            self.audit.add(txn, who, "token_create", token=name, role=role, imported=imported,
                           **({} if expires is None else {"expires": format_utc(expires)}))
            return token
        return self.envs.ewrite(work)

    def revoke(self, name: str, operator: str | None = None) -> None:
        who = self.audit.actor(operator or os_user(), "revoking a token", "operator")

        def work(txn: Any) -> None:
            value = txn.get(b"n:" + name.encode(), db=self.db["tokens"])
            if value is None:
                raise UnknownTokenError(f"no token named {name!r}")
            record = json.loads(value)
            if record["revoked_us"] is not None:    # its first revocation's time is kept
                raise CdrTraceError(f"the token {name!r} was revoked at "
                                    f"{format_utc(record['revoked_us'])}")
            txn.delete(b"h:" + record["hash"].encode(), db=self.db["tokens"])
            record["revoked_us"] = time.time_ns() // 1000
            txn.put(b"n:" + name.encode(), json.dumps(record).encode(), db=self.db["tokens"])
            self.audit.add(txn, who, "token_revoke", token=name)
        self.envs.ewrite(work)

    def listed(self) -> list[dict]:
        """Every token's name, role and dates (never the token)."""
        with self.envs.eread() as txn:
            cursor = txn.cursor(self.db["tokens"])
            found = []
            if cursor.set_range(b"n:"):
                for key, value in cursor:
                    if not key.startswith(b"n:"):
                        break
                    record = json.loads(value)
                    found.append({"name": bytes(key[2:]).decode(), "role": record["role"],
                                  "created_us": record["created_us"],
                                  "revoked_us": record["revoked_us"],
                                  "expires_us": record.get("expires_us")})
            return found

    def _entries(self, hash_key: bytes) -> tuple[bytes | None, bytes | None]:
        """A token's name (under its hash) and its record (under its name). Read in C, each
        in a read transaction of its own with the GIL held (an HTTP request read them with
        four py-lmdb calls, each letting the lock go to the commit's thread and waiting to
        have it back). Two snapshots are enough: a revocation deletes the hash and marks
        the record in one commit, and each of the four orders of reading them that it
        allows refuses a revoked token."""
        if self._native:
            try:
                name = _read_value(self.envs.eenv, self.db["tokens"], hash_key)
                return name, None if name is None else _read_value(
                    self.envs.eenv, self.db["tokens"], b"n:" + name)
            except RuntimeError:      # py-lmdb not as the native read expects: its own calls
                self._native = False
            except (lmdb.Error, _NativeError):   # a map grown by another process: eread's way
                pass
        with self.envs.eread() as txn:
            name = txn.get(hash_key, db=self.db["tokens"])
            return (None, None) if name is None else (
                bytes(name), txn.get(b"n:" + bytes(name), db=self.db["tokens"]))

    def principal(self, token: str | None) -> Principal | None:
        """Who holds this token, or None (unknown, revoked, expired, malformed)."""
        if not token or not token.startswith(PREFIX) or len(token) > 128:
            return None
        digest = _digest(token)
        # every request reads both again (a revocation, from any process, counts at once);
        # only the reading of a record already read is kept (a switch sends one token)
        name, value = self._entries(b"h:" + digest.encode())
        if name is None or value is None:
            return None
        known = self.known.get(digest)
        if known is None or known[0] != name or known[1] != value:
            record = json.loads(value)
            if record["revoked_us"] is not None or not hmac.compare_digest(record["hash"],
                                                                          digest):
                return None
            known = (bytes(name), bytes(value), Principal(bytes(name).decode(), record["role"]),
                     record.get("expires_us"))
            if len(self.known) >= 1024:
                self.known.clear()
            self.known[digest] = known
        if known[3] is not None and time.time_ns() // 1000 >= known[3]:
            return None                          # expired: as a revoked one
        return known[2]
