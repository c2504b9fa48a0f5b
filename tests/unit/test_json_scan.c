/* test_json_scan: src/json_scan.c, the validating JSON cursor.
 *
 * Grammar cases are byte strings with explicit lengths (some hold NUL bytes) and each invalid
 * one names the reason and, where it is unambiguous, the byte offset the scanner must report.
 * Every valid case is also checked against jansson, the parser the scanner replaced.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mcpeek/json_scan.h"

/* A byte string literal and its length without the terminating NUL. */
#define BYTES(lit) lit, sizeof(lit) - 1

struct grammar_case {
    const char *text;
    size_t len;
    const char *reason; /* NULL: valid */
    long pos;           /* expected error offset, -1 when not checked */
};

/* Scans one whole document: a value and nothing after it. */
static int scan_all(struct json_scan *sc, const char *text, size_t len)
{
    json_scan_init(sc, text, len);
    if (json_scan_value(sc, NULL) < 0)
        return -1;
    return json_scan_end(sc);
}

static bool jansson_valid(const char *text, size_t len)
{
    json_t *v = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);

    json_decref(v);
    return v != NULL;
}

static void check_cases(const struct grammar_case *cases, size_t n)
{
    struct json_scan sc;
    size_t i;
    int r;

    for (i = 0; i < n; i++) {
        r = scan_all(&sc, cases[i].text, cases[i].len);
        if (!cases[i].reason) {
            if (r != 0)
                fail_msg("case %zu '%.*s': expected valid, got '%s' at byte %zu", i,
                         (int)cases[i].len, cases[i].text, sc.error, sc.error_pos);
            continue;
        }
        if (r == 0)
            fail_msg("case %zu '%.*s': expected invalid (%s), got valid", i, (int)cases[i].len,
                     cases[i].text, cases[i].reason);
        if (!sc.error || !strstr(sc.error, cases[i].reason))
            fail_msg("case %zu '%.*s': expected reason '%s', got '%s'", i, (int)cases[i].len,
                     cases[i].text, cases[i].reason, sc.error ? sc.error : "NULL");
        if (cases[i].pos >= 0 && sc.error_pos != (size_t)cases[i].pos)
            fail_msg("case %zu '%.*s': expected error at byte %ld, got %zu", i, (int)cases[i].len,
                     cases[i].text, cases[i].pos, sc.error_pos);
        /* jansson stops reading at a NUL byte, so it may accept what comes before one. */
        if (!memchr(cases[i].text, '\0', cases[i].len) &&
            jansson_valid(cases[i].text, cases[i].len))
            fail_msg("case %zu: jansson accepts '%.*s'; the test is wrong", i, (int)cases[i].len,
                     cases[i].text);
    }
}

static void test_valid_documents(void **state)
{
    (void)state;
    static const struct grammar_case cases[] = {
        {BYTES("0"), NULL, -1},
        {BYTES("-0"), NULL, -1},
        {BYTES("-12.50e+3"), NULL, -1},
        {BYTES("1E-2"), NULL, -1},
        {BYTES("true"), NULL, -1},
        {BYTES("false"), NULL, -1},
        {BYTES("null"), NULL, -1},
        {BYTES("\"\""), NULL, -1},
        {BYTES("[]"), NULL, -1},
        {BYTES("{}"), NULL, -1},
        {BYTES(" \t\r\n[ 1 , {\"a\" : [ true , false , null ] , \"b\":{}} ] \n"), NULL, -1},
        {BYTES("{\"a\":1,\"a\":2}"), NULL, -1}, /* duplicates are legal */
        {BYTES("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\u00E9\""), NULL, -1},
        {BYTES("\"\\ud83d\\ude00\""), NULL, -1},                         /* surrogate pair */
        {BYTES("\"\\uDBFF\\uDFFF\""), NULL, -1},                         /* U+10FFFF as a pair */
        {BYTES("\"\xf4\x8f\xbf\xbf\""), NULL, -1},                       /* U+10FFFF raw */
        {BYTES("\"\xed\x9f\xbf \xee\x80\x80\""), NULL, -1},              /* around the surrogates */
        {BYTES("\"\xc2\x80 \xe0\xa0\x80 \xf0\x90\x80\x80\""), NULL, -1}, /* shortest forms */
        {BYTES("\"\x7f\""), NULL, -1},      /* DEL is not a control character */
        {BYTES("\"a\\u0000b\""), NULL, -1}, /* escaped NUL in a value */
        {BYTES("{\"k\":\"\\u0000\"}"), NULL, -1},
    };

    check_cases(cases, sizeof(cases) / sizeof(cases[0]));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (!jansson_valid(cases[i].text, cases[i].len))
            fail_msg("case %zu: jansson refuses '%s'; the test is wrong", i, cases[i].text);
}

