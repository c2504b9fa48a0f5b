/* accesslog: one JSON object per line per exchange, written with a single write().
 *
 * Formatting (accesslog_format) is pure and per worker; the sink (struct accesslog) is the
 * one object every worker shares. A line is always handed to the kernel in one write() on
 * an O_APPEND descriptor, so concurrent workers never interleave inside a line, and a
 * reopen (logrotate) swaps the descriptor with dup2() so no writer ever sees it closed.
 */
#ifndef MCPEEK_ACCESSLOG_H
#define MCPEEK_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mcpeek/conversation.h"
#include "mcpeek/jsonrpc.h"
#include "mcpeek/strbuf.h"

enum user_location_policy {
    USER_LOCATION_OFF = 0, /* never logged */
    USER_LOCATION_COARSE,  /* city, region, country, timezone (default) */
    USER_LOCATION_FULL,    /* coarse plus latitude and longitude */
};

enum response_kind {
    RESPONSE_NONE = 0, /* no response was relayed (client left, upstream failed early) */
    RESPONSE_EMPTY,    /* a response without a body (202, 204, HEAD, ...) */
    RESPONSE_JSON,     /* application/json */
    RESPONSE_SSE,      /* text/event-stream */
    RESPONSE_OTHER,    /* any other content type (HTML error page, ...) */
};

/* Whether the answer was read for the log (response_inspect.c). */
enum response_inspection {
    RESPONSE_INSPECT_NONE = 0, /* not read: no JSON or SSE body, or no inspector ran */
    RESPONSE_INSPECT_DONE,     /* every byte was read */
    RESPONSE_INSPECT_SKIPPED,  /* the JSON answer, or an SSE event, passed response_inspect_max */
};

/* What one exchange did. Pointers are borrowed for the duration of accesslog_format(). */
struct exchange_record {
    struct timespec started; /* CLOCK_REALTIME when the request headers were complete */
    double duration_ms;      /* request complete -> last byte relayed (or failure) */
    double upstream_ms;      /* request sent -> upstream status line; < 0 when none came */
    const char *http_method; /* "POST" */
    const char *path;        /* request path without the query string */
    const char *client_ip;
    const char *tls;               /* "TLSv1.3" for HTTPS exchanges, NULL for plain HTTP */
    int status;                    /* status sent to the client; 0 when none was sent */
    uint64_t bytes_in;             /* request body bytes received */
    uint64_t bytes_out;            /* response body bytes sent to the client */
    const struct mcp_request *rpc; /* NULL for requests without a body (GET, DELETE) */
    const char *mcp_session_id;
    const char *mcp_protocol_version;
    enum response_kind response;
    uint64_t sse_events; /* complete SSE events relayed */
    bool has_rpc_error_code;
    long long rpc_error_code;      /* error.code of a JSON answer */
    const char *rpc_error_message; /* error.message of that answer (capped), NULL when none */
    bool tool_is_error;            /* a tools/call result said isError: true */
    uint64_t server_requests;      /* JSON-RPC requests the server sent inside the answer */
    enum response_inspection response_inspected;
    const char *error;      /* mcpeek's cause when the exchange failed, else NULL */
    const char *rate_limit; /* scope of the refusing rate_limit line (error "rate_limited") */
    const char *upstream;   /* origin of the upstream the request was routed to, NULL = none */
    /* Context remembered for this Mcp-Session-Id when the request itself carried none
     * (GET streams, DELETE); ignored when rpc->openai is set. */
    const OpenAiClientContext *session_openai;
};

struct accesslog_options {
    enum user_location_policy user_location;
    size_t max_value_len;          /* cap for every string copied from a request */
    const unsigned char *hmac_key; /* pseudonymize subject/org when non-NULL */
    size_t hmac_key_len;
};

/* Appends the record as one JSON object plus '\n' to `out`. */
void accesslog_format(struct strbuf *out, const struct exchange_record *rec,
                      const struct accesslog_options *opts);

/* Appends one `"msg":"conversation"` line for an ended conversation, stamped `now`
 * (CLOCK_REALTIME). Same string caps and pseudonymization of openai_subject / openai_org as
 * exchange lines. */
void accesslog_format_conversation(struct strbuf *out, const struct conversation_record *rec,
                                   const struct timespec *now,
                                   const struct accesslog_options *opts);

struct accesslog;

/* Opens `path` for appending ("-" or NULL means stdout). NULL on failure, errno set. */
struct accesslog *accesslog_open(const char *path);
/* Writes complete lines (the data must end in '\n') with a single write() (looping only on
 * EINTR or a short write); returns 0 or -1. Callers batch lines up to accesslog_batch_max. */
int accesslog_write(struct accesslog *log, const char *line, size_t len);
/* The most bytes one accesslog_write may carry and still never interleave with another
 * thread's: 64 KiB for a regular file, PIPE_BUF for a pipe or socket. */
size_t accesslog_batch_max(const struct accesslog *log);
/* Reopens the same path (after logrotate moved it); returns 0 or -1 keeping the old file. */
int accesslog_reopen(struct accesslog *log);
/* Formats and writes every record of `list` (conversation_track/sweep/end_all results) in
 * batches of at most accesslog_batch_max bytes. Returns the lines written (for
 * mcpeek_log_lines_total); a line that cannot be formatted or written is dropped. The list
 * stays the caller's to free. */
size_t accesslog_write_conversations(struct accesslog *log, const struct conversation_record *list,
                                     const struct timespec *now,
                                     const struct accesslog_options *opts);
/* Lines written since open, summed over all threads. */
uint64_t accesslog_lines(const struct accesslog *log);
void accesslog_close(struct accesslog *log);

#endif
