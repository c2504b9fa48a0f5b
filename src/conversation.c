/* conversation: bounded table of open conversations, shared by all workers.
 *
 * Each shard is a fixed bucket array with chaining plus a list in order of last activity
 * (the shard's least recently active conversation is its oldest), so both the idle sweep and
 * eviction start from the tail and stop early. An entry embeds its future log record as its
 * first member: ending a conversation detaches the entry and hands it out as the record,
 * nothing is copied. Keys carry a one-byte namespace ('o' openai/session, 'm'
 * Mcp-Session-Id), so an Mcp-Session-Id can never land in a ChatGPT conversation.
 */
#include "mcpeek/conversation.h"
#include "mcpeek/hash.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#define CONV_MAX_SHARDS 16
#define CONV_MIN_SHARD_CAPACITY 64 /* below this per shard, fewer shards */
#define CONV_MIN_BUCKETS 8
#define CONV_TOOLS_FIRST 4 /* tool slots allocated at the first tools/call */
#define CONV_KEY_OPENAI 'o'
#define CONV_KEY_MCP 'm'

/* One open conversation. Owned by its shard until it ends; then `rec` (at offset 0) is the
 * handle the caller frees, which frees the whole entry. */
struct conv_entry {
    struct conversation_record rec; /* first: see above */
    struct conv_entry *chain;       /* next in the hash bucket */
    struct conv_entry *newer, *older;
    uint64_t hash;
    uint64_t first_ms, last_ms;                    /* monotonic */
    uint64_t recent[CONVERSATION_RECENT_SESSIONS]; /* hashes of the last distinct session ids */
    unsigned n_recent, recent_next;
    size_t tools_cap;
    size_t hkey_len;
    char hkey[]; /* namespace byte + key, NUL terminated; rec.key points at hkey + 1 */
};

struct conv_shard {
    alignas(64) pthread_mutex_t lock; /* guards everything below */
    struct conv_entry **buckets;      /* owned array; entries owned through it */
    size_t bucket_mask;
    struct conv_entry *newest, *oldest;
    size_t size;
    size_t capacity;
};

