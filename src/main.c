/* main: command line, configuration, workers, signals and shutdown.
 *
 * The main thread owns the configuration generations and the signal handling; workers own
 * everything per request. SIGHUP reloads (a bad file keeps the running generation),
 * SIGUSR1 reopens the access log, SIGTERM/SIGINT drain in-flight exchanges for up to
 * shutdown_timeout, a second one stops at once.
 */
#include <event2/event.h>
#include <event2/thread.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "mcpeek/access.h"
#include "mcpeek/accesslog.h"
#include "mcpeek/admin.h"
#include "mcpeek/config.h"
#include "mcpeek/conversation.h"
#include "mcpeek/diag.h"
#include "mcpeek/generation.h"
#include "mcpeek/json_arena.h"
#include "mcpeek/metrics.h"
#include "mcpeek/ratelimit.h"
#include "mcpeek/session_map.h"
#include "mcpeek/upstream.h"
#include "mcpeek/worker.h"

/* How often the main loop checks whether draining workers are done. */
#define DRAIN_POLL_MS 20
/* /readyz: the upstream must have answered within this window. */
#define READINESS_WINDOW_MS 15000

struct daemon {
    struct event_base *base;
    struct cli_args args;
    struct generation *gen; /* newest generation, one reference */
    struct shared shared;
    struct worker *workers;
    unsigned n_workers;
    struct admin *admin;
    struct event *signals[4];
    struct event *drain_poll;
    struct event *deadline;
    bool shutting_down;
};

static void print_errors(const struct strbuf *errors)
{
    if (errors->len)
        fputs(errors->data, stderr);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            diag_log("warn", "cannot raise RLIMIT_NOFILE to %llu", (unsigned long long)rl.rlim_max);
    }
}

/* Settings worth a warning every time a generation is loaded. */
static void warn_about(const struct mcpeek_config *cfg)
{
    bool https = false;
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        https |= strncmp(cfg->upstreams[i].url, "https:", 6) == 0;
    if (!cfg->upstream_tls_verify && https)
        diag_log("warn", "upstream_tls_verify is off: the upstream's certificate and host name "
                         "are not checked");
    if (cfg->upstream_http2 == UPSTREAM_HTTP2_PRIOR_KNOWLEDGE && !upstream_libcurl_reuses_h2c())
        diag_log("warn",
                 "upstream_http2 prior-knowledge: libcurl %s cannot reuse an h2c "
                 "connection (curl issue #10634, fixed in 8.0.0): each request opens "
                 "its own; upstream_http2 on (https) multiplexes",
                 curl_version_info(CURLVERSION_NOW)->version);
    /* Off loopback the DNS-rebinding defaults do not apply (docs/security.md). */
    if (cfg->n_allowed_hosts == 0 && !access_listeners_loopback(cfg))
        diag_log("warn", "allowed_hosts is unset and a listen address is not loopback: any Host "
                         "is accepted; set allowed_hosts to the names clients use");
}

/* Gives each upstream its `upstream` metric label before workers see the generation. */
static void register_upstreams(struct daemon *d, struct generation *gen)
{
    for (size_t i = 0; i < gen->n_targets; i++)
        gen->targets[i].metrics_slot =
            metrics_upstream_slot(d->shared.metrics, gen->targets[i].origin);
}

static void reload(struct daemon *d)
{
    struct strbuf errors;
    strbuf_init(&errors);
    struct mcpeek_config *cfg = config_build(&d->args, &errors);
    struct generation *gen = NULL;
    if (cfg) {
        const char *names[8];
        size_t n = config_restart_only_changes(d->gen->cfg, cfg, names, 8);
        for (size_t i = 0; i < n && i < 8; i++)
            diag_log("warn", "reload: '%s' changed but needs a restart; the old value stays",
                     names[i]);
        gen = generation_new(cfg, d->gen->number + 1, &errors);
    }
    if (!gen) {
        if (errors.len && errors.data[errors.len - 1] == '\n')
            errors.data[--errors.len] = '\0';
        diag_log("error", "reload failed, keeping generation %lu: %s", d->gen->number,
                 errors.data ? errors.data : "unknown error");
        metrics_config_reload(d->shared.metrics, false);
        strbuf_free(&errors);
        return;
    }
    register_upstreams(d, gen);
    for (unsigned i = 0; i < d->n_workers; i++)
        worker_post_generation(&d->workers[i], gen);
    /* Buckets of unchanged rate_limit lines keep their tokens; the others go. */
    ratelimit_retain(d->shared.ratelimits, gen->cfg->rate_limits, gen->cfg->n_rate_limits);
    generation_unref(d->gen);
    d->gen = gen;
    if (d->admin)
        admin_set_upstream(d->admin, gen);
    warn_about(gen->cfg);
    metrics_config_reload(d->shared.metrics, true);
    diag_log("info", "configuration reloaded (generation %lu, upstream %s%s)", gen->number,
             gen->cfg->upstreams[0].url, gen->n_targets > 1 ? " and others" : "");
    strbuf_free(&errors);
}

