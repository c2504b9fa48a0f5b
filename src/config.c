/* config: builds one settings generation from built-in defaults, the config file and the
 * command line (in that order), and parses the command line itself.
 *
 * One table, config_keys[], drives everything: the file parser, the `--flag` names, --help,
 * the defaults (written as they would be in the file, and parsed like it) and the
 * restart-only comparison. A parse never stops at the first problem: each one becomes a line
 * `PATH:LINE: message` in the caller's error buffer, and the generation is then discarded.
 */
#include "mcpeek/config.h"
#include "mcpeek/shared_state.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcpeek/hostport.h"

#define CONFIG_MAX_FILE_SIZE (1024 * 1024) /* a config file is a few KiB; refuse surprises */
#define CONFIG_SHOWN_VALUE_MAX 60          /* longer values are cut in error messages */
#define CONFIG_HOST_MAX HOSTPORT_HOST_MAX
#define DURATION_MAX_MS (1000ULL * 3600 * 1000) /* 1000h: fits the uint32_t milliseconds */

enum key_type {
    KT_LISTEN,        /* HOST:PORT [tls]; may repeat, each line adds an address */
    KT_HOSTPORT,      /* HOST:PORT */
    KT_URL,           /* absolute http:// or https:// URL */
    KT_UPSTREAM,      /* URL [weight=N]; may repeat, each line adds an upstream */
    KT_URL_PATH,      /* "/..." */
    KT_HOST,          /* host[:port], sent as a Host header */
    KT_WORKERS,       /* auto | N, stored as int (auto = 0) */
    KT_BYTES,         /* 4m, 16k, 1024; stored as size_t */
    KT_COUNT,         /* plain number; stored as unsigned or size_t (by member size) */
    KT_DURATION,      /* 10s, 500ms, 2m, 1h, bare = seconds; stored as uint32_t ms */
    KT_BOOL,          /* on|off|yes|no|true|false */
    KT_ORIGINS,       /* one or more origins on one line */
    KT_HOSTS,         /* one or more HOST[:PORT] on one line */
    KT_FILE,          /* path of a file mcpeek reads; must be readable now */
    KT_LOG_FILE,      /* path, or - for stdout (stored as NULL) */
    KT_USER_LOCATION, /* off|coarse|full */
    KT_TLS_VERSION,   /* TLSv1.2|TLSv1.3 */
    KT_SOCKET_PATH,   /* absolute path of a Unix socket; need not exist yet */
    KT_HTTP2,         /* off|on|prior-knowledge */
    KT_RATE_LIMIT,    /* SCOPE N/s|N/m [burst N]; may repeat, each line adds a rule */
    KT_REDIS_URL,     /* redis://HOST:PORT[/DB] */
};

#define KF_RESTART 1u /* only takes effect after a restart, not on SIGHUP */
#define KF_OFF 2u     /* `off` is a valid value: NULL for strings, 0 for numbers */

struct config_key {
    const char *name;
    enum key_type type;
    size_t offset; /* of the member in struct mcpeek_config */
    size_t size;   /* of that member, for numbers stored in different widths */
    unsigned flags;
    const char *def;             /* default, as written in the file; NULL = unset */
    unsigned long long min, max; /* numeric keys, in stored units (bytes, ms, count) */
    const char *help;
};

#define KEY(name, member, type, flags, def, min, max, help)                                        \
    {                                                                                              \
        name, type, offsetof(struct mcpeek_config, member),                                        \
            sizeof(((struct mcpeek_config *)0)->member), flags, def, min, max, help                \
    }
#define KIB 1024ULL
#define MIB (1024ULL * 1024)
#define GIB (1024ULL * 1024 * 1024)
#define SEC 1000ULL

/* clang-format off */
static const struct config_key config_keys[] = {
    /* front end */
    KEY("listen", listen, KT_LISTEN, KF_RESTART, "127.0.0.1:8080", 0, 0,
        "address MCP clients connect to; repeat for several; 'tls' serves HTTPS"),
    KEY("mcp_path", mcp_path, KT_URL_PATH, 0, "/mcp", 0, 0,
        "path mapped to the upstream URL; other paths go to its origin as is"),
    KEY("workers", workers, KT_WORKERS, KF_RESTART, "auto", 1, 1024,
        "worker threads; auto = one per CPU"),
    KEY("admin_listen", admin_listen, KT_HOSTPORT, KF_RESTART | KF_OFF, "127.0.0.1:9464", 0, 0,
        "address serving /healthz, /readyz and /metrics; off disables it"),
    KEY("max_body_size", max_body_size, KT_BYTES, 0, "4m", 1, GIB,
        "largest request body accepted (413 above)"),
    KEY("max_header_size", max_header_size, KT_BYTES, 0, "16k", KIB, MIB,
        "largest request header block accepted"),
    KEY("max_connections", max_connections, KT_COUNT, KF_OFF, "0", 0, UINT32_MAX,
        "open client connections per process; 0 or off = unlimited"),
    KEY("client_header_timeout", client_header_timeout_ms, KT_DURATION, 0, "10s", 1,
        DURATION_MAX_MS, "time a client has to send the request headers"),
    KEY("client_body_timeout", client_body_timeout_ms, KT_DURATION, 0, "10s", 1,
        DURATION_MAX_MS, "time a client has to send the request body"),
    KEY("client_send_timeout", client_send_timeout_ms, KT_DURATION, 0, "60s", 1,
        DURATION_MAX_MS, "time a client may take to accept response bytes before it is cut"),
    KEY("shutdown_timeout", shutdown_timeout_ms, KT_DURATION, 0, "10s", 0, DURATION_MAX_MS,
        "on SIGTERM, time given to exchanges in flight before they are cut"),
    KEY("strict_json", strict_json, KT_BOOL, 0, "off", 0, 0,
        "answer invalid JSON-RPC with 400 instead of forwarding it"),
    KEY("allowed_hosts", allowed_hosts, KT_HOSTS, 0, NULL, 0, 0,
        "Host header values accepted (space separated); unset = loopback names on loopback"),
    KEY("allowed_origins", allowed_origins, KT_ORIGINS, 0, NULL, 0, 0,
        "Origin values accepted (space separated); unset = loopback origins on loopback"),
    KEY("auth_tokens_file", auth_tokens_file, KT_FILE, 0, NULL, 0, 0,
        "file of bearer tokens clients must present; unset = no check"),
    /* upstream */
    KEY("upstream", upstreams, KT_UPSTREAM, 0, "http://127.0.0.1:3000/mcp", 0, 0,
        "MCP server URL [weight=N]; repeat for several (sessions spread by rendezvous hash)"),
    KEY("upstream_fail_timeout", upstream_fail_timeout_ms, KT_DURATION, 0, "10s", 1,
        DURATION_MAX_MS, "an upstream that failed to connect or reset is skipped this long"),
    KEY("upstream_affinity", upstream_affinity, KT_BOOL, 0, "on", 0, 0,
        "several upstreams: a session's requests go to the upstream that issued it"),
    KEY("upstream_host_header", upstream_host_header, KT_HOST, 0, NULL, 0, 0,
        "Host header sent upstream; unset = host of the upstream URL"),
    KEY("upstream_connect_timeout", upstream_connect_timeout_ms, KT_DURATION, 0, "5s", 1,
        DURATION_MAX_MS, "time to connect to the upstream"),
    KEY("upstream_response_timeout", upstream_response_timeout_ms, KT_DURATION, 0, "60s", 1,
        DURATION_MAX_MS, "time from request sent to the first response byte"),
    KEY("upstream_keepalive", upstream_keepalive, KT_COUNT, 0, "128", 0, 100000,
        "idle upstream connections each worker keeps for reuse; 0 = a new one per request"),
    KEY("upstream_keepalive_timeout", upstream_keepalive_timeout_ms, KT_DURATION, 0, "4s", 1,
        DURATION_MAX_MS, "an upstream connection idle this long is not reused (whole seconds)"),
    KEY("upstream_buffer_size", upstream_buffer_size, KT_BYTES, 0, "4k", KIB, 512 * KIB,
        "receive buffer of each upstream transfer (one per open stream)"),
    KEY("upstream_unix_socket", upstream_unix_socket, KT_SOCKET_PATH, KF_OFF, NULL, 0, 0,
        "reach the upstream through this Unix socket instead of TCP; the URL still names it"),
    KEY("upstream_dns_ttl", upstream_dns_ttl_ms, KT_DURATION, 0, "60s", 0, DURATION_MAX_MS,
        "new upstream connections use a resolved address this long (whole seconds)"),
    KEY("upstream_http2", upstream_http2, KT_HTTP2, 0, "off", 0, 0,
        "HTTP/2 to the upstream: off, on (ALPN over https) or prior-knowledge (cleartext)"),
    KEY("stream_idle_timeout", stream_idle_timeout_ms, KT_DURATION, KF_OFF, "off", 0,
        DURATION_MAX_MS, "close a response stream silent for this long; off = never"),
    KEY("upstream_tls_verify", upstream_tls_verify, KT_BOOL, 0, "on", 0, 0,
        "verify the upstream's certificate and host name"),
    KEY("upstream_ca_file", upstream_ca_file, KT_FILE, 0, NULL, 0, 0,
        "CA bundle for the upstream; unset = system store"),
    KEY("upstream_tls_cert", upstream_tls_cert, KT_FILE, 0, NULL, 0, 0,
        "client certificate presented to the upstream (needs upstream_tls_key)"),
    KEY("upstream_tls_key", upstream_tls_key, KT_FILE, 0, NULL, 0, 0,
        "private key of upstream_tls_cert"),
    /* front-end TLS */
    KEY("tls_cert", tls_cert, KT_FILE, 0, NULL, 0, 0,
        "certificate chain (PEM) for 'listen ... tls'"),
    KEY("tls_key", tls_key, KT_FILE, 0, NULL, 0, 0,
        "private key (PEM) of tls_cert"),
    KEY("tls_min_version", tls_min_version, KT_TLS_VERSION, 0, "TLSv1.2", 0, 0,
        "oldest TLS version accepted from clients"),
    /* logging and privacy */
    KEY("log_file", log_file, KT_LOG_FILE, KF_RESTART, "-", 0, 0,
        "access log path; - = stdout"),
    KEY("user_location", user_location, KT_USER_LOCATION, 0, "coarse", 0, 0,
        "logging of openai/userLocation: off, coarse or full"),
    KEY("log_value_max_length", log_value_max_length, KT_COUNT, 0, "256", 1, MIB,
        "bytes kept of any string copied from a request into the log"),
    KEY("response_inspect_max", response_inspect_max, KT_BYTES, 0, "1m", 0, 64 * MIB,
        "largest JSON answer (or SSE event) parsed for the log; 0 = answers are not parsed"),
    KEY("pseudonymize_key_file", pseudonymize_key_file, KT_FILE, 0, NULL, 0, 0,
        "HMAC key file; when set, subject and org ids are logged pseudonymized"),
    /* metrics and session map */
    KEY("metrics_label_limit", metrics_label_limit, KT_COUNT, KF_RESTART, "100", 1, UINT32_MAX,
        "distinct values per metric label before the rest count as \"other\""),
    KEY("session_map_size", session_map_size, KT_COUNT, KF_RESTART, "10000", 1, UINT32_MAX,
        "MCP sessions remembered (least recently used dropped first)"),
    KEY("session_map_ttl", session_map_ttl_ms, KT_DURATION, KF_RESTART, "1h", SEC,
        DURATION_MAX_MS,
        "sessions unseen for this long are forgotten"),
    /* rate limits and conversations */
    KEY("rate_limit", rate_limits, KT_RATE_LIMIT, 0, NULL, 0, 0,
        "token bucket per key value of SCOPE; repeat for several; burst defaults to N"),
    KEY("rate_limit_keys", rate_limit_keys, KT_COUNT, KF_RESTART, "100000", RATELIMIT_RULES_MAX,
        UINT32_MAX, "rate-limit buckets kept (least recently used dropped first)"),
    KEY("conversation_idle_timeout", conversation_idle_timeout_ms, KT_DURATION, 0, "30m", SEC,
        DURATION_MAX_MS, "a conversation without a request for this long ends (reason idle)"),
    KEY("conversation_max", conversation_max, KT_COUNT, KF_RESTART, "100000", 1, UINT32_MAX,
        "open conversations tracked; when full the least recently active one ends"),
    /* shared state */
    KEY("shared_state", shared_state, KT_REDIS_URL, KF_RESTART | KF_OFF, NULL, 0, 0,
        "Redis shared by several mcpeek instances (sessions, rate limits); unset = in-process"),
    KEY("shared_state_timeout", shared_state_timeout_ms, KT_DURATION, 0, "5ms", 1, 10 * SEC,
        "longest a request waits for Redis before using local state"),
};
/* clang-format on */

