/* client: the front end's connections, read and written on raw sockets (or OpenSSL).
 *
 * The request is kept in one buffer, head then body, parsed in place; a chunked body is
 * decoded in place too (http1_chunked_in_place), so proxy.c gets one contiguous body. The
 * read event stays registered for the connection's whole life (no epoll_ctl per request);
 * during an exchange a readable socket only means a hang-up or a pipelined request, told
 * apart with MSG_PEEK. Output is queued and written at the end of the loop iteration that
 * produced it (the write event is activated, not added), so a head and a short body leave
 * in one write(); EPOLLOUT is armed only when the socket is full.
 *
 * A connection's states and what moves it (every state change is in this table):
 *
 *   state       event                                  next        written / done
 *   ----------  -------------------------------------  ----------  ---------------------------
 *   HANDSHAKE   handshake completes                    HEAD        (idle timer)
 *               handshake fails                        LINGER      nothing (counted, no line)
 *               handshake timer                        closed      nothing (counted)
 *   HEAD        bytes, head incomplete                 HEAD        (head timer from 1st byte)
 *               head complete, body complete           EXCHANGE    proxy_handle_request
 *               head complete, body to come            BODY        100 Continue if asked
 *               malformed / too large / refused        LINGER      4xx/503 + one log line
 *               head timer                             LINGER      408 + one log line
 *               EOF, error, idle timer                 closed      nothing (no exchange began)
 *   BODY        body complete                          EXCHANGE    proxy_handle_request
 *               bad chunk framing / too large          LINGER      400/413 + one log line
 *               body timer                             LINGER      408 + one log line
 *               EOF or error                           closed      one client_aborted line
 *   EXCHANGE    client_respond_end(complete)           RESPONDED   final chunk if chunked
 *               client_respond_end(cut short)          LAST_WRITE  (nothing more)
 *               EOF, error, send timer                 closed      ops->aborted (proxy logs)
 *               pipelined bytes readable               EXCHANGE    (read interest off)
 *   RESPONDED   output written, keep-alive             HEAD        next pipelined request
 *               output written, not keep-alive         LINGER      shutdown(SHUT_WR)
 *               EOF, error, send timer                 closed      nothing (line written)
 *   LINGER      output written                         LINGER      shutdown(SHUT_WR) (plain)
 *               EOF, output written                    closed
 *               EOF, output pending                    LAST_WRITE
 *               linger timer                           closed
 *   LAST_WRITE  output written, linger timer, error    closed
 *
 * LINGER reads and drops input until the client's EOF, so it reads our answer instead of a
 * reset (RFC 9112 9.6); LAST_WRITE reads nothing more. client_end() is the one way into both.
 */
#include "mcpeek/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mcpeek/access.h"
#include "mcpeek/http1.h"
#include "mcpeek/proxy.h"
#include "mcpeek/tls.h"
#include "mcpeek/worker.h"

/* First input buffer; grown as a request needs, shrunk back once it is answered. */
#define CLIENT_INPUT_INITIAL 4096
/* Buffers above this are freed after the exchange instead of being kept for the next one. */
#define CLIENT_BUFFER_KEEP (64 * 1024)
/* Room for chunk framing on top of max_body_size while a chunked upload is decoded. */
#define CLIENT_CHUNK_SLACK (16 * 1024)

enum client_state {
    CLIENT_HANDSHAKE,  /* TLS handshake in progress */
    CLIENT_HEAD,       /* waiting for (the rest of) a request head */
    CLIENT_BODY,       /* reading the body */
    CLIENT_EXCHANGE,   /* proxy.c has the request; the response may be under way */
    CLIENT_RESPONDED,  /* the response is complete; its last bytes are being written */
    CLIENT_LINGER,     /* closing: output drains, input is discarded until EOF or deadline */
    CLIENT_LAST_WRITE, /* closing: output drains, then the socket closes (nothing is read) */
};

enum client_timer {
    TIMER_NONE,
    TIMER_IDLE,      /* no byte of a next request yet: close silently */
    TIMER_HEAD,      /* head incomplete: 408 */
    TIMER_BODY,      /* body incomplete: 408 */
    TIMER_SEND,      /* output blocked without progress: the client is cut */
    TIMER_LINGER,    /* closing: stop waiting for the client's EOF */
    TIMER_HANDSHAKE, /* TLS handshake not done */
};

enum client_framing { FRAME_NONE, FRAME_LENGTH, FRAME_CHUNKED, FRAME_CLOSE };

static const char *const client_methods[] = {"GET",    "POST",    "HEAD", "PUT",
                                             "DELETE", "OPTIONS", "PATCH"};

