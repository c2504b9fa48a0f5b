/* accesslog: formats one exchange as a JSON line and hands it to the kernel in one write().
 *
 * accesslog_format() is pure: it only appends to the caller's strbuf. Absent values are
 * omitted, never written as null, and every string copied from a request goes through
 * strbuf_json_string() with the configured cap. The sink has no lock on the write path;
 * a reopen swaps the file under the same descriptor number with dup3()/dup2().
 */
#include "mcpeek/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define ACCESSLOG_FILE_MODE 0640
#define ACCESSLOG_HMAC_PREFIX "hmac-sha256:"

/* Largest batch of lines written at once to a regular file. */
#define ACCESSLOG_FILE_BATCH_MAX (64 * 1024)

struct accesslog {
    char *path;                  /* owned; NULL when writing to stdout */
    int fd;                      /* owned unless it is stdout */
    _Atomic uint64_t lines;      /* lines written, all threads */
    size_t batch_max;            /* largest write() that cannot interleave with others */
    pthread_mutex_t reopen_lock; /* serializes reopeners; writers never take it */
};

/* ---- formatting ------------------------------------------------------------------------ */

/* Writes `,"key":`; keys are compile-time constants that need no escaping. */
static void accesslog_key(struct strbuf *out, const char *key)
{
    strbuf_putc(out, ',');
    strbuf_putc(out, '"');
    strbuf_puts(out, key);
    strbuf_putc(out, '"');
    strbuf_putc(out, ':');
}

static void accesslog_str(struct strbuf *out, const char *key, const char *value, size_t cap)
{
    if (value == NULL)
        return;
    accesslog_key(out, key);
    strbuf_json_string(out, value, strlen(value), cap);
}

static void accesslog_u64(struct strbuf *out, const char *key, uint64_t value)
{
    accesslog_key(out, key);
    strbuf_put_uint(out, value, 0);
}

/* Milliseconds with exactly three decimals, independent of the C locale. Negative and
 * non-finite values are written as 0.000 (a clock stepping back must not break JSON). */
static void accesslog_ms(struct strbuf *out, const char *key, double ms)
{
    long long us = 0;

    if (ms > 0 && ms < 9.0e12) /* NaN fails both comparisons */
        us = (long long)(ms * 1000.0 + 0.5);
    accesslog_key(out, key);
    strbuf_put_uint(out, (uint64_t)(us / 1000), 0);
    strbuf_putc(out, '.');
    strbuf_put_uint(out, (uint64_t)(us % 1000), 3);
}

static void accesslog_ts(struct strbuf *out, const struct timespec *ts)
{
    struct tm tm;
    time_t sec = ts->tv_sec;
    long ms = ts->tv_nsec / 1000000;

    if (ms < 0 || ms > 999)
        ms = 0;
    if (gmtime_r(&sec, &tm) == NULL) {
        memset(&tm, 0, sizeof(tm));
        tm.tm_year = 70;
        tm.tm_mday = 1;
        ms = 0;
    }
    const struct {
        int value;
        unsigned width;
        char after;
    } parts[] = {{tm.tm_year + 1900, 4, '-'},
                 {tm.tm_mon + 1, 2, '-'},
                 {tm.tm_mday, 2, 'T'},
                 {tm.tm_hour, 2, ':'},
                 {tm.tm_min, 2, ':'},
                 {tm.tm_sec, 2, '.'},
                 {(int)ms, 3, 'Z'}};
    strbuf_putc(out, '"');
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        strbuf_put_uint(out, parts[i].value > 0 ? (uint64_t)parts[i].value : 0, parts[i].width);
        strbuf_putc(out, parts[i].after);
    }
    strbuf_putc(out, '"');
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? over the whole of s[0..len). */
static bool accesslog_is_json_number(const char *s, size_t len)
{
    size_t i = 0, d;

    if (i < len && s[i] == '-')
        i++;
    if (i < len && s[i] == '0') {
        i++;
    } else {
        for (d = i; i < len && s[i] >= '0' && s[i] <= '9'; i++)
            ;
        if (i == d || s[d] == '0')
            return false;
    }
    if (i < len && s[i] == '.') {
        for (d = ++i; i < len && s[i] >= '0' && s[i] <= '9'; i++)
            ;
        if (i == d)
            return false;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        for (d = i; i < len && s[i] >= '0' && s[i] <= '9'; i++)
            ;
        if (i == d)
            return false;
    }
    return i == len && len > 0;
}

