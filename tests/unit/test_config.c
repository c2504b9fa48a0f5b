/* test_config: unit tests for src/config.c (config file, command line, checks, --help).
 *
 * Files are real temp files (mkstemp) read through config_build, and every error is
 * compared as the exact text an operator sees, with the temp path shown as "FILE".
 * The example config/mcpeek.conf and docs/configuration.md are checked against the key table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "mcpeek/config.h"

#define MAX_ARGS 32

/* ---------------------------------------------------------------------------------------- */
/* helpers */

/* Writes `text` to a new temp file; returns its path (malloc'd). */
static char *write_temp(const char *text)
{
    char tmpl[] = "/tmp/mcpeek-test-config-XXXXXX";
    int fd = mkstemp(tmpl);
    size_t len = strlen(text);

    if (fd < 0)
        fail_msg("mkstemp failed");
    if (write(fd, text, len) != (ssize_t)len)
        fail_msg("short write to %s", tmpl);
    close(fd);
    return strdup(tmpl);
}

/* Copy of `s` with every `from` replaced by `to`. */
static char *replace_all(const char *s, const char *from, const char *to)
{
    struct strbuf out;
    const char *p = s, *hit;

    strbuf_init(&out);
    strbuf_puts(&out, "");
    while ((hit = strstr(p, from)) != NULL) {
        strbuf_append(&out, p, (size_t)(hit - p));
        strbuf_puts(&out, to);
        p = hit + strlen(from);
    }
    strbuf_puts(&out, p);
    return out.data;
}

/* Parses `mcpeek [-c FILE] flags...` (FILE holding `text`, none when text is NULL) and
 * builds the generation. *errors gets the error text with the temp path shown as FILE
 * ("" on success); the caller frees it. */
static struct mcpeek_config *build(const char *text, const char *const *flags, char **errors)
{
    char *argv[MAX_ARGS];
    int argc = 0;
    char *path = NULL;
    struct cli_args args;
    struct strbuf err;
    struct mcpeek_config *cfg;

    argv[argc++] = "mcpeek";
    if (text != NULL) {
        path = write_temp(text);
        argv[argc++] = "-c";
        argv[argc++] = path;
    }
    for (size_t i = 0; flags != NULL && flags[i] != NULL; i++) {
        assert_true(argc < MAX_ARGS);
        argv[argc++] = (char *)flags[i];
    }
    strbuf_init(&err);
    strbuf_puts(&err, "");
    if (cli_parse(argc, argv, &args, &err) != 0)
        fail_msg("cli_parse failed: %s", err.data);
    cfg = config_build(&args, &err);
    if (cfg != NULL && text != NULL)
        assert_string_equal(cfg->source_path, path);
    /* NULL exactly when something was reported */
    assert_int_equal(cfg == NULL, err.len > 0);
    *errors = path != NULL ? replace_all(err.data, path, "FILE") : strdup(err.data);
    cli_args_free(&args);
    strbuf_free(&err);
    if (path != NULL) {
        unlink(path);
        free(path);
    }
    return cfg;
}

/* Builds `text` and expects success. */
static struct mcpeek_config *build_ok(const char *text, const char *const *flags)
{
    char *errors;
    struct mcpeek_config *cfg = build(text, flags, &errors);

    if (cfg == NULL)
        fail_msg("expected no error, got:\n%s", errors);
    free(errors);
    return cfg;
}

/* Builds `text` and expects exactly `expected` as the error text. */
static void expect_errors(const char *text, const char *const *flags, const char *expected)
{
    char *errors;
    struct mcpeek_config *cfg = build(text, flags, &errors);

    assert_null(cfg);
    assert_string_equal(errors, expected);
    free(errors);
}

/* Parses `text` from memory under the name "F". */
static struct mcpeek_config *parse_buf(const char *text, struct strbuf *errors)
{
    strbuf_reset(errors);
    strbuf_puts(errors, "");
    return config_parse_buffer("F", text, strlen(text), errors);
}

/* One-line config `text` must fail with exactly `expected`. */
static void expect_buf_error(const char *text, const char *expected)
{
    struct strbuf errors;
    struct mcpeek_config *cfg;

    strbuf_init(&errors);
    cfg = parse_buf(text, &errors);
    if (cfg != NULL)
        fail_msg("'%s' was accepted, expected: %s", text, expected);
    assert_string_equal(errors.data, expected);
    strbuf_free(&errors);
}

static struct mcpeek_config *buf_ok(const char *text)
{
    struct strbuf errors;
    struct mcpeek_config *cfg;

    strbuf_init(&errors);
    cfg = parse_buf(text, &errors);
    if (cfg == NULL)
        fail_msg("'%s' was rejected: %s", text, errors.data);
    strbuf_free(&errors);
    return cfg;
}

static int cli(const char *const *argv_in, struct cli_args *args, char **errors)
{
    char *argv[MAX_ARGS];
    int argc = 0, rc;
    struct strbuf err;

    argv[argc++] = "mcpeek";
    for (size_t i = 0; argv_in[i] != NULL; i++)
        argv[argc++] = (char *)argv_in[i];
    strbuf_init(&err);
    strbuf_puts(&err, "");
    rc = cli_parse(argc, argv, args, &err);
    *errors = strdup(err.data);
    strbuf_free(&err);
    return rc;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct strbuf sb;
    char chunk[4096];
    size_t n;

    if (f == NULL)
        return NULL;
    strbuf_init(&sb);
    strbuf_puts(&sb, "");
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        strbuf_append(&sb, chunk, n);
    fclose(f);
    return sb.data;
}

/* Path of a file in the source tree: $MCPEEK_SOURCE_DIR/rel, else found from this test's
 * source path (__FILE__ is absolute in CMake builds), else ../rel from the build dir. */
static char *source_file(const char *rel)
{
    const char *dir = getenv("MCPEEK_SOURCE_DIR");
    char buf[4096];
    struct stat st;

    if (dir != NULL) {
        snprintf(buf, sizeof buf, "%s/%s", dir, rel);
        return strdup(buf);
    }
    snprintf(buf, sizeof buf, "%s", __FILE__);
    {
        char *cut = strstr(buf, "tests/unit/");
        if (cut != NULL) {
            snprintf(cut, sizeof buf - (size_t)(cut - buf), "%s", rel);
            if (stat(buf, &st) == 0)
                return strdup(buf);
        }
    }
    snprintf(buf, sizeof buf, "../%s", rel);
    return strdup(buf);
}

static void assert_listen(const struct listen_addr *l, const char *host, unsigned port, bool tls)
{
    assert_string_equal(l->host, host);
    assert_int_equal(l->port, port);
    assert_int_equal(l->tls, tls);
}

static void assert_rule(const struct ratelimit_rule *r, enum ratelimit_scope scope, unsigned rate,
                        unsigned period_ms, unsigned burst)
{
    if (r->scope != scope || r->rate != rate || r->period_ms != period_ms || r->burst != burst)
        fail_msg("rate_limit: expected %s %u per %u ms burst %u, got %s %u per %u ms burst %u",
                 ratelimit_scope_name(scope), rate, period_ms, burst,
                 ratelimit_scope_name(r->scope), (unsigned)r->rate, (unsigned)r->period_ms,
                 (unsigned)r->burst);
}

static void assert_str_or_null(const char *got, const char *want)
{
    if (want == NULL)
        assert_null(got);
    else
        assert_string_equal(got, want);
}