struct client {
    struct worker *w;
    struct client *next, *prev; /* worker->clients */
    int fd;
    SSL *ssl; /* HTTPS only */
    enum client_state state;
    struct event *rev, *wev, *timer;
    bool rev_on;          /* rev is pending (off while a pipelined request waits, and closing) */
    bool wev_on;          /* wev is pending (socket was full) */
    bool flush_scheduled; /* wev activated for this loop iteration */
    bool write_wants_read;
    enum client_timer timer_kind;
    bool counted; /* holds one of shared->connections */
    bool over_limit;
    char ip[INET6_ADDRSTRLEN];

    /* input: the request (head, then decoded body), then whatever followed it */
    char *in;
    size_t in_len, in_cap;
    size_t scanned;  /* where the search for the head's end stopped */
    size_t head_len; /* once the head is parsed */
    size_t body_len; /* decoded body bytes at in + head_len */
    uint64_t expect_len;
    bool chunked;
    struct http1_chunked chunk;
    struct http1_request *pending;    /* parsed head while its body arrives, owned */
    const struct http1_request *head; /* the parsed head (local or pending), for refusals */
    const char *method;               /* static name of the parsed method, NULL if unknown */
    bool have_line;                   /* request line parsed: the two below are set */
    char line_method[16];             /* as sent, for refusals */
    char path[512];                   /* target without the query, for refusals */

    /* the exchange */
    const struct client_ops *ops;
    void *arg;
    bool keep_alive;   /* the connection may serve another request after this response */
    bool http10;       /* HTTP/1.0 request */
    bool head_request; /* HEAD: the response has no body */
    enum client_framing framing;
    bool watch_drain;

    /* output */
    char *out;
    size_t out_len, out_off, out_cap;
    unsigned busy;
    bool doomed;
};

static void client_flush(struct client *c);
static void client_process_input(struct client *c);
static void client_take_head(struct client *c, struct http1_request *rp, const char *host);

/* ---- small helpers --------------------------------------------------------------------- */

static void client_timer_set(struct client *c, enum client_timer kind, uint32_t ms)
{
    c->timer_kind = kind;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

static void client_timer_off(struct client *c)
{
    if (c->timer_kind != TIMER_NONE)
        evtimer_del(c->timer);
    c->timer_kind = TIMER_NONE;
}

static void client_read_interest(struct client *c, bool on)
{
    if (on == c->rev_on || c->fd < 0)
        return;
    if (on)
        event_add(c->rev, NULL);
    else
        event_del(c->rev);
    c->rev_on = on;
}

static void client_write_interest(struct client *c, bool on)
{
    if (on == c->wev_on || c->fd < 0)
        return;
    if (on)
        event_add(c->wev, NULL);
    else
        event_del(c->wev);
    c->wev_on = on;
}

/* Output is written at the end of this loop iteration (or when the socket has room). */
static void client_schedule_flush(struct client *c)
{
    if (c->flush_scheduled || c->wev_on || c->fd < 0)
        return;
    c->flush_scheduled = true;
    event_active(c->wev, EV_WRITE, 0);
}

static int client_reserve(char **buf, size_t *cap, size_t len, size_t more)
{
    if (*cap - len >= more)
        return 0;
    size_t want = *cap ? *cap : 1024;
    while (want - len < more)
        want *= 2;
    char *grown = realloc(*buf, want);
    if (!grown)
        return -1;
    *buf = grown;
    *cap = want;
    return 0;
}

static void client_out(struct client *c, const char *data, size_t len)
{
    if (c->fd < 0 || len == 0)
        return;
    if (client_reserve(&c->out, &c->out_cap, c->out_len, len) < 0) {
        c->keep_alive = false; /* out of memory: the response cannot be completed */
        return;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    client_schedule_flush(c);
}

static const char *client_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Error" : "Error";
    }
}

/* ---- closing ---------------------------------------------------------------------------- */

static void client_free(struct client *c)
{
    struct worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->counted)
        atomic_fetch_sub(&w->shared->connections, 1);
    event_free(c->rev);
    event_free(c->wev);
    event_free(c->timer);
    free(c->pending);
    free(c->in);
    free(c->out);
    free(c);
}

