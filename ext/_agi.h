/* The FastAGI wire exchange in C, on its own thread: cdrtrace.service.agi's Peer and
 * handle, without Python per line.
 *
 * One thread runs an epoll loop over the listening socket and its connections. It reads
 * each connection's agi_* block as Asterisk's res_agi writes it (a variable per line, a
 * blank line to end them), keeps the four variables a trace needs, and posts a request
 * to Python. Python traces and answers with the commands to send; the thread sends them
 * one at a time, each after Asterisk's reply to the one before (200, 511 on a dead
 * channel, 520 with or without its usage text, HANGUP lines skipped), then closes the
 * connection and posts that it is done. Every refusal (a network not allowed, too many
 * connections, a line over MAX_LINE, too many variables, a line that is not a variable,
 * no variables, a silent or slow peer, a hang-up, an unexpected reply) closes the
 * connection and is posted with its reason. A peer has `timeout` seconds for its whole
 * variable block from its connection, and for each whole reply from its command's
 * sending: bytes trickled in do not extend them (a peer sending a byte every few seconds
 * would otherwise hold its connection, one of a bounded number, for hours). The thread
 * never touches a Python object.
 *
 * Two queues under one mutex carry the posts (thread -> Python: events) and the answers
 * (Python -> thread); each side is woken through an eventfd, written only when the queue
 * turns non-empty.
 *
 * An answer may carry its request's log line, all but its time and duration, and the
 * descriptor to write it to: once the request is done, the thread writes the line (the
 * time as the logging module's asctime, the duration after it) with the others of its
 * round, in one write, and posts the done event marked as logged.
 *
 * The same thread, started in HTTP mode, serves the switches' `POST /v1/trace` instead
 * (_http.h): the accepting, queues, sends, timeouts and shutdown here are shared; what
 * a connection's bytes mean is _http.h's.
 */
#ifndef CDRTRACE_AGI_H
#define CDRTRACE_AGI_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE                      /* pthread_setaffinity_np, pthread_setname_np */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define AGI_MAX_LINE 4096            /* bytes a line may have, without its newline */
#define AGI_MAX_VARIABLES 128        /* agi_ variable lines before the blank one */
#define AGI_DETAIL 240               /* bytes of an offending line posted with its refusal */
#define AGI_OUTCOMES 8               /* trace outcomes the metrics count (agi_count) */
#define AGI_BOUNDS 16                /* bounds of the latency histogram, at most */
#define AGI_READ 65536
/* what a peer may send while its trace runs: as many lines as a block may have */
#define AGI_MAX_PENDING ((size_t)(AGI_MAX_VARIABLES + 1) * (AGI_MAX_LINE + 1))

enum agi_event_kind {
    AGI_REQUEST = 1, AGI_DONE = 2, AGI_CLOSED = 3, AGI_REFUSED = 4,
    AGI_HANDOFF = 5                  /* HTTP: a connection for Python to serve (fd, bytes read) */
};
enum agi_reason {
    AGI_OK = 0, AGI_LONG_LINE, AGI_TOO_MANY, AGI_NOT_VARIABLE, AGI_NO_VARIABLES,
    AGI_SILENT, AGI_HUNG_UP, AGI_UNEXPECTED, AGI_NOT_ALLOWED, AGI_FULL,
    AGI_ENDED,                       /* HTTP: closed here once answered (a shutdown) */
    AGI_UNANSWERED,                  /* Python gave no answer within answer_timeout */
    AGI_SLOW,                        /* bytes came, but not all awaited within the timeout */
    AGI_TWICE                        /* a variable a trace reads sent twice (a value that
                                      * held a line break: Asterisk writes each once) */
};
enum agi_value { AGI_CALLERID = 0, AGI_ARG_1, AGI_SCRIPT, AGI_REQUEST_URL, AGI_UNIQUEID,
                 AGI_ARG_2, AGI_VALUES };
static const char *const AGI_NAMES[AGI_VALUES] = {
    "agi_callerid", "agi_arg_1", "agi_network_script", "agi_request", "agi_uniqueid",
    "agi_arg_2"};

enum agi_state { ST_FREE = 0, ST_VARIABLES, ST_TRACING, ST_REPLY, ST_CLOSED };

typedef struct {
    int family;                      /* AF_INET or AF_INET6 */
    unsigned char address[16];
    int prefix;
} agi_network;

typedef struct {
    int kind;
    int reason;
    uint64_t conn;
    double seconds;                  /* since the connection was accepted */
    int port;
    char host[INET6_ADDRSTRLEN];
    char *values[AGI_VALUES];        /* a request's variables (NULL: not sent); owned */
    int lengths[AGI_VALUES];
    char detail[AGI_DETAIL];         /* the offending line, for a refusal */
    int detail_length;
    int fd;                          /* a hand-off's connection, Python's from then on; else -1 */
    int logged;                      /* a done request's log line was written here */
} agi_event;

