/* test_access: unit tests for src/access.c (Host, Origin and bearer-token checks).
 *
 * Policies are built from real configurations (config_parse_buffer), so the defaults tested
 * are the ones the daemon applies: loopback names on loopback-only listeners, anything
 * otherwise, and an explicit list or '*' when the keys are set.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mcpeek/access.h"
#include "mcpeek/config.h"

static struct mcpeek_config *conf(const char *text)
{
    struct strbuf errors;
    strbuf_init(&errors);
    struct mcpeek_config *cfg = config_parse_buffer("T", text, strlen(text), &errors);
    if (!cfg)
        fail_msg("config '%s' rejected: %s", text, errors.data);
    strbuf_free(&errors);
    return cfg;
}

static void loopback_listeners_default_to_loopback_hosts_any_port(void **state)
{
    (void)state;
    struct mcpeek_config *cfg = conf("listen 127.0.0.1:8080\nlisten [::1]:8080\n");
    struct access_policy p;
    assert_true(access_listeners_loopback(cfg));
    access_policy_init(&p, cfg, NULL, 0);
    const char *ok[] = {"localhost",      "localhost:8080", "LOCALHOST:1", "127.0.0.1",
                        "127.0.0.1:9999", "[::1]",          "[::1]:8080"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (!access_host_allowed(&p, ok[i]))
            fail_msg("Host '%s' refused on a loopback listener", ok[i]);
    const char *bad[] = {"evil.example.com",
                         "evil.example.com:8080",
                         "localhost.evil.example",
                         "127.0.0.2",
                         "::1",
                         "[::2]:80",
                         "",
                         "localhost:0",
                         "localhost:x",
                         "local host",
                         "10.0.0.1:8080"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (access_host_allowed(&p, bad[i]))
            fail_msg("Host '%s' allowed on a loopback listener", bad[i]);
    assert_true(access_host_allowed(&p, NULL)); /* HTTP/1.0 without Host: not a browser */
    assert_int_equal(access_check(&p, "evil.example.com", NULL, NULL), ACCESS_HOST);
    config_free(cfg);
}

