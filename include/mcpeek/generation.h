/* generation: one immutable configuration plus what is derived from it at load time.
 *
 * Reload builds a new generation; workers switch to it for new exchanges while every
 * exchange keeps a reference to the generation it started with, so an SSE stream opened
 * before a reload keeps its upstream until it ends. The reference count is atomic because
 * the last exchange to drop an old generation may run on any worker.
 */
#ifndef MCPEEK_GENERATION_H
#define MCPEEK_GENERATION_H

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "mcpeek/access.h"
#include "mcpeek/accesslog.h"
#include "mcpeek/config.h"
#include "mcpeek/rendezvous.h"
#include "mcpeek/strbuf.h"
#include "mcpeek/upstream_target.h"

struct generation {
    struct mcpeek_config *cfg; /* owned */
    atomic_uint refs;
    unsigned long number;            /* 1 for the first load, +1 per successful reload */
    struct upstream_target *targets; /* cfg->upstreams parsed, in order; owned array */
    size_t n_targets;                /* cfg->n_upstreams, at least 1 */
    struct rendezvous_node *nodes;   /* parallel to targets (identity = URL, weight); owned */
    struct accesslog_options log_opts;
    unsigned char *hmac_key; /* pseudonymize_key_file content, owned, NULL when unset */
    size_t hmac_key_len;
    SSL_CTX *tls_ctx;   /* front-end TLS, owned; NULL when no `listen ... tls` */
    char **auth_tokens; /* auth_tokens_file lines, owned, NULL when unset */
    size_t n_auth_tokens;
    struct access_policy access; /* Host, Origin and token rules; borrows cfg and auth_tokens */
};

/* Takes ownership of cfg (also on failure). Returns a generation with one reference, or
 * NULL after appending the problem to `errors`. */
struct generation *generation_new(struct mcpeek_config *cfg, unsigned long number,
                                  struct strbuf *errors);
struct generation *generation_ref(struct generation *gen);
void generation_unref(struct generation *gen);

#endif
