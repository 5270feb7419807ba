"""Switch CDR bytes for generated calls: Asterisk (cdr_csv and cdr_custom), FreeSWITCH,
Cisco CUCM and BroadWorks, formatted columnwise with Arrow compute kernels, with the
quirks real files carry (quoted Latin-1 names, legs, unreadable records)."""
from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SynthError
from ..parsing import formats
from .traffic import DISPOSITIONS, FIRST, LAST, _stamp, _text


def format_asterisk(columns, lo: int, hi: int, zone: str = "UTC", width: int = 18) -> bytes:
    """Rows lo..hi as Asterisk cdr_csv bytes (strings quoted, answer empty when unanswered);
    width is the column count of the switch's configuration, 16 to 21."""
    if not 16 <= width <= 21:
        raise SynthError(f"an Asterisk cdr_csv row has 16 to 21 columns, not {width}")
    c = {k: v[lo:hi] for k, v in columns.items()}
    n = hi - lo
    pres = c["presentation"]
    number = _text(c["caller"])
    src = pc.if_else(pa.array(pres == 0), number,
                     pc.if_else(pa.array(pres == 1), pa.scalar(b"anonymous"), pa.scalar(b"")))
    first = pa.array(np.array(FIRST, dtype=object)[c["first"]], pa.binary())
    last = pa.array(np.array(LAST, dtype=object)[c["last"]], pa.binary())
    name = pc.replace_substring(pc.binary_join_element_wise(first, last, b" "), b'"', b'""')
    # a restricted caller's CDR often keeps the name too (only its display is withheld)
    named = (pres == 0) | ((pres == 1) & (c["first"] % 2 == 0))
    name = pc.if_else(pa.array(named), name, pa.scalar(b"Anonymous"))
    clid_number = pc.if_else(pa.array(pres == 2), pa.scalar(b""), number)
    line = _text(c["line"])
    seq = pc.cast(pc.utf8_lpad(pc.cast(pa.array(c["seq"]), pa.string()), 8, "0"), pa.binary())
    answered = c["answer"] != 0
    answer = pc.if_else(pa.array(answered), pc.binary_join_element_wise(
        b'"', _stamp(np.where(answered, c["answer"], c["start"]), zone), b'"', b""),
        pa.scalar(b""))
    uniqueid = pc.binary_join_element_wise(_text(c["start"]), b".", _text(c["seq"]), b"")
    redirecting = pc.if_else(pa.array(c["redirecting"] != 0), _text(c["redirecting"]),
                             pa.scalar(b""))
    Q = b'"'
    # each field as literal and column pieces; all are joined in one pass per row
    columns_ = [
        [Q, Q],                                                   # accountcode
        [Q, src, Q], [Q, line, Q], [b'"from-pstn"'],
        [b'"""', name, b'"" <', clid_number, b'>"'],              # clid
        [b'"PJSIP/trunk-', seq, Q],
        [b'"PJSIP/', _text(c["final"]), b"-", seq, Q],            # dstchannel
        [b'"Dial"'], [b'"PJSIP/', line, b',30,tT"'],
        [Q, _stamp(c["start"], zone), Q], [answer], [Q, _stamp(c["end"], zone), Q],
        [_text(c["end"] - c["start"])], [_text(c["billsec"])],
        [Q, pa.array(DISPOSITIONS[c["disposition"]], pa.binary()), Q],
        [b'"DOCUMENTATION"'], [Q, uniqueid, Q], [Q, redirecting, Q],
        [Q, Q], [Q, uniqueid, Q], [_text(c["seq"] % 1000)],
    ][:width]
    parts = []
    for i, field in enumerate(columns_):
        parts += ([b","] if i else []) + field
    return _join_rows(parts, n)


