/* proxy: one exchange, from the buffered client request to the one log line it leaves.
 *
 * evhttp hands us a complete request (headers and body). We summarise the body once
 * (jsonrpc.c), send the request on the worker's upstream pool (upstream.c), relay the
 * upstream status and headers as soon as they arrive, then every body chunk as it is read.
 * When the client reads slower than the upstream writes, reading the upstream is paused
 * until evhttp reports the client's output buffer drained, so memory per exchange stays
 * bounded. Whatever ends the exchange calls exchange_finish(), the only
 * place that writes the log line and frees the exchange.
 */
#include "mcpeek/proxy.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "mcpeek/accesslog.h"
#include "mcpeek/jsonrpc.h"
#include "mcpeek/sse.h"
#include "mcpeek/tls.h"
#include "mcpeek/upstream.h"
#include "mcpeek/worker.h"

/* Pause the upstream while this much is waiting in the client's socket buffer. */
#define CLIENT_HIGH_WATER (256 * 1024)
/* While waiting for a close-delimited response to reach the client: check interval. */
#define PROXY_FLUSH_POLL_MS 5
/* Bytes of a JSON answer kept to read its error.code for the log line. */
#define JSON_PEEK_MAX (64 * 1024)

struct exchange {
    struct worker *w;
    struct generation *gen;     /* one reference, for the exchange's whole life */
    struct evhttp_request *req; /* NULL once the client is gone */
    struct evhttp_connection *evcon;
    struct exchange *next, *prev; /* worker->live list */

    struct upstream_call call;
    bool calling;           /* `call` is running */
    struct strbuf req_head; /* the request head sent upstream */
    struct event *timer;    /* response timeout, then stream idle timeout */

    struct mcp_request rpc;
    bool has_body;
    OpenAiClientContext *session_ctx; /* from the session map, owned */
    char *session_id;                 /* Mcp-Session-Id: request's, else the response's */
    char *protocol_version;
    char *path;
    const char *method;
    const char *tls;    /* "TLSv1.3" on HTTPS, NULL on plain HTTP (static string) */
    evutil_socket_t fd; /* the client socket, key of worker->by_fd */
    char client_ip[64];

    struct timespec started;
    uint64_t started_ns;
    uint64_t sent_ns;
    double upstream_ms;

    int status; /* upstream status while parsing headers, then sent */
    bool headers_sent;
    bool paused;
    bool finished;
    bool response_has_session;
    enum response_kind kind;
    uint64_t bytes_in;
    uint64_t bytes_out;
    struct sse_counter sse; /* events relayed, for the log line */

    struct evbuffer *chunk; /* reused for every chunk sent */
    struct strbuf peek;     /* start of a JSON answer, for rpc_error_code */
    bool has_rpc_error;
    long long rpc_error_code;
    bool close_client;   /* end by closing: the body was cut short */
    bool delimited;      /* the response has a length or chunked framing (else: ends at close) */
    bool awaiting_flush; /* finished upstream-side, waiting for the client to get every byte */
    const char *error;
};

static void exchange_finish(struct exchange *ex);

/* ---- small helpers ------------------------------------------------------------------ */

static double ms_between(uint64_t from_ns, uint64_t to_ns)
{
    return (double)(to_ns - from_ns) / 1e6;
}

static bool header_is_hop_by_hop(const char *name)
{
    static const char *const hop[] = {"connection",          "keep-alive", "proxy-authenticate",
                                      "proxy-authorization", "te",         "trailer",
                                      "transfer-encoding",   "upgrade",    "proxy-connection"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (strcasecmp(name, hop[i]) == 0)
            return true;
    return false;
}

/* True when `name` is listed in a Connection header value (those are hop-by-hop too). */
static bool header_named_in(const char *connection, const char *name)
{
    if (!connection)
        return false;
    size_t n = strlen(name);
    const char *p = connection;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if ((size_t)(p - start) == n && strncasecmp(start, name, n) == 0)
            return true;
    }
    return false;
}