#define N_KEYS (sizeof config_keys / sizeof config_keys[0])

/* What each type looks like, for --help and for "invalid value" messages. */
static const struct {
    const char *hint;
    const char *expected;
} config_types[] = {
    [KT_LISTEN] = {"HOST:PORT[ tls]", "expected HOST:PORT like 127.0.0.1:8080 or [::1]:8080, "
                                      "optionally followed by tls"},
    [KT_HOSTPORT] = {"HOST:PORT", "expected HOST:PORT like 127.0.0.1:9464"},
    [KT_URL] = {"URL", "expected an absolute http:// or https:// URL"},
    [KT_UPSTREAM] = {"URL[ weight=N]",
                     "expected an absolute http:// or https:// URL, optionally weight=N"},
    [KT_URL_PATH] = {"PATH", "expected a path starting with '/'"},
    [KT_HOST] = {"HOST[:PORT]", "expected a host name like example.com or example.com:8080"},
    [KT_WORKERS] = {"auto|N", "expected auto or a number of threads"},
    [KT_BYTES] = {"SIZE", "expected a size like 4m"},
    [KT_COUNT] = {"N", "expected a whole number"},
    [KT_DURATION] = {"DURATION", "expected a duration like 10s"},
    [KT_BOOL] = {"on|off", "expected on, off, yes, no, true or false"},
    [KT_ORIGINS] = {"ORIGIN...", "expected origins like https://chatgpt.com"},
    [KT_HOSTS] = {"HOST[:PORT]...", "expected host names like mcp.example.com"},
    [KT_FILE] = {"PATH", "expected a file path"},
    [KT_LOG_FILE] = {"PATH|-", "expected a file path or -"},
    [KT_USER_LOCATION] = {"off|coarse|full", "expected off, coarse or full"},
    [KT_TLS_VERSION] = {"TLSv1.2|TLSv1.3", "expected TLSv1.2 or TLSv1.3"},
    [KT_SOCKET_PATH] = {"PATH", "expected an absolute path shorter than 108 bytes"},
    [KT_HTTP2] = {"off|on|prior-knowledge", "expected off, on or prior-knowledge"},
    [KT_REDIS_URL] = {"redis://HOST:PORT[/DB]", "expected redis://HOST:PORT[/DB]"},
    [KT_RATE_LIMIT] = {"SCOPE N/s|N/m[ burst N]",
                       "expected SCOPE RATE [burst N] like openai_subject 10/s burst 20"},
};

struct unit {
    const char *suffix;
    unsigned long long factor;
};
static const struct unit config_byte_units[] = {{"", 1},     {"k", KIB}, {"kb", KIB}, {"m", MIB},
                                                {"mb", MIB}, {"g", GIB}, {"gb", GIB}, {NULL, 0}};
static const struct unit config_ms_units[] = {{"", SEC},       {"ms", 1},         {"s", SEC},
                                              {"m", 60 * SEC}, {"h", 3600 * SEC}, {NULL, 0}};
static const struct unit config_count_units[] = {{"", 1}, {NULL, 0}};

enum src_kind { SRC_DEFAULT, SRC_FILE, SRC_CLI };

/* Where a value came from, so an error can point at it. */
struct src_pos {
    enum src_kind kind;
    int line; /* SRC_FILE */
};

/* State of one config_build: the generation being filled and where each key came from. */
struct build {
    struct mcpeek_config *cfg;
    struct strbuf *errors;
    const char *file;              /* name used in `FILE:LINE:` prefixes */
    struct src_pos at;             /* the directive being applied */
    bool listen_touched;           /* the current source already replaced the listen list */
    struct src_pos *listen_at;     /* parallel to cfg->listen */
    bool rate_limit_touched;       /* the current source already replaced the rate_limit list */
    bool upstream_touched;         /* the current source already replaced the upstream list */
    struct src_pos *upstream_at;   /* parallel to cfg->upstreams */
    struct src_pos *rate_limit_at; /* parallel to cfg->rate_limits */
    struct src_pos key_at[N_KEYS];
    int first_line[N_KEYS]; /* first file line setting the key, for duplicates */
    bool failed[N_KEYS];    /* a value was rejected: skip cross checks on this key */
    int n_errors;
};

/* ---------------------------------------------------------------------------------------- */
/* small helpers */

