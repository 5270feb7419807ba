# cython: language_level=3
"""Native kernels of the last-call index: per-line merge of new calls into stored values.

A value is the concatenation of up to `keep` Entry structs (40 bytes each), newest
first, and past them any that began at the same instant as the keep-th (at most
LINE_ROOM in all). The merge is a union by call id, ordered by a total order (start desc,
call id desc, then the remaining bytes), cut to `keep` but for the keep-th's instant.
Entries with one call id are legs of one call (or the same record again) and merge into
one, if they start at most a day apart (one_call: a switch reuses its ids): the earliest
leg speaks for it, it is answered if any leg was, and where its legs (but those a transfer
split off) name two callers, it is neither's (merge_legs). Within a batch the result does not
depend on the order of its records, and a record given again changes nothing: ingest is
idempotent. Across batches one case depends on order: a call whose earliest leg arrives
in a later batch moves down, and a call the stored value no longer holds (pushed out by
the call's later leg) cannot take its place (docs/trace-rules.md).
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, qsort, realloc
from libc.string cimport memcpy, memcmp, memset

from _cdr cimport (CALL_SPAN_S, DISP_ANSWERED_ELSEWHERE, DISP_CALLERS_DIFFER, DISP_TRANSFERRED,
                   LINE_ROOM, Entry, field_types, key_bytes, one_call)

DEF_KEEP = 4
CALL_SPAN_US = <int64_t>CALL_SPAN_S * 1_000_000   # legs of one call start at most this far apart
ENTRY_BYTES = sizeof(Entry)


cdef tuple _entry_fields():
    cdef Entry ones, sevens
    memset(&ones, 0xFF, sizeof(Entry))
    memset(&sevens, 0x7F, sizeof(Entry))
    return field_types(ones, sevens)


ENTRY_FIELDS = _entry_fields()   # the numpy dtype of cdrtrace.store.index is built from it
ROOM = LINE_ROOM                 # the most entries a line's value holds
CALLERS_DIFFER = DISP_CALLERS_DIFFER   # a call whose legs name two callers (merge_legs)

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


cdef inline int leg_rank(const Entry* e, uint64_t line) noexcept nogil:
    """0 for a leg that may speak for its call; 1 for one whose caller is the line itself
    (the line's own phone's record, as Asterisk 12+ writes the transferring phone's channel
    bridged to its consultation call, its caller the number dialled); 2 for one split off
    by a transfer, 3 for both: such legs never speak where a leg of a lower rank does."""
    return 2 * (e.flags >> 4 == DISP_TRANSFERRED) + (e.calling == line)


cdef inline bint primary_leg(const Entry* a, const Entry* b, uint64_t line) noexcept nogil:
    """True if a, not b, speaks for a call both are legs of (on the line): the one of the
    lower leg_rank (not split off by a transfer where one was: the consultation call to a
    transfer's target and the final call on the target's leg: the consultation's caller
    handed the line another's call), then the earlier start,
    then a fixed order of the remaining bytes (flags aside: the merge combines them). A
    total order: which leg speaks does not turn on the order the legs are merged in."""
    cdef int c, ra = leg_rank(a, line), rb = leg_rank(b, line)
    if ra != rb:
        return ra < rb
    if a.start_us != b.start_us:
        return a.start_us < b.start_us
    c = memcmp(<const char*>&a.offset, <const char*>&b.offset, ENTRY_SIZE - 25)
    if c != 0:
        return c < 0
    return a.calling <= b.calling


cdef inline uint8_t disposition_rank(uint8_t disposition) noexcept nogil:
    """Where a disposition ranks among a call's legs: by its code (answered, no answer,
    cancelled, busy, ...), except that answered elsewhere, a leg that rang, ranks with the
    legs that rang, before the ones that only may have (unknown, unreadable, a late
    refusal or failure: a trace of them fails closed)."""
    return 7 if disposition == DISP_ANSWERED_ELSEWHERE else 2 * disposition


cdef inline uint8_t merge_flags(uint8_t a, uint8_t b) noexcept nogil:
    """Legs of one call are one call: answered or forwarded if any leg was, the first
    role, and the disposition that ranks first (disposition_rank)."""
    cdef uint8_t role = min((a >> 2) & 3, (b >> 2) & 3)
    cdef uint8_t disposition = a >> 4
    if disposition_rank(b >> 4) < disposition_rank(disposition):
        disposition = b >> 4
    return ((a | b) & 0x03) | (role << 2) | (disposition << 4)


cdef inline Entry merge_legs(const Entry* a, const Entry* b, uint64_t line) noexcept nogil:
    """One entry for two legs of one call on the line (or merged groups of them): the
    primary leg speaks, with the legs' merged flags. Where the legs that may speak (rank
    0: not split off by a transfer, the caller not the line itself) name two callers, the
    call's disposition is callers_differ, whatever else is merged into it later: the
    records disagree on who called the line (an Asterisk 12+ transfer gives the
    consultation call from the transferring phone and the transferred caller's call one
    linkedid, and the consultation began first), and a trace of it fails closed.
    Order-free: a group's speaker is one of its legs of the lowest rank."""
    cdef Entry merged = a[0] if primary_leg(a, b, line) else b[0]
    cdef uint8_t da = a.flags >> 4, db = b.flags >> 4
    merged.flags = merge_flags(a.flags, b.flags)
    if (da == DISP_CALLERS_DIFFER or db == DISP_CALLERS_DIFFER
            or (leg_rank(a, line) == 0 and leg_rank(b, line) == 0 and a.calling != b.calling)):
        merged.flags = (merged.flags & 0x0F) | (DISP_CALLERS_DIFFER << 4)
    return merged


