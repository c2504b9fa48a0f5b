/* strbuf: a growable byte buffer plus the JSON string writer every log line is built with.
 *
 * Buffers are meant to be reused: strbuf_reset() keeps the allocation, so a worker that
 * formats one log line per exchange allocates only while its lines keep getting longer.
 */
#ifndef MCPEEK_STRBUF_H
#define MCPEEK_STRBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct strbuf {
    char *data; /* owned; always NUL terminated once anything was appended */
    size_t len;
    size_t cap;
    bool oom; /* an append failed; the content is truncated and must not be trusted */
};

void strbuf_init(struct strbuf *sb);
void strbuf_free(struct strbuf *sb);
void strbuf_reset(struct strbuf *sb);
void strbuf_append(struct strbuf *sb, const void *data, size_t len);
void strbuf_puts(struct strbuf *sb, const char *s);
void strbuf_putc(struct strbuf *sb, char c);
void strbuf_printf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends `v` in decimal, zero-padded to at least `width` digits (0: no padding). Cheaper than
 * printf, which is a visible share of a request's CPU when every log line has ten numbers. */
void strbuf_put_uint(struct strbuf *sb, uint64_t v, unsigned width);
/* The one decimal writer: the digits of `v` into buf (at least DECIMAL_MAX bytes, no NUL);
 * returns how many. strbuf_put_uint and the response heads of client.c use it. */
#define DECIMAL_MAX 20
size_t decimal_write(char *buf, uint64_t v);
void strbuf_vprintf(struct strbuf *sb, const char *fmt, va_list ap);

/* Appends `s` (len bytes, may hold any bytes) as a quoted JSON string. At most `max_len`
 * input bytes are written (cut on a UTF-8 boundary, then "..." is appended inside the
 * quotes so a reader sees the cut); invalid UTF-8 bytes become U+FFFD, control characters
 * are escaped. The output is always valid JSON. */
void strbuf_json_string(struct strbuf *sb, const char *s, size_t len, size_t max_len);

/* Length of the longest prefix of s[0..len) that is at most max_len bytes and does not end
 * inside a UTF-8 sequence. */
size_t utf8_prefix_len(const char *s, size_t len, size_t max_len);

/* Length of the well-formed UTF-8 sequence starting at s[0] (n > 0 bytes available, s[0]
 * >= 0x80), or 0 when it is invalid: overlong, surrogate, above U+10FFFF or truncated.
 * Follows Table 3-7 of the Unicode standard. The one UTF-8 validator of mcpeek. */
size_t utf8_seq_len(const unsigned char *s, size_t n);

/* True when s[0..len) is well-formed UTF-8: no overlong forms, surrogates, code points
 * above U+10FFFF or truncated sequences. */
bool utf8_valid(const char *s, size_t len);

#endif
