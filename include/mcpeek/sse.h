/* sse: counts the events of a text/event-stream as its bytes pass, for the log line.
 *
 * An event is a block of lines ended by a blank line that carries at least one `data:`
 * field (what an EventSource would dispatch); comment blocks (`: keep-alive`) and blocks
 * with only `id:`/`retry:` are not events. Works on arbitrary chunk boundaries, CRLF or LF.
 */
#ifndef MCPEEK_SSE_H
#define MCPEEK_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sse_counter {
    uint64_t events;
    unsigned line_len; /* bytes of the current line seen so far (capped) */
    char prefix[5];    /* the current line's first bytes, to recognise "data:" */
    bool block_has_data;
};

void sse_counter_feed(struct sse_counter *c, const char *data, size_t len);

#endif
