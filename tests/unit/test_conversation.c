/* test_conversation: unit tests for src/conversation.c.
 *
 * Time is the test's own millisecond counter; exchanges are built by hand. Every call's
 * ended list is checked for exactly the conversations (key and reason) it must hold, so a
 * conversation ended twice, or not at all, fails the test. The line format of the records is
 * tested in test_accesslog.c.
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

#include "mcpeek/conversation.h"

#define MIN_MS (60u * 1000u)
#define IDLE (30u * MIN_MS)

static OpenAiClientContext chatgpt(const char *session, const char *subject)
{
    OpenAiClientContext c = {.session_id = (char *)session,
                             .subject_id = (char *)subject,
                             .organization_id = "org-1",
                             .locale = "en-US"};
    return c;
}

static struct conversation_exchange exchange(const char *mcp_session,
                                             const OpenAiClientContext *ctx, const char *tool)
{
    struct conversation_exchange ex = {
        .ts = {1795514400, 0},
        .mcp_session_id = mcp_session,
        .openai = ctx,
        .tool = tool,
        .bytes_in = 100,
        .bytes_out = 1000,
    };
    return ex;
}

static size_t list_len(const struct conversation_record *r)
{
    size_t n = 0;

    for (; r; r = r->next)
        n++;
    return n;
}

/* The list holds exactly one record, for `key`, ended for `reason`; returns it. */
static struct conversation_record *expect_one(struct conversation_record *list, const char *key,
                                              enum conversation_end reason, const char *what)
{
    if (list == NULL)
        fail_msg("%s: expected conversation %s ended (%s), got none", what, key,
                 conversation_end_name(reason));
    if (list_len(list) != 1)
        fail_msg("%s: expected 1 ended conversation, got %zu", what, list_len(list));
    if (strcmp(list->key, key) != 0 || list->reason != reason)
        fail_msg("%s: expected %s ended (%s), got %s (%s)", what, key,
                 conversation_end_name(reason), list->key, conversation_end_name(list->reason));
    return list;
}

static void expect_none(struct conversation_record *list, const char *what)
{
    if (list != NULL)
        fail_msg("%s: expected nothing ended, got %s (%s) and %zu more", what, list->key,
                 conversation_end_name(list->reason), list_len(list) - 1);
}

static uint64_t tool_calls(const struct conversation_record *r, const char *tool)
{
    for (size_t i = 0; i < r->n_tools; i++)
        if (strcmp(r->tools[i].name, tool) == 0)
            return r->tools[i].calls;
    return 0;
}

/* ChatGPT: one openai/session across fresh Mcp-Session-Ids is one conversation; it ends
 * idle, found by the sweep, with everything it did added up. */
static void test_idle_by_sweep(void **state)
{
    struct conversation_table *t = conversation_table_new(100);
    OpenAiClientContext a = chatgpt("v1/conv-a", "user-1");
    OpenAiClientContext a2 = chatgpt("v1/conv-a", "user-1");
    struct conversation_exchange ex;
    struct conversation_record *r;
    char sid[32];

    (void)state;
    a2.locale = "fr-FR";
    for (int i = 0; i < 5; i++) {
        snprintf(sid, sizeof sid, "mcp-%d", i);
        ex = exchange(sid, i == 4 ? &a2 : &a, i == 0 ? NULL : "search");
        ex.ts.tv_sec += i * 60;
        ex.error = i == 3;
        expect_none(conversation_track(t, &ex, 1000 + (uint64_t)i * MIN_MS, IDLE), "track");
    }
    assert_int_equal(conversation_count(t), 1);
    expect_none(conversation_sweep(t, 1000 + 4 * MIN_MS + IDLE - 1, IDLE), "1 ms before idle");
    r = expect_one(conversation_sweep(t, 1000 + 4 * MIN_MS + IDLE, IDLE), "v1/conv-a",
                   CONVERSATION_IDLE, "sweep at the idle timeout");
    assert_true(r->keyed_by_openai);
    assert_string_equal(r->openai_session, "v1/conv-a");
    assert_string_equal(r->openai_subject, "user-1");
    assert_string_equal(r->openai_org, "org-1");
    assert_string_equal(r->openai_locale, "fr-FR"); /* the latest value seen */
    assert_int_equal(r->requests, 5);
    assert_int_equal(r->errors, 1);
    assert_int_equal(r->mcp_sessions, 5);
    assert_int_equal(r->bytes_in, 500);
    assert_int_equal(r->bytes_out, 5000);
    assert_int_equal(r->n_tools, 1);
    assert_int_equal(tool_calls(r, "search"), 4);
    assert_int_equal(r->other_tool_calls, 0);
    assert_int_equal(r->first_ts.tv_sec, 1795514400);
    assert_int_equal(r->last_ts.tv_sec, 1795514400 + 4 * 60);
    assert_int_equal(r->duration_ms, 4 * MIN_MS);
    conversation_records_free(r);
    assert_int_equal(conversation_count(t), 0);
    expect_none(conversation_sweep(t, 10 * IDLE, IDLE), "sweep of an empty table");
    conversation_table_free(t);
}

