/* proxy: one exchange, from the buffered client request to the one log line it leaves.
 *
 * evhttp hands us a complete request (headers and body). We summarise the body once
 * (jsonrpc.c), start a libcurl transfer on the worker's multi handle, relay the upstream
 * status and headers as soon as curl has them, then every body chunk as it arrives. When
 * the client reads slower than the upstream writes, the transfer is paused
 * (CURL_WRITEFUNC_PAUSE) until evhttp reports the client's output buffer drained, so memory
 * per exchange stays bounded. Whatever ends the exchange calls exchange_finish(), the only
 * place that writes the log line and frees the exchange.
 */
#include "mcpeek/proxy.h"

#include <curl/curl.h>
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

    CURL *easy; /* NULL when no transfer is running */
    struct upstream_job job;
    struct curl_slist *req_headers;
    char *url;
    struct event *timer; /* response timeout, then stream idle timeout */

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
    if (ex && ex->evcon == evcon && ex->paused && ex->easy) {
        ex->paused = false;
        /* May call on_body() right away with the data curl held back. */
        curl_easy_pause(ex->easy, CURLPAUSE_CONT);
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
    const char *conn = evhttp_find_header(out, "Connection");
    if (conn) {
        /* Headers the upstream named in Connection are hop-by-hop; drop them. */
        char *named = strdup(conn);
        struct evkeyval *kv, *next;
        for (kv = out->tqh_first; kv; kv = next) {
            next = kv->next.tqe_next;
            if (named && header_named_in(named, kv->key))
                evhttp_remove_header(out, kv->key);
        }
        free(named);
        while (evhttp_remove_header(out, "Connection") == 0)
            ;
    }
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

static size_t on_header(char *line, size_t size, size_t n, void *arg)
{
    struct exchange *ex = arg;
    size_t len = size * n;
    if (!ex->req)
        return 0;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        /* A new status line: anything collected for a 1xx answer is discarded. */
        const char *sp = memchr(line, ' ', len);
        ex->status = sp ? atoi(sp + 1) : 502;
        if (ex->upstream_ms < 0)
            ex->upstream_ms = ms_between(ex->sent_ns, worker_now_ns());
        evhttp_clear_headers(evhttp_request_get_output_headers(ex->req));
        return len;
    }
    if (len <= 2 && (line[0] == '\r' || line[0] == '\n')) {
        if (ex->status >= 200 && !ex->headers_sent)
            relay_headers(ex);
        return len;
    }
    if (ex->headers_sent || line[0] == ' ' || line[0] == '\t')
        return len; /* trailers and obsolete line folding are not relayed */
    const char *colon = memchr(line, ':', len);
    if (!colon)
        return len;
    char name[256];
    size_t name_len = (size_t)(colon - line);
    if (name_len == 0 || name_len >= sizeof(name))
        return len;
    memcpy(name, line, name_len);
    name[name_len] = '\0';
    const char *v = colon + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    if (header_is_hop_by_hop(name) && strcasecmp(name, "connection") != 0)
        return len;
    char *value = strndup(v, (size_t)(end - v));
    if (value) {
        evhttp_add_header(evhttp_request_get_output_headers(ex->req), name, value);
        free(value);
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct exchange *ex = arg;
    size_t len = size * n;
    if (!ex->req)
        return 0;
    if (!ex->headers_sent) {
        if (ex->status < 200)
            ex->status = 502;
        relay_headers(ex);
    }
    struct bufferevent *bev = evhttp_connection_get_bufferevent(ex->evcon);
    if (evbuffer_get_length(bufferevent_get_output(bev)) > CLIENT_HIGH_WATER) {
        ex->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
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
    return len;
}

static const char *classify_curl_error(CURLcode rc, enum upstream_error_kind *kind)
{
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        *kind = UPSTREAM_ERR_CONNECT;
        return "upstream_connect";
    case CURLE_OPERATION_TIMEDOUT:
        *kind = UPSTREAM_ERR_TIMEOUT;
        return "upstream_timeout";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CLIENTCERT:
        *kind = UPSTREAM_ERR_TLS;
        return "upstream_tls";
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
        *kind = UPSTREAM_ERR_RESET;
        return "upstream_reset";
    default:
        *kind = UPSTREAM_ERR_OTHER;
        return "upstream_error";
    }
}

static void on_upstream_done(void *arg, CURLcode rc)
{
    struct exchange *ex = arg;
    upstream_easy_put(ex->w->upstream, ex->easy);
    ex->easy = NULL;
    if (rc == CURLE_OK) {
        if (ex->req && !ex->headers_sent) {
            if (ex->status < 200)
                ex->status = 502;
            relay_headers(ex);
        }
        exchange_finish(ex);
        return;
    }
    enum upstream_error_kind kind;
    ex->error = classify_curl_error(rc, &kind);
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
    if (ex->easy) {
        upstream_cancel(ex->w->upstream, ex->easy);
        ex->easy = NULL;
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

static struct curl_slist *build_request_headers(struct exchange *ex, struct evkeyvalq *in, bool tls)
{
    struct curl_slist *list = NULL;
    const struct mcpeek_config *cfg = ex->gen->cfg;
    const char *conn = evhttp_find_header(in, "Connection");
    const char *xff = NULL;
    bool has_accept = false, has_ctype = false;
    struct strbuf *line = &ex->w->scratch; /* reused: no allocation per request */
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
        has_accept |= strcasecmp(kv->key, "Accept") == 0;
        has_ctype |= strcasecmp(kv->key, "Content-Type") == 0;
        strbuf_reset(line);
        strbuf_printf(line, "%s: %s", kv->key, kv->value);
        list = curl_slist_append(list, line->data);
    }
    /* Headers curl would add on its own unless told not to. */
    list = curl_slist_append(list, "Expect:");
    if (!has_accept)
        list = curl_slist_append(list, "Accept:");
    if (!has_ctype)
        list = curl_slist_append(list, "Content-Type:");
    strbuf_reset(line);
    strbuf_printf(line, "X-Forwarded-For: %s%s%s", xff ? xff : "", xff ? ", " : "", ex->client_ip);
    list = curl_slist_append(list, line->data);
    list = curl_slist_append(list, tls ? "X-Forwarded-Proto: https" : "X-Forwarded-Proto: http");
    const char *host = evhttp_find_header(in, "Host");
    if (host) {
        strbuf_reset(line);
        strbuf_printf(line, "X-Forwarded-Host: %s", host);
        list = curl_slist_append(list, line->data);
    }
    if (cfg->upstream_host_header) {
        strbuf_reset(line);
        strbuf_printf(line, "Host: %s", cfg->upstream_host_header);
        list = curl_slist_append(list, line->data);
    }
    return list;
}

/* The MCP path maps to the upstream URL; every other path to the upstream's origin. */
static char *build_url(struct exchange *ex, const char *uri)
{
    const struct generation *gen = ex->gen;
    const char *query = strchr(uri, '?');
    struct strbuf url;
    strbuf_init(&url);
    if (strcmp(ex->path, gen->cfg->mcp_path) == 0) {
        strbuf_puts(&url, gen->cfg->upstream);
        if (query)
            strbuf_printf(&url, "%c%s", strchr(gen->cfg->upstream, '?') ? '&' : '?', query + 1);
    } else {
        strbuf_puts(&url, gen->upstream_origin);
        strbuf_puts(&url, uri);
    }
    if (url.oom) {
        strbuf_free(&url);
        return NULL;
    }
    return url.data;
}

static int start_upstream(struct exchange *ex, enum evhttp_cmd_type cmd, const char *uri,
                          const char *body, size_t body_len)
{
    const struct mcpeek_config *cfg = ex->gen->cfg;
    ex->url = build_url(ex, uri);
    ex->easy = upstream_easy_get(ex->w->upstream);
    if (!ex->url || !ex->easy)
        return -1;
    CURL *e = ex->easy;
    curl_easy_setopt(e, CURLOPT_URL, ex->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->upstream_connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, ex);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, ex);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, cfg->upstream_tls_verify ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, cfg->upstream_tls_verify ? 2L : 0L);
    if (cfg->upstream_ca_file) {
        /* This CA only: without clearing CAPATH, Debian's libcurl would also trust the
         * system store. */
        curl_easy_setopt(e, CURLOPT_CAINFO, cfg->upstream_ca_file);
        curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
    }
    if (cfg->upstream_tls_cert) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, cfg->upstream_tls_cert);
        curl_easy_setopt(e, CURLOPT_SSLKEY, cfg->upstream_tls_key);
    }
    switch (cmd) {
    case EVHTTP_REQ_GET:
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        break;
    case EVHTTP_REQ_HEAD:
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        break;
    case EVHTTP_REQ_POST:
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        break;
    default:
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, ex->method);
        break;
    }
    if (cmd == EVHTTP_REQ_POST || body_len > 0) {
        /* Not copied: the request (and its input buffer) outlives the transfer. */
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, ex->req_headers);
    ex->job.done = on_upstream_done;
    ex->job.arg = ex;
    if (upstream_add(ex->w->upstream, e, &ex->job) < 0)
        return -1;
    ex->sent_ns = worker_now_ns();
    set_timer(ex, cfg->upstream_response_timeout_ms);
    return 0;
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
    if (ex->easy) {
        upstream_cancel(w->upstream, ex->easy);
        ex->easy = NULL;
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

    curl_slist_free_all(ex->req_headers);
    free(ex->url);
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
    if (ex->easy) {
        upstream_cancel(ex->w->upstream, ex->easy);
        ex->easy = NULL;
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
    ex->req_headers = build_request_headers(ex, in, ex->tls != NULL);
    if (start_upstream(ex, evhttp_request_get_command(req), uri, body, body_len) < 0) {
        ex->error = "upstream_error";
        send_rpc_error(ex, 502, -32000, "mcpeek: cannot start upstream request");
        exchange_finish(ex);
    }
}
