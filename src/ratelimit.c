/* ratelimit: token buckets per (rate_limit line, key value), in one bounded shared table.
 *
 * Tokens are kept as integers in units of 1/period_ms of a token, so a bucket refills by
 * exactly `rate` units per millisecond and no floating point is involved. A check locks the
 * shards of all its buckets at once, in ascending order (no deadlock), so the decision
 * "every line allows, take one token from each" is atomic: a refused request takes nothing.
 * Each shard is a fixed bucket array with chaining plus an LRU list (shard_table.c).
 */
#include "mcpeek/hash.h"
#include "mcpeek/ratelimit.h"
#include "mcpeek/shard_table.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RL_HASH_HEX 16 /* hex digits of the hash that stands in for a long key's tail */

static const char *const rl_scope_names[RATELIMIT_SCOPE_COUNT] = {
    [RATELIMIT_OPENAI_SUBJECT] = "openai_subject",
    [RATELIMIT_OPENAI_SESSION] = "openai_session",
    [RATELIMIT_OPENAI_ORG] = "openai_org",
    [RATELIMIT_CLIENT_IP] = "client_ip",
    [RATELIMIT_TOKEN] = "token",
};

/* One bucket. Owned by its shard; the key bytes follow it. */
struct rl_entry {
    struct shard_node node; /* bucket chain, LRU neighbours, hash */
    struct ratelimit_rule rule;
    uint64_t units;   /* tokens * rule.period_ms */
    uint64_t last_ms; /* clock of the last refill */
    bool pinned;      /* held by the check running under the shard lock: never evicted */
    size_t key_len;
    char key[]; /* NUL terminated */
};

struct ratelimit {
    struct shard_table table;
};

/* One rule applying to the request being checked. */
struct rl_slot {
    const struct ratelimit_rule *rule;
    uint64_t hash;
    size_t shard;
    struct rl_entry *entry; /* NULL when it could not be allocated */
    size_t key_len;
    char key[RATELIMIT_KEY_MAX + 1];
};

const char *ratelimit_scope_name(enum ratelimit_scope scope)
{
    return (unsigned)scope < RATELIMIT_SCOPE_COUNT ? rl_scope_names[scope] : "unknown";
}

int ratelimit_scope_parse(const char *name, enum ratelimit_scope *out)
{
    for (int i = 0; i < RATELIMIT_SCOPE_COUNT; i++) {
        if (strcmp(name, rl_scope_names[i]) == 0) {
            *out = (enum ratelimit_scope)i;
            return 0;
        }
    }
    return -1;
}

bool ratelimit_rule_equal(const struct ratelimit_rule *a, const struct ratelimit_rule *b)
{
    return a->scope == b->scope && a->rate == b->rate && a->period_ms == b->period_ms &&
           a->burst == b->burst;
}

/* The stored form of a key value: as is up to RATELIMIT_KEY_MAX bytes; longer ones keep a
 * prefix and a hash of the whole, so distinct long values stay distinct in bounded memory. */
static size_t rl_key(const char *value, char out[RATELIMIT_KEY_MAX + 1])
{
    static const char hex[] = "0123456789abcdef";
    size_t len = strnlen(value, RATELIMIT_KEY_MAX + 1);
    size_t keep = RATELIMIT_KEY_MAX - RL_HASH_HEX - 1;
    uint64_t h;

    if (len <= RATELIMIT_KEY_MAX) {
        memcpy(out, value, len);
        out[len] = '\0';
        return len;
    }
    h = hash_fnv1a(value, strlen(value));
    memcpy(out, value, keep);
    out[keep] = '#';
    for (int i = 0; i < RL_HASH_HEX; i++)
        out[keep + 1 + (size_t)i] = hex[(h >> (60 - 4 * i)) & 0xf];
    out[RATELIMIT_KEY_MAX] = '\0';
    return RATELIMIT_KEY_MAX;
}

