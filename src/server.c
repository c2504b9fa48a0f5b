/* server: the evhttp front end of one worker.
 *
 * evhttp parses requests and buffers bodies up to max_body_size; proxy.c gets each
 * complete request through the general callback. We only make the sockets (SO_REUSEPORT,
 * one per worker and address) and each connection's bufferevent (TCP_NODELAY).
 */
#include "mcpeek/server.h"

#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mcpeek/config.h"
#include "mcpeek/guard.h"
#include "mcpeek/proxy.h"
#include "mcpeek/tls.h"
#include "mcpeek/worker.h"

/* evhttp's own limits sit this far above the guard's, so they never trigger: evhttp would
 * answer with an HTML page, call no user code, and its error path does not survive a
 * filter under it. */
#define SERVER_BACKSTOP_SLACK (64 * 1024)

/* Pending connections per listening socket. */
#define LISTEN_BACKLOG 1024

int server_parse_hostport(const char *spec, char *host, size_t host_size, unsigned *port)
{
    const char *colon;
    const char *h = spec;
    size_t hlen;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close || close[1] != ':')
            return -1;
        h = spec + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - spec);
    }
    if (hlen == 0 || hlen >= host_size)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end || p == 0 || p > 65535)
        return -1;
    *port = (unsigned)p;
    return 0;
}

int server_bind(const char *host, unsigned port, int reuseport, struct strbuf *errors)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    int rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        strbuf_printf(errors, "listen %s:%u: %s\n", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        /* Linux hands TCP_NODELAY down to every accepted socket. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        strbuf_printf(errors, "listen %s:%u: %s\n", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

void server_apply_limits(struct worker *w, const struct mcpeek_config *cfg)
{
    /* evhttp's own read timeout (also the keep-alive idle timeout) runs a second past the
     * guard's header deadline, so a trickling client gets the guard's 408 and its log line
     * rather than a silent close. */
    uint32_t ms = cfg->client_header_timeout_ms + 1000;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    for (int i = 0; i < 2; i++) {
        if (!w->http[i])
            continue;
        /* guard.c enforces the real limits (JSON errors, chunked uploads included). */
        evhttp_set_max_body_size(w->http[i],
                                 (ev_ssize_t)cfg->max_body_size + SERVER_BACKSTOP_SLACK);
        evhttp_set_max_headers_size(w->http[i],
                                    (ev_ssize_t)cfg->max_header_size + SERVER_BACKSTOP_SLACK);
        evhttp_set_timeout_tv(w->http[i], &tv);
    }
}

static struct evhttp *front_end(struct worker *w, bool tls)
{
    if (w->http[tls])
        return w->http[tls];
    struct evhttp *http = evhttp_new(w->base);
    if (!http)
        return NULL;
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                         EVHTTP_REQ_PATCH);
    evhttp_set_default_content_type(http, NULL);
    evhttp_set_gencb(http, proxy_handle_request, w);
    /* libevent 2.1 tells the bevcb nothing about the listener, hence one evhttp per kind. */
    evhttp_set_bevcb(http, tls ? tls_bufferevent_new : guard_bufferevent_new, w);
    w->http[tls] = http;
    return http;
}

int server_start(struct worker *w, const struct mcpeek_config *cfg, struct strbuf *errors)
{
    for (size_t i = 0; i < cfg->n_listen; i++) {
        const struct listen_addr *la = &cfg->listen[i];
        struct evhttp *http = front_end(w, la->tls);
        if (!http) {
            strbuf_puts(errors, "evhttp_new failed\n");
            return -1;
        }
        int fd = server_bind(la->host, la->port, 1, errors);
        if (fd < 0)
            return -1;
        struct evhttp_bound_socket *bound = evhttp_accept_socket_with_handle(http, fd);
        if (!bound || w->n_bound == WORKER_MAX_LISTEN) {
            close(fd);
            strbuf_printf(errors, "listen %s:%u: cannot accept\n", la->host, la->port);
            return -1;
        }
        w->bound_by[w->n_bound] = http;
        w->bound[w->n_bound++] = bound;
    }
    server_apply_limits(w, cfg);
    return 0;
}

void server_stop_accepting(struct worker *w)
{
    for (size_t i = 0; i < w->n_bound; i++)
        evhttp_del_accept_socket(w->bound_by[i], w->bound[i]);
    w->n_bound = 0;
}
