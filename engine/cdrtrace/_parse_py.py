"""Pure-Python reference of the native Asterisk cdr_csv parser (cdrtrace._parse).

Obviously correct and slow: the tests hold the native parser to it on generated and
mutated input. Selected for debugging with CDRTRACE_PURE=1; never a silent fallback.
"""
from __future__ import annotations

import numpy as np

from . import numbers, timezones
from .errors import REJECT_REASONS
from .formats import COLUMNS, Disposition, Presentation

MAX_RECORD = 65536
MIN_COLUMNS, MAX_COLUMNS = 16, 21

REASONS = REJECT_REASONS   # shared with the native parser: one table of messages
(ERR_FIELD_COUNT, ERR_UNTERMINATED, ERR_AFTER_QUOTE, ERR_QUOTE_UNQUOTED, ERR_CR, ERR_NUL,
 ERR_TOO_LONG, ERR_TIMESTAMP, ERR_DURATION, ERR_DISPOSITION) = range(1, 11)
NEED_MORE = -1

DISPOSITIONS = {
    b"ANSWERED": Disposition.ANSWERED,
    b"NO ANSWER": Disposition.NO_ANSWER,
    b"CANCEL": Disposition.CANCELLED,
    b"BUSY": Disposition.BUSY,
    b"FAILED": Disposition.FAILED,
    b"CONGESTION": Disposition.CONGESTION,
    b"UNKNOWN": Disposition.UNKNOWN,
}
_MASK64 = (1 << 64) - 1


def hash_bytes(h: int, data: bytes) -> int:
    for byte in data:
        h = ((h ^ byte) * 1099511628211) & _MASK64
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _MASK64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _MASK64
    return h ^ (h >> 31)


def tokenize(buf: bytes, r: int, final: bool):
    """Return (status, fields, record_end, next_record); fields are (bytes, quoted).

    On an error, record_end is where the error was found."""
    end = len(buf)
    p = r
    fields = []
    while True:
        if p < end and buf[p] == 0x22:
            q = p + 1
            while True:
                q = buf.find(b'"', q)
                if q < 0:
                    if not final:
                        return (ERR_TOO_LONG if end - r > MAX_RECORD else NEED_MORE), None, end, None
                    return ERR_UNTERMINATED, None, end, None
                if q + 1 < end and buf[q + 1] == 0x22:
                    q += 2
                    continue
                if q + 1 == end and not final:
                    return NEED_MORE, None, None, None
                break
            fields.append((buf[p + 1:q], True))
            p = q + 1
            if p < end and buf[p] not in b",\n\r":
                return ERR_AFTER_QUOTE, None, p, None
        else:
            s = p
            while p < end and buf[p] not in b",\n\r":
                if buf[p] == 0x22:
                    return ERR_QUOTE_UNQUOTED, None, p, None
                p += 1
            fields.append((buf[s:p], False))
        if p >= end:
            if not final:
                return (ERR_TOO_LONG if end - r > MAX_RECORD else NEED_MORE), None, end, None
            rec_end, nxt = end, end
            break
        c = buf[p]
        if c == 0x2C:
            p += 1
            continue
        if c == 0x0A:
            rec_end, nxt = p, p + 1
            break
        if p + 1 < end:
            if buf[p + 1] != 0x0A:
                return ERR_CR, None, p, None
            rec_end, nxt = p, p + 2
            break
        if not final:
            return NEED_MORE, None, None, None
        rec_end, nxt = p, end
        break
    if rec_end - r > MAX_RECORD:
        return ERR_TOO_LONG, None, rec_end, None
    return 0, fields, rec_end, nxt


def _timestamp(text: bytes, zone: str):
    s = text.decode("latin-1")
    if len(s) != 19 or s[4] != "-" or s[7] != "-" or s[10] != " " or s[13] != ":" or s[16] != ":":
        return None
    parts = (s[0:4], s[5:7], s[8:10], s[11:13], s[14:16], s[17:19])
    if not all(len(x) > 0 and all("0" <= c <= "9" for c in x) for x in parts):
        return None
    y, mo, d, h, mi, sec = (int(x) for x in parts)
    if not (timezones.MIN_YEAR <= y <= timezones.MAX_YEAR) or not (1 <= mo <= 12):
        return None
    import calendar

    if not (1 <= d <= calendar.monthrange(y, mo)[1]) or h > 23 or mi > 59 or sec > 59:
        return None
    return timezones.local_to_utc_seconds(y, mo, d, h, mi, sec, zone) * 1_000_000


def _uint(text: bytes):
    if not 0 < len(text) <= 12 or not all(0x30 <= c <= 0x39 for c in text):
        return None
    return int(text)


def _clid_number(text: bytes, cc: int) -> int:
    i = text.rfind(b"<")
    if i < 0:
        return 0
    j = text.find(b">", i + 1)
    if j < 0:
        return 0
    return numbers.normalize(text[i + 1:j], cc)


def _channel_number(text: bytes, cc: int) -> int:
    i = text.find(b"/")
    if i < 0:
        return 0
    rest = text[i + 1:]
    cut = len(rest)
    for stop in b"@/;":
        k = rest.find(bytes([stop]))
        if 0 <= k < cut:
            cut = k
    if cut == len(rest) or rest[cut] == 0x3B:  # no '@' or '/': drop the '-suffix'
        dash = rest.rfind(b"-", 1, cut)
        if dash > 0:
            cut = dash
    if cut <= 0:
        return 0
    return numbers.normalize(rest[:cut], cc)


