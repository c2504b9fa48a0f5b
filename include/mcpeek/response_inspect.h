/* response_inspect: reads what the upstream answered, for the log line and the metrics.
 *
 * proxy.c feeds it the response body bytes as they are relayed (after they went to the
 * client: the inspector never delays or changes a byte) and calls finish once the body ended.
 * A JSON answer is buffered up to `max_bytes` (response_inspect_max) and parsed with jansson
 * at the end; an SSE answer is read event by event (sse.c), each event's data parsed alone.
 * It finds: the JSON-RPC error answering the request's id, `isError: true` in the result of a
 * tools/call, and how many JSON-RPC requests the server sent inside the answer.
 *
 * Use from proxy.c (one inspector per exchange, inside struct exchange):
 *   on response headers:  response_inspect_start(&ex->inspect, &ex->rpc, ex->kind,
 *                                                cfg->response_inspect_max, kept_len(cfg));
 *   on each body chunk:   response_inspect_feed(&ex->inspect, data, len);   (after relaying)
 *   in exchange_log:      response_inspect_fill(&ex->inspect, &rec);         (before logging)
 *                         if (rec.has_rpc_error_code && !ex->has_rpc_error)
 *                             metrics_rpc_error(...); if (rec.tool_is_error)
 * metrics_tool_error(...); when the exchange is freed: response_inspect_clear(&ex->inspect); A
 * zeroed struct is a valid "nothing started" inspector: feed, finish, fill and clear do nothing.
 */
#ifndef MCPEEK_RESPONSE_INSPECT_H
#define MCPEEK_RESPONSE_INSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "mcpeek/accesslog.h"
#include "mcpeek/jsonrpc.h"
#include "mcpeek/sse.h"
#include "mcpeek/strbuf.h"

/* One exchange's answer reader. Owns `request_id`, `json`, `sse` and `error_message`. */
struct response_inspect {
    bool started;            /* response_inspect_start ran: the other fields are valid */
    bool finished;           /* response_inspect_finish ran */
    enum response_kind kind; /* only RESPONSE_JSON and RESPONSE_SSE are read */
    size_t max_bytes;        /* response_inspect_max */
    size_t max_string;       /* cap for error_message (bytes, cut on a UTF-8 boundary) */
    const char *id_json;     /* the request's id as JSON (borrowed from the request, which
                              * outlives the inspector); NULL when it had none */
    json_t *request_id;      /* id_json parsed, on the first answer worth reading */
    bool match_null_id;      /* no request id: an answer with id null (or none) is its answer */
    bool tools_call;         /* the request was tools/call: look for result.isError */
    struct strbuf json;      /* the JSON answer so far, at most max_bytes */
    bool json_too_large;     /* the JSON answer passed max_bytes: it is not parsed */
    struct sse_reader sse;

    /* what was found */
    bool has_error;      /* the answer to the request's id is a JSON-RPC error */
    bool has_error_code; /* ... with an integer error.code */
    long long error_code;
    char *error_message;      /* its error.message, capped; NULL when absent */
    bool tool_is_error;       /* tools/call result with isError: true */
    uint64_t server_requests; /* JSON-RPC requests (method and id) the server sent */
};

/* Starts reading an answer of `kind` to `req` (may be NULL: GET streams, DELETE). Call once,
 * when the response headers are known. Allocates nothing until bytes come. A request id
 * longer than max_string was cut by jsonrpc.c and then matches no answer. */
void response_inspect_start(struct response_inspect *ri, const struct mcp_request *req,
                            enum response_kind kind, size_t max_bytes, size_t max_string);

/* Reads `len` more bytes of the response body, exactly as relayed. Only SSE event parsing
 * happens here; a JSON answer is buffered (up to max_bytes) until finish. */
void response_inspect_feed(struct response_inspect *ri, const char *data, size_t len);

/* The body ended (completely or not): parses a buffered JSON answer. Idempotent. A partial
 * SSE event at the end is not read. */
void response_inspect_finish(struct response_inspect *ri);

/* Finishes (if not done yet) and copies what was found into the log record:
 * has_rpc_error_code/rpc_error_code and rpc_error_message (only when the record has no
 * rpc_error_code yet: an error mcpeek answered itself wins), tool_is_error, server_requests,
 * response_inspected, and sse_events for SSE answers. The record borrows error_message: keep
 * the inspector until the line is formatted. */
void response_inspect_fill(struct response_inspect *ri, struct exchange_record *rec);

/* Frees what the inspector owns and zeroes it; safe on a zeroed or cleared inspector. */
void response_inspect_clear(struct response_inspect *ri);

#endif
