/* test_jsonrpc: src/jsonrpc.c, request body -> struct mcp_request, and response error codes.
 *
 * Bodies are given as byte strings exactly as they would arrive on the wire. Every test checks
 * the status first (with the parser's own error text in the failure message), then each field.
 * UTF-8 validity of capped output is checked with jansson's validator, not the code under test.
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

#include "mcpeek/jsonrpc.h"

#define MAX_STRING 256

#define VUNG_TAU "V\xc5\xa9ng T\xc3\xa0u"

/* The article's wire example, with `"arguments": { ... }` made valid JSON. */
static const char article_body[] =
    "{\n"
    "  \"jsonrpc\": \"2.0\", \"id\": 47, \"method\": \"tools/call\",\n"
    "  \"params\": {\n"
    "    \"name\": \"create_matching_question\",\n"
    "    \"arguments\": { \"topic\": \"capitals\" },\n"
    "    \"_meta\": {\n"
    "      \"openai/session\": \"v1/abc123...\",\n"
    "      \"openai/subject\": \"v1/user_xyz...\",\n"
    "      \"openai/organization\": \"v1/org_...\",\n"
    "      \"openai/locale\": \"en-US\",\n"
    "      \"openai/userAgent\": \"Mozilla/5.0 ...\",\n"
    "      \"openai/userLocation\": {\n"
    "        \"city\": \"" VUNG_TAU "\", \"country\": \"VN\",\n"
    "        \"latitude\": \"10.34599\", \"longitude\": \"107.08426\",\n"
    "        \"timezone\": \"Asia/Ho_Chi_Minh\"\n"
    "      }\n"
    "    }\n"
    "  }\n"
    "}";

static const char *status_name(enum jsonrpc_status s)
{
    switch (s) {
    case JSONRPC_OK:
        return "JSONRPC_OK";
    case JSONRPC_EMPTY:
        return "JSONRPC_EMPTY";
    case JSONRPC_INVALID_JSON:
        return "JSONRPC_INVALID_JSON";
    case JSONRPC_INVALID_RPC:
        return "JSONRPC_INVALID_RPC";
    }
    return "(unknown status)";
}

#define CHECK_STR(what, expected, got) check_str(what, expected, got, __FILE__, __LINE__)
#define CHECK_BOOL(what, expected, got) check_bool(what, expected, got, __FILE__, __LINE__)
#define CHECK_SIZE(what, expected, got) check_size(what, expected, got, __FILE__, __LINE__)
#define PARSE(text, req, expected) parse(text, strlen(text), MAX_STRING, req, expected, __LINE__)
#define CHECK_ERROR_HAS(req, needle) check_error_has(req, needle, __LINE__)

static void check_str(const char *what, const char *expected, const char *got, const char *file,
                      int line)
{
    if (!expected && !got)
        return;
    if (expected && got && strcmp(expected, got) == 0)
        return;
    fail_msg("%s:%d: %s: expected %s%s%s, got %s%s%s", file, line, what, expected ? "'" : "",
             expected ? expected : "NULL", expected ? "'" : "", got ? "'" : "", got ? got : "NULL",
             got ? "'" : "");
}

static void check_bool(const char *what, bool expected, bool got, const char *file, int line)
{
    if (expected != got)
        fail_msg("%s:%d: %s: expected %s, got %s", file, line, what, expected ? "true" : "false",
                 got ? "true" : "false");
}

static void check_size(const char *what, size_t expected, size_t got, const char *file, int line)
{
    if (expected != got)
        fail_msg("%s:%d: %s: expected %zu, got %zu", file, line, what, expected, got);
}

static void parse(const char *body, size_t len, size_t max_string, struct mcp_request *req,
                  enum jsonrpc_status expected, int line)
{
    enum jsonrpc_status got = jsonrpc_parse(body, len, max_string, req);

    if (got != expected)
        fail_msg("line %d: status: expected %s, got %s (error: '%s')", line, status_name(expected),
                 status_name(got), req->error);
    if (req->status != got)
        fail_msg("line %d: out->status %s differs from the returned %s", line,
                 status_name(req->status), status_name(got));
    if (got == JSONRPC_OK && req->error[0] != '\0')
        fail_msg("line %d: expected an empty error for JSONRPC_OK, got '%s'", line, req->error);
    if (got != JSONRPC_OK && req->error[0] == '\0')
        fail_msg("line %d: expected an error reason for %s, got an empty one", line,
                 status_name(got));
}

