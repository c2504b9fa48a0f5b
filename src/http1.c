/* http1: the front end's request heads and chunked request bodies, parsed in place.
 *
 * A request head is parsed once it is complete (http1_head_end finds its end incrementally),
 * NUL terminating its fields in the buffer. Responses are libcurl's to parse (upstream.c).
 * The chunked decoder is a byte-driven state machine because chunk boundaries fall anywhere
 * in what one read() returns.
 */
#include "mcpeek/http1.h"

#include <string.h>
#include <strings.h>

#include "mcpeek/hex.h"

/* RFC 9110 5.6.2 tchar: what a header name may consist of. */
static bool http1_is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Length of the line without its CR LF / LF. */
static size_t http1_line_len(const char *p, const char *nl)
{
    return (size_t)(nl - p) - (nl > p && nl[-1] == '\r' ? 1 : 0);
}

int http1_parse_field(const char *p, size_t n, struct http1_header *h)
{
    const char *colon = memchr(p, ':', n);
    if (!colon || colon == p)
        return -1;
    for (const char *c = p; c < colon; c++)
        if (!http1_is_tchar((unsigned char)*c))
            return -1; /* also refuses "Name :" and obsolete folding (leading space) */
    const char *v = colon + 1, *end = p + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    for (const char *c = v; c < end; c++)
        if ((unsigned char)*c < 0x20 && *c != '\t')
            return -1; /* a stray CR or NUL would let a value smuggle a line */
    h->name = p;
    h->name_len = (size_t)(colon - p);
    h->value = v;
    h->value_len = (size_t)(end - v);
    return 0;
}

