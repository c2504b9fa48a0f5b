/* Tests for src/response_inspect.c: what the log learns from JSON and SSE answers.
 *
 * Every answer is fed whole, byte by byte and split at every point into two pieces, and must
 * give the same findings each way. Requests are built by hand (no jsonrpc.c needed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mcpeek/response_inspect.h"

#define MAX_BYTES 4096
#define MAX_STRING 64

/* What one inspection found, in a form easy to compare. */
struct found {
    bool has_code;
    long long code;
    char message[128]; /* "" when none */
    bool tool_is_error;
    uint64_t server_requests;
    uint64_t sse_events;
    enum response_inspection inspected;
};

static void run(const struct mcp_request *req, enum response_kind kind, size_t max_bytes,
                const char *body, size_t len, size_t split, size_t step, struct found *out)
{
    struct response_inspect ri;
    struct exchange_record rec;

    memset(&rec, 0, sizeof(rec));
    response_inspect_start(&ri, req, kind, max_bytes, MAX_STRING);
    response_inspect_feed(&ri, body, split);
    for (size_t off = split; off < len; off += step)
        response_inspect_feed(&ri, body + off, len - off < step ? len - off : step);
    response_inspect_fill(&ri, &rec);
    memset(out, 0, sizeof(*out));
    out->has_code = rec.has_rpc_error_code;
    out->code = rec.rpc_error_code;
    if (rec.rpc_error_message)
        snprintf(out->message, sizeof(out->message), "%s", rec.rpc_error_message);
    out->tool_is_error = rec.tool_is_error;
    out->server_requests = rec.server_requests;
    out->sse_events = rec.sse_events;
    out->inspected = rec.response_inspected;
    response_inspect_clear(&ri);
}

static void describe(const struct found *f, char *buf, size_t n)
{
    snprintf(buf, n,
             "code=%s%lld message=\"%s\" tool_is_error=%d server_requests=%llu "
             "sse_events=%llu inspected=%d",
             f->has_code ? "" : "(none)", f->code, f->message, f->tool_is_error,
             (unsigned long long)f->server_requests, (unsigned long long)f->sse_events,
             (int)f->inspected);
}

/* Inspects `body` whole, byte by byte and split at every point; every way must find `want`. */
static void expect_found_max(const struct mcp_request *req, enum response_kind kind,
                             size_t max_bytes, const char *body, const struct found *want)
{
    size_t len = strlen(body);
    struct found got;
    char w[512], g[512];

    for (size_t split = 0; split <= len; split++) {
        for (size_t step = 1; step <= len + 1; step = step == 1 ? len + 1 : step) {
            run(req, kind, max_bytes, body, len, split, step, &got);
            if (memcmp(&got, want, sizeof(got)) != 0) {
                describe(want, w, sizeof(w));
                describe(&got, g, sizeof(g));
                fail_msg("answer %s\nsplit at %zu, then pieces of %zu:\nexpected %s\ngot      %s",
                         body, split, step, w, g);
            }
            if (step == len + 1)
                break;
        }
    }
}

static void expect_found(const struct mcp_request *req, enum response_kind kind, const char *body,
                         const struct found *want)
{
    expect_found_max(req, kind, MAX_BYTES, body, want);
}

static struct mcp_request request(const char *method, const char *id_json)
{
    struct mcp_request r;
    memset(&r, 0, sizeof(r));
    r.method = (char *)method;
    r.id_json = (char *)id_json;
    r.batch = 1;
    return r;
}

static struct found error_found(long long code, const char *message,
                                enum response_inspection inspected)
{
    struct found f;
    memset(&f, 0, sizeof(f));
    f.has_code = true;
    f.code = code;
    snprintf(f.message, sizeof(f.message), "%s", message);
    f.inspected = inspected;
    return f;
}

static struct found nothing(enum response_inspection inspected)
{
    struct found f;
    memset(&f, 0, sizeof(f));
    f.inspected = inspected;
    return f;
}

