# cython: boundscheck=False, wraparound=False
"""The wire exchanges in C on their own thread: FastAGI (ext/_agi.h), the private module
behind cdrtrace.service.agi_native, whose pure-Python reference is cdrtrace.service.agi;
and HTTP's switch traces (ext/_http.h), behind cdrtrace.service.http_native, whose
reference is cdrtrace.service.protocol."""
from libc.errno cimport errno
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from posix.unistd cimport close

cdef extern from "_agi.h" nogil:
    int AGI_VALUES
    int AGI_REQUEST, AGI_DONE, AGI_CLOSED, AGI_REFUSED, AGI_HANDOFF
    int AGI_UNANSWERED, AGI_SLOW, AGI_TWICE
    enum: AGI_OUTCOMES, AGI_BOUNDS   # C constants: the arrays below are sized by them
    int HTTP_MAX_HEAD, HTTP_MAX_BODY
    ctypedef struct agi_network:
        int family
        unsigned char address[16]
        int prefix
    ctypedef struct agi_event:
        int kind
        int reason
        uint64_t conn
        double seconds
        int port
        char host[46]
        char *values[6]       # AGI_VALUES
        int lengths[6]
        char detail[240]
        int detail_length
        int fd
        int logged
    ctypedef struct agi_server:
        pass
    agi_server *agi_create(int listen_fd, const agi_network *networks, int n_networks,
                           int max_conns, double timeout, double answer_timeout,
                           const int *cores, int n_cores, int http)
    int agi_start(agi_server *s)
    agi_event *agi_take(agi_server *s, int *count)
    int agi_respond(agi_server *s, uint64_t conn, const char *commands, size_t length,
                    int status, const char *log, size_t log_length, int log_fd, int outcome)
    int agi_bucket(const double *bounds, int n, double seconds)
    void agi_set_bounds(agi_server *s, const double *bounds, int n)
    void agi_metrics(agi_server *s, uint64_t *counts, double *counted_since,
                     uint64_t *buckets, double *seconds_sum, double *timed_since)
    void agi_stop_accepting(agi_server *s)
    int agi_wakeup_fd(agi_server *s)
    int agi_open_connections(agi_server *s)
    void agi_destroy(agi_server *s)

REQUEST, DONE, CLOSED, REFUSED, HANDOFF = (AGI_REQUEST, AGI_DONE, AGI_CLOSED, AGI_REFUSED,
                                           AGI_HANDOFF)
MAX_HEAD, MAX_BODY = HTTP_MAX_HEAD, HTTP_MAX_BODY
UNANSWERED = AGI_UNANSWERED         # a CLOSED reason: no answer within answer_timeout
SLOW = AGI_SLOW                     # a CLOSED reason: some of what was awaited came, not all
TWICE = AGI_TWICE                   # a CLOSED reason: a variable a trace reads sent twice
OUTCOMES, BOUNDS = AGI_OUTCOMES, AGI_BOUNDS   # what the metrics count at most (Server.metrics)


cdef int _bounds_into(bounds, double *out) except -1:
    """Copy the latency histogram's bounds (ascending, at most BOUNDS): how many."""
    cdef int n = len(bounds), i
    if n > AGI_BOUNDS or list(bounds) != sorted(bounds):
        raise ValueError(f"bounds: at most {AGI_BOUNDS}, ascending")
    for i in range(n):
        out[i] = bounds[i]
    return n


def bucket(bounds, double seconds):
    """The bucket the C thread counts a latency in: the index of the first bound not below
    it, len(bounds) past them all (bisect.bisect_left's; bounds ascending, at most
    BOUNDS of them)."""
    cdef double b[AGI_BOUNDS]
    cdef int n = _bounds_into(bounds, b)
    return agi_bucket(b, n, seconds)


