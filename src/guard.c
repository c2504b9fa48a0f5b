/* guard: a bufferevent filter between each client socket and evhttp that checks every
 * request head before evhttp sees it.
 *
 * libevent 2.1's evhttp answers an oversized body or head with its own HTML page and
 * calls no user code, so no JSON-RPC error and no log line. The guard reads the head first:
 * Content-Length over max_body_size gets 413, a head over max_header_size 431, a head or
 * body trickled past its deadline 408, a connection over max_connections 503 — each with
 * a JSON-RPC error body and one access-log line. After a refusal the rest of the client's
 * input is discarded (never reset mid-upload, so the client can read the answer) until the
 * client closes or evhttp's idle timeout does. Chunked uploads are left to evhttp's own
 * limit: after one, the guard passes the connection through unchecked.
 *
 * Two facts of filters shape the code around it. evhttp counts a response as written once
 * the filter's output is empty, before the socket bufferevent under it has sent everything,
 * and it shuts the socket down right then when it is to close: proxy.c therefore leaves
 * `Connection: close` to the client (leave_close_to_client). And a filter reports output
 * written synchronously, before evhttp has installed its "response done" callback for the
 * last bytes of a chunked response: proxy.c triggers that callback once more.
 */
#include "mcpeek/guard.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "mcpeek/proxy.h"
#include "mcpeek/tls.h"
#include "mcpeek/worker.h"

/* Output waiting in the kernel-facing buffer before the filter holds data back; proxy.c
 * pauses the upstream when the filter's own buffer fills (backpressure). */
#define GUARD_SOCKET_HIGH_WATER (64 * 1024)

enum guard_state {
    GUARD_HEAD,    /* waiting for a complete request head */
    GUARD_BODY,    /* passing `body_left` body bytes */
    GUARD_PASS,    /* unchecked from here on (after a chunked upload) */
    GUARD_DISCARD, /* refused: drop everything the client sends */
};

struct guard {
    struct worker *w;
    struct guard *next, *prev; /* worker->guards */
    struct bufferevent *filter;
    enum guard_state state;
    uint64_t body_left;
    struct event *deadline;
    bool counted; /* holds one of shared->connections */
    bool over_limit;
    bool tls;       /* HTTPS connection */
    bool tls_ready; /* its handshake completed (set through SSL app data by tls.c) */
};

static uint64_t parse_content_length(const char *head, size_t len, bool *chunked)
{
    uint64_t cl = 0;
    *chunked = false;
    const char *p = head;
    const char *end = head + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        size_t n = (size_t)(eol - p);
        if (n > 15 && strncasecmp(p, "content-length:", 15) == 0) {
            cl = strtoull(p + 15, NULL, 10);
        } else if (n > 18 && strncasecmp(p, "transfer-encoding:", 18) == 0) {
            /* Any transfer coding ends in chunked for a request with a body. */
            for (const char *q = p + 18; q + 7 <= eol; q++)
                if (strncasecmp(q, "chunked", 7) == 0)
                    *chunked = true;
        }
        p = eol + 1;
    }
    return cl;
}