def add_legs_and_unreadable(data: bytes, rng, legs: float = 0.0, unreadable: float = 0.0) -> bytes:
    """Asterisk rows as real switches write them too: before a fraction `legs` of the
    answered calls, a ring-group leg of the same call (same uniqueid) that rang another
    phone unanswered; and a fraction `unreadable` of rows with a disposition no parser
    knows (their line and time can still be read: they must fail closed)."""
    out = []
    for row in data.splitlines(keepends=True):
        if legs and b'"ANSWERED"' in row and rng.random() < legs:
            fields = next(csv.reader([row.decode("latin-1")]))
            fields[6] = fields[6].replace("PJSIP/", "PJSIP/9", 1)     # another phone rang
            fields[10], fields[13], fields[14] = "", "0", "NO ANSWER"   # unanswered
            out.append(",".join(
                f if (i in (12, 13, 20) or (i == 10 and not f)) else '"' + f.replace('"', '""') + '"'
                for i, f in enumerate(fields)).encode("latin-1") + b"\n")
        if unreadable and rng.random() < unreadable:
            for good, bad in ((b'"ANSWERED"', b'"ANSWERD"'), (b'"NO ANSWER"', b'"NO ANSWR"'),
                              (b'"BUSY"', b'"BUSSY"'), (b'"FAILED"', b'"FAILD"'),
                              (b'"CONGESTION"', b'"CONGESTON"')):
                row = row.replace(good, bad)
        out.append(row)
    return b"".join(out)


# ------------------------------------------------------------------ FreeSWITCH, cdr_custom

FREESWITCH_CAUSES = np.array([b"NORMAL_CLEARING", b"NO_ANSWER", b"ORIGINATOR_CANCEL", b"USER_BUSY",
                              b"NORMAL_TEMPORARY_FAILURE", b"RECOVERY_ON_TIMER_EXPIRE"],
                             dtype=object)


def format_freeswitch(columns, lo: int, hi: int, zone: str = "UTC", width: int = 15) -> bytes:
    """mod_cdr_csv 'example' template (15 fields), or the compiled-in 'default' (13, with
    its stray space). Values are not escaped: quotes in names stay single."""
    if width not in (13, 15):
        raise SynthError("FreeSWITCH templates have 13 (default) or 15 (example) fields")
    c = {k: v[lo:hi] for k, v in columns.items()}
    pres = c["presentation"]
    first = pa.array(np.array(FIRST, dtype=object)[c["first"]], pa.binary())
    last = pa.array(np.array(LAST, dtype=object)[c["last"]], pa.binary())
    name = pc.if_else(pa.array(pres == 0), pc.binary_join_element_wise(first, last, b" "),
                      pa.scalar(b"Anonymous"))
    number = pc.if_else(pa.array(pres == 2), pa.scalar(b"anonymous"), _text(c["caller"]))
    answered = c["answer"] != 0
    answer = pc.if_else(pa.array(answered), _stamp(np.where(answered, c["answer"], c["start"]),
                                                   zone), pa.scalar(b""))
    uuid = pc.binary_join_element_wise(b"0c4a2b9e-08d1-11ef-9a3c-", _text(c["seq"] + 10**11), b"")
    cause = pa.array(FREESWITCH_CAUSES[c["disposition"]], pa.binary())
    values = [name, number, _text(c["line"]), b"public", _stamp(c["start"], zone), answer,
              _stamp(c["end"], zone), _text(c["end"] - c["start"]), _text(c["billsec"]), cause,
              uuid, b"", b"", b"PCMU", b"PCMU"][:width]
    parts = []
    for i, value in enumerate(values):
        sep = b"" if i == 0 else (b", " if width == 13 and i == 12 else b",")
        parts += [sep + b'"', value, b'"']
    return _join_rows(parts, hi - lo)


def format_asterisk_custom(columns, lo: int, hi: int, zone: str = "UTC") -> bytes:
    """Asterisk cdr_custom's legacy default mapping: all quoted but sequence."""
    rows = format_asterisk(columns, lo, hi, zone, width=21).splitlines()
    order = [4, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 16, 17, 20]
    out = []
    for row in rows:
        cells = next(csv.reader([row.decode("latin-1")]))
        quoted = ['"' + cells[i].replace('"', '""') + '"' for i in order[:-1]]
        out.append(",".join(quoted + [cells[order[-1]]]).encode("latin-1"))
    return b"\n".join(out) + b"\n"


# ------------------------------------------------------------------ Cisco Unified CM

