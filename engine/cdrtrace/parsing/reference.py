"""Pure-Python reference of the native CDR parser (cdrtrace.parsing._parse).

Obviously correct and slow: the tests hold the native parser to it on generated and
mutated input. Selected for debugging with CDRTRACE_PURE=1; never a silent fallback.
The record level (tokenize, extract) is in parsing.reference_fields.
"""
from __future__ import annotations

import numpy as np

from . import numbers, timezones
from .formats import BOM, COLUMNS, HUNT_DTYPE
from .reference_channels import channel_number, dial_devices, dial_members
from .reference_fields import (
    ERR_CUT_BY_ZEROS,
    ERR_TOO_LONG,
    ERR_UNTERMINATED,
    ERR_ZEROS,
    MAX_FIELDS,
    MAX_RECORD,
    NAME_SEPARATORS,
    NEED_MORE,
    REASONS,
    ZERO_BLOCK,
    _time,
    extract,
    tokenize,
)


def split_quoted(line: bytes, delim: int, quote: int, want: int):
    """Fields of a line whose every field is quoted but whose quotes are not escaped
    (FreeSWITCH), as (bytes, True) pairs: exactly `want` of them, the separators beyond
    that taken to be inside the first field (the caller's name), at most NAME_SEPARATORS
    of them; None if the line is not of that shape, or has fewer fields or more (as the
    native split_quoted)."""
    q = bytes([quote])
    if len(line) < 2 or line[:1] != q or line[-1:] != q or not 1 <= want < MAX_FIELDS:
        return None
    starts, ends = [1], []
    p, e = 1, len(line)
    while p < e - 1:
        if line[p] == quote and line[p + 1] == delim:
            s = p + 2
            while s < e and line[s] == 0x20:
                s += 1
            if s < e - 1 and line[s] == quote:
                if len(starts) >= MAX_FIELDS - 1:
                    return None
                ends.append(p)
                starts.append(s + 1)
                p = s + 1
                continue
        p += 1
    ends.append(e - 1)
    if len(starts) < want or len(starts) - want > NAME_SEPARATORS:
        return None
    excess = len(starts) - want
    fields = [(line[1:ends[excess]], True)]
    fields += [(line[starts[k + excess]:ends[k + excess]], True) for k in range(1, want)]
    return fields


def _unquote(token: bytes, quote: int) -> bytes:
    token = token.strip(b" \r")
    if token[:1] == bytes([quote]):
        token = token[1:]
    if token[-1:] == bytes([quote]):
        token = token[:-1]
    return token


def _candidates(column: int, n: int, max_cols: int) -> list[int]:
    out = [column] if 0 <= column < n else []
    if column >= 0 and n > max_cols and column + n - max_cols < n:
        out.append(column + n - max_cols)
    return out


def _zero_block(buf: bytes, p: int, stop: int, final: bool) -> tuple[int, int]:
    """As the native zero_block: (where the first run of ZERO_BLOCK or more NUL bytes that
    begins in [p, stop) begins, or -1; where a shorter run that reaches the buffer's end
    begins, before any that qualifies, while more may come, or -1)."""
    while p < stop:
        p = buf.find(b"\0", p, stop)
        if p < 0:
            return -1, -1
        q = p
        while q < len(buf) and buf[q] == 0:
            q += 1
        if q - p >= ZERO_BLOCK:
            return p, -1
        if q == len(buf) and not final:
            return -1, p
        p = q
    return -1, -1


def _is_marker(fields) -> bool:
    """As the native is_marker: a BroadWorks version line, or a Start or End record."""
    values = [f for f, _ in fields]
    if len(values) == 1:
        return len(values[0]) > 8 and values[0].startswith(b"version=")
    return len(values) == 3 and values[1] == b"" and values[0] != b"" and values[2] in (b"Start", b"End")


