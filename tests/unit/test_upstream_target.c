/* Tests for src/upstream_target.c: which upstream URLs are accepted and how they split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mcpeek/upstream_target.h"

static void expect_url(const char *url, bool tls, const char *host, unsigned port, const char *path)
{
    bool got_tls = !tls;
    char got_host[256] = "";
    unsigned got_port = 0;
    const char *got_path = NULL;
    if (upstream_target_parse_url(url, &got_tls, got_host, sizeof(got_host), &got_port,
                                  &got_path) != 0)
        fail_msg("%s: refused, expected host %s port %u path \"%s\"", url, host, port, path);
    if (got_tls != tls || strcmp(got_host, host) != 0 || got_port != port ||
        strcmp(got_path, path) != 0)
        fail_msg("%s: expected tls %d host %s port %u path \"%s\", got tls %d host %s port %u "
                 "path \"%s\"",
                 url, tls, host, port, path, got_tls, got_host, got_port, got_path);
}

static void expect_refused(const char *url)
{
    bool tls;
    char host[256];
    unsigned port;
    const char *path;
    if (upstream_target_parse_url(url, &tls, host, sizeof(host), &port, &path) != -1)
        fail_msg("%s: expected to be refused", url);
}

static void test_urls_that_split(void **state)
{
    (void)state;
    expect_url("http://127.0.0.1:8080/mcp", false, "127.0.0.1", 8080, "/mcp");
    expect_url("https://mcp.example.com/v1/mcp?x=1", true, "mcp.example.com", 443, "/v1/mcp?x=1");
    expect_url("http://localhost", false, "localhost", 80, "");
    expect_url("http://h?q", false, "h", 80, "?q");
    expect_url("HTTPS://H:8443/", true, "H", 8443, "/");
    expect_url("http://[::1]:9000/mcp", false, "::1", 9000, "/mcp");
    expect_url("https://[2001:db8::1]/mcp", true, "2001:db8::1", 443, "/mcp");
    expect_url("http://h:65535/", false, "h", 65535, "/");
    expect_url("http://h:00080/", false, "h", 80, "/");
}

static void test_urls_refused(void **state)
{
    (void)state;
    expect_refused("ftp://h/mcp");
    expect_refused("h:80/mcp");
    expect_refused("http:/h/mcp");
    expect_refused("http:///mcp");
    expect_refused("http://:80/mcp");
    expect_refused("http://user:pw@h/mcp");
    expect_refused("http://h/mcp#frag");
    expect_refused("http://h:0/mcp");
    expect_refused("http://h:65536/mcp");
    expect_refused("http://h:123456/mcp");
    expect_refused("http://h:/mcp");
    expect_refused("http://h:8o/mcp");
    expect_refused("http://h:-1/mcp");
    expect_refused("http://[::1/mcp");
    expect_refused("http://[::1]x/mcp");
    expect_refused("http://[]/mcp");
    char long_host[400];
    memset(long_host, 'a', sizeof(long_host));
    memcpy(long_host, "http://", 7);
    long_host[sizeof(long_host) - 1] = '\0';
    expect_refused(long_host); /* host longer than the buffer */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_urls_that_split),
        cmocka_unit_test(test_urls_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