/* Values copied from requests are kept one UTF-8 character longer than the log shows, so
 * the log line can mark a cut value with "..." (accesslog caps at log_value_max_length). */
static size_t kept_len(const struct mcpeek_config *cfg)
{
    return cfg->log_value_max_length + 4;
}

/* Capped copy of a header value (NULL in, NULL out). */
static char *header_copy(const char *value, size_t max)
{
    return value ? openai_meta_copy(value, strlen(value), max) : NULL;
}

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    }
    return "OTHER";
}

/* evhttp frees a connection it is to close as soon as the response has left the guard's
 * filter, before the socket under it has written everything (see guard.c), so the tail of
 * the response would be lost. Once the response head (saying `Connection: close`) is out,
 * the closing is left to the client: it reads the whole delimited response, then closes.
 * A body delimited only by the close (HTTP/1.0, no length) must still be closed by us. */
static void leave_close_to_client(struct evhttp_request *req, bool delimited)
{
    if (!delimited)
        return;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    while (evhttp_remove_header(in, "Connection") == 0)
        ;
    while (evhttp_remove_header(evhttp_request_get_output_headers(req), "Connection") == 0)
        ;
    if (req->major == 1 && req->minor == 0)
        evhttp_add_header(in, "Connection", "keep-alive");
}

/* ---- responses mcpeek makes itself --------------------------------------------------- */

/* Sends `status` with a JSON-RPC error body naming the request id when known. */
static void send_rpc_error(struct exchange *ex, int status, int code, const char *message)
{
    if (!ex->req || ex->headers_sent)
        return;
    struct evbuffer *body = evbuffer_new();
    if (!body)
        return;
    struct strbuf msg;
    strbuf_init(&msg);
    strbuf_json_string(&msg, message, strlen(message), strlen(message));
    evbuffer_add_printf(
        body, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"error\":{\"code\":%d,\"message\":%s}}",
        ex->rpc.id_json ? ex->rpc.id_json : "null", code, msg.data ? msg.data : "\"error\"");
    strbuf_free(&msg);
    struct evkeyvalq *out = evhttp_request_get_output_headers(ex->req);
    evhttp_clear_headers(out);
    evhttp_add_header(out, "Content-Type", "application/json");
    if (status == 401)
        evhttp_add_header(out, "WWW-Authenticate", "Bearer");
    ex->status = status;
    ex->kind = RESPONSE_JSON;
    ex->has_rpc_error = true;
    ex->rpc_error_code = code;
    ex->bytes_out += evbuffer_get_length(body);
    ex->headers_sent = true;
    char length[24];
    snprintf(length, sizeof(length), "%zu", evbuffer_get_length(body));
    evhttp_add_header(out, "Content-Length", length);
    /* evhttp owns the request from here and frees it once the reply is written. */
    evhttp_connection_set_closecb(ex->evcon, NULL, NULL);
    evhttp_send_reply_start(ex->req, status, NULL);
    leave_close_to_client(ex->req, true);
    evhttp_send_reply_chunk(ex->req, body);
    evhttp_send_reply_end(ex->req);
    ex->req = NULL;
    evbuffer_free(body);
}

/* ---- upstream -> client ------------------------------------------------------------- */

static evutil_socket_t client_fd(struct evhttp_connection *evcon)
{
    return bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
}

static void index_exchange(struct exchange *ex, struct exchange *value)
{
    struct worker *w = ex->w;
    evutil_socket_t fd = ex->fd;
    if (fd < 0)
        return;
    if ((size_t)fd >= w->by_fd_len) {
        if (!value)
            return;
        size_t len = (size_t)fd * 2 + 64;
        struct exchange **grown = realloc(w->by_fd, len * sizeof(*grown));
        if (!grown)
            return; /* without the index, a paused transfer resumes at its next chunk */
        memset(grown + w->by_fd_len, 0, (len - w->by_fd_len) * sizeof(*grown));
        w->by_fd = grown;
        w->by_fd_len = len;
    }
    if (value || w->by_fd[fd] == ex)
        w->by_fd[fd] = value;
}