CUCM_FIELDS = formats.CUCM_RELEASES
CUCM_INTEGERS = {
    "cdrRecordType", "globalCallID_callManagerId", "globalCallID_callId",
    "origLegCallIdentifier", "dateTimeOrigination", "origNodeId", "origSpan", "origIpAddr",
    "origCause_location", "origCause_value", "origPrecedenceLevel", "destLegIdentifier",
    "destNodeId", "destSpan", "destIpAddr", "destCause_location", "destCause_value",
    "destPrecedenceLevel", "dateTimeConnect", "dateTimeDisconnect", "duration",
    "origCalledPartyRedirectReason", "lastRedirectRedirectReason", "calledPartyPatternUsage"}
# synth disposition index (ANSWERED, NO ANSWER, CANCEL, BUSY, FAILED, CONGESTION) ->
# (origCause_value, destCause_value) of a call that was not connected
CUCM_CAUSES = np.array([[16, 16], [0, 19], [16, 0], [0, 17], [0, 41], [0, 34]])
BROADWORKS_CAUSES = np.array([b"016", b"019", b"016", b"017", b"041", b"034"], dtype=object)


def format_cucm(columns, lo: int, hi: int, fields: int = 129) -> bytes:
    """Rows lo..hi as CUCM CDR records: integers unquoted, strings quoted, UTC epoch times."""
    names = CUCM_FIELDS[fields]
    c = {k: v[lo:hi] for k, v in columns.items()}
    pres = c["presentation"]
    d = c["disposition"]
    answered = c["answer"] != 0
    causes = np.where(answered[:, None], [16, 16], CUCM_CAUSES[d])
    values = {
        "cdrRecordType": b"1", "globalCallID_callManagerId": b"1",
        "globalCallID_callId": _text(c["seq"] + 1000), "origLegCallIdentifier": _text(c["seq"]),
        "dateTimeOrigination": _text(c["start"]),
        "callingPartyNumber": pc.if_else(pa.array(pres == 2), pa.scalar(b""), _text(c["caller"])),
        "origCause_value": _text(causes[:, 0]), "destCause_value": _text(causes[:, 1]),
        "originalCalledPartyNumber": _text(c["line"]), "finalCalledPartyNumber": _text(c["final"]),
        "dateTimeConnect": _text(c["answer"]), "dateTimeDisconnect": _text(c["end"]),
        "lastRedirectDn": pc.if_else(pa.array(c["redirecting"] != 0), _text(c["redirecting"]),
                                     pa.scalar(b"")),
        "duration": _text(c["billsec"]), "origDeviceName": b"SEP001122334455",
    }
    parts = []
    for i, name in enumerate(names):
        quoted = name not in CUCM_INTEGERS
        value = values.get(name, b"" if quoted else b"0")
        parts += ([b","] if i else []) + ([b'"', value, b'"'] if quoted else [value])
    return _join_rows(parts, hi - lo)


def cucm_header(fields: int = 129) -> bytes:
    names = CUCM_FIELDS[fields]
    types = [("INTEGER" if n in CUCM_INTEGERS else "VARCHAR(50)") for n in names]
    types[names.index("pkid")] = "UNIQUEIDENTIFIER"
    return (",".join(f'"{n}"' for n in names) + "\n" + ",".join(types) + "\n").encode()


# ------------------------------------------------------------------ BroadWorks

BROADWORKS_FIELDS = formats.BROADWORKS_COLUMNS


def _compact(seconds, millis):
    s = _stamp(seconds, "UTC")           # 'YYYY-MM-DD HH:MM:SS' -> 'YYYYMMDDhhmmss.mmm'
    parts = [pc.binary_slice(s, a, b) for a, b in ((0, 4), (5, 7), (8, 10), (11, 13), (14, 16),
                                                  (17, 19))]
    frac = pc.cast(pc.utf8_lpad(pc.cast(pa.array(millis), pa.string()), 3, "0"), pa.binary())
    return pc.binary_join_element_wise(*parts, b".", frac, b"")


