/* test_session_map: unit tests for src/session_map.c.
 *
 * Contexts are built with a recognisable tag in every field, so a test can tell which put a
 * get answered from. The concurrency test records failures per thread (cmocka asserts only
 * work on the main thread) and is meant to be run once under -fsanitize=thread as well.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "mcpeek/session_map.h"

/* A context whose every string is "<field>-<tag>", with a user location. */
static OpenAiClientContext *make_ctx(const char *tag)
{
    char session[300], subject[300], org[300], city[300];
    struct openai_user_location loc = {.country = "VN", .timezone = "Asia/Ho_Chi_Minh"};
    OpenAiClientContext tmp = {.locale = "en-US", .user_agent = "Mozilla/5.0 test"};

    snprintf(session, sizeof(session), "session-%s", tag);
    snprintf(subject, sizeof(subject), "subject-%s", tag);
    snprintf(org, sizeof(org), "org-%s", tag);
    snprintf(city, sizeof(city), "city-%s", tag);
    tmp.session_id = session;
    tmp.subject_id = subject;
    tmp.organization_id = org;
    loc.city = city;
    tmp.user_location = &loc;
    OpenAiClientContext *ctx = openai_meta_dup(&tmp); /* one block, as the parser makes */
    assert_non_null(ctx);
    return ctx;
}

/* Puts a fresh context tagged `tag` under `id` and checks the call succeeded. */
static void put_tagged(struct session_map *map, const char *id, const char *tag, uint64_t now)
{
    OpenAiClientContext *ctx = make_ctx(tag);
    int rc = session_map_put(map, id, ctx, now);

    openai_meta_free(ctx);
    if (rc != 0)
        fail_msg("put(%s): expected 0, got %d", id, rc);
}

/* Asserts that `id` is present with a context tagged `tag` (or absent when tag is NULL). */
static void expect_tag(struct session_map *map, const char *id, const char *tag, uint64_t now)
{
    OpenAiClientContext *got = session_map_get(map, id, now);
    char want[300];

    if (tag == NULL) {
        if (got != NULL)
            fail_msg("get(%s) at %llu: expected absent, got session %s", id,
                     (unsigned long long)now, got->session_id);
        return;
    }
    if (got == NULL)
        fail_msg("get(%s) at %llu: expected tag %s, got NULL", id, (unsigned long long)now, tag);
    snprintf(want, sizeof(want), "session-%s", tag);
    if (got->session_id == NULL || strcmp(got->session_id, want) != 0)
        fail_msg("get(%s): expected session_id %s, got %s", id, want,
                 got->session_id ? got->session_id : "(null)");
    openai_meta_free(got);
}

static void expect_size(struct session_map *map, size_t want)
{
    size_t got = session_map_size(map);

    if (got != want)
        fail_msg("size: expected %zu, got %zu", want, got);
}

/* The upstream that issued a session is kept beside the context: either may come first, and
 * neither put erases the other. */
static void test_upstream_beside_context(void **state)
{
    (void)state;
    struct session_map *map = session_map_new(8, 1000);
    assert_non_null(map);

    /* upstream first (initialize without _meta): no context yet */
    assert_int_equal(session_map_put_upstream(map, "s1", 42, 0), 0);
    assert_true(session_map_upstream(map, "s1", 1) == 42);
    expect_tag(map, "s1", NULL, 1);
    put_tagged(map, "s1", "a", 2);
    expect_tag(map, "s1", "a", 3);
    assert_true(session_map_upstream(map, "s1", 3) == 42);

    /* context first, then the upstream; a put of a context keeps the upstream */
    put_tagged(map, "s2", "b", 0);
    assert_true(session_map_upstream(map, "s2", 0) == 0);
    assert_int_equal(session_map_put_upstream(map, "s2", 7, 1), 0);
    put_tagged(map, "s2", "c", 2);
    assert_true(session_map_upstream(map, "s2", 2) == 7);
    expect_tag(map, "s2", "c", 2);

    /* 0 is "unknown": not stored; expiry and remove forget the upstream too */
    assert_int_equal(session_map_put_upstream(map, "s3", 0, 0), 0);
    assert_int_equal((int)session_map_size(map), 2);
    assert_true(session_map_upstream(map, "s1", 2 + 1001) == 0);
    session_map_remove(map, "s2");
    assert_true(session_map_upstream(map, "s2", 3) == 0);
    session_map_free(map);
}

