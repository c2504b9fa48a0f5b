/* upstream: a libcurl multi handle driven by one worker's libevent loop.
 *
 * This is the glue only (the hiperfifo pattern): curl tells us which sockets to watch and
 * when its timer is due, we turn those into events on the worker's event_base and hand
 * readiness back with curl_multi_socket_action(). Nothing here blocks. What a transfer
 * does with its data is the caller's business (proxy.c sets the easy handle's callbacks).
 * The multi handle keeps upstream connections alive and reuses them across requests.
 */
#ifndef MCPEEK_UPSTREAM_H
#define MCPEEK_UPSTREAM_H

#include <curl/curl.h>
#include <event2/event.h>

struct upstream;

/* Called once per finished transfer (success or failure), from the event loop, after the
 * easy handle was removed from the multi handle. */
typedef void (*upstream_done_fn)(void *arg, CURLcode result);

/* Caller-owned (embedded in the caller's exchange, so starting a transfer allocates
 * nothing); must stay valid until `done` ran or upstream_cancel() returned. */
struct upstream_job {
    upstream_done_fn done;
    void *arg;
};

struct upstream *upstream_new(struct event_base *base, long max_idle_connections);
void upstream_free(struct upstream *up);

/* An easy handle to configure and pass to upstream_add: recycled when possible so a
 * worker does not allocate one per request. */
CURL *upstream_easy_get(struct upstream *up);

/* Starts the transfer. job->done runs exactly once, unless upstream_cancel() is called
 * first. Returns 0, or -1 (the handle stays the caller's; give it back with
 * upstream_easy_put). */
int upstream_add(struct upstream *up, CURL *easy, struct upstream_job *job);

/* Aborts a running transfer (client gone): `done` will not run. The handle is recycled. */
void upstream_cancel(struct upstream *up, CURL *easy);

/* Returns an easy handle that is not running (after `done`, or one never added). */
void upstream_easy_put(struct upstream *up, CURL *easy);

#endif
