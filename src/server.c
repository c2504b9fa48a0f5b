/* server: the listening sockets of one worker and the accept loop.
 *
 * Every worker binds its own socket per `listen` address with SO_REUSEPORT, so the kernel
 * spreads connections across workers with no shared accept lock. Accepted sockets become
 * client connections (client.c). When the process runs out of file descriptors, accepting
 * pauses briefly instead of spinning on a listener that stays readable.
 */
#include "mcpeek/server.h"

#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mcpeek/client.h"
#include "mcpeek/config.h"
#include "mcpeek/diag.h"
#include "mcpeek/hostport.h"
#include "mcpeek/worker.h"

/* Pending connections per listening socket. */
#define LISTEN_BACKLOG 1024
/* Connections accepted per readiness event, so one busy listener cannot starve the rest. */
#define ACCEPT_BATCH 64
/* Pause after EMFILE/ENFILE before accepting again. */
#define ACCEPT_PAUSE_MS 100
/* ... and how often that is reported on stderr. */
#define ACCEPT_REPORT_INTERVAL_S 10

int server_parse_hostport(const char *spec, char *host, size_t host_size, unsigned *port)
{
    struct hostport hp;
    if (hostport_parse(spec, strlen(spec), HOSTPORT_NEED_PORT, &hp) != NULL ||
        hp.host_len >= host_size)
        return -1;
    memcpy(host, hp.host, hp.host_len);
    host[hp.host_len] = '\0';
    *port = hp.port;
    return 0;
}

int server_bind(const char *host, unsigned port, int reuseport, struct strbuf *errors)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    int rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        strbuf_printf(errors, "listen %s:%u: %s\n", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        /* Linux hands TCP_NODELAY down to every accepted socket. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        strbuf_printf(errors, "listen %s:%u: %s\n", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server_listener *l = arg;
    if (l->fd >= 0)
        event_add(l->ev, NULL);
}

static void on_acceptable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct server_listener *l = arg;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int c = accept4(fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c >= 0) {
            client_accept(l->w, c, l->tls, (struct sockaddr *)&peer);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            time_t now = time(NULL);
            if (now - l->last_report >= ACCEPT_REPORT_INTERVAL_S) {
                l->last_report = now;
                diag_log("warn", "accept: %s; pausing %d ms (reported once per %d s)",
                         strerror(errno), ACCEPT_PAUSE_MS, ACCEPT_REPORT_INTERVAL_S);
            }
            event_del(l->ev);
            struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
            evtimer_add(l->pause, &tv);
        }
        return; /* EAGAIN: nothing more to accept */
    }
}

int server_start(struct worker *w, const struct mcpeek_config *cfg, struct strbuf *errors)
{
    for (size_t i = 0; i < cfg->n_listen; i++) {
        const struct listen_addr *la = &cfg->listen[i];
        if (w->n_listeners == WORKER_MAX_LISTEN)
            return -1;
        int fd = server_bind(la->host, la->port, 1, errors);
        if (fd < 0)
            return -1;
        struct server_listener *l = &w->listeners[w->n_listeners];
        l->w = w;
        l->fd = fd;
        l->tls = la->tls;
        l->ev = event_new(w->base, fd, EV_READ | EV_PERSIST, on_acceptable, l);
        l->pause = evtimer_new(w->base, on_accept_resume, l);
        w->n_listeners++;
        if (!l->ev || !l->pause || event_add(l->ev, NULL) < 0) {
            strbuf_printf(errors, "listen %s:%u: cannot accept\n", la->host, la->port);
            return -1;
        }
    }
    return 0;
}

void server_stop_accepting(struct worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++) {
        struct server_listener *l = &w->listeners[i];
        if (l->ev)
            event_free(l->ev);
        if (l->pause)
            event_free(l->pause);
        if (l->fd >= 0)
            close(l->fd);
        memset(l, 0, sizeof(*l));
        l->fd = -1;
    }
    w->n_listeners = 0;
}
