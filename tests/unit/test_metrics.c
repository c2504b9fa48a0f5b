/* test_metrics: unit tests for src/metrics.c.
 *
 * Every check reads the rendered exposition back, line by line, the way a scraper would:
 * a sample is found by its exact `name{labels}` text. The output is also fed to the official
 * Python parser (prometheus_client) when /usr/bin/python3 has it; otherwise that test skips.
 * The concurrency test is meant to be run once under -fsanitize=thread as well.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mcpeek/metrics.h"

#define PY "/usr/bin/python3"

/* ---- reading the exposition back ----------------------------------------------------------- */

static char *render(struct metrics *m)
{
    struct strbuf sb;

    strbuf_init(&sb);
    metrics_render(m, &sb);
    if (sb.oom || sb.data == NULL)
        fail_msg("render: expected text, got %s", sb.oom ? "out of memory" : "nothing");
    return sb.data; /* the caller frees */
}

/* Number of sample lines exactly `series` (name plus labels); *value gets the last one's. */
static int sample_count(const char *text, const char *series, double *value)
{
    size_t n = strlen(series);
    int hits = 0;

    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');

        if (eol == NULL)
            eol = line + strlen(line);
        if (line[0] != '#' && strncmp(line, series, n) == 0 && line[n] == ' ') {
            hits++;
            if (value)
                *value = strtod(line + n + 1, NULL);
        }
        line = *eol ? eol + 1 : eol;
    }
    return hits;
}

/* The value of the one sample `series`; fails when it is missing or repeated. */
static double sample(const char *text, const char *series)
{
    double v = 0;
    int hits = sample_count(text, series, &v);

    if (hits != 1)
        fail_msg("sample %s: expected exactly 1 line, got %d in:\n%s", series, hits, text);
    return v;
}

static void expect_sample(const char *text, const char *series, double want)
{
    double got = sample(text, series);

    if (got != want)
        fail_msg("sample %s: expected %.17g, got %.17g", series, want, got);
}

static void expect_absent(const char *text, const char *series)
{
    int hits = sample_count(text, series, NULL);

    if (hits != 0)
        fail_msg("sample %s: expected absent, got %d line(s)", series, hits);
}

/* Sum and number of the sample lines whose text starts with `prefix`. */
static double sum_prefix(const char *text, const char *prefix, int *lines)
{
    size_t n = strlen(prefix);
    double total = 0;
    int count = 0;

    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');

        if (eol == NULL)
            eol = line + strlen(line);
        if (line[0] != '#' && strncmp(line, prefix, n) == 0) {
            const char *sp = line + (eol - line);

            while (sp > line && sp[-1] != ' ')
                sp--;
            total += strtod(sp, NULL);
            count++;
        }
        line = *eol ? eol + 1 : eol;
    }
    if (lines)
        *lines = count;
    return total;
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static void test_requests_summed_across_workers(void **state)
{
    struct metrics *m = metrics_new(2, 100, "0.1.0");
    struct worker_metrics *w0, *w1;
    char *text;
    int lines;

    (void)state;
    assert_non_null(m);
    w0 = metrics_worker(m, 0);
    w1 = metrics_worker(m, 1);
    assert_non_null(w0);
    assert_non_null(w1);
    assert_ptr_not_equal(w0, w1);
    assert_null(metrics_worker(m, 2));

    for (int i = 0; i < 3; i++)
        metrics_exchange(w0, "tools/call", "search", 200, 0.01, 100, 1000);
    for (int i = 0; i < 2; i++)
        metrics_exchange(w1, "tools/call", "search", 200, 0.01, 10, 20);
    metrics_exchange(w1, "tools/call", "fetch", 500, 0.2, 1, 2);
    metrics_exchange(w0, "initialize", NULL, 200, 0.003, 7, 8);
    metrics_exchange(w0, NULL, NULL, 200, 12.0, 0, 4096);        /* GET stream: no body */
    metrics_exchange(w1, "tools/list", "ignored", 0, 0.5, 3, 0); /* tool only for tools/call */
    metrics_exchange(w1, "tools/call", NULL, 400, 0.001, 5, 5);
    for (int i = 0; i < 4; i++)
        metrics_log_line(i % 2 ? w1 : w0);

    text = render(m);
    expect_sample(
        text, "mcpeek_requests_total{rpc_method=\"tools/call\",tool=\"search\",status=\"200\"}", 5);
    expect_sample(
        text, "mcpeek_requests_total{rpc_method=\"tools/call\",tool=\"fetch\",status=\"500\"}", 1);
    expect_sample(text, "mcpeek_requests_total{rpc_method=\"initialize\",tool=\"\",status=\"200\"}",
                  1);
    expect_sample(text, "mcpeek_requests_total{rpc_method=\"\",tool=\"\",status=\"200\"}", 1);
    expect_sample(text, "mcpeek_requests_total{rpc_method=\"tools/list\",tool=\"\",status=\"0\"}",
                  1);
    expect_sample(text, "mcpeek_requests_total{rpc_method=\"tools/call\",tool=\"\",status=\"400\"}",
                  1);
    /* exactly these six series: the same labels from two workers are one line */
    sum_prefix(text, "mcpeek_requests_total{", &lines);
    if (lines != 6)
        fail_msg("requests_total: expected 6 series, got %d in:\n%s", lines, text);
    expect_sample(text, "mcpeek_bytes_in_total", 3 * 100 + 2 * 10 + 1 + 7 + 0 + 3 + 5);
    expect_sample(text, "mcpeek_bytes_out_total", 3 * 1000 + 2 * 20 + 2 + 8 + 4096 + 0 + 5);
    expect_sample(text, "mcpeek_log_lines_total", 4);
    expect_sample(text, "mcpeek_request_duration_seconds_count{rpc_method=\"tools/call\"}", 7);
    expect_sample(text, "mcpeek_request_duration_seconds_count{rpc_method=\"\"}", 1);
    expect_absent(text, "mcpeek_request_duration_seconds_count{rpc_method=\"other\"}");
    free(text);
    metrics_free(m);
}