/* Offset just past the blank line ending the head, or 0 when not complete yet. */
static size_t head_end(const char *data, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (data[i] != '\n')
            continue;
        if (data[i + 1] == '\n')
            return i + 2;
        if (data[i + 1] == '\r' && i + 2 < len && data[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static void peer_ip(struct guard *g, char *ip, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    ip[0] = '\0';
    evutil_socket_t fd = bufferevent_getfd(g->filter);
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
        return;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, (socklen_t)size);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, (socklen_t)size);
}

/* Answers the request whose head starts `head` (may be partial) and stops reading. */
static void refuse(struct guard *g, const char *head, size_t len, int status, int code,
                   const char *message, const char *error)
{
    char method[16] = "", path[512] = "", ip[64];
    sscanf(len ? head : "", "%15s %511s", method, path);
    path[strcspn(path, "?")] = '\0';
    peer_ip(g, ip, sizeof(ip));
    proxy_log_refused(g->w, method, path, ip, status, error);

    char body[256];
    int blen =
        snprintf(body, sizeof(body),
                 "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":%d,\"message\":\"%s\"}}",
                 code, message);
    char response[512];
    int rlen = snprintf(response, sizeof(response),
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                        status, message, blen, body);
    bufferevent_write(bufferevent_get_underlying(g->filter), response, (size_t)rlen);
    g->state = GUARD_DISCARD;
    evtimer_del(g->deadline);
}

static void arm_deadline(struct guard *g, uint32_t ms)
{
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(g->deadline, &tv);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct guard *g = arg;
    struct evbuffer *pending = bufferevent_get_input(bufferevent_get_underlying(g->filter));
    size_t len = evbuffer_get_length(pending);
    const char *head = len ? (const char *)evbuffer_pullup(pending, len < 600 ? -1 : 600) : "";
    refuse(g, head, len < 600 ? len : 600, 408, -32600, "Request Timeout", "client_timeout");
}

static enum bufferevent_filter_result guard_input(struct evbuffer *src, struct evbuffer *dst,
                                                  ev_ssize_t limit,
                                                  enum bufferevent_flush_mode mode, void *ctx)
{
    (void)limit;
    (void)mode;
    struct guard *g = ctx;
    const struct mcpeek_config *cfg = g->w->gen->cfg;
    for (;;) {
        size_t len = evbuffer_get_length(src);
        if (len == 0)
            return BEV_OK;
        switch (g->state) {
        case GUARD_DISCARD:
            evbuffer_drain(src, len);
            return BEV_OK;
        case GUARD_PASS:
            evbuffer_remove_buffer(src, dst, len);
            return BEV_OK;
        case GUARD_BODY: {
            size_t n = len < g->body_left ? len : (size_t)g->body_left;
            evbuffer_remove_buffer(src, dst, n);
            g->body_left -= n;
            if (g->body_left == 0) {
                g->state = GUARD_HEAD;
                evtimer_del(g->deadline);
            }
            continue;
        }
        case GUARD_HEAD:
            break;
        }
        size_t scan = len < cfg->max_header_size + 3 ? len : cfg->max_header_size + 3;
        const char *data = (const char *)evbuffer_pullup(src, (ev_ssize_t)scan);
        if (g->over_limit) {
            refuse(g, data, scan, 503, -32000, "Service Unavailable", "too_many_connections");
            continue;
        }
        size_t end = head_end(data, scan);
        if (end == 0) {
            if (len > cfg->max_header_size) {
                refuse(g, data, scan, 431, -32600, "Request Header Fields Too Large",
                       "headers_too_large");
                continue;
            }
            if (!evtimer_pending(g->deadline, NULL))
                arm_deadline(g, cfg->client_header_timeout_ms);
            return BEV_NEED_MORE;
        }
        bool chunked;
        uint64_t cl = parse_content_length(data, end, &chunked);
        if (cl > cfg->max_body_size) {
            refuse(g, data, end, 413, -32600, "Payload Too Large", "body_too_large");
            continue;
        }
        evbuffer_remove_buffer(src, dst, end);
        evtimer_del(g->deadline);
        if (chunked) {
            g->state = GUARD_PASS;
        } else if (cl > 0) {
            g->state = GUARD_BODY;
            g->body_left = cl;
            arm_deadline(g, cfg->client_body_timeout_ms);
        }
    }
}

static void guard_free(void *ctx)
{
    struct guard *g = ctx;
    if (g->tls && !g->tls_ready) {
        tls_note_handshake_failure();
        metrics_tls_handshake_failure(g->w->metrics);
    }
    if (g->counted)
        atomic_fetch_sub(&g->w->shared->connections, 1);
    if (g->prev)
        g->prev->next = g->next;
    else
        g->w->guards = g->next;
    if (g->next)
        g->next->prev = g->prev;
    event_free(g->deadline);
    free(g);
}

struct bufferevent *guard_wrap(struct bufferevent *sock, struct worker *w, SSL *ssl)
{
    struct guard *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->w = w;
    g->deadline = evtimer_new(bufferevent_get_base(sock), on_deadline, g);
    if (!g->deadline) {
        free(g);
        return NULL;
    }
    g->filter =
        bufferevent_filter_new(sock, guard_input, NULL, BEV_OPT_CLOSE_ON_FREE, guard_free, g);
    if (!g->filter) {
        event_free(g->deadline);
        free(g);
        return NULL;
    }

    if (ssl) {
        g->tls = true;
        SSL_set_app_data(ssl, &g->tls_ready);
    }
    bufferevent_setwatermark(sock, EV_WRITE, 0, GUARD_SOCKET_HIGH_WATER);
    g->next = w->guards;
    if (w->guards)
        w->guards->prev = g;
    w->guards = g;
    unsigned max = w->gen->cfg->max_connections;
    unsigned now = atomic_fetch_add(&w->shared->connections, 1) + 1;
    g->counted = true;
    g->over_limit = max && now > max;
    return g->filter;
}

struct bufferevent *guard_bufferevent_new(struct event_base *base, void *arg)
{
    struct bufferevent *sock = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!sock)
        return NULL;
    struct bufferevent *bev = guard_wrap(sock, arg, NULL);
    if (!bev)
        bufferevent_free(sock);
    return bev;
}

bool guard_all_flushed(const struct worker *w)
{
    for (const struct guard *g = w->guards; g; g = g->next) {
        struct bufferevent *sock = bufferevent_get_underlying(g->filter);
        if (evbuffer_get_length(bufferevent_get_output(g->filter)) > 0 ||
            evbuffer_get_length(bufferevent_get_output(sock)) > 0)
            return false;
    }
    return true;
}
