/* Tests for src/sse.c: SSE event counting and event reading across chunk boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mcpeek/sse.h"
#include "mcpeek/strbuf.h"

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

/* ---- sse_reader --------------------------------------------------------------------- */

/* What a reader dispatched: each event's data followed by '|', so "a|b\nc|" is two events. */
struct seen {
    struct strbuf out;
};

static void on_event(void *arg, const char *data, size_t len)
{
    struct seen *s = arg;
    if (data[len] != '\0')
        fail_msg("event data is not NUL-terminated");
    strbuf_append(&s->out, data, len);
    strbuf_putc(&s->out, '|');
}

/* Feeds `text` split into the pieces [0,a), [a,b), [b,len) and checks what came out. */
static void read_split(const char *text, size_t len, size_t a, size_t b, size_t max_data,
                       const char *want, uint64_t want_events, uint64_t want_oversize)
{
    struct seen s;
    struct sse_reader r;
    strbuf_init(&s.out);
    sse_reader_init(&r, max_data, on_event, &s);
    sse_reader_feed(&r, text, a);
    sse_reader_feed(&r, text + a, b - a);
    sse_reader_feed(&r, text + b, len - b);
    const char *got = s.out.data ? s.out.data : "";
    if (strcmp(got, want) != 0 || r.events != want_events || r.oversize != want_oversize)
        fail_msg("input %s\nsplit at %zu and %zu: expected \"%s\" (%llu events, %llu oversize), "
                 "got \"%s\" (%llu events, %llu oversize)",
                 text, a, b, want, (unsigned long long)want_events,
                 (unsigned long long)want_oversize, got, (unsigned long long)r.events,
                 (unsigned long long)r.oversize);
    sse_reader_free(&r);
    strbuf_free(&s.out);
}

/* Every way to cut the stream into three pieces, and byte by byte, gives the same events. */
static void expect_read_cap(const char *text, size_t max_data, const char *want,
                            uint64_t want_events, uint64_t want_oversize)
{
    size_t len = strlen(text);
    for (size_t a = 0; a <= len; a++)
        for (size_t b = a; b <= len; b++)
            read_split(text, len, a, b, max_data, want, want_events, want_oversize);

    struct seen s;
    struct sse_reader r;
    strbuf_init(&s.out);
    sse_reader_init(&r, max_data, on_event, &s);
    for (size_t i = 0; i < len; i++)
        sse_reader_feed(&r, text + i, 1);
    const char *got = s.out.data ? s.out.data : "";
    if (strcmp(got, want) != 0)
        fail_msg("input %s\nbyte by byte: expected \"%s\", got \"%s\"", text, want, got);
    sse_reader_free(&r);
    strbuf_free(&s.out);
}

static void expect_read(const char *text, const char *want, uint64_t want_events)
{
    expect_read_cap(text, 1024, want, want_events, 0);
}

static void test_reader_yields_data(void **state)
{
    (void)state;
    expect_read("data: {\"id\":1}\n\n", "{\"id\":1}|", 1);
    expect_read("event: message\nid: 7\ndata: a\n\ndata: b\n\n", "a|b|", 2);
    expect_read("data:no-space\n\n", "no-space|", 1);
    expect_read("data:  two spaces\n\n", " two spaces|", 1); /* only one space is dropped */
    expect_read("data: a:b: c\n\n", "a:b: c|", 1);
}

static void test_reader_joins_data_lines(void **state)
{
    (void)state;
    expect_read("data: {\"a\":\ndata: 1}\n\n", "{\"a\":\n1}|", 1);
    expect_read("data: x\nid: 1\ndata: y\n\n", "x\ny|", 1);
    expect_read("data\n\n", "|", 1);  /* a field without colon: empty value, still an event */
    expect_read("data:\n\n", "|", 1); /* an empty value is an event with empty data */
    expect_read("data\ndata\n\n", "\n|", 1);
    expect_read("data:\ndata: z\n\n", "\nz|", 1);
}

