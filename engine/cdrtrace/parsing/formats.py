"""The canonical call record every switch format is parsed into, and the format registry."""
from __future__ import annotations

import dataclasses
import enum
import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

from ..errors import NativeModuleError, ParseError
from .native import _parse as _native

BOM = b"\xef\xbb\xbf"   # a UTF-8 byte-order mark: some exports start with one; not data


class Presentation(enum.IntEnum):
    ALLOWED = 0
    RESTRICTED = 1    # number present, display withheld: traceable
    UNAVAILABLE = 2   # no number reached the switch: untraceable


class Disposition(enum.IntEnum):
    ANSWERED = 1
    NO_ANSWER = 2
    CANCELLED = 3     # the caller hung up while it rang
    BUSY = 4
    FAILED = 5
    CONGESTION = 6
    REJECTED = 7
    UNALLOCATED = 8
    UNKNOWN = 9
    UNREADABLE = 10   # a record that could not be read: only its line and time are known
    ANSWERED_ELSEWHERE = 11   # it rang; another phone (or device of the line) took the call
    # busy or rejected LATE_REFUSAL_US or more after it began, in a record that logs no
    # alerting: its user may have refused it while it rang (received; traces fail closed)
    LATE_REFUSAL = 12
    # failed (not busy, refused or an unknown number; not a cause that reached no phone)
    # LATE_REFUSAL_US or more after it began, in a record that logs no alerting: a phone
    # or proxy may have ended its ringing so (received; traces fail closed)
    LATE_FAILURE = 13
    # split off by a transfer (CUCM's cause 393216, 126 before release 5): the line's
    # phone may have been joined to another caller when it ended (received; traces
    # fail closed)
    TRANSFERRED = 14
    # the index's, not a record's: legs of one call on a line (one call id) that name two
    # callers, but legs a transfer split off (an Asterisk 12+ transfer gives the
    # consultation call and the transferred caller's one linkedid): the records disagree
    # on who called the line (received; traces fail closed)
    CALLERS_DIFFER = 15


# a person takes longer than this to refuse a ringing call: a busy or rejected call that
# ended sooner never rang (as R3 reads a busy), one that ended later may have
LATE_REFUSAL_US = 1_000_000
# CUCM's causes of a call a transfer (or a conference) split off: 393216, 126 before
# release 5 (no Q.850 cause). Its record ends where the line's phone was handed on:
# joined to another caller (the transfer's target), or passing its caller on
CAUSES_SPLIT = frozenset((393216, 126))


# The canonical columnar record every format is parsed into, as the native parser
# declares it (ext/_cdr.pxd, CallRecord): name -> numpy dtype. What each column holds:
COLUMN_DOCS = {
    "start_us": "UTC microseconds",
    "answer_us": "UTC microseconds; 0 when not answered",
    "end_us": "UTC microseconds",
    "calling": "packed number (parsing.numbers), 0 = none delivered",
    "presentation": "Presentation",
    "called": "the dialled line",
    "redirecting": "redirecting / original-called line, 0 = none",
    "final": "the line that finally rang when it differs, 0 = same",
    "disposition": "Disposition",
    "received": "the line was alerted (it rang), or may have been (a late refusal or failure)",
    "call_id": "hash of the switch's call id, or of the record",
    "feed": "feed (switch) id",
    "offset": "byte offset of the record in its source",
    "record": "record number in its source, from 1",
}


def columns_of(fields: tuple[tuple[str, str], ...]) -> tuple[tuple[str, np.dtype], ...]:
    """The columns a native layout declares, checked against the documented names."""
    if tuple(name for name, _ in fields) != tuple(COLUMN_DOCS):
        raise NativeModuleError(
            f"cdrtrace's native parser declares the columns {[n for n, _ in fields]}, this "
            f"cdrtrace {list(COLUMN_DOCS)}: reinstall with `pip install .`")
    return tuple((name, np.dtype(kind)) for name, kind in fields)