static void test_invalid_grammar(void **state)
{
    (void)state;
    static const struct grammar_case cases[] = {
        {BYTES(""), "unexpected end of input", 0},
        {BYTES(" \n\t "), "unexpected end of input", 4},
        {BYTES("[1,]"), "unexpected character", 3},
        {BYTES("{\"a\":1,}"), "expected a string key", 7},
        {BYTES("[,1]"), "unexpected character", 1},
        {BYTES("{,}"), "expected a string key", 1},
        {BYTES("[1 2]"), "expected ',' or ']'", 3},
        {BYTES("{\"a\":1 \"b\":2}"), "expected ',' or '}'", 7},
        {BYTES("{\"a\" 1}"), "expected ':'", 5},
        {BYTES("{1:2}"), "expected a string key", 1},
        {BYTES("{'a':1}"), "expected a string key", 1},
        {BYTES("[1}"), "expected ',' or ']'", 2},
        {BYTES("{\"a\":1]"), "expected ',' or '}'", 6},
        {BYTES("01"), "leading zero", 1},
        {BYTES("-01"), "leading zero", 2},
        {BYTES("1."), "no digit after '.'", 2},
        {BYTES("1.e5"), "no digit after '.'", 2},
        {BYTES(".5"), "unexpected character", 0},
        {BYTES("1e"), "no digit in exponent", 2},
        {BYTES("1e+"), "no digit in exponent", 3},
        {BYTES("+1"), "unexpected character", 0},
        {BYTES("-"), "invalid number", 1},
        {BYTES("-a"), "invalid number", 1},
        {BYTES("0x10"), "unexpected data after the value", 1},
        {BYTES("tru"), "invalid literal", 0},
        {BYTES("nul"), "invalid literal", 0},
        {BYTES("True"), "unexpected character", 0},
        {BYTES("NaN"), "unexpected character", 0},
        {BYTES("Infinity"), "unexpected character", 0},
        {BYTES("truex"), "unexpected data after the value", 4},
        {BYTES("[true1]"), "expected ',' or ']'", 5},
        {BYTES("1 2"), "unexpected data after the value", 2},
        {BYTES("{} x"), "unexpected data after the value", 3},
        {BYTES("[]]"), "unexpected data after the value", 2},
        {BYTES("{}\0"), "unexpected data after the value", 2}, /* jansson stops at NUL */
        {BYTES("\v1"), "unexpected character", 0},             /* not JSON whitespace */
        {BYTES("\f1"), "unexpected character", 0},
        {BYTES("\xc2\xa0"
               "1"),
         "unexpected character", 0},                          /* no-break space */
        {BYTES("\xef\xbb\xbf{}"), "unexpected character", 0}, /* byte order mark */
        {BYTES("["), "unexpected end of input", 1},
        {BYTES("{\"a\":"), "unexpected end of input", 5},
        {BYTES("{\"a\""), "unexpected end of input", 4},
    };

    check_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_invalid_strings(void **state)
{
    (void)state;
    static const struct grammar_case cases[] = {
        {BYTES("\"abc"), "unterminated string", 4},
        {BYTES("\"abc\\"), "unterminated string", 5},
        {BYTES("\"abc\\\""), "unterminated string", 6},
        {BYTES("\"a\x01"
               "b\""),
         "control character", 2},
        {BYTES("\"\x1f\""), "control character", 1},
        {BYTES("\"a\nb\""), "control character", 2},
        {BYTES("\"\t\""), "control character", 1},
        {BYTES("\"a\0b\""), "control character", 2},
        {BYTES("\"\\x\""), "invalid escape", 1},
        {BYTES("\"\\U00e9\""), "invalid escape", 1},
        {BYTES("\"\\'\""), "invalid escape", 1},
        {BYTES("\"\\u12\""), "invalid \\u escape", 1},
        {BYTES("\"\\u12g4\""), "invalid \\u escape", 1},
        {BYTES("\"\\u"), "invalid \\u escape", 1},
        {BYTES("\"\\ud800\""), "lone Unicode surrogate", 1},
        {BYTES("\"\\udc00\""), "lone Unicode surrogate", 1},
        {BYTES("\"\\ud800\\u0041\""), "lone Unicode surrogate", 1},
        {BYTES("\"\\ud800\\ud800\""), "lone Unicode surrogate", 1},
        {BYTES("\"\\ud800x\""), "lone Unicode surrogate", 1},
        {BYTES("\"\\ude00\\ud83d\""), "lone Unicode surrogate", 1}, /* pair in the wrong order */
        {BYTES("\"\xc0\xaf\""), "invalid UTF-8", 1},                /* overlong '/' */
        {BYTES("\"\xc1\xbf\""), "invalid UTF-8", 1},                /* overlong, 2 bytes */
        {BYTES("\"\xe0\x80\xaf\""), "invalid UTF-8", 1},            /* overlong, 3 bytes */
        {BYTES("\"\xf0\x80\x80\xaf\""), "invalid UTF-8", 1},        /* overlong, 4 bytes */
        {BYTES("\"\xed\xa0\x80\""), "invalid UTF-8", 1},            /* surrogate as UTF-8 */
        {BYTES("\"\xf4\x90\x80\x80\""), "invalid UTF-8", 1},        /* above U+10FFFF */
        {BYTES("\"\xf5\x80\x80\x80\""), "invalid UTF-8", 1},
        {BYTES("\"\xf8\x88\x80\x80\x80\""), "invalid UTF-8", 1}, /* 5-byte form */
        {BYTES("\"a\x80\""), "invalid UTF-8", 2},                /* stray continuation */
        {BYTES("\"\xff\""), "invalid UTF-8", 1},
        {BYTES("\"\xc3\""), "invalid UTF-8", 1}, /* lead byte, then the quote */
        {BYTES("\"\xe2\x82"), "invalid UTF-8", 1},
        {BYTES("\"\xe2\x82\""), "invalid UTF-8", 1},
        {BYTES("{\"a\\u0000\":1}"), "NUL byte in object key", 3}, /* as jansson */
        {BYTES("[\xc3\xa9]"), "unexpected character", 1},
    };

    check_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* `depth` openers, `inner`, `depth` closers. */
static char *nest(const char *open, const char *close, size_t depth, const char *inner, size_t *len)
{
    size_t lo = strlen(open), lc = strlen(close), li = strlen(inner), i;
    char *b = malloc(depth * (lo + lc) + li + 1);

    assert_non_null(b);
    for (i = 0; i < depth; i++)
        memcpy(b + i * lo, open, lo);
    memcpy(b + depth * lo, inner, li);
    for (i = 0; i < depth; i++)
        memcpy(b + depth * lo + li + i * lc, close, lc);
    *len = depth * (lo + lc) + li;
    b[*len] = '\0';
    return b;
}

static void expect_depth(const char *open, const char *close, size_t depth, const char *inner,
                         bool valid)
{
    struct json_scan sc;
    size_t len;
    char *b = nest(open, close, depth, inner, &len);
    int r = scan_all(&sc, b, len);

    if (valid && r != 0)
        fail_msg("%zu x '%s' around '%s': expected valid, got '%s'", depth, open, inner, sc.error);
    if (!valid && (r == 0 || strcmp(sc.error, "maximum parsing depth reached") != 0))
        fail_msg("%zu x '%s' around '%s': expected the depth error, got %s", depth, open, inner,
                 r == 0 ? "valid" : sc.error);
    if (jansson_valid(b, len) != valid)
        fail_msg("%zu x '%s' around '%s': jansson disagrees", depth, open, inner);
    free(b);
}

static void test_depth_cap_is_2048_like_jansson(void **state)
{
    (void)state;
    expect_depth("[", "]", 2048, "", true);
    expect_depth("[", "]", 2049, "", false);
    expect_depth("[", "]", 2047, "1", true); /* the scalar is level 2048 */
    expect_depth("[", "]", 2048, "1", false);
    expect_depth("{\"a\":", "}", 2047, "{}", true);
    expect_depth("{\"a\":", "}", 2048, "{}", false);
    expect_depth("{\"a\":[", "]}", 1024, "", true);
    expect_depth("{\"a\":[", "]}", 1024, "1", false);
}

static void test_hostile_depth_is_rejected_fast(void **state)
{
    (void)state;
    struct json_scan sc;
    size_t len;
    char *b = nest("[", "]", 100000, "", &len);
    clock_t t0 = clock();
    int r = scan_all(&sc, b, len);
    double ms = (double)(clock() - t0) * 1000.0 / CLOCKS_PER_SEC;

    if (r == 0 || strcmp(sc.error, "maximum parsing depth reached") != 0)
        fail_msg("100000 nested arrays: expected the depth error, got %s",
                 r == 0 ? "valid" : sc.error);
    if (sc.error_pos != 2048)
        fail_msg("100000 nested arrays: expected the error at byte 2048, got %zu", sc.error_pos);
    if (ms > 50.0)
        fail_msg("100000 nested arrays: expected a fast rejection, took %.1f ms", ms);
    free(b);

    /* Only openers, never closed: the cap still comes first. */
    b = nest("{\"a\":[", "", 100000, "", &len);
    if (scan_all(&sc, b, len) == 0 || strcmp(sc.error, "maximum parsing depth reached") != 0)
        fail_msg("100000 unclosed openers: expected the depth error");
    free(b);
}

static void test_walk_members_and_elements(void **state)
{
    (void)state;
    static const char doc[] =
        " {\"a\" : [1, \"two\", {\"x\":null}], \"k\\u00e9y\":true, \"a\":-2.5e1 , \"e\":{}} ";
    struct json_scan sc;
    struct json_scan_value key, v;
    int r, n = 0;

    json_scan_init(&sc, doc, sizeof(doc) - 1);
    assert_int_equal(json_scan_peek(&sc), JSON_SCAN_OBJECT);
    assert_int_equal(json_scan_enter(&sc), 0);

    assert_int_equal(json_scan_member(&sc, &key), 1);
    if (!json_scan_string_is(&key, "a"))
        fail_msg("first key: expected 'a', got '%.*s'", (int)key.len, key.text);
    assert_int_equal(json_scan_enter(&sc), 0);
    while ((r = json_scan_element(&sc)) == 1) {
        assert_int_equal(json_scan_value(&sc, &v), 0);
        n++;
    }
    assert_int_equal(r, 0);
    assert_int_equal(n, 3);
    assert_int_equal(v.type, JSON_SCAN_OBJECT); /* the last element, skipped whole */
    if (v.len != strlen("{\"x\":null}") || memcmp(v.text, "{\"x\":null}", v.len) != 0)
        fail_msg("skipped object span: expected '{\"x\":null}', got '%.*s'", (int)v.len, v.text);

    assert_int_equal(json_scan_member(&sc, &key), 1);
    if (!key.escaped || !json_scan_string_is(&key, "k\xc3\xa9y") ||
        json_scan_string_is(&key, "k\xc3\xa9") || json_scan_string_is(&key, "k\xc3\xa9yy"))
        fail_msg("escaped key: expected exactly 'k\\u00e9y' decoded");
    assert_int_equal(json_scan_value(&sc, &v), 0);
    assert_int_equal(v.type, JSON_SCAN_TRUE);

    assert_int_equal(json_scan_member(&sc, &key), 1); /* a duplicate comes back in order */
    assert_true(json_scan_string_is(&key, "a"));
    assert_int_equal(json_scan_value(&sc, &v), 0);
    assert_int_equal(v.type, JSON_SCAN_NUMBER);
    assert_false(v.integer);
    if (v.len != 6 || memcmp(v.text, "-2.5e1", 6) != 0)
        fail_msg("number span: expected '-2.5e1', got '%.*s'", (int)v.len, v.text);

    assert_int_equal(json_scan_member(&sc, &key), 1);
    assert_int_equal(json_scan_enter(&sc), 0);
    assert_int_equal(json_scan_member(&sc, &key), 0); /* empty object */
    assert_int_equal(json_scan_member(&sc, &key), 0); /* end of the outer one */
    assert_int_equal(sc.depth, 0);
    assert_int_equal(json_scan_end(&sc), 0);
}

static void test_errors_are_sticky_and_located(void **state)
{
    (void)state;
    static const char doc[] = "{\n  \"a\": 1,\n  \"b\": tru\n}";
    struct json_scan sc;
    struct json_scan_value key;
    size_t line, column;

    json_scan_init(&sc, doc, sizeof(doc) - 1);
    assert_int_equal(json_scan_enter(&sc), 0);
    assert_int_equal(json_scan_member(&sc, &key), 1);
    assert_int_equal(json_scan_value(&sc, NULL), 0);
    assert_int_equal(json_scan_member(&sc, &key), 1);
    assert_int_equal(json_scan_value(&sc, NULL), -1);
    /* Every later call fails and keeps the first reason. */
    assert_int_equal(json_scan_member(&sc, &key), -1);
    assert_int_equal(json_scan_peek(&sc), JSON_SCAN_NONE);
    assert_int_equal(json_scan_end(&sc), -1);
    assert_string_equal(sc.error, "invalid literal");
    json_scan_where(&sc, &line, &column);
    if (line != 3 || column != 8)
        fail_msg("error place: expected line 3 column 8, got line %zu column %zu", line, column);

    /* Entering a scalar is refused. */
    json_scan_init(&sc, "42", 2);
    assert_int_equal(json_scan_enter(&sc), -1);
}

static void check_decode(const char *json_string, size_t cap, unsigned flags, const char *want,
                         size_t want_len)
{
    struct json_scan sc;
    struct json_scan_value v;
    char buf[64];
    size_t n;

    json_scan_init(&sc, json_string, strlen(json_string));
    assert_int_equal(json_scan_value(&sc, &v), 0);
    assert_int_equal(v.type, JSON_SCAN_STRING);
    assert_true(cap <= sizeof(buf));
    n = json_scan_decode(&v, buf, cap, flags);
    if (n != want_len || memcmp(buf, want, n) != 0)
        fail_msg("decode %s cap %zu: expected %zu bytes, got %zu ('%.*s')", json_string, cap,
                 want_len, n, (int)n, buf);
    if (json_scan_decode(&v, NULL, cap, flags) != n)
        fail_msg("decode %s cap %zu: measuring disagrees with writing", json_string, cap);
}

static void test_decode_into_caller_buffer(void **state)
{
    (void)state;
    check_decode("\"plain\"", 64, 0, "plain", 5);
    check_decode("\"plain\"", 3, 0, "pla", 3);
    check_decode("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", 64, 0, "\"\\/\b\f\n\r\t", 8);
    check_decode("\"\\u00e9\\u20ac\\ud83d\\ude00\"", 64, 0, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
                 9);
    /* A cap inside a character keeps only whole ones, escaped or raw. */
    check_decode("\"\\u00e9\\u20ac\\ud83d\\ude00\"", 8, 0, "\xc3\xa9\xe2\x82\xac", 5);
    check_decode("\"\\u00e9\\u20ac\\ud83d\\ude00\"", 4, 0, "\xc3\xa9", 2);
    check_decode("\"\\u00e9\\u20ac\\ud83d\\ude00\"", 1, 0, "", 0);
    check_decode("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", 8, 0, "\xc3\xa9\xe2\x82\xac", 5);
    check_decode("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", 4, 0, "\xc3\xa9", 2);
    check_decode("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", 0, 0, "", 0);
    /* U+0000 as it is, or as U+FFFD. */
    check_decode("\"a\\u0000b\"", 64, 0, "a\0b", 3);
    check_decode("\"a\\u0000b\"", 64, JSON_SCAN_NUL_AS_FFFD,
                 "a\xef\xbf\xbd"
                 "b",
                 5);
    check_decode("\"a\\u0000b\"", 3, JSON_SCAN_NUL_AS_FFFD, "a", 1);
}

static struct json_scan_value scan_one(const char *text)
{
    struct json_scan sc;
    struct json_scan_value v;

    json_scan_init(&sc, text, strlen(text));
    if (json_scan_value(&sc, &v) < 0 || json_scan_end(&sc) < 0)
        fail_msg("'%s' does not scan: %s", text, sc.error);
    return v;
}

static void test_capped_heap_copies(void **state)
{
    (void)state;
    struct json_scan_value v = scan_one("\"abc\\u0000def\\u0000\"");
    char *copy = json_scan_strdup(&v, 256);

    assert_non_null(copy);
    assert_string_equal(copy, "abc\xef\xbf\xbd"
                              "def\xef\xbf\xbd");
    free(copy);
    copy = json_scan_strdup(&v, 5); /* the U+FFFD would end at byte 6 */
    assert_non_null(copy);
    assert_string_equal(copy, "abc");
    free(copy);

    v = scan_one("\"V\xc5\xa9ng T\xc3\xa0u\"");
    copy = json_scan_strdup(&v, 2);
    assert_non_null(copy);
    assert_string_equal(copy, "V");
    free(copy);
    copy = json_scan_strdup(&v, 0);
    assert_non_null(copy);
    assert_string_equal(copy, "");
    free(copy);

    v = scan_one("\"\"");
    copy = json_scan_strdup(&v, 10);
    assert_non_null(copy);
    assert_string_equal(copy, "");
    free(copy);

    v = scan_one("17");
    if (json_scan_strdup(&v, 10) != NULL)
        fail_msg("strdup of a number: expected NULL");
}

static void test_numbers(void **state)
{
    (void)state;
    struct json_scan_value v;
    long long i = 0;
    double d = 0;
    char big[400];

    v = scan_one("9223372036854775807");
    assert_int_equal(json_scan_int64(&v, &i), 0);
    assert_true(i == LLONG_MAX);
    v = scan_one("-9223372036854775808");
    assert_int_equal(json_scan_int64(&v, &i), 0);
    assert_true(i == LLONG_MIN);
    v = scan_one("-0");
    assert_int_equal(json_scan_int64(&v, &i), 0);
    assert_true(i == 0);
    v = scan_one("9223372036854775808");
    assert_int_equal(json_scan_int64(&v, &i), -1);
    v = scan_one("-9223372036854775809");
    assert_int_equal(json_scan_int64(&v, &i), -1);
    v = scan_one("1.0");
    assert_int_equal(json_scan_int64(&v, &i), -1);
    assert_int_equal(json_scan_double(&v, &d), 0);
    assert_true(d == 1.0);
    v = scan_one("1e400");
    assert_int_equal(json_scan_double(&v, &d), -1);
    v = scan_one("-1e400");
    assert_int_equal(json_scan_double(&v, &d), -1);
    v = scan_one("1e-400");
    assert_int_equal(json_scan_double(&v, &d), 0);
    assert_true(d == 0.0);
    /* Longer than the stack copy: "0.000...0125". */
    memset(big, '0', sizeof(big));
    big[1] = '.';
    memcpy(big + sizeof(big) - 4, "125", 4);
    v = scan_one(big);
    assert_int_equal(json_scan_double(&v, &d), 0);
    assert_true(d == strtod(big, NULL));
    v = scan_one("\"1\"");
    assert_int_equal(json_scan_int64(&v, &i), -1);
    assert_int_equal(json_scan_double(&v, &d), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_documents),
        cmocka_unit_test(test_invalid_grammar),
        cmocka_unit_test(test_invalid_strings),
        cmocka_unit_test(test_depth_cap_is_2048_like_jansson),
        cmocka_unit_test(test_hostile_depth_is_rejected_fast),
        cmocka_unit_test(test_walk_members_and_elements),
        cmocka_unit_test(test_errors_are_sticky_and_located),
        cmocka_unit_test(test_decode_into_caller_buffer),
        cmocka_unit_test(test_capped_heap_copies),
        cmocka_unit_test(test_numbers),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
