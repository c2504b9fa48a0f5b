/* jsonrpc: one request body -> struct mcp_request; the parsed tree is freed before returning.
 *
 * jansson does the parsing and caps nesting at 2048 levels itself, so hostile depth is a parse
 * error, not a stack overflow. We read the few fields the log needs from the first message,
 * copy them capped on a UTF-8 boundary, and check that every message of a batch is JSON-RPC
 * 2.0. Fields are filled best effort even when the status is JSONRPC_INVALID_RPC.
 */
#include "mcpeek/jsonrpc.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Any JSON value at top level (RFC 8259), so `42` is "not JSON-RPC" rather than "not JSON";
 * \u0000 inside strings is valid JSON too (copies stop at it). Duplicate keys: last one wins. */
#define JSONRPC_DECODE_FLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL)

static void jsonrpc_error(struct mcp_request *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Formats the reason into out->error. jansson's messages may quote body bytes ("near '...'"),
 * so anything outside printable ASCII becomes '?': the reason is always safe to log. */
static void jsonrpc_error(struct mcp_request *out, const char *fmt, ...)
{
    va_list ap;
    char *p;

    va_start(ap, fmt);
    vsnprintf(out->error, sizeof(out->error), fmt, ap);
    va_end(ap);
    for (p = out->error; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
}

static bool jsonrpc_string_is(const json_t *v, const char *lit)
{
    size_t n = strlen(lit);

    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), lit, n) == 0;
}

/* Capped heap copy of a JSON string (NULs become U+FFFD); NULL if not a string. */
static char *jsonrpc_copy(const json_t *v, size_t max_string)
{
    const char *s = json_string_value(v);
    return s ? openai_meta_copy(s, json_string_length(v), max_string) : NULL;
}

/* A real id with the fewest digits (15..17) that read back as the same double: 0.1 stays
 * "0.1" where jansson's default 17 digits would print 0.10000000000000001. */
static char *jsonrpc_real_id_json(const json_t *id)
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

/* The id as jansson encodes it: 47, "abc", null. A string id longer than max_string has its
 * value capped before encoding, so the result is always valid JSON. Object and array ids
 * (not allowed by JSON-RPC) are not recorded: their encoding would be unbounded. */
static char *jsonrpc_id_json(json_t *id, size_t max_string)
{
    json_t *capped = NULL;
    const char *s;
    size_t len, cut;
    char *encoded;

    if (json_is_object(id) || json_is_array(id))
        return NULL;
    if (json_is_real(id))
        return jsonrpc_real_id_json(id);
    if (json_is_string(id)) {
        s = json_string_value(id);
        len = json_string_length(id);
        cut = openai_meta_utf8_cut(s, len, max_string);
        if (cut < len) {
            capped = json_stringn(s, cut);
            if (!capped)
                return NULL;
            id = capped;
        }
    }
    encoded = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(capped);
    return encoded;
}

/* NULL when `msg` is a JSON-RPC 2.0 message, else the reason it is not. */
static const char *jsonrpc_check(const json_t *msg)
{
    const json_t *method;

    if (!json_is_object(msg))
        return "not an object";
    if (!jsonrpc_string_is(json_object_get(msg, "jsonrpc"), "2.0"))
        return "\"jsonrpc\" is not \"2.0\"";
    method = json_object_get(msg, "method");
    if (json_is_string(method))
        return NULL;
    if (json_object_get(msg, "result") || json_object_get(msg, "error"))
        return NULL;
    return method ? "\"method\" is not a string" : "no \"method\", \"result\" or \"error\"";
}

/* Copies what the log needs from the first message. An allocation failure leaves that one
 * field NULL: the summary is best effort, the request is forwarded either way. */
static void jsonrpc_describe(json_t *msg, size_t max_string, struct mcp_request *out)
{
    json_t *method = json_object_get(msg, "method");
    json_t *id = json_object_get(msg, "id");
    json_t *params = json_object_get(msg, "params");

    out->method = jsonrpc_copy(method, max_string);
    if (id)
        out->id_json = jsonrpc_id_json(id, max_string);
    out->notification = json_is_string(method) && !id;
    out->response = !json_is_string(method) &&
                    (json_object_get(msg, "result") || json_object_get(msg, "error"));
    if (jsonrpc_string_is(method, "tools/call"))
        out->tool = jsonrpc_copy(json_object_get(params, "name"), max_string);
    out->openai = openai_meta_extract(json_object_get(params, "_meta"), max_string);
}

enum jsonrpc_status jsonrpc_parse(const char *body, size_t len, size_t max_string,
                                  struct mcp_request *out)
{
    json_error_t jerr;
    json_t *root = NULL, *first;
    const char *why;
    size_t i;

    memset(out, 0, sizeof(*out));
    if (!body || len == 0) {
        out->status = JSONRPC_EMPTY;
        jsonrpc_error(out, "empty body");
        goto out;
    }
    root = json_loadb(body, len, JSONRPC_DECODE_FLAGS, &jerr);
    if (!root) {
        out->status = JSONRPC_INVALID_JSON;
        jsonrpc_error(out, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                      jerr.text);
        goto out;
    }

    out->is_batch = json_is_array(root);
    out->batch = out->is_batch ? json_array_size(root) : 1;
    if (out->batch == 0) {
        out->status = JSONRPC_INVALID_RPC;
        jsonrpc_error(out, "not JSON-RPC 2.0: empty batch");
        goto out;
    }
    first = out->is_batch ? json_array_get(root, 0) : root;
    if (json_is_object(first))
        jsonrpc_describe(first, max_string, out);

    out->status = JSONRPC_OK;
    for (i = 0; i < out->batch; i++) {
        why = jsonrpc_check(out->is_batch ? json_array_get(root, i) : root);
        if (!why)
            continue;
        out->status = JSONRPC_INVALID_RPC;
        if (out->is_batch)
            jsonrpc_error(out, "not JSON-RPC 2.0: batch element %zu: %s", i, why);
        else
            jsonrpc_error(out, "not JSON-RPC 2.0: %s", why);
        break;
    }

out:
    json_decref(root);
    return out->status;
}

void mcp_request_clear(struct mcp_request *req)
{
    if (!req)
        return;
    free(req->method);
    free(req->id_json);
    free(req->tool);
    openai_meta_free(req->openai);
    memset(req, 0, sizeof(*req));
}

bool jsonrpc_response_error_code(const char *body, size_t len, long long *code)
{
    json_t *root, *msg, *c;
    bool found = false;

    if (!body || len == 0)
        return false;
    root = json_loadb(body, len, JSONRPC_DECODE_FLAGS, NULL);
    if (!root)
        return false;
    msg = json_is_array(root) ? json_array_get(root, 0) : root;
    c = json_object_get(json_object_get(msg, "error"), "code");
    if (json_is_integer(c)) {
        if (code)
            *code = (long long)json_integer_value(c);
        found = true;
    }
    json_decref(root);
    return found;
}
