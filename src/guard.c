/* guard: a bufferevent filter between each client socket and evhttp that checks every
 * request head before evhttp sees it.
 *
 * libevent 2.1's evhttp answers an oversized body or head with its own HTML page and
 * calls no user code, so no JSON-RPC error and no log line. The guard reads the head first:
 * Content-Length over max_body_size gets 413, a head over max_header_size 431, a head or
 * body trickled past its deadline 408, a connection over max_connections 503 — each with
 * a JSON-RPC error body and one access-log line. After a refusal the rest of the client's
 * input is discarded (never reset mid-upload, so the client can read the answer) until the
 * client closes or evhttp's idle timeout does. Chunked uploads are followed chunk by chunk
 * and counted against the same limit; conflicting framing (two Content-Lengths, or one
 * beside Transfer-Encoding) is refused with 400, the request-smuggling defence.
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
#include <errno.h>
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
/* Longest chunk-size or trailer line of a chunked upload. */
#define GUARD_CHUNK_LINE_MAX 1024

enum guard_state {
    GUARD_HEAD,          /* waiting for a complete request head */
    GUARD_BODY,          /* passing `body_left` body bytes */
    GUARD_CHUNK_SIZE,    /* chunked upload: expecting a chunk-size line */
    GUARD_CHUNK_DATA,    /* passing `body_left` bytes of chunk data */
    GUARD_CHUNK_END,     /* the line end after chunk data */
    GUARD_CHUNK_TRAILER, /* trailer lines up to the blank line ending the request */
    GUARD_DISCARD,       /* refused: drop everything the client sends */
};

struct guard {
    struct worker *w;
    struct guard *next, *prev; /* worker->guards */
    struct bufferevent *filter;
    enum guard_state state;
    uint64_t body_left;
    uint64_t chunked_total; /* body bytes announced so far in a chunked upload */
    struct event *deadline;
    bool counted; /* holds one of shared->connections */
    bool over_limit;
    bool tls;       /* HTTPS connection */
    bool tls_ready; /* its handshake completed (set through SSL app data by tls.c) */
};

/* How the request head frames its body. Conflicting or doubtful framing is refused: two
 * different Content-Lengths, or Content-Length beside Transfer-Encoding, is how requests
 * are smuggled past one parser and read differently by the next. */
enum body_framing { BODY_LENGTH, BODY_CHUNKED, BODY_INVALID };

static enum body_framing body_framing(const char *head, size_t len, uint64_t *length)
{
    bool has_length = false, chunked = false, other_coding = false;
    *length = 0;
    const char *p = head;
    const char *end = head + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        size_t n = (size_t)(eol - p);
        if (n > 15 && strncasecmp(p, "content-length:", 15) == 0) {
            const char *v = p + 15;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            char *stop;
            errno = 0;
            unsigned long long value = strtoull(v, &stop, 10);
            while (stop < eol && (*stop == ' ' || *stop == '\t' || *stop == '\r'))
                stop++;
            if (stop == v || stop != eol || errno || *v == '-' || (has_length && value != *length))
                return BODY_INVALID;
            has_length = true;
            *length = value;
        } else if (n > 18 && strncasecmp(p, "transfer-encoding:", 18) == 0) {
            bool found = false;
            for (const char *q = p + 18; q + 7 <= eol; q++)
                found |= strncasecmp(q, "chunked", 7) == 0;
            chunked |= found;
            other_coding |= !found;
        }
        p = eol + 1;
    }
    if ((chunked || other_coding) && has_length)
        return BODY_INVALID;
    if (other_coding && !chunked)
        return BODY_INVALID;
    return chunked ? BODY_CHUNKED : BODY_LENGTH;
}

/* What evhttp would answer with its own HTML page (and no log line) is refused here:
 * a request line that is not `METHOD target HTTP/1.x`, or a method mcpeek does not proxy
 * (TRACE and CONNECT have no business at a reverse proxy). Returns 0, 400 or 405. */
static int check_request_line(const char *head, size_t len)
{
    static const char *const methods[] = {"GET",    "POST",    "HEAD", "PUT",
                                          "DELETE", "OPTIONS", "PATCH"};
    const char *eol = memchr(head, '\n', len);
    if (!eol)
        return 400;
    const char *sp1 = memchr(head, ' ', (size_t)(eol - head));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    size_t vlen = sp2 ? (size_t)(eol - sp2 - 1) : 0;
    if (vlen > 0 && sp2[vlen] == '\r')
        vlen--;
    if (!sp2 || sp2 == sp1 + 1 || vlen != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0)
        return 400;
    size_t mlen = (size_t)(sp1 - head);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strlen(methods[i]) == mlen && memcmp(methods[i], head, mlen) == 0)
            return 0;
    return 405;
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
    char method[16] = "", path[512] = "", ip[64], line[600];
    /* The head is not NUL terminated: read its start from a terminated copy. */
    size_t n = len < sizeof(line) - 1 ? len : sizeof(line) - 1;
    memcpy(line, head, n);
    line[n] = '\0';
    sscanf(line, "%15s %511s", method, path);
    path[strcspn(path, "?")] = '\0';
    peer_ip(g, ip, sizeof(ip));
    char body[256];
    int blen =
        snprintf(body, sizeof(body),
                 "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":%d,\"message\":\"%s\"}}",
                 code, message);
    proxy_log_refused(g->w, method, path, ip, status, error, (size_t)blen);
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