static void loopback_listeners_default_to_loopback_origins(void **state)
{
    (void)state;
    struct mcpeek_config *cfg = conf("listen 127.0.0.1:8080\n");
    struct access_policy p;
    access_policy_init(&p, cfg, NULL, 0);
    const char *ok[] = {"http://localhost", "http://localhost:6274", "https://127.0.0.1:3000",
                        "http://[::1]:8080", "HTTP://LOCALHOST:1"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (!access_origin_allowed(&p, ok[i]))
            fail_msg("Origin '%s' refused on a loopback listener", ok[i]);
    const char *bad[] = {"http://evil.example.com",
                         "https://localhost.evil.example",
                         "null",
                         "file://localhost",
                         "http://localhost/",
                         "http://127.0.0.1:80/x",
                         "ws://localhost",
                         "http://evil.example.com@localhost"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (access_origin_allowed(&p, bad[i]))
            fail_msg("Origin '%s' allowed on a loopback listener", bad[i]);
    assert_true(access_origin_allowed(&p, NULL)); /* no Origin: not a browser */
    assert_int_equal(access_check(&p, "localhost:8080", "http://evil.example.com", NULL),
                     ACCESS_ORIGIN);
    assert_int_equal(access_check(&p, "localhost:8080", NULL, NULL), ACCESS_OK);
    config_free(cfg);
}

static void public_listener_accepts_any_host_and_origin_by_default(void **state)
{
    (void)state;
    const char *texts[] = {"listen 0.0.0.0:8080\n", "listen 127.0.0.1:8080\nlisten [::]:8080\n",
                           "listen 192.0.2.1:443\n"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct mcpeek_config *cfg = conf(texts[i]);
        struct access_policy p;
        assert_false(access_listeners_loopback(cfg));
        access_policy_init(&p, cfg, NULL, 0);
        assert_int_equal(access_check(&p, "evil.example.com", "http://evil.example.com", NULL),
                         ACCESS_OK);
        assert_int_equal(access_check(&p, NULL, NULL, NULL), ACCESS_OK);
        config_free(cfg);
    }
}

static void allowed_hosts_list_matches_name_and_optional_port(void **state)
{
    (void)state;
    struct mcpeek_config *cfg =
        conf("listen 0.0.0.0:8080\nallowed_hosts mcp.example.com api.example.com:8443\n");
    struct access_policy p;
    access_policy_init(&p, cfg, NULL, 0);
    assert_true(access_host_allowed(&p, "mcp.example.com"));
    assert_true(access_host_allowed(&p, "MCP.Example.COM:8080"));
    assert_true(access_host_allowed(&p, "api.example.com:8443"));
    assert_false(access_host_allowed(&p, "api.example.com"));
    assert_false(access_host_allowed(&p, "api.example.com:443"));
    assert_false(access_host_allowed(&p, "localhost"));
    assert_false(access_host_allowed(&p, "mcp.example.com.evil.example"));
    assert_true(access_host_allowed(&p, NULL));
    config_free(cfg);

    /* '*' turns the loopback default off */
    cfg = conf("listen 127.0.0.1:8080\nallowed_hosts *\nallowed_origins *\n");
    access_policy_init(&p, cfg, NULL, 0);
    assert_int_equal(access_check(&p, "tunnel.example.net", "https://chatgpt.com", NULL),
                     ACCESS_OK);
    config_free(cfg);
}

static void allowed_origins_list_is_exact(void **state)
{
    (void)state;
    struct mcpeek_config *cfg = conf("allowed_origins https://chatgpt.com\n");
    struct access_policy p;
    access_policy_init(&p, cfg, NULL, 0);
    assert_true(access_origin_allowed(&p, "https://chatgpt.com"));
    assert_false(access_origin_allowed(&p, "https://chatgpt.com.evil.example"));
    assert_false(access_origin_allowed(&p, "http://chatgpt.com"));
    assert_false(access_origin_allowed(&p, "http://localhost:3000")); /* the list replaces it */
    assert_true(access_origin_allowed(&p, NULL));
    config_free(cfg);
}

static void bearer_tokens(void **state)
{
    (void)state;
    struct mcpeek_config *cfg = conf("listen 0.0.0.0:8080\n");
    const char *const tokens[] = {"alpha-token", "beta"};
    struct access_policy p;
    access_policy_init(&p, cfg, tokens, 2);
    assert_true(access_token_valid(&p, "Bearer alpha-token"));
    assert_true(access_token_valid(&p, "bearer beta"));
    const char *bad[] = {"Bearer alpha-toke", "Bearer alpha-tokenx",    "Bearer ",
                         "alpha-token",       "Basic YWxwaGEtdG9rZW4=", "Bearer beta alpha-token",
                         "Bearer bet"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (access_token_valid(&p, bad[i]))
            fail_msg("Authorization '%s' accepted", bad[i]);
    assert_false(access_token_valid(&p, NULL));
    assert_int_equal(access_check(&p, "x", NULL, "Bearer nope"), ACCESS_TOKEN);
    access_policy_init(&p, cfg, NULL, 0);
    assert_true(access_token_valid(&p, NULL)); /* no tokens configured: no check */
    config_free(cfg);
}

static void verdicts_name_status_and_error(void **state)
{
    (void)state;
    assert_string_equal(access_verdict_error(ACCESS_HOST), "host_not_allowed");
    assert_string_equal(access_verdict_error(ACCESS_ORIGIN), "origin_not_allowed");
    assert_string_equal(access_verdict_error(ACCESS_TOKEN), "unauthorized");
    assert_null(access_verdict_error(ACCESS_OK));
    assert_int_equal(access_verdict_status(ACCESS_HOST), 403);
    assert_int_equal(access_verdict_status(ACCESS_ORIGIN), 403);
    assert_int_equal(access_verdict_status(ACCESS_TOKEN), 401);
    assert_int_equal(access_verdict_rpc_code(ACCESS_TOKEN), -32001);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loopback_listeners_default_to_loopback_hosts_any_port),
        cmocka_unit_test(loopback_listeners_default_to_loopback_origins),
        cmocka_unit_test(public_listener_accepts_any_host_and_origin_by_default),
        cmocka_unit_test(allowed_hosts_list_matches_name_and_optional_port),
        cmocka_unit_test(allowed_origins_list_is_exact),
        cmocka_unit_test(bearer_tokens),
        cmocka_unit_test(verdicts_name_status_and_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