def extract(raw: bytes, fields, zone: str, cc: int, min_ring_us: int, feed: int):
    """(status, detail, row) for one tokenized record."""
    if b"\x00" in raw:
        return ERR_NUL, 0, None
    nf = len(fields)
    if not MIN_COLUMNS <= nf <= MAX_COLUMNS:
        return ERR_FIELD_COUNT, nf, None
    v = [f[0] for f in fields]
    start = _timestamp(v[9], zone)
    if start is None:
        return ERR_TIMESTAMP, 10, None
    answer = 0
    if v[10]:
        answer = _timestamp(v[10], zone)
        if answer is None:
            return ERR_TIMESTAMP, 11, None
    end = _timestamp(v[11], zone)
    if end is None:
        return ERR_TIMESTAMP, 12, None
    if _uint(v[12]) is None:
        return ERR_DURATION, 13, None
    if _uint(v[13]) is None:
        return ERR_DURATION, 14, None
    disp = DISPOSITIONS.get(v[14])
    if disp is None:
        return ERR_DISPOSITION, 15, None

    pres = Presentation.ALLOWED
    calling = numbers.normalize(v[1], cc)
    if calling == 0:
        calling = _clid_number(v[4], cc)
        if calling == 0:
            pres = Presentation.UNAVAILABLE
        elif v[1]:
            pres = Presentation.RESTRICTED
    called = numbers.normalize(v[2], cc)
    final = _channel_number(v[6], cc)
    if final == called:
        final = 0
    redirecting = 0
    if nf >= 18:
        uf = v[17].lower()
        if uf.startswith(b"prohib"):
            if pres == Presentation.ALLOWED:
                pres = Presentation.RESTRICTED
        elif uf.startswith(b"unavailable"):
            pres = Presentation.UNAVAILABLE
        elif uf.startswith(b"allowed"):
            pass
        else:
            redirecting = numbers.normalize(v[17], cc)
            if redirecting == called:
                redirecting = 0
    seed = 14695981039346656037 ^ feed
    if nf >= 17 and v[16]:
        call_id = _hash_chain(seed, b"u", v[16])
    else:
        call_id = _hash_chain(seed, b"r", raw)
    received = disp == Disposition.ANSWERED or (
        disp in (Disposition.NO_ANSWER, Disposition.CANCELLED) and end - start >= min_ring_us)
    row = dict(start_us=start, answer_us=answer, end_us=end, calling=calling,
               presentation=int(pres), called=called, redirecting=redirecting, final=final,
               disposition=int(disp), received=received, call_id=call_id, feed=feed)
    return 0, 0, row


def _hash_chain(seed: int, tag: bytes, data: bytes) -> int:
    """The native parser finalises after each piece; mirror it exactly."""
    return hash_bytes(hash_bytes(seed, tag), data)


class AsteriskParser:
    """Same contract as cdrtrace._parse.AsteriskParser, in plain Python."""

    def __init__(self, zone: str = "UTC", country_code: int = 1, feed_id: int = 0,
                 min_ring_seconds: float = 0.0):
        timezones.get_zone(zone)
        self.zone = zone
        self.country_code = country_code
        self.feed_id = feed_id
        self.min_ring_us = int(min_ring_seconds * 1e6)
        self.offset = 0
        self.record = 0
        self.skipping = False

    def feed(self, buffer, final: bool = False):
        buf = bytes(buffer)
        end = len(buf)
        p = 0
        rows, rejects = [], []
        if self.skipping:
            nl = buf.find(b"\n")
            if nl < 0:
                p = end
            else:
                p, self.skipping = nl + 1, False
        while p < end and not self.skipping:
            if buf[p] == 0x0A:
                p += 1
                continue
            if buf.startswith(b"\r\n", p):
                p += 2
                continue
            if buf[p] == 0x0D and p + 1 == end:
                if final:
                    p = end
                break
            status, fields, rec_end, nxt = tokenize(buf, p, final)
            if status == NEED_MORE:
                break
            detail = 0
            if status == 0:
                status, detail, row = extract(buf[p:rec_end], fields, self.zone,
                                              self.country_code, self.min_ring_us, self.feed_id)
            self.record += 1
            if status == 0:
                row["offset"] = self.offset + p
                row["record"] = self.record
                rows.append(row)
                p = nxt
                continue
            nl = buf.find(b"\n", p)
            if nl >= 0 and rec_end is not None and rec_end > nl:
                status = ERR_UNTERMINATED   # a quote ran past its line into a bad record
            if nl < 0 and not final and end - p <= MAX_RECORD:
                self.record -= 1
                break
            stop = end if nl < 0 else nl
            raw = buf[p:stop]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            rejects.append((self.record, self.offset + p,
                            REASONS[status].format(detail=detail), raw[:MAX_RECORD]))
            if nl < 0:
                if not final:
                    self.skipping = True
                p = end
            else:
                p = nl + 1
        self.offset += p
        columns = {name: np.array([r[name] for r in rows], dtype=dtype)
                   for name, dtype in COLUMNS}
        return columns, rejects, p
