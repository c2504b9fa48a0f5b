/* proxy: one exchange, from the buffered client request to the log line.
 *
 * request -> parse (jsonrpc) -> forward (upstream) -> relay status, headers and body as
 * they arrive -> exactly one access-log line, however the exchange ends: completion,
 * upstream failure, timeout, client disconnect or shutdown.
 */
#ifndef MCPEEK_PROXY_H
#define MCPEEK_PROXY_H

#include <stddef.h>

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

/* Writes the log line of a request client.c refused (limits, framing, deadlines). */
void proxy_log_refused(struct worker *w, const char *method, const char *path,
                       const char *client_ip, int status, const char *error, size_t bytes_out);

#endif