COLUMNS = columns_of(_native.CALL_FIELDS)
MAX_COLUMNS = int(_native.MAX_COLUMNS)    # the widest record (or header) the parser reads
HUNT_DTYPE = _native.HUNT_DTYPE     # a call through a hunt pilot (CdrParser.take_hunts)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)


@functools.cache
def arrow_schema() -> pa.Schema:
    """The Arrow schema of a CallBatch, made when first needed: an ingest without an archive
    never loads Arrow."""
    import pyarrow as pa
    return pa.schema([(name, pa.from_numpy_dtype(np.dtype(dtype))) for name, dtype in COLUMNS])


def __getattr__(name: str):
    if name == "ARROW_SCHEMA":
        return arrow_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# ------------------------------------------------------------------ switch formats
# A format is a dialect: which column holds which canonical field, and how its times,
# dispositions and presentation are written. The native parser takes the resolved map.

TIME_LOCAL, TIME_EPOCH, TIME_COMPACT = 0, 1, 2
DK_ASTERISK, DK_CUCM, DK_BROADWORKS, DK_Q850_NAME, DK_VOCABULARY = 0, 1, 2, 3, 4
# the records that show a switch logs what it may leave unlogged (Format.
# unconnected_shown_by): a call its caller cleared before it connected (CUCM), any failed
# call (Kamailio's transaction rows), two different legs of one call (FreeSWITCH)
UNLOGGED_CLEARED, UNLOGGED_FAILED, UNLOGGED_LEGS = "cleared", "failed", "legs"
PK_NONE, PK_ASTERISK_USERFIELD, PK_PUBLIC_PRIVATE, PK_SIP_PRIVACY, PK_VOCABULARY = 0, 1, 2, 3, 4
ROLES = ("calling", "clid", "called", "redirecting", "redirecting2", "final", "channel",
         "start", "answer", "end", "duration", "billsec", "disposition", "orig_cause",
         "dest_cause", "callid", "callid2", "presentation", "direction", "progress",
         "srcchannel", "callid_peer", "cot", "comment", "asserted", "method", "early_media",
         "hunt", "pattern", "app", "data", "tenant", "tenant_scope", "dest_leg", "join")
ASTERISK_COLUMNS = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel",
                    "lastapp", "lastdata", "start", "answer", "end", "duration", "billsec",
                    "disposition", "amaflags", "uniqueid", "userfield", "peeraccount",
                    "linkedid", "sequence")


