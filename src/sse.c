/* sse: event counting over a byte stream, one pass, no allocation. */
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
