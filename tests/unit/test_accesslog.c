/* test_accesslog: unit tests for src/accesslog.c, the line formatter and the shared sink.
 *
 * Every formatted line is parsed back with jansson and checked field by field. The records
 * and OpenAI contexts are built by hand so this file needs no other module's functions.
 * The sink tests write real files under a mkdtemp() directory and remove them afterwards.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "mcpeek/accesslog.h"

/* HMAC-SHA256 vectors computed once with the OpenSSL CLI:
 *   printf '%s' 'v1/user_xyz123' | openssl dgst -sha256 -hmac 'mcpeek-test-key'
 *   printf '%s' 'v1/org_abc' | openssl dgst -sha256 -hmac 'mcpeek-test-key' */
#define HMAC_KEY "mcpeek-test-key"
#define HMAC_SUBJECT "hmac-sha256:aa5ebea7ede0dc27326676315af789e2ee12ceeb3c3dd8f3e60bcb7debc2bc9a"
#define HMAC_ORG "hmac-sha256:36e98ede4ad92798a6005baebcfddd70194de155317df0fa834d0ea829c2e850"

/* 2026-11-24T10:00:00Z */
#define TS_SEC 1795514400

/* ---- fixtures ---------------------------------------------------------------------------- */

struct fixture {
    struct openai_user_location loc;
    OpenAiClientContext ctx;
    struct mcp_request rpc;
    struct exchange_record rec;
    struct accesslog_options opts;
};

/* The article's example: a ChatGPT tools/call with all six hints, answered over SSE. */
static void fixture_full(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->loc.city = "V\xc5\xa9ng T\xc3\xa0u";
    f->loc.country = "VN";
    f->loc.latitude = "10.34599";
    f->loc.longitude = "107.08426";
    f->loc.timezone = "Asia/Ho_Chi_Minh";
    f->ctx.session_id = "v1/abc123";
    f->ctx.subject_id = "v1/user_xyz123";
    f->ctx.organization_id = "v1/org_abc";
    f->ctx.locale = "en-US";
    f->ctx.user_agent = "Mozilla/5.0 (X11; Linux x86_64)";
    f->ctx.user_location = &f->loc;
    f->rpc.status = JSONRPC_OK;
    f->rpc.method = "tools/call";
    f->rpc.id_json = "47";
    f->rpc.tool = "create_matching_question";
    f->rpc.batch = 1;
    f->rpc.openai = &f->ctx;
    f->rec.started.tv_sec = TS_SEC;
    f->rec.started.tv_nsec = 123456789;
    f->rec.duration_ms = 12.4;
    f->rec.upstream_ms = 11.9;
    f->rec.http_method = "POST";
    f->rec.path = "/mcp";
    f->rec.client_ip = "127.0.0.1";
    f->rec.tls = "TLSv1.3";
    f->rec.status = 200;
    f->rec.bytes_in = 812;
    f->rec.bytes_out = 355;
    f->rec.rpc = &f->rpc;
    f->rec.mcp_session_id = "sess-1";
    f->rec.mcp_protocol_version = "2025-06-18";
    f->rec.response = RESPONSE_SSE;
    f->rec.sse_events = 3;
    f->opts.user_location = USER_LOCATION_COARSE;
    f->opts.max_value_len = 256;
}

/* A GET without body, rpc or session: only the always-present fields remain. */
static void fixture_minimal(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->rec.started.tv_sec = TS_SEC;
    f->rec.http_method = "GET";
    f->rec.path = "/mcp";
    f->rec.client_ip = "10.0.0.7";
    f->rec.status = 200;
    f->rec.duration_ms = 1.0;
    f->rec.upstream_ms = -1;
    f->opts.user_location = USER_LOCATION_COARSE;
    f->opts.max_value_len = 256;
}

/* ---- helpers ----------------------------------------------------------------------------- */

/* Formats the record, checks the line framing (exactly one '\n', at the end) and returns
 * the parsed object. `raw`, when given, receives the line (caller frees with strbuf_free). */
static json_t *format_and_parse(const struct fixture *f, struct strbuf *raw)
{
    struct strbuf sb;
    json_error_t err;
    json_t *obj;
    size_t i, newlines = 0;

    strbuf_init(&sb);
    accesslog_format(&sb, &f->rec, &f->opts);
    assert_false(sb.oom);
    if (sb.len == 0 || sb.data[sb.len - 1] != '\n')
        fail_msg("expected the line to end in '\\n', got <%s>", sb.data ? sb.data : "");
    for (i = 0; i < sb.len; i++)
        if (sb.data[i] == '\n')
            newlines++;
    if (newlines != 1)
        fail_msg("expected exactly 1 newline, got %zu in <%s>", newlines, sb.data);
    obj = json_loadb(sb.data, sb.len, 0, &err);
    if (obj == NULL)
        fail_msg("line is not JSON: %s (col %d): %s", err.text, err.column, sb.data);
    if (!json_is_object(obj))
        fail_msg("expected a JSON object, got <%s>", sb.data);
    if (raw != NULL)
        *raw = sb;
    else
        strbuf_free(&sb);
    return obj;
}

static json_t *field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    if (v == NULL) {
        char *dump = json_dumps(obj, JSON_COMPACT);
        fail_msg("field %s: expected present, got absent in %s", key, dump);
    }
    return v;
}

static void expect_str(json_t *obj, const char *key, const char *want)
{
    json_t *v = field(obj, key);

    if (!json_is_string(v))
        fail_msg("field %s: expected string \"%s\", got JSON type %d", key, want,
                 (int)json_typeof(v));
    if (strcmp(json_string_value(v), want) != 0)
        fail_msg("field %s: expected \"%s\", got \"%s\"", key, want, json_string_value(v));
}

static void expect_int(json_t *obj, const char *key, long long want)
{
    json_t *v = field(obj, key);

    if (!json_is_integer(v))
        fail_msg("field %s: expected integer %lld, got JSON type %d", key, want,
                 (int)json_typeof(v));
    if (json_integer_value(v) != want)
        fail_msg("field %s: expected %lld, got %lld", key, want, (long long)json_integer_value(v));
}

static void expect_true(json_t *obj, const char *key)
{
    if (!json_is_true(field(obj, key)))
        fail_msg("field %s: expected true", key);
}

static void expect_absent(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    if (v != NULL) {
        char *dump = json_dumps(v, JSON_ENCODE_ANY);
        fail_msg("field %s: expected absent, got %s", key, dump);
    }
}

