/* test_shard_table: unit tests for src/shard_table.c and the inline helpers of its header.
 *
 * Test entries put their shard_node after other members, so a wrong SHARD_ENTRY offset shows.
 * Each entry points at its table's free counter: the free callback is checked by count, and
 * ASan reports any entry it missed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mcpeek/shard_table.h"

struct item {
    int *freed; /* incremented when the item is freed */
    struct shard_node node;
    int key;
};

static void item_free(struct shard_node *n)
{
    struct item *it = SHARD_ENTRY(n, struct item, node);

    (*it->freed)++;
    free(it);
}

static struct item *item_new(int key, int *freed)
{
    struct item *it = calloc(1, sizeof(*it));

    assert_non_null(it);
    it->key = key;
    it->freed = freed;
    return it;
}

/* Inserts `key` under `hash` into its shard, making room by evicting the oldest when full. */
static struct item *put(struct shard_table *t, int key, uint64_t hash, int *freed)
{
    struct shard *sh = shard_of(t, hash);
    struct shard_node *garbage = NULL;
    struct item *it = item_new(key, freed);

    if (shard_full(sh))
        shard_detach_onto(sh, shard_oldest(sh), &garbage);
    shard_insert(sh, &it->node, hash);
    shard_free_list(garbage, item_free);
    return it;
}

static struct item *find(struct shard_table *t, int key, uint64_t hash)
{
    struct shard *sh = shard_of(t, hash);

    for (struct shard_node *n = shard_chain(sh, hash); n; n = n->chain) {
        struct item *it = SHARD_ENTRY(n, struct item, node);

        if (n->hash == hash && it->key == key)
            return it;
    }
    return NULL;
}

static int key_of(struct shard_node *n)
{
    return n == NULL ? -1 : SHARD_ENTRY(n, struct item, node)->key;
}

static void test_layout(void **state)
{
    static const size_t caps[] = {1, 3, 10, 64, 127, 128, 1000, 1024, 5000, 100000};
    struct shard_table t;

    (void)state;
    assert_int_equal(shard_table_init(&t, 0), 0);
    assert_int_equal(t.n_shards, 0);
    assert_null(t.shards);
    assert_int_equal(shard_table_size(&t), 0);
    shard_table_destroy(&t, item_free);

    for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
        size_t want = caps[c] / SHARD_TABLE_MIN_SHARD_CAPACITY, sum = 0;

        if (want < 1)
            want = 1;
        if (want > SHARD_TABLE_MAX_SHARDS)
            want = SHARD_TABLE_MAX_SHARDS;
        assert_int_equal(shard_table_init(&t, caps[c]), 0);
        assert_int_equal(t.n_shards, want);
        for (size_t i = 0; i < t.n_shards; i++) {
            const struct shard *sh = &t.shards[i];
            size_t nb = sh->bucket_mask + 1;

            assert_int_equal((uintptr_t)sh % 64, 0); /* each lock on its own cache line */
            assert_int_equal(nb & (nb - 1), 0);      /* a power of two */
            assert_true(nb >= SHARD_TABLE_MIN_BUCKETS && nb >= sh->capacity);
            assert_true(nb / 2 < sh->capacity || nb == SHARD_TABLE_MIN_BUCKETS);
            assert_int_equal(sh->size, 0);
            sum += sh->capacity;
        }
        assert_int_equal(sum, caps[c]);
        shard_table_destroy(&t, item_free);
        assert_int_equal(t.n_shards, 0);
    }
}

/* Differs from 42 but lands in 42's bucket: its high half cancels out in the bucket index. */
#define SAME_BUCKET_AS_42 (((uint64_t)8 << 32) + (42 ^ 8))

