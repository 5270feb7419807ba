# cython: language_level=3
"""Native CDR parser: Asterisk cdr_csv bytes -> canonical columnar call records.

The hot loop walks the buffer with pointers, writes typed arrays and runs without the
GIL; it creates no Python object per record. Errors are collected in a C array
(reason, record number, byte offset) and turned into Python objects afterwards.
The contract is the one of cdrtrace.parsing.reference (the pure-Python reference).
"""
cimport cython
from libc.stdint cimport int64_t, uint64_t, uint8_t, uint16_t, uint32_t, INT64_MIN
from libc.string cimport memchr, memcmp, memcpy, memmove, memset
from libc.stdlib cimport malloc, realloc, free
from cpython.ref cimport Py_REFCNT

import numpy as np
cimport numpy as cnp

from _cdr cimport (
    PRES_ALLOWED, PRES_RESTRICTED, PRES_UNAVAILABLE,
    DISP_ANSWERED, DISP_NO_ANSWER, DISP_CANCELLED, DISP_BUSY, DISP_FAILED,
    DISP_CONGESTION, DISP_REJECTED, DISP_UNALLOCATED, DISP_UNKNOWN, DISP_ANSWERED_ELSEWHERE,
    DISP_LATE_REFUSAL, DISP_LATE_FAILURE, DISP_TRANSFERRED,
    CallRecord, field_types,
)

cnp.import_array()

cdef enum:
    MAX_RECORD = 65536
    MAX_FIELDS = 1024        # one more than the widest layout, to detect too many
    ZERO_BLOCK = 8           # NUL bytes in a row that are zeros where records were, no record's
    NAME_SEPARATORS = 2      # `","` a recovered FreeSWITCH caller name may hold; more: a record

# Reason codes; cdrtrace.parsing.native maps them to cdrtrace.errors.REJECT_REASONS.
cdef enum Status:
    ST_OK = 0
    ST_NEED_MORE = -1
    ERR_FIELD_COUNT = 1
    ERR_UNTERMINATED = 2
    ERR_AFTER_QUOTE = 3
    ERR_QUOTE_UNQUOTED = 4
    ERR_CR = 5
    ERR_NUL = 6
    ERR_TOO_LONG = 7
    ERR_TIMESTAMP = 8
    ERR_DURATION = 9
    ERR_DISPOSITION = 10
    ERR_CAUSE = 11
    ERR_ZEROS = 12           # a run of ZERO_BLOCK or more NUL bytes: no record
    ERR_CUT_BY_ZEROS = 13    # a record cut short by such a run

cdef enum TimeKind:
    TIME_LOCAL = 0       # 'YYYY-MM-DD HH:MM:SS' in the feed's zone
    TIME_EPOCH = 1       # UTC seconds, a fraction of up to 6 digits allowed; 0 = none
    TIME_COMPACT = 2     # 'YYYYMMDDhhmmss[.fff]' in the feed's zone

cdef enum DispKind:
    DK_ASTERISK = 0      # ANSWERED, NO ANSWER, ...
    DK_CUCM = 1          # connect time, else destination / origination Q.850 causes
    DK_BROADWORKS = 2    # answerIndicator, else terminationCause
    DK_Q850_NAME = 3     # FreeSWITCH hangup_cause names (answer time first)
    DK_VOCABULARY = 4    # a configured table: value -> disposition

cdef enum PresKind:
    PK_NONE = 0
    PK_ASTERISK_USERFIELD = 1   # CALLERID(pres) names, or a Diversion number
    PK_PUBLIC_PRIVATE = 2       # BroadWorks callingPresentationIndicator
    PK_SIP_PRIVACY = 3          # SIP Privacy header value: 'id' withholds the identity
    PK_VOCABULARY = 4           # a configured table: value -> presentation

    MAX_WORDS = 64              # entries of a configured vocabulary
    MAX_WORD = 48               # bytes of a vocabulary value

cdef struct Vocabulary:
    int n
    int length[MAX_WORDS]
    int code[MAX_WORDS]
    char word[MAX_WORDS][MAX_WORD]

cdef struct Dialect:
    int min_cols
    int max_cols
    int delimiter
    int quote
    int lenient_quotes
    int end_required
    int time_kind
    int disp_kind
    int pres_kind
    # 0-based column of each canonical field, -1 when the layout has none
    int c_calling
    int c_clid
    int c_called
    int c_redirecting
    int c_redirecting2
    int c_final
    int c_channel
    int c_start
    int c_answer
    int c_end
    int c_duration
    int c_billsec
    int c_disposition
    int c_orig_cause
    int c_dest_cause
    int c_callid
    int c_callid2
    int c_presentation
    int c_direction
    int c_progress
    int c_srcchannel     # the channel the call came from (Asterisk `channel`)
    int c_callid_peer    # the call id shared by every leg, when the record has one
    int markers          # version, Start and End lines are not records (BroadWorks)
    int c_cot            # when the switch recorded a *57 on the line (BroadWorks)
    int c_comment        # CUCM comment: callFlag=MALICIOUS is a trace of this call
    int c_asserted       # SIP P-Asserted-Identity: the caller when present (over From)
    int escaped          # quote is an escape: it makes the next byte data (Kamailio db_text)
    int c_method         # a transaction row's SIP method: only an INVITE is a call
    int c_early_media    # when the call had early media (FreeSWITCH progress_media_stamp)
    int progress_complete   # an empty progress shows no alerting (beside empty early media)
    int c_hunt           # the hunt pilot a call came through (CUCM huntPilotDN: answered)
    int c_pattern        # the called pattern's kind (CUCM calledPartyPatternUsage: 7 a pilot)
    int c_app            # the last dialplan application (Asterisk lastapp) ...
    int c_data           # ... and its arguments (lastdata: Dial's devices, joined by '&')
    int c_tenant         # the tenant a multi-tenant switch names the line's (BroadWorks group)
    int tenant_domains   # ... read only where it is a domain name (FreeSWITCH's context)
    int c_tenant_scope   # what the tenant's name is unique within (BroadWorks serviceProvider)
    int c_dest_leg       # the called party's leg, kept through a transfer (CUCM destLegIdentifier)
    int c_join           # why the call was joined to the line (CUCM joinOnBehalfOf: 10 a transfer)

cdef const char* EMPTY = b""
# anonymity markers (cdrtrace.parsing.numbers.ANONYMOUS that an identity could spell)
cdef const char* ANONYMOUS[7]
ANONYMOUS[:] = [b"anonymous", b"restricted", b"private", b"unavailable", b"unknown", b"default",
                b"withheld"]
cdef int ANONYMOUS_LEN[7]
ANONYMOUS_LEN[:] = [9, 10, 7, 11, 7, 7, 8]
cdef enum:
    N_ANONYMOUS = 7
    MAX_IDENTITY = 128
cdef const char* BOM = b"\xef\xbb\xbf"

cdef extern from "_scan.h" nogil:
    ctypedef struct Span "cdr_span":    # a field: its first byte and its length
        const char* p
        Py_ssize_t n
    ctypedef int (*cdr_tokenize_t)(const char* r, const char* end, char delim, char quote,
                                   int keep_fields, Py_ssize_t max_record, Span* f, int* nf,
                                   const char** rec_end, const char** next_rec) noexcept nogil
    int CDR_FALLBACK    # else the record's fields, and ST_OK (0, CDR_OK)
    int cdr_avx2()
    cdr_tokenize_t cdr_tokenizer(int avx2)
    void cdr_block_masks(int avx2, const char* p, char delim, char quote, uint64_t* quote_bits,
                         uint64_t* delim_bits, uint64_t* eol_bits)
    int64_t cdr_digits8(const char* p)
    int cdr_clock8(const char* p)
    const char* cdr_find3(const char* p, const char* end, char a, char b, char c)
    const char* cdr_rfind(const char* p, const char* end, char c)


cdef struct Reject:
    int64_t record
    int64_t offset       # absolute byte offset of the record
    Py_ssize_t start     # position in this buffer
    Py_ssize_t length    # raw bytes kept (capped at MAX_RECORD)
    int code
    int detail           # field count, or the 1-based column of a bad field

cdef inline int room_for_reject(Reject** rejects, Py_ssize_t* capacity,
                                Py_ssize_t used) noexcept nogil:
    """Room for one more reject: the array doubled when full; -1 if no memory (the
    array kept as it was)."""
    cdef Reject* grown
    if used == capacity[0]:
        grown = <Reject*>realloc(rejects[0], 2 * capacity[0] * sizeof(Reject))
        if grown == NULL:
            return -1
        rejects[0] = grown
        capacity[0] *= 2
    return 0


cdef inline const char* zero_block(const char* p, const char* stop, const char* end,
                                   bint final, const char** pending) noexcept nogil:
    """The first run of ZERO_BLOCK or more NUL bytes that begins in [p, stop) (it may go
    on past stop), or NULL. A run that reaches end with fewer, before any that qualifies,
    is undecided while more bytes may come (not final): *pending is set to its start."""
    cdef const char* q
    pending[0] = NULL
    while p < stop:
        p = <const char*>memchr(p, 0, stop - p)
        if p == NULL:
            return NULL
        q = p
        while q < end and q[0] == 0:
            q += 1
        if q - p >= ZERO_BLOCK:
            return p
        if q == end and not final:
            pending[0] = p
            return NULL
        p = q
    return NULL


cdef struct Zone:
    char last_date[10]           # the date part last converted, and its day number
    int64_t last_days
    const int64_t* starts        # UTC second each period starts
    const int64_t* offsets       # offset in force, seconds
    const int64_t* local_starts  # starts + offsets
    Py_ssize_t n
    Py_ssize_t last

cdef struct Columns:
    int64_t* start_us
    int64_t* answer_us
    int64_t* end_us
    uint64_t* calling
    uint8_t* presentation
    uint64_t* called
    uint64_t* redirecting
    uint64_t* final
    uint8_t* disposition
    uint8_t* received
    uint64_t* call_id
    uint16_t* feed
    int64_t* offset
    int64_t* record
    int64_t* ident_at    # a caller identity's text: where it starts in its record ...
    int64_t* ident_len   # ... and its length (written only for identity rows)
    int64_t* act_row     # traces the switch recorded (docs/trace-rules.md): the record's row,
    int64_t* act_us      # when, and on which line; act_n of them
    uint64_t* act_line
    Py_ssize_t act_n
    int64_t* hunt_row      # calls through a hunt pilot, which name no phone they rang but
    uint64_t* hunt_pilot   # the one that answered, if that: the record's row and the pilot
    int64_t* hunt_members  # how many lines its record names as rung (a Dial to several)
    Py_ssize_t hunt_n
    uint64_t* member       # those lines, in hunt order: member_n of member_cap (malloc'd;
    Py_ssize_t member_n    # NULL until the first)
    Py_ssize_t member_cap
    bint member_oom        # no memory for them: the feed fails
    uint64_t tenant_lo     # the two least tenants (hashed) the records name for a line
    uint64_t tenant_hi     # of their switch's own, 0 while none (note_tenant)
    const char* tenant_last   # the last tenant value hashed and its hash: a feed's records
    Py_ssize_t tenant_last_n  # repeat their few tenants, each hashed once in a run of them
    uint64_t tenant_last_h
    const char* scope_last    # ... and the scope it was hashed with
    Py_ssize_t scope_last_n
    Span lo_name, lo_scope    # where the two least tenants' names (and scopes) were read,
    Span hi_name, hi_scope    # in this buffer (take_tenant_names)


# the block tokenizer for this processor (its AVX2 scan where it has one)
cdef bint HAVE_AVX2 = cdr_avx2()
cdef bint USE_AVX2 = HAVE_AVX2
cdef cdr_tokenize_t TOKENIZE = cdr_tokenizer(USE_AVX2)


def structural_scan(kind=None):
    """The structural scan in use ('avx2' or 'baseline'); kind switches it, for tests
    and benchmarks that compare the two. Returns the one in use before."""
    global USE_AVX2, TOKENIZE
    was = "avx2" if USE_AVX2 else "baseline"
    if kind is not None:
        if kind not in ("avx2", "baseline") or (kind == "avx2" and not HAVE_AVX2):
            raise ValueError(f"no {kind!r} structural scan on this processor")
        USE_AVX2 = kind == "avx2"
        TOKENIZE = cdr_tokenizer(USE_AVX2)
    return was


def block_masks(bytes block, int delim, int quote):
    """The structural scan's masks of 64 bytes, (quotes, delimiters, line ends), bit i
    for byte i: for tests."""
    cdef uint64_t q, d, e
    if len(block) != 64:
        raise ValueError("a block is 64 bytes")
    cdr_block_masks(USE_AVX2, block, <char>delim, <char>quote, &q, &d, &e)
    return q, d, e


# ---------------------------------------------------------------- numbers