/* Closes the socket now; the struct goes once no handler of it is running. */
static void client_close(struct client *c)
{
    if (c->fd >= 0) {
        event_del(c->rev);
        event_del(c->wev);
        evtimer_del(c->timer);
        c->rev_on = c->wev_on = false;
        c->timer_kind = TIMER_NONE;
        if (c->ssl && c->state == CLIENT_HANDSHAKE) {
            tls_note_handshake_failure();
            metrics_tls_handshake_failure(c->w->metrics);
        }
        SSL_free(c->ssl);
        c->ssl = NULL;
        close(c->fd);
        c->fd = -1;
    }
    if (c->busy)
        c->doomed = true;
    else
        client_free(c);
}

/* The client is gone (or cut): the exchange hears it first, then the socket closes. */
static void client_gone(struct client *c)
{
    const struct client_ops *ops = c->ops;
    c->ops = NULL;
    if (ops)
        ops->aborted(c->arg);
    client_close(c);
}

/* The connection ends once what is queued is written. `read_to_eof`: input is then read and
 * dropped until the client closes (LINGER), so it reads our answer instead of a reset;
 * otherwise nothing more is read (LAST_WRITE). Either way no longer than a linger. */
static void client_end(struct client *c, bool read_to_eof)
{
    c->state = read_to_eof ? CLIENT_LINGER : CLIENT_LAST_WRITE;
    c->keep_alive = false;
    if (c->timer_kind != TIMER_LINGER) /* LINGER -> LAST_WRITE keeps its deadline */
        client_timer_set(c, TIMER_LINGER, c->w->gen->cfg->client_header_timeout_ms);
    client_read_interest(c, read_to_eof);
    client_schedule_flush(c);
}

/* ---- socket I/O (plain or TLS) ------------------------------------------------------------ */

/* >0 bytes, 0 EOF, -1 would block, -2 error. */
static ssize_t client_recv(struct client *c, char *buf, size_t len, bool peek)
{
    if (c->ssl) {
        ERR_clear_error();
        int n = len > INT32_MAX ? INT32_MAX : (int)len;
        int r = peek ? SSL_peek(c->ssl, buf, n) : SSL_read(c->ssl, buf, n);
        if (r > 0)
            return r;
        int err = SSL_get_error(c->ssl, r);
        if (err == SSL_ERROR_WANT_READ)
            return -1;
        if (err == SSL_ERROR_WANT_WRITE) {
            client_write_interest(c, true);
            return -1;
        }
        if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && errno == 0))
            return 0;
        return -2;
    }
    ssize_t r;
    do
        r = recv(c->fd, buf, len, peek ? MSG_PEEK : 0);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : -2;
    return r;
}

