/* upstream: HTTP/1.1 client connections to the MCP server, pooled per worker.
 *
 * Each connection keeps one persistent EV_READ event for its whole life (also while idle in
 * the pool, where readability means the server closed it), so a request on a pooled
 * connection costs one writev() and one read() and no epoll_ctl(). EV_WRITE is armed only
 * while connecting, during a TLS handshake, or when a write would block. The response is
 * handed to the caller as it is read: head once, payload per read, nothing buffered beyond
 * one read. Callbacks may cancel the call (or start others): `busy` keeps the connection
 * alive until the handler that called them has returned.
 */
#include "mcpeek/upstream.h"

#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "mcpeek/diag.h"

/* First read buffer of a connection; grown (up to UPSTREAM_HEAD_MAX) only for a long head. */
#define UPSTREAM_READ_BUF (16 * 1024)
/* A response head larger than this is refused (nginx's default proxy_buffer_size is 4-8 KiB). */
#define UPSTREAM_HEAD_MAX (64 * 1024)

enum conn_state {
    CONN_CONNECTING,
    CONN_HANDSHAKE,
    CONN_ACTIVE, /* request being written and/or response read */
    CONN_IDLE,
};

enum body_framing {
    BODY_NONE,    /* HEAD, 1xx, 204, 304 */
    BODY_LENGTH,  /* Content-Length */
    BODY_CHUNKED, /* Transfer-Encoding: chunked */
    BODY_CLOSE,   /* ends when the server closes */
};

struct upstream_conn {
    struct upstream *up;
    int fd;
    SSL *ssl;            /* NULL for http:// */
    struct event *rev;   /* EV_READ|EV_PERSIST, pending unless paused */
    struct event *wev;   /* EV_WRITE|EV_PERSIST, pending only while a write waits */
    struct event *timer; /* connect deadline, then idle deadline */
    bool wev_pending;
    enum conn_state state;
    char key[sizeof(((struct upstream_target *)0)->key)];
    const struct upstream_target *target; /* valid while a call runs */
    size_t addr_index;
    struct upstream_call *call;        /* NULL when idle */
    struct upstream_conn *next, *prev; /* idle list */

    size_t sent; /* bytes of head + body written */
    char *buf;   /* read buffer, owned */
    size_t len, cap;
    bool head_done;
    enum body_framing framing;
    uint64_t remaining; /* BODY_LENGTH */
    struct http1_chunked chunked;
    bool keep_alive; /* both sides allow reuse after this response */
    unsigned busy;   /* handlers on the stack */
    bool doomed;     /* closed while busy: freed when the last handler returns */
};

struct upstream {
    struct event_base *base;
    struct upstream_conn *idle; /* most recently used first */
    unsigned n_idle;            /* the limit is the target's upstream_keepalive */
};

static void conn_on_read(evutil_socket_t fd, short what, void *arg);
static void conn_on_write(evutil_socket_t fd, short what, void *arg);
static void conn_on_timer(evutil_socket_t fd, short what, void *arg);
static void conn_connect(struct upstream_conn *c);

/* ---- connection lifetime ------------------------------------------------------------- */

static void conn_unlink_idle(struct upstream_conn *c)
{
    struct upstream *up = c->up;
    if (c->prev)
        c->prev->next = c->next;
    else
        up->idle = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    up->n_idle--;
}