typedef struct {
    uint64_t conn;
    char *commands;                  /* each ends with a newline (HTTP: the body); owned */
    size_t length;
    int status;                      /* HTTP: the answer's status; 0 to hand the connection off */
    char *log;                       /* the log line, from after its time to before " in"; owned */
    size_t log_length;
    int log_fd;
    int outcome;                     /* the trace's outcome, counted once done (agi_count); -1 */
} agi_answer;

typedef struct {
    int fd;
    int state;
    uint32_t watching;               /* the epoll events asked for it now */
    uint32_t generation;
    double started;
    double waiting_since;            /* when the wait for what is awaited now began: the
                                      * connection, a command sent; HTTP: a request's first
                                      * byte, or the last answer's sending */
    int heard;                       /* bytes came since waiting_since: slow, not silent */
    double tracing_since;            /* when its request went to Python */
    int variables;
    int in_usage;                    /* inside a 520 reply's usage text */
    char line[AGI_MAX_LINE + 1];
    int line_length;
    char *values[AGI_VALUES];
    int lengths[AGI_VALUES];
    char *pending;                   /* what came after the blank line, for the replies */
    size_t pending_length;
    char *commands;                  /* the commands still to send */
    size_t commands_length, command_at;
    char *out;                       /* a command partly sent */
    size_t out_length, out_at;
    int port;
    char host[INET6_ADDRSTRLEN];
    /* HTTP (_http.h) */
    char *in;                        /* bytes read and not yet answered */
    size_t in_length, in_cap;
    size_t request_length;           /* of them, the request being traced */
    double request_started;          /* when it was complete */
    int close_after;                 /* closed once what is being sent has gone */
    char *log;                       /* its answer's log line (agi_answer's), once done */
    size_t log_length;
    int log_fd;
    int outcome;                     /* its answer's outcome (agi_answer's) */
} agi_conn;

typedef struct {
    int listen_fd, epoll_fd, to_python, to_thread;
    agi_network *networks;
    int n_networks;
    agi_conn *conns;
    int max_conns, open;
    double timeout;
    double answer_timeout;           /* a request Python has not answered by then is closed */
    pthread_t thread;
    int running, stopping, accepting, stop_accepting;
    double resume_at;                /* when to watch the listening socket again, if paused */
    cpu_set_t cores;                 /* where the thread may run (none given: as its creator) */
    int n_cores;
    pthread_mutex_t lock;
    agi_event *events;
    int n_events, cap_events, python_woken;
    int posted;                      /* the thread posted this round and has not woken Python */
    agi_answer *answers;
    int n_answers, cap_answers, thread_woken;
    int http;                        /* HTTP mode (_http.h) */
    int draining;                    /* HTTP: stopped accepting; each answered connection closes */
    time_t date_second;              /* HTTP: the second the Date header below is of */
    char date[40];
    char *lines;                     /* this round's log lines, written at its end */
    size_t lines_length, lines_cap;
    int lines_fd;
    /* the trace metrics of the requests answered with an outcome (agi_count), under lock */
    double bounds[AGI_BOUNDS];       /* the latency histogram's upper bounds, ascending */
    int n_bounds;
    uint64_t counts[AGI_OUTCOMES];
    double counted_since[AGI_OUTCOMES];    /* when each outcome was first counted (epoch s) */
    uint64_t buckets[AGI_BOUNDS + 1];      /* the last: past every bound */
    double seconds_sum, timed_since;
} agi_server;

/* HTTP mode's part (_http.h, included at the end) */
static int http_bytes(agi_server *s, int slot, const char *data, size_t length);
static void http_sent(agi_server *s, int slot);
static void http_answer(agi_server *s, int slot, agi_answer *answer);
static void http_drain(agi_server *s);

#define AGI_LISTEN_ID UINT64_MAX
#define AGI_WAKE_ID (UINT64_MAX - 1)

static double agi_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t agi_id(agi_server *s, int slot) {
    return ((uint64_t)s->conns[slot].generation << 32) | (uint32_t)slot;
}

static agi_conn *agi_lookup(agi_server *s, uint64_t id) {
    uint32_t slot = (uint32_t)id;
    if (slot >= (uint32_t)s->max_conns) return NULL;
    agi_conn *c = &s->conns[slot];
    if (c->state == ST_FREE || c->state == ST_CLOSED || c->generation != (uint32_t)(id >> 32))
        return NULL;
    return c;
}

static void agi_wake(int fd) {
    uint64_t one = 1;
    ssize_t n = write(fd, &one, sizeof one);
    (void)n;                           /* a full counter is already a wake-up */
}

/* Post an event to Python (the event's values become the queue's); Python is woken once
   the round of ready connections is done (agi_wake_python), not for each event. */
static void agi_post(agi_server *s, agi_event *event) {
    pthread_mutex_lock(&s->lock);
    if (s->n_events == s->cap_events) {
        int cap = s->cap_events ? s->cap_events * 2 : 256;
        agi_event *grown = realloc(s->events, (size_t)cap * sizeof *grown);
        if (grown == NULL) {           /* no memory: the event is lost, not the process */
            pthread_mutex_unlock(&s->lock);
            for (int i = 0; i < AGI_VALUES; i++) free(event->values[i]);
            if (event->fd >= 0) close(event->fd);
            return;
        }
        s->events = grown;
        s->cap_events = cap;
    }
    s->events[s->n_events++] = *event;
    pthread_mutex_unlock(&s->lock);
    s->posted = 1;
}