static ssize_t client_send(struct client *c, const char *buf, size_t len)
{
    if (c->ssl) {
        ERR_clear_error();
        int r = SSL_write(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
        if (r > 0)
            return r;
        int err = SSL_get_error(c->ssl, r);
        if (err == SSL_ERROR_WANT_WRITE)
            return -1;
        if (err == SSL_ERROR_WANT_READ) {
            c->write_wants_read = true;
            return -1;
        }
        return -2;
    }
    ssize_t r;
    do
        r = send(c->fd, buf, len, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : -2;
    return r;
}

/* ---- refusals ------------------------------------------------------------------------------ */

/* Method and path of a head that was not (or not fully) parsed, for the log line. */
static void client_sniff_request_line(const struct client *c, char *method, size_t msize,
                                      char *path, size_t psize)
{
    size_t n = c->in_len, i = 0, j = 0;
    method[0] = path[0] = '\0';
    while (i < n && c->in[i] != ' ' && c->in[i] != '\r' && c->in[i] != '\n' && c->in[i] &&
           j + 1 < msize)
        method[j++] = c->in[i++];
    method[j] = '\0';
    if (i >= n || c->in[i] != ' ')
        return;
    i++;
    j = 0;
    while (i < n && c->in[i] != ' ' && c->in[i] != '?' && c->in[i] != '\r' && c->in[i] != '\n' &&
           c->in[i] && j + 1 < psize)
        path[j++] = c->in[i++];
    path[j] = '\0';
}

/* Body bytes received for the current request (decoded so far, plus what awaits decoding). */
static uint64_t client_body_received(const struct client *c)
{
    return c->head_len && c->in_len > c->head_len ? c->in_len - c->head_len : 0;
}

/* The log line of a request that got no answer from proxy.c: a refusal, or (status 0) a
 * client gone in the middle of its upload. */
static void client_log_refusal(struct client *c, int status, int code, const char *error,
                               size_t bytes_out, enum access_verdict verdict)
{
    char method[16], path[512];
    if (c->have_line) {
        snprintf(method, sizeof(method), "%s", c->line_method);
        snprintf(path, sizeof(path), "%s", c->path);
    } else {
        client_sniff_request_line(c, method, sizeof(method), path, sizeof(path));
    }
    struct proxy_refusal r = {
        .method = method,
        .path = path,
        .client_ip = c->ip,
        .tls = c->ssl ? SSL_get_version(c->ssl) : NULL,
        .status = status,
        .rpc_code = code,
        .error = error,
        .bytes_in = client_body_received(c),
        .bytes_out = bytes_out,
        .head = c->head,
        .verdict = verdict,
    };
    proxy_log_refused(c->w, &r);
}

/* Answers with a JSON-RPC error, logs the refusal and closes after the answer. */
static void client_refuse_with(struct client *c, int status, int code, const char *error,
                               const char *message, enum access_verdict verdict)
{
    const char *reason = client_reason(status);
    char body[256];
    int blen =
        snprintf(body, sizeof(body),
                 "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":%d,\"message\":\"%s\"}}",
                 code, message ? message : reason);
    client_log_refusal(c, status, code, error, (size_t)blen, verdict);
    char response[512];
    int rlen =
        snprintf(response, sizeof(response),
                 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n%s"
                 "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                 status, reason, status == 401 ? "WWW-Authenticate: Bearer\r\n" : "", blen, body);
    client_out(c, response, (size_t)rlen);
    client_end(c, true);
}

static void client_refuse(struct client *c, int status, int code, const char *error)
{
    client_refuse_with(c, status, code, error, NULL, ACCESS_OK);
}

/* ---- reading requests ------------------------------------------------------------------- */

/* Copies s[0..len) cut to fit `size` with its NUL (refusal log lines cap values anyway). */
static void client_copy_text(char *dst, size_t size, const char *s, size_t len)
{
    if (len >= size)
        len = size - 1;
    memcpy(dst, s, len);
    dst[len] = '\0';
}

static const char *client_known_method(const char *m)
{
    for (size_t i = 0; i < sizeof(client_methods) / sizeof(client_methods[0]); i++)
        if (strcmp(m, client_methods[i]) == 0)
            return client_methods[i];
    return NULL;
}

/* The request is complete: proxy.c takes it from here. */
static void client_dispatch(struct client *c, const struct http1_request *r)
{
    client_timer_off(c);
    c->head = NULL;
    c->state = CLIENT_EXCHANGE;
    c->framing = FRAME_NONE;
    proxy_handle_request(c->w, c, r, c->method, c->body_len ? c->in + c->head_len : NULL,
                         c->body_len);
}

/* Body bytes so far: 1 when the body is complete (decoded in place after the head), 0 when
 * more is needed, -1 after a refusal. */
static int client_body_progress(struct client *c)
{
    if (!c->chunked) {
        if (c->in_len - c->head_len < c->expect_len)
            return 0;
        c->body_len = (size_t)c->expect_len;
        return 1;
    }
    int rc = http1_chunked_in_place(&c->chunk, c->in, c->head_len, &c->body_len, &c->in_len,
                                    c->w->gen->cfg->max_body_size);
    if (rc == -1)
        client_refuse(c, 400, -32600, "bad_request");
    else if (rc == -2)
        client_refuse(c, 413, -32600, "body_too_large");
    return rc < 0 ? -1 : rc;
}

static void client_parse_head(struct client *c, size_t end)
{
    struct http1_request r;
    memset(&r, 0, offsetof(struct http1_request, headers));
    int rc = http1_parse_request_head(c->in, end, &r);
    if (r.method) {
        c->have_line = true;
        client_copy_text(c->line_method, sizeof(c->line_method), r.method, strlen(r.method));
        client_copy_text(c->path, sizeof(c->path), r.target, strcspn(r.target, "?"));
    }
    if (rc == -2) {
        client_refuse(c, 431, -32600, "headers_too_large");
        return;
    }
    if (rc < 0) {
        client_refuse(c, 400, -32600, "bad_request");
        return;
    }
    c->method = client_known_method(r.method);
    if (!c->method) {
        client_refuse(c, 405, -32600, "method_not_allowed");
        return;
    }
    /* Ambiguous framing (two lengths, a length beside chunked, Transfer-Encoding on 1.0, Host
     * missing, repeated or not the absolute target's): that is how requests are smuggled
     * past one parser and read differently by the next, so it is refused. */
    struct http1_framing framing;
    if (http1_request_framing(&r, &framing) != NULL) {
        client_refuse(c, 400, -32600, "bad_request");
        return;
    }
    c->chunked = framing.chunked;
    c->expect_len = framing.length;
    client_copy_text(c->path, sizeof(c->path), r.target, strcspn(r.target, "?"));
    /* From here on a refusal's log line can say whose request it was. */
    c->head_len = end;
    c->head = &r;
    client_take_head(c, &r, framing.host);
    c->head = c->pending; /* NULL unless the body is still on its way */
}

/* A well-formed head: access checks, body limits, then the body or the exchange. */
static void client_take_head(struct client *c, struct http1_request *rp, const char *host)
{
    const struct mcpeek_config *cfg = c->w->gen->cfg;
    /* Host, Origin and token before anything else: a refused client uploads no body (no
     * 100 Continue) and nothing of it is parsed. */
    enum access_verdict verdict =
        access_check(&c->w->gen->access, host, http1_request_header(rp, "Origin"),
                     http1_request_header(rp, "Authorization"));
    if (verdict != ACCESS_OK) {
        client_refuse_with(c, access_verdict_status(verdict), access_verdict_rpc_code(verdict),
                           access_verdict_error(verdict), access_verdict_message(verdict), verdict);
        return;
    }
    if (c->expect_len > cfg->max_body_size) {
        client_refuse(c, 413, -32600, "body_too_large");
        return;
    }
    c->http10 = rp->minor == 0;
    const char *conn = http1_request_header(rp, "Connection");
    size_t conn_len = conn ? strlen(conn) : 0;
    c->keep_alive = c->http10 ? conn && http1_value_has_token(conn, conn_len, "keep-alive")
                              : !(conn && http1_value_has_token(conn, conn_len, "close"));
    c->head_request = strcmp(c->method, "HEAD") == 0;
    c->body_len = 0;
    memset(&c->chunk, 0, sizeof(c->chunk));
    c->chunk.strict = true;
    int done = client_body_progress(c);
    if (done < 0)
        return;
    if (done) {
        client_dispatch(c, rp);
        return;
    }
    /* The body is still on its way: keep the parsed head (its strings live in c->in). */
    c->pending = malloc(sizeof(*c->pending));
    if (!c->pending) {
        client_close(c);
        return;
    }
    *c->pending = *rp;
    c->state = CLIENT_BODY;
    client_timer_set(c, TIMER_BODY, cfg->client_body_timeout_ms);
    client_read_interest(c, true);
    const char *expect = http1_request_header(rp, "Expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && !c->http10) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        client_out(c, cont, sizeof(cont) - 1);
    }
}

static void client_read_body(struct client *c)
{
    int done = client_body_progress(c);
    if (done == 0)
        client_read_interest(c, true); /* client_fill stops at the limit; decoding made room */
    if (done != 1)
        return;
    struct http1_request *r = c->pending;
    c->pending = NULL;
    client_dispatch(c, r);
    free(r);
}

/* Grows the input buffer; a parsed head waiting for its body points into it, so its
 * fields are carried over as offsets. */
static int client_grow_input(struct client *c, size_t more)
{
    struct http1_request_offsets offsets;
    if (c->pending)
        http1_request_offsets_save(c->pending, c->in, &offsets);
    if (client_reserve(&c->in, &c->in_cap, c->in_len, more) < 0)
        return -1;
    if (c->pending)
        http1_request_offsets_restore(c->pending, c->in, &offsets);
    return 0;
}

/* Largest input the current request may still need. */
static size_t client_input_limit(const struct client *c)
{
    const struct mcpeek_config *cfg = c->w->gen->cfg;
    if (c->state == CLIENT_BODY)
        return c->head_len + cfg->max_body_size + CLIENT_CHUNK_SLACK;
    return cfg->max_header_size + 4;
}

static void client_process_input(struct client *c)
{
    const struct mcpeek_config *cfg = c->w->gen->cfg;
    if (c->state == CLIENT_BODY) {
        if (c->pending)
            client_read_body(c);
        return;
    }
    if (c->state != CLIENT_HEAD || c->in_len == 0)
        return;
    if (c->over_limit) {
        client_refuse(c, 503, -32000, "too_many_connections");
        return;
    }
    size_t end = http1_head_end(c->in, c->in_len, c->scanned);
    c->scanned = c->in_len;
    if (end == 0 || end > cfg->max_header_size + 3) {
        if (c->in_len > cfg->max_header_size) {
            client_refuse(c, 431, -32600, "headers_too_large");
            return;
        }
        if (c->timer_kind != TIMER_HEAD)
            client_timer_set(c, TIMER_HEAD, cfg->client_header_timeout_ms);
        return;
    }
    client_parse_head(c, end);
}

/* Reads what the socket has into the input buffer. Returns false when the client is gone
 * or was refused. */
static bool client_fill(struct client *c)
{
    for (;;) {
        size_t limit = client_input_limit(c);
        if (c->in_len >= limit) {
            client_read_interest(c, false); /* the request is complete or refused by now */
            return true;
        }
        size_t want = c->in_cap - c->in_len;
        if (want == 0) {
            size_t more = c->in_cap ? c->in_cap : CLIENT_INPUT_INITIAL;
            if (more > limit - c->in_len)
                more = limit - c->in_len;
            if (client_grow_input(c, more) < 0) {
                client_close(c);
                return false;
            }
            want = c->in_cap - c->in_len;
        }
        if (want > limit - c->in_len)
            want = limit - c->in_len;
        ssize_t n = client_recv(c, c->in + c->in_len, want, false);
        if (n == -1)
            return true;
        if (n <= 0) {
            /* EOF or error: between requests a normal close; mid-head nothing to answer. A
             * client gone during its upload started an exchange: it gets its line. */
            if (c->state == CLIENT_BODY)
                client_log_refusal(c, 0, 0, "client_aborted", 0, ACCESS_OK);
            client_close(c);
            return false;
        }
        c->in_len += (size_t)n;
        if ((size_t)n < want && !c->ssl)
            return true; /* the socket is drained: no second read() to learn that */
    }
}

/* ---- event handlers ------------------------------------------------------------------------ */

static void client_handshake(struct client *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        client_write_interest(c, false);
        c->state = CLIENT_HEAD;
        client_timer_set(c, TIMER_IDLE, c->w->gen->cfg->client_header_timeout_ms);
        return;
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        client_write_interest(c, err == SSL_ERROR_WANT_WRITE);
        return;
    }
    /* Not TLS (plain HTTP on the TLS port, a scanner) or a broken handshake: counted, no
     * log line, and closed with a FIN after reading what was sent, not with a reset. */
    tls_note_handshake_failure();
    metrics_tls_handshake_failure(c->w->metrics);
    SSL_free(c->ssl);
    c->ssl = NULL;
    client_write_interest(c, false);
    client_end(c, true);
}

/* During an exchange: a readable socket is a hang-up or the next (pipelined) request. */
static void client_check_hangup(struct client *c)
{
    char byte;
    ssize_t n = client_recv(c, &byte, 1, true);
    if (n == -1)
        return;
    if (n > 0) {
        client_read_interest(c, false); /* read it after this response */
        return;
    }
    client_gone(c);
}

static void client_on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct client *c = arg;
    c->busy++;
    if (c->write_wants_read) {
        c->write_wants_read = false;
        client_flush(c);
    }
    if (c->fd < 0) {
        /* closed by the flush */
    } else if (c->state == CLIENT_HANDSHAKE) {
        client_handshake(c);
        if (c->fd >= 0 && c->state == CLIENT_HEAD && client_fill(c))
            client_process_input(c);
    } else if (c->state == CLIENT_EXCHANGE || c->state == CLIENT_RESPONDED) {
        client_check_hangup(c);
    } else if (c->state == CLIENT_LINGER) {
        char sink[4096];
        ssize_t n;
        while ((n = client_recv(c, sink, sizeof(sink), false)) > 0)
            ;
        if (n != -1 && c->out_off == c->out_len)
            client_close(c);
        else if (n != -1)
            client_end(c, false); /* EOF: close once the output is written */
    } else if (c->state == CLIENT_LAST_WRITE) {
        /* Nothing is read any more: reading was on only for a TLS write that wanted a read,
         * retried above (a level-triggered event left on would fire without end). */
        if (!c->write_wants_read)
            client_read_interest(c, false);
    } else if (client_fill(c)) {
        if (c->timer_kind == TIMER_IDLE && c->in_len > 0)
            client_timer_off(c);
        client_process_input(c);
    }
    if (--c->busy == 0 && c->doomed)
        client_free(c);
}

/* The response was written completely: serve the next request, or close. */
static void client_next_request(struct client *c)
{
    if (!c->keep_alive) {
        if (!c->ssl)
            shutdown(c->fd, SHUT_WR);
        client_end(c, true);
        return;
    }
    size_t used = c->head_len + c->body_len;
    size_t rest = c->in_len - used;
    memmove(c->in, c->in + used, rest);
    c->in_len = rest;
    if (c->in_cap > CLIENT_BUFFER_KEEP && rest == 0) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
    if (c->out_cap > CLIENT_BUFFER_KEEP) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    c->head_len = c->body_len = c->scanned = 0;
    c->method = NULL;
    c->have_line = false;
    c->state = CLIENT_HEAD;
    client_timer_set(c, TIMER_IDLE, c->w->gen->cfg->client_header_timeout_ms);
    client_read_interest(c, true);
    if (rest > 0) {
        client_timer_off(c);
        client_process_input(c);
    } else if (c->ssl && SSL_pending(c->ssl) > 0) {
        event_active(c->rev, EV_READ, 0); /* decrypted bytes the socket will not signal */
    }
}

static void client_flush(struct client *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = client_send(c, c->out + c->out_off, c->out_len - c->out_off);
        if (n == -1) {
            /* The retry passes the same bytes from c->out + out_off, perhaps more of them and
             * at a new address (tls.c allows both); a TLS write that waits for a read is
             * retried from client_on_read, so reading must be on. */
            client_write_interest(c, !c->write_wants_read);
            if (c->write_wants_read)
                client_read_interest(c, true);
            if (c->timer_kind != TIMER_SEND &&
                (c->state == CLIENT_EXCHANGE || c->state == CLIENT_RESPONDED))
                client_timer_set(c, TIMER_SEND, c->w->gen->cfg->client_send_timeout_ms);
            return;
        }
        if (n < 0) {
            client_gone(c);
            return;
        }
        c->out_off += (size_t)n;
        if (c->timer_kind == TIMER_SEND) /* progress: the deadline starts again */
            client_timer_set(c, TIMER_SEND, c->w->gen->cfg->client_send_timeout_ms);
    }
    c->out_off = c->out_len = 0;
    client_write_interest(c, false);
    if (c->timer_kind == TIMER_SEND)
        client_timer_off(c);
    if (c->watch_drain && c->ops) {
        c->watch_drain = false;
        /* The exchange resumes its upstream, and libcurl may hand over the bytes it held at
         * once: more output, maybe even the end of the response. Write that first. */
        c->ops->drained(c->arg);
        if (c->fd < 0)
            return;
        if (c->out_off < c->out_len) {
            client_schedule_flush(c);
            return;
        }
    }
    if (c->state == CLIENT_LAST_WRITE) {
        client_close(c);
    } else if (c->state == CLIENT_LINGER) {
        if (!c->ssl)
            shutdown(c->fd, SHUT_WR); /* our answer is out: the client sees its end */
    } else if (c->state == CLIENT_RESPONDED) {
        client_next_request(c);
    }
}

