/* Tests for src/http1.c: the in-place request head parser, the header helpers and the
 * chunked decoder, each fed its input whole, split at every point and byte by byte (a
 * socket read can end anywhere). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

static void expect_chunked_mode(const char *body, const char *payload, bool strict)
{
    for (size_t step = 1; step <= strlen(body); step++) {
        struct http1_chunked c;
        struct sink s = {.len = 0};
        memset(&c, 0, sizeof(c));
        c.strict = strict;
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

static void expect_chunked(const char *body, const char *payload)
{
    expect_chunked_mode(body, payload, false);
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
static void expect_chunked_error_mode(const char *body, const char *before, bool strict)
{
    for (size_t step = 1; step <= strlen(body); step = step == 1 ? strlen(body) : step + 1) {
        struct http1_chunked c;
        struct sink s = {.len = 0};
        memset(&c, 0, sizeof(c));
        c.strict = strict;
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

static void expect_chunked_error(const char *body, const char *before)
{
    expect_chunked_error_mode(body, before, false);
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

/* ---- the strict (request-side) chunked decoder: RFC 9112 7.1 ---------------------------- */

static void test_strict_chunked_accepts_the_grammar(void **state)
{
    (void)state;
    /* CHUNKED_BODY: extensions with token and quoted values, a quoted ';', trailers */
    expect_chunked_mode(CHUNKED_BODY, CHUNKED_PAYLOAD, true);
    expect_chunked_mode("5;a;b=c;d=\"q \\\"x\\\\\"\r\nhello\r\n0\r\n\r\n", "hello", true);
    expect_chunked_mode("5;a=\"\xc3\xa9\"\r\nhello\r\n0\r\nX-T: a\tb\r\n\r\n", "hello", true);
    expect_chunked_mode("0\r\n\r\n", "", true);
}