static void check_error_has(const struct mcp_request *req, const char *needle, int line)
{
    if (!strstr(req->error, needle))
        fail_msg("line %d: error: expected it to contain '%s', got '%s'", line, needle, req->error);
}

static void check_error_printable(const struct mcp_request *req)
{
    const unsigned char *p;

    for (p = (const unsigned char *)req->error; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            fail_msg("error: expected printable ASCII only, got byte 0x%02x in '%s'", *p,
                     req->error);
}

static bool jansson_utf8_ok(const char *s, size_t len)
{
    json_t *v = json_stringn(s, len);
    bool ok = v != NULL;

    json_decref(v);
    return ok;
}

static void test_article_wire_example(void **state)
{
    (void)state;
    struct mcp_request req;

    PARSE(article_body, &req, JSONRPC_OK);
    CHECK_STR("method", "tools/call", req.method);
    CHECK_STR("id_json", "47", req.id_json);
    CHECK_STR("tool", "create_matching_question", req.tool);
    CHECK_SIZE("batch", 1, req.batch);
    CHECK_BOOL("is_batch", false, req.is_batch);
    CHECK_BOOL("notification", false, req.notification);
    CHECK_BOOL("response", false, req.response);
    if (!req.openai || !req.openai->user_location)
        fail_msg("expected openai context with user_location, got %s",
                 req.openai ? "no location" : "NULL");
    CHECK_STR("openai session", "v1/abc123...", req.openai->session_id);
    CHECK_STR("openai subject", "v1/user_xyz...", req.openai->subject_id);
    CHECK_STR("openai organization", "v1/org_...", req.openai->organization_id);
    CHECK_STR("openai locale", "en-US", req.openai->locale);
    CHECK_STR("openai userAgent", "Mozilla/5.0 ...", req.openai->user_agent);
    CHECK_STR("city", VUNG_TAU, req.openai->user_location->city);
    CHECK_STR("country", "VN", req.openai->user_location->country);
    CHECK_STR("latitude", "10.34599", req.openai->user_location->latitude);
    CHECK_STR("longitude", "107.08426", req.openai->user_location->longitude);
    CHECK_STR("timezone", "Asia/Ho_Chi_Minh", req.openai->user_location->timezone);
    CHECK_STR("region", NULL, req.openai->user_location->region);
    mcp_request_clear(&req);
}

static void test_body_need_not_be_nul_terminated(void **state)
{
    (void)state;
    struct mcp_request req;
    size_t n = strlen(article_body);
    char *body = malloc(n + 8);

    assert_non_null(body);
    memcpy(body, article_body, n);
    memcpy(body + n, "garbage!", 8); /* no NUL anywhere after the JSON */
    parse(body, n, MAX_STRING, &req, JSONRPC_OK, __LINE__);
    CHECK_STR("method", "tools/call", req.method);
    CHECK_STR("id_json", "47", req.id_json);
    mcp_request_clear(&req);
    free(body);
}

static void test_numeric_session(void **state)
{
    (void)state;
    struct mcp_request req;

    PARSE("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\","
          "\"params\":{\"_meta\":{\"openai/session\":12345,\"openai/subject\":1.5}}}",
          &req, JSONRPC_OK);
    if (!req.openai)
        fail_msg("expected an openai context, got NULL");
    CHECK_STR("openai session", "12345", req.openai->session_id);
    CHECK_STR("openai subject", "1.5", req.openai->subject_id);
    CHECK_STR("tool (not tools/call)", NULL, req.tool);
    mcp_request_clear(&req);
}

static void test_no_openai_keys(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{\"_meta\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{\"_meta\":"
        "{\"progressToken\":3}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{\"_meta\":"
        "[{\"openai/session\":\"s\"}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{\"_meta\":"
        "\"openai/session\"}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":[{\"_meta\":"
        "{\"openai/session\":\"s\"}}]}",
        /* _meta outside params is not where ChatGPT puts it */
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"_meta\":"
        "{\"openai/session\":\"s\"}}",
    };
    struct mcp_request req;
    size_t i;

    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        PARSE(bodies[i], &req, JSONRPC_OK);
        if (req.openai)
            fail_msg("body %zu: expected openai NULL, got session '%s'", i,
                     req.openai->session_id ? req.openai->session_id : "NULL");
        mcp_request_clear(&req);
    }
}

static void test_batch_reads_first_element(void **state)
{
    (void)state;
    struct mcp_request req;

    PARSE("[{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"tools/call\",\"params\":{\"name\":"
          "\"first\",\"_meta\":{\"openai/session\":\"s-first\"}}},"
          " {\"jsonrpc\":\"2.0\",\"id\":\"b\",\"method\":\"tools/call\",\"params\":{\"name\":"
          "\"second\",\"_meta\":{\"openai/session\":\"s-second\"}}},"
          " {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}]",
          &req, JSONRPC_OK);
    CHECK_BOOL("is_batch", true, req.is_batch);
    CHECK_SIZE("batch", 3, req.batch);
    CHECK_STR("method", "tools/call", req.method);
    CHECK_STR("id_json", "\"a\"", req.id_json);
    CHECK_STR("tool", "first", req.tool);
    CHECK_BOOL("notification", false, req.notification);
    if (!req.openai)
        fail_msg("expected openai from the first element, got NULL");
    CHECK_STR("openai session", "s-first", req.openai->session_id);
    mcp_request_clear(&req);

    /* Meta only on the second element: the batch has none. */
    PARSE("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"},"
          " {\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\",\"params\":{\"_meta\":"
          "{\"openai/session\":\"s-second\"}}}]",
          &req, JSONRPC_OK);
    CHECK_SIZE("batch", 2, req.batch);
    if (req.openai)
        fail_msg("expected openai NULL (first element has no _meta), got session '%s'",
                 req.openai->session_id ? req.openai->session_id : "NULL");
    mcp_request_clear(&req);

    /* A batch of one is still a batch. */
    PARSE("[{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}]", &req, JSONRPC_OK);
    CHECK_BOOL("is_batch", true, req.is_batch);
    CHECK_SIZE("batch", 1, req.batch);
    CHECK_BOOL("notification", true, req.notification);
    mcp_request_clear(&req);
}

static void test_batch_with_invalid_elements(void **state)
{
    (void)state;
    struct mcp_request req;

    PARSE("[]", &req, JSONRPC_INVALID_RPC);
    CHECK_BOOL("is_batch", true, req.is_batch);
    CHECK_SIZE("batch", 0, req.batch);
    CHECK_ERROR_HAS(&req, "empty batch");
    mcp_request_clear(&req);

    /* Fields still describe the first element; the error names the bad one. */
    PARSE("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}, {\"jsonrpc\":\"2.0\",\"id\":2,"
          "\"method\":\"ping\"}, {\"id\":3,\"method\":\"ping\"}]",
          &req, JSONRPC_INVALID_RPC);
    CHECK_SIZE("batch", 3, req.batch);
    CHECK_STR("method", "ping", req.method);
    CHECK_STR("id_json", "1", req.id_json);
    CHECK_ERROR_HAS(&req, "batch element 2");
    CHECK_ERROR_HAS(&req, "jsonrpc");
    mcp_request_clear(&req);

    PARSE("[1, {\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}]", &req, JSONRPC_INVALID_RPC);
    CHECK_SIZE("batch", 2, req.batch);
    CHECK_STR("method", NULL, req.method);
    CHECK_ERROR_HAS(&req, "batch element 0: not an object");
    mcp_request_clear(&req);

    PARSE("[[]]", &req, JSONRPC_INVALID_RPC);
    CHECK_SIZE("batch", 1, req.batch);
    mcp_request_clear(&req);
}

static void test_notification(void **state)
{
    (void)state;
    struct mcp_request req;

    PARSE("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", &req, JSONRPC_OK);
    CHECK_STR("method", "notifications/initialized", req.method);
    CHECK_STR("id_json", NULL, req.id_json);
    CHECK_BOOL("notification", true, req.notification);
    CHECK_BOOL("response", false, req.response);
    mcp_request_clear(&req);

    /* "id": null is present, so this is a request (with a null id), not a notification. */
    PARSE("{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}", &req, JSONRPC_OK);
    CHECK_STR("id_json", "null", req.id_json);
    CHECK_BOOL("notification", false, req.notification);
    mcp_request_clear(&req);
}

static void test_responses(void **state)
{
    (void)state;
    struct mcp_request req;

    PARSE("{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"content\":[]}}", &req, JSONRPC_OK);
    CHECK_BOOL("response", true, req.response);
    CHECK_BOOL("notification", false, req.notification);
    CHECK_STR("method", NULL, req.method);
    CHECK_STR("id_json", "5", req.id_json);
    mcp_request_clear(&req);

    PARSE("{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"error\":{\"code\":-32601,\"message\":\"no\"}}", &req,
          JSONRPC_OK);
    CHECK_BOOL("response", true, req.response);
    CHECK_STR("id_json", "\"x\"", req.id_json);
    mcp_request_clear(&req);

    /* A null result is still a result. */
    PARSE("{\"jsonrpc\":\"2.0\",\"id\":6,\"result\":null}", &req, JSONRPC_OK);
    CHECK_BOOL("response", true, req.response);
    mcp_request_clear(&req);

    /* No id and no method: a (malformed) response, never a notification. */
    PARSE("{\"jsonrpc\":\"2.0\",\"result\":{}}", &req, JSONRPC_OK);
    CHECK_BOOL("response", true, req.response);
    CHECK_BOOL("notification", false, req.notification);
    CHECK_STR("id_json", NULL, req.id_json);
    mcp_request_clear(&req);

    /* A method makes it a request even next to a result member. */
    PARSE("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\",\"result\":{}}", &req, JSONRPC_OK);
    CHECK_BOOL("response", false, req.response);
    CHECK_STR("method", "ping", req.method);
    mcp_request_clear(&req);
}

static void test_ids_are_kept_exact(void **state)
{
    (void)state;
    static const struct {
        const char *id;
        const char *expected;
    } cases[] = {
        {"47", "47"},
        {"0", "0"},
        {"-1", "-1"},
        {"9223372036854775807", "9223372036854775807"},
        {"\"abc\"", "\"abc\""},
        {"\"\"", "\"\""},
        {"\"47\"", "\"47\""},
        {"null", "null"},
        {"1.5", "1.5"},
        {"0.1", "0.1"},
        {"1.0", "1.0"},
        {"1e2", "100.0"},
        {"\"" VUNG_TAU "\"", "\"" VUNG_TAU "\""},
        {"\"a\\\"b\\\\c\\n\"", "\"a\\\"b\\\\c\\n\""},
        {"\"\\u00e9/\"", "\"\xc3\xa9/\""},
        {"\"a\\u0000b\"", "\"a\\u0000b\""},
        /* Spellings jansson normalises when the id is written back as JSON. */
        {"-0", "0"},
        {"1E2", "100.0"},
        {"1E+2", "100.0"},
        {"1e-5", "1e-5"},
        {"-0.0", "-0.0"},
        {"1.5e300", "1.5e300"},
        {"1e-400", "0.0"}, /* underflow reads as 0, as in jansson */
        {"0.30000000000000004", "0.30000000000000004"},
        {"5e-324", "4.94065645841247e-324"},
        {"true", "true"},
        {"false", "false"},
        {"\"\\u001f\\u007f/\\t\"", "\"\\u001f\\u007f/\\t\""},
        {"\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\""},
    };
    char body[256];
    struct mcp_request req;
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body), "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"ping\"}",
                 cases[i].id);
        PARSE(body, &req, JSONRPC_OK);
        CHECK_STR(cases[i].id, cases[i].expected, req.id_json);
        CHECK_BOOL("notification", false, req.notification);
        mcp_request_clear(&req);
    }

    /* Structured ids are not JSON-RPC; they are not copied (their size is unbounded). */
    PARSE("{\"jsonrpc\":\"2.0\",\"id\":{\"a\":1},\"method\":\"ping\"}", &req, JSONRPC_OK);
    CHECK_STR("object id", NULL, req.id_json);
    CHECK_BOOL("notification", false, req.notification);
    mcp_request_clear(&req);
    PARSE("{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"ping\"}", &req, JSONRPC_OK);
    CHECK_STR("array id", NULL, req.id_json);
    mcp_request_clear(&req);
}

