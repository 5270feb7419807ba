/* A loopback load generator for the trace service, in C so that the clients cost the
 * shared cores as little as possible: CLIENTS concurrent clients, each doing traces back
 * to back until COUNT traces are done, over FastAGI (a new connection per trace, as
 * Asterisk's AGI() does) or HTTP/1.1 (one keep-alive connection per client, POST
 * /v1/trace). Prints one JSON object: traces, seconds, p50/p99/max latency, outcomes.
 *
 *     load agi   PORT CLIENTS COUNT LINES_FILE AT
 *     load http  PORT CLIENTS COUNT LINES_FILE AT TOKEN
 *     load https PORT CLIENTS COUNT LINES_FILE AT TOKEN    (built with -DLOAD_TLS, linked
 *                with OpenSSL: HTTP over TLS, each connection's handshake made before the
 *                clock starts; the service's certificate is not checked)
 *
 * LINES_FILE holds one line number per line; trace i uses line i modulo their count.
 * Any protocol surprise (a reply that is not 200, a trace without COT_OUTCOME) stops the
 * run with exit 1 and says what it saw.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef LOAD_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

#define BUF 8192
#define MAX_CLIENTS 1024

enum { AGI, HTTP };
static const char *OUTCOMES[] = {"success", "untraceable", "no_call", "already_traced",
                                 "pending", "failure"};
#define N_OUTCOMES 6

struct client {
    int fd, line, outcome;
    double started;
    char in[BUF];
    size_t have;
#ifdef LOAD_TLS
    SSL *ssl;                   /* https: the connection's session */
#endif
};

static int tls;                 /* https: HTTP over TLS */
#ifdef LOAD_TLS
static SSL_CTX *tls_ctx;
#endif
static int mode, port, clients, count, n_lines, started_traces, done_traces, epfd;
static char **lines;
static const char *at, *token;
static double *latency;
static long outcomes[N_OUTCOMES];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(const char *what, const char *seen) {
    fprintf(stderr, "load: %s%s%.200s\n", what, seen ? ": " : "", seen ? seen : "");
    exit(1);
}

static void send_all(struct client *c, const char *data, size_t len) {
    /* small requests on loopback: a blocking-until-sent loop is enough */
    while (len > 0) {
        ssize_t n;
#ifdef LOAD_TLS
        if (tls) {
            int w = SSL_write(c->ssl, data, (int)len), e;
            if (w <= 0) {
                e = SSL_get_error(c->ssl, w);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) continue;
                fail("SSL_write failed", ERR_error_string(ERR_get_error(), NULL));
            }
            n = w;
        } else
#endif
        n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            fail("send failed", strerror(errno));
        }
        data += n;
        len -= (size_t)n;
    }
}

/* what the connection has for the client: > 0 bytes, 0 closed, -1 none yet */
static ssize_t receive(struct client *c, char *into, size_t room) {
#ifdef LOAD_TLS
    if (tls) {
        int got = SSL_read(c->ssl, into, (int)room), e;
        if (got > 0) return got;
        e = SSL_get_error(c->ssl, got);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return -1;
        if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL) return 0;
        fail("SSL_read failed", ERR_error_string(ERR_get_error(), NULL));
    }
#endif
    ssize_t got = recv(c->fd, into, room, 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return -1;
    if (got < 0 && errno != ECONNRESET) fail("recv", strerror(errno));
    return got < 0 ? 0 : got;
}

static void connect_one(struct client *c) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0) fail("socket", strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) fail("connect", strerror(errno));
#ifdef LOAD_TLS
    if (tls) {                          /* the handshake, blocking, before any request */
        c->ssl = SSL_new(tls_ctx);
        if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1 || SSL_connect(c->ssl) != 1)
            fail("TLS handshake failed", ERR_error_string(ERR_get_error(), NULL));
    }
#endif
    fcntl(fd, F_SETFL, O_NONBLOCK);
    c->fd = fd;
}

static void watch(struct client *c) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) fail("epoll_ctl", strerror(errno));
}

