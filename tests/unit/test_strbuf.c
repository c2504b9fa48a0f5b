/* test_strbuf: unit tests for src/strbuf.c.
 *
 * Every output of strbuf_json_string() is also parsed back with jansson, so a test fails
 * both when the bytes differ from the expected ones and when the result is not valid JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "mcpeek/strbuf.h"

#define FFFD "\xef\xbf\xbd"

/* Parses `text` as one JSON string; fails the test with jansson's message otherwise. */
static json_t *parse_json_string(const char *text, size_t len)
{
    json_error_t err;
    json_t *v = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);

    if (v == NULL)
        fail_msg("output is not JSON: %s (at %d) in <%.*s>", err.text, err.position, (int)len,
                 text);
    if (!json_is_string(v))
        fail_msg("expected a JSON string, got type %d for <%.*s>", (int)json_typeof(v), (int)len,
                 text);
    return v;
}

/* Writes s[0..len) capped at max and checks the exact output bytes and that it parses. */
static void check_json_case(const char *label, const char *s, size_t len, size_t max,
                            const char *expected)
{
    struct strbuf sb;
    json_t *v;

    strbuf_init(&sb);
    strbuf_json_string(&sb, s, len, max);
    assert_false(sb.oom);
    if (sb.len != strlen(expected) || memcmp(sb.data, expected, sb.len) != 0)
        fail_msg("%s: expected <%s> (%zu bytes), got <%.*s> (%zu bytes)", label, expected,
                 strlen(expected), (int)sb.len, sb.data, sb.len);
    v = parse_json_string(sb.data, sb.len);
    json_decref(v);
    strbuf_free(&sb);
}

#define check_json(s, len, max, expected) check_json_case(#s, s, len, max, expected)

static void test_control_chars_escaped(void **state)
{
    char expected[16];
    unsigned c;

    (void)state;
    for (c = 0; c <= 0x7f; c++) {
        char in = (char)c;
        struct strbuf sb;
        json_t *v;

        if (c >= 0x20 && c != 0x7f)
            continue;
        switch (c) {
        case '\b':
            strcpy(expected, "\"\\b\"");
            break;
        case '\t':
            strcpy(expected, "\"\\t\"");
            break;
        case '\n':
            strcpy(expected, "\"\\n\"");
            break;
        case '\f':
            strcpy(expected, "\"\\f\"");
            break;
        case '\r':
            strcpy(expected, "\"\\r\"");
            break;
        default:
            snprintf(expected, sizeof(expected), "\"\\u%04x\"", c);
        }
        check_json(&in, 1, 100, expected);
        /* and the escape decodes back to the same byte */
        strbuf_init(&sb);
        strbuf_json_string(&sb, &in, 1, 100);
        v = parse_json_string(sb.data, sb.len);
        if (json_string_length(v) != 1 || (unsigned char)json_string_value(v)[0] != c)
            fail_msg("char 0x%02x: expected it back after decoding, got %zu bytes", c,
                     json_string_length(v));
        json_decref(v);
        strbuf_free(&sb);
    }
}

static void test_quotes_and_backslash(void **state)
{
    (void)state;
    check_json("a\"b\\c", 5, 100, "\"a\\\"b\\\\c\"");
    check_json("\"", 1, 100, "\"\\\"\"");
    check_json("\\", 1, 100, "\"\\\\\"");
    check_json("/", 1, 100, "\"/\"");
    check_json("", 0, 100, "\"\"");
    check_json(NULL, 0, 100, "\"\"");
    check_json("plain ascii ~!", 14, 100, "\"plain ascii ~!\"");
}