static void *config_member(struct mcpeek_config *cfg, const struct config_key *k)
{
    return (char *)cfg + k->offset;
}

static const void *config_cmember(const struct mcpeek_config *cfg, const struct config_key *k)
{
    return (const char *)cfg + k->offset;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char to_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static const struct config_key *config_find_key(const char *name, size_t len)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strlen(config_keys[i].name) == len && memcmp(config_keys[i].name, name, len) == 0)
            return &config_keys[i];
    return NULL;
}

/* `--flag-name` spelling of a key: dashes where the key has underscores. */
static bool config_flag_matches(const char *flag, size_t len, const char *key)
{
    if (strlen(key) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (flag[i] != (key[i] == '_' ? '-' : key[i]))
            return false;
    return true;
}

static void config_put_flag(struct strbuf *sb, const char *key)
{
    strbuf_puts(sb, "--");
    for (const char *p = key; *p != '\0'; p++)
        strbuf_putc(sb, *p == '_' ? '-' : *p);
}

/* Edit distance, case-insensitive, or SIZE_MAX once it must exceed `limit` (and for long
 * words, which get no suggestion). */
static size_t config_distance(const char *a, size_t la, const char *b, size_t limit)
{
    size_t lb = strlen(b), row[64];

    if (la >= 64 || lb >= 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0], row_min;
        row[0] = i;
        row_min = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = to_lower(a[i - 1]) == to_lower(b[j - 1]) ? 0 : 1;
            size_t best = diag + cost;
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
            if (best < row_min)
                row_min = best;
        }
        if (row_min > limit)
            return SIZE_MAX; /* distances never shrink from one row to the next */
    }
    return row[lb];
}

/* The key an unknown word most likely meant, or NULL. `dashes` compares flag spellings. */
static const char *config_suggest(const char *word, size_t len, bool dashes)
{
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    char alt[64];

    if (len >= sizeof alt)
        return NULL;
    for (size_t i = 0; i < len; i++)
        alt[i] = (dashes && word[i] == '-') ? '_' : word[i];
    for (size_t i = 0; i < N_KEYS; i++) {
        size_t klen = strlen(config_keys[i].name), limit = klen / 3 < 1 ? 1 : klen / 3, d;
        if ((len > klen ? len - klen : klen - len) > limit)
            continue; /* the distance is at least the difference in length */
        d = config_distance(alt, len, config_keys[i].name, limit);
        if (d <= limit && d < best_d) {
            best_d = d;
            best = config_keys[i].name;
        }
    }
    return best;
}

/* Writes `value` quoted for a message, cut (on a UTF-8 boundary) when long. */
static void config_put_shown(struct strbuf *sb, const char *value)
{
    size_t len = strlen(value);
    size_t keep = utf8_prefix_len(value, len, CONFIG_SHOWN_VALUE_MAX);

    strbuf_putc(sb, '\'');
    strbuf_append(sb, value, keep);
    if (keep < len)
        strbuf_puts(sb, "...");
    strbuf_putc(sb, '\'');
}

/* Writes the `FILE:LINE: ` or `command line: --flag: ` prefix for a problem at `o`. */
static void config_put_src(struct build *b, const struct src_pos *o, const struct config_key *k)
{
    switch (o->kind) {
    case SRC_FILE:
        strbuf_printf(b->errors, "%s:%d: ", b->file, o->line);
        break;
    case SRC_CLI:
        strbuf_puts(b->errors, "command line: ");
        if (k != NULL) {
            config_put_flag(b->errors, k->name);
            strbuf_puts(b->errors, ": ");
        }
        break;
    case SRC_DEFAULT:
        strbuf_puts(b->errors, "built-in default: ");
        break;
    }
}

