/* admin: /healthz, /readyz and /metrics on their own listener, on the main thread.
 *
 * /healthz says the process serves. /readyz says the upstream answered recently: workers
 * record the time of every upstream response, so readiness costs nothing per request.
 */
#include "mcpeek/admin.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mcpeek/metrics.h"
#include "mcpeek/server.h"
#include "mcpeek/worker.h"

struct admin {
    struct evhttp *http;
    struct metrics *metrics;
    uint32_t readiness_window_ms;
    struct strbuf scratch; /* the metrics page, reused per scrape */
};

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
        uint64_t last = metrics_upstream_last_ok_ms(admin->metrics);
        uint64_t now = worker_now_ms();
        if (last != 0 && now - last <= admin->readiness_window_ms)
            reply_text(req, 200, "text/plain", "ready\n", 6);
        else
            reply_text(req, 503, "text/plain", "upstream not seen recently\n", 27);
    } else if (path_len == 8 && strncmp(uri, "/metrics", 8) == 0) {
        strbuf_reset(&admin->scratch);
        metrics_render(admin->metrics, &admin->scratch);
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
    admin->readiness_window_ms = readiness_window_ms;
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
    return admin;
}

void admin_free(struct admin *admin)
{
    if (!admin)
        return;
    if (admin->http)
        evhttp_free(admin->http);
    strbuf_free(&admin->scratch);
    free(admin);
}
