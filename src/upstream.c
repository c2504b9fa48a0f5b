/* upstream: libcurl's multi interface on a libevent loop, with pooled easy handles.
 *
 * Sockets. libcurl opens and closes every upstream socket through our callbacks, so each
 * socket has one `struct upsock` from open to close, with a read event that stays registered
 * all that time (also while the connection idles in libcurl's cache): a request on a reused
 * connection then costs no epoll_ctl. A read event that fires while libcurl is not waiting
 * for it (an idle connection the server closed, a paused transfer) is removed then, and added
 * back when libcurl asks again. The write event is armed only while libcurl wants it. An idle
 * connection that turns readable is retired (sock_retire): libcurl 7.88 would reuse it and
 * take unsolicited bytes for the next answer.
 * Sockets libcurl did not open through us (the threaded resolver's wake-up pipe) get a struct
 * on first sight, dropped on CURL_POLL_REMOVE.
 *
 * Timeouts. A 0 ms timeout (libcurl wants to run again now) is run right after the libcurl
 * call that asked for it returns, not through a timer and another epoll_wait.
 *
 * Re-entrancy. Nothing may call curl_multi_* from inside a libcurl callback, so every libcurl
 * call goes through up->depth; a call cancelled while depth > 0 is only detached (its
 * callbacks then make libcurl abort it) and its handle removed once libcurl has returned.
 *
 * A transfer (pooled handle) is: FREE (in up->free_handles) -> RUNNING (added to the multi,
 * call attached) -> FREE when libcurl reports it done (`done` runs) or when the call is
 * cancelled (removed at once, or via up->cancelled when cancelled inside a callback).
 */
#include "mcpeek/upstream.h"

#include <event2/event.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mcpeek/diag.h"
#include "mcpeek/http1.h"
#include "mcpeek/strbuf.h"

/* Easy handles kept per loop for reuse once their transfer ended. */
#define UPSTREAM_SPARE_HANDLES 256
/* 0 ms timeouts run in a row before the rest waits for the next loop iteration. */
#define UPSTREAM_IMMEDIATE_RUNS 16
/* A response head larger than this is refused (nginx's default proxy_buffer_size is 4-8 KiB;
 * libcurl's own limit is 100 KiB). */
#define UPSTREAM_HEAD_MAX (64 * 1024)
/* At most one upstream failure diagnostic per this many seconds (a broken upstream fails
 * every request; the access log and the metric count them all). */
#define UPSTREAM_DIAG_INTERVAL_S 10

struct upsock {
    struct upstream *up;
    curl_socket_t fd;
    struct event *rev; /* EV_READ|EV_PERSIST, registered from open to close (see above) */
    struct event *wev; /* EV_WRITE|EV_PERSIST, registered while libcurl wants to write */
    int want;          /* CURL_POLL_* libcurl asked for last */
    unsigned paused;   /* transfers on this connection paused by their write callback */
    bool rev_on, wev_on;
    bool ours; /* opened through on_open_socket: lives until on_close_socket */
};

struct upstream_handle {
    CURL *easy;
    struct upstream *up;
    struct upstream_call *call;       /* NULL when free, or once cancelled */
    struct upstream_handle *next;     /* free list, or up->cancelled */
    unsigned long configured;         /* serial of the target whose settings are applied */
    struct strbuf head;               /* header lines of the response being read */
    struct strbuf url;                /* CURLOPT_URL last set (libcurl keeps its own copy) */
    char errbuf[CURL_ERROR_SIZE];     /* libcurl's words for the last failure */
    const struct upstream_target *tg; /* of the running call (diagnostics) */
    unsigned attempts;                /* requests libcurl started for this call */
    bool in_head;                     /* between a status line and its empty line */
    bool head_done;                   /* the final head was delivered */
    bool answered;                    /* a response byte arrived */
    bool retry_ok;                    /* the method is idempotent: libcurl may resend it */
    bool refused_retry;               /* a resend was refused (the call failed for it) */
    bool refused_head;                /* the caller refused the head */
    bool curl_paused;                 /* the write callback answered CURL_WRITEFUNC_PAUSE */
    curl_socket_t fd;                 /* the socket libcurl last watched for this transfer */
    curl_socket_t paused_fd;          /* its connection's socket, while curl_paused */
};