/* The object holds exactly `keys` (NULL terminated), and they appear in this order in the
 * raw line. Searching for `"key":` after `{` or `,` is safe: a quote inside a value is
 * always escaped, so such a pattern can only be a real key. */
static void expect_keys_in_order(json_t *obj, const char *line, const char *const *keys)
{
    const char *prev = line;
    char pat[64];
    size_t n;

    for (n = 0; keys[n] != NULL; n++) {
        const char *at;
        field(obj, keys[n]);
        snprintf(pat, sizeof(pat), "\"%s\":", keys[n]);
        at = strstr(line, pat);
        while (at != NULL && at[-1] != '{' && at[-1] != ',')
            at = strstr(at + 1, pat);
        if (at == NULL || at < prev)
            fail_msg("key %s: expected after the previous key, got it %s", keys[n],
                     at == NULL ? "missing" : "earlier");
        prev = at;
    }
    if (json_object_size(obj) != n) {
        char *dump = json_dumps(obj, JSON_COMPACT);
        fail_msg("expected exactly %zu keys, got %zu: %s", n, json_object_size(obj), dump);
    }
}

/* ---- formatting tests -------------------------------------------------------------------- */

static void test_full_record(void **state)
{
    static const char *const keys[] = {"ts",
                                       "level",
                                       "msg",
                                       "http_method",
                                       "path",
                                       "status",
                                       "client_ip",
                                       "duration_ms",
                                       "upstream_ms",
                                       "bytes_in",
                                       "bytes_out",
                                       "tls",
                                       "rpc_method",
                                       "rpc_id",
                                       "tool",
                                       "batch",
                                       "mcp_session_id",
                                       "mcp_protocol_version",
                                       "response",
                                       "sse_events",
                                       "openai_session",
                                       "openai_subject",
                                       "openai_org",
                                       "openai_locale",
                                       "openai_user_agent",
                                       "openai_user_location",
                                       NULL};
    struct fixture f;
    struct strbuf raw;
    json_t *obj, *loc;

    (void)state;
    fixture_full(&f);
    obj = format_and_parse(&f, &raw);
    expect_keys_in_order(obj, raw.data, keys);
    expect_str(obj, "ts", "2026-11-24T10:00:00.123Z");
    expect_str(obj, "level", "info");
    expect_str(obj, "msg", "mcp");
    expect_str(obj, "http_method", "POST");
    expect_str(obj, "path", "/mcp");
    expect_int(obj, "status", 200);
    expect_str(obj, "client_ip", "127.0.0.1");
    /* three decimals, exactly as written */
    if (strstr(raw.data, "\"duration_ms\":12.400,") == NULL)
        fail_msg("expected \"duration_ms\":12.400 in %s", raw.data);
    if (strstr(raw.data, "\"upstream_ms\":11.900,") == NULL)
        fail_msg("expected \"upstream_ms\":11.900 in %s", raw.data);
    expect_int(obj, "bytes_in", 812);
    expect_int(obj, "bytes_out", 355);
    expect_str(obj, "tls", "TLSv1.3");
    expect_str(obj, "rpc_method", "tools/call");
    expect_int(obj, "rpc_id", 47);
    expect_str(obj, "tool", "create_matching_question");
    expect_int(obj, "batch", 1);
    expect_str(obj, "mcp_session_id", "sess-1");
    expect_str(obj, "mcp_protocol_version", "2025-06-18");
    expect_str(obj, "response", "sse");
    expect_int(obj, "sse_events", 3);
    expect_str(obj, "openai_session", "v1/abc123");
    expect_str(obj, "openai_subject", "v1/user_xyz123");
    expect_str(obj, "openai_org", "v1/org_abc");
    expect_str(obj, "openai_locale", "en-US");
    expect_str(obj, "openai_user_agent", "Mozilla/5.0 (X11; Linux x86_64)");
    loc = field(obj, "openai_user_location");
    assert_true(json_is_object(loc));
    expect_str(loc, "city", "V\xc5\xa9ng T\xc3\xa0u");
    expect_str(loc, "country", "VN");
    expect_str(loc, "timezone", "Asia/Ho_Chi_Minh");
    assert_int_equal(json_object_size(loc), 3);
    json_decref(obj);
    strbuf_free(&raw);
}

static void test_absent_fields_omitted(void **state)
{
    static const char *const keys[] = {"ts",       "level",     "msg",       "http_method",
                                       "path",     "status",    "client_ip", "duration_ms",
                                       "bytes_in", "bytes_out", NULL};
    struct fixture f;
    struct strbuf raw;
    json_t *obj;

    (void)state;
    fixture_minimal(&f);
    obj = format_and_parse(&f, &raw);
    expect_keys_in_order(obj, raw.data, keys);
    if (strstr(raw.data, "null") != NULL)
        fail_msg("expected no null anywhere (absent means omitted), got %s", raw.data);
    expect_str(obj, "ts", "2026-11-24T10:00:00.000Z");
    expect_int(obj, "bytes_in", 0);
    json_decref(obj);
    strbuf_free(&raw);
}

static void test_level_and_error(void **state)
{
    struct fixture f;
    json_t *obj;

    (void)state;
    fixture_minimal(&f);
    f.rec.status = 502;
    f.rec.error = "upstream_connect";
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "level", "warn");
    expect_str(obj, "error", "upstream_connect");
    json_decref(obj);

    f.rec.error = NULL; /* a 5xx relayed from upstream is a warning too */
    f.rec.status = 500;
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "level", "warn");
    expect_absent(obj, "error");
    json_decref(obj);

    f.rec.status = 499;
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "level", "info");
    json_decref(obj);

    f.rec.status = 0; /* client left before any status: still warn because of the error */
    f.rec.error = "client_aborted";
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "level", "warn");
    expect_int(obj, "status", 0);
    expect_str(obj, "error", "client_aborted");
    expect_absent(obj, "rate_limit");
    expect_absent(obj, "upstream");
    json_decref(obj);

    /* the upstream an exchange was routed to: its origin */
    f.rec.upstream = "http://10.0.0.2:3000";
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "upstream", "http://10.0.0.2:3000");
    json_decref(obj);
    f.rec.upstream = NULL;

    /* a rate-limit refusal names the scope right after the error */
    f.rec.status = 429;
    f.rec.error = "rate_limited";
    f.rec.rate_limit = "openai_subject";
    {
        struct strbuf raw;
        obj = format_and_parse(&f, &raw);
        expect_str(obj, "level", "warn");
        expect_str(obj, "error", "rate_limited");
        expect_str(obj, "rate_limit", "openai_subject");
        if (strstr(raw.data, "\"error\":\"rate_limited\",\"rate_limit\":\"openai_subject\"") ==
            NULL)
            fail_msg("expected rate_limit right after error, got %s", raw.data);
        strbuf_free(&raw);
        json_decref(obj);
    }
}

