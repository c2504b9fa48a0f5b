/* response_inspect: parses relayed answers (JSON whole, SSE event by event) with jansson.
 *
 * Parsing costs more than relaying, so a message is parsed only when its bytes contain one
 * of the keys we look for ("error", "isError", "method"); most answers (plain results) are
 * then skipped by a memmem. Keys written with \u escapes are not recognised: no server
 * writes them so, and the answer is relayed unchanged whatever the inspector concludes.
 */
#include "mcpeek/response_inspect.h"
#include "mcpeek/json_arena.h"

#include <stdlib.h>
#include <string.h>

#include "mcpeek/openai_meta.h"

/* What the inspector reports all carries an "id" (an answer to the request, a request of the
 * server's): texts without one, such as progress notifications, and texts without any of
 * the other byte strings, are not parsed at all. */
static bool inspect_worth_parsing(const char *s, size_t len)
{
    return memmem(s, len, "\"id\"", 4) != NULL &&
           (memmem(s, len, "\"error\"", 7) != NULL || memmem(s, len, "\"isError\"", 9) != NULL ||
            memmem(s, len, "\"method\"", 8) != NULL);
}

static bool inspect_id_matches(const struct response_inspect *ri, const json_t *id)
{
    if (ri->request_id != NULL)
        return id != NULL && json_equal(id, ri->request_id);
    return ri->match_null_id && (id == NULL || json_is_null(id));
}

static void inspect_error(struct response_inspect *ri, const json_t *error)
{
    const json_t *code = json_object_get(error, "code");
    const json_t *message = json_object_get(error, "message");

    ri->has_error = true;
    if (json_is_integer(code)) {
        ri->has_error_code = true;
        ri->error_code = (long long)json_integer_value(code);
    }
    if (json_is_string(message))
        ri->error_message =
            openai_meta_copy(json_string_value(message), json_string_length(message),
                             ri->max_string); /* NULL on no memory: the line just lacks it */
}

/* One JSON-RPC message of the answer. */
static void inspect_message(struct response_inspect *ri, const json_t *msg)
{
    const json_t *id, *error, *result;

    if (!json_is_object(msg))
        return;
    id = json_object_get(msg, "id");
    if (json_object_get(msg, "method") != NULL) {
        /* a request from the server (sampling, elicitation, roots): notifications have no id */
        if (id != NULL && !json_is_null(id))
            ri->server_requests++;
        return;
    }
    if (!inspect_id_matches(ri, id))
        return;
    error = json_object_get(msg, "error");
    if (json_is_object(error)) {
        if (!ri->has_error) /* the first answer to the id counts */
            inspect_error(ri, error);
        return;
    }
    result = json_object_get(msg, "result");
    if (ri->tools_call && json_is_object(result) &&
        json_is_true(json_object_get(result, "isError")))
        ri->tool_is_error = true;
}

/* A whole JSON text: one message or a batch of them. Text that is not JSON is ignored. */
static void inspect_text(struct response_inspect *ri, const char *s, size_t len)
{
    json_t *root;
    size_t i;
    json_t *msg;

    if (len == 0 || !inspect_worth_parsing(s, len))
        return;
    if (ri->id_json != NULL && ri->request_id == NULL) {
        /* Before the arena opens: the id outlives this parse. NULL when jansson cannot read
         * it back (no memory): no answer is then taken for this request's, which only
         * loses the error fields. */
        ri->request_id = json_loads(ri->id_json, JSON_DECODE_ANY, NULL);
        if (ri->request_id == NULL)
            ri->id_json = NULL;
    }
    /* The tree lives only here: the worker's arena holds it (what is kept is malloc'd). */
    bool in_arena = json_arena_begin();
    root = json_loadb(s, len, JSON_ALLOW_NUL, NULL);
    if (json_is_array(root)) {
        json_array_foreach(root, i, msg) inspect_message(ri, msg);
    } else if (root) {
        inspect_message(ri, root);
    }
    json_arena_release(root, in_arena);
    json_arena_end();
}

static void inspect_on_event(void *arg, const char *data, size_t len)
{
    inspect_text(arg, data, len);
}

void response_inspect_start(struct response_inspect *ri, const struct mcp_request *req,
                            enum response_kind kind, size_t max_bytes, size_t max_string)
{
    memset(ri, 0, sizeof(*ri));
    ri->kind = kind;
    ri->max_bytes = max_bytes;
    ri->max_string = max_string;
    strbuf_init(&ri->json);
    sse_reader_init(&ri->sse, max_bytes, inspect_on_event, ri);
    if (req != NULL) {
        ri->tools_call = req->method != NULL && strcmp(req->method, "tools/call") == 0;
        ri->match_null_id = req->id_json == NULL;
        ri->id_json = req->id_json; /* parsed only if an answer is worth reading */
    }
    ri->started = true;
}

void response_inspect_feed(struct response_inspect *ri, const char *data, size_t len)
{
    if (!ri->started || ri->finished || len == 0)
        return;
    if (ri->kind == RESPONSE_SSE) {
        sse_reader_feed(&ri->sse, data, len);
    } else if (ri->kind == RESPONSE_JSON && !ri->json_too_large) {
        if (len > ri->max_bytes - ri->json.len) {
            /* too large to parse: stop buffering and give the memory back at once */
            ri->json_too_large = true;
            strbuf_free(&ri->json);
            return;
        }
        strbuf_append(&ri->json, data, len);
        if (ri->json.oom) {
            ri->json_too_large = true;
            strbuf_free(&ri->json);
        }
    }
}

void response_inspect_finish(struct response_inspect *ri)
{
    if (!ri->started || ri->finished)
        return;
    ri->finished = true;
    if (ri->kind == RESPONSE_JSON && !ri->json_too_large)
        inspect_text(ri, ri->json.data, ri->json.len);
    strbuf_free(&ri->json);
    sse_reader_free(&ri->sse); /* a partial last event is not an event */
}

void response_inspect_fill(struct response_inspect *ri, struct exchange_record *rec)
{
    if (!ri->started)
        return;
    response_inspect_finish(ri);
    if (ri->kind == RESPONSE_SSE) {
        rec->sse_events = ri->sse.events;
        rec->response_inspected =
            ri->sse.oversize > 0 ? RESPONSE_INSPECT_SKIPPED : RESPONSE_INSPECT_DONE;
    } else if (ri->kind == RESPONSE_JSON) {
        rec->response_inspected =
            ri->json_too_large ? RESPONSE_INSPECT_SKIPPED : RESPONSE_INSPECT_DONE;
    }
    if (ri->has_error && !rec->has_rpc_error_code && rec->rpc_error_message == NULL) {
        rec->has_rpc_error_code = ri->has_error_code;
        rec->rpc_error_code = ri->error_code;
        rec->rpc_error_message = ri->error_message;
    }
    rec->tool_is_error = ri->tool_is_error;
    rec->server_requests = ri->server_requests;
}

void response_inspect_clear(struct response_inspect *ri)
{
    if (ri->request_id != NULL)
        json_decref(ri->request_id);
    free(ri->error_message);
    strbuf_free(&ri->json);
    sse_reader_free(&ri->sse);
    memset(ri, 0, sizeof(*ri));
}
