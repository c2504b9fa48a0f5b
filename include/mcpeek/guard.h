/* guard: the per-connection filter that checks request heads before evhttp reads them
 * (body and head size limits, header/body deadlines, max_connections), answering refusals
 * with JSON-RPC errors and one log line each. See src/guard.c for why it exists. */
#ifndef MCPEEK_GUARD_H
#define MCPEEK_GUARD_H

#include <openssl/ssl.h>
#include <stdbool.h>

struct bufferevent;
struct event_base;
struct worker;

/* evhttp_set_bevcb() callback for plain HTTP; `arg` is the struct worker. NULL on
 * allocation failure. */
struct bufferevent *guard_bufferevent_new(struct event_base *base, void *arg);

/* Layers the guard over `sock` (freed with the result). `ssl` is the connection's SSL for
 * HTTPS (its app data is pointed at the guard's handshake flag), NULL for plain HTTP. */
struct bufferevent *guard_wrap(struct bufferevent *sock, struct worker *w, SSL *ssl);

/* True when no client connection of the worker has response bytes left to send. */
bool guard_all_flushed(const struct worker *w);

#endif
