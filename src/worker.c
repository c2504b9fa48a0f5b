/* worker: a thread running one event loop with its front end and upstream pool.
 *
 * The main thread never touches a worker's libevent objects: it stores a request in an
 * atomic (new generation, drain, stop) and activates the worker's wakeup event, which
 * libevent (with pthread support on) delivers inside the worker's loop.
 */
#include "mcpeek/worker.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mcpeek/client.h"
#include "mcpeek/proxy.h"
#include "mcpeek/server.h"
#include "mcpeek/conversation.h"
#include "mcpeek/json_arena.h"
#include "mcpeek/shared_state.h"
#include "mcpeek/upstream.h"

/* While stopping gracefully: how often to check that everything was flushed. */
#define WORKER_DRAIN_POLL_MS 10
/* After the shutdown deadline: the longest wait for final bytes to reach clients. */
#define WORKER_FLUSH_CAP_MS 200

uint64_t worker_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t worker_now_ms(void)
{
    return worker_now_ns() / 1000000u;
}

/* Writes the queued lines now. */
static void worker_flush_log(struct worker *w)
{
    if (w->logbuf.len > 0) {
        if (accesslog_write(w->shared->log, w->logbuf.data, w->logbuf.len) == 0) {
            for (unsigned i = 0; i < w->log_pending; i++)
                metrics_log_line(w->metrics);
        } else {
            metrics_log_write_failure(w->metrics, w->log_pending);
        }
    }
    strbuf_reset(&w->logbuf);
    w->log_pending = 0;
}

static void on_log_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker_flush_log(arg);
}

void worker_log(struct worker *w, const struct exchange_record *rec,
                const struct accesslog_options *opts)
{
    size_t before = w->logbuf.len;
    accesslog_format(&w->logbuf, rec, opts);
    if (w->logbuf.oom) {
        /* Out of memory: keep what was queued before, drop this line. */
        w->logbuf.oom = false;
        w->logbuf.len = before;
        metrics_log_write_failure(w->metrics, 1);
        return;
    }
    size_t max = accesslog_batch_max(w->shared->log);
    if (w->logbuf.len > max && before > 0) {
        /* Write the earlier lines alone, so no write() exceeds what stays atomic. */
        size_t line_len = w->logbuf.len - before;
        if (accesslog_write(w->shared->log, w->logbuf.data, before) == 0)
            for (unsigned i = 0; i < w->log_pending; i++)
                metrics_log_line(w->metrics);
        else
            metrics_log_write_failure(w->metrics, w->log_pending);
        memmove(w->logbuf.data, w->logbuf.data + before, line_len);
        w->logbuf.len = line_len;
        w->logbuf.data[line_len] = '\0';
        w->log_pending = 0;
    }
    w->log_pending++;
    if (w->logbuf.len >= max || !w->log_flush)
        worker_flush_log(w);
    else
        event_active(w->log_flush, 0, 0);
}

void worker_log_conversations(struct worker *w, struct conversation_record *ended)
{
    if (!ended)
        return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    worker_flush_log(w); /* keep the order: the exchange lines that ended them come first */
    size_t lines = accesslog_write_conversations(w->shared->log, ended, &now, &w->gen->log_opts);
    for (size_t i = 0; i < lines; i++)
        metrics_log_line(w->metrics);
    conversation_records_free(ended);
}

/* Worker 0 ends the conversations that went idle (conversation_idle_timeout). */
static void on_conversation_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    worker_log_conversations(w, conversation_sweep(w->shared->conversations, worker_now_ms(),
                                                   w->gen->cfg->conversation_idle_timeout_ms));
}

/* Graceful stop: the loop ends once no exchange is in flight and every response byte has
 * left for the client (freeing connections earlier would drop what is still queued). */
static void on_drain_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if (w->exchanges == 0 && client_all_flushed(w))
        event_base_loopbreak(w->base);
}

static void on_wakeup(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    struct generation *next = atomic_exchange(&w->next_gen, NULL);
    if (next) {
        generation_unref(w->gen);
        w->gen = next; /* limits and timeouts are read from it per use */
    }
    if (atomic_load(&w->stop_now)) {
        while (w->live)
            proxy_abort_exchange(w->live);
        /* Give the goodbyes (ends of SSE streams, 503s) a moment to leave, no more. */
        struct timeval cap = {0, WORKER_FLUSH_CAP_MS * 1000};
        event_base_loopexit(w->base, &cap);
    }
    if (atomic_load(&w->stop_accepting) && !event_pending(w->drain_poll, EV_TIMEOUT, NULL)) {
        server_stop_accepting(w);
        struct timeval tv = {0, WORKER_DRAIN_POLL_MS * 1000};
        event_add(w->drain_poll, &tv);
        on_drain_poll(-1, 0, w);
    }
}

