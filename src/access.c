/* access: Host, Origin and bearer-token checks on a request head.
 *
 * The defaults follow the MCP transport's security warning: a server bound to loopback must
 * refuse requests whose Host or Origin names another site, or a web page the user visits can
 * reach it through DNS rebinding. A request without Origin (CLI clients, server to server)
 * is not a browser's and passes the Origin check. Tokens are compared in constant time.
 */
#include "mcpeek/access.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "mcpeek/config.h"
#include "mcpeek/hostport.h"

static const char *const access_loopback_names[] = {"localhost", "127.0.0.1", "::1"};

static bool access_is_loopback_name(const struct hostport *hp)
{
    for (size_t i = 0; i < sizeof(access_loopback_names) / sizeof(access_loopback_names[0]); i++)
        if (hostport_host_is(hp, access_loopback_names[i]))
            return true;
    return false;
}

/* "*" alone in a list means any value. */
static bool access_list_is_any(char *const *v, size_t n)
{
    return n == 1 && strcmp(v[0], "*") == 0;
}

bool access_listeners_loopback(const struct mcpeek_config *cfg)
{
    for (size_t i = 0; i < cfg->n_listen; i++) {
        const char *h = cfg->listen[i].host;
        struct in_addr a4;
        struct in6_addr a6;
        if (strcasecmp(h, "localhost") == 0)
            continue;
        if (inet_pton(AF_INET, h, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127)
            continue;
        if (inet_pton(AF_INET6, h, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6))
            continue;
        return false;
    }
    return cfg->n_listen > 0;
}

void access_policy_init(struct access_policy *p, const struct mcpeek_config *cfg,
                        const char *const *tokens, size_t n_tokens)
{
    bool loopback = access_listeners_loopback(cfg);
    memset(p, 0, sizeof(*p));
    if (cfg->n_allowed_hosts == 0) {
        p->hosts_loopback = loopback;
        p->hosts_any = !loopback;
    } else if (access_list_is_any(cfg->allowed_hosts, cfg->n_allowed_hosts)) {
        p->hosts_any = true;
    } else {
        p->hosts = (const char *const *)cfg->allowed_hosts;
        p->n_hosts = cfg->n_allowed_hosts;
    }
    if (cfg->n_allowed_origins == 0) {
        p->origins_loopback = loopback;
        p->origins_any = !loopback;
    } else if (access_list_is_any(cfg->allowed_origins, cfg->n_allowed_origins)) {
        p->origins_any = true;
    } else {
        p->origins = (const char *const *)cfg->allowed_origins;
        p->n_origins = cfg->n_allowed_origins;
    }
    p->tokens = tokens;
    p->n_tokens = n_tokens;
}

bool access_host_allowed(const struct access_policy *p, const char *host)
{
    struct hostport hp;
    /* No Host at all is HTTP/1.0 (client.c refuses it on 1.1 as malformed): no browser sends
     * that, so it cannot be a rebinding attack. */
    if (p->hosts_any || !host)
        return true;
    if (hostport_parse(host, strlen(host), 0, &hp) != NULL)
        return false;
    if (p->hosts_loopback)
        return access_is_loopback_name(&hp);
    for (size_t i = 0; i < p->n_hosts; i++) {
        struct hostport want;
        const char *e = p->hosts[i];
        if (hostport_parse(e, strlen(e), 0, &want) != NULL)
            continue; /* config.c validated every entry: not reached */
        if (want.host_len == hp.host_len && strncasecmp(want.host, hp.host, hp.host_len) == 0 &&
            (want.port == 0 || want.port == hp.port))
            return true;
    }
    return false;
}

bool access_origin_allowed(const struct access_policy *p, const char *origin)
{
    if (!origin || p->origins_any)
        return true;
    if (p->origins_loopback) {
        struct hostport hp;
        const char *auth;
        if (strncasecmp(origin, "http://", 7) == 0)
            auth = origin + 7;
        else if (strncasecmp(origin, "https://", 8) == 0)
            auth = origin + 8;
        else
            return false;
        return hostport_parse(auth, strlen(auth), 0, &hp) == NULL && access_is_loopback_name(&hp);
    }
    for (size_t i = 0; i < p->n_origins; i++)
        if (strcmp(origin, p->origins[i]) == 0)
            return true;
    return false;
}

/* Constant-time comparison: the time taken must not tell how much of a token matched. */
static bool access_token_equal(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (blen ? blen : 1)]);
    return diff == 0;
}

bool access_token_valid(const struct access_policy *p, const char *authorization)
{
    bool ok = false;
    if (p->n_tokens == 0)
        return true;
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return false;
    const char *tok = authorization + 7;
    size_t len = strlen(tok);
    /* Every token is compared, so the time does not depend on which one matched. */
    for (size_t i = 0; i < p->n_tokens; i++)
        ok |= access_token_equal(tok, len, p->tokens[i]);
    return ok;
}

enum access_verdict access_check(const struct access_policy *p, const char *host,
                                 const char *origin, const char *authorization)
{
    if (!access_host_allowed(p, host))
        return ACCESS_HOST;
    if (!access_origin_allowed(p, origin))
        return ACCESS_ORIGIN;
    if (!access_token_valid(p, authorization))
        return ACCESS_TOKEN;
    return ACCESS_OK;
}

const char *access_verdict_error(enum access_verdict v)
{
    switch (v) {
    case ACCESS_HOST:
        return "host_not_allowed";
    case ACCESS_ORIGIN:
        return "origin_not_allowed";
    case ACCESS_TOKEN:
        return "unauthorized";
    default:
        return NULL;
    }
}

int access_verdict_status(enum access_verdict v)
{
    return v == ACCESS_TOKEN ? 401 : v == ACCESS_OK ? 200 : 403;
}

int access_verdict_rpc_code(enum access_verdict v)
{
    return v == ACCESS_TOKEN ? -32001 : -32000;
}

const char *access_verdict_message(enum access_verdict v)
{
    switch (v) {
    case ACCESS_HOST:
        return "mcpeek: Host not allowed";
    case ACCESS_ORIGIN:
        return "mcpeek: Origin not allowed";
    case ACCESS_TOKEN:
        return "mcpeek: missing or invalid bearer token";
    default:
        return "";
    }
}