static void client_on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct client *c = arg;
    c->busy++;
    c->flush_scheduled = false;
    if (c->fd >= 0 && c->state == CLIENT_HANDSHAKE)
        client_handshake(c);
    else if (c->fd >= 0)
        client_flush(c);
    if (--c->busy == 0 && c->doomed)
        client_free(c);
}

static void client_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct client *c = arg;
    enum client_timer kind = c->timer_kind;
    c->timer_kind = TIMER_NONE;
    c->busy++;
    switch (kind) {
    case TIMER_HEAD:
    case TIMER_BODY:
        client_refuse(c, 408, -32600, "client_timeout");
        break;
    case TIMER_SEND:
        client_gone(c);
        break;
    default: /* idle, linger, handshake: close quietly */
        client_close(c);
        break;
    }
    if (--c->busy == 0 && c->doomed)
        client_free(c);
}

/* ---- public ------------------------------------------------------------------------------ */

void client_accept(struct worker *w, int fd, bool tls, const struct sockaddr *peer)
{
    struct client *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->w = w;
    c->fd = fd;
    c->rev = event_new(w->base, fd, EV_READ | EV_PERSIST, client_on_read, c);
    c->wev = event_new(w->base, fd, EV_WRITE | EV_PERSIST, client_on_write, c);
    c->timer = evtimer_new(w->base, client_on_timer, c);
    c->next = w->clients;
    if (w->clients)
        w->clients->prev = c;
    w->clients = c;
    unsigned max = w->gen->cfg->max_connections;
    unsigned now = atomic_fetch_add(&w->shared->connections, 1) + 1;
    c->counted = true;
    c->over_limit = max && now > max;
    if (peer->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, c->ip, sizeof(c->ip));
    else if (peer->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, c->ip, sizeof(c->ip));
    if (!c->rev || !c->wev || !c->timer) {
        client_close(c);
        return;
    }
    if (tls) {
        c->ssl = w->gen->tls_ctx ? SSL_new(w->gen->tls_ctx) : NULL;
        if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
            client_close(c);
            return;
        }
        SSL_set_accept_state(c->ssl);
        c->state = CLIENT_HANDSHAKE;
        client_timer_set(c, TIMER_HANDSHAKE, w->gen->cfg->client_header_timeout_ms);
    } else {
        c->state = CLIENT_HEAD;
        client_timer_set(c, TIMER_IDLE, w->gen->cfg->client_header_timeout_ms);
    }
    client_read_interest(c, true);
}