int worker_init(struct worker *w, unsigned index, struct shared *shared, struct generation *gen,
                struct strbuf *errors)
{
    memset(w, 0, sizeof(*w));
    w->index = index;
    w->shared = shared;
    w->gen = generation_ref(gen);
    atomic_init(&w->next_gen, NULL);
    atomic_init(&w->stop_accepting, false);
    atomic_init(&w->stop_now, false);
    atomic_init(&w->exited, false);
    strbuf_init(&w->logbuf);
    strbuf_init(&w->scratch);
    w->metrics = metrics_worker(shared->metrics, index);
    /* The changelist folds the many enable/disable calls of one loop iteration into one
     * epoll_ctl per socket; three priorities let the log flush run after everything else. */
    struct event_config *ec = event_config_new();
    if (ec) {
        event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        w->base = event_base_new_with_config(ec);
        event_config_free(ec);
    }
    if (!w->base || event_base_priority_init(w->base, 3) < 0)
        goto fail;
    w->log_flush = event_new(w->base, -1, 0, on_log_flush, w);
    if (!w->log_flush || event_priority_set(w->log_flush, 2) < 0)
        goto fail;
    w->wakeup = event_new(w->base, -1, 0, on_wakeup, w);
    w->drain_poll = event_new(w->base, -1, EV_PERSIST, on_drain_poll, w);
    w->upstream = upstream_new(w->base);
    if (!w->wakeup || !w->drain_poll || !w->upstream)
        goto fail;
    if (index == 0 && shared->conversations) {
        w->conversation_sweep = event_new(w->base, -1, EV_PERSIST, on_conversation_sweep, w);
        struct timeval every = {WORKER_CONVERSATION_SWEEP_MS / 1000,
                                (WORKER_CONVERSATION_SWEEP_MS % 1000) * 1000};
        if (!w->conversation_sweep || event_add(w->conversation_sweep, &every) < 0)
            goto fail;
    }
    if (gen->cfg->shared_state &&
        !(w->sstate = shared_state_new(w->base, gen->cfg->shared_state, &shared->sstate_hub,
                                       shared->metrics, w->metrics)))
        goto fail;
    if (server_start(w, gen->cfg, errors) < 0)
        goto fail_quiet;
    return 0;
fail:
    strbuf_puts(errors, "worker: out of memory\n");
fail_quiet:
    worker_join_and_free(w);
    return -1;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* The wakeup event is not pending, so the loop would exit at once without this. */
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    worker_flush_log(w);
    json_arena_thread_free();
    atomic_store(&w->exited, true);
    return NULL;
}

int worker_start(struct worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void worker_post_generation(struct worker *w, struct generation *gen)
{
    struct generation *old = atomic_exchange(&w->next_gen, generation_ref(gen));
    if (old)
        generation_unref(old); /* never taken: a newer one superseded it */
    event_active(w->wakeup, 0, 0);
}

void worker_post_drain(struct worker *w)
{
    atomic_store(&w->stop_accepting, true);
    event_active(w->wakeup, 0, 0);
}

void worker_post_stop(struct worker *w)
{
    atomic_store(&w->stop_accepting, true);
    atomic_store(&w->stop_now, true);
    event_active(w->wakeup, 0, 0);
}

void worker_join_and_free(struct worker *w)
{
    if (w->thread)
        pthread_join(w->thread, NULL);
    w->thread = 0;
    /* Exchanges still live (never, after stop) would reference the upstream. */
    while (w->live)
        proxy_abort_exchange(w->live);
    server_stop_accepting(w);
    proxy_worker_cleanup(w);
    client_close_all(w); /* idle keep-alive connections, and any still lingering */
    upstream_free(w->upstream);
    shared_state_free(w->sstate); /* after the exchanges: none waits on it any more */
    if (w->wakeup)
        event_free(w->wakeup);
    if (w->drain_poll)
        event_free(w->drain_poll);
    if (w->conversation_sweep)
        event_free(w->conversation_sweep);
    if (w->log_flush) {
        worker_flush_log(w);
        event_free(w->log_flush);
        w->log_flush = NULL;
    }
    if (w->base)
        event_base_free(w->base);
    struct generation *next = atomic_exchange(&w->next_gen, NULL);
    generation_unref(next);
    generation_unref(w->gen);
    strbuf_free(&w->logbuf);
    strbuf_free(&w->scratch);
    memset(w, 0, sizeof(*w));
}
