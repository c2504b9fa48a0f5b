/* upstream_target: the `upstream` URL turned into an origin, a path and a Host value.
 *
 * Only what a reverse proxy needs from a URL is accepted: http or https, a host name, IPv4
 * or [IPv6] literal, an optional port, a path and query. Userinfo and fragments are refused
 * rather than guessed at.
 */
#include "mcpeek/upstream_target.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mcpeek/hostport.h"
#include "mcpeek/tls.h"

int upstream_target_parse_url(const char *url, bool *tls, char *host, size_t host_size,
                              unsigned *port, const char **path)
{
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0) {
        *tls = false;
        p = url + 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        *tls = true;
        p = url + 8;
    } else {
        return -1;
    }
    size_t auth_len = strcspn(p, "/?#");
    if (p[auth_len] == '#' || strchr(p, '#') || memchr(p, '@', auth_len))
        return -1;
    struct hostport hp;
    if (hostport_parse(p, auth_len, HOSTPORT_STRICT, &hp) != NULL || hp.host_len >= host_size)
        return -1;
    memcpy(host, hp.host, hp.host_len);
    host[hp.host_len] = '\0';
    *port = hp.port ? hp.port : *tls ? 443 : 80;
    *path = p + auth_len;
    return 0;
}

static atomic_ulong target_serials;

int upstream_target_init(struct upstream_target *t, const struct mcpeek_config *cfg,
                         const struct upstream_spec *spec, struct strbuf *errors)
{
    unsigned port;
    const char *path;
    memset(t, 0, sizeof(*t));
    if (upstream_target_parse_url(spec->url, &t->tls, t->host, sizeof(t->host), &port, &path) < 0) {
        strbuf_printf(errors,
                      "upstream: cannot use URL '%s' (expected http(s)://host[:port]/path)\n",
                      spec->url);
        return -1;
    }
    t->url = spec->url;
    t->weight = spec->weight;
    atomic_init(&t->down_until_ms, 0);
    bool v6 = strchr(t->host, ':') != NULL;
    bool default_port = port == (t->tls ? 443u : 80u);
    char port_part[8] = "";
    if (!default_port)
        snprintf(port_part, sizeof(port_part), ":%u", port);
    snprintf(t->authority, sizeof(t->authority), "%s%s%s%s", v6 ? "[" : "", t->host, v6 ? "]" : "",
             port_part);
    snprintf(t->origin, sizeof(t->origin), "%s://%s", t->tls ? "https" : "http", t->authority);
    t->path = strdup(*path ? path : "/");
    t->cfg = cfg;
    t->serial = atomic_fetch_add(&target_serials, 1) + 1;
    if (!t->path) {
        strbuf_puts(errors, "out of memory\n");
        goto fail;
    }
    if (t->path[0] == '?') {
        /* "http://host?x" means path "/" with that query. */
        char *fixed = malloc(strlen(t->path) + 2);
        if (!fixed)
            goto fail;
        fixed[0] = '/';
        strcpy(fixed + 1, t->path);
        free(t->path);
        t->path = fixed;
    }
    /* libcurl loads these files per connection; loading them once here turns a broken file
     * into a refused (re)load instead of a failure of every request. */
    if (t->tls && tls_client_files_check(cfg, errors) < 0)
        goto fail;
    return 0;
fail:
    upstream_target_clear(t);
    return -1;
}

void upstream_target_clear(struct upstream_target *t)
{
    free(t->path);
    memset(t, 0, sizeof(*t));
}

void upstream_target_mark_down(struct upstream_target *t, uint64_t now_ms)
{
    uint64_t until = now_ms + t->cfg->upstream_fail_timeout_ms;
    /* 0 means up: a clock that starts at 0 must still mark */
    atomic_store_explicit(&t->down_until_ms, until ? until : 1, memory_order_relaxed);
}

bool upstream_target_is_up(const struct upstream_target *t, uint64_t now_ms)
{
    uint64_t until = atomic_load_explicit(&t->down_until_ms, memory_order_relaxed);
    return until == 0 || now_ms >= until;
}