cdef inline void offer(Entry* top, int* n, int keep, const Entry* e, uint64_t line) noexcept nogil:
    """Insert e into top (sorted, one entry per call, at most keep but for the calls of the
    keep-th's instant, at most LINE_ROOM in all); a call already there (another leg, or the
    same record again: one_call) is merged with it."""
    cdef int i, pos
    cdef Entry merged
    for i in range(n[0]):
        if one_call(&top[i], e):
            merged = merge_legs(&top[i], e, line)
            while i + 1 < n[0]:     # take it out; it goes back in at its place
                top[i] = top[i + 1]
                i += 1
            n[0] -= 1
            e = &merged
            break
    pos = n[0]
    while pos > 0 and rank_before(e, &top[pos - 1]):
        pos -= 1
    if pos >= LINE_ROOM or (pos >= keep and e.start_us != top[keep - 1].start_us):
        return
    i = n[0] if n[0] < LINE_ROOM else LINE_ROOM - 1
    while i > pos:
        top[i] = top[i - 1]
        i -= 1
    top[pos] = e[0]
    if n[0] < LINE_ROOM:
        n[0] += 1
    # past keep, only the calls of the keep-th's instant: a trace of it must see them all
    while n[0] > keep and top[n[0] - 1].start_us != top[keep - 1].start_us:
        n[0] -= 1


cdef int by_call(const void* a, const void* b) noexcept nogil:
    """By call id, then start: a call's legs side by side, its earliest first."""
    cdef uint64_t x = (<const Entry*>a).call_id, y = (<const Entry*>b).call_id
    cdef int64_t s = (<const Entry*>a).start_us, t = (<const Entry*>b).start_us
    if x != y:
        return (x > y) - (x < y)
    return (s > t) - (s < t)


cdef int merge_line(Entry* top, int keep, const char* old, Py_ssize_t nold, Entry* fresh,
                    Py_ssize_t m, uint64_t line) noexcept nogil:
    """A line's stored entries (old, nold) merged with its new ones (fresh, m; reordered
    here) into top; returns how many. The result does not depend on the order of the new
    entries: legs of one call are merged first (sorted by call id), then merged into the
    stored call they belong to, and only then do the calls compete for the keep places.
    (Offering legs one at a time let a late leg push a call out that the call, once its
    earliest leg arrived, would rank behind.)"""
    cdef int count = 0, i
    cdef Py_ssize_t j, k = 0, u = 0
    cdef Entry e
    cdef bint stored
    for j in range(nold):
        memcpy(&e, old + j * ENTRY_SIZE, ENTRY_SIZE)
        offer(top, &count, keep, &e, line)
    if m > 1:
        qsort(fresh, m, sizeof(Entry), by_call)
    for j in range(m):              # legs of one call: one entry
        if k and one_call(&fresh[k - 1], &fresh[j]):
            fresh[k - 1] = merge_legs(&fresh[k - 1], &fresh[j], line)
        else:
            fresh[k] = fresh[j]
            k += 1
    for j in range(k):              # calls already stored first: they may move down, not out
        stored = False
        for i in range(count):
            stored = stored or one_call(&top[i], &fresh[j])
        if stored:
            offer(top, &count, keep, &fresh[j], line)
        else:
            fresh[u] = fresh[j]
            u += 1
    for j in range(u):              # then the new calls, each with its rank settled
        offer(top, &count, keep, &fresh[j], line)
    return count


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


cdef class _Scratch:
    """A growable buffer of entries (one line's new entries), freed with the object."""
    cdef Entry* data
    cdef Py_ssize_t room

    def __dealloc__(self):
        free(self.data)

    cdef Entry* fit(self, Py_ssize_t n) except NULL:
        cdef Entry* grown
        if n > self.room or self.data == NULL:
            grown = <Entry*>realloc(self.data, max(n, 2 * self.room, 1) * sizeof(Entry))
            if grown == NULL:
                raise MemoryError("no memory for a line's entries")
            self.data, self.room = grown, max(n, 2 * self.room, 1)
        return self.data


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
    cdef Entry top[LINE_ROOM]
    cdef Entry* fresh
    cdef int count
    cdef Py_ssize_t i = 0, j, m, nold, g = 0, s = 0
    cdef _Scratch scratch = _Scratch()
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
        old, nold = NULL, 0
        if s < nstored and stored[s][0] == key:
            value = stored[s][1]
            s += 1
            old = PyBytes_AS_STRING(value)
            nold = PyBytes_GET_SIZE(value) // ENTRY_SIZE
        j = i
        while j < n and lines[j] == line:
            j += 1
        fresh = scratch.fit(j - i)
        for m in range(i, j):
            memcpy(&fresh[m - i], &entries[m, 0], ENTRY_SIZE)
        count = merge_line(top, keep, old, nold, fresh, j - i, line)
        pairs.append((key, PyBytes_FromStringAndSize(<char*>top, count * ENTRY_SIZE)))
        i = j
    if s != nstored:
        raise ValueError("stored values must be the getmulti result for these lines, in order")
    return pairs


