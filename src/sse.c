/* sse: event counting and event reading over a byte stream, one pass.
 *
 * The reader is a small state machine over lines (enum sse_line_state); only the current
 * event's data is kept, never a whole line of another field, so a hostile stream of endless
 * comments or `id:` lines costs no memory.
 */
#include "mcpeek/sse.h"

#include <string.h>

void sse_counter_feed(struct sse_counter *c, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char ch = data[i];
        if (ch == '\r')
            continue; /* CRLF and LF end lines alike; a lone CR is rare enough to ignore */
        if (ch == '\n') {
            if (c->line_len == 0) {
                if (c->block_has_data)
                    c->events++;
                c->block_has_data = false;
            } else if (c->line_len >= 5 && memcmp(c->prefix, "data:", 5) == 0) {
                c->block_has_data = true;
            }
            c->line_len = 0;
            continue;
        }
        if (c->line_len < sizeof(c->prefix))
            c->prefix[c->line_len] = ch;
        if (c->line_len < sizeof(c->prefix) + 1)
            c->line_len++;
    }
}

static const char sse_bom[3] = {'\xEF', '\xBB', '\xBF'};

void sse_reader_init(struct sse_reader *r, size_t max_data, sse_event_fn on_event, void *arg)
{
    memset(r, 0, sizeof(*r));
    strbuf_init(&r->data);
    r->max_data = max_data;
    r->on_event = on_event;
    r->arg = arg;
}

void sse_reader_free(struct sse_reader *r)
{
    strbuf_free(&r->data);
}

static bool sse_field_is_data(const struct sse_reader *r)
{
    return r->field_len == 4 && memcmp(r->field, "data", 4) == 0;
}

/* Appends value bytes of a data field, or drops the event once it passes the cap. */
static void sse_data_append(struct sse_reader *r, const char *s, size_t n)
{
    if (r->event_oversize || n == 0)
        return;
    if (n > r->max_data - r->data.len) {
        r->event_oversize = true;
        strbuf_reset(&r->data);
        return;
    }
    strbuf_append(&r->data, s, n);
}

/* A data field starts: the lines of one event are joined with "\n". */
static void sse_data_begin(struct sse_reader *r)
{
    if (r->event_has_data)
        sse_data_append(r, "\n", 1);
    r->event_has_data = true;
}

static void sse_dispatch(struct sse_reader *r)
{
    if (r->event_has_data) {
        r->events++;
        if (r->event_oversize || r->data.oom)
            r->oversize++;
        else if (r->on_event)
            r->on_event(r->arg, r->data.data ? r->data.data : "", r->data.len);
    }
    strbuf_reset(&r->data);
    r->data.oom = false;
    r->event_has_data = false;
    r->event_oversize = false;
}

static void sse_line_end(struct sse_reader *r)
{
    switch (r->state) {
    case SSE_LINE_START:
        sse_dispatch(r);
        break;
    case SSE_LINE_FIELD: /* a field without a colon has an empty value */
        if (sse_field_is_data(r))
            sse_data_begin(r);
        break;
    default:
        break;
    }
    r->state = SSE_LINE_START;
    r->field_len = 0;
}

/* Consumes bytes from `s` (n > 0) in the current state; returns how many. */
static size_t sse_reader_step(struct sse_reader *r, const char *s, size_t n)
{
    char ch = s[0];

    if (r->after_cr) {
        r->after_cr = false;
        if (ch == '\n')
            return 1; /* the LF of a CRLF: the line already ended at the CR */
    }
    if (ch == '\r' || ch == '\n') {
        r->after_cr = ch == '\r';
        sse_line_end(r);
        return 1;
    }
    switch (r->state) {
    case SSE_LINE_START:
        if (ch == ':') {
            r->state = SSE_LINE_COMMENT;
            return 1;
        }
        r->state = SSE_LINE_FIELD;
        /* fall through */
    case SSE_LINE_FIELD:
        if (ch == ':') {
            if (sse_field_is_data(r)) {
                sse_data_begin(r);
                r->state = SSE_LINE_VALUE0;
            } else {
                r->state = SSE_LINE_COMMENT; /* event, id, retry, unknown: not needed */
            }
        } else {
            if (r->field_len < sizeof(r->field))
                r->field[r->field_len] = ch;
            if (r->field_len <= sizeof(r->field))
                r->field_len++;
        }
        return 1;
    case SSE_LINE_VALUE0:
        r->state = SSE_LINE_VALUE;
        if (ch == ' ')
            return 1;
        /* fall through */
    case SSE_LINE_VALUE:
    case SSE_LINE_COMMENT: {
        /* the common case: a long run up to the line end, taken at once */
        size_t run = 0;
        while (run < n && s[run] != '\r' && s[run] != '\n')
            run++;
        if (r->state == SSE_LINE_VALUE)
            sse_data_append(r, s, run);
        return run;
    }
    }
    return 1;
}

static void sse_reader_run(struct sse_reader *r, const char *s, size_t n)
{
    while (n > 0) {
        size_t used = sse_reader_step(r, s, n);
        s += used;
        n -= used;
    }
}

void sse_reader_feed(struct sse_reader *r, const char *bytes, size_t len)
{
    /* One leading byte order mark is ignored; a partial one was stream content after all. */
    while (r->bom_seen < sizeof(sse_bom) && len > 0) {
        if (bytes[0] != sse_bom[r->bom_seen]) {
            unsigned matched = r->bom_seen;
            r->bom_seen = sizeof(sse_bom);
            sse_reader_run(r, sse_bom, matched);
            break;
        }
        r->bom_seen++;
        bytes++;
        len--;
    }
    sse_reader_run(r, bytes, len);
}
