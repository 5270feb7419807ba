# cython: language_level=3
"""A trace's evidence record in C, for the common case: cdrtrace.evidence.traces'
Tracer.record, which stays its pure-Python reference (and what runs with
CDRTRACE_INDEX_WRITER=python).

record() resolves the line's index entries by the rules of docs/trace-rules.md (the
last call that started before the activation; success, untraceable, already traced, no
call) and writes the evidence exactly as Tracer.record does: the same record (the same
JSON bytes, keys in the same order), the same report row, the same entries in `by_line`,
`pseudonyms` and `emeta`, in the same order. It makes the trace's LMDB calls through the
store's native transactions (cdrtrace.store._index.Txn), and calls back into Python only
where the reference's own helpers are kept (the time's text, the call's source name, the
directory's enrichment, the unreadable records near the call, the JSON encoder).

What it does not do, it leaves to the reference before reading or writing anything that
matters: it returns None, having written nothing, for a line whose held calls all began
after the activation while the index holds `keep` of them (the reference's error), a
line whose newest call is stamped after the trace is made (beyond the helpers' margin), a
line with a call stamped after the activation of a trace on the service's clock
(current: recorded before the trace, so begun, the switch's clock runs ahead), a call
before the activation stamped in an hour that daylight saving's end repeats, a call
that ties with a call from another caller, an unreadable record, a call that may have
rung (a late refusal, an unknown end: untraceable, with a reason), a call from a feed
that may leave a call that rang a line unlogged and had not shown it logs them (CUCM,
Kamailio's transaction rows, FreeSWITCH's A legs alone), a call to a line its switch
numbers itself (an extension) once two feeds have indexed such lines, a caller known by
a SIP identity, or a presentation or disposition it does not know. Everything else
(pending traces, resolving them, a trace that names its feed, a shard's replicas,
traces recorded from CDRs) never comes here: Tracer.record decides that before calling.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdio cimport snprintf
from libc.string cimport memcpy

from _cdr cimport (DISP_CALLERS_DIFFER, DISP_LATE_FAILURE, DISP_LATE_REFUSAL, DISP_TRANSFERRED,
                   DISP_UNKNOWN, DISP_UNREADABLE, PRES_UNAVAILABLE, Entry, key_bytes,
                   within_a_call)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec* tp)
    int CLOCK_REALTIME

cdef enum:
    ENTRY_SIZE = 40
    ANSWERED = 0x01
    FORWARDED = 0x02
    ROW_SIZE = 56                # evidence.rows.ROW_DTYPE
    ROWS_BLOCK = 32              # evidence.rows.BLOCK
    KIND_E164 = 1                # parsing.numbers: E164; OTHER with IDENTITY_LENGTH is an identity
    KIND_OTHER = 3
    IDENTITY_LENGTH = 63
    # evidence.rows.OUTCOME_CODES
    CODE_SUCCESS = 1
    CODE_UNTRACEABLE = 2
    CODE_NO_CALL = 3
    CODE_ALREADY_TRACED = 4

assert sizeof(Entry) == ENTRY_SIZE

# how far apart two feeds' records of one call may begin (store.lookup.FORWARDED_CALL_US)
cdef int64_t _TWIN_US = 300_000_000
TWIN_US = _TWIN_US

_OUTCOMES = {CODE_SUCCESS: "success", CODE_UNTRACEABLE: "untraceable",
             CODE_NO_CALL: "no_call", CODE_ALREADY_TRACED: "already_traced"}


cdef inline void _le64(unsigned char* out, uint64_t v) noexcept:
    cdef int i
    for i in range(8):
        out[i] = <unsigned char>(v >> (8 * i))


cdef str _number_text(uint64_t packed):
    """parsing.numbers.format_number, for anything but an identity (the caller checks)."""
    cdef char buf[96]
    cdef int kind = <int>(packed >> 62), length = <int>((packed >> 56) & 0x3F), n
    cdef unsigned long long digits = packed & ((<uint64_t>1 << 56) - 1)
    if packed == 0:
        return ""
    if kind == KIND_E164:
        n = snprintf(buf, sizeof(buf), "+%0*llu", length, digits)
    else:
        n = snprintf(buf, sizeof(buf), "%0*llu", length, digits)
    return buf[:n].decode("ascii")


cdef inline int64_t _now_us() noexcept:
    """The wall clock in microseconds, as the reference's time.time_ns() // 1000."""
    cdef timespec t
    clock_gettime(CLOCK_REALTIME, &t)
    return <int64_t>t.tv_sec * 1_000_000 + t.tv_nsec // 1000


