"""The hours daylight saving's end repeats, for the trace (docs/trace-rules.md, "The
repeated autumn hour").

A local time with no offset written in such an hour names two instants an hour (or so)
apart and is read as the earlier. The index's meta notes, in the write that indexes a
feed's calls, the zones whose local times the feed's records were read in (FOLD_FEEDS),
and the repeated hours of every such zone (FOLDS: the native trace's quick test of
whether a line's calls need the reference, ext/_trace.pyx). A call is held as one that
may have begun later only where its own feed read local times in a zone whose hour holds
it: a CUCM call of that hour, an instant, is not.
"""
from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from ..parsing import timezones

# in the index's meta: rows of int64 (first_us, end_us, shift_us) sorted by first_us
# (timezones.fold_intervals) of every zone noted, and those zones (JSON, sorted)
FOLDS, FOLD_ZONES = b"folds", b"fold_zones"
# JSON {feed: [zones]}; a store whose zones were noted before feeds were keeps them under
# EVERY_FEED: each feed's calls are held to them (fail closed: which read them is lost)
FOLD_FEEDS, EVERY_FEED = b"fold_feeds", "*"
NONE = np.zeros((0, 3), np.int64)


@functools.lru_cache(maxsize=64)
def of_zone(zone: str) -> np.ndarray:
    """A zone's repeated hours (timezones.fold_intervals), made once."""
    rows = timezones.fold_intervals(zone)
    rows.flags.writeable = False
    return rows


def add_zone(txn: Any, meta_db: Any, zone: str, feed: int) -> None:
    """Note, in an index write, that feed's records were read in zone's local times."""
    zones = json.loads(txn.get(FOLD_ZONES, b"[]", db=meta_db))
    known = txn.get(FOLD_FEEDS, db=meta_db)
    feeds = json.loads(known) if known else ({EVERY_FEED: zones} if zones else {})
    if zone in feeds.get(str(feed), ()):
        return
    feeds[str(feed)] = sorted({*feeds.get(str(feed), ()), zone})
    txn.put(FOLD_FEEDS, json.dumps(feeds, sort_keys=True).encode(), db=meta_db)
    if zone in zones:
        return
    merged = np.concatenate([held(txn, meta_db), of_zone(zone)])
    merged = merged[np.argsort(merged[:, 0], kind="stable")]
    txn.put(FOLDS, merged.tobytes(), db=meta_db)
    txn.put(FOLD_ZONES, json.dumps(sorted([*zones, zone])).encode(), db=meta_db)


def held(txn: Any, meta_db: Any) -> np.ndarray:
    """The repeated hours of every zone noted (FOLDS)."""
    value = txn.get(FOLDS, db=meta_db)
    return np.frombuffer(value, np.int64).reshape(-1, 3) if value else NONE


def shift(folds: np.ndarray, start_us: int) -> int:
    """How much later than read a call stamped start_us may have begun: the largest shift
    of a repeated hour that holds it (a local time there names two instants); 0 if none."""
    if not len(folds):
        return 0
    inside = (folds[:, 0] <= start_us) & (start_us < folds[:, 1])
    return int(folds[inside, 2].max()) if inside.any() else 0


def shifts(txn: Any, meta_db: Any, calls: list[tuple[int, int]]) -> list[int]:
    """For each call (its feed and start), how much later it may have begun (shift), by
    the repeated hours of the zones its feed's local times were read in. A store whose
    rows were written with no FOLD_FEEDS holds every feed's calls to every zone's."""
    known = txn.get(FOLD_FEEDS, db=meta_db)
    if known is None:
        every = held(txn, meta_db)
        return [shift(every, start) for _, start in calls]
    feeds = json.loads(known)
    shared = feeds.get(EVERY_FEED, [])
    return [max([shift(of_zone(zone), start) for zone in (*feeds.get(str(feed), ()), *shared)],
                default=0) for feed, start in calls]


def may_be_later(moves: list[int], starts: list[int], at_us: int) -> list[int]:
    """Of the calls before an activation at at_us (their starts, newest first, and how
    much later each may have begun: shifts), those whose later reading would change the
    last call: the newest, if it would then begin at or after the activation; an older
    one, if it would then begin at or after the newest and before the activation. Their
    indices."""
    return [i for i, (start, moved) in enumerate(zip(starts, moves, strict=True))
            if moved and (start + moved >= at_us if i == 0
                          else starts[0] <= start + moved < at_us)]


def begun_before_a_later_reading(folds: np.ndarray, starts: list[int], at_us: int) -> list[int]:
    """Of a line's calls (their starts, newest first), those begun at or after an
    activation a switch recorded at at_us, a time in a repeated hour of folds (its
    zone's), but before its later reading: the activation's own record may name the
    hour's second pass, and then one of these was the last call before the *57. Their
    indices."""
    moved = shift(folds, at_us)
    return [i for i, start in enumerate(starts) if at_us <= start < at_us + moved]
