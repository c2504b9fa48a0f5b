/* ratelimit: token buckets per key value, one per `rate_limit SCOPE RATE [burst N]` line.
 *
 * The rules come from the caller's config generation; a bucket is identified by its rule's
 * content (scope, rate, period, burst) plus the key value, so a reload that leaves a line
 * unchanged keeps its buckets without any hand-over, and a changed line starts fresh ones.
 * One table shared by all workers: bounded (least recently used bucket dropped first),
 * sharded by hash with one mutex per shard. Time is a monotonic millisecond clock the
 * caller passes in, so tests control it.
 */
#ifndef MCPEEK_RATELIMIT_H
#define MCPEEK_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a rate_limit line counts per. Order is the metric's and the docs' order. */
enum ratelimit_scope {
    RATELIMIT_OPENAI_SUBJECT = 0, /* params._meta openai/subject (a client hint) */
    RATELIMIT_OPENAI_SESSION,     /* openai/session (a client hint) */
    RATELIMIT_OPENAI_ORG,         /* openai/organization (a client hint) */
    RATELIMIT_CLIENT_IP,          /* the TCP peer address */
    RATELIMIT_TOKEN,              /* the bearer token presented (checked by auth_tokens_file) */
    RATELIMIT_SCOPE_COUNT
};

/* One `rate_limit` line: `rate` requests per `period_ms` (1000 for N/s, 60000 for N/m),
 * up to `burst` at once. */
struct ratelimit_rule {
    enum ratelimit_scope scope;
    uint32_t rate;      /* 1 .. RATELIMIT_RATE_MAX */
    uint32_t period_ms; /* 1000 or 60000 */
    uint32_t burst;     /* 1 .. RATELIMIT_RATE_MAX; the config defaults it to `rate` */
};

#define RATELIMIT_RATE_MAX 1000000u
/* rate_limit lines per config; also the fewest keys the table may hold, so one check never
 * evicts a bucket it is using. */
#define RATELIMIT_RULES_MAX 16
/* Key values longer than this are stored as a prefix plus a hash of the whole value. */
#define RATELIMIT_KEY_MAX 256

/* The key values of one request, by scope; NULL or "" when the request has none (then the
 * lines of that scope do not limit it). */
struct ratelimit_keys {
    const char *value[RATELIMIT_SCOPE_COUNT];
};

struct ratelimit;

/* A table of at most `capacity` buckets (`rate_limit_keys`; at least RATELIMIT_RULES_MAX).
 * NULL on allocation failure. */
struct ratelimit *ratelimit_new(size_t capacity);
void ratelimit_free(struct ratelimit *rl);

/* Checks one request against every rule, in order. Returns NULL when allowed (a token was
 * taken from the bucket of every rule whose scope the request has a key for), or the first
 * rule that refuses it, with *retry_after_s set to the whole seconds (rounded up, at least 1)
 * until that bucket holds a token again; a refused request takes no token from any bucket.
 * When a bucket cannot be allocated the request is allowed: limiting never fails a request
 * by itself. `now_ms` is monotonic; a clock read older than a bucket's adds nothing. */
const struct ratelimit_rule *ratelimit_check(struct ratelimit *rl,
                                             const struct ratelimit_rule *rules, size_t n_rules,
                                             const struct ratelimit_keys *keys, uint64_t now_ms,
                                             uint32_t *retry_after_s);

/* After a reload: drops every bucket whose rule is not among `rules` (removed or changed
 * lines). Buckets of unchanged lines keep their tokens. Main thread; workers may keep
 * checking meanwhile (an exchange on the old generation may recreate an old bucket, which
 * then ages out like any unused one). */
void ratelimit_retain(struct ratelimit *rl, const struct ratelimit_rule *rules, size_t n_rules);

/* Buckets held (approximate under concurrency; tests and diagnostics). */
size_t ratelimit_size(struct ratelimit *rl);

/* "openai_subject", ... ; the config and metric spelling. */
const char *ratelimit_scope_name(enum ratelimit_scope scope);
/* Parses a scope name; 0, or -1 when unknown. */
int ratelimit_scope_parse(const char *name, enum ratelimit_scope *out);
bool ratelimit_rule_equal(const struct ratelimit_rule *a, const struct ratelimit_rule *b);

#endif