# --- The native writer: merging into the index in the LMDB engine py-lmdb already runs ---
#
# LMDB forbids opening one environment twice in a process, so the writer must use the very
# engine (and environment) py-lmdb opened. py-lmdb 3.x exports each of its engines as a
# table of entry points (`lmdb_api_v09`, `lmdb_api_v10`, or `lmdb_api_sys` for a build on
# the system's liblmdb); the writer finds the table the Environment uses and calls LMDB
# through it, inside py-lmdb's own write transaction, so the index still commits with the
# feed's position (exactly once). Reaching the transaction means reading py-lmdb's object
# layout; every field the writer reads is checked against another before it is trusted
# (native_writer_check), and anything unexpected keeps the Python writer.
cdef extern from "Python.h":
    ctypedef struct PyObject
    ctypedef struct PyTypeObject

cdef extern from "<dlfcn.h>" nogil:
    void* dlopen(const char* filename, int flag)
    void* dlsym(void* handle, const char* symbol)
    int dlclose(void* handle)
    int RTLD_NOW
    int RTLD_NOLOAD

cdef extern from *:
    """
    /* LMDB's value and py-lmdb's engine table (lmdb/mdb_api.h, py-lmdb 3.0), declared by
       their layout: the writer calls only the typed members. */
    typedef struct { size_t mv_size; void *mv_data; } ct_val;
    typedef struct ct_engine {
        int major, minor, patch;
        unsigned int data_version;
        void *env_fns[20];
        int (*txn_begin)(void *env, void *parent, unsigned int flags, void **txn);
        void *txn_commit;
        void (*txn_abort)(void *txn);
        void *txn_reset, *txn_renew;
        size_t (*txn_id)(void *txn);
        void *dbi_open;
        int (*dbi_flags)(void *txn, unsigned int dbi, unsigned int *flags);
        void *dbi_close, *drop;
        int (*get)(void *txn, unsigned int dbi, ct_val *key, ct_val *data);
        int (*put)(void *txn, unsigned int dbi, ct_val *key, ct_val *data, unsigned int flags);
        void *del, *stat;
        int (*cursor_open)(void *txn, unsigned int dbi, void **cursor);
        void (*cursor_close)(void *cursor);
        int (*cursor_get)(void *cursor, ct_val *key, ct_val *data, int op);
        int (*cursor_put)(void *cursor, ct_val *key, ct_val *data, unsigned int flags);
        void *cursor_del, *cursor_count;
        char *(*strerror_fn)(int err);
        char *(*version_fn)(int *major, int *minor, int *patch);
    } ct_engine;
    /* py-lmdb's objects (lmdb/cpython.c): the common head, then each type's fields */
    typedef struct { PyObject_HEAD void *links[4]; int valid; } ct_head;
    typedef struct { ct_head h; PyObject *env; unsigned int dbi; unsigned int flags; } ct_db;
    typedef struct { ct_head h; PyObject *weaklist; void *env; const ct_engine *libv; } ct_env;
    typedef struct {
        ct_head h; PyObject *weaklist; PyObject *env; PyObject *parent;
        const ct_engine *libv; void *txn; int flags; PyObject *db; int mutations;
    } ct_txn;
    """
    ctypedef struct ct_val:
        size_t mv_size
        void* mv_data
    ctypedef struct ct_engine:
        int major, minor, patch
        void* env_fns[20]
        int (*txn_begin)(void* env, void* parent, unsigned int flags, void** txn) noexcept nogil
        void (*txn_abort)(void* txn) noexcept nogil
        size_t (*txn_id)(void* txn) noexcept nogil
        int (*get)(void* txn, unsigned int dbi, ct_val* key, ct_val* data) noexcept nogil
        int (*put)(void* txn, unsigned int dbi, ct_val* key, ct_val* data,
                   unsigned int flags) noexcept nogil
        int (*dbi_flags)(void* txn, unsigned int dbi, unsigned int* flags) noexcept nogil
        int (*cursor_open)(void* txn, unsigned int dbi, void** cursor) noexcept nogil
        void (*cursor_close)(void* cursor) noexcept nogil
        int (*cursor_get)(void* cursor, ct_val* key, ct_val* data, int op) noexcept nogil
        int (*cursor_put)(void* cursor, ct_val* key, ct_val* data, unsigned int flags) noexcept nogil
        char* (*strerror_fn)(int err) noexcept nogil
        char* (*version_fn)(int* major, int* minor, int* patch) noexcept nogil
    ctypedef struct ct_head:
        int valid
    ctypedef struct ct_db:
        ct_head h
        PyObject* env
        unsigned int dbi
    ctypedef struct ct_env:
        ct_head h
        void* env
        const ct_engine* libv
    ctypedef struct ct_txn:
        ct_head h
        PyObject* env
        const ct_engine* libv
        void* txn
        int flags
        PyObject* db
        int mutations
    PyTypeObject* Py_TYPE(PyObject* o)

