/* session_map: bounded Mcp-Session-Id -> (OpenAiClientContext, upstream) map shared by all
 * workers.
 *
 * Sharded by SipHash under a random per-map key (ids are client-chosen: no client may aim
 * every session at one shard or chain), one mutex per shard; each shard is a fixed bucket array
 * with chaining plus a doubly linked LRU list, and never resizes. Shard capacities add up to
 * exactly `capacity`, so the map never holds more. Small maps use a single shard, which makes
 * LRU order exact there; large ones approximate a global LRU by one LRU per shard.
 */
#include "mcpeek/hash.h"
#include "mcpeek/session_map.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define SESSION_MAP_MAX_SHARDS 16
#define SESSION_MAP_MIN_SHARD_CAPACITY 64 /* below this per shard, fewer shards */
#define SESSION_MAP_MAX_ID_LEN 256        /* longer ids are ignored, not truncated */
#define SESSION_MAP_MIN_BUCKETS 8
#define SESSION_MAP_EXPIRE_SCAN 4 /* expired LRU-tail entries a put may drop */

/* One session. Owned by its shard; owns `ctx` and the id bytes that follow it. */
struct session_entry {
    struct session_entry *chain;         /* next in the bucket */
    struct session_entry *newer, *older; /* LRU neighbours */
    uint64_t hash;
    uint64_t stored_ms;       /* when ctx was last put: the TTL counts from here */
    OpenAiClientContext *ctx; /* NULL when only the upstream is known */
    uint64_t upstream;        /* rendezvous_id of the upstream that issued it; 0 = unknown */
    size_t id_len;
    char id[]; /* NUL terminated */
};

struct session_shard {
    alignas(64) pthread_mutex_t lock; /* guards everything below */
    struct session_entry **buckets;   /* owned array; entries owned through it */
    size_t bucket_mask;
    struct session_entry *newest, *oldest;
    size_t size;
    size_t capacity;
};

struct session_map {
    struct session_shard *shards; /* owned; NULL when the map is disabled */
    size_t n_shards;
    uint64_t ttl_ms;                  /* 0 = entries never expire by age */
    unsigned char key[HASH_KEY_SIZE]; /* SipHash key, random per process (per map) */
};

static size_t session_pow2_at_least(size_t n)
{
    size_t p = SESSION_MAP_MIN_BUCKETS;

    while (p < n)
        p <<= 1;
    return p;
}

/* Length of a usable id, or 0 when the id is NULL, empty or longer than the cap. */
static size_t session_id_len(const char *id)
{
    size_t len;

    if (id == NULL)
        return 0;
    len = strnlen(id, SESSION_MAP_MAX_ID_LEN + 1);
    return len > SESSION_MAP_MAX_ID_LEN ? 0 : len;
}

static struct session_shard *session_shard_of(struct session_map *map, uint64_t hash)
{
    return &map->shards[hash % map->n_shards];
}

static struct session_entry **session_bucket(struct session_shard *sh, uint64_t hash)
{
    /* the low bits chose the shard; mix in the high bits for the bucket */
    return &sh->buckets[(hash ^ (hash >> 32)) & sh->bucket_mask];
}

static bool session_expired(const struct session_map *map, const struct session_entry *e,
                            uint64_t now_ms)
{
    /* threads pass their own clock reads, so now can trail stored_ms slightly */
    return map->ttl_ms != 0 && now_ms > e->stored_ms && now_ms - e->stored_ms > map->ttl_ms;
}

static void session_lru_unlink(struct session_shard *sh, struct session_entry *e)
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

static void session_lru_push(struct session_shard *sh, struct session_entry *e)
{
    e->newer = NULL;
    e->older = sh->newest;
    if (sh->newest)
        sh->newest->newer = e;
    sh->newest = e;
    if (sh->oldest == NULL)
        sh->oldest = e;
}

static struct session_entry *session_find(struct session_shard *sh, const char *id, size_t len,
                                          uint64_t hash)
{
    for (struct session_entry *e = *session_bucket(sh, hash); e; e = e->chain) {
        if (e->hash == hash && e->id_len == len && memcmp(e->id, id, len) == 0)
            return e;
    }
    return NULL;
}

/* Takes `e` out of the shard; the caller frees it (outside the lock when it can). */
static void session_detach(struct session_shard *sh, struct session_entry *e)
{
    struct session_entry **pp = session_bucket(sh, e->hash);

    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    e->chain = NULL;
    session_lru_unlink(sh, e);
    sh->size--;
}

