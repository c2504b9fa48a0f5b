// clang-format off
/* parse_bench: ns per jsonrpc_parse of a typical tools/call body, jansson tree vs json_scan.
 *
 * Build and run by hand from the repository root (not part of CMake), one line:
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude bench/parse_bench.c src/jsonrpc.c src/openai_meta.c src/json_scan.c $(pkg-config --cflags --libs jansson) -o /tmp/parse_bench && /tmp/parse_bench
 *
 * The jansson path is the jsonrpc.c / openai_meta.c code of commit 83aad30, kept here (and only
 * here) under old_ names so both run in one process on the same body; each iteration includes
 * mcp_request_clear, since both paths heap-copy the same fields. Optional argument: iterations.
 */
// clang-format on
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mcpeek/jsonrpc.h"

#define BENCH_MAX_STRING 256
#define BENCH_ITERATIONS 1000000L

static const char bench_body[] =
    "{\"jsonrpc\":\"2.0\",\"id\":47,\"method\":\"tools/call\",\"params\":{\"name\":"
    "\"search_flights\",\"arguments\":{\"from\":\"SGN\",\"to\":\"HAN\",\"date\":\"2026-12-01\","
    "\"passengers\":2},\"_meta\":{\"openai/session\":\"v1/abc123\",\"openai/subject\":"
    "\"v1/user_xyz\",\"openai/organization\":\"v1/org_1\",\"openai/locale\":\"en-US\","
    "\"openai/userAgent\":\"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) "
    "AppleWebKit/537.36\",\"openai/userLocation\":{\"city\":\"V\xc5\xa9ng T\xc3\xa0u\","
    "\"country\":\"VN\",\"region\":\"B\xc3\xa0 R\xe1\xbb\x8b"
    "a\xe2\x80\x93V\xc5\xa9ng "
    "T\xc3\xa0u\",\"latitude\":10.346,\"longitude\":107.084,\"timezone\":\"Asia/Ho_Chi_Minh\"},"
    "\"progressToken\":\"p-1\"}}}";

/* ---- The old path (83aad30), trimmed of nothing that runs for this body. ---- */

struct old_key {
    const char *name;
    size_t offset;
};

static const struct old_key old_context_keys[] = {
    {"openai/session", offsetof(OpenAiClientContext, session_id)},
    {"openai/subject", offsetof(OpenAiClientContext, subject_id)},
    {"openai/organization", offsetof(OpenAiClientContext, organization_id)},
    {"openai/locale", offsetof(OpenAiClientContext, locale)},
    {"openai/userAgent", offsetof(OpenAiClientContext, user_agent)},
};

static const struct old_key old_location_keys[] = {
    {"city", offsetof(struct openai_user_location, city)},
    {"region", offsetof(struct openai_user_location, region)},
    {"country", offsetof(struct openai_user_location, country)},
    {"timezone", offsetof(struct openai_user_location, timezone)},
    {"latitude", offsetof(struct openai_user_location, latitude)},
    {"longitude", offsetof(struct openai_user_location, longitude)},
};

static void old_format_real(double v, char *buf, size_t size)
{
    int prec;

    for (prec = 15; prec < 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
    snprintf(buf, size, "%.17g", v);
}

static int old_value(const json_t *v, size_t max_len, char **out)
{
    char num[32];
    const char *s;
    size_t len;

    *out = NULL;
    if (json_is_string(v)) {
        s = json_string_value(v);
        len = json_string_length(v);
    } else if (json_is_integer(v)) {
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
        s = num;
        len = strlen(num);
    } else if (json_is_real(v)) {
        old_format_real(json_real_value(v), num, sizeof(num));
        s = num;
        len = strlen(num);
    } else {
        return 0;
    }
    *out = openai_meta_copy(s, len, max_len);
    return *out ? 0 : -1;
}

static int old_fill(const json_t *obj, const struct old_key *keys, size_t n, void *base,
                    size_t max_len, bool *found)
{
    size_t i;
    char **slot;

    *found = false;
    for (i = 0; i < n; i++) {
        slot = (char **)(void *)((char *)base + keys[i].offset);
        if (old_value(json_object_get(obj, keys[i].name), max_len, slot) < 0)
            return -1;
        if (*slot)
            *found = true;
    }
    return 0;
}

static OpenAiClientContext *old_openai_meta_extract(const json_t *meta, size_t max_len)
{
    OpenAiClientContext tmp = {0}, *ctx;
    struct openai_user_location loc = {0};
    const json_t *where;
    bool have_ctx = false, have_loc = false;

    if (!json_is_object(meta))
        return NULL;
    if (old_fill(meta, old_context_keys, 5, &tmp, max_len, &have_ctx) < 0)
        abort(); /* the bench does not run out of memory */
    where = json_object_get(meta, "openai/userLocation");
    if (json_is_object(where) && old_fill(where, old_location_keys, 6, &loc, max_len, &have_loc))
        abort();
    if (!have_ctx && !have_loc)
        return NULL;
    ctx = malloc(sizeof(*ctx));
    if (!ctx)
        abort();
    *ctx = tmp;
    ctx->user_location = NULL;
    if (have_loc) {
        ctx->user_location = malloc(sizeof(*ctx->user_location));
        if (!ctx->user_location)
            abort();
        *ctx->user_location = loc;
    }
    return ctx;
}

static bool old_string_is(const json_t *v, const char *lit)
{
    size_t n = strlen(lit);

    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), lit, n) == 0;
}

