/* upstream: requests to the MCP server through libcurl's multi interface, one per worker.
 *
 * One `struct upstream` per event_base (each worker's, and the admin loop's readiness probe)
 * owns a curl multi handle driven by that loop (multi_socket: libcurl says which sockets and
 * timeouts it waits for, the loop tells it when they fire), a pool of reusable easy handles
 * and libcurl's connection cache. A call streams the answer back: the final response head
 * once, the body as libcurl decodes it (chunked coding removed, nothing buffered beyond one
 * read), and exactly one `done`. A request that may have reached the server is never sent a
 * second time unless its method is idempotent.
 */
#ifndef MCPEEK_UPSTREAM_H
#define MCPEEK_UPSTREAM_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcpeek/metrics.h"
#include "mcpeek/upstream_target.h"

struct event_base;
struct upstream;
struct upstream_handle;

/* One response header field; spans valid during the `head` call only, not NUL terminated.
 * Leading and trailing whitespace of the value is removed. */
struct upstream_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Header fields in a response head; a head with more is refused (502). */
#define UPSTREAM_MAX_HEADERS 100

struct upstream_callbacks {
    /* The final (non-1xx) response head. Returning false refuses the answer: the call ends
     * with UPSTREAM_ERR_OTHER and nothing more is delivered. */
    bool (*head)(void *arg, int status, const struct upstream_header *headers, size_t n);
    /* Response payload, in order, transfer coding removed. */
    void (*body)(void *arg, const char *data, size_t len);
    /* The call ended: `ok`, or failed with `kind` (meaningless when ok). Runs once, last,
     * never from inside a libcurl callback; the call may be freed from inside it. */
    void (*done)(void *arg, bool ok, enum upstream_error_kind kind);
};

/* Caller-owned, embedded in the caller's exchange. Every pointer must stay valid until `done`
 * ran or upstream_cancel() returned: libcurl reads the body in place (no copy). */
struct upstream_call {
    const struct upstream_callbacks *cb;
    void *arg;
    const char *method;         /* "POST", "GET", "DELETE", "HEAD", ... */
    const char *url;            /* absolute URL, NUL terminated */
    struct curl_slist *headers; /* request header lines, caller-owned (see libcurl's
                                 * CURLOPT_HTTPHEADER: "Name:" with no value suppresses a
                                 * header libcurl would add) */
    const char *body;           /* sent as is with a Content-Length; NULL = no body */
    size_t body_len;
    /* private to upstream.c */
    struct upstream_handle *handle; /* NULL when not running */
    bool paused;                    /* the caller asked to stop receiving */
};

/* NULL when libcurl or libevent cannot be set up. */
struct upstream *upstream_new(struct event_base *base);
/* Every call must have ended or been cancelled. Closes the cached connections. */
void upstream_free(struct upstream *up);

/* Starts `call` with `target`'s settings. `done` runs exactly once unless the call is
 * cancelled first; it may run before this returns (out of memory): call it last. */
void upstream_start(struct upstream *up, const struct upstream_target *target,
                    struct upstream_call *call);

/* Stops receiving the response (the client reads slowly) / receives again. Data libcurl has
 * already read is held by libcurl, not delivered, until resumed. */
void upstream_pause(struct upstream_call *call);
void upstream_resume(struct upstream_call *call);

/* Ends a running call without `done`; its connection is closed when the response was not
 * read to its end. Safe from inside the call's own callbacks, and on a call that ended. */
void upstream_cancel(struct upstream_call *call);

/* Connects to `target` without sending a request (readiness probe); `done` says whether the
 * connection (and TLS handshake) succeeded. The call needs cb and arg only. */
void upstream_probe(struct upstream *up, const struct upstream_target *target,
                    struct upstream_call *call);

/* False with a libcurl older than 8.0.0, which cannot reuse an HTTP/2 prior-knowledge
 * connection (curl issue #10634): upstream_http2 prior-knowledge then opens a connection per
 * request, and main says so at start. */
bool upstream_libcurl_reuses_h2c(void);

/* The error cause for a failed transfer: `code` is libcurl's result, `answered` whether any
 * response byte arrived, `tls` whether the upstream is https. docs/logging.md has the table. */
enum upstream_error_kind upstream_error_kind_from_curl(CURLcode code, bool answered, bool tls,
                                                       const char *detail);

#endif