/* A limit of jansson's (which parses the body): integers outside int64 and reals that overflow
 * a double are refused as "too big", so such a body is reported as invalid JSON (it is still
 * forwarded unless strict_json is on). In range, they are converted exactly. */
static void test_numbers_beyond_int64_and_double_are_invalid_to_jansson(void **state)
{
    (void)state;
    static const char *const ids[] = {
        "99999999999999999999",
        "-99999999999999999999",
        "9223372036854775808",
        "1e400",
        "-1.5E+999",
    };
    char body[256];
    struct mcp_request req;
    size_t i;

    for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        snprintf(body, sizeof(body), "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"ping\"}", ids[i]);
        PARSE(body, &req, JSONRPC_INVALID_JSON);
        CHECK_ERROR_HAS(&req, strchr(ids[i], 'e') || strchr(ids[i], 'E') ? "real number overflow"
                                                                         : "too big");
        mcp_request_clear(&req);
    }

    PARSE("{\"jsonrpc\":\"2.0\",\"id\":-9223372036854775808,\"method\":\"ping\"}", &req,
          JSONRPC_OK);
    CHECK_STR("int64 min id", "-9223372036854775808", req.id_json);
    mcp_request_clear(&req);
    PARSE("{\"jsonrpc\":\"2.0\",\"id\":9223372036854775807,\"method\":\"ping\"}", &req, JSONRPC_OK);
    CHECK_STR("int64 max id", "9223372036854775807", req.id_json);
    mcp_request_clear(&req);
}

