"""The reference parser's record level: tokenizing a record, reading its times, numbers,
dispositions and presentation, and mapping it to the canonical row (extract). Mirrors
ext/_parse.pyx function for function; the parser loop is in parsing.reference.
"""
from __future__ import annotations

import calendar
import re

from ..errors import REJECT_REASONS
from . import numbers, timezones
from .formats import (
    CAUSES_SPLIT,
    DK_ASTERISK,
    DK_CUCM,
    DK_Q850_NAME,
    DK_VOCABULARY,
    PK_ASTERISK_USERFIELD,
    PK_PUBLIC_PRIVATE,
    PK_SIP_PRIVACY,
    PK_VOCABULARY,
    TIME_EPOCH,
    TIME_LOCAL,
    Disposition,
    Presentation,
)
from .reference_channels import channel_number, clid_number, dial_devices
from .reference_dispositions import (
    CAUSES_REACHING_NO_PHONE,
    DISPOSITIONS,
    NAMES_REACHING_NO_PHONE,
    RANG_UNANSWERED,
    cause_disposition,
    late_failure,
    late_refusal,
    may_have_rung,
    q850_name_disposition,
)

MAX_RECORD = 65536
ZERO_BLOCK = 8     # NUL bytes in a row that are zeros where records were, no record's
MAX_FIELDS = 1024
NAME_SEPARATORS = 2   # `","` a recovered FreeSWITCH caller name may hold; more: a record's

REASONS = REJECT_REASONS   # shared with the native parser: one table of messages
(ERR_FIELD_COUNT, ERR_UNTERMINATED, ERR_AFTER_QUOTE, ERR_QUOTE_UNQUOTED, ERR_CR, ERR_NUL,
 ERR_TOO_LONG, ERR_TIMESTAMP, ERR_DURATION, ERR_DISPOSITION, ERR_CAUSE, ERR_ZEROS,
 ERR_CUT_BY_ZEROS) = range(1, 14)
NEED_MORE = -1

_MASK64 = (1 << 64) - 1


def hash_bytes(h: int, data: bytes) -> int:
    for byte in data:
        h = ((h ^ byte) * 1099511628211) & _MASK64
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _MASK64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _MASK64
    return h ^ (h >> 31)


def tokenize(buf: bytes, r: int, final: bool, lenient: bool = False, delim: int = 0x2C,
             quote: int = 0x22, escaped: bool = False):
    """Return (status, fields, record_end, next_record); fields are (bytes, quoted).

    On an error, record_end is where the error was found. lenient: quotes inside
    values are not doubled; a quote ends a field only before a comma or line end.
    escaped: no field is quoted; the quote byte makes the next byte data (kept)."""
    end = len(buf)
    p = r
    fields = []
    while True:
        if lenient:
            s = p
            while s < end and buf[s] == 0x20:
                s += 1
            if s < end and buf[s] == quote:
                p = s
        if p < end and buf[p] == quote and not escaped:
            q = p + 1
            while True:
                q = buf.find(bytes([quote]), q)
                if q < 0:
                    if not final:
                        return (ERR_TOO_LONG if end - r > MAX_RECORD else NEED_MORE), None, end, None
                    return ERR_UNTERMINATED, None, end, None
                if q + 1 == end and not final:
                    return NEED_MORE, None, None, None
                if lenient:
                    if q + 1 < end and buf[q + 1] not in (delim, 0x0A, 0x0D):
                        q += 1
                        continue
                elif q + 1 < end and buf[q + 1] == quote:
                    q += 2
                    continue
                break
            fields.append((buf[p + 1:q], True))
            p = q + 1
            if p < end and buf[p] not in (delim, 0x0A, 0x0D):
                return ERR_AFTER_QUOTE, None, p, None
        else:
            s = p
            while p < end and buf[p] not in (delim, 0x0A, 0x0D):
                if buf[p] == quote:
                    if escaped:     # the escaped byte is data; a line end stays one
                        p += 2 if p + 1 < end and buf[p + 1] not in (0x0A, 0x0D) else 1
                        continue
                    return ERR_QUOTE_UNQUOTED, None, p, None
                p += 1
            fields.append((buf[s:p], False))
        if p >= end:
            if not final:
                return (ERR_TOO_LONG if end - r > MAX_RECORD else NEED_MORE), None, end, None
            rec_end, nxt = end, end
            break
        c = buf[p]
        if c == delim:
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


