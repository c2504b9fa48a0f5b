/* worker: a thread running one event loop with its front end and upstream pool.
 *
 * The main thread never touches a worker's libevent objects: it stores a request in an
 * atomic (new generation, drain, stop) and activates the worker's wakeup event, which
 * libevent (with pthread support on) delivers inside the worker's loop.
 */
#include "mcpeek/worker.h"

#include <event2/event.h>
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mcpeek/proxy.h"
#include "mcpeek/server.h"
#include "mcpeek/upstream.h"

/* Idle upstream connections each worker keeps open for reuse. */
#define WORKER_UPSTREAM_IDLE_MAX 128

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

static void on_wakeup(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    struct generation *next = atomic_exchange(&w->next_gen, NULL);
    if (next) {
        generation_unref(w->gen);
        w->gen = next;
        server_apply_limits(w, next->cfg);
    }
    if (atomic_load(&w->stop_now)) {
        server_stop_accepting(w);
        while (w->live)
            proxy_abort_exchange(w->live);
        event_base_loopbreak(w->base);
        return;
    }
    if (atomic_load(&w->stop_accepting)) {
        server_stop_accepting(w);
        if (w->exchanges == 0)
            event_base_loopbreak(w->base);
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
    w->metrics = metrics_worker(shared->metrics, index);
    w->base = event_base_new();
    if (!w->base)
        goto fail;
    w->wakeup = event_new(w->base, -1, 0, on_wakeup, w);
    w->upstream = upstream_new(w->base, WORKER_UPSTREAM_IDLE_MAX);
    if (!w->wakeup || !w->upstream)
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
    for (int i = 0; i < 2; i++)
        if (w->http[i])
            evhttp_free(w->http[i]); /* closes idle keep-alive connections */
    upstream_free(w->upstream);
    if (w->wakeup)
        event_free(w->wakeup);
    if (w->base)
        event_base_free(w->base);
    struct generation *next = atomic_exchange(&w->next_gen, NULL);
    generation_unref(next);
    generation_unref(w->gen);
    strbuf_free(&w->logbuf);
    memset(w, 0, sizeof(*w));
}
