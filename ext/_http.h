/* HTTP mode of the exchange thread (_agi.h): the switches' `POST /v1/trace` in C, on
 * kept-alive connections; everything else handed to Python's HTTP server (uvicorn).
 *
 * A connection's bytes are read into its buffer. A request whose head is exactly what a
 * switch sends (`POST /v1/trace HTTP/1.1`, each line ending CRLF, header names tokens,
 * values without control bytes, one Content-Length within HTTP_MAX_BODY, no
 * Transfer-Encoding, Expect or Upgrade, no Connection close or upgrade) is read to the
 * end of its body and posted to Python with its body, its Authorization value and
 * whether it was forwarded by another shard (X-Cdrtrace-Forwarded). Python answers with
 * a status and a JSON body, written here with the Date, type and length headers; or with
 * status 0, when the body or token is not as a switch sends them. Then, as for any
 * other request, the connection is handed off: its descriptor and every byte read and
 * not yet answered are posted to Python, which serves the connection from then on, the
 * request included (its documented errors). A head past HTTP_MAX_HEAD is handed off too
 * (Python answers 400), and so is a connection accepted past the bound on connections
 * (Python answers 503 past its own).
 *
 * Requests pipelined behind a trace wait in the buffer, in order; past HTTP_MAX_KEPT
 * bytes the connection is not read until the answer has gone. An answer the peer is slow
 * to take is sent before the next request is read (so what is kept for a connection is
 * bounded: TCP pushes back on a peer that sends and does not read). Once the listener
 * stops accepting (a shutdown), idle connections are closed at once and each other is
 * closed after its answer, which says `connection: close`.
 */
#ifndef CDRTRACE_HTTP_H
#define CDRTRACE_HTTP_H

#include <stdio.h>

#define HTTP_MAX_HEAD (16 << 10)         /* bytes of request line and headers */
#define HTTP_MAX_BODY (64 << 10)         /* bytes of a body */
#define HTTP_MAX_KEPT ((size_t)HTTP_MAX_HEAD + HTTP_MAX_BODY)   /* read beyond a trace */

