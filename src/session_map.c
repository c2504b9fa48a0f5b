/* session_map: bounded Mcp-Session-Id -> (OpenAiClientContext, upstream) map shared by all
 * workers.
 *
 * Sharded by SipHash under a random per-map key (ids are client-chosen: no client may aim
 * every session at one shard or chain), one mutex per shard; each shard is a fixed bucket array
 * with chaining plus a doubly linked LRU list (shard_table.c), and never resizes. Shard capacities
 * add up to exactly `capacity`, so the map never holds more. Small maps use a single shard, which
 * makes LRU order exact there; large ones approximate a global LRU by one LRU per shard.
 */
#include "mcpeek/hash.h"
#include "mcpeek/session_map.h"
#include "mcpeek/shard_table.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define SESSION_MAP_MAX_ID_LEN 256 /* longer ids are ignored, not truncated */
#define SESSION_MAP_EXPIRE_SCAN 4  /* expired LRU-tail entries a put may drop */

/* One session. Owned by its shard; owns `ctx` and the id bytes that follow it. */
struct session_entry {
    struct shard_node node;   /* bucket chain, LRU neighbours, hash */
    uint64_t stored_ms;       /* when ctx was last put: the TTL counts from here */
    OpenAiClientContext *ctx; /* NULL when only the upstream is known */
    uint64_t upstream;        /* rendezvous_id of the upstream that issued it; 0 = unknown */
    size_t id_len;
    char id[]; /* NUL terminated */
};

struct session_map {
    struct shard_table table; /* no shards when the map is disabled */
    uint64_t ttl_ms;          /* 0 = entries never expire by age */
};

/* Length of a usable id, or 0 when the id is NULL, empty or longer than the cap. */
static size_t session_id_len(const char *id)
{
    size_t len;

    if (id == NULL)
        return 0;
    len = strnlen(id, SESSION_MAP_MAX_ID_LEN + 1);
    return len > SESSION_MAP_MAX_ID_LEN ? 0 : len;
}

static bool session_expired(const struct session_map *map, const struct session_entry *e,
                            uint64_t now_ms)
{
    /* threads pass their own clock reads, so now can trail stored_ms slightly */
    return map->ttl_ms != 0 && now_ms > e->stored_ms && now_ms - e->stored_ms > map->ttl_ms;
}

static struct session_entry *session_find(struct shard *sh, const char *id, size_t len,
                                          uint64_t hash)
{
    for (struct shard_node *n = shard_chain(sh, hash); n; n = n->chain) {
        struct session_entry *e = SHARD_ENTRY(n, struct session_entry, node);

        if (n->hash == hash && e->id_len == len && memcmp(e->id, id, len) == 0)
            return e;
    }
    return NULL;
}

static void session_entry_free(struct session_entry *e)
{
    if (e == NULL)
        return;
    openai_meta_free(e->ctx);
    free(e);
}

static void session_node_free(struct shard_node *n)
{
    session_entry_free(SHARD_ENTRY(n, struct session_entry, node));
}

struct session_map *session_map_new(size_t capacity, uint32_t ttl_ms)
{
    struct session_map *map = calloc(1, sizeof(*map));

    if (map == NULL)
        return NULL;
    map->ttl_ms = ttl_ms;
    if (capacity == 0)
        return map;
    if (shard_table_init(&map->table, capacity) < 0) {
        free(map);
        return NULL;
    }
    return map;
}

void session_map_free(struct session_map *map)
{
    if (map == NULL)
        return;
    shard_table_destroy(&map->table, session_node_free);
    free(map);
}

/* Stores `copy` (owned from here on; when set_ctx) and/or `upstream` (when nonzero) for the
 * session, keeping the other part of an existing entry. */
