/* json_scan: validating JSON cursor that never allocates while scanning.
 *
 * Skipping a container is a loop over one byte stack of object/array bits (256 bytes for 2048
 * levels), so hostile nesting costs neither recursion nor memory: the 2049th level is an error.
 * Strings are checked as they are passed (escapes, surrogate pairs, UTF-8, control bytes) and
 * handed back raw; decoding happens later, only for the few strings a caller keeps.
 */
#include "mcpeek/json_scan.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mcpeek/hex.h"

/* Numbers up to this many bytes are converted from a stack copy; longer ones (valid JSON can
 * spell a number with a million digits) need a heap copy for strtod. */
#define JSON_SCAN_NUMBUF 64

/* 1 for the bytes a string may hold as they are: printable ASCII and DEL, except '"' and '\\'.
 * Control bytes, quote, backslash and anything >= 0x80 (checked as UTF-8) take the slow path. */
static const unsigned char json_scan_plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20: '"' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x30 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50: '\\' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x70 */
    /* 0x80..0xff: zero */
};

static int json_scan_fail(struct json_scan *sc, size_t pos, const char *why)
{
    if (!sc->error) {
        sc->error = why;
        sc->error_pos = pos;
    }
    return -1;
}

static void json_scan_ws(struct json_scan *sc)
{
    const char *s = sc->buf;
    size_t i = sc->pos;

    while (i < sc->len && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t'))
        i++;
    sc->pos = i;
}

/* The four hex digits at u[i..i+4) as a code unit, or -1. */
static long json_scan_hex4(const unsigned char *u, size_t i, size_t len)
{
    long v = 0;
    int d, k;

    if (i > len || len - i < 4)
        return -1;
    for (k = 0; k < 4; k++) {
        d = hex_digit_value(u[i + (size_t)k]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

size_t json_scan_utf8_len(const unsigned char *u, size_t avail)
{
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n, k;

    if (u[0] < 0x80)
        return 1;
    if (u[0] >= 0xc2 && u[0] <= 0xdf) {
        n = 2;
    } else if (u[0] >= 0xe0 && u[0] <= 0xef) {
        n = 3;
        if (u[0] == 0xe0)
            lo = 0xa0; /* overlong */
        else if (u[0] == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (u[0] >= 0xf0 && u[0] <= 0xf4) {
        n = 4;
        if (u[0] == 0xf0)
            lo = 0x90; /* overlong */
        else if (u[0] == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n > avail || u[1] < lo || u[1] > hi)
        return 0;
    for (k = 2; k < n; k++)
        if ((u[k] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* The string whose opening quote is at the cursor. A key may not hold U+0000: jansson refuses
 * such keys, and refusing them too keeps "is this JSON" the same answer as before. */
static int json_scan_string(struct json_scan *sc, struct json_scan_value *v, bool key)
{
    const unsigned char *u = (const unsigned char *)sc->buf;
    size_t len = sc->len, start = sc->pos + 1, i = start, n;
    bool escaped = false;
    long cp, lo;

    for (;;) {
        while (i < len && json_scan_plain[u[i]])
            i++;
        if (i >= len)
            return json_scan_fail(sc, len, "unterminated string");
        if (u[i] == '"')
            break;
        if (u[i] == '\\') {
            escaped = true;
            if (i + 1 >= len)
                return json_scan_fail(sc, len, "unterminated string");
            switch (u[i + 1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                i += 2;
                continue;
            case 'u':
                break;
            default:
                return json_scan_fail(sc, i, "invalid escape in string");
            }
            cp = json_scan_hex4(u, i + 2, len);
            if (cp < 0)
                return json_scan_fail(sc, i, "invalid \\u escape in string");
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return json_scan_fail(sc, i, "lone Unicode surrogate escape");
            if (cp >= 0xd800 && cp <= 0xdbff) {
                lo = -1;
                if (len - i >= 8 && u[i + 6] == '\\' && u[i + 7] == 'u')
                    lo = json_scan_hex4(u, i + 8, len);
                if (lo < 0xdc00 || lo > 0xdfff)
                    return json_scan_fail(sc, i, "lone Unicode surrogate escape");
                i += 6;
            }
            if (cp == 0 && key)
                return json_scan_fail(sc, i, "NUL byte in object key not supported");
            i += 6;
            continue;
        }
        if (u[i] < 0x20)
            return json_scan_fail(sc, i, "control character in string");
        n = json_scan_utf8_len(u + i, len - i);
        if (n == 0)
            return json_scan_fail(sc, i, "invalid UTF-8 in string");
        i += n;
    }
    if (v) {
        v->type = JSON_SCAN_STRING;
        v->text = sc->buf + start;
        v->len = i - start;
        v->escaped = escaped;
        v->integer = false;
    }
    sc->pos = i + 1;
    return 0;
}

static bool json_scan_isdigit(const struct json_scan *sc, size_t i)
{
    return i < sc->len && sc->buf[i] >= '0' && sc->buf[i] <= '9';
}

/* RFC 8259 number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_scan_number(struct json_scan *sc, struct json_scan_value *v)
{
    const char *s = sc->buf;
    size_t i = sc->pos;
    bool integer = true;

    if (s[i] == '-')
        i++;
    if (!json_scan_isdigit(sc, i))
        return json_scan_fail(sc, i, "invalid number");
    if (s[i] == '0') {
        i++;
        if (json_scan_isdigit(sc, i))
            return json_scan_fail(sc, i, "invalid number: leading zero");
    } else {
        while (json_scan_isdigit(sc, i))
            i++;
    }
    if (i < sc->len && s[i] == '.') {
        integer = false;
        i++;
        if (!json_scan_isdigit(sc, i))
            return json_scan_fail(sc, i, "invalid number: no digit after '.'");
        while (json_scan_isdigit(sc, i))
            i++;
    }
    if (i < sc->len && (s[i] == 'e' || s[i] == 'E')) {
        integer = false;
        i++;
        if (i < sc->len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (!json_scan_isdigit(sc, i))
            return json_scan_fail(sc, i, "invalid number: no digit in exponent");
        while (json_scan_isdigit(sc, i))
            i++;
    }
    if (v) {
        v->type = JSON_SCAN_NUMBER;
        v->text = s + sc->pos;
        v->len = i - sc->pos;
        v->escaped = false;
        v->integer = integer;
    }
    sc->pos = i;
    return 0;
}

static int json_scan_literal(struct json_scan *sc, enum json_scan_type t, struct json_scan_value *v)
{
    const char *word = t == JSON_SCAN_TRUE ? "true" : t == JSON_SCAN_FALSE ? "false" : "null";
    size_t n = strlen(word);

    if (sc->len - sc->pos < n || memcmp(sc->buf + sc->pos, word, n) != 0)
        return json_scan_fail(sc, sc->pos, "invalid literal");
    if (v) {
        memset(v, 0, sizeof(*v));
        v->type = t;
        v->text = sc->buf + sc->pos;
        v->len = n;
    }
    sc->pos += n;
    return 0;
}

void json_scan_init(struct json_scan *sc, const char *buf, size_t len)
{
    memset(sc, 0, sizeof(*sc));
    sc->buf = buf;
    sc->len = buf ? len : 0;
}

enum json_scan_type json_scan_peek(struct json_scan *sc)
{
    if (sc->error)
        return JSON_SCAN_NONE;
    json_scan_ws(sc);
    if (sc->pos >= sc->len) {
        json_scan_fail(sc, sc->pos, "unexpected end of input");
        return JSON_SCAN_NONE;
    }
    switch (sc->buf[sc->pos]) {
    case '{':
        return JSON_SCAN_OBJECT;
    case '[':
        return JSON_SCAN_ARRAY;
    case '"':
        return JSON_SCAN_STRING;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        return JSON_SCAN_NUMBER;
    case 't':
        return JSON_SCAN_TRUE;
    case 'f':
        return JSON_SCAN_FALSE;
    case 'n':
        return JSON_SCAN_NULL;
    default:
        json_scan_fail(sc, sc->pos, "unexpected character");
        return JSON_SCAN_NONE;
    }
}

/* A value of type t (not a container) at the cursor. */
static int json_scan_scalar(struct json_scan *sc, enum json_scan_type t, struct json_scan_value *v)
{
    if (sc->depth >= JSON_SCAN_MAX_DEPTH)
        return json_scan_fail(sc, sc->pos, "maximum parsing depth reached");
    if (t == JSON_SCAN_STRING)
        return json_scan_string(sc, v, false);
    if (t == JSON_SCAN_NUMBER)
        return json_scan_number(sc, v);
    return json_scan_literal(sc, t, v);
}

/* An object key, the ':' after it and the whitespace before the value. */
static int json_scan_key(struct json_scan *sc, struct json_scan_value *key)
{
    json_scan_ws(sc);
    if (sc->pos >= sc->len)
        return json_scan_fail(sc, sc->pos, "unexpected end of input");
    if (sc->buf[sc->pos] != '"')
        return json_scan_fail(sc, sc->pos, "expected a string key");
    if (json_scan_string(sc, key, true) < 0)
        return -1;
    json_scan_ws(sc);
    if (sc->pos >= sc->len)
        return json_scan_fail(sc, sc->pos, "unexpected end of input");
    if (sc->buf[sc->pos] != ':')
        return json_scan_fail(sc, sc->pos, "expected ':' after a key");
    sc->pos++;
    return 0;
}

/* Skips the container at the cursor. Bit d of `objects` says whether the container at depth
 * d + 1 is an object; only levels opened here are read. */
static int json_scan_skip_container(struct json_scan *sc)
{
    unsigned char objects[JSON_SCAN_MAX_DEPTH / 8];
    unsigned base = sc->depth, d;
    enum json_scan_type t;
    bool is_obj;
    char c;

    for (;;) {
        /* A value starts at the cursor. */
        t = json_scan_peek(sc);
        if (t == JSON_SCAN_NONE)
            return -1;
        if (t == JSON_SCAN_OBJECT || t == JSON_SCAN_ARRAY) {
            if (sc->depth >= JSON_SCAN_MAX_DEPTH)
                return json_scan_fail(sc, sc->pos, "maximum parsing depth reached");
            d = sc->depth++;
            is_obj = t == JSON_SCAN_OBJECT;
            if (is_obj)
                objects[d / 8] |= (unsigned char)(1u << (d % 8));
            else
                objects[d / 8] &= (unsigned char)~(1u << (d % 8));
            sc->pos++;
            json_scan_ws(sc);
            if (sc->pos < sc->len && sc->buf[sc->pos] == (is_obj ? '}' : ']')) {
                sc->pos++;
                sc->depth--;
            } else {
                if (is_obj && json_scan_key(sc, NULL) < 0)
                    return -1;
                continue;
            }
        } else if (json_scan_scalar(sc, t, NULL) < 0) {
            return -1;
        }

        /* After a value: close containers until one has a next item. */
        for (;;) {
            if (sc->depth == base)
                return 0;
            d = sc->depth - 1;
            is_obj = (objects[d / 8] >> (d % 8)) & 1u;
            json_scan_ws(sc);
            if (sc->pos >= sc->len)
                return json_scan_fail(sc, sc->pos, "unexpected end of input");
            c = sc->buf[sc->pos];
            if (c == ',') {
                sc->pos++;
                if (is_obj && json_scan_key(sc, NULL) < 0)
                    return -1;
                break;
            }
            if (c != (is_obj ? '}' : ']'))
                return json_scan_fail(sc, sc->pos,
                                      is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
            sc->pos++;
            sc->depth--;
        }
    }
}

int json_scan_value(struct json_scan *sc, struct json_scan_value *v)
{
    enum json_scan_type t = json_scan_peek(sc);
    size_t start = sc->pos;

    if (t == JSON_SCAN_NONE)
        return -1;
    if (t != JSON_SCAN_OBJECT && t != JSON_SCAN_ARRAY)
        return json_scan_scalar(sc, t, v);
    if (json_scan_skip_container(sc) < 0)
        return -1;
    if (v) {
        memset(v, 0, sizeof(*v));
        v->type = t;
        v->text = sc->buf + start;
        v->len = sc->pos - start;
    }
    return 0;
}

int json_scan_enter(struct json_scan *sc)
{
    enum json_scan_type t = json_scan_peek(sc);

    if (t == JSON_SCAN_NONE)
        return -1;
    if (t != JSON_SCAN_OBJECT && t != JSON_SCAN_ARRAY)
        return json_scan_fail(sc, sc->pos, "expected an object or an array");
    if (sc->depth >= JSON_SCAN_MAX_DEPTH)
        return json_scan_fail(sc, sc->pos, "maximum parsing depth reached");
    sc->pos++;
    sc->depth++;
    sc->fresh = true;
    return 0;
}

/* Shared by json_scan_member and json_scan_element: 0 at the closer, 1 at a next item. */
static int json_scan_next(struct json_scan *sc, char closer, const char *expected)
{
    bool fresh = sc->fresh;

    if (sc->error)
        return -1;
    sc->fresh = false;
    json_scan_ws(sc);
    if (sc->pos >= sc->len)
        return json_scan_fail(sc, sc->pos, "unexpected end of input");
    if (sc->buf[sc->pos] == closer) {
        sc->pos++;
        sc->depth--;
        return 0;
    }
    if (!fresh) {
        if (sc->buf[sc->pos] != ',')
            return json_scan_fail(sc, sc->pos, expected);
        sc->pos++;
    }
    return 1;
}

int json_scan_member(struct json_scan *sc, struct json_scan_value *key)
{
    int r = json_scan_next(sc, '}', "expected ',' or '}'");

    if (r <= 0)
        return r;
    return json_scan_key(sc, key) < 0 ? -1 : 1;
}

int json_scan_element(struct json_scan *sc)
{
    return json_scan_next(sc, ']', "expected ',' or ']'");
}

int json_scan_end(struct json_scan *sc)
{
    if (sc->error)
        return -1;
    json_scan_ws(sc);
    if (sc->pos < sc->len)
        return json_scan_fail(sc, sc->pos, "unexpected data after the value");
    return 0;
}

void json_scan_where(const struct json_scan *sc, size_t *line, size_t *column)
{
    size_t i, l = 1, line_start = 0, end = sc->error_pos < sc->len ? sc->error_pos : sc->len;

    for (i = 0; i < end; i++) {
        if (sc->buf[i] == '\n') {
            l++;
            line_start = i + 1;
        }
    }
    *line = l;
    *column = sc->error_pos - line_start + 1;
}

/* Decodes one character of a validated string at *p into out (up to 4 bytes), advances *p and
 * returns the byte count. */
static size_t json_scan_char(const unsigned char **p, unsigned char out[4], unsigned flags)
{
    const unsigned char *u = *p;
    unsigned long cp;
    size_t n;

    if (u[0] != '\\') {
        n = u[0] < 0x80 ? 1 : u[0] < 0xe0 ? 2 : u[0] < 0xf0 ? 3 : 4;
        memcpy(out, u, n);
        *p += n;
        return n;
    }
    *p += 2;
    switch (u[1]) {
    case 'b':
        out[0] = '\b';
        return 1;
    case 'f':
        out[0] = '\f';
        return 1;
    case 'n':
        out[0] = '\n';
        return 1;
    case 'r':
        out[0] = '\r';
        return 1;
    case 't':
        out[0] = '\t';
        return 1;
    case 'u':
        break;
    default: /* '"', '\\', '/' */
        out[0] = u[1];
        return 1;
    }
    cp = (unsigned long)json_scan_hex4(u, 2, 6);
    *p += 4;
    if (cp >= 0xd800 && cp <= 0xdbff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + ((unsigned long)json_scan_hex4(u, 8, 12) - 0xdc00);
        *p += 6;
    }
    if (cp == 0 && (flags & JSON_SCAN_NUL_AS_FFFD))
        cp = 0xfffd;
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

bool json_scan_string_eq(const struct json_scan_value *s, const char *lit, size_t litlen)
{
    const unsigned char *p, *end, *l = (const unsigned char *)lit;
    unsigned char ch[4];
    size_t n;

    if (s->type != JSON_SCAN_STRING)
        return false;
    if (!s->escaped)
        return s->len == litlen && memcmp(s->text, lit, litlen) == 0;
    if (s->len < litlen) /* decoding never makes a string longer */
        return false;
    p = (const unsigned char *)s->text;
    end = p + s->len;
    while (p < end) {
        n = json_scan_char(&p, ch, 0);
        if (n > litlen || memcmp(ch, l, n) != 0)
            return false;
        l += n;
        litlen -= n;
    }
    return litlen == 0;
}

size_t json_scan_decode(const struct json_scan_value *s, char *buf, size_t cap, unsigned flags)
{
    const unsigned char *p, *next, *end;
    unsigned char ch[4];
    size_t n, o = 0;

    if (s->type != JSON_SCAN_STRING)
        return 0;
    p = (const unsigned char *)s->text;
    end = p + s->len;
    if (!s->escaped) { /* raw bytes are valid UTF-8 already: only the cut needs care */
        n = s->len < cap ? s->len : cap;
        while (n < s->len && n > 0 && (p[n] & 0xc0) == 0x80)
            n--;
        if (buf)
            memcpy(buf, p, n);
        return n;
    }
    while (p < end) {
        next = p;
        n = json_scan_char(&next, ch, flags);
        if (n > cap - o)
            break;
        if (buf)
            memcpy(buf + o, ch, n);
        o += n;
        p = next;
    }
    return o;
}

char *json_scan_strdup(const struct json_scan_value *s, size_t max_len)
{
    size_t cap, n;
    char *copy;

    if (s->type != JSON_SCAN_STRING)
        return NULL;
    /* Decoding never grows a string: an escape is longer than what it stands for, and a
     * U+0000 written as U+FFFD takes 3 of its 6 bytes. */
    cap = s->len < max_len ? s->len : max_len;
    copy = malloc(cap + 1);
    if (!copy)
        return NULL;
    n = json_scan_decode(s, copy, cap, JSON_SCAN_NUL_AS_FFFD);
    copy[n] = '\0';
    return copy;
}

int json_scan_int64(const struct json_scan_value *n, long long *out)
{
    const char *p, *end;
    unsigned long long acc = 0, limit;
    unsigned d;
    bool neg;

    if (n->type != JSON_SCAN_NUMBER || !n->integer)
        return -1;
    p = n->text;
    end = p + n->len;
    neg = *p == '-';
    if (neg)
        p++;
    limit = neg ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)LLONG_MAX;
    for (; p < end; p++) {
        d = (unsigned)(*p - '0');
        if (acc > (limit - d) / 10)
            return -1;
        acc = acc * 10 + d;
    }
    if (!neg)
        *out = (long long)acc;
    else if (acc == (unsigned long long)LLONG_MAX + 1)
        *out = LLONG_MIN;
    else
        *out = -(long long)acc;
    return 0;
}

int json_scan_double(const struct json_scan_value *n, double *out)
{
    char small[JSON_SCAN_NUMBUF], *text = small;
    double v;

    if (n->type != JSON_SCAN_NUMBER)
        return -1;
    if (n->len >= sizeof(small)) {
        text = malloc(n->len + 1);
        if (!text)
            return -1;
    }
    memcpy(text, n->text, n->len);
    text[n->len] = '\0';
    v = strtod(text, NULL);
    if (text != small)
        free(text);
    if (isinf(v))
        return -1;
    *out = v;
    return 0;
}
