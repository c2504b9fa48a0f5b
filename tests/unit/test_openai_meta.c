/* test_openai_meta: src/openai_meta.c, params._meta -> OpenAiClientContext.
 *
 * Each test gives `_meta` as JSON text to openai_meta_parse (jansson, as jsonrpc.c parses it),
 * after checking with jansson that the text is valid JSON, and checks every field, so a value
 * landing in the wrong member fails too. UTF-8 validity of capped output is
 * checked with jansson's own validator (json_stringn), not with the code under test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcpeek/openai_meta.h"

#define MAX_LEN 256

/* "Vũng Tàu" as UTF-8 bytes, spelled out so the test does not depend on source encoding. */
#define VUNG_TAU "V\xc5\xa9ng T\xc3\xa0u"

#define CHECK_STR(what, expected, got) check_str(what, expected, got, __FILE__, __LINE__)

static void check_str(const char *what, const char *expected, const char *got, const char *file,
                      int line)
{
    if (!expected && !got)
        return;
    if (expected && got && strcmp(expected, got) == 0)
        return;
    fail_msg("%s:%d: %s: expected %s%s%s, got %s%s%s", file, line, what, expected ? "\"" : "",
             expected ? expected : "NULL", expected ? "\"" : "", got ? "\"" : "",
             got ? got : "NULL", got ? "\"" : "");
}

/* Fails the test when the test's own JSON is broken (jansson is the referee). */
static void check_valid_json(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);

    if (!v)
        fail_msg("test JSON does not parse: %s: %s", err.text, text);
    json_decref(v);
}

static OpenAiClientContext *extract_text(const char *text, size_t max_len)
{
    check_valid_json(text);
    return openai_meta_parse(text, strlen(text), max_len);
}

/* True when s[0..len) is valid UTF-8 according to jansson. */
static bool jansson_utf8_ok(const char *s, size_t len)
{
    json_t *v = json_stringn(s, len);
    bool ok = v != NULL;

    json_decref(v);
    return ok;
}

static void expect_null_context(const char *text)
{
    OpenAiClientContext *ctx = extract_text(text, MAX_LEN);

    if (ctx) {
        openai_meta_free(ctx);
        fail_msg("expected NULL context (no usable openai key) for %s, got one", text);
    }
}

static void test_article_wire_example(void **state)
{
    (void)state;
    OpenAiClientContext *ctx =
        extract_text("{\n"
                     "  \"openai/session\": \"v1/abc123...\",\n"
                     "  \"openai/subject\": \"v1/user_xyz...\",\n"
                     "  \"openai/organization\": \"v1/org_...\",\n"
                     "  \"openai/locale\": \"en-US\",\n"
                     "  \"openai/userAgent\": \"Mozilla/5.0 ...\",\n"
                     "  \"openai/userLocation\": {\n"
                     "    \"city\": \"" VUNG_TAU "\", \"country\": \"VN\",\n"
                     "    \"latitude\": \"10.34599\", \"longitude\": \"107.08426\",\n"
                     "    \"timezone\": \"Asia/Ho_Chi_Minh\"\n"
                     "  }\n"
                     "}",
                     MAX_LEN);

    if (!ctx)
        fail_msg("expected a context for the article example, got NULL");
    CHECK_STR("session_id", "v1/abc123...", ctx->session_id);
    CHECK_STR("subject_id", "v1/user_xyz...", ctx->subject_id);
    CHECK_STR("organization_id", "v1/org_...", ctx->organization_id);
    CHECK_STR("locale", "en-US", ctx->locale);
    CHECK_STR("user_agent", "Mozilla/5.0 ...", ctx->user_agent);
    if (!ctx->user_location)
        fail_msg("expected user_location, got NULL");
    CHECK_STR("city", VUNG_TAU, ctx->user_location->city);
    CHECK_STR("region", NULL, ctx->user_location->region);
    CHECK_STR("country", "VN", ctx->user_location->country);
    CHECK_STR("latitude", "10.34599", ctx->user_location->latitude);
    CHECK_STR("longitude", "107.08426", ctx->user_location->longitude);
    CHECK_STR("timezone", "Asia/Ho_Chi_Minh", ctx->user_location->timezone);
    openai_meta_free(ctx);
}