# Cisco Unified CM CDR field names by release
CUCM_FIELDS_11 = tuple((
    "cdrRecordType globalCallID_callManagerId globalCallID_callId origLegCallIdentifier "
    "dateTimeOrigination origNodeId origSpan origIpAddr callingPartyNumber "
    "callingPartyUnicodeLoginUserID origCause_location origCause_value origPrecedenceLevel "
    "origMediaTransportAddress_IP origMediaTransportAddress_Port origMediaCap_payloadCapability "
    "origMediaCap_maxFramesPerPacket origMediaCap_g723BitRate origVideoCap_Codec "
    "origVideoCap_Bandwidth origVideoCap_Resolution origVideoTransportAddress_IP "
    "origVideoTransportAddress_Port origRSVPAudioStat origRSVPVideoStat destLegIdentifier "
    "destNodeId destSpan destIpAddr originalCalledPartyNumber finalCalledPartyNumber "
    "finalCalledPartyUnicodeLoginUserID destCause_location destCause_value destPrecedenceLevel "
    "destMediaTransportAddress_IP destMediaTransportAddress_Port destMediaCap_payloadCapability "
    "destMediaCap_maxFramesPerPacket destMediaCap_g723BitRate destVideoCap_Codec "
    "destVideoCap_Bandwidth destVideoCap_Resolution destVideoTransportAddress_IP "
    "destVideoTransportAddress_Port destRSVPAudioStat destRSVPVideoStat dateTimeConnect "
    "dateTimeDisconnect lastRedirectDn pkid originalCalledPartyNumberPartition "
    "callingPartyNumberPartition finalCalledPartyNumberPartition lastRedirectDnPartition "
    "duration origDeviceName destDeviceName origCallTerminationOnBehalfOf "
    "destCallTerminationOnBehalfOf origCalledPartyRedirectOnBehalfOf "
    "lastRedirectRedirectOnBehalfOf origCalledPartyRedirectReason lastRedirectRedirectReason "
    "destConversationId globalCallId_ClusterID joinOnBehalfOf comment authCodeDescription "
    "authorizationLevel clientMatterCode origDTMFMethod destDTMFMethod callSecuredStatus "
    "origConversationId origMediaCap_Bandwidth destMediaCap_Bandwidth authorizationCodeValue "
    "outpulsedCallingPartyNumber outpulsedCalledPartyNumber origIpv4v6Addr destIpv4v6Addr "
    "origVideoCap_Codec_Channel2 origVideoCap_Bandwidth_Channel2 origVideoCap_Resolution_Channel2 "
    "origVideoTransportAddress_IP_Channel2 origVideoTransportAddress_Port_Channel2 "
    "origVideoChannel_Role_Channel2 destVideoCap_Codec_Channel2 destVideoCap_Bandwidth_Channel2 "
    "destVideoCap_Resolution_Channel2 destVideoTransportAddress_IP_Channel2 "
    "destVideoTransportAddress_Port_Channel2 destVideoChannel_Role_Channel2 IncomingProtocolID "
    "IncomingProtocolCallRef OutgoingProtocolID OutgoingProtocolCallRef currentRoutingReason "
    "origRoutingReason lastRedirectingRoutingReason huntPilotPartition huntPilotDN "
    "calledPartyPatternUsage IncomingICID IncomingOrigIOI IncomingTermIOI OutgoingICID "
    "OutgoingOrigIOI OutgoingTermIOI outpulsedOriginalCalledPartyNumber "
    "outpulsedLastRedirectingNumber wasCallQueued totalWaitTimeInQueue callingPartyNumber_uri "
    "originalCalledPartyNumber_uri finalCalledPartyNumber_uri lastRedirectDn_uri "
    "mobileCallingPartyNumber finalMobileCalledPartyNumber origMobileDeviceName "
    "destMobileDeviceName origMobileCallDuration destMobileCallDuration mobileCallType "
    "originalCalledPartyPattern finalCalledPartyPattern lastRedirectingPartyPattern "
    "huntPilotPattern").split())
assert len(CUCM_FIELDS_11) == 129
# a headerless CUCM file is mapped by its field count: the release's layout
CUCM_RELEASES = {129: CUCM_FIELDS_11,                                            # to release 11
               131: (*CUCM_FIELDS_11, "origDeviceType", "destDeviceType"),     # 12.x
               133: (*CUCM_FIELDS_11, "origDeviceType", "destDeviceType",     # 12.5(1)SU1+
                                      "origDeviceSessionID", "destDeviceSessionID")}
# BroadWorks accounting CSV is positional: the first fields never move between releases
# (197 fields in R14, 336 and more from R18); the names of the first 43.
BROADWORKS_COLUMNS = tuple((
    "recordId serviceProvider type userNumber groupNumber direction callingNumber "
    "callingPresentationIndicator calledNumber startTime userTimeZone answerIndicator answerTime "
    "releaseTime terminationCause networkType carrierIdentificationCode dialedDigits "
    "callCategory networkCallType networkTranslatedNumber networkTranslatedGroup releasingParty "
    "route networkCallID codec accessDeviceAddress accessCallID spare failoverCorrelationID "
    "spare group department accountCode authorizationCode originalCalledNumber "
    "originalCalledPresentationIndicator originalCalledReason redirectingNumber "
    "redirectingPresentationIndicator redirectingReason chargeIndicator typeOfNetwork").split())