static void config_error(struct build *b, const struct src_pos *o, const struct config_key *k,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void config_error(struct build *b, const struct src_pos *o, const struct config_key *k,
                         const char *fmt, ...)
{
    va_list ap;

    config_put_src(b, o, k);
    va_start(ap, fmt);
    strbuf_vprintf(b->errors, fmt, ap);
    va_end(ap);
    strbuf_putc(b->errors, '\n');
    b->n_errors++;
}

/* `invalid value 'V' for KEY: WHY` at the directive being applied. */
static void config_bad_value(struct build *b, const struct config_key *k, const char *value,
                             const char *why)
{
    config_put_src(b, &b->at, k);
    strbuf_puts(b->errors, "invalid value ");
    config_put_shown(b->errors, value);
    strbuf_printf(b->errors, " for %s: %s\n", k->name, why);
    b->n_errors++;
}

static void config_oom(struct build *b, const struct config_key *k)
{
    config_error(b, &b->at, k, "out of memory");
}

/* ---------------------------------------------------------------------------------------- */
/* value syntax */

/* Parses digits followed by one of `units`. Returns 0 with the scaled value, -1 when the
 * text is not of that form, -2 when it does not fit in 64 bits. */
static int config_parse_scaled(const char *s, const struct unit *units, unsigned long long *out)
{
    unsigned long long v = 0;
    const char *p = s;

    if (!is_digit(*p))
        return -1;
    for (; is_digit(*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (ULLONG_MAX - d) / 10)
            return -2;
        v = v * 10 + d;
    }
    for (const struct unit *u = units; u->suffix != NULL; u++) {
        if (strcasecmp(p, u->suffix) != 0)
            continue;
        if (v != 0 && u->factor > ULLONG_MAX / v)
            return -2;
        *out = v * u->factor;
        return 0;
    }
    return -1;
}

/* Writes `v` with the largest unit that divides it exactly ("1g", "10s", "1500ms"). */
static void config_put_scaled(struct strbuf *sb, unsigned long long v, const struct unit *units)
{
    const struct unit *best = NULL;

    for (const struct unit *u = units; u->suffix != NULL; u++) {
        /* skip the bare form and the "kb" spellings: "16k" reads best */
        if (u->suffix[0] == '\0' || (u->suffix[1] == 'b' && u->suffix[2] == '\0'))
            continue;
        if (v % u->factor == 0 && (best == NULL || u->factor > best->factor))
            best = u;
    }
    if (v == 0 || best == NULL)
        strbuf_printf(sb, "%llu%s", v, units == config_ms_units ? "ms" : "");
    else
        strbuf_printf(sb, "%llu%s", v / best->factor, best->suffix);
}

static const struct unit *config_units(const struct config_key *k)
{
    switch (k->type) {
    case KT_BYTES:
        return config_byte_units;
    case KT_DURATION:
        return config_ms_units;
    default:
        return config_count_units;
    }
}

/* Parses a number-like key within [min, max]. 0, or -1 after reporting. */
static int config_parse_number(struct build *b, const struct config_key *k, const char *value,
                               unsigned long long *out)
{
    const struct unit *units = config_units(k);
    struct strbuf why;
    int rc;

    if ((k->flags & KF_OFF) && strcasecmp(value, "off") == 0) {
        *out = 0;
        return 0;
    }
    rc = config_parse_scaled(value, units, out);
    if (rc == 0 && *out >= k->min && *out <= k->max)
        return 0;

    strbuf_init(&why);
    if (rc == -1) {
        strbuf_puts(&why, config_types[k->type].expected);
        if (k->flags & KF_OFF)
            strbuf_puts(&why, ", or off");
    } else if (rc == 0 && *out < k->min) {
        strbuf_puts(&why, "must be at least ");
        config_put_scaled(&why, k->min, units);
    } else {
        strbuf_puts(&why, "too large (at most ");
        config_put_scaled(&why, k->max, units);
        strbuf_putc(&why, ')');
    }
    config_bad_value(b, k, value, why.oom ? "invalid" : why.data);
    strbuf_free(&why);
    return -1;
}

static void config_store_number(void *member, size_t size, unsigned long long v)
{
    if (size == sizeof(uint64_t)) {
        uint64_t x = v;
        memcpy(member, &x, sizeof x);
    } else if (size == sizeof(uint32_t)) {
        uint32_t x = (uint32_t)v;
        memcpy(member, &x, sizeof x);
    }
}

/* Splits "host:port", "[v6]:port" (or, when the port is optional, "host" and "[v6]") into
 * host (without brackets, NUL terminated, at most CONFIG_HOST_MAX bytes) and port (0 when
 * absent), with hostport.c's strict rules. Returns NULL, or why it is not such an address. */
static const char *config_split_hostport(const char *s, size_t len, bool need_port,
                                         char host[CONFIG_HOST_MAX + 1], unsigned *port)
{
    struct hostport hp;
    const char *why =
        hostport_parse(s, len, HOSTPORT_STRICT | (need_port ? HOSTPORT_NEED_PORT : 0), &hp);
    *port = 0;
    host[0] = '\0';
    if (why != NULL)
        return why;
    memcpy(host, hp.host, hp.host_len);
    host[hp.host_len] = '\0';
    *port = hp.port;
    return NULL;
}

/* Checks an absolute http(s) URL with a host. Returns NULL, or why not. */
static const char *config_check_url(const char *s)
{
    char host[CONFIG_HOST_MAX + 1];
    const char *auth, *at;
    size_t alen, skip;
    unsigned port;

    if (strncasecmp(s, "http://", 7) == 0)
        skip = 7;
    else if (strncasecmp(s, "https://", 8) == 0)
        skip = 8;
    else
        return config_types[KT_URL].expected;
    auth = s + skip;
    alen = strcspn(auth, "/?#");
    /* userinfo@ is allowed; the host is what follows the last '@' */
    for (at = auth + alen; at > auth && at[-1] != '@'; at--)
        ;
    alen -= (size_t)(at - auth);
    if (alen == 0)
        return "the URL has no host";
    return config_split_hostport(at, alen, false, host, &port);
}

/* Checks one allowed origin: scheme://host[:port], nothing after. Returns NULL, or why not. */
static const char *config_check_origin(const char *s)
{
    char host[CONFIG_HOST_MAX + 1];
    const char *p = s, *auth;
    size_t alen;
    unsigned port;

    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
        return "expected an origin like https://chatgpt.com (or * for any)";
    while (is_alnum(*p) || *p == '+' || *p == '-' || *p == '.')
        p++;
    if (strncmp(p, "://", 3) != 0)
        return "expected an origin like https://chatgpt.com (or * for any)";
    auth = p + 3;
    alen = strcspn(auth, "/?#");
    if (auth[alen] != '\0')
        return "an origin has no path, not even a trailing '/': write https://chatgpt.com";
    if (alen == 0)
        return "the origin has no host";
    return config_split_hostport(auth, alen, false, host, &port);
}

/* ---------------------------------------------------------------------------------------- */
/* applying one directive */

static void config_free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void config_clear_listen(struct build *b)
{
    struct mcpeek_config *cfg = b->cfg;

    for (size_t i = 0; i < cfg->n_listen; i++)
        free(cfg->listen[i].host);
    free(cfg->listen);
    free(b->listen_at);
    cfg->listen = NULL;
    b->listen_at = NULL;
    cfg->n_listen = 0;
}

static int config_set_listen(struct build *b, const struct config_key *k, char **tok, size_t n,
                             const char *raw)
{
    struct mcpeek_config *cfg = b->cfg;
    char host[CONFIG_HOST_MAX + 1];
    struct listen_addr *grown;
    struct src_pos *grown_at;
    const char *why;
    unsigned port;
    char *dup;

    if (n > 2 || (n == 2 && strcmp(tok[1], "tls") != 0)) {
        config_bad_value(b, k, raw, config_types[KT_LISTEN].expected);
        return -1;
    }
    why = config_split_hostport(tok[0], strlen(tok[0]), true, host, &port);
    if (why != NULL) {
        config_bad_value(b, k, raw, why);
        return -1;
    }
    /* The first `listen` of a source replaces the list it inherited, so a file's addresses
     * replace the default and the command line's replace the file's. */
    if (!b->listen_touched) {
        config_clear_listen(b);
        b->listen_touched = true;
    }
    if (cfg->n_listen == CONFIG_LISTEN_MAX) {
        config_bad_value(b, k, raw, "at most 16 listen addresses");
        return -1;
    }
    grown = realloc(cfg->listen, (cfg->n_listen + 1) * sizeof *grown);
    if (grown == NULL)
        goto oom;
    cfg->listen = grown;
    grown_at = realloc(b->listen_at, (cfg->n_listen + 1) * sizeof *grown_at);
    if (grown_at == NULL)
        goto oom;
    b->listen_at = grown_at;
    dup = strdup(host);
    if (dup == NULL)
        goto oom;
    cfg->listen[cfg->n_listen].host = dup;
    cfg->listen[cfg->n_listen].port = (uint16_t)port;
    cfg->listen[cfg->n_listen].tls = n == 2;
    b->listen_at[cfg->n_listen] = b->at;
    cfg->n_listen++;
    return 0;

oom:
    config_oom(b, k);
    return -1;
}

/* The list member of a KT_ORIGINS / KT_HOSTS key. */
static char ***config_list_of(struct mcpeek_config *cfg, const struct config_key *k, size_t **n)
{
    if (k->type == KT_HOSTS) {
        *n = &cfg->n_allowed_hosts;
        return &cfg->allowed_hosts;
    }
    *n = &cfg->n_allowed_origins;
    return &cfg->allowed_origins;
}

/* Checks one allowed_hosts entry: HOST or HOST:PORT. Returns NULL, or why not. */
static const char *config_check_allowed_host(const char *s)
{
    char host[CONFIG_HOST_MAX + 1];
    unsigned port;
    if (strstr(s, "://") != NULL)
        return "expected a host name like mcp.example.com, not a URL";
    return config_split_hostport(s, strlen(s), false, host, &port);
}

/* allowed_origins, allowed_hosts: a list, or "*" alone for any value. */
static int config_set_list(struct build *b, const struct config_key *k, char **tok, size_t n)
{
    size_t *count;
    char ***list = config_list_of(b->cfg, k, &count);
    char **v;
    int rc = 0;

    for (size_t i = 0; i < n; i++) {
        const char *why = strcmp(tok[i], "*") == 0
                              ? (n == 1 ? NULL : "'*' (any) cannot be combined with other values")
                          : k->type == KT_HOSTS ? config_check_allowed_host(tok[i])
                                                : config_check_origin(tok[i]);
        if (why != NULL) {
            config_bad_value(b, k, tok[i], why);
            rc = -1;
        }
    }
    if (rc < 0)
        return -1;
    v = calloc(n, sizeof *v);
    if (v == NULL)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        v[i] = strdup(tok[i]);
        if (v[i] == NULL) {
            config_free_strv(v, i);
            goto oom;
        }
    }
    config_free_strv(*list, *count);
    *list = v;
    *count = n;
    return 0;

oom:
    config_oom(b, k);
    return -1;
}

static void config_clear_rate_limits(struct build *b)
{
    free(b->cfg->rate_limits);
    free(b->rate_limit_at);
    b->cfg->rate_limits = NULL;
    b->rate_limit_at = NULL;
    b->cfg->n_rate_limits = 0;
}

/* A number 1..RATELIMIT_RATE_MAX with no suffix, from s[0..len). */
static bool config_rate_number(const char *s, size_t len, uint32_t *out)
{
    unsigned long long v = 0;

    if (len == 0 || len > 7)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i]))
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > RATELIMIT_RATE_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* `rate_limit SCOPE N/s|N/m [burst N]`. */
static int config_set_rate_limit(struct build *b, const struct config_key *k, char **tok, size_t n,
                                 const char *raw)
{
    struct mcpeek_config *cfg = b->cfg;
    struct ratelimit_rule rule;
    struct ratelimit_rule *grown;
    struct src_pos *grown_at;
    const char *slash;

    if (n != 2 && !(n == 4 && strcmp(tok[2], "burst") == 0)) {
        config_bad_value(b, k, raw, config_types[KT_RATE_LIMIT].expected);
        return -1;
    }
    if (ratelimit_scope_parse(tok[0], &rule.scope) < 0) {
        config_bad_value(b, k, raw,
                         "unknown scope: expected openai_subject, openai_session, openai_org, "
                         "client_ip or token");
        return -1;
    }
    slash = strchr(tok[1], '/');
    if (slash == NULL || (strcmp(slash, "/s") != 0 && strcmp(slash, "/m") != 0) ||
        !config_rate_number(tok[1], (size_t)(slash - tok[1]), &rule.rate)) {
        config_bad_value(b, k, raw, "the rate must be N/s or N/m with N from 1 to 1000000");
        return -1;
    }
    rule.period_ms = slash[1] == 's' ? 1000 : 60000;
    rule.burst = rule.rate;
    if (n == 4 && !config_rate_number(tok[3], strlen(tok[3]), &rule.burst)) {
        config_bad_value(b, k, raw, "burst must be a number from 1 to 1000000");
        return -1;
    }
    /* like listen: the first line of a source replaces the list it inherited */
    if (!b->rate_limit_touched) {
        config_clear_rate_limits(b);
        b->rate_limit_touched = true;
    }
    if (cfg->n_rate_limits == RATELIMIT_RULES_MAX) {
        config_bad_value(b, k, raw, "at most 16 rate_limit lines");
        return -1;
    }
    grown = realloc(cfg->rate_limits, (cfg->n_rate_limits + 1) * sizeof *grown);
    if (grown == NULL)
        goto oom;
    cfg->rate_limits = grown;
    grown_at = realloc(b->rate_limit_at, (cfg->n_rate_limits + 1) * sizeof *grown_at);
    if (grown_at == NULL)
        goto oom;
    b->rate_limit_at = grown_at;
    cfg->rate_limits[cfg->n_rate_limits] = rule;
    b->rate_limit_at[cfg->n_rate_limits] = b->at;
    cfg->n_rate_limits++;
    return 0;

oom:
    config_oom(b, k);
    return -1;
}

