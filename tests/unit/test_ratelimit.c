/* test_ratelimit: unit tests for src/ratelimit.c.
 *
 * Time is the test's own millisecond counter, so refill is exact. `take` asserts one
 * decision and says which request of a sequence went the wrong way; the concurrency test
 * counts what several threads were allowed against what the bucket can give.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "mcpeek/ratelimit.h"

#define PER_S 1000u
#define PER_M 60000u

static struct ratelimit_keys subject_keys(const char *subject)
{
    struct ratelimit_keys k = {{NULL}};

    k.value[RATELIMIT_OPENAI_SUBJECT] = subject;
    return k;
}

/* Expects the request to be allowed (want_retry 0) or refused by rules[want_rule] with
 * Retry-After want_retry. */
static void expect(struct ratelimit *rl, const struct ratelimit_rule *rules, size_t n,
                   const struct ratelimit_keys *keys, uint64_t now, size_t want_rule,
                   uint32_t want_retry, const char *what)
{
    uint32_t retry = 12345;
    const struct ratelimit_rule *got = ratelimit_check(rl, rules, n, keys, now, &retry);

    if (want_retry == 0) {
        if (got != NULL)
            fail_msg("%s at %llu ms: expected allowed, got refused by rule %td (retry %u)", what,
                     (unsigned long long)now, got - rules, retry);
        return;
    }
    if (got == NULL)
        fail_msg("%s at %llu ms: expected refused by rule %zu, got allowed", what,
                 (unsigned long long)now, want_rule);
    if (got != &rules[want_rule] || retry != want_retry)
        fail_msg("%s at %llu ms: expected rule %zu retry %u, got rule %td retry %u", what,
                 (unsigned long long)now, want_rule, want_retry, got - rules, retry);
}

static void allow(struct ratelimit *rl, const struct ratelimit_rule *rules, size_t n,
                  const char *subject, uint64_t now, const char *what)
{
    struct ratelimit_keys k = subject_keys(subject);

    expect(rl, rules, n, &k, now, 0, 0, what);
}

static void refuse(struct ratelimit *rl, const struct ratelimit_rule *rules, size_t n,
                   const char *subject, uint64_t now, uint32_t retry, const char *what)
{
    struct ratelimit_keys k = subject_keys(subject);

    expect(rl, rules, n, &k, now, 0, retry, what);
}

/* burst requests pass at once, the next is refused. */
static void test_burst(void **state)
{
    struct ratelimit_rule r = {RATELIMIT_OPENAI_SUBJECT, 2, PER_S, 5};
    struct ratelimit *rl = ratelimit_new(100);
    char what[64];

    (void)state;
    for (int i = 0; i < 5; i++) {
        snprintf(what, sizeof what, "request %d of the burst", i + 1);
        allow(rl, &r, 1, "alice", 1000, what);
    }
    refuse(rl, &r, 1, "alice", 1000, 1, "request past the burst");
    ratelimit_free(rl);
}

/* A bucket refills at `rate` per period, continuously, up to burst and no further. */
static void test_refill(void **state)
{
    struct ratelimit_rule r = {RATELIMIT_OPENAI_SUBJECT, 2, PER_S, 2};
    struct ratelimit *rl = ratelimit_new(100);

    (void)state;
    allow(rl, &r, 1, "alice", 0, "first");
    allow(rl, &r, 1, "alice", 0, "second");
    refuse(rl, &r, 1, "alice", 0, 1, "empty bucket");
    refuse(rl, &r, 1, "alice", 499, 1, "499 ms: half a token less 1 ms");
    allow(rl, &r, 1, "alice", 500, "500 ms: one token back at 2/s");
    refuse(rl, &r, 1, "alice", 500, 1, "and spent");
    /* a long pause fills the bucket to burst, not beyond */
    allow(rl, &r, 1, "alice", 3600 * 1000, "after an hour");
    allow(rl, &r, 1, "alice", 3600 * 1000, "second of the refilled burst");
    refuse(rl, &r, 1, "alice", 3600 * 1000, 1, "burst caps the refill");
    /* a clock read older than the bucket's adds nothing and breaks nothing */
    refuse(rl, &r, 1, "alice", 10, 1, "clock behind");
    allow(rl, &r, 1, "alice", 3600 * 1000 + 500, "clock ahead again");
    ratelimit_free(rl);
}