/* evhttp: everything queued for the client was handed on. `arg` is the worker, never the
 * exchange: evhttp may call this after the exchange ended, so it is looked up by socket. */
static void on_client_drained(struct evhttp_connection *evcon, void *arg)
{
    struct worker *w = arg;
    evutil_socket_t fd = client_fd(evcon);
    struct exchange *ex = fd >= 0 && (size_t)fd < w->by_fd_len ? w->by_fd[fd] : NULL;
    if (ex && ex->evcon == evcon && ex->paused && ex->calling) {
        ex->paused = false;
        upstream_resume(&ex->call);
    }
}

static void set_timer(struct exchange *ex, uint32_t ms)
{
    if (ms == 0) {
        evtimer_del(ex->timer);
        return;
    }
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ex->timer, &tv);
}

static enum response_kind classify_response(struct exchange *ex, struct evkeyvalq *headers)
{
    if (ex->status == 204 || ex->status == 304 || strcmp(ex->method, "HEAD") == 0)
        return RESPONSE_EMPTY;
    const char *ct = evhttp_find_header(headers, "Content-Type");
    if (ct && strncasecmp(ct, "text/event-stream", 17) == 0)
        return RESPONSE_SSE;
    const char *cl = evhttp_find_header(headers, "Content-Length");
    if (cl && strcmp(cl, "0") == 0)
        return RESPONSE_EMPTY;
    if (ct && strncasecmp(ct, "application/json", 16) == 0)
        return RESPONSE_JSON;
    return RESPONSE_OTHER;
}

/* Upstream headers are complete: send status and headers to the client now. */
static void relay_headers(struct exchange *ex)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(ex->req);
    ex->kind = classify_response(ex, out);
    const char *sid = evhttp_find_header(out, "Mcp-Session-Id");
    if (sid && !ex->session_id) {
        ex->session_id = header_copy(sid, kept_len(ex->gen->cfg));
        ex->response_has_session = true;
    }
    bool has_length = evhttp_find_header(out, "Content-Length") != NULL;
    ex->headers_sent = true;
    evtimer_del(ex->timer);
    metrics_upstream_ok(ex->w->shared->metrics, worker_now_ms());
    evhttp_send_reply_start(ex->req, ex->status, NULL);
    ex->delimited = has_length || ex->req->chunked;
    leave_close_to_client(ex->req, ex->delimited);
    /* evhttp keeps its request read timeout while it writes (it reads only to notice a
     * close): a long response or an idle SSE stream would be cut by it. While responding,
     * only a client that stops accepting bytes times out. */
    uint32_t ms = ex->gen->cfg->client_send_timeout_ms;
    struct timeval write_tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    bufferevent_set_timeouts(evhttp_connection_get_bufferevent(ex->evcon), NULL, &write_tv);
    if (ex->kind == RESPONSE_SSE) {
        metrics_stream_opened(ex->w->metrics);
        set_timer(ex, ex->gen->cfg->stream_idle_timeout_ms);
    }
}

/* Copies the upstream's end-to-end headers into the client response: hop-by-hop ones and
 * those the upstream named in Connection stay behind. */
static void copy_response_headers(struct exchange *ex, const struct http1_response *r)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(ex->req);
    struct strbuf *tmp = &ex->w->scratch;
    size_t conn_len;
    const char *conn = http1_find_header(r, "Connection", &conn_len);
    evhttp_clear_headers(out);
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct http1_header *h = &r->headers[i];
        strbuf_reset(tmp);
        strbuf_append(tmp, h->name, h->name_len);
        strbuf_append(tmp, "", 1);
        strbuf_append(tmp, h->value, h->value_len);
        if (tmp->oom)
            continue;
        const char *name = tmp->data, *value = tmp->data + h->name_len + 1;
        if (header_is_hop_by_hop(name) || (conn && http1_value_has_token(conn, conn_len, name)))
            continue;
        evhttp_add_header(out, name, value);
    }
}