static void test_strict_chunked_refusals(void **state)
{
    (void)state;
    /* whitespace or control bytes in the size line (RFC 9112 7.1) */
    expect_chunked_error_mode("5 \r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5\t\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode(" 5\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5 ;a\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5\x01\r\nhello\r\n0\r\n\r\n", "", true);
    /* extensions that are not ;token[=token|quoted-string] (RFC 9112 7.1.1) */
    expect_chunked_error_mode("5; a\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5;a b\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5;a =b\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5;a= b\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5;=b\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5;\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5;a=\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5;a=b=c\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5;a=\"x\"y\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5;a=\"x\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5;a=\"\\\x01\"\r\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5;a(b)\r\nhello\r\n0\r\n\r\n", "", true);
    /* bare LF as a line end anywhere in the framing (RFC 9112 7.1, 2.2) */
    expect_chunked_error_mode("5\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5;a=b\nhello\r\n0\r\n\r\n", "", true);
    expect_chunked_error_mode("5\r\nhello\n0\r\n\r\n", "hello", true);
    expect_chunked_error_mode("5\r\nhello\r\n0\n\r\n", "hello", true);
    expect_chunked_error_mode("5\r\nhello\r\n0\r\n\n", "hello", true);
    expect_chunked_error_mode("0\r\nA: 1\n\r\n", "", true);
    /* control bytes in a trailer line */
    expect_chunked_error_mode("0\r\nA: \x01\r\n\r\n", "", true);
    /* the lenient decoder (upstream side) still takes them */
    expect_chunked("5 ;a b\nhello\n0\n\n", "hello");
}

static void test_strict_chunked_caps_extension_bytes(void **state)
{
    (void)state;
    static char body[2 * HTTP1_CHUNK_FRAMING_MAX + 64];
    size_t n = 0;
    memcpy(body, "1;a=", 4);
    n = 4;
    while (n < HTTP1_CHUNK_FRAMING_MAX + 8)
        body[n++] = 'x';
    memcpy(body + n, "\r\nx\r\n0\r\n\r\n", 11);
    struct http1_chunked c;
    struct sink s = {.len = 0};
    memset(&c, 0, sizeof(c));
    c.strict = true;
    assert_int_equal(feed_all(&c, body, strlen(body), &s), -1);
    /* just below the cap: fine */
    body[4 + HTTP1_CHUNK_FRAMING_MAX - 8] = '\0';
    size_t len = strlen(body);
    memcpy(body + len, "\r\nx\r\n0\r\n\r\n", 11);
    memset(&c, 0, sizeof(c));
    c.strict = true;
    s.len = 0;
    assert_int_equal(feed_all(&c, body, strlen(body), &s), (ssize_t)strlen(body));
    assert_true(http1_chunked_done(&c));
}

/* ---- request heads and their framing rules (RFC 9112 3.2, 6.1, 6.3) ---------------------- */

/* Parses `head` (CRLF lines, ending in an empty line) and applies the framing rules. */
static const char *framing_of(const char *head, struct http1_framing *f, char *target_out,
                              size_t target_size)
{
    static char buf[2048];
    struct http1_request r;
    size_t len = strlen(head);
    assert_true(len < sizeof(buf));
    memcpy(buf, head, len + 1);
    assert_int_equal(http1_head_end(buf, len, 0), len);
    if (http1_parse_request_head(buf, len, &r) != 0)
        fail_msg("head not parsed: %s", head);
    const char *why = http1_request_framing(&r, f);
    if (target_out)
        snprintf(target_out, target_size, "%s", r.target);
    return why;
}

static void expect_framing_refused(const char *head, const char *rule)
{
    struct http1_framing f;
    const char *why = framing_of(head, &f, NULL, 0);
    if (!why)
        fail_msg("accepted: %s", head);
    if (!strstr(why, rule))
        fail_msg("refused for '%s', expected '%s': %s", why, rule, head);
}

static void test_request_framing_accepts(void **state)
{
    (void)state;
    struct http1_framing f;
    char target[256];
    assert_null(framing_of("POST /mcp HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n"
                           "Content-Length: 5\r\n\r\n",
                           &f, target, sizeof(target)));
    assert_true(f.has_length);
    assert_int_equal(f.length, 5);
    assert_false(f.chunked);
    assert_string_equal(f.host, "a.example");
    assert_null(
        framing_of("POST /mcp HTTP/1.1\r\nHost: [::1]:8080\r\nTransfer-Encoding: Chunked\r\n\r\n",
                   &f, target, sizeof(target)));
    assert_true(f.chunked);
    assert_null(framing_of("GET /mcp HTTP/1.0\r\n\r\n", &f, target, sizeof(target)));
    assert_null(f.host); /* HTTP/1.0 may omit Host */
    assert_null(framing_of("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &f, target, sizeof(target)));
    assert_null(framing_of("GET /x HTTP/1.1\r\nHost:\r\n\r\n", &f, target, sizeof(target)));
    /* absolute-form with the Host's authority: rewritten to origin-form */
    assert_null(
        framing_of("POST http://A.example:8080/mcp?x=1 HTTP/1.1\r\nHost: a.example:8080\r\n\r\n",
                   &f, target, sizeof(target)));
    assert_string_equal(target, "/mcp?x=1");
    assert_null(framing_of("GET https://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n", &f, target,
                           sizeof(target)));
    assert_string_equal(target, "/");
    assert_null(framing_of("GET http://a.example?q HTTP/1.1\r\nHost: a.example\r\n\r\n", &f, target,
                           sizeof(target)));
    assert_string_equal(target, "/?q");
}

static void test_request_framing_refusals(void **state)
{
    (void)state;
    expect_framing_refused(
        "POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "6.3");
    expect_framing_refused("POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", "6.3");
    expect_framing_refused("POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n",
                           "6.1");
    expect_framing_refused(
        "POST /mcp HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "7");
    expect_framing_refused("POST /mcp HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n",
                           "7");
    /* Transfer-Encoding on HTTP/1.0 (RFC 9112 6.1) */
    expect_framing_refused("POST /mcp HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                           "HTTP/1.0 request (RFC 9112 6.1)");
    /* Host: missing on 1.1, repeated, malformed (RFC 9112 3.2) */
    expect_framing_refused("POST /mcp HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "no Host");
    expect_framing_refused("POST /mcp HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
                           "more than one Host");
    expect_framing_refused("POST /mcp HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
                           "more than one Host");
    expect_framing_refused("GET /mcp HTTP/1.1\r\nHost: a b\r\n\r\n", "3.2)");
    expect_framing_refused("GET /mcp HTTP/1.1\r\nHost: user@a\r\n\r\n", "3.2)");
    /* absolute-form whose authority is not the Host (RFC 9112 3.2.2) */
    expect_framing_refused("POST http://evil.example/mcp HTTP/1.1\r\nHost: a.example\r\n\r\n",
                           "3.2.2");
    expect_framing_refused("POST http://a.example:81/mcp HTTP/1.1\r\nHost: a.example\r\n\r\n",
                           "3.2.2");
    expect_framing_refused("POST http://u@a.example/mcp HTTP/1.1\r\nHost: a.example\r\n\r\n",
                           "3.2)");
    expect_framing_refused("POST ftp://a.example/mcp HTTP/1.1\r\nHost: a.example\r\n\r\n", "3.2)");
    expect_framing_refused("POST mcp HTTP/1.1\r\nHost: a.example\r\n\r\n", "3.2)");
    expect_framing_refused("GET * HTTP/1.1\r\nHost: a.example\r\n\r\n", "3.2.4");
}

/* ---- in-place decoding of a request buffer, and rebasing a parsed head ---------------- */

/* "HEAD" + a chunked body + the next request, fed to http1_chunked_in_place as it arrives
 * in pieces of `step` bytes: the payload ends up right after the head and the next request
 * right after the payload, whatever the split. */
static void check_in_place(size_t step)
{
    static const char head[] = "HEAD-BYTES\r\n\r\n";
    static const char body[] = "5;x=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\n";
    static const char next[] = "GET /next HTTP/1.1\r\n";
    char input[256], buf[256];
    size_t hl = strlen(head), in_total;
    snprintf(input, sizeof(input), "%s%s%s", head, body, next);
    in_total = strlen(input);
    memcpy(buf, input, hl);
    size_t len = hl, decoded = 0, fed = hl;
    struct http1_chunked c;
    memset(&c, 0, sizeof(c));
    c.strict = true;
    int rc = 0;
    while (fed < in_total && rc == 0) {
        size_t n = in_total - fed < step ? in_total - fed : step;
        memcpy(buf + len, input + fed, n); /* what one read() appends */
        len += n;
        fed += n;
        rc = http1_chunked_in_place(&c, buf, hl, &decoded, &len, 1000);
        assert_true(rc >= 0);
        /* framing never stays in the buffer: what is there is head, payload, undecoded rest */
        assert_int_equal(len, hl + decoded + (len - hl - decoded));
        assert_memory_equal(buf, head, hl);
    }
    if (rc != 1)
        fail_msg("pieces of %zu: body not complete (rc %d)", step, rc);
    /* bytes that arrived with the body's end are the next request's, right behind it */
    memcpy(buf + len, input + fed, in_total - fed);
    len += in_total - fed;
    assert_int_equal(decoded, strlen("hello 0123456789"));
    assert_memory_equal(buf + hl, "hello 0123456789", decoded);
    assert_int_equal(len, hl + decoded + strlen(next));
    assert_memory_equal(buf + hl + decoded, next, strlen(next));
}

static void test_chunked_in_place_any_split(void **state)
{
    (void)state;
    for (size_t step = 1; step <= 80; step++)
        check_in_place(step);
}

static void test_chunked_in_place_limits_and_errors(void **state)
{
    (void)state;
    char buf[64];
    size_t len, decoded;
    struct http1_chunked c;

    /* payload above max_decoded: -2, before any of it is copied past the limit */
    memcpy(buf, "H|5\r\nhello\r\n0\r\n\r\n", 18);
    len = 17, decoded = 0;
    memset(&c, 0, sizeof(c));
    c.strict = true;
    assert_int_equal(http1_chunked_in_place(&c, buf, 2, &decoded, &len, 4), -2);
    assert_int_equal(decoded, 0);
    /* exactly max_decoded: fine */
    len = 17, decoded = 0;
    memset(&c, 0, sizeof(c));
    c.strict = true;
    assert_int_equal(http1_chunked_in_place(&c, buf, 2, &decoded, &len, 5), 1);
    assert_int_equal(len, 7);
    assert_memory_equal(buf, "H|hello", 7);
    /* broken framing: -1 */
    memcpy(buf, "H|5 \r\nhello\r\n0\r\n\r\n", 19);
    len = 19, decoded = 0;
    memset(&c, 0, sizeof(c));
    c.strict = true;
    assert_int_equal(http1_chunked_in_place(&c, buf, 2, &decoded, &len, 100), -1);
    /* only framing so far: the size line leaves the buffer, nothing decoded yet */
    memcpy(buf, "H|5;a=b\r\nhe", 11);
    len = 11, decoded = 0;
    memset(&c, 0, sizeof(c));
    c.strict = true;
    assert_int_equal(http1_chunked_in_place(&c, buf, 2, &decoded, &len, 100), 0);
    assert_int_equal(decoded, 2);
    assert_int_equal(len, 4);
    assert_memory_equal(buf, "H|he", 4);
}

static void test_request_offsets_survive_a_moved_buffer(void **state)
{
    (void)state;
    const char text[] = "POST /mcp HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nContent-Length: 5\r\n\r\n";
    size_t len = strlen(text);
    char *buf = malloc(len);
    assert_non_null(buf);
    memcpy(buf, text, len);
    struct http1_request r;
    assert_int_equal(http1_parse_request_head(buf, len, &r), 0);
    struct http1_request_offsets o;
    http1_request_offsets_save(&r, buf, &o);
    /* a new buffer at another address, with the old one gone (ASan: no use after free) */
    char *moved = malloc(len + 4096);
    assert_non_null(moved);
    memcpy(moved, buf, len);
    free(buf);
    http1_request_offsets_restore(&r, moved, &o);
    assert_ptr_equal(r.method, moved);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.target, "/mcp");
    assert_int_equal(r.n_headers, 3);
    assert_string_equal(r.headers[1].name, "X-One");
    assert_string_equal(r.headers[1].value, "1");
    assert_string_equal(http1_request_header(&r, "content-length"), "5");
    assert_true(r.headers[2].name > moved && r.headers[2].value < moved + len);
    free(moved);
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
        cmocka_unit_test(test_strict_chunked_accepts_the_grammar),
        cmocka_unit_test(test_strict_chunked_refusals),
        cmocka_unit_test(test_strict_chunked_caps_extension_bytes),
        cmocka_unit_test(test_request_framing_accepts),
        cmocka_unit_test(test_request_framing_refusals),
        cmocka_unit_test(test_chunked_in_place_any_split),
        cmocka_unit_test(test_chunked_in_place_limits_and_errors),
        cmocka_unit_test(test_request_offsets_survive_a_moved_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