static void test_numbers_become_decimal_strings(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        const char *expected;
    } cases[] = {
        {"12345", "12345"},
        {"-42", "-42"},
        {"0", "0"},
        {"9223372036854775807", "9223372036854775807"},
        {"-9223372036854775808", "-9223372036854775808"},
        {"10.34599", "10.34599"},
        {"107.08426", "107.08426"},
        {"0.1", "0.1"},
        {"0.30000000000000004", "0.30000000000000004"}, /* needs all 17 digits */
        {"-0.5", "-0.5"},
        {"10.0", "10"},
        {"1e300", "1e+300"},
        {"1.7976931348623157e308", "1.7976931348623157e+308"},
        /* 15 significant digits already read back as the smallest denormal */
        {"5e-324", "4.94065645841247e-324"},
        /* Around the shortcut that keeps a number's own spelling (see openai_meta.c): */
        {"-0", "0"},
        {"123456789012345678", "123456789012345678"},
        {"1234567890123456789", "1234567890123456789"},
        {"0.0001", "0.0001"},
        {"0.00001", "1e-05"},
        {"-0.00012", "-0.00012"},
        {"-107.08426", "-107.08426"},
        {"99999999999999.9", "99999999999999.9"},
        {"0.1234567890123456", "0.1234567890123456"},
        {"1.0000000000000001", "1"},
        {"1.50", "1.5"},
        {"1.0e2", "100"},
    };
    char text[128];
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "{\"openai/session\": %s}", cases[i].json);
        OpenAiClientContext *ctx = extract_text(text, MAX_LEN);
        if (!ctx)
            fail_msg("session %s: expected \"%s\", got NULL context", cases[i].json,
                     cases[i].expected);
        CHECK_STR(cases[i].json, cases[i].expected, ctx->session_id);
        openai_meta_free(ctx);
    }
}

static void test_numeric_location_members(void **state)
{
    (void)state;
    OpenAiClientContext *ctx = extract_text("{\"openai/userLocation\": {\"latitude\": 10.34599, "
                                            "\"longitude\": 107.08426, \"region\": 7}}",
                                            MAX_LEN);

    if (!ctx || !ctx->user_location)
        fail_msg("expected a context with user_location, got %s", ctx ? "no location" : "NULL");
    CHECK_STR("latitude", "10.34599", ctx->user_location->latitude);
    CHECK_STR("longitude", "107.08426", ctx->user_location->longitude);
    CHECK_STR("region", "7", ctx->user_location->region);
    CHECK_STR("city", NULL, ctx->user_location->city);
    CHECK_STR("session_id", NULL, ctx->session_id);
    openai_meta_free(ctx);
}

static void test_wrong_types_are_ignored(void **state)
{
    (void)state;
    static const char *const keys[] = {"openai/session", "openai/subject", "openai/organization",
                                       "openai/locale", "openai/userAgent"};
    static const char *const bad[] = {"true",          "false", "null",        "{}",
                                      "{\"a\":\"b\"}", "[]",    "[\"v1/abc\"]"};
    char text[128];
    size_t k, b;

    for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        for (b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
            snprintf(text, sizeof(text), "{\"%s\": %s}", keys[k], bad[b]);
            expect_null_context(text);
        }
    }
}

static void test_wrong_types_beside_a_good_key(void **state)
{
    (void)state;
    OpenAiClientContext *ctx = extract_text(
        "{\"openai/session\": true, \"openai/subject\": null, \"openai/organization\": {},"
        " \"openai/locale\": [\"en\"], \"openai/userAgent\": \"UA\","
        " \"openai/userLocation\": {\"city\": false, \"country\": \"VN\", \"region\": null,"
        " \"timezone\": {}, \"latitude\": [], \"longitude\": true}}",
        MAX_LEN);

    if (!ctx)
        fail_msg("expected a context (userAgent is a string), got NULL");
    CHECK_STR("session_id", NULL, ctx->session_id);
    CHECK_STR("subject_id", NULL, ctx->subject_id);
    CHECK_STR("organization_id", NULL, ctx->organization_id);
    CHECK_STR("locale", NULL, ctx->locale);
    CHECK_STR("user_agent", "UA", ctx->user_agent);
    if (!ctx->user_location)
        fail_msg("expected user_location (country is a string), got NULL");
    CHECK_STR("country", "VN", ctx->user_location->country);
    CHECK_STR("city", NULL, ctx->user_location->city);
    CHECK_STR("region", NULL, ctx->user_location->region);
    CHECK_STR("timezone", NULL, ctx->user_location->timezone);
    CHECK_STR("latitude", NULL, ctx->user_location->latitude);
    CHECK_STR("longitude", NULL, ctx->user_location->longitude);
    openai_meta_free(ctx);
}