static void test_roundtrip_is_deep_copy(void **state)
{
    struct session_map *map = session_map_new(100, 60000);
    OpenAiClientContext *orig = make_ctx("a");
    OpenAiClientContext *got1, *got2;

    (void)state;
    assert_non_null(map);
    assert_int_equal(session_map_put(map, "sid-1", orig, 1000), 0);
    /* scribble over and free the original: the stored copy must not share memory */
    orig->subject_id[0] = 'X';
    orig->user_location->city[0] = 'X';
    openai_meta_free(orig);

    got1 = session_map_get(map, "sid-1", 1001);
    assert_non_null(got1);
    assert_string_equal(got1->session_id, "session-a");
    assert_string_equal(got1->subject_id, "subject-a");
    assert_string_equal(got1->organization_id, "org-a");
    assert_string_equal(got1->locale, "en-US");
    assert_string_equal(got1->user_agent, "Mozilla/5.0 test");
    assert_non_null(got1->user_location);
    assert_string_equal(got1->user_location->city, "city-a");
    assert_string_equal(got1->user_location->country, "VN");
    assert_string_equal(got1->user_location->timezone, "Asia/Ho_Chi_Minh");
    assert_null(got1->user_location->latitude);

    /* each get is its own copy: changing one answer does not change the next */
    got1->session_id[0] = 'Z';
    got2 = session_map_get(map, "sid-1", 1002);
    assert_non_null(got2);
    assert_ptr_not_equal(got1, got2);
    assert_string_equal(got2->session_id, "session-a");
    openai_meta_free(got1);
    openai_meta_free(got2);

    expect_tag(map, "sid-2", NULL, 1003);
    expect_size(map, 1);
    session_map_free(map);
}

static void test_put_replaces(void **state)
{
    struct session_map *map = session_map_new(100, 60000);

    (void)state;
    assert_non_null(map);
    put_tagged(map, "sid", "first", 10);
    put_tagged(map, "sid", "second", 20);
    expect_tag(map, "sid", "second", 30);
    expect_size(map, 1);
    session_map_free(map);
}

static void test_lru_eviction_order(void **state)
{
    struct session_map *map = session_map_new(4, 0);

    (void)state;
    assert_non_null(map);
    put_tagged(map, "s1", "1", 1);
    put_tagged(map, "s2", "2", 2);
    put_tagged(map, "s3", "3", 3);
    put_tagged(map, "s4", "4", 4);
    expect_size(map, 4);

    expect_tag(map, "s1", "1", 5); /* s1 becomes most recent; s2 is now the oldest */
    put_tagged(map, "s5", "5", 6);
    expect_size(map, 4);
    expect_tag(map, "s2", NULL, 7);

    put_tagged(map, "s3", "3b", 8); /* a replace also refreshes: s4 is now the oldest */
    put_tagged(map, "s6", "6", 9);
    expect_size(map, 4);
    expect_tag(map, "s4", NULL, 10);

    expect_tag(map, "s1", "1", 11);
    expect_tag(map, "s3", "3b", 12);
    expect_tag(map, "s5", "5", 13);
    expect_tag(map, "s6", "6", 14);
    session_map_free(map);
}

static void test_ttl_expiry(void **state)
{
    struct session_map *map = session_map_new(100, 1000);

    (void)state;
    assert_non_null(map);
    put_tagged(map, "old", "o", 0);
    expect_tag(map, "old", "o", 1000); /* exactly ttl old: still valid */
    expect_tag(map, "old", "o", 500);  /* a clock read that trails the put is fine */
    expect_size(map, 1);
    expect_tag(map, "old", NULL, 1001); /* a get does not extend the TTL */
    expect_size(map, 0);                /* the expired entry was removed when met */

    put_tagged(map, "re", "r1", 0);
    put_tagged(map, "re", "r2", 800); /* a put restarts the TTL */
    expect_tag(map, "re", "r2", 1700);
    expect_tag(map, "re", NULL, 1801);

    /* a put drops expired entries sitting at the LRU tail */
    put_tagged(map, "a", "a", 10000);
    put_tagged(map, "b", "b", 10500);
    put_tagged(map, "c", "c", 11200);
    expect_size(map, 2);
    expect_tag(map, "b", "b", 11200);
    session_map_free(map);

    map = session_map_new(10, 0); /* ttl 0: entries only leave by LRU or remove */
    assert_non_null(map);
    put_tagged(map, "forever", "f", 0);
    expect_tag(map, "forever", "f", UINT64_MAX / 2);
    session_map_free(map);
}