static void config_clear_upstreams(struct build *b)
{
    struct mcpeek_config *cfg = b->cfg;

    for (size_t i = 0; i < cfg->n_upstreams; i++)
        free(cfg->upstreams[i].url);
    free(cfg->upstreams);
    free(b->upstream_at);
    cfg->upstreams = NULL;
    b->upstream_at = NULL;
    cfg->n_upstreams = 0;
}

/* `upstream URL [weight=N]`: the first line of a source replaces the list it inherited (the
 * default, or the file's lines for `--upstream`), each further line adds one. */
static int config_set_upstream(struct build *b, const struct config_key *k, char **tok, size_t n,
                               const char *raw)
{
    struct mcpeek_config *cfg = b->cfg;
    struct upstream_spec *grown;
    struct src_pos *grown_at;
    unsigned long long weight = 1;
    const char *why;
    char *dup;

    if (n > 2) {
        config_bad_value(b, k, raw, config_types[KT_UPSTREAM].expected);
        return -1;
    }
    why = config_check_url(tok[0]);
    if (why != NULL) {
        config_bad_value(b, k, tok[0], why);
        return -1;
    }
    if (n == 2) {
        const char *w = tok[1];
        char *end;
        if (strncmp(w, "weight=", 7) != 0 || !is_digit(w[7])) {
            config_bad_value(b, k, raw, config_types[KT_UPSTREAM].expected);
            return -1;
        }
        errno = 0;
        weight = strtoull(w + 7, &end, 10);
        if (*end != '\0' || errno != 0 || weight < 1 || weight > CONFIG_UPSTREAM_WEIGHT_MAX) {
            config_bad_value(b, k, raw, "weight must be a number from 1 to 1000");
            return -1;
        }
    }
    if (!b->upstream_touched) {
        config_clear_upstreams(b);
        b->upstream_touched = true;
    }
    if (cfg->n_upstreams == CONFIG_UPSTREAM_MAX) {
        config_bad_value(b, k, raw, "at most 32 upstream lines");
        return -1;
    }
    grown = realloc(cfg->upstreams, (cfg->n_upstreams + 1) * sizeof *grown);
    if (grown == NULL)
        goto oom;
    cfg->upstreams = grown;
    grown_at = realloc(b->upstream_at, (cfg->n_upstreams + 1) * sizeof *grown_at);
    if (grown_at == NULL)
        goto oom;
    b->upstream_at = grown_at;
    dup = strdup(tok[0]);
    if (dup == NULL)
        goto oom;
    cfg->upstreams[cfg->n_upstreams].url = dup;
    cfg->upstreams[cfg->n_upstreams].weight = (unsigned)weight;
    b->upstream_at[cfg->n_upstreams] = b->at;
    cfg->n_upstreams++;
    return 0;

oom:
    config_oom(b, k);
    return -1;
}

/* Replaces a string member; `value` NULL clears it. */
static int config_set_string(struct build *b, const struct config_key *k, const char *value)
{
    char **member = config_member(b->cfg, k);
    char *dup = NULL;

    if (value != NULL) {
        dup = strdup(value);
        if (dup == NULL) {
            config_oom(b, k);
            return -1;
        }
    }
    free(*member);
    *member = dup;
    return 0;
}

static bool config_word(const char *value, const char *const *words, size_t n, size_t *index)
{
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(value, words[i]) == 0) {
            *index = i;
            return true;
        }
    }
    return false;
}

/* Applies one directive: tok[0..n) are the value's words (n >= 1), raw is the value as
 * written. Returns 0, or -1 after reporting. */
static int config_apply(struct build *b, const struct config_key *k, char **tok, size_t n,
                        const char *raw)
{
    static const char *const bools[] = {"off", "no", "false", "on", "yes", "true"};
    static const char *const locations[] = {"off", "coarse", "full"};
    static const enum user_location_policy location_values[] = {
        USER_LOCATION_OFF, USER_LOCATION_COARSE, USER_LOCATION_FULL};
    static const char *const tls_versions[] = {"TLSv1.2", "TLSv1.3"};
    static const char *const http2_modes[] = {"off", "on", "prior-knowledge"};
    static const enum upstream_http2 http2_values[] = {UPSTREAM_HTTP2_OFF, UPSTREAM_HTTP2_ON,
                                                       UPSTREAM_HTTP2_PRIOR_KNOWLEDGE};
    const char *v = tok[0], *why;
    char host[CONFIG_HOST_MAX + 1];
    unsigned long long num;
    unsigned port;
    size_t idx;

    if (k->type == KT_LISTEN)
        return config_set_listen(b, k, tok, n, raw);
    if (k->type == KT_ORIGINS || k->type == KT_HOSTS)
        return config_set_list(b, k, tok, n);
    if (k->type == KT_RATE_LIMIT)
        return config_set_rate_limit(b, k, tok, n, raw);
    if (k->type == KT_UPSTREAM)
        return config_set_upstream(b, k, tok, n, raw);
    if (n != 1) {
        config_bad_value(b, k, raw, config_types[k->type].expected);
        return -1;
    }

    switch (k->type) {
    case KT_HOSTPORT:
        if ((k->flags & KF_OFF) && strcasecmp(v, "off") == 0)
            return config_set_string(b, k, NULL);
        why = config_split_hostport(v, strlen(v), true, host, &port);
        if (why != NULL) {
            config_bad_value(b, k, v, why);
            return -1;
        }
        return config_set_string(b, k, v);
    case KT_URL:
        why = config_check_url(v);
        if (why != NULL) {
            config_bad_value(b, k, v, why);
            return -1;
        }
        return config_set_string(b, k, v);
    case KT_URL_PATH:
        if (v[0] != '/' || strpbrk(v, "?#") != NULL) {
            config_bad_value(b, k, v,
                             v[0] != '/' ? config_types[k->type].expected
                                         : "a path has no '?' or '#' part");
            return -1;
        }
        return config_set_string(b, k, v);
    case KT_HOST:
        why = config_split_hostport(v, strlen(v), false, host, &port);
        if (why != NULL) {
            config_bad_value(b, k, v, why);
            return -1;
        }
        return config_set_string(b, k, v);
    case KT_WORKERS:
        if (strcasecmp(v, "auto") == 0) {
            *(int *)config_member(b->cfg, k) = 0;
            return 0;
        }
        if (config_parse_number(b, k, v, &num) < 0)
            return -1;
        *(int *)config_member(b->cfg, k) = (int)num;
        return 0;
    case KT_BYTES:
    case KT_COUNT:
    case KT_DURATION:
        if (config_parse_number(b, k, v, &num) < 0)
            return -1;
        config_store_number(config_member(b->cfg, k), k->size, num);
        return 0;
    case KT_BOOL:
        if (!config_word(v, bools, 6, &idx)) {
            config_bad_value(b, k, v, config_types[k->type].expected);
            return -1;
        }
        *(bool *)config_member(b->cfg, k) = idx >= 3;
        return 0;
    case KT_FILE:
        if (access(v, R_OK) != 0) {
            char why_buf[160];
            snprintf(why_buf, sizeof why_buf, "cannot read it: %s", strerror(errno));
            config_bad_value(b, k, v, why_buf);
            return -1;
        }
        return config_set_string(b, k, v);
    case KT_LOG_FILE:
        return config_set_string(b, k, strcmp(v, "-") == 0 ? NULL : v);
    case KT_USER_LOCATION:
        if (!config_word(v, locations, 3, &idx)) {
            config_bad_value(b, k, v, config_types[k->type].expected);
            return -1;
        }
        *(enum user_location_policy *)config_member(b->cfg, k) = location_values[idx];
        return 0;
    case KT_TLS_VERSION:
        if (!config_word(v, tls_versions, 2, &idx)) {
            config_bad_value(b, k, v, config_types[k->type].expected);
            return -1;
        }
        return config_set_string(b, k, tls_versions[idx]);
    case KT_SOCKET_PATH:
        if ((k->flags & KF_OFF) && strcasecmp(v, "off") == 0)
            return config_set_string(b, k, NULL);
        /* sun_path holds 108 bytes with the NUL; a relative path would depend on the cwd. */
        if (v[0] != '/' || strlen(v) >= 108) {
            config_bad_value(b, k, v, config_types[k->type].expected);
            return -1;
        }
        return config_set_string(b, k, v);
    case KT_REDIS_URL: {
        char rhost[256];
        unsigned rport, rdb;
        if ((k->flags & KF_OFF) && strcasecmp(v, "off") == 0)
            return config_set_string(b, k, NULL);
        if (shared_state_parse_url(v, rhost, sizeof rhost, &rport, &rdb, &why) < 0) {
            config_bad_value(b, k, v, why);
            return -1;
        }
        return config_set_string(b, k, v);
    }
    case KT_HTTP2:
        if (!config_word(v, http2_modes, 3, &idx)) {
            config_bad_value(b, k, v, config_types[k->type].expected);
            return -1;
        }
        *(enum upstream_http2 *)config_member(b->cfg, k) = http2_values[idx];
        return 0;
    case KT_LISTEN:
    case KT_ORIGINS:
    case KT_RATE_LIMIT:
    case KT_HOSTS:
    case KT_UPSTREAM:
        break;
    }
    return -1;
}