static const char *const bucket_le[] = {"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                                        "0.1",   "0.25",   "0.5",   "1",    "2.5",   "5",
                                        "10",    "30",     "60",    "+Inf"};
#define N_LE (sizeof(bucket_le) / sizeof(bucket_le[0]))

static void test_histogram_buckets(void **state)
{
    struct metrics *m = metrics_new(2, 100, "x");
    /* le bound each lands in (index into bucket_le) */
    static const struct {
        double d;
        unsigned bucket;
    } obs[] = {
        {0.0005, 0}, {0.001, 0}, /* a value equal to a bound belongs to it (le) */
        {0.0011, 1}, {0.7, 9},    {1.0, 9},  {45.0, 14},
        {60.0, 14},  {100.0, 15}, {-1.0, 0}, /* negative durations count as 0 */
    };
    double want_sum = 0;
    unsigned per_bucket[N_LE] = {0};
    char series[128], *text;
    double prev = -1, got_inf;

    (void)state;
    assert_non_null(m);
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++) {
        /* alternate workers: the buckets must add up across them */
        metrics_exchange(metrics_worker(m, (unsigned)(i % 2)), "m", NULL, 200, obs[i].d, 0, 0);
        per_bucket[obs[i].bucket]++;
        want_sum += obs[i].d > 0 ? obs[i].d : 0;
    }
    metrics_exchange(metrics_worker(m, 0), "m", NULL, 200, NAN, 0, 0);
    per_bucket[0]++;

    text = render(m);
    unsigned cum = 0;
    for (size_t b = 0; b < N_LE; b++) {
        double got;

        cum += per_bucket[b];
        snprintf(series, sizeof(series),
                 "mcpeek_request_duration_seconds_bucket{rpc_method=\"m\",le=\"%s\"}",
                 bucket_le[b]);
        got = sample(text, series);
        if (got != cum)
            fail_msg("bucket le=%s: expected cumulative %u, got %.0f", bucket_le[b], cum, got);
        if (got < prev)
            fail_msg("bucket le=%s: expected >= previous %.0f, got %.0f", bucket_le[b], prev, got);
        prev = got;
    }
    got_inf = sample(text, "mcpeek_request_duration_seconds_bucket{rpc_method=\"m\",le=\"+Inf\"}");
    expect_sample(text, "mcpeek_request_duration_seconds_count{rpc_method=\"m\"}", got_inf);
    expect_sample(text, "mcpeek_request_duration_seconds_count{rpc_method=\"m\"}", 10);
    double got_sum = sample(text, "mcpeek_request_duration_seconds_sum{rpc_method=\"m\"}");
    if (fabs(got_sum - want_sum) > 1e-6)
        fail_msg("duration sum: expected %.9f, got %.9f", want_sum, got_sum);
    free(text);
    metrics_free(m);
}

static void test_label_limit_other(void **state)
{
    struct metrics *m = metrics_new(2, 3, "x");
    struct worker_metrics *w0, *w1;
    char *text;

    (void)state;
    assert_non_null(m);
    w0 = metrics_worker(m, 0);
    w1 = metrics_worker(m, 1);
    /* methods: tools/call, a, b take the 3 places; "", and "other" itself, are reserved */
    metrics_exchange(w0, "tools/call", "t1", 200, 0.01, 0, 0);
    metrics_exchange(w0, NULL, NULL, 200, 0.01, 0, 0);
    metrics_exchange(w0, "other", NULL, 200, 0.01, 0, 0);
    metrics_exchange(w0, "a", NULL, 200, 0.01, 0, 0);
    metrics_exchange(w1, "b", NULL, 200, 0.01, 0, 0);
    metrics_exchange(w1, "c", NULL, 200, 0.01, 0, 0);
    metrics_exchange(w0, "d", NULL, 200, 0.01, 0, 0);
    metrics_exchange(w1, "a", NULL, 200, 0.01, 0, 0); /* known from w0: its own label */
    metrics_exchange(w0, "c", NULL, 200, 0.01, 0, 0); /* stays "other" */
    /* tools: t1, t2, t3 take the places, t4 and t5 are "other" */
    metrics_exchange(w1, "tools/call", "t2", 200, 0.01, 0, 0);
    metrics_exchange(w1, "tools/call", "t3", 200, 0.01, 0, 0);
    metrics_exchange(w0, "tools/call", "t4", 200, 0.01, 0, 0);
    metrics_exchange(w1, "tools/call", "t5", 200, 0.01, 0, 0);

    text = render(m);
    expect_sample(text, "mcpeek_requests_total{rpc_method=\"a\",tool=\"\",status=\"200\"}", 2);
    expect_sample(text, "mcpeek_requests_total{rpc_method=\"b\",tool=\"\",status=\"200\"}", 1);
    expect_sample(text, "mcpeek_requests_total{rpc_method=\"\",tool=\"\",status=\"200\"}", 1);
    /* "other" (sent as such), c, d, c */
    expect_sample(text, "mcpeek_requests_total{rpc_method=\"other\",tool=\"\",status=\"200\"}", 4);
    expect_absent(text, "mcpeek_requests_total{rpc_method=\"c\",tool=\"\",status=\"200\"}");
    expect_absent(text, "mcpeek_requests_total{rpc_method=\"d\",tool=\"\",status=\"200\"}");
    expect_sample(text, "mcpeek_request_duration_seconds_count{rpc_method=\"other\"}", 4);
    expect_sample(text,
                  "mcpeek_requests_total{rpc_method=\"tools/call\",tool=\"t3\",status=\"200\"}", 1);
    expect_sample(
        text, "mcpeek_requests_total{rpc_method=\"tools/call\",tool=\"other\",status=\"200\"}", 2);
    expect_absent(text,
                  "mcpeek_requests_total{rpc_method=\"tools/call\",tool=\"t4\",status=\"200\"}");
    free(text);
    metrics_free(m);
}

