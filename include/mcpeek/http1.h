/* http1: HTTP/1.x request parsing for the front end that allocates nothing (RFC 9112).
 *
 * A request head parser that works in place with the framing rules of the front end, and a
 * chunked transfer-coding decoder that hands back payload spans of the input as it is fed,
 * whatever the chunk boundaries (also run in place over a request buffer). No I/O here:
 * client.c feeds them what it reads. Upstream responses are parsed by libcurl; only the
 * field-line check below is shared with upstream.c.
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
/* How a request head frames its body, once http1_request_framing accepted it. */
struct http1_framing {
    bool chunked;     /* Transfer-Encoding: chunked */
    bool has_length;  /* Content-Length given */
    uint64_t length;  /* its value */
    const char *host; /* the one Host value, NULL when absent (HTTP/1.0 only) */
};

/* The request-side rules of RFC 9112 that keep a request from being read two ways by two
 * parsers (docs/security.md lists them): Content-Length and Transfer-Encoding, Host, and the
 * request-target's form. Returns NULL, or the rule broken (a refusal with 400). An
 * absolute-form target (http://host/path) is rewritten in place to origin-form (/path), after
 * checking its authority is the Host. */
const char *http1_request_framing(struct http1_request *r, struct http1_framing *out);

/* The value of the first request header named `name` (case-insensitive), or NULL. */
const char *http1_request_header(const struct http1_request *r, const char *name);

/* True when the comma-separated header value contains `token` (case-insensitive). */
bool http1_value_has_token(const char *value, size_t len, const char *token);

/* Content-Length value: 0 and the length, or -1 when not a plain decimal number. */
int http1_parse_content_length(const char *value, size_t len, uint64_t *out);

/* Framing bytes (extensions of one size line, or the whole trailer section) a strict decoder
 * accepts; a body may not hide an unbounded stream behind its framing. */
#define HTTP1_CHUNK_FRAMING_MAX 4096

/* Chunked decoder state; zero it to start a body, then set `strict` for a request body. */
struct http1_chunked {
    unsigned state;
    unsigned digits;    /* hex digits read of the current size line */
    uint64_t remaining; /* payload bytes left in the current chunk */
    /* Request side (RFC 9112 7.1, as strict as haproxy): every line ends in CR LF, the size
     * is followed only by ";" extensions of the form ;token[=token|quoted-string] (no
     * whitespace, no control bytes), trailer lines hold no control bytes, and at most
     * HTTP1_CHUNK_FRAMING_MAX bytes of extensions per line and of trailers. Off: what
     * upstream servers send is read leniently (bare LF, anything after the size). */
    bool strict;
    unsigned framing; /* strict: extension or trailer bytes counted against the cap */
};

/* Consumes a prefix of in[0..len): returns the bytes consumed (> 0 while len > 0 and the
 * body is not complete) or -1 on a framing error. Payload found in that prefix is returned
 * as `*data`, `*data_len` (a span of `in`, length 0 when the prefix held only framing). */
ssize_t http1_chunked_feed(struct http1_chunked *c, const char *in, size_t len, const char **data,
                           size_t *data_len);

/* True once the last chunk and the trailer section were consumed. */
bool http1_chunked_done(const struct http1_chunked *c);

/* A chunked request body decoded inside the buffer that holds it: buf[start, start + *decoded)
 * is the payload so far, buf[start + *decoded, *len) input not decoded yet. Decodes what it
 * can, moves the undecoded rest up behind the payload and updates *decoded and *len (framing
 * bytes leave the buffer). Returns 1 when the body is complete (what follows in the buffer is
 * the next request), 0 when more input is needed, -1 on a framing error, -2 when the payload
 * would exceed max_decoded. */
int http1_chunked_in_place(struct http1_chunked *c, char *buf, size_t start, size_t *decoded,
                           size_t *len, size_t max_decoded);

/* A parsed head's fields as offsets into its buffer, so the buffer may be reallocated while
 * the head waits for its body: save before, restore on the new base after. */
struct http1_request_offsets {
    size_t method, target;
    size_t names[HTTP1_MAX_HEADERS], values[HTTP1_MAX_HEADERS];
};
void http1_request_offsets_save(const struct http1_request *r, const char *base,
                                struct http1_request_offsets *o);
void http1_request_offsets_restore(struct http1_request *r, const char *base,
                                   const struct http1_request_offsets *o);

#endif