/* Splits `value` in place on blanks and applies it. `value` is trimmed and non-empty. */
static int config_apply_text(struct build *b, const struct config_key *k, char *value,
                             const char *raw)
{
    size_t n = 0, cap = 0;
    char **tok = NULL, *p = value;
    int rc = -1;

    while (*p != '\0') {
        char *start = p;
        while (*p != '\0' && !is_space(*p))
            p++;
        if (n == cap) {
            size_t ncap = cap == 0 ? 4 : cap * 2;
            char **grown = realloc(tok, ncap * sizeof *grown);
            if (grown == NULL) {
                config_oom(b, k);
                goto out;
            }
            tok = grown;
            cap = ncap;
        }
        tok[n++] = start;
        if (*p != '\0')
            *p++ = '\0';
        while (is_space(*p))
            p++;
    }
    rc = config_apply(b, k, tok, n, raw);

out:
    free(tok);
    return rc;
}

/* One directive from a file line or a flag. `value` NULL or empty = missing. */
static void config_directive(struct build *b, const struct config_key *k, const char *value)
{
    size_t i = (size_t)(k - config_keys);
    char *copy;

    if (value == NULL || value[0] == '\0') {
        config_error(b, &b->at, b->at.kind == SRC_CLI ? k : NULL, "missing value for '%s'",
                     k->name);
        b->failed[i] = true;
        return;
    }
    copy = strdup(value);
    if (copy == NULL) {
        config_oom(b, k);
        b->failed[i] = true;
        return;
    }
    if (config_apply_text(b, k, copy, value) < 0)
        b->failed[i] = true;
    else
        b->key_at[i] = b->at;
    free(copy);
}

/* ---------------------------------------------------------------------------------------- */
/* the file */

/* Handles one line (NUL terminated, without its '\n'). */
static void config_parse_line(struct build *b, char *line)
{
    const struct config_key *k;
    char *p = line, *key, *value, *end;
    size_t klen, i;

    for (char *q = line; *q != '\0'; q++) {
        unsigned char c = (unsigned char)*q;
        if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f) {
            config_error(b, &b->at, NULL, "control character 0x%02x in line", c);
            return;
        }
    }
    while (is_space(*p))
        p++;
    if (*p == '\0' || *p == '#')
        return;
    /* a `#` after a blank starts a comment; one inside a word (a URL fragment) does not */
    for (end = p; *end != '\0'; end++) {
        if (*end == '#' && is_space(end[-1])) {
            *end = '\0';
            break;
        }
    }
    while (end > p && is_space(end[-1]))
        *--end = '\0';

    key = p;
    while (*p != '\0' && !is_space(*p))
        p++;
    klen = (size_t)(p - key);
    while (is_space(*p))
        *p++ = '\0';
    value = p;

    k = config_find_key(key, klen);
    if (k == NULL) {
        const char *hint = config_suggest(key, klen, false);
        key[klen] = '\0';
        if (hint != NULL)
            config_error(b, &b->at, NULL, "unknown key '%s' (did you mean '%s'?)", key, hint);
        else
            config_error(b, &b->at, NULL, "unknown key '%s'", key);
        return;
    }
    i = (size_t)(k - config_keys);
    if (k->type != KT_LISTEN && k->type != KT_RATE_LIMIT && k->type != KT_UPSTREAM &&
        b->first_line[i] != 0) {
        config_error(b, &b->at, NULL, "duplicate key '%s' (first set on line %d)", k->name,
                     b->first_line[i]);
        return;
    }
    if (b->first_line[i] == 0)
        b->first_line[i] = b->at.line;
    config_directive(b, k, value);
}

static void config_parse_text(struct build *b, const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;
    char *line = NULL;
    size_t line_cap = 0;

    b->at.kind = SRC_FILE;
    b->at.line = 0;
    b->listen_touched = false;
    b->rate_limit_touched = false;
    b->upstream_touched = false;
    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3; /* UTF-8 byte order mark some editors write */

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);

        b->at.line++;
        if (memchr(p, '\0', n) != NULL) {
            config_error(b, &b->at, NULL, "NUL byte in line");
        } else {
            if (n + 1 > line_cap) {
                char *grown = realloc(line, n + 1);
                if (grown == NULL) {
                    config_error(b, &b->at, NULL, "out of memory");
                    break;
                }
                line = grown;
                line_cap = n + 1;
            }
            memcpy(line, p, n);
            line[n] = '\0';
            config_parse_line(b, line);
        }
        p += n + (nl != NULL ? 1 : 0);
    }
    free(line);
}