static void test_label_escaping(void **state)
{
    struct metrics *m = metrics_new(1, 100, "1.0 \"quoted\"\\");
    struct worker_metrics *w;
    char long_method[301], want[200];
    char *text;

    (void)state;
    assert_non_null(m);
    w = metrics_worker(m, 0);
    memset(long_method, 'x', 300);
    long_method[300] = '\0';
    metrics_exchange(w, "a\"b\\c\nd", NULL, 200, 0.01, 0, 0);
    metrics_exchange(w, "tools/call", "say \"hi\"\n", 200, 0.01, 0, 0);
    metrics_exchange(w, "bad\xff\xfeutf8", NULL, 200, 0.01, 0, 0); /* not UTF-8 -> other */
    metrics_exchange(w, long_method, NULL, 200, 0.01, 0, 0);       /* cut to 128 bytes */
    metrics_exchange(w, "caf\xc3\xa9", NULL, 200, 0.01, 0, 0);     /* UTF-8 passes through */

    text = render(m);
    expect_sample(
        text, "mcpeek_requests_total{rpc_method=\"a\\\"b\\\\c\\nd\",tool=\"\",status=\"200\"}", 1);
    expect_sample(text, "mcpeek_request_duration_seconds_count{rpc_method=\"a\\\"b\\\\c\\nd\"}", 1);
    expect_sample(text,
                  "mcpeek_requests_total{rpc_method=\"tools/call\",tool=\"say "
                  "\\\"hi\\\"\\n\",status=\"200\"}",
                  1);
    expect_sample(text, "mcpeek_requests_total{rpc_method=\"other\",tool=\"\",status=\"200\"}", 1);
    snprintf(want, sizeof(want),
             "mcpeek_requests_total{rpc_method=\"%.128s\",tool=\"\",status=\"200\"}", long_method);
    expect_sample(text, want, 1);
    expect_sample(text,
                  "mcpeek_requests_total{rpc_method=\"caf\xc3\xa9\",tool=\"\",status=\"200\"}", 1);
    expect_sample(text, "mcpeek_build_info{version=\"1.0 \\\"quoted\\\"\\\\\"}", 1);
    /* no raw newline inside a label: every line is a comment or ends in a number */
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');

        assert_non_null(eol);
        if (line[0] != '#' && !(eol[-1] >= '0' && eol[-1] <= '9'))
            fail_msg("line: expected to end in a digit, got <%.*s>", (int)(eol - line), line);
        line = eol + 1;
    }
    free(text);
    metrics_free(m);
}

static void test_upstream_error_kinds(void **state)
{
    static const char *const kinds[] = {"connect", "timeout", "reset", "tls", "other", "dns"};
    struct metrics *m = metrics_new(2, 100, "x");
    char series[80], *text;
    int lines;

    (void)state;
    assert_non_null(m);
    text = render(m); /* every kind is present before anything failed */
    for (size_t k = 0; k < 6; k++) {
        snprintf(series, sizeof(series), "mcpeek_upstream_errors_total{kind=\"%s\"}", kinds[k]);
        expect_sample(text, series, 0);
    }
    free(text);

    metrics_upstream_error(metrics_worker(m, 0), UPSTREAM_ERR_CONNECT);
    metrics_upstream_error(metrics_worker(m, 1), UPSTREAM_ERR_CONNECT);
    metrics_upstream_error(metrics_worker(m, 0), UPSTREAM_ERR_TIMEOUT);
    metrics_upstream_error(metrics_worker(m, 1), UPSTREAM_ERR_TLS);
    metrics_upstream_error(metrics_worker(m, 1), UPSTREAM_ERR_TLS);
    metrics_upstream_error(metrics_worker(m, 1), UPSTREAM_ERR_TLS);
    metrics_upstream_error(metrics_worker(m, 0), UPSTREAM_ERR_OTHER);
    metrics_upstream_error(metrics_worker(m, 0), (enum upstream_error_kind)42); /* -> other */
    text = render(m);
    expect_sample(text, "mcpeek_upstream_errors_total{kind=\"connect\"}", 2);
    expect_sample(text, "mcpeek_upstream_errors_total{kind=\"timeout\"}", 1);
    expect_sample(text, "mcpeek_upstream_errors_total{kind=\"reset\"}", 0);
    expect_sample(text, "mcpeek_upstream_errors_total{kind=\"tls\"}", 3);
    expect_sample(text, "mcpeek_upstream_errors_total{kind=\"other\"}", 2);
    expect_sample(text, "mcpeek_upstream_errors_total{kind=\"dns\"}", 0);
    sum_prefix(text, "mcpeek_upstream_errors_total{", &lines);
    if (lines != 6)
        fail_msg("upstream_errors_total: expected 6 series, got %d", lines);
    free(text);
    metrics_free(m);
}