struct upstream {
    struct event_base *base;
    CURLM *multi;
    CURLSH *share;         /* TLS session cache of this loop's handles */
    struct event *timer;   /* libcurl's timeout, when > 0 ms */
    bool timeout_now;      /* libcurl asked for a 0 ms timeout */
    unsigned depth;        /* libcurl calls on the stack */
    struct upsock **socks; /* by descriptor */
    size_t n_socks;
    struct upstream_handle *free_handles;
    unsigned n_free;
    struct upstream_handle *cancelled; /* cancelled inside a callback: remove after */
    long maxconnects;                  /* CURLMOPT_MAXCONNECTS last set */
};

static void settle(struct upstream *up);

/* ---- sockets ---------------------------------------------------------------------------- */

static struct upsock *sock_get(struct upstream *up, curl_socket_t fd)
{
    return fd >= 0 && (size_t)fd < up->n_socks ? up->socks[fd] : NULL;
}

static void sock_free(struct upsock *s)
{
    struct upstream *up = s->up;
    if (s->rev)
        event_free(s->rev);
    if (s->wev)
        event_free(s->wev);
    if (sock_get(up, s->fd) == s)
        up->socks[s->fd] = NULL;
    free(s);
}

static void on_sock_event(evutil_socket_t fd, short what, void *arg);

static struct upsock *sock_new(struct upstream *up, curl_socket_t fd, bool ours)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= up->n_socks) {
        size_t n = up->n_socks ? up->n_socks : 64;
        while (n <= (size_t)fd)
            n *= 2;
        struct upsock **grown = realloc(up->socks, n * sizeof(*grown));
        if (!grown)
            return NULL;
        memset(grown + up->n_socks, 0, (n - up->n_socks) * sizeof(*grown));
        up->socks = grown;
        up->n_socks = n;
    }
    if (up->socks[fd])
        sock_free(up->socks[fd]); /* a descriptor number the kernel handed out again */
    struct upsock *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->up = up;
    s->fd = fd;
    s->ours = ours;
    s->rev = event_new(up->base, fd, EV_READ | EV_PERSIST, on_sock_event, s);
    s->wev = event_new(up->base, fd, EV_WRITE | EV_PERSIST, on_sock_event, s);
    up->socks[fd] = s;
    if (!s->rev || !s->wev) {
        sock_free(s);
        return NULL;
    }
    return s;
}

static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    (void)purpose;
    struct upstream *up = clientp;
    int fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    if (!sock_new(up, fd, true)) {
        close(fd);
        return CURL_SOCKET_BAD;
    }
    return fd;
}

static int on_close_socket(void *clientp, curl_socket_t fd)
{
    struct upsock *s = sock_get(clientp, fd);
    if (s)
        sock_free(s);
    return close(fd);
}

/* libcurl says what it waits for on `fd`. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)socketp;
    struct upstream *up = userp;
    struct upsock *s = sock_get(up, fd);
    if (what == CURL_POLL_REMOVE) {
        if (!s)
            return 0;
        s->want = 0;
        if (!s->ours) {
            sock_free(s);
            return 0;
        }
        if (s->wev_on) {
            event_del(s->wev);
            s->wev_on = false;
        }
        return 0; /* the read event stays: see the top of the file */
    }
    if (!s && !(s = sock_new(up, fd, false)))
        return -1;
    struct upstream_handle *h = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&h);
    if (h)
        h->fd = fd; /* the connection a pause of this transfer will hold */
    s->want = what;
    if ((what & CURL_POLL_IN) && !s->rev_on) {
        event_add(s->rev, NULL);
        s->rev_on = true;
    }
    if ((what & CURL_POLL_OUT) && !s->wev_on) {
        event_add(s->wev, NULL);
        s->wev_on = true;
    } else if (!(what & CURL_POLL_OUT) && s->wev_on) {
        event_del(s->wev);
        s->wev_on = false;
    }
    return 0;
}