struct conversation_table {
    struct conv_shard *shards; /* owned */
    size_t n_shards;
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

static struct conv_entry **conv_bucket(struct conv_shard *sh, uint64_t hash)
{
    /* the low bits chose the shard; mix in the high bits for the bucket */
    return &sh->buckets[(hash ^ (hash >> 32)) & sh->bucket_mask];
}

static void conv_lru_unlink(struct conv_shard *sh, struct conv_entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        sh->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        sh->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void conv_lru_push(struct conv_shard *sh, struct conv_entry *e)
{
    e->newer = NULL;
    e->older = sh->newest;
    if (sh->newest)
        sh->newest->newer = e;
    sh->newest = e;
    if (sh->oldest == NULL)
        sh->oldest = e;
}

static struct conv_entry *conv_find(struct conv_shard *sh, const char *hkey, size_t len,
                                    uint64_t hash)
{
    for (struct conv_entry *e = *conv_bucket(sh, hash); e; e = e->chain) {
        if (e->hash == hash && e->hkey_len == len && memcmp(e->hkey, hkey, len) == 0)
            return e;
    }
    return NULL;
}

/* Takes `e` out of the shard and puts its record, ended for `reason`, on *ended. */
static void conv_end(struct conv_shard *sh, struct conv_entry *e, enum conversation_end reason,
                     struct conversation_record **ended)
{
    struct conv_entry **pp = conv_bucket(sh, e->hash);

    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    e->chain = NULL;
    conv_lru_unlink(sh, e);
    sh->size--;
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

static struct conv_entry *conv_new(const char *hkey, size_t len, uint64_t hash,
                                   const struct conversation_exchange *ex, uint64_t now_ms)
{
    struct conv_entry *e = calloc(1, sizeof(*e) + len + 1);

    if (e == NULL)
        return NULL;
    memcpy(e->hkey, hkey, len);
    e->hkey[len] = '\0';
    e->hkey_len = len;
    e->hash = hash;
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
    struct conv_shard *sh;
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
    hash = hash_fnv1a(hkey, len);
    sh = &t->shards[hash % t->n_shards];

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
        if (sh->size >= sh->capacity && sh->oldest != NULL)
            conv_end(sh, sh->oldest, CONVERSATION_EVICTED, &ended);
        e = conv_new(hkey, len, hash, ex, now_ms);
        if (e == NULL)
            goto out;
        e->chain = *conv_bucket(sh, hash);
        *conv_bucket(sh, hash) = e;
        sh->size++;
    } else {
        conv_lru_unlink(sh, e);
    }
    conv_lru_push(sh, e);
    conv_update(e, ex, now_ms);
    if (ex->ends_session && ns == CONV_KEY_MCP)
        conv_end(sh, e, CONVERSATION_DELETE, &ended);
out:
    pthread_mutex_unlock(&sh->lock);
    free(hkey);
    return ended;
}

struct conversation_record *conversation_sweep(struct conversation_table *t, uint64_t now_ms,
                                               uint32_t idle_ms)
{
    struct conversation_record *ended = NULL;

    if (t == NULL)
        return NULL;
    for (size_t i = 0; i < t->n_shards; i++) {
        struct conv_shard *sh = &t->shards[i];

        pthread_mutex_lock(&sh->lock);
        while (sh->oldest != NULL && conv_idle(sh->oldest, now_ms, idle_ms))
            conv_end(sh, sh->oldest, CONVERSATION_IDLE, &ended);
        pthread_mutex_unlock(&sh->lock);
    }
    return ended;
}

struct conversation_record *conversation_end_all(struct conversation_table *t)
{
    struct conversation_record *ended = NULL;

    if (t == NULL)
        return NULL;
    for (size_t i = 0; i < t->n_shards; i++) {
        struct conv_shard *sh = &t->shards[i];

        pthread_mutex_lock(&sh->lock);
        while (sh->oldest != NULL)
            conv_end(sh, sh->oldest, CONVERSATION_SHUTDOWN, &ended);
        pthread_mutex_unlock(&sh->lock);
    }
    return ended;
}

size_t conversation_count(struct conversation_table *t)
{
    size_t total = 0;

    if (t == NULL)
        return 0;
    for (size_t i = 0; i < t->n_shards; i++) {
        pthread_mutex_lock(&t->shards[i].lock);
        total += t->shards[i].size;
        pthread_mutex_unlock(&t->shards[i].lock);
    }
    return total;
}

static size_t conv_pow2_at_least(size_t n)
{
    size_t p = CONV_MIN_BUCKETS;

    while (p < n)
        p <<= 1;
    return p;
}

struct conversation_table *conversation_table_new(size_t capacity)
{
    struct conversation_table *t = calloc(1, sizeof(*t));
    size_t n;

    if (t == NULL)
        return NULL;
    if (capacity < 1)
        capacity = 1;
    n = capacity / CONV_MIN_SHARD_CAPACITY;
    if (n < 1)
        n = 1;
    if (n > CONV_MAX_SHARDS)
        n = CONV_MAX_SHARDS;
    t->shards = aligned_alloc(alignof(struct conv_shard), n * sizeof(*t->shards));
    if (t->shards == NULL)
        goto fail;
    memset(t->shards, 0, n * sizeof(*t->shards));
    for (size_t i = 0; i < n; i++) {
        struct conv_shard *sh = &t->shards[i];
        size_t nb;

        /* the remainder goes to the first shards, so the capacities sum to `capacity` */
        sh->capacity = capacity / n + (i < capacity % n ? 1 : 0);
        nb = conv_pow2_at_least(sh->capacity);
        sh->buckets = calloc(nb, sizeof(*sh->buckets));
        if (sh->buckets == NULL || pthread_mutex_init(&sh->lock, NULL) != 0) {
            free(sh->buckets);
            goto fail;
        }
        sh->bucket_mask = nb - 1;
        t->n_shards = i + 1; /* shards [0, n_shards) are fully initialised */
    }
    return t;

fail:
    conversation_table_free(t);
    return NULL;
}

void conversation_table_free(struct conversation_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n_shards; i++) {
        struct conv_shard *sh = &t->shards[i];
        struct conv_entry *e = sh->newest;

        while (e) {
            struct conv_entry *older = e->older;

            conv_record_clear(&e->rec);
            free(e);
            e = older;
        }
        free(sh->buckets);
        pthread_mutex_destroy(&sh->lock);
    }
    free(t->shards);
    free(t);
}