cdef enum:
    CT_FIRST = 0         # MDB_cursor_op values, the same in LMDB 0.9 and 1.0
    CT_LAST = 6
    CT_NEXT = 8
    CT_SET_RANGE = 17
    CT_SET_KEY = 16
    CT_CURRENT = 0x40    # put flags
    CT_APPEND = 0x20000
    CT_NOTFOUND = -30798
    CT_KEYEXIST = -30799
    CT_TRANS_RDONLY = 2  # py-lmdb's transaction flag
    CT_TXN_RDONLY = 0x20000   # mdb_txn_begin's MDB_RDONLY
    CT_ENV_GET_PATH = 14      # env_fns[14] is env_get_path

cdef const ct_engine* _engines[3]
cdef int _n_engines = -1
cdef str _no_engine = "not looked for yet"


cdef int _find_engines() except -1:
    """The engine tables of the py-lmdb extension loaded in this process (once)."""
    global _n_engines, _no_engine
    if _n_engines >= 0:
        return _n_engines
    _n_engines = 0
    try:
        import lmdb.cpython as ext
    except ImportError as exc:
        _no_engine = f"py-lmdb's CPython extension is not loaded ({exc})"
        return 0
    path = ext.__file__.encode()
    cdef void* handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if handle == NULL:
        _no_engine = "py-lmdb's extension is not loaded"
        return 0
    cdef const ct_engine* engine
    cdef int major, minor, patch
    for name in (b"lmdb_api_sys", b"lmdb_api_v09", b"lmdb_api_v10"):
        engine = <const ct_engine*>dlsym(handle, name)
        if engine == NULL:
            continue
        # the table's own version fields and its last entry point must agree: a table
        # laid out differently would not
        engine.version_fn(&major, &minor, &patch)
        if (major, minor, patch) != (engine.major, engine.minor, engine.patch) or major > 1:
            _no_engine = f"py-lmdb's engine table {name.decode()} is not laid out as expected"
            _n_engines = 0
            return 0
        _engines[_n_engines] = engine
        _n_engines += 1
    dlclose(handle)   # the module stays loaded: Python holds it
    if _n_engines == 0:
        _no_engine = "py-lmdb exports no engine table (py-lmdb 3.x does)"
    return _n_engines


cdef object _env_type = None, _txn_type = None, _db_type = None


cdef str _py_lmdb(object db, object other, bint txn):
    """None when the engines are found, db is py-lmdb's CPython _Database and other its
    Transaction (txn) or Environment (the types are kept from then on), else why not."""
    global _env_type, _txn_type, _db_type
    if _db_type is None:
        if _find_engines() == 0:
            return _no_engine
        import lmdb
        if type(db).__name__ != "_Database" or type(db).__module__ != lmdb.Environment.__module__:
            return "not py-lmdb's CPython objects"
        _env_type, _txn_type, _db_type = lmdb.Environment, lmdb.Transaction, type(db)
    if type(db) is not _db_type or type(other) is not (_txn_type if txn else _env_type):
        return "not py-lmdb's CPython objects"
    return None


cdef bint _known(const ct_engine* libv) noexcept:
    """Whether libv is one of the engine tables py-lmdb exports."""
    cdef int i
    for i in range(_n_engines):
        if libv == _engines[i]:
            return True
    return False


cdef str _check(object txn, object db, ct_txn** t_out, unsigned int* dbi_out,
                bint writable=True):
    """None when txn and db are py-lmdb objects laid out as the writer expects (a write
    transaction unless not writable), else why not. Each field is trusted only once another
    agrees with it."""
    why = _py_lmdb(db, txn, True)
    if why is not None:
        return why
    cdef ct_txn* t = <ct_txn*><PyObject*>txn
    cdef ct_db* d = <ct_db*><PyObject*>db
    if not _known(t.libv):
        return "the transaction's engine is not one py-lmdb exports"
    if t.env == NULL or t.env != d.env or not t.h.valid or not d.h.valid:
        return "the transaction and the database are not of one open environment"
    if <object>Py_TYPE(t.env) is not _env_type or (<ct_env*>t.env).libv != t.libv:
        return "the transaction's environment is not laid out as expected"
    if t.db == NULL or Py_TYPE(t.db) != Py_TYPE(<PyObject*>db) or (<ct_db*>t.db).env != t.env:
        return "the transaction's default database is not laid out as expected"
    if writable and t.flags & CT_TRANS_RDONLY:
        return "a read-only transaction"
    if t.txn == NULL or t.libv.txn_id(t.txn) != txn.id():
        return "the transaction's LMDB handle is not where expected"
    cdef unsigned int flags
    if t.libv.dbi_flags(t.txn, d.dbi, &flags) != 0:
        return "the database's handle is not where expected"
    t_out[0] = t
    dbi_out[0] = d.dbi
    return None


def native_writer_check(txn, db):
    """None if write_native can write into this py-lmdb transaction, else the reason."""
    cdef ct_txn* t
    cdef unsigned int dbi
    return _check(txn, db, &t, &dbi)


cdef extern from *:
    void __builtin_prefetch(const void* addr) nogil

cdef enum:
    PREFETCH_AHEAD = 16     # pairs: the gather of entries by order misses the cache


cdef inline void be_key(uint64_t v, unsigned char* buf) noexcept nogil:
    cdef int b
    for b in range(8):
        buf[7 - b] = <unsigned char>(v >> (8 * b))


