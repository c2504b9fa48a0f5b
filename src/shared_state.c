/* shared_state: the worker's asynchronous Redis connection (hiredis + its libevent adapter).
 *
 * Connection states: IDLE (waiting for the backoff timer) -> CONNECTING (redisAsyncConnect
 * issued, connect timer armed) -> UP (commands accepted) -> on error or close back to IDLE
 * with a doubled backoff. Commands are only issued while UP, so a request never waits for a
 * connection. Each lookup is an op with its own deadline timer: whichever of the reply and
 * the timer comes first ends it for the caller; the op itself is freed when hiredis hands
 * back its reply (hiredis calls every pending callback, with NULL, when a connection dies).
 * Keys: "mcpeek:s:<session id>" (hash: ctx = _meta JSON, up = upstream id in hex) and
 * "mcpeek:rl:<sha256 of rule and value>" (hash: t = tokens, ts = last refill in ms).
 */
#include "mcpeek/shared_state.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcpeek/diag.h"
#include "mcpeek/metrics.h"
#include "mcpeek/worker.h"

/* Token buckets for every rule of one request, all or nothing, on Redis's own clock (TIME:
 * one clock for the whole fleet). KEYS[i] is rule i's bucket; ARGV holds rate, period_ms and
 * burst per rule. Returns {0,0} when allowed (one token taken from every bucket), else {i, s}:
 * rule i (1-based) refuses and holds a token again in s seconds. A bucket expires once it
 * would be full again, so idle keys leave Redis by themselves. */
static const char shared_state_ratelimit_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local state = {}\n"
    "for i = 1, #KEYS do\n"
    "  local rate = tonumber(ARGV[3*i-2])\n"
    "  local period = tonumber(ARGV[3*i-1])\n"
    "  local burst = tonumber(ARGV[3*i])\n"
    "  local v = redis.call('HMGET', KEYS[i], 't', 'ts')\n"
    "  local tok, ts = tonumber(v[1]), tonumber(v[2])\n"
    "  if tok == nil or ts == nil then tok = burst; ts = now end\n"
    "  if now > ts then tok = math.min(burst, tok + (now - ts) * rate / period); ts = now end\n"
    "  if tok < 1 then\n"
    "    local wait = math.ceil((1 - tok) * period / rate)\n"
    "    return {i, math.max(1, math.ceil(wait / 1000))}\n"
    "  end\n"
    "  state[i] = {tok - 1, ts, math.ceil(burst * period / rate) + 1000}\n"
    "end\n"
    "for i = 1, #KEYS do\n"
    "  redis.call('HSET', KEYS[i], 't', tostring(state[i][1]), 'ts', state[i][2])\n"
    "  redis.call('PEXPIRE', KEYS[i], state[i][3])\n"
    "end\n"
    "return {0, 0}\n";

enum shared_state_conn { SS_IDLE, SS_CONNECTING, SS_UP };

enum shared_state_op_kind { OP_SESSION, OP_RATELIMIT };

struct shared_state_op {
    struct shared_state *ss;
    enum shared_state_op_kind kind;
    bool ended;   /* the caller was answered (reply or deadline) or cancelled */
    bool replied; /* hiredis handed the reply back: nothing of ours is pending */
    struct event *deadline;
    void *arg;
    shared_state_session_cb session_cb;
    shared_state_ratelimit_cb ratelimit_cb;
    size_t max_len;
    int rule_of_key[RATELIMIT_RULES_MAX]; /* KEYS[i] -> index into the caller's rules */
};

struct shared_state {
    struct event_base *base;
    char host[256];
    unsigned port, db;
    struct shared_state_hub *hub;
    struct metrics *metrics;
    struct worker_metrics *wm;
    redisAsyncContext *ac; /* NULL while IDLE */
    enum shared_state_conn conn;
    bool closing;
    uint32_t backoff_ms;
    struct event *retry;           /* IDLE -> CONNECTING */
    struct event *connect_timeout; /* CONNECTING too long -> abandon */
    char script_sha[41];
};

/* ---- helpers ------------------------------------------------------------------------------ */