cdef class Server:
    """The exchange over a bound, listening, non-blocking socket (still the caller's).
    networks: (family, packed address, prefix length) of the peers served (FastAGI); timeout:
    seconds a peer may be silent while a request or a reply is awaited; answer_timeout:
    seconds a request may wait for respond() before its connection is closed (CLOSED,
    reason 11); cores: where its thread may run (empty: where the caller's may); http:
    HTTP's switch traces rather than FastAGI; bounds: the upper bounds of the latency
    histogram metrics() gives (ascending, at most BOUNDS). Events come back through take()
    once wakeup_fd is readable."""
    cdef agi_server *s

    def __init__(self, int fd, networks, int max_connections, double timeout,
                 double answer_timeout=60.0, cores=(), bint http=False, bounds=()):
        if self.s != NULL:
            raise ValueError("the FastAGI listener is started already")
        cdef int n = len(networks), i, n_cores = len(cores)
        cdef double bound_values[AGI_BOUNDS]
        cdef int n_bounds = _bounds_into(bounds, bound_values)
        cdef agi_network *nets = <agi_network *>malloc(sizeof(agi_network) * (n if n else 1))
        cdef int *on = <int *>malloc(sizeof(int) * (n_cores if n_cores else 1))
        if nets == NULL or on == NULL:
            free(nets)
            free(on)
            raise MemoryError()
        memset(nets, 0, sizeof(agi_network) * (n if n else 1))
        try:
            for i, (family, packed, prefix) in enumerate(networks):
                if len(packed) > 16:
                    raise ValueError(f"not an address: {packed!r}")
                nets[i].family = family
                memcpy(nets[i].address, <const char *>packed, len(packed))
                nets[i].prefix = prefix
            for i, core in enumerate(cores):
                on[i] = core
            with nogil:
                self.s = agi_create(fd, nets, n, max_connections, timeout, answer_timeout, on,
                                    n_cores, http)
        finally:
            free(nets)
            free(on)
        if self.s == NULL:
            raise OSError(errno, "cannot start the FastAGI listener")
        agi_set_bounds(self.s, bound_values, n_bounds)
        if agi_start(self.s) != 0:
            agi_destroy(self.s)
            self.s = NULL
            raise OSError("cannot start the FastAGI listener's thread")

    @property
    def wakeup_fd(self):
        self._check()
        return agi_wakeup_fd(self.s)

    cdef _check(self):
        if self.s == NULL:
            raise ValueError("the FastAGI listener is closed")

    def take(self):
        """[(kind, conn, reason, seconds, host, port, extra)]. extra: a request's values,
        each bytes or None: FastAGI's (callerid, arg_1, network_script, request,
        uniqueid, arg_2), HTTP's (body, authorization, forwarded, None, None, None); a
        refusal's detail, the offending line's start (bytes) or None; a hand-off's
        (descriptor, bytes read), the descriptor the caller's to close; a done request's,
        True if its log line was written (respond's log), else None. HTTP's DONE has the
        answer's status as its reason."""
        self._check()
        cdef int count = 0, i, v
        cdef agi_event *events
        cdef agi_event *e
        # with the interpreter lock held: agi_take only reads a non-blocking eventfd and
        # takes a mutex the C thread holds for a moment and never with that lock; letting
        # the lock go costs more, as the other Python thread then takes it (and the same
        # for agi_respond)
        events = agi_take(self.s, &count)
        taken = []
        try:
            for i in range(count):
                e = &events[i]
                if e.kind == AGI_REQUEST:
                    extra = tuple(None if e.values[v] == NULL else e.values[v][:e.lengths[v]]
                                  for v in range(AGI_VALUES))
                elif e.kind == AGI_HANDOFF:
                    extra = (e.fd, e.values[0][:e.lengths[0]] if e.values[0] != NULL else b"")
                    e.fd = -1                   # the caller's now
                elif e.kind == AGI_DONE:
                    extra = True if e.logged else None
                else:
                    extra = e.detail[:e.detail_length] if e.detail_length else None
                taken.append((e.kind, e.conn, e.reason, e.seconds,
                              e.host.decode("ascii"), e.port, extra))
        finally:
            for i in range(count):
                for v in range(AGI_VALUES):
                    free(events[i].values[v])
                if events[i].fd >= 0:           # a hand-off not returned (an error above)
                    close(events[i].fd)
            free(events)
        return taken

    def respond(self, uint64_t conn, bytes commands, int status=0, bytes log=None,
                int log_fd=-1, int outcome=-1):
        """FastAGI: the commands to send a connection that traced (each ending with a
        newline), one at a time; none: it is closed. HTTP: the answer's JSON body and
        status; status 0: the connection is handed off (HANDOFF), this request with it.
        log: the request's log line from after its time to before its duration, written
        to log_fd once the request is done. outcome: the trace's (0 to OUTCOMES - 1, or -1),
        counted with its latency once the request is done (metrics()); a request both
        logged and counted here posts no DONE event."""
        self._check()
        cdef const char *data = commands
        cdef size_t length = len(commands)
        cdef const char *line = NULL
        cdef size_t line_length = 0
        cdef int failed
        if log is not None:
            line = log
            line_length = len(log)
        if outcome >= AGI_OUTCOMES:
            raise ValueError(f"outcome: at most {AGI_OUTCOMES - 1}")
        failed = agi_respond(self.s, conn, data, length, status, line, line_length, log_fd,
                             outcome)
        if failed:
            raise MemoryError()

    def metrics(self):
        """What respond's outcomes counted: ([count per outcome], [since when per outcome,
        epoch seconds, 0 if none], [count per bucket: one per bound, then past them all],
        the latencies' sum, since when the first was counted)."""
        self._check()
        cdef uint64_t counts[AGI_OUTCOMES]
        cdef double since[AGI_OUTCOMES]
        cdef uint64_t buckets[AGI_BOUNDS + 1]
        cdef double total = 0, timed = 0
        agi_metrics(self.s, counts, since, buckets, &total, &timed)
        return ([counts[i] for i in range(AGI_OUTCOMES)], [since[i] for i in range(AGI_OUTCOMES)],
                [buckets[i] for i in range(AGI_BOUNDS + 1)], total, timed)

    def stop_accepting(self):
        self._check()
        with nogil:
            agi_stop_accepting(self.s)

    def open_connections(self):
        self._check()
        return agi_open_connections(self.s)

    def close(self):
        """Stop the thread; close every connection still open."""
        if self.s != NULL:
            with nogil:
                agi_destroy(self.s)
            self.s = NULL

    def __dealloc__(self):
        if self.s != NULL:
            with nogil:
                agi_destroy(self.s)
            self.s = NULL