@dataclasses.dataclass(frozen=True)
class Format:
    """A switch CDR layout. columns: fixed positional names, or None when a header row
    names them (header_lines lines at most precede the records).

    header_optional: a first line naming the required columns is the header, else the
    file has none (columns, or the release layout of the first record's field count in
    releases, map it). types_line: a line of column types may follow the header (CUCM).
    markers: version, Start and End lines between the records (BroadWorks).
    typed_header: the header is Kamailio db_text's, `name(type[,flags])` words between
    spaces. escape: a byte that makes the next one data (db_text's `\\:`); no quoting.
    A role may name alternative columns (a tuple): the first the header has is read."""

    name: str
    roles: dict                 # canonical role -> column name
    time_kind: int
    disp_kind: int
    pres_kind: int = PK_NONE
    end_required: bool = False
    columns: tuple | None = None
    min_cols: int = 0
    header_lines: int = 0
    required: tuple = ()        # roles the header must name
    header_optional: bool = False
    types_line: bool = False
    releases: dict | None = None  # field count -> column names, for headerless files
    max_cols: int = 0           # positional layouts whose records carry more fields
    markers: bool = False
    lenient_quotes: bool = False  # quotes inside values are not doubled (FreeSWITCH)
    delimiter: str = ","
    quote: str = '"'
    escape: str = ""
    typed_header: bool = False
    dispositions: dict = dataclasses.field(default_factory=dict)   # value -> Disposition
    presentations: dict = dataclasses.field(default_factory=dict)  # value -> Presentation
    tenant_domains: bool = False  # a tenant value counts only where it is a domain name

    def groups_in_one_record(self) -> bool:
        """Whether one record of its switch may stand for a call that rang several phones,
        naming at most one (a Cisco UCM hunt pilot's call; an Asterisk Dial to several
        phones, Dials made in turn, a Queue): it reads what shows that (`hunt`, `pattern`
        or `app`), and its feed's hunt_groups apply (store.hunts). A switch that writes a
        record per phone rung (FreeSWITCH's B legs, Kamailio's branches) has none."""
        return any(role in self.roles for role in ("hunt", "pattern", "app"))

    def unconnected_shown_by(self, header: list[str] | None = None) -> str | None:
        """Whether its switch may write no record of a call that rang a line, and which
        records show it does (store.lookup.unconnected_proof): UNLOGGED_CLEARED for Cisco
        UCM, which writes a call that never connected (one that rang unanswered) only
        while its 'CDR Log Calls with Zero Duration Flag' service parameter is on (off by
        default); UNLOGGED_FAILED for Kamailio's transaction rows (a `method` column),
        which hold a failed call only with `failed_transaction_flag` or in `missed_calls`;
        UNLOGGED_LEGS for FreeSWITCH's mod_cdr_csv, which writes the A legs alone as
        shipped (`legs` = `a`), naming the number dialled and not the phones the call
        rang (its records show two legs of a call only where they hold `bleg_uuid`);
        None where a call that rang a line is always written. Such a feed is trusted once
        it has shown one."""
        if self.disp_kind == DK_CUCM:
            return UNLOGGED_CLEARED
        names = header if header is not None else self.columns or ()
        where = {n: i for i, n in enumerate(names)}
        if "method" in self.roles and self.column("method", where) >= 0:
            return UNLOGGED_FAILED
        if self.disp_kind == DK_Q850_NAME:     # (without bleg_uuid it can show no two legs)
            return UNLOGGED_LEGS
        return None

    def vocabularies(self) -> tuple[dict, dict]:
        """The configured value tables as the parsers take them: {bytes: int}."""
        return ({k.encode("latin-1"): int(v) for k, v in self.dispositions.items()},
                {k.encode("latin-1"): int(v) for k, v in self.presentations.items()})

    def dialect(self, header: list[str] | None = None) -> dict:
        """The native parser's column map, from the fixed columns or the header."""
        if header is not None:
            names, most = header, len(header)
        elif self.columns is not None:
            names = list(self.columns)
            most = max(self.max_cols, len(names))
        else:
            raise ParseError(f"{self.name} files start with a header row naming the columns")
        if most > MAX_COLUMNS or self.min_cols > MAX_COLUMNS:
            raise ParseError(f"{self.name}: {max(most, self.min_cols)} columns, more than the "
                             f"{MAX_COLUMNS} a record may have")
        where = {name: i for i, name in enumerate(names)}
        missing = [" or ".join(_names(self.roles[r])) for r in self.required
                   if self.column(r, where) < 0]
        if missing:
            raise ParseError(f"{self.name} header lacks the column(s) {', '.join(missing)}")
        dialect = {"min_cols": min(self.min_cols or len(names), len(names)), "max_cols": most,
                   "delimiter": ord(self.delimiter), "quote": ord(self.escape or self.quote),
                   "escaped": int(bool(self.escape)),
                   "lenient_quotes": int(self.lenient_quotes),
                   "end_required": int(self.end_required), "time_kind": self.time_kind,
                   "disp_kind": self.disp_kind, "pres_kind": self.pres_kind,
                   "markers": int(self.markers), "tenant_domains": int(self.tenant_domains)}
        for role in ROLES:
            dialect[f"c_{role}"] = self.column(role, where)
        # where a format stamps early media apart from ringing (FreeSWITCH: a 183 Session
        # Progress sets progress_media_stamp, not progress_stamp), an empty progress column
        # shows no alerting only beside that column, empty too
        dialect["progress_complete"] = int("early_media" not in self.roles
                                           or dialect["c_early_media"] >= 0)
        return dialect

    def column(self, role: str, where: dict) -> int:
        """The 0-based column of a role ({column name: index}), -1 when there is none."""
        return next((where[n] for n in _names(self.roles.get(role, "")) if n in where), -1)