/* A request arriving after the idle timeout, before any sweep, ends the old conversation
 * and opens a new one under the same key. */
static void test_idle_on_next_request(void **state)
{
    struct conversation_table *t = conversation_table_new(100);
    OpenAiClientContext a = chatgpt("v1/conv-a", "user-1");
    struct conversation_exchange ex = exchange("mcp-1", &a, "x");
    struct conversation_record *r;

    (void)state;
    expect_none(conversation_track(t, &ex, 0, IDLE), "first");
    expect_none(conversation_track(t, &ex, IDLE - 1, IDLE), "just in time");
    r = expect_one(conversation_track(t, &ex, 2 * IDLE - 1, IDLE), "v1/conv-a", CONVERSATION_IDLE,
                   "after the timeout");
    assert_int_equal(r->requests, 2);
    conversation_records_free(r);
    r = expect_one(conversation_end_all(t), "v1/conv-a", CONVERSATION_SHUTDOWN, "shutdown");
    assert_int_equal(r->requests, 1); /* the new one holds only the late request */
    assert_int_equal(r->duration_ms, 0);
    conversation_records_free(r);
    conversation_table_free(t);
}

/* Without openai/session the Mcp-Session-Id is the key, and a DELETE ends it; a DELETE does
 * not end a ChatGPT conversation, nor open one for a session no longer tracked. */
static void test_delete(void **state)
{
    struct conversation_table *t = conversation_table_new(100);
    OpenAiClientContext a = chatgpt("v1/conv-a", "user-1");
    OpenAiClientContext no_session = {.subject_id = "user-2"};
    struct conversation_exchange ex;
    struct conversation_record *r;

    (void)state;
    ex = exchange("mcp-plain", &no_session, "t1");
    expect_none(conversation_track(t, &ex, 0, IDLE), "plain 1");
    ex = exchange("mcp-plain", NULL, NULL); /* a GET stream */
    expect_none(conversation_track(t, &ex, 10, IDLE), "plain GET");
    ex = exchange("mcp-chatgpt", &a, "t1");
    expect_none(conversation_track(t, &ex, 20, IDLE), "chatgpt");
    assert_int_equal(conversation_count(t), 2);

    ex = exchange("mcp-chatgpt", &a, NULL);
    ex.ends_session = true;
    expect_none(conversation_track(t, &ex, 30, IDLE), "DELETE in a ChatGPT conversation");

    ex = exchange("mcp-plain", NULL, NULL);
    ex.ends_session = true;
    r = expect_one(conversation_track(t, &ex, 40, IDLE), "mcp-plain", CONVERSATION_DELETE,
                   "DELETE of the plain session");
    assert_false(r->keyed_by_openai);
    assert_null(r->openai_session);
    assert_string_equal(r->openai_subject, "user-2");
    assert_int_equal(r->requests, 3); /* the DELETE itself counts */
    assert_int_equal(r->mcp_sessions, 1);
    assert_int_equal(r->duration_ms, 40);
    conversation_records_free(r);

    expect_none(conversation_track(t, &ex, 50, IDLE), "DELETE again");
    assert_int_equal(conversation_count(t), 1);
    /* no key at all: no conversation */
    ex = exchange(NULL, NULL, "t1");
    expect_none(conversation_track(t, &ex, 60, IDLE), "no key");
    assert_int_equal(conversation_count(t), 1);
    /* an Mcp-Session-Id equal to an openai/session is another conversation */
    ex = exchange("v1/conv-a", NULL, NULL);
    expect_none(conversation_track(t, &ex, 70, IDLE), "same text, other kind of key");
    assert_int_equal(conversation_count(t), 2);
    r = conversation_end_all(t);
    assert_int_equal(list_len(r), 2);
    conversation_records_free(r);
    conversation_table_free(t);
}