static bool accesslog_is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A complete JSON string literal: quotes at both ends, no raw control characters or bare
 * quotes inside, only valid escapes, well-formed UTF-8. */
static bool accesslog_is_json_string(const char *s, size_t len)
{
    size_t i, end;

    if (len < 2 || s[0] != '"' || s[len - 1] != '"')
        return false;
    end = len - 1;
    for (i = 1; i < end; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"')
            return false;
        if (c != '\\')
            continue;
        if (++i >= end)
            return false;
        switch (s[i]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            break;
        case 'u':
            if (end - i <= 4 || !accesslog_is_hex(s[i + 1]) || !accesslog_is_hex(s[i + 2]) ||
                !accesslog_is_hex(s[i + 3]) || !accesslog_is_hex(s[i + 4]))
                return false;
            i += 4;
            break;
        default:
            return false;
        }
    }
    return utf8_valid(s + 1, end - 1);
}

/* The id is already JSON (from the parser); it is copied raw only when it is short and
 * provably a JSON scalar an id may be, otherwise it is quoted like any request string. */
static void accesslog_rpc_id(struct strbuf *out, const char *id, size_t cap)
{
    size_t len = strlen(id);

    accesslog_key(out, "rpc_id");
    if (len <= cap && ((len == 4 && memcmp(id, "null", 4) == 0) ||
                       accesslog_is_json_number(id, len) || accesslog_is_json_string(id, len)))
        strbuf_append(out, id, len);
    else
        strbuf_json_string(out, id, len, cap);
}

/* Writes "hmac-sha256:<hex>" for `value`; the field is left out if HMAC fails, so the raw
 * value can never leak through an error path. */
static void accesslog_pseudonym(struct strbuf *out, const char *key, const char *value,
                                const struct accesslog_options *opts)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char text[sizeof(ACCESSLOG_HMAC_PREFIX) - 1 + 2 * EVP_MAX_MD_SIZE];
    size_t n = sizeof(ACCESSLOG_HMAC_PREFIX) - 1;
    unsigned int i;

    if (opts->hmac_key_len > INT32_MAX)
        return;
    if (HMAC(EVP_sha256(), opts->hmac_key, (int)opts->hmac_key_len, (const unsigned char *)value,
             strlen(value), md, &md_len) == NULL)
        return;
    memcpy(text, ACCESSLOG_HMAC_PREFIX, n);
    for (i = 0; i < md_len; i++) {
        text[n++] = hex[md[i] >> 4];
        text[n++] = hex[md[i] & 0xf];
    }
    accesslog_key(out, key);
    strbuf_putc(out, '"');
    strbuf_append(out, text, n);
    strbuf_putc(out, '"');
}

static void accesslog_identity(struct strbuf *out, const char *key, const char *value,
                               const struct accesslog_options *opts)
{
    if (value == NULL)
        return;
    if (opts->hmac_key != NULL)
        accesslog_pseudonym(out, key, value, opts);
    else
        accesslog_str(out, key, value, opts->max_value_len);
}

/* Appends `"key":"value"` inside the location object, with the comma when not first. */
static void accesslog_loc_member(struct strbuf *out, bool *first, const char *key,
                                 const char *value, size_t cap)
{
    if (value == NULL)
        return;
    if (!*first)
        strbuf_putc(out, ',');
    *first = false;
    strbuf_putc(out, '"');
    strbuf_puts(out, key);
    strbuf_puts(out, "\":");
    strbuf_json_string(out, value, strlen(value), cap);
}

static void accesslog_location(struct strbuf *out, const struct openai_user_location *loc,
                               const struct accesslog_options *opts)
{
    bool full = opts->user_location == USER_LOCATION_FULL;
    size_t cap = opts->max_value_len;
    bool first = true;

    if (loc == NULL || opts->user_location == USER_LOCATION_OFF)
        return;
    if (loc->city == NULL && loc->region == NULL && loc->country == NULL && loc->timezone == NULL &&
        (!full || (loc->latitude == NULL && loc->longitude == NULL)))
        return; /* an empty object says nothing */
    accesslog_key(out, "openai_user_location");
    strbuf_putc(out, '{');
    accesslog_loc_member(out, &first, "city", loc->city, cap);
    accesslog_loc_member(out, &first, "region", loc->region, cap);
    accesslog_loc_member(out, &first, "country", loc->country, cap);
    accesslog_loc_member(out, &first, "timezone", loc->timezone, cap);
    if (full) {
        accesslog_loc_member(out, &first, "latitude", loc->latitude, cap);
        accesslog_loc_member(out, &first, "longitude", loc->longitude, cap);
    }
    strbuf_putc(out, '}');
}

