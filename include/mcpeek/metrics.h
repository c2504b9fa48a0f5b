/* metrics: counters and latency histograms, rendered in Prometheus text format.
 *
 * Each worker thread owns one `struct worker_metrics` and is its only writer, so counting
 * on the hot path is a plain relaxed atomic store, never a lock. The scrape (admin thread)
 * sums all workers. Label values that come from clients (rpc_method, tool) are interned in
 * a registry bounded by `label_limit`; once full, new values count as "other".
 */
#ifndef MCPEEK_METRICS_H
#define MCPEEK_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcpeek/ratelimit.h"
#include "mcpeek/access.h"
#include "mcpeek/shared_state.h"
#include "mcpeek/strbuf.h"

struct metrics;        /* the registry: all workers' slots + process-wide values */
struct worker_metrics; /* one worker's slot */

/* kinds for mcpeek_upstream_errors_total{kind} */
enum upstream_error_kind {
    UPSTREAM_ERR_CONNECT = 0,
    UPSTREAM_ERR_TIMEOUT,
    UPSTREAM_ERR_RESET,
    UPSTREAM_ERR_TLS,
    UPSTREAM_ERR_OTHER,
    UPSTREAM_ERR_DNS, /* the upstream's name did not resolve */
    UPSTREAM_ERR_KIND_COUNT
};

/* Distinct `upstream` label values (origins) kept; slot 0 is "other" for any past it. */
#define METRICS_UPSTREAM_MAX 64
#define METRICS_UPSTREAM_NAME_MAX 320

struct metrics *metrics_new(unsigned n_workers, unsigned label_limit, const char *version);
void metrics_free(struct metrics *m);
struct worker_metrics *metrics_worker(struct metrics *m, unsigned worker_index);

/* One finished exchange. rpc_method/tool may be NULL (no body / not tools/call); tool is
 * only used as a label for tools/call. status 0 = no response was sent. */
void metrics_exchange(struct worker_metrics *wm, const char *rpc_method, const char *tool,
                      int status, double duration_seconds, uint64_t bytes_in, uint64_t bytes_out);
/* The answer to a request was a JSON-RPC error (mcpeek_rpc_errors_total). Labels as for
 * metrics_exchange; `code` is used only when has_code (else code="other"), and codes outside
 * the JSON-RPC spec's five and the server range -32000..-32099 count as "other". */
void metrics_rpc_error(struct worker_metrics *wm, const char *rpc_method, const char *tool,
                       bool has_code, long long code);
/* A tools/call result said isError: true (mcpeek_tool_errors_total). */
void metrics_tool_error(struct worker_metrics *wm, const char *tool);
/* Request sent upstream -> upstream status line (mcpeek_upstream_duration_seconds). */
void metrics_upstream_latency(struct worker_metrics *wm, double seconds);
/* `lines` access-log lines were lost: the write failed, or they could not be formatted. */
void metrics_log_write_failure(struct worker_metrics *wm, uint64_t lines);
void metrics_upstream_error(struct worker_metrics *wm, enum upstream_error_kind kind);
void metrics_stream_opened(struct worker_metrics *wm); /* an SSE response started */
void metrics_stream_closed(struct worker_metrics *wm); /* ... and ended */
void metrics_log_line(struct worker_metrics *wm);
/* a request refused by a rate_limit line of this scope (answered 429) */
void metrics_rate_limited(struct worker_metrics *wm, enum ratelimit_scope scope);
/* an HTTPS connection closed before its handshake completed */
void metrics_tls_handshake_failure(struct worker_metrics *wm);
/* a request refused by access.c: mcpeek_access_denied_total{reason} */
void metrics_access_denied(struct worker_metrics *wm,
                           enum access_verdict reason);       /* an access-log line was written */
void metrics_upstream_ok(struct metrics *m, uint64_t now_ms); /* upstream answered (readyz) */
uint64_t metrics_upstream_last_ok_ms(const struct metrics *m);
/* Main thread, at each load: the label slot of an upstream origin (registered on first use;
 * 0 = "other" once METRICS_UPSTREAM_MAX - 1 origins are known). */
unsigned metrics_upstream_slot(struct metrics *m, const char *origin);
const char *metrics_upstream_name(struct metrics *m, unsigned slot);
/* a request sent to the upstream of `slot` / a failure that marked it down / a session
 * answered 404 because its upstream was down */
void metrics_upstream_request(struct worker_metrics *wm, unsigned slot);
void metrics_upstream_failure(struct worker_metrics *wm, unsigned slot);
void metrics_upstream_session_lost(struct worker_metrics *wm, unsigned slot);
/* a shared_state operation fell back to local state / a worker's Redis connection went up
 * (+1) or down (-1) */
void metrics_shared_state_error(struct worker_metrics *wm, enum shared_state_error kind);
void metrics_shared_state_connected(struct metrics *m, int delta);
void metrics_config_reload(struct metrics *m, bool success); /* main thread */

/* Appends the whole exposition (text format 0.0.4) to `out`. Safe to call from another
 * thread while workers count. */
void metrics_render(struct metrics *m, struct strbuf *out);
/* Appends the mcpeek_upstream_ready gauge; the admin listener knows readiness (its window). */
void metrics_render_upstream_ready(struct strbuf *out, bool ready);

#endif
