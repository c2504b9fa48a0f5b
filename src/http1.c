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
#include "mcpeek/hostport.h"

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

/* ---- request framing rules (RFC 9112) ------------------------------------------------------ */

/* Origin-form from an absolute-form target, in place: "http://host:80/mcp?x" -> "/mcp?x". An
 * empty path becomes "/" by overwriting the authority's last byte, once it was compared with
 * `host` (NULL: no Host to compare). Returns NULL, or the rule broken. */
static const char *http1_absolute_to_origin(struct http1_request *r, const char *host)
{
    char *t = (char *)r->target;
    size_t skip = strncasecmp(t, "http://", 7) == 0    ? 7
                  : strncasecmp(t, "https://", 8) == 0 ? 8
                                                       : 0;
    char *a = t + skip;
    size_t n = strcspn(a, "/?#");
    if (skip == 0 || n == 0 || memchr(a, '@', n))
        return "a target that is neither origin-form nor an http(s) absolute-form (RFC 9112 3.2)";
    if (host && (strlen(host) != n || strncasecmp(host, a, n) != 0))
        return "an absolute-form target whose authority is not the Host (RFC 9112 3.2.2)";
    if (a[n] == '/') {
        r->target = a + n;
    } else {
        a[n - 1] = '/'; /* "http://h?x" -> target "/?x" */
        r->target = a + n - 1;
    }
    return NULL;
}

const char *http1_request_framing(struct http1_request *r, struct http1_framing *out)
{
    memset(out, 0, sizeof(*out));
    size_t hosts = 0;
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct http1_header *h = &r->headers[i];
        if (h->name_len == 14 && strcasecmp(h->name, "Content-Length") == 0) {
            uint64_t v;
            if (http1_parse_content_length(h->value, h->value_len, &v) < 0)
                return "Content-Length is not a decimal number (RFC 9112 6.3)";
            if (out->has_length && v != out->length)
                return "two different Content-Length values (RFC 9112 6.3)";
            out->has_length = true;
            out->length = v;
        } else if (h->name_len == 17 && strcasecmp(h->name, "Transfer-Encoding") == 0) {
            if (out->chunked || strcasecmp(h->value, "chunked") != 0)
                return "a transfer coding other than one chunked (RFC 9112 6.1, 7)";
            out->chunked = true;
        } else if (h->name_len == 4 && strcasecmp(h->name, "Host") == 0) {
            if (++hosts > 1)
                return "more than one Host (RFC 9112 3.2)";
            out->host = h->value;
        }
    }
    if (out->chunked && r->minor == 0)
        return "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1)";
    if (out->chunked && out->has_length)
        return "Content-Length beside Transfer-Encoding (RFC 9112 6.1, 6.3)";
    if (hosts == 0 && r->minor >= 1)
        return "no Host in an HTTP/1.1 request (RFC 9112 3.2)";
    if (out->host && out->host[0] != '\0') {
        struct hostport hp;
        if (hostport_parse(out->host, strlen(out->host), 0, &hp) != NULL)
            return "a Host that is not host[:port] (RFC 9112 3.2)";
    }
    if (r->target[0] == '/')
        return NULL;
    if (strcmp(r->target, "*") == 0)
        return strcmp(r->method, "OPTIONS") == 0 ? NULL
                                                 : "'*' target on a method other than OPTIONS "
                                                   "(RFC 9112 3.2.4)";
    return http1_absolute_to_origin(r, out->host);
}

/* ---- chunked transfer coding (RFC 9112 7.1) -------------------------------------------- */

enum {
    CHUNK_SIZE = 0,   /* hex digits of the size */
    CHUNK_EXT,        /* lenient: chunk extensions skipped up to the LF */
    CHUNK_DATA,       /* `remaining` payload bytes */
    CHUNK_DATA_CR,    /* the CR LF after the payload */
    CHUNK_DATA_LF,    /* the LF after the payload */
    CHUNK_TRAILER,    /* at the start of a trailer line (or of the final empty line) */
    CHUNK_TRAILER_CR, /* the empty line's CR was read; its LF must follow */
    CHUNK_TRAILER_SKIP /* inside a trailer field line: skipped */,
    CHUNK_DONE,
    /* strict only: the chunk-ext grammar, and every line end a CR LF */
    CHUNK_SIZE_LF,    /* the size line's CR was read */
    CHUNK_EXT_NAME0,  /* after ';': a token must start */
    CHUNK_EXT_NAME,   /* inside the name token */
    CHUNK_EXT_VAL0,   /* after '=': a token or a quoted-string must start */
    CHUNK_EXT_TOKEN,  /* inside a token value */
    CHUNK_EXT_QUOTED, /* inside a quoted-string value */
    CHUNK_EXT_QPAIR,  /* after a backslash inside it */
    CHUNK_EXT_QEND,   /* after the closing quote */
    CHUNK_TRAILER_LF, /* a trailer field line's CR was read */
};

/* Chunk sizes above this are refused rather than risk overflowing `remaining`. */
#define CHUNK_MAX_DIGITS 15

/* RFC 9110 5.6.4: what a quoted-string may hold besides '"' and '\' (qdtext). */
static bool http1_is_qdtext(unsigned char c)
{
    return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
           (c >= 0x5d && c <= 0x7e) || c >= 0x80;
}

/* Strict mode: one byte of the size line after its digits, or of a trailer line. Returns the
 * next state, or -1 when the byte breaks RFC 9112 7.1.1 / 7.1.2 (whitespace or a control
 * byte in the size line, an extension that is not ;token[=token|quoted-string], a bare LF). */
