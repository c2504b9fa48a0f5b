/* shared_state: what several mcpeek instances share through Redis (`shared_state`).
 *
 * One `struct shared_state` per worker: an asynchronous hiredis connection on the worker's
 * event_base (libevent adapter), reconnected with backoff. Shared are the session entries
 * (Mcp-Session-Id -> OpenAI context and issuing upstream, expiring with session_map_ttl) and
 * the rate-limit buckets (one Lua script run atomically per request, so a limit holds for the
 * fleet). Nothing here ever fails a request: a lookup that is not answered within its
 * deadline, or made while disconnected, reports "not answered" and the caller uses its local
 * state. Writes are fire and forget.
 */
#ifndef MCPEEK_SHARED_STATE_H
#define MCPEEK_SHARED_STATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcpeek/openai_meta.h"
#include "mcpeek/ratelimit.h"

struct event_base;
struct metrics;
struct worker_metrics;
struct shared_state;
struct shared_state_op;

/* Reconnect backoff: the first retry after this long, doubling up to the max. */
#define SHARED_STATE_BACKOFF_MIN_MS 100
#define SHARED_STATE_BACKOFF_MAX_MS 5000
/* A connection attempt not completed in this long is abandoned (and retried with backoff). */
#define SHARED_STATE_CONNECT_TIMEOUT_MS 1000
/* At most one stderr line about Redis trouble per this long, for the whole process. */
#define SHARED_STATE_DIAG_INTERVAL_MS 60000

/* Process-wide, owned by main, shared by the workers' connections. */
struct shared_state_hub {
    _Atomic uint64_t last_diag_ms; /* monotonic ms of the last stderr line; 0 = none yet */
};

/* Why a shared-state operation did not answer (mcpeek_shared_state_errors_total{kind}). */
enum shared_state_error {
    SHARED_STATE_ERR_UNAVAILABLE = 0, /* not connected: local state used at once */
    SHARED_STATE_ERR_TIMEOUT,         /* no answer within shared_state_timeout */
    SHARED_STATE_ERR_REPLY,           /* Redis answered with an error or an unexpected reply */
    SHARED_STATE_ERR_DISCONNECT,      /* the connection was lost or could not be made */
    SHARED_STATE_ERR_KIND_COUNT
};

/* Splits `redis://HOST:PORT[/DB]` (IPv6 in brackets). 0, or -1 with the reason in *why. */
int shared_state_parse_url(const char *url, char *host, size_t host_size, unsigned *port,
                           unsigned *db, const char **why);

/* Starts connecting (the first attempt runs from the loop, not here). NULL on allocation
 * failure or an unusable URL (the config checked it). */
struct shared_state *shared_state_new(struct event_base *base, const char *url,
                                      struct shared_state_hub *hub, struct metrics *metrics,
                                      struct worker_metrics *wm);
/* Closes the connection; pending lookups end as not answered (their callbacks run first). */
void shared_state_free(struct shared_state *ss);
bool shared_state_connected(const struct shared_state *ss);

/* A session lookup answered: `ctx` (owned by the callee, may be NULL) and `upstream`
 * (rendezvous id, 0 = none) as Redis has them; found is false when Redis has no entry. When
 * `answered` is false (deadline, disconnected, error) the rest is meaningless. */
typedef void (*shared_state_session_cb)(void *arg, bool answered, bool found,
                                        OpenAiClientContext *ctx, uint64_t upstream);
/* A rate-limit check answered: `refused` is the index into the rules passed of the first one
 * that refuses, or -1 when allowed (tokens taken in Redis). */
typedef void (*shared_state_ratelimit_cb)(void *arg, bool answered, int refused,
                                          uint32_t retry_after_s);

/* Starts a lookup of `session_id`. The callback runs exactly once, later (never from inside
 * this call), unless shared_state_cancel() comes first. Returns NULL when it cannot start
 * (not connected, out of memory): the caller goes on with local state at once; the miss is
 * counted. `max_len` caps the context's strings as the request parser does. */
struct shared_state_op *shared_state_session_get(struct shared_state *ss, const char *session_id,
                                                 uint32_t timeout_ms, size_t max_len,
                                                 shared_state_session_cb cb, void *arg);

/* Checks one request against `rules` in Redis (token buckets keyed by rule and key value;
 * values are stored hashed). Same contract as shared_state_session_get. */
struct shared_state_op *shared_state_ratelimit(struct shared_state *ss,
                                               const struct ratelimit_rule *rules, size_t n_rules,
                                               const struct ratelimit_keys *keys,
                                               uint32_t timeout_ms, shared_state_ratelimit_cb cb,
                                               void *arg);

/* The callback will not run. Safe on NULL. */
void shared_state_cancel(struct shared_state_op *op);

/* Fire and forget: remembers the session's context (NULL = keep Redis's) and upstream (0 =
 * keep), expiring after ttl_ms; forgets a session. No-ops while disconnected. */
void shared_state_session_put(struct shared_state *ss, const char *session_id,
                              const OpenAiClientContext *ctx, uint64_t upstream, uint32_t ttl_ms);
void shared_state_session_del(struct shared_state *ss, const char *session_id);

#endif
