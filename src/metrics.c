/* metrics: per-worker counters and latency histograms, summed into Prometheus text on scrape.
 *
 * Every `struct worker_metrics` has exactly one writer (its worker), so counters move by a
 * relaxed load + store and the scraper reads them with relaxed loads; nothing is ever resized
 * or freed while workers run. The only lock is the label registry's, taken when a worker meets
 * a label value missing from its private cache, and never again once the registry is full.
 */
#include "mcpeek/hash.h"
#include "mcpeek/metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_LABEL_LIMIT_MAX 4096 /* label_limit is clamped to this (memory bound) */
#define METRICS_LABEL_MAX_LEN 128    /* longer label values are cut on a UTF-8 boundary */
#define METRICS_LABEL_EMPTY 0        /* "": no body, or not tools/call */
#define METRICS_LABEL_OTHER 1        /* over the limit, or not valid UTF-8 */
#define METRICS_LABEL_RESERVED 2
#define METRICS_CACHE_MAX 1024       /* per-worker label cache slots, per label */
#define METRICS_SERIES_CAPACITY 4096 /* per-worker (method, tool, status) slots */
#define METRICS_SERIES_REGULAR 3072  /* beyond this many, new series fold into "other" */
#define METRICS_ERRORS_CAPACITY 1024 /* per-worker (method, tool, code) slots */
#define METRICS_ERRORS_REGULAR 768
#define METRICS_STATUS_MAX 999 /* statuses outside 0..999 count as 0 */
/* JSON-RPC error codes kept as their own `code` value: the five of the JSON-RPC spec and the
 * server range -32000..-32099 (MCP's own codes live there). Any other counts as "other". */
#define METRICS_CODE_OTHER 0
#define METRICS_CODE_SERVER_FIRST 6 /* index of -32000; -32099 is index 105 */
#define METRICS_CODE_COUNT 106
#define METRICS_SECONDS_MAX 1e9 /* durations are clamped to [0, this] */
#define METRICS_NS UINT64_C(1000000000)

static const double metrics_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5,   1,      2.5,   5,    10,    30,   60};
static const char *const metrics_bound_text[] = {"0.001", "0.0025", "0.005", "0.01", "0.025",
                                                 "0.05",  "0.1",    "0.25",  "0.5",  "1",
                                                 "2.5",   "5",      "10",    "30",   "60"};
#define METRICS_N_BOUNDS (sizeof(metrics_bounds) / sizeof(metrics_bounds[0]))
#define METRICS_N_BUCKETS (METRICS_N_BOUNDS + 1) /* + the +Inf bucket */

static const char *const metrics_error_kind_name[UPSTREAM_ERR_KIND_COUNT] = {
    "connect", "timeout", "reset", "tls", "other", "dns"};

/* One registry slot: which interned value a hash leads to. */
struct metrics_label_slot {
    uint64_t hash;
    uint32_t index_plus1; /* 0 = empty */
};

/* Interned values of one label. `values[i]` is written once, before `count` is raised past i
 * (release), and then never changes. The slot table is written under `lock` until `full` is
 * set (release); after that nobody writes it and lookups need no lock. */
struct metrics_labels {
    pthread_mutex_t lock;
    char **values; /* owned, [limit]; each owned */
    uint32_t limit;
    _Atomic uint32_t count;
    _Atomic bool full;
    struct metrics_label_slot *slots; /* owned, [mask + 1] */
    uint32_t mask;
};

/* A worker's private memo of values it already interned; points into the registry. */
struct metrics_cache_slot {
    const char *value; /* NULL = empty */
    uint64_t hash;
    uint32_t len;
    uint32_t index;
};

struct metrics_cache {
    struct metrics_cache_slot *slots; /* owned, [mask + 1] */
    uint32_t mask;
    uint32_t used;
};

/* key: 0 = empty, else bit 63 | method << 32 | tool << 16 | status. The key is published
 * with a release store once, after which only `count` changes. */
struct metrics_series {
    _Atomic uint64_t key;
    _Atomic uint64_t count;
};

struct metrics_hist {
    _Atomic uint64_t buckets[METRICS_N_BUCKETS]; /* not cumulative; rendering adds up */
    _Atomic uint64_t sum_ns;
};

/* A fixed-size open-addressing table of labelled counters; one writer (its worker). */
struct metrics_table {
    struct metrics_series *series; /* owned, [capacity] */
    uint32_t capacity;             /* a power of two */
    uint32_t regular;              /* beyond this many series, new ones fold into "other" */
    uint32_t used;                 /* writer only */
};

struct worker_metrics {
    struct metrics *m;
    struct metrics_table requests;                 /* key: method, tool, status */
    struct metrics_table rpc_errors;               /* key: method, tool, code index */
    _Atomic uint64_t *tool_errors;                 /* owned, one per interned tool index */
    struct metrics_hist *hist;                     /* owned, one per interned rpc_method index */
    struct metrics_hist upstream_hist;             /* request sent -> upstream status line */
    struct metrics_cache method_cache, tool_cache; /* writer only */
    _Atomic uint64_t bytes_in, bytes_out, log_lines, log_write_failures, tls_handshake_failures;
    _Atomic uint64_t streams_opened, streams_closed;
    _Atomic uint64_t upstream_errors[UPSTREAM_ERR_KIND_COUNT];
    _Atomic uint64_t rate_limited[RATELIMIT_SCOPE_COUNT];
    _Atomic uint64_t access_denied[ACCESS_VERDICT_COUNT];
    _Atomic uint64_t upstream_requests[METRICS_UPSTREAM_MAX]; /* by upstream slot */
    _Atomic uint64_t upstream_failures[METRICS_UPSTREAM_MAX];
    _Atomic uint64_t upstream_session_lost[METRICS_UPSTREAM_MAX];
    _Atomic uint64_t shared_state_errors[SHARED_STATE_ERR_KIND_COUNT];
};