int shared_state_parse_url(const char *url, char *host, size_t host_size, unsigned *port,
                           unsigned *db, const char **why)
{
    const char *p = url, *h, *h_end, *colon;
    *why = "expected redis://HOST:PORT[/DB]";
    if (strncmp(p, "redis://", 8) != 0)
        return -1;
    p += 8;
    if (*p == '[') {
        h = p + 1;
        h_end = strchr(h, ']');
        if (!h_end || h_end[1] != ':')
            return -1;
        colon = h_end + 1;
    } else {
        h = p;
        colon = strchr(p, ':');
        if (!colon)
            return -1;
        h_end = colon;
    }
    size_t hlen = (size_t)(h_end - h);
    if (hlen == 0 || hlen >= host_size || memchr(h, '@', hlen) || memchr(h, '/', hlen)) {
        *why = "expected redis://HOST:PORT[/DB] (no user or password)";
        return -1;
    }
    char *end;
    unsigned long v = strtoul(colon + 1, &end, 10);
    if (end == colon + 1 || v == 0 || v > 65535 || (*end != '\0' && *end != '/')) {
        *why = "the port must be a number from 1 to 65535";
        return -1;
    }
    *port = (unsigned)v;
    *db = 0;
    if (*end == '/') {
        const char *d = end + 1;
        v = strtoul(d, &end, 10);
        if (end == d || *end != '\0' || v > 15) {
            *why = "the database must be a number from 0 to 15";
            return -1;
        }
        *db = (unsigned)v;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    return 0;
}

/* One stderr line per SHARED_STATE_DIAG_INTERVAL_MS for the whole process: an outage seen
 * by every worker, or lasting hours, is one line, not thousands. */
static void shared_state_diag(struct shared_state *ss, const char *what, const char *detail)
{
    uint64_t now = worker_now_ms(), last = atomic_load(&ss->hub->last_diag_ms);
    if (last != 0 && now - last < SHARED_STATE_DIAG_INTERVAL_MS)
        return;
    if (!atomic_compare_exchange_strong(&ss->hub->last_diag_ms, &last, now ? now : 1))
        return; /* another worker wrote it */
    diag_log("warn",
             "shared_state redis://%s:%u: %s (%s); using local state, retrying in the "
             "background (next note in %us at the earliest)",
             ss->host, ss->port, what, detail ? detail : "no detail",
             SHARED_STATE_DIAG_INTERVAL_MS / 1000);
}

static void shared_state_arm(struct event *ev, uint32_t ms)
{
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* ---- connection ----------------------------------------------------------------------- */

static void shared_state_schedule_retry(struct shared_state *ss)
{
    ss->conn = SS_IDLE;
    ss->ac = NULL;
    if (ss->closing)
        return;
    shared_state_arm(ss->retry, ss->backoff_ms);
    ss->backoff_ms = ss->backoff_ms * 2 > SHARED_STATE_BACKOFF_MAX_MS ? SHARED_STATE_BACKOFF_MAX_MS
                                                                      : ss->backoff_ms * 2;
}

static void on_connected(const redisAsyncContext *ac, int status)
{
    struct shared_state *ss = ac->data;
    if (!ss)
        return;
    evtimer_del(ss->connect_timeout);
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback */
        metrics_shared_state_error(ss->wm, SHARED_STATE_ERR_DISCONNECT);
        shared_state_diag(ss, "cannot connect", ac->errstr);
        shared_state_schedule_retry(ss);
        return;
    }
    ss->conn = SS_UP;
    ss->backoff_ms = SHARED_STATE_BACKOFF_MIN_MS;
    metrics_shared_state_connected(ss->metrics, 1);
}

static void on_disconnected(const redisAsyncContext *ac, int status)
{
    struct shared_state *ss = ac->data;
    if (!ss)
        return;
    if (ss->conn == SS_UP)
        metrics_shared_state_connected(ss->metrics, -1);
    if (status != REDIS_OK && !ss->closing) {
        metrics_shared_state_error(ss->wm, SHARED_STATE_ERR_DISCONNECT);
        shared_state_diag(ss, "connection lost", ac->errstr);
    }
    shared_state_schedule_retry(ss); /* hiredis frees the context after this callback */
}

static void on_command_ignored(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    (void)reply;
    (void)privdata;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct shared_state *ss = arg;
    if (ss->conn != SS_IDLE || ss->closing)
        return;
    /* The name is resolved here, blocking this worker's loop for that long: use an address
     * or a name the resolver answers at once (docs/scaling.md). */
    redisAsyncContext *ac = redisAsyncConnect(ss->host, (int)ss->port);
    if (!ac || ac->err) {
        metrics_shared_state_error(ss->wm, SHARED_STATE_ERR_DISCONNECT);
        shared_state_diag(ss, "cannot connect", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        shared_state_schedule_retry(ss);
        return;
    }
    ac->data = ss;
    if (redisLibeventAttach(ac, ss->base) != REDIS_OK) {
        redisAsyncFree(ac);
        shared_state_schedule_retry(ss);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connected);
    redisAsyncSetDisconnectCallback(ac, on_disconnected);
    ss->ac = ac;
    ss->conn = SS_CONNECTING;
    shared_state_arm(ss->connect_timeout, SHARED_STATE_CONNECT_TIMEOUT_MS);
    /* queued now, sent in order once connected: the database, then the script, so every
     * later EVALSHA on this connection finds it */
    if (ss->db != 0)
        redisAsyncCommand(ac, on_command_ignored, NULL, "SELECT %u", ss->db);
    redisAsyncCommand(ac, on_command_ignored, NULL, "SCRIPT LOAD %s", shared_state_ratelimit_lua);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct shared_state *ss = arg;
    if (ss->conn != SS_CONNECTING || !ss->ac)
        return;
    redisAsyncContext *ac = ss->ac;
    metrics_shared_state_error(ss->wm, SHARED_STATE_ERR_DISCONNECT);
    shared_state_diag(ss, "cannot connect", "timed out");
    ac->data = NULL; /* no callbacks into us from the free */
    redisAsyncFree(ac);
    shared_state_schedule_retry(ss);
}

struct shared_state *shared_state_new(struct event_base *base, const char *url,
                                      struct shared_state_hub *hub, struct metrics *metrics,
                                      struct worker_metrics *wm)
{
    const char *why;
    unsigned char digest[SHA_DIGEST_LENGTH];
    struct shared_state *ss = calloc(1, sizeof(*ss));
    if (!ss)
        return NULL;
    ss->base = base;
    ss->hub = hub;
    ss->metrics = metrics;
    ss->wm = wm;
    ss->backoff_ms = SHARED_STATE_BACKOFF_MIN_MS;
    if (shared_state_parse_url(url, ss->host, sizeof(ss->host), &ss->port, &ss->db, &why) < 0)
        goto fail;
    SHA1((const unsigned char *)shared_state_ratelimit_lua, strlen(shared_state_ratelimit_lua),
         digest);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(ss->script_sha + 2 * i, 3, "%02x", digest[i]);
    ss->retry = evtimer_new(base, on_retry, ss);
    ss->connect_timeout = evtimer_new(base, on_connect_timeout, ss);
    if (!ss->retry || !ss->connect_timeout)
        goto fail;
    shared_state_arm(ss->retry, 0);
    return ss;
fail:
    shared_state_free(ss);
    return NULL;
}

void shared_state_free(struct shared_state *ss)
{
    if (!ss)
        return;
    ss->closing = true;
    if (ss->ac) {
        /* runs every pending callback with a NULL reply, then on_disconnected when it was up */
        redisAsyncFree(ss->ac);
        ss->ac = NULL;
    }
    if (ss->retry)
        event_free(ss->retry);
    if (ss->connect_timeout)
        event_free(ss->connect_timeout);
    free(ss);
}

bool shared_state_connected(const struct shared_state *ss)
{
    return ss && ss->conn == SS_UP;
}

/* ---- operations ---------------------------------------------------------------------- */

static void op_free(struct shared_state_op *op)
{
    if (op->deadline)
        event_free(op->deadline);
    free(op);
}

/* Tells the caller "not answered", once. */
static void op_fail(struct shared_state_op *op)
{
    if (op->ended)
        return;
    op->ended = true;
    evtimer_del(op->deadline);
    if (op->kind == OP_SESSION)
        op->session_cb(op->arg, false, false, NULL, 0);
    else
        op->ratelimit_cb(op->arg, false, -1, 0);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct shared_state_op *op = arg;
    metrics_shared_state_error(op->ss->wm, SHARED_STATE_ERR_TIMEOUT);
    op_fail(op); /* the reply, when it comes, frees the op */
}

static struct shared_state_op *op_new(struct shared_state *ss, enum shared_state_op_kind kind,
                                      void *arg)
{
    if (!ss || ss->conn != SS_UP) {
        if (ss)
            metrics_shared_state_error(ss->wm, SHARED_STATE_ERR_UNAVAILABLE);
        return NULL;
    }
    struct shared_state_op *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->ss = ss;
    op->kind = kind;
    op->arg = arg;
    op->deadline = evtimer_new(ss->base, on_deadline, op);
    if (!op->deadline) {
        free(op);
        return NULL;
    }
    return op;
}

void shared_state_cancel(struct shared_state_op *op)
{
    if (!op || op->ended)
        return;
    op->ended = true;
    evtimer_del(op->deadline);
}

static uint64_t parse_hex64(const char *s, size_t len)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len && i < 16; i++) {
        char c = s[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                                            : 16;
        if (d == 16)
            return 0;
        v = v << 4 | d;
    }
    return v;
}

static void on_session_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    struct shared_state_op *op = privdata;
    redisReply *reply = r;
    if (!op->ended) {
        if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
            metrics_shared_state_error(op->ss->wm, reply ? SHARED_STATE_ERR_REPLY
                                                         : SHARED_STATE_ERR_DISCONNECT);
            op_fail(op);
        } else {
            redisReply *ctx_r = reply->element[0], *up_r = reply->element[1];
            OpenAiClientContext *ctx = NULL;
            uint64_t upstream = 0;
            bool found = ctx_r->type == REDIS_REPLY_STRING || up_r->type == REDIS_REPLY_STRING;
            if (ctx_r->type == REDIS_REPLY_STRING)
                ctx = openai_meta_parse(ctx_r->str, ctx_r->len, op->max_len);
            if (up_r->type == REDIS_REPLY_STRING)
                upstream = parse_hex64(up_r->str, up_r->len);
            op->ended = true;
            evtimer_del(op->deadline);
            op->session_cb(op->arg, true, found, ctx, upstream);
        }
    }
    op_free(op);
}

