/* test_shared_state: unit tests for src/shared_state.c without a Redis server: the URL
 * parser the config uses, and that nothing waits while the connection is not up (the e2e
 * test tests/e2e/scale_out.test.js drives a real redis-server). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "mcpeek/metrics.h"
#include "mcpeek/shared_state.h"

static void expect_url(const char *url, const char *host, unsigned port, unsigned db)
{
    char h[256];
    unsigned p = 0, d = 99;
    const char *why = NULL;
    if (shared_state_parse_url(url, h, sizeof(h), &p, &d, &why) < 0)
        fail_msg("'%s' refused: %s", url, why);
    assert_string_equal(h, host);
    assert_int_equal(p, port);
    assert_int_equal(d, db);
}

static void expect_bad(const char *url, const char *why_want)
{
    char h[256];
    unsigned p, d;
    const char *why = NULL;
    if (shared_state_parse_url(url, h, sizeof(h), &p, &d, &why) == 0)
        fail_msg("'%s' accepted", url);
    assert_string_equal(why, why_want);
}

static void test_parse_url(void **state)
{
    (void)state;
    expect_url("redis://127.0.0.1:6379", "127.0.0.1", 6379, 0);
    expect_url("redis://redis.default.svc:6380/2", "redis.default.svc", 6380, 2);
    expect_url("redis://[::1]:6379/15", "::1", 6379, 15);
    expect_bad("http://127.0.0.1:6379", "expected redis://HOST:PORT[/DB]");
    expect_bad("redis://127.0.0.1", "expected redis://HOST:PORT[/DB]");
    expect_bad("redis://:6379", "expected redis://HOST:PORT[/DB] (no user or password)");
    expect_bad("redis://u:p@h:6379", "the port must be a number from 1 to 65535");
    expect_bad("redis://h:0", "the port must be a number from 1 to 65535");
    expect_bad("redis://h:65536", "the port must be a number from 1 to 65535");
    expect_bad("redis://h:6379/16", "the database must be a number from 0 to 15");
    expect_bad("redis://h:6379/x", "the database must be a number from 0 to 15");
}

static void on_session(void *arg, bool answered, bool found, OpenAiClientContext *ctx,
                       uint64_t upstream)
{
    (void)answered, (void)found, (void)ctx, (void)upstream;
    (*(int *)arg)++;
}

/* Before the connection is up (it is made from the loop, which has not run), a lookup does
 * not start: the caller uses local state at once, and the miss is counted. */
static void test_no_wait_while_disconnected(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct metrics *m = metrics_new(1, 10, "test");
    struct shared_state_hub hub = {0};
    assert_non_null(base);
    assert_non_null(m);
    struct shared_state *ss =
        shared_state_new(base, "redis://127.0.0.1:1", &hub, m, metrics_worker(m, 0));
    assert_non_null(ss);
    assert_false(shared_state_connected(ss));
    int calls = 0;
    assert_null(shared_state_session_get(ss, "s1", 5, 256, on_session, &calls));
    shared_state_session_put(ss, "s1", NULL, 42, 1000); /* no-op, no crash */
    shared_state_session_del(ss, "s1");
    assert_int_equal(calls, 0);
    struct strbuf out;
    strbuf_init(&out);
    metrics_render(m, &out);
    assert_non_null(strstr(out.data, "mcpeek_shared_state_errors_total{kind=\"unavailable\"} 1\n"));
    assert_non_null(strstr(out.data, "mcpeek_shared_state_connections 0\n"));
    strbuf_free(&out);
    shared_state_free(ss);
    metrics_free(m);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_url),
        cmocka_unit_test(test_no_wait_while_disconnected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
