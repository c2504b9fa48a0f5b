/* Tests for src/generation.c: what a configuration generation derives at load time
 * (upstream origin, auth tokens, pseudonymization key, TLS context) and its failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mcpeek/generation.h"

static char *write_temp(const char *content)
{
    char *path = strdup("/tmp/mcpeek-gen-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    return path;
}

static struct generation *load(struct mcpeek_config *cfg, struct strbuf *errors)
{
    strbuf_init(errors);
    strbuf_puts(errors, "");
    return generation_new(cfg, 1, errors);
}

static void test_upstream_target_from_url(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        const char *origin, *authority, *path;
        bool tls;
    } cases[] = {
        {"http://127.0.0.1:3000/mcp", "http://127.0.0.1:3000", "127.0.0.1:3000", "/mcp", false},
        {"https://localhost/v1/mcp?x=1", "https://localhost", "localhost", "/v1/mcp?x=1", true},
        {"http://[::1]:8080/mcp", "http://[::1]:8080", "[::1]:8080", "/mcp", false},
        {"HTTP://127.0.0.1", "http://127.0.0.1", "127.0.0.1", "/", false},
        {"http://127.0.0.1:80?q=1", "http://127.0.0.1", "127.0.0.1", "/?q=1", false},
        {"https://127.0.0.1:443/", "https://127.0.0.1", "127.0.0.1", "/", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mcpeek_config *cfg = config_defaults();
        free(cfg->upstreams[0].url);
        cfg->upstreams[0].url = strdup(cases[i].url);
        struct strbuf errors;
        struct generation *gen = load(cfg, &errors);
        if (!gen)
            fail_msg("%s: %s", cases[i].url, errors.data);
        const struct upstream_target *t = &gen->targets[0];
        if (strcmp(t->origin, cases[i].origin) != 0 ||
            strcmp(t->authority, cases[i].authority) != 0 || strcmp(t->path, cases[i].path) != 0)
            fail_msg("%s: expected %s %s %s, got %s %s %s", cases[i].url, cases[i].origin,
                     cases[i].authority, cases[i].path, t->origin, t->authority, t->path);
        assert_int_equal(t->tls, cases[i].tls);
        assert_ptr_equal(t->cfg, gen->cfg);
        assert_true(t->serial != 0);
        generation_unref(gen);
        strbuf_free(&errors);
    }
}

static void test_upstream_url_mcpeek_cannot_use_fails_the_load(void **state)
{
    (void)state;
    static const struct {
        const char *url, *message;
    } cases[] = {
        {"http://user:pw@127.0.0.1/mcp", "cannot use URL"},
        {"http://127.0.0.1:0/mcp", "cannot use URL"},
        {"http://127.0.0.1:65536/mcp", "cannot use URL"},
        {"http://127.0.0.1:80x/mcp", "cannot use URL"},
        {"http://[::1/mcp", "cannot use URL"},
        {"ftp://127.0.0.1/mcp", "cannot use URL"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mcpeek_config *cfg = config_defaults();
        free(cfg->upstreams[0].url);
        cfg->upstreams[0].url = strdup(cases[i].url);
        struct strbuf errors;
        struct generation *gen = load(cfg, &errors);
        if (gen)
            fail_msg("%s: loaded, expected an error", cases[i].url);
        if (!errors.data || !strstr(errors.data, cases[i].message))
            fail_msg("%s: expected '%s' in the error, got '%s'", cases[i].url, cases[i].message,
                     errors.data ? errors.data : "");
        strbuf_free(&errors);
    }
}

/* libcurl resolves the name when it connects (and again after upstream_dns_ttl): a name that
 * does not resolve yet is not a load error, and every generation gets its own serial. */
static void test_upstream_name_is_not_resolved_at_load(void **state)
{
    (void)state;
    struct mcpeek_config *cfg = config_defaults();
    free(cfg->upstreams[0].url);
    cfg->upstreams[0].url = strdup("http://no-such-host.invalid/mcp");
    struct strbuf errors, errors2;
    struct generation *gen = load(cfg, &errors);
    if (!gen)
        fail_msg("expected the load to succeed, got '%s'", errors.data ? errors.data : "");
    struct generation *gen2 = load(config_defaults(), &errors2);
    assert_non_null(gen2);
    assert_true(gen->targets[0].serial != gen2->targets[0].serial);
    generation_unref(gen);
    generation_unref(gen2);
    strbuf_free(&errors);
    strbuf_free(&errors2);
}