/* An RFC 9110 token character. */
static int http_tchar(unsigned char ch) {
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return 1;
    return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static unsigned char http_lower(unsigned char ch) {
    return (ch >= 'A' && ch <= 'Z') ? (unsigned char)(ch + 32) : ch;
}

/* A header name (length n) is `lower`, whatever its case. */
static int http_named(const char *name, int n, const char *lower) {
    if ((size_t)n != strlen(lower)) return 0;
    for (int i = 0; i < n; i++)
        if (http_lower((unsigned char)name[i]) != (unsigned char)lower[i]) return 0;
    return 1;
}

/* A value (length n) holds `lower` somewhere, whatever its case. */
static int http_holds(const char *value, int n, const char *lower) {
    int k = (int)strlen(lower);
    for (int at = 0; at + k <= n; at++) {
        int i = 0;
        while (i < k && http_lower((unsigned char)value[at + i]) == (unsigned char)lower[i]) i++;
        if (i == k) return 1;
    }
    return 0;
}

static char *http_copy(const char *data, int length) {
    char *copy = malloc(length > 0 ? (size_t)length : 1);
    if (copy != NULL && length > 0) memcpy(copy, data, (size_t)length);
    return copy;
}

/* Hand the connection to Python: its descriptor and what was read and not answered; its
 * slot is freed, the descriptor left open. (Nothing is being sent: a request is read only
 * once the answer before it has gone.) */
static void http_hand_off(agi_server *s, int slot) {
    agi_conn *c = &s->conns[slot];
    agi_event e;
    agi_event_of(c, agi_id(s, slot), AGI_HANDOFF, AGI_OK, &e);
    epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    e.fd = c->fd;
    c->fd = -1;
    if (c->in_length > 0) {
        e.values[0] = c->in;
        e.lengths[0] = (int)c->in_length;
        c->in = NULL;
    }
    agi_release(s, c);
    agi_post(s, &e);
}

/* The request in the buffer, while the connection is reading one and the last answer has
 * gone: a trace posted, or the connection handed off. 0, or -1 once it is no longer this
 * thread's. */
static int http_parse(agi_server *s, int slot) {
    agi_conn *c = &s->conns[slot];
    if (c->state != ST_VARIABLES || c->in_length == 0 || c->out != NULL) return 0;
    const char *in = c->in;
    size_t n = c->in_length, limit = n < HTTP_MAX_HEAD ? n : HTTP_MAX_HEAD;
    size_t at = 0, head = 0;
    const char *authorization = NULL, *forwarded = NULL;
    int authorization_length = 0, forwarded_length = 0, lines = 0;
    long length = -1;
    for (;;) {
        const char *lf = memchr(in + at, '\n', limit - at);
        if (lf == NULL) {
            if (n >= HTTP_MAX_HEAD) goto usual;          /* past the bound: Python's 400 */
            return 0;                                    /* more to come */
        }
        size_t end = (size_t)(lf - in);
        if (end == at || in[end - 1] != '\r') goto usual;    /* a bare LF */
        const char *line = in + at;
        int text = (int)(end - 1 - at);
        at = end + 1;
        if (lines++ == 0) {
            if (text != 23 || memcmp(line, "POST /v1/trace HTTP/1.1", 23) != 0) goto usual;
            continue;
        }
        if (text == 0) { head = at; break; }
        int colon = 0;
        while (colon < text && http_tchar((unsigned char)line[colon])) colon++;
        if (colon == 0 || colon == text || line[colon] != ':') goto usual;
        int from = colon + 1, to = text;
        while (from < to && (line[from] == ' ' || line[from] == '\t')) from++;
        while (to > from && (line[to - 1] == ' ' || line[to - 1] == '\t')) to--;
        for (int i = from; i < to; i++) {
            unsigned char ch = (unsigned char)line[i];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) goto usual;
        }
        const char *value = line + from;
        int size = to - from;
        if (http_named(line, colon, "content-length")) {
            if (length >= 0 || size == 0 || size > 9) goto usual;
            length = 0;
            for (int i = 0; i < size; i++) {
                if (value[i] < '0' || value[i] > '9') goto usual;
                length = length * 10 + (value[i] - '0');
            }
            if (length > HTTP_MAX_BODY) goto usual;      /* Python's 413 */
        } else if (http_named(line, colon, "authorization")) {
            if (authorization != NULL) goto usual;
            authorization = value;
            authorization_length = size;
        } else if (http_named(line, colon, "x-cdrtrace-forwarded")) {
            forwarded = value;
            forwarded_length = size;
        } else if (http_named(line, colon, "transfer-encoding") ||
                   http_named(line, colon, "expect") || http_named(line, colon, "upgrade")) {
            goto usual;
        } else if (http_named(line, colon, "connection") &&
                   (http_holds(value, size, "close") || http_holds(value, size, "upgrade"))) {
            goto usual;
        }
    }
    if (length < 0) goto usual;
    if (n < head + (size_t)length) return 0;             /* the body is still coming */
    agi_event e;
    agi_event_of(c, agi_id(s, slot), AGI_REQUEST, AGI_OK, &e);
    e.values[0] = http_copy(in + head, (int)length);
    e.lengths[0] = (int)length;
    if (authorization != NULL) {
        e.values[1] = http_copy(authorization, authorization_length);
        e.lengths[1] = authorization_length;
    }
    if (forwarded != NULL) {
        e.values[2] = http_copy(forwarded, forwarded_length);
        e.lengths[2] = forwarded_length;
    }
    if (e.values[0] == NULL || (authorization && e.values[1] == NULL) ||
            (forwarded && e.values[2] == NULL)) {
        for (int i = 0; i < AGI_VALUES; i++) free(e.values[i]);
        agi_close(s, slot, AGI_HUNG_UP, NULL, 0);        /* no memory */
        return -1;
    }
    c->request_length = head + (size_t)length;
    c->request_started = agi_now();
    c->state = ST_TRACING;
    c->tracing_since = c->request_started;
    agi_post(s, &e);
    return 0;
usual:
    http_hand_off(s, slot);
    return -1;
}