/* After a round: wake Python for what it posted, unless Python has not taken the last. */
static void agi_wake_python(agi_server *s) {
    if (!s->posted) return;
    s->posted = 0;
    pthread_mutex_lock(&s->lock);
    int wake = !s->python_woken;
    s->python_woken = 1;
    pthread_mutex_unlock(&s->lock);
    if (wake) agi_wake(s->to_python);
}

static void agi_event_of(agi_conn *c, uint64_t id, int kind, int reason, agi_event *e) {
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->reason = reason;
    e->conn = id;
    e->seconds = agi_now() - c->started;
    e->port = c->port;
    memcpy(e->host, c->host, sizeof e->host);
    e->fd = -1;
}

/* Write the round's log lines (a write that fails loses them, not the service). */
static void agi_write_lines(agi_server *s) {
    size_t at = 0;
    while (at < s->lines_length) {
        ssize_t n = write(s->lines_fd, s->lines + at, s->lines_length - at);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        at += (size_t)n;
    }
    s->lines_length = 0;
}

/* A done request's log line, kept for the round's write: its time as the logging
 * module's asctime (local time, milliseconds), the line, then " in D ms". 1 if written. */
static int agi_log(agi_server *s, agi_conn *c, double seconds) {
    if (c->log == NULL) return 0;
    if (s->lines_length > 0 && s->lines_fd != c->log_fd) agi_write_lines(s);
    size_t need = s->lines_length + c->log_length + 64;
    if (need > s->lines_cap) {
        size_t cap = s->lines_cap ? s->lines_cap : 8192;
        while (cap < need) cap *= 2;
        char *grown = realloc(s->lines, cap);
        if (grown == NULL) return 0;
        s->lines = grown;
        s->lines_cap = cap;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm t;
    localtime_r(&now.tv_sec, &t);
    char *at = s->lines + s->lines_length;
    size_t n = strftime(at, 32, "%Y-%m-%d %H:%M:%S", &t);
    n += (size_t)snprintf(at + n, 8, ",%03d", (int)(now.tv_nsec / 1000000));
    memcpy(at + n, c->log, c->log_length);
    n += c->log_length;
    double ms = seconds * 1000;
    if (!(ms >= 0)) ms = 0;
    if (ms > 1e12) ms = 1e12;                           /* within the 64 bytes kept for it */
    n += (size_t)snprintf(at + n, 32, " in %.1f ms\n", ms);
    s->lines_length += n;
    s->lines_fd = c->log_fd;
    free(c->log);
    c->log = NULL;
    return 1;
}

/* The bucket of a latency: the first bound not below it, as bisect_left places it (and
 * prometheus_client's Histogram); n past every bound. */
static int agi_bucket(const double *bounds, int n, double seconds) {
    int b = 0;
    while (b < n && bounds[b] < seconds) b++;
    return b;
}

/* A request answered with an outcome, done: counted for the metrics (agi_metrics), so
 * that Python need not hear of it once its log line is written too. */
static void agi_count(agi_server *s, int outcome, double seconds) {
    if (outcome < 0 || outcome >= AGI_OUTCOMES) return;
    int b = agi_bucket(s->bounds, s->n_bounds, seconds);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double epoch = (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
    pthread_mutex_lock(&s->lock);
    if (s->counts[outcome]++ == 0) s->counted_since[outcome] = epoch;
    if (s->timed_since == 0) s->timed_since = epoch;
    s->buckets[b]++;
    s->seconds_sum += seconds;
    pthread_mutex_unlock(&s->lock);
}

/* Free a connection's slot, and close it unless it was handed off (fd -1). */
static void agi_release(agi_server *s, agi_conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    for (int i = 0; i < AGI_VALUES; i++) { free(c->values[i]); c->values[i] = NULL; }
    free(c->pending); c->pending = NULL;
    free(c->commands); c->commands = NULL;
    free(c->out); c->out = NULL;
    free(c->in); c->in = NULL;
    c->in_length = c->in_cap = 0;
    free(c->log); c->log = NULL;
    c->outcome = -1;
    c->state = ST_FREE;
    c->generation++;
    __atomic_sub_fetch(&s->open, 1, __ATOMIC_RELAXED);
}

/* Close a connection: done (reason AGI_OK) or refused for a reason, with the line that
 * was refused, if any. */
static void agi_close(agi_server *s, int slot, int reason, const char *line, int length) {
    agi_conn *c = &s->conns[slot];
    agi_event e;
    int counted = 0;
    agi_event_of(c, agi_id(s, slot), reason == AGI_OK ? AGI_DONE : AGI_CLOSED, reason, &e);
    if (reason == AGI_OK) {
        e.logged = agi_log(s, c, e.seconds);
        if (c->outcome >= 0) {
            agi_count(s, c->outcome, e.seconds);
            counted = 1;
        }
    }
    if (line != NULL) {
        e.detail_length = length < AGI_DETAIL ? length : AGI_DETAIL;
        memcpy(e.detail, line, (size_t)e.detail_length);
    }
    agi_release(s, c);
    if (counted && e.logged) return;     /* logged and counted: nothing left for Python */
    agi_post(s, &e);
}

/* Ask epoll for these events of a connection (no call when they are those asked already). */
static int agi_watch(agi_server *s, int slot, uint32_t events) {
    if (s->conns[slot].watching == events) return 0;
    s->conns[slot].watching = events;
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = agi_id(s, slot);
    return epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, s->conns[slot].fd, &ev);
}

/* Send bytes after any still going, keeping what cannot go yet; 0, or -1 once the
 * connection is closed. */
static int agi_send(agi_server *s, int slot, const char *start, size_t length) {
    agi_conn *c = &s->conns[slot];
    if (c->out != NULL) {                  /* the last one still going (a reply came early) */
        char *grown = realloc(c->out, c->out_length + length);
        if (grown == NULL) { agi_close(s, slot, AGI_HUNG_UP, NULL, 0); return -1; }
        memcpy(grown + c->out_length, start, length);
        c->out = grown;
        c->out_length += length;
        return 0;
    }
    ssize_t sent = send(c->fd, start, length, MSG_NOSIGNAL);
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) sent = 0;
    if (sent < 0) {
        agi_close(s, slot, AGI_HUNG_UP, NULL, 0);
        return -1;
    }
    if ((size_t)sent < length) {                         /* the rest when it can go */
        c->out_length = length - (size_t)sent;
        c->out = malloc(c->out_length);
        if (c->out == NULL) { agi_close(s, slot, AGI_HUNG_UP, NULL, 0); return -1; }
        memcpy(c->out, start + sent, c->out_length);
        c->out_at = 0;
        agi_watch(s, slot, EPOLLIN | EPOLLOUT);
    }
    return 0;
}