/* A raw NUL is never valid JSON (outside a string it is not whitespace, inside it is an
 * unescaped control character); json_loadb reads the whole length it is given and says so. */
static void test_raw_nul_byte_is_invalid(void **state)
{
    (void)state;
    static const char ok[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}";
    static const char nul_in_string[] = "{\"jsonrpc\":\"2.0\",\"method\":\"a\0b\"}";
    char body[sizeof(ok) + 8];
    struct mcp_request req;

    memcpy(body, ok, sizeof(ok) - 1);
    memcpy(body + sizeof(ok) - 1, "\0junk", 5);
    parse(body, sizeof(ok) - 1 + 5, MAX_STRING, &req, JSONRPC_INVALID_JSON, __LINE__);
    CHECK_ERROR_HAS(&req, "end of file expected");
    mcp_request_clear(&req);

    parse(nul_in_string, sizeof(nul_in_string) - 1, MAX_STRING, &req, JSONRPC_INVALID_JSON,
          __LINE__);
    CHECK_ERROR_HAS(&req, "invalid JSON at line 1 column ");
    mcp_request_clear(&req);
}

static void test_long_string_id_is_capped_and_valid_json(void **state)
{
    (void)state;
    size_t n = 10000, i;
    char *body = malloc(n * 2 + 128);
    struct mcp_request req;
    json_t *decoded;
    size_t len;

    assert_non_null(body);
    strcpy(body, "{\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"id\":\"");
    len = strlen(body);
    for (i = 0; i < n; i++) { /* "é" repeated: every odd cap lands inside a character */
        body[len++] = '\xc3';
        body[len++] = '\xa9';
    }
    strcpy(body + len, "\"}");
    parse(body, strlen(body), 101, &req, JSONRPC_OK, __LINE__);
    free(body);
    if (!req.id_json)
        fail_msg("expected an id_json, got NULL");
    decoded = json_loads(req.id_json, JSON_DECODE_ANY, NULL);
    if (!json_is_string(decoded))
        fail_msg("id_json: expected a valid JSON string, got '%.40s...'", req.id_json);
    CHECK_SIZE("decoded id length", 100, json_string_length(decoded));
    json_decref(decoded);
    mcp_request_clear(&req);
}