/* Moves one line (through its '\n') from src to dst; returns its length without the line
 * end, or -1 when no complete line is there yet (-2 when it is longer than `max`). */
static ev_ssize_t pass_line(struct evbuffer *src, struct evbuffer *dst, char *copy, size_t max)
{
    struct evbuffer_ptr eol = evbuffer_search(src, "\n", 1, NULL);
    if (eol.pos < 0)
        return evbuffer_get_length(src) > max ? -2 : -1;
    size_t len = (size_t)eol.pos;
    if (len > max)
        return -2;
    evbuffer_copyout(src, copy, len);
    copy[len] = '\0';
    if (len > 0 && copy[len - 1] == '\r')
        copy[--len] = '\0';
    evbuffer_remove_buffer(src, dst, (size_t)eol.pos + 1);
    return (ev_ssize_t)len;
}

/* Chunked upload: follows the framing to find where the request ends and to count the body
 * against max_body_size before evhttp reads it. Returns false after a refusal. */
static bool pass_chunked(struct guard *g, struct evbuffer *src, struct evbuffer *dst,
                         const struct mcpeek_config *cfg)
{
    char line[GUARD_CHUNK_LINE_MAX + 1];
    for (;;) {
        size_t len = evbuffer_get_length(src);
        if (len == 0)
            return true;
        if (g->state == GUARD_CHUNK_DATA) {
            size_t n = len < g->body_left ? len : (size_t)g->body_left;
            evbuffer_remove_buffer(src, dst, n);
            g->body_left -= n;
            if (g->body_left == 0)
                g->state = GUARD_CHUNK_END;
            continue;
        }
        ev_ssize_t n = pass_line(src, dst, line, GUARD_CHUNK_LINE_MAX);
        if (n == -1)
            return true;
        if (n == -2 || (g->state == GUARD_CHUNK_END && n != 0)) {
            refuse(g, "", 0, 400, -32600, "Bad Request", "bad_request");
            return false;
        }
        if (g->state == GUARD_CHUNK_END) {
            g->state = GUARD_CHUNK_SIZE;
        } else if (g->state == GUARD_CHUNK_TRAILER) {
            if (n == 0) {
                g->state = GUARD_HEAD;
                evtimer_del(g->deadline);
                return true;
            }
        } else { /* GUARD_CHUNK_SIZE */
            char *stop;
            errno = 0;
            unsigned long long size = strtoull(line, &stop, 16);
            if (stop == line || errno || (*stop && *stop != ';' && *stop != ' ')) {
                refuse(g, "", 0, 400, -32600, "Bad Request", "bad_request");
                return false;
            }
            if (size > cfg->max_body_size || g->chunked_total + size > cfg->max_body_size) {
                refuse(g, "", 0, 413, -32600, "Payload Too Large", "body_too_large");
                return false;
            }
            g->chunked_total += size;
            g->body_left = size;
            g->state = size ? GUARD_CHUNK_DATA : GUARD_CHUNK_TRAILER;
        }
    }
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
        case GUARD_CHUNK_SIZE:
        case GUARD_CHUNK_DATA:
        case GUARD_CHUNK_END:
        case GUARD_CHUNK_TRAILER:
            if (!pass_chunked(g, src, dst, cfg))
                continue; /* refused: the rest is discarded */
            if (g->state != GUARD_HEAD)
                return BEV_OK;
            continue;
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
        int line_status = check_request_line(data, end);
        if (line_status == 405) {
            refuse(g, data, end, 405, -32600, "Method Not Allowed", "method_not_allowed");
            continue;
        }
        uint64_t length;
        enum body_framing framing = line_status ? BODY_INVALID : body_framing(data, end, &length);
        if (framing == BODY_INVALID) {
            refuse(g, data, end, 400, -32600, "Bad Request", "bad_request");
            continue;
        }
        if (framing == BODY_LENGTH && length > cfg->max_body_size) {
            refuse(g, data, end, 413, -32600, "Payload Too Large", "body_too_large");
            continue;
        }
        evbuffer_remove_buffer(src, dst, end);
        evtimer_del(g->deadline);
        g->chunked_total = 0;
        if (framing == BODY_CHUNKED) {
            g->state = GUARD_CHUNK_SIZE;
            arm_deadline(g, cfg->client_body_timeout_ms);
        } else if (length > 0) {
            g->state = GUARD_BODY;
            g->body_left = length;
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
