/* access: who may use the front end, decided from the request head alone.
 *
 * Three checks, in this order: Host (allowed_hosts, the DNS-rebinding defence mcpeek must
 * make itself since it rewrites Host for the upstream), Origin (allowed_origins) and the
 * bearer token (auth_tokens_file). client.c runs them right after the head is parsed, so a
 * refused client is answered before it uploads a body and before anything parses it.
 * Pure functions over the configuration: no I/O, no allocation.
 */
#ifndef MCPEEK_ACCESS_H
#define MCPEEK_ACCESS_H

#include <stdbool.h>
#include <stddef.h>

struct mcpeek_config;

enum access_verdict {
    ACCESS_OK = 0,
    ACCESS_HOST,   /* Host missing from allowed_hosts: 403 "host_not_allowed" */
    ACCESS_ORIGIN, /* Origin present and not in allowed_origins: 403 "origin_not_allowed" */
    ACCESS_TOKEN,  /* no valid bearer token: 401 "unauthorized" */
    ACCESS_VERDICT_COUNT,
};

/* The rules of one generation; every pointer borrows from the config or the generation. */
struct access_policy {
    const char *const *hosts; /* allowed_hosts entries: "name", "name:port", "[v6]:port" */
    size_t n_hosts;
    bool hosts_loopback; /* localhost, 127.0.0.1, [::1], any port */
    bool hosts_any;
    const char *const *origins; /* allowed_origins: exact "scheme://host[:port]" */
    size_t n_origins;
    bool origins_loopback; /* http(s):// localhost, 127.0.0.1, [::1], any port */
    bool origins_any;
    const char *const *tokens; /* bearer tokens; none = no check */
    size_t n_tokens;
};

/* True when every listen address of `cfg` is a loopback one (127.0.0.0/8, ::1, localhost):
 * then allowed_hosts and allowed_origins default to the loopback names. */
bool access_listeners_loopback(const struct mcpeek_config *cfg);

/* The policy of `cfg` (defaults applied), with `tokens` from auth_tokens_file. */
void access_policy_init(struct access_policy *p, const struct mcpeek_config *cfg,
                        const char *const *tokens, size_t n_tokens);

/* Each check on one header value (NULL when the header is absent). */
bool access_host_allowed(const struct access_policy *p, const char *host);
bool access_origin_allowed(const struct access_policy *p, const char *origin);
bool access_token_valid(const struct access_policy *p, const char *authorization);

/* All three, in order; the first that fails is the verdict. */
enum access_verdict access_check(const struct access_policy *p, const char *host,
                                 const char *origin, const char *authorization);

/* "host_not_allowed", "origin_not_allowed", "unauthorized" (log error), and the HTTP
 * status, JSON-RPC code and message of the refusal. */
const char *access_verdict_error(enum access_verdict v);
int access_verdict_status(enum access_verdict v);
int access_verdict_rpc_code(enum access_verdict v);
const char *access_verdict_message(enum access_verdict v);

#endif