static void test_user_location_must_be_a_usable_object(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "{\"openai/userLocation\": \"Vung Tau\"}",
        "{\"openai/userLocation\": 10.5}",
        "{\"openai/userLocation\": true}",
        "{\"openai/userLocation\": null}",
        "{\"openai/userLocation\": [\"Vung Tau\"]}",
        "{\"openai/userLocation\": {}}",
        "{\"openai/userLocation\": {\"street\": \"Main St\", \"zip\": \"12345\"}}",
        "{\"openai/userLocation\": {\"city\": null, \"country\": [], \"latitude\": {}}}",
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_null_context(cases[i]);

    /* With another usable key the context exists but user_location stays NULL. */
    OpenAiClientContext *ctx =
        extract_text("{\"openai/session\": \"s\", \"openai/userLocation\": {}}", MAX_LEN);
    if (!ctx)
        fail_msg("expected a context (session is set), got NULL");
    if (ctx->user_location)
        fail_msg("expected user_location NULL for an empty object, got city=%s",
                 ctx->user_location->city ? ctx->user_location->city : "NULL");
    CHECK_STR("session_id", "s", ctx->session_id);
    openai_meta_free(ctx);
}

static void test_empty_and_non_object_meta(void **state)
{
    (void)state;
    static const char *const not_objects[] = {
        "[]", "[{\"openai/session\": \"s\"}]", "\"openai/session\"", "42", "true", "null"};
    size_t i;

    expect_null_context("{}");
    for (i = 0; i < sizeof(not_objects) / sizeof(not_objects[0]); i++)
        expect_null_context(not_objects[i]);
    if (openai_meta_parse(NULL, 0, MAX_LEN) != NULL)
        fail_msg("expected NULL for a NULL meta, got a context");
    /* Not JSON at all, or trailing bytes after the object: no context. */
    if (openai_meta_parse("{\"openai/session\": \"s\"", 22, MAX_LEN) != NULL)
        fail_msg("expected NULL for truncated JSON, got a context");
    if (openai_meta_parse("{\"openai/session\": \"s\"} x", 25, MAX_LEN) != NULL)
        fail_msg("expected NULL for trailing garbage, got a context");
}

static void test_partial_meta_only_session(void **state)
{
    (void)state;
    OpenAiClientContext *ctx = extract_text("{\"openai/session\": \"v1/abc123\"}", MAX_LEN);

    if (!ctx)
        fail_msg("expected a context, got NULL");
    CHECK_STR("session_id", "v1/abc123", ctx->session_id);
    CHECK_STR("subject_id", NULL, ctx->subject_id);
    CHECK_STR("organization_id", NULL, ctx->organization_id);
    CHECK_STR("locale", NULL, ctx->locale);
    CHECK_STR("user_agent", NULL, ctx->user_agent);
    if (ctx->user_location)
        fail_msg("expected user_location NULL, got one");
    openai_meta_free(ctx);
}

static void test_other_meta_keys_only(void **state)
{
    (void)state;
    expect_null_context("{\"progressToken\": 7, \"openai/unknown\": \"x\", "
                        "\"io.modelcontextprotocol/related-task\": {\"taskId\": \"t\"}}");
    /* Keys are case sensitive and must match exactly. */
    expect_null_context("{\"OpenAI/session\": \"s\", \"openai/Session\": \"s\", "
                        "\"openai/session \": \"s\", \"openai_session\": \"s\"}");
}

static void test_empty_string_is_kept(void **state)
{
    (void)state;
    OpenAiClientContext *ctx = extract_text("{\"openai/locale\": \"\"}", MAX_LEN);

    if (!ctx)
        fail_msg("expected a context for an empty (but string) locale, got NULL");
    CHECK_STR("locale", "", ctx->locale);
    openai_meta_free(ctx);
}

/* A NUL would end the C string and hide the rest: it is kept visible as U+FFFD. */
static void test_embedded_nul_becomes_replacement_character(void **state)
{
    (void)state;
    OpenAiClientContext *ctx =
        extract_text("{\"openai/session\": \"abc\\u0000def\\u0000\"}", MAX_LEN);

    if (!ctx)
        fail_msg("expected a context, got NULL");
    CHECK_STR("session_id",
              "abc\xEF\xBF\xBD"
              "def\xEF\xBF\xBD",
              ctx->session_id);
    openai_meta_free(ctx);
}

