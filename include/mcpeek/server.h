/* server: the listening sockets of one worker and its accept loop.
 *
 * Every worker binds its own socket per `listen` address with SO_REUSEPORT, so the kernel
 * balances connections across workers with no shared accept lock. Accepted sockets get
 * TCP_NODELAY (inherited from the listener): SSE events are small writes that must not
 * wait for Nagle.
 */
#ifndef MCPEEK_SERVER_H
#define MCPEEK_SERVER_H

#include "mcpeek/strbuf.h"

#include <stdbool.h>
#include <time.h>

struct event;
struct worker;
struct mcpeek_config;

/* One listening socket of a worker. */
struct server_listener {
    struct worker *w;
    int fd;
    bool tls;
    struct event *ev;    /* EV_READ | EV_PERSIST: connections to accept */
    struct event *pause; /* re-enables ev after running out of file descriptors */
    time_t last_report;  /* of running out of descriptors (rate-limited diagnostic) */
};

/* Binds every listen address of cfg and starts accepting on w->base. 0, or -1 with a
 * message. */
int server_start(struct worker *w, const struct mcpeek_config *cfg, struct strbuf *errors);

/* Closes the listening sockets (graceful shutdown); open connections stay. */
void server_stop_accepting(struct worker *w);

/* Parses "host:port" / "[v6]:port" into a socket address; 0 or -1. */
int server_parse_hostport(const char *spec, char *host, size_t host_size, unsigned *port);

/* Binds a non-blocking listening socket (SO_REUSEADDR, SO_REUSEPORT when `reuseport`).
 * Returns the fd or -1 with a message. */
int server_bind(const char *host, unsigned port, int reuseport, struct strbuf *errors);

#endif