static void test_user_location_policies(void **state)
{
    struct fixture f;
    json_t *obj, *loc;

    (void)state;
    fixture_full(&f);
    f.loc.region = "Ba Ria-Vung Tau";

    f.opts.user_location = USER_LOCATION_OFF;
    obj = format_and_parse(&f, NULL);
    expect_absent(obj, "openai_user_location");
    expect_str(obj, "openai_session", "v1/abc123"); /* the rest of the context stays */
    json_decref(obj);

    f.opts.user_location = USER_LOCATION_COARSE;
    obj = format_and_parse(&f, NULL);
    loc = field(obj, "openai_user_location");
    expect_str(loc, "city", "V\xc5\xa9ng T\xc3\xa0u");
    expect_str(loc, "region", "Ba Ria-Vung Tau");
    expect_str(loc, "country", "VN");
    expect_str(loc, "timezone", "Asia/Ho_Chi_Minh");
    expect_absent(loc, "latitude");
    expect_absent(loc, "longitude");
    assert_int_equal(json_object_size(loc), 4);
    json_decref(obj);

    f.opts.user_location = USER_LOCATION_FULL;
    obj = format_and_parse(&f, NULL);
    loc = field(obj, "openai_user_location");
    expect_str(loc, "city", "V\xc5\xa9ng T\xc3\xa0u");
    expect_str(loc, "latitude", "10.34599");
    expect_str(loc, "longitude", "107.08426");
    assert_int_equal(json_object_size(loc), 6);
    json_decref(obj);

    /* only coordinates, coarse policy: the object would be empty, so it is left out */
    memset(&f.loc, 0, sizeof(f.loc));
    f.loc.latitude = "10.34599";
    f.loc.longitude = "107.08426";
    f.opts.user_location = USER_LOCATION_COARSE;
    obj = format_and_parse(&f, NULL);
    expect_absent(obj, "openai_user_location");
    json_decref(obj);

    /* ... but full policy writes them */
    f.opts.user_location = USER_LOCATION_FULL;
    obj = format_and_parse(&f, NULL);
    loc = field(obj, "openai_user_location");
    assert_int_equal(json_object_size(loc), 2);
    json_decref(obj);

    /* a location with no members at all is never an empty object */
    memset(&f.loc, 0, sizeof(f.loc));
    obj = format_and_parse(&f, NULL);
    expect_absent(obj, "openai_user_location");
    json_decref(obj);
}

static void test_hmac_pseudonymization(void **state)
{
    struct fixture f;
    struct strbuf raw;
    json_t *obj;

    (void)state;
    fixture_full(&f);
    f.opts.hmac_key = (const unsigned char *)HMAC_KEY;
    f.opts.hmac_key_len = strlen(HMAC_KEY);
    obj = format_and_parse(&f, &raw);
    expect_str(obj, "openai_subject", HMAC_SUBJECT);
    expect_str(obj, "openai_org", HMAC_ORG);
    expect_str(obj, "openai_session", "v1/abc123"); /* only subject and org are hashed */
    if (strstr(raw.data, "user_xyz123") != NULL || strstr(raw.data, "org_abc") != NULL)
        fail_msg("expected no raw subject/org in the line, got %s", raw.data);
    json_decref(obj);
    strbuf_free(&raw);

    /* a different key gives a different pseudonym */
    f.opts.hmac_key = (const unsigned char *)"other-key";
    f.opts.hmac_key_len = 9;
    obj = format_and_parse(&f, NULL);
    if (strcmp(json_string_value(field(obj, "openai_subject")), HMAC_SUBJECT) == 0)
        fail_msg("expected another pseudonym for another key, got the same");
    assert_int_equal(strlen(json_string_value(field(obj, "openai_subject"))), 12 + 64);
    json_decref(obj);
}

static void test_session_map_fallback(void **state)
{
    struct fixture f;
    OpenAiClientContext remembered = {0};
    json_t *obj;

    (void)state;
    remembered.session_id = "v1/remembered";
    remembered.locale = "vi-VN";

    /* GET stream: no rpc at all */
    fixture_minimal(&f);
    f.rec.session_openai = &remembered;
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "openai_from", "session_map");
    expect_str(obj, "openai_session", "v1/remembered");
    expect_str(obj, "openai_locale", "vi-VN");
    expect_absent(obj, "openai_subject");
    expect_absent(obj, "batch");
    json_decref(obj);

    /* a body without hints: still the remembered context */
    fixture_full(&f);
    f.rpc.openai = NULL;
    f.rec.session_openai = &remembered;
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "openai_from", "session_map");
    expect_str(obj, "openai_session", "v1/remembered");
    json_decref(obj);

    /* the request's own context wins and is not marked */
    fixture_full(&f);
    f.rec.session_openai = &remembered;
    obj = format_and_parse(&f, NULL);
    expect_absent(obj, "openai_from");
    expect_str(obj, "openai_session", "v1/abc123");
    json_decref(obj);
}

static void test_rpc_id_raw_or_quoted(void **state)
{
    static const struct {
        const char *id_json;
        const char *want_dump; /* the parsed rpc_id re-encoded by jansson */
    } cases[] = {
        {"47", "47"},
        {"-3", "-3"},
        {"0", "0"},
        {"-1.5e3", "-1500.0"},
        {"2.25", "2.25"},
        {"\"abc\"", "\"abc\""},
        {"\"a\\\"b\\\\c\\u00e9\"", "\"a\\\"b\\\\c\\u00E9\""},
        {"\"\xc3\xa9\"", "\"\\u00E9\""},
        {"null", "null"},
        /* not a JSON scalar an id may be: written as a string holding the text */
        {"{\"a\":1}", "\"{\\\"a\\\":1}\""},
        {"01", "\"01\""},
        {"1.", "\"1.\""},
        {"-", "\"-\""},
        {"1e", "\"1e\""},
        {"true", "\"true\""},
        {"nul", "\"nul\""},
        {"\"unterminated", "\"\\\"unterminated\""},
        {"\"a\"b\"", "\"\\\"a\\\"b\\\"\""},
        {"\"bad \\x escape\"", "\"\\\"bad \\\\x escape\\\"\""},
        {"\"short \\u12\"", "\"\\\"short \\\\u12\\\"\""},
        {"\"ends in \\\"", "\"\\\"ends in \\\\\\\"\""},
        {"\"raw\nnewline\"", "\"\\\"raw\\nnewline\\\"\""},
        {"\"\xed\xa0\x80\"", "\"\\\"\\uFFFD\\uFFFD\\uFFFD\\\"\""},
        {"47 ", "\"47 \""},
        {"", "\"\""},
    };
    struct fixture f;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *obj;
        char *got;

        fixture_full(&f);
        f.rpc.id_json = (char *)cases[i].id_json;
        obj = format_and_parse(&f, NULL);
        got = json_dumps(field(obj, "rpc_id"), JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
        if (strcmp(got, cases[i].want_dump) != 0)
            fail_msg("id_json <%s>: expected rpc_id %s, got %s", cases[i].id_json,
                     cases[i].want_dump, got);
        free(got);
        json_decref(obj);
    }
}