/* mcpeek_rate_limited_total{scope}: every scope shown from the start, summed over workers. */
static void test_rate_limited_scopes(void **state)
{
    static const char *const scopes[] = {"openai_subject", "openai_session", "openai_org",
                                         "client_ip", "token"};
    static const int want[] = {3, 0, 1, 0, 2};
    struct metrics *m = metrics_new(2, 100, "x");
    char series[80], *text;
    int lines;

    (void)state;
    assert_non_null(m);
    text = render(m);
    for (size_t s = 0; s < 5; s++) {
        snprintf(series, sizeof(series), "mcpeek_rate_limited_total{scope=\"%s\"}", scopes[s]);
        expect_sample(text, series, 0);
    }
    free(text);
    metrics_rate_limited(metrics_worker(m, 0), RATELIMIT_OPENAI_SUBJECT);
    metrics_rate_limited(metrics_worker(m, 1), RATELIMIT_OPENAI_SUBJECT);
    metrics_rate_limited(metrics_worker(m, 1), RATELIMIT_OPENAI_SUBJECT);
    metrics_rate_limited(metrics_worker(m, 0), RATELIMIT_OPENAI_ORG);
    metrics_rate_limited(metrics_worker(m, 0), RATELIMIT_TOKEN);
    metrics_rate_limited(metrics_worker(m, 1), RATELIMIT_TOKEN);
    metrics_rate_limited(metrics_worker(m, 1), (enum ratelimit_scope)99); /* ignored */
    text = render(m);
    for (size_t s = 0; s < 5; s++) {
        snprintf(series, sizeof(series), "mcpeek_rate_limited_total{scope=\"%s\"}", scopes[s]);
        expect_sample(text, series, want[s]);
    }
    sum_prefix(text, "mcpeek_rate_limited_total{", &lines);
    if (lines != 5)
        fail_msg("rate_limited_total: expected 5 series, got %d", lines);
    free(text);
    metrics_free(m);
}

static void test_tls_handshake_failures_summed(void **state)
{
    struct metrics *m = metrics_new(2, 100, "x");
    char *text;

    (void)state;
    assert_non_null(m);
    text = render(m);
    expect_sample(text, "mcpeek_tls_handshake_failures_total", 0);
    free(text);
    metrics_tls_handshake_failure(metrics_worker(m, 0));
    metrics_tls_handshake_failure(metrics_worker(m, 1));
    metrics_tls_handshake_failure(metrics_worker(m, 1));
    metrics_tls_handshake_failure(NULL); /* tolerated, not counted */
    text = render(m);
    expect_sample(text, "mcpeek_tls_handshake_failures_total", 3);
    free(text);
    metrics_free(m);
}

static void test_active_streams(void **state)
{
    struct metrics *m = metrics_new(2, 100, "x");
    char *text;

    (void)state;
    assert_non_null(m);
    text = render(m);
    expect_sample(text, "mcpeek_active_streams", 0);
    free(text);
    for (int i = 0; i < 3; i++)
        metrics_stream_opened(metrics_worker(m, 0));
    for (int i = 0; i < 2; i++)
        metrics_stream_opened(metrics_worker(m, 1));
    metrics_stream_closed(metrics_worker(m, 0));
    metrics_stream_closed(metrics_worker(m, 0));
    metrics_stream_closed(metrics_worker(m, 1));
    text = render(m);
    expect_sample(text, "mcpeek_active_streams", 2);
    free(text);
    metrics_stream_closed(metrics_worker(m, 0));
    metrics_stream_closed(metrics_worker(m, 1));
    text = render(m);
    expect_sample(text, "mcpeek_active_streams", 0);
    free(text);
    metrics_free(m);
}

static void test_process_wide_values(void **state)
{
    struct metrics *m = metrics_new(3, 100, "0.1.0");
    char *text;

    (void)state;
    assert_non_null(m);
    text = render(m);
    expect_sample(text, "mcpeek_config_reloads_total{result=\"success\"}", 0);
    expect_sample(text, "mcpeek_config_reloads_total{result=\"failure\"}", 0);
    expect_sample(text, "mcpeek_build_info{version=\"0.1.0\"}", 1);
    expect_sample(text, "mcpeek_workers", 3);
    expect_sample(text, "mcpeek_log_lines_total", 0);
    expect_sample(text, "mcpeek_bytes_in_total", 0);
    expect_sample(text, "mcpeek_bytes_out_total", 0);
    free(text);

    metrics_config_reload(m, true);
    metrics_config_reload(m, true);
    metrics_config_reload(m, false);
    text = render(m);
    expect_sample(text, "mcpeek_config_reloads_total{result=\"success\"}", 2);
    expect_sample(text, "mcpeek_config_reloads_total{result=\"failure\"}", 1);
    free(text);

    assert_int_equal(metrics_upstream_last_ok_ms(m), 0);
    metrics_upstream_ok(m, 5000);
    metrics_upstream_ok(m, 4000); /* an older report from a slower worker never goes back */
    assert_int_equal(metrics_upstream_last_ok_ms(m), 5000);
    metrics_upstream_ok(m, 6000);
    assert_int_equal(metrics_upstream_last_ok_ms(m), 6000);
    metrics_free(m);
}

/* Each family has # HELP and # TYPE with the right type, before its first sample. */
static void test_help_and_type_lines(void **state)
{
    static const struct {
        const char *name, *type, *first_sample;
    } fam[] = {
        {"mcpeek_requests_total", "counter", "mcpeek_requests_total{"},
        {"mcpeek_request_duration_seconds", "histogram", "mcpeek_request_duration_seconds_"},
        {"mcpeek_upstream_duration_seconds", "histogram", "mcpeek_upstream_duration_seconds_"},
        {"mcpeek_rpc_errors_total", "counter", "mcpeek_rpc_errors_total{"},
        {"mcpeek_tool_errors_total", "counter", "mcpeek_tool_errors_total{"},
        {"mcpeek_upstream_errors_total", "counter", "mcpeek_upstream_errors_total{"},
        {"mcpeek_rate_limited_total", "counter", "mcpeek_rate_limited_total{"},
        {"mcpeek_active_streams", "gauge", "mcpeek_active_streams "},
        {"mcpeek_log_lines_total", "counter", "mcpeek_log_lines_total "},
        {"mcpeek_log_write_failures_total", "counter", "mcpeek_log_write_failures_total "},
        {"mcpeek_bytes_in_total", "counter", "mcpeek_bytes_in_total "},
        {"mcpeek_bytes_out_total", "counter", "mcpeek_bytes_out_total "},
        {"mcpeek_config_reloads_total", "counter", "mcpeek_config_reloads_total{"},
        {"mcpeek_build_info", "gauge", "mcpeek_build_info{"},
        {"mcpeek_workers", "gauge", "mcpeek_workers "},
    };
    struct metrics *m = metrics_new(1, 100, "x");
    char want[160], *text;

    (void)state;
    assert_non_null(m);
    metrics_exchange(metrics_worker(m, 0), "ping", NULL, 200, 0.01, 0, 0);
    metrics_rpc_error(metrics_worker(m, 0), "tools/call", "t", true, -32603);
    metrics_tool_error(metrics_worker(m, 0), "t");
    text = render(m);
    for (size_t i = 0; i < sizeof(fam) / sizeof(fam[0]); i++) {
        const char *help, *type, *first;

        snprintf(want, sizeof(want), "# HELP %s ", fam[i].name);
        help = strstr(text, want);
        snprintf(want, sizeof(want), "# TYPE %s %s\n", fam[i].name, fam[i].type);
        type = strstr(text, want);
        snprintf(want, sizeof(want), "\n%s", fam[i].first_sample);
        first = strstr(text, want);
        if (help == NULL || type == NULL || first == NULL)
            fail_msg("%s: expected HELP, TYPE %s and a sample, got %s/%s/%s", fam[i].name,
                     fam[i].type, help ? "yes" : "no", type ? "yes" : "no", first ? "yes" : "no");
        if (!(help < type && type < first))
            fail_msg("%s: expected HELP < TYPE < first sample, got offsets %td/%td/%td",
                     fam[i].name, help - text, type - text, first - text);
    }
    free(text);
    metrics_free(m);
}

