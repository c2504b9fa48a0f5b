/* Tests for src/http1.c: the in-place request head parser, the header helpers and the
 * chunked decoder, each fed its input whole, split at every point and byte by byte (a
 * socket read can end anywhere). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mcpeek/http1.h"

/* ---- request head ------------------------------------------------------------------- */

/* Parses a request head held in a writable copy (the parser works in place). */
static int parse_req(const char *text, size_t len, char *buf, struct http1_request *r)
{
    memcpy(buf, text, len);
    return http1_parse_request_head(buf, len, r);
}

static void check_header(const struct http1_request *r, const char *name, const char *want)
{
    const char *v = http1_request_header(r, name);
    if (!v)
        fail_msg("header %s missing", name);
    if (strcmp(v, want) != 0)
        fail_msg("header %s: expected '%s', got '%s'", name, want, v);
}

static void expect_malformed(const char *head)
{
    char buf[512];
    struct http1_request r;
    int got = parse_req(head, strlen(head), buf, &r);
    if (got != -1)
        fail_msg("expected -1 for '%s', got %d", head, got);
}

static void test_request_line_and_fields(void **state)
{
    (void)state;
    char buf[512];
    struct http1_request r;
    const char *h = "POST /mcp?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n";
    assert_int_equal(parse_req(h, strlen(h), buf, &r), 0);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.target, "/mcp?x=1");
    assert_int_equal(r.minor, 1);
    assert_int_equal(r.n_headers, 2);
    check_header(&r, "host", "a");
    check_header(&r, "CONTENT-LENGTH", "2");
    assert_null(http1_request_header(&r, "Content"));
    expect_malformed("POST  /mcp HTTP/1.1\r\n\r\n");
    expect_malformed("POST /mcp HTTP/2.0\r\n\r\n");
    expect_malformed("PO ST /mcp HTTP/1.1\r\n\r\n");
}

static void test_header_value_whitespace_is_trimmed(void **state)
{
    (void)state;
    char buf[512];
    struct http1_request r;
    const char *h = "GET / HTTP/1.1\r\n"
                    "A:   spaced  \r\n"
                    "B:\tx y\t \r\n"
                    "C:nospace\r\n"
                    "D: \t \r\n"
                    "E: a\tb\r\n"
                    "Location: http://h:1/x\r\n"
                    "\r\n";
    assert_int_equal(parse_req(h, strlen(h), buf, &r), 0);
    assert_int_equal(r.n_headers, 6);
    check_header(&r, "A", "spaced");
    check_header(&r, "B", "x y");
    check_header(&r, "C", "nospace");
    check_header(&r, "D", "");
    check_header(&r, "E", "a\tb");                /* inner tab kept */
    check_header(&r, "Location", "http://h:1/x"); /* a colon inside belongs to the value */
}

static void test_bad_header_names_and_folding_are_refused(void **state)
{
    (void)state;
    expect_malformed("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n");
    expect_malformed("GET / HTTP/1.1\r\nName : x\r\n\r\n");
    expect_malformed("GET / HTTP/1.1\r\nName\t: x\r\n\r\n");
    expect_malformed("GET / HTTP/1.1\r\n: no name\r\n\r\n");
    expect_malformed("GET / HTTP/1.1\r\nNoColon\r\n\r\n");
    expect_malformed("GET / HTTP/1.1\r\nNa(me: x\r\n\r\n");
    expect_malformed("GET / HTTP/1.1\r\nNa\"me: x\r\n\r\n");
    /* Obsolete line folding, with a space or a tab. */
    expect_malformed("GET / HTTP/1.1\r\nA: first\r\n second\r\n\r\n");
    expect_malformed("GET / HTTP/1.1\r\nA: first\r\n\tsecond\r\n\r\n");
}

static void test_control_chars_in_values_are_refused(void **state)
{
    (void)state;
    expect_malformed("GET / HTTP/1.1\r\nA: x\ry\r\n\r\n");
    expect_malformed("GET / HTTP/1.1\r\nA: x\x01y\r\n\r\n");
    expect_malformed("GET / HTTP/1.1\r\nA: x\x1b[31m\r\n\r\n");
    static const char nul[] = "GET / HTTP/1.1\r\nA: x\0y\r\n\r\n";
    char buf[64];
    struct http1_request r;
    assert_int_equal(parse_req(nul, sizeof(nul) - 1, buf, &r), -1);
}

