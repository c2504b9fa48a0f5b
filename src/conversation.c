/* conversation: bounded table of open conversations, shared by all workers.
 *
 * Each shard is a fixed bucket array with chaining plus a list in order of last activity
 * (shard_table.c: the shard's least recently active conversation is its oldest), so both the idle
 * sweep and eviction start from the tail and stop early. An entry embeds its future log record as
 * its first member: ending a conversation detaches the entry and hands it out as the record,
 * nothing is copied. Keys carry a one-byte namespace ('o' openai/session, 'm'
 * Mcp-Session-Id), so an Mcp-Session-Id can never land in a ChatGPT conversation.
 */
#include "mcpeek/conversation.h"
#include "mcpeek/hash.h"
#include "mcpeek/shard_table.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CONV_TOOLS_FIRST 4 /* tool slots allocated at the first tools/call */
#define CONV_KEY_OPENAI 'o'
#define CONV_KEY_MCP 'm'

/* One open conversation. Owned by its shard until it ends; then `rec` (at offset 0) is the
 * handle the caller frees, which frees the whole entry. */
struct conv_entry {
    struct conversation_record rec;                /* first: see above */
    struct shard_node node;                        /* bucket chain, activity neighbours, hash */
    uint64_t first_ms, last_ms;                    /* monotonic */
    uint64_t recent[CONVERSATION_RECENT_SESSIONS]; /* hashes of the last distinct session ids */
    unsigned n_recent, recent_next;
    size_t tools_cap;
    size_t hkey_len;
    char hkey[]; /* namespace byte + key, NUL terminated; rec.key points at hkey + 1 */
};

struct conversation_table {
    struct shard_table table;
};

const char *conversation_end_name(enum conversation_end reason)
{
    switch (reason) {
    case CONVERSATION_IDLE:
        return "idle";
    case CONVERSATION_DELETE:
        return "delete";
    case CONVERSATION_SHUTDOWN:
        return "shutdown";
    case CONVERSATION_EVICTED:
        return "evicted";
    }
    return "unknown";
}

static struct conv_entry *conv_of(struct shard_node *n)
{
    return SHARD_ENTRY(n, struct conv_entry, node);
}

static struct conv_entry *conv_find(struct shard *sh, const char *hkey, size_t len, uint64_t hash)
{
    for (struct shard_node *n = shard_chain(sh, hash); n; n = n->chain) {
        struct conv_entry *e = conv_of(n);

        if (n->hash == hash && e->hkey_len == len && memcmp(e->hkey, hkey, len) == 0)
            return e;
    }
    return NULL;
}

/* Takes `e` out of the shard and puts its record, ended for `reason`, on *ended. */
static void conv_end(struct shard *sh, struct conv_entry *e, enum conversation_end reason,
                     struct conversation_record **ended)
{
    shard_detach(sh, &e->node);
    e->rec.reason = reason;
    e->rec.duration_ms = e->last_ms - e->first_ms;
    e->rec.next = *ended;
    *ended = &e->rec;
}

static bool conv_idle(const struct conv_entry *e, uint64_t now_ms, uint32_t idle_ms)
{
    /* threads pass their own clock reads, so now can trail last_ms slightly */
    return now_ms > e->last_ms && now_ms - e->last_ms >= idle_ms;
}

static void conv_record_clear(struct conversation_record *rec)
{
    free(rec->openai_session);
    free(rec->openai_subject);
    free(rec->openai_org);
    free(rec->openai_locale);
    for (size_t i = 0; i < rec->n_tools; i++)
        free(rec->tools[i].name);
    free(rec->tools);
}

void conversation_records_free(struct conversation_record *list)
{
    while (list) {
        struct conversation_record *next = list->next;

        conv_record_clear(list);
        free(list); /* the record is the start of its entry's allocation */
        list = next;
    }
}

/* Keeps the latest value of an openai field; an allocation failure keeps the older one. */
static void conv_set(char **field, const char *value)
{
    char *copy;

    if (value == NULL || (*field != NULL && strcmp(*field, value) == 0))
        return;
    copy = strdup(value);
    if (copy == NULL)
        return;
    free(*field);
    *field = copy;
}