/* Send the next command; 0, or -1 once the connection is closed. */
static int agi_send_next(agi_server *s, int slot) {
    agi_conn *c = &s->conns[slot];
    if (c->command_at >= c->commands_length) {          /* all answered: done */
        agi_close(s, slot, AGI_OK, NULL, 0);
        return -1;
    }
    const char *start = c->commands + c->command_at;
    const char *end = memchr(start, '\n', c->commands_length - c->command_at);
    size_t length = end ? (size_t)(end - start) + 1 : c->commands_length - c->command_at;
    c->command_at += length;
    c->state = ST_REPLY;
    c->in_usage = 0;
    c->waiting_since = agi_now();
    c->heard = 0;
    return agi_send(s, slot, start, length);
}

/* A command Asterisk did not carry out (a dead channel, an error): no more are sent. */
static int agi_send_stop(agi_server *s, int slot) {
    agi_close(s, slot, AGI_OK, NULL, 0);
    return -1;
}

static int agi_starts(const char *line, int length, const char *prefix) {
    int n = (int)strlen(prefix);
    return length >= n && memcmp(line, prefix, (size_t)n) == 0;
}

/* One complete line (without its newline); 0, or -1 once the connection is closed. */
static int agi_line(agi_server *s, int slot, const char *line, int length) {
    agi_conn *c = &s->conns[slot];
    int text = length;                                   /* without trailing CRs */
    while (text > 0 && line[text - 1] == '\r') text--;
    if (c->state == ST_VARIABLES) {
        if (text == 0) {
            if (c->variables == 0) {
                agi_close(s, slot, AGI_NO_VARIABLES, NULL, 0);
                return -1;
            }
            agi_event e;
            agi_event_of(c, agi_id(s, slot), AGI_REQUEST, AGI_OK, &e);
            for (int i = 0; i < AGI_VALUES; i++) {
                e.values[i] = c->values[i];
                e.lengths[i] = c->lengths[i];
                c->values[i] = NULL;
            }
            c->state = ST_TRACING;                       /* what comes now is kept (agi_bytes) */
            c->tracing_since = agi_now();
            agi_post(s, &e);
            return 1;
        }
        if (++c->variables > AGI_MAX_VARIABLES) {
            agi_close(s, slot, AGI_TOO_MANY, NULL, 0);
            return -1;
        }
        const char *colon = memchr(line, ':', (size_t)text);
        if (colon == NULL || !agi_starts(line, (int)(colon - line), "agi_")) {
            agi_close(s, slot, AGI_NOT_VARIABLE, line, length);
            return -1;
        }
        int name = (int)(colon - line);
        while (name > 0 && (line[name - 1] == ' ' || line[name - 1] == '\t')) name--;
        for (int i = 0; i < AGI_VALUES; i++) {
            if ((int)strlen(AGI_NAMES[i]) != name || memcmp(line, AGI_NAMES[i], (size_t)name))
                continue;
            if (c->values[i] != NULL) {                  /* never from Asterisk: refused */
                agi_close(s, slot, AGI_TWICE, line, name);
                return -1;
            }
            int value = text - (int)(colon + 1 - line);  /* Python strips it */
            char *copy = malloc((size_t)value + 1);
            if (copy == NULL) { agi_close(s, slot, AGI_HUNG_UP, NULL, 0); return -1; }
            memcpy(copy, colon + 1, (size_t)value);
            c->values[i] = copy;
            c->lengths[i] = value;
        }
        return 0;
    }
    if (c->state != ST_REPLY) return 0;
    if (c->in_usage) {                                   /* 520-...: up to "520 ..." */
        if (agi_starts(line, text, "520 ")) return agi_send_stop(s, slot);
        return 0;
    }
    if (text == 6 && memcmp(line, "HANGUP", 6) == 0) return 0;    /* a reply follows */
    if (agi_starts(line, text, "200")) return agi_send_next(s, slot);
    if (agi_starts(line, text, "511")) return agi_send_stop(s, slot);
    if (agi_starts(line, text, "520-")) { c->in_usage = 1; return 0; }
    if (agi_starts(line, text, "520")) return agi_send_stop(s, slot);
    agi_close(s, slot, AGI_UNEXPECTED, line, length);
    return -1;
}