void client_attach(struct client *c, const struct client_ops *ops, void *arg)
{
    c->ops = ops;
    c->arg = arg;
}

void client_respond_start(struct client *c, int status, const char *headers, size_t headers_len,
                          int64_t content_length)
{
    char line[160];
    bool no_body = c->head_request || status == 204 || status == 304 || status < 200;
    if (no_body)
        c->framing = FRAME_NONE;
    else if (content_length >= 0)
        c->framing = FRAME_LENGTH;
    else if (!c->http10)
        c->framing = FRAME_CHUNKED;
    else
        c->framing = FRAME_CLOSE;
    if (c->framing == FRAME_CLOSE || atomic_load(&c->w->stop_accepting))
        c->keep_alive = false;
    const char *reason = client_reason(status);
    size_t reason_len = strlen(reason), n = 0;
    if (status < 100 || status > 999)
        status = 502;
    memcpy(line, "HTTP/1.1 ", 9);
    line[9] = (char)('0' + status / 100);
    line[10] = (char)('0' + status / 10 % 10);
    line[11] = (char)('0' + status % 10);
    line[12] = ' ';
    memcpy(line + 13, reason, reason_len);
    memcpy(line + 13 + reason_len, "\r\n", 2);
    client_out(c, line, 15 + reason_len);
    client_out(c, headers, headers_len);
    if (c->framing == FRAME_CHUNKED) {
        static const char te[] = "Transfer-Encoding: chunked\r\n";
        client_out(c, te, sizeof(te) - 1);
    } else if (content_length >= 0 && status != 204) {
        char digits[DECIMAL_MAX];
        n = decimal_write(digits, (uint64_t)content_length);
        static const char cl[] = "Content-Length: ";
        client_out(c, cl, sizeof(cl) - 1);
        client_out(c, digits, n);
        client_out(c, "\r\n", 2);
    }
    if (!c->keep_alive) {
        static const char close_hdr[] = "Connection: close\r\n\r\n";
        client_out(c, close_hdr, sizeof(close_hdr) - 1);
    } else if (c->http10) {
        static const char ka[] = "Connection: keep-alive\r\n\r\n";
        client_out(c, ka, sizeof(ka) - 1);
    } else {
        client_out(c, "\r\n", 2);
    }
}