static void test_remove(void **state)
{
    struct session_map *map = session_map_new(100, 60000);

    (void)state;
    assert_non_null(map);
    put_tagged(map, "x", "x", 1);
    put_tagged(map, "y", "y", 1);
    session_map_remove(map, "x");
    expect_tag(map, "x", NULL, 2);
    expect_tag(map, "y", "y", 2);
    expect_size(map, 1);
    session_map_remove(map, "never-seen");
    session_map_remove(map, NULL);
    expect_size(map, 1);
    put_tagged(map, "x", "x2", 3); /* a removed id can come back */
    expect_tag(map, "x", "x2", 4);
    session_map_free(map);
}

static void test_capacity_zero_disables(void **state)
{
    struct session_map *map = session_map_new(0, 60000);
    OpenAiClientContext *ctx = make_ctx("z");

    (void)state;
    assert_non_null(map);
    assert_int_equal(session_map_put(map, "sid", ctx, 1), 0);
    assert_null(session_map_get(map, "sid", 2));
    session_map_remove(map, "sid");
    expect_size(map, 0);
    openai_meta_free(ctx);
    session_map_free(map);
}

static void test_ignored_inputs(void **state)
{
    struct session_map *map = session_map_new(100, 60000);
    OpenAiClientContext *ctx = make_ctx("l");
    char id256[257], id257[258];

    (void)state;
    assert_non_null(map);
    memset(id256, 'k', 256);
    id256[256] = '\0';
    memset(id257, 'k', 257);
    id257[257] = '\0';

    assert_int_equal(session_map_put(map, id256, ctx, 1), 0);
    expect_tag(map, id256, "l", 2); /* 256 bytes is the longest id kept */
    assert_int_equal(session_map_put(map, id257, ctx, 3), 0);
    expect_size(map, 1);
    /* not truncated to its first 256 bytes, which would alias id256 */
    expect_tag(map, id257, NULL, 4);

    assert_int_equal(session_map_put(map, NULL, ctx, 5), 0);
    assert_int_equal(session_map_put(map, "", ctx, 5), 0);
    assert_null(session_map_get(map, NULL, 6));
    assert_null(session_map_get(map, "", 6));
    expect_size(map, 1);

    /* a request without _meta must not erase the context already known for the session */
    assert_int_equal(session_map_put(map, id256, NULL, 7), 0);
    expect_tag(map, id256, "l", 8);
    openai_meta_free(ctx);
    session_map_free(map);
}

/* Many shards: the total stays exactly at capacity and the newest entry survives. */
static void test_sharded_capacity_bound(void **state)
{
    const size_t cap = 1000;
    struct session_map *map = session_map_new(cap, 0);
    OpenAiClientContext *ctx = make_ctx("s");
    char id[64];

    (void)state;
    assert_non_null(map);
    for (int i = 0; i < 20000; i++) {
        snprintf(id, sizeof(id), "session-%d", i);
        assert_int_equal(session_map_put(map, id, ctx, (uint64_t)i), 0);
        if (session_map_size(map) > cap)
            fail_msg("after %d puts: size expected <= %zu, got %zu", i + 1, cap,
                     session_map_size(map));
    }
    expect_size(map, cap); /* every shard received far more than its share */
    openai_meta_free(ctx);
    ctx = session_map_get(map, "session-19999", 20000);
    assert_non_null(ctx);
    openai_meta_free(ctx);
    session_map_free(map);
}

#define CONC_THREADS 4
#define CONC_OPS 50000
#define CONC_KEYS 3000
#define CONC_CAPACITY 700

struct conc_arg {
    struct session_map *map;
    unsigned seed;
    int wrong_ctx;  /* a get answered with another session's context */
    int put_errors; /* put returned non-zero */
    int over_cap;   /* size seen above capacity */
    int hits;       /* gets that found something (so the test exercised hits) */
};