def _date_time(y, mo, d, h, mi, sec, zone):
    if not (timezones.MIN_YEAR <= y <= timezones.MAX_YEAR) or not (1 <= mo <= 12):
        return None
    if not (1 <= d <= calendar.monthrange(y, mo)[1]) or h > 23 or mi > 59 or sec > 59:
        return None
    return timezones.local_to_utc_seconds(y, mo, d, h, mi, sec, zone) * 1_000_000


def _digits(text: str) -> bool:
    return len(text) > 0 and all("0" <= c <= "9" for c in text)


def _timestamp(text: bytes, zone: str):
    s = text.decode("latin-1")
    if len(s) != 19 or s[4] != "-" or s[7] != "-" or s[10] != " " or s[13] != ":" or s[16] != ":":
        return None
    parts = (s[0:4], s[5:7], s[8:10], s[11:13], s[14:16], s[17:19])
    if not all(_digits(x) for x in parts):
        return None
    y, mo, d, h, mi, sec = (int(x) for x in parts)
    return _date_time(y, mo, d, h, mi, sec, zone)


def _time(kind: int, text: bytes, zone: str):
    """(status, microseconds): 0 ok, 1 none, -1 bad (as the native parse_time)."""
    if not text:
        return 1, 0
    if kind == TIME_LOCAL:
        us = _timestamp(text, zone)
        return (-1, 0) if us is None else (0, us)
    if kind == TIME_EPOCH:             # seconds[.f{1,6}]
        whole, dot, fraction = text.partition(b".")
        if dot and not (1 <= len(fraction) <= 6 and fraction.isdigit()):   # ASCII digits
            return -1, 0
        v = _uint(whole)
        if v is None or v >= 4102444800:
            return -1, 0
        return (1, 0) if v == 0 else (0, v * 1_000_000 + (int(fraction.ljust(6, b"0")) if dot else 0))
    s = text.decode("latin-1")       # TIME_COMPACT
    if len(s) < 14 or (len(s) > 14 and (s[14] != "." or len(s) == 15 or len(s) > 21)):
        return -1, 0
    if not _digits(s[:14]) or (len(s) > 15 and not _digits(s[15:])):
        return -1, 0
    us = _date_time(int(s[0:4]), int(s[4:6]), int(s[6:8]), int(s[8:10]), int(s[10:12]),
                    int(s[12:14]), zone)
    if us is None:
        return -1, 0
    return 0, us + (int(s[15:].ljust(6, "0")) if len(s) > 15 else 0)


def _uint(text: bytes):
    if not 0 < len(text) <= 12 or not all(0x30 <= c <= 0x39 for c in text):
        return None
    return int(text)


def _privacy_withholds_id(value: bytes) -> bool:
    """'id' (RFC 3325), 'user' or 'header' (RFC 3323) as a token of the SIP Privacy value,
    tokens separated by ';' or spaces."""
    return any(token.lower() in (b"id", b"user", b"header") for token in re.split(rb"[; ]", value))


def _hash_chain(seed: int, tag: bytes, data: bytes) -> int:
    """The native parser finalises after each piece; mirror it exactly."""
    return hash_bytes(hash_bytes(seed, tag), data)


