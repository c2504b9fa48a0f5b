/* admin: the operator's listener (admin_listen), apart from the proxied port so no MCP
 * server path can collide with it: GET /healthz, /readyz and /metrics. It runs on the main
 * thread's event loop; the scrape sums the workers' counters without stopping them. */
#ifndef MCPEEK_ADMIN_H
#define MCPEEK_ADMIN_H

#include <stdint.h>

#include "mcpeek/strbuf.h"

struct event_base;
struct admin;
struct metrics;
struct generation;

/* `readiness_window_ms`: /readyz is 200 while the upstream answered within this window. */
struct admin *admin_start(struct event_base *base, const char *listen_spec, struct metrics *metrics,
                          uint32_t readiness_window_ms, struct strbuf *errors);
void admin_free(struct admin *admin);
/* Whose upstream the readiness probe connects to (start, reload); takes a reference. */
void admin_set_upstream(struct admin *admin, struct generation *gen);

#endif