def _names(columns: str | tuple) -> tuple:
    return columns if isinstance(columns, tuple) else (columns,)


ASTERISK = Format(
    "asterisk", columns=ASTERISK_COLUMNS, min_cols=16, time_kind=TIME_LOCAL,
    disp_kind=DK_ASTERISK, pres_kind=PK_ASTERISK_USERFIELD, end_required=True,
    roles={"calling": "src", "clid": "clid", "called": "dst", "channel": "dstchannel",
           "start": "start", "answer": "answer", "end": "end", "duration": "duration",
           "billsec": "billsec", "disposition": "disposition", "callid": "uniqueid",
           "presentation": "userfield", "srcchannel": "channel", "callid_peer": "linkedid",
           "app": "lastapp", "data": "lastdata"})

# Cisco Unified CM: a header row of names (quoted or not), then usually a row of types;
# exports may lack either (headerless: mapped by the release's field count). UTC epoch
# seconds; one record per call with the original, last redirecting and final numbers.
CUCM = Format(
    "cucm", header_lines=2, header_optional=True, types_line=True, releases=CUCM_RELEASES,
    time_kind=TIME_EPOCH, disp_kind=DK_CUCM,
    roles={"calling": "callingPartyNumber", "called": "originalCalledPartyNumber",
           "redirecting": "lastRedirectDn", "final": "finalCalledPartyNumber",
           "start": "dateTimeOrigination", "answer": "dateTimeConnect",
           "end": "dateTimeDisconnect", "duration": "duration",
           "orig_cause": "origCause_value", "dest_cause": "destCause_value",
           "callid": "globalCallID_callManagerId", "callid2": "globalCallID_callId",
           "comment": "comment", "hunt": "huntPilotDN", "pattern": "calledPartyPatternUsage",
           "dest_leg": "destLegIdentifier", "join": "joinOnBehalfOf"},
    required=("calling", "called", "final", "start", "answer", "orig_cause", "dest_cause",
              "callid", "callid2"))