static void on_drain_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct daemon *d = arg;
    for (unsigned i = 0; i < d->n_workers; i++)
        if (!atomic_load(&d->workers[i].exited))
            return;
    event_base_loopbreak(d->base);
}

static void stop_all_now(struct daemon *d)
{
    for (unsigned i = 0; i < d->n_workers; i++)
        worker_post_stop(&d->workers[i]);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct daemon *d = arg;
    diag_log("warn", "shutdown_timeout reached: ending the remaining exchanges");
    stop_all_now(d);
}

static void begin_shutdown(struct daemon *d, int sig)
{
    if (d->shutting_down) {
        diag_log("warn", "second signal %d: stopping now", sig);
        stop_all_now(d);
        return;
    }
    d->shutting_down = true;
    diag_log("info", "signal %d: draining (up to %u ms)", sig, d->gen->cfg->shutdown_timeout_ms);
    for (unsigned i = 0; i < d->n_workers; i++)
        worker_post_drain(&d->workers[i]);
    uint32_t ms = d->gen->cfg->shutdown_timeout_ms;
    struct timeval deadline = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    struct timeval poll = {0, DRAIN_POLL_MS * 1000};
    evtimer_add(d->deadline, &deadline);
    evtimer_add(d->drain_poll, &poll);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct daemon *d = arg;
    switch (sig) {
    case SIGHUP:
        if (!d->shutting_down)
            reload(d);
        break;
    case SIGUSR1:
        if (accesslog_reopen(d->shared.log) == 0)
            diag_log("info", "access log reopened");
        else
            diag_log("error", "access log reopen failed; still writing to the old file");
        break;
    default:
        begin_shutdown(d, (int)sig);
        break;
    }
}

