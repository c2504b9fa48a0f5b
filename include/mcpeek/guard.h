/* guard: the per-connection filter that checks request heads before evhttp reads them
 * (body and head size limits, header/body deadlines, max_connections), answering refusals
 * with JSON-RPC errors and one log line each. See src/guard.c for why it exists. */
#ifndef MCPEEK_GUARD_H
#define MCPEEK_GUARD_H

struct bufferevent;
struct event_base;

/* evhttp_set_bevcb() callback; `arg` is the struct worker. NULL on allocation failure. */
struct bufferevent *guard_bufferevent_new(struct event_base *base, void *arg);

#endif