struct metrics {
    struct worker_metrics **workers; /* owned, [n_workers], each cache-line aligned */
    unsigned n_workers;
    char *version; /* owned */
    struct metrics_labels methods, tools;
    _Atomic uint64_t upstream_last_ok_ms;
    _Atomic uint64_t reloads_ok, reloads_failed;
    /* `upstream` label values (origins), registered by the main thread at each load; a slot
     * is written once before n_upstreams is raised past it (release), never changed. */
    char upstream_names[METRICS_UPSTREAM_MAX][METRICS_UPSTREAM_NAME_MAX];
    _Atomic unsigned n_upstreams;
    _Atomic int shared_state_connected; /* workers whose Redis connection is up */
};

/* ---- counting ---------------------------------------------------------------------------- */

/* Single writer: a relaxed load + store is enough and cheaper than a locked RMW. */
static inline void metrics_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t metrics_read(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static uint32_t metrics_pow2_at_least(uint32_t n)
{
    uint32_t p = 16;

    while (p < n)
        p <<= 1;
    return p;
}

/* ---- label registry ---------------------------------------------------------------------- */

/* Caller holds the lock, or `full` was seen set. Returns the index or -1. */
static int64_t metrics_labels_find(const struct metrics_labels *reg, const char *s, size_t len,
                                   uint64_t hash)
{
    for (uint32_t i = (uint32_t)hash & reg->mask;; i = (i + 1) & reg->mask) {
        const struct metrics_label_slot *slot = &reg->slots[i];
        const char *v;

        if (slot->index_plus1 == 0)
            return -1;
        v = reg->values[slot->index_plus1 - 1];
        if (slot->hash == hash && strlen(v) == len && memcmp(v, s, len) == 0)
            return slot->index_plus1 - 1;
    }
}

/* Caller holds the lock and checked there is room. Returns the index or -1 (no memory). */
static int64_t metrics_labels_add(struct metrics_labels *reg, const char *s, size_t len,
                                  uint64_t hash)
{
    uint32_t idx = atomic_load_explicit(&reg->count, memory_order_relaxed);
    char *copy = strndup(s, len);
    uint32_t i;

    if (copy == NULL)
        return -1;
    reg->values[idx] = copy;
    for (i = (uint32_t)hash & reg->mask; reg->slots[i].index_plus1 != 0; i = (i + 1) & reg->mask)
        ;
    reg->slots[i].hash = hash;
    reg->slots[i].index_plus1 = idx + 1;
    atomic_store_explicit(&reg->count, idx + 1, memory_order_release);
    if (idx + 1 == reg->limit)
        atomic_store_explicit(&reg->full, true, memory_order_release);
    return idx;
}

static int metrics_labels_init(struct metrics_labels *reg, uint32_t limit)
{
    static const char *const reserved[METRICS_LABEL_RESERVED] = {"", "other"};
    uint32_t nslots = metrics_pow2_at_least(limit * 2);

    reg->limit = limit;
    reg->mask = nslots - 1;
    reg->values = calloc(limit, sizeof(*reg->values));
    reg->slots = calloc(nslots, sizeof(*reg->slots));
    if (reg->values == NULL || reg->slots == NULL)
        return -1;
    for (int i = 0; i < METRICS_LABEL_RESERVED; i++) {
        const char *v = reserved[i];

        if (metrics_labels_add(reg, v, strlen(v), hash_fnv1a(v, strlen(v))) < 0)
            return -1;
    }
    /* last, so that a registry whose init failed never holds a mutex */
    return pthread_mutex_init(&reg->lock, NULL) == 0 ? 0 : -1;
}

/* Frees what init allocated; `lock_ok`: init returned 0, so the mutex exists. */
static void metrics_labels_free(struct metrics_labels *reg, bool lock_ok)
{
    uint32_t n = atomic_load_explicit(&reg->count, memory_order_relaxed);

    if (reg->values)
        for (uint32_t i = 0; i < n; i++)
            free(reg->values[i]);
    free(reg->values);
    free(reg->slots);
    if (lock_ok)
        pthread_mutex_destroy(&reg->lock);
}

/* Registry lookup for a value the worker had not cached: adds it while there is room. */
static uint32_t metrics_labels_intern(struct metrics_labels *reg, const char *s, size_t len,
                                      uint64_t hash)
{
    int64_t idx;

    if (atomic_load_explicit(&reg->full, memory_order_acquire)) {
        idx = metrics_labels_find(reg, s, len, hash); /* frozen: no lock needed */
        return idx < 0 ? METRICS_LABEL_OTHER : (uint32_t)idx;
    }
    pthread_mutex_lock(&reg->lock);
    idx = metrics_labels_find(reg, s, len, hash);
    if (idx < 0 && atomic_load_explicit(&reg->count, memory_order_relaxed) < reg->limit)
        idx = metrics_labels_add(reg, s, len, hash);
    pthread_mutex_unlock(&reg->lock);
    return idx < 0 ? METRICS_LABEL_OTHER : (uint32_t)idx;
}

/* ---- per-worker label cache -------------------------------------------------------------- */

static int metrics_cache_init(struct metrics_cache *c, uint32_t limit)
{
    uint32_t n = metrics_pow2_at_least(limit * 2);

    if (n > METRICS_CACHE_MAX)
        n = METRICS_CACHE_MAX;
    c->slots = calloc(n, sizeof(*c->slots));
    c->mask = n - 1;
    return c->slots ? 0 : -1;
}

/* Maps a client-supplied value to its label index; NULL maps to "". */
static uint32_t metrics_label_index(struct metrics_labels *reg, struct metrics_cache *c,
                                    const char *value)
{
    struct metrics_cache_slot *slot;
    size_t len;
    uint64_t hash;
    uint32_t i, idx;

    if (value == NULL)
        return METRICS_LABEL_EMPTY;
    len = strlen(value);
    len = utf8_prefix_len(value, len, METRICS_LABEL_MAX_LEN);
    hash = hash_fnv1a(value, len);
    for (i = (uint32_t)hash & c->mask;; i = (i + 1) & c->mask) {
        slot = &c->slots[i];
        if (slot->value == NULL)
            break;
        if (slot->hash == hash && slot->len == len && memcmp(slot->value, value, len) == 0)
            return slot->index;
    }
    /* a miss: cached values were valid, this one may not be (labels must be UTF-8) */
    if (!utf8_valid(value, len))
        return METRICS_LABEL_OTHER;
    idx = metrics_labels_intern(reg, value, len, hash);
    /* "other" is not cached: values beyond the limit are unbounded, the cache is not */
    if (idx != METRICS_LABEL_OTHER && c->used < (c->mask + 1) / 4 * 3) {
        slot->value = reg->values[idx];
        slot->hash = hash;
        slot->len = (uint32_t)len;
        slot->index = idx;
        c->used++;
    }
    return idx;
}

/* ---- series table ------------------------------------------------------------------------ */

static uint64_t metrics_series_key(uint32_t method, uint32_t tool, uint32_t status)
{
    return (1ULL << 63) | ((uint64_t)method << 32) | ((uint64_t)tool << 16) | status;
}

/* The slot for `key`, claiming an empty one when `may_add`; NULL when absent and not added. */
static struct metrics_series *metrics_series_slot(struct metrics_table *t, uint64_t key,
                                                  bool may_add)
{
    const uint32_t mask = t->capacity - 1;
    uint32_t i = (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> 40) & mask;

    /* terminates: regular keys stop at t->regular and folded keys add at most one per value
     * of the third label (METRICS_STATUS_MAX + 1, or METRICS_CODE_COUNT), so empty slots
     * always remain */
    for (;; i = (i + 1) & mask) {
        struct metrics_series *s = &t->series[i];
        uint64_t k = atomic_load_explicit(&s->key, memory_order_relaxed); /* our own write */

        if (k == key)
            return s;
        if (k == 0) {
            if (!may_add)
                return NULL;
            t->used++;
            atomic_store_explicit(&s->key, key, memory_order_release);
            return s;
        }
    }
}

/* Counts one (method, tool, third) series, folding into ("other", "other", third) once the
 * table holds its regular share. */
static void metrics_table_count(struct metrics_table *t, uint32_t method, uint32_t tool,
                                uint32_t third)
{
    struct metrics_series *s;

    s = metrics_series_slot(t, metrics_series_key(method, tool, third), t->used < t->regular);
    if (s == NULL)
        s = metrics_series_slot(
            t, metrics_series_key(METRICS_LABEL_OTHER, METRICS_LABEL_OTHER, third), true);
    metrics_add(&s->count, 1);
}

static int metrics_table_init(struct metrics_table *t, uint32_t capacity, uint32_t regular)
{
    t->series = calloc(capacity, sizeof(*t->series));
    t->capacity = capacity;
    t->regular = regular;
    return t->series ? 0 : -1;
}

/* ---- public: lifecycle ------------------------------------------------------------------- */

static void metrics_worker_free(struct worker_metrics *wm)
{
    if (wm == NULL)
        return;
    free(wm->tool_cache.slots);
    free(wm->method_cache.slots);
    free(wm->hist);
    free(wm->tool_errors);
    free(wm->rpc_errors.series);
    free(wm->requests.series);
    free(wm);
}

static struct worker_metrics *metrics_worker_new(struct metrics *m)
{
    struct worker_metrics *wm = NULL;

    /* own cache lines: workers must not false-share their counters */
    if (posix_memalign((void **)&wm, 64, sizeof(*wm)) != 0)
        return NULL;
    memset(wm, 0, sizeof(*wm));
    wm->m = m;
    wm->hist = calloc(m->methods.limit, sizeof(*wm->hist));
    wm->tool_errors = calloc(m->tools.limit, sizeof(*wm->tool_errors));
    if (metrics_table_init(&wm->requests, METRICS_SERIES_CAPACITY, METRICS_SERIES_REGULAR) < 0 ||
        metrics_table_init(&wm->rpc_errors, METRICS_ERRORS_CAPACITY, METRICS_ERRORS_REGULAR) < 0 ||
        wm->hist == NULL || wm->tool_errors == NULL ||
        metrics_cache_init(&wm->method_cache, m->methods.limit) < 0 ||
        metrics_cache_init(&wm->tool_cache, m->tools.limit) < 0) {
        metrics_worker_free(wm);
        return NULL;
    }
    return wm;
}

struct metrics *metrics_new(unsigned n_workers, unsigned label_limit, const char *version)
{
    struct metrics *m = calloc(1, sizeof(*m));
    bool methods_lock = false, tools_lock = false;
    uint32_t limit;

    if (m == NULL)
        return NULL;
    if (label_limit > METRICS_LABEL_LIMIT_MAX)
        label_limit = METRICS_LABEL_LIMIT_MAX;
    limit = label_limit + METRICS_LABEL_RESERVED;
    if (metrics_labels_init(&m->methods, limit) < 0)
        goto fail;
    methods_lock = true;
    if (metrics_labels_init(&m->tools, limit) < 0)
        goto fail;
    tools_lock = true;
    m->version = strdup(version ? version : "");
    m->workers = calloc(n_workers ? n_workers : 1, sizeof(*m->workers));
    if (m->version == NULL || m->workers == NULL)
        goto fail;
    for (unsigned i = 0; i < n_workers; i++) {
        m->workers[i] = metrics_worker_new(m);
        if (m->workers[i] == NULL)
            goto fail;
        m->n_workers = i + 1;
    }
    m->n_workers = n_workers;
    return m;

fail:
    if (m->workers)
        for (unsigned i = 0; i < m->n_workers; i++)
            metrics_worker_free(m->workers[i]);
    free(m->workers);
    free(m->version);
    metrics_labels_free(&m->tools, tools_lock);
    metrics_labels_free(&m->methods, methods_lock);
    free(m);
    return NULL;
}

void metrics_free(struct metrics *m)
{
    if (m == NULL)
        return;
    for (unsigned i = 0; i < m->n_workers; i++)
        metrics_worker_free(m->workers[i]);
    free(m->workers);
    free(m->version);
    metrics_labels_free(&m->tools, true);
    metrics_labels_free(&m->methods, true);
    free(m);
}

struct worker_metrics *metrics_worker(struct metrics *m, unsigned worker_index)
{
    if (m == NULL || worker_index >= m->n_workers)
        return NULL;
    return m->workers[worker_index];
}

/* ---- public: hot path -------------------------------------------------------------------- */

/* The tool label: only a tools/call names one. */
static uint32_t metrics_tool_index(struct worker_metrics *wm, const char *rpc_method,
                                   const char *tool)
{
    if (rpc_method && tool && strcmp(rpc_method, "tools/call") == 0)
        return metrics_label_index(&wm->m->tools, &wm->tool_cache, tool);
    return METRICS_LABEL_EMPTY;
}

static void metrics_observe(struct metrics_hist *h, double seconds)
{
    double d = seconds;
    size_t b;

    if (!(d > 0)) /* negative, zero or NaN */
        d = 0;
    if (d > METRICS_SECONDS_MAX)
        d = METRICS_SECONDS_MAX;
    for (b = 0; b < METRICS_N_BOUNDS && d > metrics_bounds[b]; b++)
        ;
    metrics_add(&h->buckets[b], 1);
    metrics_add(&h->sum_ns, (uint64_t)(d * (double)METRICS_NS + 0.5));
}

/* Index of a JSON-RPC error code among the `code` label values. */
static uint32_t metrics_code_index(long long code)
{
    static const long long spec[] = {-32700, -32600, -32601, -32602, -32603};

    for (uint32_t i = 0; i < sizeof(spec) / sizeof(spec[0]); i++)
        if (code == spec[i])
            return i + 1;
    if (code <= -32000 && code >= -32099)
        return METRICS_CODE_SERVER_FIRST + (uint32_t)(-32000 - code);
    return METRICS_CODE_OTHER;
}

/* The label text of a code index: decimal, or "other". */
static const char *metrics_code_text(uint32_t idx, char *buf, size_t len)
{
    static const char *const spec[] = {"-32700", "-32600", "-32601", "-32602", "-32603"};

    if (idx >= 1 && idx < METRICS_CODE_SERVER_FIRST)
        return spec[idx - 1];
    if (idx >= METRICS_CODE_SERVER_FIRST && idx < METRICS_CODE_COUNT) {
        snprintf(buf, len, "%d", -32000 - (int)(idx - METRICS_CODE_SERVER_FIRST));
        return buf;
    }
    return "other";
}

void metrics_exchange(struct worker_metrics *wm, const char *rpc_method, const char *tool,
                      int status, double duration_seconds, uint64_t bytes_in, uint64_t bytes_out)
{
    uint32_t method_idx, tool_idx, st;

    if (wm == NULL)
        return;
    method_idx = metrics_label_index(&wm->m->methods, &wm->method_cache, rpc_method);
    tool_idx = metrics_tool_index(wm, rpc_method, tool);
    st = (status >= 0 && status <= METRICS_STATUS_MAX) ? (uint32_t)status : 0;
    metrics_table_count(&wm->requests, method_idx, tool_idx, st);
    metrics_observe(&wm->hist[method_idx], duration_seconds);
    metrics_add(&wm->bytes_in, bytes_in);
    metrics_add(&wm->bytes_out, bytes_out);
}

void metrics_rpc_error(struct worker_metrics *wm, const char *rpc_method, const char *tool,
                       bool has_code, long long code)
{
    uint32_t method_idx;

    if (wm == NULL)
        return;
    method_idx = metrics_label_index(&wm->m->methods, &wm->method_cache, rpc_method);
    metrics_table_count(&wm->rpc_errors, method_idx, metrics_tool_index(wm, rpc_method, tool),
                        has_code ? metrics_code_index(code) : METRICS_CODE_OTHER);
}

void metrics_tool_error(struct worker_metrics *wm, const char *tool)
{
    if (wm == NULL)
        return;
    metrics_add(&wm->tool_errors[metrics_tool_index(wm, "tools/call", tool)], 1);
}

void metrics_upstream_latency(struct worker_metrics *wm, double seconds)
{
    if (wm)
        metrics_observe(&wm->upstream_hist, seconds);
}

void metrics_log_write_failure(struct worker_metrics *wm, uint64_t lines)
{
    if (wm)
        metrics_add(&wm->log_write_failures, lines);
}

void metrics_upstream_error(struct worker_metrics *wm, enum upstream_error_kind kind)
{
    if (wm == NULL)
        return;
    if ((unsigned)kind >= UPSTREAM_ERR_KIND_COUNT)
        kind = UPSTREAM_ERR_OTHER;
    metrics_add(&wm->upstream_errors[kind], 1);
}

unsigned metrics_upstream_slot(struct metrics *m, const char *origin)
{
    unsigned n = atomic_load_explicit(&m->n_upstreams, memory_order_acquire);
    for (unsigned i = 1; i < n; i++)
        if (strcmp(m->upstream_names[i], origin) == 0)
            return i;
    if (n == 0) { /* slot 0 is "other": origins past the bound */
        snprintf(m->upstream_names[0], METRICS_UPSTREAM_NAME_MAX, "other");
        n = 1;
    }
    if (n == METRICS_UPSTREAM_MAX) {
        atomic_store_explicit(&m->n_upstreams, n, memory_order_release);
        return 0;
    }
    snprintf(m->upstream_names[n], METRICS_UPSTREAM_NAME_MAX, "%s", origin);
    atomic_store_explicit(&m->n_upstreams, n + 1, memory_order_release);
    return n;
}

void metrics_upstream_request(struct worker_metrics *wm, unsigned slot)
{
    if (wm && slot < METRICS_UPSTREAM_MAX)
        metrics_add(&wm->upstream_requests[slot], 1);
}

void metrics_upstream_failure(struct worker_metrics *wm, unsigned slot)
{
    if (wm && slot < METRICS_UPSTREAM_MAX)
        metrics_add(&wm->upstream_failures[slot], 1);
}

void metrics_upstream_session_lost(struct worker_metrics *wm, unsigned slot)
{
    if (wm && slot < METRICS_UPSTREAM_MAX)
        metrics_add(&wm->upstream_session_lost[slot], 1);
}

void metrics_shared_state_error(struct worker_metrics *wm, enum shared_state_error kind)
{
    if (wm && (unsigned)kind < SHARED_STATE_ERR_KIND_COUNT)
        metrics_add(&wm->shared_state_errors[kind], 1);
}

void metrics_shared_state_connected(struct metrics *m, int delta)
{
    if (m)
        atomic_fetch_add_explicit(&m->shared_state_connected, delta, memory_order_relaxed);
}

const char *metrics_upstream_name(struct metrics *m, unsigned slot)
{
    unsigned n = atomic_load_explicit(&m->n_upstreams, memory_order_acquire);
    return slot < n ? m->upstream_names[slot] : "other";
}

void metrics_stream_opened(struct worker_metrics *wm)
{
    if (wm)
        metrics_add(&wm->streams_opened, 1);
}

void metrics_stream_closed(struct worker_metrics *wm)
{
    uint64_t v;

    if (wm == NULL)
        return;
    /* release: a scraper that sees this close also sees the matching open */
    v = atomic_load_explicit(&wm->streams_closed, memory_order_relaxed);
    atomic_store_explicit(&wm->streams_closed, v + 1, memory_order_release);
}

void metrics_log_line(struct worker_metrics *wm)
{
    if (wm)
        metrics_add(&wm->log_lines, 1);
}

void metrics_rate_limited(struct worker_metrics *wm, enum ratelimit_scope scope)
{
    if (wm && (unsigned)scope < RATELIMIT_SCOPE_COUNT)
        metrics_add(&wm->rate_limited[scope], 1);
}

void metrics_tls_handshake_failure(struct worker_metrics *wm)
{
    if (wm)
        metrics_add(&wm->tls_handshake_failures, 1);
}

void metrics_access_denied(struct worker_metrics *wm, enum access_verdict reason)
{
    if (wm && reason > ACCESS_OK && reason < ACCESS_VERDICT_COUNT)
        metrics_add(&wm->access_denied[reason], 1);
}

void metrics_upstream_ok(struct metrics *m, uint64_t now_ms)
{
    uint64_t cur;

    if (m == NULL)
        return;
    /* several workers write this one: keep the largest */
    cur = atomic_load_explicit(&m->upstream_last_ok_ms, memory_order_relaxed);
    while (now_ms > cur &&
           !atomic_compare_exchange_weak_explicit(&m->upstream_last_ok_ms, &cur, now_ms,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

uint64_t metrics_upstream_last_ok_ms(const struct metrics *m)
{
    if (m == NULL)
        return 0;
    return atomic_load_explicit((_Atomic uint64_t *)&m->upstream_last_ok_ms, memory_order_relaxed);
}

void metrics_config_reload(struct metrics *m, bool success)
{
    if (m == NULL)
        return;
    atomic_fetch_add_explicit(success ? &m->reloads_ok : &m->reloads_failed, 1,
                              memory_order_relaxed);
}

/* ---- rendering --------------------------------------------------------------------------- */

/* One series of a table summed over workers, with its label values resolved. */
struct metrics_row {
    uint64_t key;
    uint64_t count;
    const char *method;
    const char *tool;
    uint32_t status; /* the third label: an HTTP status, or a code index */
};

/* A labelled counter family rendered from one metrics_table of every worker. */
struct metrics_family {
    const char *name, *help;
    size_t table_offset; /* of the struct metrics_table in struct worker_metrics */
    const char *third;   /* name of the third label */
    bool third_is_code;  /* the third label holds a code index, not a status */
};

static int metrics_row_cmp(const void *pa, const void *pb)
{
    const struct metrics_row *a = pa, *b = pb;
    int c = strcmp(a->method, b->method);

    if (c == 0)
        c = strcmp(a->tool, b->tool);
    if (c == 0)
        c = (a->status > b->status) - (a->status < b->status);
    return c;
}

/* Label value escaping of the text format: backslash, double quote and newline. */
static void metrics_put_label(struct strbuf *out, const char *name, const char *value)
{
    strbuf_puts(out, name);
    strbuf_puts(out, "=\"");
    for (const char *p = value; *p; p++) {
        if (*p == '\\')
            strbuf_puts(out, "\\\\");
        else if (*p == '"')
            strbuf_puts(out, "\\\"");
        else if (*p == '\n')
            strbuf_puts(out, "\\n");
        else
            strbuf_putc(out, *p);
    }
    strbuf_putc(out, '"');
}

static void metrics_put_header(struct strbuf *out, const char *name, const char *type,
                               const char *help)
{
    strbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *metrics_label_name(struct metrics_labels *reg, uint32_t n, uint32_t idx)
{
    return idx < n ? reg->values[idx] : "other";
}

static void metrics_render_table(struct metrics *m, struct strbuf *out,
                                 const struct metrics_family *f)
{
    struct metrics_row *rows = NULL;
    size_t n = 0, cap = 0, i, j;
    uint32_t n_methods, n_tools;
    char code[16];

    metrics_put_header(out, f->name, "counter", f->help);
    for (unsigned w = 0; w < m->n_workers; w++) {
        struct metrics_table *t = (struct metrics_table *)((char *)m->workers[w] + f->table_offset);

        for (i = 0; i < t->capacity; i++) {
            uint64_t key = atomic_load_explicit(&t->series[i].key, memory_order_acquire);

            if (key == 0)
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                struct metrics_row *r = realloc(rows, ncap * sizeof(*rows));

                if (r == NULL) {
                    out->oom = true; /* the scrape is incomplete; say so to the caller */
                    goto out;
                }
                rows = r;
                cap = ncap;
            }
            rows[n].key = key;
            rows[n].count = metrics_read(&t->series[i].count);
            n++;
        }
    }
    /* after the keys (acquire): every index a key holds is below these counts */
    n_methods = atomic_load_explicit(&m->methods.count, memory_order_acquire);
    n_tools = atomic_load_explicit(&m->tools.count, memory_order_acquire);
    for (i = 0; i < n; i++) {
        rows[i].method = metrics_label_name(&m->methods, n_methods, (rows[i].key >> 32) & 0xffff);
        rows[i].tool = metrics_label_name(&m->tools, n_tools, (rows[i].key >> 16) & 0xffff);
        rows[i].status = (uint32_t)(rows[i].key & 0xffff);
    }
    if (n > 0)
        qsort(rows, n, sizeof(*rows), metrics_row_cmp);
    for (i = 0; i < n; i = j) {
        uint64_t total = 0;

        /* the same labels from several workers become one series */
        for (j = i; j < n && metrics_row_cmp(&rows[i], &rows[j]) == 0; j++)
            total += rows[j].count;
        strbuf_puts(out, f->name);
        strbuf_putc(out, '{');
        metrics_put_label(out, "rpc_method", rows[i].method);
        strbuf_putc(out, ',');
        metrics_put_label(out, "tool", rows[i].tool);
        if (f->third_is_code)
            strbuf_printf(out, ",%s=\"%s\"} %" PRIu64 "\n", f->third,
                          metrics_code_text(rows[i].status, code, sizeof(code)), total);
        else
            strbuf_printf(out, ",%s=\"%" PRIu32 "\"} %" PRIu64 "\n", f->third, rows[i].status,
                          total);
    }
out:
    free(rows);
}

/* Buckets, sum and count of a histogram without labels. */
static void metrics_put_histogram(struct strbuf *out, const char *name, const uint64_t *buckets,
                                  uint64_t sum_ns)
{
    uint64_t cum = 0;

    for (size_t b = 0; b < METRICS_N_BUCKETS; b++) {
        cum += buckets[b];
        strbuf_printf(out, "%s_bucket{le=\"%s\"} %" PRIu64 "\n", name,
                      b < METRICS_N_BOUNDS ? metrics_bound_text[b] : "+Inf", cum);
    }
    /* integer arithmetic: the C locale's decimal point must not matter */
    strbuf_printf(out, "%s_sum %" PRIu64 ".%09" PRIu64 "\n", name, sum_ns / METRICS_NS,
                  sum_ns % METRICS_NS);
    strbuf_printf(out, "%s_count %" PRIu64 "\n", name, cum);
}

static void metrics_render_upstream_histogram(struct metrics *m, struct strbuf *out)
{
    uint64_t buckets[METRICS_N_BUCKETS] = {0}, sum_ns = 0;

    metrics_put_header(out, "mcpeek_upstream_duration_seconds", "histogram",
                       "Time from request sent upstream to the upstream's status line.");
    for (unsigned w = 0; w < m->n_workers; w++) {
        struct metrics_hist *h = &m->workers[w]->upstream_hist;

        for (size_t b = 0; b < METRICS_N_BUCKETS; b++)
            buckets[b] += metrics_read(&h->buckets[b]);
        sum_ns += metrics_read(&h->sum_ns);
    }
    metrics_put_histogram(out, "mcpeek_upstream_duration_seconds", buckets, sum_ns);
}

static void metrics_render_tool_errors(struct metrics *m, struct strbuf *out)
{
    uint32_t n_tools = atomic_load_explicit(&m->tools.count, memory_order_acquire);

    metrics_put_header(out, "mcpeek_tool_errors_total", "counter",
                       "tools/call answered with a result saying isError: true, by tool.");
    for (uint32_t ti = 0; ti < n_tools; ti++) {
        uint64_t total = 0;

        for (unsigned w = 0; w < m->n_workers; w++)
            total += metrics_read(&m->workers[w]->tool_errors[ti]);
        if (total == 0)
            continue;
        strbuf_puts(out, "mcpeek_tool_errors_total{");
        metrics_put_label(out, "tool", m->tools.values[ti]);
        strbuf_printf(out, "} %" PRIu64 "\n", total);
    }
}

static void metrics_render_histogram(struct metrics *m, struct strbuf *out)
{
    uint32_t n_methods = atomic_load_explicit(&m->methods.count, memory_order_acquire);

    metrics_put_header(out, "mcpeek_request_duration_seconds", "histogram",
                       "Time from request received to exchange finished, by JSON-RPC method.");
    for (uint32_t mi = 0; mi < n_methods; mi++) {
        uint64_t buckets[METRICS_N_BUCKETS] = {0}, sum_ns = 0, cum = 0;
        const char *name = m->methods.values[mi];

        for (unsigned w = 0; w < m->n_workers; w++) {
            struct metrics_hist *h = &m->workers[w]->hist[mi];

            for (size_t b = 0; b < METRICS_N_BUCKETS; b++)
                buckets[b] += metrics_read(&h->buckets[b]);
            sum_ns += metrics_read(&h->sum_ns);
        }
        for (size_t b = 0; b < METRICS_N_BUCKETS; b++)
            cum += buckets[b];
        if (cum == 0)
            continue; /* interned but never observed (e.g. the reserved "other") */
        cum = 0;
        for (size_t b = 0; b < METRICS_N_BUCKETS; b++) {
            cum += buckets[b];
            strbuf_puts(out, "mcpeek_request_duration_seconds_bucket{");
            metrics_put_label(out, "rpc_method", name);
            strbuf_printf(out, ",le=\"%s\"} %" PRIu64 "\n",
                          b < METRICS_N_BOUNDS ? metrics_bound_text[b] : "+Inf", cum);
        }
        /* integer arithmetic: the C locale's decimal point must not matter */
        strbuf_puts(out, "mcpeek_request_duration_seconds_sum{");
        metrics_put_label(out, "rpc_method", name);
        strbuf_printf(out, "} %" PRIu64 ".%09" PRIu64 "\n", sum_ns / METRICS_NS,
                      sum_ns % METRICS_NS);
        strbuf_puts(out, "mcpeek_request_duration_seconds_count{");
        metrics_put_label(out, "rpc_method", name);
        strbuf_printf(out, "} %" PRIu64 "\n", cum);
    }
}

/* Sum of one per-worker counter, found by its offset in struct worker_metrics. */
static uint64_t metrics_sum(struct metrics *m, size_t offset)
{
    uint64_t total = 0;

    for (unsigned w = 0; w < m->n_workers; w++)
        total += metrics_read((_Atomic uint64_t *)((char *)m->workers[w] + offset));
    return total;
}

/* One counter per value of an enum label, each summed over the workers: counters[k] at
 * `offset` in struct worker_metrics, labelled values[k], for k in [first, count). */
static void metrics_render_by_label(struct metrics *m, struct strbuf *out, const char *name,
                                    const char *help, const char *label, size_t offset,
                                    const char *const *values, int first, int count)
{
    metrics_put_header(out, name, "counter", help);
    for (int k = first; k < count; k++)
        strbuf_printf(out, "%s{%s=\"%s\"} %" PRIu64 "\n", name, label, values[k],
                      metrics_sum(m, offset + (size_t)k * sizeof(_Atomic uint64_t)));
}

static void metrics_put_counter(struct strbuf *out, const char *name, const char *help,
                                uint64_t value)
{
    metrics_put_header(out, name, "counter", help);
    strbuf_printf(out, "%s %" PRIu64 "\n", name, value);
}

/* The per-upstream counters; only registered origins are written, "other" only when used. */
static void metrics_render_upstreams(struct metrics *m, struct strbuf *out)
{
    static const struct {
        const char *name, *help;
        size_t offset;
    } families[] = {
        {"mcpeek_upstream_requests_total", "Requests sent to each upstream.",
         offsetof(struct worker_metrics, upstream_requests)},
        {"mcpeek_upstream_failures_total",
         "Connect failures, timeouts before an answer and resets per upstream; each marks the "
         "upstream down for upstream_fail_timeout.",
         offsetof(struct worker_metrics, upstream_failures)},
        {"mcpeek_upstream_sessions_lost_total",
         "Requests of a session whose upstream was down, answered 404 (session not found).",
         offsetof(struct worker_metrics, upstream_session_lost)},
    };
    unsigned n = atomic_load_explicit(&m->n_upstreams, memory_order_acquire);
    for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
        metrics_put_header(out, families[f].name, "counter", families[f].help);
        for (unsigned i = 0; i < n; i++) {
            uint64_t v = metrics_sum(m, families[f].offset + (size_t)i * sizeof(_Atomic uint64_t));
            if (i == 0 && v == 0)
                continue;
            strbuf_printf(out, "%s{", families[f].name);
            metrics_put_label(out, "upstream", m->upstream_names[i]);
            strbuf_printf(out, "} %" PRIu64 "\n", v);
        }
    }
}

void metrics_render(struct metrics *m, struct strbuf *out)
{
    uint64_t opened = 0, closed = 0;
    static const struct metrics_family requests = {
        "mcpeek_requests_total",
        "MCP exchanges finished, by JSON-RPC method, tool and HTTP status.",
        offsetof(struct worker_metrics, requests), "status", false};
    static const struct metrics_family rpc_errors = {
        "mcpeek_rpc_errors_total",
        "Exchanges answered with a JSON-RPC error, by JSON-RPC method, tool and error code.",
        offsetof(struct worker_metrics, rpc_errors), "code", true};

    if (m == NULL)
        return;
    metrics_render_table(m, out, &requests);
    metrics_render_histogram(m, out);
    metrics_render_upstream_histogram(m, out);
    metrics_render_table(m, out, &rpc_errors);
    metrics_render_tool_errors(m, out);

    metrics_render_by_label(m, out, "mcpeek_upstream_errors_total",
                            "Exchanges that failed talking to the upstream, by kind.", "kind",
                            offsetof(struct worker_metrics, upstream_errors),
                            metrics_error_kind_name, 0, UPSTREAM_ERR_KIND_COUNT);

    metrics_render_upstreams(m, out);

    static const char *const shared_kinds[SHARED_STATE_ERR_KIND_COUNT] = {"unavailable", "timeout",
                                                                          "reply", "disconnect"};
    metrics_render_by_label(
        m, out, "mcpeek_shared_state_errors_total",
        "Redis (shared_state) operations that fell back to local state, by cause.", "kind",
        offsetof(struct worker_metrics, shared_state_errors), shared_kinds, 0,
        SHARED_STATE_ERR_KIND_COUNT);
    metrics_put_header(out, "mcpeek_shared_state_connections", "gauge",
                       "Workers whose Redis (shared_state) connection is up.");
    strbuf_printf(out, "mcpeek_shared_state_connections %d\n",
                  atomic_load_explicit(&m->shared_state_connected, memory_order_relaxed));

    const char *scopes[RATELIMIT_SCOPE_COUNT];
    for (int k = 0; k < RATELIMIT_SCOPE_COUNT; k++)
        scopes[k] = ratelimit_scope_name((enum ratelimit_scope)k);
    metrics_render_by_label(m, out, "mcpeek_rate_limited_total",
                            "Requests refused with 429 by a rate_limit line, by the line's scope.",
                            "scope", offsetof(struct worker_metrics, rate_limited), scopes, 0,
                            RATELIMIT_SCOPE_COUNT);
    static const char *const denied_reason[ACCESS_VERDICT_COUNT] = {
        [ACCESS_HOST] = "host", [ACCESS_ORIGIN] = "origin", [ACCESS_TOKEN] = "token"};
    metrics_render_by_label(
        m, out, "mcpeek_access_denied_total",
        "Requests refused by the Host, Origin or bearer-token check, by reason.", "reason",
        offsetof(struct worker_metrics, access_denied), denied_reason, ACCESS_HOST,
        ACCESS_VERDICT_COUNT);

    for (unsigned w = 0; w < m->n_workers; w++) {
        struct worker_metrics *wm = m->workers[w];

        /* closed first (acquire), then opened: never count a close without its open */
        closed += atomic_load_explicit(&wm->streams_closed, memory_order_acquire);
        opened += metrics_read(&wm->streams_opened);
    }
    metrics_put_header(out, "mcpeek_active_streams", "gauge",
                       "SSE responses currently being relayed.");
    strbuf_printf(out, "mcpeek_active_streams %" PRIu64 "\n",
                  opened > closed ? opened - closed : 0);

    metrics_put_counter(out, "mcpeek_log_lines_total", "Access-log lines written.",
                        metrics_sum(m, offsetof(struct worker_metrics, log_lines)));
    metrics_put_counter(out, "mcpeek_log_write_failures_total",
                        "Access-log lines lost: the write failed, or no memory to format them.",
                        metrics_sum(m, offsetof(struct worker_metrics, log_write_failures)));
    metrics_put_counter(out, "mcpeek_tls_handshake_failures_total",
                        "HTTPS connections closed before their TLS handshake completed.",
                        metrics_sum(m, offsetof(struct worker_metrics, tls_handshake_failures)));
    metrics_put_counter(out, "mcpeek_bytes_in_total", "Request body bytes received from clients.",
                        metrics_sum(m, offsetof(struct worker_metrics, bytes_in)));
    metrics_put_counter(out, "mcpeek_bytes_out_total", "Response body bytes sent to clients.",
                        metrics_sum(m, offsetof(struct worker_metrics, bytes_out)));

    metrics_put_header(out, "mcpeek_config_reloads_total", "counter",
                       "Configuration reloads, by result.");
    strbuf_printf(out, "mcpeek_config_reloads_total{result=\"success\"} %" PRIu64 "\n",
                  atomic_load_explicit(&m->reloads_ok, memory_order_relaxed));
    strbuf_printf(out, "mcpeek_config_reloads_total{result=\"failure\"} %" PRIu64 "\n",
                  atomic_load_explicit(&m->reloads_failed, memory_order_relaxed));

    metrics_put_header(out, "mcpeek_build_info", "gauge",
                       "Always 1; the version label names the running build.");
    strbuf_puts(out, "mcpeek_build_info{");
    metrics_put_label(out, "version", m->version);
    strbuf_puts(out, "} 1\n");

    metrics_put_header(out, "mcpeek_workers", "gauge", "Worker threads serving requests.");
    strbuf_printf(out, "mcpeek_workers %u\n", m->n_workers);
}

void metrics_render_upstream_ready(struct strbuf *out, bool ready)
{
    metrics_put_header(out, "mcpeek_upstream_ready", "gauge",
                       "1 when /readyz answers 200: the upstream answered recently.");
    strbuf_printf(out, "mcpeek_upstream_ready %d\n", ready ? 1 : 0);
}