static void test_valid_multibyte_kept(void **state)
{
    (void)state;
    check_json("V\xc5\xa9ng T\xc3\xa0u", 10, 100, "\"V\xc5\xa9ng T\xc3\xa0u\""); /* Vũng Tàu */
    check_json("\xf0\x9f\x98\x80", 4, 100, "\"\xf0\x9f\x98\x80\"");              /* U+1F600 */
    check_json("\xc2\x80", 2, 100, "\"\xc2\x80\"");                              /* U+0080 */
    check_json("\xed\x9f\xbf", 3, 100, "\"\xed\x9f\xbf\"");         /* U+D7FF, below surrogates */
    check_json("\xee\x80\x80", 3, 100, "\"\xee\x80\x80\"");         /* U+E000, above surrogates */
    check_json("\xef\xbf\xbd", 3, 100, "\"\xef\xbf\xbd\"");         /* U+FFFD itself */
    check_json("\xf4\x8f\xbf\xbf", 4, 100, "\"\xf4\x8f\xbf\xbf\""); /* U+10FFFF, the last */
    check_json("\xe2\x80\xa8", 3, 100, "\"\xe2\x80\xa8\"");         /* U+2028 is valid JSON */
}

struct invalid_case {
    const char *name;
    const char *in;
    size_t len;
    const char *expected;
};

static void test_invalid_utf8_replaced(void **state)
{
    static const struct invalid_case cases[] = {
        {"stray continuation", "a\x80z", 3, "\"a" FFFD "z\""},
        {"two-byte overlong C0", "\xc0\x80", 2, "\"" FFFD FFFD "\""},
        {"two-byte overlong C1", "\xc1\xbf", 2, "\"" FFFD FFFD "\""},
        {"three-byte overlong", "\xe0\x80\x80", 3, "\"" FFFD FFFD FFFD "\""},
        {"three-byte overlong E0 9F", "\xe0\x9f\xbf", 3, "\"" FFFD FFFD FFFD "\""},
        {"four-byte overlong", "\xf0\x80\x80\x80", 4, "\"" FFFD FFFD FFFD FFFD "\""},
        {"four-byte overlong F0 8F", "\xf0\x8f\xbf\xbf", 4, "\"" FFFD FFFD FFFD FFFD "\""},
        {"surrogate D800", "\xed\xa0\x80", 3, "\"" FFFD FFFD FFFD "\""},
        {"surrogate DFFF", "\xed\xbf\xbf", 3, "\"" FFFD FFFD FFFD "\""},
        {"above U+10FFFF", "\xf4\x90\x80\x80", 4, "\"" FFFD FFFD FFFD FFFD "\""},
        {"lead F5", "\xf5\x80\x80\x80", 4, "\"" FFFD FFFD FFFD FFFD "\""},
        {"byte FF", "x\xff", 2, "\"x" FFFD "\""},
        {"byte FE", "\xfe", 1, "\"" FFFD "\""},
        {"truncated at end", "ab\xe2\x82", 4, "\"ab" FFFD FFFD "\""},
        {"truncated 4-byte at end", "\xf0\x9f\x98", 3, "\"" FFFD FFFD FFFD "\""},
        /* the bytes after `len` would complete the sequence; they must not be read */
        {"truncated by len", "\xe2\x82\xac", 2, "\"" FFFD FFFD "\""},
        {"truncated 4-byte by len", "\xf0\x9f\x98\x80", 3, "\"" FFFD FFFD FFFD "\""},
        {"truncated in middle", "a\xe2\x82z", 4, "\"a" FFFD FFFD "z\""},
        {"lead then ascii", "\xc3(", 2, "\"" FFFD "(\""},
        {"valid after invalid", "\xff\xc3\xa9", 3, "\"" FFFD "\xc3\xa9\""},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_json_case(cases[i].name, cases[i].in, cases[i].len, 100, cases[i].expected);
    }
}

static void test_cap_on_boundary(void **state)
{
    (void)state;
    check_json("abcdef", 6, 3, "\"abc...\"");
    check_json("abcdef", 6, 6, "\"abcdef\""); /* exactly at the cap: not cut */
    check_json("abcdef", 6, 0, "\"...\"");
    check_json("", 0, 0, "\"\"");
    /* "Vũng Tàu": cutting right after the 3-byte ũ keeps it */
    check_json("V\xc5\xa9ng T\xc3\xa0u", 10, 3, "\"V\xc5\xa9...\"");
    /* the escape expands the output but the cap counts input bytes */
    check_json("\n\n\nabc", 6, 3, "\"\\n\\n\\n...\"");
}