static void test_rpc_id_longer_than_cap_is_quoted(void **state)
{
    char id[302];
    struct fixture f;
    json_t *obj;
    const char *got;

    (void)state;
    id[0] = '"';
    memset(id + 1, 'x', 299);
    id[300] = '"';
    id[301] = '\0';
    fixture_full(&f);
    f.rpc.id_json = id;
    f.opts.max_value_len = 64;
    obj = format_and_parse(&f, NULL);
    got = json_string_value(field(obj, "rpc_id"));
    assert_non_null(got);
    if (strlen(got) != 64 + 3 || got[0] != '"' || strcmp(got + 64, "...") != 0)
        fail_msg("expected the id text cut at 64 bytes plus \"...\", got <%s>", got);
    json_decref(obj);

    /* absent id (notification): no rpc_id key at all */
    fixture_full(&f);
    f.rpc.id_json = NULL;
    f.rpc.notification = true;
    obj = format_and_parse(&f, NULL);
    expect_absent(obj, "rpc_id");
    expect_true(obj, "notification");
    json_decref(obj);
}

static void test_newlines_in_values_are_escaped(void **state)
{
    struct fixture f;
    json_t *obj;

    (void)state;
    fixture_full(&f);
    f.rec.path = "/mcp\n{\"injected\":1}";
    f.ctx.user_agent = "agent\r\nX-Evil: 1";
    f.ctx.session_id = "v1/\nabc";
    f.rec.mcp_session_id = "s\n";
    f.rec.error = "upstream_error";
    f.loc.city = "line1\nline2";
    obj = format_and_parse(&f, NULL); /* checks the single trailing newline */
    expect_str(obj, "path", "/mcp\n{\"injected\":1}");
    expect_str(obj, "openai_user_agent", "agent\r\nX-Evil: 1");
    expect_str(obj, "openai_session", "v1/\nabc");
    expect_str(obj, "mcp_session_id", "s\n");
    expect_str(field(obj, "openai_user_location"), "city", "line1\nline2");
    expect_absent(obj, "injected");
    json_decref(obj);
}

static void test_rpc_flags_and_parse_errors(void **state)
{
    struct fixture f;
    json_t *obj;

    (void)state;
    fixture_full(&f);
    f.rpc.notification = false;
    obj = format_and_parse(&f, NULL);
    expect_absent(obj, "notification");
    expect_absent(obj, "rpc_parse_error");
    expect_absent(obj, "rpc_response");
    json_decref(obj);

    f.rpc.batch = 3;
    f.rpc.is_batch = true;
    obj = format_and_parse(&f, NULL);
    expect_int(obj, "batch", 3);
    json_decref(obj);

    /* a client's answer to a server request (sampling, elicitation) */
    fixture_full(&f);
    f.rpc.method = NULL;
    f.rpc.tool = NULL;
    f.rpc.response = true;
    obj = format_and_parse(&f, NULL);
    expect_true(obj, "rpc_response");
    expect_absent(obj, "rpc_method");
    json_decref(obj);

    fixture_full(&f);
    memset(&f.rpc, 0, sizeof(f.rpc));
    f.rpc.status = JSONRPC_INVALID_JSON;
    snprintf(f.rpc.error, sizeof(f.rpc.error), "'[' or '{' expected near 'x'");
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "rpc_parse_error", "'[' or '{' expected near 'x'");
    expect_absent(obj, "batch");
    expect_absent(obj, "rpc_method");
    expect_absent(obj, "openai_session");
    json_decref(obj);

    f.rpc.status = JSONRPC_INVALID_RPC;
    snprintf(f.rpc.error, sizeof(f.rpc.error), "jsonrpc is not \"2.0\"");
    f.rpc.batch = 1;
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "rpc_parse_error", "jsonrpc is not \"2.0\"");
    json_decref(obj);

    f.rpc.status = JSONRPC_INVALID_RPC;
    f.rpc.error[0] = '\0'; /* no reason given: a generic one, never an empty string */
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "rpc_parse_error", "invalid JSON-RPC");
    json_decref(obj);

    f.rpc.status = JSONRPC_EMPTY;
    obj = format_and_parse(&f, NULL);
    expect_absent(obj, "rpc_parse_error");
    json_decref(obj);
}

static void test_response_kinds_and_error_code(void **state)
{
    static const struct {
        enum response_kind kind;
        const char *name;
    } kinds[] = {{RESPONSE_EMPTY, "empty"},
                 {RESPONSE_JSON, "json"},
                 {RESPONSE_SSE, "sse"},
                 {RESPONSE_OTHER, "other"}};
    struct fixture f;
    json_t *obj;
    size_t i;

    (void)state;
    fixture_full(&f);
    for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        f.rec.response = kinds[i].kind;
        obj = format_and_parse(&f, NULL);
        expect_str(obj, "response", kinds[i].name);
        if (kinds[i].kind == RESPONSE_SSE)
            expect_int(obj, "sse_events", 3);
        else
            expect_absent(obj, "sse_events");
        json_decref(obj);
    }
    f.rec.response = RESPONSE_NONE;
    obj = format_and_parse(&f, NULL);
    expect_absent(obj, "response");
    expect_absent(obj, "sse_events");
    expect_absent(obj, "rpc_error_code");
    json_decref(obj);

    f.rec.response = RESPONSE_JSON;
    f.rec.has_rpc_error_code = true;
    f.rec.rpc_error_code = -32601;
    obj = format_and_parse(&f, NULL);
    expect_int(obj, "rpc_error_code", -32601);
    json_decref(obj);
}