static void test_reader_line_ends(void **state)
{
    (void)state;
    expect_read("data: a\r\n\r\ndata: b\r\n\r\n", "a|b|", 2);
    expect_read("data: a\r\rdata: b\r\r", "a|b|", 2);
    expect_read("data: a\r\ndata: b\n\r\n", "a\nb|", 1);
    expect_read("data: a\r\n\ndata: b\r\r\n", "a|b|", 2); /* CR, then a lone LF is a blank line */
}

static void test_reader_skips_comments_and_other_fields(void **state)
{
    (void)state;
    expect_read(": ping\n\n", "", 0);
    expect_read("id: 7\nretry: 500\nevent: x\n\n", "", 0);
    expect_read(":data: not data\n\n", "", 0);
    expect_read("dat: x\n\ndatas: x\n\nxdata: x\n\nDATA: x\n\n", "", 0);
    expect_read(": ping\n\n: ping\n\ndata: x\n: inside\n\n", "x|", 1);
}

static void test_reader_byte_order_mark(void **state)
{
    (void)state;
    expect_read("\xEF\xBB\xBF"
                "data: a\n\n",
                "a|", 1);
    /* only the first bytes of a stream can be a BOM; a partial one is content */
    expect_read("\xEF\xBB"
                "data: a\n\ndata: b\n\n",
                "b|", 1);
    expect_read("data: \xEF\xBB\xBF\n\n", "\xEF\xBB\xBF|", 1);
}

static void test_reader_drops_unterminated_event(void **state)
{
    (void)state;
    expect_read("data: partial\n", "", 0);
    expect_read("data: a\n\ndata: b", "a|", 1);
}

static void test_reader_drops_oversize_events(void **state)
{
    (void)state;
    /* 8 bytes of data fit a cap of 8; 9 do not, and the next event is read again */
    expect_read_cap("data: 12345678\n\n", 8, "12345678|", 1, 0);
    expect_read_cap("data: 123456789\n\ndata: ok\n\n", 8, "ok|", 2, 1);
    /* the joining newline counts: "1234\n567" is 8, "1234\n5678" is 9 */
    expect_read_cap("data: 1234\ndata: 567\n\n", 8, "1234\n567|", 1, 0);
    expect_read_cap("data: 1234\ndata: 5678\n\n", 8, "", 1, 1);
    /* long comment and id lines cost nothing, whatever their length */
    expect_read_cap(": 0123456789012345678901234567890123456789\n"
                    "id: 0123456789012345678901234567890123456789\ndata: x\n\n",
                    8, "x|", 1, 0);
}

/* The buffer never grows past the cap, however long the event. */
static void test_reader_memory_is_bounded(void **state)
{
    (void)state;
    struct sse_reader r;
    char chunk[4096];
    memset(chunk, 'x', sizeof(chunk));
    sse_reader_init(&r, 10000, NULL, NULL);
    sse_reader_feed(&r, "data: ", 6);
    for (int i = 0; i < 1000; i++)
        sse_reader_feed(&r, chunk, sizeof(chunk));
    assert_true(r.data.cap <= 16384);
    sse_reader_feed(&r, "\n\n", 2);
    assert_int_equal(r.events, 1);
    assert_int_equal(r.oversize, 1);
    sse_reader_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_blocks_are_events),
        cmocka_unit_test(test_crlf_is_a_line_end),
        cmocka_unit_test(test_comments_and_field_only_blocks_are_not_events),
        cmocka_unit_test(test_unterminated_block_is_not_counted_yet),
        cmocka_unit_test(test_reader_yields_data),
        cmocka_unit_test(test_reader_joins_data_lines),
        cmocka_unit_test(test_reader_line_ends),
        cmocka_unit_test(test_reader_skips_comments_and_other_fields),
        cmocka_unit_test(test_reader_byte_order_mark),
        cmocka_unit_test(test_reader_drops_unterminated_event),
        cmocka_unit_test(test_reader_drops_oversize_events),
        cmocka_unit_test(test_reader_memory_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
