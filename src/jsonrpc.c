/* jsonrpc: one request body -> struct mcp_request, parsed by jansson into a tree once.
 *
 * json_loadb builds the tree in the worker's arena (json_arena.c), so the tree costs a pointer
 * bump per node and is dropped whole afterwards. We read the few fields the log needs from the
 * first message, copy them capped on a UTF-8 boundary, and check that every message of a batch
 * is JSON-RPC 2.0. jansson caps nesting (2048 levels), so hostile depth is a parse error, not a
 * stack overflow. Fields are filled best effort even when the status is JSONRPC_INVALID_RPC.
 */
#include "mcpeek/jsonrpc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcpeek/json_arena.h"
#include "mcpeek/strbuf.h"

/* Any JSON value at top level (RFC 8259), so `42` is "not JSON-RPC" rather than "not JSON";
 * \u0000 inside strings is valid JSON too (copies mark it as U+FFFD). Duplicate keys: the
 * last one wins. */
#define JSONRPC_DECODE_FLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL)

/* Fits "%.17g" of any double plus the ".0" jansson appends ("-2.2250738585072014e-308"). */
#define JSONRPC_REALBUF 40

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

/* jansson's real encoding (jsonp_dtostr): "%.*g", ".0" added when that looks like an integer,
 * and the exponent without '+' or leading zeros: 1e+300 -> 1e300, 1e-05 -> 1e-5. */
static void jsonrpc_format_real(double v, int prec, char *buf, size_t size)
{
    char *start, *end;
    size_t len;

    snprintf(buf, size, "%.*g", prec, v);
    len = strlen(buf);
    if (!strchr(buf, '.') && !strchr(buf, 'e') && len + 3 <= size) {
        memcpy(buf + len, ".0", 3);
        len += 2;
    }
    start = strchr(buf, 'e');
    if (!start)
        return;
    start++;
    end = start + 1;
    if (*start == '-')
        start++;
    while (*end == '0')
        end++;
    if (end != start)
        memmove(start, end, len + 1 - (size_t)(end - buf));
}

/* A real id with the fewest digits (15..17) that read back as the same double: 0.1 stays
 * "0.1" where 17 digits would print 0.10000000000000001. */
static char *jsonrpc_real_id_json(double v)
{
    char buf[JSONRPC_REALBUF];
    int prec;

    for (prec = 15; prec <= 17; prec++) {
        jsonrpc_format_real(v, prec, buf, sizeof(buf));
        if (strtod(buf, NULL) == v)
            break;
    }
    return strdup(buf);
}

/* The id as JSON: 47, "abc", null, 1.5 (numbers as jansson prints them; strings escaped by
 * strbuf_json_string, the log's own writer). A string id longer than max_string has its
 * value capped before encoding, so the result is always valid JSON. Object and array ids (not
 * allowed by JSON-RPC) are not recorded: their encoding would be unbounded. Built with
 * malloc, never from the arena: it outlives the tree. */
static char *jsonrpc_id_json(const json_t *id, size_t max_string)
{
    char buf[JSONRPC_REALBUF];
    struct strbuf quoted;

    switch (json_typeof(id)) {
    case JSON_NULL:
        return strdup("null");
    case JSON_TRUE:
        return strdup("true");
    case JSON_FALSE:
        return strdup("false");
    case JSON_INTEGER:
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(id));
        return strdup(buf);
    case JSON_REAL:
        return jsonrpc_real_id_json(json_real_value(id));
    case JSON_STRING: {
        const char *s = json_string_value(id);
        size_t n = utf8_prefix_len(s, json_string_length(id), max_string);
        strbuf_init(&quoted);
        strbuf_json_string(&quoted, s, n, n);
        if (quoted.oom) {
            strbuf_free(&quoted);
            return NULL;
        }
        return quoted.data;
    }
    default:
        return NULL;
    }
}

/* Copies what the log needs from the first message. An allocation failure leaves that one
 * field NULL: the summary is best effort, the request is forwarded either way. */
static void jsonrpc_describe(const json_t *msg, size_t max_string, struct mcp_request *out)
{
    const json_t *method = json_object_get(msg, "method");
    const json_t *id = json_object_get(msg, "id");
    const json_t *params = json_object_get(msg, "params");

    out->method = jsonrpc_copy(method, max_string);
    if (id)
        out->id_json = jsonrpc_id_json(id, max_string);
    out->notification = json_is_string(method) && !id;
    out->response = !json_is_string(method) &&
                    (json_object_get(msg, "result") || json_object_get(msg, "error"));
    if (jsonrpc_string_is(method, "tools/call"))
        out->tool = jsonrpc_copy(json_object_get(params, "name"), max_string);
    out->openai = openai_meta_from_json(json_object_get(params, "_meta"), max_string);
}

enum jsonrpc_status jsonrpc_parse(const char *body, size_t len, size_t max_string,
                                  struct mcp_request *out)
{
    json_error_t jerr;
    json_t *root, *first;
    const char *why;
    bool in_arena;

    memset(out, 0, sizeof(*out));
    if (!body || len == 0) {
        out->status = JSONRPC_EMPTY;
        jsonrpc_error(out, "empty body");
        return out->status;
    }
    in_arena = json_arena_begin();
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
    for (size_t i = 0; i < out->batch; i++) {
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
    json_arena_release(root, in_arena);
    json_arena_end();
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