/* More distinct series than a worker's table holds: the excess folds into other/other. */
static void test_series_table_folds(void **state)
{
    static const int statuses[] = {200, 400, 404, 500};
    struct metrics *m = metrics_new(1, 4096, "x");
    struct worker_metrics *w;
    char tool[32], *text;
    double total;

    (void)state;
    assert_non_null(m);
    w = metrics_worker(m, 0);
    /* 4000 distinct series in order; the table takes 3072 before folding */
    for (int i = 0; i < 1000; i++) {
        snprintf(tool, sizeof(tool), "tool%d", i);
        for (int s = 0; s < 4; s++)
            metrics_exchange(w, "tools/call", tool, statuses[s], 0.01, 0, 0);
    }
    text = render(m);
    total = sum_prefix(text, "mcpeek_requests_total{", NULL);
    if (total != 4000)
        fail_msg("requests_total: expected 4000 in all, got %.0f", total);
    expect_sample(
        text, "mcpeek_requests_total{rpc_method=\"tools/call\",tool=\"tool767\",status=\"500\"}",
        1);
    expect_absent(
        text, "mcpeek_requests_total{rpc_method=\"tools/call\",tool=\"tool768\",status=\"200\"}");
    /* series 3072..3999 fold: 928, a quarter per status */
    for (int s = 0; s < 4; s++) {
        char series[128];

        snprintf(series, sizeof(series),
                 "mcpeek_requests_total{rpc_method=\"other\",tool=\"other\",status=\"%d\"}",
                 statuses[s]);
        expect_sample(text, series, 232);
    }
    free(text);
    metrics_free(m);
}

/* JSON-RPC errors by method, tool and code; codes outside the known set are "other". */
static void test_rpc_errors(void **state)
{
    struct metrics *m = metrics_new(2, 100, "x");
    char *text;
    int lines;

    (void)state;
    assert_non_null(m);
    text = render(m); /* the family is there, without samples, before any error */
    assert_non_null(strstr(text, "# TYPE mcpeek_rpc_errors_total counter\n"));
    sum_prefix(text, "mcpeek_rpc_errors_total{", &lines);
    assert_int_equal(lines, 0);
    free(text);

    metrics_rpc_error(metrics_worker(m, 0), "tools/call", "search", true, -32602);
    metrics_rpc_error(metrics_worker(m, 1), "tools/call", "search", true, -32602);
    metrics_rpc_error(metrics_worker(m, 0), "tools/list", "ignored", true, -32601);
    metrics_rpc_error(metrics_worker(m, 0), "resources/read", NULL, true, -32002);
    metrics_rpc_error(metrics_worker(m, 0), "resources/read", NULL, true, -32099);
    metrics_rpc_error(metrics_worker(m, 1), "ping", NULL, true, 42);      /* other */
    metrics_rpc_error(metrics_worker(m, 1), "ping", NULL, true, -31999);  /* other */
    metrics_rpc_error(metrics_worker(m, 1), "ping", NULL, true, -32100);  /* other */
    metrics_rpc_error(metrics_worker(m, 1), "ping", NULL, false, -32700); /* no code */
    metrics_rpc_error(metrics_worker(m, 0), NULL, NULL, true, -32700);
    text = render(m);
    expect_sample(
        text, "mcpeek_rpc_errors_total{rpc_method=\"tools/call\",tool=\"search\",code=\"-32602\"}",
        2);
    /* only tools/call has a tool */
    expect_sample(
        text, "mcpeek_rpc_errors_total{rpc_method=\"tools/list\",tool=\"\",code=\"-32601\"}", 1);
    expect_sample(
        text, "mcpeek_rpc_errors_total{rpc_method=\"resources/read\",tool=\"\",code=\"-32002\"}",
        1);
    expect_sample(
        text, "mcpeek_rpc_errors_total{rpc_method=\"resources/read\",tool=\"\",code=\"-32099\"}",
        1);
    expect_sample(text, "mcpeek_rpc_errors_total{rpc_method=\"ping\",tool=\"\",code=\"other\"}", 4);
    expect_sample(text, "mcpeek_rpc_errors_total{rpc_method=\"\",tool=\"\",code=\"-32700\"}", 1);
    sum_prefix(text, "mcpeek_rpc_errors_total{", &lines);
    assert_int_equal(lines, 6);
    free(text);
    metrics_free(m);
}

