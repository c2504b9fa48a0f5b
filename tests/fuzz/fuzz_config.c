/* fuzz_config: libFuzzer harness for the config file parser and the command line.
 *
 * Each input is parsed twice: as a config file's text (config_parse_buffer), and split on
 * '\n' into argv for cli_parse + config_build, so both front doors see hostile bytes. The
 * invariants checked are the API's promises: a generation or errors, never both, never none.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mcpeek/config.h"

#define FUZZ_MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A generation that was returned must be complete and usable. */
static void fuzz_check_config(const struct mcpeek_config *cfg, const struct mcpeek_config *def)
{
    const char *names[8];

    if (cfg->n_listen == 0 || cfg->listen == NULL || cfg->mcp_path == NULL ||
        cfg->mcp_path[0] != '/' || cfg->n_upstreams == 0 || cfg->tls_min_version == NULL)
        abort();
    for (size_t i = 0; i < cfg->n_listen; i++)
        if (cfg->listen[i].port == 0 || cfg->listen[i].host[0] == '\0')
            abort();
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL))
        abort();
    if (cfg->n_rate_limits > RATELIMIT_RULES_MAX ||
        (cfg->n_rate_limits > 0) != (cfg->rate_limits != NULL))
        abort();
    for (size_t i = 0; i < cfg->n_rate_limits; i++) {
        const struct ratelimit_rule *r = &cfg->rate_limits[i];
        if ((unsigned)r->scope >= RATELIMIT_SCOPE_COUNT || r->rate < 1 || r->burst < 1 ||
            r->rate > RATELIMIT_RATE_MAX || r->burst > RATELIMIT_RATE_MAX ||
            (r->period_ms != 1000 && r->period_ms != 60000))
            abort();
    }
    if (def != NULL && config_restart_only_changes(def, cfg, names, 8) > 8)
        abort();
}

static void fuzz_file(const char *text, size_t size, const struct mcpeek_config *def)
{
    struct strbuf errors;
    struct mcpeek_config *cfg;

    strbuf_init(&errors);
    cfg = config_parse_buffer("fuzz.conf", text, size, &errors);
    if (!errors.oom && (cfg == NULL) != (errors.len > 0))
        abort();
    if (cfg != NULL)
        fuzz_check_config(cfg, def);
    config_free(cfg);
    strbuf_free(&errors);
}

static void fuzz_cli(const char *text, size_t size, const struct mcpeek_config *def)
{
    char *copy = malloc(size + 1), *argv[FUZZ_MAX_ARGS + 1];
    struct strbuf errors;
    struct cli_args args;
    int argc = 0;

    if (copy == NULL)
        return;
    memcpy(copy, text, size);
    copy[size] = '\0';
    argv[argc++] = "mcpeek";
    for (char *p = copy; p != NULL && argc < FUZZ_MAX_ARGS;) {
        char *nl = strchr(p, '\n');
        if (nl != NULL)
            *nl = '\0';
        argv[argc++] = p;
        p = nl != NULL ? nl + 1 : NULL;
    }
    argv[argc] = NULL;

    strbuf_init(&errors);
    if (cli_parse(argc, argv, &args, &errors) == 0) {
        struct mcpeek_config *cfg;
        /* never read whatever file the input names */
        free(args.config_path);
        args.config_path = NULL;
        cfg = config_build(&args, &errors);
        if (!errors.oom && (cfg == NULL) != (errors.len > 0))
            abort();
        if (cfg != NULL)
            fuzz_check_config(cfg, def);
        config_free(cfg);
        cli_args_free(&args);
    } else if (errors.len == 0) {
        abort();
    }
    strbuf_free(&errors);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mcpeek_config *def;

    if (def == NULL)
        def = config_defaults();
    fuzz_file((const char *)data, size, def);
    fuzz_cli((const char *)data, size, def);
    return 0;
}