static void test_unicode_preserved_byte_exact(void **state)
{
    (void)state;
    /* Raw UTF-8 and \u escapes (including a surrogate pair) must arrive as the same bytes. */
    OpenAiClientContext *ctx = extract_text(
        "{\"openai/userAgent\": \"\xe2\x82\xac \xf0\x9f\x98\x80 \\u00e9 \\ud83d\\ude00\","
        " \"openai/locale\": \"vi-VN\"}",
        MAX_LEN);

    if (!ctx)
        fail_msg("expected a context, got NULL");
    CHECK_STR("user_agent", "\xe2\x82\xac \xf0\x9f\x98\x80 \xc3\xa9 \xf0\x9f\x98\x80",
              ctx->user_agent);
    CHECK_STR("locale", "vi-VN", ctx->locale);
    openai_meta_free(ctx);
}

/* The JSON text of a jansson value built with json_pack; the value is released. */
static char *dump(json_t *v)
{
    char *text;

    assert_non_null(v);
    text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    assert_non_null(text);
    return text;
}

static void test_one_mib_string_is_capped(void **state)
{
    (void)state;
    size_t n = 1024 * 1024, len;
    char *big = malloc(n + 1);
    char *meta;
    OpenAiClientContext *ctx;

    assert_non_null(big);
    memset(big, 'a', n);
    big[n] = '\0';
    meta = dump(json_pack("{s:s, s:s}", "openai/session", big, "openai/subject", "short"));
    free(big);
    ctx = openai_meta_parse(meta, strlen(meta), MAX_LEN);
    free(meta);
    if (!ctx)
        fail_msg("expected a context, got NULL");
    len = strlen(ctx->session_id);
    if (len != MAX_LEN)
        fail_msg("session_id length: expected %d, got %zu", MAX_LEN, len);
    CHECK_STR("subject_id", "short", ctx->subject_id);
    openai_meta_free(ctx);
}

/* A 1 MiB string of n-byte characters, capped at every offset inside one character. */
static void check_multibyte_cap(const char *ch, size_t n)
{
    size_t count = (1024 * 1024) / n, i, max_len, len, want;
    char *big = malloc(count * n + 1);
    char *meta;

    assert_non_null(big);
    for (i = 0; i < count; i++)
        memcpy(big + i * n, ch, n);
    big[count * n] = '\0';
    meta = dump(json_pack("{s:s}", "openai/session", big));
    free(big);
    for (max_len = 1000; max_len < 1000 + 2 * n; max_len++) {
        OpenAiClientContext *ctx = openai_meta_parse(meta, strlen(meta), max_len);
        if (!ctx)
            fail_msg("cap %zu: expected a context, got NULL", max_len);
        len = strlen(ctx->session_id);
        want = max_len / n * n;
        if (len != want)
            fail_msg("%zu-byte chars, cap %zu: expected length %zu, got %zu", n, max_len, want,
                     len);
        if (!jansson_utf8_ok(ctx->session_id, len))
            fail_msg("%zu-byte chars, cap %zu: result is not valid UTF-8", n, max_len);
        openai_meta_free(ctx);
    }
    free(meta);
}

static void test_cap_never_splits_a_character(void **state)
{
    (void)state;
    check_multibyte_cap("\xc5\xa9", 2);         /* U+0169 */
    check_multibyte_cap("\xe2\x82\xac", 3);     /* U+20AC */
    check_multibyte_cap("\xf0\x9f\x98\x80", 4); /* U+1F600 */
}

