# cython: language_level=3
"""Native CDR parser: Asterisk cdr_csv bytes -> canonical columnar call records.

The hot loop walks the buffer with pointers, writes typed arrays and runs without the
GIL; it creates no Python object per record. Errors are collected in a C array
(reason, record number, byte offset) and turned into Python objects afterwards.
The contract is the one of cdrtrace._parse_py (the pure-Python reference).
"""
cimport cython
from libc.stdint cimport int64_t, uint64_t, uint8_t, uint16_t, INT64_MIN
from libc.string cimport memchr, memcmp, memcpy, memset
from libc.stdlib cimport malloc, realloc, free

import numpy as np
cimport numpy as cnp

from _cdr cimport (
    PRES_ALLOWED, PRES_RESTRICTED, PRES_UNAVAILABLE,
    DISP_ANSWERED, DISP_NO_ANSWER, DISP_CANCELLED, DISP_BUSY, DISP_FAILED,
    DISP_CONGESTION, DISP_UNKNOWN,
)

cnp.import_array()

cdef enum:
    MAX_RECORD = 65536
    MIN_RECORD = 59          # 15 commas, start and end (19 each), 2 durations, "BUSY"
    MAX_FIELDS = 22          # one more than the widest layout, to detect too many
    MIN_COLUMNS = 16
    MAX_COLUMNS = 21

# Reason codes; their messages are cdrtrace.errors.REJECT_REASONS, in this order.
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

cdef const char* EMPTY = b""

cdef struct Span:
    const char* p
    Py_ssize_t n
    int quoted

cdef struct Reject:
    int64_t record
    int64_t offset       # absolute byte offset of the record
    Py_ssize_t start     # position in this buffer
    Py_ssize_t length    # raw bytes kept (capped at MAX_RECORD)
    int code
    int detail           # field count, or the 1-based column of a bad field

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


# ---------------------------------------------------------------- numbers

cdef inline bint is_format_char(char c) noexcept nogil:
    return c == b' ' or c == b'-' or c == b'(' or c == b')' or c == b'.' or c == b'\t'


cdef inline uint64_t pack_number(int kind, const char* d, int n) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v = v * 10 + <uint64_t>(d[i] - 48)
    return (<uint64_t>kind << 62) | (<uint64_t>n << 56) | v


cdef inline uint64_t normalize(const char* p, Py_ssize_t n, int cc) noexcept nogil:
    """Same rules as cdrtrace.numbers.normalize; 0 when not a number."""
    # Fast path: NANP 10 digits (or 11 with the leading 1), nothing else, the common case;
    # a leading 0 may be the 011 international prefix and takes the general path.
    cdef Py_ssize_t k
    cdef uint64_t v = 0
    if cc == 1 and ((n == 10 and p[0] != b'0') or (n == 11 and p[0] == b'1')):
        for k in range(n):
            if p[k] < b'0' or p[k] > b'9':
                return normalize_general(p, n, cc)
            v = v * 10 + <uint64_t>(p[k] - 48)
        if n == 10:
            v += 10000000000ULL
        return (<uint64_t>1 << 62) | (<uint64_t>11 << 56) | v
    return normalize_general(p, n, cc)


cdef uint64_t normalize_general(const char* p, Py_ssize_t n, int cc) noexcept nogil:
    cdef char digits[24]
    cdef char ccd[8]
    cdef char body[24]
    cdef int nd = 0, nb = 0, ncc = 0, i, kind = 0
    cdef Py_ssize_t k = 0
    cdef bint plus = False
    cdef char c
    cdef int t
    while k < n and (p[k] == b' ' or p[k] == b'\t'):
        k += 1
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
        elif not is_format_char(c):
            return 0
        k += 1
    if nd == 0:
        return 0
    if plus:
        kind = 1
        for i in range(nd):
            body[i] = digits[i]
        nb = nd
    elif cc == 1 and nd > 3 and digits[0] == b'0' and digits[1] == b'1' and digits[2] == b'1':
        kind = 1
        for i in range(3, nd):
            body[i - 3] = digits[i]
        nb = nd - 3
    elif cc != 1 and nd > 2 and digits[0] == b'0' and digits[1] == b'0':
        kind = 1
        for i in range(2, nd):
            body[i - 2] = digits[i]
        nb = nd - 2
    elif nd <= 7:
        kind = 2
        for i in range(nd):
            body[i] = digits[i]
        nb = nd
    elif cc == 1 and nd == 10:
        kind = 1
        body[0] = b'1'
        for i in range(nd):
            body[i + 1] = digits[i]
        nb = 11
    elif cc == 1 and nd == 11 and digits[0] == b'1':
        kind = 1
        for i in range(nd):
            body[i] = digits[i]
        nb = nd
    elif cc != 1 and digits[0] == b'0' and nd >= 8:
        kind = 1
        t = cc
        while t > 0 and ncc < 8:
            ccd[ncc] = <char>(48 + t % 10)
            t //= 10
            ncc += 1
        for i in range(ncc):
            body[i] = ccd[ncc - 1 - i]
        for i in range(1, nd):
            body[ncc + i - 1] = digits[i]
        nb = ncc + nd - 1
    else:
        kind = 3
        for i in range(nd):
            body[i] = digits[i]
        nb = nd
    if nb > 15:
        return 0
    if kind == 1 and (nb < 7 or body[0] == b'0'):
        return 0
    return pack_number(kind, body, nb)