static int http1_chunk_strict_step(struct http1_chunked *c, unsigned char ch)
{
    if (++c->framing > HTTP1_CHUNK_FRAMING_MAX)
        return -1;
    switch (c->state) {
    case CHUNK_SIZE: /* the first byte after the digits */
    case CHUNK_EXT_NAME:
    case CHUNK_EXT_TOKEN:
    case CHUNK_EXT_QEND:
        if (c->state == CHUNK_EXT_NAME && ch == '=')
            return CHUNK_EXT_VAL0;
        if ((c->state == CHUNK_EXT_NAME || c->state == CHUNK_EXT_TOKEN) && http1_is_tchar(ch))
            return (int)c->state;
        return ch == ';' ? CHUNK_EXT_NAME0 : ch == '\r' ? CHUNK_SIZE_LF : -1;
    case CHUNK_EXT_NAME0:
        return http1_is_tchar(ch) ? CHUNK_EXT_NAME : -1;
    case CHUNK_EXT_VAL0:
        return ch == '"' ? CHUNK_EXT_QUOTED : http1_is_tchar(ch) ? CHUNK_EXT_TOKEN : -1;
    case CHUNK_EXT_QUOTED:
        return ch == '"'             ? CHUNK_EXT_QEND
               : ch == '\\'          ? CHUNK_EXT_QPAIR
               : http1_is_qdtext(ch) ? CHUNK_EXT_QUOTED
                                     : -1;
    case CHUNK_EXT_QPAIR: /* quoted-pair: HTAB, SP, VCHAR, obs-text */
        return ch == '\t' || (ch >= 0x20 && ch != 0x7f) ? CHUNK_EXT_QUOTED : -1;
    case CHUNK_SIZE_LF:
        if (ch != '\n')
            return -1;
        c->digits = 0;
        c->framing = 0;
        return c->remaining > 0 ? CHUNK_DATA : CHUNK_TRAILER;
    case CHUNK_TRAILER: /* a trailer line starts, or the empty line that ends the body */
        return ch == '\r'                              ? CHUNK_TRAILER_CR
               : ch == '\n' || ch < 0x20 || ch == 0x7f ? -1
                                                       : CHUNK_TRAILER_SKIP;
    case CHUNK_TRAILER_SKIP:
        if (ch == '\r')
            return CHUNK_TRAILER_LF;
        return (ch < 0x20 && ch != '\t') || ch == 0x7f ? -1 : CHUNK_TRAILER_SKIP;
    case CHUNK_TRAILER_LF:
        return ch == '\n' ? CHUNK_TRAILER : -1;
    default:
        return -1;
    }
}

ssize_t http1_chunked_feed(struct http1_chunked *c, const char *in, size_t len, const char **data,
                           size_t *data_len)
{
    size_t i = 0;
    *data = NULL;
    *data_len = 0;
    while (i < len) {
        char ch = in[i];
        if (c->strict && c->state != CHUNK_DATA && c->state != CHUNK_DONE &&
            c->state != CHUNK_DATA_CR && c->state != CHUNK_DATA_LF &&
            c->state != CHUNK_TRAILER_CR &&
            !(c->state == CHUNK_SIZE && hex_digit_value((unsigned char)ch) >= 0)) {
            if (c->state == CHUNK_SIZE && c->digits == 0)
                return -1;
            int next = http1_chunk_strict_step(c, (unsigned char)ch);
            if (next < 0)
                return -1;
            c->state = (unsigned)next;
            i++;
            continue;
        }
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
            else if (ch == '\n' && !c->strict)
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

int http1_chunked_in_place(struct http1_chunked *c, char *buf, size_t start, size_t *decoded,
                           size_t *len, size_t max_decoded)
{
    size_t raw = start + *decoded;
    while (raw < *len && !http1_chunked_done(c)) {
        const char *data;
        size_t data_len;
        ssize_t used = http1_chunked_feed(c, buf + raw, *len - raw, &data, &data_len);
        if (used < 0)
            return -1;
        if (*decoded + data_len > max_decoded)
            return -2;
        if (data_len > 0) /* data is NULL when the piece held only framing */
            memmove(buf + start + *decoded, data, data_len);
        *decoded += data_len;
        raw += (size_t)used;
    }
    /* The undecoded rest moves up behind the payload: framing read so far no longer takes
     * room (1-byte chunks are six times their payload), and once the body is done, pipelined
     * bytes follow it directly. */
    size_t rest = *len - raw;
    memmove(buf + start + *decoded, buf + raw, rest);
    *len = start + *decoded + rest;
    return http1_chunked_done(c) ? 1 : 0;
}

void http1_request_offsets_save(const struct http1_request *r, const char *base,
                                struct http1_request_offsets *o)
{
    o->method = (size_t)(r->method - base);
    o->target = (size_t)(r->target - base);
    for (size_t i = 0; i < r->n_headers; i++) {
        o->names[i] = (size_t)(r->headers[i].name - base);
        o->values[i] = (size_t)(r->headers[i].value - base);
    }
}

void http1_request_offsets_restore(struct http1_request *r, const char *base,
                                   const struct http1_request_offsets *o)
{
    r->method = base + o->method;
    r->target = base + o->target;
    for (size_t i = 0; i < r->n_headers; i++) {
        r->headers[i].name = base + o->names[i];
        r->headers[i].value = base + o->values[i];
    }
}