/* What the answer said: written when there is something to say, absent otherwise. */
static void test_answer_fields(void **state)
{
    struct fixture f;
    json_t *obj;

    (void)state;
    fixture_full(&f);
    f.rec.response = RESPONSE_JSON;
    f.rec.response_inspected = RESPONSE_INSPECT_DONE;
    obj = format_and_parse(&f, NULL);
    expect_absent(obj, "rpc_error_message");
    expect_absent(obj, "tool_is_error");
    expect_absent(obj, "server_requests");
    expect_absent(obj, "response_inspected"); /* read whole: nothing to report */
    json_decref(obj);

    f.rec.has_rpc_error_code = true;
    f.rec.rpc_error_code = -32602;
    f.rec.rpc_error_message = "Unknown tool: \"nope\"\n\xc3\xa9";
    f.rec.tool_is_error = true;
    f.rec.server_requests = 2;
    f.rec.response_inspected = RESPONSE_INSPECT_SKIPPED;
    obj = format_and_parse(&f, NULL);
    expect_int(obj, "rpc_error_code", -32602);
    expect_str(obj, "rpc_error_message", "Unknown tool: \"nope\"\n\xc3\xa9");
    expect_true(obj, "tool_is_error");
    expect_int(obj, "server_requests", 2);
    if (!json_is_false(field(obj, "response_inspected")))
        fail_msg("expected response_inspected false");
    json_decref(obj);

    /* the message is capped like every other copied string, on a character boundary */
    f.opts.max_value_len = 15;
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "rpc_error_message", "Unknown tool: \"...");
    json_decref(obj);
    f.opts.max_value_len = 22;
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "rpc_error_message", "Unknown tool: \"nope\"\n...");
    json_decref(obj);
}

static void test_values_capped(void **state)
{
    struct fixture f;
    json_t *obj;

    (void)state;
    fixture_full(&f);
    f.opts.max_value_len = 8;
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "openai_user_agent", "Mozilla/...");
    expect_str(obj, "tool", "create_m...");
    expect_str(obj, "openai_session", "v1/abc12...");
    expect_str(obj, "mcp_protocol_version", "2025-06-...");
    expect_str(field(obj, "openai_user_location"), "city", "V\xc5\xa9ng T...");
    expect_str(obj, "ts", "2026-11-24T10:00:00.123Z"); /* ours, never capped */
    json_decref(obj);

    /* hashed values are computed on the full value and not cut */
    f.opts.hmac_key = (const unsigned char *)HMAC_KEY;
    f.opts.hmac_key_len = strlen(HMAC_KEY);
    obj = format_and_parse(&f, NULL);
    expect_str(obj, "openai_subject", HMAC_SUBJECT);
    json_decref(obj);
}

static void test_timestamps_and_durations(void **state)
{
    struct fixture f;
    struct strbuf raw;
    json_t *obj;

    (void)state;
    fixture_minimal(&f);
    f.rec.started.tv_sec = 1709210096; /* 2024-02-29T12:34:56Z, a leap day */
    f.rec.started.tv_nsec = 999999999;
    f.rec.duration_ms = 1.2346;
    f.rec.upstream_ms = 0;
    obj = format_and_parse(&f, &raw);
    expect_str(obj, "ts", "2024-02-29T12:34:56.999Z");
    if (strstr(raw.data, "\"duration_ms\":1.235,") == NULL)
        fail_msg("expected \"duration_ms\":1.235 in %s", raw.data);
    if (strstr(raw.data, "\"upstream_ms\":0.000,") == NULL)
        fail_msg("expected \"upstream_ms\":0.000 (0 is a real measurement) in %s", raw.data);
    json_decref(obj);
    strbuf_free(&raw);

    f.rec.started.tv_sec = 0;
    f.rec.started.tv_nsec = 1000000;
    f.rec.duration_ms = -5; /* clock stepped back */
    f.rec.upstream_ms = -0.001;
    obj = format_and_parse(&f, &raw);
    expect_str(obj, "ts", "1970-01-01T00:00:00.001Z");
    if (strstr(raw.data, "\"duration_ms\":0.000,") == NULL)
        fail_msg("expected \"duration_ms\":0.000 in %s", raw.data);
    expect_absent(obj, "upstream_ms");
    json_decref(obj);
    strbuf_free(&raw);

    f.rec.duration_ms = 86400000.0625; /* one day */
    obj = format_and_parse(&f, &raw);
    if (strstr(raw.data, "\"duration_ms\":86400000.063,") == NULL)
        fail_msg("expected \"duration_ms\":86400000.063 in %s", raw.data);
    json_decref(obj);
    strbuf_free(&raw);
}

static void test_format_appends(void **state)
{
    struct fixture f;
    struct strbuf sb;

    (void)state;
    fixture_minimal(&f);
    strbuf_init(&sb);
    strbuf_puts(&sb, "prefix|");
    accesslog_format(&sb, &f.rec, &f.opts);
    if (strncmp(sb.data, "prefix|{\"ts\":", 13) != 0)
        fail_msg("expected the line appended after the existing content, got %s", sb.data);
    strbuf_free(&sb);
}

/* ---- sink tests -------------------------------------------------------------------------- */

/* ---- conversation lines ------------------------------------------------------------------ */

static char *read_file(const char *path, size_t *len);

/* A record as conversation.c hands it out; strings are heap copies (the record owns them). */
static struct conversation_record *conversation_fixture(void)
{
    struct conversation_record *r = calloc(1, sizeof(*r));

    assert_non_null(r);
    r->reason = CONVERSATION_IDLE;
    r->key = "v1/abc123";
    r->keyed_by_openai = true;
    r->openai_session = strdup("v1/abc123");
    r->openai_subject = strdup("v1/user_xyz123");
    r->openai_org = strdup("v1/org_abc");
    r->openai_locale = strdup("en-US");
    r->first_ts = (struct timespec){TS_SEC, 123000000};
    r->last_ts = (struct timespec){TS_SEC + 95, 7000000};
    r->duration_ms = 94884;
    r->requests = 12;
    r->errors = 2;
    r->mcp_sessions = 7;
    r->bytes_in = 4096;
    r->bytes_out = 123456789012ULL;
    r->tools = calloc(2, sizeof(*r->tools));
    assert_non_null(r->tools);
    r->tools[0] = (struct conversation_tool){strdup("create_matching_question"), 5};
    r->tools[1] = (struct conversation_tool){strdup("say \"hi\"\n"), 1};
    r->n_tools = 2;
    r->other_tool_calls = 3;
    return r;
}