/* Every member of two generations is equal (source_path aside). */
static void assert_config_equal(const struct mcpeek_config *a, const struct mcpeek_config *b)
{
    assert_int_equal(a->n_listen, b->n_listen);
    for (size_t i = 0; i < a->n_listen; i++)
        assert_listen(&a->listen[i], b->listen[i].host, b->listen[i].port, b->listen[i].tls);
    assert_string_equal(a->mcp_path, b->mcp_path);
    assert_int_equal(a->workers, b->workers);
    assert_str_or_null(a->admin_listen, b->admin_listen);
    assert_int_equal(a->max_body_size, b->max_body_size);
    assert_int_equal(a->max_header_size, b->max_header_size);
    assert_int_equal(a->max_connections, b->max_connections);
    assert_int_equal(a->client_header_timeout_ms, b->client_header_timeout_ms);
    assert_int_equal(a->client_body_timeout_ms, b->client_body_timeout_ms);
    assert_int_equal(a->client_send_timeout_ms, b->client_send_timeout_ms);
    assert_int_equal(a->shutdown_timeout_ms, b->shutdown_timeout_ms);
    assert_int_equal(a->strict_json, b->strict_json);
    assert_int_equal(a->n_allowed_hosts, b->n_allowed_hosts);
    for (size_t i = 0; i < a->n_allowed_hosts; i++)
        assert_string_equal(a->allowed_hosts[i], b->allowed_hosts[i]);
    assert_int_equal(a->n_allowed_origins, b->n_allowed_origins);
    for (size_t i = 0; i < a->n_allowed_origins; i++)
        assert_string_equal(a->allowed_origins[i], b->allowed_origins[i]);
    assert_str_or_null(a->auth_tokens_file, b->auth_tokens_file);
    assert_int_equal(a->n_upstreams, b->n_upstreams);
    assert_string_equal(a->upstreams[0].url, b->upstreams[0].url);
    assert_str_or_null(a->upstream_host_header, b->upstream_host_header);
    assert_int_equal(a->upstream_connect_timeout_ms, b->upstream_connect_timeout_ms);
    assert_int_equal(a->upstream_response_timeout_ms, b->upstream_response_timeout_ms);
    assert_int_equal(a->upstream_keepalive, b->upstream_keepalive);
    assert_int_equal(a->upstream_keepalive_timeout_ms, b->upstream_keepalive_timeout_ms);
    assert_int_equal(a->upstream_buffer_size, b->upstream_buffer_size);
    assert_str_or_null(a->upstream_unix_socket, b->upstream_unix_socket);
    assert_int_equal(a->upstream_dns_ttl_ms, b->upstream_dns_ttl_ms);
    assert_int_equal(a->upstream_http2, b->upstream_http2);
    assert_int_equal(a->stream_idle_timeout_ms, b->stream_idle_timeout_ms);
    assert_int_equal(a->upstream_tls_verify, b->upstream_tls_verify);
    assert_str_or_null(a->upstream_ca_file, b->upstream_ca_file);
    assert_str_or_null(a->upstream_tls_cert, b->upstream_tls_cert);
    assert_str_or_null(a->upstream_tls_key, b->upstream_tls_key);
    assert_str_or_null(a->tls_cert, b->tls_cert);
    assert_str_or_null(a->tls_key, b->tls_key);
    assert_string_equal(a->tls_min_version, b->tls_min_version);
    assert_str_or_null(a->log_file, b->log_file);
    assert_int_equal(a->user_location, b->user_location);
    assert_int_equal(a->log_value_max_length, b->log_value_max_length);
    assert_str_or_null(a->pseudonymize_key_file, b->pseudonymize_key_file);
    assert_int_equal(a->metrics_label_limit, b->metrics_label_limit);
    assert_int_equal(a->session_map_size, b->session_map_size);
    assert_int_equal(a->session_map_ttl_ms, b->session_map_ttl_ms);
    assert_int_equal(a->n_rate_limits, b->n_rate_limits);
    for (size_t i = 0; i < a->n_rate_limits; i++)
        assert_rule(&a->rate_limits[i], b->rate_limits[i].scope, b->rate_limits[i].rate,
                    b->rate_limits[i].period_ms, b->rate_limits[i].burst);
    assert_int_equal(a->rate_limit_keys, b->rate_limit_keys);
    assert_int_equal(a->conversation_idle_timeout_ms, b->conversation_idle_timeout_ms);
    assert_int_equal(a->conversation_max, b->conversation_max);
}

/* What one `--flag` line of --help says about its key. */
struct usage_key {
    char key[64];
    char flag[64]; /* "--max-body-size SIZE" */
    char def[128]; /* "4m", "unset" */
    bool restart_only;
};

/* The config key of every `--flag` line in --help, in order; `info` may be NULL. */
static size_t usage_keys_info(char keys[][64], struct usage_key *info, size_t max)
{
    struct strbuf usage;
    size_t n = 0;

    strbuf_init(&usage);
    cli_usage(&usage);
    for (const char *p = usage.data; p != NULL && *p != '\0';) {
        const char *eol = strchr(p, '\n');
        if (strncmp(p, "  --", 4) == 0 && n < max) {
            size_t len = strcspn(p + 4, " \n");
            assert_true(len < 64);
            for (size_t i = 0; i < len; i++)
                keys[n][i] = p[4 + i] == '-' ? '_' : p[4 + i];
            keys[n][len] = '\0';
            if (info != NULL) {
                const char *d = strstr(p, "(default: ");
                size_t flen = 0;
                assert_true(d != NULL && d < eol);
                d += strlen("(default: ");
                snprintf(info[n].key, sizeof info[n].key, "%s", keys[n]);
                /* the flag and its hint end at the first run of two blanks */
                while (p[2 + flen] != '\0' && strncmp(p + 2 + flen, "  ", 2) != 0)
                    flen++;
                snprintf(info[n].flag, sizeof info[n].flag, "%.*s", (int)flen, p + 2);
                info[n].restart_only = strncmp(eol - 15, "; restart only)", 15) == 0;
                snprintf(info[n].def, sizeof info[n].def, "%.*s",
                         (int)(eol - d - (info[n].restart_only ? 15 : 1)), d);
            }
            n++;
        }
        p = eol != NULL ? eol + 1 : NULL;
    }
    strbuf_free(&usage);
    return n;
}

static size_t usage_keys(char keys[][64], size_t max)
{
    return usage_keys_info(keys, NULL, max);
}

/* ---------------------------------------------------------------------------------------- */
/* defaults and every key */

static void test_defaults(void **state)
{
    struct mcpeek_config *cfg = config_defaults();

    (void)state;
    assert_non_null(cfg);
    assert_null(cfg->source_path);
    assert_int_equal(cfg->n_listen, 1);
    assert_listen(&cfg->listen[0], "127.0.0.1", 8080, false);
    assert_string_equal(cfg->mcp_path, "/mcp");
    assert_int_equal(cfg->workers, 0);
    assert_string_equal(cfg->admin_listen, "127.0.0.1:9464");
    assert_int_equal(cfg->max_body_size, 4 * 1024 * 1024);
    assert_int_equal(cfg->max_header_size, 16 * 1024);
    assert_int_equal(cfg->max_connections, 0);
    assert_int_equal(cfg->client_header_timeout_ms, 10000);
    assert_int_equal(cfg->client_body_timeout_ms, 10000);
    assert_int_equal(cfg->shutdown_timeout_ms, 10000);
    assert_false(cfg->strict_json);
    assert_null(cfg->allowed_origins);
    assert_int_equal(cfg->n_allowed_origins, 0);
    assert_null(cfg->allowed_hosts);
    assert_int_equal(cfg->n_allowed_hosts, 0);
    assert_null(cfg->auth_tokens_file);
    assert_string_equal(cfg->upstreams[0].url, "http://127.0.0.1:3000/mcp");
    assert_null(cfg->upstream_host_header);
    assert_int_equal(cfg->upstream_connect_timeout_ms, 5000);
    assert_int_equal(cfg->upstream_response_timeout_ms, 60000);
    assert_int_equal(cfg->upstream_keepalive, 128);
    assert_int_equal(cfg->upstream_keepalive_timeout_ms, 4000);
    assert_int_equal(cfg->upstream_buffer_size, 4 * 1024);
    assert_null(cfg->upstream_unix_socket);
    assert_int_equal(cfg->upstream_dns_ttl_ms, 60000);
    assert_int_equal(cfg->upstream_http2, UPSTREAM_HTTP2_OFF);
    assert_int_equal(cfg->stream_idle_timeout_ms, 0);
    assert_true(cfg->upstream_tls_verify);
    assert_null(cfg->upstream_ca_file);
    assert_null(cfg->upstream_tls_cert);
    assert_null(cfg->upstream_tls_key);
    assert_null(cfg->tls_cert);
    assert_null(cfg->tls_key);
    assert_string_equal(cfg->tls_min_version, "TLSv1.2");
    assert_null(cfg->log_file);
    assert_int_equal(cfg->user_location, USER_LOCATION_COARSE);
    assert_int_equal(cfg->log_value_max_length, 256);
    assert_null(cfg->pseudonymize_key_file);
    assert_int_equal(cfg->metrics_label_limit, 100);
    assert_int_equal(cfg->session_map_size, 10000);
    assert_int_equal(cfg->session_map_ttl_ms, 3600 * 1000);
    assert_null(cfg->rate_limits);
    assert_int_equal(cfg->n_rate_limits, 0);
    assert_int_equal(cfg->rate_limit_keys, 100000);
    assert_int_equal(cfg->conversation_idle_timeout_ms, 30 * 60 * 1000);
    assert_int_equal(cfg->conversation_max, 100000);
    config_free(cfg);
}

static void test_no_file_is_defaults(void **state)
{
    struct mcpeek_config *defaults = config_defaults();
    struct mcpeek_config *cfg = build_ok(NULL, NULL);

    (void)state;
    assert_null(cfg->source_path);
    assert_config_equal(cfg, defaults);
    config_free(cfg);
    config_free(defaults);
}