/* Reads a whole config file. Returns a malloc'd buffer, or NULL after reporting. */
static char *config_read_file(const char *path, size_t *len, struct strbuf *errors)
{
    char *buf = NULL;
    struct stat st;
    size_t got = 0;
    int fd;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        strbuf_printf(errors, "%s: cannot open: %s\n", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) < 0) {
        strbuf_printf(errors, "%s: cannot read: %s\n", path, strerror(errno));
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        strbuf_printf(errors, "%s: cannot read: %s\n", path, strerror(EISDIR));
        goto fail;
    }
    buf = malloc(CONFIG_MAX_FILE_SIZE + 1);
    if (buf == NULL) {
        strbuf_printf(errors, "%s: out of memory\n", path);
        goto fail;
    }
    for (;;) {
        ssize_t r = read(fd, buf + got, CONFIG_MAX_FILE_SIZE + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            strbuf_printf(errors, "%s: cannot read: %s\n", path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        got += (size_t)r;
        if (got > CONFIG_MAX_FILE_SIZE) {
            strbuf_printf(errors, "%s: larger than %d bytes, not a config file\n", path,
                          CONFIG_MAX_FILE_SIZE);
            goto fail;
        }
    }
    close(fd);
    *len = got;
    return buf;

fail:
    free(buf);
    close(fd);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* cross-key checks, run once every source is applied */

static const struct config_key *config_key_named(const char *name)
{
    return config_find_key(name, strlen(name));
}

static bool config_key_failed(const struct build *b, const char *name)
{
    return b->failed[config_key_named(name) - config_keys];
}

/* A certificate needs its key and the other way round. */
static void config_check_pair(struct build *b, const char *cert_name, const char *key_name)
{
    const struct config_key *ck = config_key_named(cert_name);
    const struct config_key *kk = config_key_named(key_name);
    const char *cert = *(char **)config_member(b->cfg, ck);
    const char *key = *(char **)config_member(b->cfg, kk);

    if (b->failed[ck - config_keys] || b->failed[kk - config_keys])
        return;
    if (cert != NULL && key == NULL)
        config_error(b, &b->key_at[ck - config_keys], ck, "%s is set but %s is not", cert_name,
                     key_name);
    if (key != NULL && cert == NULL)
        config_error(b, &b->key_at[kk - config_keys], kk, "%s is set but %s is not", key_name,
                     cert_name);
}

static void config_put_listen(struct strbuf *sb, const struct listen_addr *l)
{
    if (strchr(l->host, ':') != NULL)
        strbuf_printf(sb, "[%s]:%u", l->host, (unsigned)l->port);
    else
        strbuf_printf(sb, "%s:%u", l->host, (unsigned)l->port);
}

static void config_check_listen(struct build *b)
{
    const struct config_key *lk = config_key_named("listen");
    struct mcpeek_config *cfg = b->cfg;
    struct strbuf addr;

    if (config_key_failed(b, "listen"))
        return;
    strbuf_init(&addr);
    for (size_t i = 0; i < cfg->n_listen; i++) {
        for (size_t j = 0; j < i; j++) {
            if (cfg->listen[j].port != cfg->listen[i].port ||
                strcasecmp(cfg->listen[j].host, cfg->listen[i].host) != 0)
                continue;
            strbuf_reset(&addr);
            config_put_listen(&addr, &cfg->listen[i]);
            if (b->listen_at[j].kind == SRC_FILE)
                config_error(b, &b->listen_at[i], lk, "listen %s given twice (first on line %d)",
                             addr.data, b->listen_at[j].line);
            else
                config_error(b, &b->listen_at[i], lk, "listen %s given twice", addr.data);
            break;
        }
    }
    if (!config_key_failed(b, "tls_cert") && !config_key_failed(b, "tls_key") &&
        cfg->tls_cert == NULL && cfg->tls_key == NULL) {
        for (size_t i = 0; i < cfg->n_listen; i++) {
            if (!cfg->listen[i].tls)
                continue;
            strbuf_reset(&addr);
            config_put_listen(&addr, &cfg->listen[i]);
            config_error(b, &b->listen_at[i], lk, "listen %s tls needs tls_cert and tls_key",
                         addr.data);
            break;
        }
    }
    if (cfg->admin_listen != NULL && !config_key_failed(b, "admin_listen")) {
        const struct config_key *ak = config_key_named("admin_listen");
        char host[CONFIG_HOST_MAX + 1];
        unsigned port;
        if (config_split_hostport(cfg->admin_listen, strlen(cfg->admin_listen), true, host,
                                  &port) == NULL) {
            for (size_t i = 0; i < cfg->n_listen; i++) {
                if (cfg->listen[i].port == port && strcasecmp(cfg->listen[i].host, host) == 0) {
                    config_error(b, &b->key_at[ak - config_keys], ak,
                                 "admin_listen %s is also a listen address", cfg->admin_listen);
                    break;
                }
            }
        }
    }
    strbuf_free(&addr);
}

static void config_put_rate_limit(struct strbuf *sb, const struct ratelimit_rule *r)
{
    strbuf_printf(sb, "%s %u/%c burst %u", ratelimit_scope_name(r->scope), (unsigned)r->rate,
                  r->period_ms == 1000 ? 's' : 'm', (unsigned)r->burst);
}

/* Two identical lines would share their buckets and limit nothing more than one does. */
static void config_check_rate_limits(struct build *b)
{
    const struct config_key *rk = config_key_named("rate_limit");
    struct mcpeek_config *cfg = b->cfg;
    struct strbuf line;

    if (config_key_failed(b, "rate_limit"))
        return;
    strbuf_init(&line);
    for (size_t i = 0; i < cfg->n_rate_limits; i++) {
        for (size_t j = 0; j < i; j++) {
            if (!ratelimit_rule_equal(&cfg->rate_limits[i], &cfg->rate_limits[j]))
                continue;
            strbuf_reset(&line);
            config_put_rate_limit(&line, &cfg->rate_limits[i]);
            if (b->rate_limit_at[j].kind == SRC_FILE)
                config_error(b, &b->rate_limit_at[i], rk,
                             "rate_limit %s given twice (first on line %d)",
                             line.oom ? "" : line.data, b->rate_limit_at[j].line);
            else
                config_error(b, &b->rate_limit_at[i], rk, "rate_limit %s given twice",
                             line.oom ? "" : line.data);
            break;
        }
    }
    strbuf_free(&line);
}

/* The same URL twice would be one upstream counted twice: refuse it, like listen. */
static void config_check_upstreams(struct build *b)
{
    const struct config_key *uk = config_key_named("upstream");
    struct mcpeek_config *cfg = b->cfg;

    if (config_key_failed(b, "upstream"))
        return;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->upstreams[i].url, cfg->upstreams[j].url) != 0)
                continue;
            if (b->upstream_at[j].kind == SRC_FILE)
                config_error(b, &b->upstream_at[i], uk,
                             "upstream %s given twice (first on line %d)", cfg->upstreams[i].url,
                             b->upstream_at[j].line);
            else
                config_error(b, &b->upstream_at[i], uk, "upstream %s given twice",
                             cfg->upstreams[i].url);
            break;
        }
    }
}

static void config_check(struct build *b)
{
    config_check_listen(b);
    config_check_upstreams(b);
    config_check_rate_limits(b);
    config_check_pair(b, "tls_cert", "tls_key");
    config_check_pair(b, "upstream_tls_cert", "upstream_tls_key");
}

/* ---------------------------------------------------------------------------------------- */
/* generations */

void config_free(struct mcpeek_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct config_key *k = &config_keys[i];
        switch (k->type) {
        case KT_LISTEN:
            for (size_t j = 0; j < cfg->n_listen; j++)
                free(cfg->listen[j].host);
            free(cfg->listen);
            break;
        case KT_ORIGINS:
        case KT_HOSTS: {
            size_t *count;
            char ***list = config_list_of(cfg, k, &count);
            config_free_strv(*list, *count);
            break;
        }
        case KT_RATE_LIMIT:
            free(cfg->rate_limits);
            break;
        case KT_UPSTREAM:
            for (size_t j = 0; j < cfg->n_upstreams; j++)
                free(cfg->upstreams[j].url);
            free(cfg->upstreams);
            break;
        case KT_HOSTPORT:
        case KT_URL:
        case KT_URL_PATH:
        case KT_HOST:
        case KT_FILE:
        case KT_LOG_FILE:
        case KT_TLS_VERSION:
        case KT_SOCKET_PATH:
        case KT_REDIS_URL:
            free(*(char **)config_member(cfg, k));
            break;
        default:
            break;
        }
    }
    free(cfg->source_path);
    free(cfg);
}

static void config_build_init(struct build *b, struct strbuf *errors)
{
    memset(b, 0, sizeof *b);
    b->errors = errors;
}

static void config_build_done(struct build *b)
{
    free(b->listen_at);
    b->listen_at = NULL;
    free(b->rate_limit_at);
    b->rate_limit_at = NULL;
    free(b->upstream_at);
    b->upstream_at = NULL;
}

/* Allocates a generation holding the defaults. NULL on failure (reported). */
static struct mcpeek_config *config_start(struct build *b)
{
    b->cfg = calloc(1, sizeof *b->cfg);
    if (b->cfg == NULL) {
        strbuf_puts(b->errors, "out of memory\n");
        b->n_errors++;
        return NULL;
    }
    b->at.kind = SRC_DEFAULT;
    b->listen_touched = false;
    b->rate_limit_touched = false;
    b->upstream_touched = false;
    for (size_t i = 0; i < N_KEYS; i++)
        if (config_keys[i].def != NULL)
            config_directive(b, &config_keys[i], config_keys[i].def);
    return b->cfg;
}

static void config_apply_overrides(struct build *b, const struct cli_args *args)
{
    b->at.kind = SRC_CLI;
    b->at.line = 0;
    b->listen_touched = false;
    b->rate_limit_touched = false;
    b->upstream_touched = false;
    for (size_t i = 0; i < args->n_overrides; i++) {
        const struct config_override *o = &args->overrides[i];
        const struct config_key *k = config_key_named(o->key);
        if (k == NULL) {
            strbuf_printf(b->errors, "command line: unknown key '%s'\n", o->key);
            b->n_errors++;
            continue;
        }
        b->failed[k - config_keys] = false; /* the last flag wins, as usual on command lines */
        config_directive(b, k, o->value);
    }
}

/* Everything config_build does, with the file's text already in memory (buf may be NULL). */
static struct mcpeek_config *config_build_text(const char *name, const char *buf, size_t len,
                                               const struct cli_args *args, struct strbuf *errors)
{
    struct build b;

    config_build_init(&b, errors);
    if (config_start(&b) == NULL)
        goto out;
    if (name != NULL) {
        b.cfg->source_path = strdup(name);
        if (b.cfg->source_path == NULL) {
            strbuf_printf(errors, "%s: out of memory\n", name);
            b.n_errors++;
        }
        b.file = name;
        if (buf != NULL)
            config_parse_text(&b, buf, len);
    }
    if (args != NULL)
        config_apply_overrides(&b, args);
    config_check(&b);

out:
    config_build_done(&b);
    if (b.n_errors > 0) {
        config_free(b.cfg);
        return NULL;
    }
    return b.cfg;
}

