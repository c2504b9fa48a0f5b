/* diag: the daemon's own diagnostics (startup, reload, errors) as JSON lines on stderr,
 * kept apart from the access log so operators can route them separately. */
#ifndef MCPEEK_DIAG_H
#define MCPEEK_DIAG_H

/* Writes {"ts":...,"level":level,"msg":<formatted>} plus newline in one write(). */
void diag_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