def normalize_number(text, int country_code=1):
    """Normalise a number (str or bytes) to its packed uint64 form; 0 if not a number."""
    cdef bytes b = text.encode("latin-1") if isinstance(text, str) else bytes(text)
    return normalize(b, len(b), country_code)


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
    if s.n != 19 or p[10] != b' ' or p[13] != b':' or p[16] != b':':
        return -1
    cdef int h = two(p + 11), mi = two(p + 14), sec = two(p + 17)
    if h < 0 or mi < 0 or sec < 0 or h > 23 or mi > 59 or sec > 59:
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
    cdef int64_t local = z.last_days * 86400 + h * 3600 + mi * 60 + sec
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

cdef inline uint64_t hash_bytes(uint64_t h, const char* p, Py_ssize_t n) noexcept nogil:
    # FNV-1a over the bytes, then the splitmix64 finaliser for good high bits.
    cdef Py_ssize_t i
    for i in range(n):
        h ^= <uint8_t>p[i]
        h *= 1099511628211ULL
    h ^= h >> 30
    h *= 0xbf58476d1ce4e5b9ULL
    h ^= h >> 27
    h *= 0x94d049bb133111ebULL
    h ^= h >> 31
    return h


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


cdef uint64_t clid_number(Span s, int cc) noexcept nogil:
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


cdef uint64_t channel_number(Span s, int cc) noexcept nogil:
    """'PJSIP/1001-0000001b' -> 1001; 'Local/1002@ctx-0001;1' -> 1002; else 0."""
    cdef Py_ssize_t i = 0, j, k
    while i < s.n and s.p[i] != b'/':
        i += 1
    if i >= s.n:
        return 0
    i += 1
    j = i
    while j < s.n and s.p[j] != b'@' and s.p[j] != b'/' and s.p[j] != b';':
        j += 1
    k = j
    if j == s.n or s.p[j] == b';':
        # no '@': the channel's unique suffix follows the last '-'
        k = j - 1
        while k > i and s.p[k] != b'-':
            k -= 1
        if k <= i:
            k = j
    if k <= i:
        return 0
    return normalize(s.p + i, k - i, cc)


# ---------------------------------------------------------------- records

cdef int tokenize(const char* r, const char* end, bint final, Span* f, int* nf,
                  const char** rec_end, const char** next_rec) noexcept nogil:
    """Split one record into fields. ST_OK, ST_NEED_MORE or an error code."""
    cdef const char* p = r
    cdef const char* q
    cdef const char* s
    cdef int k = 0
    cdef char c
    while True:
        if p < end and p[0] == b'"':
            q = p + 1
            while True:
                q = <const char*>memchr(q, b'"', end - q)
                if q == NULL:
                    rec_end[0] = end
                    if not final:
                        return ERR_TOO_LONG if end - r > MAX_RECORD else ST_NEED_MORE
                    return ERR_UNTERMINATED
                if q + 1 < end and q[1] == b'"':
                    q += 2
                    continue
                if q + 1 == end and not final:
                    return ST_NEED_MORE
                break
            if k < MAX_FIELDS:
                f[k].p = p + 1
                f[k].n = q - p - 1
                f[k].quoted = 1
            k += 1
            p = q + 1
            if p < end and p[0] != b',' and p[0] != b'\n' and p[0] != b'\r':
                rec_end[0] = p
                return ERR_AFTER_QUOTE
        else:
            s = p
            while p < end:
                c = p[0]
                if c == b',' or c == b'\n' or c == b'\r':
                    break
                if c == b'"':
                    rec_end[0] = p
                    return ERR_QUOTE_UNQUOTED
                p += 1
            if k < MAX_FIELDS:
                f[k].p = s
                f[k].n = p - s
                f[k].quoted = 0
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
        if c == b',':
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