static void run_socket_action(struct upstream *up, curl_socket_t fd, int mask)
{
    int running;
    up->depth++;
    curl_multi_socket_action(up->multi, fd, mask, &running);
    up->depth--;
}

/* An idle connection (no transfer on it) turned readable: the server closed it, or sent
 * bytes nobody asked for (a second response, a stray TLS record). libcurl 7.88 checks a cached
 * connection only by peeking for EOF, so it would reuse one with unread bytes and read them as
 * the next answer. Dropping the bytes and shutting the socket makes that check see EOF, and
 * libcurl closes the connection instead of reusing it. */
static void sock_retire(struct upsock *s)
{
    char sink[4096];
    while (recv(s->fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
        ;
    shutdown(s->fd, SHUT_RDWR);
}

static void on_sock_event(evutil_socket_t fd, short what, void *arg)
{
    struct upsock *s = arg;
    struct upstream *up = s->up;
    if ((what & EV_READ) && !(s->want & CURL_POLL_IN)) {
        /* Level-triggered and nobody reads: stop listening until libcurl asks again. */
        event_del(s->rev);
        s->rev_on = false;
        if (s->want == 0 && s->paused == 0 && s->ours)
            sock_retire(s);
        return;
    }
    run_socket_action(up, fd, (what & EV_READ) ? CURL_CSELECT_IN : CURL_CSELECT_OUT);
    settle(up); /* `s` may be gone */
}

/* ---- timeouts --------------------------------------------------------------------------- */

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct upstream *up = userp;
    if (timeout_ms < 0) {
        evtimer_del(up->timer);
        up->timeout_now = false;
    } else if (timeout_ms == 0 && up->depth > 0) {
        up->timeout_now = true; /* run by settle() once libcurl returned */
    } else {
        struct timeval tv = {timeout_ms / 1000, (suseconds_t)(timeout_ms % 1000) * 1000};
        evtimer_add(up->timer, &tv);
    }
    return 0;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream *up = arg;
    run_socket_action(up, CURL_SOCKET_TIMEOUT, 0);
    settle(up);
}

/* ---- ending transfers ------------------------------------------------------------------- */

static atomic_llong failure_last_report_s;

/* Says on stderr, in libcurl's words, why a transfer failed (a certificate problem, a refused
 * connection, a protocol error): the access log carries only the cause ("upstream_tls"). */
static void failure_report(const struct upstream_handle *h, CURLcode rc)
{
    long long now = (long long)time(NULL);
    long long last = atomic_load(&failure_last_report_s);
    if (now - last < UPSTREAM_DIAG_INTERVAL_S ||
        !atomic_compare_exchange_strong(&failure_last_report_s, &last, now))
        return;
    diag_log("warn", "upstream %s: %s (libcurl %d: %s; next report in %d s at the earliest)",
             h->tg ? h->tg->origin : "?", h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc),
             (int)rc, curl_easy_strerror(rc), UPSTREAM_DIAG_INTERVAL_S);
}

/* The transfer is no longer paused (resumed, ended or removed). */
static void handle_unpaused(struct upstream_handle *h)
{
    struct upsock *s = h->curl_paused ? sock_get(h->up, h->paused_fd) : NULL;
    if (s && s->paused > 0)
        s->paused--;
    h->curl_paused = false;
    h->paused_fd = CURL_SOCKET_BAD;
}

static void handle_destroy(struct upstream_handle *h)
{
    curl_easy_cleanup(h->easy);
    strbuf_free(&h->head);
    strbuf_free(&h->url);
    free(h);
}

