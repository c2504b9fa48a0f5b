/* fuzz_jsonrpc: libFuzzer harness for src/jsonrpc.c and src/openai_meta.c.
 *
 * Feeds arbitrary bytes to jsonrpc_parse (with a small cap, so cuts inside UTF-8 sequences
 * are exercised) and to jsonrpc_response_error_code, and checks the record's invariants:
 * every copied string fits the cap and is valid UTF-8, the error text is printable ASCII.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mcp_request req;
    OpenAiClientContext *copy;
    long long code;

    jsonrpc_parse((const char *)data, size, FUZZ_MAX_STRING, &req);
    fuzz_check_record(&req);
    copy = openai_meta_dup(req.openai);
    openai_meta_free(copy);
    mcp_request_clear(&req);
    mcp_request_clear(&req);

    (void)jsonrpc_response_error_code((const char *)data, size, &code);
    return 0;
}
