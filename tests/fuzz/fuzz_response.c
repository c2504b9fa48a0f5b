/* fuzz_response: libFuzzer harness for src/response_inspect.c and the SSE reader in src/sse.c.
 *
 * The first three input bytes choose the answer's kind (JSON or SSE), the request it answers
 * and the size cap; the rest is the answer body. It is inspected twice: in one piece, and cut
 * into pieces whose sizes come from a small PRNG seeded by the input, and both must find the
 * same things (the reader must not depend on where the network cut the stream). It checks the
 * promises the log relies on: the message fits its cap and is valid UTF-8, the JSON buffer never
 * passes the cap, no more events than line ends. Leaks are caught by the sanitizers.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mcpeek/response_inspect.h"

#define FUZZ_MAX_STRING 13

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fuzz_ids[] = {NULL, "1", "\"a\"", "null", "1.5", "-7"};
static const char *const fuzz_methods[] = {"tools/call", "ping"};

struct fuzz_found {
    bool has_code;
    long long code;
    const char *message;
    bool tool_is_error;
    uint64_t server_requests;
    uint64_t sse_events;
    enum response_inspection inspected;
};

/* Inspects body[0..len) fed in pieces; `seed` 0 means in one piece. */
static void fuzz_inspect(struct response_inspect *ri, const struct mcp_request *req,
                         enum response_kind kind, size_t cap, const char *body, size_t len,
                         uint32_t seed, struct fuzz_found *out)
{
    struct exchange_record rec;
    size_t off = 0;

    memset(&rec, 0, sizeof(rec));
    response_inspect_start(ri, req, kind, cap, FUZZ_MAX_STRING);
    while (off < len) {
        size_t n = len - off;
        if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            n = (seed >> 16) % 7; /* pieces of 0..6 bytes, empty ones too */
            if (n > len - off)
                n = len - off;
        }
        response_inspect_feed(ri, body + off, n);
        if (kind == RESPONSE_JSON && ri->json.len > cap)
            __builtin_trap();
        off += n;
    }
    response_inspect_fill(ri, &rec);
    out->has_code = rec.has_rpc_error_code;
    out->code = rec.rpc_error_code;
    out->message = rec.rpc_error_message;
    out->tool_is_error = rec.tool_is_error;
    out->server_requests = rec.server_requests;
    out->sse_events = rec.sse_events;
    out->inspected = rec.response_inspected;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct response_inspect whole, pieces;
    struct fuzz_found a, b;
    struct mcp_request req;
    const struct mcp_request *reqp = &req;
    enum response_kind kind;
    size_t cap, len, line_ends = 0;
    const char *body;

    if (size < 3)
        return 0;
    kind = (data[0] & 1) ? RESPONSE_SSE : RESPONSE_JSON;
    memset(&req, 0, sizeof(req));
    req.method = (char *)fuzz_methods[(data[0] >> 1) & 1];
    req.id_json = (char *)fuzz_ids[((unsigned)data[0] >> 2) % 6];
    if (data[0] & 0x80)
        reqp = NULL; /* a GET stream */
    cap = data[1] == 255 ? (size_t)1 << 20 : (size_t)data[1] * 4;
    body = (const char *)data + 3;
    len = size - 3;

    fuzz_inspect(&whole, reqp, kind, cap, body, len, 0, &a);
    fuzz_inspect(&pieces, reqp, kind, cap, body, len, (uint32_t)data[2] + 1, &b);

    if (a.has_code != b.has_code || a.code != b.code || a.tool_is_error != b.tool_is_error ||
        a.server_requests != b.server_requests || a.sse_events != b.sse_events ||
        a.inspected != b.inspected || (a.message == NULL) != (b.message == NULL) ||
        (a.message && strcmp(a.message, b.message) != 0))
        __builtin_trap();
    if (a.message) {
        size_t mlen = strlen(a.message);
        /* NULs become U+FFFD before the cut, so even then the cap holds */
        if (mlen > FUZZ_MAX_STRING || !utf8_valid(a.message, mlen))
            __builtin_trap();
    }
    for (size_t i = 0; i < len; i++)
        line_ends += body[i] == '\n' || body[i] == '\r';
    if (a.sse_events > line_ends / 2 + 1 || (kind != RESPONSE_SSE && a.sse_events != 0))
        __builtin_trap();
    if (a.server_requests > len / 8) /* {"method":"x","id":1} needs far more than 8 bytes */
        __builtin_trap();

    response_inspect_clear(&whole);
    response_inspect_clear(&pieces);
    return 0;
}