struct mcpeek_config *config_defaults(void)
{
    struct strbuf errors;
    struct mcpeek_config *cfg;

    strbuf_init(&errors);
    cfg = config_build_text(NULL, NULL, 0, NULL, &errors);
    strbuf_free(&errors);
    return cfg;
}

struct mcpeek_config *config_parse_buffer(const char *name, const char *buf, size_t len,
                                          struct strbuf *errors)
{
    return config_build_text(name, buf, len, NULL, errors);
}

struct mcpeek_config *config_build(const struct cli_args *args, struct strbuf *errors)
{
    struct mcpeek_config *cfg;
    const char *path = args != NULL ? args->config_path : NULL;
    size_t len = 0;
    char *buf = NULL;

    if (path != NULL) {
        buf = config_read_file(path, &len, errors);
        if (buf == NULL) {
            /* still report what is wrong on the command line */
            config_free(config_build_text(NULL, NULL, 0, args, errors));
            return NULL;
        }
    }
    cfg = config_build_text(path, buf, len, args, errors);
    free(buf);
    return cfg;
}

/* ---------------------------------------------------------------------------------------- */
/* comparing generations */

static bool config_str_equal(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

static bool config_listen_has(const struct mcpeek_config *cfg, const struct listen_addr *l)
{
    for (size_t i = 0; i < cfg->n_listen; i++)
        if (cfg->listen[i].port == l->port && cfg->listen[i].tls == l->tls &&
            strcmp(cfg->listen[i].host, l->host) == 0)
            return true;
    return false;
}

static bool config_key_equal(const struct config_key *k, const struct mcpeek_config *a,
                             const struct mcpeek_config *b)
{
    switch (k->type) {
    case KT_LISTEN: /* a set: reordering lines binds the same sockets */
        if (a->n_listen != b->n_listen)
            return false;
        for (size_t i = 0; i < a->n_listen; i++)
            if (!config_listen_has(b, &a->listen[i]))
                return false;
        return true;
    case KT_ORIGINS:
    case KT_HOSTS: {
        bool hosts = k->type == KT_HOSTS;
        char *const *va = hosts ? a->allowed_hosts : a->allowed_origins;
        char *const *vb = hosts ? b->allowed_hosts : b->allowed_origins;
        size_t na = hosts ? a->n_allowed_hosts : a->n_allowed_origins;
        if (na != (hosts ? b->n_allowed_hosts : b->n_allowed_origins))
            return false;
        for (size_t i = 0; i < na; i++)
            if (strcmp(va[i], vb[i]) != 0)
                return false;
        return true;
    }
    case KT_UPSTREAM: /* in order: a weight or URL change moves sessions, so it is a change */
        if (a->n_upstreams != b->n_upstreams)
            return false;
        for (size_t i = 0; i < a->n_upstreams; i++)
            if (a->upstreams[i].weight != b->upstreams[i].weight ||
                strcmp(a->upstreams[i].url, b->upstreams[i].url) != 0)
                return false;
        return true;
    case KT_RATE_LIMIT: /* in order: the first refusing line is the one reported */
        if (a->n_rate_limits != b->n_rate_limits)
            return false;
        for (size_t i = 0; i < a->n_rate_limits; i++)
            if (!ratelimit_rule_equal(&a->rate_limits[i], &b->rate_limits[i]))
                return false;
        return true;
    case KT_HOSTPORT:
    case KT_URL:
    case KT_URL_PATH:
    case KT_HOST:
    case KT_FILE:
    case KT_LOG_FILE:
    case KT_TLS_VERSION:
    case KT_SOCKET_PATH:
    case KT_REDIS_URL:
        return config_str_equal(*(char *const *)config_cmember(a, k),
                                *(char *const *)config_cmember(b, k));
    default:
        return memcmp(config_cmember(a, k), config_cmember(b, k), k->size) == 0;
    }
}

size_t config_restart_only_changes(const struct mcpeek_config *old_cfg,
                                   const struct mcpeek_config *new_cfg, const char **names,
                                   size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < N_KEYS; i++) {
        const struct config_key *k = &config_keys[i];
        if (!(k->flags & KF_RESTART) || config_key_equal(k, old_cfg, new_cfg))
            continue;
        if (n < max)
            names[n] = k->name;
        n++;
    }
    return n;
}

/* ---------------------------------------------------------------------------------------- */
/* the command line */

void cli_args_free(struct cli_args *args)
{
    if (args == NULL)
        return;
    for (size_t i = 0; i < args->n_overrides; i++) {
        free(args->overrides[i].key);
        free(args->overrides[i].value);
    }
    free(args->overrides);
    free(args->config_path);
    memset(args, 0, sizeof *args);
}

static int cli_add_override(struct cli_args *out, const char *key, const char *value)
{
    struct config_override *grown;
    char *k, *v;

    grown = realloc(out->overrides, (out->n_overrides + 1) * sizeof *grown);
    if (grown == NULL)
        return -1;
    out->overrides = grown;
    k = strdup(key);
    v = strdup(value);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        return -1;
    }
    out->overrides[out->n_overrides].key = k;
    out->overrides[out->n_overrides].value = v;
    out->n_overrides++;
    return 0;
}

int cli_parse(int argc, char **argv, struct cli_args *out, struct strbuf *errors)
{
    bool help = false, version = false, test = false;

    memset(out, 0, sizeof *out);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *name, *eq, *value;
        const struct config_key *k = NULL;
        size_t nlen;

        if (strcmp(arg, "-t") == 0 || strcmp(arg, "--test") == 0) {
            test = true;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            help = true;
            continue;
        }
        if (strcmp(arg, "-V") == 0 || strcmp(arg, "--version") == 0) {
            version = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0 && strcmp(arg, "-c") != 0) {
            strbuf_printf(errors, "command line: unexpected argument '%s' (see --help)\n", arg);
            goto fail;
        }

        name = strcmp(arg, "-c") == 0 ? "config" : arg + 2;
        eq = strchr(name, '=');
        nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
        if (!(nlen == 6 && memcmp(name, "config", 6) == 0)) {
            for (size_t j = 0; j < N_KEYS && k == NULL; j++)
                if (config_flag_matches(name, nlen, config_keys[j].name))
                    k = &config_keys[j];
            if (k == NULL) {
                const char *hint = config_suggest(name, nlen, true);
                strbuf_printf(errors, "command line: unknown option '%.*s'", (int)nlen + 2, arg);
                if (hint != NULL) {
                    strbuf_puts(errors, " (did you mean ");
                    config_put_flag(errors, hint);
                    strbuf_puts(errors, "?)");
                }
                strbuf_putc(errors, '\n');
                goto fail;
            }
        }
        if (eq != NULL && arg[1] == '-') {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            strbuf_printf(errors, "command line: %.*s: missing value\n",
                          (int)(arg[1] == '-' ? nlen + 2 : strlen(arg)), arg);
            goto fail;
        }

        if (k == NULL) {
            free(out->config_path);
            out->config_path = strdup(value);
            if (out->config_path == NULL)
                goto oom;
        } else if (cli_add_override(out, k->name, value) < 0) {
            goto oom;
        }
    }
    out->action = help ? CLI_HELP : version ? CLI_VERSION : test ? CLI_TEST : CLI_RUN;
    return 0;

oom:
    strbuf_puts(errors, "command line: out of memory\n");
fail:
    cli_args_free(out);
    return -1;
}

void cli_usage(struct strbuf *out)
{
    static const char *const fixed[][2] = {
        {"-c, --config PATH", "config file (default: none, built-in defaults only)"},
        {"-t, --test", "check the configuration, print 'configuration ok' or the errors, exit"},
        {"-h, --help", "print this help and exit"},
        {"-V, --version", "print the version and exit"},
    };
    struct strbuf flag;

    strbuf_init(&flag);
    strbuf_puts(out, "Usage: mcpeek [-t] [-c PATH] [--KEY VALUE | --KEY=VALUE]...\n"
                     "Every config file key is also a flag; flags override the file.\n\n");
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        strbuf_printf(out, "  %-40s %s\n", fixed[i][0], fixed[i][1]);
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct config_key *k = &config_keys[i];
        strbuf_reset(&flag);
        config_put_flag(&flag, k->name);
        strbuf_printf(&flag, " %s", config_types[k->type].hint);
        strbuf_printf(out, "  %-40s %s (default: %s%s)\n", flag.oom ? k->name : flag.data, k->help,
                      k->def != NULL ? k->def : "unset",
                      (k->flags & KF_RESTART) ? "; restart only" : "");
    }
    strbuf_free(&flag);
}