static void on_upstream_head(void *arg, const struct http1_response *r)
{
    struct exchange *ex = arg;
    ex->upstream_ms = ms_between(ex->sent_ns, worker_now_ns());
    if (!ex->req)
        return;
    ex->status = r->status;
    copy_response_headers(ex, r);
    relay_headers(ex);
}

static void on_upstream_body(void *arg, const char *data, size_t len)
{
    struct exchange *ex = arg;
    if (!ex->req)
        return;
    if (ex->kind == RESPONSE_SSE)
        sse_counter_feed(&ex->sse, data, len);
    else if (ex->kind == RESPONSE_JSON && ex->peek.len < JSON_PEEK_MAX)
        strbuf_append(&ex->peek, data,
                      len < JSON_PEEK_MAX - ex->peek.len ? len : JSON_PEEK_MAX - ex->peek.len);
    ex->bytes_out += len;
    evbuffer_add(ex->chunk, data, len);
    evhttp_send_reply_chunk_with_cb(ex->req, ex->chunk, on_client_drained, ex->w);
    if (ex->kind == RESPONSE_SSE && ex->gen->cfg->stream_idle_timeout_ms)
        set_timer(ex, ex->gen->cfg->stream_idle_timeout_ms);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(ex->evcon);
    if (!ex->paused && evbuffer_get_length(bufferevent_get_output(bev)) > CLIENT_HIGH_WATER) {
        ex->paused = true;
        upstream_pause(&ex->call);
    }
}

static const char *upstream_error_name(enum upstream_error_kind kind)
{
    switch (kind) {
    case UPSTREAM_ERR_CONNECT:
        return "upstream_connect";
    case UPSTREAM_ERR_TIMEOUT:
        return "upstream_timeout";
    case UPSTREAM_ERR_TLS:
        return "upstream_tls";
    case UPSTREAM_ERR_RESET:
        return "upstream_reset";
    default:
        return "upstream_error";
    }
}

static void on_upstream_done(void *arg, bool ok, enum upstream_error_kind kind)
{
    struct exchange *ex = arg;
    ex->calling = false;
    if (ok) {
        exchange_finish(ex);
        return;
    }
    ex->error = upstream_error_name(kind);
    metrics_upstream_error(ex->w->metrics, kind);
    if (!ex->headers_sent) {
        bool timeout = kind == UPSTREAM_ERR_TIMEOUT;
        send_rpc_error(ex, timeout ? 504 : 502, -32000,
                       timeout ? "mcpeek: upstream timed out" : "mcpeek: upstream unavailable");
    } else if (ex->kind != RESPONSE_SSE) {
        ex->close_client = true; /* a cut JSON body must not look complete */
    }
    exchange_finish(ex);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct exchange *ex = arg;
    if (ex->awaiting_flush) {
        exchange_finish(ex);
        return;
    }
    if (ex->calling) {
        upstream_cancel(&ex->call);
        ex->calling = false;
    }
    if (!ex->headers_sent) {
        ex->error = "upstream_timeout";
        metrics_upstream_error(ex->w->metrics, UPSTREAM_ERR_TIMEOUT);
        send_rpc_error(ex, 504, -32000, "mcpeek: upstream did not answer in time");
    } else {
        ex->error = "stream_idle";
    }
    exchange_finish(ex);
}

/* ---- client -> upstream ------------------------------------------------------------- */

static void on_client_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct exchange *ex = arg;
    if (!ex->error)
        ex->error = "client_aborted";
    /* On EOF evhttp detaches an unfinished request from the dying connection and leaves it
     * to us; otherwise (server shutdown) the connection frees it itself. */
    if (ex->req && evhttp_request_get_connection(ex->req) == NULL)
        evhttp_request_free(ex->req);
    ex->req = NULL;
    exchange_finish(ex);
}

static bool method_has_body(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0;
}

/* The request line target: the MCP path maps to the upstream URL's path (the client's query
 * appended), every other path goes to the upstream's origin unchanged. */