static void conn_release_fd(struct upstream_conn *c)
{
    if (c->rev)
        event_del(c->rev);
    if (c->wev)
        event_del(c->wev);
    if (c->timer)
        evtimer_del(c->timer);
    c->wev_pending = false;
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

static void conn_free(struct upstream_conn *c)
{
    conn_release_fd(c);
    if (c->rev)
        event_free(c->rev);
    if (c->wev)
        event_free(c->wev);
    if (c->timer)
        event_free(c->timer);
    free(c->buf);
    free(c);
}

/* Closes the socket now; the struct goes when no handler is using it. */
static void conn_close(struct upstream_conn *c)
{
    if (c->state == CONN_IDLE)
        conn_unlink_idle(c);
    conn_release_fd(c);
    if (c->busy)
        c->doomed = true;
    else
        conn_free(c);
}

static void set_write_interest(struct upstream_conn *c, bool on)
{
    if (on && !c->wev_pending)
        event_add(c->wev, NULL);
    else if (!on && c->wev_pending)
        event_del(c->wev);
    c->wev_pending = on;
}

static void timer_after(struct event *ev, uint32_t ms)
{
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* Opens the socket for c->target's address c->addr_index and starts connecting. */
static int conn_open_socket(struct upstream_conn *c)
{
    const struct upstream_target *t = c->target;
    const struct sockaddr *sa = (const struct sockaddr *)&t->addrs[c->addr_index];
    c->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, sa, t->addr_lens[c->addr_index]) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    if (event_assign(c->rev, c->up->base, c->fd, EV_READ | EV_PERSIST, conn_on_read, c) < 0 ||
        event_assign(c->wev, c->up->base, c->fd, EV_WRITE | EV_PERSIST, conn_on_write, c) < 0)
        return -1;
    event_add(c->rev, NULL);
    c->wev_pending = false;
    set_write_interest(c, true); /* writable = connected (or failed: SO_ERROR says) */
    c->state = CONN_CONNECTING;
    return 0;
}

static struct upstream_conn *conn_new(struct upstream *up, const struct upstream_target *t)
{
    struct upstream_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->up = up;
    c->fd = -1;
    c->target = t;
    memcpy(c->key, t->key, sizeof(c->key));
    c->rev = event_new(up->base, -1, 0, conn_on_read, c);
    c->wev = event_new(up->base, -1, 0, conn_on_write, c);
    c->timer = evtimer_new(up->base, conn_on_timer, c);
    c->buf = malloc(UPSTREAM_READ_BUF);
    c->cap = UPSTREAM_READ_BUF;
    if (!c->rev || !c->wev || !c->timer || !c->buf) {
        conn_free(c);
        return NULL;
    }
    return c;
}

/* ---- ending a call -------------------------------------------------------------------- */

static void conn_make_idle(struct upstream_conn *c)
{
    struct upstream *up = c->up;
    const struct upstream_target *t = c->target;
    if (up->n_idle >= t->keepalive) {
        conn_close(c);
        return;
    }
    c->state = CONN_IDLE;
    c->target = NULL;
    event_add(c->rev, NULL); /* a paused call had removed it */
    c->next = up->idle;
    c->prev = NULL;
    if (up->idle)
        up->idle->prev = c;
    up->idle = c;
    up->n_idle++;
    timer_after(c->timer, t->keepalive_timeout_ms);
}

/* Ends the connection's call: the connection is pooled (clean end, keep-alive) or closed,
 * then `done` runs. */
static void conn_end_call(struct upstream_conn *c, bool ok, enum upstream_error_kind kind)
{
    struct upstream_call *call = c->call;
    c->call = NULL;
    if (call)
        call->conn = NULL;
    size_t total = call ? call->head_len + call->body_len : 0;
    if (ok && c->keep_alive && c->len == 0 && c->sent == total && c->fd >= 0)
        conn_make_idle(c);
    else
        conn_close(c);
    if (call)
        call->cb->done(call->arg, ok, kind);
}

static void conn_fail(struct upstream_conn *c, enum upstream_error_kind kind);

/* A pooled connection the server had closed before our request reached it: the request is
 * sent again once on a new connection (nothing of it was processed; curl and nginx do the
 * same for a stale keep-alive connection). */
static bool conn_retry(struct upstream_conn *c)
{
    struct upstream_call *call = c->call;
    if (!call || !call->reused || call->answered)
        return false;
    call->reused = false;
    c->call = NULL;
    call->conn = NULL;
    conn_close(c);
    struct upstream_conn *fresh = conn_new(call->up, call->target);
    if (!fresh) {
        call->cb->done(call->arg, false, UPSTREAM_ERR_OTHER);
        return true;
    }
    fresh->call = call;
    call->conn = fresh;
    conn_connect(fresh);
    return true;
}

static void conn_fail(struct upstream_conn *c, enum upstream_error_kind kind)
{
    if ((kind == UPSTREAM_ERR_RESET) && conn_retry(c))
        return;
    c->keep_alive = false;
    conn_end_call(c, false, kind);
}

/* ---- TLS ------------------------------------------------------------------------------ */

/* At most one upstream TLS diagnostic per this many seconds (a broken upstream fails every
 * request; the access log and the metric count them all). */
#define UPSTREAM_TLS_DIAG_INTERVAL_S 10

static atomic_llong tls_last_report_s;

/* Reports why TLS to the upstream failed (certificate problems are what operators need to
 * see); the access log carries only "upstream_tls". */
static void tls_report(struct upstream_conn *c)
{
    long long now = (long long)time(NULL);
    long long last = atomic_load(&tls_last_report_s);
    if (now - last < UPSTREAM_TLS_DIAG_INTERVAL_S ||
        !atomic_compare_exchange_strong(&tls_last_report_s, &last, now)) {
        ERR_clear_error();
        return;
    }
    const char *where = c->target ? c->target->origin : c->key;
    long verify = SSL_get_verify_result(c->ssl);
    unsigned long e = ERR_peek_last_error();
    char reason[256] = "";
    if (e)
        ERR_error_string_n(e, reason, sizeof(reason));
    if (verify != X509_V_OK)
        diag_log("warn", "upstream %s: certificate rejected: %s", where,
                 X509_verify_cert_error_string(verify));
    else
        diag_log("warn", "upstream %s: TLS failed: %s", where, e ? reason : "connection closed");
    ERR_clear_error();
}

static int conn_tls_start(struct upstream_conn *c)
{
    const struct upstream_target *t = c->target;
    c->ssl = SSL_new(t->ssl_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
        return -1;
    bool ip_literal = strchr(t->host, ':') || strspn(t->host, "0123456789.") == strlen(t->host);
    if (!ip_literal)
        SSL_set_tlsext_host_name(c->ssl, t->host);
    if (SSL_get_verify_mode(c->ssl) & SSL_VERIFY_PEER) {
        X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
        if (ip_literal ? X509_VERIFY_PARAM_set1_ip_asc(param, t->host) != 1
                       : SSL_set1_host(c->ssl, t->host) != 1)
            return -1;
    }
    SSL_set_connect_state(c->ssl);
    c->state = CONN_HANDSHAKE;
    return 0;
}

/* ---- writing the request ------------------------------------------------------------ */

/* Writes what is left of head + body. 0 when all is written, 1 when blocked, -1 on error. */
static int conn_write_request(struct upstream_conn *c)
{
    struct upstream_call *call = c->call;
    size_t total = call->head_len + call->body_len;
    while (c->sent < total) {
        ssize_t n;
        if (c->ssl) {
            const char *p = c->sent < call->head_len ? call->head + c->sent
                                                     : call->body + (c->sent - call->head_len);
            size_t left = c->sent < call->head_len ? call->head_len - c->sent : total - c->sent;
            ERR_clear_error();
            int r = SSL_write(c->ssl, p, (int)(left > INT32_MAX ? INT32_MAX : left));
            if (r <= 0) {
                int err = SSL_get_error(c->ssl, r);
                if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
                    return 1;
                return -1;
            }
            n = r;
        } else {
            struct iovec iov[2];
            int niov = 0;
            if (c->sent < call->head_len) {
                iov[niov].iov_base = (char *)call->head + c->sent;
                iov[niov++].iov_len = call->head_len - c->sent;
                if (call->body_len > 0) {
                    iov[niov].iov_base = (char *)call->body;
                    iov[niov++].iov_len = call->body_len;
                }
            } else {
                iov[niov].iov_base = (char *)call->body + (c->sent - call->head_len);
                iov[niov++].iov_len = total - c->sent;
            }
            struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
            n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 1;
                if (errno == EINTR)
                    continue;
                return -1;
            }
        }
        c->sent += (size_t)n;
    }
    return 0;
}

/* Sends what can be sent now; arms EV_WRITE only when the socket is full. */
static void conn_push_request(struct upstream_conn *c)
{
    int rc = conn_write_request(c);
    if (rc < 0) {
        conn_fail(c, c->ssl && ERR_peek_error() ? UPSTREAM_ERR_TLS : UPSTREAM_ERR_RESET);
        return;
    }
    set_write_interest(c, rc == 1);
}

/* Connected (and TLS established): start the exchange. */
static void conn_ready(struct upstream_conn *c)
{
    evtimer_del(c->timer);
    c->state = CONN_ACTIVE;
    conn_push_request(c);
}

static void conn_handshake(struct upstream_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        set_write_interest(c, false);
        conn_ready(c);
        return;
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ) {
        set_write_interest(c, false);
        return;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        set_write_interest(c, true);
        return;
    }
    tls_report(c);
    conn_fail(c, UPSTREAM_ERR_TLS);
}

