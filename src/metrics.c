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
#define METRICS_STATUS_MAX 999       /* statuses outside 0..999 count as 0 */
#define METRICS_SECONDS_MAX 1e9      /* durations are clamped to [0, this] */
#define METRICS_NS UINT64_C(1000000000)

static const double metrics_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5,   1,      2.5,   5,    10,    30,   60};
static const char *const metrics_bound_text[] = {"0.001", "0.0025", "0.005", "0.01", "0.025",
                                                 "0.05",  "0.1",    "0.25",  "0.5",  "1",
                                                 "2.5",   "5",      "10",    "30",   "60"};
#define METRICS_N_BOUNDS (sizeof(metrics_bounds) / sizeof(metrics_bounds[0]))
#define METRICS_N_BUCKETS (METRICS_N_BOUNDS + 1) /* + the +Inf bucket */

static const char *const metrics_error_kind_name[UPSTREAM_ERR_KIND_COUNT] = {
    "connect", "timeout", "reset", "tls", "other"};

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

struct worker_metrics {
    struct metrics *m;
    struct metrics_series *series;                 /* owned, [METRICS_SERIES_CAPACITY] */
    uint32_t series_used;                          /* writer only */
    struct metrics_hist *hist;                     /* owned, one per interned rpc_method index */
    struct metrics_cache method_cache, tool_cache; /* writer only */
    _Atomic uint64_t bytes_in, bytes_out, log_lines, tls_handshake_failures;
    _Atomic uint64_t streams_opened, streams_closed;
    _Atomic uint64_t upstream_errors[UPSTREAM_ERR_KIND_COUNT];
    _Atomic uint64_t access_denied[ACCESS_VERDICT_COUNT];
};