static void test_cap_mid_sequence_backs_off(void **state)
{
    (void)state;
    check_json("a\xc3\xa9", 3, 2, "\"a...\"");                          /* inside é */
    check_json("V\xc5\xa9ng", 5, 2, "\"V...\"");                        /* inside ũ (2 bytes) */
    check_json("\xf0\x9f\x98\x80!", 5, 3, "\"...\"");                   /* inside the emoji */
    check_json("\xf0\x9f\x98\x80!", 5, 1, "\"...\"");                   /* after the lead byte */
    check_json("x\xf0\x9f\x98\x80!", 6, 5, "\"x\xf0\x9f\x98\x80...\""); /* just after it */
}

static void test_one_mib_capped(void **state)
{
    const size_t big = 1024 * 1024, cap = 4096;
    char *in = malloc(big);
    struct strbuf sb;
    json_t *v;
    size_t i;

    (void)state;
    assert_non_null(in);
    for (i = 0; i < big; i++)
        in[i] = (char)('a' + (char)(i % 26));
    /* put a 2-byte character across the cap so the cut has to back off one byte */
    in[cap - 1] = '\xc3';
    in[cap] = '\xa9';
    strbuf_init(&sb);
    strbuf_json_string(&sb, in, big, cap);
    assert_false(sb.oom);
    if (sb.len != (cap - 1) + 5)
        fail_msg("expected %zu output bytes, got %zu", (cap - 1) + 5, sb.len);
    assert_memory_equal(sb.data + 1, in, cap - 1);
    assert_string_equal(sb.data + sb.len - 4, "...\"");
    v = parse_json_string(sb.data, sb.len);
    assert_int_equal(json_string_length(v), cap - 1 + 3);
    json_decref(v);

    /* uncapped, the whole MiB goes through */
    strbuf_reset(&sb);
    strbuf_json_string(&sb, in, big, SIZE_MAX);
    assert_int_equal(sb.len, big + 2);
    v = parse_json_string(sb.data, sb.len);
    json_decref(v);
    strbuf_free(&sb);
    free(in);
}

/* Random bytes, random caps: the output must parse and never hold a raw control char. */
static void test_random_bytes_always_valid_json(void **state)
{
    unsigned seed = 12345;
    struct strbuf sb;
    char in[64];
    int round;

    (void)state;
    strbuf_init(&sb);
    for (round = 0; round < 20000; round++) {
        size_t len, max, i;
        json_t *v;

        seed = seed * 1103515245u + 12345u;
        len = (seed >> 16) % sizeof(in);
        for (i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            /* bias toward the interesting bytes: controls, quotes, UTF-8 leads */
            in[i] = (char)((seed >> 8) & 1 ? (seed >> 16) & 0xff : 0xc0 + ((seed >> 16) & 0x3f));
        }
        seed = seed * 1103515245u + 12345u;
        max = (seed >> 16) % 70;
        strbuf_reset(&sb);
        strbuf_json_string(&sb, in, len, max);
        v = parse_json_string(sb.data, sb.len);
        json_decref(v);
        for (i = 0; i < sb.len; i++)
            if ((unsigned char)sb.data[i] < 0x20 || sb.data[i] == 0x7f)
                fail_msg("round %d: raw byte 0x%02x at %zu", round, (unsigned char)sb.data[i], i);
    }
    strbuf_free(&sb);
}