/* Bytes read from a connection: its lines. 0, or -1 once it is closed. While it traces,
 * what is left is kept for the replies. */
static int agi_bytes(agi_server *s, int slot, const char *data, size_t length) {
    if (s->http) return http_bytes(s, slot, data, length);
    agi_conn *c = &s->conns[slot];
    size_t at = 0;
    while (at < length) {
        if (c->state == ST_TRACING) {                    /* kept, in order, for later */
            if (c->pending_length + (length - at) > AGI_MAX_PENDING) {  /* as the lines' bound */
                agi_close(s, slot, AGI_TOO_MANY, NULL, 0);
                return -1;
            }
            char *grown = realloc(c->pending, c->pending_length + (length - at));
            if (grown == NULL) { agi_close(s, slot, AGI_HUNG_UP, NULL, 0); return -1; }
            memcpy(grown + c->pending_length, data + at, length - at);
            c->pending = grown;
            c->pending_length += length - at;
            return 0;
        }
        const char *end = memchr(data + at, '\n', length - at);
        size_t part = end ? (size_t)(end - (data + at)) : length - at;
        if ((size_t)c->line_length + part > AGI_MAX_LINE) {
            agi_close(s, slot, AGI_LONG_LINE, NULL, 0);
            return -1;
        }
        memcpy(c->line + c->line_length, data + at, part);
        c->line_length += (int)part;
        at += part;
        if (end == NULL) break;
        at++;                                            /* the newline */
        int length_of_line = c->line_length;
        c->line_length = 0;
        if (agi_line(s, slot, c->line, length_of_line) < 0) return -1;
    }
    return 0;
}

static void agi_readable(agi_server *s, int slot) {
    agi_conn *c = &s->conns[slot];
    char data[AGI_READ];
    ssize_t got = recv(c->fd, data, sizeof data, 0);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (got <= 0) {                                      /* the peer hung up (or reset) */
        agi_close(s, slot, AGI_HUNG_UP, NULL, 0);
        return;
    }
    if (!s->http) c->heard = 1;
    else if (c->in_length == 0) c->waiting_since = agi_now();    /* a request begins */
    agi_bytes(s, slot, data, (size_t)got);
}

static void agi_writable(agi_server *s, int slot) {
    agi_conn *c = &s->conns[slot];
    if (c->out == NULL) return;
    ssize_t sent = send(c->fd, c->out + c->out_at, c->out_length - c->out_at, MSG_NOSIGNAL);
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (sent < 0) { agi_close(s, slot, AGI_HUNG_UP, NULL, 0); return; }
    c->out_at += (size_t)sent;
    if (c->out_at == c->out_length) {
        free(c->out);
        c->out = NULL;
        if (s->http) http_sent(s, slot);
        else agi_watch(s, slot, EPOLLIN);
    }
}

static int agi_allowed(agi_server *s, const struct sockaddr_storage *peer) {
    const unsigned char *address;
    int family = peer->ss_family, bytes;
    if (family == AF_INET) {
        address = (const unsigned char *)&((const struct sockaddr_in *)peer)->sin_addr;
        bytes = 4;
    } else if (family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)peer)->sin6_addr;
        address = (const unsigned char *)a6;
        bytes = 16;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {     /* an IPv4 peer of a dual-stack listener */
            address += 12;
            bytes = 4;
            family = AF_INET;
        }
    } else {
        return 0;
    }
    for (int n = 0; n < s->n_networks; n++) {
        const agi_network *net = &s->networks[n];
        if (net->family != family || net->prefix > bytes * 8) continue;
        int whole = net->prefix / 8, rest = net->prefix % 8;
        if (memcmp(address, net->address, (size_t)whole) != 0) continue;
        if (rest && ((address[whole] ^ net->address[whole]) & (0xFF << (8 - rest)) & 0xFF))
            continue;
        return 1;
    }
    return 0;
}

