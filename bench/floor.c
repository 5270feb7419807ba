/* The floor under the trace service's rate on this machine: a responder in C that speaks
 * only the wire exchange of a trace and does no trace at all (no lookup, no evidence, no
 * commit). One thread, epoll, as lean as a server can be. Driven by bench/load.c with the
 * same clients as the real service, it measures what the loopback TCP exchange alone
 * costs the two shared cores: no implementation of the service can be faster.
 *
 *     floor agi  PORT    FastAGI: read the agi_* block, send three SET VARIABLE commands,
 *                        each after the 200 reply of the one before, then hang up
 *     floor http PORT    HTTP/1.1 keep-alive: answer each POST with a fixed trace result
 *
 * Runs until killed; prints "ready" on stdout once it listens.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 8192

enum { AGI, HTTP };

struct peer {
    int fd, step;   /* AGI: 0 reading the block, 1..3 waiting for the reply to command n */
    size_t have;
    char in[BUF];
};

static const char *COMMANDS[] = {
    "SET VARIABLE COT_OUTCOME \"success\"\n",
    "SET VARIABLE COT_ANNOUNCEMENT \"cot-success\"\n",
    "SET VARIABLE COT_TRACE_ID \"T-0000000000000001\"\n",
};

static const char RESULT[] = "{\"trace_id\":\"T-0000000000000001\",\"outcome\":\"success\","
                             "\"announcement\":\"cot-success\"}";

static void fail(const char *what) {
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void send_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return;     /* the client went away: its close is seen on the next read */
        }
        data += n;
        len -= (size_t)n;
    }
}

static void drop(struct peer *p) {
    close(p->fd);
    free(p);
}

/* FastAGI: 1 when the peer is done with */
static int agi_input(struct peer *p) {
    char *nl;
    if (p->step == 0) {
        p->in[p->have] = '\0';
        if (strstr(p->in, "\n\n") == NULL) return 0;
        p->have = 0;
        send_all(p->fd, COMMANDS[0], strlen(COMMANDS[0]));
        p->step = 1;
        return 0;
    }
    while ((nl = memchr(p->in, '\n', p->have)) != NULL) {
        size_t used = (size_t)(nl - p->in) + 1;
        memmove(p->in, p->in + used, p->have - used);
        p->have -= used;
        if (p->step == 3) return 1;
        send_all(p->fd, COMMANDS[p->step], strlen(COMMANDS[p->step]));
        p->step++;
    }
    return 0;
}

/* HTTP: every complete request (headers, then Content-Length bytes) gets the result */
static void http_input(struct peer *p) {
    char head[256], *end, *length;
    size_t size, body;
    for (;;) {
        p->in[p->have] = '\0';
        if ((end = strstr(p->in, "\r\n\r\n")) == NULL) return;
        length = strcasestr(p->in, "content-length:");
        body = length && length < end ? (size_t)strtoul(length + 15, NULL, 10) : 0;
        size = (size_t)(end - p->in) + 4 + body;
        if (p->have < size) return;
        int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         "content-length: %zu\r\n\r\n", sizeof RESULT - 1);
        char out[512];
        memcpy(out, head, (size_t)n);
        memcpy(out + n, RESULT, sizeof RESULT - 1);
        send_all(p->fd, out, (size_t)n + sizeof RESULT - 1);
        memmove(p->in, p->in + size, p->have - size);
        p->have -= size;
    }
}

int main(int argc, char **argv) {
    struct sockaddr_in addr = {0};
    struct epoll_event ev, events[256];
    int one = 1, mode, listener, epfd;
    if (argc != 3 || (strcmp(argv[1], "agi") && strcmp(argv[1], "http"))) {
        fprintf(stderr, "usage: floor agi|http PORT\n");
        return 2;
    }
    mode = strcmp(argv[1], "agi") == 0 ? AGI : HTTP;
    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[2]));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) fail("bind");
    if (listen(listener, 1024) < 0) fail("listen");
    epfd = epoll_create1(0);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev);
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int n = epoll_wait(epfd, events, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct peer *p = events[i].data.ptr;
            if (p == NULL) {            /* new connections */
                int fd;
                while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    p = calloc(1, sizeof *p);
                    p->fd = fd;
                    ev.events = EPOLLIN;
                    ev.data.ptr = p;
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            ssize_t got = recv(p->fd, p->in + p->have, BUF - 1 - p->have, 0);
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (got <= 0 || p->have + (size_t)got >= BUF - 1) {
                drop(p);
                continue;
            }
            p->have += (size_t)got;
            if (mode == AGI) {
                if (agi_input(p)) drop(p);
            } else {
                http_input(p);
            }
        }
    }
}
