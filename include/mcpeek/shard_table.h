/* shard_table: the mechanics of a bounded table shared by all workers, for session_map,
 * ratelimit and conversation.
 *
 * Entries embed a `struct shard_node` (intrusive: no allocation here per entry). The table is a
 * fixed set of shards, each a mutex, a fixed power-of-two bucket array with chaining and a
 * doubly linked LRU list; it never resizes. Callers hash, lock, compare keys and decide what to
 * evict; the hot-path helpers are inline. Every shard_* call on a shard needs its lock held.
 */
#ifndef MCPEEK_SHARD_TABLE_H
#define MCPEEK_SHARD_TABLE_H

#include <pthread.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcpeek/hash.h"

#define SHARD_TABLE_MAX_SHARDS 16
#define SHARD_TABLE_MIN_SHARD_CAPACITY 64 /* below this per shard, fewer shards */
#define SHARD_TABLE_MIN_BUCKETS 8

/* The entry of type `type` whose member `member` is `node` (node must not be NULL). */
#define SHARD_ENTRY(node, type, member) ((type *)(void *)((char *)(node)-offsetof(type, member)))

struct shard_node {
    struct shard_node *chain;         /* next in the bucket, or in a detached list */
    struct shard_node *newer, *older; /* LRU neighbours */
    uint64_t hash;
};

struct shard {
    alignas(64) pthread_mutex_t lock; /* guards everything below */
    struct shard_node **buckets;      /* owned array; entries owned through it */
    size_t bucket_mask;
    struct shard_node *newest, *oldest;
    size_t size;
    size_t capacity;
};

/* Embedded by value in its user's struct: the hot path follows no extra pointer. */
struct shard_table {
    struct shard *shards; /* owned; NULL when capacity is 0 */
    size_t n_shards;
    /* SipHash key, random per table: the keys are chosen by clients (session ids, subjects,
     * tokens), and with an unkeyed hash a client could aim every entry at one shard and one
     * chain, as redis learnt for its dicts. */
    unsigned char key[HASH_KEY_SIZE];
};

/* The hash a table's entries are placed by: SipHash-2-4 under the table's key. */
static inline uint64_t shard_table_hash(const struct shard_table *t, const void *data, size_t len)
{
    return hash_siphash(t->key, data, len);
}

/* Frees one entry, given its node (a detached one, or one still in a table being destroyed). */
typedef void (*shard_free_fn)(struct shard_node *node);

/* Shard capacities add up to exactly `capacity` (0: no shards, every user checks n_shards).
 * 0, or -1 on allocation failure (then *t is left empty and shard_table_destroy is harmless). */
int shard_table_init(struct shard_table *t, size_t capacity);

/* Frees every entry still in the table with `free_entry`, then the shards. */
void shard_table_destroy(struct shard_table *t, shard_free_fn free_entry);

/* Entries in all shards (each shard locked in turn: approximate under concurrency). */
size_t shard_table_size(struct shard_table *t);

/* Frees a list of detached nodes linked through `chain` (after the lock is let go). */
void shard_free_list(struct shard_node *list, shard_free_fn free_entry);

static inline size_t shard_index(const struct shard_table *t, uint64_t hash)
{
    return (size_t)(hash % t->n_shards);
}

static inline struct shard *shard_of(struct shard_table *t, uint64_t hash)
{
    return &t->shards[hash % t->n_shards];
}

static inline struct shard_node **shard_bucket(struct shard *sh, uint64_t hash)
{
    /* the low bits chose the shard; mix in the high bits for the bucket */
    return &sh->buckets[(hash ^ (hash >> 32)) & sh->bucket_mask];
}

/* The first node of the chain `hash` falls in; the caller walks `chain`, comparing the hash
 * and its own key. */
static inline struct shard_node *shard_chain(struct shard *sh, uint64_t hash)
{
    return *shard_bucket(sh, hash);
}

static inline void shard_lru_unlink(struct shard *sh, struct shard_node *n)
{
    if (n->newer)
        n->newer->older = n->older;
    else
        sh->newest = n->older;
    if (n->older)
        n->older->newer = n->newer;
    else
        sh->oldest = n->newer;
    n->newer = n->older = NULL;
}

static inline void shard_lru_push(struct shard *sh, struct shard_node *n)
{
    n->newer = NULL;
    n->older = sh->newest;
    if (sh->newest)
        sh->newest->newer = n;
    sh->newest = n;
    if (sh->oldest == NULL)
        sh->oldest = n;
}

/* Makes `n` the shard's most recently used entry. */
static inline void shard_touch(struct shard *sh, struct shard_node *n)
{
    shard_lru_unlink(sh, n);
    shard_lru_push(sh, n);
}

/* Adds `n` (a new entry; the caller made room) as the most recently used one. */
static inline void shard_insert(struct shard *sh, struct shard_node *n, uint64_t hash)
{
    struct shard_node **b = shard_bucket(sh, hash);

    n->hash = hash;
    n->chain = *b;
    *b = n;
    shard_lru_push(sh, n);
    sh->size++;
}

/* Takes `n` out of the shard; the caller frees it (outside the lock when it can). */
static inline void shard_detach(struct shard *sh, struct shard_node *n)
{
    struct shard_node **pp = shard_bucket(sh, n->hash);

    while (*pp != n)
        pp = &(*pp)->chain;
    *pp = n->chain;
    n->chain = NULL;
    shard_lru_unlink(sh, n);
    sh->size--;
}

/* Detaches `n` onto the list *garbage (linked through chain) for shard_free_list. */
static inline void shard_detach_onto(struct shard *sh, struct shard_node *n,
                                     struct shard_node **garbage)
{
    shard_detach(sh, n);
    n->chain = *garbage;
    *garbage = n;
}

/* The least recently used entry, or NULL when the shard is empty. */
static inline struct shard_node *shard_oldest(const struct shard *sh)
{
    return sh->oldest;
}

static inline bool shard_full(const struct shard *sh)
{
    return sh->size >= sh->capacity;
}

#endif