cdef inline bint is_format_char(char c) noexcept nogil:
    return (c == b' ' or c == b'-' or c == b'(' or c == b')' or c == b'.' or c == b'\t'
            or c == b'/')


cdef inline uint64_t pack_number(int kind, const char* d, int n) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v = v * 10 + <uint64_t>(d[i] - 48)
    return (<uint64_t>kind << 62) | (<uint64_t>n << 56) | v


cdef struct Plan:
    # a country's dialling plan (cdrtrace.parsing.numbers.DiallingPlan)
    int cc
    int n_cc
    char cc_digits[4]
    int n_trunk
    char trunk[4]
    int n_intl
    int intl_len[16]
    char intl[16][8]
    uint32_t lengths     # bit k: k digits is a possible national number length
    bint nanp            # the North American plan: 10 digits, trunk 1, 011
    uint64_t zero_trunk[16]   # bit c: calling code c's trunk prefix is 0 ('+44 (0)20 ...')
    uint64_t bare_zero[16]    # bit c: and its numbers never begin with 0 ('+44 020 ...')


cdef inline uint64_t normalize(const char* p, Py_ssize_t n, const Plan* plan) noexcept nogil:
    """Same rules as cdrtrace.parsing.numbers.normalize; 0 when not a number."""
    # Fast path: NANP 10 digits (or 11 with the leading 1), nothing else, the common case;
    # a leading 0 may be the 011 international prefix and takes the general path.
    cdef Py_ssize_t k
    cdef int64_t v
    if plan.nanp and ((n == 10 and p[0] != b'0') or (n == 11 and p[0] == b'1')):
        v = cdr_digits8(p)
        if v < 0:
            return normalize_general(p, n, plan)
        for k in range(8, n):
            if p[k] < b'0' or p[k] > b'9':
                return normalize_general(p, n, plan)
            v = v * 10 + (p[k] - 48)
        if n == 10:
            v += 10000000000ULL
        return (<uint64_t>1 << 62) | (<uint64_t>11 << 56) | <uint64_t>v
    return normalize_general(p, n, plan)


cdef inline bint has_prefix(const char* d, int nd, const char* prefix, int n) noexcept nogil:
    return nd > n and memcmp(d, prefix, n) == 0