static void accesslog_openai(struct strbuf *out, const struct exchange_record *rec,
                             const struct accesslog_options *opts)
{
    const OpenAiClientContext *ctx = NULL;
    size_t cap = opts->max_value_len;

    if (rec->rpc != NULL && rec->rpc->openai != NULL) {
        ctx = rec->rpc->openai;
    } else if (rec->session_openai != NULL) {
        ctx = rec->session_openai;
        accesslog_key(out, "openai_from");
        strbuf_puts(out, "\"session_map\"");
    }
    if (ctx == NULL)
        return;
    accesslog_str(out, "openai_session", ctx->session_id, cap);
    accesslog_identity(out, "openai_subject", ctx->subject_id, opts);
    accesslog_identity(out, "openai_org", ctx->organization_id, opts);
    accesslog_str(out, "openai_locale", ctx->locale, cap);
    accesslog_str(out, "openai_user_agent", ctx->user_agent, cap);
    accesslog_location(out, ctx->user_location, opts);
}

static void accesslog_rpc(struct strbuf *out, const struct mcp_request *rpc, size_t cap)
{
    const char *why;

    accesslog_str(out, "rpc_method", rpc->method, cap);
    if (rpc->id_json != NULL)
        accesslog_rpc_id(out, rpc->id_json, cap);
    accesslog_str(out, "tool", rpc->tool, cap);
    if (rpc->batch > 0)
        accesslog_u64(out, "batch", (uint64_t)rpc->batch);
    if (rpc->notification) {
        accesslog_key(out, "notification");
        strbuf_puts(out, "true");
    }
    if (rpc->response) {
        accesslog_key(out, "rpc_response");
        strbuf_puts(out, "true");
    }
    if (rpc->status == JSONRPC_INVALID_JSON || rpc->status == JSONRPC_INVALID_RPC) {
        why = rpc->error;
        if (why[0] == '\0')
            why = rpc->status == JSONRPC_INVALID_JSON ? "invalid JSON" : "invalid JSON-RPC";
        accesslog_key(out, "rpc_parse_error");
        strbuf_json_string(out, why, strnlen(why, sizeof(rpc->error)), cap);
    }
}

static const char *accesslog_response_name(enum response_kind kind)
{
    switch (kind) {
    case RESPONSE_EMPTY:
        return "empty";
    case RESPONSE_JSON:
        return "json";
    case RESPONSE_SSE:
        return "sse";
    case RESPONSE_OTHER:
        return "other";
    case RESPONSE_NONE:
    default:
        return NULL;
    }
}

void accesslog_format(struct strbuf *out, const struct exchange_record *rec,
                      const struct accesslog_options *opts)
{
    size_t cap = opts->max_value_len;
    const char *response = accesslog_response_name(rec->response);
    bool warn = rec->error != NULL || rec->status >= 500;

    strbuf_puts(out, "{\"ts\":");
    accesslog_ts(out, &rec->started);
    strbuf_puts(out, warn ? ",\"level\":\"warn\"" : ",\"level\":\"info\"");
    strbuf_puts(out, ",\"msg\":\"mcp\"");
    accesslog_str(out, "http_method", rec->http_method, cap);
    accesslog_str(out, "path", rec->path, cap);
    accesslog_key(out, "status");
    strbuf_put_uint(out, rec->status > 0 ? (uint64_t)rec->status : 0, 0);
    accesslog_str(out, "client_ip", rec->client_ip, cap);
    accesslog_ms(out, "duration_ms", rec->duration_ms);
    if (rec->upstream_ms >= 0) /* NaN is treated as "no upstream answer" too */
        accesslog_ms(out, "upstream_ms", rec->upstream_ms);
    accesslog_u64(out, "bytes_in", rec->bytes_in);
    accesslog_u64(out, "bytes_out", rec->bytes_out);
    accesslog_str(out, "tls", rec->tls, cap);
    accesslog_str(out, "upstream", rec->upstream, cap);
    if (rec->rpc != NULL)
        accesslog_rpc(out, rec->rpc, cap);
    accesslog_str(out, "mcp_session_id", rec->mcp_session_id, cap);
    accesslog_str(out, "mcp_protocol_version", rec->mcp_protocol_version, cap);
    if (response != NULL) {
        accesslog_key(out, "response");
        strbuf_putc(out, '"');
        strbuf_puts(out, response);
        strbuf_putc(out, '"');
    }
    if (rec->response == RESPONSE_SSE)
        accesslog_u64(out, "sse_events", rec->sse_events);
    if (rec->has_rpc_error_code) {
        accesslog_key(out, "rpc_error_code");
        strbuf_printf(out, "%lld", rec->rpc_error_code);
    }
    accesslog_str(out, "rpc_error_message", rec->rpc_error_message, cap);
    if (rec->tool_is_error)
        strbuf_puts(out, ",\"tool_is_error\":true");
    if (rec->server_requests > 0)
        accesslog_u64(out, "server_requests", rec->server_requests);
    /* written only when false: an answer too large to read is the case worth seeing */
    if (rec->response_inspected == RESPONSE_INSPECT_SKIPPED)
        strbuf_puts(out, ",\"response_inspected\":false");
    accesslog_str(out, "error", rec->error, cap);
    accesslog_str(out, "rate_limit", rec->rate_limit, cap);
    accesslog_openai(out, rec, opts);
    strbuf_puts(out, "}\n");
}