/* Starts connecting to the first address from `first` on that accepts a socket; when none
 * is left the call fails with `connect`. */
static void conn_connect_from(struct upstream_conn *c, size_t first)
{
    conn_release_fd(c);
    for (c->addr_index = first; c->addr_index < c->target->n_addrs; c->addr_index++) {
        if (conn_open_socket(c) == 0) {
            timer_after(c->timer, c->target->connect_timeout_ms);
            return;
        }
        conn_release_fd(c);
    }
    conn_fail(c, UPSTREAM_ERR_CONNECT);
}

static void conn_connect(struct upstream_conn *c)
{
    c->sent = 0;
    conn_connect_from(c, 0);
}

static void conn_on_connected(struct upstream_conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
        conn_connect_from(c, c->addr_index + 1);
        return;
    }
    if (c->target->tls) {
        if (conn_tls_start(c) < 0) {
            tls_report(c);
            conn_fail(c, UPSTREAM_ERR_TLS);
            return;
        }
        conn_handshake(c);
        return;
    }
    set_write_interest(c, false);
    conn_ready(c);
}

/* ---- reading the response ------------------------------------------------------------- */

/* Fields named `name` in the head. */
static size_t head_count(const struct http1_response *r, const char *name)
{
    size_t count = 0, n = strlen(name);
    for (size_t i = 0; i < r->n_headers; i++)
        if (r->headers[i].name_len == n && strncasecmp(r->headers[i].name, name, n) == 0)
            count++;
    return count;
}

