"""Feed time zones: switch local wall time to UTC, exactly as zoneinfo does with fold=0.

The native parser cannot call zoneinfo without the GIL, so each zone becomes a table of
UTC transition instants and the offset in force from each; the reference converts with
zoneinfo itself and the tests hold the two equal (DST gaps and the repeated autumn hour
included: fold=0 takes the earlier instant, and a wall time in a spring-forward gap is
read with the offset before the change).
"""
from __future__ import annotations

import datetime as _dt
import functools
import zoneinfo

import numpy as np

from ..errors import TraceError, ZoneError
from .native import _parse

_format_utc = _parse.format_utc

MIN_YEAR, MAX_YEAR = 1970, 2099
_UTC = _dt.UTC
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_UTC)




def get_zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ZoneError(f"unknown time zone {name!r} (use an IANA name such as America/Denver)") from exc


@functools.lru_cache(maxsize=64)
def zone_table(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(utc_start_seconds, offset_seconds) for each period of constant offset, 1969-2100.

    The first period starts at int64 min. Found by probing every day and bisecting each
    change to the second.
    """
    zone = get_zone(name)

    def offset_at(t: int) -> int:
        offset = _dt.datetime.fromtimestamp(t, zone).utcoffset()
        return int(offset.total_seconds()) if offset is not None else 0

    start = int(_dt.datetime(MIN_YEAR - 1, 12, 1, tzinfo=_UTC).timestamp())
    stop = int(_dt.datetime(MAX_YEAR + 1, 1, 2, tzinfo=_UTC).timestamp())
    starts = [np.iinfo(np.int64).min]
    offsets = [offset_at(start)]
    step = 86400
    t = start
    while t < stop:
        nxt = t + step
        off = offset_at(nxt)
        if off != offsets[-1]:
            lo, hi = t, nxt  # offset_at(lo) == offsets[-1], offset_at(hi) == off
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset_at(mid) == offsets[-1]:
                    lo = mid
                else:
                    hi = mid
            starts.append(hi)
            offsets.append(off)
        t = nxt
    return np.asarray(starts, dtype=np.int64), np.asarray(offsets, dtype=np.int64)


def fold_intervals(name: str) -> np.ndarray:
    """The hours (or so) that the end of daylight saving repeats in a zone, 1969-2100, as
    rows (first_us, end_us, shift_us): a local time in one names two instants, and is read
    as the earlier, in [first_us, end_us); the later is shift_us after it."""
    starts, offsets = zone_table(name)
    back = np.nonzero(offsets[1:] < offsets[:-1])[0] + 1      # the offset goes down
    shift = (offsets[back - 1] - offsets[back]) * 1_000_000
    end = starts[back] * 1_000_000
    return np.stack([end - shift, end, shift], axis=1).astype(np.int64).reshape(-1, 3)


def local_to_utc_seconds(year, month, day, hour, minute, second, zone_name: str) -> int:
    """Reference conversion with zoneinfo (fold=0)."""
    local = _dt.datetime(year, month, day, hour, minute, second, tzinfo=get_zone(zone_name))
    return int((local - _EPOCH).total_seconds())


_NAIVE_EPOCH = _dt.datetime(1970, 1, 1)      # naive: no zone arithmetic, no "+00:00" to cut


_SECONDS: dict[int, str] = {}     # second -> its text: a trace's times share seconds


def format_utc(us: int) -> str:
    """ISO-8601 UTC text for microseconds since the epoch ("2026-03-03T12:00:00Z",
    "2026-03-03T12:00:00.000123Z"), written in C (_parse.format_utc): a trace writes
    three or four, each from its own second, and datetime took about 1 us for each.
    reference_format_utc is its reference, and says what C leaves to it (an instant
    outside years 1-9999)."""
    return _format_utc(us, reference_format_utc)


def reference_format_utc(us: int) -> str:
    """format_utc in Python. Concurrent traces share their activation's second: each
    second's text is kept (a few thousand at most) and only the microseconds are
    written again."""
    second, micro = divmod(int(us), 1_000_000)
    text = _SECONDS.get(second)
    if text is None:
        text = (_NAIVE_EPOCH + _dt.timedelta(seconds=second)).isoformat()
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        _SECONDS[second] = text
    return f"{text}.{micro:06d}Z" if micro else text + "Z"


def parse_instant(text: str, zone_name: str = "UTC") -> int:
    """ISO-8601 instant to UTC microseconds; without an offset it is read in zone_name.

    A time without an offset that zone_name's clocks show twice (the hour they go back)
    or never (the hour they skip) is refused (TraceError), naming the offsets that make
    it one instant. Read at either instant, a trace activated then could name a call
    other than the one that rang the line before the *57: one of a feed whose times
    name their instant (CUCM, BroadWorks, Kamailio) begun between the two."""
    try:
        value = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise TraceError(f"not an ISO-8601 time: {text!r}") from exc
    if value.tzinfo is None:
        zone = get_zone(zone_name)
        value, other = value.replace(tzinfo=zone), value.replace(tzinfo=zone, fold=1)
        first, second = value.astimezone(_UTC), other.astimezone(_UTC)
        if first < second:
            raise TraceError(
                f"the time {text!r} is shown twice by the clocks of {zone_name} (they go "
                f"back across it): {first:%Y-%m-%dT%H:%M:%SZ} or {second:%Y-%m-%dT%H:%M:%SZ}; "
                f"give its offset, {_offset(value)} or {_offset(other)}")
        if first > second:
            raise TraceError(f"the time {text!r} is never shown by the clocks of {zone_name} "
                             f"(they go forward across it); give its offset")
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _offset(value: _dt.datetime) -> str:
    """A datetime's UTC offset as ISO-8601 writes it (-06:00)."""
    minutes = int(value.utcoffset().total_seconds()) // 60      # type: ignore[union-attr]
    sign, minutes = ("-" if minutes < 0 else "+"), abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