static char *old_copy(const json_t *v, size_t max_string)
{
    const char *s = json_string_value(v);
    return s ? openai_meta_copy(s, json_string_length(v), max_string) : NULL;
}

static const char *old_check(const json_t *msg)
{
    const json_t *method;

    if (!json_is_object(msg))
        return "not an object";
    if (!old_string_is(json_object_get(msg, "jsonrpc"), "2.0"))
        return "\"jsonrpc\" is not \"2.0\"";
    method = json_object_get(msg, "method");
    if (json_is_string(method))
        return NULL;
    if (json_object_get(msg, "result") || json_object_get(msg, "error"))
        return NULL;
    return method ? "\"method\" is not a string" : "no \"method\", \"result\" or \"error\"";
}

/* Integer and string ids only (the body's id is 47): the real-id loop never runs here. */
static void old_describe(json_t *msg, size_t max_string, struct mcp_request *out)
{
    json_t *method = json_object_get(msg, "method");
    json_t *id = json_object_get(msg, "id");
    json_t *params = json_object_get(msg, "params");

    out->method = old_copy(method, max_string);
    if (id)
        out->id_json = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
    out->notification = json_is_string(method) && !id;
    out->response = !json_is_string(method) &&
                    (json_object_get(msg, "result") || json_object_get(msg, "error"));
    if (old_string_is(method, "tools/call"))
        out->tool = old_copy(json_object_get(params, "name"), max_string);
    out->openai = old_openai_meta_extract(json_object_get(params, "_meta"), max_string);
}

static enum jsonrpc_status old_jsonrpc_parse(const char *body, size_t len, size_t max_string,
                                             struct mcp_request *out)
{
    json_error_t jerr;
    json_t *root, *first;
    size_t i;

    memset(out, 0, sizeof(*out));
    root = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        out->status = JSONRPC_INVALID_JSON;
        return out->status;
    }
    out->is_batch = json_is_array(root);
    out->batch = out->is_batch ? json_array_size(root) : 1;
    first = out->is_batch ? json_array_get(root, 0) : root;
    if (json_is_object(first))
        old_describe(first, max_string, out);
    out->status = JSONRPC_OK;
    for (i = 0; i < out->batch; i++)
        if (old_check(out->is_batch ? json_array_get(root, i) : root))
            out->status = JSONRPC_INVALID_RPC;
    json_decref(root);
    return out->status;
}

/* ---- Timing ---- */

typedef enum jsonrpc_status (*bench_parse_fn)(const char *, size_t, size_t, struct mcp_request *);

static double bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double bench_run(bench_parse_fn parse, long iterations)
{
    struct mcp_request req;
    size_t len = sizeof(bench_body) - 1;
    double t0;
    long i;

    for (i = 0; i < iterations / 10; i++) { /* warm up caches and the allocator */
        parse(bench_body, len, BENCH_MAX_STRING, &req);
        mcp_request_clear(&req);
    }
    t0 = bench_now_ns();
    for (i = 0; i < iterations; i++) {
        if (parse(bench_body, len, BENCH_MAX_STRING, &req) != JSONRPC_OK)
            abort();
        mcp_request_clear(&req);
    }
    return (bench_now_ns() - t0) / (double)iterations;
}

static bool bench_same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Both paths must produce the same record, or the comparison means nothing. */
static void bench_check_same(void)
{
    struct mcp_request a, b;
    size_t len = sizeof(bench_body) - 1;
    const struct openai_user_location *la, *lb;

    old_jsonrpc_parse(bench_body, len, BENCH_MAX_STRING, &a);
    jsonrpc_parse(bench_body, len, BENCH_MAX_STRING, &b);
    if (!a.openai || !b.openai || !a.openai->user_location || !b.openai->user_location)
        abort();
    la = a.openai->user_location;
    lb = b.openai->user_location;
    if (a.status != b.status || !bench_same(a.method, b.method) ||
        !bench_same(a.id_json, b.id_json) || !bench_same(a.tool, b.tool) ||
        !bench_same(a.openai->session_id, b.openai->session_id) ||
        !bench_same(a.openai->user_agent, b.openai->user_agent) ||
        !bench_same(la->city, lb->city) || !bench_same(la->region, lb->region) ||
        !bench_same(la->latitude, lb->latitude) || !bench_same(la->longitude, lb->longitude)) {
        fprintf(stderr, "parse_bench: the two paths disagree on the body\n");
        exit(1);
    }
    mcp_request_clear(&a);
    mcp_request_clear(&b);
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : BENCH_ITERATIONS;
    double old_ns, new_ns;

    if (iterations <= 0)
        iterations = BENCH_ITERATIONS;
    bench_check_same();
    old_ns = bench_run(old_jsonrpc_parse, iterations);
    new_ns = bench_run(jsonrpc_parse, iterations);
    printf("body: %zu bytes, %ld parses each\n", sizeof(bench_body) - 1, iterations);
    printf("jansson tree (83aad30): %8.1f ns/parse\n", old_ns);
    printf("json_scan:              %8.1f ns/parse\n", new_ns);
    printf("speed-up:               %8.2fx\n", old_ns / new_ns);
    return 0;
}