static void test_json_error_for_the_request_id(void **state)
{
    (void)state;
    struct mcp_request req = request("tools/list", "47");
    struct found want = error_found(-32601, "Method not found", RESPONSE_INSPECT_DONE);
    expect_found(&req, RESPONSE_JSON,
                 "{\"jsonrpc\":\"2.0\",\"id\":47,\"error\":{\"code\":-32601,"
                 "\"message\":\"Method not found\"}}",
                 &want);

    /* an error answering another id is not this request's */
    struct found none = nothing(RESPONSE_INSPECT_DONE);
    expect_found(&req, RESPONSE_JSON,
                 "{\"jsonrpc\":\"2.0\",\"id\":48,\"error\":{\"code\":-1,\"message\":\"x\"}}",
                 &none);
    /* "47" the string is not 47 the number */
    expect_found(&req, RESPONSE_JSON,
                 "{\"jsonrpc\":\"2.0\",\"id\":\"47\",\"error\":{\"code\":-1,\"message\":\"x\"}}",
                 &none);
    /* a result is not an error */
    expect_found(&req, RESPONSE_JSON, "{\"jsonrpc\":\"2.0\",\"id\":47,\"result\":{\"tools\":[]}}",
                 &none);

    struct mcp_request sreq = request("tools/list", "\"req-\\u00e9\"");
    struct found swant = error_found(-32000, "boom", RESPONSE_INSPECT_DONE);
    expect_found(&sreq, RESPONSE_JSON,
                 "{\"jsonrpc\":\"2.0\",\"id\":\"req-\xc3\xa9\",\"error\":{\"code\":-32000,"
                 "\"message\":\"boom\"}}",
                 &swant);
}

static void test_json_batch_answer(void **state)
{
    (void)state;
    struct mcp_request req = request("tools/call", "2");
    struct found want = error_found(-32602, "bad params", RESPONSE_INSPECT_DONE);
    expect_found(&req, RESPONSE_JSON,
                 "[{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-1,\"message\":\"first\"}},"
                 "{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-32602,"
                 "\"message\":\"bad params\"}},"
                 "{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-3,\"message\":\"later\"}}]",
                 &want);
}

static void test_error_without_integer_code(void **state)
{
    (void)state;
    struct mcp_request req = request("ping", "1");
    struct found want = nothing(RESPONSE_INSPECT_DONE);
    snprintf(want.message, sizeof(want.message), "odd");
    expect_found(&req, RESPONSE_JSON, "{\"id\":1,\"error\":{\"code\":\"E1\",\"message\":\"odd\"}}",
                 &want);
    struct found only_code = error_found(7, "", RESPONSE_INSPECT_DONE);
    expect_found(&req, RESPONSE_JSON, "{\"id\":1,\"error\":{\"code\":7,\"message\":3}}",
                 &only_code);
}

static void test_tool_is_error(void **state)
{
    (void)state;
    struct mcp_request req = request("tools/call", "5");
    struct found want = nothing(RESPONSE_INSPECT_DONE);
    want.tool_is_error = true;
    expect_found(&req, RESPONSE_JSON,
                 "{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"content\":[{\"type\":\"text\","
                 "\"text\":\"no such city\"}],\"isError\":true}}",
                 &want);

    struct found none = nothing(RESPONSE_INSPECT_DONE);
    expect_found(&req, RESPONSE_JSON, "{\"id\":5,\"result\":{\"content\":[],\"isError\":false}}",
                 &none);
    expect_found(&req, RESPONSE_JSON, "{\"id\":5,\"result\":{\"content\":[],\"isError\":1}}",
                 &none);
    expect_found(&req, RESPONSE_JSON, "{\"id\":6,\"result\":{\"isError\":true}}", &none);
    /* only a tools/call result says whether a tool failed */
    struct mcp_request other = request("resources/read", "5");
    expect_found(&other, RESPONSE_JSON, "{\"id\":5,\"result\":{\"isError\":true}}", &none);
}