struct shared_state_op *shared_state_session_get(struct shared_state *ss, const char *session_id,
                                                 uint32_t timeout_ms, size_t max_len,
                                                 shared_state_session_cb cb, void *arg)
{
    struct shared_state_op *op = op_new(ss, OP_SESSION, arg);
    if (!op)
        return NULL;
    op->session_cb = cb;
    op->max_len = max_len;
    if (redisAsyncCommand(ss->ac, on_session_reply, op, "HMGET mcpeek:s:%b ctx up", session_id,
                          strlen(session_id)) != REDIS_OK) {
        op_free(op);
        metrics_shared_state_error(ss->wm, SHARED_STATE_ERR_DISCONNECT);
        return NULL;
    }
    shared_state_arm(op->deadline, timeout_ms);
    return op;
}

void shared_state_session_put(struct shared_state *ss, const char *session_id,
                              const OpenAiClientContext *ctx, uint64_t upstream, uint32_t ttl_ms)
{
    if (!ss || ss->conn != SS_UP || (!ctx && !upstream))
        return;
    size_t id_len = strlen(session_id);
    if (ctx) {
        json_t *meta = openai_meta_to_json(ctx);
        char *text = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
        if (text)
            redisAsyncCommand(ss->ac, on_command_ignored, NULL, "HSET mcpeek:s:%b ctx %s",
                              session_id, id_len, text);
        free(text);
        json_decref(meta);
    }
    if (upstream) {
        char hex[17];
        snprintf(hex, sizeof(hex), "%016" PRIx64, upstream);
        redisAsyncCommand(ss->ac, on_command_ignored, NULL, "HSET mcpeek:s:%b up %s", session_id,
                          id_len, hex);
    }
    redisAsyncCommand(ss->ac, on_command_ignored, NULL, "PEXPIRE mcpeek:s:%b %u", session_id,
                      id_len, (unsigned)ttl_ms);
}

