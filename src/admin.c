/* admin: /healthz, /readyz and /metrics on their own listener, on the main thread.
 *
 * /healthz says the process serves. /readyz says the upstream answered or accepted a
 * connection recently: workers record the time of every upstream response (free per
 * request), and while traffic is quiet a connect probe every READINESS_PROBE_MS keeps that
 * time fresh, so an idle instance in front of a healthy upstream stays ready. The probe goes
 * through libcurl like requests do (same name resolution, Unix socket, TLS handshake), on a
 * multi handle of the main loop's own.
 */
#include "mcpeek/admin.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mcpeek/metrics.h"
#include "mcpeek/server.h"
#include "mcpeek/upstream.h"
#include "mcpeek/worker.h"

/* How often the upstream is probed when no request has reached it meanwhile. */
#define READINESS_PROBE_MS 5000

struct admin {
    struct evhttp *http;
    struct event_base *base;
    struct event *probe_timer;
    struct upstream *upstream;  /* the probe's multi handle */
    struct upstream_call probe; /* running while probe.handle is set */
    struct generation *gen;     /* whose upstream is probed; one reference, NULL = none */
    struct metrics *metrics;
    uint32_t readiness_window_ms;
    struct strbuf scratch; /* the metrics page, reused per scrape */
};

static void on_probe_done(void *arg, bool ok, enum upstream_error_kind kind)
{
    (void)kind;
    struct admin *admin = arg;
    if (ok)
        metrics_upstream_ok(admin->metrics, worker_now_ms());
}

static const struct upstream_callbacks probe_callbacks = {.done = on_probe_done};

/* The first upstream not marked down (the first one when all are): the one that can make
 * the instance ready. */
static const struct upstream_target *probe_target(const struct generation *gen)
{
    uint64_t now = worker_now_ms();
    for (size_t i = 0; i < gen->n_targets; i++)
        if (upstream_target_is_up(&gen->targets[i], now))
            return &gen->targets[i];
    return &gen->targets[0];
}

static void on_probe_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct admin *admin = arg;
    uint64_t last = metrics_upstream_last_ok_ms(admin->metrics);
    if (admin->probe.handle || !admin->gen || !admin->upstream ||
        (last != 0 && worker_now_ms() - last < READINESS_PROBE_MS))
        return;
    admin->probe.cb = &probe_callbacks;
    admin->probe.arg = admin;
    upstream_probe(admin->upstream, probe_target(admin->gen), &admin->probe);
}

void admin_set_upstream(struct admin *admin, struct generation *gen)
{
    upstream_cancel(&admin->probe); /* it may use the old generation's target */
    generation_unref(admin->gen);
    admin->gen = generation_ref(gen);
    on_probe_timer(-1, 0, admin); /* know at once, not one interval later */
}

/* What /readyz answers: an upstream answer or probe within the readiness window, and with
 * several upstreams at least one not marked down by passive health. */
static bool upstream_ready(const struct admin *admin)
{
    uint64_t last = metrics_upstream_last_ok_ms(admin->metrics), now = worker_now_ms();
    if (last == 0 || now - last > admin->readiness_window_ms)
        return false;
    if (!admin->gen || admin->gen->n_targets == 1)
        return true;
    for (size_t i = 0; i < admin->gen->n_targets; i++)
        if (upstream_target_is_up(&admin->gen->targets[i], now))
            return true;
    return false;
}

/* mcpeek_upstream_up{upstream}: 1 unless passive health has the upstream marked down. */
static void render_upstream_up(const struct admin *admin, struct strbuf *out)
{
    if (!admin->gen)
        return;
    uint64_t now = worker_now_ms();
    strbuf_puts(out, "# HELP mcpeek_upstream_up 1 unless a connect failure or reset marked the "
                     "upstream down (for upstream_fail_timeout).\n"
                     "# TYPE mcpeek_upstream_up gauge\n");
    for (size_t i = 0; i < admin->gen->n_targets; i++) {
        const struct upstream_target *t = &admin->gen->targets[i];
        strbuf_puts(out, "mcpeek_upstream_up{upstream=\"");
        strbuf_puts(out, metrics_upstream_name(admin->metrics, t->metrics_slot));
        strbuf_printf(out, "\"} %d\n", upstream_target_is_up(t, now) ? 1 : 0);
    }
}

static void reply_text(struct evhttp_request *req, int status, const char *ctype, const char *body,
                       size_t len)
{
    struct evbuffer *buf = evbuffer_new();
    if (!buf) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(buf, body, len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_send_reply(req, status, NULL, buf);
    evbuffer_free(buf);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct admin *admin = arg;
    const char *uri = evhttp_request_get_uri(req);
    size_t path_len = strcspn(uri, "?");
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        reply_text(req, 405, "text/plain", "method not allowed\n", 19);
    } else if (path_len == 8 && strncmp(uri, "/healthz", 8) == 0) {
        reply_text(req, 200, "text/plain", "ok\n", 3);
    } else if (path_len == 7 && strncmp(uri, "/readyz", 7) == 0) {
        if (upstream_ready(admin))
            reply_text(req, 200, "text/plain", "ready\n", 6);
        else
            reply_text(req, 503, "text/plain", "upstream not seen recently\n", 27);
    } else if (path_len == 8 && strncmp(uri, "/metrics", 8) == 0) {
        strbuf_reset(&admin->scratch);
        metrics_render(admin->metrics, &admin->scratch);
        metrics_render_upstream_ready(&admin->scratch, upstream_ready(admin));
        render_upstream_up(admin, &admin->scratch);
        reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", admin->scratch.data,
                   admin->scratch.len);
    } else {
        reply_text(req, 404, "text/plain", "not found\n", 10);
    }
}

struct admin *admin_start(struct event_base *base, const char *listen_spec, struct metrics *metrics,
                          uint32_t readiness_window_ms, struct strbuf *errors)
{
    char host[256];
    unsigned port;
    if (server_parse_hostport(listen_spec, host, sizeof(host), &port) < 0) {
        strbuf_printf(errors, "admin_listen: invalid address '%s'\n", listen_spec);
        return NULL;
    }
    struct admin *admin = calloc(1, sizeof(*admin));
    if (!admin)
        return NULL;
    admin->metrics = metrics;
    admin->base = base;
    admin->readiness_window_ms = readiness_window_ms;
    admin->probe_timer = event_new(base, -1, EV_PERSIST, on_probe_timer, admin);
    admin->upstream = upstream_new(base);
    strbuf_init(&admin->scratch);
    admin->http = evhttp_new(base);
    int fd = server_bind(host, port, 0, errors);
    if (!admin->http || fd < 0 || !evhttp_accept_socket_with_handle(admin->http, fd)) {
        if (fd >= 0)
            close(fd);
        admin_free(admin);
        return NULL;
    }
    evhttp_set_gencb(admin->http, on_request, admin);
    struct timeval every = {READINESS_PROBE_MS / 1000, (READINESS_PROBE_MS % 1000) * 1000};
    if (admin->probe_timer)
        event_add(admin->probe_timer, &every);
    return admin;
}

void admin_free(struct admin *admin)
{
    if (!admin)
        return;
    if (admin->http)
        evhttp_free(admin->http);
    upstream_cancel(&admin->probe);
    upstream_free(admin->upstream);
    generation_unref(admin->gen);
    if (admin->probe_timer)
        event_free(admin->probe_timer);
    strbuf_free(&admin->scratch);
    free(admin);
}
