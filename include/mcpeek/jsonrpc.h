/* jsonrpc: turns one HTTP request body into a `struct mcp_request` summary.
 *
 * The body is parsed once (jansson, json_loadb) and only the few fields the log needs are
 * copied: mcpeek forwards the original bytes, it never re-serialises what it parsed. A body that is
 * not JSON, or JSON that is not JSON-RPC 2.0, is not an error for the proxy: the record says why
 * and the request is still forwarded (unless strict mode is on, which the caller decides).
 */
#ifndef MCPEEK_JSONRPC_H
#define MCPEEK_JSONRPC_H

#include <stdbool.h>
#include <stddef.h>

#include "mcpeek/openai_meta.h"

enum jsonrpc_status {
    JSONRPC_OK = 0,       /* a JSON-RPC request, notification or response (or a batch) */
    JSONRPC_EMPTY,        /* zero-length body */
    JSONRPC_INVALID_JSON, /* not JSON at all: -32700 in strict mode */
    JSONRPC_INVALID_RPC,  /* JSON, but not a JSON-RPC 2.0 message: -32600 in strict mode */
};

/* Everything mcpeek learns from a body. Strings are heap copies owned by the record and
 * NULL when absent; mcp_request_clear() frees them. For a batch, method/id/tool describe
 * the first element and `openai` comes from the first element's params._meta. */
struct mcp_request {
    enum jsonrpc_status status;
    char error[128];   /* human readable reason when status != JSONRPC_OK */
    char *method;      /* "tools/call", ... */
    char *id_json;     /* the id exactly as JSON: `47`, `"abc"`, `null`; NULL when absent */
    char *tool;        /* params.name, only for tools/call */
    size_t batch;      /* number of messages: 1 for a single message, n for a batch */
    bool is_batch;     /* the body was a JSON array */
    bool notification; /* first message has a method and no id */
    bool response;     /* first message is a response (result or error, no method) */
    OpenAiClientContext *openai; /* NULL when no openai/... key was present */
};

/* Parses `len` bytes of `body` (need not be NUL terminated) into `out`, which is cleared
 * first. `max_string` caps every copied string (bytes). Returns the status also stored in
 * out->status; never fails on hostile input, only reports. */
enum jsonrpc_status jsonrpc_parse(const char *body, size_t len, size_t max_string,
                                  struct mcp_request *out);

/* Frees what the record owns and zeroes it; safe on a zeroed or already cleared record. */
void mcp_request_clear(struct mcp_request *req);

#endif