static void test_sse_answer(void **state)
{
    (void)state;
    struct mcp_request req = request("tools/call", "9");
    /* a progress notification, a sampling request, an elicitation request, then the error */
    const char *body =
        ": stream opened\r\n\r\n"
        "id: e1\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\","
        "\"params\":{\"progress\":1}}\r\n\r\n"
        "data: {\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"sampling/createMessage\"}\n\n"
        "data: {\"jsonrpc\":\"2.0\",\"id\":\"el-1\",\n"
        "data:  \"method\":\"elicitation/create\"}\n\n"
        "data: {\"jsonrpc\":\"2.0\",\"id\":9,\"error\":{\"code\":-32603,"
        "\"message\":\"Internal error\"}}\n\n";
    struct found want = error_found(-32603, "Internal error", RESPONSE_INSPECT_DONE);
    want.server_requests = 2;
    want.sse_events = 4;
    expect_found(&req, RESPONSE_SSE, body, &want);

    /* an isError result as the last event, after an empty priming event */
    struct found tool = nothing(RESPONSE_INSPECT_DONE);
    tool.tool_is_error = true;
    tool.sse_events = 2;
    expect_found(&req, RESPONSE_SSE,
                 "id: 0\ndata:\n\ndata: {\"id\":9,\"result\":{\"isError\":true}}\n\n", &tool);

    /* a partial last event is not read */
    struct found partial = nothing(RESPONSE_INSPECT_DONE);
    expect_found(&req, RESPONSE_SSE, "data: {\"id\":9,\"error\":{\"code\":1}}\n", &partial);
}

/* A GET stream has no request: nothing is its answer, server requests still count. */
static void test_get_stream(void **state)
{
    (void)state;
    struct found want = nothing(RESPONSE_INSPECT_DONE);
    want.server_requests = 1;
    want.sse_events = 2;
    expect_found(NULL, RESPONSE_SSE,
                 "data: {\"id\":null,\"error\":{\"code\":1,\"message\":\"m\"}}\n\n"
                 "data: {\"id\":1,\"method\":\"roots/list\"}\n\n",
                 &want);
}

/* A request without id (invalid JSON, say) is answered with id null. */
static void test_request_without_id(void **state)
{
    (void)state;
    struct mcp_request req = request(NULL, NULL);
    struct found want = error_found(-32700, "Parse error", RESPONSE_INSPECT_DONE);
    expect_found(&req, RESPONSE_JSON,
                 "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,"
                 "\"message\":\"Parse error\"}}",
                 &want);
    struct found none = nothing(RESPONSE_INSPECT_DONE);
    expect_found(&req, RESPONSE_JSON, "{\"id\":3,\"error\":{\"code\":-32700}}", &none);
}

static void test_json_over_the_limit_is_not_parsed(void **state)
{
    (void)state;
    struct mcp_request req = request("ping", "1");
    const char *body = "{\"id\":1,\"error\":{\"code\":-5,\"message\":\"m\"}}";
    size_t len = strlen(body);
    struct found want = error_found(-5, "m", RESPONSE_INSPECT_DONE);
    expect_found_max(&req, RESPONSE_JSON, len, body, &want);
    struct found skipped = nothing(RESPONSE_INSPECT_SKIPPED);
    expect_found_max(&req, RESPONSE_JSON, len - 1, body, &skipped);
    expect_found_max(&req, RESPONSE_JSON, 0, body, &skipped);
}

static void test_sse_event_over_the_limit_is_skipped(void **state)
{
    (void)state;
    struct mcp_request req = request("tools/call", "1");
    /* the first event's data is 36 bytes, over a cap of 35; the second is read */
    const char *body = "data: {\"id\":0,\"method\":\"x\",\"pad\":\"......\"}\n\n"
                       "data: {\"id\":1,\"error\":{\"code\":-2}}\n\n";
    struct found want = error_found(-2, "", RESPONSE_INSPECT_SKIPPED);
    want.sse_events = 2;
    expect_found_max(&req, RESPONSE_SSE, 35, body, &want);
    want.server_requests = 1;
    want.inspected = RESPONSE_INSPECT_DONE;
    expect_found_max(&req, RESPONSE_SSE, 36, body, &want);
}