static void session_entry_free(struct session_entry *e)
{
    if (e == NULL)
        return;
    openai_meta_free(e->ctx);
    free(e);
}

/* Frees a list of detached entries linked through `chain`. */
static void session_free_list(struct session_entry *list)
{
    while (list) {
        struct session_entry *next = list->chain;

        session_entry_free(list);
        list = next;
    }
}

struct session_map *session_map_new(size_t capacity, uint32_t ttl_ms)
{
    struct session_map *map = calloc(1, sizeof(*map));
    size_t n;

    if (map == NULL)
        return NULL;
    map->ttl_ms = ttl_ms;
    if (capacity == 0)
        return map;
    if (hash_random_key(map->key) < 0)
        goto fail;

    n = capacity / SESSION_MAP_MIN_SHARD_CAPACITY;
    if (n < 1)
        n = 1;
    if (n > SESSION_MAP_MAX_SHARDS)
        n = SESSION_MAP_MAX_SHARDS;
    /* aligned: each shard (and its lock) sits on its own cache lines */
    map->shards = aligned_alloc(alignof(struct session_shard), n * sizeof(*map->shards));
    if (map->shards == NULL)
        goto fail;
    memset(map->shards, 0, n * sizeof(*map->shards));
    for (size_t i = 0; i < n; i++) {
        struct session_shard *sh = &map->shards[i];
        size_t nb;

        /* the remainder goes to the first shards, so the capacities sum to `capacity` */
        sh->capacity = capacity / n + (i < capacity % n ? 1 : 0);
        nb = session_pow2_at_least(sh->capacity);
        sh->buckets = calloc(nb, sizeof(*sh->buckets));
        if (sh->buckets == NULL || pthread_mutex_init(&sh->lock, NULL) != 0) {
            free(sh->buckets);
            goto fail;
        }
        sh->bucket_mask = nb - 1;
        map->n_shards = i + 1; /* shards [0, n_shards) are fully initialised */
    }
    return map;

fail:
    session_map_free(map);
    return NULL;
}

void session_map_free(struct session_map *map)
{
    if (map == NULL)
        return;
    for (size_t i = 0; i < map->n_shards; i++) {
        struct session_shard *sh = &map->shards[i];
        struct session_entry *e = sh->newest;

        while (e) {
            struct session_entry *older = e->older;

            session_entry_free(e);
            e = older;
        }
        free(sh->buckets);
        pthread_mutex_destroy(&sh->lock);
    }
    free(map->shards);
    free(map);
}

/* Stores `copy` (owned from here on; when set_ctx) and/or `upstream` (when nonzero) for the
 * session, keeping the other part of an existing entry. */
static int session_store(struct session_map *map, const char *session_id, size_t len,
                         OpenAiClientContext *copy, bool set_ctx, uint64_t upstream,
                         uint64_t now_ms)
{
    struct session_entry *garbage = NULL; /* detached entries, freed after unlock */
    uint64_t hash = hash_siphash(map->key, session_id, len);
    struct session_shard *sh = session_shard_of(map, hash);
    struct session_entry *e;
    int rc = 0;

    pthread_mutex_lock(&sh->lock);
    e = session_find(sh, session_id, len, hash);
    if (e) {
        if (set_ctx) {
            OpenAiClientContext *old = e->ctx;

            e->ctx = copy;
            copy = old; /* freed below */
        }
        if (upstream)
            e->upstream = upstream;
        e->stored_ms = now_ms;
        session_lru_unlink(sh, e);
        session_lru_push(sh, e);
        goto out;
    }

    /* sessions that ended without a DELETE would otherwise sit here until evicted */
    for (int i = 0; i < SESSION_MAP_EXPIRE_SCAN && sh->oldest; i++) {
        struct session_entry *old = sh->oldest;

        if (!session_expired(map, old, now_ms))
            break;
        session_detach(sh, old);
        old->chain = garbage;
        garbage = old;
    }
    if (sh->size >= sh->capacity) {
        struct session_entry *victim = sh->oldest;

        session_detach(sh, victim);
        victim->chain = garbage;
        garbage = victim;
    }

    e = malloc(sizeof(*e) + len + 1);
    if (e == NULL) {
        rc = -1; /* evictions above stand: they were due anyway */
        goto out;
    }
    memcpy(e->id, session_id, len);
    e->id[len] = '\0';
    e->id_len = len;
    e->hash = hash;
    e->stored_ms = now_ms;
    e->ctx = set_ctx ? copy : NULL;
    if (set_ctx)
        copy = NULL;
    e->upstream = upstream;
    e->chain = *session_bucket(sh, hash);
    *session_bucket(sh, hash) = e;
    session_lru_push(sh, e);
    sh->size++;

out:
    pthread_mutex_unlock(&sh->lock);
    openai_meta_free(copy);
    session_free_list(garbage);
    return rc;
}