size_t http1_head_end(const char *buf, size_t len, size_t from)
{
    for (size_t i = from > 2 ? from - 2 : 0; i + 1 < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (buf[i + 1] == '\n')
            return i + 2;
        if (buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

/* Cuts the line [p, nl] into a NUL-terminated string (CR or LF replaced); returns its end. */
static char *http1_terminate_line(char *p, char *nl)
{
    char *end = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
    *end = '\0';
    return end;
}

static int http1_parse_request_line(char *p, char *end, struct http1_request *out)
{
    /* METHOD SP target SP HTTP/1.x, exactly (RFC 9112 3) */
    char *sp1 = memchr(p, ' ', (size_t)(end - p));
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
    if (!sp1 || sp1 == p || !sp2 || sp2 == sp1 + 1 || end - sp2 - 1 != 8 ||
        memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || sp2[8] < '0' || sp2[8] > '9')
        return -1;
    for (char *c = p; c < sp1; c++)
        if (!http1_is_tchar((unsigned char)*c))
            return -1;
    for (char *c = sp1 + 1; c < sp2; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c == 0x7f)
            return -1;
    *sp1 = '\0';
    *sp2 = '\0';
    out->method = p;
    out->target = sp1 + 1;
    out->minor = sp2[8] - '0';
    return 0;
}

int http1_parse_request_head(char *buf, size_t head_len, struct http1_request *out)
{
    char *p = buf, *end = buf + head_len, *nl;
    out->n_headers = 0;
    if (!(nl = memchr(p, '\n', (size_t)(end - p))))
        return -1;
    char *line_end = http1_terminate_line(p, nl);
    if (http1_parse_request_line(p, line_end, out) < 0)
        return -1;
    for (p = nl + 1; p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL; p = nl + 1) {
        size_t n = http1_line_len(p, nl);
        if (n == 0)
            return 0;
        struct http1_header field;
        if (http1_parse_field(p, n, &field) < 0)
            return -1;
        if (out->n_headers == HTTP1_MAX_HEADERS)
            return -2;
        struct http1_header *h = &out->headers[out->n_headers++];
        *h = field;
        ((char *)h->name)[h->name_len] = '\0';   /* the colon */
        ((char *)h->value)[h->value_len] = '\0'; /* whitespace, CR or LF after the value */
    }
    return 0;
}

const char *http1_request_header(const struct http1_request *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

bool http1_value_has_token(const char *value, size_t len, const char *token)
{
    size_t n = strlen(token);
    const char *p = value, *end = value + len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *start = p;
        while (p < end && *p != ',')
            p++;
        const char *stop = p;
        while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
            stop--;
        if ((size_t)(stop - start) == n && strncasecmp(start, token, n) == 0)
            return true;
    }
    return false;
}

int http1_parse_content_length(const char *value, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 18) /* 18 digits cannot overflow */
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (value[i] < '0' || value[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(value[i] - '0');
    }
    *out = v;
    return 0;
}

/* ---- chunked transfer coding (RFC 9112 7.1) -------------------------------------------- */

enum {
    CHUNK_SIZE = 0,   /* hex digits of the size */
    CHUNK_EXT,        /* chunk extensions: skipped up to the LF */
    CHUNK_DATA,       /* `remaining` payload bytes */
    CHUNK_DATA_CR,    /* the CR LF after the payload */
    CHUNK_DATA_LF,    /* the LF after the payload */
    CHUNK_TRAILER,    /* at the start of a trailer line (or of the final empty line) */
    CHUNK_TRAILER_CR, /* the empty line's CR was read; its LF must follow */
    CHUNK_TRAILER_SKIP /* inside a trailer field line: skipped */,
    CHUNK_DONE,
};

/* Chunk sizes above this are refused rather than risk overflowing `remaining`. */
#define CHUNK_MAX_DIGITS 15

ssize_t http1_chunked_feed(struct http1_chunked *c, const char *in, size_t len, const char **data,
                           size_t *data_len)
{
    size_t i = 0;
    *data = NULL;
    *data_len = 0;
    while (i < len) {
        char ch = in[i];
        switch (c->state) {
        case CHUNK_SIZE: {
            int h = hex_digit_value((unsigned char)ch);
            if (h >= 0) {
                if (++c->digits > CHUNK_MAX_DIGITS)
                    return -1;
                c->remaining = c->remaining * 16 + (uint64_t)h;
                i++;
                break;
            }
            if (c->digits == 0)
                return -1;
            if (ch != ';' && ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n')
                return -1;
            c->state = CHUNK_EXT;
            break;
        }
        case CHUNK_EXT:
            i++;
            if (ch != '\n')
                break;
            c->digits = 0;
            c->state = c->remaining > 0 ? CHUNK_DATA : CHUNK_TRAILER;
            break;
        case CHUNK_DATA: {
            size_t take = len - i < c->remaining ? len - i : (size_t)c->remaining;
            c->remaining -= take;
            if (c->remaining == 0)
                c->state = CHUNK_DATA_CR;
            *data = in + i;
            *data_len = take;
            return (ssize_t)(i + take);
        }
        case CHUNK_DATA_CR:
            i++;
            if (ch == '\r')
                c->state = CHUNK_DATA_LF;
            else if (ch == '\n')
                c->state = CHUNK_SIZE;
            else
                return -1;
            break;
        case CHUNK_DATA_LF:
            i++;
            if (ch != '\n')
                return -1;
            c->state = CHUNK_SIZE;
            break;
        case CHUNK_TRAILER:
            i++;
            if (ch == '\n') {
                c->state = CHUNK_DONE;
                return (ssize_t)i;
            }
            c->state = ch == '\r' ? CHUNK_TRAILER_CR : CHUNK_TRAILER_SKIP;
            break;
        case CHUNK_TRAILER_CR:
            i++;
            if (ch != '\n')
                return -1;
            c->state = CHUNK_DONE;
            return (ssize_t)i;
        case CHUNK_TRAILER_SKIP:
            i++;
            if (ch == '\n')
                c->state = CHUNK_TRAILER;
            break;
        default: /* CHUNK_DONE: nothing more belongs to this body */
            return (ssize_t)i;
        }
    }
    return (ssize_t)i;
}

bool http1_chunked_done(const struct http1_chunked *c)
{
    return c->state == CHUNK_DONE;
}