/* A peer's address as text, and its port. */
static void agi_peer(const struct sockaddr_storage *peer, char host[INET6_ADDRSTRLEN], int *port) {
    host[0] = 0;
    *port = 0;
    if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *p = (const struct sockaddr_in6 *)peer;
        inet_ntop(AF_INET6, &p->sin6_addr, host, INET6_ADDRSTRLEN);
        *port = ntohs(p->sin6_port);
    } else if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *p = (const struct sockaddr_in *)peer;
        inet_ntop(AF_INET, &p->sin_addr, host, INET6_ADDRSTRLEN);
        *port = ntohs(p->sin_port);
    }
}

/* A connection accepted and not served here, posted: refused (closed), or, in HTTP mode,
 * handed off as it came (its descriptor Python's). */
static void agi_unserved(agi_server *s, int fd, int reason, const struct sockaddr_storage *peer) {
    agi_event e;
    memset(&e, 0, sizeof e);
    e.kind = s->http ? AGI_HANDOFF : AGI_REFUSED;
    e.reason = reason;
    e.fd = -1;
    agi_peer(peer, e.host, &e.port);
    if (s->http) e.fd = fd;
    else close(fd);
    agi_post(s, &e);
}

static void agi_accept(agi_server *s) {
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t size = sizeof peer;
        int fd = accept4(s->listen_fd, (struct sockaddr *)&peer, &size,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of descriptors or memory: the listening socket would stay readable
                 * and spin this loop; it is watched again in 0.1 s */
                epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->listen_fd, NULL);
                s->accepting = 0;
                s->resume_at = agi_now() + 0.1;
            }
            return;                                     /* EAGAIN, ECONNABORTED, ... */
        }
        if (!s->http && !agi_allowed(s, &peer)) {
            agi_unserved(s, fd, AGI_NOT_ALLOWED, &peer);
            continue;
        }
        if (s->open >= s->max_conns) {   /* HTTP: for Python, which answers 503 past its bound */
            agi_unserved(s, fd, AGI_FULL, &peer);
            continue;
        }
        int slot = 0;
        while (s->conns[slot].state != ST_FREE) slot++;  /* open < max_conns: one is free */
        agi_conn *c = &s->conns[slot];
        c->fd = fd;
        c->state = ST_VARIABLES;
        c->variables = c->in_usage = c->line_length = 0;
        c->pending_length = c->commands_length = c->command_at = 0;
        c->out_length = c->out_at = 0;
        c->request_length = 0;
        c->outcome = -1;
        c->close_after = 0;
        for (int i = 0; i < AGI_VALUES; i++) c->lengths[i] = 0;
        c->started = c->waiting_since = agi_now();
        c->heard = 0;
        agi_peer(&peer, c->host, &c->port);
        __atomic_add_fetch(&s->open, 1, __ATOMIC_RELAXED);
        struct epoll_event ev;
        ev.events = c->watching = EPOLLIN;
        ev.data.u64 = agi_id(s, slot);
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
            agi_close(s, slot, AGI_HUNG_UP, NULL, 0);
    }
}

/* Python's answers: the commands for each connection that traced. */
static void agi_take_answers(agi_server *s) {
    uint64_t count;
    ssize_t n = read(s->to_thread, &count, sizeof count);
    (void)n;
    pthread_mutex_lock(&s->lock);
    agi_answer *answers = s->answers;
    int n_answers = s->n_answers;
    s->answers = NULL;
    s->n_answers = s->cap_answers = 0;
    s->thread_woken = 0;
    int stop_accepting = s->stop_accepting;
    pthread_mutex_unlock(&s->lock);
    if (stop_accepting && s->accepting) {
        epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->listen_fd, NULL);
        s->accepting = 0;
    }
    if (stop_accepting && s->http && !s->draining) http_drain(s);
    for (int i = 0; i < n_answers; i++) {
        agi_conn *c = agi_lookup(s, answers[i].conn);
        if (c == NULL || c->state != ST_TRACING) {
            free(answers[i].commands);
            free(answers[i].log);
            continue;
        }
        int slot = (int)(uint32_t)answers[i].conn;
        c->log = answers[i].log;
        c->log_length = answers[i].log_length;
        c->log_fd = answers[i].log_fd;
        if (s->http) { http_answer(s, slot, &answers[i]); continue; }   /* counts it there */
        c->outcome = answers[i].outcome;               /* counted once its exchange is over */
        c->commands = answers[i].commands;
        c->commands_length = answers[i].length;
        c->command_at = 0;
        if (agi_send_next(s, slot) < 0) continue;
        agi_watch(s, slot, c->out ? EPOLLIN | EPOLLOUT : EPOLLIN);
        if (c->pending != NULL) {                        /* replies that came early */
            char *pending = c->pending;
            size_t length = c->pending_length;
            c->pending = NULL;
            c->pending_length = 0;
            agi_bytes(s, slot, pending, length);
            free(pending);
        }
    }
    free(answers);
}

/* Close the connections that have not sent what we wait on within the timeout (silent,
 * or slow: some came, not all; HTTP: idle, or a request part-sent), and those whose
 * request Python has not answered within answer_timeout (a fault: no connection waits
 * for ever). */