static void test_growth_from_empty(void **state)
{
    struct strbuf sb;
    size_t i, prev_cap = 0, grows = 0;

    (void)state;
    strbuf_init(&sb);
    assert_null(sb.data);
    assert_int_equal(sb.len, 0);
    for (i = 0; i < 10000; i++) {
        strbuf_putc(&sb, (char)('0' + (char)(i % 10)));
        if (sb.cap != prev_cap) {
            if (prev_cap != 0 && sb.cap != prev_cap * 2)
                fail_msg("expected capacity to double from %zu, got %zu", prev_cap, sb.cap);
            prev_cap = sb.cap;
            grows++;
        }
    }
    assert_int_equal(sb.len, 10000);
    assert_int_equal(strlen(sb.data), 10000); /* NUL terminated */
    for (i = 0; i < 10000; i++)
        if (sb.data[i] != (char)('0' + (char)(i % 10)))
            fail_msg("byte %zu: expected '%c', got '%c'", i, '0' + (int)(i % 10), sb.data[i]);
    if (grows > 10)
        fail_msg("expected at most 10 reallocations for 10000 bytes, got %zu", grows);
    strbuf_free(&sb);
    assert_null(sb.data);
    assert_int_equal(sb.cap, 0);
}

static void test_reset_keeps_capacity(void **state)
{
    struct strbuf sb;
    char *data;
    size_t cap;
    int i;

    (void)state;
    strbuf_init(&sb);
    for (i = 0; i < 100; i++)
        strbuf_puts(&sb, "0123456789");
    data = sb.data;
    cap = sb.cap;
    strbuf_reset(&sb);
    assert_int_equal(sb.len, 0);
    assert_int_equal(sb.cap, cap);
    assert_ptr_equal(sb.data, data);
    assert_string_equal(sb.data, "");
    strbuf_puts(&sb, "again");
    assert_ptr_equal(sb.data, data);
    assert_string_equal(sb.data, "again");
    strbuf_free(&sb);
}

static void test_printf_and_append(void **state)
{
    struct strbuf sb;
    char expect[256];

    (void)state;
    strbuf_init(&sb);
    strbuf_puts(&sb, "a");
    strbuf_append(&sb, "bc", 2);
    strbuf_append(&sb, "ignored", 0);
    strbuf_putc(&sb, 'd');
    strbuf_printf(&sb, "[%d|%s]", 42, "x");
    assert_string_equal(sb.data, "abcd[42|x]");
    /* longer than the first vsnprintf attempt can hold: takes the grow-and-retry path */
    strbuf_printf(&sb, "%0200d", 7);
    snprintf(expect, sizeof(expect), "abcd[42|x]%0200d", 7);
    assert_string_equal(sb.data, expect);
    assert_int_equal(sb.len, strlen(expect));
    strbuf_free(&sb);
}

static void test_overflow_sets_oom_and_drops(void **state)
{
    struct strbuf sb;

    (void)state;
    strbuf_init(&sb);
    strbuf_puts(&sb, "ok");
    strbuf_append(&sb, "x", SIZE_MAX); /* cannot be satisfied: size overflow */
    assert_true(sb.oom);
    strbuf_puts(&sb, "more");
    strbuf_json_string(&sb, "s", 1, 10);
    strbuf_printf(&sb, "%d", 1);
    assert_int_equal(sb.len, 2);
    assert_string_equal(sb.data, "ok");
    strbuf_reset(&sb);
    assert_false(sb.oom);
    strbuf_puts(&sb, "fresh");
    assert_string_equal(sb.data, "fresh");
    strbuf_free(&sb);
}

static void test_utf8_prefix_len(void **state)
{
    static const struct {
        const char *s;
        size_t len, max, want;
    } cases[] = {
        {"abc", 3, 10, 3},
        {"abc", 3, 3, 3},
        {"abc", 3, 2, 2},
        {"abc", 3, 0, 0},
        {"a\xc3\xa9", 3, 2, 1},
        {"a\xc3\xa9", 3, 3, 3},
        {"\xe2\x82\xac!", 4, 1, 0},
        {"\xe2\x82\xac!", 4, 2, 0},
        {"\xe2\x82\xac!", 4, 3, 3},
        {"\xf0\x9f\x98\x80", 4, 3, 0},
        {"\x80\x80\x80\x80\x80", 5, 3, 3}, /* stray continuations: any cut is a boundary */
        {"a\xff\x80", 3, 2, 2},            /* FF is no lead byte */
    };
    size_t i, got;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        got = utf8_prefix_len(cases[i].s, cases[i].len, cases[i].max);
        if (got != cases[i].want)
            fail_msg("case %zu: expected %zu, got %zu", i, cases[i].want, got);
    }
}