/* Shutdown ends every open conversation, once. */
static void test_shutdown(void **state)
{
    struct conversation_table *t = conversation_table_new(1000); /* several shards */
    struct conversation_exchange ex;
    struct conversation_record *r;
    unsigned char seen[300] = {0};
    char sid[32];

    (void)state;
    for (int i = 0; i < 300; i++) {
        snprintf(sid, sizeof sid, "s%d", i);
        ex = exchange(sid, NULL, NULL);
        expect_none(conversation_track(t, &ex, (uint64_t)i, IDLE), "track");
    }
    assert_int_equal(conversation_count(t), 300);
    r = conversation_end_all(t);
    assert_int_equal(list_len(r), 300);
    for (struct conversation_record *p = r; p; p = p->next) {
        int i = atoi(p->key + 1);
        assert_int_equal(p->reason, CONVERSATION_SHUTDOWN);
        if (seen[i]++)
            fail_msg("conversation %s ended twice", p->key);
    }
    conversation_records_free(r);
    assert_int_equal(conversation_count(t), 0);
    expect_none(conversation_end_all(t), "second shutdown");
    conversation_table_free(t);
}

/* A full table ends its least recently active conversation for a new one. */
static void test_evicted(void **state)
{
    struct conversation_table *t = conversation_table_new(3);
    struct conversation_exchange a = exchange("a", NULL, NULL), b = exchange("b", NULL, NULL);
    struct conversation_exchange c = exchange("c", NULL, NULL), d = exchange("d", NULL, NULL);
    struct conversation_record *r;

    (void)state;
    expect_none(conversation_track(t, &a, 0, IDLE), "a");
    expect_none(conversation_track(t, &b, 1, IDLE), "b");
    expect_none(conversation_track(t, &c, 2, IDLE), "c");
    expect_none(conversation_track(t, &a, 3, IDLE), "a again: b is now the oldest");
    r = expect_one(conversation_track(t, &d, 4, IDLE), "b", CONVERSATION_EVICTED, "d");
    assert_int_equal(r->requests, 1);
    conversation_records_free(r);
    assert_int_equal(conversation_count(t), 3);
    r = expect_one(conversation_track(t, &b, 5, IDLE), "c", CONVERSATION_EVICTED, "b back");
    conversation_records_free(r);

    /* an idle conversation found by its next request and a full table: two records */
    r = conversation_track(t, &a, 3 + IDLE, IDLE);
    assert_int_equal(list_len(r), 1); /* a was idle: it ends, and its slot is reused */
    assert_string_equal(r->key, "a");
    assert_int_equal(r->reason, CONVERSATION_IDLE);
    conversation_records_free(r);
    assert_int_equal(conversation_count(t), 3);
    conversation_table_free(t); /* open ones are freed without records */
}

/* At most 32 tool names; later ones, and a tool named "other", count under other. */
static void test_tool_cap(void **state)
{
    struct conversation_table *t = conversation_table_new(10);
    OpenAiClientContext a = chatgpt("v1/conv-a", "user-1");
    struct conversation_exchange ex;
    struct conversation_record *r;
    char tool[32];

    (void)state;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 40; i++) {
            snprintf(tool, sizeof tool, "tool-%02d", i);
            ex = exchange("m", &a, tool);
            expect_none(conversation_track(t, &ex, 0, IDLE), "tool call");
        }
    }
    ex = exchange("m", &a, "other");
    expect_none(conversation_track(t, &ex, 0, IDLE), "a tool named other");
    ex = exchange("m", &a, NULL);
    expect_none(conversation_track(t, &ex, 0, IDLE), "not a tool call");
    r = expect_one(conversation_end_all(t), "v1/conv-a", CONVERSATION_SHUTDOWN, "end");
    assert_int_equal(r->n_tools, CONVERSATION_TOOLS_MAX);
    for (int i = 0; i < 32; i++) {
        assert_string_equal(r->tools[i].name, (snprintf(tool, sizeof tool, "tool-%02d", i), tool));
        assert_int_equal(r->tools[i].calls, 2);
    }
    assert_int_equal(tool_calls(r, "tool-32"), 0);
    assert_int_equal(r->other_tool_calls, 8 * 2 + 1);
    assert_int_equal(r->requests, 82);
    conversation_records_free(r);
    conversation_table_free(t);
}

