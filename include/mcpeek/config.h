/* config: the settings of one generation, from built-in defaults, the config file and the
 * command line, in that order of precedence.
 *
 * A generation is immutable once built: reload (SIGHUP) builds a new one and swaps it in,
 * exchanges in flight keep the generation they started with. File format: one `key value`
 * directive per line, `#` comments, sizes with k/m/g suffixes, durations with ms/s/m/h. Every
 * key has a command-line flag `--key-with-dashes VALUE`. Unknown keys are errors.
 * docs/configuration.md describes every key.
 */
#ifndef MCPEEK_CONFIG_H
#define MCPEEK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcpeek/accesslog.h"
#include "mcpeek/ratelimit.h"
#include "mcpeek/strbuf.h"

/* `listen` lines accepted (each worker binds one socket per line). */
#define CONFIG_LISTEN_MAX 16

/* `upstream_http2`: HTTP/1.1 only, HTTP/2 when the server offers it in TLS (ALPN), or
 * HTTP/2 from the first byte on cleartext (prior knowledge). */
enum upstream_http2 { UPSTREAM_HTTP2_OFF = 0, UPSTREAM_HTTP2_ON, UPSTREAM_HTTP2_PRIOR_KNOWLEDGE };

/* `upstream` lines accepted, and the largest weight=N. */
#define CONFIG_UPSTREAM_MAX 32
#define CONFIG_UPSTREAM_WEIGHT_MAX 1000

/* One `upstream URL [weight=N]` line. */
struct upstream_spec {
    char *url;       /* owned; "http://127.0.0.1:3000/mcp" */
    unsigned weight; /* 1 .. CONFIG_UPSTREAM_WEIGHT_MAX; share of new sessions */
};

struct listen_addr {
    char *host; /* owned; "127.0.0.1", "::1", "0.0.0.0" */
    uint16_t port;
    bool tls; /* `listen ADDR tls`: serve HTTPS with tls_cert/tls_key */
};

/* All strings are owned by the generation; NULL means unset / off. */
struct mcpeek_config {
    char *source_path; /* config file this generation came from, NULL when none */

    /* front end */
    struct listen_addr *listen; /* at least one */
    size_t n_listen;
    char *mcp_path;                    /* "/mcp" */
    int workers;                       /* 0 = one per CPU */
    char *admin_listen;                /* "127.0.0.1:9464"; NULL = off */
    size_t max_body_size;              /* 4 MiB */
    size_t max_header_size;            /* 16 KiB */
    unsigned max_connections;          /* per process; 0 = unlimited */
    uint32_t client_header_timeout_ms; /* 10 s */
    uint32_t client_body_timeout_ms;   /* 10 s */
    uint32_t client_send_timeout_ms;   /* 60 s without progress writing the response */
    uint32_t shutdown_timeout_ms;      /* 10 s */
    bool strict_json;                  /* answer invalid JSON-RPC with 400 instead of forwarding */
    char **allowed_hosts;              /* NULL = default (access.c); {"*"} = any */
    size_t n_allowed_hosts;
    char **allowed_origins; /* NULL = default (access.c); {"*"} = any */
    size_t n_allowed_origins;
    char *auth_tokens_file; /* NULL = no bearer check by mcpeek */

    /* upstream */
    struct upstream_spec *upstreams;        /* `upstream` lines in order; at least one */
    size_t n_upstreams;                     /* at most CONFIG_UPSTREAM_MAX */
    uint32_t upstream_fail_timeout_ms;      /* 10 s: a failed upstream is skipped this long */
    bool upstream_affinity;                 /* on: a session's requests go to its upstream */
    char *upstream_host_header;             /* NULL = host of the upstream URL */
    uint32_t upstream_connect_timeout_ms;   /* 5 s */
    uint32_t upstream_response_timeout_ms;  /* 60 s, to the first response byte */
    unsigned upstream_keepalive;            /* idle connections kept per worker; 128 */
    uint32_t upstream_keepalive_timeout_ms; /* 4 s */
    uint32_t stream_idle_timeout_ms;        /* 0 = off */
    bool upstream_tls_verify;               /* on */
    char *upstream_ca_file;
    char *upstream_tls_cert;
    char *upstream_tls_key;
    size_t upstream_buffer_size;        /* libcurl's receive buffer per transfer; 4 KiB */
    char *upstream_unix_socket;         /* NULL = TCP to the URL's host and port */
    uint32_t upstream_dns_ttl_ms;       /* 60 s: how long a resolved address is used */
    enum upstream_http2 upstream_http2; /* off */

