/* jsonrpc: one request body -> struct mcp_request, in one pass of json_scan and no tree.
 *
 * The scan validates the whole body while it records where the first message's fields are
 * (spans into the body, no copies); only once the body has proven valid are those few spans
 * decoded into capped heap copies, so an invalid body costs no malloc at all. Every message of a
 * batch is checked to be JSON-RPC 2.0. Duplicate keys: the last one wins, as with jansson, which
 * mcpeek used before and which the fuzzer still compares against.
 */
#include "mcpeek/jsonrpc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcpeek/json_scan.h"
#include "mcpeek/strbuf.h"

/* Fits "%.17g" of any double plus the ".0" jansson appends ("-2.2250738585072014e-308"). */
#define JSONRPC_REALBUF 40

/* What one message says about itself: the last occurrence of each member that matters. */
struct jsonrpc_msg {
    bool is_object;
    struct json_scan_value jsonrpc;
    struct json_scan_value method;
    struct json_scan_value id;
    bool has_result; /* present, whatever the value (null included) */
    bool has_error;
};

/* What the log reads from the first message's params (a later "params" replaces it whole). */
struct jsonrpc_params {
    struct json_scan_value name;
    struct openai_meta_found meta;
};

static void jsonrpc_error(struct mcp_request *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Formats the reason into out->error. The scanner's reasons are static ASCII and never quote the
 * body, but the filter stays so the reason is safe to log whatever a caller formats into it. */
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

/* Consumes params (any value; only an object is read). */
static int jsonrpc_scan_params(struct json_scan *sc, struct jsonrpc_params *params)
{
    struct json_scan_value key;
    int r;

    memset(params, 0, sizeof(*params));
    if (json_scan_peek(sc) != JSON_SCAN_OBJECT)
        return json_scan_value(sc, NULL);
    if (json_scan_enter(sc) < 0)
        return -1;
    while ((r = json_scan_member(sc, &key)) == 1) {
        if (json_scan_string_is(&key, "name"))
            r = json_scan_value(sc, &params->name);
        else if (json_scan_string_is(&key, "_meta"))
            r = openai_meta_scan(sc, &params->meta);
        else
            r = json_scan_value(sc, NULL);
        if (r < 0)
            return -1;
    }
    return r;
}

/* Consumes one message (any value). `params` is NULL except for the first message, the only
 * one whose params the log reads. */
static int jsonrpc_scan_msg(struct json_scan *sc, struct jsonrpc_msg *msg,
                            struct jsonrpc_params *params)
{
    struct json_scan_value key;
    int r;

    memset(msg, 0, sizeof(*msg));
    if (json_scan_peek(sc) != JSON_SCAN_OBJECT)
        return json_scan_value(sc, NULL);
    msg->is_object = true;
    if (json_scan_enter(sc) < 0)
        return -1;
    while ((r = json_scan_member(sc, &key)) == 1) {
        if (json_scan_string_is(&key, "jsonrpc")) {
            r = json_scan_value(sc, &msg->jsonrpc);
        } else if (json_scan_string_is(&key, "method")) {
            r = json_scan_value(sc, &msg->method);
        } else if (json_scan_string_is(&key, "id")) {
            r = json_scan_value(sc, &msg->id);
        } else if (json_scan_string_is(&key, "result")) {
            msg->has_result = true;
            r = json_scan_value(sc, NULL);
        } else if (json_scan_string_is(&key, "error")) {
            msg->has_error = true;
            r = json_scan_value(sc, NULL);
        } else if (params && json_scan_string_is(&key, "params")) {
            r = jsonrpc_scan_params(sc, params);
        } else {
            r = json_scan_value(sc, NULL);
        }
        if (r < 0)
            return -1;
    }
    return r;
}

/* NULL when `msg` is a JSON-RPC 2.0 message, else the reason it is not. */
static const char *jsonrpc_check(const struct jsonrpc_msg *msg)
{
    if (!msg->is_object)
        return "not an object";
    if (!json_scan_string_is(&msg->jsonrpc, "2.0"))
        return "\"jsonrpc\" is not \"2.0\"";
    if (msg->method.type == JSON_SCAN_STRING)
        return NULL;
    if (msg->has_result || msg->has_error)
        return NULL;
    return msg->method.type != JSON_SCAN_NONE ? "\"method\" is not a string"
                                              : "no \"method\", \"result\" or \"error\"";
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

/* The id as JSON: 47, "abc", null, 1.5 (numbers as jansson printed them; strings escaped by
 * strbuf_json_string, the log's own writer). A string id longer than max_string has its
 * value capped before encoding, so the result is always valid JSON. Object and array ids (not
 * allowed by JSON-RPC) are not recorded: their encoding would be unbounded. A number that fits
 * neither a long long nor a double (jansson refused the whole body) is kept as it was spelled,
 * which is valid JSON. */
static char *jsonrpc_id_json(const struct json_scan_value *id, size_t max_string)
{
    char *decoded;
    struct strbuf quoted;
    long long i;
    double d;
    size_t n;

    switch (id->type) {
    case JSON_SCAN_NULL:
    case JSON_SCAN_TRUE:
    case JSON_SCAN_FALSE:
        return strndup(id->text, id->len);
    case JSON_SCAN_NUMBER:
        if (id->integer && json_scan_int64(id, &i) == 0) {
            char buf[JSONRPC_REALBUF];
            snprintf(buf, sizeof(buf), "%lld", i);
            return strdup(buf);
        }
        if (!id->integer && json_scan_double(id, &d) == 0)
            return jsonrpc_real_id_json(d);
        return strndup(id->text, id->len);
    case JSON_SCAN_STRING:
        n = id->len < max_string ? id->len : max_string;
        decoded = malloc(n + 1);
        if (!decoded)
            return NULL;
        n = json_scan_decode(id, decoded, n, 0);
        strbuf_init(&quoted);
        strbuf_json_string(&quoted, decoded, n, n); /* valid UTF-8 already: nothing is cut */
        free(decoded);
        if (quoted.oom) {
            strbuf_free(&quoted);
            return NULL;
        }
        return quoted.data;
    default:
        return NULL;
    }
}

/* Copies what the log needs from the first message. An allocation failure leaves that one
 * field NULL: the summary is best effort, the request is forwarded either way. */
static void jsonrpc_describe(const struct jsonrpc_msg *msg, const struct jsonrpc_params *params,
                             size_t max_string, struct mcp_request *out)
{
    bool has_method = msg->method.type == JSON_SCAN_STRING;

    out->method = json_scan_strdup(&msg->method, max_string);
    if (msg->id.type != JSON_SCAN_NONE)
        out->id_json = jsonrpc_id_json(&msg->id, max_string);
    out->notification = has_method && msg->id.type == JSON_SCAN_NONE;
    out->response = !has_method && (msg->has_result || msg->has_error);
    if (json_scan_string_is(&msg->method, "tools/call"))
        out->tool = json_scan_strdup(&params->name, max_string);
    out->openai = openai_meta_build(&params->meta, max_string);
}

enum jsonrpc_status jsonrpc_parse(const char *body, size_t len, size_t max_string,
                                  struct mcp_request *out)
{
    struct json_scan sc;
    struct jsonrpc_msg first, msg;
    struct jsonrpc_params params;
    const char *why = NULL;
    size_t n = 0, bad = 0, line, column;
    bool is_batch;

    memset(out, 0, sizeof(*out));
    if (!body || len == 0) {
        out->status = JSONRPC_EMPTY;
        jsonrpc_error(out, "empty body");
        goto out;
    }

    memset(&first, 0, sizeof(first));
    memset(&params, 0, sizeof(params));
    json_scan_init(&sc, body, len);
    is_batch = json_scan_peek(&sc) == JSON_SCAN_ARRAY;
    if (is_batch) {
        if (json_scan_enter(&sc) == 0) {
            while (json_scan_element(&sc) == 1) {
                if (jsonrpc_scan_msg(&sc, &msg, n == 0 ? &params : NULL) < 0)
                    break;
                if (n == 0)
                    first = msg;
                if (!why && (why = jsonrpc_check(&msg)) != NULL)
                    bad = n;
                n++;
            }
        }
    } else if (jsonrpc_scan_msg(&sc, &first, &params) == 0) {
        why = jsonrpc_check(&first);
        n = 1;
    }
    if (json_scan_end(&sc) < 0) {
        out->status = JSONRPC_INVALID_JSON;
        json_scan_where(&sc, &line, &column);
        jsonrpc_error(out, "invalid JSON at line %zu column %zu (byte %zu): %s", line, column,
                      sc.error_pos, sc.error);
        goto out;
    }

    out->is_batch = is_batch;
    out->batch = n;
    if (n == 0) {
        out->status = JSONRPC_INVALID_RPC;
        jsonrpc_error(out, "not JSON-RPC 2.0: empty batch");
        goto out;
    }
    if (first.is_object)
        jsonrpc_describe(&first, &params, max_string, out);
    out->status = JSONRPC_OK;
    if (why) {
        out->status = JSONRPC_INVALID_RPC;
        if (is_batch)
            jsonrpc_error(out, "not JSON-RPC 2.0: batch element %zu: %s", bad, why);
        else
            jsonrpc_error(out, "not JSON-RPC 2.0: %s", why);
    }

out:
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

/* Consumes one message, recording its last error.code (reset by every later "error"). */
static int jsonrpc_scan_error_code(struct json_scan *sc, struct json_scan_value *code)
{
    struct json_scan_value key;
    int r;

    if (json_scan_peek(sc) != JSON_SCAN_OBJECT)
        return json_scan_value(sc, NULL);
    if (json_scan_enter(sc) < 0)
        return -1;
    while ((r = json_scan_member(sc, &key)) == 1) {
        if (!json_scan_string_is(&key, "error") || json_scan_peek(sc) != JSON_SCAN_OBJECT) {
            if (json_scan_string_is(&key, "error"))
                memset(code, 0, sizeof(*code));
            r = json_scan_value(sc, NULL);
        } else {
            memset(code, 0, sizeof(*code));
            r = json_scan_enter(sc);
            while (r == 0 && (r = json_scan_member(sc, &key)) == 1)
                r = json_scan_value(sc, json_scan_string_is(&key, "code") ? code : NULL);
        }
        if (r < 0)
            return -1;
    }
    return r;
}

bool jsonrpc_response_error_code(const char *body, size_t len, long long *code)
{
    struct json_scan sc;
    struct json_scan_value c;
    long long v;
    int r;

    if (!body || len == 0)
        return false;
    memset(&c, 0, sizeof(c));
    json_scan_init(&sc, body, len);
    if (json_scan_peek(&sc) == JSON_SCAN_ARRAY) {
        r = json_scan_enter(&sc);
        if (r == 0 && (r = json_scan_element(&sc)) == 1) {
            r = jsonrpc_scan_error_code(&sc, &c);
            while (r == 0 && (r = json_scan_element(&sc)) == 1)
                r = json_scan_value(&sc, NULL);
        }
    } else {
        jsonrpc_scan_error_code(&sc, &c);
    }
    if (json_scan_end(&sc) < 0 || json_scan_int64(&c, &v) < 0)
        return false;
    if (code)
        *code = v;
    return true;
}
