/* upstream: HTTP/1.1 client to the MCP server, with a keep-alive pool per worker.
 *
 * One `struct upstream` per worker, driven by that worker's event_base. A call writes a
 * request head the caller built plus the request body, then streams the answer back:
 * the final response head once, body payload as it arrives (chunked coding removed), and
 * exactly one `done`. Connections go back to the pool when a response ended cleanly and
 * both sides allow keep-alive. Plain TCP or TLS (OpenSSL, verified by default). See
 * docs/performance.md for why this replaced libcurl.
 */
#ifndef MCPEEK_UPSTREAM_H
#define MCPEEK_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcpeek/http1.h"
#include "mcpeek/metrics.h"
#include "mcpeek/upstream_target.h"

struct event_base;
struct upstream;
struct upstream_conn;

struct upstream_callbacks {
    /* The final (non-1xx) response head; its spans are valid during the call only. */
    void (*head)(void *arg, const struct http1_response *head);
    /* Response payload, in order, chunked coding removed. */
    void (*body)(void *arg, const char *data, size_t len);
    /* The call ended: `ok`, or failed with `kind` (meaningless when ok). Runs once, last;
     * the call may be freed from inside it. */
    void (*done)(void *arg, bool ok, enum upstream_error_kind kind);
};

/* Caller-owned, embedded in the caller's exchange so starting a call allocates nothing.
 * The head and body must stay valid until `done` ran or upstream_cancel() returned. */
struct upstream_call {
    const struct upstream_callbacks *cb;
    void *arg;
    const char *head; /* "POST /mcp HTTP/1.1\r\n...\r\n\r\n" */
    size_t head_len;
    const char *body;
    size_t body_len;
    bool no_body_expected; /* a HEAD request: the response has no payload */
    /* private to upstream.c */
    struct upstream *up;
    const struct upstream_target *target;
    struct upstream_conn *conn;
    bool reused;   /* sent on a pooled connection: may be retried once on a fresh one */
    bool answered; /* a response byte arrived */
    bool paused;
};

struct upstream *upstream_new(struct event_base *base);
/* Frees the pool; every call must have ended or been cancelled. */
void upstream_free(struct upstream *up);

/* Starts `call` (cb, arg, head, body set by the caller). `done` runs exactly once unless
 * the call is cancelled first, possibly before this returns (nothing to connect to, out of
 * memory): call it last. */
void upstream_start(struct upstream *up, const struct upstream_target *t,
                    struct upstream_call *call);

/* Stops reading the response (the client is slow) / reads again. */
void upstream_pause(struct upstream_call *call);
void upstream_resume(struct upstream_call *call);

/* Ends a running call without `done`; its connection is closed (the response was not read
 * to its end). Safe from inside the call's own callbacks, and on a call that ended. */
void upstream_cancel(struct upstream_call *call);

#endif