static void handle_put(struct upstream *up, struct upstream_handle *h)
{
    handle_unpaused(h);
    h->call = NULL;
    h->tg = NULL;
    if (up->n_free >= UPSTREAM_SPARE_HANDLES || h->head.cap > 16 * 1024) {
        handle_destroy(h);
        return;
    }
    h->next = up->free_handles;
    up->free_handles = h;
    up->n_free++;
}

static void remove_handle(struct upstream *up, struct upstream_handle *h)
{
    up->depth++;
    curl_multi_remove_handle(up->multi, h->easy);
    up->depth--;
}

/* Reports every finished transfer to its call. */
static void collect_done(struct upstream *up)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(up->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct upstream_handle *h = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&h);
        remove_handle(up, h);
        struct upstream_call *call = h->call;
        bool ok = rc == CURLE_OK;
        enum upstream_error_kind kind = UPSTREAM_ERR_OTHER;
        if (!ok) {
            bool tls = h->tg && h->tg->tls;
            kind = h->refused_retry ? UPSTREAM_ERR_RESET
                   : h->refused_head
                       ? UPSTREAM_ERR_OTHER
                       : upstream_error_kind_from_curl(rc, h->answered, tls, h->errbuf);
            if (!h->refused_head && !h->refused_retry && rc != CURLE_WRITE_ERROR)
                failure_report(h, rc);
        }
        handle_put(up, h);
        if (call) {
            call->handle = NULL;
            call->cb->done(call->arg, ok, kind);
        }
    }
}

/* After any libcurl call, with nothing of libcurl on the stack: removes what was cancelled
 * inside callbacks, reports finished transfers, and runs 0 ms timeouts. */
static void settle(struct upstream *up)
{
    if (up->depth > 0)
        return; /* the outermost caller settles */
    for (int i = 0; i < UPSTREAM_IMMEDIATE_RUNS; i++) {
        while (up->cancelled) {
            struct upstream_handle *h = up->cancelled;
            up->cancelled = h->next;
            remove_handle(up, h);
            handle_put(up, h);
        }
        collect_done(up);
        if (!up->timeout_now)
            return;
        up->timeout_now = false;
        run_socket_action(up, CURL_SOCKET_TIMEOUT, 0);
    }
    struct timeval now = {0, 0};
    evtimer_add(up->timer, &now); /* libcurl keeps asking: let the loop breathe */
}

/* ---- libcurl's per-transfer callbacks ----------------------------------------------------- */

/* Before each attempt to send the request. A second attempt of a request that is not
 * idempotent is refused: its first one may have reached the server (libcurl resends a
 * request whose reused connection died before an answer byte came). */
