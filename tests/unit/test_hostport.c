/* test_hostport: unit tests for src/hostport.c, the one host[:port] parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mcpeek/hostport.h"

static void check_ok(const char *s, unsigned flags, const char *host, unsigned port, bool v6)
{
    struct hostport hp;
    const char *why = hostport_parse(s, strlen(s), flags, &hp);
    if (why)
        fail_msg("'%s' refused: %s", s, why);
    if (hp.host_len != strlen(host) || memcmp(hp.host, host, hp.host_len) != 0)
        fail_msg("'%s': host '%.*s', expected '%s'", s, (int)hp.host_len, hp.host, host);
    assert_int_equal(hp.port, port);
    assert_int_equal(hp.ipv6, v6);
}

static void check_bad(const char *s, unsigned flags, const char *reason)
{
    struct hostport hp;
    const char *why = hostport_parse(s, strlen(s), flags, &hp);
    if (!why)
        fail_msg("'%s' accepted", s);
    if (strcmp(why, reason) != 0)
        fail_msg("'%s': reason '%s', expected '%s'", s, why, reason);
}

static void accepts_names_addresses_and_ports(void **state)
{
    (void)state;
    check_ok("localhost", 0, "localhost", 0, false);
    check_ok("example.com:8080", 0, "example.com", 8080, false);
    check_ok("127.0.0.1:1", HOSTPORT_STRICT | HOSTPORT_NEED_PORT, "127.0.0.1", 1, false);
    check_ok("[::1]", HOSTPORT_STRICT, "::1", 0, true);
    check_ok("[::1]:65535", 0, "::1", 65535, true);
    check_ok("under_score.example", HOSTPORT_STRICT, "under_score.example", 0, false);
    /* lenient mode takes reg-name bytes a config file does not need */
    check_ok("a~b!c", 0, "a~b!c", 0, false);
}

static void refuses_what_is_not_host_port(void **state)
{
    (void)state;
    check_bad("", 0, "missing host");
    check_bad(":80", 0, "missing host");
    check_bad("host:", 0, "missing port number after ':'");
    check_bad("host:0", 0, "port must be 1..65535");
    check_bad("host:65536", 0, "port must be 1..65535");
    check_bad("host:000080", 0, "port must be 1..65535");
    check_bad("host:8a", 0, "port must be a number");
    check_bad("::1", 0, "an IPv6 address needs brackets, like [::1]:8080");
    check_bad("::1:80", 0, "an IPv6 address needs brackets, like [::1]:8080");
    check_bad("[::1", 0, "missing ']' after the IPv6 address");
    check_bad("[]:80", 0, "not an IPv6 address inside [ ]");
    check_bad("[evil.example]:80", 0, "not an IPv6 address inside [ ]");
    check_bad("[::g]", HOSTPORT_STRICT, "not an IPv6 address inside [ ]");
    check_bad("[::1]x", 0, "unexpected text after the address");
    check_bad("host", HOSTPORT_NEED_PORT, "missing :PORT");
    check_bad("a b", 0, "not a valid host name or address");
    check_bad("user@host", 0, "not a valid host name or address");
    check_bad("a~b", HOSTPORT_STRICT, "not a valid host name or address");
    check_bad("a/b:80", 0, "not a valid host name or address");
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    check_bad(longname, 0, "not a valid host name or address");
    /* a NUL inside the span is not part of a name */
    struct hostport hp;
    assert_non_null(hostport_parse("a\0b", 3, 0, &hp));
    assert_non_null(hostport_parse("[::1\0]", 6, 0, &hp));
}

static void host_comparison_ignores_case(void **state)
{
    (void)state;
    struct hostport hp;
    assert_null(hostport_parse("LocalHost:80", 12, 0, &hp));
    assert_true(hostport_host_is(&hp, "localhost"));
    assert_false(hostport_host_is(&hp, "localhost."));
    assert_false(hostport_host_is(&hp, "local"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts_names_addresses_and_ports),
        cmocka_unit_test(refuses_what_is_not_host_port),
        cmocka_unit_test(host_comparison_ignores_case),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
