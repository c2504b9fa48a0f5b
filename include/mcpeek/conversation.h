/* conversation: what each open conversation did so far, for one log line when it ends.
 *
 * A conversation is keyed by the request's openai/session when it has one, else by its
 * Mcp-Session-Id (ChatGPT opens a fresh Mcp-Session-Id per tool call, so only openai/session
 * spans a whole chat). The table is bounded and shared by all workers (sharded, one mutex per
 * shard, as session_map.c). It never writes anything itself: every call that ends
 * conversations returns them as a list of records; the caller formats each with
 * accesslog_format_conversation() (or writes them with accesslog_write_conversations()) and
 * frees the list with conversation_records_free().
 */
#ifndef MCPEEK_CONVERSATION_H
#define MCPEEK_CONVERSATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mcpeek/openai_meta.h"

/* Distinct tool names counted per conversation; further ones count under "other". */
#define CONVERSATION_TOOLS_MAX 32
/* Mcp-Session-Ids remembered per conversation to count distinct ones (see mcp_sessions). */
#define CONVERSATION_RECENT_SESSIONS 16

enum conversation_end {
    CONVERSATION_IDLE = 0, /* no request for conversation_idle_timeout */
    CONVERSATION_DELETE,   /* a DELETE ended the Mcp-Session-Id it was keyed by */
    CONVERSATION_SHUTDOWN, /* mcpeek is exiting */
    CONVERSATION_EVICTED,  /* the table was full (least recently active one ends first) */
};

struct conversation_tool {
    char *name; /* owned by the record */
    uint64_t calls;
};

/* An ended conversation. Everything is owned by the record; free the list with
 * conversation_records_free(). Strings are NULL when never seen. */
struct conversation_record {
    struct conversation_record *next; /* the next ended one, NULL at the end of the list */
    enum conversation_end reason;
    const char *key; /* the `conversation` field: the openai/session or Mcp-Session-Id */
    bool keyed_by_openai;
    char *openai_session; /* the latest value seen in the conversation */
    char *openai_subject;
    char *openai_org;
    char *openai_locale;
    struct timespec first_ts, last_ts; /* CLOCK_REALTIME of the first and last exchange */
    uint64_t duration_ms;              /* first to last exchange, monotonic */
    uint64_t requests;                 /* exchanges */
    uint64_t errors;                   /* exchanges the caller marked as failed */
    uint64_t mcp_sessions;             /* distinct Mcp-Session-Ids (see the note below) */
    uint64_t bytes_in, bytes_out;
    struct conversation_tool *tools; /* [n_tools], first-seen order, owned */
    size_t n_tools;                  /* at most CONVERSATION_TOOLS_MAX */
    uint64_t other_tool_calls;       /* calls of tools past the cap, and of a tool named "other" */
};
/* mcp_sessions: each conversation remembers (as 64-bit hashes) the last
 * CONVERSATION_RECENT_SESSIONS distinct Mcp-Session-Ids it saw; an id not among them counts
 * as new. The count is exact unless the conversation returns to an id after 16 others, which
 * then counts twice: it may overstate, never understate, in fixed memory. */

/* What one finished exchange contributes. Pointers are borrowed for the call. */
struct conversation_exchange {
    struct timespec ts;                /* CLOCK_REALTIME when the exchange started */
    const char *mcp_session_id;        /* NULL when the request had none */
    const OpenAiClientContext *openai; /* the request's own, else the session map's; or NULL */
    const char *tool;                  /* params.name of a tools/call, else NULL */
    bool error;        /* HTTP status >= 400, a JSON-RPC error answer or an isError result */
    bool ends_session; /* a DELETE the upstream accepted (2xx): ends a conversation keyed by
                        * this Mcp-Session-Id (one keyed by openai/session goes on) */
    uint64_t bytes_in, bytes_out;
};

struct conversation_table;

/* At most `capacity` open conversations (conversation_max). NULL on allocation failure. */
struct conversation_table *conversation_table_new(size_t capacity);
/* Frees the table and every open conversation without a record (call
 * conversation_end_all() first to log them). */
void conversation_table_free(struct conversation_table *t);

/* Adds one finished exchange to its conversation (opening it when new). Returns the
 * conversations this ended, or NULL: the exchange's own when it had gone idle (`idle_ms`
 * passed since its last request; this exchange then opens a new one) or was ended by this
 * DELETE, and the least recently active one when a new conversation found the table full.
 * An exchange with neither an openai/session nor an Mcp-Session-Id belongs to none.
 * Allocation failures lose that exchange's contribution, never a request. `now_ms` is
 * monotonic (worker_now_ms). */
struct conversation_record *conversation_track(struct conversation_table *t,
                                               const struct conversation_exchange *ex,
                                               uint64_t now_ms, uint32_t idle_ms);

/* Ends every conversation idle for `idle_ms` (reason idle) and returns them. Meant for a
 * periodic timer (any thread; cheap when nothing is idle: it stops at the first recent one of
 * each shard). */
struct conversation_record *conversation_sweep(struct conversation_table *t, uint64_t now_ms,
                                               uint32_t idle_ms);

/* Ends every open conversation (reason shutdown) and returns them; for the exit path, once
 * the workers have stopped. */
struct conversation_record *conversation_end_all(struct conversation_table *t);

/* Open conversations (approximate under concurrency; a gauge, tests). */
size_t conversation_count(struct conversation_table *t);

void conversation_records_free(struct conversation_record *list);

/* "idle", "delete", "shutdown", "evicted". */
const char *conversation_end_name(enum conversation_end reason);

#endif
