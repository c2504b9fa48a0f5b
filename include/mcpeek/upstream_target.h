/* upstream_target: where the upstream is and how to talk to it, from the `upstream` URL.
 *
 * Built once per config generation on the main thread: the URL is parsed, the host name
 * resolved (getaddrinfo may block, which is why it happens here and not on a worker) and
 * the TLS client context loaded. A name that does not resolve fails the load, like nginx's
 * "host not found in upstream"; a reload (SIGHUP) resolves again.
 */
#ifndef MCPEEK_UPSTREAM_TARGET_H
#define MCPEEK_UPSTREAM_TARGET_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "mcpeek/config.h"
#include "mcpeek/strbuf.h"

/* Addresses tried in order for a new connection. */
#define UPSTREAM_MAX_ADDRS 8

struct upstream_target {
    bool tls;
    char host[256];      /* from the URL, without brackets: SNI and certificate check */
    char authority[300]; /* Host header value: host[:port], port omitted when default */
    char origin[320];    /* "scheme://authority" (logs, readiness probe) */
    char *path;          /* path and query of the URL ("/mcp"), owned */
    char key[400];       /* pool identity: connections are reused only for the same key */
    struct sockaddr_storage addrs[UPSTREAM_MAX_ADDRS];
    socklen_t addr_lens[UPSTREAM_MAX_ADDRS];
    size_t n_addrs;
    SSL_CTX *ssl_ctx; /* owned; NULL for http:// */
    uint32_t connect_timeout_ms;
    unsigned keepalive;            /* idle connections a worker keeps (upstream_keepalive) */
    uint32_t keepalive_timeout_ms; /* upstream_keepalive_timeout */
};

/* Parses cfg->upstream, resolves it and builds the TLS context: 0, or -1 after appending
 * the problem to `errors` (the target is left cleared). */
int upstream_target_init(struct upstream_target *t, const struct mcpeek_config *cfg,
                         struct strbuf *errors);
void upstream_target_clear(struct upstream_target *t);

/* Splits an absolute http(s) URL. 0, or -1 when it is not one mcpeek can use (no
 * userinfo, port 1..65535). `path` gets the path and query ("/" when empty). */
int upstream_target_parse_url(const char *url, bool *tls, char *host, size_t host_size,
                              unsigned *port, const char **path);

#endif