cdef Py_ssize_t after_uri_scheme(const char* p, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Where a number written as a URI's user part begins (numbers.uri_user): past a tel:,
    sip: or sips: scheme at k, else k. It ends at its first ';' (parameters: 'npdi',
    'rn=', 'cpc=') or '@' (the host): normalize_general stops there."""
    cdef Span rest
    rest.p = p + k
    rest.n = n - k
    if span_starts_nocase(rest, b"tel:", 4) or span_starts_nocase(rest, b"sip:", 4):
        return k + 4
    if span_starts_nocase(rest, b"sips:", 5):
        return k + 5
    return k


cdef uint64_t normalize_general(const char* p, Py_ssize_t n, const Plan* plan) noexcept nogil:
    cdef char digits[24]
    cdef char body[24]
    cdef int nd = 0, nb = 0, i, kind = 0, best = -1, bracketed = -1, lead = -1, code
    cdef Py_ssize_t k = 0
    cdef bint plus = False
    cdef char c
    while k < n and (p[k] == b' ' or p[k] == b'\t'):
        k += 1
    if k < n and (p[k] | 32) in b"ts":
        k = after_uri_scheme(p, n, k)
    if k < n and p[k] == b'+':
        plus = True
        k += 1
    while k < n:
        c = p[k]
        if c >= b'0' and c <= b'9':
            if nd >= 20:
                return 0
            digits[nd] = c
            nd += 1
        elif c == b';' or c == b'@':
            break               # a URI user part's parameters, or its host (numbers.uri_user)
        elif not is_format_char(c):
            return 0
        elif c == b'(' and bracketed < 0 and k + 2 < n and p[k + 1] == b'0' and p[k + 2] == b')':
            bracketed = nd      # the digits before the first '(0)'
        k += 1
    if nd == 0:
        return 0
    if not plus:
        for i in range(plan.n_intl):   # the longest international prefix that fits
            if has_prefix(digits, nd, plan.intl[i], plan.intl_len[i]) and (
                    best < 0 or plan.intl_len[i] > plan.intl_len[best]):
                best = i
    lead = 0 if plus else (plan.intl_len[best] if best >= 0 else -1)
    if lead >= 0 and 1 <= bracketed - lead <= 3:
        code = 0
        for i in range(lead, bracketed):
            code = code * 10 + (digits[i] - 48)
        if (plan.zero_trunk[code >> 6] >> (code & 63)) & 1:
            # the country's trunk prefix in brackets after its code ('+44 (0)20 ...'):
            # dialled at home only
            memmove(digits + bracketed, digits + bracketed + 1, nd - bracketed - 1)
            nd -= 1
    if lead >= 0 and lead < nd and digits[lead] != b'0':
        # '+44 020 ...': the trunk prefix after a code whose numbers never begin with 0
        # (calling codes are prefix-free: one length at most names one)
        code = 0
        for i in range(lead, lead + 3):
            if i + 1 >= nd:
                break
            code = code * 10 + (digits[i] - 48)
            if digits[i + 1] == b'0' and (plan.bare_zero[code >> 6] >> (code & 63)) & 1:
                memmove(digits + i + 1, digits + i + 2, nd - i - 2)
                nd -= 1
                break
    if plus:
        kind = 1
        memcpy(body, digits, nd)
        nb = nd
    elif best >= 0:
        kind = 1
        nb = nd - plan.intl_len[best]
        memcpy(body, digits + plan.intl_len[best], nb)
    elif nd <= 7:
        kind = 2
        memcpy(body, digits, nd)
        nb = nd
    elif (plan.n_trunk and has_prefix(digits, nd, plan.trunk, plan.n_trunk)
          and (plan.lengths >> (nd - plan.n_trunk)) & 1):
        kind = 1
        memcpy(body, plan.cc_digits, plan.n_cc)
        memcpy(body + plan.n_cc, digits + plan.n_trunk, nd - plan.n_trunk)
        nb = plan.n_cc + nd - plan.n_trunk
    elif (plan.lengths >> nd) & 1:
        kind = 1
        memcpy(body, plan.cc_digits, plan.n_cc)
        memcpy(body + plan.n_cc, digits, nd)
        nb = plan.n_cc + nd
    else:
        kind = 3
        memcpy(body, digits, nd)
        nb = nd
    if nb > 15:
        return 0
    if kind == 1 and (nb < 7 or body[0] == b'0'):
        return 0
    return pack_number(kind, body, nb)


cdef int fill_plan(Plan* plan, object given, int country_code) except -1:
    """Copy a dialling plan (country code, trunk prefix, international prefixes, possible
    lengths, the calling codes whose trunk prefix is 0: DiallingPlan.as_tuple()) into the
    C struct. None: the North American plan (the codes from libphonenumber's metadata)."""
    if given is None:
        if country_code != 1:
            raise ValueError("a country other than NANP (1) needs its dialling plan: "
                             "cdrtrace.parsing.numbers.dialling_plan(country_code).as_tuple()")
        from cdrtrace.parsing.numbers import bare_trunk_codes, bracketed_trunk_codes
        given = (1, "1", ("011",), (10,), tuple(sorted(bracketed_trunk_codes())),
                 tuple(sorted(bare_trunk_codes())))
    cc, trunk, intl, lengths, zero_trunk, bare_zero = given
    if cc != country_code:
        raise ValueError(f"the dialling plan is country {cc}'s, not {country_code}'s")
    digits = str(cc).encode()
    trunk_b = str(trunk).encode()
    if not 1 <= len(digits) <= 3 or len(trunk_b) > 3 or len(intl) > 16:
        raise ValueError(f"not a dialling plan: {given!r}")
    memset(plan, 0, sizeof(Plan))
    plan.cc = cc
    plan.n_cc = len(digits)
    memcpy(plan.cc_digits, <const char*>digits, len(digits))
    plan.n_trunk = len(trunk_b)
    memcpy(plan.trunk, <const char*>trunk_b, len(trunk_b))
    for i, prefix in enumerate(intl):
        b = str(prefix).encode()
        if not 1 <= len(b) <= 7 or not b.isdigit():
            raise ValueError(f"not an international prefix: {prefix!r}")
        memcpy(plan.intl[i], <const char*>b, len(b))
        plan.intl_len[i] = len(b)
    plan.n_intl = len(intl)
    for length in lengths:
        if 1 <= length <= 20:
            plan.lengths |= (<uint32_t>1) << length
    plan.nanp = (cc == 1 and trunk_b == b"1" and tuple(intl) == ("011",)
                 and tuple(lengths) == (10,))
    for code in zero_trunk:
        if not 1 <= code <= 999:
            raise ValueError(f"not a calling code: {code!r}")
        plan.zero_trunk[code >> 6] |= (<uint64_t>1) << (code & 63)
    for code in bare_zero:
        if not 1 <= code <= 999:
            raise ValueError(f"not a calling code: {code!r}")
        plan.bare_zero[code >> 6] |= (<uint64_t>1) << (code & 63)
    return 0


def normalize_number(text, int country_code=1, plan=None):
    """Normalise a number (str or bytes) to its packed uint64 form; 0 if not a number.
    plan: the country's DiallingPlan.as_tuple() (needed unless country_code is 1)."""
    cdef Plan c_plan
    fill_plan(&c_plan, plan, country_code)
    cdef bytes b = text.encode("latin-1") if isinstance(text, str) else bytes(text)
    return normalize(b, len(b), &c_plan)


# the instants format_utc writes itself: 0001-01-01T00:00:00 to 9999-12-31T23:59:59 UTC
# (datetime's range); outside it, timezones' reference says (an OverflowError)
cdef long long UTC_FIRST_SECOND = -62135596800
cdef long long UTC_LAST_SECOND = 253402300799


cdef inline char* _digits(char* at, long long v, int width) noexcept:
    """v (0 <= v < 10**width) as width decimal digits, zero-padded: past them."""
    cdef int i
    for i in range(width - 1, -1, -1):
        at[i] = <char>(48 + v % 10)
        v //= 10
    return at + width


def format_utc(us, reference):
    """timezones.format_utc in C: ISO-8601 UTC text for microseconds since the epoch
    ("2026-03-03T12:00:00Z", "2026-03-03T12:00:00.000123Z"), the same text as its
    reference, which is called for what it leaves (an instant outside years 1-9999, a
    value past 64 bits) and says it. A trace writes several."""
    cdef long long v, second, micro, days, rest, z, era, doe, yoe, doy, mp, day, month, year
    cdef char text[32]
    cdef char* at = text
    try:
        v = us
    except (OverflowError, TypeError):
        return reference(us)
    second = v // 1000000          # floor division, as divmod: a negative instant's
    micro = v - second * 1000000   # microseconds count up from its second
    if micro < 0:
        second -= 1
        micro += 1000000
    if second < UTC_FIRST_SECOND or second > UTC_LAST_SECOND:
        return reference(us)
    days = second // 86400
    rest = second - days * 86400
    if rest < 0:
        days -= 1
        rest += 86400
    z = days + 719468              # the civil date of a day count (H. Hinnant's algorithm)
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    at = _digits(at, year, 4)
    at[0] = b"-"
    at = _digits(at + 1, month, 2)
    at[0] = b"-"
    at = _digits(at + 1, day, 2)
    at[0] = b"T"
    at = _digits(at + 1, rest // 3600, 2)
    at[0] = b":"
    at = _digits(at + 1, rest // 60 % 60, 2)
    at[0] = b":"
    at = _digits(at + 1, rest % 60, 2)
    if micro:
        at[0] = b"."
        at = _digits(at + 1, micro, 6)
    at[0] = b"Z"
    return text[:at + 1 - text].decode("ascii")


cdef class Normalizer:
    """normalize_number for one country, its dialling plan filled once: the trace path's
    first step (filling the plan on every call cost more than normalising)."""
    cdef Plan plan

    def __init__(self, int country_code=1, plan=None):
        fill_plan(&self.plan, plan, country_code)

    def __call__(self, text):
        cdef bytes b = text.encode("latin-1") if isinstance(text, str) else bytes(text)
        return normalize(b, len(b), &self.plan)


# ---------------------------------------------------------------- time

cdef inline int64_t days_from_civil(int64_t y, int64_t m, int64_t d) noexcept nogil:
    # Howard Hinnant's algorithm; y/m/d already validated.
    if m <= 2:
        y -= 1
    cdef int64_t era = y // 400
    cdef int64_t yoe = y - era * 400
    cdef int64_t mp = (m + 9) % 12
    cdef int64_t doy = (153 * mp + 2) // 5 + d - 1
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline int days_in_month(int y, int m) noexcept nogil:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    if m == 4 or m == 6 or m == 9 or m == 11:
        return 30
    return 31


cdef inline int64_t local_to_utc(Zone* z, int64_t local) noexcept nogil:
    cdef Py_ssize_t lo, hi, mid, j = z.last
    if not (z.local_starts[j] <= local and (j + 1 >= z.n or local < z.local_starts[j + 1])):
        lo = 0
        hi = z.n - 1
        while lo < hi:   # last j with local_starts[j] <= local
            mid = (lo + hi + 1) // 2
            if z.local_starts[mid] <= local:
                lo = mid
            else:
                hi = mid - 1
        j = lo
        z.last = j
    if j > 0 and local < z.starts[j] + z.offsets[j - 1]:
        j -= 1   # the repeated hour: the earlier instant (fold=0)
    return local - z.offsets[j]


cdef inline int two(const char* p) noexcept nogil:
    if p[0] < b'0' or p[0] > b'9' or p[1] < b'0' or p[1] > b'9':
        return -1
    return (p[0] - 48) * 10 + (p[1] - 48)


cdef int parse_timestamp(Span s, Zone* z, int64_t* out) noexcept nogil:
    """'YYYY-MM-DD HH:MM:SS' local time -> UTC microseconds. 0 ok, -1 bad."""
    cdef const char* p = s.p
    if s.n != 19 or p[10] != b' ':
        return -1
    cdef int clock = cdr_clock8(p + 11)
    if clock < 0:
        return -1
    cdef int y1, y2, mo, d, y
    if memcmp(p, z.last_date, 10) != 0:
        if p[4] != b'-' or p[7] != b'-':
            return -1
        y1 = two(p)
        y2 = two(p + 2)
        mo = two(p + 5)
        d = two(p + 8)
        if y1 < 0 or y2 < 0 or mo < 0 or d < 0:
            return -1
        y = y1 * 100 + y2
        if y < 1970 or y > 2099 or mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo):
            return -1
        z.last_days = days_from_civil(y, mo, d)
        memcpy(z.last_date, p, 10)
    cdef int64_t local = z.last_days * 86400 + clock
    out[0] = local_to_utc(z, local) * 1000000
    return 0


cdef int parse_uint(Span s, int64_t* out) noexcept nogil:
    if s.n == 0 or s.n > 12:
        return -1
    cdef int64_t v = 0
    cdef Py_ssize_t i
    for i in range(s.n):
        if s.p[i] < b'0' or s.p[i] > b'9':
            return -1
        v = v * 10 + (s.p[i] - 48)
    out[0] = v
    return 0


# ---------------------------------------------------------------- helpers

cdef inline uint64_t finish_hash(uint64_t h) noexcept nogil:
    # the splitmix64 finaliser, for good high bits
    h ^= h >> 30
    h *= 0xbf58476d1ce4e5b9ULL
    h ^= h >> 27
    h *= 0x94d049bb133111ebULL
    return h ^ (h >> 31)


cdef inline uint64_t hash_bytes(uint64_t h, const char* p, Py_ssize_t n) noexcept nogil:
    # FNV-1a over the bytes, then finished
    cdef Py_ssize_t i
    for i in range(n):
        h ^= <uint8_t>p[i]
        h *= 1099511628211ULL
    return finish_hash(h)


cdef inline uint64_t hash_lower(uint64_t h, Span s) noexcept nogil:
    # hash_bytes of the span with ASCII letters lowered (domain names ignore case)
    cdef Py_ssize_t i
    cdef uint8_t c
    for i in range(s.n):
        c = <uint8_t>s.p[i]
        if 65 <= c <= 90:
            c += 32
        h ^= c
        h *= 1099511628211ULL
    return finish_hash(h)


cdef inline void note_tenant(Columns* out, uint64_t h, const Span* name,
                             const Span* scope) noexcept nogil:
    """Keep h among the two least distinct tenants noted (0 is none: h 0 counts as 1),
    with where its name was read."""
    if h == 0:
        h = 1
    if h == out.tenant_lo or h == out.tenant_hi:
        return
    if out.tenant_lo == 0 or h < out.tenant_lo:
        out.tenant_hi, out.hi_name, out.hi_scope = out.tenant_lo, out.lo_name, out.lo_scope
        out.tenant_lo, out.lo_name, out.lo_scope = h, name[0], scope[0]
    elif out.tenant_hi == 0 or h < out.tenant_hi:
        out.tenant_hi, out.hi_name, out.hi_scope = h, name[0], scope[0]


cdef str tenant_name(Span scope, Span name):
    """A tenant as an operator reads it: scope/name, or the name where there is no scope."""
    text = name.p[:name.n]
    if scope.n > 0:
        text = scope.p[:scope.n] + b"/" + text
    return text.decode("latin-1")


cdef inline bint span_is(Span s, const char* text, Py_ssize_t n) noexcept nogil:
    return s.n == n and memcmp(s.p, text, n) == 0


cdef inline bint span_starts_nocase(Span s, const char* lower, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef char c
    if s.n < n:
        return False
    for i in range(n):
        c = s.p[i]
        if c >= b'A' and c <= b'Z':
            c = c + 32
        if c != lower[i]:
            return False
    return True


cdef bint span_contains_id(Span s) noexcept nogil:
    """A SIP Privacy value that withholds the identity: 'id' (RFC 3325), 'user' or 'header'
    (RFC 3323) as a token, tokens separated by ';' or spaces ('id;critical', 'user;id')."""
    cdef Py_ssize_t i = 0, j
    cdef Span t
    while i < s.n:
        j = i
        while j < s.n and s.p[j] != b';' and s.p[j] != b' ':
            j += 1
        t.p = s.p + i
        t.n = j - i
        if ((t.n == 2 and span_starts_nocase(t, b"id", 2))
                or (t.n == 4 and span_starts_nocase(t, b"user", 4))
                or (t.n == 6 and span_starts_nocase(t, b"header", 6))):
            return True
        i = j + 1
    return False


cdef int disposition_code(Span s) noexcept nogil:
    if span_is(s, b"ANSWERED", 8):
        return DISP_ANSWERED
    if span_is(s, b"NO ANSWER", 9):
        return DISP_NO_ANSWER
    if span_is(s, b"CANCEL", 6):
        return DISP_CANCELLED
    if span_is(s, b"BUSY", 4):
        return DISP_BUSY
    if span_is(s, b"FAILED", 6):
        return DISP_FAILED
    if span_is(s, b"CONGESTION", 10):
        return DISP_CONGESTION
    if span_is(s, b"UNKNOWN", 7):
        return DISP_UNKNOWN
    return -1


cdef uint64_t clid_number(Span s, const Plan* cc) noexcept nogil:
    """The number between the last '<' and the '>' after it in a caller id."""
    cdef Py_ssize_t i = s.n - 1, j
    while i >= 0 and s.p[i] != b'<':
        i -= 1
    if i < 0:
        return 0
    j = i + 1
    while j < s.n and s.p[j] != b'>':
        j += 1
    if j >= s.n:
        return 0
    return normalize(s.p + i + 1, j - i - 1, cc)


cdef int identity_norm(const char* p, Py_ssize_t n, char* out) noexcept nogil:
    """A caller identity as compared (cdrtrace.parsing.numbers.identity_text): lowercased,
    without its sip: scheme; its length in out, or -1 for an anonymity marker or a value
    that is no identity."""
    cdef Py_ssize_t a = 0, b = n, k
    cdef int m = 0
    cdef char c
    cdef bint letter = False
    while a < b and (p[a] == b' ' or p[a] == b'\t'):
        a += 1
    while b > a and (p[b - 1] == b' ' or p[b - 1] == b'\t'):
        b -= 1
    cdef Span rest
    rest.p = p + a
    rest.n = b - a
    if rest.n > 5 and span_starts_nocase(rest, b"sips:", 5):
        a += 5
    elif rest.n > 4 and span_starts_nocase(rest, b"sip:", 4):
        a += 4
    if b - a < 1 or b - a > MAX_IDENTITY:
        return -1
    for k in range(a, b):
        c = p[k]
        if c >= b'A' and c <= b'Z':
            c = c + 32
        if c >= b'a' and c <= b'z':
            letter = True
        elif not ((c >= b'0' and c <= b'9') or c == b'.' or c == b'_' or c == b'-'
                  or c == b'+' or c == b'@'):
            return -1
        out[m] = c
        m += 1
    if not letter:
        return -1
    for k in range(N_ANONYMOUS):
        if m == ANONYMOUS_LEN[k] and memcmp(out, ANONYMOUS[k], m) == 0:
            return -1
    return m


cdef uint64_t identity_number(Span s) noexcept nogil:
    """A caller identity's packed form (cdrtrace.parsing.numbers.pack_identity), 0 if none."""
    cdef char text[MAX_IDENTITY]
    cdef int m = identity_norm(s.p, s.n, text)
    if m < 0:
        return 0
    cdef uint64_t h = hash_bytes(14695981039346656037ULL, text, m) & 0xFFFFFFFFFFFFFFULL
    return (<uint64_t>3 << 62) | (<uint64_t>63 << 56) | h


cdef bint span_contains(Span s, const char* text, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(s.n - n + 1):
        if memcmp(s.p + k, text, n) == 0:
            return True
    return False


cdef inline bint is_local_channel(Span s) noexcept nogil:
    return s.n > 6 and memcmp(s.p, b"Local/", 6) == 0


cdef uint64_t channel_number(Span s, const Plan* cc) noexcept nogil:
    """'PJSIP/1001-0000001b' -> 1001; 'Local/1002@ctx-0001;1' -> 1002; else 0."""
    cdef Py_ssize_t i, j, k
    cdef const char* dash
    i = cdr_find3(s.p, s.p + s.n, b'/', b'/', b'/') - s.p
    if i >= s.n:
        return 0
    i += 1
    j = cdr_find3(s.p + i, s.p + s.n, b'@', b'/', b';') - s.p
    k = j
    if j == s.n or s.p[j] == b';':
        # no '@': the channel's unique suffix follows the last '-' (not the first byte)
        dash = cdr_rfind(s.p + i + 1, s.p + j, b'-')
        k = dash - s.p if dash != NULL else j
    if k <= i:
        return 0
    return normalize(s.p + i, k - i, cc)


cdef inline uint32_t load_u32(const char* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef uint32_t DIAL_LOWER = load_u32(b"dial")     # an application's name, lowercased (| 0x20)


cdef Py_ssize_t dial_devices_length(Span s) noexcept nogil:
    """The length of a Dial's devices (its arguments up to the first ',', or '|' as
    Asterisk 1.4 wrote them) if they are two or more (joined by '&'), else 0. Most Dials
    name one device: one search, to the first '&', ',' or '|', is all they cost."""
    cdef const char* end = s.p + s.n
    cdef const char* q = cdr_find3(s.p, end, b'&', b',', b'|')
    if q == end or q[0] != b'&':
        return 0
    return cdr_find3(q, end, b',', b'|', b',') - s.p


cdef int dial_members(Span s, const Plan* cc, Columns* out) noexcept nogil:
    """Append to out.member the lines of a Dial's devices ('SIP/301&PJSIP/302'), each read
    as a channel's (channel_number), in order, each once; a Local channel is skipped: the
    dialplan it runs writes a record of its own (its other half's). Their count, or -1
    when there is no memory for them."""
    cdef const char* end = s.p + s.n
    cdef const char* p = s.p
    cdef const char* q
    cdef Span dev
    cdef uint64_t v
    cdef uint64_t* grown
    cdef Py_ssize_t first = out.member_n, k
    while p < end:
        q = cdr_find3(p, end, b'&', b'&', b'&')
        dev.p, dev.n = p, q - p
        while dev.n and dev.p[0] == b' ':
            dev.p += 1
            dev.n -= 1
        p = q + 1
        if dev.n >= 6 and span_starts_nocase(dev, b"local/", 6):
            continue
        v = channel_number(dev, cc)
        if v == 0:
            continue
        for k in range(first, out.member_n):
            if out.member[k] == v:
                break
        else:
            if out.member_n == out.member_cap:
                grown = <uint64_t*>realloc(out.member, (out.member_cap * 2 + 64) * sizeof(uint64_t))
                if grown == NULL:
                    return -1
                out.member, out.member_cap = grown, out.member_cap * 2 + 64
            out.member[out.member_n] = v
            out.member_n += 1
    return out.member_n - first


# ---------------------------------------------------------------- records

cdef struct Quoted:         # the tokenizer's two modes, as types: Cython compiles one
    char unused             # function per mode, with no test of the mode per byte
cdef struct Escaped:
    char unused
ctypedef fused Mode:
    Quoted
    Escaped


cdef int tokenize(Mode* mode, const char* r, const char* end, bint final, bint lenient,
                  char delim, char quote, int keep_fields, Span* f, int* nf,
                  const char** rec_end, const char** next_rec) noexcept nogil:
    """Split one record into fields. ST_OK, ST_NEED_MORE or an error code.

    lenient (FreeSWITCH): quotes inside values are not doubled, so a quote ends a
    field only where a comma or the line end follows it; spaces before an opening
    quote are skipped. escaped (Kamailio db_text): no field is quoted; the quote byte
    is an escape that makes the next byte data (a delimiter too), and the span keeps
    both. Only the first keep_fields spans are stored (the columns the dialect reads);
    the rest are counted."""
    cdef const char* p = r
    cdef const char* q
    cdef const char* s
    cdef int k = 0
    cdef char c
    while True:
        if lenient:
            s = p
            while s < end and s[0] == b' ':
                s += 1
            if s < end and s[0] == quote:
                p = s
        if Mode is Quoted and p < end and p[0] == quote:
            if p + 2 < end and p[1] == quote and p[2] == delim:
                # an empty quoted field ("" then a delimiter: most of a CUCM record's)
                if k < keep_fields:
                    f[k].p = p + 1
                    f[k].n = 0
                k += 1
                p += 3
                continue
            q = p + 1
            while True:
                if q >= end or q[0] != quote:   # an empty field needs no memchr call
                    q = <const char*>memchr(q, quote, end - q)
                if q == NULL:
                    rec_end[0] = end
                    if not final:
                        return ERR_TOO_LONG if end - r > MAX_RECORD else ST_NEED_MORE
                    return ERR_UNTERMINATED
                if q + 1 == end and not final:
                    return ST_NEED_MORE
                if lenient:
                    if q + 1 < end and q[1] != delim and q[1] != b'\n' and q[1] != b'\r':
                        q += 1          # a quote inside the value
                        continue
                elif q + 1 < end and q[1] == quote:
                    q += 2
                    continue
                break
            if k < keep_fields:
                f[k].p = p + 1
                f[k].n = q - p - 1
            k += 1
            p = q + 1
            if p < end and p[0] != delim and p[0] != b'\n' and p[0] != b'\r':
                rec_end[0] = p
                return ERR_AFTER_QUOTE
        elif (p + 1 < end and p[1] == delim and p[0] != delim and p[0] != quote
              and p[0] != b'\n' and p[0] != b'\r'):
            # a one-byte unquoted field ('0' in most CUCM columns): no scan loop
            if k < keep_fields:
                f[k].p = p
                f[k].n = 1
            k += 1
            p += 2
            continue
        else:
            s = p
            while p < end:
                c = p[0]
                if c == delim or c == b'\n' or c == b'\r':
                    break
                if c == quote:
                    if Mode is Quoted:
                        rec_end[0] = p
                        return ERR_QUOTE_UNQUOTED
                    else:                   # the escaped byte is data; a line end stays one
                        p += 2 if p + 1 < end and p[1] != b'\n' and p[1] != b'\r' else 1
                        continue
                p += 1
            if k < keep_fields:
                f[k].p = s
                f[k].n = p - s
            k += 1
        # p is at a delimiter or the buffer end
        if p >= end:
            if not final:
                rec_end[0] = end
                return ERR_TOO_LONG if end - r > MAX_RECORD else ST_NEED_MORE
            rec_end[0] = end
            next_rec[0] = end
            break
        c = p[0]
        if c == delim:
            p += 1
            continue
        if c == b'\n':
            rec_end[0] = p
            next_rec[0] = p + 1
            break
        # c == '\r'
        if p + 1 < end:
            if p[1] != b'\n':
                rec_end[0] = p
                return ERR_CR
            rec_end[0] = p
            next_rec[0] = p + 2
            break
        if not final:
            return ST_NEED_MORE
        rec_end[0] = p
        next_rec[0] = end
        break
    nf[0] = k
    if rec_end[0] - r > MAX_RECORD:
        return ERR_TOO_LONG
    return ST_OK


cdef inline bint is_marker(Span* f, int nf) noexcept nogil:
    """A BroadWorks line that is not a call: 'version=... encoding=...', or the
    '<recordId>,,Start' and '<recordId>,,End' records a server writes when it starts
    and stops (also mid-file)."""
    if nf == 1:
        return f[0].n > 8 and memcmp(f[0].p, b"version=", 8) == 0
    return nf == 3 and f[1].n == 0 and f[0].n > 0 and (span_is(f[2], b"Start", 5)
                                                       or span_is(f[2], b"End", 3))


cdef inline Span col(Span* f, int nf, int c) noexcept nogil:
    """Field c of the record, or an empty span when the layout or the record lacks it."""
    cdef Span empty
    if 0 <= c < nf:
        return f[c]
    empty.p = EMPTY
    empty.n = 0
    return empty


cdef int split_quoted(const char* r, const char* e, char delim, char quote, int want,
                      int keep_fields, Span* f, int* nf) noexcept nogil:
    """Split a line whose every field is quoted but whose quotes are not escaped
    (FreeSWITCH) into exactly `want` fields: fields end at quote-delimiter-quote (spaces
    allowed before the opening quote); separators beyond `want` fields are taken to be
    inside the first field, the caller's name, at most NAME_SEPARATORS of them (more
    are fields of another record: files joined, a record cut short with the next after
    it). 0 on success, -1 if the line is not of that shape, or has fewer fields or more."""
    cdef const char* ends[MAX_FIELDS]     # closing quote of field k
    cdef const char* starts[MAX_FIELDS]   # first byte of field k
    cdef const char* p
    cdef const char* s
    cdef int n = 1, excess, k, j
    if e - r < 2 or r[0] != quote or (e - 1)[0] != quote or want < 1 or want >= MAX_FIELDS:
        return -1
    starts[0] = r + 1
    p = r + 1
    while p < e - 1:
        if p[0] == quote and p[1] == delim:
            s = p + 2
            while s < e and s[0] == b' ':
                s += 1
            if s < e - 1 and s[0] == quote:
                if n >= MAX_FIELDS - 1:
                    return -1
                ends[n - 1] = p
                starts[n] = s + 1
                n += 1
                p = s + 1
                continue
        p += 1
    ends[n - 1] = e - 1
    if n < want or n - want > NAME_SEPARATORS:
        return -1
    excess = n - want
    for k in range(want):
        j = k + excess if k > 0 else 0
        if k < keep_fields:
            f[k].p = starts[j]
            f[k].n = ends[k + excess] - starts[j]
    nf[0] = want
    return 0


cdef int parse_time(int kind, Span s, Zone* z, int64_t* out) noexcept nogil:
    """A time field in the dialect's form -> UTC microseconds. 0 ok, 1 none, -1 bad."""
    cdef int64_t v
    cdef Span digits
    cdef Py_ssize_t i
    cdef int64_t frac = 0, scale = 100000
    if s.n == 0:
        return 1
    if kind == TIME_LOCAL:
        return parse_timestamp(s, z, out)
    if kind == TIME_EPOCH:          # seconds[.f{1,6}] (Kamailio's $TV(Sn) has microseconds)
        digits = s
        for i in range(s.n):
            if s.p[i] == b'.':
                digits.n = i
                break
        if digits.n < s.n:
            if s.n - digits.n - 1 < 1 or s.n - digits.n - 1 > 6:
                return -1
            for i in range(digits.n + 1, s.n):
                if s.p[i] < b'0' or s.p[i] > b'9':
                    return -1
                frac += (s.p[i] - 48) * scale
                scale //= 10
        if parse_uint(digits, &v) != 0 or v >= 4102444800LL:
            return -1
        if v == 0:
            return 1
        out[0] = v * 1000000 + frac
        return 0
    # TIME_COMPACT: YYYYMMDDhhmmss[.f{1,6}]
    if s.n < 14 or (s.n > 14 and (s.p[14] != b'.' or s.n == 15 or s.n > 21)):
        return -1
    for i in range(15, s.n):
        if s.p[i] < b'0' or s.p[i] > b'9':
            return -1
        frac += (s.p[i] - 48) * scale
        scale //= 10
    digits.p = s.p
    digits.n = 14
    if compact_timestamp(digits, z, out) != 0:
        return -1
    out[0] += frac
    return 0


cdef int compact_timestamp(Span s, Zone* z, int64_t* out) noexcept nogil:
    cdef const char* p = s.p
    cdef int y1 = two(p), y2 = two(p + 2), mo = two(p + 4), d = two(p + 6)
    cdef int h = two(p + 8), mi = two(p + 10), sec = two(p + 12)
    if y1 < 0 or y2 < 0 or mo < 0 or d < 0 or h < 0 or mi < 0 or sec < 0:
        return -1
    cdef int y = y1 * 100 + y2
    if y < 1970 or y > 2099 or mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo):
        return -1
    if h > 23 or mi > 59 or sec > 59:
        return -1
    out[0] = local_to_utc(z, days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) * 1000000
    return 0


cdef inline bint rang_unanswered(int disp) noexcept nogil:
    """A disposition of a call that rang the line and was not answered there."""
    return disp == DISP_NO_ANSWER or disp == DISP_CANCELLED or disp == DISP_ANSWERED_ELSEWHERE


# how long after its start a busy or rejected call may have rung first: a person takes
# longer than this to refuse a ringing call (formats.LATE_REFUSAL_US, checked at import)
cdef int64_t LATE_REFUSAL_US = 1000000


cdef inline bint may_have_rung(bint logs_alerting, bint untimed, int64_t start,
                               int64_t end_) noexcept nogil:
    """A record that shows neither that the line alerted nor that it did not, of a call
    that ended a second or more after it began (or a second or more before: clocks apart),
    or whose record tells no time it lasted (untimed: its end empty, or no end and no
    duration in the layout, as a Kamailio transaction row's one time): the line may have
    rung. Less is a whole-second end in the start's second: it did not."""
    return not logs_alerting and (untimed or end_ - start >= LATE_REFUSAL_US
                                  or start - end_ >= LATE_REFUSAL_US)


cdef inline bint late_refusal(int disp, bint logs_alerting, bint untimed, int64_t start,
                              int64_t end_) noexcept nogil:
    """A busy or rejected call that may have rung (may_have_rung: logs_alerting false is
    no such column, or early media without ringing): the line's user may have refused it
    while it rang, so it may have been received (docs/formats.md)."""
    return ((disp == DISP_BUSY or disp == DISP_REJECTED)
            and may_have_rung(logs_alerting, untimed, start, end_))


cdef inline bint late_failure(int disp, bint reached_none, bint logs_alerting, bint untimed,
                              int64_t start, int64_t end_) noexcept nogil:
    """A call that failed, for a cause that does not say it reached no phone, and may have
    rung (may_have_rung): a phone or proxy that gives up on a ringing call may end it with
    a timeout (408, Q.850 102) or whatever reply its software is set to send (a 5xx, a
    302 to a forwarding target), so it may have been received (docs/trace-rules.md)."""
    return ((disp == DISP_FAILED or disp == DISP_CONGESTION) and not reached_none
            and may_have_rung(logs_alerting, untimed, start, end_))


cdef inline bint cause_reaches_no_phone(int64_t cause) noexcept nogil:
    """Q.850 causes of a call that reached no phone of the line: no route to the
    destination (3), subscriber absent (20), number changed (22), destination out of
    order (27), invalid number format (28), incompatible destination (88). Unallocated (1)
    has its own disposition."""
    return (cause == 3 or cause == 20 or cause == 22 or cause == 27 or cause == 28
            or cause == 88)


cdef bint q850_name_reaches_no_phone(Span s) noexcept nogil:
    """FreeSWITCH's names of cause_reaches_no_phone's causes, its own USER_NOT_REGISTERED,
    and PROGRESS_TIMEOUT (no ringing nor progress before its timeout)."""
    return (span_is(s, b"PROGRESS_TIMEOUT", 16) or span_is(s, b"USER_NOT_REGISTERED", 19)
            or span_is(s, b"SUBSCRIBER_ABSENT", 17) or span_is(s, b"NO_ROUTE_DESTINATION", 20)
            or span_is(s, b"NO_ROUTE_TRANSIT_NET", 20) or span_is(s, b"NUMBER_CHANGED", 14)
            or span_is(s, b"INVALID_NUMBER_FORMAT", 21)
            or span_is(s, b"DESTINATION_OUT_OF_ORDER", 24)
            or span_is(s, b"INCOMPATIBLE_DESTINATION", 24))


cdef inline bint cause_split(int64_t cause) noexcept nogil:
    """CUCM's cause of a call split off by a transfer: 393216, 126 before release 5
    (formats.CAUSES_SPLIT)."""
    return cause == 393216 or cause == 126


cdef int cause_disposition(int64_t cause) noexcept nogil:
    """Q.850 cause of a call that was not connected -> disposition."""
    if cause == 18 or cause == 19:
        return DISP_NO_ANSWER
    if cause == 26:         # non-selected user clearing: it rang, another phone was given it
        return DISP_ANSWERED_ELSEWHERE
    if cause == 17:
        return DISP_BUSY
    if cause == 21:
        return DISP_REJECTED
    if cause == 1:
        return DISP_UNALLOCATED
    return DISP_FAILED


cdef int q850_name_disposition(Span s, bint answered, bint alerted) noexcept nogil:
    """FreeSWITCH hangup_cause (CDR_FORMATS.md table); -1 if it is not a cause name."""
    cdef Py_ssize_t i
    if s.n == 0 or s.n > 48:
        return -1
    for i in range(s.n):
        if not ((s.p[i] >= b'A' and s.p[i] <= b'Z') or s.p[i] == b'_' or
                (s.p[i] >= b'0' and s.p[i] <= b'9')):
            return -1
    if answered:
        return DISP_ANSWERED
    if span_is(s, b"ORIGINATOR_CANCEL", 17):
        return DISP_CANCELLED
    if span_is(s, b"NO_ANSWER", 9) or span_is(s, b"NO_USER_RESPONSE", 16):
        return DISP_NO_ANSWER
    if span_is(s, b"LOSE_RACE", 9) or span_is(s, b"PICKED_OFF", 10):
        # it rang: another phone of the group (or device of the line) answered, or picked
        # the call up
        return DISP_ANSWERED_ELSEWHERE
    if span_is(s, b"ALLOTTED_TIMEOUT", 16):
        # unanswered: its own ring time (leg_timeout) ran out, as NO_ANSWER is the call's
        return DISP_NO_ANSWER
    if span_is(s, b"USER_BUSY", 9):
        return DISP_BUSY
    if span_is(s, b"CALL_REJECTED", 13):
        return DISP_REJECTED
    if span_is(s, b"UNALLOCATED_NUMBER", 18):
        return DISP_UNALLOCATED
    if span_is(s, b"NORMAL_CLEARING", 15):
        # unanswered normal clearing: the caller hung up; it rang only if alerting is logged
        return DISP_CANCELLED if alerted else DISP_UNKNOWN
    return DISP_FAILED


cdef int lookup(Vocabulary* v, Span s) noexcept nogil:
    """The code of a configured value (exact bytes), or -1."""
    cdef int k
    for k in range(v.n):
        if v.length[k] == s.n and memcmp(v.word[k], s.p, s.n) == 0:
            return v.code[k]
    return -1


cdef int extract(const char* r, const char* rec_end, Span* f, int nf, Dialect* d, Zone* z,
                 const Plan* cc, int64_t min_ring_us, uint16_t feed, Columns* out, Py_ssize_t i,
                 int* bad_column, bint check_nul, Vocabulary* dispositions,
                 Vocabulary* presentations) noexcept nogil:
    """Fill row i of out from one record, as the dialect's column map says."""
    cdef int64_t start, answer = 0, end_ = 0, v, dest = 0, orig = 0, billsec = -1
    cdef int disp, t
    cdef bint reached_none = False   # a cause that says the call reached no phone of the line
    cdef bint untimed = d.c_end < 0 and d.c_duration < 0   # no time the call lasted
    cdef uint64_t calling, called, dialled, redirecting = 0, final_ = 0, h
    cdef int pres = PRES_ALLOWED
    cdef Span s, leg, join
    if check_nul and memchr(r, 0, rec_end - r) != NULL:
        return ERR_NUL
    if nf < d.min_cols or nf > d.max_cols:
        bad_column[0] = nf
        return ERR_FIELD_COUNT
    if parse_time(d.time_kind, col(f, nf, d.c_start), z, &start) != 0:
        bad_column[0] = d.c_start + 1
        return ERR_TIMESTAMP
    if d.c_answer >= 0:
        t = parse_time(d.time_kind, col(f, nf, d.c_answer), z, &answer)
        if t < 0:
            bad_column[0] = d.c_answer + 1
            return ERR_TIMESTAMP
        if t == 1:
            answer = 0
    end_ = start
    if d.c_end >= 0:
        t = parse_time(d.time_kind, col(f, nf, d.c_end), z, &end_)
        if t < 0 or (t == 1 and d.end_required):
            bad_column[0] = d.c_end + 1
            return ERR_TIMESTAMP
        if t == 1:
            end_ = start
            untimed = True        # no end given: no time the call lasted
    if d.c_duration >= 0 and parse_uint(col(f, nf, d.c_duration), &v) != 0:
        bad_column[0] = d.c_duration + 1
        return ERR_DURATION
    if d.c_end < 0 and d.c_duration >= 0:
        end_ = start + v * 1000000    # no end column (Asterisk's database table): duration
    if d.c_billsec >= 0:
        if parse_uint(col(f, nf, d.c_billsec), &billsec) != 0:
            bad_column[0] = d.c_billsec + 1
            return ERR_DURATION
    if d.c_dest_cause >= 0:
        s = col(f, nf, d.c_dest_cause)
        if s.n and parse_uint(s, &dest) != 0:
            bad_column[0] = d.c_dest_cause + 1
            return ERR_CAUSE
    if d.c_orig_cause >= 0:
        s = col(f, nf, d.c_orig_cause)
        if s.n and parse_uint(s, &orig) != 0:
            bad_column[0] = d.c_orig_cause + 1
            return ERR_CAUSE
    if d.disp_kind == DK_ASTERISK:
        disp = disposition_code(col(f, nf, d.c_disposition))
    elif d.disp_kind == DK_CUCM:   # split by a transfer, connected, else the causes
        if cause_split(dest) or cause_split(orig):
            disp = DISP_TRANSFERRED
        elif answer:
            disp = DISP_ANSWERED
        elif dest == 0 and orig == 16:
            disp = DISP_CANCELLED
        else:
            disp = cause_disposition(dest)
            reached_none = cause_reaches_no_phone(dest)
    elif d.disp_kind == DK_VOCABULARY:
        disp = lookup(dispositions, col(f, nf, d.c_disposition))
        if disp == DISP_ANSWERED and d.c_answer >= 0 and not answer:
            disp = -1            # 'answered' without an answer time cannot be trusted
    elif d.disp_kind == DK_Q850_NAME:
        disp = q850_name_disposition(col(f, nf, d.c_disposition), answer != 0,
                                     col(f, nf, d.c_progress).n > 0)
        if disp == DISP_FAILED:    # the names compared only where they can matter
            reached_none = q850_name_reaches_no_phone(col(f, nf, d.c_disposition))
    else:                          # DK_BROADWORKS: answerIndicator, then terminationCause
        s = col(f, nf, d.c_disposition)
        if s.n == 3 and span_starts_nocase(s, b"yes", 3):
            disp = DISP_ANSWERED
        elif s.n == 19 and span_starts_nocase(s, b"yes-postredirection", 19):
            disp = DISP_ANSWERED_ELSEWHERE    # the user's line forwarded it; another answered
        elif span_is(s, b"No", 2):
            disp = DISP_CANCELLED if dest == 16 else cause_disposition(dest)
            reached_none = cause_reaches_no_phone(dest)
        else:
            disp = -1
    if disp < 0:
        bad_column[0] = d.c_disposition + 1
        return ERR_DISPOSITION
    if disp != DISP_ANSWERED and disp != DISP_TRANSFERRED:
        answer = 0      # voicemail or an IVR answered the caller's channel, not the line
    elif d.c_answer < 0 and billsec >= 0:
        # no answer column (Asterisk's database table): billsec is the end less the answer
        answer = max(start, end_ - billsec * 1000000)

    s = col(f, nf, d.c_calling)
    if d.c_asserted >= 0 and col(f, nf, d.c_asserted).n > 0:
        s = col(f, nf, d.c_asserted)   # the network's asserted caller wins over From
    calling = normalize(s.p, s.n, cc)
    if calling == 0 and d.c_clid >= 0:
        calling = clid_number(col(f, nf, d.c_clid), cc)
        if calling != 0 and s.n > 0 and identity_number(s) == 0:
            pres = PRES_RESTRICTED   # 'anonymous' shown, the number is in the caller id
    if calling == 0:
        calling = identity_number(s)     # a SIP user the switch authenticated
        if calling != 0:
            out.ident_at[i] = s.p - r
            out.ident_len[i] = s.n
    if calling == 0:
        pres = PRES_UNAVAILABLE
    s = col(f, nf, d.c_called)
    called = normalize(s.p, s.n, cc)
    dialled = called
    if d.c_redirecting >= 0:
        s = col(f, nf, d.c_redirecting)
        redirecting = normalize(s.p, s.n, cc)
    if redirecting == 0 and d.c_redirecting2 >= 0:
        s = col(f, nf, d.c_redirecting2)
        redirecting = normalize(s.p, s.n, cc)
    cdef bint rang = True
    if d.c_channel >= 0:
        s = col(f, nf, d.c_channel)
        final_ = channel_number(s, cc)
        if s.n == 0:
            rang = False          # no destination channel: nothing rang
        elif final_ == 0 and is_local_channel(col(f, nf, d.c_srcchannel)):
            rang = False          # a call placed through a Local channel to a trunk
        # a Local channel is no phone: what it dialled is its other half's own record, so
        # a failure to it (the Congestion half of a Local pair) is no late failure
        reached_none = reached_none or is_local_channel(s)
        if called == 0:
            called = final_       # a ring group member: the phone in the channel rang
    elif d.c_final >= 0:
        s = col(f, nf, d.c_final)
        final_ = normalize(s.p, s.n, cc)
    cdef bint alerted = 0 <= d.c_progress < nf and f[d.c_progress].n > 0
    cdef bint shows_none = (0 <= d.c_progress < nf and not alerted and d.progress_complete
                            and (d.c_early_media < 0 or (d.c_early_media < nf
                                                         and f[d.c_early_media].n == 0)))
    if d.disp_kind == DK_VOCABULARY and shows_none and rang_unanswered(disp):
        rang = False    # the record logs alerting (Kamailio's rang) and shows none
    if d.pres_kind == PK_ASTERISK_USERFIELD and d.c_presentation < nf:
        s = col(f, nf, d.c_presentation)
        if span_starts_nocase(s, b"prohib", 6):
            if pres == PRES_ALLOWED:
                pres = PRES_RESTRICTED
        elif span_starts_nocase(s, b"unavailable", 11):
            pres = PRES_UNAVAILABLE
        elif span_starts_nocase(s, b"allowed", 7):
            pass
        elif redirecting == 0:
            redirecting = normalize(s.p, s.n, cc)   # operators put a Diversion number here
    elif d.pres_kind == PK_PUBLIC_PRIVATE:
        if span_starts_nocase(col(f, nf, d.c_presentation), b"priv", 4) and pres == PRES_ALLOWED:
            pres = PRES_RESTRICTED
    elif d.pres_kind == PK_VOCABULARY:
        t = lookup(presentations, col(f, nf, d.c_presentation))
        if t == PRES_UNAVAILABLE or (t == PRES_RESTRICTED and pres == PRES_ALLOWED):
            pres = t
    elif d.pres_kind == PK_SIP_PRIVACY:
        if span_contains_id(col(f, nf, d.c_presentation)) and pres == PRES_ALLOWED:
            pres = PRES_RESTRICTED
    if redirecting == called and (final_ == 0 or final_ == called):
        redirecting = 0     # kept when it rang elsewhere: the dialled line forwarded it
    if redirecting == calling:
        redirecting = 0     # no caller forwards its own call: a userfield keeping the caller id
    if final_ == called:
        final_ = 0
    cdef uint64_t line = final_ if final_ != 0 else called    # the switch user's own line
    cdef int64_t activated = 0
    if d.c_cot >= 0 and parse_time(d.time_kind, col(f, nf, d.c_cot), z, &activated) != 0:
        activated = 0
    if d.c_comment >= 0 and span_contains(col(f, nf, d.c_comment), b"callFlag=MALICIOUS", 18):
        activated = end_         # malicious call id, flagged during the call
    cdef bint incoming = True
    if d.c_direction >= 0 and not span_starts_nocase(col(f, nf, d.c_direction), b"terminating", 11):
        called = redirecting = final_ = 0     # not an incoming call: nothing to index
        incoming = False
    if d.c_method >= 0 and not span_is(col(f, nf, d.c_method), b"INVITE", 6):
        called = redirecting = final_ = 0     # a BYE's row (or another method's): no call
        incoming = False
    s = col(f, nf, d.c_callid_peer)
    if s.n == 0:
        s = col(f, nf, d.c_callid)
    leg, join = col(f, nf, d.c_dest_leg), col(f, nf, d.c_join)
    if s.n > 0 and leg.n > 0 and not span_is(leg, b"0", 1) and (
            disp == DISP_TRANSFERRED or (join.n > 0 and not span_is(join, b"0", 1))):
        # split off by a transfer, or joined to the line by one: the call is the called
        # party's leg, which the transfer keeps (the consultation call and the final one)
        h = hash_bytes(14695981039346656037ULL ^ feed, b"l", 1)
        h = hash_bytes(h, s.p, s.n)
        h = hash_bytes(h, b"|", 1)
        h = hash_bytes(h, leg.p, leg.n)
    elif s.n > 0:
        h = hash_bytes(14695981039346656037ULL ^ feed, b"u", 1)
        h = hash_bytes(h, s.p, s.n)
        if d.c_callid2 >= 0:
            s = col(f, nf, d.c_callid2)
            h = hash_bytes(h, b"|", 1)
            h = hash_bytes(h, s.p, s.n)
    else:
        h = hash_bytes(14695981039346656037ULL ^ feed, b"r", 1)
        h = hash_bytes(h, r, rec_end - r)

    out.start_us[i] = start
    out.answer_us[i] = answer
    out.end_us[i] = end_
    out.calling[i] = calling
    out.presentation[i] = pres
    out.called[i] = called
    out.redirecting[i] = redirecting
    out.final[i] = final_
    # a record that logs the line alerting (Kamailio's rang, FreeSWITCH's progress_stamp)
    # shows it received the call (R3), however it ended: a phone whose user rejects a
    # ringing call answers busy or declined; one that shows none never rang. Else (no such
    # column, or early media without ringing) its times decide (late_refusal), as they do
    # for a failure whose cause does not say it reached no phone (late_failure).
    if late_refusal(disp, alerted or shows_none, untimed, start, end_):
        disp = DISP_LATE_REFUSAL
    elif late_failure(disp, reached_none, alerted or shows_none, untimed, start, end_):
        disp = DISP_LATE_FAILURE
    out.disposition[i] = disp
    # an end before the start (clocks apart) tells no ring time: it rang (fail closed). An
    # unknown end (FreeSWITCH's NORMAL_CLEARING unanswered: a dialplan's hangup after its
    # bridge) may have rung too, as a late refusal may: received, and traces fail closed
    out.received[i] = called != 0 and rang and (
        disp == DISP_ANSWERED or
        ((rang_unanswered(disp) or alerted or disp == DISP_LATE_REFUSAL
          or disp == DISP_LATE_FAILURE or disp == DISP_TRANSFERRED
          or (disp == DISP_UNKNOWN and may_have_rung(shows_none, untimed, start, end_)))
         and (end_ - start >= min_ring_us or end_ < start or untimed)))
    out.call_id[i] = h
    out.feed[i] = feed
    # a call through a hunt pilot (CUCM: huntPilotDN once a member answered, pattern usage
    # 7 otherwise) rang its members' phones; the record names the pilot, and at most the
    # member that answered (docs/trace-rules.md, "A call to a hunt group")
    cdef uint64_t pilot = 0
    if out.received[i] and (d.c_hunt >= 0 or d.c_pattern >= 0):
        s = col(f, nf, d.c_hunt)
        pilot = normalize(s.p, s.n, cc)
        if pilot == 0 and span_is(col(f, nf, d.c_pattern), b"7", 1):
            pilot = called
        if pilot != 0:
            out.hunt_row[out.hunt_n] = i
            out.hunt_pilot[out.hunt_n] = pilot
            out.hunt_members[out.hunt_n] = 0
            out.hunt_n += 1
    # an Asterisk Dial to several devices at once (a ring group: Dial(SIP/301&SIP/302)) rang
    # them all; Asterisk up to 11 writes one record, naming at most one of them (its
    # dstchannel): its members are the lines its devices name, two at least (one note a
    # record at most: the hunt arrays hold one a record). An Asterisk Queue rang its
    # members (queues.conf's), and up to 11 the caller's one record names at most the one
    # that answered, answered or not (its disposition is the queue's, BUSY where one member
    # was): its pilot is the number dialled (0 where none, such as 's'), its members those
    # the feed's configuration lists, else any line of the feed. Not a record that names a
    # phone that never rang (Asterisk 12+ writes one per member tried, a busy one's too)
    cdef int n_members
    if pilot == 0 and incoming and d.c_app >= 0:
        s = col(f, nf, d.c_app)
        if (s.n == 4 and (load_u32(s.p) | <uint32_t>0x20202020) == DIAL_LOWER    # any case
                and out.received[i] and d.c_data >= 0):
            s = col(f, nf, d.c_data)
            s.n = dial_devices_length(s)
            if s.n > 0:
                n_members = dial_members(s, cc, out)
                if n_members < 0:
                    out.member_oom = True        # feed raises MemoryError: nothing is lost
                elif n_members >= 2:
                    out.hunt_row[out.hunt_n] = i
                    out.hunt_pilot[out.hunt_n] = called
                    out.hunt_members[out.hunt_n] = n_members
                    out.hunt_n += 1
                else:
                    out.member_n -= n_members
        elif (s.n == 5 and span_starts_nocase(s, b"queue", 5) and (out.received[i] or not rang)
                and (end_ - start >= min_ring_us or end_ < start)):
            out.hunt_row[out.hunt_n] = i
            out.hunt_pilot[out.hunt_n] = dialled
            out.hunt_members[out.hunt_n] = 0
            out.hunt_n += 1
    # a switch that hosts several customers' PBXs names whose line a record is for (a
    # BroadWorks group, a FreeSWITCH domain's context): a feed whose records name two
    # for lines the switch numbers itself cannot tell whose extension dialled *57
    # (take_tenants; docs/trace-rules.md, "A line a switch numbers itself"). An outgoing
    # call's record (BroadWorks' originating) has no line here: none of its own is named
    cdef Span scope
    cdef uint64_t th
    if d.c_tenant >= 0 and (
            (called != 0 and called >> 62 != 1) or (final_ != 0 and final_ >> 62 != 1)):
        s = col(f, nf, d.c_tenant)
        scope = col(f, nf, d.c_tenant_scope)     # (empty where the layout has none)
        if (s.n > 0 and s.n == out.tenant_last_n and memcmp(s.p, out.tenant_last, s.n) == 0
                and scope.n == out.scope_last_n
                and (scope.n == 0 or memcmp(scope.p, out.scope_last, scope.n) == 0)):
            note_tenant(out, out.tenant_last_h, &s, &scope)
        elif s.n > 0 and (not d.tenant_domains or memchr(s.p, b'.', s.n) != NULL):
            th = 14695981039346656037ULL
            if d.c_tenant_scope >= 0:            # a group's name is its provider's alone
                th = hash_lower(th, scope)
            out.tenant_last, out.tenant_last_n = s.p, s.n
            out.scope_last, out.scope_last_n = scope.p, scope.n
            out.tenant_last_h = hash_lower(th, s)
            note_tenant(out, out.tenant_last_h, &s, &scope)
    if activated != 0 and line != 0:
        out.act_row[out.act_n] = i
        out.act_us[out.act_n] = activated
        out.act_line[out.act_n] = line
        out.act_n += 1
    return ST_OK


cdef fill_vocabulary(Vocabulary* v, dict words, str what):
    """Copy a {bytes value: code} table into the C vocabulary."""
    if len(words) > MAX_WORDS:
        raise ValueError(f"at most {MAX_WORDS} {what} values")
    v.n = 0
    for word, code in words.items():
        if not isinstance(word, bytes) or not 0 < len(word) <= MAX_WORD:
            raise ValueError(f"{what} values must be 1 to {MAX_WORD} bytes: {word!r}")
        memcpy(v.word[v.n], <const char*>word, len(word))
        v.length[v.n] = len(word)
        v.code[v.n] = code
        v.n += 1


def _unquote(bytes token, int quote):
    """A field of a record split without regard to quotes: spaces and quotes stripped."""
    token = token.strip(b" \r")
    if token[:1] == bytes([quote]):
        token = token[1:]
    if token[-1:] == bytes([quote]):
        token = token[:-1]
    return token


def _candidates(int column, Py_ssize_t n, int max_cols):
    """Where a column may sit in a record split into n pieces: its place counted from
    the front, and, if there are too many pieces, from the back."""
    out = []
    if 0 <= column < n:
        out.append(column)
    if column >= 0 and n > max_cols and column + n - max_cols < n:
        out.append(column + n - max_cols)
    return out


cdef tuple _call_fields():
    cdef CallRecord ones, sevens
    memset(&ones, 0xFF, sizeof(CallRecord))
    memset(&sevens, 0x7F, sizeof(CallRecord))
    return field_types(ones, sevens)


# the canonical record's columns: cdrtrace.parsing.formats builds COLUMNS from them
CALL_FIELDS = _call_fields()
cdef Py_ssize_t UNSHARED = 2   # references to a spare array nobody holds: the dict's, the loop's
MAX_COLUMNS = MAX_FIELDS - 1     # the widest record a dialect may describe

# the record's enumerations as this module was compiled: cdrtrace.parsing.parsers checks them
# against cdrtrace.parsing.formats at import, so the two can never drift apart silently
DISPOSITION_CODES = {"ANSWERED": DISP_ANSWERED, "NO_ANSWER": DISP_NO_ANSWER,
                     "CANCELLED": DISP_CANCELLED, "BUSY": DISP_BUSY, "FAILED": DISP_FAILED,
                     "CONGESTION": DISP_CONGESTION, "REJECTED": DISP_REJECTED,
                     "UNALLOCATED": DISP_UNALLOCATED, "UNKNOWN": DISP_UNKNOWN,
                     "ANSWERED_ELSEWHERE": DISP_ANSWERED_ELSEWHERE,
                     "LATE_REFUSAL": DISP_LATE_REFUSAL, "LATE_FAILURE": DISP_LATE_FAILURE,
                     "TRANSFERRED": DISP_TRANSFERRED}
LATE_REFUSAL_MICROSECONDS = LATE_REFUSAL_US
PRESENTATION_CODES = {"ALLOWED": PRES_ALLOWED, "RESTRICTED": PRES_RESTRICTED,
                      "UNAVAILABLE": PRES_UNAVAILABLE}


DIALECT_FIELDS = (
    "min_cols", "max_cols", "delimiter", "quote", "lenient_quotes", "end_required", "time_kind", "disp_kind",
    "pres_kind", "c_calling", "c_clid", "c_called", "c_redirecting", "c_redirecting2",
    "c_final", "c_channel", "c_start", "c_answer", "c_end", "c_duration", "c_billsec",
    "c_disposition", "c_orig_cause", "c_dest_cause", "c_callid", "c_callid2",
    "c_presentation", "c_direction", "c_progress", "c_srcchannel", "c_callid_peer", "markers",
    "c_cot", "c_comment", "c_asserted", "escaped", "c_method", "c_early_media",
    "progress_complete", "c_hunt", "c_pattern", "c_app", "c_data", "c_tenant", "tenant_domains",
    "c_tenant_scope", "c_dest_leg", "c_join",
)
# a call through a hunt pilot (take_hunts): when it began, its call id, the pilot,
# and the number its record names beyond the dialled one (finalCalledPartyNumber: the member
# that answered, with the cluster's 'Show Line Group Member DN in finalCalledPartyNumber CDR
# Field' on), or 0
HUNT_DTYPE = np.dtype([("start_us", "<i8"), ("call_id", "<u8"), ("pilot", "<u8"),
                       ("named", "<u8"), ("members", "<i8")])


cdef class CdrParser:
    """Streaming parser for one CSV dialect: the column map of a switch format.

    dialect maps each name in DIALECT_FIELDS to an int (columns 0-based, -1 absent);
    cdrtrace.parsing.formats builds it from a format's definition and, where the format has
    one, its header. feed(buffer, final) parses every complete record in buffer and returns
    (columns, rejects, consumed): columns is a dict of numpy arrays (the canonical
    record), rejects a list of (record, offset, reason, raw bytes), and consumed the
    number of bytes used; the caller keeps buffer[consumed:] and prepends it to the
    next chunk. Offsets and record numbers continue across calls. With rejects_wanted
    false, no rejects are returned (parsing.glued: tails tried that are no records).
    """
    cdef readonly int64_t offset
    cdef readonly int64_t record
    cdef readonly int64_t markers     # version, Start and End lines passed over
    cdef readonly int country_code
    cdef readonly int delimiter
    cdef Plan plan
    cdef readonly int feed_id
    cdef readonly int64_t min_ring_us
    cdef readonly str expected_fields
    cdef bint skipping
    cdef bint zeros          # the last buffer ended inside a run of zeros, rejected already
    cdef object _tz
    cdef Zone zone
    cdef Dialect dialect
    cdef Vocabulary dispositions
    cdef Vocabulary presentations
    cdef Py_ssize_t min_record
    cdef int keep_fields
    cdef set _seen
    cdef dict _identities
    cdef list _activations
    cdef list _hunts
    cdef list _hunt_members
    cdef tuple _tenants   # the two least tenants noted since take_tenants (note_tenant)
    cdef dict _tenant_names
    cdef dict _spare      # the last feed's arrays, written again once nothing else holds them

    def __init__(self, dict dialect not None, tz_starts, tz_offsets, int country_code=1,
                 int feed_id=0, double min_ring_seconds=0.0, int64_t start_offset=0,
                 dict dispositions=None, dict presentations=None, int64_t start_record=0,
                 plan=None):
        fill_plan(&self.plan, plan, country_code)
        self._seen, self._identities, self._activations, self._hunts = set(), {}, [], []
        self._hunt_members = []
        self._tenants, self._tenant_names = (), {}
        missing = [name for name in DIALECT_FIELDS if name not in dialect]
        if missing:
            raise ValueError(f"dialect lacks {', '.join(missing)}")
        if sizeof(Dialect) != len(DIALECT_FIELDS) * sizeof(int):
            raise SystemError("Dialect must be exactly the ints of DIALECT_FIELDS")
        cdef int* slot = &self.dialect.min_cols
        for k, name in enumerate(DIALECT_FIELDS):    # the struct is these ints, in order
            slot[k] = dialect[name]
        cdef Dialect d = self.dialect
        fill_vocabulary(&self.dispositions, dispositions or {}, "disposition")
        fill_vocabulary(&self.presentations, presentations or {}, "presentation")
        if d.min_cols < 1 or d.max_cols < d.min_cols or d.max_cols > MAX_FIELDS - 1:
            raise ValueError(f"dialect column counts must be 1 <= min <= max <= {MAX_FIELDS - 1}")
        if d.c_start < 0 or d.c_called < 0:
            raise ValueError("dialect needs a start time and a called number column")
        # the highest column any role reads, + 1: spans past it are never stored
        self.keep_fields = max(3, 1 + max(dialect[name] for name in DIALECT_FIELDS if name.startswith("c_")))
        self.expected_fields = (str(d.min_cols) if d.min_cols == d.max_cols
                                else f"{d.min_cols} to {d.max_cols}")
        # each record holds its separators, a start time and a line end at least
        self.min_record = d.min_cols + (19 if d.time_kind == TIME_LOCAL else 1)
        starts = np.ascontiguousarray(tz_starts, dtype=np.int64)
        offsets = np.ascontiguousarray(tz_offsets, dtype=np.int64)
        if starts.shape[0] == 0 or starts.shape[0] != offsets.shape[0]:
            raise ValueError("zone table needs matching, non-empty starts and offsets")
        local = starts + offsets
        local[0] = INT64_MIN
        self._tz = (starts, offsets, local)
        cdef const int64_t[::1] s = starts
        cdef const int64_t[::1] o = offsets
        cdef const int64_t[::1] loc = local
        self.zone.starts = &s[0]
        self.zone.offsets = &o[0]
        self.zone.local_starts = &loc[0]
        self.zone.n = starts.shape[0]
        self.zone.last = 0
        memset(self.zone.last_date, 0, 10)   # never a valid date: the first one is parsed
        self.country_code = country_code
        self.delimiter = d.delimiter
        self.feed_id = feed_id
        self.min_ring_us = <int64_t>(min_ring_seconds * 1e6)
        self.offset = start_offset   # where the records begin (after a header)
        self.record = start_record   # records before start_offset (a resumed source)
        self.skipping = False
        self.zeros = False

    @property
    def min_fields(self):
        """The fewest fields a record of the dialect has."""
        return self.dialect.min_cols

    def _intern(self, buffer, int64_t base_offset, dict rows, ident_at, ident_len):
        """Keep the text of each caller identity not seen before (take_identities)."""
        calling = rows["calling"]
        cdef char text[MAX_IDENTITY]
        cdef int m
        cdef const unsigned char[::1] buf = buffer
        cdef Py_ssize_t at
        if not len(calling):
            return
        where = np.flatnonzero((calling >> np.uint64(56)) == np.uint64((3 << 6) | 63))
        for i in where:
            packed = int(calling[i])
            if packed in self._seen:
                continue
            at = rows["offset"][i] - base_offset + ident_at[i]
            m = identity_norm(<const char*>&buf[at], ident_len[i], text)
            self._seen.add(packed)
            self._identities[packed] = text[:m].decode("latin-1")
            if len(self._seen) > 100_000:     # a bound: the store keeps them anyway
                self._seen.clear()

    def take_activations(self):
        """[(line, activated_us, record, offset)]: the traces (*57, malicious call id) the
        switch itself recorded in the records parsed since the last call."""
        taken, self._activations = self._activations, []
        return taken

    def take_hunts(self):
        """The calls through a hunt pilot parsed since the last call (HUNT_DTYPE)."""
        taken, self._hunts = self._hunts, []
        return np.concatenate(taken) if taken else np.empty(0, HUNT_DTYPE)

    def take_hunt_members(self):
        """The lines the records of take_hunts' calls name as rung, in their order (each
        call's `members` of them; an Asterisk Dial to several devices), as uint64."""
        taken, self._hunt_members = self._hunt_members, []
        return np.concatenate(taken) if taken else np.empty(0, np.uint64)

    def take_tenants(self):
        """The tenants (hashed, as ints) the records parsed since the last call name for
        lines their switch numbers itself: the two least distinct, ascending ((): none).
        Two show a switch that hosts several customers' PBXs in the feed."""
        taken, self._tenants = self._tenants, ()
        return taken

    def take_tenant_names(self):
        """Called after take_tenants: {tenant: its name} of the tenants it gave, as the
        first record to name each wrote it (scope/name where the layout scopes them:
        BroadWorks' serviceProvider/group)."""
        taken, self._tenant_names = self._tenant_names, {}
        return taken

    def take_identities(self):
        """{packed identity: its text} of the caller identities parsed since the last call."""
        taken, self._identities = self._identities, {}
        return taken

    def salvage(self, raw):
        """What a rejected record still tells, for failing closed (a trace must not pass
        over it to an older call): (dialled line, line that rang, start in UTC microseconds
        or None, hunt pilot, members), lines 0 where not recovered; None for a record that
        is not an incoming call. The hunt pilot (0: none) is the one a CUCM record names
        (huntPilotDN, or its dialled line with pattern usage 7), or its dialled line when
        huntPilotDN holds something that is no number: the call may have rung the pilot's
        members, whom no record names (docs/trace-rules.md, "A call to a hunt group"). An
        Asterisk Dial to several devices names its members (two or more lines, else ()),
        its pilot the dialled line, else the line that rang, else its first member; an
        Asterisk Queue none, its pilot the dialled line, else the line that rang (-1 if
        neither: a queue reached at no number, which may have rung any line). Fields
        are split at every delimiter with quotes stripped, and each is read where the
        layout puts it, counted from the front and, when the record has too many fields,
        from the back too. A record that is well-formed CSV (only a value was bad) is split
        by the format's own rules instead."""
        cdef Dialect* d = &self.dialect
        cdef bytes data = bytes(raw)
        cdef Span fields[MAX_FIELDS]
        cdef int nf = 0, status
        cdef const char* rec_end = NULL
        cdef const char* next_rec = NULL
        cdef const char* start = data
        if d.escaped:
            status = tokenize(<Escaped*>NULL, start, start + len(data), True, False,
                              <char>d.delimiter, <char>d.quote, self.keep_fields, fields, &nf,
                              &rec_end, &next_rec)
        else:
            status = tokenize(<Quoted*>NULL, start, start + len(data), True, d.lenient_quotes,
                              <char>d.delimiter, <char>d.quote, self.keep_fields, fields, &nf,
                              &rec_end, &next_rec)
        if status == ST_OK:
            # well-formed CSV (only a value was bad): every field where it belongs
            tokens = [data[fields[k].p - start:fields[k].p - start + fields[k].n]
                      if k < self.keep_fields else b"" for k in range(nf)]
        else:
            tokens = [_unquote(t, d.quote) for t in data.split(bytes([d.delimiter]))]
        cdef Py_ssize_t n = len(tokens)
        cdef Span sp
        cdef int64_t when = 0
        cdef uint64_t called = 0, rang = 0, v
        if d.c_direction >= 0 and d.c_direction < n:
            t = tokens[d.c_direction]
            sp.p = <const char*>t
            sp.n = len(t)
            if span_starts_nocase(sp, b"originating", 11):
                return None
        if d.c_method >= 0 and d.c_method < n and tokens[d.c_method] != b"INVITE":
            return None           # a transaction row of a BYE (or another method)
        for c in _candidates(d.c_called, n, d.max_cols):
            t = tokens[c]
            v = normalize(<const char*>t, len(t), &self.plan)
            if v:
                called = v
                break
        for c in _candidates(d.c_channel if d.c_channel >= 0 else d.c_final, n, d.max_cols):
            t = tokens[c]
            sp.p = <const char*>t
            sp.n = len(t)
            v = channel_number(sp, &self.plan) if d.c_channel >= 0 else normalize(sp.p, sp.n, &self.plan)
            if v:
                rang = v
                break
        if called == 0:
            called, rang = rang, 0
        if rang == called:
            rang = 0
        cdef uint64_t pilot = 0
        cdef bint nowhere = False      # a Queue reached at no number
        for c in _candidates(d.c_hunt, n, d.max_cols):
            t = tokens[c].strip()
            if t:
                pilot = normalize(<const char*>t, len(t), &self.plan)
                if pilot == 0:
                    pilot = called
                break
        if pilot == 0:
            for c in _candidates(d.c_pattern, n, d.max_cols):
                if tokens[c].strip() == b"7":
                    pilot = called
                    break
        cdef int role              # typed: Cython 3.3.1 inferred it as bint once (below)
        cdef Columns group         # an Asterisk Dial to several devices: their lines
        cdef int found
        members = ()
        for c in (_candidates(d.c_app, n, d.max_cols) if pilot == 0 else ())[:1]:
            app = tokens[c].lower()
            if app == b"queue":
                pilot = called     # its dialled line, else the member that answered
                nowhere = called == 0
            elif app == b"dial":
                for c2 in _candidates(d.c_data, n, d.max_cols)[:1]:
                    t = tokens[c2]
                    sp.p = <const char*>t
                    sp.n = len(t)
                    sp.n = dial_devices_length(sp)
                    group.member, group.member_n, group.member_cap = NULL, 0, 0
                    try:
                        found = dial_members(sp, &self.plan, &group)
                        if found < 0:
                            raise MemoryError()
                        members = tuple([group.member[k] for k in range(group.member_n)])
                    finally:
                        free(group.member)
        if len(members) < 2:
            members = ()
        elif pilot == 0:
            pilot = called or rang or members[0]
        # (with a bint argument added to feed, Cython 3.3.1 inferred `role` as bint when
        # it was not declared: every start column read as 1, and no time was found)
        for role in (d.c_start, d.c_end):
            for c in _candidates(role, n, d.max_cols):
                t = tokens[c]
                sp.p = <const char*>t
                sp.n = len(t)
                if parse_time(d.time_kind, sp, &self.zone, &when) == 0:
                    return called, rang, when, -1 if nowhere else pilot, members
        return called, rang, None, -1 if nowhere else pilot, members

    cdef dict _arrays(self, Py_ssize_t capacity):
        """The output arrays of a feed of up to capacity records: the last feed's again if
        they are large enough and no column of it is still held (a view of a column holds
        its array). Fresh arrays for every feed cost their page faults again each time: the
        allocator handed their memory back between feeds."""
        spare = self._spare
        if spare is not None and len(spare["start_us"]) >= capacity:
            for array in spare.values():
                if Py_REFCNT(array) > UNSHARED:
                    break
            else:
                return spare
        kinds = tuple(CALL_FIELDS) + (
            ("act_row", np.int64), ("act_us", np.int64), ("act_line", np.uint64),
            ("hunt_row", np.int64), ("hunt_pilot", np.uint64), ("hunt_members", np.int64),
            ("ident_at", np.int64), ("ident_len", np.int64))
        self._spare = {name: np.empty(capacity, kind) for name, kind in kinds}
        return self._spare

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def feed(self, const unsigned char[::1] buffer not None, bint final=False,
             bint rejects_wanted=True):
        cdef Py_ssize_t size = buffer.shape[0]
        cdef const char* base = EMPTY
        if size > 0:
            base = <const char*>&buffer[0]
        cdef const char* end = base + size
        cdef const char* p = base
        cdef const char* nl
        # A valid record holds at least min_record bytes (rows are also guarded below).
        # np.empty pages that are never written cost no memory.
        cdef Py_ssize_t capacity = size // self.min_record + 1
        cdef Py_ssize_t reject_capacity = 16
        arrays = self._arrays(capacity)
        cols = {name: arrays[name] for name, _ in CALL_FIELDS}
        act_row = arrays["act_row"]         # traces the switch recorded
        act_us = arrays["act_us"]
        act_line = arrays["act_line"]
        cdef int64_t[::1] a_act_row = act_row, a_act_us = act_us
        cdef uint64_t[::1] a_act_line = act_line
        hunt_row = arrays["hunt_row"]       # calls through a hunt pilot
        hunt_pilot = arrays["hunt_pilot"]
        hunt_members = arrays["hunt_members"]
        cdef int64_t[::1] a_hunt_row = hunt_row, a_hunt_members = hunt_members
        cdef uint64_t[::1] a_hunt_pilot = hunt_pilot
        ident_at = arrays["ident_at"]       # never returned: only identity rows
        ident_len = arrays["ident_len"]     # are written (and cost memory)
        cdef int64_t[::1] a_ident_at = ident_at, a_ident_len = ident_len
        cdef Columns out
        cdef int64_t[::1] a_start = cols["start_us"], a_answer = cols["answer_us"], a_end = cols["end_us"]
        cdef int64_t[::1] a_offset = cols["offset"], a_record = cols["record"]
        cdef uint64_t[::1] a_calling = cols["calling"], a_called = cols["called"]
        cdef uint64_t[::1] a_redir = cols["redirecting"], a_final = cols["final"], a_id = cols["call_id"]
        cdef uint8_t[::1] a_pres = cols["presentation"], a_disp = cols["disposition"]
        cdef uint8_t[::1] a_recv = cols["received"].view(np.uint8)
        cdef uint16_t[::1] a_feed = cols["feed"]
        out.start_us = &a_start[0]
        out.answer_us = &a_answer[0]
        out.end_us = &a_end[0]
        out.calling = &a_calling[0]
        out.presentation = &a_pres[0]
        out.called = &a_called[0]
        out.redirecting = &a_redir[0]
        out.final = &a_final[0]
        out.disposition = &a_disp[0]
        out.received = &a_recv[0]
        out.call_id = &a_id[0]
        out.feed = &a_feed[0]
        out.offset = &a_offset[0]
        out.record = &a_record[0]
        out.ident_at = &a_ident_at[0]
        out.ident_len = &a_ident_len[0]
        out.act_row = &a_act_row[0]
        out.act_us = &a_act_us[0]
        out.act_line = &a_act_line[0]
        out.act_n = 0
        out.hunt_row = &a_hunt_row[0]
        out.hunt_pilot = &a_hunt_pilot[0]
        out.hunt_members = &a_hunt_members[0]
        out.hunt_n = 0
        out.member, out.member_n, out.member_cap, out.member_oom = NULL, 0, 0, False
        out.tenant_lo = out.tenant_hi = out.tenant_last_h = 0
        out.tenant_last, out.tenant_last_n = NULL, 0
        out.scope_last, out.scope_last_n = NULL, 0

        cdef Reject* rejects = <Reject*>malloc(reject_capacity * sizeof(Reject))
        if rejects == NULL:
            raise MemoryError()
        cdef Py_ssize_t nrows = 0, nrej = 0
        cdef Span fields[MAX_FIELDS]
        cdef int nf = 0, status, detail
        cdef const char* rec_end = NULL
        cdef const char* next_rec = NULL
        cdef int64_t base_offset = self.offset
        cdef int64_t record = self.record
        cdef int64_t markers = self.markers
        cdef const Plan* cc = &self.plan
        cdef uint16_t feed = <uint16_t>self.feed_id
        cdef int64_t min_ring = self.min_ring_us
        cdef bint skipping = self.skipping
        cdef Zone* z = &self.zone
        cdef bint has_nul, out_of_memory = False
        cdef bint lenient = self.dialect.lenient_quotes
        cdef char delim = <char>self.dialect.delimiter
        cdef char quote = <char>self.dialect.quote
        cdef bint escaped = self.dialect.escaped
        cdef int keep_fields = self.keep_fields
        cdef const char* line_end
        cdef int want, failed, failed_detail
        cdef bint zeros = self.zeros
        cdef const char* zero_at
        cdef const char* undecided
        cdef const char* q
        try:
            with nogil:
                has_nul = memchr(base, 0, size) != NULL
                if base_offset == 0 and not skipping and size > 0:
                    # a UTF-8 byte-order mark opens some exported files: not data
                    if size >= 3 and memcmp(base, BOM, 3) == 0:
                        p = base + 3
                    elif size < 3 and not final and memcmp(base, BOM, size) == 0:
                        p = end
                        size = 0      # too few bytes to tell yet: consume nothing
                if size == 0:
                    p = base
                    end = base
                if zeros:
                    # the run of zeros the last buffer ended in goes on: rejected already
                    while p < end and p[0] == 0:
                        p += 1
                    zeros = p == end and not final
                if skipping:
                    # the rest of a line too long to keep, up to its end or a run of zeros
                    nl = <const char*>memchr(p, b'\n', end - p)
                    zero_at = zero_block(p, nl if nl != NULL else end, end, final, &undecided)
                    if zero_at != NULL:
                        p = zero_at
                        skipping = False
                    elif nl != NULL:
                        p = nl + 1
                        skipping = False
                    else:
                        p = undecided if undecided != NULL else end
                while p < end and not skipping:
                    # blank lines are not records
                    if p[0] == b'\n':
                        p += 1
                        continue
                    if p[0] == b'\r' and p + 1 < end and p[1] == b'\n':
                        p += 2
                        continue
                    if p[0] == b'\r' and p + 1 == end:
                        if final:
                            p = end
                        break
                    if p[0] == BOM[0] and end - p >= 3 and memcmp(p, BOM, 3) == 0:
                        # a UTF-8 byte-order mark where a record begins: files joined, each
                        # saved with one (`cat a.csv b.csv`): not data. (Fewer of its bytes
                        # at a read's end wait, as any record without its line end.)
                        p += 3
                        continue
                    if p[0] == 0:
                        # zeros where records were (a crash, or a file truncated under a
                        # writer that kept its offset): one reject, no record; the next
                        # record begins after them
                        q = p
                        while q < end and q[0] == 0:
                            q += 1
                        if q - p >= ZERO_BLOCK:
                            if room_for_reject(&rejects, &reject_capacity, nrej) < 0:
                                out_of_memory = True
                                break
                            record += 1
                            rejects[nrej].record = record
                            rejects[nrej].offset = base_offset + (p - base)
                            rejects[nrej].start = p - base
                            rejects[nrej].length = 0
                            rejects[nrej].code = ERR_ZEROS
                            rejects[nrej].detail = 0
                            nrej += 1
                            p = q
                            zeros = q == end and not final
                            continue
                        if q == end and not final:
                            break          # too few yet to tell
                    detail = 0
                    rec_end = p
                    if escaped:
                        status = tokenize(<Escaped*>NULL, p, end, final, False, delim, quote,
                                          keep_fields, fields, &nf, &rec_end, &next_rec)
                    else:
                        # the block tokenizer first; what it does not take, byte by byte
                        status = CDR_FALLBACK if lenient else TOKENIZE(
                            p, end, delim, quote, keep_fields, MAX_RECORD, fields, &nf,
                            &rec_end, &next_rec)
                        if status == CDR_FALLBACK:
                            status = tokenize(<Quoted*>NULL, p, end, final, lenient, delim,
                                              quote, keep_fields, fields, &nf, &rec_end,
                                              &next_rec)
                    if status == ST_NEED_MORE:
                        break
                    if status == ST_OK and self.dialect.markers and is_marker(fields, nf):
                        record += 1
                        markers += 1
                        p = next_rec
                        continue
                    if status == ST_OK:
                        status = extract(p, rec_end, fields, nf, &self.dialect, z, cc,
                                         min_ring, feed, &out, nrows, &detail, has_nul,
                                         &self.dispositions, &self.presentations)
                    record += 1
                    if status != ST_OK and lenient:
                        # unescaped quotes: recover the fields from the known count
                        nl = <const char*>memchr(p, b'\n', end - p)
                        if nl != NULL or final:
                            line_end = nl if nl != NULL else end
                            if line_end > p and (line_end - 1)[0] == b'\r':
                                line_end -= 1
                            failed, failed_detail = status, detail
                            want = self.dialect.max_cols
                            while want >= self.dialect.min_cols:
                                if split_quoted(p, line_end, delim, quote, want, keep_fields,
                                                fields, &nf) == 0:
                                    detail = 0
                                    if extract(p, line_end, fields, nf, &self.dialect, z, cc,
                                               min_ring, feed, &out, nrows, &detail, has_nul,
                                               &self.dispositions, &self.presentations) == ST_OK:
                                        status = ST_OK
                                        next_rec = nl + 1 if nl != NULL else end
                                        break
                                want -= 1
                            if status != ST_OK:
                                status, detail = failed, failed_detail
                    if status == ST_OK and nrows >= capacity:   # cannot happen: guard anyway
                        out_of_memory = True
                        break
                    if status == ST_OK:
                        out.offset[nrows] = base_offset + (p - base)
                        out.record[nrows] = record
                        nrows += 1
                        p = next_rec
                        continue
                    # Reject the first physical line only, so a stray quote cannot
                    # swallow the good records after it.
                    if room_for_reject(&rejects, &reject_capacity, nrej) < 0:
                        out_of_memory = True
                        break
                    nl = <const char*>memchr(p, b'\n', end - p)
                    if nl != NULL and rec_end > nl:
                        # a quote opened on this line ran past its end into records
                        # that do not fit: the quote is the fault, not what follows
                        status = ERR_UNTERMINATED
                    # a run of zeros inside the line cuts the record short there: the
                    # records written after the zeros are read (a crash's zeros end where
                    # the switch went on writing)
                    zero_at = zero_block(p, nl if nl != NULL else end, end, final, &undecided)
                    if zero_at == NULL and undecided != NULL and undecided - p <= MAX_RECORD:
                        record -= 1    # too few zeros yet to tell: wait for more
                        break
                    # a line longer than is kept is rejected as that, whatever fault lies
                    # past what a read of its first 64 KiB shows
                    q = zero_at if zero_at != NULL else nl if nl != NULL else end
                    if q - p > MAX_RECORD:
                        status, detail = ERR_TOO_LONG, 0
                    elif zero_at != NULL:
                        status, detail = ERR_CUT_BY_ZEROS, 0
                    rejects[nrej].record = record
                    rejects[nrej].offset = base_offset + (p - base)
                    rejects[nrej].start = p - base
                    rejects[nrej].code = status
                    rejects[nrej].detail = detail
                    if zero_at != NULL:
                        rejects[nrej].length = zero_at - p
                        p = zero_at
                    elif nl == NULL and not final and end - p <= MAX_RECORD:
                        record -= 1    # wait for the rest of the line
                        break
                    elif nl == NULL:
                        rejects[nrej].length = end - p
                        if not final:
                            skipping = True
                        p = undecided if undecided != NULL else end
                    else:
                        rejects[nrej].length = nl - p
                        p = nl + 1
                    if rejects[nrej].length > 0 and base[rejects[nrej].start + rejects[nrej].length - 1] == b'\r':
                        rejects[nrej].length -= 1
                    if rejects[nrej].length > MAX_RECORD:
                        rejects[nrej].length = MAX_RECORD
                    nrej += 1
            if out_of_memory:
                raise MemoryError("parser output capacity exceeded")
            if out.member_oom:
                raise MemoryError("no memory for the lines of a Dial to several devices")
            consumed = p - base
            self.offset = base_offset + consumed
            self.record = record
            self.markers = markers
            self.skipping = skipping
            self.zeros = zeros
            rows = {name: column[:nrows] for name, column in cols.items()}
            self._intern(buffer, base_offset, rows, ident_at, ident_len)
            for k in range(out.act_n):
                self._activations.append((int(act_line[k]), int(act_us[k]),
                                          int(rows["record"][act_row[k]]),
                                          int(rows["offset"][act_row[k]])))
            if out.hunt_n:
                at = hunt_row[:out.hunt_n]
                hunts = np.empty(out.hunt_n, HUNT_DTYPE)
                for name in ("start_us", "call_id"):
                    hunts[name] = rows[name][at]
                hunts["pilot"] = hunt_pilot[:out.hunt_n]
                hunts["named"] = rows["final"][at]
                hunts["members"] = hunt_members[:out.hunt_n]
                self._hunts.append(hunts)
                if out.member_n:
                    self._hunt_members.append(np.frombuffer(
                        (<char*>out.member)[:out.member_n * sizeof(uint64_t)], np.uint64))
            if out.tenant_lo:
                # the two least distinct, whatever order the records came in, and their names
                names = {out.tenant_lo: tenant_name(out.lo_scope, out.lo_name)}
                if out.tenant_hi:
                    names[out.tenant_hi] = tenant_name(out.hi_scope, out.hi_name)
                self._tenants = tuple(sorted({*self._tenants, *names})[:2])
                self._tenant_names = {t: self._tenant_names.get(t) or names[t] for t in self._tenants}
            errors = []     # codes: cdrtrace.parsing.native maps them to their messages
            for k in range(nrej if rejects_wanted else 0):
                errors.append((
                    rejects[k].record,
                    rejects[k].offset,
                    rejects[k].code,
                    rejects[k].detail,
                    bytes(buffer[rejects[k].start:rejects[k].start + rejects[k].length]),
                ))
            return rows, errors, consumed
        finally:
            free(rejects)
            free(out.member)