def format_broadworks(columns, lo: int, hi: int) -> bytes:
    """Rows lo..hi as BroadWorks terminating records (unquoted, GMT compact times)."""
    c = {k: v[lo:hi] for k, v in columns.items()}
    n = hi - lo
    pres = c["presentation"]
    answered = c["answer"] != 0
    millis = np.zeros(n, np.int64)     # whole seconds: the same instants as other formats
    user = pc.binary_join_element_wise(b"+1", _text(c["final"]), b"")
    values = {
        "recordId": pc.binary_join_element_wise(b"00", _text(c["seq"] + 10**9), b"", b""),
        "serviceProvider": b"sp1", "type": b"Normal", "userNumber": user,
        "groupNumber": b"grp1", "direction": b"Terminating",
        "callingNumber": pc.if_else(pa.array(pres == 2), pa.scalar(b""),
                                    pc.binary_join_element_wise(b"+1", _text(c["caller"]), b"")),
        "callingPresentationIndicator": pc.if_else(pa.array(pres == 1), pa.scalar(b"Private"),
                                                   pa.scalar(b"Public")),
        "calledNumber": _text(c["line"]),
        "startTime": _compact(c["start"], millis), "userTimeZone": b"1-000000",
        "answerIndicator": pc.if_else(pa.array(answered), pa.scalar(b"Yes"), pa.scalar(b"No")),
        "answerTime": pc.if_else(pa.array(answered), _compact(np.where(answered, c["answer"],
                                                                       c["start"]), millis),
                                 pa.scalar(b"")),
        "releaseTime": _compact(c["end"], millis),
        "terminationCause": pc.if_else(pa.array(answered), pa.scalar(b"016"), pa.array(
            BROADWORKS_CAUSES[c["disposition"]], pa.binary())),
        "originalCalledNumber": pc.if_else(pa.array(c["redirecting"] != 0), _text(c["line"]),
                                           pa.scalar(b"")),
        "redirectingNumber": pc.if_else(pa.array(c["redirecting"] != 0), _text(c["redirecting"]),
                                        pa.scalar(b"")),
        "chargeIndicator": b"y",
    }
    parts = []
    for i, name in enumerate(BROADWORKS_FIELDS):
        parts += ([b","] if i else []) + [values.get(name, b"")]
    return _join_rows(parts, n)


def broadworks_header() -> bytes:
    return (",".join(BROADWORKS_FIELDS) + "\n").encode()


SIP_FINALS = np.array([b"200|OK", b"480|Temporarily Unavailable", b"487|Request Terminated",
                       b"486|Busy Here", b"500|Server Internal Error",
                       b"503|Service Unavailable"], dtype=object)   # by synth disposition


# called_domain: none, as the shipped configuration logs a call sent to the proxy's own
# address (a proxy of one domain)
DOMAIN = b""


def format_kamailio(columns, lo: int, hi: int) -> bytes:
    """Rows lo..hi as Kamailio's acc_cdrs written by db_flatstore with the configuration
    cdrtrace ships (docs/kamailio/kamailio.cfg): '|' between values, epoch seconds. A
    restricted caller is 'anonymous' in From with the number in P-Asserted-Identity and
    Privacy: id; an unavailable one is 'anonymous' alone; a forwarded call names the
    forwarding line in Diversion."""
    return _kamailio(columns, lo, hi, b"|", b"@127.0.0.1")


KAMAILIO_DBTEXT_HEADER = (
    b"id(int,auto) start_time(int) end_time(int) duration(double) callid(string,null) "
    b"invite_time(string,null) src_user(string,null) pai(string,null) privacy(string,null) "
    b"dst_ouser(string,null) dst_user(string,null) diversion(string,null) "
    b"sip_code(string,null) sip_reason(string,null) rang(string,null) "
    b"called_domain(string,null)\n")


def format_kamailio_dbtext(columns, lo: int, hi: int) -> bytes:
    """Rows lo..hi as the acc_cdrs table db_text writes (after KAMAILIO_DBTEXT_HEADER):
    ':' between values, an id first, and call ids of a host on IPv6 ('\\:' inside them)."""
    ids = _text(columns["seq"][lo:hi] + 1)
    return _kamailio(columns, lo, hi, b":", b"@[2001\\:db8\\:\\:1]", first=ids)