static void test_cap_applies_to_every_field(void **state)
{
    (void)state;
    OpenAiClientContext *ctx = extract_text(
        "{\"openai/session\": \"abcdef\", \"openai/subject\": 123456, \"openai/organization\":"
        " \"" VUNG_TAU "\", \"openai/locale\": \"en-US\", \"openai/userAgent\": 10.34599,"
        " \"openai/userLocation\": {\"city\": \"" VUNG_TAU "\", \"latitude\": \"10.34599\"}}",
        3);

    if (!ctx || !ctx->user_location)
        fail_msg("expected a context with location, got %s", ctx ? "no location" : "NULL");
    CHECK_STR("session_id", "abc", ctx->session_id);
    CHECK_STR("subject_id", "123", ctx->subject_id);
    CHECK_STR("organization_id", "V\xc5\xa9", ctx->organization_id); /* 1 + 2 bytes fit */
    CHECK_STR("locale", "en-", ctx->locale);
    CHECK_STR("user_agent", "10.", ctx->user_agent);
    CHECK_STR("city", "V\xc5\xa9", ctx->user_location->city);
    CHECK_STR("latitude", "10.", ctx->user_location->latitude);
    openai_meta_free(ctx);

    ctx = extract_text("{\"openai/session\": \"abc\"}", 0);
    if (!ctx)
        fail_msg("cap 0: expected a context with an empty session, got NULL");
    CHECK_STR("session_id (cap 0)", "", ctx->session_id);
    openai_meta_free(ctx);
}

static void test_utf8_cut_is_robust_on_invalid_input(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
        size_t max_len;
        size_t expected;
    } cases[] = {
        {"abcdef", 6, 100, 6},
        {"abcdef", 6, 4, 4},
        {"abcdef", 6, 0, 0},
        {"", 0, 10, 0},
        {"ab\xff"
         "cd",
         5, 100, 2}, /* byte never valid in UTF-8 */
        {"ab\x80"
         "cd",
         5, 100, 2},                            /* stray continuation byte */
        {"ab\xe2\x82", 4, 100, 2},              /* truncated at the end of the input */
        {"ab\xe2\x82\xac", 5, 4, 2},            /* complete, but the cap lands inside */
        {"ab\xe2\x82\xac", 5, 5, 5},            /* cap exactly at the end of it */
        {"\xc0\xaf", 2, 10, 0},                 /* overlong '/' */
        {"\xe0\x80\xaf", 3, 10, 0},             /* overlong, 3 bytes */
        {"\xed\xa0\x80", 3, 10, 0},             /* UTF-16 surrogate */
        {"\xf4\x90\x80\x80", 4, 10, 0},         /* above U+10FFFF */
        {"\xf8\x88\x80\x80\x80", 5, 10, 0},     /* 5-byte form */
        {"a\xc3(b", 4, 10, 1},                  /* lead byte without continuation */
        {"a\0b", 3, 10, 3},                     /* NUL is valid UTF-8; copies handle it */
        {"\xf0\x9f\x98\x80\xf0\x9f", 6, 10, 4}, /* second emoji truncated */
    };
    size_t i, got;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        got = openai_meta_utf8_cut(cases[i].bytes, cases[i].len, cases[i].max_len);
        if (got != cases[i].expected)
            fail_msg("case %zu (len %zu, cap %zu): expected %zu, got %zu", i, cases[i].len,
                     cases[i].max_len, cases[i].expected, got);
    }
}

static void test_dup_is_deep(void **state)
{
    (void)state;
    OpenAiClientContext *orig = extract_text(
        "{\"openai/session\": \"s1\", \"openai/subject\": \"u1\", \"openai/organization\":"
        " \"o1\", \"openai/locale\": \"en-US\", \"openai/userAgent\": \"UA\","
        " \"openai/userLocation\": {\"city\": \"" VUNG_TAU "\", \"region\": \"BR-VT\","
        " \"country\": \"VN\", \"timezone\": \"Asia/Ho_Chi_Minh\", \"latitude\": 10.34599,"
        " \"longitude\": \"107.08426\"}}",
        MAX_LEN);
    OpenAiClientContext *copy;

    if (!orig || !orig->user_location)
        fail_msg("expected a full context, got %s", orig ? "no location" : "NULL");
    copy = openai_meta_dup(orig);
    if (!copy || !copy->user_location)
        fail_msg("expected a full copy, got %s", copy ? "no location" : "NULL");
    if (copy == orig || copy->session_id == orig->session_id ||
        copy->user_location == orig->user_location ||
        copy->user_location->city == orig->user_location->city)
        fail_msg("expected a deep copy, got shared pointers");
    /* Poison and free the original: the copy must not notice (ASan would flag a shared
     * pointer as use-after-free). */
    orig->session_id[0] = 'X';
    openai_meta_free(orig);
    CHECK_STR("session_id", "s1", copy->session_id);
    CHECK_STR("subject_id", "u1", copy->subject_id);
    CHECK_STR("organization_id", "o1", copy->organization_id);
    CHECK_STR("locale", "en-US", copy->locale);
    CHECK_STR("user_agent", "UA", copy->user_agent);
    CHECK_STR("city", VUNG_TAU, copy->user_location->city);
    CHECK_STR("region", "BR-VT", copy->user_location->region);
    CHECK_STR("country", "VN", copy->user_location->country);
    CHECK_STR("timezone", "Asia/Ho_Chi_Minh", copy->user_location->timezone);
    CHECK_STR("latitude", "10.34599", copy->user_location->latitude);
    CHECK_STR("longitude", "107.08426", copy->user_location->longitude);
    openai_meta_free(copy);
}

