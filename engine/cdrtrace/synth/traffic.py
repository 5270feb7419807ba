"""Realistic generated switch traffic with planted harassment campaigns (and their truth).

Traffic: skewed per-line volume, a daily rhythm, an answered / unanswered / busy /
failed mix, restricted and unavailable callers, forwarded calls, Latin-1 and quoted
caller names. Campaigns: repeat callers planted against victim lines, each call followed
by a *57 a few seconds after it ends, with no other call to the victim in between.
Vectorised: numpy for the numbers, Arrow compute kernels for the text.
"""
from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SynthError
from ..parsing import timezones

AREAS = np.array([303, 720, 212, 415, 312, 617, 206, 512, 404, 305, 602, 702, 503, 214, 919])
CALLER_AREAS = np.array([201, 305, 469, 646, 818, 917, 929, 347, 408, 510, 650, 773])
# hour-of-day weights: quiet nights, morning and late-afternoon peaks
HOUR_WEIGHTS = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 4, 5, 5.5, 5.5,
                         5, 5, 5.2, 5.5, 6, 6, 5, 4, 3.2, 2.6, 2, 1.4])
DISPOSITIONS = np.array([b"ANSWERED", b"NO ANSWER", b"CANCEL", b"BUSY", b"FAILED", b"CONGESTION"],
                        dtype=object)
DISPOSITION_P = np.array([0.60, 0.19, 0.06, 0.08, 0.05, 0.02])
FIRST = [b"Pat", b"Lee", b"Sam", b"Ana", b"Jos\xe9", b"Ren\xe9e", b"Chris", b"M\xfcller", b"Kim",
         b"Jordan", b'Robert "Bob"', b"O'Neil", b"Zo\xeb", b"Taylor", b"Ngozi", b"Wei"]
LAST = [b"Doe", b"Smith", b"Garc\xeda", b"Nguyen", b"Brown", b"Okafor", b"Novak", b"Patel",
        b"Jones, Jr.", b"Kowalski", b"Lef\xe8vre", b"Chen"]
CHUNK_ROWS = 1 << 19
MIN_CAMPAIGNS = 3