def _kamailio(columns, lo: int, hi: int, delimiter: bytes, host: bytes, first=None) -> bytes:
    c = {k: v[lo:hi] for k, v in columns.items()}
    pres = c["presentation"]
    answered = c["answer"] != 0
    number = _text(c["caller"])
    forwarded = pa.array(c["redirecting"] != 0)
    values = [] if first is None else [first]
    values += [
        _text(np.where(answered, c["answer"], c["end"])),      # the dialog confirmed, else ended
        _text(c["end"]),
        pc.binary_join_element_wise(_text(np.where(answered, c["end"] - c["answer"], 0)),
                                    b".000000", b""),
        pc.binary_join_element_wise(b"kc", _text(c["seq"] + 10**11), host, b""),
        _text(c["start"]),
        pc.if_else(pa.array(pres == 0), number, pa.scalar(b"anonymous")),
        pc.if_else(pa.array(pres == 1), number, pa.scalar(b"")),
        pc.if_else(pa.array(pres == 1), pa.scalar(b"id"), pa.scalar(b"")),
        _text(c["line"]), _text(c["final"]),
        pc.if_else(forwarded, _text(np.where(c["redirecting"] != 0, c["redirecting"], 0)),
                   pa.scalar(b"")),
        pa.array([f.replace(b"|", delimiter) for f in SIP_FINALS[c["disposition"]]], pa.binary()),
        _rang(c), DOMAIN]
    parts: list = []
    for i, value in enumerate(values):
        parts += ([delimiter] if i else []) + [value]
    return _join_rows(parts, hi - lo)


def format_kamailio_acc(columns, lo: int, hi: int) -> bytes:
    """Rows lo..hi as the acc module's transaction rows by db_flatstore (tables acc and
    missed_calls, one file here): an INVITE row per call at its final reply (an answered
    call's when it was answered, another's when it ended), and a BYE row after each
    answered call, which is no call."""
    c = {k: v[lo:hi] for k, v in columns.items()}
    pres = c["presentation"]
    answered = c["answer"] != 0
    number = _text(c["caller"])
    callid = pc.binary_join_element_wise(b"kc", _text(c["seq"] + 10**11), b"@127.0.0.1", b"")
    parties = [pc.if_else(pa.array(pres == 0), number, pa.scalar(b"anonymous")),
               pc.if_else(pa.array(pres == 1), number, pa.scalar(b"")),
               pc.if_else(pa.array(pres == 1), pa.scalar(b"id"), pa.scalar(b"")),
               _text(c["line"]), _text(c["final"]),
               pc.if_else(pa.array(c["redirecting"] != 0),
                          _text(np.where(c["redirecting"] != 0, c["redirecting"], 0)),
                          pa.scalar(b"")),
               _rang(c), DOMAIN]
    invite = [b"INVITE|f", _text(c["seq"]), b"|t", _text(c["seq"]), b"|", callid, b"|",
              pa.array(SIP_FINALS[c["disposition"]], pa.binary()), b"|",
              _text(np.where(answered, c["answer"], c["end"]))]
    bye = [b"BYE|f", _text(c["seq"]), b"|t", _text(c["seq"]), b"|", callid, b"|200|OK|",
           _text(c["end"])]
    for value in parties:
        invite += [b"|", value]
        bye += [b"|", value]
    rows = _join_rows(invite, hi - lo).splitlines(keepends=True)
    byes = _join_rows(bye, hi - lo).splitlines(keepends=True)
    return b"".join(row + (byes[i] if answered[i] else b"") for i, row in enumerate(rows))


def _rang(c) -> pa.Array:
    """The shipped configuration's `rang` column: '1' once the phone alerted (every
    answered, unanswered or cancelled call here), empty for the others."""
    return pc.if_else(pa.array(c["disposition"] <= 2), pa.scalar(b"1"), pa.scalar(b""))


def _join_rows(parts, n: int) -> bytes:
    """One row per element from literal and column pieces (adjacent literals merged), each
    row ending in a newline; the rows' bytes back to back."""
    pieces: list = []
    for piece in [*parts, b"\n"]:
        if isinstance(piece, bytes) and pieces and isinstance(pieces[-1], bytes):
            pieces[-1] += piece
        else:
            pieces.append(piece)
    rows = pc.cast(pc.binary_join_element_wise(*pieces, b""), pa.large_binary())
    offsets = np.frombuffer(rows.buffers()[1], np.int64, n + 1, rows.offset * 8)
    return rows.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]]