static void test_every_key_from_file(void **state)
{
    char *f = write_temp("secret\n"); /* stands in for every file a key names */
    char text[4096];
    struct mcpeek_config *cfg;

    (void)state;
    snprintf(text, sizeof text,
             "listen 0.0.0.0:8443 tls\n"
             "listen [::1]:8080\n"
             "mcp_path /rpc\n"
             "workers 3\n"
             "admin_listen [::1]:9000\n"
             "max_body_size 8m\n"
             "max_header_size 32k\n"
             "max_connections 500\n"
             "client_header_timeout 3s\n"
             "client_body_timeout 1500ms\n"
             "shutdown_timeout 2m\n"
             "strict_json on\n"
             "allowed_origins https://chatgpt.com http://localhost:5173\n"
             "auth_tokens_file %s\n"
             "upstream https://mcp.example.com:8443/v1/mcp\n"
             "upstream_host_header mcp.internal:8443\n"
             "upstream_connect_timeout 250ms\n"
             "upstream_response_timeout 2m\n"
             "upstream_keepalive 0\n"
             "upstream_keepalive_timeout 5s\n"
             "upstream_buffer_size 8k\n"
             "upstream_unix_socket /run/mcp/server.sock\n"
             "upstream_dns_ttl 5s\n"
             "upstream_http2 prior-knowledge\n"
             "stream_idle_timeout 5m\n"
             "upstream_tls_verify off\n"
             "upstream_ca_file %s\n"
             "upstream_tls_cert %s\n"
             "upstream_tls_key %s\n"
             "tls_cert %s\n"
             "tls_key %s\n"
             "tls_min_version TLSv1.3\n"
             "log_file /var/log/mcpeek/access.log\n"
             "user_location full\n"
             "log_value_max_length 1024\n"
             "pseudonymize_key_file %s\n"
             "metrics_label_limit 20\n"
             "session_map_size 5000\n"
             "session_map_ttl 30m\n"
             "rate_limit token 50/s\n"
             "rate_limit openai_subject 600/m burst 20\n"
             "rate_limit_keys 5000\n"
             "conversation_idle_timeout 10m\n"
             "conversation_max 2000\n",
             f, f, f, f, f, f, f);
    cfg = build_ok(text, NULL);

    assert_int_equal(cfg->n_listen, 2);
    assert_listen(&cfg->listen[0], "0.0.0.0", 8443, true);
    assert_listen(&cfg->listen[1], "::1", 8080, false);
    assert_string_equal(cfg->mcp_path, "/rpc");
    assert_int_equal(cfg->workers, 3);
    assert_string_equal(cfg->admin_listen, "[::1]:9000");
    assert_int_equal(cfg->max_body_size, 8 * 1024 * 1024);
    assert_int_equal(cfg->max_header_size, 32 * 1024);
    assert_int_equal(cfg->max_connections, 500);
    assert_int_equal(cfg->client_header_timeout_ms, 3000);
    assert_int_equal(cfg->client_body_timeout_ms, 1500);
    assert_int_equal(cfg->shutdown_timeout_ms, 120000);
    assert_true(cfg->strict_json);
    assert_int_equal(cfg->n_allowed_origins, 2);
    assert_string_equal(cfg->allowed_origins[0], "https://chatgpt.com");
    assert_string_equal(cfg->allowed_origins[1], "http://localhost:5173");
    assert_string_equal(cfg->auth_tokens_file, f);
    assert_string_equal(cfg->upstreams[0].url, "https://mcp.example.com:8443/v1/mcp");
    assert_string_equal(cfg->upstream_host_header, "mcp.internal:8443");
    assert_int_equal(cfg->upstream_connect_timeout_ms, 250);
    assert_int_equal(cfg->upstream_response_timeout_ms, 120000);
    assert_int_equal(cfg->upstream_keepalive, 0);
    assert_int_equal(cfg->upstream_keepalive_timeout_ms, 5000);
    assert_int_equal(cfg->upstream_buffer_size, 8192);
    assert_string_equal(cfg->upstream_unix_socket, "/run/mcp/server.sock");
    assert_int_equal(cfg->upstream_dns_ttl_ms, 5000);
    assert_int_equal(cfg->upstream_http2, UPSTREAM_HTTP2_PRIOR_KNOWLEDGE);
    assert_int_equal(cfg->stream_idle_timeout_ms, 300000);
    assert_false(cfg->upstream_tls_verify);
    assert_string_equal(cfg->upstream_ca_file, f);
    assert_string_equal(cfg->upstream_tls_cert, f);
    assert_string_equal(cfg->upstream_tls_key, f);
    assert_string_equal(cfg->tls_cert, f);
    assert_string_equal(cfg->tls_key, f);
    assert_string_equal(cfg->tls_min_version, "TLSv1.3");
    assert_string_equal(cfg->log_file, "/var/log/mcpeek/access.log");
    assert_int_equal(cfg->user_location, USER_LOCATION_FULL);
    assert_int_equal(cfg->log_value_max_length, 1024);
    assert_string_equal(cfg->pseudonymize_key_file, f);
    assert_int_equal(cfg->metrics_label_limit, 20);
    assert_int_equal(cfg->session_map_size, 5000);
    assert_int_equal(cfg->session_map_ttl_ms, 30 * 60 * 1000);
    assert_int_equal(cfg->n_rate_limits, 2);
    assert_rule(&cfg->rate_limits[0], RATELIMIT_TOKEN, 50, 1000, 50);
    assert_rule(&cfg->rate_limits[1], RATELIMIT_OPENAI_SUBJECT, 600, 60000, 20);
    assert_int_equal(cfg->rate_limit_keys, 5000);
    assert_int_equal(cfg->conversation_idle_timeout_ms, 10 * 60 * 1000);
    assert_int_equal(cfg->conversation_max, 2000);
    config_free(cfg);
    unlink(f);
    free(f);
}

static void test_comment_rules(void **state)
{
    struct mcpeek_config *cfg;

    (void)state;
    /* BOM, blank and comment lines, tabs, CRLF, trailing comments after blanks */
    cfg = build_ok("\xef\xbb\xbf# full-line comment\n"
                   "\n"
                   "   \t\n"
                   "  # indented comment\n"
                   "\tmax_body_size\t 2m   # trailing comment\r\n"
                   "log_file /var/log/a#b.log\n"
                   "workers 2 #\n"
                   "mcp_path /x",
                   NULL);
    assert_int_equal(cfg->max_body_size, 2 * 1024 * 1024);
    /* `#` inside a word is part of it */
    assert_string_equal(cfg->log_file, "/var/log/a#b.log");
    assert_int_equal(cfg->workers, 2);
    /* last line without '\n' */
    assert_string_equal(cfg->mcp_path, "/x");
    config_free(cfg);

    /* a `#` glued to the value is not a comment, so the value is wrong */
    expect_errors("workers 2#x\n", NULL,
                  "FILE:1: invalid value '2#x' for workers: expected auto or a number of "
                  "threads\n");
}

/* ---------------------------------------------------------------------------------------- */
/* errors */

static void test_unknown_key(void **state)
{
    (void)state;
    expect_errors("# c\n\nlisen 127.0.0.1:80\n", NULL,
                  "FILE:3: unknown key 'lisen' (did you mean 'listen'?)\n");
    expect_errors("frobnicate 1\n", NULL, "FILE:1: unknown key 'frobnicate'\n");
    /* keys are case-sensitive, the hint shows the right spelling */
    expect_errors("Max_Body_Size 1m\n", NULL,
                  "FILE:1: unknown key 'Max_Body_Size' (did you mean 'max_body_size'?)\n");
}

static void test_invalid_value(void **state)
{
    (void)state;
    expect_errors("max_body_size abc\n", NULL,
                  "FILE:1: invalid value 'abc' for max_body_size: expected a size like 4m\n");
    /* long values are cut in the message */
    expect_errors("mcp_path "
                  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                  "\n",
                  NULL,
                  "FILE:1: invalid value "
                  "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' for mcp_path: "
                  "expected a path starting with '/'\n");
}

static void test_duplicate_key(void **state)
{
    (void)state;
    expect_errors("workers 2\nmcp_path /a\n\nworkers 4\n", NULL,
                  "FILE:4: duplicate key 'workers' (first set on line 1)\n");
    /* also when the first value was the bad one: the line number still points at it */
    expect_errors("workers x\nworkers 2\n", NULL,
                  "FILE:1: invalid value 'x' for workers: expected auto or a number of threads\n"
                  "FILE:2: duplicate key 'workers' (first set on line 1)\n");
}

static void test_missing_value(void **state)
{
    (void)state;
    expect_errors("\nstrict_json\nupstream   # only a comment\n", NULL,
                  "FILE:2: missing value for 'strict_json'\n"
                  "FILE:3: missing value for 'upstream'\n");
}

static void test_unreadable_file(void **state)
{
    struct cli_args args = {.action = CLI_RUN, .config_path = "/nonexistent/mcpeek.conf"};
    char dir[] = "/tmp/mcpeek-test-dir-XXXXXX";
    struct strbuf err;

    (void)state;
    strbuf_init(&err);
    assert_null(config_build(&args, &err));
    assert_string_equal(err.data,
                        "/nonexistent/mcpeek.conf: cannot open: No such file or directory\n");

    assert_non_null(mkdtemp(dir));
    args.config_path = dir;
    strbuf_reset(&err);
    assert_null(config_build(&args, &err));
    assert_true(strstr(err.data, ": cannot read: Is a directory\n") != NULL);
    assert_memory_equal(err.data, dir, strlen(dir));
    rmdir(dir);

    /* the command line is still checked when the file is missing */
    {
        struct config_override o = {.key = "workers", .value = "x"};
        args.config_path = "/nonexistent/mcpeek.conf";
        args.overrides = &o;
        args.n_overrides = 1;
        strbuf_reset(&err);
        assert_null(config_build(&args, &err));
        assert_string_equal(err.data,
                            "/nonexistent/mcpeek.conf: cannot open: No such file or directory\n"
                            "command line: --workers: invalid value 'x' for workers: expected "
                            "auto or a number of threads\n");
    }
    strbuf_free(&err);
}