/* N/m: one token every 60/N seconds. */
static void test_per_minute(void **state)
{
    struct ratelimit_rule r = {RATELIMIT_OPENAI_SUBJECT, 6, PER_M, 1};
    struct ratelimit *rl = ratelimit_new(100);

    (void)state;
    allow(rl, &r, 1, "bob", 0, "first");
    refuse(rl, &r, 1, "bob", 0, 10, "6/m: 10 s until the next");
    refuse(rl, &r, 1, "bob", 9999, 1, "1 ms short");
    allow(rl, &r, 1, "bob", 10000, "10 s later");
    ratelimit_free(rl);
}

/* Retry-After is whole seconds, rounded up, never 0. */
static void test_retry_after_rounding(void **state)
{
    struct ratelimit_rule slow = {RATELIMIT_OPENAI_SUBJECT, 1, PER_M, 1};
    struct ratelimit_rule fast = {RATELIMIT_OPENAI_SUBJECT, 3, PER_S, 1};
    struct ratelimit_rule odd = {RATELIMIT_OPENAI_SUBJECT, 7, PER_M, 1};
    struct ratelimit *rl = ratelimit_new(100);

    (void)state;
    allow(rl, &slow, 1, "a", 0, "slow first");
    refuse(rl, &slow, 1, "a", 0, 60, "1/m right after");
    refuse(rl, &slow, 1, "a", 1, 60, "59.999 s rounds up to 60");
    refuse(rl, &slow, 1, "a", 58999, 2, "1.001 s left is 2 s");
    refuse(rl, &slow, 1, "a", 59000, 1, "1 s left");
    refuse(rl, &slow, 1, "a", 59999, 1, "1 ms left is 1 s");

    allow(rl, &fast, 1, "a", 0, "fast first");
    refuse(rl, &fast, 1, "a", 0, 1, "3/s: 333 ms left is 1 s");

    allow(rl, &odd, 1, "a", 0, "odd first");
    refuse(rl, &odd, 1, "a", 0, 9, "7/m: 8.571 s left is 9 s");
    refuse(rl, &odd, 1, "a", 571, 9, "8.0004 s left is 9 s");
    refuse(rl, &odd, 1, "a", 572, 8, "7.9994 s left is 8 s");
    ratelimit_free(rl);
}

/* Each key value has its own bucket; a request without the scope's key is not limited. */
static void test_keys_independent(void **state)
{
    struct ratelimit_rule r = {RATELIMIT_OPENAI_SUBJECT, 1, PER_M, 1};
    struct ratelimit_keys none = {{NULL}}, empty = subject_keys("");
    struct ratelimit *rl = ratelimit_new(100);
    char long_a[1000], long_b[1000];

    (void)state;
    allow(rl, &r, 1, "alice", 0, "alice");
    refuse(rl, &r, 1, "alice", 0, 60, "alice again");
    allow(rl, &r, 1, "bob", 0, "bob has his own bucket");
    refuse(rl, &r, 1, "bob", 0, 60, "bob again");
    for (int i = 0; i < 3; i++) {
        expect(rl, &r, 1, &none, 0, 0, 0, "no subject at all");
        expect(rl, &r, 1, &empty, 0, 0, 0, "empty subject");
    }
    /* values past RATELIMIT_KEY_MAX that differ only at the end are still two keys */
    memset(long_a, 'x', sizeof long_a - 1);
    long_a[sizeof long_a - 1] = '\0';
    memcpy(long_b, long_a, sizeof long_b);
    long_b[sizeof long_b - 2] = 'y';
    allow(rl, &r, 1, long_a, 0, "long a");
    allow(rl, &r, 1, long_b, 0, "long b differs in its last byte");
    refuse(rl, &r, 1, long_a, 0, 60, "long a again");
    assert_int_equal(ratelimit_size(rl), 4);
    ratelimit_free(rl);
}

/* Every line counts per its own scope; the first refusing line is reported, and a refused
 * request takes no token from the lines that would have let it through. */