static void conv_count_tool(struct conv_entry *e, const char *tool)
{
    struct conversation_record *rec = &e->rec;
    char *name;

    /* a tool literally named "other" shares the overflow's key rather than duplicate it */
    if (strcmp(tool, "other") == 0)
        goto other;
    for (size_t i = 0; i < rec->n_tools; i++) {
        if (strcmp(rec->tools[i].name, tool) == 0) {
            rec->tools[i].calls++;
            return;
        }
    }
    if (rec->n_tools == CONVERSATION_TOOLS_MAX)
        goto other;
    if (rec->n_tools == e->tools_cap) {
        size_t cap = e->tools_cap ? e->tools_cap * 2 : CONV_TOOLS_FIRST;
        struct conversation_tool *grown;

        if (cap > CONVERSATION_TOOLS_MAX)
            cap = CONVERSATION_TOOLS_MAX;
        grown = realloc(rec->tools, cap * sizeof(*grown));
        if (grown == NULL)
            goto other;
        rec->tools = grown;
        e->tools_cap = cap;
    }
    name = strdup(tool);
    if (name == NULL)
        goto other;
    rec->tools[rec->n_tools].name = name;
    rec->tools[rec->n_tools].calls = 1;
    rec->n_tools++;
    return;
other:
    rec->other_tool_calls++;
}

static void conv_count_session(struct conv_entry *e, const char *session_id)
{
    uint64_t h;

    if (session_id == NULL || session_id[0] == '\0')
        return;
    h = hash_fnv1a(session_id, strlen(session_id));
    for (unsigned i = 0; i < e->n_recent; i++)
        if (e->recent[i] == h)
            return;
    e->rec.mcp_sessions++;
    e->recent[e->recent_next] = h;
    e->recent_next = (e->recent_next + 1) % CONVERSATION_RECENT_SESSIONS;
    if (e->n_recent < CONVERSATION_RECENT_SESSIONS)
        e->n_recent++;
}

static bool conv_ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void conv_update(struct conv_entry *e, const struct conversation_exchange *ex,
                        uint64_t now_ms)
{
    struct conversation_record *rec = &e->rec;
    const OpenAiClientContext *ctx = ex->openai;

    rec->requests++;
    rec->errors += ex->error ? 1 : 0;
    rec->bytes_in += ex->bytes_in;
    rec->bytes_out += ex->bytes_out;
    if (now_ms > e->last_ms)
        e->last_ms = now_ms;
    if (conv_ts_before(&rec->last_ts, &ex->ts))
        rec->last_ts = ex->ts;
    if (ctx != NULL) {
        conv_set(&rec->openai_session, ctx->session_id);
        conv_set(&rec->openai_subject, ctx->subject_id);
        conv_set(&rec->openai_org, ctx->organization_id);
        conv_set(&rec->openai_locale, ctx->locale);
    }
    if (ex->tool != NULL)
        conv_count_tool(e, ex->tool);
    conv_count_session(e, ex->mcp_session_id);
}

static struct conv_entry *conv_new(const char *hkey, size_t len,
                                   const struct conversation_exchange *ex, uint64_t now_ms)
{
    struct conv_entry *e = calloc(1, sizeof(*e) + len + 1);

    if (e == NULL)
        return NULL;
    memcpy(e->hkey, hkey, len);
    e->hkey[len] = '\0';
    e->hkey_len = len;
    e->rec.key = e->hkey + 1;
    e->rec.keyed_by_openai = hkey[0] == CONV_KEY_OPENAI;
    e->rec.first_ts = e->rec.last_ts = ex->ts;
    e->first_ms = e->last_ms = now_ms;
    return e;
}