    /* front-end TLS */
    char *tls_cert;
    char *tls_key;
    char *tls_min_version; /* "TLSv1.2" */

    /* logging and privacy */
    char *log_file;                          /* NULL or "-" = stdout */
    enum user_location_policy user_location; /* coarse */
    size_t log_value_max_length;             /* 256 */
    char *pseudonymize_key_file;
    size_t response_inspect_max; /* 1 MiB: larger answers are relayed unparsed */

    /* metrics and session map */
    unsigned metrics_label_limit; /* distinct label values per label before "other"; 100 */
    size_t session_map_size;      /* entries (one map per process); 10000 */
    uint32_t session_map_ttl_ms;  /* 1 h */

    /* rate limits and conversations */
    struct ratelimit_rule *rate_limits;    /* `rate_limit` lines in order; NULL when none */
    size_t n_rate_limits;                  /* at most RATELIMIT_RULES_MAX */
    size_t rate_limit_keys;                /* buckets kept (one table per process); 100000 */
    uint32_t conversation_idle_timeout_ms; /* 30 min */
    char *shared_state;                    /* "redis://HOST:PORT[/DB]"; NULL = in-process only */
    uint32_t shared_state_timeout_ms;      /* 5 ms: a Redis lookup waits at most this long */
    size_t conversation_max;               /* open conversations (one table per process) */
};

/* One `--flag value` from the command line, kept so reload can apply it again. */
struct config_override {
    char *key; /* config key, e.g. "max_body_size" */
    char *value;
};

enum cli_action { CLI_RUN, CLI_TEST, CLI_HELP, CLI_VERSION };

struct cli_args {
    enum cli_action action;
    char *config_path; /* -c / --config; NULL when not given */
    struct config_override *overrides;
    size_t n_overrides;
};

/* Parses argv. Returns 0, or -1 after writing a one-line error to `errors`. */
int cli_parse(int argc, char **argv, struct cli_args *out, struct strbuf *errors);
void cli_args_free(struct cli_args *args);
/* `--help`: every flag, one line each. */
void cli_usage(struct strbuf *out);

/* Builds a generation: defaults, then the file named in `args` (if any), then the command
 * line overrides. Returns NULL after appending one line per problem to `errors`, in the form
 * `PATH:LINE: message` (file problems) or `command line: --flag: message`. */
struct mcpeek_config *config_build(const struct cli_args *args, struct strbuf *errors);

/* Builds a generation from a config file's text already in memory (buf[0..len), need not be
 * NUL terminated), named `name` in `NAME:LINE:` errors; no command line. Same checks and
 * result as config_build. Used by config_build itself, the fuzzer and tests. */
struct mcpeek_config *config_parse_buffer(const char *name, const char *buf, size_t len,
                                          struct strbuf *errors);

/* Built-in defaults only (tests, and the base of config_build). NULL on OOM. */
struct mcpeek_config *config_defaults(void);

void config_free(struct mcpeek_config *cfg);

/* Keys that differ between two generations but only take effect after a restart
 * (listen, workers, admin_listen; also log_file, metrics_label_limit, session_map_size,
 * session_map_ttl, rate_limit_keys and conversation_max, which main reads once at start). Writes up
 * to `max` key names; returns how many differ. */
size_t config_restart_only_changes(const struct mcpeek_config *old_cfg,
                                   const struct mcpeek_config *new_cfg, const char **names,
                                   size_t max);

#endif