cdef int extract(const char* r, const char* rec_end, Span* f, int nf, Zone* z, int cc,
                 int64_t min_ring_us, uint16_t feed, Columns* out, Py_ssize_t i,
                 int* bad_column, bint check_nul) noexcept nogil:
    """Fill row i of out from the fields of one Asterisk cdr_csv record."""
    cdef int64_t start, answer = 0, end_, v
    cdef int disp
    cdef uint64_t calling, called, redirecting = 0, final_ = 0, h
    cdef int pres = PRES_ALLOWED
    cdef Span uf
    if check_nul and memchr(r, 0, rec_end - r) != NULL:
        return ERR_NUL
    if nf < MIN_COLUMNS or nf > MAX_COLUMNS:
        bad_column[0] = nf
        return ERR_FIELD_COUNT
    if parse_timestamp(f[9], z, &start) != 0:
        bad_column[0] = 10
        return ERR_TIMESTAMP
    if f[10].n != 0 and parse_timestamp(f[10], z, &answer) != 0:
        bad_column[0] = 11
        return ERR_TIMESTAMP
    if parse_timestamp(f[11], z, &end_) != 0:
        bad_column[0] = 12
        return ERR_TIMESTAMP
    if parse_uint(f[12], &v) != 0:
        bad_column[0] = 13
        return ERR_DURATION
    if parse_uint(f[13], &v) != 0:
        bad_column[0] = 14
        return ERR_DURATION
    disp = disposition_code(f[14])
    if disp < 0:
        bad_column[0] = 15
        return ERR_DISPOSITION

    calling = normalize(f[1].p, f[1].n, cc)
    if calling == 0:
        calling = clid_number(f[4], cc)
        if calling == 0:
            pres = PRES_UNAVAILABLE
        elif f[1].n > 0:
            pres = PRES_RESTRICTED   # 'anonymous' shown, the number is in the caller id
    called = normalize(f[2].p, f[2].n, cc)
    final_ = channel_number(f[6], cc)
    if final_ == called:
        final_ = 0
    if nf >= 18:
        uf = f[17]
        if span_starts_nocase(uf, b"prohib", 6):
            if pres == PRES_ALLOWED:
                pres = PRES_RESTRICTED
        elif span_starts_nocase(uf, b"unavailable", 11):
            pres = PRES_UNAVAILABLE
        elif span_starts_nocase(uf, b"allowed", 7):
            pass
        else:
            redirecting = normalize(uf.p, uf.n, cc)
            if redirecting == called:
                redirecting = 0
    if nf >= 17 and f[16].n > 0:
        h = hash_bytes(14695981039346656037ULL ^ feed, b"u", 1)
        h = hash_bytes(h, f[16].p, f[16].n)
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
    out.disposition[i] = disp
    out.received[i] = (disp == DISP_ANSWERED or
                       ((disp == DISP_NO_ANSWER or disp == DISP_CANCELLED)
                        and end_ - start >= min_ring_us))
    out.call_id[i] = h
    out.feed[i] = feed
    return ST_OK


from cdrtrace.errors import REJECT_REASONS as REASONS  # indexed by the codes above


