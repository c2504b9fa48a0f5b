/* proxy: one exchange, from the buffered client request to the log line.
 *
 * request -> parse (jsonrpc) -> forward (upstream) -> relay status, headers and body as
 * they arrive -> exactly one access-log line, however the exchange ends: completion,
 * upstream failure, timeout, client disconnect or shutdown.
 */
#ifndef MCPEEK_PROXY_H
#define MCPEEK_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "mcpeek/access.h"

struct client;
struct exchange;
struct http1_request;
struct worker;

/* A complete request from client.c: `method` is its static name, `body` the decoded body
 * (NULL when empty), valid until the response ends. The head is used only during the call. */
void proxy_handle_request(struct worker *w, struct client *c, const struct http1_request *req,
                          const char *method, const char *body, size_t body_len);

/* Ends an exchange at once (shutdown deadline): the client's response is closed and the
 * log line says error "shutdown". */
void proxy_abort_exchange(struct exchange *ex);

/* Frees the ended exchanges the worker keeps for reuse (worker teardown). */
void proxy_worker_cleanup(struct worker *w);

/* A request client.c refused itself (limits, framing, deadlines, access). */
struct proxy_refusal {
    const char *method, *path, *client_ip;
    const char *tls; /* as client_tls_version() */
    int status, rpc_code;
    const char *error;
    uint64_t bytes_in, bytes_out;
    /* The parsed head when the refusal came after it (413, 408 on the body, 401/403): the
     * line then names the session, its protocol version and the session map's context.
     * NULL before. */
    const struct http1_request *head;
    enum access_verdict verdict; /* ACCESS_OK unless an access check refused it (metric) */
};

/* Writes the log line of a refused request and counts it. */
void proxy_log_refused(struct worker *w, const struct proxy_refusal *r);

#endif