static void test_insert_find_colliding(void **state)
{
    struct shard_table t;
    int freed = 0;

    (void)state;
    assert_int_equal(shard_table_init(&t, 50), 0);
    /* same hash for all: one chain, told apart by the caller's key */
    for (int k = 0; k < 20; k++)
        put(&t, k, 42, &freed);
    /* a different hash whose bucket index matches: the hash check must tell them apart */
    put(&t, 7, SAME_BUCKET_AS_42, &freed);
    assert_int_equal(shard_table_size(&t), 21);
    assert_ptr_equal(shard_bucket(&t.shards[0], 42), shard_bucket(&t.shards[0], SAME_BUCKET_AS_42));
    for (int k = 0; k < 20; k++) {
        struct item *it = find(&t, k, 42);

        assert_non_null(it);
        assert_int_equal(it->key, k);
        assert_int_equal(it->node.hash, 42);
    }
    assert_null(find(&t, 20, 42));
    assert_null(find(&t, 7, 43));
    assert_non_null(find(&t, 7, SAME_BUCKET_AS_42));
    assert_int_equal(freed, 0);
    shard_table_destroy(&t, item_free);
    assert_int_equal(freed, 21);
}

static void test_lru_order(void **state)
{
    struct shard_table t;
    struct item *a, *b, *c;
    struct shard *sh;
    int freed = 0, order[3], n = 0;

    (void)state;
    assert_int_equal(shard_table_init(&t, 10), 0);
    sh = &t.shards[0];
    assert_null(shard_oldest(sh));
    a = put(&t, 1, 101, &freed);
    b = put(&t, 2, 102, &freed);
    c = put(&t, 3, 103, &freed);
    assert_int_equal(key_of(shard_oldest(sh)), 1);
    assert_ptr_equal(sh->newest, &c->node);
    shard_touch(sh, &a->node);
    assert_int_equal(key_of(shard_oldest(sh)), 2);
    shard_touch(sh, &a->node); /* touching the newest keeps the list intact */
    shard_touch(sh, &b->node);
    for (struct shard_node *x = sh->newest; x; x = x->older) {
        assert_true(n < 3);
        order[n++] = key_of(x);
    }
    assert_int_equal(n, 3);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 3);
    /* and the newer links agree */
    assert_null(sh->newest->newer);
    assert_ptr_equal(sh->oldest->newer, &a->node);
    assert_ptr_equal(a->node.newer, &b->node);
    shard_table_destroy(&t, item_free);
    assert_int_equal(freed, 3);
}

static void test_evict_oldest(void **state)
{
    struct shard_table t;
    struct item *first;
    int freed = 0;

    (void)state;
    assert_int_equal(shard_table_init(&t, 3), 0);
    first = put(&t, 1, 11, &freed);
    put(&t, 2, 12, &freed);
    put(&t, 3, 13, &freed);
    assert_true(shard_full(&t.shards[0]));
    shard_touch(&t.shards[0], &first->node); /* 2 is now the least recently used */
    put(&t, 4, 14, &freed);
    assert_int_equal(freed, 1);
    assert_int_equal(shard_table_size(&t), 3);
    assert_null(find(&t, 2, 12));
    assert_non_null(find(&t, 1, 11));
    assert_non_null(find(&t, 3, 13));
    assert_non_null(find(&t, 4, 14));
    assert_int_equal(key_of(shard_oldest(&t.shards[0])), 3);
    shard_table_destroy(&t, item_free);
    assert_int_equal(freed, 4);
}