# BroadWorks: positional, no header (some tools add one), a version line and Start/End
# marker records; only terminating records are incoming calls; times are
# YYYYMMDDhhmmss.mmm in GMT (userTimeZone is the user's zone, for display only).
BROADWORKS = Format(
    "broadworks", header_lines=1, header_optional=True, columns=BROADWORKS_COLUMNS,
    min_cols=41, max_cols=1023, markers=True, time_kind=TIME_COMPACT, disp_kind=DK_BROADWORKS,
    pres_kind=PK_PUBLIC_PRIVATE,
    roles={"calling": "callingNumber", "called": "calledNumber",
           "redirecting": "redirectingNumber", "redirecting2": "originalCalledNumber",
           "final": "userNumber", "start": "startTime", "answer": "answerTime",
           "end": "releaseTime", "disposition": "answerIndicator",
           "dest_cause": "terminationCause", "callid": "recordId",
           "presentation": "callingPresentationIndicator", "direction": "direction",
           "cot": "customerOriginatedTrace.invocationTime", "tenant": "group",
           "tenant_scope": "serviceProvider"},
    required=("calling", "called", "final", "start", "disposition", "callid", "direction"))

# Asterisk cdr_custom's legacy default mapping: every field quoted but sequence.
ASTERISK_CUSTOM = dataclasses.replace(
    ASTERISK, name="asterisk-custom", min_cols=0,
    columns=("clid", "src", "dst", "dcontext", "channel", "dstchannel", "lastapp", "lastdata",
             "start", "answer", "end", "duration", "billsec", "disposition", "amaflags",
             "accountcode", "uniqueid", "userfield", "sequence"))

# FreeSWITCH mod_cdr_csv: the shipped 'example' template (15 fields); the compiled-in
# 'default' template is its first 13 (with a stray space, skipped). Values are not
# escaped: a quote inside a caller name is recovered by where it sits.
FREESWITCH = Format(
    "freeswitch", lenient_quotes=True, min_cols=13, time_kind=TIME_LOCAL,
    disp_kind=DK_Q850_NAME, pres_kind=PK_SIP_PRIVACY, end_required=True,
    columns=("caller_id_name", "caller_id_number", "destination_number", "context",
             "start_stamp", "answer_stamp", "end_stamp", "duration", "billsec", "hangup_cause",
             "uuid", "bleg_uuid", "accountcode", "read_codec", "write_codec"),
    roles={"calling": "caller_id_number", "called": "destination_number",
           "start": "start_stamp", "answer": "answer_stamp", "end": "end_stamp",
           "duration": "duration", "billsec": "billsec", "disposition": "hangup_cause",
           "callid": "uuid", "callid_peer": "bleg_uuid", "progress": "progress_stamp",
           "early_media": "progress_media_stamp", "presentation": "sip_Privacy",
           "redirecting": "rdnis", "tenant": "context"},
    tenant_domains=True)

# Kamailio accounting: the dialog CDRs of the acc module (acc_cdrs) as
# db_flatstore writes them, '|' between values, no header, appended live. The columns are
# start_time, end_time, duration, then the cdr_extra list of the configuration cdrtrace
# ships (docs/formats.md, "Kamailio"): user parts of the SIP identities, the INVITE's
# time, the final SIP reply, and the domain the call was for (a multi-domain proxy's
# tenant). start_time is when the dialog was confirmed (answered).
KAMAILIO_COLUMNS = ("start_time", "end_time", "duration", "callid", "invite_time", "src_user",
                    "pai", "privacy", "dst_ouser", "dst_user", "diversion", "sip_code",
                    "sip_reason", "rang",   # rang: logged since 2026-11-30 (13 columns before)
                    "called_domain")        # since 2026-12-04 (14 columns before)