/* Distinct Mcp-Session-Ids: repeats are not counted, within the remembered window. */
static void test_distinct_sessions(void **state)
{
    struct conversation_table *t = conversation_table_new(10);
    OpenAiClientContext a = chatgpt("v1/conv-a", "user-1");
    static const char *const ids[] = {"s1", "s2", "s1", "s3", "s2", "s1", NULL, "", "s3"};
    struct conversation_exchange ex;
    struct conversation_record *r;
    char sid[32];

    (void)state;
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        ex = exchange(ids[i], &a, NULL);
        expect_none(conversation_track(t, &ex, 0, IDLE), "track");
    }
    r = expect_one(conversation_end_all(t), "v1/conv-a", CONVERSATION_SHUTDOWN, "small");
    assert_int_equal(r->mcp_sessions, 3);
    assert_int_equal(r->requests, 9);
    conversation_records_free(r);

    /* 16 remembered: s0 again after 16 others counts again (documented overstatement),
     * after 15 others it does not */
    for (int i = 0; i <= 15; i++) {
        snprintf(sid, sizeof sid, "s%d", i);
        ex = exchange(sid, &a, NULL);
        expect_none(conversation_track(t, &ex, 0, IDLE), "track");
    }
    ex = exchange("s0", &a, NULL);
    expect_none(conversation_track(t, &ex, 0, IDLE), "s0 within the window");
    ex = exchange("s16", &a, NULL); /* pushes s0 out */
    expect_none(conversation_track(t, &ex, 0, IDLE), "s16");
    ex = exchange("s0", &a, NULL);
    expect_none(conversation_track(t, &ex, 0, IDLE), "s0 after the window");
    r = expect_one(conversation_end_all(t), "v1/conv-a", CONVERSATION_SHUTDOWN, "window");
    assert_int_equal(r->mcp_sessions, 18);
    conversation_records_free(r);
    conversation_table_free(t);
}

/* Workers track concurrently while a sweeper runs: every request is in exactly one record. */
struct tracker {
    struct conversation_table *t;
    int id;
    uint64_t requests_ended;
};

static void *tracker_run(void *arg)
{
    struct tracker *k = arg;
    char sid[32];

    for (int i = 0; i < 5000; i++) {
        struct conversation_exchange ex;
        struct conversation_record *r;

        snprintf(sid, sizeof sid, "w%d-%d", k->id, i % 50);
        ex = exchange(sid, NULL, "t");
        /* time moves per worker; idle 100 ms: conversations end while others are tracked */
        r = conversation_track(k->t, &ex, (uint64_t)i, 100);
        for (struct conversation_record *p = r; p; p = p->next)
            k->requests_ended += p->requests;
        conversation_records_free(r);
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct conversation_table *t = conversation_table_new(128);
    struct tracker k[4];
    pthread_t th[4];
    uint64_t total = 0;
    struct conversation_record *r;

    (void)state;
    for (int i = 0; i < 4; i++) {
        k[i] = (struct tracker){t, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, tracker_run, &k[i]), 0);
    }
    for (int s = 0; s < 50; s++) {
        r = conversation_sweep(t, (uint64_t)s * 100, 100);
        for (struct conversation_record *p = r; p; p = p->next)
            total += p->requests;
        conversation_records_free(r);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += k[i].requests_ended;
    }
    r = conversation_end_all(t);
    for (struct conversation_record *p = r; p; p = p->next)
        total += p->requests;
    conversation_records_free(r);
    if (total != 4 * 5000)
        fail_msg("expected every one of 20000 requests in exactly one record, got %llu",
                 (unsigned long long)total);
    conversation_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_by_sweep),
        cmocka_unit_test(test_idle_on_next_request),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_shutdown),
        cmocka_unit_test(test_evicted),
        cmocka_unit_test(test_tool_cap),
        cmocka_unit_test(test_distinct_sessions),
        cmocka_unit_test(test_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