static void put_request_target(struct strbuf *h, struct exchange *ex, const char *uri)
{
    const struct generation *gen = ex->gen;
    const char *query = strchr(uri, '?');
    if (strcmp(ex->path, gen->cfg->mcp_path) != 0) {
        strbuf_puts(h, uri);
        return;
    }
    strbuf_puts(h, gen->target.path);
    if (query) {
        strbuf_append(h, strchr(gen->target.path, '?') ? "&" : "?", 1);
        strbuf_puts(h, query + 1);
    }
}

static void put_header(struct strbuf *h, const char *name, const char *value)
{
    strbuf_puts(h, name);
    strbuf_append(h, ": ", 2);
    strbuf_puts(h, value);
    strbuf_append(h, "\r\n", 2);
}

/* Builds the upstream request head: the client's end-to-end headers, X-Forwarded-*, Host
 * and the body's length. Returns -1 when out of memory. */
static int build_request_head(struct exchange *ex, struct evkeyvalq *in, const char *uri,
                              size_t body_len)
{
    const struct mcpeek_config *cfg = ex->gen->cfg;
    struct strbuf *h = &ex->req_head;
    const char *conn = evhttp_find_header(in, "Connection");
    const char *xff = NULL;
    strbuf_puts(h, ex->method);
    strbuf_append(h, " ", 1);
    put_request_target(h, ex, uri);
    strbuf_puts(h, " HTTP/1.1\r\n");
    put_header(h, "Host",
               cfg->upstream_host_header ? cfg->upstream_host_header : ex->gen->target.authority);
    for (struct evkeyval *kv = in->tqh_first; kv; kv = kv->next.tqe_next) {
        if (header_is_hop_by_hop(kv->key) || header_named_in(conn, kv->key) ||
            strcasecmp(kv->key, "Host") == 0 || strcasecmp(kv->key, "Content-Length") == 0 ||
            strcasecmp(kv->key, "Expect") == 0)
            continue;
        if (strcasecmp(kv->key, "X-Forwarded-For") == 0) {
            xff = kv->value;
            continue;
        }
        if (strcasecmp(kv->key, "Authorization") == 0 && ex->gen->n_auth_tokens > 0)
            continue; /* mcpeek's own token: not the upstream's business */
        put_header(h, kv->key, kv->value);
    }
    strbuf_puts(h, "X-Forwarded-For: ");
    if (xff) {
        strbuf_puts(h, xff);
        strbuf_append(h, ", ", 2);
    }
    strbuf_puts(h, ex->client_ip);
    strbuf_append(h, "\r\n", 2);
    strbuf_puts(h, ex->tls ? "X-Forwarded-Proto: https\r\n" : "X-Forwarded-Proto: http\r\n");
    const char *host = evhttp_find_header(in, "Host");
    if (host)
        put_header(h, "X-Forwarded-Host", host);
    if (body_len > 0 || method_has_body(ex->method))
        strbuf_printf(h, "Content-Length: %zu\r\n", body_len);
    strbuf_append(h, "\r\n", 2);
    return h->oom ? -1 : 0;
}

static const struct upstream_callbacks upstream_callbacks = {
    .head = on_upstream_head,
    .body = on_upstream_body,
    .done = on_upstream_done,
};

/* Sends the request upstream. `done` may run before this returns: call it last. */
static void start_upstream(struct exchange *ex, const char *body, size_t body_len)
{
    const struct mcpeek_config *cfg = ex->gen->cfg;
    ex->call.cb = &upstream_callbacks;
    ex->call.arg = ex;
    ex->call.head = ex->req_head.data;
    ex->call.head_len = ex->req_head.len;
    ex->call.body = body;
    ex->call.body_len = body_len;
    ex->call.no_body_expected = strcmp(ex->method, "HEAD") == 0;
    ex->calling = true;
    ex->sent_ns = worker_now_ns();
    set_timer(ex, cfg->upstream_response_timeout_ms);
    upstream_start(ex->w->upstream, &ex->gen->target, &ex->call);
}