void client_respond_body(struct client *c, const char *data, size_t len)
{
    if (len == 0 || c->framing == FRAME_NONE)
        return;
    if (c->framing == FRAME_CHUNKED) {
        char size[24];
        size_t n = sizeof(size) - 2, v = len;
        size[n] = '\r';
        size[n + 1] = '\n';
        do
            size[--n] = "0123456789abcdef"[v & 15];
        while ((v >>= 4) != 0);
        client_out(c, size + n, sizeof(size) - n);
        client_out(c, data, len);
        client_out(c, "\r\n", 2);
        return;
    }
    client_out(c, data, len);
}

void client_respond_end(struct client *c, bool complete)
{
    c->ops = NULL;
    c->watch_drain = false;
    if (!complete) {
        /* No final chunk: the client sees the body cut short. Close once what is queued was
         * written, without reading on; a client that does not read it is not waited for
         * longer than a linger. */
        client_end(c, false);
        return;
    }
    if (c->framing == FRAME_CHUNKED) {
        static const char last[] = "0\r\n\r\n";
        client_out(c, last, sizeof(last) - 1);
    }
    c->state = CLIENT_RESPONDED;
    client_schedule_flush(c);
}

size_t client_output_pending(const struct client *c)
{
    return c->out_len - c->out_off;
}

void client_watch_drain(struct client *c)
{
    c->watch_drain = true;
}

const char *client_peer_ip(const struct client *c)
{
    return c->ip;
}

const char *client_tls_version(const struct client *c)
{
    return c->ssl ? SSL_get_version(c->ssl) : NULL;
}

bool client_all_flushed(const struct worker *w)
{
    for (const struct client *c = w->clients; c; c = c->next)
        if (c->fd >= 0 && c->out_off < c->out_len)
            return false;
    return true;
}

void client_close_all(struct worker *w)
{
    while (w->clients) {
        struct client *c = w->clients;
        c->ops = NULL;
        c->busy = 0;
        client_close(c);
    }
}
