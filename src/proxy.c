/* proxy: one exchange, from the buffered client request to the one log line it leaves.
 *
 * client.c hands us a complete request (head and body). We summarise the body once
 * (jsonrpc.c), send the request on the worker's upstream pool (upstream.c), relay the
 * upstream status and headers as soon as they arrive, then every body chunk as it is read.
 * When the client reads slower than the upstream writes, reading the upstream is paused
 * until the client's output is written, so memory per exchange stays bounded. Whatever ends the
 * exchange calls exchange_finish(), the only place that writes the log line and frees the exchange.
 */
#include "mcpeek/proxy.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "mcpeek/accesslog.h"
#include "mcpeek/client.h"
#include "mcpeek/conversation.h"
#include "mcpeek/http1.h"
#include "mcpeek/jsonrpc.h"
#include "mcpeek/ratelimit.h"
#include "mcpeek/rendezvous.h"
#include "mcpeek/response_inspect.h"
#include "mcpeek/shared_state.h"
#include "mcpeek/upstream.h"
#include "mcpeek/worker.h"

/* Pause reading the upstream while this much waits in the client's output. */
#define CLIENT_HIGH_WATER (256 * 1024)
/* Bodies above this make libcurl ask for 100 Continue (its EXPECT_100_THRESHOLD, 1 MiB). */
#define PROXY_CURL_EXPECT_THRESHOLD (1024 * 1024)
/* Ended exchanges kept per worker for reuse, and the largest buffer a kept one may hold. */
#define PROXY_SPARE_EXCHANGES 256
#define PROXY_SPARE_BUFFER_MAX (8 * 1024)

struct exchange {
    struct worker *w;
    struct generation *gen;       /* one reference, for the exchange's whole life */
    struct client *client;        /* NULL once the client is gone */
    struct exchange *next, *prev; /* worker->live list */

    struct upstream_call call;
    struct upstream_target *target; /* where it goes (one of gen->targets), NULL before */
    bool calling;                   /* `call` is running */
    struct strbuf req_head;         /* URL, then each header line sent upstream, NUL separated */
    struct curl_slist *req_hdr;     /* libcurl's list over the lines of req_head, owned */
    size_t req_hdr_cap;
    size_t req_lines, req_lines_end; /* the client's header lines in req_head */
    struct event *timer;             /* response timeout, then stream idle timeout */

    struct mcp_request rpc;
    bool has_body;
    OpenAiClientContext *session_ctx; /* from the session map, owned */
    char *session_id;                 /* Mcp-Session-Id: request's, else the response's */
    char *protocol_version;
    char *path;
    const char *method;
    const char *tls; /* "TLSv1.3" on HTTPS, NULL on plain HTTP (static string) */
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
    struct response_inspect inspect; /* reads the answer as it passes, for the log line */

    /* with shared_state: where the exchange is before forwarding, and what it waits for */
    enum { STAGE_SESSION = 0, STAGE_RATE_LIMIT, STAGE_FORWARD } stage;
    struct shared_state_op *op; /* Redis lookup in flight, NULL when none */
    const char *body;           /* the client's body (client.c keeps it until the end) */
    size_t body_len;
    char *bearer; /* the request's bearer token, owned; only kept while Redis may answer */

    bool has_rpc_error;
    long long rpc_error_code;
    bool close_client; /* end by closing: the body was cut short */
    const char *error;
    const char *rate_limit; /* scope of the rate_limit line that refused it (static) */
    uint32_t retry_after_s; /* of that refusal */
};

static void exchange_finish(struct exchange *ex);

/* ---- small helpers ------------------------------------------------------------------ */

static double ms_between(uint64_t from_ns, uint64_t to_ns)
{
    return (double)(to_ns - from_ns) / 1e6;
}

/* Header name `name` (`len` bytes) equals the literal, ignoring case; lengths first, since
 * most names differ in length. */
#define NAME_IS(name, len, lit)                                                                    \
    ((len) == sizeof(lit) - 1 && strncasecmp((name), (lit), sizeof(lit) - 1) == 0)