static void test_multiple_errors(void **state)
{
    (void)state;
    expect_errors("listen 127.0.0.1:8080\n"
                  "lisen 127.0.0.1:8081\n"
                  "max_body_size 12q\n"
                  "# fine\n"
                  "upstream ftp://example.com/\n"
                  "max_body_size 1m\n"
                  "user_location\n"
                  "strict_json maybe\n",
                  NULL,
                  "FILE:2: unknown key 'lisen' (did you mean 'listen'?)\n"
                  "FILE:3: invalid value '12q' for max_body_size: expected a size like 4m\n"
                  "FILE:5: invalid value 'ftp://example.com/' for upstream: expected an "
                  "absolute http:// or https:// URL\n"
                  "FILE:6: duplicate key 'max_body_size' (first set on line 3)\n"
                  "FILE:7: missing value for 'user_location'\n"
                  "FILE:8: invalid value 'maybe' for strict_json: expected on, off, yes, no, "
                  "true or false\n");
}

static void test_control_characters(void **state)
{
    static const char nul_text[] = "workers 2\nmcp_path /a\0b\nstrict_json on\n";
    struct strbuf errors;

    (void)state;
    expect_buf_error("workers 2\nmcp_path /a\x01"
                     "b\n",
                     "F:2: control character 0x01 in line\n");
    strbuf_init(&errors);
    strbuf_puts(&errors, "");
    assert_null(config_parse_buffer("F", nul_text, sizeof nul_text - 1, &errors));
    assert_string_equal(errors.data, "F:2: NUL byte in line\n");
    strbuf_free(&errors);
}

/* ---------------------------------------------------------------------------------------- */
/* value syntax */

struct number_case {
    const char *line;
    unsigned long long want; /* when error is NULL */
    const char *error;
};

static unsigned long long number_of(const struct mcpeek_config *cfg, const char *line)
{
    if (strncmp(line, "max_body_size", 13) == 0)
        return cfg->max_body_size;
    if (strncmp(line, "max_header_size", 15) == 0)
        return cfg->max_header_size;
    if (strncmp(line, "max_connections", 15) == 0)
        return cfg->max_connections;
    if (strncmp(line, "client_header_timeout", 21) == 0)
        return cfg->client_header_timeout_ms;
    if (strncmp(line, "shutdown_timeout", 16) == 0)
        return cfg->shutdown_timeout_ms;
    if (strncmp(line, "stream_idle_timeout", 19) == 0)
        return cfg->stream_idle_timeout_ms;
    if (strncmp(line, "session_map_ttl", 15) == 0)
        return cfg->session_map_ttl_ms;
    if (strncmp(line, "session_map_size", 16) == 0)
        return cfg->session_map_size;
    if (strncmp(line, "workers", 7) == 0)
        return (unsigned long long)cfg->workers;
    fail_msg("no accessor for '%s'", line);
    return 0;
}

static void run_number_cases(const struct number_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (cases[i].error != NULL) {
            expect_buf_error(cases[i].line, cases[i].error);
        } else {
            struct mcpeek_config *cfg = buf_ok(cases[i].line);
            unsigned long long got = number_of(cfg, cases[i].line);
            if (got != cases[i].want)
                fail_msg("'%s': expected %llu, got %llu", cases[i].line, cases[i].want, got);
            config_free(cfg);
        }
    }
}