static void test_tools_call_tool_name(void **state)
{
    (void)state;
    static const char *const no_tool[] = {
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":42}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":null}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":[\"x\"]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":[\"x\"]}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"prompts/get\",\"params\":{\"name\":\"x\"}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call2\",\"params\":{\"name\":\"x\"}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/cal\",\"params\":{\"name\":\"x\"}}",
    };
    struct mcp_request req;
    size_t i;

    PARSE("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":"
          "\"get_weather\",\"arguments\":{\"name\":\"not this\"}}}",
          &req, JSONRPC_OK);
    CHECK_STR("tool", "get_weather", req.tool);
    mcp_request_clear(&req);

    for (i = 0; i < sizeof(no_tool) / sizeof(no_tool[0]); i++) {
        PARSE(no_tool[i], &req, JSONRPC_OK);
        if (req.tool)
            fail_msg("body %zu: expected tool NULL, got '%s'", i, req.tool);
        mcp_request_clear(&req);
    }
}

static void test_malformed_json(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{",
        "{\"jsonrpc\":\"2.0\"",
        "{\"jsonrpc\":\"2.0\",}",
        "{'jsonrpc':'2.0'}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"} trailing",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}{}",
        "  ",
        "nul",
        "\xef\xbb\xbf{}", /* byte order mark */
        "{\"a\":\"\x01\"}",
        "{\"a\":\"\\ud800\"}", /* lone surrogate escape */
        "{\"a\\u0000\":1}",    /* NUL in a key: jansson refuses it */
    };
    struct mcp_request req;
    size_t i;

    /* jansson says where (line and column) and what. */
    PARSE("{\"a\": }", &req, JSONRPC_INVALID_JSON);
    CHECK_STR("error", "invalid JSON at line 1 column 7: unexpected token near '}'", req.error);
    CHECK_SIZE("batch", 0, req.batch);
    CHECK_STR("method", NULL, req.method);
    mcp_request_clear(&req);

    PARSE("{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 1,,\n}", &req, JSONRPC_INVALID_JSON);
    CHECK_ERROR_HAS(&req, "invalid JSON at line 3 column ");
    mcp_request_clear(&req);

    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        PARSE(bodies[i], &req, JSONRPC_INVALID_JSON);
        CHECK_ERROR_HAS(&req, "invalid JSON at line ");
        check_error_printable(&req);
        mcp_request_clear(&req);
    }
}