/* Bytes read: kept, then the requests they complete. 0, or -1 once it is closed. */
static int http_bytes(agi_server *s, int slot, const char *data, size_t length) {
    agi_conn *c = &s->conns[slot];
    if (c->in_length + length > c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap : 4096;
        while (cap < c->in_length + length) cap *= 2;
        char *grown = realloc(c->in, cap);
        if (grown == NULL) { agi_close(s, slot, AGI_HUNG_UP, NULL, 0); return -1; }
        c->in = grown;
        c->in_cap = cap;
    }
    memcpy(c->in + c->in_length, data, length);
    c->in_length += length;
    if (c->state == ST_TRACING) {                         /* pipelined: kept, in order */
        if (c->in_length - c->request_length >= HTTP_MAX_KEPT)
            agi_watch(s, slot, 0);                        /* read again once answered */
        return 0;
    }
    return http_parse(s, slot);
}

/* All that was being sent has gone: closed, or the next request read. */
static void http_sent(agi_server *s, int slot) {
    agi_conn *c = &s->conns[slot];
    if (c->close_after) {
        agi_close(s, slot, AGI_ENDED, NULL, 0);
        return;
    }
    agi_watch(s, slot, EPOLLIN);
    http_parse(s, slot);
}

static const char *http_phrase(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 421: return "Misdirected Request";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

/* The Date header's value now (RFC 9110's IMF-fixdate, in English whatever the locale). */
static const char *http_date(agi_server *s) {
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul",
                                       "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != s->date_second) {
        struct tm t;
        gmtime_r(&now, &t);
        snprintf(s->date, sizeof s->date, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[t.tm_wday % 7], t.tm_mday, months[t.tm_mon % 12], t.tm_year + 1900,
                 t.tm_hour, t.tm_min, t.tm_sec);
        s->date_second = now;
    }
    return s->date;
}

/* Python's answer to the request traced: written (then the next request read), or the
 * connection handed off (status 0). The answer's body becomes the connection's. */
static void http_answer(agi_server *s, int slot, agi_answer *answer) {
    agi_conn *c = &s->conns[slot];
    c->state = ST_VARIABLES;
    if (answer->status == 0) {                           /* Python serves it, from this request */
        free(answer->commands);
        free(c->log);
        c->log = NULL;
        http_hand_off(s, slot);
        return;
    }
    char head[256];
    int close_after = s->draining;
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\ndate: %s\r\ncontent-type: application/json\r\n"
                     "content-length: %zu\r\n%s\r\n", answer->status, http_phrase(answer->status),
                     http_date(s), answer->length, close_after ? "connection: close\r\n" : "");
    size_t total = (size_t)n + answer->length;
    char *whole = malloc(total);
    double now = agi_now();
    agi_event e;
    agi_event_of(c, agi_id(s, slot), AGI_DONE, answer->status, &e);
    e.seconds = now - c->request_started;
    e.logged = agi_log(s, c, e.seconds);
    if (whole == NULL) {
        free(answer->commands);
        agi_close(s, slot, AGI_HUNG_UP, NULL, 0);
        return;
    }
    memcpy(whole, head, (size_t)n);
    memcpy(whole + n, answer->commands, answer->length);
    free(answer->commands);
    int closed = agi_send(s, slot, whole, total) < 0;
    free(whole);
    if (closed) return;
    if (answer->outcome >= 0) agi_count(s, answer->outcome, e.seconds);
    if (!(answer->outcome >= 0 && e.logged)) agi_post(s, &e);   /* else nothing for Python */
    memmove(c->in, c->in + c->request_length, c->in_length - c->request_length);
    c->in_length -= c->request_length;
    c->request_length = 0;
    c->waiting_since = now;
    if (close_after) {
        c->close_after = 1;
        if (c->out == NULL) agi_close(s, slot, AGI_ENDED, NULL, 0);
        return;
    }
    if (c->out != NULL) {                 /* the rest of it first (http_sent reads on) */
        agi_watch(s, slot, EPOLLOUT);
        return;
    }
    agi_watch(s, slot, EPOLLIN);
    http_parse(s, slot);
}

/* The listener has stopped accepting: idle connections close now, the others once
 * answered. */
static void http_drain(agi_server *s) {
    s->draining = 1;
    for (int slot = 0; slot < s->max_conns; slot++) {
        agi_conn *c = &s->conns[slot];
        if (c->state != ST_VARIABLES) continue;
        if (c->in_length == 0 && c->out == NULL) agi_close(s, slot, AGI_ENDED, NULL, 0);
        else if (c->in_length == 0) c->close_after = 1;
    }
}

#endif