static void test_sizes(void **state)
{
    static const struct number_case cases[] = {
        {"max_body_size 1", 1, NULL},
        {"max_body_size 4096", 4096, NULL},
        {"max_body_size 1k", 1024, NULL},
        {"max_body_size 3K", 3072, NULL},
        {"max_body_size 2kb", 2048, NULL},
        {"max_body_size 4m", 4194304, NULL},
        {"max_body_size 4MB", 4194304, NULL},
        {"max_body_size 1g", 1073741824, NULL},
        {"max_body_size 1G", 1073741824, NULL},
        {"max_body_size 0", 0, "F:1: invalid value '0' for max_body_size: must be at least 1\n"},
        {"max_body_size 2g", 0,
         "F:1: invalid value '2g' for max_body_size: too large (at most 1g)\n"},
        {"max_body_size 1073741825", 0,
         "F:1: invalid value '1073741825' for max_body_size: too large (at most 1g)\n"},
        {"max_body_size 99999999999g", 0,
         "F:1: invalid value '99999999999g' for max_body_size: too large (at most 1g)\n"},
        {"max_body_size 18446744073709551616", 0,
         "F:1: invalid value '18446744073709551616' for max_body_size: too large (at most "
         "1g)\n"},
        {"max_body_size -1", 0,
         "F:1: invalid value '-1' for max_body_size: expected a size like 4m\n"},
        {"max_body_size 1.5m", 0,
         "F:1: invalid value '1.5m' for max_body_size: expected a size like 4m\n"},
        {"max_body_size 4 m", 0,
         "F:1: invalid value '4 m' for max_body_size: expected a size like 4m\n"},
        {"max_body_size 4t", 0,
         "F:1: invalid value '4t' for max_body_size: expected a size like 4m\n"},
        {"max_body_size m", 0,
         "F:1: invalid value 'm' for max_body_size: expected a size like 4m\n"},
        {"max_header_size 512", 0,
         "F:1: invalid value '512' for max_header_size: must be at least 1k\n"},
        {"max_header_size 1k", 1024, NULL},
        {"max_connections 0", 0, NULL},
        {"max_connections off", 0, NULL},
        {"max_connections 10000", 10000, NULL},
        {"max_connections 4294967296", 0,
         "F:1: invalid value '4294967296' for max_connections: too large (at most "
         "4294967295)\n"},
        {"max_connections 1k", 0,
         "F:1: invalid value '1k' for max_connections: expected a whole number, or off\n"},
        {"session_map_size 0", 0,
         "F:1: invalid value '0' for session_map_size: must be at least 1\n"},
        {"workers auto", 0, NULL},
        {"workers 16", 16, NULL},
        {"workers 0", 0, "F:1: invalid value '0' for workers: must be at least 1\n"},
        {"workers 1025", 0, "F:1: invalid value '1025' for workers: too large (at most 1024)\n"},
    };

    (void)state;
    run_number_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_durations(void **state)
{
    static const struct number_case cases[] = {
        {"client_header_timeout 500ms", 500, NULL},
        {"client_header_timeout 10", 10000, NULL}, /* bare number = seconds */
        {"client_header_timeout 10s", 10000, NULL},
        {"client_header_timeout 10S", 10000, NULL},
        {"client_header_timeout 2m", 120000, NULL},
        {"client_header_timeout 1h", 3600000, NULL},
        {"client_header_timeout 1000h", 3600000000ULL, NULL},
        {"client_header_timeout 1ms", 1, NULL},
        {"client_header_timeout 0", 0,
         "F:1: invalid value '0' for client_header_timeout: must be at least 1ms\n"},
        {"client_header_timeout 0ms", 0,
         "F:1: invalid value '0ms' for client_header_timeout: must be at least 1ms\n"},
        {"client_header_timeout 1001h", 0,
         "F:1: invalid value '1001h' for client_header_timeout: too large (at most 1000h)\n"},
        {"client_header_timeout 99999999999999999999h", 0,
         "F:1: invalid value '99999999999999999999h' for client_header_timeout: too large (at "
         "most 1000h)\n"},
        {"client_header_timeout 5000000000000000000h", 0,
         "F:1: invalid value '5000000000000000000h' for client_header_timeout: too large (at "
         "most 1000h)\n"},
        {"client_header_timeout 1d", 0,
         "F:1: invalid value '1d' for client_header_timeout: expected a duration like 10s\n"},
        {"client_header_timeout off", 0,
         "F:1: invalid value 'off' for client_header_timeout: expected a duration like 10s\n"},
        {"shutdown_timeout 0", 0, NULL},
        {"stream_idle_timeout off", 0, NULL},
        {"stream_idle_timeout OFF", 0, NULL},
        {"stream_idle_timeout 0", 0, NULL},
        {"stream_idle_timeout 90s", 90000, NULL},
        {"stream_idle_timeout never", 0,
         "F:1: invalid value 'never' for stream_idle_timeout: expected a duration like 10s, or "
         "off\n"},
        {"session_map_ttl 1s", 1000, NULL},
        {"session_map_ttl 999ms", 0,
         "F:1: invalid value '999ms' for session_map_ttl: must be at least 1s\n"},
    };

    (void)state;
    run_number_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_words(void **state)
{
    static const char *const on[] = {"on", "yes", "true", "ON", "Yes", "TRUE"};
    static const char *const off[] = {"off", "no", "false", "Off", "NO", "False"};
    struct mcpeek_config *cfg;
    char line[64];

    (void)state;
    for (size_t i = 0; i < 6; i++) {
        snprintf(line, sizeof line, "strict_json %s", on[i]);
        cfg = buf_ok(line);
        assert_true(cfg->strict_json);
        config_free(cfg);
        snprintf(line, sizeof line, "upstream_tls_verify %s", off[i]);
        cfg = buf_ok(line);
        assert_false(cfg->upstream_tls_verify);
        config_free(cfg);
    }
    expect_buf_error("strict_json 1",
                     "F:1: invalid value '1' for strict_json: expected on, off, yes, no, true or "
                     "false\n");

    cfg = buf_ok("user_location off");
    assert_int_equal(cfg->user_location, USER_LOCATION_OFF);
    config_free(cfg);
    cfg = buf_ok("user_location full");
    assert_int_equal(cfg->user_location, USER_LOCATION_FULL);
    config_free(cfg);
    cfg = buf_ok("user_location coarse");
    assert_int_equal(cfg->user_location, USER_LOCATION_COARSE);
    config_free(cfg);
    expect_buf_error("user_location city",
                     "F:1: invalid value 'city' for user_location: expected off, coarse or "
                     "full\n");

    cfg = buf_ok("upstream_http2 on");
    assert_int_equal(cfg->upstream_http2, UPSTREAM_HTTP2_ON);
    config_free(cfg);
    cfg = buf_ok("upstream_http2 Prior-Knowledge");
    assert_int_equal(cfg->upstream_http2, UPSTREAM_HTTP2_PRIOR_KNOWLEDGE);
    config_free(cfg);
    expect_buf_error("upstream_http2 h2c",
                     "F:1: invalid value 'h2c' for upstream_http2: expected off, on or "
                     "prior-knowledge\n");
    cfg = buf_ok("upstream_unix_socket off");
    assert_null(cfg->upstream_unix_socket);
    config_free(cfg);
    expect_buf_error("upstream_unix_socket run/mcp.sock",
                     "F:1: invalid value 'run/mcp.sock' for upstream_unix_socket: expected an "
                     "absolute path shorter than 108 bytes\n");

    cfg = buf_ok("tls_min_version tlsv1.3"); /* stored in its canonical spelling */
    assert_string_equal(cfg->tls_min_version, "TLSv1.3");
    config_free(cfg);
    expect_buf_error("tls_min_version TLSv1.1",
                     "F:1: invalid value 'TLSv1.1' for tls_min_version: expected TLSv1.2 or "
                     "TLSv1.3\n");

    cfg = buf_ok("log_file -");
    assert_null(cfg->log_file);
    config_free(cfg);
    cfg = buf_ok("admin_listen off");
    assert_null(cfg->admin_listen);
    config_free(cfg);
    expect_buf_error("admin_listen 9464",
                     "F:1: invalid value '9464' for admin_listen: missing :PORT\n");
}

static void test_urls_paths_origins(void **state)
{
    static const char *const good_upstreams[] = {"http://127.0.0.1:3000/mcp", "HTTPS://example.com",
                                                 "https://u:p@example.com:443/x?y=1",
                                                 "http://[::1]:3000/mcp", "http://mcp-server/mcp"};
    struct mcpeek_config *cfg;
    char line[128];

    (void)state;
    for (size_t i = 0; i < sizeof good_upstreams / sizeof good_upstreams[0]; i++) {
        snprintf(line, sizeof line, "upstream %s", good_upstreams[i]);
        cfg = buf_ok(line);
        assert_string_equal(cfg->upstreams[0].url, good_upstreams[i]);
        config_free(cfg);
    }
    expect_buf_error("upstream 127.0.0.1:3000/mcp",
                     "F:1: invalid value '127.0.0.1:3000/mcp' for upstream: expected an absolute "
                     "http:// or https:// URL\n");
    expect_buf_error("upstream http:///mcp",
                     "F:1: invalid value 'http:///mcp' for upstream: the URL has no host\n");
    expect_buf_error("upstream http://h:99999/",
                     "F:1: invalid value 'http://h:99999/' for upstream: port must be 1..65535\n");
    expect_buf_error("upstream http://h:/",
                     "F:1: invalid value 'http://h:/' for upstream: missing port number after "
                     "':'\n");

    expect_buf_error("mcp_path mcp",
                     "F:1: invalid value 'mcp' for mcp_path: expected a path starting with "
                     "'/'\n");
    expect_buf_error("mcp_path /mcp?x=1",
                     "F:1: invalid value '/mcp?x=1' for mcp_path: a path has no '?' or '#' "
                     "part\n");

    expect_buf_error("allowed_origins https://chatgpt.com/",
                     "F:1: invalid value 'https://chatgpt.com/' for allowed_origins: an origin "
                     "has no path, not even a trailing '/': write https://chatgpt.com\n");
    /* '*' alone means any origin; beside others it is a mistake */
    cfg = buf_ok("allowed_origins *");
    assert_int_equal(cfg->n_allowed_origins, 1);
    assert_string_equal(cfg->allowed_origins[0], "*");
    config_free(cfg);
    expect_buf_error("allowed_origins * https://a.example",
                     "F:1: invalid value '*' for allowed_origins: '*' (any) cannot be combined "
                     "with other values\n");
    expect_buf_error("allowed_origins https://a.example/x",
                     "F:1: invalid value 'https://a.example/x' for allowed_origins: an origin "
                     "has no path, not even a trailing '/': write https://chatgpt.com\n");
    /* allowed_hosts: names with an optional port, or '*' */
    cfg = buf_ok("allowed_hosts mcp.example.com mcp.example.com:8443 [::1]:8080 127.0.0.1");
    assert_int_equal(cfg->n_allowed_hosts, 4);
    assert_string_equal(cfg->allowed_hosts[0], "mcp.example.com");
    assert_string_equal(cfg->allowed_hosts[2], "[::1]:8080");
    config_free(cfg);
    cfg = buf_ok("allowed_hosts *");
    assert_int_equal(cfg->n_allowed_hosts, 1);
    config_free(cfg);
    expect_buf_error("allowed_hosts https://mcp.example.com",
                     "F:1: invalid value 'https://mcp.example.com' for allowed_hosts: expected a "
                     "host name like mcp.example.com, not a URL\n");
    expect_buf_error("allowed_hosts mcp.example.com:0 a/b",
                     "F:1: invalid value 'mcp.example.com:0' for allowed_hosts: port must be "
                     "1..65535\n"
                     "F:1: invalid value 'a/b' for allowed_hosts: not a valid host name or "
                     "address\n");
    expect_buf_error("allowed_hosts * mcp.example.com",
                     "F:1: invalid value '*' for allowed_hosts: '*' (any) cannot be combined "
                     "with other values\n");
    /* each bad origin of a line is reported */
    expect_buf_error("allowed_origins chatgpt.com https://ok.example x://",
                     "F:1: invalid value 'chatgpt.com' for allowed_origins: expected an origin "
                     "like https://chatgpt.com (or * for any)\n"
                     "F:1: invalid value 'x://' for allowed_origins: the origin has no host\n");
    cfg = buf_ok("allowed_origins   https://a.example\thttps://b.example:8443  ");
    assert_int_equal(cfg->n_allowed_origins, 2);
    assert_string_equal(cfg->allowed_origins[1], "https://b.example:8443");
    config_free(cfg);

    expect_buf_error("upstream_host_header a b",
                     "F:1: invalid value 'a b' for upstream_host_header: expected a host name "
                     "like example.com or example.com:8080\n");
    expect_buf_error("auth_tokens_file /nonexistent/tokens",
                     "F:1: invalid value '/nonexistent/tokens' for auth_tokens_file: cannot read "
                     "it: No such file or directory\n");
}

static void test_listen(void **state)
{
    struct mcpeek_config *cfg;

    (void)state;
    /* the file's lines replace the default address, in order */
    cfg = buf_ok("listen [::1]:8080\nlisten 0.0.0.0:80\nlisten [::]:8080\n"
                 "listen localhost:1\n");
    assert_int_equal(cfg->n_listen, 4);
    assert_listen(&cfg->listen[0], "::1", 8080, false);
    assert_listen(&cfg->listen[1], "0.0.0.0", 80, false);
    assert_listen(&cfg->listen[2], "::", 8080, false);
    assert_listen(&cfg->listen[3], "localhost", 1, false);
    config_free(cfg);

    expect_buf_error("listen 127.0.0.1:0",
                     "F:1: invalid value '127.0.0.1:0' for listen: port must be 1..65535\n");
    expect_buf_error("listen 127.0.0.1:65536",
                     "F:1: invalid value '127.0.0.1:65536' for listen: port must be 1..65535\n");
    expect_buf_error("listen 127.0.0.1",
                     "F:1: invalid value '127.0.0.1' for listen: missing :PORT\n");
    expect_buf_error("listen ::1:8080",
                     "F:1: invalid value '::1:8080' for listen: an IPv6 address needs brackets, "
                     "like [::1]:8080\n");
    expect_buf_error("listen [::1]", "F:1: invalid value '[::1]' for listen: missing :PORT\n");
    expect_buf_error("listen [::1:8080",
                     "F:1: invalid value '[::1:8080' for listen: missing ']' after the IPv6 "
                     "address\n");
    expect_buf_error("listen [1.2.3.4]:80",
                     "F:1: invalid value '[1.2.3.4]:80' for listen: not an IPv6 address inside "
                     "[ ]\n");
    expect_buf_error("listen :8080", "F:1: invalid value ':8080' for listen: missing host\n");
    expect_buf_error("listen 1.2.3.4:8o",
                     "F:1: invalid value '1.2.3.4:8o' for listen: port must be a number\n");
    expect_buf_error("listen 1.2.3.4:80 ssl",
                     "F:1: invalid value '1.2.3.4:80 ssl' for listen: expected HOST:PORT like "
                     "127.0.0.1:8080 or [::1]:8080, optionally followed by tls\n");
    expect_buf_error("listen 1.2.3.4:80 tls extra",
                     "F:1: invalid value '1.2.3.4:80 tls extra' for listen: expected HOST:PORT "
                     "like 127.0.0.1:8080 or [::1]:8080, optionally followed by tls\n");
    expect_buf_error("listen ex/ample:80",
                     "F:1: invalid value 'ex/ample:80' for listen: not a valid host name or "
                     "address\n");
}

static void test_listen_command_line_replaces_file(void **state)
{
    static const char *const flags[] = {"--listen",   "127.0.0.1:9001", "--listen=[::1]:9002 tls",
                                        "--tls-cert", "/dev/null",      "--tls-key=/dev/null",
                                        NULL};
    struct mcpeek_config *cfg;

    (void)state;
    cfg = build_ok("listen 0.0.0.0:80\nlisten 0.0.0.0:81\n", flags);
    assert_int_equal(cfg->n_listen, 2);
    assert_listen(&cfg->listen[0], "127.0.0.1", 9001, false);
    assert_listen(&cfg->listen[1], "::1", 9002, true);
    config_free(cfg);
}

static void test_upstream_list(void **state)
{
    static const char *const flags[] = {"--upstream", "http://10.0.0.9:3000/mcp", NULL};
    struct mcpeek_config *cfg;

    (void)state;
    /* repeatable, in order, weight defaults to 1 */
    cfg = buf_ok("upstream http://10.0.0.1:3000/mcp\nupstream https://b.example/mcp weight=3\n"
                 "upstream_fail_timeout 2s\nupstream_affinity off\n");
    assert_int_equal(cfg->n_upstreams, 2);
    assert_string_equal(cfg->upstreams[0].url, "http://10.0.0.1:3000/mcp");
    assert_int_equal(cfg->upstreams[0].weight, 1);
    assert_string_equal(cfg->upstreams[1].url, "https://b.example/mcp");
    assert_int_equal(cfg->upstreams[1].weight, 3);
    assert_int_equal(cfg->upstream_fail_timeout_ms, 2000);
    assert_false(cfg->upstream_affinity);
    config_free(cfg);

    /* defaults: one upstream, affinity on, 10 s */
    cfg = buf_ok("");
    assert_int_equal(cfg->n_upstreams, 1);
    assert_int_equal(cfg->upstream_fail_timeout_ms, 10000);
    assert_true(cfg->upstream_affinity);
    config_free(cfg);

    /* one --upstream replaces every line of the file, like --listen */
    cfg = build_ok("upstream http://10.0.0.1:3000/mcp\nupstream http://10.0.0.2:3000/mcp\n", flags);
    assert_int_equal(cfg->n_upstreams, 1);
    assert_string_equal(cfg->upstreams[0].url, "http://10.0.0.9:3000/mcp");
    config_free(cfg);

    expect_buf_error("upstream http://a/mcp weight=0",
                     "F:1: invalid value 'http://a/mcp weight=0' for upstream: weight must be a "
                     "number from 1 to 1000\n");
    expect_buf_error("upstream http://a/mcp weight=1001",
                     "F:1: invalid value 'http://a/mcp weight=1001' for upstream: weight must be "
                     "a number from 1 to 1000\n");
    expect_buf_error("upstream http://a/mcp weight=2x",
                     "F:1: invalid value 'http://a/mcp weight=2x' for upstream: weight must be "
                     "a number from 1 to 1000\n");
    expect_buf_error("upstream http://a/mcp heavy",
                     "F:1: invalid value 'http://a/mcp heavy' for upstream: expected an absolute "
                     "http:// or https:// URL, optionally weight=N\n");
    expect_buf_error("upstream http://a/mcp weight=1 x",
                     "F:1: invalid value 'http://a/mcp weight=1 x' for upstream: expected an "
                     "absolute http:// or https:// URL, optionally weight=N\n");
    expect_buf_error("upstream http://a/mcp\nupstream http://a/mcp weight=2",
                     "F:2: upstream http://a/mcp given twice (first on line 1)\n");
    /* shared_state: a redis:// URL, restart only; off = unset */
    cfg = buf_ok("shared_state redis://10.0.0.7:6379/2\nshared_state_timeout 20ms\n");
    assert_string_equal(cfg->shared_state, "redis://10.0.0.7:6379/2");
    assert_int_equal(cfg->shared_state_timeout_ms, 20);
    config_free(cfg);
    cfg = buf_ok("shared_state off\n");
    assert_null(cfg->shared_state);
    assert_int_equal(cfg->shared_state_timeout_ms, 5);
    config_free(cfg);
    expect_buf_error("shared_state redis://h:6379/16",
                     "F:1: invalid value 'redis://h:6379/16' for shared_state: the database must "
                     "be a number from 0 to 15\n");
    expect_buf_error("shared_state_timeout 11s", "F:1: invalid value '11s' for "
                                                 "shared_state_timeout: too large (at most 10s)\n");
    expect_buf_error("upstream_fail_timeout 0",
                     "F:1: invalid value '0' for upstream_fail_timeout: must be at least 1ms\n");
}

static void test_rate_limit(void **state)
{
    static const char *const flags[] = {"--rate-limit", "client_ip 5/s", "--rate-limit=token 1/m",
                                        NULL};
    struct mcpeek_config *cfg;

    (void)state;
    /* repeatable, in order; burst defaults to the rate's N */
    cfg = buf_ok("rate_limit openai_subject 10/s\nrate_limit openai_session 100/m burst 5\n"
                 "rate_limit openai_org 1000000/s burst 1000000\nrate_limit client_ip 1/m\n"
                 "rate_limit token 3/s burst 1\nrate_limit openai_subject 10/s burst 11\n");
    assert_int_equal(cfg->n_rate_limits, 6);
    assert_rule(&cfg->rate_limits[0], RATELIMIT_OPENAI_SUBJECT, 10, 1000, 10);
    assert_rule(&cfg->rate_limits[1], RATELIMIT_OPENAI_SESSION, 100, 60000, 5);
    assert_rule(&cfg->rate_limits[2], RATELIMIT_OPENAI_ORG, 1000000, 1000, 1000000);
    assert_rule(&cfg->rate_limits[3], RATELIMIT_CLIENT_IP, 1, 60000, 1);
    assert_rule(&cfg->rate_limits[4], RATELIMIT_TOKEN, 3, 1000, 1);
    assert_rule(&cfg->rate_limits[5], RATELIMIT_OPENAI_SUBJECT, 10, 1000, 11);
    config_free(cfg);

    /* the command line's lines replace the file's */
    cfg = build_ok("rate_limit openai_subject 10/s\n", flags);
    assert_int_equal(cfg->n_rate_limits, 2);
    assert_rule(&cfg->rate_limits[0], RATELIMIT_CLIENT_IP, 5, 1000, 5);
    assert_rule(&cfg->rate_limits[1], RATELIMIT_TOKEN, 1, 60000, 1);
    config_free(cfg);

    expect_buf_error("rate_limit subject 10/s",
                     "F:1: invalid value 'subject 10/s' for rate_limit: unknown scope: expected "
                     "openai_subject, openai_session, openai_org, client_ip or token\n");
    expect_buf_error("rate_limit token",
                     "F:1: invalid value 'token' for rate_limit: expected SCOPE RATE [burst N] "
                     "like openai_subject 10/s burst 20\n");
    expect_buf_error("rate_limit token 10/s burst",
                     "F:1: invalid value 'token 10/s burst' for rate_limit: expected SCOPE RATE "
                     "[burst N] like openai_subject 10/s burst 20\n");
    expect_buf_error("rate_limit token 10/s bursts 2",
                     "F:1: invalid value 'token 10/s bursts 2' for rate_limit: expected SCOPE "
                     "RATE [burst N] like openai_subject 10/s burst 20\n");
    static const char *const bad_rates[] = {"10",   "10/h", "0/s",   "/s",        "1.5/s", "-1/s",
                                            "10/S", "s/10", "10/s/", "1000001/s", "10/ s"};
    for (size_t i = 0; i < sizeof bad_rates / sizeof bad_rates[0]; i++) {
        char line[64], want[256];
        snprintf(line, sizeof line, "rate_limit token %s", bad_rates[i]);
        snprintf(want, sizeof want,
                 "F:1: invalid value 'token %s' for rate_limit: the rate must be N/s or N/m "
                 "with N from 1 to 1000000\n",
                 bad_rates[i]);
        if (strcmp(bad_rates[i], "10/ s") == 0) /* two words: the shape is wrong */
            snprintf(want, sizeof want,
                     "F:1: invalid value 'token 10/ s' for rate_limit: expected SCOPE RATE "
                     "[burst N] like openai_subject 10/s burst 20\n");
        expect_buf_error(line, want);
    }
    expect_buf_error("rate_limit token 10/s burst 0",
                     "F:1: invalid value 'token 10/s burst 0' for rate_limit: burst must be a "
                     "number from 1 to 1000000\n");
    expect_buf_error("rate_limit token 10/s burst 2000000",
                     "F:1: invalid value 'token 10/s burst 2000000' for rate_limit: burst must "
                     "be a number from 1 to 1000000\n");
    /* the same line twice (burst written out or defaulted) */
    expect_buf_error("rate_limit token 10/s\n# comment\nrate_limit token 10/s burst 10\n",
                     "F:3: rate_limit token 10/s burst 10 given twice (first on line 1)\n");
    {
        struct strbuf many;
        strbuf_init(&many);
        for (int i = 1; i <= 17; i++)
            strbuf_printf(&many, "rate_limit client_ip %d/s\n", i);
        expect_buf_error(many.data, "F:17: invalid value 'client_ip 17/s' for rate_limit: at "
                                    "most 16 rate_limit lines\n");
        strbuf_free(&many);
    }
    /* the other keys' bounds */
    expect_buf_error("rate_limit_keys 15",
                     "F:1: invalid value '15' for rate_limit_keys: must be at least 16\n");
    expect_buf_error("conversation_max 0",
                     "F:1: invalid value '0' for conversation_max: must be at least 1\n");
    expect_buf_error("conversation_idle_timeout 500ms",
                     "F:1: invalid value '500ms' for conversation_idle_timeout: must be at least "
                     "1s\n");
}

/* ---------------------------------------------------------------------------------------- */
/* cross-key checks */

static void test_cross_key_checks(void **state)
{
    char *f = write_temp("pem\n");
    char text[1024];
    struct mcpeek_config *cfg;

    (void)state;
    expect_errors("workers 2\nlisten 127.0.0.1:8080\nlisten 0.0.0.0:8443 tls\n", NULL,
                  "FILE:3: listen 0.0.0.0:8443 tls needs tls_cert and tls_key\n");

    snprintf(text, sizeof text, "listen 0.0.0.0:8443 tls\n\ntls_cert %s\n", f);
    expect_errors(text, NULL, "FILE:3: tls_cert is set but tls_key is not\n");
    snprintf(text, sizeof text, "tls_key %s\n", f);
    expect_errors(text, NULL, "FILE:1: tls_key is set but tls_cert is not\n");
    snprintf(text, sizeof text, "mcp_path /m\nupstream_tls_cert %s\n", f);
    expect_errors(text, NULL, "FILE:2: upstream_tls_cert is set but upstream_tls_key is not\n");
    snprintf(text, sizeof text, "upstream_tls_key %s\n", f);
    expect_errors(text, NULL, "FILE:1: upstream_tls_key is set but upstream_tls_cert is not\n");

    /* both halves present: accepted */
    snprintf(text, sizeof text,
             "listen [::]:8443 tls\ntls_cert %s\ntls_key %s\nupstream_tls_cert %s\n"
             "upstream_tls_key %s\n",
             f, f, f, f);
    cfg = build_ok(text, NULL);
    assert_listen(&cfg->listen[0], "::", 8443, true);
    config_free(cfg);

    /* a rejected tls_key is reported once, not again as "tls_key is not set" */
    snprintf(text, sizeof text, "tls_cert %s\ntls_key /nonexistent/key.pem\n", f);
    expect_errors(text, NULL,
                  "FILE:2: invalid value '/nonexistent/key.pem' for tls_key: cannot read it: No "
                  "such file or directory\n");

    expect_errors("listen 127.0.0.1:8080\nlisten [::1]:8080\nlisten 127.0.0.1:8080 tls\n", NULL,
                  "FILE:3: listen 127.0.0.1:8080 given twice (first on line 1)\n"
                  "FILE:3: listen 127.0.0.1:8080 tls needs tls_cert and tls_key\n");
    expect_errors("admin_listen 127.0.0.1:8080\n", NULL,
                  "FILE:1: admin_listen 127.0.0.1:8080 is also a listen address\n");

    /* problems that come from the command line name the flag */
    {
        static const char *const flags[] = {"--listen", "0.0.0.0:443 tls", NULL};
        expect_errors(NULL, flags,
                      "command line: --listen: listen 0.0.0.0:443 tls needs tls_cert and "
                      "tls_key\n");
    }
    {
        const char *flags[] = {"--tls-cert", f, NULL};
        expect_errors(NULL, flags,
                      "command line: --tls-cert: tls_cert is set but tls_key is not\n");
    }
    unlink(f);
    free(f);
}

/* ---------------------------------------------------------------------------------------- */
/* command line */

static void test_precedence(void **state)
{
    static const char *const flags[] = {"--workers",     "2",  "--log-file=/tmp/cli.log",
                                        "--strict-json", "on", NULL};
    struct mcpeek_config *cfg;

    (void)state;
    cfg = build_ok("workers 4\nmax_body_size 8m\nlog_file /tmp/file.log\n", flags);
    assert_int_equal(cfg->workers, 2);                     /* CLI over file */
    assert_string_equal(cfg->log_file, "/tmp/cli.log");    /* CLI over file */
    assert_true(cfg->strict_json);                         /* CLI over default */
    assert_int_equal(cfg->max_body_size, 8 * 1024 * 1024); /* file over default */
    assert_string_equal(cfg->mcp_path, "/mcp");            /* default */
    assert_int_equal(cfg->n_listen, 1);                    /* default */
    config_free(cfg);

    /* the same flag twice: the last one wins */
    {
        static const char *const twice[] = {"--workers", "2", "--workers=3", NULL};
        cfg = build_ok("workers 4\n", twice);
        assert_int_equal(cfg->workers, 3);
        config_free(cfg);
    }
    /* a valid flag does not hide a bad file value */
    {
        static const char *const fix[] = {"--workers", "2", NULL};
        expect_errors("workers x\n", fix,
                      "FILE:1: invalid value 'x' for workers: expected auto or a number of "
                      "threads\n");
    }
}

static void test_cli_forms(void **state)
{
    struct cli_args args;
    char *err;

    (void)state;
    {
        static const char *const argv[] = {"-c",
                                           "/etc/mcpeek/mcpeek.conf",
                                           "--max-body-size=8m",
                                           "--upstream",
                                           "http://h/mcp",
                                           "--mcp-path=",
                                           NULL};
        assert_int_equal(cli(argv, &args, &err), 0);
        assert_string_equal(err, "");
        assert_int_equal(args.action, CLI_RUN);
        assert_string_equal(args.config_path, "/etc/mcpeek/mcpeek.conf");
        assert_int_equal(args.n_overrides, 3);
        assert_string_equal(args.overrides[0].key, "max_body_size");
        assert_string_equal(args.overrides[0].value, "8m");
        assert_string_equal(args.overrides[1].key, "upstream");
        assert_string_equal(args.overrides[1].value, "http://h/mcp");
        assert_string_equal(args.overrides[2].key, "mcp_path");
        assert_string_equal(args.overrides[2].value, "");
        cli_args_free(&args);
        assert_null(args.overrides);
        free(err);
    }
    {
        static const char *const argv[] = {"-t", "--config=/x.conf", NULL};
        assert_int_equal(cli(argv, &args, &err), 0);
        assert_int_equal(args.action, CLI_TEST);
        assert_string_equal(args.config_path, "/x.conf");
        cli_args_free(&args);
        free(err);
    }
    {
        static const char *const argv[] = {"-t", "--help", NULL};
        assert_int_equal(cli(argv, &args, &err), 0);
        assert_int_equal(args.action, CLI_HELP);
        cli_args_free(&args);
        free(err);
    }
    {
        static const char *const argv[] = {"-V", NULL};
        assert_int_equal(cli(argv, &args, &err), 0);
        assert_int_equal(args.action, CLI_VERSION);
        cli_args_free(&args);
        free(err);
    }
    {
        static const char *const argv[] = {"--version", "-h", NULL};
        assert_int_equal(cli(argv, &args, &err), 0);
        assert_int_equal(args.action, CLI_HELP);
        cli_args_free(&args);
        free(err);
    }
    {
        static const char *const argv[] = {NULL};
        assert_int_equal(cli(argv, &args, &err), 0);
        assert_int_equal(args.action, CLI_RUN);
        assert_null(args.config_path);
        assert_int_equal(args.n_overrides, 0);
        cli_args_free(&args);
        free(err);
    }
}

static void test_cli_errors(void **state)
{
    static const struct {
        const char *argv[4];
        const char *error;
    } cases[] = {
        {{"--lisen", "1.2.3.4:80", NULL},
         "command line: unknown option '--lisen' (did you mean --listen?)\n"},
        {{"--max_body_size=1m", NULL},
         "command line: unknown option '--max_body_size' (did you mean --max-body-size?)\n"},
        {{"--bogus", NULL}, "command line: unknown option '--bogus'\n"},
        {{"-x", NULL}, "command line: unexpected argument '-x' (see --help)\n"},
        {{"mcpeek.conf", NULL}, "command line: unexpected argument 'mcpeek.conf' (see --help)\n"},
        {{"-t", "--workers", NULL}, "command line: --workers: missing value\n"},
        {{"-c", NULL}, "command line: -c: missing value\n"},
        {{"--config", NULL}, "command line: --config: missing value\n"},
    };
    struct cli_args args;
    char *err;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(cli(cases[i].argv, &args, &err), -1);
        assert_string_equal(err, cases[i].error);
        /* nothing is left allocated: freeing again is harmless */
        assert_null(args.overrides);
        assert_null(args.config_path);
        cli_args_free(&args);
        free(err);
    }
}

static void test_cli_value_errors(void **state)
{
    static const char *const flags[] = {
        "--max-body-size", "abc", "--mcp-path=", "--listen", "[::1]:0", NULL};

    (void)state;
    expect_errors(NULL, flags,
                  "command line: --max-body-size: invalid value 'abc' for max_body_size: "
                  "expected a size like 4m\n"
                  "command line: --mcp-path: missing value for 'mcp_path'\n"
                  "command line: --listen: invalid value '[::1]:0' for listen: port must be "
                  "1..65535\n");
}

static void test_cli_usage(void **state)
{
    struct strbuf usage;

    (void)state;
    strbuf_init(&usage);
    cli_usage(&usage);
    assert_non_null(strstr(usage.data, "\n  -c, --config PATH "));
    assert_non_null(strstr(usage.data, "\n  -t, --test "));
    assert_non_null(strstr(usage.data, "\n  -h, --help "));
    assert_non_null(strstr(usage.data, "\n  -V, --version "));
    /* one line per key: flag, value hint, help, default */
    {
        const char *line = strstr(usage.data, "\n  --max-body-size SIZE ");
        assert_non_null(line);
        const char *eol = strchr(line + 1, '\n');
        assert_non_null(eol);
        assert_memory_equal(eol - strlen("(default: 4m)"), "(default: 4m)", 13);
    }
    assert_non_null(strstr(usage.data, "\n  --listen HOST:PORT[ tls] "));
    assert_non_null(strstr(usage.data, "(default: 127.0.0.1:8080; restart only)\n"));
    assert_non_null(strstr(usage.data, "(default: unset)\n"));
    strbuf_free(&usage);
}

/* Every key is a flag in --help, and every --help flag is a key of the file and a flag. */
static void test_usage_lists_every_key(void **state)
{
    char keys[64][64], line[128], want[192];
    size_t n = usage_keys(keys, 64);

    (void)state;
    assert_int_equal(n, 49); /* the members of struct mcpeek_config, source_path aside */
    for (size_t i = 0; i < n; i++) {
        struct cli_args args;
        char flag[80], *err;
        const char *argv[] = {flag, NULL};

        /* known to the file parser: a missing value, not an unknown key */
        snprintf(line, sizeof line, "%s", keys[i]);
        snprintf(want, sizeof want, "F:1: missing value for '%s'\n", keys[i]);
        expect_buf_error(line, want);

        /* known to the command line under its dashed name */
        snprintf(flag, sizeof flag, "--%s", keys[i]);
        for (char *p = flag + 2; *p != '\0'; p++)
            if (*p == '_')
                *p = '-';
        snprintf(want, sizeof want, "command line: %s: missing value\n", flag);
        assert_int_equal(cli(argv, &args, &err), -1);
        assert_string_equal(err, want);
        free(err);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* generations */

static void test_restart_only_changes(void **state)
{
    struct mcpeek_config *a = config_defaults(), *b;
    const char *names[8];

    (void)state;
    b = buf_ok("max_body_size 1m\nupstream http://other:1/mcp\nstrict_json on\n"
               "rate_limit token 1/s\nconversation_idle_timeout 1h\n");
    assert_int_equal(config_restart_only_changes(a, b, names, 8), 0);
    config_free(b);

    b = buf_ok("listen 127.0.0.1:8081\nworkers 2\nadmin_listen off\nmax_body_size 1m\n");
    assert_int_equal(config_restart_only_changes(a, b, names, 8), 3);
    assert_string_equal(names[0], "listen");
    assert_string_equal(names[1], "workers");
    assert_string_equal(names[2], "admin_listen");
    /* fewer slots than changes: the count is still the total */
    names[1] = NULL;
    assert_int_equal(config_restart_only_changes(a, b, names, 1), 3);
    assert_string_equal(names[0], "listen");
    assert_null(names[1]);
    config_free(b);

    /* read once at start by main: also restart-only */
    b = buf_ok("log_file /tmp/x.log\nmetrics_label_limit 5\nsession_map_size 10\n"
               "session_map_ttl 2h\nmcp_path /other\n");
    assert_int_equal(config_restart_only_changes(a, b, names, 8), 4);
    assert_string_equal(names[0], "log_file");
    assert_string_equal(names[1], "metrics_label_limit");
    assert_string_equal(names[2], "session_map_size");
    assert_string_equal(names[3], "session_map_ttl");
    config_free(b);
    b = buf_ok("rate_limit_keys 16\nconversation_max 1\n");
    assert_int_equal(config_restart_only_changes(a, b, names, 8), 2);
    assert_string_equal(names[0], "rate_limit_keys");
    assert_string_equal(names[1], "conversation_max");
    config_free(b);
    config_free(a);

    /* the same listen addresses in another order bind the same sockets */
    a = buf_ok("listen 127.0.0.1:1\nlisten [::1]:2\n");
    b = buf_ok("listen [::1]:2\nlisten 127.0.0.1:1\n");
    assert_int_equal(config_restart_only_changes(a, b, names, 8), 0);
    config_free(b);
    /* but adding tls to one is a change */
    b = buf_ok("listen [::1]:2 tls\nlisten 127.0.0.1:1\ntls_cert /dev/null\ntls_key /dev/null\n");
    assert_int_equal(config_restart_only_changes(a, b, names, 8), 1);
    assert_string_equal(names[0], "listen");
    config_free(b);
    config_free(a);
}

/* config/mcpeek.conf parses, sets every key to its default, and mentions every key; the
 * docs describe every key. */
static void test_repo_config_and_docs(void **state)
{
    char *conf_path = source_file("config/mcpeek.conf");
    char *doc_path = source_file("docs/configuration.md");
    char *conf = read_text(conf_path), *doc = read_text(doc_path);
    struct cli_args args = {.action = CLI_TEST, .config_path = conf_path};
    struct mcpeek_config *cfg, *defaults;
    char keys[64][64], needle[256];
    struct usage_key info[64];
    size_t n = usage_keys_info(keys, info, 64);
    const char *section, *row, *row_end;
    struct strbuf err;

    (void)state;
    if (conf == NULL)
        fail_msg("cannot read %s (set MCPEEK_SOURCE_DIR)", conf_path);
    if (doc == NULL)
        fail_msg("cannot read %s (set MCPEEK_SOURCE_DIR)", doc_path);
    strbuf_init(&err);
    strbuf_puts(&err, "");
    cfg = config_build(&args, &err);
    if (cfg == NULL)
        fail_msg("%s does not parse:\n%s", conf_path, err.data);
    defaults = config_defaults();
    assert_string_equal(err.data, "");
    assert_config_equal(cfg, defaults);

    for (size_t i = 0; i < n; i++) {
        bool active, commented;
        snprintf(needle, sizeof needle, "\n%.63s ", keys[i]);
        active = strstr(conf, needle) != NULL;
        snprintf(needle, sizeof needle, "\n#%.63s ", keys[i]);
        commented = strstr(conf, needle) != NULL;
        if (!active && !commented)
            fail_msg("config/mcpeek.conf does not show key '%s'", keys[i]);
        /* the key's section states the default, flag and reload behaviour --help states */
        snprintf(needle, sizeof needle, "\n### `%.63s`\n", keys[i]);
        section = strstr(doc, needle);
        if (section == NULL)
            fail_msg("docs/configuration.md has no section '### `%s`'", keys[i]);
        section += strlen(needle);
        if (strcmp(info[i].def, "unset") == 0)
            snprintf(needle, sizeof needle, "Default: unset · Flag: `%s` · SIGHUP: %s\n",
                     info[i].flag, info[i].restart_only ? "restart only" : "reloaded");
        else
            snprintf(needle, sizeof needle, "Default: `%s` · Flag: `%s` · SIGHUP: %s\n",
                     info[i].def, info[i].flag, info[i].restart_only ? "restart only" : "reloaded");
        if (strncmp(section, needle, strlen(needle)) != 0)
            fail_msg("docs/configuration.md, key %s: expected the line\n%sgot\n%.*s", keys[i],
                     needle, (int)strcspn(section, "\n") + 1, section);
        /* and the summary table agrees on reload behaviour */
        snprintf(needle, sizeof needle, "| [`%.63s`](#%.63s) |", keys[i], keys[i]);
        row = strstr(doc, needle);
        if (row == NULL)
            fail_msg("docs/configuration.md summary table has no row for %s", keys[i]);
        row_end = strchr(row, '\n');
        snprintf(needle, sizeof needle, "| %s |",
                 info[i].restart_only ? "restart only" : "reloaded");
        if (row_end == NULL || (size_t)(row_end - row) < strlen(needle) ||
            strncmp(row_end - strlen(needle), needle, strlen(needle)) != 0)
            fail_msg("docs/configuration.md summary row of %s does not end in '%s'", keys[i],
                     needle);
    }
    config_free(cfg);
    config_free(defaults);
    strbuf_free(&err);
    free(conf);
    free(doc);
    free(conf_path);
    free(doc_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_no_file_is_defaults),
        cmocka_unit_test(test_every_key_from_file),
        cmocka_unit_test(test_comment_rules),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_invalid_value),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_missing_value),
        cmocka_unit_test(test_unreadable_file),
        cmocka_unit_test(test_multiple_errors),
        cmocka_unit_test(test_control_characters),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_words),
        cmocka_unit_test(test_urls_paths_origins),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_listen_command_line_replaces_file),
        cmocka_unit_test(test_upstream_list),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_cross_key_checks),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_cli_forms),
        cmocka_unit_test(test_cli_errors),
        cmocka_unit_test(test_cli_value_errors),
        cmocka_unit_test(test_cli_usage),
        cmocka_unit_test(test_usage_lists_every_key),
        cmocka_unit_test(test_restart_only_changes),
        cmocka_unit_test(test_repo_config_and_docs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