static void test_several_lines(void **state)
{
    struct ratelimit_rule rules[] = {
        {RATELIMIT_TOKEN, 100, PER_S, 3},
        {RATELIMIT_OPENAI_SUBJECT, 1, PER_M, 1},
        {RATELIMIT_CLIENT_IP, 1, PER_S, 1},
    };
    struct ratelimit_keys k = {{NULL}};
    struct ratelimit *rl = ratelimit_new(100);

    (void)state;
    k.value[RATELIMIT_TOKEN] = "tok-1";
    k.value[RATELIMIT_OPENAI_SUBJECT] = "alice";
    k.value[RATELIMIT_CLIENT_IP] = "10.0.0.1";
    expect(rl, rules, 3, &k, 0, 0, 0, "first request");
    expect(rl, rules, 3, &k, 0, 1, 60, "subject line refuses (and ip would too)");
    expect(rl, rules, 3, &k, 0, 1, 60, "again");
    /* the token line gave nothing to the refused ones: two of its three remain */
    k.value[RATELIMIT_OPENAI_SUBJECT] = "bob";
    k.value[RATELIMIT_CLIENT_IP] = "10.0.0.2";
    expect(rl, rules, 3, &k, 0, 0, 0, "bob from another ip");
    k.value[RATELIMIT_OPENAI_SUBJECT] = "carol";
    k.value[RATELIMIT_CLIENT_IP] = "10.0.0.3";
    expect(rl, rules, 3, &k, 0, 0, 0, "carol from a third ip");
    k.value[RATELIMIT_OPENAI_SUBJECT] = "dave";
    k.value[RATELIMIT_CLIENT_IP] = "10.0.0.4";
    expect(rl, rules, 3, &k, 0, 0, 1, "the token's burst of 3 is spent");
    /* same subject twice under two lines of the same scope: both count */
    {
        struct ratelimit_rule two[] = {{RATELIMIT_OPENAI_SUBJECT, 10, PER_S, 10},
                                       {RATELIMIT_OPENAI_SUBJECT, 2, PER_M, 2}};
        allow(rl, two, 2, "erin", 0, "erin 1");
        allow(rl, two, 2, "erin", 0, "erin 2");
        struct ratelimit_keys erin = subject_keys("erin");
        expect(rl, two, 2, &erin, 0, 1, 30, "erin 3: the per-minute line");
        /* the fast line's bucket lost only the two allowed tokens */
        allow(rl, &two[0], 1, "erin", 0, "fast line alone 3");
    }
    ratelimit_free(rl);
}

/* At most `capacity` buckets; the least recently used one is dropped (and starts full
 * again when its key comes back). */
static void test_lru_eviction(void **state)
{
    struct ratelimit_rule r = {RATELIMIT_CLIENT_IP, 1, PER_M, 1};
    struct ratelimit *rl = ratelimit_new(16);
    char ip[32], what[64];
    struct ratelimit_keys k = {{NULL}};
    uint32_t retry;

    (void)state;
    for (int i = 0; i < 16; i++) {
        snprintf(ip, sizeof ip, "10.0.0.%d", i);
        k.value[RATELIMIT_CLIENT_IP] = ip;
        snprintf(what, sizeof what, "ip %d", i);
        expect(rl, &r, 1, &k, (uint64_t)i, 0, 0, what);
    }
    assert_int_equal(ratelimit_size(rl), 16);
    /* touch ip 0 (refused, but used), so ip 1 is now the least recently used */
    k.value[RATELIMIT_CLIENT_IP] = "10.0.0.0";
    expect(rl, &r, 1, &k, 20, 0, 60, "ip 0 again");
    k.value[RATELIMIT_CLIENT_IP] = "10.0.0.99";
    expect(rl, &r, 1, &k, 21, 0, 0, "a 17th ip");
    assert_int_equal(ratelimit_size(rl), 16);
    k.value[RATELIMIT_CLIENT_IP] = "10.0.0.0";
    expect(rl, &r, 1, &k, 22, 0, 60, "ip 0 kept its empty bucket");
    k.value[RATELIMIT_CLIENT_IP] = "10.0.0.2";
    expect(rl, &r, 1, &k, 23, 0, 60, "ip 2 kept its empty bucket");
    k.value[RATELIMIT_CLIENT_IP] = "10.0.0.1";
    assert_null(ratelimit_check(rl, &r, 1, &k, 24, &retry)); /* evicted: starts full */
    assert_int_equal(ratelimit_size(rl), 16);

    /* a capacity below one check's worth of lines is raised to it */
    ratelimit_free(rl);
    rl = ratelimit_new(1);
    for (int i = 0; i < RATELIMIT_RULES_MAX; i++) {
        snprintf(ip, sizeof ip, "10.1.0.%d", i);
        k.value[RATELIMIT_CLIENT_IP] = ip;
        assert_null(ratelimit_check(rl, &r, 1, &k, 0, &retry));
    }
    assert_int_equal(ratelimit_size(rl), RATELIMIT_RULES_MAX);
    ratelimit_free(rl);
}

/* A reload keeps the buckets of unchanged lines and drops those of removed or changed
 * lines; a changed line starts with a full bucket. */
