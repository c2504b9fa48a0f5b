/* upstream_target: where one upstream is and how to talk to it, from an `upstream` line.
 *
 * Built once per config generation on the main thread: the URL is checked and split, and the
 * TLS files are loaded once so that a broken certificate or CA file fails the load (or the
 * reload) instead of every request. The host name is not resolved here: libcurl resolves it
 * when it opens a connection and caches the answer for upstream_dns_ttl, so a changed DNS
 * answer is followed without a reload.
 */
#ifndef MCPEEK_UPSTREAM_TARGET_H
#define MCPEEK_UPSTREAM_TARGET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "mcpeek/config.h"
#include "mcpeek/strbuf.h"

struct upstream_target {
    bool tls;
    char host[256];        /* from the URL, without brackets */
    char authority[300];   /* Host header value: host[:port], port omitted when default */
    char origin[320];      /* "scheme://authority": requests go to origin + path */
    char *path;            /* path and query of the URL ("/mcp"), owned */
    unsigned long serial;  /* unique per target built: handles know when to re-apply it */
    const char *url;       /* the configured URL, its identity (cfg's, not owned) */
    unsigned weight;       /* weight=N of its line */
    unsigned index;        /* position in the generation's list */
    unsigned metrics_slot; /* its `upstream` label in the metrics registry */
    /* Passive health: monotonic ms until which new sessions avoid it (0 = up). Written by
     * any worker that sees a connect failure or reset; read by all. */
    _Atomic uint64_t down_until_ms;
    const struct mcpeek_config *cfg; /* the generation's: timeouts, TLS files, keep-alive,
                                      * HTTP/2, DNS TTL, Unix socket (not owned) */
};

/* Parses one `upstream` line and checks the upstream TLS files: 0, or -1 after appending
 * the problem to `errors` (the target is left cleared). */
int upstream_target_init(struct upstream_target *t, const struct mcpeek_config *cfg,
                         const struct upstream_spec *spec, struct strbuf *errors);

/* Passive health. mark_down: the upstream failed at `now_ms`, skip it for fail_timeout.
 * is_up: not marked, or the mark expired (then it is tried again). */
void upstream_target_mark_down(struct upstream_target *t, uint64_t now_ms);
bool upstream_target_is_up(const struct upstream_target *t, uint64_t now_ms);
void upstream_target_clear(struct upstream_target *t);

/* Splits an absolute http(s) URL. 0, or -1 when it is not one mcpeek can use (no
 * userinfo, port 1..65535). `path` gets the path and query ("/" when empty). */
int upstream_target_parse_url(const char *url, bool *tls, char *host, size_t host_size,
                              unsigned *port, const char **path);

#endif
