/* strbuf: growable byte buffer and the JSON string writer the access log is built with.
 *
 * Growth doubles the capacity; an allocation failure sets `oom` and every later append is
 * dropped, so callers check once at the end instead of after every append. The JSON writer
 * validates UTF-8 strictly and copies runs of safe bytes with one memcpy.
 */
#include "mcpeek/strbuf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRBUF_MIN_CAP 64

static const char strbuf_hex[] = "0123456789abcdef";

void strbuf_init(struct strbuf *sb)
{
    sb->data = NULL;
    sb->len = 0;
    sb->cap = 0;
    sb->oom = false;
}

void strbuf_free(struct strbuf *sb)
{
    free(sb->data);
    strbuf_init(sb);
}

void strbuf_reset(struct strbuf *sb)
{
    sb->len = 0;
    sb->oom = false;
    if (sb->data != NULL)
        sb->data[0] = '\0';
}

/* Makes room for `extra` more bytes plus the terminating NUL. 0, or -1 with oom set. */
static int strbuf_reserve(struct strbuf *sb, size_t extra)
{
    size_t need, cap;
    char *data;

    if (sb->oom)
        return -1;
    if (extra > SIZE_MAX - sb->len - 1)
        goto fail;
    need = sb->len + extra + 1;
    if (need <= sb->cap)
        return 0;
    cap = sb->cap < STRBUF_MIN_CAP ? STRBUF_MIN_CAP : sb->cap;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    data = realloc(sb->data, cap);
    if (data == NULL)
        goto fail;
    sb->data = data;
    sb->cap = cap;
    return 0;

fail:
    sb->oom = true;
    return -1;
}

void strbuf_append(struct strbuf *sb, const void *data, size_t len)
{
    if (strbuf_reserve(sb, len) < 0)
        return;
    if (len > 0)
        memcpy(sb->data + sb->len, data, len);
    sb->len += len;
    sb->data[sb->len] = '\0';
}

void strbuf_puts(struct strbuf *sb, const char *s)
{
    strbuf_append(sb, s, strlen(s));
}

void strbuf_putc(struct strbuf *sb, char c)
{
    if (strbuf_reserve(sb, 1) < 0)
        return;
    sb->data[sb->len++] = c;
    sb->data[sb->len] = '\0';
}

void strbuf_vprintf(struct strbuf *sb, const char *fmt, va_list ap)
{
    va_list ap2;
    size_t room;
    int n;

    /* First try in the room we already have; most log fragments fit. */
    if (strbuf_reserve(sb, 32) < 0)
        return;
    room = sb->cap - sb->len;
    va_copy(ap2, ap);
    n = vsnprintf(sb->data + sb->len, room, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        sb->data[sb->len] = '\0';
        sb->oom = true;
        return;
    }
    if ((size_t)n >= room) {
        if (strbuf_reserve(sb, (size_t)n) < 0) {
            sb->data[sb->len] = '\0';
            return;
        }
        va_copy(ap2, ap);
        n = vsnprintf(sb->data + sb->len, sb->cap - sb->len, fmt, ap2);
        va_end(ap2);
        if (n < 0) {
            sb->data[sb->len] = '\0';
            sb->oom = true;
            return;
        }
    }
    sb->len += (size_t)n;
}

size_t decimal_write(char *buf, uint64_t v)
{
    char tmp[DECIMAL_MAX];
    size_t n = sizeof(tmp);
    do
        tmp[--n] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    memcpy(buf, tmp + n, sizeof(tmp) - n);
    return sizeof(tmp) - n;
}

void strbuf_put_uint(struct strbuf *sb, uint64_t v, unsigned width)
{
    char buf[2 * DECIMAL_MAX];
    size_t start = DECIMAL_MAX, n = decimal_write(buf + DECIMAL_MAX, v);
    while (start > 0 && DECIMAL_MAX - start + n < width)
        buf[--start] = '0';
    strbuf_append(sb, buf + start, DECIMAL_MAX - start + n);
}

void strbuf_printf(struct strbuf *sb, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    strbuf_vprintf(sb, fmt, ap);
    va_end(ap);
}

size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xbf;
    size_t want, i;

    if (c >= 0xc2 && c <= 0xdf) {
        want = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        want = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        want = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0; /* continuation byte, C0/C1 overlong lead, or F5..FF */
    }
    if (n < want)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < want; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return want;
}

size_t utf8_prefix_len(const char *s, size_t len, size_t max_len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t k, need;

    if (len <= max_len)
        return len;
    if (max_len == 0 || (u[max_len] & 0xc0) != 0x80)
        return max_len; /* the first excluded byte starts a new character */
    /* s[max_len] is a continuation byte: find the lead byte it may belong to. */
    k = max_len;
    while (k > 0 && max_len - k < 3 && (u[k - 1] & 0xc0) == 0x80)
        k--;
    if (k == 0)
        return max_len;
    k--;
    if (u[k] >= 0xc0 && u[k] <= 0xdf)
        need = 2;
    else if (u[k] >= 0xe0 && u[k] <= 0xef)
        need = 3;
    else if (u[k] >= 0xf0 && u[k] <= 0xf7)
        need = 4;
    else
        return max_len; /* stray continuation bytes: each is its own (invalid) unit */
    return k + need > max_len ? k : max_len;
}

/* Bytes that go into a JSON string as they are: printable ASCII except '"' and '\\'. */
static inline bool strbuf_json_safe(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

static void strbuf_json_escape(struct strbuf *sb, unsigned char c)
{
    char esc[6];

    switch (c) {
    case '"':
        strbuf_append(sb, "\\\"", 2);
        return;
    case '\\':
        strbuf_append(sb, "\\\\", 2);
        return;
    case '\n':
        strbuf_append(sb, "\\n", 2);
        return;
    case '\r':
        strbuf_append(sb, "\\r", 2);
        return;
    case '\t':
        strbuf_append(sb, "\\t", 2);
        return;
    case '\b':
        strbuf_append(sb, "\\b", 2);
        return;
    case '\f':
        strbuf_append(sb, "\\f", 2);
        return;
    default:
        esc[0] = '\\';
        esc[1] = 'u';
        esc[2] = '0';
        esc[3] = '0';
        esc[4] = strbuf_hex[c >> 4];
        esc[5] = strbuf_hex[c & 0xf];
        strbuf_append(sb, esc, sizeof(esc));
        return;
    }
}

void strbuf_json_string(struct strbuf *sb, const char *s, size_t len, size_t max_len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n, i, run, k;
    bool cut;

    if (s == NULL)
        len = 0;
    n = utf8_prefix_len(s, len, max_len);
    cut = n < len;
    /* Most strings need no escaping: reserve once for the common case. */
    if (strbuf_reserve(sb, n + 5) < 0)
        return;
    strbuf_putc(sb, '"');
    i = 0;
    while (i < n) {
        run = i;
        while (i < n) {
            if (u[i] < 0x80) {
                if (!strbuf_json_safe(u[i]))
                    break;
                i++;
            } else {
                k = utf8_seq_len(u + i, n - i);
                if (k == 0)
                    break;
                i += k;
            }
        }
        if (i > run)
            strbuf_append(sb, u + run, i - run);
        if (i >= n)
            break;
        if (u[i] < 0x80)
            strbuf_json_escape(sb, u[i]);
        else
            strbuf_append(sb, "\xef\xbf\xbd", 3); /* U+FFFD for each invalid byte */
        i++;
    }
    if (cut)
        strbuf_append(sb, "...", 3);
    strbuf_putc(sb, '"');
}

bool utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k;

    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        k = utf8_seq_len(u + i, len - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}