static void *conc_worker(void *p)
{
    struct conc_arg *a = p;
    char id[32], want[48];

    for (int i = 0; i < CONC_OPS; i++) {
        unsigned r = rand_r(&a->seed);
        int key = (int)(r % CONC_KEYS);
        uint64_t now = (uint64_t)i; /* ttl 2000: older entries expire while we run */

        snprintf(id, sizeof(id), "k%d", key);
        switch ((r >> 16) % 8) {
        case 0:
        case 1:
        case 2: {
            OpenAiClientContext ctx = {0};

            ctx.session_id = id; /* the context names its own key, checked on get */
            if (session_map_put(a->map, id, &ctx, now) != 0)
                a->put_errors++;
            break;
        }
        case 3:
            session_map_remove(a->map, id);
            break;
        case 4:
            if (session_map_size(a->map) > CONC_CAPACITY)
                a->over_cap++;
            break;
        default: {
            OpenAiClientContext *got = session_map_get(a->map, id, now);

            if (got) {
                a->hits++;
                snprintf(want, sizeof(want), "%s", id);
                if (got->session_id == NULL || strcmp(got->session_id, want) != 0)
                    a->wrong_ctx++;
                openai_meta_free(got);
            }
            break;
        }
        }
    }
    return NULL;
}

static void test_concurrent_mixed(void **state)
{
    struct session_map *map = session_map_new(CONC_CAPACITY, 2000);
    struct conc_arg args[CONC_THREADS];
    pthread_t th[CONC_THREADS];

    (void)state;
    assert_non_null(map);
    for (int t = 0; t < CONC_THREADS; t++) {
        args[t] = (struct conc_arg){.map = map, .seed = 1234u + (unsigned)t * 7919u};
        assert_int_equal(pthread_create(&th[t], NULL, conc_worker, &args[t]), 0);
    }
    for (int t = 0; t < CONC_THREADS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    for (int t = 0; t < CONC_THREADS; t++) {
        if (args[t].wrong_ctx || args[t].put_errors || args[t].over_cap)
            fail_msg("thread %d: expected 0 wrong contexts/put errors/over-capacity sizes, "
                     "got %d/%d/%d",
                     t, args[t].wrong_ctx, args[t].put_errors, args[t].over_cap);
        if (args[t].hits == 0)
            fail_msg("thread %d: expected some get hits, got 0", t);
    }
    if (session_map_size(map) > CONC_CAPACITY)
        fail_msg("final size: expected <= %d, got %zu", CONC_CAPACITY, session_map_size(map));
    session_map_free(map);
}

/* Shards are chosen by a keyed hash with a random key per map: a client cannot know which
 * ids land together, and two processes (maps) lay the same ids out differently. */
static void test_shards_depend_on_a_random_key(void **state)
{
    (void)state;
    struct session_map *a = session_map_new(1024, 0), *b = session_map_new(1024, 0);
    char id[32];
    size_t differ = 0, used_a = 0;
    bool seen[64] = {false};
    assert_non_null(a);
    assert_non_null(b);
    for (int i = 0; i < 64; i++) {
        snprintf(id, sizeof(id), "session-%d", i);
        size_t sa = session_map_shard_index(a, id);
        assert_int_equal(sa, session_map_shard_index(a, id)); /* stable within a map */
        assert_true(sa < 64);
        if (!seen[sa])
            used_a++;
        seen[sa] = true;
        differ += sa != session_map_shard_index(b, id);
    }
    /* 64 ids over 16 shards: with a fresh random key each, the layouts differ (all 64 equal
     * by chance has probability 16^-64), and the ids spread over several shards */
    assert_true(differ > 0);
    assert_true(used_a > 4);
    session_map_free(a);
    session_map_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_is_deep_copy),
        cmocka_unit_test(test_upstream_beside_context),
        cmocka_unit_test(test_put_replaces),
        cmocka_unit_test(test_lru_eviction_order),
        cmocka_unit_test(test_ttl_expiry),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_capacity_zero_disables),
        cmocka_unit_test(test_ignored_inputs),
        cmocka_unit_test(test_sharded_capacity_bound),
        cmocka_unit_test(test_concurrent_mixed),
        cmocka_unit_test(test_shards_depend_on_a_random_key),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