static void test_reload_keeps_unchanged(void **state)
{
    struct ratelimit_rule old_rules[] = {
        {RATELIMIT_OPENAI_SUBJECT, 1, PER_M, 1},
        {RATELIMIT_CLIENT_IP, 1, PER_M, 1},
        {RATELIMIT_TOKEN, 1, PER_M, 1},
    };
    /* subject unchanged (a copy: equal by content), ip's burst changed, token removed */
    struct ratelimit_rule new_rules[] = {
        {RATELIMIT_CLIENT_IP, 1, PER_M, 2},
        {RATELIMIT_OPENAI_SUBJECT, 1, PER_M, 1},
    };
    struct ratelimit_keys k = {{NULL}};
    struct ratelimit *rl = ratelimit_new(100);
    uint32_t retry = 0;

    (void)state;
    k.value[RATELIMIT_OPENAI_SUBJECT] = "alice";
    k.value[RATELIMIT_CLIENT_IP] = "10.0.0.1";
    k.value[RATELIMIT_TOKEN] = "tok";
    expect(rl, old_rules, 3, &k, 0, 0, 0, "before reload");
    assert_int_equal(ratelimit_size(rl), 3);

    ratelimit_retain(rl, new_rules, 2);
    assert_int_equal(ratelimit_size(rl), 1); /* only alice's subject bucket stays */
    /* the subject bucket is still empty: refused by the subject line, index 1 now */
    expect(rl, new_rules, 2, &k, 1000, 1, 59, "after reload, subject still spent");
    /* the changed ip line starts full (burst 2) */
    k.value[RATELIMIT_OPENAI_SUBJECT] = "bob";
    expect(rl, new_rules, 2, &k, 1000, 0, 0, "ip 1 of 2");
    k.value[RATELIMIT_OPENAI_SUBJECT] = "carol";
    expect(rl, new_rules, 2, &k, 1000, 0, 0, "ip 2 of 2");
    k.value[RATELIMIT_OPENAI_SUBJECT] = "dave";
    expect(rl, new_rules, 2, &k, 1000, 0, 60, "ip 3 of 2");

    /* no lines at all: everything is dropped, nothing is limited */
    ratelimit_retain(rl, NULL, 0);
    assert_int_equal(ratelimit_size(rl), 0);
    assert_null(ratelimit_check(rl, NULL, 0, &k, 2000, &retry));
    ratelimit_free(rl);
}

static void test_scope_names(void **state)
{
    static const char *const names[] = {"openai_subject", "openai_session", "openai_org",
                                        "client_ip", "token"};
    enum ratelimit_scope s;

    (void)state;
    for (int i = 0; i < RATELIMIT_SCOPE_COUNT; i++) {
        assert_string_equal(ratelimit_scope_name((enum ratelimit_scope)i), names[i]);
        assert_int_equal(ratelimit_scope_parse(names[i], &s), 0);
        assert_int_equal(s, i);
    }
    assert_int_equal(ratelimit_scope_parse("subject", &s), -1);
    assert_int_equal(ratelimit_scope_parse("TOKEN", &s), -1);
}

/* Threads hammering shared keys never get more than the buckets hold. */
struct hammer {
    struct ratelimit *rl;
    const struct ratelimit_rule *rules;
    int allowed;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    struct ratelimit_keys k = {{NULL}};
    char subject[32];
    uint32_t retry;

    for (int i = 0; i < 20000; i++) {
        snprintf(subject, sizeof subject, "s%d", i % 40);
        k.value[RATELIMIT_OPENAI_SUBJECT] = subject;
        k.value[RATELIMIT_CLIENT_IP] = i % 2 ? "10.0.0.1" : "10.0.0.2";
        if (ratelimit_check(h->rl, h->rules, 2, &k, 0, &retry) == NULL)
            h->allowed++;
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct ratelimit_rule rules[] = {{RATELIMIT_OPENAI_SUBJECT, 1, PER_M, 50},
                                     {RATELIMIT_CLIENT_IP, 1, PER_M, 1500}};
    struct hammer h[4];
    pthread_t t[4];
    int total = 0;

    (void)state;
    struct ratelimit *rl = ratelimit_new(64 * 16); /* several shards */
    for (int i = 0; i < 4; i++) {
        h[i] = (struct hammer){rl, rules, 0};
        assert_int_equal(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += h[i].allowed;
    }
    /* 40 subjects x 50 = 2000 by subject, but 2 ips x 1500 = 3000: subject binds, exactly */
    if (total != 2000)
        fail_msg("threads were allowed %d requests, expected exactly 2000", total);
    ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst),
        cmocka_unit_test(test_refill),
        cmocka_unit_test(test_per_minute),
        cmocka_unit_test(test_retry_after_rounding),
        cmocka_unit_test(test_keys_independent),
        cmocka_unit_test(test_several_lines),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_reload_keeps_unchanged),
        cmocka_unit_test(test_scope_names),
        cmocka_unit_test(test_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