/* tool_calls: {"tool":count,...,"other":count}; "other" only when something counted there. */
static void accesslog_tool_calls(struct strbuf *out, const struct conversation_record *rec,
                                 size_t cap)
{
    accesslog_key(out, "tool_calls");
    strbuf_putc(out, '{');
    for (size_t i = 0; i < rec->n_tools; i++) {
        if (i > 0)
            strbuf_putc(out, ',');
        strbuf_json_string(out, rec->tools[i].name, strlen(rec->tools[i].name), cap);
        strbuf_putc(out, ':');
        strbuf_put_uint(out, rec->tools[i].calls, 0);
    }
    if (rec->other_tool_calls > 0) {
        if (rec->n_tools > 0)
            strbuf_putc(out, ',');
        strbuf_puts(out, "\"other\":");
        strbuf_put_uint(out, rec->other_tool_calls, 0);
    }
    strbuf_putc(out, '}');
}

void accesslog_format_conversation(struct strbuf *out, const struct conversation_record *rec,
                                   const struct timespec *now, const struct accesslog_options *opts)
{
    size_t cap = opts->max_value_len;

    strbuf_puts(out, "{\"ts\":");
    accesslog_ts(out, now);
    strbuf_puts(out, ",\"level\":\"info\",\"msg\":\"conversation\"");
    accesslog_key(out, "reason");
    strbuf_putc(out, '"');
    strbuf_puts(out, conversation_end_name(rec->reason));
    strbuf_putc(out, '"');
    accesslog_str(out, "conversation", rec->key, cap);
    accesslog_str(out, "openai_session", rec->openai_session, cap);
    accesslog_identity(out, "openai_subject", rec->openai_subject, opts);
    accesslog_identity(out, "openai_org", rec->openai_org, opts);
    accesslog_str(out, "openai_locale", rec->openai_locale, cap);
    accesslog_key(out, "first_ts");
    accesslog_ts(out, &rec->first_ts);
    accesslog_key(out, "last_ts");
    accesslog_ts(out, &rec->last_ts);
    accesslog_ms(out, "duration_ms", (double)rec->duration_ms);
    accesslog_u64(out, "requests", rec->requests);
    accesslog_tool_calls(out, rec, cap);
    accesslog_u64(out, "errors", rec->errors);
    accesslog_u64(out, "mcp_sessions", rec->mcp_sessions);
    accesslog_u64(out, "bytes_in", rec->bytes_in);
    accesslog_u64(out, "bytes_out", rec->bytes_out);
    strbuf_puts(out, "}\n");
}

/* ---- sink ------------------------------------------------------------------------------ */

static int accesslog_open_fd(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, ACCESSLOG_FILE_MODE);
}

/* A regular file takes any O_APPEND write() whole; pipes (stdout into journald, a log
 * shipper) only guarantee it up to PIPE_BUF, beyond which writers may interleave. */
static size_t accesslog_atomic_size(int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        return ACCESSLOG_FILE_BATCH_MAX;
    return PIPE_BUF;
}

size_t accesslog_batch_max(const struct accesslog *log)
{
    return log->batch_max;
}

struct accesslog *accesslog_open(const char *path)
{
    struct accesslog *log;
    int saved;