static void test_utf8_valid(void **state)
{
    (void)state;
    assert_true(utf8_valid("", 0));
    assert_true(utf8_valid("V\xc5\xa9ng T\xc3\xa0u", 10));
    assert_true(utf8_valid("\xf0\x9f\x98\x80", 4));
    assert_false(utf8_valid("\xed\xa0\x80", 3));
    assert_false(utf8_valid("\xc0\x80", 2));
    assert_false(utf8_valid("\xf4\x90\x80\x80", 4));
    assert_false(utf8_valid("\xe2\x82", 2));
    assert_false(utf8_valid("a\x80", 2));
}

static void test_put_uint_matches_printf(void **state)
{
    (void)state;
    static const struct {
        uint64_t v;
        unsigned width;
        const char *fmt_out;
    } cases[] = {{0, 0, "0"},         {7, 0, "7"},
                 {10, 0, "10"},       {5, 3, "005"},
                 {12345, 3, "12345"}, {2026, 4, "2026"},
                 {9, 2, "09"},        {UINT64_MAX, 0, "18446744073709551615"},
                 {0, 4, "0000"},      {999, 3, "999"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct strbuf sb;
        strbuf_init(&sb);
        strbuf_puts(&sb, "x=");
        strbuf_put_uint(&sb, cases[i].v, cases[i].width);
        char want[40];
        snprintf(want, sizeof(want), "x=%s", cases[i].fmt_out);
        if (strcmp(sb.data, want) != 0)
            fail_msg("put_uint(%llu, %u): expected %s, got %s", (unsigned long long)cases[i].v,
                     cases[i].width, want, sb.data);
        strbuf_free(&sb);
    }
}

static void test_decimal_write(void **state)
{
    static const struct {
        uint64_t v;
        const char *want;
    } cases[] = {
        {0, "0"}, {7, "7"}, {10, "10"}, {4194304, "4194304"}, {UINT64_MAX, "18446744073709551615"}};
    char buf[DECIMAL_MAX + 1];
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(buf, 'x', sizeof(buf));
        size_t n = decimal_write(buf, cases[i].v);
        if (n != strlen(cases[i].want) || memcmp(buf, cases[i].want, n) != 0)
            fail_msg("decimal_write(%llu): \"%.*s\", expected \"%s\"",
                     (unsigned long long)cases[i].v, (int)n, buf, cases[i].want);
        assert_int_equal(buf[n], 'x'); /* nothing written past the digits */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decimal_write),
        cmocka_unit_test(test_put_uint_matches_printf),
        cmocka_unit_test(test_control_chars_escaped),
        cmocka_unit_test(test_quotes_and_backslash),
        cmocka_unit_test(test_valid_multibyte_kept),
        cmocka_unit_test(test_invalid_utf8_replaced),
        cmocka_unit_test(test_cap_on_boundary),
        cmocka_unit_test(test_cap_mid_sequence_backs_off),
        cmocka_unit_test(test_one_mib_capped),
        cmocka_unit_test(test_random_bytes_always_valid_json),
        cmocka_unit_test(test_growth_from_empty),
        cmocka_unit_test(test_reset_keeps_capacity),
        cmocka_unit_test(test_printf_and_append),
        cmocka_unit_test(test_overflow_sets_oom_and_drops),
        cmocka_unit_test(test_utf8_prefix_len),
        cmocka_unit_test(test_utf8_valid),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