/* ---- the exchange ------------------------------------------------------------------- */

static void exchange_log(struct exchange *ex)
{
    struct worker *w = ex->w;
    struct exchange_record rec = {
        .started = ex->started,
        .duration_ms = ms_between(ex->started_ns, worker_now_ns()),
        .upstream_ms = ex->upstream_ms,
        .http_method = ex->method,
        .path = ex->path,
        .client_ip = ex->client_ip,
        .tls = ex->tls,
        .status = ex->headers_sent ? ex->status : 0,
        .bytes_in = ex->bytes_in,
        .bytes_out = ex->bytes_out,
        .rpc = ex->has_body ? &ex->rpc : NULL,
        .mcp_session_id = ex->session_id,
        .mcp_protocol_version = ex->protocol_version,
        .response = !ex->headers_sent                                    ? RESPONSE_NONE
                    : (ex->kind == RESPONSE_OTHER && ex->bytes_out == 0) ? RESPONSE_EMPTY
                                                                         : ex->kind,
        .sse_events = ex->sse.events,
        .error = ex->error,
        .session_openai = ex->session_ctx,
    };
    long long code;
    if (ex->has_rpc_error) {
        rec.has_rpc_error_code = true;
        rec.rpc_error_code = ex->rpc_error_code;
    } else if (ex->peek.len > 0 &&
               jsonrpc_response_error_code(ex->peek.data, ex->peek.len, &code)) {
        rec.has_rpc_error_code = true;
        rec.rpc_error_code = code;
    }
    worker_log(w, &rec, &ex->gen->log_opts);
    metrics_exchange(w->metrics, ex->has_body ? ex->rpc.method : NULL, ex->rpc.tool, rec.status,
                     rec.duration_ms / 1000.0, ex->bytes_in, ex->bytes_out);
}

static void remember_session(struct exchange *ex)
{
    struct session_map *map = ex->w->shared->sessions;
    if (!ex->session_id)
        return;
    if (strcmp(ex->method, "DELETE") == 0 && ex->status >= 200 && ex->status < 300)
        session_map_remove(map, ex->session_id);
    else if (ex->response_has_session && ex->rpc.openai)
        session_map_put(map, ex->session_id, ex->rpc.openai, worker_now_ms());
}

/* Response bytes still queued for the client (guard filter or socket bufferevent). */
static bool client_output_pending(const struct exchange *ex)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(ex->evcon);
    struct bufferevent *sock = bufferevent_get_underlying(bev);
    return evbuffer_get_length(bufferevent_get_output(bev)) > 0 ||
           (sock && evbuffer_get_length(bufferevent_get_output(sock)) > 0);
}