    log = calloc(1, sizeof(*log));
    if (log == NULL)
        return NULL;
    log->fd = -1;
    if (pthread_mutex_init(&log->reopen_lock, NULL) != 0) {
        free(log);
        errno = ENOMEM;
        return NULL;
    }
    atomic_init(&log->lines, 0);
    if (path == NULL || strcmp(path, "-") == 0) {
        log->fd = STDOUT_FILENO;
        log->batch_max = accesslog_atomic_size(log->fd);
        return log;
    }
    log->path = strdup(path);
    if (log->path == NULL)
        goto fail;
    log->fd = accesslog_open_fd(path);
    if (log->fd < 0)
        goto fail;
    log->batch_max = accesslog_atomic_size(log->fd);
    return log;

fail:
    saved = errno;
    free(log->path);
    pthread_mutex_destroy(&log->reopen_lock);
    free(log);
    errno = saved;
    return NULL;
}

/* One write() per line. On an O_APPEND regular file Linux writes the whole buffer at the
 * end of the file atomically with respect to other appenders; a short write only happens on
 * a full disk, RLIMIT_FSIZE or a signal, and then the rest is written after it (the line may
 * then interleave with another, but it is never lost silently). On a pipe, lines up to
 * PIPE_BUF (4096) bytes are atomic. */
int accesslog_write(struct accesslog *log, const char *line, size_t len)
{
    size_t off = 0;
    ssize_t n;

    if (len == 0 || line[len - 1] != '\n') {
        errno = EINVAL;
        return -1;
    }
    while (off < len) {
        n = write(log->fd, line + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        off += (size_t)n;
    }
    uint64_t lines = 0;
    for (const char *p = line; (p = memchr(p, '\n', (size_t)(line + len - p))) != NULL; p++)
        lines++;
    atomic_fetch_add_explicit(&log->lines, lines, memory_order_relaxed);
    return 0;
}

/* dup3()/dup2() replaces the file behind log->fd in one step: a concurrent write() either
 * still holds the old file (and finishes into it) or sees the new one, never a closed or
 * reused descriptor. dup2() would clear close-on-exec, hence dup3() where it exists. */
int accesslog_reopen(struct accesslog *log)
{
    int newfd, rc = -1, saved;

    if (log->path == NULL)
        return 0; /* stdout: nothing to reopen */
    pthread_mutex_lock(&log->reopen_lock);
    newfd = accesslog_open_fd(log->path);
    if (newfd < 0)
        goto out;
#ifdef __linux__
    if (dup3(newfd, log->fd, O_CLOEXEC) < 0)
        goto out_close;
#else
    if (dup2(newfd, log->fd) < 0)
        goto out_close;
    (void)fcntl(log->fd, F_SETFD, FD_CLOEXEC);
#endif
    rc = 0;
out_close:
    saved = errno;
    close(newfd);
    errno = saved;
out:
    pthread_mutex_unlock(&log->reopen_lock);
    return rc;
}

size_t accesslog_write_conversations(struct accesslog *log, const struct conversation_record *list,
                                     const struct timespec *now,
                                     const struct accesslog_options *opts)
{
    struct strbuf buf;
    size_t written = 0, pending = 0;

    strbuf_init(&buf);
    for (const struct conversation_record *rec = list; rec != NULL; rec = rec->next) {
        size_t before = buf.len;

        accesslog_format_conversation(&buf, rec, now, opts);
        if (buf.oom) { /* drop this line, keep the ones before it */
            buf.oom = false;
            buf.len = before;
            continue;
        }
        if (buf.len > log->batch_max && before > 0) {
            /* the earlier lines alone, so no write() exceeds what stays atomic */
            if (accesslog_write(log, buf.data, before) == 0)
                written += pending;
            memmove(buf.data, buf.data + before, buf.len - before);
            buf.len -= before;
            buf.data[buf.len] = '\0';
            pending = 0;
        }
        pending++;
    }
    if (buf.len > 0 && accesslog_write(log, buf.data, buf.len) == 0)
        written += pending;
    strbuf_free(&buf);
    return written;
}

uint64_t accesslog_lines(const struct accesslog *log)
{
    return atomic_load_explicit(&((struct accesslog *)log)->lines, memory_order_relaxed);
}

void accesslog_close(struct accesslog *log)
{
    if (log == NULL)
        return;
    if (log->path != NULL && log->fd >= 0)
        close(log->fd);
    free(log->path);
    pthread_mutex_destroy(&log->reopen_lock);
    free(log);
}