static uint64_t rl_hash(const struct ratelimit *rl, const struct ratelimit_rule *r, const char *key,
                        size_t len)
{
    uint64_t h = shard_table_hash(&rl->table, key, len);

    h ^= (uint64_t)r->scope << 56 ^ (uint64_t)r->burst << 24 ^ (uint64_t)r->rate ^
         (uint64_t)r->period_ms << 40;
    return hash_mix64(h); /* the rule's bits xored in: spread them again */
}

static void rl_node_free(struct shard_node *n)
{
    free(SHARD_ENTRY(n, struct rl_entry, node));
}

static struct rl_entry *rl_find(struct shard *sh, const struct rl_slot *s)
{
    for (struct shard_node *n = shard_chain(sh, s->hash); n; n = n->chain) {
        struct rl_entry *e = SHARD_ENTRY(n, struct rl_entry, node);

        if (n->hash == s->hash && e->key_len == s->key_len &&
            ratelimit_rule_equal(&e->rule, s->rule) && memcmp(e->key, s->key, s->key_len) == 0)
            return e;
    }
    return NULL;
}

static uint64_t rl_capacity_units(const struct ratelimit_rule *r)
{
    return (uint64_t)r->burst * r->period_ms;
}

/* A new bucket starts full. Evicts the shard's least recently used bucket when full (onto
 * *garbage, freed after unlock). NULL when that is impossible or memory is short. */
static struct rl_entry *rl_create(struct shard *sh, const struct rl_slot *s, uint64_t now_ms,
                                  struct shard_node **garbage)
{
    struct shard_node *victim = shard_oldest(sh);
    struct rl_entry *e;

    if (shard_full(sh)) {
        if (victim == NULL || SHARD_ENTRY(victim, struct rl_entry, node)->pinned)
            return NULL; /* only when the shard is smaller than one check's rules */
        shard_detach_onto(sh, victim, garbage);
    }
    e = malloc(sizeof(*e) + s->key_len + 1);
    if (e == NULL)
        return NULL;
    memcpy(e->key, s->key, s->key_len + 1);
    e->key_len = s->key_len;
    e->rule = *s->rule;
    e->units = rl_capacity_units(s->rule);
    e->last_ms = now_ms;
    e->pinned = false;
    shard_insert(sh, &e->node, s->hash);
    return e;
}

static void rl_refill(struct rl_entry *e, uint64_t now_ms)
{
    uint64_t cap = rl_capacity_units(&e->rule), elapsed, missing;

    if (now_ms <= e->last_ms)
        return; /* threads pass their own clock reads: one may trail the bucket's */
    elapsed = now_ms - e->last_ms;
    e->last_ms = now_ms;
    if (e->units >= cap)
        return;
    missing = cap - e->units;
    /* elapsed * rate could overflow after a long idle: compare by division first */
    if (elapsed >= (missing + e->rule.rate - 1) / e->rule.rate)
        e->units = cap;
    else
        e->units += elapsed * e->rule.rate;
}

/* Whole seconds until the bucket holds one token again (it holds less now). */
static uint32_t rl_retry_after(const struct rl_entry *e)
{
    uint64_t missing = e->rule.period_ms - e->units;
    uint64_t per_second = (uint64_t)e->rule.rate * 1000;

    return (uint32_t)((missing + per_second - 1) / per_second);
}

struct ratelimit *ratelimit_new(size_t capacity)
{
    struct ratelimit *rl = calloc(1, sizeof(*rl));

    if (rl == NULL)
        return NULL;
    if (capacity < RATELIMIT_RULES_MAX)
        capacity = RATELIMIT_RULES_MAX;
    if (shard_table_init(&rl->table, capacity) < 0) {
        free(rl);
        return NULL;
    }
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (rl == NULL)
        return;
    shard_table_destroy(&rl->table, rl_node_free);
    free(rl);
}

