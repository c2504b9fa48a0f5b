/* proxy: one exchange, from the buffered client request to the log line.
 *
 * request -> parse (jsonrpc) -> forward (upstream) -> relay status, headers and body as
 * they arrive -> exactly one access-log line, however the exchange ends: completion,
 * upstream failure, timeout, client disconnect or shutdown.
 */
#ifndef MCPEEK_PROXY_H
#define MCPEEK_PROXY_H

#include <stddef.h>

struct evhttp_request;
struct worker;
struct exchange;

/* evhttp general callback; `arg` is the struct worker. */
void proxy_handle_request(struct evhttp_request *req, void *arg);

/* Ends an exchange at once (shutdown deadline): the client's response is closed and the
 * log line says error "shutdown". */
void proxy_abort_exchange(struct exchange *ex);

/* Writes the log line of a request refused before evhttp parsed it (guard.c). */
void proxy_log_refused(struct worker *w, const char *method, const char *path,
                       const char *client_ip, int status, const char *error, size_t bytes_out);

#endif
