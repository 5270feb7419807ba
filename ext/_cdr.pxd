# Shared C-level definitions of the canonical call record (see engine/cdrtrace/formats.py).
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

cdef enum Role:
    ROLE_DIALLED = 0
    ROLE_REDIRECTING = 1
    ROLE_FINAL = 2

# One entry of the last-call index, 40 bytes, little-endian, packed; must match
# cdrtrace.index.ENTRY_DTYPE.
cdef packed struct Entry:
    int64_t start_us
    uint64_t calling
    uint64_t call_id
    int64_t offset
    uint32_t source
    uint16_t feed
    uint8_t presentation
    uint8_t flags   # bit0 answered, bit1 forwarded, bits2-3 role, bits4-7 disposition