static int on_prereq(void *clientp, char *primary_ip, char *local_ip, int primary_port,
                     int local_port)
{
    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    struct upstream_handle *h = clientp;
    if (++h->attempts > 1 && !h->retry_ok) {
        h->refused_retry = true;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

static size_t trim_end(const char *s, size_t n)
{
    while (n > 0 && (s[n - 1] == '\r' || s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return n;
}

/* Splits the collected header lines of h->head into `out`: the count, or -1 when a line is
 * not a valid field (relayed, it could break or split the client's response). */
static ssize_t split_head(struct upstream_handle *h, struct upstream_header *out)
{
    size_t n = 0;
    const char *p = h->head.data, *end = p + h->head.len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        size_t len = (size_t)(next - p);
        len -= len > 0 && p[len - 1] == '\n';
        len -= len > 0 && p[len - 1] == '\r';
        struct http1_header f;
        if (n == UPSTREAM_MAX_HEADERS || http1_parse_field(p, len, &f) < 0)
            return -1;
        out[n++] = (struct upstream_header){f.name, f.name_len, f.value, f.value_len};
        p = next;
    }
    return (ssize_t)n;
}

/* One header line of a response, status line and empty line included (libcurl's order). */
static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    (void)size; /* always 1 */
    struct upstream_handle *h = userdata;
    struct upstream_call *call = h->call;
    if (!call)
        return 0; /* cancelled: make libcurl stop */
    h->answered = true;
    if (h->head_done)
        return nitems; /* trailer fields: not relayed */
    if (!h->in_head) {
        h->in_head = true; /* a status line: a new (maybe interim) response */
        strbuf_reset(&h->head);
        return nitems;
    }
    if (trim_end(buf, nitems) > 0) {
        /* Obsolete line folding (a line starting with blanks) is refused, as RFC 9112 5.2
         * lets a proxy do, and so is a head too large to be sane. */
        if (buf[0] == ' ' || buf[0] == '\t' || h->head.len + nitems > UPSTREAM_HEAD_MAX) {
            h->refused_head = true;
            return 0;
        }
        strbuf_append(&h->head, buf, nitems);
        return h->head.oom ? 0 : nitems;
    }
    h->in_head = false;
    long status = 0;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200)
        return nitems; /* 100 Continue, 103 Early Hints: not relayed */
    h->head_done = true;
    long version = 0;
    curl_easy_getinfo(h->easy, CURLINFO_HTTP_VERSION, &version);
    if (version != CURL_HTTP_VERSION_1_0 && version != CURL_HTTP_VERSION_1_1 &&
        h->tg->cfg->upstream_http2 == UPSTREAM_HTTP2_OFF) {
        h->refused_head = true; /* "HTTP/2 200" on an HTTP/1.1 connection: not framed */
        return 0;
    }
    struct upstream_header headers[UPSTREAM_MAX_HEADERS];
    ssize_t n = split_head(h, headers);
    if (n < 0 || !call->cb->head(call->arg, (int)status, headers, (size_t)n)) {
        h->refused_head = true;
        return 0;
    }
    return h->call ? nitems : 0;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userdata)
{
    (void)size; /* always 1 */
    struct upstream_handle *h = userdata;
    struct upstream_call *call = h->call;
    if (!call)
        return 0; /* cancelled */
    if (call->paused) {
        /* libcurl keeps these bytes and hands them over on resume. The connection's socket
         * is marked so that its readability is not taken for an idle connection's. */
        struct upsock *s = sock_get(h->up, h->fd);
        if (s)
            s->paused++;
        h->paused_fd = s ? h->fd : CURL_SOCKET_BAD;
        h->curl_paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    call->cb->body(call->arg, data, nmemb);
    return h->call ? nmemb : 0;
}

/* ---- handles ------------------------------------------------------------------------------ */

/* Idle handles looked at for one already configured for the call's upstream. */
#define UPSTREAM_HANDLE_SCAN 8

static unsigned long target_serial(const struct upstream_target *t)
{
    return t->serial;
}

/* Applies everything that depends on the target's configuration (after a reset, so a handle
 * that served an older generation keeps nothing of it). */
static int handle_configure(struct upstream_handle *h, const struct upstream_target *t)
{
    const struct mcpeek_config *cfg = t->cfg;
    CURL *e = h->easy;
    curl_easy_reset(e);
    strbuf_reset(&h->url); /* the reset forgot the URL too */
    long http_version = cfg->upstream_http2 == UPSTREAM_HTTP2_ON ? CURL_HTTP_VERSION_2TLS
                        : cfg->upstream_http2 == UPSTREAM_HTTP2_PRIOR_KNOWLEDGE
                            ? CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                            : CURL_HTTP_VERSION_1_1;
    /* libcurl reuses a connection idle for at most this many whole seconds; "idle < timeout"
     * holds for the configured value, so a server closing idle connections right at it (Node:
     * 5 s) is never raced. */
    long maxage = (long)(cfg->upstream_keepalive_timeout_ms / 1000) - 1;
    /* libcurl before 8.0.0 breaks a prior-knowledge (h2c) connection it reuses (curl issue
     * #10634): there, each request gets a connection of its own. */
    bool h2c_one_shot =
        cfg->upstream_http2 == UPSTREAM_HTTP2_PRIOR_KNOWLEDGE && !upstream_libcurl_reuses_h2c();
    long dns_ttl = (long)((cfg->upstream_dns_ttl_ms + 999) / 1000);
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                              \
    if (rc == CURLE_OK)                                                                            \
    rc = curl_easy_setopt(e, opt, val)
    SET(CURLOPT_NOSIGNAL, 1L); /* else libcurl swaps SIGPIPE handlers around every call */
    SET(CURLOPT_PRIVATE, (void *)h);
    SET(CURLOPT_SHARE, h->up->share);
    SET(CURLOPT_ERRORBUFFER, h->errbuf);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)h);
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_WRITEDATA, (void *)h);
    SET(CURLOPT_PREREQFUNCTION, on_prereq);
    SET(CURLOPT_PREREQDATA, (void *)h);
    SET(CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    SET(CURLOPT_OPENSOCKETDATA, (void *)h->up);
    SET(CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    SET(CURLOPT_CLOSESOCKETDATA, (void *)h->up);
    SET(CURLOPT_BUFFERSIZE, (long)cfg->upstream_buffer_size);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    /* No proxy between mcpeek and its upstream: an http_proxy in mcpeek's environment is
     * not followed (and libcurl does not look it up for every transfer). */
    SET(CURLOPT_PROXY, "");
    SET(CURLOPT_HTTP_VERSION, http_version);
    SET(CURLOPT_PIPEWAIT, cfg->upstream_http2 != UPSTREAM_HTTP2_OFF && !h2c_one_shot ? 1L : 0L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->upstream_connect_timeout_ms);
    SET(CURLOPT_FORBID_REUSE, cfg->upstream_keepalive == 0 || h2c_one_shot ? 1L : 0L);
    SET(CURLOPT_FRESH_CONNECT, h2c_one_shot ? 1L : 0L);
    SET(CURLOPT_MAXAGE_CONN, maxage < 0 ? 0L : maxage);
    SET(CURLOPT_DNS_CACHE_TIMEOUT, dns_ttl);
    SET(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    if (cfg->upstream_unix_socket)
        SET(CURLOPT_UNIX_SOCKET_PATH, cfg->upstream_unix_socket);
    if (t->tls) {
        SET(CURLOPT_SSL_VERIFYPEER, cfg->upstream_tls_verify ? 1L : 0L);
        SET(CURLOPT_SSL_VERIFYHOST, cfg->upstream_tls_verify ? 2L : 0L);
        SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
        if (cfg->upstream_ca_file) {
            /* The private CA is trusted alone: the system store is not consulted. */
            SET(CURLOPT_CAINFO, cfg->upstream_ca_file);
            SET(CURLOPT_CAPATH, (char *)NULL);
        }
        if (cfg->upstream_tls_cert) {
            SET(CURLOPT_SSLCERT, cfg->upstream_tls_cert);
            SET(CURLOPT_SSLKEY,
                cfg->upstream_tls_key ? cfg->upstream_tls_key : cfg->upstream_tls_cert);
        }
    }
#undef SET
    if (rc != CURLE_OK)
        return -1;
    h->configured = target_serial(t);
    return 0;
}

static struct upstream_handle *handle_get(struct upstream *up, const struct upstream_target *t)
{
    /* With several upstreams, prefer an idle handle already configured for this one: a
     * handle switching targets is reset and set up again. One upstream: the first matches. */
    struct upstream_handle **pp = &up->free_handles;
    for (int i = 0; *pp && i < UPSTREAM_HANDLE_SCAN; i++, pp = &(*pp)->next)
        if ((*pp)->configured == target_serial(t))
            break;
    if (!*pp)
        pp = &up->free_handles;
    struct upstream_handle *h = *pp;
    if (h) {
        *pp = h->next;
        up->n_free--;
    } else {
        h = calloc(1, sizeof(*h));
        if (!h)
            return NULL;
        h->up = up;
        strbuf_init(&h->head);
        strbuf_init(&h->url);
        if (!(h->easy = curl_easy_init())) {
            free(h);
            return NULL;
        }
    }
    h->next = NULL;
    if (h->configured != target_serial(t) && handle_configure(h, t) < 0) {
        handle_destroy(h);
        return NULL;
    }
    h->tg = t;
    h->attempts = 0;
    h->in_head = h->head_done = h->answered = false;
    h->refused_retry = h->refused_head = h->curl_paused = false;
    h->paused_fd = h->fd = CURL_SOCKET_BAD;
    h->errbuf[0] = '\0';
    strbuf_reset(&h->head);
    return h;
}

static bool method_is(const char *method, const char *name)
{
    return strcmp(method, name) == 0;
}

/* The request's method and body on a handle that may have served any other request. */
static CURLcode set_request(struct upstream_handle *h, const struct upstream_call *call)
{
    CURL *e = h->easy;
    const char *m = call->method;
    CURLcode rc = CURLE_OK;
    /* Most requests go to the same URL: setting it again would copy it again. */
    if (!h->url.data || strcmp(h->url.data, call->url) != 0) {
        strbuf_reset(&h->url);
        strbuf_puts(&h->url, call->url);
        rc = h->url.oom ? CURLE_OUT_OF_MEMORY : curl_easy_setopt(e, CURLOPT_URL, call->url);
        if (rc != CURLE_OK)
            strbuf_reset(&h->url);
    }
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(e, CURLOPT_HTTPHEADER, call->headers);
    if (rc != CURLE_OK)
        return rc;
    if (call->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->body); /* read in place, not copied */
        curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
        return curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method_is(m, "POST") ? NULL : m);
    }
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L); /* also forgets an earlier POST body */
    if (method_is(m, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        return curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    }
    return curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method_is(m, "GET") ? NULL : m);
}