cdef class AsteriskParser:
    """Streaming parser for Asterisk cdr_csv (16 to 21 columns).

    feed(buffer, final) parses every complete record in buffer and returns
    (columns, rejects, consumed): columns is a dict of numpy arrays (the canonical
    record), rejects a list of (record, offset, reason, raw bytes), and consumed the
    number of bytes used; the caller keeps buffer[consumed:] and prepends it to the
    next chunk. Offsets and record numbers continue across calls.
    """
    cdef readonly int64_t offset
    cdef readonly int64_t record
    cdef readonly int country_code
    cdef readonly int feed_id
    cdef readonly int64_t min_ring_us
    cdef bint skipping
    cdef object _tz
    cdef Zone zone

    def __init__(self, tz_starts, tz_offsets, int country_code=1, int feed_id=0,
                 double min_ring_seconds=0.0):
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
        self.feed_id = feed_id
        self.min_ring_us = <int64_t>(min_ring_seconds * 1e6)
        self.offset = 0
        self.record = 0
        self.skipping = False

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def feed(self, const unsigned char[::1] buffer not None, bint final=False):
        cdef Py_ssize_t size = buffer.shape[0]
        cdef const char* base = EMPTY
        if size > 0:
            base = <const char*>&buffer[0]
        cdef const char* end = base + size
        cdef const char* p = base
        cdef const char* nl
        # A valid record holds at least MIN_RECORD bytes (rows are also guarded below).
        # np.empty pages that are never written cost no memory.
        cdef Py_ssize_t capacity = size // MIN_RECORD + 1
        cdef Py_ssize_t reject_capacity = 16
        cols = {
            "start_us": np.empty(capacity, np.int64),
            "answer_us": np.empty(capacity, np.int64),
            "end_us": np.empty(capacity, np.int64),
            "calling": np.empty(capacity, np.uint64),
            "presentation": np.empty(capacity, np.uint8),
            "called": np.empty(capacity, np.uint64),
            "redirecting": np.empty(capacity, np.uint64),
            "final": np.empty(capacity, np.uint64),
            "disposition": np.empty(capacity, np.uint8),
            "received": np.empty(capacity, np.bool_),
            "call_id": np.empty(capacity, np.uint64),
            "feed": np.empty(capacity, np.uint16),
            "offset": np.empty(capacity, np.int64),
            "record": np.empty(capacity, np.int64),
        }
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

        cdef Reject* rejects = <Reject*>malloc(reject_capacity * sizeof(Reject))
        cdef Reject* grown
        if rejects == NULL:
            raise MemoryError()
        cdef Py_ssize_t nrows = 0, nrej = 0
        cdef Span fields[MAX_FIELDS]
        cdef int nf = 0, status, detail
        cdef const char* rec_end = NULL
        cdef const char* next_rec = NULL
        cdef int64_t base_offset = self.offset
        cdef int64_t record = self.record
        cdef int cc = self.country_code
        cdef uint16_t feed = <uint16_t>self.feed_id
        cdef int64_t min_ring = self.min_ring_us
        cdef bint skipping = self.skipping
        cdef Zone* z = &self.zone
        cdef bint has_nul, out_of_memory = False
        try:
            with nogil:
                has_nul = memchr(base, 0, size) != NULL
                if skipping:
                    nl = <const char*>memchr(p, b'\n', end - p)
                    if nl == NULL:
                        p = end
                    else:
                        p = nl + 1
                        skipping = False
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
                    detail = 0
                    rec_end = p
                    status = tokenize(p, end, final, fields, &nf, &rec_end, &next_rec)
                    if status == ST_NEED_MORE:
                        break
                    if status == ST_OK:
                        status = extract(p, rec_end, fields, nf, z, cc, min_ring, feed,
                                         &out, nrows, &detail, has_nul)
                    record += 1
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
                    if nrej == reject_capacity:
                        grown = <Reject*>realloc(rejects, 2 * reject_capacity * sizeof(Reject))
                        if grown == NULL:
                            out_of_memory = True
                            break
                        rejects = grown
                        reject_capacity *= 2
                    nl = <const char*>memchr(p, b'\n', end - p)
                    if nl != NULL and rec_end > nl:
                        # a quote opened on this line ran past its end into records
                        # that do not fit: the quote is the fault, not what follows
                        status = ERR_UNTERMINATED
                    rejects[nrej].record = record
                    rejects[nrej].offset = base_offset + (p - base)
                    rejects[nrej].start = p - base
                    rejects[nrej].code = status
                    rejects[nrej].detail = detail
                    if nl == NULL and not final and end - p <= MAX_RECORD:
                        record -= 1    # wait for the rest of the line
                        break
                    if nl == NULL:
                        rejects[nrej].length = end - p
                        if not final:
                            skipping = True
                        p = end
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
            consumed = p - base
            self.offset = base_offset + consumed
            self.record = record
            self.skipping = skipping
            rows = {name: column[:nrows] for name, column in cols.items()}
            errors = []
            for k in range(nrej):
                errors.append((
                    rejects[k].record,
                    rejects[k].offset,
                    REASONS[rejects[k].code].format(detail=rejects[k].detail),
                    bytes(buffer[rejects[k].start:rejects[k].start + rejects[k].length]),
                ))
            return rows, errors, consumed
        finally:
            free(rejects)