def extract(raw: bytes, fields, d: dict, zone: str, cc: int, min_ring_us: int, feed: int,
            dispositions: dict | None = None, presentations: dict | None = None):
    """(status, detail, row) for one tokenized record, as the dialect d maps it."""
    if b"\x00" in raw:
        return ERR_NUL, 0, None
    nf = len(fields)
    if not d["min_cols"] <= nf <= d["max_cols"]:
        return ERR_FIELD_COUNT, nf, None

    def col(name):
        c = d[f"c_{name}"]
        return fields[c][0] if 0 <= c < nf else b""

    status, start = _time(d["time_kind"], col("start"), zone)
    if status != 0:
        return ERR_TIMESTAMP, d["c_start"] + 1, None
    answer = 0
    if d["c_answer"] >= 0:
        status, answer = _time(d["time_kind"], col("answer"), zone)
        if status < 0:
            return ERR_TIMESTAMP, d["c_answer"] + 1, None
    end = start
    untimed = d["c_end"] < 0 and d["c_duration"] < 0     # no time the call lasted
    if d["c_end"] >= 0:
        status, end = _time(d["time_kind"], col("end"), zone)
        if status < 0 or (status == 1 and d["end_required"]):
            return ERR_TIMESTAMP, d["c_end"] + 1, None
        if status == 1:
            end = start
            untimed = True        # no end given: no time the call lasted
    for name in ("duration", "billsec"):
        if d[f"c_{name}"] >= 0 and _uint(col(name)) is None:
            return ERR_DURATION, d[f"c_{name}"] + 1, None
    if d["c_end"] < 0 and d["c_duration"] >= 0:
        end = start + int(col("duration")) * 1_000_000   # no end column: end - start
    causes = {}
    for name in ("dest_cause", "orig_cause"):
        causes[name] = 0
        if d[f"c_{name}"] >= 0 and col(name):
            value = _uint(col(name))
            if value is None:
                return ERR_CAUSE, d[f"c_{name}"] + 1, None
            causes[name] = value
    reached_none = False     # a cause that says the call reached no phone of the line
    if d["disp_kind"] == DK_ASTERISK:
        disp = DISPOSITIONS.get(col("disposition"))
    elif d["disp_kind"] == DK_CUCM:
        if causes["dest_cause"] in CAUSES_SPLIT or causes["orig_cause"] in CAUSES_SPLIT:
            disp = Disposition.TRANSFERRED
        elif answer:
            disp = Disposition.ANSWERED
        elif causes["dest_cause"] == 0 and causes["orig_cause"] == 16:
            disp = Disposition.CANCELLED
        else:
            disp = cause_disposition(causes["dest_cause"])
            reached_none = causes["dest_cause"] in CAUSES_REACHING_NO_PHONE
    elif d["disp_kind"] == DK_VOCABULARY:
        disp = (dispositions or {}).get(col("disposition"))
        if disp == Disposition.ANSWERED and d["c_answer"] >= 0 and not answer:
            disp = None
    elif d["disp_kind"] == DK_Q850_NAME:
        disp = q850_name_disposition(col("disposition"), answer != 0, bool(col("progress")))
        reached_none = disp == Disposition.FAILED and col("disposition") in NAMES_REACHING_NO_PHONE
    else:
        indicator = col("disposition")
        if indicator.lower() == b"yes":
            disp = Disposition.ANSWERED
        elif indicator.lower() == b"yes-postredirection":   # forwarded, answered elsewhere
            disp = Disposition.ANSWERED_ELSEWHERE
        elif indicator == b"No":
            disp = (Disposition.CANCELLED if causes["dest_cause"] == 16
                    else cause_disposition(causes["dest_cause"]))
            reached_none = causes["dest_cause"] in CAUSES_REACHING_NO_PHONE
        else:
            disp = None
    if disp is None:
        return ERR_DISPOSITION, d["c_disposition"] + 1, None
    if disp not in (Disposition.ANSWERED, Disposition.TRANSFERRED):
        answer = 0        # voicemail or an IVR answered the caller's channel, not the line
    elif d["c_answer"] < 0 and d["c_billsec"] >= 0:
        # no answer column (Asterisk's database table): billsec is the end less the answer
        answer = max(start, end - int(col("billsec")) * 1_000_000)

    pres = Presentation.ALLOWED
    caller = col("asserted") or col("calling")    # P-Asserted-Identity wins over From
    calling = numbers.normalize(caller, cc)
    if calling == 0 and d["c_clid"] >= 0:
        calling = clid_number(col("clid"), cc)
        if calling and caller and numbers.identity_text(caller) is None:
            pres = Presentation.RESTRICTED
    identity = None
    if calling == 0:
        identity = numbers.identity_text(caller)    # a SIP user the switch authenticated
        if identity is not None:
            calling = numbers.pack_identity(identity)
    if calling == 0:
        pres = Presentation.UNAVAILABLE
    called = dialled = numbers.normalize(col("called"), cc)
    redirecting = numbers.normalize(col("redirecting"), cc) if d["c_redirecting"] >= 0 else 0
    if redirecting == 0 and d["c_redirecting2"] >= 0:
        redirecting = numbers.normalize(col("redirecting2"), cc)
    final = 0
    rang = True
    if d["c_channel"] >= 0:
        final = channel_number(col("channel"), cc)
        if not col("channel"):
            rang = False              # no destination channel: nothing rang
        elif final == 0 and col("srcchannel").startswith(b"Local/") and len(col("srcchannel")) > 6:
            rang = False              # a call placed through a Local channel to a trunk
        # a Local channel is no phone: what it dialled is its other half's own record, so
        # a failure to it (the Congestion half of a Local pair) is no late failure
        reached_none = reached_none or (col("channel").startswith(b"Local/")
                                        and len(col("channel")) > 6)
        if called == 0:
            called = final            # a ring group member: the phone in the channel rang
    elif d["c_final"] >= 0:
        final = numbers.normalize(col("final"), cc)
    alerted = bool(col("progress"))
    shows_none = (0 <= d["c_progress"] < nf and not alerted and bool(d["progress_complete"])
                  and (d["c_early_media"] < 0 or (d["c_early_media"] < nf and not col("early_media"))))
    if d["disp_kind"] == DK_VOCABULARY and shows_none and disp in RANG_UNANSWERED:
        rang = False              # the record logs alerting (Kamailio's rang) and shows none
    if d["pres_kind"] == PK_ASTERISK_USERFIELD and d["c_presentation"] < nf:
        uf = col("presentation").lower()
        if uf.startswith(b"prohib"):
            if pres == Presentation.ALLOWED:
                pres = Presentation.RESTRICTED
        elif uf.startswith(b"unavailable"):
            pres = Presentation.UNAVAILABLE
        elif uf.startswith(b"allowed"):
            pass
        elif redirecting == 0:
            redirecting = numbers.normalize(col("presentation"), cc)
    elif d["pres_kind"] == PK_PUBLIC_PRIVATE:
        if col("presentation").lower().startswith(b"priv") and pres == Presentation.ALLOWED:
            pres = Presentation.RESTRICTED
    elif d["pres_kind"] == PK_VOCABULARY:
        value = (presentations or {}).get(col("presentation"))
        if value == Presentation.UNAVAILABLE or (value == Presentation.RESTRICTED
                                                 and pres == Presentation.ALLOWED):
            pres = Presentation(value)
    elif d["pres_kind"] == PK_SIP_PRIVACY:
        if _privacy_withholds_id(col("presentation")) and pres == Presentation.ALLOWED:
            pres = Presentation.RESTRICTED
    if redirecting == called and final in (0, called):
        redirecting = 0     # kept when it rang elsewhere: the dialled line forwarded it
    if redirecting == calling:
        redirecting = 0     # no caller forwards its own call: a userfield keeping the caller id
    if final == called:
        final = 0
    line = final or called                       # the switch user's own line
    activated = 0
    if d["c_cot"] >= 0:
        status, when = _time(d["time_kind"], col("cot"), zone)
        activated = when if status == 0 else 0
    if d["c_comment"] >= 0 and b"callFlag=MALICIOUS" in col("comment"):
        activated = end                          # malicious call id, flagged during the call
    incoming = True
    if d["c_direction"] >= 0 and not col("direction").lower().startswith(b"terminating"):
        called = redirecting = final = 0
        incoming = False
    if d["c_method"] >= 0 and col("method") != b"INVITE":
        called = redirecting = final = 0         # a BYE's row (or another method's): no call
        incoming = False
    seed = 14695981039346656037 ^ feed
    callid, leg = col("callid_peer") or col("callid"), col("dest_leg")
    if callid and leg not in (b"", b"0") and (disp == Disposition.TRANSFERRED or col("join") not in (b"", b"0")):
        # split off by a transfer, or joined to the line by one: the called party's leg
        call_id = hash_bytes(hash_bytes(_hash_chain(seed, b"l", callid), b"|"), leg)
    elif callid:
        call_id = _hash_chain(seed, b"u", callid)
        if d["c_callid2"] >= 0:
            call_id = hash_bytes(hash_bytes(call_id, b"|"), col("callid2"))
    else:
        call_id = _hash_chain(seed, b"r", raw)
    # a record that logs the line alerting (Kamailio's rang, FreeSWITCH's progress_stamp)
    # shows it received the call (R3), however it ended: a phone whose user rejects a
    # ringing call answers busy or declined; one that shows none never rang. Else (no such
    # column, or early media without ringing) its times decide (late_refusal), as they do
    # for a failure whose cause does not say it reached no phone (late_failure).
    if late_refusal(disp, alerted or shows_none, untimed, start, end):
        disp = Disposition.LATE_REFUSAL
    elif late_failure(disp, reached_none, alerted or shows_none, untimed, start, end):
        disp = Disposition.LATE_FAILURE
    # an end before the start (clocks apart) tells no ring time: it rang (fail closed). An
    # unknown end (FreeSWITCH's NORMAL_CLEARING unanswered: a dialplan's hangup after its
    # bridge) may have rung too, as a late refusal may: received, and traces fail closed
    received = called != 0 and rang and (disp == Disposition.ANSWERED or (
        (disp in RANG_UNANSWERED or alerted
         or disp in (Disposition.LATE_REFUSAL, Disposition.LATE_FAILURE, Disposition.TRANSFERRED)
         or (disp == Disposition.UNKNOWN and may_have_rung(shows_none, untimed, start, end)))
        and (end - start >= min_ring_us or end < start or untimed)))
    row = dict(start_us=start, answer_us=answer, end_us=end, calling=calling,
               presentation=int(pres), called=called, redirecting=redirecting, final=final,
               disposition=int(disp), received=received, call_id=call_id, feed=feed)
    if identity is not None:
        row["_identity"] = identity
    if activated and line:
        row["_activated"] = (line, activated)
    # the tenant a multi-tenant switch names the record's line of its own for (a BroadWorks
    # group within its provider, a FreeSWITCH domain's context), case aside; its name
    if d["c_tenant"] >= 0 and any(v and v >> 62 != numbers.E164 for v in (called, final)):
        tenant, scope, seed = col("tenant"), col("tenant_scope"), 14695981039346656037
        if tenant and (not d["tenant_domains"] or b"." in tenant):
            seed = hash_bytes(seed, scope.lower()) if d["c_tenant_scope"] >= 0 else seed
            row["_tenant"] = (hash_bytes(seed, tenant.lower()) or 1,
                              ((scope + b"/" if scope else b"") + tenant).decode("latin-1"))
    # a call through a hunt pilot rang its members' phones, of which the record names at
    # most the one that answered (huntPilotDN once a member answered; pattern usage 7)
    if received and (d["c_hunt"] >= 0 or d["c_pattern"] >= 0) and (
            pilot := numbers.normalize(col("hunt"), cc) or (called if col("pattern") == b"7" else 0)):
        row["_hunt"] = pilot
    # an Asterisk Dial to several devices at once rang them all; up to Asterisk 11 its
    # one record names at most one of them (dstchannel)
    elif received and d["c_app"] >= 0 and d["c_data"] >= 0 and col("app").lower() == b"dial" and (
            devices := dial_devices(col("data"))):
        row["_dial"] = devices
    # an Asterisk Queue rang its members, whom up to 11 the caller's one record does not
    # name but the one that answered, however it ended: its pilot is the number dialled
    # (not a record naming a phone that never rang: 12+ writes one per member tried)
    elif (incoming and d["c_app"] >= 0 and col("app").lower() == b"queue" and (received or not rang)
          and (end - start >= min_ring_us or end < start)):
        row["_queue"] = dialled
    return 0, 0, row