static void test_tokens_file_skips_comments_and_blanks(void **state)
{
    (void)state;
    char *path = write_temp("# operators\n\n  tok-one  \r\ntok-two\n#tok-three\n");
    struct mcpeek_config *cfg = config_defaults();
    cfg->auth_tokens_file = strdup(path);
    struct strbuf errors;
    struct generation *gen = load(cfg, &errors);
    assert_non_null(gen);
    assert_int_equal(gen->n_auth_tokens, 2);
    assert_string_equal(gen->auth_tokens[0], "tok-one");
    assert_string_equal(gen->auth_tokens[1], "tok-two");
    generation_unref(gen);
    strbuf_free(&errors);
    unlink(path);
    free(path);
}

static void test_empty_tokens_file_is_an_error(void **state)
{
    (void)state;
    char *path = write_temp("# nothing here\n\n");
    struct mcpeek_config *cfg = config_defaults();
    cfg->auth_tokens_file = strdup(path);
    struct strbuf errors;
    assert_null(load(cfg, &errors));
    if (!strstr(errors.data, "no token"))
        fail_msg("expected 'no token' in the error, got: %s", errors.data);
    strbuf_free(&errors);
    unlink(path);
    free(path);
}

static void test_short_hmac_key_is_refused_and_good_key_is_used(void **state)
{
    (void)state;
    char *short_key = write_temp("short");
    struct mcpeek_config *cfg = config_defaults();
    cfg->pseudonymize_key_file = strdup(short_key);
    struct strbuf errors;
    assert_null(load(cfg, &errors));
    if (!strstr(errors.data, "shorter than 16 bytes"))
        fail_msg("expected a short-key error, got: %s", errors.data);
    strbuf_free(&errors);

    char *good_key = write_temp("0123456789abcdef0123456789abcdef");
    cfg = config_defaults();
    cfg->pseudonymize_key_file = strdup(good_key);
    struct generation *gen = load(cfg, &errors);
    assert_non_null(gen);
    assert_int_equal(gen->hmac_key_len, 32);
    assert_ptr_equal(gen->log_opts.hmac_key, gen->hmac_key);
    assert_int_equal(gen->log_opts.user_location, USER_LOCATION_COARSE);
    generation_unref(gen);
    strbuf_free(&errors);
    unlink(short_key);
    unlink(good_key);
    free(short_key);
    free(good_key);
}

static void test_unreadable_file_names_the_path(void **state)
{
    (void)state;
    struct mcpeek_config *cfg = config_defaults();
    cfg->pseudonymize_key_file = strdup("/nonexistent/mcpeek.key");
    struct strbuf errors;
    assert_null(load(cfg, &errors));
    if (!strstr(errors.data, "/nonexistent/mcpeek.key: cannot open"))
        fail_msg("expected the path and 'cannot open', got: %s", errors.data);
    strbuf_free(&errors);
}

static void test_broken_tls_certificate_fails_the_generation(void **state)
{
    (void)state;
    char *cert = write_temp("-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n");
    struct mcpeek_config *cfg = config_defaults();
    cfg->listen[0].tls = true;
    cfg->tls_cert = strdup(cert);
    cfg->tls_key = strdup(cert);
    struct strbuf errors;
    assert_null(load(cfg, &errors));
    if (!strstr(errors.data, "tls_cert"))
        fail_msg("expected a tls_cert error, got: %s", errors.data);
    strbuf_free(&errors);
    unlink(cert);
    free(cert);
}

static void test_references_keep_the_generation_alive(void **state)
{
    (void)state;
    struct strbuf errors;
    struct generation *gen = load(config_defaults(), &errors);
    assert_non_null(gen);
    struct generation *held = generation_ref(gen);
    assert_ptr_equal(held, gen);
    assert_int_equal(atomic_load(&gen->refs), 2);
    generation_unref(gen);
    /* Still usable through the second reference (ASan would flag a premature free). */
    assert_string_equal(held->cfg->mcp_path, "/mcp");
    generation_unref(held);
    generation_unref(NULL);
    strbuf_free(&errors);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upstream_target_from_url),
        cmocka_unit_test(test_upstream_url_mcpeek_cannot_use_fails_the_load),
        cmocka_unit_test(test_upstream_name_is_not_resolved_at_load),
        cmocka_unit_test(test_tokens_file_skips_comments_and_blanks),
        cmocka_unit_test(test_empty_tokens_file_is_an_error),
        cmocka_unit_test(test_short_hmac_key_is_refused_and_good_key_is_used),
        cmocka_unit_test(test_unreadable_file_names_the_path),
        cmocka_unit_test(test_broken_tls_certificate_fails_the_generation),
        cmocka_unit_test(test_references_keep_the_generation_alive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