static int session_store(struct session_map *map, const char *session_id, size_t len,
                         OpenAiClientContext *copy, bool set_ctx, uint64_t upstream,
                         uint64_t now_ms)
{
    struct shard_node *garbage = NULL; /* detached entries, freed after unlock */
    uint64_t hash = shard_table_hash(&map->table, session_id, len);
    struct shard *sh = shard_of(&map->table, hash);
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
        shard_touch(sh, &e->node);
        goto out;
    }

    /* sessions that ended without a DELETE would otherwise sit here until evicted */
    for (int i = 0; i < SESSION_MAP_EXPIRE_SCAN && shard_oldest(sh); i++) {
        struct shard_node *old = shard_oldest(sh);

        if (!session_expired(map, SHARD_ENTRY(old, struct session_entry, node), now_ms))
            break;
        shard_detach_onto(sh, old, &garbage);
    }
    if (shard_full(sh))
        shard_detach_onto(sh, shard_oldest(sh), &garbage);

    e = malloc(sizeof(*e) + len + 1);
    if (e == NULL) {
        rc = -1; /* evictions above stand: they were due anyway */
        goto out;
    }
    memcpy(e->id, session_id, len);
    e->id[len] = '\0';
    e->id_len = len;
    e->stored_ms = now_ms;
    e->ctx = set_ctx ? copy : NULL;
    if (set_ctx)
        copy = NULL;
    e->upstream = upstream;
    shard_insert(sh, &e->node, hash);

out:
    pthread_mutex_unlock(&sh->lock);
    openai_meta_free(copy);
    shard_free_list(garbage, session_node_free);
    return rc;
}

int session_map_put(struct session_map *map, const char *session_id, const OpenAiClientContext *ctx,
                    uint64_t now_ms)
{
    size_t len = session_id_len(session_id);
    OpenAiClientContext *copy;

    /* nothing to remember: a request without _meta must not erase what we know */
    if (map == NULL || map->table.n_shards == 0 || len == 0 || ctx == NULL)
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

    if (map == NULL || map->table.n_shards == 0 || len == 0 || upstream == 0)
        return 0;
    return session_store(map, session_id, len, NULL, false, upstream, now_ms);
}

uint64_t session_map_upstream(struct session_map *map, const char *session_id, uint64_t now_ms)
{
    size_t len = session_id_len(session_id);
    struct shard *sh;
    struct session_entry *e;
    uint64_t hash, upstream = 0;

    if (map == NULL || map->table.n_shards == 0 || len == 0)
        return 0;
    hash = shard_table_hash(&map->table, session_id, len);
    sh = shard_of(&map->table, hash);
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
    struct shard *sh;
    struct session_entry *e;
    uint64_t hash;

    if (map == NULL || map->table.n_shards == 0 || len == 0)
        return NULL;
    hash = shard_table_hash(&map->table, session_id, len);
    sh = shard_of(&map->table, hash);

    pthread_mutex_lock(&sh->lock);
    e = session_find(sh, session_id, len, hash);
    if (e && session_expired(map, e, now_ms)) {
        shard_detach(sh, &e->node);
        dead = e;
    } else if (e) {
        shard_touch(sh, &e->node);
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
    struct shard *sh;
    struct session_entry *e;
    uint64_t hash;

    if (map == NULL || map->table.n_shards == 0 || len == 0)
        return;
    hash = shard_table_hash(&map->table, session_id, len);
    sh = shard_of(&map->table, hash);

    pthread_mutex_lock(&sh->lock);
    e = session_find(sh, session_id, len, hash);
    if (e)
        shard_detach(sh, &e->node);
    pthread_mutex_unlock(&sh->lock);
    session_entry_free(e);
}

size_t session_map_size(struct session_map *map)
{
    return map == NULL ? 0 : shard_table_size(&map->table);
}

size_t session_map_shard_index(const struct session_map *map, const char *session_id)
{
    size_t len = session_id_len(session_id);
    if (map == NULL || map->table.n_shards == 0 || len == 0)
        return 0;
    return shard_index(&map->table, shard_table_hash(&map->table, session_id, len));
}
