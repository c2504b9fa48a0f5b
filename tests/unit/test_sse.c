/* Tests for src/sse.c: SSE event counting across chunk boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mcpeek/sse.h"

/* Feeds `text` in chunks of `step` bytes and returns the event count. */
static uint64_t count(const char *text, size_t step)
{
    struct sse_counter c;
    memset(&c, 0, sizeof(c));
    size_t len = strlen(text);
    for (size_t off = 0; off < len; off += step)
        sse_counter_feed(&c, text + off, len - off < step ? len - off : step);
    return c.events;
}

static void expect_events(const char *text, uint64_t want)
{
    for (size_t step = 1; step <= strlen(text) + 1; step++) {
        uint64_t got = count(text, step);
        if (got != want)
            fail_msg("%s\nin chunks of %zu: expected %llu events, got %llu", text, step,
                     (unsigned long long)want, (unsigned long long)got);
    }
}

static void test_data_blocks_are_events(void **state)
{
    (void)state;
    expect_events("data: a\n\n", 1);
    expect_events("event: message\nid: 1\ndata: {\"x\":1}\n\ndata: b\n\n", 2);
    expect_events("data: line1\ndata: line2\n\n", 1);
    expect_events("data:\n\n", 1);
}

static void test_crlf_is_a_line_end(void **state)
{
    (void)state;
    expect_events("data: a\r\n\r\ndata: b\r\n\r\n", 2);
}

static void test_comments_and_field_only_blocks_are_not_events(void **state)
{
    (void)state;
    expect_events(": ready\n\n", 0);
    expect_events("id: 7\nretry: 500\n\n", 0);
    expect_events(": ping\n\n: ping\n\ndata: x\n\n", 1);
    expect_events("dat: x\n\n", 0);
    expect_events("xdata: x\n\n", 0);
}

static void test_unterminated_block_is_not_counted_yet(void **state)
{
    (void)state;
    expect_events("data: partial\n", 0);
    expect_events("data: a\n\ndata: b", 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_blocks_are_events),
        cmocka_unit_test(test_crlf_is_a_line_end),
        cmocka_unit_test(test_comments_and_field_only_blocks_are_not_events),
        cmocka_unit_test(test_unterminated_block_is_not_counted_yet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