/* True when the last coding of a Transfer-Encoding value is chunked. */
static bool te_ends_in_chunked(const char *v, size_t n)
{
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == ','))
        n--;
    size_t start = n;
    while (start > 0 && v[start - 1] != ',')
        start--;
    return http1_value_has_token(v + start, n - start, "chunked");
}

/* The head is complete: decide the body framing and whether the connection can be reused. */
static int conn_take_head(struct upstream_conn *c, const struct http1_response *r)
{
    struct upstream_call *call = c->call;
    size_t n;
    const char *v = http1_find_header(r, "Connection", &n);
    c->keep_alive = r->minor >= 1 ? !(v && http1_value_has_token(v, n, "close"))
                                  : (v && http1_value_has_token(v, n, "keep-alive"));
    const char *te = http1_find_header(r, "Transfer-Encoding", &n);
    const char *cl_v;
    size_t cl_n;
    cl_v = http1_find_header(r, "Content-Length", &cl_n);
    /* proxy.c relays Content-Length as it came: beside Transfer-Encoding, or twice, the
     * client would frame the body differently than we do and take the rest for its next
     * response. Such an answer is an error (RFC 9112 6.3, as nginx treats it). */
    if ((te && cl_v) || head_count(r, "Content-Length") > 1 ||
        head_count(r, "Transfer-Encoding") > 1)
        return -1;
    if (call->no_body_expected || r->status == 204 || r->status == 304) {
        c->framing = BODY_NONE;
    } else if (te) {
        /* Chunked is the one coding we decode, and only as the last one; otherwise the body
         * ends at the close (RFC 9112 6.3). */
        c->framing = te_ends_in_chunked(te, n) ? BODY_CHUNKED : BODY_CLOSE;
        c->keep_alive &= c->framing == BODY_CHUNKED;
        memset(&c->chunked, 0, sizeof(c->chunked));
    } else if (cl_v) {
        if (http1_parse_content_length(cl_v, cl_n, &c->remaining) < 0)
            return -1;
        c->framing = c->remaining > 0 ? BODY_LENGTH : BODY_NONE;
    } else {
        c->framing = BODY_CLOSE;
        c->keep_alive = false;
    }
    return 0;
}

/* Payload bytes of the response, framing applied. Returns false when the call ended or was
 * cancelled from a callback (the caller must stop). */