cdef bint _in_a_repeated_hour(bytes folds, const Entry* entries, Py_ssize_t count,
                              int64_t at_us):
    """Whether a call before at_us is stamped in an hour that the end of daylight saving
    repeats (the index meta's folds: int64 rows first_us, end_us, shift_us, sorted), where
    its time names two instants: the reference decides what that leaves of the trace."""
    if folds is None:
        return False
    cdef const int64_t* f = <const int64_t*>PyBytes_AS_STRING(folds)
    cdef Py_ssize_t n = len(folds) // 24, i, k
    for i in range(count):
        if entries[i].start_us >= at_us:
            continue
        for k in range(n):
            if f[3 * k] > entries[i].start_us:
                break                        # sorted by first_us: none later holds it
            if entries[i].start_us < f[3 * k + 1]:
                return True
    return False


cdef bint _shared_local(itxn, meta_db, uint64_t packed) except -1:
    """True if the line is one its switch numbers itself (not E.164: an extension, another
    switch's too) and two or more feeds have indexed such lines (store.lookup.LOCAL_FEEDS,
    2 bytes a feed; Lookup.shared_local: the reference writes why)."""
    if packed >> 62 == 1:
        return False
    feeds = itxn.get(b"local_feeds", None, meta_db)
    return feeds is not None and len(feeds) > 2


cdef bint _tenants_shared(itxn, meta_db, uint64_t packed, int feed) except -1:
    """True if the line is one its switch numbers itself and its call's feed noted two
    tenants for such lines (store.lookup.TENANTS: 8 bytes a tenant; the reference writes
    why)."""
    if packed >> 62 == 1:
        return False
    held = itxn.get(b"tenants/" + bytes((feed >> 8, feed & 255)), None, meta_db)
    return held is not None and len(held) > 8


cdef bint _hunt_feed(itxn, meta_db, const Entry* entries, Py_ssize_t count) except -1:
    """True if a feed of the line's calls has noted calls through a hunt pilot (store.
    hunts.HUNT_FEEDS, 2 bytes a feed): the reference says whether one rang the line."""
    feeds = itxn.get(b"hunt_feeds", None, meta_db)
    if feeds is None:
        return False
    cdef const unsigned char* b = <const unsigned char*>PyBytes_AS_STRING(feeds)
    cdef Py_ssize_t i, k, n = len(feeds) - 1
    for i in range(count):
        for k in range(0, n, 2):
            if ((<unsigned int>b[k] << 8) | b[k + 1]) == entries[i].feed:
                return True
    return False


cdef inline bytes _source_mark(bytes prefix, uint32_t source):
    """A meta key of a source: prefix, then the source's id in 4 bytes, big-endian (as
    store.lookup writes them)."""
    cdef unsigned char id_[4]
    id_[0] = (source >> 24) & 0xFF
    id_[1] = (source >> 16) & 0xFF
    id_[2] = (source >> 8) & 0xFF
    id_[3] = source & 0xFF
    return prefix + PyBytes_FromStringAndSize(<char*>id_, 4)


cdef bint _unconnected_unlogged(itxn, meta_db, const Entry* e):
    """True if the call is from a source of a switch that may leave calls that rang a
    line unlogged, and its feed had not shown it logs them by the call (store.lookup.
    UNCONNECTED, Lookup.unlogged_after: the reference writes why): the index's meta marks
    such sources with the suffix of their feed's mark, which holds the earliest start the
    feed showed it at, as int64."""
    suffix = itxn.get(_source_mark(b"unconnected-source/", e.source), None, meta_db)
    if suffix is None:
        return False
    cdef unsigned char key[14]
    memcpy(key, b"unconnected/", 12)
    key[12] = (e.feed >> 8) & 0xFF
    key[13] = e.feed & 0xFF
    cdef bytes held = itxn.get(PyBytes_FromStringAndSize(<char*>key, 14) + bytes(suffix), None,
                               meta_db)
    if held is None or len(held) != 8:
        return True                          # not as the index writes it: the reference says
    cdef const unsigned char* b = <const unsigned char*>PyBytes_AS_STRING(held)
    cdef uint64_t since = 0
    cdef int i
    for i in range(8):                       # little-endian, on any machine
        since |= (<uint64_t>b[i]) << (8 * i)
    return <int64_t>since > e.start_us