static void test_error_text_never_carries_raw_bytes(void **state)
{
    (void)state;
    struct mcp_request req;

    /* jansson quotes the bad token; invalid UTF-8 and control bytes must not reach the log. */
    PARSE("{\"jsonrpc\":\"2.0\",\"method\":\"\xff\xfe\"}", &req, JSONRPC_INVALID_JSON);
    check_error_printable(&req);
    mcp_request_clear(&req);

    PARSE("{\x01\x02\x1b[31m}", &req, JSONRPC_INVALID_JSON);
    check_error_printable(&req);
    mcp_request_clear(&req);

    PARSE("[" VUNG_TAU "]", &req, JSONRPC_INVALID_JSON);
    check_error_printable(&req);
    mcp_request_clear(&req);
}

static void test_empty_body(void **state)
{
    (void)state;
    struct mcp_request req;

    parse("", 0, MAX_STRING, &req, JSONRPC_EMPTY, __LINE__);
    CHECK_SIZE("batch", 0, req.batch);
    mcp_request_clear(&req);
    parse(NULL, 0, MAX_STRING, &req, JSONRPC_EMPTY, __LINE__);
    mcp_request_clear(&req);
    /* Length wins over content: zero bytes of a non-empty buffer is still empty. */
    parse("{}", 0, MAX_STRING, &req, JSONRPC_EMPTY, __LINE__);
    mcp_request_clear(&req);
}

static void test_json_that_is_not_an_object(void **state)
{
    (void)state;
    static const char *const bodies[] = {"42", "\"x\"", "true", "null", "-1.5"};
    struct mcp_request req;
    size_t i;

    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        PARSE(bodies[i], &req, JSONRPC_INVALID_RPC);
        CHECK_ERROR_HAS(&req, "not an object");
        CHECK_BOOL("is_batch", false, req.is_batch);
        CHECK_SIZE("batch", 1, req.batch);
        CHECK_STR("method", NULL, req.method);
        mcp_request_clear(&req);
    }
}

static void test_jsonrpc_version(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"id\":1,\"method\":\"ping\"}",
        "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}",
        "{\"jsonrpc\":2.0,\"id\":1,\"method\":\"ping\"}",
        "{\"jsonrpc\":\"2.0 \",\"id\":1,\"method\":\"ping\"}",
        "{\"jsonrpc\":\"2\",\"id\":1,\"method\":\"ping\"}",
        "{\"jsonrpc\":null,\"id\":1,\"method\":\"ping\"}",
        "{\"jsonrpc\":\"2.0\\u0000\",\"id\":1,\"method\":\"ping\"}",
    };
    struct mcp_request req;
    size_t i;

    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        PARSE(bodies[i], &req, JSONRPC_INVALID_RPC);
        CHECK_ERROR_HAS(&req, "\"jsonrpc\" is not \"2.0\"");
        /* Best effort: what could be read is still reported, for the log. */
        CHECK_STR("method", "ping", req.method);
        CHECK_STR("id_json", "1", req.id_json);
        mcp_request_clear(&req);
    }
}

static void test_message_kind_required(void **state)
{
    (void)state;
    struct mcp_request req;

    PARSE("{\"jsonrpc\":\"2.0\",\"id\":1}", &req, JSONRPC_INVALID_RPC);
    CHECK_ERROR_HAS(&req, "no \"method\", \"result\" or \"error\"");
    CHECK_BOOL("response", false, req.response);
    mcp_request_clear(&req);

    PARSE("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}", &req, JSONRPC_INVALID_RPC);
    CHECK_ERROR_HAS(&req, "\"method\" is not a string");
    CHECK_STR("method", NULL, req.method);
    CHECK_BOOL("notification", false, req.notification);
    mcp_request_clear(&req);
}