static bool conn_feed_body(struct upstream_conn *c, const char *p, size_t n)
{
    struct upstream_call *call = c->call;
    while (n > 0 && c->call == call) {
        const char *data = p;
        size_t data_len = 0, used;
        if (c->framing == BODY_LENGTH) {
            data_len = n < c->remaining ? n : (size_t)c->remaining;
            c->remaining -= data_len;
            used = data_len;
        } else if (c->framing == BODY_CHUNKED) {
            ssize_t r = http1_chunked_feed(&c->chunked, p, n, &data, &data_len);
            if (r < 0) {
                conn_fail(c, UPSTREAM_ERR_OTHER);
                return false;
            }
            used = (size_t)r;
        } else if (c->framing == BODY_CLOSE) {
            data_len = used = n;
        } else {
            used = 0;
        }
        if (data_len > 0)
            call->cb->body(call->arg, data, data_len);
        if (c->call != call)
            return false;
        bool complete = c->framing == BODY_NONE ||
                        (c->framing == BODY_LENGTH && c->remaining == 0) ||
                        (c->framing == BODY_CHUNKED && http1_chunked_done(&c->chunked));
        p += used;
        n -= used;
        if (complete) {
            if (n > 0)
                c->keep_alive = false; /* bytes after the response: not a clean connection */
            c->len = 0;
            conn_end_call(c, true, UPSTREAM_ERR_OTHER);
            return false;
        }
        if (used == 0)
            break;
    }
    return c->call == call;
}

/* Bytes arrived (in c->buf[0..c->len)). Returns false once the call ended. */
static bool conn_process(struct upstream_conn *c)
{
    struct upstream_call *call = c->call;
    call->answered = true;
    if (c->head_done) {
        size_t n = c->len;
        c->len = 0;
        return conn_feed_body(c, c->buf, n);
    }
    for (;;) {
        struct http1_response r;
        ssize_t head = http1_parse_response_head(c->buf, c->len, &r);
        if (head < 0 || (head == 0 && c->len >= UPSTREAM_HEAD_MAX)) {
            conn_fail(c, UPSTREAM_ERR_OTHER);
            return false;
        }
        if (head == 0)
            return true;
        bool interim = r.status < 200;
        if (!interim && conn_take_head(c, &r) < 0) {
            conn_fail(c, UPSTREAM_ERR_OTHER);
            return false;
        }
        if (!interim) {
            c->head_done = true;
            call->cb->head(call->arg, &r);
            if (c->call != call)
                return false;
        }
        size_t rest = c->len - (size_t)head;
        memmove(c->buf, c->buf + head, rest);
        c->len = rest;
        if (interim)
            continue; /* 100 Continue, 103 Early Hints: not relayed */
        size_t n = c->len;
        c->len = 0;
        if (c->framing == BODY_NONE) {
            c->len = n; /* leftover bytes make the connection unusable */
            conn_end_call(c, true, UPSTREAM_ERR_OTHER);
            return false;
        }
        return conn_feed_body(c, c->buf, n);
    }
}

/* One read into the buffer: >0 bytes, 0 at EOF, -1 would block, -2 error (-3 TLS error). */
static ssize_t conn_read_some(struct upstream_conn *c)
{
    if (c->len == c->cap) {
        size_t cap = c->cap * 2;
        char *grown = cap <= UPSTREAM_HEAD_MAX ? realloc(c->buf, cap) : NULL;
        if (!grown)
            return -2;
        c->buf = grown;
        c->cap = cap;
    }
    size_t room = c->cap - c->len;
    if (c->ssl) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, c->buf + c->len, (int)(room > INT32_MAX ? INT32_MAX : room));
        if (r > 0)
            return r;
        int err = SSL_get_error(c->ssl, r);
        if (err == SSL_ERROR_WANT_READ)
            return -1;
        if (err == SSL_ERROR_WANT_WRITE) {
            set_write_interest(c, true);
            return -1;
        }
        if (err == SSL_ERROR_ZERO_RETURN)
            return 0;
        if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
            return errno == 0 ? 0 : -2; /* EOF without close_notify: treated as a close */
        return -3;
    }
    ssize_t n;
    do
        n = read(c->fd, c->buf + c->len, room);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : -2;
    return n;
}