/* Every code a server may send maps to at most 106 values; many tools fold into other. */
static void test_rpc_errors_bounded(void **state)
{
    struct metrics *m = metrics_new(1, 4096, "x");
    struct worker_metrics *w;
    char tool[32], *text;
    double total;
    int lines;

    (void)state;
    assert_non_null(m);
    w = metrics_worker(m, 0);
    for (long long code = -33000; code <= 1000; code++)
        metrics_rpc_error(w, "ping", NULL, true, code);
    text = render(m);
    sum_prefix(text, "mcpeek_rpc_errors_total{rpc_method=\"ping\"", &lines);
    if (lines != 106)
        fail_msg("expected 106 code values (5 + 100 + other), got %d", lines);
    expect_sample(text, "mcpeek_rpc_errors_total{rpc_method=\"ping\",tool=\"\",code=\"other\"}",
                  34001 - 105);
    free(text);

    /* 1000 tools x 2 codes: the table holds 768 series before folding */
    for (int i = 0; i < 1000; i++) {
        snprintf(tool, sizeof(tool), "t%d", i);
        metrics_rpc_error(w, "tools/call", tool, true, -32602);
        metrics_rpc_error(w, "tools/call", tool, true, -32603);
    }
    text = render(m);
    total = sum_prefix(text, "mcpeek_rpc_errors_total{", &lines);
    if (total != 34001 + 2000)
        fail_msg("expected every error counted (%d), got %.0f", 34001 + 2000, total);
    if (lines > 1024)
        fail_msg("expected at most 1024 series, got %d", lines);
    assert_true(sample(text, "mcpeek_rpc_errors_total{rpc_method=\"other\",tool=\"other\","
                             "code=\"-32602\"}") > 0);
    free(text);
    metrics_free(m);
}

static void test_tool_errors(void **state)
{
    struct metrics *m = metrics_new(2, 1, "x");
    char *text;
    int lines;

    (void)state;
    assert_non_null(m);
    text = render(m);
    assert_non_null(strstr(text, "# TYPE mcpeek_tool_errors_total counter\n"));
    sum_prefix(text, "mcpeek_tool_errors_total{", &lines);
    assert_int_equal(lines, 0);
    free(text);
    metrics_tool_error(metrics_worker(m, 0), "geocode");
    metrics_tool_error(metrics_worker(m, 1), "geocode");
    metrics_tool_error(metrics_worker(m, 1), "second"); /* past the label limit of 1 */
    metrics_tool_error(metrics_worker(m, 1), NULL);
    text = render(m);
    expect_sample(text, "mcpeek_tool_errors_total{tool=\"geocode\"}", 2);
    expect_sample(text, "mcpeek_tool_errors_total{tool=\"other\"}", 1);
    expect_sample(text, "mcpeek_tool_errors_total{tool=\"\"}", 1);
    free(text);
    metrics_free(m);
}

static void test_upstream_latency_and_log_failures(void **state)
{
    struct metrics *m = metrics_new(2, 100, "x");
    struct strbuf sb;
    char *text;

    (void)state;
    assert_non_null(m);
    text = render(m); /* unlabelled families are complete from the start */
    expect_sample(text, "mcpeek_upstream_duration_seconds_bucket{le=\"+Inf\"}", 0);
    expect_sample(text, "mcpeek_upstream_duration_seconds_count", 0);
    expect_sample(text, "mcpeek_log_write_failures_total", 0);
    free(text);

    metrics_upstream_latency(metrics_worker(m, 0), 0.003);
    metrics_upstream_latency(metrics_worker(m, 1), 0.2);
    metrics_upstream_latency(metrics_worker(m, 1), -1); /* clamped to 0 */
    metrics_log_write_failure(metrics_worker(m, 0), 3);
    metrics_log_write_failure(metrics_worker(m, 1), 1);
    text = render(m);
    expect_sample(text, "mcpeek_upstream_duration_seconds_bucket{le=\"0.001\"}", 1);
    expect_sample(text, "mcpeek_upstream_duration_seconds_bucket{le=\"0.005\"}", 2);
    expect_sample(text, "mcpeek_upstream_duration_seconds_bucket{le=\"0.1\"}", 2);
    expect_sample(text, "mcpeek_upstream_duration_seconds_bucket{le=\"0.25\"}", 3);
    expect_sample(text, "mcpeek_upstream_duration_seconds_bucket{le=\"+Inf\"}", 3);
    expect_sample(text, "mcpeek_upstream_duration_seconds_sum", 0.203);
    expect_sample(text, "mcpeek_upstream_duration_seconds_count", 3);
    expect_sample(text, "mcpeek_log_write_failures_total", 4);
    free(text);

    strbuf_init(&sb);
    metrics_render_upstream_ready(&sb, true);
    expect_sample(sb.data, "mcpeek_upstream_ready", 1);
    assert_non_null(strstr(sb.data, "# TYPE mcpeek_upstream_ready gauge\n"));
    strbuf_reset(&sb);
    metrics_render_upstream_ready(&sb, false);
    expect_sample(sb.data, "mcpeek_upstream_ready", 0);
    strbuf_free(&sb);
    metrics_free(m);
}

/* ---- the official parser ------------------------------------------------------------------- */

static bool have_python_parser(void)
{
    if (access(PY, X_OK) != 0)
        return false;
    return system(PY " -c 'import prometheus_client.parser' >/dev/null 2>&1") == 0;
}

/* Pipes `text` to `script` run by python3; returns its exit status (-1 if it did not run).
 * `quiet` hides the traceback of a failure the test expects. */
