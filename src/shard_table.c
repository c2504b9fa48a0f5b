/* shard_table: creation, destruction and counting of the sharded LRU tables behind
 * session_map, ratelimit and conversation.
 *
 * The per-entry operations (find, insert, touch, detach) are inline in the header; this file
 * holds what runs once per table or once per freed batch.
 */
#include "mcpeek/shard_table.h"

#include <stdlib.h>
#include <string.h>

static size_t shard_pow2_at_least(size_t n)
{
    size_t p = SHARD_TABLE_MIN_BUCKETS;

    while (p < n)
        p <<= 1;
    return p;
}

int shard_table_init(struct shard_table *t, size_t capacity)
{
    size_t n;

    t->shards = NULL;
    t->n_shards = 0;
    if (capacity == 0)
        return 0;
    if (hash_random_key(t->key) < 0)
        return -1;
    n = capacity / SHARD_TABLE_MIN_SHARD_CAPACITY;
    if (n < 1)
        n = 1;
    if (n > SHARD_TABLE_MAX_SHARDS)
        n = SHARD_TABLE_MAX_SHARDS;
    /* aligned: each shard (and its lock) sits on its own cache lines */
    t->shards = aligned_alloc(alignof(struct shard), n * sizeof(*t->shards));
    if (t->shards == NULL)
        return -1;
    memset(t->shards, 0, n * sizeof(*t->shards));
    for (size_t i = 0; i < n; i++) {
        struct shard *sh = &t->shards[i];
        size_t nb;

        /* the remainder goes to the first shards, so the capacities sum to `capacity` */
        sh->capacity = capacity / n + (i < capacity % n ? 1 : 0);
        nb = shard_pow2_at_least(sh->capacity);
        sh->buckets = calloc(nb, sizeof(*sh->buckets));
        if (sh->buckets == NULL || pthread_mutex_init(&sh->lock, NULL) != 0) {
            free(sh->buckets);
            shard_table_destroy(t, NULL); /* no entries yet */
            return -1;
        }
        sh->bucket_mask = nb - 1;
        t->n_shards = i + 1; /* shards [0, n_shards) are fully initialised */
    }
    return 0;
}

void shard_table_destroy(struct shard_table *t, shard_free_fn free_entry)
{
    for (size_t i = 0; i < t->n_shards; i++) {
        struct shard *sh = &t->shards[i];
        struct shard_node *n = sh->newest;

        while (n) {
            struct shard_node *older = n->older;

            free_entry(n);
            n = older;
        }
        free(sh->buckets);
        pthread_mutex_destroy(&sh->lock);
    }
    free(t->shards);
    t->shards = NULL;
    t->n_shards = 0;
}

size_t shard_table_size(struct shard_table *t)
{
    size_t total = 0;

    for (size_t i = 0; i < t->n_shards; i++) {
        struct shard *sh = &t->shards[i];

        pthread_mutex_lock(&sh->lock);
        total += sh->size;
        pthread_mutex_unlock(&sh->lock);
    }
    return total;
}

void shard_free_list(struct shard_node *list, shard_free_fn free_entry)
{
    while (list) {
        struct shard_node *next = list->chain;

        free_entry(list);
        list = next;
    }
}