static void conn_readable(struct upstream_conn *c)
{
    if (c->state == CONN_IDLE) {
        conn_close(c); /* the server closed it (or sent bytes nobody asked for) */
        return;
    }
    if (c->state == CONN_CONNECTING) {
        conn_on_connected(c);
        return;
    }
    if (c->state == CONN_HANDSHAKE) {
        conn_handshake(c);
        return;
    }
    if (c->call && c->sent < c->call->head_len + c->call->body_len && c->ssl) {
        conn_push_request(c); /* SSL_write may have waited for a read */
        if (!c->call || c->fd < 0)
            return;
    }
    for (;;) {
        ssize_t n = conn_read_some(c);
        if (n == -1)
            return;
        if (n == 0) {
            /* EOF: the end of a close-delimited body, else a reset. */
            if (c->head_done && c->framing == BODY_CLOSE) {
                c->len = 0;
                conn_end_call(c, true, UPSTREAM_ERR_OTHER);
            } else {
                conn_fail(c, UPSTREAM_ERR_RESET);
            }
            return;
        }
        if (n < 0) {
            if (n == -3)
                tls_report(c);
            /* A TLS alert before any answer (e.g. a refused client certificate under TLS
             * 1.3, which the server sends after our handshake completed) is a TLS error. */
            conn_fail(c, n == -3 && !c->call->answered ? UPSTREAM_ERR_TLS : UPSTREAM_ERR_RESET);
            return;
        }
        c->len += (size_t)n;
        if (!conn_process(c) || c->fd < 0)
            return;
        /* TLS may hold decrypted bytes the socket will not signal again. */
        if (!c->ssl || SSL_pending(c->ssl) == 0 || c->call->paused)
            return;
    }
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream_conn *c = arg;
    c->busy++;
    conn_readable(c);
    if (--c->busy == 0 && c->doomed)
        conn_free(c);
}

static void conn_on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream_conn *c = arg;
    c->busy++;
    if (c->state == CONN_CONNECTING)
        conn_on_connected(c);
    else if (c->state == CONN_HANDSHAKE)
        conn_handshake(c);
    else if (c->call && c->sent < c->call->head_len + c->call->body_len)
        conn_push_request(c);
    else if (c->call) {
        set_write_interest(c, false); /* SSL_read wanted to write: read again */
        conn_readable(c);
    } else
        set_write_interest(c, false);
    if (--c->busy == 0 && c->doomed)
        conn_free(c);
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream_conn *c = arg;
    c->busy++;
    if (c->state == CONN_IDLE)
        conn_close(c);
    else
        conn_fail(c, UPSTREAM_ERR_TIMEOUT); /* connect or TLS handshake too slow */
    if (--c->busy == 0 && c->doomed)
        conn_free(c);
}

/* ---- public ---------------------------------------------------------------------------- */

struct upstream *upstream_new(struct event_base *base)
{
    struct upstream *up = calloc(1, sizeof(*up));
    if (!up)
        return NULL;
    up->base = base;
    return up;
}

void upstream_free(struct upstream *up)
{
    if (!up)
        return;
    while (up->idle)
        conn_close(up->idle);
    free(up);
}

void upstream_start(struct upstream *up, const struct upstream_target *t,
                    struct upstream_call *call)
{
    call->up = up;
    call->target = t;
    call->answered = false;
    call->paused = false;
    struct upstream_conn *c = up->idle;
    while (c && strcmp(c->key, t->key) != 0)
        c = c->next;
    call->reused = c != NULL;
    if (c) {
        conn_unlink_idle(c);
        evtimer_del(c->timer);
    } else if (!(c = conn_new(up, t))) {
        call->conn = NULL;
        call->cb->done(call->arg, false, UPSTREAM_ERR_OTHER);
        return;
    }
    c->target = t;
    c->call = call;
    call->conn = c;
    c->head_done = false;
    c->len = 0;
    c->sent = 0;
    c->keep_alive = false;
    if (call->reused) {
        c->state = CONN_ACTIVE;
        conn_push_request(c);
    } else {
        conn_connect(c);
    }
}

void upstream_pause(struct upstream_call *call)
{
    if (call->paused || !call->conn)
        return;
    call->paused = true;
    event_del(call->conn->rev);
}

void upstream_resume(struct upstream_call *call)
{
    struct upstream_conn *c = call->conn;
    if (!call->paused || !c)
        return;
    call->paused = false;
    if (c->fd < 0)
        return;
    event_add(c->rev, NULL);
    if (c->ssl && SSL_pending(c->ssl) > 0)
        event_active(c->rev, EV_READ, 0);
}

void upstream_cancel(struct upstream_call *call)
{
    struct upstream_conn *c = call->conn;
    if (!c)
        return;
    c->call = NULL;
    call->conn = NULL;
    conn_close(c);
}