static void agi_sweep(agi_server *s, double now) {
    for (int slot = 0; slot < s->max_conns; slot++) {
        agi_conn *c = &s->conns[slot];
        if ((c->state == ST_VARIABLES || c->state == ST_REPLY) &&
                now - c->waiting_since >= s->timeout)
            agi_close(s, slot, (s->http ? c->in_length > 0 && c->out == NULL : c->heard)
                               ? AGI_SLOW : AGI_SILENT, NULL, 0);   /* HTTP: not a slow reader */
        else if (c->state == ST_TRACING && now - c->tracing_since >= s->answer_timeout)
            agi_close(s, slot, AGI_UNANSWERED, NULL, 0);
    }
}

static void *agi_run(void *arg) {
    agi_server *s = arg;
    pthread_setname_np(pthread_self(), s->http ? "cdrtrace-http" : "cdrtrace-agi");
    if (s->n_cores > 0)              /* it holds no interpreter lock: --pin need not hold it */
        pthread_setaffinity_np(pthread_self(), sizeof s->cores, &s->cores);
    struct epoll_event ready[256];
    double swept = agi_now();
    while (!__atomic_load_n(&s->stopping, __ATOMIC_RELAXED)) {
        int n = epoll_wait(s->epoll_fd, ready, 256, 50);
        for (int i = 0; i < n; i++) {
            uint64_t id = ready[i].data.u64;
            if (id == AGI_LISTEN_ID) { if (s->accepting) agi_accept(s); continue; }
            if (id == AGI_WAKE_ID) { agi_take_answers(s); continue; }
            agi_conn *c = agi_lookup(s, id);
            if (c == NULL) continue;                     /* closed earlier in this round */
            int slot = (int)(uint32_t)id;
            if (ready[i].events & EPOLLOUT) agi_writable(s, slot);
            if (agi_lookup(s, id) == NULL) continue;
            if (ready[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) agi_readable(s, slot);
        }
        double now = agi_now();
        if (now - swept >= 0.05) {
            agi_sweep(s, now);
            swept = now;
            if (!s->accepting && s->resume_at > 0 && now >= s->resume_at) {
                pthread_mutex_lock(&s->lock);
                int stopped = s->stop_accepting;
                pthread_mutex_unlock(&s->lock);
                struct epoll_event ev;
                ev.events = EPOLLIN;
                ev.data.u64 = AGI_LISTEN_ID;
                if (!stopped && epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->listen_fd, &ev) == 0)
                    s->accepting = 1;
                s->resume_at = 0;
            }
        }
        if (s->lines_length > 0) agi_write_lines(s);
        agi_wake_python(s);             /* what this round posted (the sweep's closes too) */
    }
    return NULL;
}

/* ------------------------------------------------------------ what Python calls */

static void agi_free(agi_server *s) {
    if (s == NULL) return;
    if (s->conns != NULL)
        for (int slot = 0; slot < s->max_conns; slot++)
            if (s->conns[slot].state != ST_FREE) agi_release(s, &s->conns[slot]);
    for (int i = 0; i < s->n_events; i++) {
        for (int v = 0; v < AGI_VALUES; v++) free(s->events[i].values[v]);
        if (s->events[i].fd >= 0) close(s->events[i].fd);   /* a hand-off never taken */
    }
    for (int i = 0; i < s->n_answers; i++) {
        free(s->answers[i].commands);
        free(s->answers[i].log);
    }
    if (s->lines_length > 0) agi_write_lines(s);
    free(s->lines);
    if (s->epoll_fd >= 0) close(s->epoll_fd);
    if (s->to_python >= 0) close(s->to_python);
    if (s->to_thread >= 0) close(s->to_thread);
    pthread_mutex_destroy(&s->lock);
    free(s->events);
    free(s->answers);
    free(s->networks);
    free(s->conns);
    free(s);
}

/* A server over a bound, listening, non-blocking socket (still the caller's to close),
 * its thread to run on the cores given (none: where its creator may); NULL with errno set
 * when the system refuses what it needs. */
static agi_server *agi_create(int listen_fd, const agi_network *networks, int n_networks,
                              int max_conns, double timeout, double answer_timeout,
                              const int *cores, int n_cores, int http) {
    agi_server *s = calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    s->http = http;
    s->epoll_fd = s->to_python = s->to_thread = -1;
    tzset();                         /* localtime_r's zone, as the time module's */
    pthread_mutex_init(&s->lock, NULL);
    s->listen_fd = listen_fd;
    s->max_conns = max_conns;
    s->timeout = timeout;
    s->answer_timeout = answer_timeout;
    s->n_networks = n_networks;
    s->networks = malloc((size_t)(n_networks > 0 ? n_networks : 1) * sizeof *networks);
    s->conns = calloc((size_t)max_conns, sizeof *s->conns);
    s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    s->to_python = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->to_thread = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->networks == NULL || s->conns == NULL || s->epoll_fd < 0 || s->to_python < 0 ||
            s->to_thread < 0) {
        int saved = errno ? errno : ENOMEM;
        agi_free(s);
        errno = saved;
        return NULL;
    }
    if (n_networks > 0) memcpy(s->networks, networks, (size_t)n_networks * sizeof *networks);
    struct epoll_event ev;
    ev.events = EPOLLIN;
    ev.data.u64 = AGI_LISTEN_ID;
    int failed = epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev);
    ev.data.u64 = AGI_WAKE_ID;
    failed = failed || epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->to_thread, &ev);
    if (failed) {
        int saved = errno;
        agi_free(s);
        errno = saved;
        return NULL;
    }
    CPU_ZERO(&s->cores);
    for (int i = 0; i < n_cores; i++)
        if (cores[i] >= 0 && cores[i] < CPU_SETSIZE) {
            CPU_SET(cores[i], &s->cores);
            s->n_cores++;
        }
    s->accepting = 1;
    return s;
}