struct metrics {
    struct worker_metrics **workers; /* owned, [n_workers], each cache-line aligned */
    unsigned n_workers;
    char *version; /* owned */
    struct metrics_labels methods, tools;
    _Atomic uint64_t upstream_last_ok_ms;
    _Atomic uint64_t reloads_ok, reloads_failed;
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
static struct metrics_series *metrics_series_slot(struct worker_metrics *wm, uint64_t key,
                                                  bool may_add)
{
    const uint32_t mask = METRICS_SERIES_CAPACITY - 1;
    uint32_t i = (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> 40) & mask;

    /* terminates: regular keys stop at METRICS_SERIES_REGULAR and folded keys add at most
     * METRICS_STATUS_MAX + 1 more, so empty slots always remain */
    for (;; i = (i + 1) & mask) {
        struct metrics_series *s = &wm->series[i];
        uint64_t k = atomic_load_explicit(&s->key, memory_order_relaxed); /* our own write */

        if (k == key)
            return s;
        if (k == 0) {
            if (!may_add)
                return NULL;
            wm->series_used++;
            atomic_store_explicit(&s->key, key, memory_order_release);
            return s;
        }
    }
}

/* ---- public: lifecycle ------------------------------------------------------------------- */

static void metrics_worker_free(struct worker_metrics *wm)
{
    if (wm == NULL)
        return;
    free(wm->tool_cache.slots);
    free(wm->method_cache.slots);
    free(wm->hist);
    free(wm->series);
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
    wm->series = calloc(METRICS_SERIES_CAPACITY, sizeof(*wm->series));
    wm->hist = calloc(m->methods.limit, sizeof(*wm->hist));
    if (wm->series == NULL || wm->hist == NULL ||
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

void metrics_exchange(struct worker_metrics *wm, const char *rpc_method, const char *tool,
                      int status, double duration_seconds, uint64_t bytes_in, uint64_t bytes_out)
{
    struct metrics_series *s;
    struct metrics_hist *h;
    uint32_t method_idx, tool_idx = METRICS_LABEL_EMPTY, st;
    size_t b;
    double d = duration_seconds;

    if (wm == NULL)
        return;
    method_idx = metrics_label_index(&wm->m->methods, &wm->method_cache, rpc_method);
    if (rpc_method && tool && strcmp(rpc_method, "tools/call") == 0)
        tool_idx = metrics_label_index(&wm->m->tools, &wm->tool_cache, tool);
    st = (status >= 0 && status <= METRICS_STATUS_MAX) ? (uint32_t)status : 0;

    s = metrics_series_slot(wm, metrics_series_key(method_idx, tool_idx, st),
                            wm->series_used < METRICS_SERIES_REGULAR);
    if (s == NULL)
        s = metrics_series_slot(
            wm, metrics_series_key(METRICS_LABEL_OTHER, METRICS_LABEL_OTHER, st), true);
    metrics_add(&s->count, 1);

    if (!(d > 0)) /* negative, zero or NaN */
        d = 0;
    if (d > METRICS_SECONDS_MAX)
        d = METRICS_SECONDS_MAX;
    for (b = 0; b < METRICS_N_BOUNDS && d > metrics_bounds[b]; b++)
        ;
    h = &wm->hist[method_idx];
    metrics_add(&h->buckets[b], 1);
    metrics_add(&h->sum_ns, (uint64_t)(d * (double)METRICS_NS + 0.5));

    metrics_add(&wm->bytes_in, bytes_in);
    metrics_add(&wm->bytes_out, bytes_out);
}

void metrics_upstream_error(struct worker_metrics *wm, enum upstream_error_kind kind)
{
    if (wm == NULL)
        return;
    if ((unsigned)kind >= UPSTREAM_ERR_KIND_COUNT)
        kind = UPSTREAM_ERR_OTHER;
    metrics_add(&wm->upstream_errors[kind], 1);
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

/* One requests_total series summed over workers, with its label values resolved. */
struct metrics_row {
    uint64_t key;
    uint64_t count;
    const char *method;
    const char *tool;
    uint32_t status;
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

static void metrics_render_requests(struct metrics *m, struct strbuf *out)
{
    struct metrics_row *rows = NULL;
    size_t n = 0, cap = 0, i, j;
    uint32_t n_methods, n_tools;

    metrics_put_header(out, "mcpeek_requests_total", "counter",
                       "MCP exchanges finished, by JSON-RPC method, tool and HTTP status.");
    for (unsigned w = 0; w < m->n_workers; w++) {
        struct worker_metrics *wm = m->workers[w];

        for (i = 0; i < METRICS_SERIES_CAPACITY; i++) {
            uint64_t key = atomic_load_explicit(&wm->series[i].key, memory_order_acquire);

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
            rows[n].count = metrics_read(&wm->series[i].count);
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
        strbuf_puts(out, "mcpeek_requests_total{");
        metrics_put_label(out, "rpc_method", rows[i].method);
        strbuf_putc(out, ',');
        metrics_put_label(out, "tool", rows[i].tool);
        strbuf_printf(out, ",status=\"%" PRIu32 "\"} %" PRIu64 "\n", rows[i].status, total);
    }
out:
    free(rows);
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

static void metrics_put_counter(struct strbuf *out, const char *name, const char *help,
                                uint64_t value)
{
    metrics_put_header(out, name, "counter", help);
    strbuf_printf(out, "%s %" PRIu64 "\n", name, value);
}

void metrics_render(struct metrics *m, struct strbuf *out)
{
    uint64_t opened = 0, closed = 0;

    if (m == NULL)
        return;
    metrics_render_requests(m, out);
    metrics_render_histogram(m, out);

    metrics_put_header(out, "mcpeek_upstream_errors_total", "counter",
                       "Exchanges that failed talking to the upstream, by kind.");
    for (int k = 0; k < UPSTREAM_ERR_KIND_COUNT; k++) {
        uint64_t v = metrics_sum(m, offsetof(struct worker_metrics, upstream_errors) +
                                        (size_t)k * sizeof(_Atomic uint64_t));

        strbuf_printf(out, "mcpeek_upstream_errors_total{kind=\"%s\"} %" PRIu64 "\n",
                      metrics_error_kind_name[k], v);
    }

    static const char *const denied_reason[ACCESS_VERDICT_COUNT] = {
        [ACCESS_HOST] = "host", [ACCESS_ORIGIN] = "origin", [ACCESS_TOKEN] = "token"};
    metrics_put_header(out, "mcpeek_access_denied_total", "counter",
                       "Requests refused by the Host, Origin or bearer-token check, by reason.");
    for (int k = ACCESS_HOST; k < ACCESS_VERDICT_COUNT; k++) {
        uint64_t v = metrics_sum(m, offsetof(struct worker_metrics, access_denied) +
                                        (size_t)k * sizeof(_Atomic uint64_t));

        strbuf_printf(out, "mcpeek_access_denied_total{reason=\"%s\"} %" PRIu64 "\n",
                      denied_reason[k], v);
    }

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