cdef bint _damaged_source(itxn, meta_db, const Entry* e):
    """True if the call's source was found damaged after it was indexed (store.lookup.
    DAMAGED_SOURCE, Lookup.damaged: the reference writes what was found)."""
    return itxn.get(_source_mark(b"damaged-source/", e.source), None, meta_db) is not None


cdef inline bint _identity(uint64_t packed) noexcept:
    return (packed >> 62) == KIND_OTHER and ((packed >> 56) & 0x3F) == IDENTITY_LENGTH


cdef str _decimal(unsigned long long v):
    cdef char buf[24]
    cdef int n = snprintf(buf, sizeof(buf), "%llu", v)
    return buf[:n].decode("ascii")


cdef bytes _row(uint64_t trace, uint64_t line, int outcome, int64_t activated_us,
                uint64_t origin, uint64_t call_id, int64_t call_start_us,
                int presentation, bint enriched, int origin_feed):
    """evidence.rows.pack: one ROW_DTYPE row (little-endian, as "<QQQQqqBBBBH2x"); an
    origin_feed >= 0 scopes the origin to it (rows.SCOPE_FEED)."""
    cdef unsigned char row[ROW_SIZE]
    cdef int i
    _le64(row, trace)
    _le64(row + 8, line)
    _le64(row + 16, origin)
    _le64(row + 24, call_id)
    _le64(row + 32, <uint64_t>call_start_us)
    _le64(row + 40, <uint64_t>activated_us)
    row[48], row[49], row[50] = <uint8_t>outcome, <uint8_t>presentation, enriched
    for i in range(51, ROW_SIZE):
        row[i] = 0
    if origin_feed >= 0:
        row[51], row[52], row[53] = 1, <uint8_t>(origin_feed & 255), <uint8_t>(origin_feed >> 8)
    return PyBytes_FromStringAndSize(<char*>row, ROW_SIZE)


cdef dict _unreadable_near(itxn, db, feed, int64_t call_us, int64_t at_us,
                           int64_t window, format_utc, loads, reference):
    """Lookup.unreadable_near (its reference) for a call's feed: the unreadable records
    of that feed from window before the call to the activation, and how many of them had
    no line. Without a call (every feed's), the reference says."""
    if feed is None and db is not None:
        return reference(itxn, None, call_us, at_us)
    cdef int64_t since = call_us - window
    found = {"from": format_utc(since), "to": format_utc(at_us), "records": 0,
             "without_line": 0}
    if db is None:
        return found
    cdef long records = 0, without_line = 0
    prefix = (<int>feed).to_bytes(2, "big")
    for _, value in itxn.range(prefix + max(since, 0).to_bytes(8, "big"),
                               prefix + max(at_us, 0).to_bytes(8, "big"), db):
        records += 1
        if not loads(value)["line_found"]:
            without_line += 1
    found["records"] = records
    found["without_line"] = without_line
    return found