static int agi_start(agi_server *s) {
    int failed = pthread_create(&s->thread, NULL, agi_run, s);
    if (!failed) s->running = 1;
    return failed;
}

/* The events posted since the last call (the caller frees each's values, then the array). */
static agi_event *agi_take(agi_server *s, int *count) {
    uint64_t n;
    ssize_t got = read(s->to_python, &n, sizeof n);
    (void)got;
    pthread_mutex_lock(&s->lock);
    agi_event *events = s->events;
    *count = s->n_events;
    s->events = NULL;
    s->n_events = s->cap_events = 0;
    s->python_woken = 0;
    pthread_mutex_unlock(&s->lock);
    return events;
}

/* The commands for a connection that traced (copied); HTTP: the answer's status and body,
 * or status 0 to hand the connection off. log: its log line to write to log_fd once done
 * (copied; NULL: none). 0, or -1 without memory. */
static int agi_respond(agi_server *s, uint64_t conn, const char *commands, size_t length,
                       int status, const char *log, size_t log_length, int log_fd,
                       int outcome) {
    char *copy = malloc(length ? length : 1);
    char *line = log != NULL ? malloc(log_length ? log_length : 1) : NULL;
    if (copy == NULL || (log != NULL && line == NULL)) { free(copy); free(line); return -1; }
    memcpy(copy, commands, length);
    if (line != NULL) memcpy(line, log, log_length);
    int wake = 0;
    pthread_mutex_lock(&s->lock);
    if (s->n_answers == s->cap_answers) {
        int cap = s->cap_answers ? s->cap_answers * 2 : 64;
        agi_answer *grown = realloc(s->answers, (size_t)cap * sizeof *grown);
        if (grown == NULL) { pthread_mutex_unlock(&s->lock); free(copy); free(line); return -1; }
        s->answers = grown;
        s->cap_answers = cap;
    }
    s->answers[s->n_answers].conn = conn;
    s->answers[s->n_answers].commands = copy;
    s->answers[s->n_answers].length = length;
    s->answers[s->n_answers].status = status;
    s->answers[s->n_answers].log = line;
    s->answers[s->n_answers].log_length = log_length;
    s->answers[s->n_answers].log_fd = log_fd;
    s->answers[s->n_answers].outcome = outcome;
    s->n_answers++;
    if (!s->thread_woken) wake = s->thread_woken = 1;
    pthread_mutex_unlock(&s->lock);
    if (wake) agi_wake(s->to_thread);
    return 0;
}

/* No more connections are accepted (those open are served to their end). */
static void agi_stop_accepting(agi_server *s) {
    pthread_mutex_lock(&s->lock);
    s->stop_accepting = 1;
    int wake = !s->thread_woken;
    s->thread_woken = 1;
    pthread_mutex_unlock(&s->lock);
    if (wake) agi_wake(s->to_thread);
}

/* The latency histogram's bounds (ascending, at most AGI_BOUNDS), before agi_start. */
static void agi_set_bounds(agi_server *s, const double *bounds, int n) {
    s->n_bounds = n < AGI_BOUNDS ? n : AGI_BOUNDS;
    memcpy(s->bounds, bounds, (size_t)s->n_bounds * sizeof *bounds);
}

/* What agi_count has counted so far: per outcome, its count and since when; per bucket
 * (n_bounds + 1 of them), its count; the latencies' sum and since when. */
static void agi_metrics(agi_server *s, uint64_t *counts, double *counted_since,
                        uint64_t *buckets, double *seconds_sum, double *timed_since) {
    pthread_mutex_lock(&s->lock);
    memcpy(counts, s->counts, sizeof s->counts);
    memcpy(counted_since, s->counted_since, sizeof s->counted_since);
    memcpy(buckets, s->buckets, sizeof s->buckets);
    *seconds_sum = s->seconds_sum;
    *timed_since = s->timed_since;
    pthread_mutex_unlock(&s->lock);
}

static int agi_wakeup_fd(agi_server *s) {
    return s->to_python;
}

static int agi_open_connections(agi_server *s) {
    return __atomic_load_n(&s->open, __ATOMIC_RELAXED);
}

/* Stop the thread, close every connection, free everything. */
static void agi_destroy(agi_server *s) {
    if (s->running) {
        __atomic_store_n(&s->stopping, 1, __ATOMIC_RELAXED);
        agi_wake(s->to_thread);
        pthread_join(s->thread, NULL);
    }
    agi_free(s);
}

#include "_http.h"

#endif
