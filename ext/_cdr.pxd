# The record layouts, declared once. Python derives its numpy dtypes and Arrow schemas
# from these structs (cdrtrace.parsing.formats.COLUMNS, cdrtrace.store.index.ENTRY_DTYPE)
# through the modules' CALL_FIELDS and ENTRY_FIELDS, which layout_of() reads off the
# structs themselves; Python checks the result against its documented names at import.
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint64_t, uint8_t, uint16_t, uint32_t

cdef enum Presentation:
    PRES_ALLOWED = 0
    PRES_RESTRICTED = 1
    PRES_UNAVAILABLE = 2

cdef enum Disposition:
    DISP_ANSWERED = 1
    DISP_NO_ANSWER = 2
    DISP_CANCELLED = 3
    DISP_BUSY = 4
    DISP_FAILED = 5
    DISP_CONGESTION = 6
    DISP_REJECTED = 7
    DISP_UNALLOCATED = 8
    DISP_UNKNOWN = 9
    DISP_UNREADABLE = 10    # a record that could not be read (its line and time salvaged)
    DISP_ANSWERED_ELSEWHERE = 11    # it rang; another phone (or device of the line) took it
    DISP_LATE_REFUSAL = 12  # busy or rejected after a second or more, alerting not logged
    DISP_LATE_FAILURE = 13  # another failure after a second or more, alerting not logged
    DISP_TRANSFERRED = 14   # split off by a transfer (CUCM): a call may have been joined
    DISP_CALLERS_DIFFER = 15    # the index's: legs of one call on a line name two callers

cdef enum Role:
    ROLE_DIALLED = 0
    ROLE_REDIRECTING = 1
    ROLE_FINAL = 2

# The canonical call record every switch format is parsed into, one column per field
# (CallBatch): the parser allocates its output columns from this layout. A bint field
# is a numpy bool column.
cdef struct CallRecord:
    int64_t start_us        # UTC microseconds
    int64_t answer_us       # 0 when not answered
    int64_t end_us
    uint64_t calling        # packed number, 0 = none delivered
    uint8_t presentation    # Presentation
    uint64_t called         # the dialled line
    uint64_t redirecting    # redirecting / original-called line, 0 = none
    uint64_t final          # the line that finally rang when it differs, 0 = same
    uint8_t disposition     # Disposition
    bint received           # the line was alerted
    uint64_t call_id        # hash of the switch's call id, or of the record
    uint16_t feed           # feed (switch) id
    int64_t offset          # byte offset of the record in its source
    int64_t record          # record number in its source, from 1

# One entry of the last-call index, 40 bytes, little-endian, packed.
cdef packed struct Entry:
    int64_t start_us
    uint64_t calling
    uint64_t call_id
    int64_t offset
    uint32_t source
    uint16_t feed
    uint8_t presentation
    uint8_t flags   # bit0 answered, bit1 forwarded, bits2-3 role, bits4-7 disposition


# The most entries a line's value holds: its newest `keep` calls (at most 64) and, past
# them, the calls that began at the same instant as the keep-th, which a trace resolving
# to that instant must see (a call of it from another caller leaves the last call
# unknown). A value this full may have dropped one.
cdef enum:
    LINE_ROOM = 128


# How far apart legs of one call may start. A switch reuses its call ids (CUCM's are
# unique "at least for some days", 4.x's reused under heavy traffic): records with one
# call id that start further apart are two calls.
cdef enum:
    CALL_SPAN_S = 86400


cdef inline bint within_a_call(int64_t a_us, int64_t b_us) noexcept nogil:
    """Two starts at most CALL_SPAN_S apart: legs of one call may start so."""
    return -CALL_SPAN_S * <int64_t>1000000 <= a_us - b_us <= CALL_SPAN_S * <int64_t>1000000


cdef inline bint one_call(const Entry* a, const Entry* b) noexcept nogil:
    """a and b are legs of one call (or one record twice): one call id, and starts
    within_a_call."""
    return a.call_id == b.call_id and within_a_call(a.start_us, b.start_us)


cdef inline tuple field_types(dict all_ones, dict sevens):
    """(name, numpy type string) per field of a struct, in declaration order, from two
    copies of it coerced to dicts: one with every byte 0xFF (signed fields read -1),
    one with every byte 0x7F (a field of n bytes reads a number of 8n - 1 bits)."""
    out = []
    for name, value in all_ones.items():
        if isinstance(value, bool):
            out.append((name, "|b1"))
            continue
        size = (int(sevens[name]).bit_length() + 1) // 8
        kind = "i" if value < 0 else "u"
        out.append((name, f"|{kind}1" if size == 1 else f"<{kind}{size}"))
    return tuple(out)


cdef inline bytes key_bytes(uint64_t v):
    """v as 8 bytes, big-endian: the stores' keys (key order = numeric order)."""
    cdef unsigned char buf[8]
    cdef int b
    for b in range(8):
        buf[7 - b] = <unsigned char>(v >> (8 * b))
    return PyBytes_FromStringAndSize(<char*>buf, 8)