static void test_message_is_capped_and_utf8_safe(void **state)
{
    (void)state;
    struct mcp_request req = request("ping", "1");
    char body[512];
    /* 62 ASCII bytes, then "é" (2 bytes) would end at 64, "€" (3 bytes) crosses the cap */
    snprintf(body, sizeof(body),
             "{\"id\":1,\"error\":{\"code\":1,\"message\":\"%s\\u00e9\\u20acmore\"}}",
             "12345678901234567890123456789012345678901234567890123456789012");
    struct found want =
        error_found(1, "12345678901234567890123456789012345678901234567890123456789012\xc3\xa9",
                    RESPONSE_INSPECT_DONE);
    expect_found(&req, RESPONSE_JSON, body, &want);

    /* an embedded NUL does not end the message early */
    struct found nul = error_found(1,
                                   "a\xef\xbf\xbd"
                                   "b",
                                   RESPONSE_INSPECT_DONE);
    expect_found(&req, RESPONSE_JSON, "{\"id\":1,\"error\":{\"code\":1,\"message\":\"a\\u0000b\"}}",
                 &nul);
}

static void test_not_json_and_other_kinds(void **state)
{
    (void)state;
    struct mcp_request req = request("ping", "1");
    struct found none = nothing(RESPONSE_INSPECT_DONE);
    expect_found(&req, RESPONSE_JSON, "{\"id\":1,\"error\":{\"code\":1", &none);
    expect_found(&req, RESPONSE_JSON, "<html>\"error\"</html>", &none);
    expect_found(&req, RESPONSE_JSON, "", &none);
    struct found unread = nothing(RESPONSE_INSPECT_NONE);
    expect_found(&req, RESPONSE_OTHER, "{\"id\":1,\"error\":{\"code\":1}}", &unread);
}

/* mcpeek's own error (502, 413, ...) is what the line reports, not the inspector's. */
static void test_fill_keeps_mcpeeks_own_error(void **state)
{
    (void)state;
    struct mcp_request req = request("ping", "1");
    const char *body = "{\"id\":1,\"error\":{\"code\":-7,\"message\":\"upstream's\"}}";
    struct response_inspect ri;
    struct exchange_record rec;

    memset(&rec, 0, sizeof(rec));
    rec.has_rpc_error_code = true;
    rec.rpc_error_code = -32000;
    response_inspect_start(&ri, &req, RESPONSE_JSON, MAX_BYTES, MAX_STRING);
    response_inspect_feed(&ri, body, strlen(body));
    response_inspect_fill(&ri, &rec);
    assert_int_equal(rec.rpc_error_code, -32000);
    assert_null(rec.rpc_error_message);
    response_inspect_clear(&ri);

    /* a zeroed inspector (never started) leaves the record alone */
    memset(&ri, 0, sizeof(ri));
    memset(&rec, 0, sizeof(rec));
    response_inspect_feed(&ri, body, strlen(body));
    response_inspect_fill(&ri, &rec);
    assert_false(rec.has_rpc_error_code);
    assert_int_equal(rec.response_inspected, RESPONSE_INSPECT_NONE);
    response_inspect_clear(&ri);
}

/* Memory held while a JSON answer passes the limit is given back at once. */
static void test_json_buffer_is_bounded(void **state)
{
    (void)state;
    struct mcp_request req = request("ping", "1");
    struct response_inspect ri;
    char chunk[1000];
    memset(chunk, ' ', sizeof(chunk));
    response_inspect_start(&ri, &req, RESPONSE_JSON, 10000, MAX_STRING);
    for (int i = 0; i < 10; i++)
        response_inspect_feed(&ri, chunk, sizeof(chunk));
    assert_int_equal(ri.json.len, 10000);
    response_inspect_feed(&ri, chunk, 1);
    assert_true(ri.json_too_large);
    assert_null(ri.json.data);
    response_inspect_feed(&ri, chunk, sizeof(chunk));
    assert_null(ri.json.data);
    response_inspect_clear(&ri);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_error_for_the_request_id),
        cmocka_unit_test(test_json_batch_answer),
        cmocka_unit_test(test_error_without_integer_code),
        cmocka_unit_test(test_tool_is_error),
        cmocka_unit_test(test_sse_answer),
        cmocka_unit_test(test_get_stream),
        cmocka_unit_test(test_request_without_id),
        cmocka_unit_test(test_json_over_the_limit_is_not_parsed),
        cmocka_unit_test(test_sse_event_over_the_limit_is_skipped),
        cmocka_unit_test(test_message_is_capped_and_utf8_safe),
        cmocka_unit_test(test_not_json_and_other_kinds),
        cmocka_unit_test(test_fill_keeps_mcpeeks_own_error),
        cmocka_unit_test(test_json_buffer_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