static unsigned worker_count(const struct mcpeek_config *cfg)
{
    if (cfg->workers > 0)
        return (unsigned)cfg->workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static int start(struct daemon *d, struct strbuf *errors)
{
    const struct mcpeek_config *cfg = d->gen->cfg;
    d->n_workers = worker_count(cfg);
    d->shared.log = accesslog_open(cfg->log_file);
    if (!d->shared.log) {
        strbuf_printf(errors, "log_file %s: cannot open\n", cfg->log_file ? cfg->log_file : "-");
        return -1;
    }
    d->shared.metrics = metrics_new(d->n_workers, cfg->metrics_label_limit, MCPEEK_VERSION);
    d->shared.sessions = session_map_new(cfg->session_map_size, cfg->session_map_ttl_ms);
    d->shared.ratelimits = ratelimit_new(cfg->rate_limit_keys);
    d->shared.conversations = conversation_table_new(cfg->conversation_max);
    d->workers = calloc(d->n_workers, sizeof(*d->workers));
    if (!d->shared.metrics || !d->shared.sessions || !d->shared.ratelimits ||
        !d->shared.conversations || !d->workers) {
        strbuf_puts(errors, "out of memory\n");
        return -1;
    }
    register_upstreams(d, d->gen);
    for (unsigned i = 0; i < d->n_workers; i++) {
        if (worker_init(&d->workers[i], i, &d->shared, d->gen, errors) < 0) {
            d->n_workers = i;
            return -1;
        }
    }
    if (cfg->admin_listen) {
        d->admin =
            admin_start(d->base, cfg->admin_listen, d->shared.metrics, READINESS_WINDOW_MS, errors);
        if (!d->admin)
            return -1;
        admin_set_upstream(d->admin, d->gen);
    }
    for (unsigned i = 0; i < d->n_workers; i++) {
        if (worker_start(&d->workers[i]) < 0) {
            strbuf_puts(errors, "cannot start worker thread\n");
            return -1;
        }
    }
    return 0;
}

/* On the way out, once the workers are gone: every open conversation gets its line
 * (reason shutdown). */
static void end_conversations(struct daemon *d)
{
    if (!d->shared.conversations || !d->shared.log || !d->gen)
        return;
    struct conversation_record *open = conversation_end_all(d->shared.conversations);
    if (!open)
        return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    accesslog_write_conversations(d->shared.log, open, &now, &d->gen->log_opts);
    conversation_records_free(open);
}

static void teardown(struct daemon *d)
{
    for (unsigned i = 0; i < d->n_workers; i++) {
        if (d->workers[i].thread)
            worker_post_stop(&d->workers[i]);
        worker_join_and_free(&d->workers[i]);
    }
    free(d->workers);
    end_conversations(d);
    admin_free(d->admin);
    for (size_t i = 0; i < sizeof(d->signals) / sizeof(d->signals[0]); i++)
        if (d->signals[i])
            event_free(d->signals[i]);
    if (d->drain_poll)
        event_free(d->drain_poll);
    if (d->deadline)
        event_free(d->deadline);
    session_map_free(d->shared.sessions);
    ratelimit_free(d->shared.ratelimits);
    conversation_table_free(d->shared.conversations);
    metrics_free(d->shared.metrics);
    accesslog_close(d->shared.log);
    generation_unref(d->gen);
    if (d->base)
        event_base_free(d->base);
    cli_args_free(&d->args);
}

int main(int argc, char **argv)
{
    struct daemon d;
    memset(&d, 0, sizeof(d));
    struct strbuf errors;
    strbuf_init(&errors);
    int rc = 1;

    /* Before any thread exists: libcurl's global state is not thread-safe to set up. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fputs("cannot initialise libcurl\n", stderr);
        return 1;
    }
    if (cli_parse(argc, argv, &d.args, &errors) < 0) {
        print_errors(&errors);
        fputs("try 'mcpeek --help'\n", stderr);
        goto out;
    }
    if (d.args.action == CLI_HELP) {
        cli_usage(&errors);
        fputs(errors.data ? errors.data : "", stdout);
        rc = 0;
        goto out;
    }
    if (d.args.action == CLI_VERSION) {
        printf("mcpeek %s (libevent %s, jansson %s, libcurl %s, %s)\n", MCPEEK_VERSION,
               event_get_version(), jansson_version_str(),
               curl_version_info(CURLVERSION_NOW)->version, OpenSSL_version(OPENSSL_VERSION));
        rc = 0;
        goto out;
    }
    struct mcpeek_config *cfg = config_build(&d.args, &errors);
    if (!cfg) {
        print_errors(&errors);
        goto out;
    }
    d.gen = generation_new(cfg, 1, &errors);
    if (!d.gen) {
        print_errors(&errors);
        goto out;
    }
    if (d.args.action == CLI_TEST) {
        printf("configuration ok\n");
        rc = 0;
        goto out;
    }

    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    json_arena_install(); /* before the workers: jansson's allocator is process-wide */
    if (evthread_use_pthreads() != 0) {
        fputs("cannot initialise libevent threading\n", stderr);
        goto out;
    }
    d.base = event_base_new();
    if (!d.base)
        goto out;
    const int sigs[4] = {SIGHUP, SIGUSR1, SIGTERM, SIGINT};
    for (int i = 0; i < 4; i++) {
        d.signals[i] = evsignal_new(d.base, sigs[i], on_signal, &d);
        if (!d.signals[i] || event_add(d.signals[i], NULL) < 0)
            goto out;
    }
    d.drain_poll = event_new(d.base, -1, EV_PERSIST, on_drain_poll, &d);
    d.deadline = evtimer_new(d.base, on_deadline, &d);
    if (!d.drain_poll || !d.deadline)
        goto out;
    if (start(&d, &errors) < 0) {
        print_errors(&errors);
        goto out;
    }
    const struct mcpeek_config *c = d.gen->cfg;
    for (size_t i = 0; i < c->n_listen; i++)
        diag_log("info", "mcpeek %s listening on %s:%u%s, upstream %s, %u workers", MCPEEK_VERSION,
                 c->listen[i].host, c->listen[i].port, c->listen[i].tls ? " (tls)" : "",
                 c->upstreams[0].url, d.n_workers);
    for (size_t i = 1; i < c->n_upstreams; i++)
        diag_log("info", "upstream %s weight %u", c->upstreams[i].url, c->upstreams[i].weight);
    warn_about(c);
    if (c->admin_listen)
        diag_log("info", "admin endpoints on %s (/healthz /readyz /metrics)", c->admin_listen);
    event_base_dispatch(d.base);
    diag_log("info", "stopped");
    rc = 0;
out:
    teardown(&d);
    strbuf_free(&errors);
    curl_global_cleanup();
    return rc;
}