static char *deep_nesting(const char *open, const char *close, size_t depth, size_t *len)
{
    size_t lo = strlen(open), lc = strlen(close), i;
    char *body = malloc(depth * (lo + lc) + 1);

    assert_non_null(body);
    for (i = 0; i < depth; i++)
        memcpy(body + i * lo, open, lo);
    for (i = 0; i < depth; i++)
        memcpy(body + depth * lo + i * lc, close, lc);
    *len = depth * (lo + lc);
    body[*len] = '\0';
    return body;
}

static void test_deep_nesting_is_rejected(void **state)
{
    (void)state;
    struct mcp_request req;
    size_t len;
    char *body;

    body = deep_nesting("[", "]", 100000, &len);
    parse(body, len, MAX_STRING, &req, JSONRPC_INVALID_JSON, __LINE__);
    CHECK_ERROR_HAS(&req, "maximum parsing depth");
    mcp_request_clear(&req);
    free(body);

    body = deep_nesting("{\"a\":", "}", 100000, &len);
    parse(body, len, MAX_STRING, &req, JSONRPC_INVALID_JSON, __LINE__);
    CHECK_ERROR_HAS(&req, "maximum parsing depth");
    mcp_request_clear(&req);
    free(body);

    /* Unterminated: only the openers. */
    body = deep_nesting("[", "", 100000, &len);
    parse(body, len, MAX_STRING, &req, JSONRPC_INVALID_JSON, __LINE__);
    mcp_request_clear(&req);
    free(body);

    /* Below jansson's limit it parses. */
    body = deep_nesting("[", "]", 2000, &len);
    parse(body, len, MAX_STRING, &req, JSONRPC_INVALID_RPC, __LINE__);
    CHECK_SIZE("batch", 1, req.batch);
    mcp_request_clear(&req);
    free(body);
}

static void test_unicode_preserved(void **state)
{
    (void)state;
    struct mcp_request req;

    PARSE("{\"jsonrpc\":\"2.0\",\"id\":\"\xf0\x9f\x98\x80\",\"method\":\"tools/call\","
          "\"params\":{\"name\":\"cr\xc3\xa9"
          "er_question_\xf0\x9f\x8e\xaf\",\"_meta\":"
          "{\"openai/session\":\"v1/\xce\xa9\xe2\x89\x88\\u00e7\",\"openai/locale\":\"vi-VN\"}}}",
          &req, JSONRPC_OK);
    CHECK_STR("id_json", "\"\xf0\x9f\x98\x80\"", req.id_json);
    CHECK_STR("tool",
              "cr\xc3\xa9"
              "er_question_\xf0\x9f\x8e\xaf",
              req.tool);
    if (!req.openai)
        fail_msg("expected an openai context, got NULL");
    CHECK_STR("openai session", "v1/\xce\xa9\xe2\x89\x88\xc3\xa7", req.openai->session_id);
    CHECK_STR("openai locale", "vi-VN", req.openai->locale);
    mcp_request_clear(&req);
}

static void test_very_long_strings_are_capped(void **state)
{
    (void)state;
    size_t big = 1024 * 1024, len, max_len;
    json_t *msg;
    char *value, *body;
    struct mcp_request req;

    /* 1 MiB of "€" (3 bytes): every cap that is not a multiple of 3 lands inside one. */
    value = malloc(big + 1);
    assert_non_null(value);
    for (len = 0; len + 3 <= big; len += 3)
        memcpy(value + len, "\xe2\x82\xac", 3);
    value[len] = '\0';
    msg = json_pack("{s:s, s:i, s:s, s:{s:s, s:{s:s}}}", "jsonrpc", "2.0", "id", 1, "method",
                    "tools/call", "params", "name", value, "_meta", "openai/session", value);
    free(value);
    assert_non_null(msg);
    body = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    assert_non_null(body);

    for (max_len = 255; max_len <= 257; max_len++) {
        parse(body, strlen(body), max_len, &req, JSONRPC_OK, __LINE__);
        if (!req.openai || !req.tool)
            fail_msg("cap %zu: expected tool and openai, got %s", max_len,
                     req.tool ? "no openai" : "no tool");
        len = strlen(req.openai->session_id);
        CHECK_SIZE("capped session length", max_len / 3 * 3, len);
        if (!jansson_utf8_ok(req.openai->session_id, len))
            fail_msg("cap %zu: session is not valid UTF-8 after the cut", max_len);
        len = strlen(req.tool);
        CHECK_SIZE("capped tool length", max_len / 3 * 3, len);
        if (!jansson_utf8_ok(req.tool, len))
            fail_msg("cap %zu: tool is not valid UTF-8 after the cut", max_len);
        mcp_request_clear(&req);
    }
    free(body);

    /* The method is capped too, and the tools/call check uses the uncapped value. */
    parse("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"t\"}}",
          strlen("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":"
                 "\"t\"}}"),
          5, &req, JSONRPC_OK, __LINE__);
    CHECK_STR("method", "tools", req.method);
    CHECK_STR("tool", "t", req.tool);
    mcp_request_clear(&req);
}