@cython.boundscheck(False)   # write_native checked every index it passes
@cython.wraparound(False)
cdef int _write(const ct_engine* api, void* txn, unsigned int dbi,
                const uint64_t[::1] lines, const unsigned char[:, ::1] entries,
                const uint32_t* order, int keep) noexcept nogil:
    """The merge of merge(), read and written through an LMDB cursor: 0 or LMDB's error.
    The j-th pair is (lines[j], entries[order[j]]), or entries[j] without an order."""
    cdef void* cursor = NULL
    cdef ct_val key, value
    cdef unsigned char kbuf[8]
    cdef unsigned char last[8]
    cdef Entry top[LINE_ROOM]
    cdef Entry* fresh = NULL
    cdef Entry* grown
    cdef const char* old
    cdef int count, rc, nold
    cdef bint appending = False
    cdef Py_ssize_t i = 0, j, m, room = 0, n = lines.shape[0]
    cdef uint64_t line
    rc = api.cursor_open(txn, dbi, &cursor)
    if rc != 0:
        return rc
    rc = api.cursor_get(cursor, &key, &value, CT_LAST)
    if rc == CT_NOTFOUND:
        appending = True
    elif rc != 0:
        api.cursor_close(cursor)
        return rc
    elif key.mv_size == 8:
        memcpy(last, key.mv_data, 8)
    else:   # keys are 8 bytes; anything else would sort differently: never append
        memset(last, 0xFF, 8)
    rc = 0
    while i < n:
        line = lines[i]
        be_key(line, kbuf)
        if not appending and memcmp(kbuf, last, 8) > 0:
            appending = True    # past the stored keys: the rest go at the end
        old, nold = NULL, 0
        key.mv_size, key.mv_data = 8, kbuf
        if not appending:
            rc = api.cursor_get(cursor, &key, &value, CT_SET_KEY)
            if rc == 0:
                old, nold = <const char*>value.mv_data, <int>(value.mv_size // ENTRY_SIZE)
            elif rc != CT_NOTFOUND:
                break
        j = i
        while j < n and lines[j] == line:
            j += 1
        if j - i > room:
            room = max(j - i, 2 * room)
            grown = <Entry*>realloc(fresh, room * sizeof(Entry))
            if grown == NULL:
                rc = -1
                break
            fresh = grown
        for m in range(i, j):
            if order != NULL and m + PREFETCH_AHEAD < n:
                __builtin_prefetch(&entries[order[m + PREFETCH_AHEAD], 0])
            memcpy(&fresh[m - i], &entries[order[m] if order != NULL else m, 0], ENTRY_SIZE)
        count = merge_line(top, keep, old, nold, fresh, j - i, line)
        value.mv_size, value.mv_data = count * ENTRY_SIZE, top
        key.mv_size, key.mv_data = 8, kbuf
        rc = api.cursor_put(cursor, &key, &value,
                            CT_APPEND if appending else (CT_CURRENT if rc == 0 else 0))
        if rc != 0:
            break
        i = j
    api.cursor_close(cursor)
    free(fresh)
    return rc


@cython.boundscheck(False)
@cython.wraparound(False)
def write_native(txn, db, const uint64_t[::1] lines not None,
                 const unsigned char[:, ::1] entries not None, int keep=DEF_KEEP,
                 const uint32_t[::1] order=None):
    """merge() and put, in C with the GIL released, inside py-lmdb's write transaction txn.

    lines is sorted; entries[i] (40 bytes) belongs to lines[i], or with order (from
    line_order, or a slice of it), entries[order[i]] does. Returns the number of pairs; an LMDB error is
    raised as (code, message) in NativeLmdbError.
    """
    if keep < 1 or keep > MAX_KEEP:
        raise ValueError(f"keep must be 1..{MAX_KEEP}")
    cdef Py_ssize_t n = lines.shape[0], i, rows = entries.shape[0]
    if (rows != n if order is None else order.shape[0] != n) or (rows and entries.shape[1] != ENTRY_SIZE):
        raise ValueError("entries must be one row of 40 bytes per line (or order one index per line)")
    for i in range(n):
        if (i and lines[i] < lines[i - 1]) or (order is not None and order[i] >= rows):
            raise ValueError("lines must be sorted, and order must index entries")
    cdef ct_txn* t = NULL
    cdef unsigned int dbi = 0
    why = _check(txn, db, &t, &dbi)
    if why is not None:
        raise RuntimeError(f"the native index writer cannot write here: {why}")
    cdef const ct_engine* api = t.libv
    cdef void* handle = t.txn
    cdef int rc
    cdef const uint32_t* by = &order[0] if order is not None and n else NULL
    with nogil:
        rc = _write(api, handle, dbi, lines, entries, by, keep)
    t.mutations += 1      # py-lmdb's cursors on this transaction re-read their position
    if rc == -1:
        raise MemoryError("no memory for a line's entries")
    if rc != 0:
        raise NativeLmdbError(rc, api.strerror_fn(rc).decode("utf-8", "replace"))
    return n


class NativeLmdbError(Exception):
    """An LMDB error from the native writer or read: args are (code, LMDB's message)."""


cdef enum:
    RADIX_MAX_BITS = 12
    RADIX_MAX = 1 << RADIX_MAX_BITS


cdef int _radix(const uint64_t* keys, Py_ssize_t n, uint64_t* out, uint32_t* order,
                uint64_t* tmp, uint32_t* tmp_order) noexcept nogil:
    """LSD radix sort of keys (stable), over only the bits that differ between keys (packed
    numbers share their high bits), in passes of at most 12 bits. The result is in out and
    order; -1 if memory ran out."""
    cdef Py_ssize_t i
    cdef uint64_t k, differ = 0
    for i in range(1, n):
        differ |= keys[i] ^ keys[0]
    cdef int top = 0, low = 0
    while top < 64 and (differ >> top) != 0:
        top += 1
    while low < top and not (differ >> low) & 1:
        low += 1
    cdef int passes = (top - low + RADIX_MAX_BITS - 1) // RADIX_MAX_BITS
    cdef int bits = (top - low + passes - 1) // passes if passes else 0
    cdef uint64_t mask = (<uint64_t>1 << bits) - 1
    cdef size_t* counts = <size_t*>calloc(max(passes, 1) * RADIX_MAX, sizeof(size_t))
    if counts == NULL:
        return -1
    cdef int p, shift
    cdef size_t total, c, d, radix = <size_t>1 << bits
    for i in range(n):
        k = keys[i]
        for p in range(passes):
            counts[p * RADIX_MAX + ((k >> (low + p * bits)) & mask)] += 1
    cdef const uint64_t* src = keys
    cdef const uint32_t* src_order = NULL
    cdef uint64_t* dst
    cdef uint32_t* dst_order
    cdef size_t* bucket
    cdef bint into_out = True
    for p in range(passes):
        shift = low + p * bits
        bucket = counts + p * RADIX_MAX
        total = 0
        for c in range(radix):      # counts -> each digit's first slot
            total, bucket[c] = total + bucket[c], total
        dst, dst_order = (out, order) if into_out else (tmp, tmp_order)
        for i in range(n):
            k = src[i]
            d = (k >> shift) & mask
            c = bucket[d]
            bucket[d] = c + 1
            dst[c] = k
            dst_order[c] = src_order[i] if src_order != NULL else <uint32_t>i
        src, src_order = dst, dst_order
        into_out = not into_out
    free(counts)
    if src_order == NULL:       # every key the same (or none): already in order
        for i in range(n):
            out[i] = keys[i]
            order[i] = <uint32_t>i
    elif src != out:
        memcpy(out, src, n * sizeof(uint64_t))
        memcpy(order, src_order, n * sizeof(uint32_t))
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
def line_order(const uint64_t[::1] lines not None):
    """(sorted lines, order) with sorted[j] == lines[order[j]], stable: an LSD radix sort
    in C with the GIL released (argsort and take cost several times more)."""
    import numpy as np
    cdef Py_ssize_t n = lines.shape[0]
    if n >= 1 << 32:
        raise ValueError("at most 2**32 - 1 pairs at once")
    out = np.empty(n, np.uint64)
    order = np.empty(n, np.uint32)
    tmp = np.empty(n, np.uint64)
    tmp_order = np.empty(n, np.uint32)
    cdef uint64_t[::1] o = out, t = tmp
    cdef uint32_t[::1] oo = order, to = tmp_order
    cdef int rc = 0
    if n:
        with nogil:
            rc = _radix(&lines[0], n, &o[0], &oo[0], &t[0], &to[0])
    if rc != 0:
        raise MemoryError("line_order: no memory for the radix counts")
    return out, order


# --- The trace's read: a line's stored value in a read transaction begun and ended in C ---
#
# py-lmdb's own read (env.begin(), get, the transaction's end) costs a trace most of a
# microsecond in Python objects. This reads through the same engine table, holding the GIL
# from the transaction's start to its end: py-lmdb remaps the environment (set_mapsize)
# only while it holds the GIL, so no remap can come between. Each call checks that the
# environment is open, its engine one py-lmdb exports and the database its own; where the
# environment keeps its LMDB handle is checked once per process (the handle names its
# path), as that layout is the py-lmdb build's.
cdef bint _env_layout_checked = False
ctypedef int (*ct_get_path)(void* env, const char** path) noexcept nogil


cdef str _check_env(object env, object db, ct_env** e_out, unsigned int* dbi_out):
    global _env_layout_checked
    why = _py_lmdb(db, env, False)
    if why is not None:
        return why
    cdef ct_env* e = <ct_env*><PyObject*>env
    cdef ct_db* d = <ct_db*><PyObject*>db
    if not _known(e.libv) or not e.h.valid or e.env == NULL:
        return "the environment is closed, or its engine is not one py-lmdb exports"
    if d.env != <PyObject*>env or not d.h.valid:
        return "the database is not of this environment"
    cdef const char* path = NULL
    if not _env_layout_checked:    # the layout is py-lmdb's build's: checked once
        if (<ct_get_path>e.libv.env_fns[CT_ENV_GET_PATH])(e.env, &path) != 0 or path == NULL \
                or path.decode("utf-8", "surrogateescape") != env.path():
            return "the environment's LMDB handle is not where expected"
        _env_layout_checked = True
    e_out[0] = e
    dbi_out[0] = d.dbi
    return None


def read_value(env, db, bytes key not None):
    """The value stored under key in db (bytes, or None), read in a read transaction of
    its own; NativeLmdbError (code, message) for an LMDB error (a map grown by another
    process: the caller reads the slow way). RuntimeError if env cannot be read so."""
    cdef ct_env* e = NULL
    cdef unsigned int dbi = 0
    why = _check_env(env, db, &e, &dbi)
    if why is not None:
        raise RuntimeError(f"the native read cannot read here: {why}")
    cdef const ct_engine* api = e.libv
    cdef void* txn = NULL
    cdef ct_val k, v
    cdef int rc = api.txn_begin(e.env, NULL, CT_TXN_RDONLY, &txn)
    if rc != 0:
        raise NativeLmdbError(rc, api.strerror_fn(rc).decode("utf-8", "replace"))
    k.mv_size, k.mv_data = PyBytes_GET_SIZE(key), PyBytes_AS_STRING(key)
    rc = api.get(txn, dbi, &k, &v)
    if rc == 0:
        value = PyBytes_FromStringAndSize(<const char*>v.mv_data, v.mv_size)
    api.txn_abort(txn)
    if rc == 0:
        return value
    if rc == CT_NOTFOUND:
        return None
    raise NativeLmdbError(rc, api.strerror_fn(rc).decode("utf-8", "replace"))


# --- A transaction's reads and writes through the engine table, holding the GIL ---
#
# A py-lmdb get or put costs 1.2-1.7 us (BENCHMARKS.md), most of it around LMDB's own work:
# parsing its keywords, and letting the interpreter lock go and taking it back (py-lmdb 3
# does at every call, and under load another thread then runs while the caller waits to
# have it back). A trace's evidence makes a dozen such calls in its commit. Txn makes the
# same calls into the same py-lmdb transaction through the engine table, keeping the lock:
# a call is LMDB's work and a bytes object. The transaction and each database are checked
# as the native writer checks them; each call checks again that both are still valid, so a
# committed or aborted transaction raises as py-lmdb's would.
cdef dict _ERROR_NAMES = {
    -30799: "KeyExistsError", -30798: "NotFoundError", -30797: "PageNotFoundError",
    -30796: "CorruptedError", -30795: "PanicError", -30794: "VersionMismatchError",
    -30793: "InvalidError", -30792: "MapFullError", -30791: "DbsFullError",
    -30790: "ReadersFullError", -30789: "TlsFullError", -30788: "TxnFullError",
    -30787: "CursorFullError", -30786: "PageFullError", -30785: "MapResizedError",
    -30784: "IncompatibleError", -30783: "BadRslotError", -30782: "BadTxnError",
    -30781: "BadValsizeError", -30780: "BadDbiError"}


cdef object _lmdb_error(const ct_engine* api, str what, int rc):
    """py-lmdb's exception for an LMDB code (lmdb.MapFullError for MDB_MAP_FULL, ...)."""
    import lmdb
    cls = getattr(lmdb, _ERROR_NAMES.get(rc, "Error"), lmdb.Error)
    return cls(f"{what}: {api.strerror_fn(rc).decode('utf-8', 'replace')}")


cdef inline bint _past(const ct_val* k, const char* end, size_t end_size) noexcept nogil:
    """Whether key k is at or past end (bytes order, as LMDB's)."""
    cdef size_t n = k.mv_size if k.mv_size < end_size else end_size
    cdef int c = memcmp(k.mv_data, end, n)
    return c > 0 or (c == 0 and k.mv_size >= end_size)


cdef inline bint _may_ring(const ct_val* k, const ct_val* v, uint64_t line,
                           uint64_t call_id) noexcept nogil:
    """Whether a store's `hunts` entry (key k: feed, start, call id, big-endian; value v: a
    16-byte head, then members of 8 bytes each, little-endian) is of another call than
    call_id and lists no member, or line."""
    cdef const uint8_t* p = <const uint8_t*>k.mv_data
    cdef uint64_t note = 0, member
    cdef size_t j, members
    cdef int b
    if k.mv_size < 18 or v.mv_size < 16:
        return False
    for b in range(10, 18):
        note = (note << 8) | p[b]
    if note == call_id:
        return False
    members = (v.mv_size - 16) // 8
    p = <const uint8_t*>v.mv_data + 16
    for j in range(members):
        member = 0
        for b in range(7, -1, -1):
            member = (member << 8) | p[8 * j + b]
        if member == line:
            return True
    return members == 0


cdef class Txn:
    """get, put and ordered reads of a py-lmdb transaction (a read-only one: all but put),
    get and put called as py-lmdb's are (`get(key, default, db=)`, `put(key, value, db=,
    append=)`), in C with the GIL held. Txn(txn, db) raises RuntimeError, saying why, where py-lmdb is
    not laid out as expected (the caller then uses txn itself)."""
    cdef object txn             # held: its struct is read at every call
    cdef ct_txn* t
    cdef const ct_engine* api

    def __cinit__(self, txn, db):
        cdef ct_txn* t = NULL
        cdef unsigned int dbi = 0
        why = _check(txn, db, &t, &dbi, False)
        if why is not None:
            raise RuntimeError(f"the native transaction cannot work here: {why}")
        self.txn, self.t, self.api = txn, t, t.libv

    cdef unsigned int _dbi(self, object db) except? 0:
        """db's handle, once db and the transaction are checked still valid."""
        cdef ct_txn* t = self.t
        if not t.h.valid or t.txn == NULL:
            import lmdb
            raise lmdb.Error("Attempt to operate on closed/deleted/dropped object.")
        cdef PyObject* d = t.db if db is None else <PyObject*>db
        if Py_TYPE(d) is not Py_TYPE(t.db) or (<ct_db*>d).env != t.env \
                or not (<ct_db*>d).h.valid:
            raise TypeError("db is not an open database of the transaction's environment")
        return (<ct_db*>d).dbi

    def get(self, bytes key not None, default=None, db=None):
        """The value under key (bytes), or default."""
        cdef unsigned int dbi = self._dbi(db)
        cdef ct_val k, v
        k.mv_size, k.mv_data = PyBytes_GET_SIZE(key), PyBytes_AS_STRING(key)
        cdef int rc = self.api.get(self.t.txn, dbi, &k, &v)
        if rc == 0:
            return PyBytes_FromStringAndSize(<const char*>v.mv_data, v.mv_size)
        if rc == CT_NOTFOUND:
            return default
        raise _lmdb_error(self.api, "mdb_get", rc)

    def put(self, bytes key not None, bytes value not None, db=None, bint append=False):
        """Store value under key: True, or False where append finds key not past the last
        (py-lmdb's answer)."""
        cdef unsigned int dbi = self._dbi(db)
        cdef ct_val k, v
        k.mv_size, k.mv_data = PyBytes_GET_SIZE(key), PyBytes_AS_STRING(key)
        v.mv_size, v.mv_data = PyBytes_GET_SIZE(value), PyBytes_AS_STRING(value)
        cdef int rc = self.api.put(self.t.txn, dbi, &k, &v, CT_APPEND if append else 0)
        self.t.mutations += 1     # py-lmdb's cursors on this transaction re-read their position
        if rc == 0:
            return True
        if rc == CT_KEYEXIST and append:
            return False
        raise _lmdb_error(self.api, "mdb_put", rc)

    cdef object _key_at(self, object db, bytes key, int op):
        """The key a cursor on db finds by op (from key, if given): bytes, or None."""
        cdef unsigned int dbi = self._dbi(db)
        cdef void* cursor = NULL
        cdef ct_val k, v
        cdef int rc = self.api.cursor_open(self.t.txn, dbi, &cursor)
        if rc != 0:
            raise _lmdb_error(self.api, "mdb_cursor_open", rc)
        if key is not None:
            k.mv_size, k.mv_data = PyBytes_GET_SIZE(key), PyBytes_AS_STRING(key)
        rc = self.api.cursor_get(cursor, &k, &v, op)
        if rc == 0:
            found = PyBytes_FromStringAndSize(<const char*>k.mv_data, k.mv_size)
        self.api.cursor_close(cursor)
        if rc == 0:
            return found
        if rc == CT_NOTFOUND:
            return None
        raise _lmdb_error(self.api, "mdb_cursor_get", rc)

    def last_key(self, db=None):
        """The last key of db (bytes), or None if it is empty."""
        return self._key_at(db, None, CT_LAST)

    def next_key(self, bytes key not None, db=None):
        """The first key of db at or past key (bytes), or None."""
        return self._key_at(db, key, CT_SET_RANGE if PyBytes_GET_SIZE(key) else CT_FIRST)

    def next_hunt(self, bytes start not None, bytes stop not None, uint64_t line,
                  uint64_t call_id, db=None):
        """The first (key, value) of db, a store's `hunts` (store.hunts: a key of feed, start
        and call id, big-endian; a value of a 16-byte head, then members of 8 bytes each,
        little-endian), with start <= key < stop, that is not of the call call_id and may
        have rung line (it lists no member, or lists line); None if there is none. Read in
        C, no object made for the calls passed over."""
        return self._scan(start, stop, db, True, line, call_id)

    def range(self, bytes start not None, bytes stop not None, db=None):
        """[(key, value)] of db with start <= key < stop (bytes order, as LMDB's), in order."""
        return self._scan(start, stop, db, False, 0, 0)

    cdef object _scan(self, bytes start, bytes stop, db, bint first_hunt, uint64_t line,
                      uint64_t call_id):
        """range's pairs; with first_hunt, next_hunt's pair (or None)."""
        cdef unsigned int dbi = self._dbi(db)
        cdef void* cursor = NULL
        cdef ct_val k, v
        cdef const char* end = PyBytes_AS_STRING(stop)
        cdef size_t end_size = PyBytes_GET_SIZE(stop)
        cdef int rc = self.api.cursor_open(self.t.txn, dbi, &cursor)
        if rc != 0:
            raise _lmdb_error(self.api, "mdb_cursor_open", rc)
        found = []
        try:
            k.mv_size, k.mv_data = PyBytes_GET_SIZE(start), PyBytes_AS_STRING(start)
            rc = self.api.cursor_get(cursor, &k, &v, CT_SET_RANGE if k.mv_size else CT_FIRST)
            while rc == 0:
                if _past(&k, end, end_size):
                    break
                if not first_hunt or _may_ring(&k, &v, line, call_id):
                    pair = (PyBytes_FromStringAndSize(<const char*>k.mv_data, k.mv_size),
                            PyBytes_FromStringAndSize(<const char*>v.mv_data, v.mv_size))
                    if first_hunt:
                        return pair
                    found.append(pair)
                rc = self.api.cursor_get(cursor, &k, &v, CT_NEXT)
        finally:
            self.api.cursor_close(cursor)
        if rc != 0 and rc != CT_NOTFOUND:
            raise _lmdb_error(self.api, "mdb_cursor_get", rc)
        return None if first_hunt else found