static void exchange_finish(struct exchange *ex)
{
    if (ex->finished)
        return;
    /* A body that ends at the close (HTTP/1.0 client, no length): evhttp shuts the socket
     * down as soon as we end the reply, so first let every byte leave (see guard.c). */
    ex->awaiting_flush = ex->req && ex->headers_sent && !ex->delimited && !ex->close_client &&
                         client_output_pending(ex);
    if (ex->awaiting_flush) {
        set_timer(ex, PROXY_FLUSH_POLL_MS);
        return;
    }
    ex->finished = true;
    struct worker *w = ex->w;
    index_exchange(ex, NULL);
    evtimer_del(ex->timer);
    if (ex->calling) {
        upstream_cancel(&ex->call);
        ex->calling = false;
    }
    if (ex->req) {
        evhttp_connection_set_closecb(ex->evcon, NULL, NULL);
        if (!ex->headers_sent) {
            send_rpc_error(ex, 502, -32000, "mcpeek: no response from upstream");
        } else if (ex->close_client) {
            /* Frees the request too; the client sees the body cut short. */
            evhttp_connection_free(ex->evcon);
        } else {
            /* Back to the keep-alive idle timeout for the next request. */
            uint32_t ms = ex->gen->cfg->client_header_timeout_ms + 1000; /* as server.c */
            struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
            evhttp_connection_set_timeout_tv(ex->evcon, &tv);
            bool chunked = ex->req->chunked;
            evhttp_send_reply_end(ex->req);
            /* The guard's filter may have reported the terminating chunk written before evhttp
             * installed its completion callback; run the write callback again (it does nothing
             * while bytes are still queued). */
            if (chunked)
                bufferevent_trigger(evhttp_connection_get_bufferevent(ex->evcon), EV_WRITE, 0);
        }
        ex->req = NULL;
    }
    if (ex->headers_sent && ex->kind == RESPONSE_SSE)
        metrics_stream_closed(w->metrics);
    remember_session(ex);
    exchange_log(ex);

    if (ex->prev)
        ex->prev->next = ex->next;
    else
        w->live = ex->next;
    if (ex->next)
        ex->next->prev = ex->prev;
    w->exchanges--;

    strbuf_free(&ex->req_head);
    event_free(ex->timer);
    evbuffer_free(ex->chunk);
    strbuf_free(&ex->peek);
    mcp_request_clear(&ex->rpc);
    openai_meta_free(ex->session_ctx);
    free(ex->session_id);
    free(ex->protocol_version);
    free(ex->path);
    generation_unref(ex->gen);
    free(ex);
}

void proxy_log_refused(struct worker *w, const char *method, const char *path,
                       const char *client_ip, int status, const char *error, size_t bytes_out)
{
    struct exchange_record rec = {
        .http_method = method,
        .path = path,
        .client_ip = client_ip,
        .status = status,
        .bytes_out = bytes_out,
        .response = RESPONSE_JSON,
        .has_rpc_error_code = true,
        .rpc_error_code = status == 503 ? -32000 : -32600,
        .error = error,
        .upstream_ms = -1,
    };
    clock_gettime(CLOCK_REALTIME, &rec.started);
    worker_log(w, &rec, &w->gen->log_opts);
    metrics_exchange(w->metrics, NULL, NULL, status, 0, 0, 0);
}

void proxy_abort_exchange(struct exchange *ex)
{
    ex->error = "shutdown";
    if (ex->calling) {
        upstream_cancel(&ex->call);
        ex->calling = false;
    }
    if (!ex->headers_sent)
        send_rpc_error(ex, 503, -32000, "mcpeek: shutting down");
    else if (ex->kind != RESPONSE_SSE || !ex->delimited)
        ex->close_client = true; /* never waits: the worker is stopping now */
    exchange_finish(ex);
}

/* Constant-time comparison: the time taken must not tell how much of a token matched. */
static bool token_equal(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (blen ? blen : 1)]);
    return diff == 0;
}

/* allowed_origins (the MCP spec's DNS-rebinding defence) and auth_tokens_file. */
static bool access_denied(struct exchange *ex, struct evkeyvalq *in)
{
    const struct generation *gen = ex->gen;
    const char *origin = evhttp_find_header(in, "Origin");
    if (origin && gen->cfg->n_allowed_origins > 0) {
        bool allowed = false;
        for (size_t i = 0; i < gen->cfg->n_allowed_origins && !allowed; i++)
            allowed = strcmp(origin, gen->cfg->allowed_origins[i]) == 0;
        if (!allowed) {
            ex->error = "forbidden_origin";
            send_rpc_error(ex, 403, -32000, "mcpeek: Origin not allowed");
            return true;
        }
    }
    if (gen->n_auth_tokens > 0) {
        const char *auth = evhttp_find_header(in, "Authorization");
        bool ok = false;
        if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
            const char *tok = auth + 7;
            size_t len = strlen(tok);
            /* Check every token, so the time does not depend on which one matched. */
            for (size_t i = 0; i < gen->n_auth_tokens; i++)
                ok |= token_equal(tok, len, gen->auth_tokens[i]);
        }
        if (!ok) {
            ex->error = "unauthorized";
            send_rpc_error(ex, 401, -32001, "mcpeek: missing or invalid bearer token");
            return true;
        }
    }
    return false;
}

