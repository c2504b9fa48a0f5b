/* worker: one thread, one event loop, one front end and one upstream pool.
 *
 * Each worker has its own event_base, listening sockets (SO_REUSEPORT, so the kernel
 * spreads connections), client connections, upstream pool and log buffer. Workers share only
 * what `struct shared` holds. The main thread talks to a worker through worker_post_*,
 * which wake the worker's loop; it never touches the worker's libevent objects directly.
 */
#ifndef MCPEEK_WORKER_H
#define MCPEEK_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "mcpeek/accesslog.h"
#include "mcpeek/config.h"
#include "mcpeek/generation.h"
#include "mcpeek/metrics.h"
#include "mcpeek/server.h"
#include "mcpeek/session_map.h"
#include "mcpeek/shared_state.h"
#include "mcpeek/strbuf.h"

struct client;
struct event_base;
struct event;
struct upstream;
struct ratelimit;
struct conversation_table;

/* Listening addresses per worker (`listen` lines). */
#define WORKER_MAX_LISTEN CONFIG_LISTEN_MAX

/* Process-wide objects every worker uses; owned by main, outlive the workers. */
struct shared {
    struct accesslog *log;
    struct metrics *metrics;
    struct session_map *sessions;
    struct ratelimit *ratelimits;             /* rate_limit buckets, all workers */
    struct conversation_table *conversations; /* open conversations, all workers */
    atomic_uint connections;            /* open client connections, all workers (max_connections) */
    struct shared_state_hub sstate_hub; /* what the workers' Redis connections share */
};

struct worker {
    unsigned index;
    pthread_t thread;
    struct shared *shared;
    struct event_base *base;
    struct server_listener listeners[WORKER_MAX_LISTEN];
    size_t n_listeners;
    struct upstream *upstream;
    struct shared_state *sstate; /* Redis connection (`shared_state`), NULL when unset */
    struct worker_metrics *metrics;
    struct strbuf logbuf;                  /* formatted log lines not yet written */
    struct strbuf scratch;                 /* short-lived text (upstream header lines), reused */
    unsigned log_pending;                  /* lines in logbuf */
    struct event *log_flush;               /* lowest priority: writes logbuf after the busy work */
    struct generation *gen;                /* for new exchanges; one reference held */
    _Atomic(struct generation *) next_gen; /* posted by main, taken by the worker */
    struct event *wakeup;                  /* activated from main: new generation / stop */
    atomic_bool stop_accepting;            /* graceful shutdown requested */
    atomic_bool stop_now;                  /* deadline passed: end everything */
    atomic_bool exited;                    /* the loop returned; the thread can be joined */
    unsigned exchanges;                    /* in flight on this worker */
    struct exchange *live;                 /* list of in-flight exchanges (for forced shutdown) */
    struct exchange *spare_exchanges;      /* ended ones kept for reuse (proxy.c) */
    unsigned n_spare_exchanges;
    struct client *clients;           /* every open client connection */
    struct event *drain_poll;         /* while stopping: checks that responses were flushed */
    struct event *conversation_sweep; /* worker 0: ends idle conversations */
};

/* How often worker 0 looks for conversations idle past conversation_idle_timeout: the
 * precision of that timeout, and cheap (the sweep stops at the first recent one). */
#define WORKER_CONVERSATION_SWEEP_MS 1000

/* Creates the worker's loop and binds its listeners from gen->cfg (takes a reference).
 * Returns 0 or -1 with a message in `errors`; nothing is left running on failure. */
int worker_init(struct worker *w, unsigned index, struct shared *shared, struct generation *gen,
                struct strbuf *errors);
int worker_start(struct worker *w);
/* Main thread: hand a new generation over (takes a reference). */
void worker_post_generation(struct worker *w, struct generation *gen);
/* Main thread: stop accepting; in-flight exchanges finish. */
void worker_post_drain(struct worker *w);
/* Main thread: end every exchange now (shutdown deadline). */
void worker_post_stop(struct worker *w);
/* Main thread: joins the thread (after drain/stop) and frees everything. */
void worker_join_and_free(struct worker *w);

/* Queues the exchange's access-log line. Lines are written in batches (one write() per
 * loop iteration, or sooner when accesslog_batch_max is reached), never split. */
void worker_log(struct worker *w, const struct exchange_record *rec,
                const struct accesslog_options *opts);

/* Writes the conversation lines of `ended` (conversation_track/sweep results; may be NULL)
 * and frees the list. */
struct conversation_record;
void worker_log_conversations(struct worker *w, struct conversation_record *ended);

/* Monotonic clock in milliseconds / nanoseconds. */
uint64_t worker_now_ms(void);
uint64_t worker_now_ns(void);

#endif