int session_map_put(struct session_map *map, const char *session_id, const OpenAiClientContext *ctx,
                    uint64_t now_ms)
{
    size_t len = session_id_len(session_id);
    OpenAiClientContext *copy;

    /* nothing to remember: a request without _meta must not erase what we know */
    if (map == NULL || map->n_shards == 0 || len == 0 || ctx == NULL)
        return 0;
    copy = openai_meta_dup(ctx); /* outside the lock: it allocates */
    if (copy == NULL)
        return -1;
    return session_store(map, session_id, len, copy, true, 0, now_ms);
}

int session_map_put_upstream(struct session_map *map, const char *session_id, uint64_t upstream,
                             uint64_t now_ms)
{
    size_t len = session_id_len(session_id);

    if (map == NULL || map->n_shards == 0 || len == 0 || upstream == 0)
        return 0;
    return session_store(map, session_id, len, NULL, false, upstream, now_ms);
}

uint64_t session_map_upstream(struct session_map *map, const char *session_id, uint64_t now_ms)
{
    size_t len = session_id_len(session_id);
    struct session_shard *sh;
    struct session_entry *e;
    uint64_t hash, upstream = 0;

    if (map == NULL || map->n_shards == 0 || len == 0)
        return 0;
    hash = hash_siphash(map->key, session_id, len);
    sh = session_shard_of(map, hash);
    pthread_mutex_lock(&sh->lock);
    e = session_find(sh, session_id, len, hash);
    if (e && !session_expired(map, e, now_ms))
        upstream = e->upstream;
    pthread_mutex_unlock(&sh->lock);
    return upstream;
}

OpenAiClientContext *session_map_get(struct session_map *map, const char *session_id,
                                     uint64_t now_ms)
{
    size_t len = session_id_len(session_id);
    struct session_entry *dead = NULL;
    OpenAiClientContext *copy = NULL;
    struct session_shard *sh;
    struct session_entry *e;
    uint64_t hash;

    if (map == NULL || map->n_shards == 0 || len == 0)
        return NULL;
    hash = hash_siphash(map->key, session_id, len);
    sh = session_shard_of(map, hash);

    pthread_mutex_lock(&sh->lock);
    e = session_find(sh, session_id, len, hash);
    if (e && session_expired(map, e, now_ms)) {
        session_detach(sh, e);
        dead = e;
    } else if (e) {
        session_lru_unlink(sh, e);
        session_lru_push(sh, e);
        /* under the lock: a concurrent put may free e->ctx as soon as we let go */
        copy = e->ctx ? openai_meta_dup(e->ctx) : NULL;
    }
    pthread_mutex_unlock(&sh->lock);
    session_entry_free(dead);
    return copy;
}

void session_map_remove(struct session_map *map, const char *session_id)
{
    size_t len = session_id_len(session_id);
    struct session_shard *sh;
    struct session_entry *e;
    uint64_t hash;

    if (map == NULL || map->n_shards == 0 || len == 0)
        return;
    hash = hash_siphash(map->key, session_id, len);
    sh = session_shard_of(map, hash);

    pthread_mutex_lock(&sh->lock);
    e = session_find(sh, session_id, len, hash);
    if (e)
        session_detach(sh, e);
    pthread_mutex_unlock(&sh->lock);
    session_entry_free(e);
}

size_t session_map_size(struct session_map *map)
{
    size_t total = 0;

    if (map == NULL)
        return 0;
    for (size_t i = 0; i < map->n_shards; i++) {
        struct session_shard *sh = &map->shards[i];

        pthread_mutex_lock(&sh->lock);
        total += sh->size;
        pthread_mutex_unlock(&sh->lock);
    }
    return total;
}

size_t session_map_shard_index(const struct session_map *map, const char *session_id)
{
    size_t len = session_id_len(session_id);
    if (map == NULL || map->n_shards == 0 || len == 0)
        return 0;
    return (size_t)(hash_siphash(map->key, session_id, len) % map->n_shards);
}