class CdrParser:
    """Same contract as cdrtrace.parsing.native.CdrParser, in plain Python."""

    def __init__(self, dialect: dict, zone: str = "UTC", country_code: int = 1, feed_id: int = 0,
                 min_ring_seconds: float = 0.0, start_offset: int = 0,
                 dispositions: dict | None = None, presentations: dict | None = None,
                 start_record: int = 0):
        self._made_with = (dialect, zone, country_code, feed_id, min_ring_seconds, start_offset,
                           dispositions, presentations, start_record)
        self.vocab = (dispositions or {}, presentations or {})
        timezones.get_zone(zone)
        numbers.dialling_plan(country_code)      # an unknown country code fails here
        self.dialect = dialect
        self.delimiter = dialect["delimiter"]
        self.min_fields = dialect["min_cols"]
        self.expected_fields = (str(dialect["min_cols"]) if dialect["min_cols"] == dialect["max_cols"]
                                else f"{dialect['min_cols']} to {dialect['max_cols']}")
        self.zone = zone
        self.country_code = country_code
        self.feed_id = feed_id
        self.min_ring_us = int(min_ring_seconds * 1e6)
        self.offset = start_offset
        self.record = start_record
        self.markers = 0
        self.skipping = False
        self.zeros = False      # the last buffer ended inside a run of zeros, rejected already
        self._identities: dict[int, str] = {}
        self._activations: list[tuple[int, int, int, int]] = []
        self._hunts: list[tuple[int, int, int, int, int]] = []
        self._hunt_members: list[int] = []
        self._tenants: dict[int, str] = {}     # tenant -> its name, as first read
        self._named: dict[int, str] = {}       # take_tenants' tenants -> their names

    def fresh(self) -> CdrParser:
        """As the native fresh: a parser like this one that has read nothing."""
        return CdrParser(*self._made_with)

    @property
    def reads_first_field(self) -> bool:
        """As the native reads_first_field."""
        return any(v == 0 for k, v in self.dialect.items() if k.startswith("c_"))

    def rows_of(self, buffer) -> dict:
        """As the native rows_of: feed(buffer, final=True)'s records."""
        return self.feed(buffer, True)[0]

    def take_activations(self) -> list:
        """As the native take_activations: [(line, activated_us, record, offset)]."""
        taken, self._activations = self._activations, []
        return taken

    def take_hunts(self) -> np.ndarray:
        """As the native take_hunts: the calls through a hunt pilot parsed since the last
        call (HUNT_DTYPE)."""
        taken, self._hunts = self._hunts, []
        return np.array(taken, HUNT_DTYPE)

    def take_hunt_members(self) -> np.ndarray:
        """As the native take_hunt_members: the lines the records of take_hunts' calls
        name as rung, in their order (each call's `members` of them)."""
        taken, self._hunt_members = self._hunt_members, []
        return np.array(taken, np.uint64)

    def take_tenants(self) -> tuple[int, ...]:
        """As the native take_tenants: the two least distinct tenants (hashed) the records
        parsed since the last call name for lines their switch numbers itself."""
        least = sorted(self._tenants)[:2]
        self._named, self._tenants = {t: self._tenants[t] for t in least}, {}
        return tuple(least)

    def take_tenant_names(self) -> dict[int, str]:
        """As the native take_tenant_names, called after take_tenants: their names."""
        taken, self._named = self._named, {}
        return taken

    def take_identities(self) -> dict:
        """As the native take_identities: {packed: text} parsed since the last call."""
        taken, self._identities = self._identities, {}
        return taken

    def _recover(self, buf: bytes, p: int, final: bool):
        """(row, next record) of a record with unescaped quotes, from the known field
        count (most fields first); (None, None) if no count fits."""
        d = self.dialect
        nl = buf.find(b"\n", p)
        if nl < 0 and not final:
            return None, None
        line_end = nl if nl >= 0 else len(buf)
        if line_end > p and buf[line_end - 1] == 0x0D:
            line_end -= 1
        line = buf[p:line_end]
        for want in range(d["max_cols"], d["min_cols"] - 1, -1):
            fields = split_quoted(line, d["delimiter"], d["quote"], want)
            if fields is None:
                continue
            status, _, row = extract(line, fields, d, self.zone, self.country_code,
                                     self.min_ring_us, self.feed_id, *self.vocab)
            if status == 0:
                return row, (nl + 1 if nl >= 0 else len(buf))
        return None, None

    def salvage(self, raw: bytes):
        """As the native CdrParser.salvage: (dialled line, line that rang, start us or
        None, hunt pilot, members) of a rejected record; None if it is not an incoming
        call."""
        d, cc = self.dialect, self.country_code
        keep = max(3, 1 + max(v for k, v in d.items() if k.startswith("c_")))
        status, fields, _, _ = tokenize(bytes(raw), 0, True, bool(d["lenient_quotes"]),
                                        d["delimiter"], d["quote"], bool(d["escaped"]))
        if status == 0:      # well-formed CSV (only a value was bad): fields where they belong
            tokens = [value if k < keep else b"" for k, (value, _) in enumerate(fields)]
        else:
            tokens = [_unquote(t, d["quote"]) for t in bytes(raw).split(bytes([d["delimiter"]]))]
        n = len(tokens)
        if 0 <= d["c_direction"] < n and tokens[d["c_direction"]].lower().startswith(b"originating"):
            return None
        if 0 <= d["c_method"] < n and tokens[d["c_method"]] != b"INVITE":
            return None           # a transaction row of a BYE (or another method)
        called = next((v for c in _candidates(d["c_called"], n, d["max_cols"])
                       if (v := numbers.normalize(tokens[c], cc))), 0)
        rang = 0
        column = d["c_channel"] if d["c_channel"] >= 0 else d["c_final"]
        for c in _candidates(column, n, d["max_cols"]):
            v = (channel_number(tokens[c], cc) if d["c_channel"] >= 0
                 else numbers.normalize(tokens[c], cc))
            if v:
                rang = v
                break
        if called == 0:
            called, rang = rang, 0
        if rang == called:
            rang = 0
        pilot = 0
        for c in _candidates(d["c_hunt"], n, d["max_cols"]):
            if token := tokens[c].strip():
                pilot = numbers.normalize(token, cc) or called
                break
        if pilot == 0 and any(tokens[c].strip() == b"7" for c in _candidates(d["c_pattern"], n, d["max_cols"])):
            pilot = called
        members: tuple[int, ...] = ()
        for c in (_candidates(d["c_app"], n, d["max_cols"]) if pilot == 0 else [])[:1]:
            app = tokens[c].lower()
            if app == b"queue":
                # its dialled line, else the member that answered; -1: at no number
                pilot = called or -1
            elif app == b"dial":
                for c2 in _candidates(d["c_data"], n, d["max_cols"])[:1]:
                    members = dial_members(dial_devices(tokens[c2]), cc)
        if len(members) < 2:
            members = ()
        elif pilot == 0:
            pilot = called or rang or members[0]
        for role in ("c_start", "c_end"):
            for c in _candidates(d[role], n, d["max_cols"]):
                status, when = _time(d["time_kind"], tokens[c], self.zone)
                if status == 0:
                    return called, rang, when, pilot, members
        return called, rang, None, pilot, members

    def feed(self, buffer, final: bool = False):
        buf = bytes(buffer)
        end = len(buf)
        p = 0
        rows, rejects = [], []
        if self.offset == 0 and not self.skipping and end > 0:
            if buf.startswith(BOM):
                p = 3
            elif end < 3 and not final and BOM.startswith(buf):
                buf, end = b"", 0    # too few bytes to tell yet: consume nothing
        if self.zeros:
            while p < end and buf[p] == 0:
                p += 1
            self.zeros = p == end and not final
        if self.skipping:
            nl = buf.find(b"\n", p)
            zero_at, undecided = _zero_block(buf, p, nl if nl >= 0 else end, final)
            if zero_at >= 0:
                p, self.skipping = zero_at, False
            elif nl >= 0:
                p, self.skipping = nl + 1, False
            else:
                p = undecided if undecided >= 0 else end
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
            if buf.startswith(BOM, p):      # files joined, each saved with a mark
                p += 3
                continue
            if buf[p] == 0:
                q = p
                while q < end and buf[q] == 0:
                    q += 1
                if q - p >= ZERO_BLOCK:     # zeros where records were: one reject
                    self.record += 1
                    rejects.append((self.record, self.offset + p, REASONS[ERR_ZEROS], b""))
                    p = q
                    self.zeros = q == end and not final
                    continue
                if q == end and not final:
                    break
            status, fields, rec_end, nxt = tokenize(buf, p, final, bool(self.dialect["lenient_quotes"]),
                                                    self.dialect["delimiter"], self.dialect["quote"],
                                                    bool(self.dialect["escaped"]))
            if status == NEED_MORE:
                break
            detail = 0
            if status == 0 and self.dialect["markers"] and _is_marker(fields):
                self.record += 1
                self.markers += 1
                p = nxt
                continue
            if status == 0:
                status, detail, row = extract(buf[p:rec_end], fields, self.dialect, self.zone,
                                              self.country_code, self.min_ring_us, self.feed_id,
                                              *self.vocab)
            self.record += 1
            if status != 0 and self.dialect["lenient_quotes"]:
                row, nxt = self._recover(buf, p, final)
                if row is not None:
                    status = 0
            if status == 0:
                if "_identity" in row:
                    self._identities[row["calling"]] = row.pop("_identity")
                row["offset"] = self.offset + p
                row["record"] = self.record
                if "_tenant" in row:
                    tenant, name = row.pop("_tenant")
                    self._tenants.setdefault(tenant, name)
                if "_activated" in row:
                    self._activations.append((*row.pop("_activated"), row["record"], row["offset"]))
                if "_hunt" in row:
                    self._hunts.append((row["start_us"], row["call_id"], row.pop("_hunt"),
                                        row["final"], 0))
                if "_queue" in row:
                    self._hunts.append((row["start_us"], row["call_id"], row.pop("_queue"),
                                        row["final"], 0))
                if "_dial" in row and len(members := dial_members(row.pop("_dial"), self.country_code)) >= 2:
                    self._hunts.append((row["start_us"], row["call_id"], row["called"], row["final"],
                                        len(members)))
                    self._hunt_members += members
                rows.append(row)
                p = nxt
                continue
            nl = buf.find(b"\n", p)
            if nl >= 0 and rec_end is not None and rec_end > nl:
                status = ERR_UNTERMINATED   # a quote ran past its line into a bad record
            zero_at, undecided = _zero_block(buf, p, nl if nl >= 0 else end, final)
            if zero_at < 0 <= undecided and undecided - p <= MAX_RECORD:
                self.record -= 1
                break
            stop = zero_at if zero_at >= 0 else end if nl < 0 else nl
            if stop - p > MAX_RECORD:       # past what is kept: rejected as that
                status, detail = ERR_TOO_LONG, 0
            elif zero_at >= 0:
                status, detail = ERR_CUT_BY_ZEROS, 0
            if zero_at < 0 and nl < 0 and not final and end - p <= MAX_RECORD:
                self.record -= 1
                break
            raw = buf[p:stop]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            rejects.append((self.record, self.offset + p,
                            REASONS[status].format(detail=detail, expected=self.expected_fields),
                            raw[:MAX_RECORD]))
            if zero_at >= 0:
                p = zero_at
            elif nl < 0:
                if not final:
                    self.skipping = True
                p = undecided if undecided >= 0 else end
            else:
                p = nl + 1
        self.offset += p
        columns = {name: np.array([r[name] for r in rows], dtype=dtype)
                   for name, dtype in COLUMNS}
        return columns, rejects, p