void shared_state_session_del(struct shared_state *ss, const char *session_id)
{
    if (!ss || ss->conn != SS_UP)
        return;
    redisAsyncCommand(ss->ac, on_command_ignored, NULL, "DEL mcpeek:s:%b", session_id,
                      strlen(session_id));
}

static void on_ratelimit_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct shared_state_op *op = privdata;
    redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0 &&
        ac && op->ss->conn == SS_UP)
        /* the script cache was flushed: load it again for the next requests */
        redisAsyncCommand(ac, on_command_ignored, NULL, "SCRIPT LOAD %s",
                          shared_state_ratelimit_lua);
    if (!op->ended) {
        if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
            reply->element[0]->type != REDIS_REPLY_INTEGER ||
            reply->element[1]->type != REDIS_REPLY_INTEGER) {
            metrics_shared_state_error(op->ss->wm, reply ? SHARED_STATE_ERR_REPLY
                                                         : SHARED_STATE_ERR_DISCONNECT);
            op_fail(op);
        } else {
            long long key = reply->element[0]->integer, retry = reply->element[1]->integer;
            int refused = key >= 1 && key <= RATELIMIT_RULES_MAX ? op->rule_of_key[key - 1] : -1;
            op->ended = true;
            evtimer_del(op->deadline);
            op->ratelimit_cb(op->arg, true, refused,
                             retry < 1            ? 1
                             : retry > UINT32_MAX ? UINT32_MAX
                                                  : (uint32_t)retry);
        }
    }
    op_free(op);
}

