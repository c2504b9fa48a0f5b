/* fuzz_jsonrpc: libFuzzer harness for src/jsonrpc.c, src/openai_meta.c and src/json_arena.c.
 *
 * Feeds arbitrary bytes to jsonrpc_parse (with a small cap, so cuts inside UTF-8 sequences
 * are exercised), and checks the record's invariants:
 * every copied string fits the cap and is valid UTF-8, the error text is printable ASCII.
 * jsonrpc_parse builds its tree in the per-thread arena (installed here as in the daemon); a
 * plain-malloc jansson tree of the same bytes, read by a reference extraction kept here, must
 * give the same record, so the arena and the field logic are both checked.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcpeek/json_arena.h"
#include "mcpeek/jsonrpc.h"

#define FUZZ_MAX_STRING 17

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Traps (a crash libFuzzer reports) when a copied string breaks the parser's promises. */
static void fuzz_check_string(const char *s, size_t max_len)
{
    size_t len;

    if (!s)
        return;
    len = strlen(s);
    if (len > max_len || openai_meta_utf8_cut(s, len, len) != len)
        __builtin_trap();
}

static void fuzz_check_record(const struct mcp_request *req)
{
    const struct openai_user_location *loc;
    const OpenAiClientContext *ctx = req->openai;
    const char *p;

    for (p = req->error; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            __builtin_trap();
    fuzz_check_string(req->method, FUZZ_MAX_STRING);
    fuzz_check_string(req->tool, FUZZ_MAX_STRING);
    if (req->tool && (!req->method || strcmp(req->method, "tools/call") != 0))
        __builtin_trap();
    if (req->notification && (req->response || req->id_json))
        __builtin_trap();
    if (!ctx)
        return;
    fuzz_check_string(ctx->session_id, FUZZ_MAX_STRING);
    fuzz_check_string(ctx->subject_id, FUZZ_MAX_STRING);
    fuzz_check_string(ctx->organization_id, FUZZ_MAX_STRING);
    fuzz_check_string(ctx->locale, FUZZ_MAX_STRING);
    fuzz_check_string(ctx->user_agent, FUZZ_MAX_STRING);
    loc = ctx->user_location;
    if (loc) {
        fuzz_check_string(loc->city, FUZZ_MAX_STRING);
        fuzz_check_string(loc->region, FUZZ_MAX_STRING);
        fuzz_check_string(loc->country, FUZZ_MAX_STRING);
        fuzz_check_string(loc->timezone, FUZZ_MAX_STRING);
        fuzz_check_string(loc->latitude, FUZZ_MAX_STRING);
        fuzz_check_string(loc->longitude, FUZZ_MAX_STRING);
    }
}

/* Reports a difference from the reference and traps. */
static void fuzz_differ(const char *what, const char *expected, const char *got)
{
    fprintf(stderr, "fuzz_jsonrpc: %s differs from jansson: expected %s, got %s\n", what,
            expected ? expected : "NULL", got ? got : "NULL");
    __builtin_trap();
}

static void fuzz_same_str(const char *what, const char *expected, const char *got)
{
    if ((expected == NULL) != (got == NULL) || (expected && strcmp(expected, got) != 0))
        fuzz_differ(what, expected, got);
}

/* Two encodings of one JSON string (escapes may be spelled differently, e.g. \u001F and
 * \u001f) must decode to the same value; anything else must match to the byte. */
static void fuzz_same_json(const char *what, const char *expected, const char *got)
{
    json_t *a, *b;
    bool same;

    if (!expected || !got || expected[0] != '"') {
        fuzz_same_str(what, expected, got);
        return;
    }
    a = json_loads(expected, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    b = json_loads(got, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    same = a && b && json_equal(a, b);
    json_decref(a);
    json_decref(b);
    if (!same)
        fuzz_differ(what, expected, got);
}

static void fuzz_same_bool(const char *what, bool expected, bool got)
{
    if (expected != got)
        fuzz_differ(what, expected ? "true" : "false", got ? "true" : "false");
}

/* ---- The reference: the same extraction written plainly on a malloc-allocated tree. ---- */

static bool ref_string_is(const json_t *v, const char *lit)
{
    size_t n = strlen(lit);

    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), lit, n) == 0;
}

static char *ref_copy(const json_t *v, size_t max_string)
{
    const char *s = json_string_value(v);
    return s ? openai_meta_copy(s, json_string_length(v), max_string) : NULL;
}

static char *ref_real_id_json(const json_t *id)
{
    double v = json_real_value(id);
    char *encoded = NULL;
    int prec;

    for (prec = 15; prec <= 17; prec++) {
        free(encoded);
        encoded = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(prec));
        if (!encoded || strtod(encoded, NULL) == v)
            break;
    }
    return encoded;
}

static char *ref_id_json(json_t *id, size_t max_string)
{
    json_t *capped = NULL;
    char *encoded;
    size_t len, cut;

    if (json_is_object(id) || json_is_array(id))
        return NULL;
    if (json_is_real(id))
        return ref_real_id_json(id);
    if (json_is_string(id)) {
        len = json_string_length(id);
        cut = openai_meta_utf8_cut(json_string_value(id), len, max_string);
        if (cut < len) {
            capped = json_stringn(json_string_value(id), cut);
            if (!capped)
                return NULL;
            id = capped;
        }
    }
    encoded = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(capped);
    return encoded;
}

static bool ref_is_rpc(const json_t *msg)
{
    const json_t *method;

    if (!json_is_object(msg) || !ref_string_is(json_object_get(msg, "jsonrpc"), "2.0"))
        return false;
    method = json_object_get(msg, "method");
    return json_is_string(method) || json_object_get(msg, "result") ||
           json_object_get(msg, "error");
}