static void test_detach(void **state)
{
    struct shard_table t;
    struct item *it[5];
    struct shard *sh;
    struct shard_node *garbage = NULL;
    int freed = 0;

    (void)state;
    assert_int_equal(shard_table_init(&t, 8), 0);
    sh = &t.shards[0];
    for (int k = 0; k < 5; k++)
        it[k] = put(&t, k, 5, &freed); /* one chain: 4 3 2 1 0 */
    shard_detach(sh, &it[2]->node);    /* middle of chain and of LRU */
    assert_null(it[2]->node.chain);
    assert_null(it[2]->node.newer);
    assert_null(it[2]->node.older);
    assert_int_equal(sh->size, 4);
    assert_null(find(&t, 2, 5));
    assert_ptr_equal(it[1]->node.newer, &it[3]->node);
    assert_ptr_equal(it[3]->node.older, &it[1]->node);
    shard_detach_onto(sh, &it[0]->node, &garbage); /* tail of chain, oldest */
    shard_detach_onto(sh, &it[4]->node, &garbage); /* head of chain, newest */
    assert_ptr_equal(garbage, &it[4]->node);
    assert_ptr_equal(garbage->chain, &it[0]->node);
    assert_int_equal(key_of(shard_oldest(sh)), 1);
    assert_int_equal(key_of(sh->newest), 3);
    assert_int_equal(sh->size, 2);
    assert_non_null(find(&t, 1, 5));
    assert_non_null(find(&t, 3, 5));
    shard_free_list(garbage, item_free);
    assert_int_equal(freed, 2);
    item_free(&it[2]->node);
    assert_int_equal(freed, 3);
    shard_detach(sh, &it[1]->node);
    shard_detach(sh, &it[3]->node);
    assert_null(shard_oldest(sh));
    assert_null(sh->newest);
    assert_int_equal(sh->size, 0);
    item_free(&it[1]->node);
    item_free(&it[3]->node);
    shard_table_destroy(&t, item_free);
    assert_int_equal(freed, 5);
}

static void test_many_shards(void **state)
{
    enum { CAP = 16 * 64 * 4, N = 3 * CAP };
    size_t per_shard[SHARD_TABLE_MAX_SHARDS] = {0};
    struct shard_table t;
    int freed = 0;

    (void)state;
    assert_int_equal(shard_table_init(&t, CAP), 0);
    assert_int_equal(t.n_shards, SHARD_TABLE_MAX_SHARDS);
    for (int k = 0; k < N; k++) {
        uint64_t h = (uint64_t)k * 0x9e3779b97f4a7c15ULL;

        assert_ptr_equal(shard_of(&t, h), &t.shards[shard_index(&t, h)]);
        put(&t, k, h, &freed);
    }
    for (size_t i = 0; i < t.n_shards; i++) {
        assert_true(t.shards[i].size <= t.shards[i].capacity);
        per_shard[i] = t.shards[i].size;
        assert_true(per_shard[i] > 0);
    }
    assert_int_equal(shard_table_size(&t) + (size_t)freed, N);
    /* the last key put is always there; the first, put into a shard three times over, is not */
    assert_non_null(find(&t, N - 1, (uint64_t)(N - 1) * 0x9e3779b97f4a7c15ULL));
    assert_null(find(&t, 0, 0));
    shard_table_destroy(&t, item_free);
    assert_int_equal(freed, N);
}

/* Entries are placed by a hash keyed per table: the same client-chosen key lands in
 * different places in two tables (no table can be aimed at from outside), and in the same
 * place every time within one. */
static void test_hash_is_keyed_per_table(void **state)
{
    (void)state;
    struct shard_table a, b;
    assert_int_equal(shard_table_init(&a, 1000), 0);
    assert_int_equal(shard_table_init(&b, 1000), 0);
    int differ = 0;
    for (int i = 0; i < 64; i++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "v1/user_%d", i);
        uint64_t ha = shard_table_hash(&a, key, (size_t)n);
        assert_true(ha == shard_table_hash(&a, key, (size_t)n));
        differ += ha != shard_table_hash(&b, key, (size_t)n);
    }
    if (differ < 60)
        fail_msg("expected the two tables' hashes to differ for nearly all 64 keys, %d did",
                 differ);
    shard_table_destroy(&a, item_free);
    shard_table_destroy(&b, item_free);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_insert_find_colliding),
        cmocka_unit_test(test_lru_order),
        cmocka_unit_test(test_evict_oldest),
        cmocka_unit_test(test_detach),
        cmocka_unit_test(test_many_shards),
        cmocka_unit_test(test_hash_is_keyed_per_table),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