def _distinct_numbers(rng, count, areas, salt):
    """count distinct 10-digit NANP numbers (area + 7 digits starting 2-9)."""
    space = len(areas) * 8_000_000
    if count > space:
        raise SynthError(f"at most {space} distinct numbers can be generated")
    multiplier = 2_654_435_761  # odd and coprime with the space (no factor 2, 3, 5)
    while np.gcd(multiplier, space) != 1:
        multiplier += 2
    v = (np.arange(count, dtype=np.int64) * multiplier + salt) % space
    return areas[v // 8_000_000] * 10_000_000 + 2_000_000 + v % 8_000_000


def _local_seconds(utc_seconds, zone):
    if zone == "UTC":
        return utc_seconds
    starts, offsets = timezones.zone_table(zone)
    return utc_seconds + offsets[np.searchsorted(starts, utc_seconds, side="right") - 1]



def _stamp(seconds, zone):
    """'YYYY-MM-DD HH:MM:SS' in the zone's local time, digits written by numpy
    (Arrow's strftime is ~1 s per million here)."""
    local = np.asarray(_local_seconds(seconds, zone), np.int64)
    days, secs = np.divmod(local, 86400)
    z = days + 719468                       # civil_from_days (H. Hinnant)
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    out = np.empty((len(local), 19), np.uint8)
    for col, value in ((0, year // 1000), (1, year // 100 % 10), (2, year // 10 % 10),
                       (3, year % 10), (5, month // 10), (6, month % 10), (8, day // 10),
                       (9, day % 10), (11, secs // 36000), (12, secs // 3600 % 10),
                       (14, secs // 600 % 6), (15, secs // 60 % 10), (17, secs % 60 // 10),
                       (18, secs % 10)):
        out[:, col] = 48 + value
    out[:, [4, 7]] = ord("-")
    out[:, 10] = ord(" ")
    out[:, [13, 16]] = ord(":")
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(19), len(local),
                                                 [None, pa.py_buffer(out)])
    return pc.cast(fixed, pa.binary())


def _text(ints):
    return pc.cast(pc.cast(pa.array(ints), pa.string()), pa.binary())


CHUNK_CALLS = 1_000_000     # calls generated at a time by generate_chunks (~0.5 GB at peak)
SLICE_SECONDS = 600         # the period is cut into 10-minute slices, drawn in time order


def generate(calls: int, lines: int, seed: int = 1, start: str = "2026-03-02", days: int = 1,
             zone: str = "UTC", campaigns: int | None = None):
    """The traffic as numpy columns (sorted by end time, as a switch writes) and the truth."""
    chunks, truth = generate_chunks(calls, lines, seed, start, days, zone, campaigns)
    parts = list(chunks)
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(columns["end"], kind="stable")
    columns = {k: v[order] for k, v in columns.items()}
    columns["seq"] = np.arange(len(order), dtype=np.int64)
    return columns, truth


def generate_chunks(calls: int, lines: int, seed: int = 1, start: str = "2026-03-02",
                    days: int = 1, zone: str = "UTC", campaigns: int | None = None,
                    chunk_calls: int = CHUNK_CALLS):
    """(iterator of column chunks, truth): the traffic in time order, a few million calls
    at a time, so memory stays bounded at any size (100 M calls and more). Each chunk is
    sorted by end time; a call that ends after the next chunk's first calls is written
    before them, as a switch writes a long call late. truth["calls"] is filled in as the
    chunks are drawn (complete once the iterator is exhausted)."""
    if calls < 1 or lines < 1:
        raise SynthError("--calls and --lines must be at least 1")
    if not 1 <= days <= 36_500:
        raise SynthError("--days must be 1 to 36500")
    if seed < 0:
        raise SynthError("--seed must be 0 or more")
    timezones.get_zone(zone)
    rng = np.random.default_rng(seed)
    try:
        first = dt.date.fromisoformat(str(start))
    except ValueError:
        raise SynthError(f"--start must be a day, YYYY-MM-DD (not {start!r})") from None
    if not 1970 <= first.year <= 2199 - days // 366:
        raise SynthError(f"--start must fall between 1970 and 2199 (not {start!r})")
    t0 = int(dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC).timestamp())
    line_numbers = _distinct_numbers(rng, lines, AREAS, int(rng.integers(1 << 30)))
    pool = max(1000, lines * 3)
    caller_numbers = _distinct_numbers(rng, pool, CALLER_AREAS, int(rng.integers(1 << 30)))

    if campaigns is None:
        campaigns = max(MIN_CAMPAIGNS, min(lines // 4, calls // 2000))
    campaigns = min(campaigns, max(1, lines // 2))
    planted = _plant(rng, campaigns, lines, t0, days)
    n = calls - len(planted["line"])
    if n < 0:
        raise SynthError(f"{calls} calls are too few for {campaigns} campaigns")

    weights = rng.lognormal(0.0, 1.3, lines)
    weights[planted["victims"]] *= 0.05          # victims are ordinary, quiet lines
    cum = np.cumsum(weights)
    # calls per 10-minute slice, by the daily rhythm; chunks are runs of whole slices
    slice_p = np.tile(np.repeat(HOUR_WEIGHTS, 3600 // SLICE_SECONDS), days)
    per_slice = rng.multinomial(n, slice_p / slice_p.sum())
    # keep the planted calls the last call to their victim until their trace
    busy_until: dict[int, list[tuple[int, int]]] = {}
    for v, s, e in zip(planted["line"], planted["start"], planted["trace_at"], strict=True):
        busy_until.setdefault(int(v), []).append((int(s) - 120, int(e) + 1))
    victims = np.fromiter(busy_until, np.int64)
    truth = {"seed": seed, "calls": 0, "lines": lines, "zone": zone, "start": start,
             "days": days, "campaigns": planted["truth"]}
    for campaign in planted["truth"]:
        campaign["victim"] = f"+1{int(line_numbers[campaign.pop('victim_index')])}"

    def chunks():
        first, seq = 0, 0
        bounds = np.cumsum(per_slice)
        while first < len(per_slice):
            last = first + 1                      # whole slices up to about chunk_calls
            while last < len(per_slice) and bounds[last] - (bounds[first - 1] if first else 0) <= chunk_calls:
                last += 1
            lo_t, hi_t = t0 + first * SLICE_SECONDS, t0 + last * SLICE_SECONDS
            counts = per_slice[first:last]
            columns = _draw(rng, counts, lo_t, line_numbers, caller_numbers, cum, pool,
                            planted, lo_t, hi_t, busy_until, victims, lines)
            count = len(columns["line"])
            columns["seq"] = np.arange(seq, seq + count, dtype=np.int64)
            seq += count
            truth["calls"] = seq
            first = last
            if count:
                yield columns

    return chunks(), truth


def _draw(rng, counts, t_first, line_numbers, caller_numbers, cum, pool, planted, lo_t, hi_t,
          busy_until, victims, lines):
    """The calls of consecutive slices (counts per slice from t_first), with the planted
    calls that start in [lo_t, hi_t); sorted by end time."""
    n = int(counts.sum())
    line_idx = np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1]), lines - 1)
    start_s = (t_first + np.repeat(np.arange(len(counts)) * SLICE_SECONDS, counts)
               + rng.integers(0, SLICE_SECONDS, n)).astype(np.int64)
    caller_idx = np.minimum((pool * rng.random(n) ** 2.2).astype(np.int64), pool - 1)
    disp = rng.choice(len(DISPOSITIONS), n, p=DISPOSITION_P)
    keep = np.ones(n, bool)
    hit = np.flatnonzero(np.isin(line_idx, victims))
    for i in hit:
        for lo, hi in busy_until[int(line_idx[i])]:
            if lo <= start_s[i] + 120 and start_s[i] <= hi:
                keep[i] = False
    line_idx, start_s, caller_idx, disp = line_idx[keep], start_s[keep], caller_idx[keep], disp[keep]
    n = len(line_idx)
    mine = (planted["start"] >= lo_t) & (planted["start"] < hi_t)
    p = {k: v[mine] for k, v in planted.items() if isinstance(v, np.ndarray) and k != "victims"}

    pres = rng.choice(3, n, p=[0.91, 0.06, 0.03])    # allowed, restricted, unavailable
    forwarded = rng.random(n) < 0.04
    columns = {
        "line": np.concatenate([line_numbers[line_idx], line_numbers[p["line"]]]),
        "caller": np.concatenate([caller_numbers[caller_idx], p["caller"]]),
        "start": np.concatenate([start_s, p["start"]]),
        "disposition": np.concatenate([disp, p["disposition"]]),
        "presentation": np.concatenate([pres, p["presentation"]]),
        "forwarded": np.concatenate([forwarded, np.zeros(len(p["line"]), bool)]),
    }
    total = len(columns["line"])
    d = columns["disposition"]
    # busy, failed and congested calls never rang: they end in the second they began (one
    # that ended later may have rung and been refused by its user, docs/formats.md); their
    # old draw of 0-2 s is still made, so that the rest of a seed's traffic stays the same
    answered, unanswered, cancelled = (rng.integers(2, 25, total), rng.integers(20, 45, total),
                                       rng.integers(0, 20, total))
    rng.integers(0, 3, total)
    ring = np.where(d == 0, answered, np.where(d == 1, unanswered, np.where(d == 2, cancelled, 0)))
    ring[n:] = p["ring"]
    talk = np.where(d == 0, np.minimum(rng.lognormal(4.2, 1.1, total), 7200).astype(np.int64), 0)
    talk[n:] = p["talk"]
    columns["answer"] = np.where(d == 0, columns["start"] + ring, 0)
    columns["end"] = columns["start"] + ring + talk
    columns["billsec"] = talk
    fwd_to = line_numbers[rng.integers(0, lines, total)]
    via = line_numbers[rng.integers(0, lines, total)]
    columns["final"] = np.where(columns["forwarded"], fwd_to, columns["line"])
    columns["redirecting"] = np.where(columns["forwarded"] & (rng.random(total) < 0.5), via,
                                      np.where(columns["forwarded"], columns["line"], 0))
    columns["first"] = rng.integers(0, len(FIRST), total)
    columns["last"] = rng.integers(0, len(LAST), total)
    order = np.argsort(columns["end"], kind="stable")
    return {k: v[order] for k, v in columns.items()}


def _plant(rng, campaigns, lines, t0, days):
    """Harassment campaigns: victim, repeat caller, and calls spread over the period."""
    victims = rng.choice(lines, campaigns, replace=False)
    harassers = _distinct_numbers(rng, campaigns, np.array([888]), int(rng.integers(1 << 30)))
    span = days * 86400
    rows = {k: [] for k in ("line", "caller", "start", "disposition", "presentation", "ring",
                            "talk", "trace_at")}
    truth = []
    for c in range(campaigns):
        victim = int(victims[c // 4 * 4]) if c % 4 == 3 else int(victims[c])  # some victims get two
        count = int(rng.choice([2, 3, 3, 4, 5]))
        restricted = bool(rng.random() < 0.3)
        # a victim's second campaign takes the other half of each 20-minute slot
        first_slot = 1200 if c % 4 == 3 else 600
        slots = np.sort(rng.choice(np.arange(first_slot, span - 900, 1200), count, replace=False))
        calls = []
        for s in slots:
            start = t0 + int(s) + int(rng.integers(0, 300))
            disposition = int(rng.choice([0, 1, 2], p=[0.5, 0.3, 0.2]))
            ring = int(rng.integers(3, 20))
            talk = int(rng.integers(5, 90)) if disposition == 0 else 0
            trace_at = start + ring + talk + 10 + int(rng.integers(0, 50))
            for key, value in (("line", victim), ("caller", int(harassers[c])), ("start", start),
                               ("disposition", disposition), ("presentation", int(restricted)),
                               ("ring", ring), ("talk", talk), ("trace_at", trace_at)):
                rows[key].append(value)
            calls.append({"start_s": start, "trace_at_s": trace_at})
        truth.append({"victim_index": victim, "origin": f"+1{int(harassers[c])}",
                      "presentation": "restricted" if restricted else "allowed", "calls": calls})
    out = {k: np.asarray(v, np.int64) for k, v in rows.items()}
    out["truth"] = truth
    out["victims"] = np.unique(out["line"])
    return out


def write(out: str | Path, calls: int, lines: int, seed: int = 1, fmt: str = "asterisk",
          zone: str = "UTC", start: str = "2026-03-02", days: int = 1,
          campaigns: int | None = None, legs: float = 0.0, unreadable: float = 0.0) -> dict:
    """Write the traffic to out and the campaigns' truth to out + '.truth.json'. legs and
    unreadable (Asterisk only): see add_legs_and_unreadable."""
    from .writers import (
        KAMAILIO_DBTEXT_HEADER,
        add_legs_and_unreadable,
        broadworks_header,
        cucm_header,
        format_asterisk,
        format_asterisk_custom,
        format_broadworks,
        format_cucm,
        format_freeswitch,
        format_kamailio,
        format_kamailio_acc,
        format_kamailio_dbtext,
    )

    if not (0 <= legs <= 1 and 0 <= unreadable <= 1):
        raise SynthError("--legs and --unreadable are fractions, 0 to 1")
    if (legs or unreadable) and fmt != "asterisk":
        raise SynthError("--legs and --unreadable are written for the asterisk format only")
    writers = {"asterisk": (b"", lambda c, lo, hi: format_asterisk(c, lo, hi, zone)),
               "asterisk-custom": (b"", lambda c, lo, hi: format_asterisk_custom(c, lo, hi, zone)),
               "freeswitch": (b"", lambda c, lo, hi: format_freeswitch(c, lo, hi, zone)),
               "cucm": (cucm_header(), format_cucm),
               "broadworks": (broadworks_header(), format_broadworks),
               "kamailio": (b"", format_kamailio),
               "kamailio-acc": (b"", format_kamailio_acc),
               "kamailio-dbtext": (KAMAILIO_DBTEXT_HEADER, format_kamailio_dbtext)}
    if fmt not in writers:
        raise SynthError(f"synth cannot write format {fmt!r} (known: {', '.join(writers)})")
    header, formatter = writers[fmt]
    if legs or unreadable:
        plain = formatter

        def formatter(c, lo, hi):   # a generator per piece: the same file whatever the threads
            rng = np.random.default_rng((seed, lo, int(c["start"][lo]) if hi > lo else 0))
            return add_legs_and_unreadable(plain(c, lo, hi), rng, legs, unreadable)
    chunks, truth = generate_chunks(calls, lines, seed, start, days, zone, campaigns)
    out = Path(out)
    # Arrow's kernels release the GIL: format the next piece while this one is written.
    # Chunks are drawn one at a time, so memory stays bounded whatever the size.
    with open(out, "wb") as f, concurrent.futures.ThreadPoolExecutor(2) as pool:
        f.write(header)
        pending = []
        for columns in chunks:
            total = len(columns["line"])
            for lo in range(0, total, CHUNK_ROWS):
                pending.append(pool.submit(formatter, columns, lo, min(total, lo + CHUNK_ROWS)))
                if len(pending) > 2:
                    f.write(pending.pop(0).result())
        for piece in pending:
            f.write(piece.result())
    iso = timezones.format_utc
    truth["format"] = fmt
    for campaign in truth["campaigns"]:
        for call in campaign["calls"]:
            call["start"] = iso(call.pop("start_s") * 1_000_000)
            call["trace_at"] = iso(call.pop("trace_at_s") * 1_000_000)
    Path(str(out) + ".truth.json").write_text(json.dumps(truth, indent=1))
    return truth