SIP_FINAL = {                      # final SIP reply -> disposition (CDR_FORMATS: R3)
    "200": Disposition.ANSWERED,
    "487": Disposition.CANCELLED,      # the caller cancelled while it rang
    "408": Disposition.NO_ANSWER, "480": Disposition.NO_ANSWER,   # rang, nobody answered
    "603": Disposition.NO_ANSWER,      # rang, the callee declined it
    "486": Disposition.BUSY, "600": Disposition.BUSY,
    "404": Disposition.UNALLOCATED, "484": Disposition.UNALLOCATED,
    "410": Disposition.UNALLOCATED,
    **{str(code): Disposition.FAILED for code in (403, 488, 500, 501, 502, 503, 504)},
    # redirected (302 and the like): the new target's call is its own record; it rang the
    # line first only where `rang` says so (a phone's forward on no answer), or may have
    # where no `rang` is logged and it took a second or more (a late failure)
    **{str(code): Disposition.FAILED for code in (300, 301, 302, 305, 380)},
}
KAMAILIO = Format(
    "kamailio", columns=KAMAILIO_COLUMNS, min_cols=len(KAMAILIO_COLUMNS) - 2, delimiter="|",
    time_kind=TIME_EPOCH, disp_kind=DK_VOCABULARY, pres_kind=PK_SIP_PRIVACY,
    roles={"calling": "src_user", "asserted": "pai", "called": "dst_ouser",
           "final": "dst_user", "redirecting": "diversion", "start": "invite_time",
           "answer": "start_time", "end": "end_time", "disposition": "sip_code",
           "callid": "callid", "presentation": "privacy", "progress": "rang",
           "tenant": "called_domain"},
    dispositions=SIP_FINAL, tenant_domains=True)

# The acc module's transaction rows (tables acc and missed_calls), by db_flatstore: one
# row per final reply to an INVITE (a missed call's per failed branch) and one per BYE.
# Columns: the module's own, then the db_extra list of the configuration cdrtrace ships.
# The row's time is the reply's: a 200's is when the call was answered.
KAMAILIO_ACC_COLUMNS = ("method", "from_tag", "to_tag", "callid", "sip_code", "sip_reason",
                        "time", "src_user", "pai", "privacy", "dst_ouser", "dst_user",
                        "diversion", "rang", "called_domain")
KAMAILIO_ACC = dataclasses.replace(
    KAMAILIO, name="kamailio-acc", columns=KAMAILIO_ACC_COLUMNS,
    min_cols=len(KAMAILIO_ACC_COLUMNS) - 2,
    roles={**{r: c for r, c in KAMAILIO.roles.items() if r != "end"},
           "start": "time", "answer": "time", "method": "method"})

# Any of the three tables as db_text writes them (on shutdown, or `kamcmd db_text.dump`):
# a typed header naming the columns, ':' between values, '\:' inside one, newest row first
# (the index does not depend on the order). Columns by name, the dialog CDR's or the
# transaction row's.
KAMAILIO_DBTEXT = dataclasses.replace(
    KAMAILIO, name="kamailio-dbtext", columns=None, min_cols=0, header_lines=1,
    typed_header=True, delimiter=":", escape="\\",
    roles={**KAMAILIO.roles, "start": ("invite_time", "time"),
           "answer": ("start_time", "time"), "method": "method"},
    required=("calling", "called", "start", "disposition", "callid"))

FORMATS = {f.name: f for f in (ASTERISK, ASTERISK_CUSTOM, FREESWITCH, CUCM, BROADWORKS,
                               KAMAILIO, KAMAILIO_ACC, KAMAILIO_DBTEXT)}


class CallBatch:
    """A batch of canonical call records: numpy columns, viewable as Arrow without a copy."""

    __slots__ = ("columns", "source")

    def __init__(self, columns: dict[str, np.ndarray], source: int = 0):
        self.columns = columns
        self.source = source

    def __len__(self) -> int:
        return len(self.columns["start_us"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def to_arrow(self) -> pa.RecordBatch:
        """Zero-copy: each Arrow buffer is the numpy array's memory."""
        import pyarrow as pa

        return pa.RecordBatch.from_arrays(
            [pa.array(self.columns[name]) for name in COLUMN_NAMES], schema=arrow_schema())