struct conversation_record *conversation_track(struct conversation_table *t,
                                               const struct conversation_exchange *ex,
                                               uint64_t now_ms, uint32_t idle_ms)
{
    struct conversation_record *ended = NULL;
    const char *key = NULL;
    char ns = CONV_KEY_MCP;
    struct shard *sh;
    struct conv_entry *e;
    char *hkey;
    size_t len;
    uint64_t hash;

    if (t == NULL || ex == NULL)
        return NULL;
    if (ex->openai != NULL && ex->openai->session_id != NULL && ex->openai->session_id[0]) {
        key = ex->openai->session_id;
        ns = CONV_KEY_OPENAI;
    } else if (ex->mcp_session_id != NULL && ex->mcp_session_id[0] != '\0') {
        key = ex->mcp_session_id;
    } else {
        return NULL;
    }
    len = strlen(key) + 1;
    hkey = malloc(len + 1); /* outside the lock */
    if (hkey == NULL)
        return NULL;
    hkey[0] = ns;
    memcpy(hkey + 1, key, len);
    hash = shard_table_hash(&t->table, hkey, len);
    sh = shard_of(&t->table, hash);

    pthread_mutex_lock(&sh->lock);
    e = conv_find(sh, hkey, len, hash);
    if (e != NULL && conv_idle(e, now_ms, idle_ms)) {
        conv_end(sh, e, CONVERSATION_IDLE, &ended);
        e = NULL;
    }
    if (e == NULL) {
        /* a DELETE of a session we no longer track opens nothing just to close it */
        if (ex->ends_session && ns == CONV_KEY_MCP)
            goto out;
        if (shard_full(sh) && shard_oldest(sh) != NULL)
            conv_end(sh, conv_of(shard_oldest(sh)), CONVERSATION_EVICTED, &ended);
        e = conv_new(hkey, len, ex, now_ms);
        if (e == NULL)
            goto out;
        shard_insert(sh, &e->node, hash);
    } else {
        shard_touch(sh, &e->node);
    }
    conv_update(e, ex, now_ms);
    if (ex->ends_session && ns == CONV_KEY_MCP)
        conv_end(sh, e, CONVERSATION_DELETE, &ended);
out:
    pthread_mutex_unlock(&sh->lock);
    free(hkey);
    return ended;
}

/* Ends, shard by shard from the least recently active, every conversation idle for idle_ms
 * (reason CONVERSATION_IDLE) or all of them (CONVERSATION_SHUTDOWN). */
static struct conversation_record *conv_end_oldest(struct conversation_table *t,
                                                   enum conversation_end reason, uint64_t now_ms,
                                                   uint32_t idle_ms)
{
    struct conversation_record *ended = NULL;

    if (t == NULL)
        return NULL;
    for (size_t i = 0; i < t->table.n_shards; i++) {
        struct shard *sh = &t->table.shards[i];

        pthread_mutex_lock(&sh->lock);
        while (shard_oldest(sh) != NULL && (reason == CONVERSATION_SHUTDOWN ||
                                            conv_idle(conv_of(shard_oldest(sh)), now_ms, idle_ms)))
            conv_end(sh, conv_of(shard_oldest(sh)), reason, &ended);
        pthread_mutex_unlock(&sh->lock);
    }
    return ended;
}

struct conversation_record *conversation_sweep(struct conversation_table *t, uint64_t now_ms,
                                               uint32_t idle_ms)
{
    return conv_end_oldest(t, CONVERSATION_IDLE, now_ms, idle_ms);
}

struct conversation_record *conversation_end_all(struct conversation_table *t)
{
    return conv_end_oldest(t, CONVERSATION_SHUTDOWN, 0, 0);
}

size_t conversation_count(struct conversation_table *t)
{
    return t == NULL ? 0 : shard_table_size(&t->table);
}

/* Frees an entry still in the table (its record never handed out). */
static void conv_node_free(struct shard_node *n)
{
    struct conv_entry *e = conv_of(n);

    conv_record_clear(&e->rec);
    free(e);
}

struct conversation_table *conversation_table_new(size_t capacity)
{
    struct conversation_table *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    if (capacity < 1)
        capacity = 1;
    if (shard_table_init(&t->table, capacity) < 0) {
        free(t);
        return NULL;
    }
    return t;
}

void conversation_table_free(struct conversation_table *t)
{
    if (t == NULL)
        return;
    shard_table_destroy(&t->table, conv_node_free);
    free(t);
}