static void test_duplicate_keys_last_wins(void **state)
{
    (void)state;
    struct mcp_request req;

    /* jansson (without JSON_REJECT_DUPLICATES) keeps the last value of a repeated key. */
    PARSE("{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"tools/list\",\"method\":"
          "\"tools/call\",\"params\":{\"name\":\"a\",\"name\":\"b\",\"_meta\":{\"openai/session\":"
          "\"first\",\"openai/session\":\"last\"}}}",
          &req, JSONRPC_OK);
    CHECK_STR("id_json", "2", req.id_json);
    CHECK_STR("method", "tools/call", req.method);
    CHECK_STR("tool", "b", req.tool);
    if (!req.openai)
        fail_msg("expected an openai context, got NULL");
    CHECK_STR("openai session", "last", req.openai->session_id);
    mcp_request_clear(&req);
}

static void test_embedded_nul_in_strings(void **state)
{
    (void)state;
    struct mcp_request req;

    PARSE("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\\u0000x\",\"params\":"
          "{\"name\":\"t\"}}",
          &req, JSONRPC_OK);
    /* The NUL stays visible as U+FFFD, so the logged method is not mistaken for tools/call. */
    CHECK_STR("method", "tools/call\xEF\xBF\xBDx", req.method);
    CHECK_STR("tool (method is not exactly tools/call)", NULL, req.tool);
    mcp_request_clear(&req);
}

static void test_parse_zeroes_and_clear_is_idempotent(void **state)
{
    (void)state;
    struct mcp_request req;

    memset(&req, 0xab, sizeof(req)); /* parse must not read or free what was there */
    PARSE("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", &req, JSONRPC_OK);
    CHECK_STR("id_json", NULL, req.id_json);
    CHECK_STR("tool", NULL, req.tool);
    if (req.openai)
        fail_msg("expected openai NULL, got a context");
    CHECK_BOOL("response", false, req.response);
    CHECK_BOOL("is_batch", false, req.is_batch);
    mcp_request_clear(&req);
    CHECK_STR("method after clear", NULL, req.method);
    CHECK_SIZE("batch after clear", 0, req.batch);
    mcp_request_clear(&req); /* twice is fine */
    mcp_request_clear(NULL);

    /* Reuse after clear. */
    PARSE(article_body, &req, JSONRPC_OK);
    CHECK_STR("tool", "create_matching_question", req.tool);
    mcp_request_clear(&req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_article_wire_example),
        cmocka_unit_test(test_body_need_not_be_nul_terminated),
        cmocka_unit_test(test_numeric_session),
        cmocka_unit_test(test_no_openai_keys),
        cmocka_unit_test(test_batch_reads_first_element),
        cmocka_unit_test(test_batch_with_invalid_elements),
        cmocka_unit_test(test_notification),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_ids_are_kept_exact),
        cmocka_unit_test(test_numbers_beyond_int64_and_double_are_invalid_to_jansson),
        cmocka_unit_test(test_raw_nul_byte_is_invalid),
        cmocka_unit_test(test_long_string_id_is_capped_and_valid_json),
        cmocka_unit_test(test_tools_call_tool_name),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_error_text_never_carries_raw_bytes),
        cmocka_unit_test(test_empty_body),
        cmocka_unit_test(test_json_that_is_not_an_object),
        cmocka_unit_test(test_jsonrpc_version),
        cmocka_unit_test(test_message_kind_required),
        cmocka_unit_test(test_deep_nesting_is_rejected),
        cmocka_unit_test(test_unicode_preserved),
        cmocka_unit_test(test_very_long_strings_are_capped),
        cmocka_unit_test(test_duplicate_keys_last_wins),
        cmocka_unit_test(test_embedded_nul_in_strings),
        cmocka_unit_test(test_parse_zeroes_and_clear_is_idempotent),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