/* the next trace on this client, if any are left; 0 when none */
static int begin(struct client *c) {
    char request[1024];
    int n;
    if (started_traces >= count) return 0;
    c->line = started_traces++ % n_lines;
    c->outcome = -1;
    c->have = 0;
    c->started = now();
    if (mode == AGI) {
        connect_one(c);
        watch(c);
        /* every variable res_agi's setup_env sends, in its order (Asterisk 20) */
        n = snprintf(request, sizeof request,
                     "agi_network: yes\nagi_network_script: trace\n"
                     "agi_request: agi://127.0.0.1/trace\nagi_channel: PJSIP/303-%08x\n"
                     "agi_language: en\nagi_type: PJSIP\nagi_uniqueid: 1772496000.%d\n"
                     "agi_version: 20.5.0\nagi_callerid: %s\nagi_calleridname: unknown\n"
                     "agi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\n"
                     "agi_callingtns: 0\nagi_dnid: *57\nagi_rdnis: unknown\n"
                     "agi_context: from-subscribers\nagi_extension: *57\nagi_priority: 2\n"
                     "agi_enhanced: 0.0\nagi_accountcode: \nagi_threadid: 140230412343872\n"
                     "agi_arg_1: %s\n\n", (unsigned)c->line, c->line, lines[c->line], at);
    } else {
        char body[256];
        int len = snprintf(body, sizeof body, "{\"line\":\"%s\",\"at\":\"%s\"}", lines[c->line], at);
        n = snprintf(request, sizeof request,
                     "POST /v1/trace HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                     token, len, body);
    }
    send_all(c, request, (size_t)n);
    return 1;
}

static int outcome_of(const char *text) {
    for (int i = 0; i < N_OUTCOMES; i++)
        if (strncmp(text, OUTCOMES[i], strlen(OUTCOMES[i])) == 0 &&
            (text[strlen(OUTCOMES[i])] == '"')) return i;
    return -1;
}

static void finish(struct client *c) {
    if (c->outcome < 0) fail("a trace ended without an outcome", c->in);
    latency[done_traces++] = now() - c->started;
    outcomes[c->outcome]++;
}

/* FastAGI: answer each command line with 200; the trace ends when the service hangs up */
static void agi_input(struct client *c, int closed) {
    char *start = c->in, *end;
    while ((end = memchr(start, '\n', c->have - (size_t)(start - c->in))) != NULL) {
        *end = '\0';
        if (strncmp(start, "SET VARIABLE COT_OUTCOME \"", 26) == 0) c->outcome = outcome_of(start + 26);
        send_all(c, "200 result=1\n", 13);
        start = end + 1;
    }
    c->have -= (size_t)(start - c->in);
    memmove(c->in, start, c->have);
    if (closed) {
        close(c->fd);   /* also leaves the epoll set */
        finish(c);
        begin(c);
    }
}

/* HTTP: a response is complete once its headers and Content-Length bytes are in */
static void http_input(struct client *c, int closed) {
    char *head_end, *length, *found;
    size_t head, body;
    c->in[c->have] = '\0';
    if (closed) fail("the service closed a keep-alive connection", c->in);
    head_end = strstr(c->in, "\r\n\r\n");
    if (head_end == NULL) return;
    head = (size_t)(head_end - c->in) + 4;
    length = strcasestr(c->in, "content-length:");
    if (length == NULL || length > head_end) fail("a response without Content-Length", c->in);
    body = (size_t)strtoul(length + 15, NULL, 10);
    if (c->have < head + body) return;
    if (strncmp(c->in, "HTTP/1.1 200", 12) != 0) fail("a response that is not 200", c->in);
    found = strstr(head_end, "\"outcome\":");
    if (found != NULL) {
        found += 10;
        while (*found == ' ') found++;
    }
    c->outcome = found && *found == '"' ? outcome_of(found + 1) : -1;
    finish(c);
    c->have -= head + body;
    memmove(c->in, c->in + head + body, c->have);
    if (!begin(c)) {
        close(c->fd);
        c->fd = -1;                     /* done: nothing more to read */
    }
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    char text[256];
    FILE *f;
    struct client *all;
    struct epoll_event events[256];
    double t0, seconds;
    if (argc < 7 || (strcmp(argv[1], "agi") && strcmp(argv[1], "http") &&
                     strcmp(argv[1], "https")) || (strcmp(argv[1], "agi") && argc < 8)) {
        fprintf(stderr, "usage: load agi|http|https PORT CLIENTS COUNT LINES_FILE AT [TOKEN]\n");
        return 2;
    }
    mode = strcmp(argv[1], "agi") == 0 ? AGI : HTTP;
    tls = strcmp(argv[1], "https") == 0;
#ifdef LOAD_TLS
    if (tls && (tls_ctx = SSL_CTX_new(TLS_client_method())) == NULL)
        fail("SSL_CTX_new failed", ERR_error_string(ERR_get_error(), NULL));
#else
    if (tls) fail("https needs load built with -DLOAD_TLS and OpenSSL", NULL);
#endif
    port = atoi(argv[2]);
    clients = atoi(argv[3]);
    count = atoi(argv[4]);
    at = argv[6];
    token = argc > 7 ? argv[7] : "";
    if (clients < 1 || clients > MAX_CLIENTS || count < 1) fail("bad CLIENTS or COUNT", NULL);
    if ((f = fopen(argv[5], "r")) == NULL) fail("cannot read the lines file", argv[5]);
    lines = malloc(sizeof(char *) * 1000000);
    while (n_lines < 1000000 && fgets(text, sizeof text, f)) {
        text[strcspn(text, "\r\n")] = '\0';
        if (text[0]) lines[n_lines++] = strdup(text);
    }
    fclose(f);
    if (n_lines == 0) fail("no lines in the lines file", argv[5]);
    latency = malloc(sizeof(double) * (size_t)count);
    all = calloc((size_t)clients, sizeof *all);
    epfd = epoll_create1(0);
    t0 = now();
    for (int i = 0; i < clients; i++) {
        if (mode == HTTP) {
            connect_one(&all[i]);
            watch(&all[i]);
        }
    }
    if (tls) t0 = now();                /* the handshakes are not the traces' */
    for (int i = 0; i < clients; i++) begin(&all[i]);
    while (done_traces < count) {
        int n = epoll_wait(epfd, events, 256, 30000);
        if (n == 0) fail("no answer for 30 s", NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            struct client *c = events[i].data.ptr;
            ssize_t got;
            /* TLS may hold decrypted bytes the socket no longer shows: read until none */
            while ((got = receive(c, c->in + c->have, BUF - 1 - c->have)) != -1) {
                if (got > 0) c->have += (size_t)got;
                if (c->have >= BUF - 1) fail("an answer over 8 KiB", c->in);
                (mode == AGI ? agi_input : http_input)(c, got == 0);
                if (got == 0 || !tls || c->fd < 0 || done_traces >= count) break;
            }
        }
    }
    seconds = now() - t0;
    qsort(latency, (size_t)count, sizeof(double), by_value);
    printf("{\"traces\": %d, \"seconds\": %.6f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
           "\"max_ms\": %.3f", count, seconds, latency[count / 2] * 1000,
           latency[(int)(count * 0.99)] * 1000, latency[count - 1] * 1000);
    for (int i = 0; i < N_OUTCOMES; i++) printf(", \"%s\": %ld", OUTCOMES[i], outcomes[i]);
    printf("}\n");
    return 0;
}