def record(etxn, itxn, tuple dbs, bytes key, uint64_t packed, int64_t at_us, str line,
           requested_by, int keep, tuple helpers, bint current=False):
    """Tracer.record(txn, index_txn, key, packed, at_us, requested_by=requested_by,
    current=current) for the common case: the evidence record written, or None (nothing
    written) for the reference to make. etxn, itxn: the evidence's and the index's native transactions.
    dbs: (index, traces, emeta, by_line, pseudonyms, trace_rows, the index's
    unreadable records or None, and the index's meta). helpers: (format_utc, source_name(index_txn, source),
    enrichment(txn, calling), unreadable_near(index_txn, feed, call_us, at_us), encode,
    TraceError, the names of presentations, of dispositions, of the roles a line has in
    a call, the module whose next_number numbers traces: evidence.replication, how long
    before a call unreadable records are counted, in us, the JSON reader of their log,
    and how far after now a newest call is stamped for the line's times to be distrusted,
    in us). The unreadable records near the call are counted here, as unreadable_near
    does (its reference, and what counts them for a trace with no call)."""
    index_db, traces_db, emeta_db, by_line_db, pseudonyms_db, rows_db, unreadable_db, meta_db = dbs
    (format_utc, source_name, enrichment_of, unreadable_near, encode, trace_error,
     presentations, dispositions, roles, numbering, window, loads, ahead) = helpers
    cdef bytes value = itxn.get(key, None, index_db)
    cdef const Entry* entries = NULL
    cdef const Entry* e = NULL
    cdef Py_ssize_t count = 0, i, first = -1
    if value is not None:
        if len(value) % ENTRY_SIZE:
            return None                      # not as the index writes it: the reference says
        entries = <const Entry*>PyBytes_AS_STRING(value)
        count = len(value) // ENTRY_SIZE
    if count > 0 and entries[0].start_us > _now_us() + <int64_t>ahead:
        return None                          # the newest call has not begun: the reference says
    for i in range(count):                   # newest first: the first that began before
        if entries[i].start_us < at_us:
            first = i
            break
    # a call recorded before a trace on the service's clock, so begun, but stamped after
    # its activation: the switch's clock runs ahead: the reference says
    if current and first != 0 and count > 0:
        return None
    if first >= 0 and _in_a_repeated_hour(itxn.get(b"folds", None, meta_db), entries + first,
                                          count - first, at_us):
        return None                          # a time that names two instants: the reference
    cdef int code, presentation = 0, disposition = 0, flags = 0
    cdef dict call = None
    original = origin = None
    if first < 0:
        if count >= keep:
            return None                      # the reference's error: older calls not held
        code = CODE_NO_CALL
    else:
        e = &entries[first]
        flags, presentation = e.flags, e.presentation
        disposition = flags >> 4
        # the reference writes their reason, or the identity
        if (disposition == DISP_UNREADABLE or disposition == DISP_LATE_REFUSAL
                or disposition == DISP_LATE_FAILURE or disposition == DISP_UNKNOWN
                or disposition == DISP_TRANSFERRED or disposition == DISP_CALLERS_DIFFER
                or _identity(e.calling) or e.calling == packed):   # (the line's own number)
            return None
        if _damaged_source(itxn, meta_db, e):
            return None                      # its file was found damaged: the reference says
        if _unconnected_unlogged(itxn, meta_db, e):
            return None                      # a later call may be missing: the reference says
        if _shared_local(itxn, meta_db, packed):
            return None                      # whose extension dialled: the reference says
        if _tenants_shared(itxn, meta_db, packed, e.feed):
            return None                      # whose tenant's extension: the reference says
        if _hunt_feed(itxn, meta_db, entries, count):
            return None                      # a hunt pilot's call may have rung it: the reference
        # another call at the same instant: another caller's (none named), or another
        # record of this caller's call (which of them is named, and whether a trace named
        # one before), or one the index no longer holds (a line whose room the instant
        # fills, LINE_ROOM): the reference says
        for i in range(first + 1, count):
            if entries[i].start_us == e.start_us:
                return None
        # a call of the second before, written in whole seconds, where this one's time is
        # finer: it may have begun after it (store.lookup.within_its_second): the reference
        if e.start_us % 1000000 != 0:
            for i in range(first + 1, count):
                if e.start_us - entries[i].start_us >= 1000000:
                    break
                if entries[i].start_us % 1000000 == 0:
                    return None
        if presentation >= len(presentations) or disposition >= len(dispositions) \
                or presentations[presentation] is None or dispositions[disposition] is None \
                or (flags >> 2) & 3 >= len(roles):
            return None                      # the reference's error
        code = CODE_UNTRACEABLE if e.calling == 0 or presentation == PRES_UNAVAILABLE \
            else CODE_SUCCESS
        call = {
            "start": format_utc(e.start_us),
            "start_us": e.start_us,
            "calling": _number_text(e.calling) or None,
            "presentation": presentations[presentation],
            "answered": bool(flags & ANSWERED),
            "forwarded": bool(flags & FORWARDED),
            "indexed_as": roles[(flags >> 2) & 3],
            "disposition": dispositions[disposition],
            "call_id": f"{e.call_id:016x}",
            "feed": e.feed,
            "source": source_name(itxn, e.source),
            "offset": e.offset,
        }
        if e.calling == 0 or (e.calling >> 62) == 1:
            origin = call["calling"]             # evidence.pseudonyms.origin_key
        elif _tenants_shared(itxn, meta_db, e.calling, e.feed):
            return None                          # whose tenant's caller: the reference notes
        else:
            origin = f"{call['calling']} (feed {e.feed})"
        if code == CODE_SUCCESS:
            # a record of this caller's in another feed near this call may be another
            # switch's record of it (store.lookup.same_call_elsewhere): the reference says
            for i in range(count):
                if entries[i].feed != e.feed and entries[i].calling == e.calling and \
                        -_TWIN_US <= entries[i].start_us - e.start_us <= _TWIN_US:
                    return None
            original = etxn.get(key + b"c" + key_bytes(e.call_id), None, by_line_db)
            if original is not None:     # its trace's call: this one, or one a day away
                held = etxn.get(key_bytes(int(original[1:])), None, traces_db)  # (evidence.marks)
                if held is None or within_a_call(loads(held)["call"]["start_us"], e.start_us):
                    code = CODE_ALREADY_TRACED
                else:
                    original = None
    # the trace's number: never reused, even once a purge emptied the table
    last = etxn.last_key(traces_db)
    cdef uint64_t number = numbering.next_number(
        max(int.from_bytes(last, "big") if last else 0,
            int(etxn.get(b"last_trace", b"0", emeta_db))), 0, 1)
    etxn.put(b"last_trace", _decimal(number).encode(), emeta_db)
    enrichment = enrichment_of(etxn, e.calling) if code == CODE_SUCCESS else None
    cdef char tid[32]
    cdef int n = snprintf(tid, sizeof(tid), "T%08llu", <unsigned long long>number)
    trace_id = tid[:n].decode("ascii")
    cdef timespec now
    clock_gettime(CLOCK_REALTIME, &now)
    record = {
        "trace_id": trace_id, "line": line, "activated_us": at_us,
        "traced_at_us": <int64_t>now.tv_sec * 1000000 + now.tv_nsec // 1000,
        "outcome": _OUTCOMES[code], "call": call, "origin": origin, "enrichment": enrichment,
        "original_trace": original.decode() if original else None,
    }
    if requested_by is not None:
        record["requested_by"] = requested_by
    record["unreadable_nearby"] = _unreadable_near(
        itxn, unreadable_db, e.feed if e != NULL else None,
        e.start_us if e != NULL else at_us, at_us, window, format_utc, loads, unreadable_near)
    if e != NULL:
        row = _row(number, packed, code, at_us, e.calling, e.call_id, e.start_us,
                   presentation, enrichment is not None,
                   -1 if e.calling == 0 or (e.calling >> 62) == 1 else e.feed)
    else:
        row = _row(number, packed, code, at_us, 0, 0, 0, 0, False, -1)
    if code == CODE_SUCCESS:
        etxn.put(key + b"c" + key_bytes(e.call_id), trace_id.encode(), by_line_db)
        label = key + b"o" + origin.encode()     # evidence.pseudonyms.assign
        if etxn.get(label, None, pseudonyms_db) is None:
            labels = int(etxn.get(key + b"#", b"0", pseudonyms_db))
            etxn.put(label, str(labels).encode(), pseudonyms_db)
            etxn.put(key + b"#", str(labels + 1).encode(), pseudonyms_db)
    if not etxn.put(key_bytes(number), encode(record), traces_db, True):
        raise trace_error(f"trace number {number} is not past the last recorded: "
                          "the evidence was not written")
    block = key_bytes((number - 1) // ROWS_BLOCK)        # evidence.rows.append_one
    etxn.put(block, (etxn.get(block, None, rows_db) or b"") + row, rows_db)
    etxn.put(key + b"t" + key_bytes(number), b"", by_line_db)
    return record
