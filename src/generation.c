/* generation: turns a validated config into the state exchanges use, once per load.
 *
 * Everything that reads a file, parses the upstream URL or resolves its host happens here,
 * on the main thread, so a reload that fails (unreadable key file, bad URL, unknown host)
 * leaves the running generation alone.
 */
#include "mcpeek/generation.h"
#include "mcpeek/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Key and token files are small secrets; refuse anything larger. */
#define SECRET_FILE_MAX 65536

static int read_small_file(const char *path, unsigned char **out, size_t *out_len,
                           struct strbuf *errors)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        strbuf_printf(errors, "%s: cannot open: %s\n", path, strerror(errno));
        return -1;
    }
    unsigned char *buf = malloc(SECRET_FILE_MAX + 1);
    size_t len = buf ? fread(buf, 1, SECRET_FILE_MAX + 1, f) : 0;
    fclose(f);
    if (!buf || len > SECRET_FILE_MAX) {
        strbuf_printf(errors, "%s: %s\n", path, buf ? "file too large" : "out of memory");
        free(buf);
        return -1;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return 0;
}

/* One token per line; blank lines and '#' comments skipped, whitespace trimmed. */
static int load_tokens(struct generation *gen, const char *path, struct strbuf *errors)
{
    unsigned char *data;
    size_t len;
    if (read_small_file(path, &data, &len, errors) < 0)
        return -1;
    char *save = NULL;
    for (char *line = strtok_r((char *)data, "\r\n", &save); line;
         line = strtok_r(NULL, "\r\n", &save)) {
        while (*line == ' ' || *line == '\t')
            line++;
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
            line[--n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;
        char **grown = realloc(gen->auth_tokens, (gen->n_auth_tokens + 1) * sizeof(char *));
        if (!grown)
            break;
        gen->auth_tokens = grown;
        gen->auth_tokens[gen->n_auth_tokens] = strdup(line);
        if (gen->auth_tokens[gen->n_auth_tokens])
            gen->n_auth_tokens++;
    }
    free(data);
    if (gen->n_auth_tokens == 0) {
        strbuf_printf(errors, "%s: no token in file\n", path);
        return -1;
    }
    return 0;
}

struct generation *generation_new(struct mcpeek_config *cfg, unsigned long number,
                                  struct strbuf *errors)
{
    struct generation *gen = calloc(1, sizeof(*gen));
    if (!gen) {
        config_free(cfg);
        strbuf_puts(errors, "out of memory\n");
        return NULL;
    }
    gen->cfg = cfg;
    atomic_init(&gen->refs, 1);
    gen->number = number;
    gen->targets = calloc(cfg->n_upstreams, sizeof(*gen->targets));
    gen->nodes = calloc(cfg->n_upstreams, sizeof(*gen->nodes));
    if (!gen->targets || !gen->nodes) {
        strbuf_puts(errors, "out of memory\n");
        goto fail;
    }
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        struct upstream_target *t = &gen->targets[i];
        if (upstream_target_init(t, cfg, &cfg->upstreams[i], errors) < 0)
            goto fail;
        gen->n_targets = i + 1; /* targets [0, n_targets) need clearing */
        t->index = (unsigned)i;
        gen->nodes[i].id = rendezvous_id(t->url, strlen(t->url));
        gen->nodes[i].weight = t->weight;
    }
    if (cfg->pseudonymize_key_file) {
        if (read_small_file(cfg->pseudonymize_key_file, &gen->hmac_key, &gen->hmac_key_len,
                            errors) < 0)
            goto fail;
        if (gen->hmac_key_len < 16) {
            strbuf_printf(errors, "%s: key shorter than 16 bytes\n", cfg->pseudonymize_key_file);
            goto fail;
        }
    }
    bool wants_tls = false;
    for (size_t i = 0; i < cfg->n_listen; i++)
        wants_tls |= cfg->listen[i].tls;
    if (wants_tls && !(gen->tls_ctx = tls_server_ctx_new(cfg, errors)))
        goto fail;
    if (cfg->auth_tokens_file && load_tokens(gen, cfg->auth_tokens_file, errors) < 0)
        goto fail;
    access_policy_init(&gen->access, cfg, (const char *const *)gen->auth_tokens,
                       gen->n_auth_tokens);
    gen->log_opts.user_location = cfg->user_location;
    gen->log_opts.max_value_len = cfg->log_value_max_length;
    gen->log_opts.hmac_key = gen->hmac_key;
    gen->log_opts.hmac_key_len = gen->hmac_key_len;
    return gen;
fail:
    generation_unref(gen);
    return NULL;
}

struct generation *generation_ref(struct generation *gen)
{
    atomic_fetch_add_explicit(&gen->refs, 1, memory_order_relaxed);
    return gen;
}

void generation_unref(struct generation *gen)
{
    if (!gen || atomic_fetch_sub_explicit(&gen->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < gen->n_auth_tokens; i++) {
        explicit_bzero(gen->auth_tokens[i], strlen(gen->auth_tokens[i]));
        free(gen->auth_tokens[i]);
    }
    free(gen->auth_tokens);
    if (gen->hmac_key) {
        explicit_bzero(gen->hmac_key, gen->hmac_key_len);
        free(gen->hmac_key);
    }
    SSL_CTX_free(gen->tls_ctx);
    for (size_t i = 0; i < gen->n_targets; i++)
        upstream_target_clear(&gen->targets[i]);
    free(gen->targets);
    free(gen->nodes);
    config_free(gen->cfg);
    free(gen);
}
