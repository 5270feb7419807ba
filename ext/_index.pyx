# cython: language_level=3
"""Native kernels of the last-call index: per-line merge of new calls into stored values.

A value is the concatenation of up to `keep` Entry structs (40 bytes each), newest
first. The merge is a union by call id, ordered by a total order (start desc, call id
desc, then the remaining bytes), cut to `keep`. Entries with one call id are legs of one
call (or the same record again) and merge into one: the earliest leg speaks for it, it
is answered if any leg was. The merge is commutative and associative, so the result is
the same whatever the order or repetition of the input: ingest is idempotent and
order-independent.
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memcmp, memset

from _cdr cimport Entry, field_types

DEF_KEEP = 4
ENTRY_BYTES = sizeof(Entry)


cdef tuple _entry_fields():
    cdef Entry ones, sevens
    memset(&ones, 0xFF, sizeof(Entry))
    memset(&sevens, 0x7F, sizeof(Entry))
    return field_types(ones, sevens)


ENTRY_FIELDS = _entry_fields()   # the numpy dtype of cdrtrace.store.index is built from it

cdef enum:
    ENTRY_SIZE = 40
    MAX_KEEP = 64


cdef inline int rank_before(const Entry* a, const Entry* b) noexcept nogil:
    """True if a ranks ahead of b (newer first)."""
    if a.start_us != b.start_us:
        return a.start_us > b.start_us
    if a.call_id != b.call_id:
        return a.call_id > b.call_id
    return memcmp(<const char*>&a.offset, <const char*>&b.offset,
                  ENTRY_SIZE - 24) < 0


cdef inline bint primary_leg(const Entry* a, const Entry* b) noexcept nogil:
    """True if a, not b, speaks for a call both are legs of: the earlier start, then a
    fixed order of the remaining bytes (flags aside: the merge combines them)."""
    cdef int c
    if a.start_us != b.start_us:
        return a.start_us < b.start_us
    c = memcmp(<const char*>&a.offset, <const char*>&b.offset, ENTRY_SIZE - 25)
    if c != 0:
        return c < 0
    return a.calling <= b.calling


cdef inline uint8_t merge_flags(uint8_t a, uint8_t b) noexcept nogil:
    """Legs of one call are one call: answered or forwarded if any leg was, the first
    role, and the disposition that ranks first (answered before no answer, ...)."""
    cdef uint8_t role = min((a >> 2) & 3, (b >> 2) & 3)
    cdef uint8_t disposition = min(a >> 4, b >> 4)
    return ((a | b) & 0x03) | (role << 2) | (disposition << 4)


cdef inline void offer(Entry* top, int* n, int keep, const Entry* e) noexcept nogil:
    """Insert e into top (sorted, unique call ids, at most keep); a call already there
    (another leg, or the same record again) is merged with it."""
    cdef int i, pos
    cdef Entry merged
    for i in range(n[0]):
        if top[i].call_id == e.call_id:
            merged = top[i] if primary_leg(&top[i], e) else e[0]
            merged.flags = merge_flags(top[i].flags, e.flags)
            while i + 1 < n[0]:     # take it out; it goes back in at its place
                top[i] = top[i + 1]
                i += 1
            n[0] -= 1
            e = &merged
            break
    pos = n[0]
    while pos > 0 and rank_before(e, &top[pos - 1]):
        pos -= 1
    if pos >= keep:
        return
    i = n[0] if n[0] < keep else keep - 1
    while i > pos:
        top[i] = top[i - 1]
        i -= 1
    top[pos] = e[0]
    if n[0] < keep:
        n[0] += 1


cdef inline bytes key_bytes(uint64_t v):
    cdef unsigned char buf[8]
    cdef int b
    for b in range(8):
        buf[7 - b] = <unsigned char>(v >> (8 * b))
    return PyBytes_FromStringAndSize(<char*>buf, 8)


def line_key(uint64_t packed):
    """A line's key: its packed number, 8 bytes big-endian (key order = numeric order)."""
    return key_bytes(packed)


@cython.boundscheck(False)
@cython.wraparound(False)
def line_keys(const uint64_t[::1] lines not None):
    """Big-endian 8-byte keys (key order = numeric order) of the distinct lines of a
    line-sorted array."""
    cdef Py_ssize_t i, n = lines.shape[0]
    keys = []
    for i in range(n):
        if i == 0 or lines[i] != lines[i - 1]:
            keys.append(key_bytes(lines[i]))
    return keys


@cython.boundscheck(False)
@cython.wraparound(False)
def merge(const uint64_t[::1] lines not None, const unsigned char[:, ::1] entries not None,
          list keys, list stored, int keep=DEF_KEEP):
    """(key, value) pairs for putmulti: each line's stored value merged with its new entries.

    lines is sorted; entries[i] (40 bytes) belongs to lines[i]. keys, if given, are the
    distinct lines' keys (line_keys(lines)); stored is what getmulti returned for them:
    (key, value) pairs in key order for the lines already indexed, None when none are.
    """
    if keep < 1 or keep > MAX_KEEP:
        raise ValueError(f"keep must be 1..{MAX_KEEP}")
    cdef Py_ssize_t n = lines.shape[0]
    if entries.shape[0] != n or (n and entries.shape[1] != ENTRY_SIZE):
        raise ValueError("entries must be one row of 40 bytes per line")
    cdef Entry top[MAX_KEEP]
    cdef Entry e
    cdef int count
    cdef Py_ssize_t i = 0, j, m, nold, g = 0, s = 0
    cdef Py_ssize_t nstored = len(stored) if stored is not None else 0
    cdef const char* old
    cdef uint64_t line
    pairs = []
    while i < n:
        line = lines[i]
        if i and line < lines[i - 1]:
            raise ValueError("lines must be sorted")
        if keys is not None and g >= len(keys):
            raise ValueError("keys must hold one key per distinct line (line_keys(lines))")
        key = keys[g] if keys is not None else key_bytes(line)
        g += 1
        count = 0
        if s < nstored and stored[s][0] == key:
            value = stored[s][1]
            s += 1
            old = PyBytes_AS_STRING(value)
            nold = PyBytes_GET_SIZE(value) // ENTRY_SIZE
            for m in range(nold):
                memcpy(&e, old + m * ENTRY_SIZE, ENTRY_SIZE)
                offer(top, &count, keep, &e)
        j = i
        while j < n and lines[j] == line:
            memcpy(&e, &entries[j, 0], ENTRY_SIZE)
            offer(top, &count, keep, &e)
            j += 1
        pairs.append((key, PyBytes_FromStringAndSize(<char*>top, count * ENTRY_SIZE)))
        i = j
    if s != nstored:
        raise ValueError("stored values must be the getmulti result for these lines, in order")
    return pairs