static bool header_is_hop_by_hop(const char *name, size_t len)
{
    switch (len) {
    case 2:
        return NAME_IS(name, len, "te");
    case 7:
        return NAME_IS(name, len, "trailer") || NAME_IS(name, len, "upgrade");
    case 10:
        return NAME_IS(name, len, "connection") || NAME_IS(name, len, "keep-alive");
    case 16:
        return NAME_IS(name, len, "proxy-connection");
    case 17:
        return NAME_IS(name, len, "transfer-encoding");
    case 18:
        return NAME_IS(name, len, "proxy-authenticate");
    case 19:
        return NAME_IS(name, len, "proxy-authorization");
    default:
        return false;
    }
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

/* ---- responses mcpeek makes itself --------------------------------------------------- */

/* Sends `status` with a JSON-RPC error body naming the request id when known. */
static void send_rpc_error(struct exchange *ex, int status, int code, const char *message)
{
    if (!ex->client || ex->headers_sent)
        return;
    struct strbuf *body = &ex->w->scratch;
    strbuf_reset(body);
    strbuf_printf(body, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"error\":{\"code\":%d,\"message\":",
                  ex->rpc.id_json ? ex->rpc.id_json : "null", code);
    strbuf_json_string(body, message, strlen(message), strlen(message));
    strbuf_puts(body, "}}");
    if (body->oom)
        return;
    /* The header block: what the status needs besides the type (RFC 6750 3, RFC 6585 4). */
    char headers[96];
    int headers_len =
        status == 401   ? snprintf(headers, sizeof(headers),
                                   "Content-Type: application/json\r\nWWW-Authenticate: Bearer\r\n")
        : status == 429 ? snprintf(headers, sizeof(headers),
                                   "Content-Type: application/json\r\nRetry-After: %u\r\n",
                                   (unsigned)ex->retry_after_s)
                        : snprintf(headers, sizeof(headers), "Content-Type: application/json\r\n");
    ex->status = status;
    ex->kind = RESPONSE_JSON;
    ex->has_rpc_error = true;
    ex->rpc_error_code = code;
    ex->bytes_out += body->len;
    ex->headers_sent = true;
    client_respond_start(ex->client, status, headers, (size_t)headers_len, (int64_t)body->len);
    client_respond_body(ex->client, body->data, body->len);
}

/* ---- upstream -> client ------------------------------------------------------------- */

/* client.c: everything queued for the client was written. */
static void on_client_drained(void *arg)
{
    struct exchange *ex = arg;
    if (ex->paused && ex->calling) {
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

/* The first header named `name` (case-insensitive), or NULL; `*len` is set. */
static const char *find_header(const struct upstream_header *h, size_t n, const char *name,
                               size_t *len)
{
    size_t name_len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (h[i].name_len == name_len && strncasecmp(h[i].name, name, name_len) == 0) {
            *len = h[i].value_len;
            return h[i].value;
        }
    return NULL;
}

static size_t count_header(const struct upstream_header *h, size_t n, const char *name)
{
    size_t count = 0, name_len = strlen(name);
    for (size_t i = 0; i < n; i++)
        count += h[i].name_len == name_len && strncasecmp(h[i].name, name, name_len) == 0;
    return count;
}

static bool header_value_is(const struct upstream_header *h, size_t n, const char *name,
                            const char *prefix)
{
    size_t len, plen = strlen(prefix);
    const char *v = find_header(h, n, name, &len);
    return v && len >= plen && strncasecmp(v, prefix, plen) == 0;
}

static enum response_kind classify_response(struct exchange *ex, const struct upstream_header *h,
                                            size_t n)
{
    size_t len;
    if (ex->status == 204 || ex->status == 304 || strcmp(ex->method, "HEAD") == 0)
        return RESPONSE_EMPTY;
    if (header_value_is(h, n, "Content-Type", "text/event-stream"))
        return RESPONSE_SSE;
    const char *cl = find_header(h, n, "Content-Length", &len);
    if (cl && len == 1 && cl[0] == '0')
        return RESPONSE_EMPTY;
    if (header_value_is(h, n, "Content-Type", "application/json"))
        return RESPONSE_JSON;
    return RESPONSE_OTHER;
}

/* The upstream's end-to-end headers as a block of lines for the client: hop-by-hop ones,
 * those the upstream named in Connection, and the framing (client.c writes its own) stay
 * behind. Returns the Content-Length, or -1 when the body length is not known. */
static int64_t response_headers(struct exchange *ex, const struct upstream_header *hs, size_t n,
                                struct strbuf *out)
{
    size_t conn_len, te_len;
    const char *conn = find_header(hs, n, "Connection", &conn_len);
    bool chunked = find_header(hs, n, "Transfer-Encoding", &te_len) != NULL;
    char name[256];
    int64_t length = -1;
    for (size_t i = 0; i < n; i++) {
        const struct upstream_header *h = &hs[i];
        size_t len = h->name_len;
        if (len >= sizeof(name))
            continue;
        memcpy(name, h->name, len);
        name[len] = '\0';
        if (NAME_IS(name, len, "Content-Length")) {
            uint64_t v;
            if (!chunked && http1_parse_content_length(h->value, h->value_len, &v) == 0)
                length = (int64_t)v;
            continue;
        }
        if (header_is_hop_by_hop(name, len) ||
            (conn && http1_value_has_token(conn, conn_len, name)))
            continue;
        if (NAME_IS(name, len, "Mcp-Session-Id") && !ex->session_id) {
            ex->session_id = openai_meta_copy(h->value, h->value_len, kept_len(ex->gen->cfg));
            ex->response_has_session = true;
        }
        strbuf_append(out, h->name, h->name_len);
        strbuf_append(out, ": ", 2);
        strbuf_append(out, h->value, h->value_len);
        strbuf_append(out, "\r\n", 2);
    }
    return length;
}

/* Content-Length beside Transfer-Encoding, or twice, or not a number, or codings other than a lone
 * "chunked" (which mcpeek cannot re-frame faithfully): the client would frame the body differently
 * than libcurl did and take the rest for its next response (RFC 9112 6.3). */
static bool framing_conflicts(const struct upstream_header *h, size_t n)
{
    size_t cl = count_header(h, n, "Content-Length"), te = count_header(h, n, "Transfer-Encoding");
    size_t len;
    uint64_t length;
    const char *v = find_header(h, n, "Transfer-Encoding", &len);
    if (v && !(len == 7 && strncasecmp(v, "chunked", 7) == 0))
        return true;
    v = find_header(h, n, "Content-Length", &len);
    if (v && http1_parse_content_length(v, len, &length) < 0)
        return true; /* "12abc": libcurl would read it as 12 */
    return (cl > 0 && te > 0) || cl > 1 || te > 1;
}

/* Upstream headers are complete: send status and headers to the client now. */
static bool on_upstream_head(void *arg, int status, const struct upstream_header *h, size_t n)
{
    struct exchange *ex = arg;
    ex->upstream_ms = ms_between(ex->sent_ns, worker_now_ns());
    if (!ex->client)
        return true;
    if (framing_conflicts(h, n))
        return false;
    ex->status = status;
    ex->kind = classify_response(ex, h, n);
    metrics_upstream_latency(ex->w->metrics, ex->upstream_ms / 1000.0);
    response_inspect_start(&ex->inspect, ex->has_body ? &ex->rpc : NULL, ex->kind,
                           ex->gen->cfg->response_inspect_max, kept_len(ex->gen->cfg));
    struct strbuf *block = &ex->w->scratch;
    strbuf_reset(block);
    int64_t length = response_headers(ex, h, n, block);
    ex->headers_sent = true;
    evtimer_del(ex->timer);
    metrics_upstream_ok(ex->w->shared->metrics, worker_now_ms());
    client_respond_start(ex->client, ex->status, block->data ? block->data : "", block->len,
                         length);
    if (ex->kind == RESPONSE_SSE) {
        metrics_stream_opened(ex->w->metrics);
        set_timer(ex, ex->gen->cfg->stream_idle_timeout_ms);
    }
    return true;
}

static void on_upstream_body(void *arg, const char *data, size_t len)
{
    struct exchange *ex = arg;
    if (!ex->client)
        return;
    ex->bytes_out += len;
    client_respond_body(ex->client, data, len);
    response_inspect_feed(&ex->inspect, data, len); /* after the bytes went to the client */
    if (ex->kind == RESPONSE_SSE && ex->gen->cfg->stream_idle_timeout_ms)
        set_timer(ex, ex->gen->cfg->stream_idle_timeout_ms);
    if (!ex->paused && client_output_pending(ex->client) > CLIENT_HIGH_WATER) {
        ex->paused = true;
        upstream_pause(&ex->call);
        client_watch_drain(ex->client);
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
    case UPSTREAM_ERR_DNS:
        return "upstream_dns";
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
    /* Passive health: the upstream is unreachable (not merely slow or wrong: a stream cut
     * after its answer started says nothing about the server), so new sessions avoid it for
     * upstream_fail_timeout. */
    if (kind == UPSTREAM_ERR_CONNECT || kind == UPSTREAM_ERR_DNS ||
        ((kind == UPSTREAM_ERR_RESET || kind == UPSTREAM_ERR_TIMEOUT) && !ex->headers_sent)) {
        upstream_target_mark_down(ex->target, worker_now_ms());
        metrics_upstream_failure(ex->w->metrics, ex->target->metrics_slot);
    }
    if (!ex->headers_sent) {
        bool timeout = kind == UPSTREAM_ERR_TIMEOUT;
        send_rpc_error(ex, timeout ? 504 : 502, -32000,
                       timeout ? "mcpeek: upstream timed out" : "mcpeek: upstream unavailable");
    } else {
        /* A cut body (fewer bytes than announced, chunks not terminated, a stream reset)
         * must not look complete, nor leave the client's connection out of step. */
        ex->close_client = true;
    }
    exchange_finish(ex);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct exchange *ex = arg;
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

/* client.c: the client hung up, reset, or stopped reading. */
static void on_client_aborted(void *arg)
{
    struct exchange *ex = arg;
    if (!ex->error)
        ex->error = "client_aborted";
    ex->client = NULL;
    exchange_finish(ex);
}

static const struct client_ops client_ops = {
    .aborted = on_client_aborted,
    .drained = on_client_drained,
};

static bool method_has_body(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0;
}

/* The URL requested upstream: the MCP path maps to the upstream URL's path (the client's
 * query appended), every other path goes to the upstream's origin unchanged. */
static void put_request_url(struct strbuf *h, struct exchange *ex, const char *uri)
{
    const struct upstream_target *t = ex->target;
    const char *query = strchr(uri, '?');
    strbuf_puts(h, t->origin);
    if (strcmp(ex->path, ex->gen->cfg->mcp_path) != 0) {
        strbuf_puts(h, uri);
        return;
    }
    strbuf_puts(h, t->path);
    if (query) {
        strbuf_append(h, strchr(t->path, '?') ? "&" : "?", 1);
        strbuf_puts(h, query + 1);
    }
}

/* One "Name: value" line, NUL terminated for libcurl's list. An empty value writes "Name:",
 * which tells libcurl not to send a header it would add itself. */
static void put_header(struct strbuf *h, const char *name, size_t name_len, const char *value,
                       size_t value_len)
{
    strbuf_append(h, name, name_len);
    strbuf_append(h, value_len ? ": " : ":", value_len ? 2 : 1);
    strbuf_append(h, value, value_len);
    strbuf_append(h, "", 1);
}

/* Points the exchange's curl_slist nodes at the Host line, then at the NUL-separated lines of
 * req_head in [from, to); the nodes are reused from one request to the next. -1 when out of
 * memory. */
static int link_header_list(struct exchange *ex, size_t host_off, size_t from, size_t to)
{
    struct strbuf *h = &ex->req_head;
    size_t lines = 1;
    for (size_t i = from; i < to; i++)
        lines += h->data[i] == '\0';
    if (lines > ex->req_hdr_cap) {
        struct curl_slist *grown = realloc(ex->req_hdr, lines * sizeof(*grown));
        if (!grown)
            return -1;
        ex->req_hdr = grown;
        ex->req_hdr_cap = lines;
    }
    char *p = h->data + from;
    for (size_t i = 0; i < lines; i++) {
        ex->req_hdr[i].next = i + 1 < lines ? &ex->req_hdr[i + 1] : NULL;
        if (i == 0) {
            ex->req_hdr[i].data = h->data + host_off; /* Host first, as clients send it */
            continue;
        }
        ex->req_hdr[i].data = p;
        p += strlen(p) + 1;
    }
    ex->call.headers = ex->req_hdr;
    return 0;
}

/* The part of what goes upstream that does not depend on which upstream: the client's
 * end-to-end headers and X-Forwarded-*, after a copy of the request target (req_head is
 * "target NUL, header lines NUL separated"; finish_request() adds the Host line and the URL
 * once the upstream is chosen, so the request head need not outlive this call). libcurl
 * writes the framing (Content-Length) itself; headers libcurl would add on its own (Accept,
 * Content-Type of a form, Expect) are suppressed when the client did not send them, so the
 * upstream sees the client's request. -1 when out of memory. */
static int build_request(struct exchange *ex, const struct http1_request *in, const char *uri)
{
    struct strbuf *h = &ex->req_head;
    const char *conn = http1_request_header(in, "Connection");
    size_t conn_len = conn ? strlen(conn) : 0; /* headers it names are hop-by-hop too */
    const char *xff = NULL;
    bool accept = false, content_type = false;
    strbuf_puts(h, uri);
    strbuf_append(h, "", 1);
    ex->req_lines = h->len;
    for (size_t i = 0; i < in->n_headers; i++) {
        const char *name = in->headers[i].name, *value = in->headers[i].value;
        size_t len = in->headers[i].name_len;
        if (header_is_hop_by_hop(name, len) ||
            (conn && http1_value_has_token(conn, conn_len, name)) || NAME_IS(name, len, "Host") ||
            NAME_IS(name, len, "Content-Length") || NAME_IS(name, len, "Expect"))
            continue;
        if (NAME_IS(name, len, "X-Forwarded-For")) {
            xff = value; /* the last one wins, as with any repeated header we read */
            continue;
        }
        if (NAME_IS(name, len, "Authorization") && ex->gen->n_auth_tokens > 0)
            continue; /* mcpeek's own token: not the upstream's business */
        accept |= NAME_IS(name, len, "Accept");
        content_type |= NAME_IS(name, len, "Content-Type");
        if (in->headers[i].value_len == 0) {
            /* "Name;" is libcurl's way to send a header with an empty value. */
            strbuf_append(h, name, len);
            strbuf_append(h, ";", 2);
            continue;
        }
        put_header(h, name, len, value, in->headers[i].value_len);
    }
    strbuf_puts(h, "X-Forwarded-For: ");
    if (xff) {
        strbuf_puts(h, xff);
        strbuf_append(h, ", ", 2);
    }
    strbuf_puts(h, ex->client_ip);
    strbuf_append(h, "", 1);
    const char *proto = ex->tls ? "https" : "http";
    put_header(h, "X-Forwarded-Proto", 17, proto, strlen(proto));
    const char *host = http1_request_header(in, "Host");
    if (host)
        put_header(h, "X-Forwarded-Host", 16, host, strlen(host));
    if (!accept)
        put_header(h, "Accept", 6, "", 0);
    bool body = ex->bytes_in > 0 || method_has_body(ex->method);
    if (!content_type && body)
        put_header(h, "Content-Type", 12, "", 0); /* libcurl would say it is a form */
    if (ex->bytes_in > PROXY_CURL_EXPECT_THRESHOLD)
        put_header(h, "Expect", 6, "", 0); /* libcurl would wait for 100 Continue */
    ex->req_lines_end = h->len;
    return h->oom ? -1 : 0;
}

/* Completes the request for ex->target: the Host line and the URL. -1 when out of memory. */
static int finish_request(struct exchange *ex)
{
    const struct mcpeek_config *cfg = ex->gen->cfg;
    struct strbuf *h = &ex->req_head, *url = &ex->w->scratch;
    strbuf_reset(url);
    put_request_url(url, ex, h->data); /* the target copied first into req_head */
    size_t host_off = h->len;
    const char *host_value =
        cfg->upstream_host_header ? cfg->upstream_host_header : ex->target->authority;
    put_header(h, "Host", 4, host_value, strlen(host_value));
    size_t url_off = h->len;
    strbuf_append(h, url->data, url->len);
    strbuf_append(h, "", 1);
    if (h->oom || url->oom)
        return -1;
    ex->call.url = h->data + url_off;
    return link_header_list(ex, host_off, ex->req_lines, ex->req_lines_end);
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
    ex->call.method = ex->method;
    /* A POST without a body still says Content-Length: 0. */
    ex->call.body = body_len > 0 ? body : method_has_body(ex->method) ? "" : NULL;
    ex->call.body_len = body_len;
    ex->calling = true;
    ex->sent_ns = worker_now_ns();
    set_timer(ex, cfg->upstream_response_timeout_ms);
    metrics_upstream_request(ex->w->metrics, ex->target->metrics_slot);
    upstream_start(ex->w->upstream, ex->target, &ex->call);
}

/* ---- the exchange ------------------------------------------------------------------- */

/* Adds the exchange to its ChatGPT conversation (openai/session, else Mcp-Session-Id) and
 * writes the lines of the conversations that this ended. */
static void track_conversation(struct exchange *ex, const struct exchange_record *rec)
{
    struct conversation_exchange cx = {
        .ts = ex->started,
        .mcp_session_id = ex->session_id,
        .openai = ex->rpc.openai ? ex->rpc.openai : ex->session_ctx,
        .tool = ex->has_body ? ex->rpc.tool : NULL,
        .error = rec->status >= 400 || rec->has_rpc_error_code || rec->rpc_error_message ||
                 rec->tool_is_error,
        .ends_session = strcmp(ex->method, "DELETE") == 0 && ex->status >= 200 && ex->status < 300,
        .bytes_in = ex->bytes_in,
        .bytes_out = ex->bytes_out,
    };
    struct worker *w = ex->w;
    worker_log_conversations(w, conversation_track(w->shared->conversations, &cx, worker_now_ms(),
                                                   ex->gen->cfg->conversation_idle_timeout_ms));
}

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
        .error = ex->error,
        .rate_limit = ex->rate_limit,
        .upstream = ex->target ? ex->target->origin : NULL,
        .session_openai = ex->session_ctx,
    };
    if (ex->has_rpc_error) {
        rec.has_rpc_error_code = true;
        rec.rpc_error_code = ex->rpc_error_code;
    }
    response_inspect_fill(&ex->inspect, &rec); /* mcpeek's own error, if any, wins */
    worker_log(w, &rec, &ex->gen->log_opts);
    const char *rpc_method = ex->has_body ? ex->rpc.method : NULL;
    metrics_exchange(w->metrics, rpc_method, ex->rpc.tool, rec.status, rec.duration_ms / 1000.0,
                     ex->bytes_in, ex->bytes_out);
    if (!ex->has_rpc_error && (rec.has_rpc_error_code || rec.rpc_error_message))
        metrics_rpc_error(w->metrics, rpc_method, ex->rpc.tool, rec.has_rpc_error_code,
                          rec.rpc_error_code);
    if (rec.tool_is_error)
        metrics_tool_error(w->metrics, ex->rpc.tool);
    track_conversation(ex, &rec);
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
    /* the session lives on the upstream that issued it: its later requests go there */
    uint64_t owner = 0;
    if (ex->response_has_session && ex->target && ex->gen->n_targets > 1 &&
        ex->gen->cfg->upstream_affinity && ex->status >= 200 && ex->status < 300) {
        owner = ex->gen->nodes[ex->target->index].id;
        session_map_put_upstream(map, ex->session_id, owner, worker_now_ms());
    }
    struct shared_state *ss = ex->w->sstate;
    if (!ss || ex->status < 200 || ex->status >= 300)
        return;
    if (strcmp(ex->method, "DELETE") == 0)
        shared_state_session_del(ss, ex->session_id);
    else if (ex->response_has_session)
        shared_state_session_put(ss, ex->session_id, ex->rpc.openai, owner,
                                 ex->gen->cfg->session_map_ttl_ms);
}

/* Ended exchanges are kept per worker (with their timer and buffers) for the next request:
 * a busy worker then allocates no exchange at all. */
static struct exchange *exchange_get(struct worker *w)
{
    struct exchange *ex = w->spare_exchanges;
    if (ex) {
        w->spare_exchanges = ex->next;
        w->n_spare_exchanges--;
        struct event *timer = ex->timer;
        struct strbuf req_head = ex->req_head;
        struct curl_slist *req_hdr = ex->req_hdr;
        size_t req_hdr_cap = ex->req_hdr_cap;
        memset(ex, 0, sizeof(*ex));
        ex->timer = timer;
        ex->req_hdr = req_hdr;
        ex->req_hdr_cap = req_hdr_cap;
        ex->req_head = req_head;
        strbuf_reset(&ex->req_head);
        return ex;
    }
    ex = calloc(1, sizeof(*ex));
    if (!ex)
        return NULL;
    ex->timer = evtimer_new(w->base, on_timer, ex);
    if (!ex->timer) {
        free(ex);
        return NULL;
    }
    strbuf_init(&ex->req_head);
    return ex;
}

static void exchange_free(struct exchange *ex)
{
    event_free(ex->timer);
    free(ex->req_hdr);
    strbuf_free(&ex->req_head);
    free(ex);
}

static void exchange_put(struct worker *w, struct exchange *ex)
{
    /* Large buffers (a long request head) are not worth keeping. */
    if (w->n_spare_exchanges >= PROXY_SPARE_EXCHANGES ||
        ex->req_head.cap > PROXY_SPARE_BUFFER_MAX) {
        exchange_free(ex);
        return;
    }
    ex->next = w->spare_exchanges;
    w->spare_exchanges = ex;
    w->n_spare_exchanges++;
}

void proxy_worker_cleanup(struct worker *w)
{
    while (w->spare_exchanges) {
        struct exchange *ex = w->spare_exchanges;
        w->spare_exchanges = ex->next;
        exchange_free(ex);
    }
    w->n_spare_exchanges = 0;
}

static void exchange_finish(struct exchange *ex)
{
    if (ex->finished)
        return;
    ex->finished = true;
    struct worker *w = ex->w;
    evtimer_del(ex->timer);
    shared_state_cancel(ex->op);
    ex->op = NULL;
    if (ex->calling) {
        upstream_cancel(&ex->call);
        ex->calling = false;
    }
    if (ex->client) {
        if (!ex->headers_sent)
            send_rpc_error(ex, 502, -32000, "mcpeek: no response from upstream");
        /* A body cut short ends with a close, so the client cannot take it as complete. */
        client_respond_end(ex->client, !ex->close_client);
        ex->client = NULL;
    }
    if (ex->headers_sent && ex->kind == RESPONSE_SSE)
        metrics_stream_closed(w->metrics);
    remember_session(ex);
    exchange_log(ex);
    response_inspect_clear(&ex->inspect); /* after the line: it borrowed the error message */

    if (ex->prev)
        ex->prev->next = ex->next;
    else
        w->live = ex->next;
    if (ex->next)
        ex->next->prev = ex->prev;
    w->exchanges--;

    mcp_request_clear(&ex->rpc);
    openai_meta_free(ex->session_ctx);
    free(ex->session_id);
    free(ex->protocol_version);
    free(ex->path);
    free(ex->bearer);
    generation_unref(ex->gen);
    exchange_put(w, ex);
}

void proxy_log_refused(struct worker *w, const struct proxy_refusal *r)
{
    const struct mcpeek_config *cfg = w->gen->cfg;
    struct exchange_record rec = {
        .http_method = r->method,
        .path = r->path,
        .client_ip = r->client_ip,
        .tls = r->tls,
        .status = r->status,
        .bytes_in = r->bytes_in,
        .bytes_out = r->bytes_out,
        .response = r->status ? RESPONSE_JSON : RESPONSE_NONE, /* 0: the client left first */
        .has_rpc_error_code = r->status != 0,
        .rpc_error_code = r->rpc_code,
        .error = r->error,
        .upstream_ms = -1,
    };
    char *session_id = NULL, *protocol_version = NULL;
    OpenAiClientContext *session_ctx = NULL;
    if (r->head) {
        /* Whose request it was, as any other line says (the body was not parsed). */
        session_id = header_copy(http1_request_header(r->head, "Mcp-Session-Id"), kept_len(cfg));
        protocol_version =
            header_copy(http1_request_header(r->head, "MCP-Protocol-Version"), kept_len(cfg));
        if (session_id)
            session_ctx = session_map_get(w->shared->sessions, session_id, worker_now_ms());
        rec.mcp_session_id = session_id;
        rec.mcp_protocol_version = protocol_version;
        rec.session_openai = session_ctx;
    }
    clock_gettime(CLOCK_REALTIME, &rec.started);
    worker_log(w, &rec, &w->gen->log_opts);
    metrics_exchange(w->metrics, NULL, NULL, r->status, 0, r->bytes_in, r->bytes_out);
    if (r->verdict != ACCESS_OK)
        metrics_access_denied(w->metrics, r->verdict);
    openai_meta_free(session_ctx);
    free(session_id);
    free(protocol_version);
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
    else if (ex->kind != RESPONSE_SSE)
        ex->close_client = true; /* a cut body must not look complete */
    exchange_finish(ex);
}

/* rate_limit lines: 429 with Retry-After when a bucket of the request's keys is empty. */
static void ratelimit_keys_of(const struct exchange *ex, const char *bearer,
                              struct ratelimit_keys *keys)
{
    memset(keys, 0, sizeof(*keys));
    const OpenAiClientContext *o = ex->rpc.openai ? ex->rpc.openai : ex->session_ctx;
    if (o) {
        keys->value[RATELIMIT_OPENAI_SUBJECT] = o->subject_id;
        keys->value[RATELIMIT_OPENAI_SESSION] = o->session_id;
        keys->value[RATELIMIT_OPENAI_ORG] = o->organization_id;
    }
    keys->value[RATELIMIT_CLIENT_IP] = ex->client_ip;
    keys->value[RATELIMIT_TOKEN] = bearer;
}

/* Answers 429 for the refusing rule. Always true, for the callers' `if`. */
static bool refuse_rate_limited(struct exchange *ex, const struct ratelimit_rule *r)
{
    ex->error = "rate_limited";
    ex->rate_limit = ratelimit_scope_name(r->scope);
    metrics_rate_limited(ex->w->metrics, r->scope);
    send_rpc_error(ex, 429, -32000, "mcpeek: rate limit exceeded, retry later");
    return true;
}

/* The bearer token a request presents (the `token` scope's value), or NULL. */
static const char *bearer_of(const struct http1_request *in)
{
    const char *auth = http1_request_header(in, "Authorization");
    return auth && strncasecmp(auth, "Bearer ", 7) == 0 ? auth + 7 : NULL;
}

/* The in-process buckets (the only ones without shared_state, the fallback with it). */
static bool rate_limited(struct exchange *ex, const char *bearer)
{
    const struct mcpeek_config *cfg = ex->gen->cfg;
    if (cfg->n_rate_limits == 0)
        return false;
    struct ratelimit_keys keys;
    ratelimit_keys_of(ex, bearer, &keys);
    const struct ratelimit_rule *r =
        ratelimit_check(ex->w->shared->ratelimits, cfg->rate_limits, cfg->n_rate_limits, &keys,
                        worker_now_ms(), &ex->retry_after_s);
    return r && refuse_rate_limited(ex, r);
}

/* Answers without contacting the upstream when strict_json rejects the body. */
static bool strict_rejects(struct exchange *ex)
{
    if (!ex->gen->cfg->strict_json || !ex->has_body)
        return false;
    if (ex->rpc.status == JSONRPC_INVALID_JSON) {
        /* "Parse error: invalid JSON at line 1 column 7: unexpected token near '}'":
         * jansson's words, already filtered to printable ASCII by jsonrpc.c. */
        char message[sizeof(ex->rpc.error) + 16];
        snprintf(message, sizeof(message), "Parse error: %s", ex->rpc.error);
        ex->error = "invalid_json";
        send_rpc_error(ex, 400, -32700, message);
        return true;
    }
    if (ex->rpc.status == JSONRPC_INVALID_RPC) {
        ex->error = "invalid_request";
        send_rpc_error(ex, 400, -32600, "Invalid Request");
        return true;
    }
    return false;
}

/* The upstream of a request that belongs to no known session: rendezvous hashing on the
 * session id, else openai/session, else the client address, among the upstreams that are up
 * (among all when none is). */
static struct upstream_target *route_by_hash(struct exchange *ex, const bool *up, bool any_up)
{
    const struct generation *gen = ex->gen;
    const char *key = ex->client_ip;
    if (ex->session_id)
        key = ex->session_id;
    else if (ex->rpc.openai && ex->rpc.openai->session_id)
        key = ex->rpc.openai->session_id;
    int i = rendezvous_pick(gen->nodes, gen->n_targets, any_up ? up : NULL,
                            rendezvous_id(key, strlen(key)));
    return &gen->targets[i < 0 ? 0 : i];
}

/* Chooses ex->target. One upstream: that one, with no lookup. Several: a known session goes
 * to the upstream that issued it, and when that one is down the session is lost: 404 with
 * "session not found", which makes an MCP client start a new session (MCP transport spec),
 * and that one lands on a live upstream. Returns false when it answered. */
static bool route(struct exchange *ex)
{
    const struct generation *gen = ex->gen;
    if (gen->n_targets == 1) {
        ex->target = &gen->targets[0];
        return true;
    }
    uint64_t now = worker_now_ms();
    bool up[CONFIG_UPSTREAM_MAX], any_up = false;
    for (size_t i = 0; i < gen->n_targets; i++) {
        up[i] = upstream_target_is_up(&gen->targets[i], now);
        any_up |= up[i];
    }
    uint64_t owner = 0;
    if (ex->session_id && gen->cfg->upstream_affinity)
        owner = session_map_upstream(ex->w->shared->sessions, ex->session_id, now);
    if (owner == 0) {
        ex->target = route_by_hash(ex, up, any_up);
        return true;
    }
    for (size_t i = 0; i < gen->n_targets; i++) {
        if (gen->nodes[i].id != owner)
            continue;
        ex->target = &gen->targets[i];
        if (up[i])
            return true;
        break;
    }
    /* its upstream is down, or no longer configured: the session is gone with it */
    ex->error = "session_upstream_down";
    if (ex->target)
        metrics_upstream_session_lost(ex->w->metrics, ex->target->metrics_slot);
    send_rpc_error(ex, 404, -32001, "Session not found");
    return false;
}

static void fail_out_of_memory(struct exchange *ex)
{
    ex->error = "out_of_memory";
    send_rpc_error(ex, 503, -32000, "mcpeek: out of memory");
    exchange_finish(ex);
}

/* ---- with shared_state: the stages that may wait for Redis ------------------------------ */

static void proxy_continue(struct exchange *ex);

/* Redis answered the session lookup (or did not, in time): what it knows goes into the local
 * map, so the session's next requests here need no lookup. */
static void on_shared_session(void *arg, bool answered, bool found, OpenAiClientContext *ctx,
                              uint64_t upstream)
{
    struct exchange *ex = arg;
    ex->op = NULL;
    if (answered && found) {
        struct session_map *map = ex->w->shared->sessions;
        uint64_t now = worker_now_ms();
        if (ctx) {
            session_map_put(map, ex->session_id, ctx, now);
            if (!ex->rpc.openai && !ex->session_ctx) {
                ex->session_ctx = ctx;
                ctx = NULL;
            }
        }
        session_map_put_upstream(map, ex->session_id, upstream, now);
    }
    openai_meta_free(ctx);
    proxy_continue(ex);
}

static void on_shared_ratelimit(void *arg, bool answered, int refused, uint32_t retry_after_s)
{
    struct exchange *ex = arg;
    ex->op = NULL;
    ex->stage = STAGE_FORWARD;
    const struct mcpeek_config *cfg = ex->gen->cfg;
    if (answered && refused >= 0 && (size_t)refused < cfg->n_rate_limits) {
        ex->retry_after_s = retry_after_s;
        refuse_rate_limited(ex, &cfg->rate_limits[refused]);
        exchange_finish(ex);
        return;
    }
    if (!answered && rate_limited(ex, ex->bearer)) { /* Redis silent: count here */
        exchange_finish(ex);
        return;
    }
    proxy_continue(ex);
}

/* True when the local map lacks something Redis may know: the context of a request without
 * _meta, or the upstream of a session when requests follow their session. */
static bool session_needs_lookup(struct exchange *ex)
{
    if (!ex->session_id)
        return false;
    if (!ex->rpc.openai && !ex->session_ctx)
        return true;
    return ex->gen->n_targets > 1 && ex->gen->cfg->upstream_affinity &&
           session_map_upstream(ex->w->shared->sessions, ex->session_id, worker_now_ms()) == 0;
}

/* Runs the stages in order; a stage that asks Redis returns and its answer (or deadline)
 * calls back here. Redis being slow or away costs at most shared_state_timeout per stage. */
static void proxy_continue(struct exchange *ex)
{
    struct worker *w = ex->w;
    const struct mcpeek_config *cfg = ex->gen->cfg;
    if (ex->stage == STAGE_SESSION) {
        ex->stage = STAGE_RATE_LIMIT;
        if (session_needs_lookup(ex)) {
            ex->op =
                shared_state_session_get(w->sstate, ex->session_id, cfg->shared_state_timeout_ms,
                                         kept_len(cfg), on_shared_session, ex);
            if (ex->op)
                return;
        }
    }
    if (ex->stage == STAGE_RATE_LIMIT) {
        ex->stage = STAGE_FORWARD;
        if (cfg->n_rate_limits > 0) {
            struct ratelimit_keys keys;
            ratelimit_keys_of(ex, ex->bearer, &keys);
            ex->op = shared_state_ratelimit(w->sstate, cfg->rate_limits, cfg->n_rate_limits, &keys,
                                            cfg->shared_state_timeout_ms, on_shared_ratelimit, ex);
            if (ex->op)
                return;
            if (rate_limited(ex, ex->bearer)) {
                exchange_finish(ex);
                return;
            }
        }
    }
    if (!route(ex)) {
        exchange_finish(ex);
        return;
    }
    if (finish_request(ex) < 0) {
        fail_out_of_memory(ex);
        return;
    }
    start_upstream(ex, ex->body, ex->body_len);
}

void proxy_handle_request(struct worker *w, struct client *c, const struct http1_request *req,
                          const char *method, const char *body, size_t body_len)
{
    struct exchange *ex = exchange_get(w);
    if (!ex) {
        client_respond_start(c, 503, "", 0, 0);
        client_respond_end(c, true);
        return;
    }
    ex->w = w;
    ex->gen = generation_ref(w->gen);
    const struct mcpeek_config *cfg = ex->gen->cfg;
    ex->client = c;
    client_attach(c, &client_ops, ex);
    clock_gettime(CLOCK_REALTIME, &ex->started);
    ex->started_ns = worker_now_ns();
    ex->upstream_ms = -1;
    ex->method = method;
    w->exchanges++;
    ex->next = w->live;
    if (w->live)
        w->live->prev = ex;
    w->live = ex;

    const char *uri = req->target;
    size_t path_len = strcspn(uri, "?");
    ex->path = openai_meta_copy(uri, path_len, kept_len(cfg));
    snprintf(ex->client_ip, sizeof(ex->client_ip), "%s", client_peer_ip(c));
    ex->tls = client_tls_version(c);
    ex->session_id = header_copy(http1_request_header(req, "Mcp-Session-Id"), kept_len(cfg));
    ex->protocol_version =
        header_copy(http1_request_header(req, "MCP-Protocol-Version"), kept_len(cfg));

    ex->bytes_in = body_len;
    if (body_len > 0) {
        ex->has_body = true;
        jsonrpc_parse(body, body_len, kept_len(cfg), &ex->rpc);
    }
    if (strict_rejects(ex)) {
        exchange_finish(ex);
        return;
    }
    if (ex->session_id) {
        if (ex->rpc.openai)
            session_map_put(w->shared->sessions, ex->session_id, ex->rpc.openai, worker_now_ms());
        else
            ex->session_ctx = session_map_get(w->shared->sessions, ex->session_id, worker_now_ms());
    }
    if (build_request(ex, req, uri) < 0) {
        fail_out_of_memory(ex);
        return;
    }
    if (w->sstate) {
        /* Redis answers later: keep what the request head gave (it does not outlive this call) */
        ex->body = body;
        ex->body_len = body_len;
        const char *bearer = bearer_of(req);
        if (bearer && cfg->n_rate_limits > 0 && !(ex->bearer = strdup(bearer))) {
            fail_out_of_memory(ex);
            return;
        }
        proxy_continue(ex);
        return;
    }
    if ((cfg->n_rate_limits > 0 && rate_limited(ex, bearer_of(req))) || !route(ex)) {
        exchange_finish(ex);
        return;
    }
    if (finish_request(ex) < 0) {
        fail_out_of_memory(ex);
        return;
    }
    start_upstream(ex, body, body_len);
}