/* Answers without contacting the upstream when strict_json rejects the body. */
static bool strict_rejects(struct exchange *ex)
{
    if (!ex->gen->cfg->strict_json || !ex->has_body)
        return false;
    if (ex->rpc.status == JSONRPC_INVALID_JSON) {
        ex->error = "invalid_json";
        send_rpc_error(ex, 400, -32700, "Parse error");
        return true;
    }
    if (ex->rpc.status == JSONRPC_INVALID_RPC) {
        ex->error = "invalid_request";
        send_rpc_error(ex, 400, -32600, "Invalid Request");
        return true;
    }
    return false;
}

void proxy_handle_request(struct evhttp_request *req, void *arg)
{
    struct worker *w = arg;
    struct exchange *ex = calloc(1, sizeof(*ex));
    if (!ex) {
        evhttp_send_error(req, 503, NULL);
        return;
    }
    ex->w = w;
    ex->gen = generation_ref(w->gen);
    const struct mcpeek_config *cfg = ex->gen->cfg;
    ex->req = req;
    ex->evcon = evhttp_request_get_connection(req);
    ex->fd = client_fd(ex->evcon);
    clock_gettime(CLOCK_REALTIME, &ex->started);
    ex->started_ns = worker_now_ns();
    ex->upstream_ms = -1;
    ex->method = method_name(evhttp_request_get_command(req));
    ex->timer = evtimer_new(w->base, on_timer, ex);
    ex->chunk = evbuffer_new();
    strbuf_init(&ex->peek);
    strbuf_init(&ex->req_head);
    w->exchanges++;
    ex->next = w->live;
    if (w->live)
        w->live->prev = ex;
    w->live = ex;

    const char *uri = evhttp_request_get_uri(req);
    size_t path_len = strcspn(uri, "?");
    ex->path = openai_meta_copy(uri, path_len, kept_len(cfg));
    char *peer = NULL;
    ev_uint16_t peer_port = 0;
    evhttp_connection_get_peer(ex->evcon, &peer, &peer_port);
    snprintf(ex->client_ip, sizeof(ex->client_ip), "%s", peer ? peer : "");
    ex->tls = tls_connection_version(evhttp_connection_get_bufferevent(ex->evcon));

    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    ex->session_id = header_copy(evhttp_find_header(in, "Mcp-Session-Id"), kept_len(cfg));
    ex->protocol_version =
        header_copy(evhttp_find_header(in, "MCP-Protocol-Version"), kept_len(cfg));

    struct evbuffer *input = evhttp_request_get_input_buffer(req);
    size_t body_len = evbuffer_get_length(input);
    const char *body = NULL;
    ex->bytes_in = body_len;
    if (body_len > 0) {
        body = (const char *)evbuffer_pullup(input, -1);
        ex->has_body = true;
        jsonrpc_parse(body, body_len, kept_len(cfg), &ex->rpc);
    }
    if (!ex->timer || !ex->chunk) {
        ex->error = "out_of_memory";
        send_rpc_error(ex, 503, -32000, "mcpeek: out of memory");
        exchange_finish(ex);
        return;
    }
    if (access_denied(ex, in) || strict_rejects(ex)) {
        exchange_finish(ex);
        return;
    }
    if (ex->session_id) {
        if (ex->rpc.openai)
            session_map_put(w->shared->sessions, ex->session_id, ex->rpc.openai, worker_now_ms());
        else
            ex->session_ctx = session_map_get(w->shared->sessions, ex->session_id, worker_now_ms());
    }
    evhttp_connection_set_closecb(ex->evcon, on_client_close, ex);
    index_exchange(ex, ex);
    if (build_request_head(ex, in, uri, body_len) < 0) {
        ex->error = "out_of_memory";
        send_rpc_error(ex, 503, -32000, "mcpeek: out of memory");
        exchange_finish(ex);
        return;
    }
    start_upstream(ex, body, body_len);
}