static void test_header_count_limit(void **state)
{
    (void)state;
    char text[8192], buf[8192];
    struct http1_request r;
    for (int n = HTTP1_MAX_HEADERS; n <= HTTP1_MAX_HEADERS + 1; n++) {
        size_t len = (size_t)snprintf(text, sizeof(text), "GET / HTTP/1.1\r\n");
        for (int i = 0; i < n; i++)
            len += (size_t)snprintf(text + len, sizeof(text) - len, "H%d: %d\r\n", i, i);
        len += (size_t)snprintf(text + len, sizeof(text) - len, "\r\n");
        assert_true(len < sizeof(text));
        int got = parse_req(text, len, buf, &r);
        if (n == HTTP1_MAX_HEADERS) {
            assert_int_equal(got, 0);
            assert_int_equal(r.n_headers, HTTP1_MAX_HEADERS);
            check_header(&r, "H99", "99");
        } else if (got != -2) {
            fail_msg("%d headers: expected -2 (431), got %d", n, got);
        }
    }
}

/* ---- header helpers ---------------------------------------------------------------- */

static bool has(const char *value, const char *token)
{
    return http1_value_has_token(value, strlen(value), token);
}

static void test_value_has_token(void **state)
{
    (void)state;
    assert_true(has("close", "close"));
    assert_true(has("Close", "close"));
    assert_true(has("keep-alive, Close", "close"));
    assert_true(has("  close  ", "close"));
    assert_true(has(",,close,,", "close"));
    assert_true(has("a ,\tclose\t, b", "close"));
    assert_true(has("X-Secret, x-other", "x-secret"));
    assert_false(has("", "close"));
    assert_false(has("closed", "close"));
    assert_false(has("x-close", "close"));
    assert_false(has("clo se", "close"));
    assert_false(has("keep-alive", "close"));
    assert_false(has("clos", "close"));
    /* Only the given span counts. */
    assert_false(http1_value_has_token("keep-alive, close", 10, "close"));
    assert_true(http1_value_has_token("keep-alive, close", 10, "keep-alive"));
}

static int cl(const char *s, uint64_t *v)
{
    return http1_parse_content_length(s, strlen(s), v);
}