struct shared_state_op *shared_state_ratelimit(struct shared_state *ss,
                                               const struct ratelimit_rule *rules, size_t n_rules,
                                               const struct ratelimit_keys *keys,
                                               uint32_t timeout_ms, shared_state_ratelimit_cb cb,
                                               void *arg)
{
    /* argv: EVALSHA sha numkeys key... (rate period burst)... */
    const char *argv[3 + RATELIMIT_RULES_MAX * 4];
    size_t argvlen[3 + RATELIMIT_RULES_MAX * 4];
    char keybuf[RATELIMIT_RULES_MAX][10 + 2 * SHA256_DIGEST_LENGTH + 1];
    char numbuf[RATELIMIT_RULES_MAX][3][12];
    char nkeys[24];
    size_t n = 0;
    int rule_of_key[RATELIMIT_RULES_MAX];

    for (size_t i = 0; i < n_rules && i < RATELIMIT_RULES_MAX; i++) {
        const char *value = keys->value[rules[i].scope];
        if (!value || !*value)
            continue;
        /* the value hashed (a bearer token must not sit in Redis), with the rule's content,
         * so that a changed line starts fresh buckets as the local table does */
        unsigned char digest[SHA256_DIGEST_LENGTH];
        unsigned char rule_text[64 + SHA256_DIGEST_LENGTH];
        int rlen = snprintf((char *)rule_text, 64, "%d:%u:%u:%u:", (int)rules[i].scope,
                            rules[i].rate, rules[i].period_ms, rules[i].burst);
        SHA256((const unsigned char *)value, strlen(value), rule_text + rlen);
        SHA256(rule_text, (size_t)rlen + SHA256_DIGEST_LENGTH, digest);
        memcpy(keybuf[n], "mcpeek:rl:", 10);
        for (int b = 0; b < SHA256_DIGEST_LENGTH; b++)
            snprintf(keybuf[n] + 10 + 2 * b, 3, "%02x", digest[b]);
        snprintf(numbuf[n][0], sizeof(numbuf[n][0]), "%u", rules[i].rate);
        snprintf(numbuf[n][1], sizeof(numbuf[n][1]), "%u", rules[i].period_ms);
        snprintf(numbuf[n][2], sizeof(numbuf[n][2]), "%u", rules[i].burst);
        rule_of_key[n] = (int)i;
        n++;
    }
    if (n == 0)
        return NULL; /* nothing to count: the local check says allowed too */
    struct shared_state_op *op = op_new(ss, OP_RATELIMIT, arg);
    if (!op)
        return NULL;
    op->ratelimit_cb = cb;
    memcpy(op->rule_of_key, rule_of_key, n * sizeof(int));
    size_t argc = 0;
    snprintf(nkeys, sizeof(nkeys), "%zu", n);
    argv[argc++] = "EVALSHA";
    argv[argc++] = ss->script_sha;
    argv[argc++] = nkeys;
    for (size_t k = 0; k < n; k++)
        argv[argc++] = keybuf[k];
    for (size_t k = 0; k < n; k++)
        for (int j = 0; j < 3; j++)
            argv[argc++] = numbuf[k][j];
    for (size_t k = 0; k < argc; k++)
        argvlen[k] = strlen(argv[k]);
    if (redisAsyncCommandArgv(ss->ac, on_ratelimit_reply, op, (int)argc, argv, argvlen) !=
        REDIS_OK) {
        op_free(op);
        metrics_shared_state_error(ss->wm, SHARED_STATE_ERR_DISCONNECT);
        return NULL;
    }
    shared_state_arm(op->deadline, timeout_ms);
    return op;
}
