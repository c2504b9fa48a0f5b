/* diag: one JSON line per daemon event on stderr, in a single write() so lines from
 * different threads never interleave. */
#include "mcpeek/diag.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "mcpeek/strbuf.h"

/* A diagnostic longer than this is cut (still valid JSON). */
#define DIAG_MESSAGE_MAX 4096

void diag_log(const char *level, const char *fmt, ...)
{
    char msg[DIAG_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;

    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    struct strbuf sb;
    strbuf_init(&sb);
    strbuf_printf(&sb, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"msg\":",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  ts.tv_nsec / 1000000, level);
    strbuf_json_string(&sb, msg, len, len);
    strbuf_puts(&sb, "}\n");
    if (!sb.oom && write(STDERR_FILENO, sb.data, sb.len) < 0) {
        /* Nowhere left to report a failing stderr. */
    }
    strbuf_free(&sb);
}