static json_t *format_conversation(const struct conversation_record *r,
                                   const struct accesslog_options *opts, struct strbuf *raw)
{
    struct timespec now = {TS_SEC + 1895, 500000000};
    json_error_t err;
    json_t *obj;

    strbuf_init(raw);
    accesslog_format_conversation(raw, r, &now, opts);
    assert_false(raw->oom);
    if (raw->len == 0 || raw->data[raw->len - 1] != '\n' ||
        memchr(raw->data, '\n', raw->len) != raw->data + raw->len - 1)
        fail_msg("expected one line ending in '\\n', got <%s>", raw->data ? raw->data : "");
    obj = json_loadb(raw->data, raw->len, 0, &err);
    if (obj == NULL)
        fail_msg("line is not JSON: %s (col %d): %s", err.text, err.column, raw->data);
    return obj;
}

static void test_conversation_line(void **state)
{
    static const char *const keys[] = {"ts",
                                       "level",
                                       "msg",
                                       "reason",
                                       "conversation",
                                       "openai_session",
                                       "openai_subject",
                                       "openai_org",
                                       "openai_locale",
                                       "first_ts",
                                       "last_ts",
                                       "duration_ms",
                                       "requests",
                                       "tool_calls",
                                       "errors",
                                       "mcp_sessions",
                                       "bytes_in",
                                       "bytes_out",
                                       NULL};
    struct accesslog_options opts = {.user_location = USER_LOCATION_COARSE, .max_value_len = 256};
    struct conversation_record *r = conversation_fixture();
    struct strbuf raw;
    json_t *obj, *tools;

    (void)state;
    obj = format_conversation(r, &opts, &raw);
    expect_keys_in_order(obj, raw.data, keys);
    expect_str(obj, "ts", "2026-11-24T10:31:35.500Z");
    expect_str(obj, "level", "info");
    expect_str(obj, "msg", "conversation");
    expect_str(obj, "reason", "idle");
    expect_str(obj, "conversation", "v1/abc123");
    expect_str(obj, "openai_session", "v1/abc123");
    expect_str(obj, "openai_subject", "v1/user_xyz123");
    expect_str(obj, "openai_org", "v1/org_abc");
    expect_str(obj, "openai_locale", "en-US");
    expect_str(obj, "first_ts", "2026-11-24T10:00:00.123Z");
    expect_str(obj, "last_ts", "2026-11-24T10:01:35.007Z");
    if (strstr(raw.data, ",\"duration_ms\":94884.000,") == NULL)
        fail_msg("expected \"duration_ms\":94884.000 in %s", raw.data);
    expect_int(obj, "requests", 12);
    expect_int(obj, "errors", 2);
    expect_int(obj, "mcp_sessions", 7);
    expect_int(obj, "bytes_in", 4096);
    expect_int(obj, "bytes_out", 123456789012LL);
    tools = field(obj, "tool_calls");
    assert_true(json_is_object(tools));
    assert_int_equal(json_object_size(tools), 3);
    expect_int(tools, "create_matching_question", 5);
    expect_int(tools, "say \"hi\"\n", 1);
    expect_int(tools, "other", 3);
    json_decref(obj);
    strbuf_free(&raw);

    /* every reason has its word; absent values are omitted; no tools is {} */
    static const char *const reasons[] = {"idle", "delete", "shutdown", "evicted"};
    for (int i = 0; i < 4; i++) {
        r->reason = (enum conversation_end)i;
        obj = format_conversation(r, &opts, &raw);
        expect_str(obj, "reason", reasons[i]);
        json_decref(obj);
        strbuf_free(&raw);
    }
    free(r->openai_session);
    free(r->openai_locale);
    r->openai_session = r->openai_locale = NULL;
    r->key = "mcp-session-1";
    r->keyed_by_openai = false;
    r->other_tool_calls = 0;
    obj = format_conversation(r, &opts, &raw);
    expect_str(obj, "conversation", "mcp-session-1");
    expect_absent(obj, "openai_session");
    expect_absent(obj, "openai_locale");
    expect_absent(field(obj, "tool_calls"), "other");
    json_decref(obj);
    strbuf_free(&raw);
    for (size_t i = 0; i < r->n_tools; i++)
        free(r->tools[i].name);
    r->n_tools = 0;
    obj = format_conversation(r, &opts, &raw);
    if (strstr(raw.data, ",\"tool_calls\":{},") == NULL)
        fail_msg("expected \"tool_calls\":{} in %s", raw.data);
    json_decref(obj);
    strbuf_free(&raw);
    free(r->tools);
    r->tools = NULL;
    conversation_records_free(r);
}

/* The exchange lines' privacy policy: subject and org pseudonymized with the key, values
 * capped. */
static void test_conversation_line_privacy(void **state)
{
    struct accesslog_options opts = {.user_location = USER_LOCATION_COARSE,
                                     .max_value_len = 8,
                                     .hmac_key = (const unsigned char *)HMAC_KEY,
                                     .hmac_key_len = strlen(HMAC_KEY)};
    struct conversation_record *r = conversation_fixture();
    struct strbuf raw;
    json_t *obj;

    (void)state;
    obj = format_conversation(r, &opts, &raw);
    expect_str(obj, "openai_subject", HMAC_SUBJECT);
    expect_str(obj, "openai_org", HMAC_ORG);
    expect_str(obj, "conversation", "v1/abc12...");
    expect_str(obj, "openai_session", "v1/abc12...");
    expect_int(field(obj, "tool_calls"), "create_m...", 5);
    if (strstr(raw.data, "user_xyz") != NULL || strstr(raw.data, "org_abc") != NULL)
        fail_msg("raw subject or org leaked: %s", raw.data);
    json_decref(obj);
    strbuf_free(&raw);
    conversation_records_free(r);
}

