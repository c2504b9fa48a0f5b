/* fuzz_http1: libFuzzer harness for src/http1.c.
 *
 * The input is a request head (searched for with http1_head_end, whole and trickled, then
 * parsed in place) and, after the head's end if there is one, a chunked body. The body is decoded
 * once in one piece and once in pieces whose sizes come from the input: payload, consumed length
 * and done/error state must not depend on the split. Buffers are allocated to the exact length, so
 * ASan sees any read past a span.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mcpeek/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Traps when s is not a NUL-terminated string lying inside [buf, buf + len). */
static void fuzz_check_cstr(const char *s, const char *buf, size_t len)
{
    if (!s || s < buf || s >= buf + len || !memchr(s, '\0', (size_t)(buf + len - s)))
        __builtin_trap();
}

static void fuzz_check_span(const char *s, size_t n, const char *buf, size_t len)
{
    if (!s || s < buf || s > buf + len || n > (size_t)(buf + len - s))
        __builtin_trap();
}

/* Piece sizes for the trickled reads: 1..16 bytes, taken from the input itself. */
static size_t fuzz_piece(const uint8_t *data, size_t size, size_t k)
{
    return size ? 1 + (data[(k * 7) % size] & 15u) : 1;
}

static void fuzz_request_head(const uint8_t *data, size_t size, size_t end)
{
    /* Trickled search, as client.c runs it: must find the same end as the one-shot one. */
    size_t scanned = 0, len = 0, found = 0;
    for (size_t k = 0; len < size && !found; k++) {
        len += fuzz_piece(data, size, k);
        if (len > size)
            len = size;
        found = http1_head_end((const char *)data, len, scanned);
        scanned = len;
    }
    if (found != end)
        __builtin_trap();
    if (end == 0)
        return;
    if (end > size)
        __builtin_trap();

    char *buf = malloc(end);
    if (!buf)
        return;
    memcpy(buf, data, end);
    struct http1_request r;
    memset(&r, 0, sizeof(r));
    int rc = http1_parse_request_head(buf, end, &r);
    if (rc != 0 && rc != -1 && rc != -2)
        __builtin_trap();
    if (rc == 0) {
        fuzz_check_cstr(r.method, buf, end);
        fuzz_check_cstr(r.target, buf, end);
        if (r.minor < 0 || r.minor > 9 || r.n_headers > HTTP1_MAX_HEADERS)
            __builtin_trap();
        for (size_t i = 0; i < r.n_headers; i++) {
            const struct http1_header *h = &r.headers[i];
            fuzz_check_cstr(h->name, buf, end);
            fuzz_check_cstr(h->value, buf, end);
            if (strlen(h->name) != h->name_len || strlen(h->value) != h->value_len ||
                h->name_len == 0)
                __builtin_trap();
            if (http1_request_header(&r, h->name) == NULL)
                __builtin_trap();
        }
    }
    free(buf);
}

struct fuzz_decoded {
    char *payload;
    size_t payload_len;
    size_t consumed;
    bool error;
    bool done;
};

/* Feeds in[0..len) to the decoder until it is consumed, done, or refused. */
static void fuzz_chunked_piece(struct http1_chunked *c, const char *in, size_t len,
                               struct fuzz_decoded *out)
{
    size_t off = 0;
    while (off < len && !out->error && !out->done) {
        const char *d;
        size_t dlen;
        ssize_t used = http1_chunked_feed(c, in + off, len - off, &d, &dlen);
        if (used < 0) {
            out->error = true;
            return;
        }
        if ((size_t)used > len - off)
            __builtin_trap();
        if (dlen > 0) {
            fuzz_check_span(d, dlen, in + off, (size_t)used);
            memcpy(out->payload + out->payload_len, d, dlen);
            out->payload_len += dlen;
        }
        off += (size_t)used;
        out->consumed += (size_t)used;
        out->done = http1_chunked_done(c);
        if (used == 0 && !out->done)
            __builtin_trap(); /* no progress on a body that is not complete */
    }
}

static void fuzz_chunked(const uint8_t *data, size_t size, const char *body, size_t len)
{
    struct fuzz_decoded whole = {0}, split = {0};
    whole.payload = malloc(len ? len : 1);
    split.payload = malloc(len ? len : 1);
    char *copy = malloc(len ? len : 1);
    if (!whole.payload || !split.payload || !copy)
        goto out;

    struct http1_chunked c;
    memset(&c, 0, sizeof(c));
    memcpy(copy, body, len);
    fuzz_chunked_piece(&c, copy, len, &whole);

    memset(&c, 0, sizeof(c));
    size_t off = 0;
    for (size_t k = 0; off < len && !split.error && !split.done; k++) {
        size_t n = fuzz_piece(data, size, k + 3);
        if (n > len - off)
            n = len - off;
        /* Each piece in its own exact-size buffer, as separate reads would leave it. */
        char *piece = malloc(n);
        if (!piece)
            goto out;
        memcpy(piece, body + off, n);
        fuzz_chunked_piece(&c, piece, n, &split);
        free(piece);
        off += n;
    }
    if (whole.error != split.error || whole.done != split.done ||
        whole.payload_len != split.payload_len ||
        memcmp(whole.payload, split.payload, whole.payload_len) != 0)
        __builtin_trap();
    if (!whole.error && whole.consumed != split.consumed)
        __builtin_trap();
out:
    free(copy);
    free(split.payload);
    free(whole.payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t end = http1_head_end((const char *)data, size, 0);
    fuzz_request_head(data, size, end);
    fuzz_chunked(data, size, (const char *)data + end, size - end);
    return 0;
}