static int run_python(const char *script, const char *text, bool quiet)
{
    char cmd[2048];
    FILE *p;
    int st;

    snprintf(cmd, sizeof(cmd), PY " -c '%s'%s", script, quiet ? " 2>/dev/null" : "");
    p = popen(cmd, "w");
    if (p == NULL)
        return -1;
    fputs(text, p);
    st = pclose(p);
    return (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
}

#define PY_PARSE                                                                                   \
    "import sys; from prometheus_client.parser import text_string_to_metric_families as p; "       \
    "list(p(sys.stdin.read()))"

/* Parses and checks that escaped labels and histogram samples read back as written. */
#define PY_ROUNDTRIP                                                                               \
    "import sys\n"                                                                                 \
    "from prometheus_client.parser import text_string_to_metric_families as p\n"                   \
    "fams = {f.name: f for f in p(sys.stdin.read())}\n"                                            \
    "req = fams[\"mcpeek_requests\"]\n"                                                            \
    "assert req.type == \"counter\", req.type\n"                                                   \
    "got = {(s.labels[\"rpc_method\"], s.labels[\"tool\"], s.labels[\"status\"]): s.value "        \
    "for s in req.samples if s.name == \"mcpeek_requests_total\"}\n"                               \
    "want = {(\"a\\\"b\\\\c\\nd\", \"\", \"200\"): 2.0, (\"tools/call\", \"q\\\"\", \"503\"): "    \
    "1.0,"                                                                                         \
    " (\"\", \"\", \"0\"): 1.0}\n"                                                                 \
    "assert got == want, (got, want)\n"                                                            \
    "h = fams[\"mcpeek_request_duration_seconds\"]\n"                                              \
    "assert h.type == \"histogram\", h.type\n"                                                     \
    "assert fams[\"mcpeek_build_info\"].samples[0].labels[\"version\"] == \"v\\\"1\\\"\"\n"        \
    "e = [(s.labels[\"tool\"], s.labels[\"code\"], s.value) for s in "                             \
    "fams[\"mcpeek_rpc_errors\"].samples if s.name == \"mcpeek_rpc_errors_total\"]\n"              \
    "assert e == [(\"q\\\"\", \"-32001\", 1.0)], e\n"                                              \
    "t = [(s.labels[\"tool\"], s.value) for s in fams[\"mcpeek_tool_errors\"].samples "            \
    "if s.name == \"mcpeek_tool_errors_total\"]\n"                                                 \
    "assert t == [(\"q\\\"\", 1.0)], t\n"                                                          \
    "assert fams[\"mcpeek_upstream_duration_seconds\"].type == \"histogram\"\n"

static void test_official_parser(void **state)
{
    struct metrics *m;
    char *text;
    int rc;

    (void)state;
    if (!have_python_parser()) {
        print_message("skipping: " PY " with prometheus_client not found\n");
        skip();
    }
    m = metrics_new(2, 100, "v\"1\"");
    assert_non_null(m);
    metrics_exchange(metrics_worker(m, 0), "a\"b\\c\nd", NULL, 200, 0.02, 1, 1);
    metrics_exchange(metrics_worker(m, 1), "a\"b\\c\nd", NULL, 200, 3.0, 1, 1);
    metrics_exchange(metrics_worker(m, 1), "tools/call", "q\"", 503, 70.0, 1, 1);
    metrics_exchange(metrics_worker(m, 0), NULL, NULL, 0, 0.0, 0, 0);
    metrics_upstream_error(metrics_worker(m, 0), UPSTREAM_ERR_RESET);
    metrics_stream_opened(metrics_worker(m, 1));
    metrics_config_reload(m, false);
    metrics_rpc_error(metrics_worker(m, 1), "tools/call", "q\"", true, -32001);
    metrics_tool_error(metrics_worker(m, 0), "q\"");
    metrics_upstream_latency(metrics_worker(m, 0), 0.5);
    text = render(m);

    rc = run_python(PY_PARSE, text, false);
    if (rc != 0)
        fail_msg("prometheus_client parser: expected exit 0, got %d for:\n%s", rc, text);
    rc = run_python(PY_ROUNDTRIP, text, false);
    if (rc != 0)
        fail_msg("prometheus_client round trip: expected exit 0, got %d for:\n%s", rc, text);
    /* the check can fail: a broken label quote must be rejected */
    rc = run_python(PY_PARSE, "# TYPE x counter\nx{a=\"b} 1\n", true);
    if (rc == 0)
        fail_msg("prometheus_client parser: expected a failure on broken input, got exit 0");
    free(text);
    metrics_free(m);
}

/* ---- concurrency --------------------------------------------------------------------------- */

#define CONC_EXCHANGES 200000

static const char *const conc_methods[] = {"tools/call", "tools/list", "initialize", NULL};
static const char *const conc_tools[] = {"alpha", "beta", "gamma"};
static const int conc_status[] = {200, 202, 500};

struct conc_writer {
    struct worker_metrics *wm;
    int id;
};

struct conc_reader {
    struct metrics *m;
    atomic_int *writers_done;
    int renders;
    int errors; /* totals that went backwards or exceeded the final total */
    char first_error[256];
};

/* Exchange i of any writer: which method/tool/status/duration it reports. */
static void conc_exchange(int i, const char **method, const char **tool, int *status, double *d)
{
    *method = conc_methods[i % 4];
    *tool = conc_tools[(i / 4) % 3];
    *status = conc_status[(i / 12) % 3];
    *d = (i % 7) * 0.01;
}

static void *conc_write(void *p)
{
    struct conc_writer *w = p;

    for (int i = 0; i < CONC_EXCHANGES; i++) {
        const char *method, *tool;
        int status;
        double d;

        conc_exchange(i, &method, &tool, &status, &d);
        metrics_exchange(w->wm, method, tool, status, d, 3, 5);
        if (i % 100 == 99) {
            char junk[32];

            /* ever new values once the registry is full: "other", found without a lock */
            snprintf(junk, sizeof(junk), "junk-%d-%d", w->id, i);
            metrics_exchange(w->wm, junk, NULL, 404, 0.0, 0, 0);
        }
        if (i % 10 == 0) {
            metrics_stream_opened(w->wm);
            metrics_log_line(w->wm);
        }
        if (i % 10 == 5)
            metrics_stream_closed(w->wm);
        if (i % 1000 == 0)
            metrics_upstream_error(w->wm, (enum upstream_error_kind)(i / 1000 % 5));
    }
    return NULL;
}

static void *conc_read(void *p)
{
    struct conc_reader *r = p;
    double prev_total = 0;

    while (!atomic_load(r->writers_done) || r->renders < 3) {
        struct strbuf sb;
        double total, streams = -1;

        strbuf_init(&sb);
        metrics_render(r->m, &sb);
        total = sb.data ? sum_prefix(sb.data, "mcpeek_requests_total{", NULL) : -1;
        if (sb.data)
            sample_count(sb.data, "mcpeek_active_streams", &streams);
        if ((total < prev_total || total > 2.0 * CONC_EXCHANGES * 101 / 100 || streams < 0 ||
             streams > 2.0 * CONC_EXCHANGES / 10) &&
            r->errors++ == 0)
            snprintf(r->first_error, sizeof(r->first_error),
                     "render %d: total %.0f (previous %.0f), active streams %.0f", r->renders,
                     total, prev_total, streams);
        prev_total = total;
        r->renders++;
        strbuf_free(&sb);
    }
    return NULL;
}

static void test_concurrent_writers_and_scraper(void **state)
{
    /* limit 3: exactly the three methods (and the three tools) fill the registries */
    struct metrics *m = metrics_new(2, 3, "x");
    atomic_int done = 0;
    struct conc_writer wr[2];
    struct conc_reader rd;
    pthread_t tw[2], tr;
    char series[160], *text;
    double want[4][3][3] = {{{0}}};

    (void)state;
    assert_non_null(m);
    rd = (struct conc_reader){.m = m, .writers_done = &done};
    assert_int_equal(pthread_create(&tr, NULL, conc_read, &rd), 0);
    for (int t = 0; t < 2; t++) {
        wr[t] = (struct conc_writer){.wm = metrics_worker(m, (unsigned)t), .id = t};
        assert_int_equal(pthread_create(&tw[t], NULL, conc_write, &wr[t]), 0);
    }
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_join(tw[t], NULL), 0);
    atomic_store(&done, 1);
    assert_int_equal(pthread_join(tr, NULL), 0);
    if (rd.errors)
        fail_msg("scraper: expected consistent renders, got %d bad, first: %s", rd.errors,
                 rd.first_error);

    text = render(m);
    expect_sample(text, "mcpeek_bytes_in_total", 2.0 * CONC_EXCHANGES * 3);
    expect_sample(text, "mcpeek_bytes_out_total", 2.0 * CONC_EXCHANGES * 5);
    expect_sample(text, "mcpeek_log_lines_total", 2.0 * CONC_EXCHANGES / 10);
    expect_sample(text, "mcpeek_active_streams", 0);
    expect_sample(text, "mcpeek_upstream_errors_total{kind=\"connect\"}", 2 * 40);
    for (int i = 0; i < CONC_EXCHANGES; i++) {
        const char *method, *tool;
        int status;
        double d;

        conc_exchange(i, &method, &tool, &status, &d);
        want[i % 4][(i / 4) % 3][(i / 12) % 3] += 2; /* both writers did the same sequence */
    }
    for (int mi = 0; mi < 4; mi++) {
        for (int s = 0; s < 3; s++) {
            double expect_untooled = 0;

            for (int ti = 0; ti < 3; ti++) {
                if (mi == 0) {
                    snprintf(series, sizeof(series),
                             "mcpeek_requests_total{rpc_method=\"tools/call\",tool=\"%s\","
                             "status=\"%d\"}",
                             conc_tools[ti], conc_status[s]);
                    expect_sample(text, series, want[mi][ti][s]);
                } else {
                    expect_untooled += want[mi][ti][s];
                }
            }
            if (mi != 0) {
                snprintf(series, sizeof(series),
                         "mcpeek_requests_total{rpc_method=\"%s\",tool=\"\",status=\"%d\"}",
                         conc_methods[mi] ? conc_methods[mi] : "", conc_status[s]);
                expect_sample(text, series, expect_untooled);
            }
        }
    }
    expect_sample(text, "mcpeek_request_duration_seconds_count{rpc_method=\"initialize\"}",
                  2.0 * CONC_EXCHANGES / 4);
    expect_sample(text, "mcpeek_requests_total{rpc_method=\"other\",tool=\"\",status=\"404\"}",
                  2.0 * CONC_EXCHANGES / 100);
    if (sum_prefix(text, "mcpeek_requests_total{", NULL) != 2.0 * CONC_EXCHANGES * 101 / 100)
        fail_msg("requests_total: expected %d in all, got %.0f", 2 * CONC_EXCHANGES * 101 / 100,
                 sum_prefix(text, "mcpeek_requests_total{", NULL));
    print_message("scraper rendered %d times while the writers ran\n", rd.renders);
    if (rd.renders < 3)
        fail_msg("scraper: expected at least 3 renders, got %d", rd.renders);
    free(text);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests_summed_across_workers),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_label_limit_other),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_upstream_error_kinds),
        cmocka_unit_test(test_rate_limited_scopes),
        cmocka_unit_test(test_tls_handshake_failures_summed),
        cmocka_unit_test(test_active_streams),
        cmocka_unit_test(test_process_wide_values),
        cmocka_unit_test(test_help_and_type_lines),
        cmocka_unit_test(test_series_table_folds),
        cmocka_unit_test(test_rpc_errors),
        cmocka_unit_test(test_rpc_errors_bounded),
        cmocka_unit_test(test_tool_errors),
        cmocka_unit_test(test_upstream_latency_and_log_failures),
        cmocka_unit_test(test_official_parser),
        cmocka_unit_test(test_concurrent_writers_and_scraper),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
