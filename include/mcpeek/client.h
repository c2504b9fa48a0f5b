/* client: one connection from an MCP client to the front end (HTTP/1.1 over TCP or TLS).
 *
 * It reads and checks request heads and bodies (limits, framing, deadlines), refuses what
 * it must with a JSON-RPC error and one log line, hands each complete request to proxy.c,
 * and writes the response proxy.c streams back, with keep-alive and pipelining. Responses
 * are written optimistically (EPOLLOUT is armed only when the socket is full), and the
 * socket stays registered for reading during an exchange, so a client that hangs up is
 * noticed at once, even before the upstream answered.
 */
#ifndef MCPEEK_CLIENT_H
#define MCPEEK_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct client;
struct worker;

/* What proxy.c hears about its client while an exchange runs. */
struct client_ops {
    /* The client went away (hung up, reset, or stopped reading for client_send_timeout).
     * The client is gone once this returns: the exchange must not use it again. */
    void (*aborted)(void *arg);
    /* Everything queued was written, after client_watch_drain(). */
    void (*drained)(void *arg);
};

/* Accepted socket `fd` (non-blocking) becomes a client of worker `w`. On failure the
 * socket is closed. */
void client_accept(struct worker *w, int fd, bool tls, const struct sockaddr *peer);

/* Routes the running exchange's events to `ops` / `arg`. */
void client_attach(struct client *c, const struct client_ops *ops, void *arg);

/* Starts the response. `headers` is a block of "Name: value\r\n" lines, end-to-end headers
 * only (no Connection, Content-Length or Transfer-Encoding: the client adds the framing).
 * `content_length` is the body length, or -1 when unknown (chunked to HTTP/1.1 clients,
 * delimited by closing the connection for HTTP/1.0 ones). */
void client_respond_start(struct client *c, int status, const char *headers, size_t headers_len,
                          int64_t content_length);
void client_respond_body(struct client *c, const char *data, size_t len);
/* Ends the exchange: `complete`, or cut short (the connection is closed after what was
 * queued, so the client can tell). The client may read the next request afterwards. */
void client_respond_end(struct client *c, bool complete);

/* Response bytes queued and not yet written to the socket. */
size_t client_output_pending(const struct client *c);
/* Asks for one `drained` call once everything queued has been written. */
void client_watch_drain(struct client *c);

/* Peer address as text; "TLSv1.3"-style protocol name for HTTPS, NULL for plain HTTP. */
const char *client_peer_ip(const struct client *c);
const char *client_tls_version(const struct client *c);

/* True when no client connection of `w` has response bytes left to write. */
bool client_all_flushed(const struct worker *w);
/* Closes every client connection of `w` (worker teardown; exchanges have ended). */
void client_close_all(struct worker *w);

#endif
