/* json_scan: a non-allocating, single-pass JSON (RFC 8259) cursor over a byte buffer.
 *
 * The caller walks the values it cares about (enter an object, look at each key, read a scalar)
 * and skips the rest; skipping validates too, so a walk that reaches json_scan_end() without an
 * error has checked the whole text: grammar, UTF-8, escapes and a nesting cap of 2048 (as jansson,
 * counting the scalar itself). Nothing is allocated while scanning and nesting is tracked without
 * recursion. Strings and numbers come back as spans into the buffer; decode them afterwards.
 */
#ifndef MCPEEK_JSON_SCAN_H
#define MCPEEK_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* The deepest a value may sit: 2048 nested arrays are fine, a scalar inside them is one too many
 * (jansson's JSON_PARSER_MAX_DEPTH, counted the same way). */
#define JSON_SCAN_MAX_DEPTH 2048

enum json_scan_type {
    JSON_SCAN_NONE = 0, /* absent, or the scanner has failed */
    JSON_SCAN_OBJECT,
    JSON_SCAN_ARRAY,
    JSON_SCAN_STRING,
    JSON_SCAN_NUMBER,
    JSON_SCAN_TRUE,
    JSON_SCAN_FALSE,
    JSON_SCAN_NULL,
};

/* The cursor. Errors are sticky: after the first one every call fails and `error` / `error_pos`
 * keep saying what and where (a static, printable ASCII reason and a byte offset). */
struct json_scan {
    const char *buf;
    size_t len;
    size_t pos;
    unsigned depth;    /* containers open at the cursor */
    bool fresh;        /* just entered a container: no ',' expected before the next item */
    const char *error; /* NULL while all is well */
    size_t error_pos;
};

/* One value as it appears in the buffer; a zeroed struct means "absent". For a string `text` is
 * the raw content between the quotes (escapes not decoded); for a container it is the whole
 * container text. */
struct json_scan_value {
    enum json_scan_type type;
    const char *text;
    size_t len;
    bool escaped; /* string: has at least one backslash escape */
    bool integer; /* number: no fraction and no exponent */
};

/* Flag for json_scan_decode: write each decoded U+0000 as U+FFFD (EF BF BD). */
#define JSON_SCAN_NUL_AS_FFFD 1u

void json_scan_init(struct json_scan *sc, const char *buf, size_t len);

/* Skips whitespace and tells the type of the value at the cursor without consuming it;
 * JSON_SCAN_NONE (with the error set) when no value can start there. */
enum json_scan_type json_scan_peek(struct json_scan *sc);

/* Consumes the value at the cursor, validating all of it; `v` (may be NULL) describes it.
 * Returns 0, or -1 on invalid JSON. */
int json_scan_value(struct json_scan *sc, struct json_scan_value *v);

/* Consumes the '{' or '[' at the cursor (see json_scan_peek). Returns 0 or -1. */
int json_scan_enter(struct json_scan *sc);

/* Inside an entered object: 1 with `key` set and the cursor on the member's value (which the
 * caller must consume), 0 when the closing '}' was consumed, -1 on invalid JSON. Keys holding
 * \u0000 are refused, as jansson does. */
int json_scan_member(struct json_scan *sc, struct json_scan_value *key);

/* Inside an entered array: 1 with the cursor on the next element (which the caller must
 * consume), 0 when the closing ']' was consumed, -1 on invalid JSON. */
int json_scan_element(struct json_scan *sc);

/* After the top-level value: only whitespace may follow. Returns 0 or -1. */
int json_scan_end(struct json_scan *sc);

/* 1-based line and column (in bytes) of the error position; for messages. */
void json_scan_where(const struct json_scan *sc, size_t *line, size_t *column);

/* True when the string `s` decodes to exactly lit[0..len) (which may hold NULs). */
bool json_scan_string_eq(const struct json_scan_value *s, const char *lit, size_t len);

/* json_scan_string_eq with a C string; inline so strlen of a literal costs nothing. */
static inline bool json_scan_string_is(const struct json_scan_value *s, const char *lit)
{
    return json_scan_string_eq(s, lit, strlen(lit));
}

/* Decodes the string `s` into buf, whole characters only, at most `cap` bytes (buf may be NULL
 * to measure). Returns the bytes written. Never longer than s->len. */
size_t json_scan_decode(const struct json_scan_value *s, char *buf, size_t cap, unsigned flags);

/* Heap copy of the decoded string, NUL terminated, U+0000 written as U+FFFD, cut to at most
 * `max_len` bytes on a character boundary. NULL on allocation failure or if not a string. */
char *json_scan_strdup(const struct json_scan_value *s, size_t max_len);

/* The integer value of a number without fraction or exponent that fits a long long.
 * Returns 0, or -1 (not an integer, or out of range). */
int json_scan_int64(const struct json_scan_value *n, long long *out);

/* strtod of the number's text: 0, or -1 when it is not a number, overflows to an infinity or
 * memory runs out (texts over 63 bytes need a temporary copy). Underflow reads as 0 or a
 * denormal, as jansson does. */
int json_scan_double(const struct json_scan_value *n, double *out);

/* Bytes of the well-formed UTF-8 sequence at u[0] (avail > 0 bytes readable), or 0 when it is
 * malformed or truncated: overlong forms, surrogates and code points above U+10FFFF are refused
 * (RFC 3629, as jansson). */
size_t json_scan_utf8_len(const unsigned char *u, size_t avail);

#endif