/* Adds a configured handle for `call` to the multi; `done` runs on failure. */
static void start_handle(struct upstream *up, const struct upstream_target *t,
                         struct upstream_call *call, bool probe)
{
    struct upstream_handle *h = handle_get(up, t);
    CURLcode rc = CURLE_OUT_OF_MEMORY;
    if (h) {
        h->call = call;
        call->handle = h;
        call->paused = false;
        if (probe) {
            /* Connect, then close: a probe's connection is of no use to anyone after. */
            curl_easy_setopt(h->easy, CURLOPT_URL, t->origin);
            strbuf_reset(&h->url);
            curl_easy_setopt(h->easy, CURLOPT_FORBID_REUSE, 1L);
            rc = curl_easy_setopt(h->easy, CURLOPT_CONNECT_ONLY, 1L);
            h->retry_ok = true;
        } else {
            curl_easy_setopt(h->easy, CURLOPT_CONNECT_ONLY, 0L);
            rc = set_request(h, call);
            h->retry_ok = method_is(call->method, "GET") || method_is(call->method, "HEAD") ||
                          method_is(call->method, "OPTIONS") || method_is(call->method, "DELETE");
        }
    }
    long maxconnects = (long)t->cfg->upstream_keepalive;
    if (rc == CURLE_OK && maxconnects != up->maxconnects) {
        curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, maxconnects ? maxconnects : 1L);
        up->maxconnects = maxconnects;
    }
    if (rc == CURLE_OK) {
        up->depth++;
        CURLMcode mrc = curl_multi_add_handle(up->multi, h->easy);
        up->depth--;
        if (mrc == CURLM_OK) {
            settle(up);
            return;
        }
    }
    if (h) {
        call->handle = NULL;
        handle_put(up, h);
    }
    call->cb->done(call->arg, false, UPSTREAM_ERR_OTHER);
}