static void test_dup_without_location_and_null(void **state)
{
    (void)state;
    OpenAiClientContext *orig = extract_text("{\"openai/locale\": \"fr-FR\"}", MAX_LEN);
    OpenAiClientContext *copy;

    if (!orig)
        fail_msg("expected a context, got NULL");
    copy = openai_meta_dup(orig);
    openai_meta_free(orig);
    if (!copy)
        fail_msg("expected a copy, got NULL");
    CHECK_STR("locale", "fr-FR", copy->locale);
    CHECK_STR("session_id", NULL, copy->session_id);
    if (copy->user_location)
        fail_msg("expected no user_location in the copy, got one");
    openai_meta_free(copy);

    if (openai_meta_dup(NULL) != NULL)
        fail_msg("expected openai_meta_dup(NULL) == NULL, got a context");
    openai_meta_free(NULL); /* must not crash */
}

/* openai_meta_to_json is the inverse of the parser (what shared_state stores in Redis). */
static void test_to_json_round_trip(void **state)
{
    (void)state;
    static const char meta[] =
        "{\"openai/session\":\"s-1\",\"openai/subject\":\"u\",\"openai/organization\":\"o\","
        "\"openai/locale\":\"vi-VN\",\"openai/userAgent\":\"UA\",\"openai/userLocation\":"
        "{\"city\":\"Hanoi\",\"country\":\"VN\",\"latitude\":\"21.0\"}}";
    OpenAiClientContext *a = openai_meta_parse(meta, strlen(meta), 256);
    assert_non_null(a);
    json_t *j = openai_meta_to_json(a);
    char *text = json_dumps(j, JSON_COMPACT);
    OpenAiClientContext *b = openai_meta_parse(text, strlen(text), 256);
    assert_non_null(b);
    assert_string_equal(b->session_id, "s-1");
    assert_string_equal(b->subject_id, "u");
    assert_string_equal(b->organization_id, "o");
    assert_string_equal(b->locale, "vi-VN");
    assert_string_equal(b->user_agent, "UA");
    assert_non_null(b->user_location);
    assert_string_equal(b->user_location->city, "Hanoi");
    assert_string_equal(b->user_location->latitude, "21.0");
    assert_null(b->user_location->region);
    free(text);
    json_decref(j);
    openai_meta_free(a);
    openai_meta_free(b);
    /* NULL: an empty object */
    j = openai_meta_to_json(NULL);
    assert_int_equal(json_object_size(j), 0);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_to_json_round_trip),
        cmocka_unit_test(test_article_wire_example),
        cmocka_unit_test(test_numbers_become_decimal_strings),
        cmocka_unit_test(test_numeric_location_members),
        cmocka_unit_test(test_wrong_types_are_ignored),
        cmocka_unit_test(test_wrong_types_beside_a_good_key),
        cmocka_unit_test(test_user_location_must_be_a_usable_object),
        cmocka_unit_test(test_empty_and_non_object_meta),
        cmocka_unit_test(test_partial_meta_only_session),
        cmocka_unit_test(test_other_meta_keys_only),
        cmocka_unit_test(test_empty_string_is_kept),
        cmocka_unit_test(test_embedded_nul_becomes_replacement_character),
        cmocka_unit_test(test_unicode_preserved_byte_exact),
        cmocka_unit_test(test_one_mib_string_is_capped),
        cmocka_unit_test(test_cap_never_splits_a_character),
        cmocka_unit_test(test_cap_applies_to_every_field),
        cmocka_unit_test(test_utf8_cut_is_robust_on_invalid_input),
        cmocka_unit_test(test_dup_is_deep),
        cmocka_unit_test(test_dup_without_location_and_null),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
