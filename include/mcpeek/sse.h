/* sse: reads a text/event-stream as its bytes pass: counts events, and hands each event's data
 * to a callback (the response inspector parses it).
 *
 * Parsing follows the HTML "event stream interpretation": lines end in CRLF, LF or CR; a line
 * starting with ':' is a comment; `field:value` drops one space after the colon; a line without
 * a colon is a field with an empty value; a blank line dispatches the event, if it had at least
 * one `data` field (blocks with only `id:`/`event:`/`retry:` or comments are not events). The
 * data lines of an event are joined with "\n". Bytes arrive in pieces split anywhere.
 */
#ifndef MCPEEK_SSE_H
#define MCPEEK_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcpeek/strbuf.h"

/* Allocation-free event counter (what proxy.c counts `sse_events` with today). Counts what
 * struct sse_reader's `events` counts; superseded by it once the inspector is wired in. */
struct sse_counter {
    uint64_t events;
    unsigned line_len; /* bytes of the current line seen so far (capped) */
    char prefix[5];    /* the current line's first bytes, to recognise "data:" */
    bool block_has_data;
};

void sse_counter_feed(struct sse_counter *c, const char *data, size_t len);

/* Called once per dispatched event with its data (lines joined by "\n", no final newline;
 * `data` is NUL-terminated at data[len] and valid only during the call). */
typedef void (*sse_event_fn)(void *arg, const char *data, size_t len);

enum sse_line_state {
    SSE_LINE_START = 0, /* nothing of the line yet: a blank line or ':' decides */
    SSE_LINE_FIELD,     /* reading the field name */
    SSE_LINE_COMMENT,   /* a ':' line, or a field we ignore: skip to the line end */
    SSE_LINE_VALUE0,    /* just after "data:", one space may be skipped */
    SSE_LINE_VALUE,     /* inside a data value */
};

/* One stream's reader. Owns `data`; free with sse_reader_free. Memory stays at most about
 * `max_data` bytes whatever the stream sends: an event whose data would exceed it is not
 * buffered any further and not handed to the callback, only counted in `oversize`. */
struct sse_reader {
    uint64_t events;   /* events dispatched, including the oversize ones */
    uint64_t oversize; /* events dropped because their data exceeded max_data */
    size_t max_data;
    sse_event_fn on_event; /* may be NULL: then the reader only counts */
    void *arg;
    struct strbuf data; /* the current event's data so far */
    enum sse_line_state state;
    char field[5];       /* the field name's first bytes, to recognise "data" */
    unsigned field_len;  /* bytes of the field name (counting stops past 5) */
    unsigned bom_seen;   /* bytes of a leading UTF-8 BOM matched so far; 3 = done */
    bool after_cr;       /* the last byte was CR: a following LF belongs to it */
    bool event_has_data; /* a data field was seen in the current event */
    bool event_oversize; /* the current event's data passed max_data */
};

void sse_reader_init(struct sse_reader *r, size_t max_data, sse_event_fn on_event, void *arg);
/* Reads `len` more bytes of the stream; dispatches every event they complete. */
void sse_reader_feed(struct sse_reader *r, const char *bytes, size_t len);
/* Frees the buffer; a partial event at the end of the stream is dropped, as the spec says. */
void sse_reader_free(struct sse_reader *r);

#endif
