/* http1: HTTP/1.x request parsing for the front end that allocates nothing (RFC 9112).
 *
 * A request head parser that works in place, and a chunked transfer-coding decoder that
 * hands back payload spans of the input as it is fed, whatever the chunk boundaries. No I/O
 * here: client.c feeds them what it reads. Upstream responses are parsed by libcurl.
 */
#ifndef MCPEEK_HTTP1_H
#define MCPEEK_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Headers kept per request head; a head with more is refused (431). */
#define HTTP1_MAX_HEADERS 100

/* One header field; name and value point into the parsed buffer, not NUL terminated.
 * The value has its surrounding whitespace removed. */
struct http1_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

struct http1_request {
    const char *method; /* NUL terminated inside the parsed buffer, like every span below */
    const char *target;
    int minor;
    struct http1_header headers[HTTP1_MAX_HEADERS];
    size_t n_headers;
};

/* Offset just past the empty line that ends a head in buf[0..len), or 0 when it is not
 * there yet. `from` is where the previous search stopped (0 at first): trickled heads are
 * not rescanned from the start. */
size_t http1_head_end(const char *buf, size_t len, size_t from);

/* Parses a complete request head buf[0..head_len) (head_len from http1_head_end) in place:
 * the method, target, names and values are NUL terminated by overwriting the delimiters
 * after them. Returns 0, -1 when malformed (400: bad request line, header syntax, obsolete
 * folding, whitespace before a colon) or -2 when it has more than HTTP1_MAX_HEADERS fields
 * (431). */
int http1_parse_request_head(char *buf, size_t head_len, struct http1_request *out);

/* One header field line p[0..n) without its line end: name and value spans (value trimmed of
 * blanks), 0, or -1 when the name is not a token (RFC 9110 5.6.2: also a blank before the
 * colon, obsolete folding) or the value holds a control character other than a tab. Used for
 * request heads here and for the upstream's response heads libcurl hands over. */
int http1_parse_field(const char *p, size_t n, struct http1_header *h);

/* The value of the first request header named `name` (case-insensitive), or NULL. */
const char *http1_request_header(const struct http1_request *r, const char *name);

/* True when the comma-separated header value contains `token` (case-insensitive). */
bool http1_value_has_token(const char *value, size_t len, const char *token);

/* Content-Length value: 0 and the length, or -1 when not a plain decimal number. */
int http1_parse_content_length(const char *value, size_t len, uint64_t *out);

/* Chunked decoder state; zero it to start a body. */
struct http1_chunked {
    unsigned state;
    unsigned digits;    /* hex digits read of the current size line */
    uint64_t remaining; /* payload bytes left in the current chunk */
};

/* Consumes a prefix of in[0..len): returns the bytes consumed (> 0 while len > 0 and the
 * body is not complete) or -1 on a framing error. Payload found in that prefix is returned
 * as `*data`, `*data_len` (a span of `in`, length 0 when the prefix held only framing). */
ssize_t http1_chunked_feed(struct http1_chunked *c, const char *in, size_t len, const char **data,
                           size_t *data_len);

/* True once the last chunk and the trailer section were consumed. */
bool http1_chunked_done(const struct http1_chunked *c);

#endif