/* openai_meta's number rendering as it was: "%lld", or the shortest "%.Ng" (N = 15..17). */
static char *ref_meta_value(const json_t *v, size_t max_len)
{
    char num[32];
    int prec;

    if (json_is_string(v))
        return ref_copy(v, max_len);
    if (json_is_integer(v)) {
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        for (prec = 15; prec <= 17; prec++) {
            snprintf(num, sizeof(num), "%.*g", prec, json_real_value(v));
            if (prec == 17 || strtod(num, NULL) == json_real_value(v))
                break;
        }
    } else {
        return NULL;
    }
    return openai_meta_copy(num, strlen(num), max_len);
}

/* Compares one openai member with the reference; *any tells whether the reference had one. */
static void ref_check_member(const char *what, const json_t *obj, const char *key, const char *got,
                             bool *any)
{
    char *want = ref_meta_value(json_object_get(obj, key), FUZZ_MAX_STRING);

    if (want)
        *any = true;
    fuzz_same_str(what, want, got);
    free(want);
}

static void ref_check_openai(const json_t *meta, const OpenAiClientContext *ctx)
{
    static const OpenAiClientContext none;
    static const struct openai_user_location no_location;
    const struct openai_user_location *loc;
    const json_t *where;
    bool any = false, any_loc = false;

    if (!json_is_object(meta)) {
        fuzz_same_bool("openai present", false, ctx != NULL);
        return;
    }
    if (!ctx)
        ctx = &none;
    ref_check_member("openai/session", meta, "openai/session", ctx->session_id, &any);
    ref_check_member("openai/subject", meta, "openai/subject", ctx->subject_id, &any);
    ref_check_member("openai/organization", meta, "openai/organization", ctx->organization_id,
                     &any);
    ref_check_member("openai/locale", meta, "openai/locale", ctx->locale, &any);
    ref_check_member("openai/userAgent", meta, "openai/userAgent", ctx->user_agent, &any);
    where = json_object_get(meta, "openai/userLocation");
    loc = ctx->user_location ? ctx->user_location : &no_location;
    if (json_is_object(where)) {
        ref_check_member("city", where, "city", loc->city, &any_loc);
        ref_check_member("region", where, "region", loc->region, &any_loc);
        ref_check_member("country", where, "country", loc->country, &any_loc);
        ref_check_member("timezone", where, "timezone", loc->timezone, &any_loc);
        ref_check_member("latitude", where, "latitude", loc->latitude, &any_loc);
        ref_check_member("longitude", where, "longitude", loc->longitude, &any_loc);
    }
    fuzz_same_bool("user_location present", any_loc, ctx->user_location != NULL);
    fuzz_same_bool("openai present", any || any_loc, ctx != &none);
}

/* The record jansson's tree gives for `root`, compared field by field with `req`. */
static void ref_check_record(json_t *root, const struct mcp_request *req)
{
    json_t *first, *method, *id, *params;
    bool is_batch = json_is_array(root), ok = true;
    size_t batch = is_batch ? json_array_size(root) : 1, i;
    char *want;

    fuzz_same_bool("is_batch", is_batch, req->is_batch);
    if (batch != req->batch)
        fuzz_differ("batch", "another size", "this one");
    for (i = 0; i < batch; i++)
        ok = ok && ref_is_rpc(is_batch ? json_array_get(root, i) : root);
    fuzz_same_bool("status OK", batch > 0 && ok, req->status == JSONRPC_OK);
    fuzz_same_bool("status INVALID_RPC", batch == 0 || !ok, req->status == JSONRPC_INVALID_RPC);

    first = batch == 0 ? NULL : is_batch ? json_array_get(root, 0) : root;
    method = json_object_get(first, "method");
    id = json_object_get(first, "id");
    params = json_object_get(first, "params");

    want = ref_copy(method, FUZZ_MAX_STRING);
    fuzz_same_str("method", want, req->method);
    free(want);
    want = id ? ref_id_json(id, FUZZ_MAX_STRING) : NULL;
    fuzz_same_json("id_json", want, req->id_json);
    free(want);
    want = ref_string_is(method, "tools/call")
               ? ref_copy(json_object_get(params, "name"), FUZZ_MAX_STRING)
               : NULL;
    fuzz_same_str("tool", want, req->tool);
    free(want);
    fuzz_same_bool("notification", json_is_string(method) && !id, req->notification);
    fuzz_same_bool("response",
                   json_is_object(first) && !json_is_string(method) &&
                       (json_object_get(first, "result") || json_object_get(first, "error")),
                   req->response);
    ref_check_openai(json_object_get(params, "_meta"), req->openai);
}

/* Checks `req` against a plain-malloc jansson tree of the same bytes. */
static void fuzz_differential(const uint8_t *data, size_t size, const struct mcp_request *req)
{
    json_error_t jerr;
    json_t *root;

    if (size == 0) {
        fuzz_same_bool("empty", true, req->status == JSONRPC_EMPTY);
        return;
    }
    root = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        if (req->status != JSONRPC_INVALID_JSON)
            fuzz_differ("validity", jerr.text, req->error[0] ? req->error : "valid");
        return;
    }
    if (req->status == JSONRPC_INVALID_JSON)
        fuzz_differ("validity", "valid", req->error);
    ref_check_record(root, req);
    json_decref(root);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_arena_install();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mcp_request req;
    OpenAiClientContext *copy;

    jsonrpc_parse((const char *)data, size, FUZZ_MAX_STRING, &req);
    fuzz_check_record(&req);
    fuzz_differential(data, size, &req);
    copy = openai_meta_dup(req.openai);
    openai_meta_free(copy);
    mcp_request_clear(&req);
    mcp_request_clear(&req);

    return 0;
}