/* accesslog_write_conversations writes one line per record and counts them. */
static void test_conversation_write(void **state)
{
    char dir[] = "/tmp/mcpeek-al-XXXXXX", path[64];
    struct accesslog_options opts = {.user_location = USER_LOCATION_COARSE, .max_value_len = 256};
    struct conversation_record *list = NULL;
    struct timespec now = {TS_SEC, 0};
    struct accesslog *log;
    size_t len, lines = 0;
    char *text;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/access.log", dir);
    log = accesslog_open(path);
    assert_non_null(log);
    assert_int_equal(accesslog_write_conversations(log, NULL, &now, &opts), 0);
    for (int i = 0; i < 300; i++) { /* more than one 64 KiB batch */
        struct conversation_record *r = conversation_fixture();
        r->next = list;
        list = r;
    }
    assert_int_equal(accesslog_write_conversations(log, list, &now, &opts), 300);
    assert_int_equal(accesslog_lines(log), 300);
    accesslog_close(log);
    text = read_file(path, &len);
    for (char *p = text; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    assert_int_equal(lines, 300);
    assert_int_equal(len % 300, 0); /* identical lines, none cut */
    free(text);
    conversation_records_free(list);
    unlink(path);
    rmdir(dir);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    long size;

    if (fp == NULL)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    fseek(fp, 0, SEEK_END);
    size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    if (fread(buf, 1, (size_t)size, fp) != (size_t)size)
        fail_msg("short read on %s", path);
    buf[size] = '\0';
    fclose(fp);
    *len = (size_t)size;
    return buf;
}

static void test_sink_file_write_and_count(void **state)
{
    char dir[] = "/tmp/mcpeek-al-XXXXXX";
    char path[64];
    struct accesslog *log;
    struct stat st;
    size_t len;
    char *text;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/access.log", dir);
    umask(022);
    log = accesslog_open(path);
    assert_non_null(log);
    assert_int_equal(accesslog_write(log, "{\"a\":1}\n", 8), 0);
    assert_int_equal(accesslog_write(log, "{\"b\":2}\n", 8), 0);
    errno = 0;
    assert_int_equal(accesslog_write(log, "{\"partial\":3}", 13), -1); /* no '\n' */
    assert_int_equal(errno, EINVAL);
    assert_int_equal(accesslog_write(log, "", 0), -1);
    if (accesslog_lines(log) != 2)
        fail_msg("expected 2 lines counted, got %llu", (unsigned long long)accesslog_lines(log));
    assert_int_equal(stat(path, &st), 0);
    if ((st.st_mode & 0777) != 0640)
        fail_msg("expected mode 0640, got %04o", (unsigned)(st.st_mode & 0777));
    accesslog_close(log);

    /* reopening the same path appends, it does not truncate */
    log = accesslog_open(path);
    assert_non_null(log);
    assert_int_equal(accesslog_lines(log), 0);
    assert_int_equal(accesslog_write(log, "{\"c\":3}\n", 8), 0);
    accesslog_close(log);
    text = read_file(path, &len);
    assert_string_equal(text, "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
    free(text);

    errno = 0;
    snprintf(path, sizeof(path), "%s/missing/access.log", dir);
    assert_null(accesslog_open(path));
    assert_int_equal(errno, ENOENT);

    snprintf(path, sizeof(path), "%s/access.log", dir);
    unlink(path);
    rmdir(dir);
}

static void test_sink_reopen_failure_keeps_old_file(void **state)
{
    char dir[] = "/tmp/mcpeek-al-XXXXXX";
    char moved[64], path[64], moved_file[80];
    struct accesslog *log;
    size_t len;
    char *text;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/access.log", dir);
    snprintf(moved, sizeof(moved), "%s.moved", dir);
    snprintf(moved_file, sizeof(moved_file), "%s/access.log", moved);
    log = accesslog_open(path);
    assert_non_null(log);
    assert_int_equal(accesslog_write(log, "{\"n\":1}\n", 8), 0);
    /* the directory disappears: the path cannot be opened again */
    assert_int_equal(rename(dir, moved), 0);
    if (accesslog_reopen(log) != -1)
        fail_msg("expected reopen to fail with the directory gone, got success");
    assert_int_equal(accesslog_write(log, "{\"n\":2}\n", 8), 0);
    accesslog_close(log);
    text = read_file(moved_file, &len);
    assert_string_equal(text, "{\"n\":1}\n{\"n\":2}\n");
    free(text);
    unlink(moved_file);
    rmdir(moved);
}

static void test_sink_stdout(void **state)
{
    int pipefd[2], saved;
    struct accesslog *log;
    char buf[64];
    ssize_t n;

    (void)state;
    fflush(stdout);
    assert_int_equal(pipe(pipefd), 0);
    saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(pipefd[1], STDOUT_FILENO) >= 0);

    log = accesslog_open("-");
    assert_non_null(log);
    assert_int_equal(accesslog_write(log, "{\"dash\":1}\n", 11), 0);
    assert_int_equal(accesslog_reopen(log), 0); /* nothing to reopen */
    accesslog_close(log);
    log = accesslog_open(NULL);
    assert_non_null(log);
    assert_int_equal(accesslog_write(log, "{\"null\":1}\n", 11), 0);
    accesslog_close(log);
    /* closing the log must not have closed fd 1 */
    if (fcntl(STDOUT_FILENO, F_GETFD) == -1)
        fail_msg("expected fd 1 to stay open after accesslog_close, got %s", strerror(errno));

    assert_true(dup2(saved, STDOUT_FILENO) >= 0);
    close(saved);
    close(pipefd[1]);
    n = read(pipefd[0], buf, sizeof(buf) - 1);
    close(pipefd[0]);
    assert_true(n >= 0);
    buf[n] = '\0';
    assert_string_equal(buf, "{\"dash\":1}\n{\"null\":1}\n");
}

#define SINK_THREADS 4
#define SINK_LINES 10000
#define SINK_MAX_ROTATIONS 64

struct sink_test {
    struct accesslog *log;
    char path[64];
    atomic_int rotations;
    atomic_int halfway; /* writers that reached the middle of their lines */
    atomic_int writers_done;
    atomic_int write_errors;
};

struct sink_writer {
    struct sink_test *t;
    int id;
};

static void *sink_writer_main(void *arg)
{
    struct sink_writer *w = arg;
    char path[32], agent[3001];
    struct fixture f;
    struct strbuf sb;
    int seq;

    fixture_full(&f);
    f.opts.max_value_len = 4096;
    f.rec.path = path;
    f.ctx.user_agent = agent;
    strbuf_init(&sb);
    for (seq = 0; seq < SINK_LINES; seq++) {
        /* lines of very different lengths (about 400 to 3400 bytes) */
        size_t alen = (size_t)((seq * 7919 + w->id * 104729) % 3000);
        memset(agent, 'a' + w->id, alen);
        agent[alen] = '\0';
        snprintf(path, sizeof(path), "/w%d/%d", w->id, seq);
        strbuf_reset(&sb);
        accesslog_format(&sb, &f.rec, &f.opts);
        if (accesslog_write(w->t->log, sb.data, sb.len) != 0)
            atomic_fetch_add(&w->t->write_errors, 1);
        /* halfway, wait for the first rotation so lines land on both sides of it */
        if (seq == SINK_LINES / 2) {
            atomic_fetch_add(&w->t->halfway, 1);
            while (atomic_load(&w->t->rotations) == 0)
                sched_yield();
        }
    }
    strbuf_free(&sb);
    atomic_fetch_add(&w->t->writers_done, 1);
    return NULL;
}

static void *sink_rotator_main(void *arg)
{
    struct sink_test *t = arg;
    char rotated[80];
    int n = 0;

    while (atomic_load(&t->halfway) < SINK_THREADS)
        sched_yield();
    while (atomic_load(&t->writers_done) < SINK_THREADS && n < SINK_MAX_ROTATIONS) {
        if (n > 0)
            usleep(300);
        snprintf(rotated, sizeof(rotated), "%s.%d", t->path, n + 1);
        if (rename(t->path, rotated) != 0)
            fail_msg("rename: %s", strerror(errno));
        if (accesslog_reopen(t->log) != 0)
            fail_msg("reopen: %s", strerror(errno));
        atomic_store(&t->rotations, ++n);
    }
    return NULL;
}

/* Checks every line of one file; marks seen[writer][seq]. Returns the number of lines. */
static size_t sink_check_file(const char *path, unsigned char seen[][SINK_LINES])
{
    size_t len, count = 0;
    char *text = read_file(path, &len);
    char *line = text, *nl;

    if (len > 0 && text[len - 1] != '\n')
        fail_msg("%s: expected the file to end in a complete line", path);
    while ((nl = memchr(line, '\n', len - (size_t)(line - text))) != NULL) {
        json_error_t err;
        json_t *obj = json_loadb(line, (size_t)(nl - line), 0, &err);
        int w, seq;

        if (obj == NULL)
            fail_msg("%s line %zu: expected JSON, got error %s", path, count + 1, err.text);
        if (sscanf(json_string_value(field(obj, "path")), "/w%d/%d", &w, &seq) != 2 || w < 0 ||
            w >= SINK_THREADS || seq < 0 || seq >= SINK_LINES)
            fail_msg("%s line %zu: unexpected path", path, count + 1);
        if (seen[w][seq])
            fail_msg("line /w%d/%d: expected once, got it twice", w, seq);
        seen[w][seq] = 1;
        json_decref(obj);
        count++;
        line = nl + 1;
    }
    free(text);
    return count;
}

static void test_sink_concurrent_writers_and_reopen(void **state)
{
    static unsigned char seen[SINK_THREADS][SINK_LINES];
    char dir[] = "/tmp/mcpeek-al-XXXXXX";
    char rotated[80];
    struct sink_test t;
    struct sink_writer writers[SINK_THREADS];
    pthread_t tids[SINK_THREADS], rotator;
    size_t total, first_rotated;
    int i, rotations;

    (void)state;
    memset(seen, 0, sizeof(seen));
    memset(&t, 0, sizeof(t));
    assert_non_null(mkdtemp(dir));
    snprintf(t.path, sizeof(t.path), "%s/access.log", dir);
    t.log = accesslog_open(t.path);
    assert_non_null(t.log);
    assert_int_equal(pthread_create(&rotator, NULL, sink_rotator_main, &t), 0);
    for (i = 0; i < SINK_THREADS; i++) {
        writers[i].t = &t;
        writers[i].id = i;
        assert_int_equal(pthread_create(&tids[i], NULL, sink_writer_main, &writers[i]), 0);
    }
    for (i = 0; i < SINK_THREADS; i++)
        pthread_join(tids[i], NULL);
    pthread_join(rotator, NULL);
    rotations = atomic_load(&t.rotations);
    assert_int_equal(atomic_load(&t.write_errors), 0);
    if (accesslog_lines(t.log) != SINK_THREADS * SINK_LINES)
        fail_msg("expected %d lines counted, got %llu", SINK_THREADS * SINK_LINES,
                 (unsigned long long)accesslog_lines(t.log));
    accesslog_close(t.log);

    if (rotations < 1)
        fail_msg("expected at least one rotation, got %d", rotations);
    total = sink_check_file(t.path, seen);
    for (i = 1; i <= rotations; i++) {
        size_t n;
        snprintf(rotated, sizeof(rotated), "%s.%d", t.path, i);
        n = sink_check_file(rotated, seen);
        if (i == 1)
            first_rotated = n;
        total += n;
        unlink(rotated);
    }
    print_message("    %zu lines over %d rotations\n", total, rotations);
    if (total != SINK_THREADS * SINK_LINES)
        fail_msg("expected %d lines in the union of the files, got %zu", SINK_THREADS * SINK_LINES,
                 total);
    /* every writer paused halfway until the first rotation, so the first file holds at
     * least those halves: the rotation really happened under load */
    if (first_rotated < SINK_THREADS * (SINK_LINES / 2))
        fail_msg("expected >= %d lines in the first rotated file, got %zu",
                 SINK_THREADS * (SINK_LINES / 2), first_rotated);
    unlink(t.path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_record),
        cmocka_unit_test(test_absent_fields_omitted),
        cmocka_unit_test(test_level_and_error),
        cmocka_unit_test(test_user_location_policies),
        cmocka_unit_test(test_hmac_pseudonymization),
        cmocka_unit_test(test_session_map_fallback),
        cmocka_unit_test(test_rpc_id_raw_or_quoted),
        cmocka_unit_test(test_rpc_id_longer_than_cap_is_quoted),
        cmocka_unit_test(test_newlines_in_values_are_escaped),
        cmocka_unit_test(test_rpc_flags_and_parse_errors),
        cmocka_unit_test(test_response_kinds_and_error_code),
        cmocka_unit_test(test_answer_fields),
        cmocka_unit_test(test_values_capped),
        cmocka_unit_test(test_timestamps_and_durations),
        cmocka_unit_test(test_format_appends),
        cmocka_unit_test(test_conversation_line),
        cmocka_unit_test(test_conversation_line_privacy),
        cmocka_unit_test(test_conversation_write),
        cmocka_unit_test(test_sink_file_write_and_count),
        cmocka_unit_test(test_sink_reopen_failure_keeps_old_file),
        cmocka_unit_test(test_sink_stdout),
        cmocka_unit_test(test_sink_concurrent_writers_and_reopen),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
