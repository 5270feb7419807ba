"""Retention: trace records, their report rows and per-line entries are kept for the
store's retention_days, archived calls for its archive_retention_days; a purge removes
what is older, and is audited."""
from __future__ import annotations

import json
import math
import time
from typing import Any

from ..errors import ConfigError
from ..parsing import timezones
from ..store import archive, hunts
from ..store.environments import Environments
from . import later
from . import rows as trace_rows
from .audit import AuditLog
from .marks import CALL_MARK, TRACE_MARK
from .traces import trace_id

DAY_US = 86400 * 1_000_000
MAX_DAYS = 36_500          # a century: a longer period means a mistyped one


def purge(envs: Environments, audit: AuditLog, *, operator: str,
          older_than_days: float | None = None, now_us: int | None = None) -> dict:
    """Remove trace records activated before the retention period (see Store.purge)."""
    who = audit.actor(operator, "a purge", "operator")
    config, db = envs.config, envs.db
    days = config["retention_days"] if older_than_days is None else older_than_days
    if isinstance(days, bool) or not (isinstance(days, (int, float)) and math.isfinite(days)):
        raise ConfigError(f"the retention period must be a number of days (not {days!r})")
    if days < 0:
        raise ConfigError("the retention period cannot be negative")
    if days > MAX_DAYS:
        raise ConfigError(f"the retention period is at most {MAX_DAYS} days (not {days:g})")
    now_us = now_us or time.time_ns() // 1000
    cutoff = now_us - int(days * DAY_US)
    unreadable = _trim_index_logs(envs, cutoff)

    def work(txn: Any) -> dict:
        removed = set()
        for key, value in list(txn.cursor(db["traces"])):
            if json.loads(value)["activated_us"] < cutoff:
                removed.add(bytes(key))
                txn.delete(key, db=db["traces"])
        for table in (db["trace_rows"], db["trace_segments"]):
            trace_rows.rewrite(txn, table, lambda rows: rows["activated_us"] >= cutoff)
        if removed:
            ids = {trace_id(int.from_bytes(k, "big")).encode() for k in removed}
            for key, value in list(txn.cursor(db["by_line"])):
                if (key[8:9] == TRACE_MARK and key[9:] in removed) or (
                        key[8:9] == CALL_MARK and value in ids):
                    txn.delete(key, db=db["by_line"])
            for key, _ in list(txn.cursor(db["pending"])):   # never resolved
                if key[8:] in removed:
                    txn.delete(key, db=db["pending"])
            for key in removed:                  # a later call's note (evidence.later)
                txn.delete(later.NOTED + key, db=db["emeta"])
        archive_days = 0
        if (root := envs.archive_dir()) is not None:
            archive_days = archive.purge(root,
                                         now_us - int(config["archive_retention_days"] * DAY_US))
        audit.add(txn, who, "purge", retention_days=days, before=timezones.format_utc(cutoff),
                  traces=len(removed), archive_days=archive_days, unreadable=unreadable)
        return {"traces": len(removed), "before": timezones.format_utc(cutoff),
                "archive_days": archive_days}
    return envs.ewrite(work)


def _trim_index_logs(envs: Environments, cutoff: int) -> int:
    """The unreadable-record log and the calls through a hunt pilot (store.hunts), in the
    index environment, kept for the same period: entries of records that started before
    cutoff are removed (keys: feed, start, call id). How many unreadable ones."""
    if envs.readonly_index:
        return 0

    def work(txn: Any) -> int:
        if (db := envs.db.get("hunts")) is not None:
            hunts.trim(txn, db, envs.db["meta"], cutoff)
        if (db := envs.db.get("unreadable")) is None:
            return 0
        old = [bytes(k) for k, _ in txn.cursor(db) if int.from_bytes(k[2:10], "big") < cutoff]
        for key in old:
            txn.delete(key, db=db)
        return len(old)
    return envs.write(work)