static void test_content_length(void **state)
{
    (void)state;
    uint64_t v = 77;
    assert_int_equal(cl("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(cl("12345", &v), 0);
    assert_int_equal(v, 12345);
    assert_int_equal(cl("007", &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(cl("999999999999999999", &v), 0); /* 18 digits */
    assert_int_equal(v, 999999999999999999ull);
    static const char *const bad[] = {
        "",
        "9999999999999999999",
        "18446744073709551616",
        "99999999999999999999999",
        "+1",
        "-1",
        " 1",
        "1 ",
        "1a",
        "0x10",
        "1,1",
        "1.0",
        "１",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 77;
        if (cl(bad[i], &v) != -1)
            fail_msg("Content-Length \"%s\": expected -1", bad[i]);
        if (v != 77)
            fail_msg("Content-Length \"%s\": refused but wrote %llu", bad[i],
                     (unsigned long long)v);
    }
}

/* ---- chunked decoder ---------------------------------------------------------------- */

struct sink {
    char data[4096];
    size_t len;
};

/* Feeds in[0..len) until it is used up or the body ends; appends payload to `out`. Returns
 * the bytes consumed, or -1 on a framing error. */
static ssize_t feed_all(struct http1_chunked *c, const char *in, size_t len, struct sink *out)
{
    size_t off = 0;
    while (off < len && !http1_chunked_done(c)) {
        const char *data = (const char *)1;
        size_t data_len = 99;
        ssize_t r = http1_chunked_feed(c, in + off, len - off, &data, &data_len);
        if (r < 0)
            return -1;
        if (r == 0)
            fail_msg("chunked_feed consumed nothing of %zu bytes before the end", len - off);
        if ((size_t)r > len - off)
            fail_msg("chunked_feed consumed %zd of %zu bytes", r, len - off);
        if (data_len > 0) {
            if (data < in + off || data + data_len > in + off + (size_t)r)
                fail_msg("payload span lies outside the consumed input");
            assert_true(out->len + data_len <= sizeof(out->data));
            memcpy(out->data + out->len, data, data_len);
            out->len += data_len;
        }
        off += (size_t)r;
    }
    return (ssize_t)off;
}

/* Chunk extensions (one quoting a ';'), uppercase and lowercase hex, a trailer section, then
 * bytes of the next response that must stay unconsumed. */
static const char CHUNKED_BODY[] = "5;ext=1\r\n"
                                   "hello\r\n"
                                   "1A\r\n"
                                   "abcdefghijklmnopqrstuvwxyz\r\n"
                                   "b;name=\"quoted;x\";flag\r\n"
                                   " {\"id\":12}\n\r\n"
                                   "00000001\r\n"
                                   "!\r\n"
                                   "0;last=yes\r\n"
                                   "Trailer-A: x\r\n"
                                   "Server-Timing: db;dur=53\r\n"
                                   "\r\n";
static const char CHUNKED_PAYLOAD[] = "hello"
                                      "abcdefghijklmnopqrstuvwxyz"
                                      " {\"id\":12}\n"
                                      "!";
static const char AFTER[] = "HTTP/1.1 200 OK\r\n";

static void expect_payload(const struct sink *s, const char *what)
{
    if (s->len != strlen(CHUNKED_PAYLOAD) || memcmp(s->data, CHUNKED_PAYLOAD, s->len) != 0)
        fail_msg("%s: payload \"%.*s\", expected \"%s\"", what, (int)s->len, s->data,
                 CHUNKED_PAYLOAD);
}

static void test_chunked_split_at_every_point(void **state)
{
    (void)state;
    char in[512];
    size_t body_len = strlen(CHUNKED_BODY), len = body_len + strlen(AFTER);
    memcpy(in, CHUNKED_BODY, body_len);
    memcpy(in + body_len, AFTER, strlen(AFTER));
    for (size_t split = 0; split <= len; split++) {
        struct http1_chunked c;
        struct sink s = {.len = 0};
        memset(&c, 0, sizeof(c));
        ssize_t a = feed_all(&c, in, split, &s);
        assert_true(a >= 0);
        ssize_t b = feed_all(&c, in + a, len - (size_t)a, &s);
        assert_true(b >= 0);
        char what[64];
        snprintf(what, sizeof(what), "split at %zu", split);
        if (!http1_chunked_done(&c))
            fail_msg("%s: body not complete", what);
        if ((size_t)(a + b) != body_len)
            fail_msg("%s: consumed %zd bytes, the body has %zu", what, a + b, body_len);
        expect_payload(&s, what);
    }
}

static void test_chunked_byte_by_byte(void **state)
{
    (void)state;
    struct http1_chunked c;
    struct sink s = {.len = 0};
    memset(&c, 0, sizeof(c));
    size_t len = strlen(CHUNKED_BODY);
    for (size_t i = 0; i < len; i++) {
        if (http1_chunked_done(&c))
            fail_msg("body complete after %zu of %zu bytes", i, len);
        assert_int_equal(feed_all(&c, CHUNKED_BODY + i, 1, &s), 1);
    }
    assert_true(http1_chunked_done(&c));
    expect_payload(&s, "byte by byte");
    /* Done: what follows belongs to the next response. */
    const char *data;
    size_t data_len;
    assert_int_equal(http1_chunked_feed(&c, AFTER, strlen(AFTER), &data, &data_len), 0);
    assert_int_equal(data_len, 0);
}

static void expect_chunked(const char *body, const char *payload)
{
    for (size_t step = 1; step <= strlen(body); step++) {
        struct http1_chunked c;
        struct sink s = {.len = 0};
        memset(&c, 0, sizeof(c));
        size_t total = 0;
        for (size_t off = 0; off < strlen(body); off += step) {
            size_t n = strlen(body) - off < step ? strlen(body) - off : step;
            ssize_t r = feed_all(&c, body + off, n, &s);
            if (r < 0)
                fail_msg("%s in pieces of %zu: framing error at %zu", body, step, off);
            total += (size_t)r;
        }
        if (!http1_chunked_done(&c) || total != strlen(body) || s.len != strlen(payload) ||
            memcmp(s.data, payload, s.len) != 0)
            fail_msg("%s in pieces of %zu: done %d consumed %zu payload \"%.*s\", expected "
                     "\"%s\"",
                     body, step, http1_chunked_done(&c), total, (int)s.len, s.data, payload);
    }
}

static void test_chunked_variants(void **state)
{
    (void)state;
    expect_chunked("0\r\n\r\n", "");                /* empty body */
    expect_chunked("0;x=y\r\n\r\n", "");            /* extension on the last chunk */
    expect_chunked("3\r\nabc\r\n0\r\n\r\n", "abc"); /* no trailer */
    expect_chunked("3\nabc\n0\n\n", "abc");         /* bare LF line ends */
    expect_chunked("A\r\n0123456789\r\n0\r\n\r\n", "0123456789");
    expect_chunked("a\r\n0123456789\r\n0\r\n\r\n", "0123456789");
    expect_chunked(
        "Ff\r\n"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxx\r\n0\r\n\r\n",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxx");
    expect_chunked("2\r\n\r\n\r\n0\r\n\r\n", "\r\n"); /* payload that looks like framing */
    expect_chunked("1\r\n0\r\n0\r\nA: 1\r\nB: 2\r\n\r\n", "0");
    expect_chunked("000000000000003\r\nabc\r\n0\r\n\r\n", "abc"); /* 15 digits */
}

/* Feeds `body` whole and byte by byte; both must report a framing error, and the payload
 * handed out before it must be `before`. */
static void expect_chunked_error(const char *body, const char *before)
{
    for (size_t step = 1; step <= strlen(body); step = step == 1 ? strlen(body) : step + 1) {
        struct http1_chunked c;
        struct sink s = {.len = 0};
        memset(&c, 0, sizeof(c));
        bool failed = false;
        for (size_t off = 0; off < strlen(body) && !failed; off += step) {
            size_t n = strlen(body) - off < step ? strlen(body) - off : step;
            failed = feed_all(&c, body + off, n, &s) < 0;
        }
        if (!failed)
            fail_msg("%s (pieces of %zu): expected a framing error, done=%d", body, step,
                     http1_chunked_done(&c));
        if (s.len != strlen(before) || memcmp(s.data, before, s.len) != 0)
            fail_msg("%s: payload before the error \"%.*s\", expected \"%s\"", body, (int)s.len,
                     s.data, before);
    }
}

static void test_chunked_errors(void **state)
{
    (void)state;
    expect_chunked_error("\r\nhello\r\n0\r\n\r\n", "");           /* missing size */
    expect_chunked_error(";ext\r\nhello\r\n0\r\n\r\n", "");       /* extension without size */
    expect_chunked_error("g\r\nhello\r\n0\r\n\r\n", "");          /* not hex */
    expect_chunked_error("0x5\r\nhello\r\n0\r\n\r\n", "");        /* no 0x prefix in HTTP */
    expect_chunked_error("-5\r\nhello\r\n0\r\n\r\n", "");         /* no sign */
    expect_chunked_error("1000000000000000\r\nhello\r\n", "");    /* 16 digits */
    expect_chunked_error("FFFFFFFFFFFFFFFFF\r\nhello\r\n", "");   /* 17 digits, would overflow */
    expect_chunked_error("5\r\nhelloX\r\n0\r\n\r\n", "hello");    /* no CRLF after the data */
    expect_chunked_error("5\r\nhello\rX0\r\n\r\n", "hello");      /* CR without LF */
    expect_chunked_error("5\r\nhello\r\n\r\n0\r\n\r\n", "hello"); /* empty size line */
    expect_chunked_error("3\r\nabcdef\r\n0\r\n\r\n", "abc");      /* chunk longer than its size */
    expect_chunked_error("0\r\n\rX\r\n", "");                     /* bad end of trailer */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_line_and_fields),
        cmocka_unit_test(test_header_value_whitespace_is_trimmed),
        cmocka_unit_test(test_bad_header_names_and_folding_are_refused),
        cmocka_unit_test(test_control_chars_in_values_are_refused),
        cmocka_unit_test(test_header_count_limit),
        cmocka_unit_test(test_value_has_token),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_chunked_split_at_every_point),
        cmocka_unit_test(test_chunked_byte_by_byte),
        cmocka_unit_test(test_chunked_variants),
        cmocka_unit_test(test_chunked_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