const struct ratelimit_rule *ratelimit_check(struct ratelimit *rl,
                                             const struct ratelimit_rule *rules, size_t n_rules,
                                             const struct ratelimit_keys *keys, uint64_t now_ms,
                                             uint32_t *retry_after_s)
{
    struct rl_slot slots[RATELIMIT_RULES_MAX];
    size_t locked[RATELIMIT_RULES_MAX]; /* distinct shard indexes, ascending */
    struct shard_node *garbage = NULL;
    const struct ratelimit_rule *refused = NULL;
    size_t n = 0, n_locked = 0;

    if (rl == NULL || keys == NULL)
        return NULL;
    if (n_rules > RATELIMIT_RULES_MAX)
        n_rules = RATELIMIT_RULES_MAX; /* the config never gives more */
    for (size_t i = 0; i < n_rules; i++) {
        const char *v =
            (unsigned)rules[i].scope < RATELIMIT_SCOPE_COUNT ? keys->value[rules[i].scope] : NULL;
        struct rl_slot *s = &slots[n];
        size_t j;

        if (v == NULL || v[0] == '\0' || rules[i].rate == 0 || rules[i].burst == 0)
            continue; /* no key for this scope: this line does not limit the request */
        s->rule = &rules[i];
        s->key_len = rl_key(v, s->key);
        s->hash = rl_hash(rl, s->rule, s->key, s->key_len);
        s->shard = shard_index(&rl->table, s->hash);
        s->entry = NULL;
        n++;
        for (j = 0; j < n_locked && locked[j] < s->shard; j++)
            ;
        if (j == n_locked || locked[j] != s->shard) {
            memmove(&locked[j + 1], &locked[j], (n_locked - j) * sizeof(locked[0]));
            locked[j] = s->shard;
            n_locked++;
        }
    }
    if (n == 0)
        return NULL;

    for (size_t j = 0; j < n_locked; j++)
        pthread_mutex_lock(&rl->table.shards[locked[j]].lock);
    for (size_t i = 0; i < n; i++) {
        struct shard *sh = &rl->table.shards[slots[i].shard];
        struct rl_entry *e = rl_find(sh, &slots[i]);

        if (e == NULL)
            e = rl_create(sh, &slots[i], now_ms, &garbage);
        if (e == NULL)
            continue; /* out of memory: this line lets the request through */
        rl_refill(e, now_ms);
        shard_touch(sh, &e->node);
        e->pinned = true;
        slots[i].entry = e;
        if (refused == NULL && e->units < e->rule.period_ms) {
            refused = slots[i].rule;
            *retry_after_s = rl_retry_after(e);
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct rl_entry *e = slots[i].entry;

        if (e == NULL)
            continue;
        if (refused == NULL)
            e->units -= e->rule.period_ms;
        e->pinned = false;
    }
    for (size_t j = n_locked; j-- > 0;)
        pthread_mutex_unlock(&rl->table.shards[locked[j]].lock);
    shard_free_list(garbage, rl_node_free);
    return refused;
}

void ratelimit_retain(struct ratelimit *rl, const struct ratelimit_rule *rules, size_t n_rules)
{
    if (rl == NULL)
        return;
    for (size_t i = 0; i < rl->table.n_shards; i++) {
        struct shard *sh = &rl->table.shards[i];
        struct shard_node *garbage = NULL;

        pthread_mutex_lock(&sh->lock);
        for (struct shard_node *n = shard_oldest(sh), *newer; n; n = newer) {
            const struct rl_entry *e = SHARD_ENTRY(n, struct rl_entry, node);
            bool kept = false;

            newer = n->newer;
            for (size_t r = 0; r < n_rules && !kept; r++)
                kept = ratelimit_rule_equal(&e->rule, &rules[r]);
            if (kept)
                continue;
            shard_detach_onto(sh, n, &garbage);
        }
        pthread_mutex_unlock(&sh->lock);
        shard_free_list(garbage, rl_node_free);
    }
}

size_t ratelimit_size(struct ratelimit *rl)
{
    return rl == NULL ? 0 : shard_table_size(&rl->table);
}