/* ---- public ------------------------------------------------------------------------------- */

bool upstream_libcurl_reuses_h2c(void)
{
    return curl_version_info(CURLVERSION_NOW)->version_num >= 0x080000;
}

enum upstream_error_kind upstream_error_kind_from_curl(CURLcode code, bool answered, bool tls,
                                                       const char *detail)
{
    switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return UPSTREAM_ERR_DNS;
    case CURLE_COULDNT_CONNECT:
        return UPSTREAM_ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return UPSTREAM_ERR_TIMEOUT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
        return UPSTREAM_ERR_TLS;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        /* Under TLS 1.3 a server refusing our client certificate says so with an alert
         * after the handshake, which libcurl reports as a failed read naming OpenSSL. */
        if (tls && !answered && detail && strstr(detail, "OpenSSL") && strstr(detail, "alert"))
            return UPSTREAM_ERR_TLS;
        /* Broken chunk framing is a protocol error, not a lost connection. */
        if (detail && strstr(detail, "chunked-encoding"))
            return UPSTREAM_ERR_OTHER;
        return UPSTREAM_ERR_RESET;
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2_STREAM:
        return UPSTREAM_ERR_RESET;
    default:
        return UPSTREAM_ERR_OTHER;
    }
}

struct upstream *upstream_new(struct event_base *base)
{
    struct upstream *up = calloc(1, sizeof(*up));
    if (!up)
        return NULL;
    up->base = base;
    up->maxconnects = -1;
    up->multi = curl_multi_init();
    up->share = curl_share_init();
    up->timer = evtimer_new(base, on_timer, up);
    if (!up->multi || !up->share || !up->timer)
        goto fail;
    curl_share_setopt(up->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
    return up;
fail:
    upstream_free(up);
    return NULL;
}

void upstream_free(struct upstream *up)
{
    if (!up)
        return;
    up->depth++; /* no settle from callbacks libcurl makes while closing */
    while (up->cancelled) {
        struct upstream_handle *h = up->cancelled;
        up->cancelled = h->next;
        curl_multi_remove_handle(up->multi, h->easy);
        handle_destroy(h);
    }
    while (up->free_handles) {
        struct upstream_handle *h = up->free_handles;
        up->free_handles = h->next;
        handle_destroy(h);
    }
    if (up->multi)
        curl_multi_cleanup(up->multi); /* closes the cached connections */
    if (up->share)
        curl_share_cleanup(up->share);
    if (up->timer)
        event_free(up->timer);
    for (size_t i = 0; i < up->n_socks; i++)
        if (up->socks[i])
            sock_free(up->socks[i]);
    free(up->socks);
    free(up);
}

void upstream_start(struct upstream *up, const struct upstream_target *t,
                    struct upstream_call *call)
{
    start_handle(up, t, call, false);
}

void upstream_probe(struct upstream *up, const struct upstream_target *t,
                    struct upstream_call *call)
{
    start_handle(up, t, call, true);
}

void upstream_pause(struct upstream_call *call)
{
    call->paused = true; /* the next write callback answers CURL_WRITEFUNC_PAUSE */
}

void upstream_resume(struct upstream_call *call)
{
    struct upstream_handle *h = call->handle;
    call->paused = false;
    if (!h || !h->curl_paused)
        return;
    struct upstream *up = h->up;
    handle_unpaused(h);
    up->depth++;
    curl_easy_pause(h->easy, CURLPAUSE_CONT); /* may deliver the held bytes right here */
    up->depth--;
    settle(up);
}

void upstream_cancel(struct upstream_call *call)
{
    struct upstream_handle *h = call->handle;
    if (!h)
        return;
    struct upstream *up = h->up;
    call->handle = NULL;
    h->call = NULL;
    if (up->depth > 0) {
        h->next = up->cancelled; /* removed by settle() once libcurl returned */
        up->cancelled = h;
        return;
    }
    remove_handle(up, h);
    handle_put(up, h);
    settle(up);
}
