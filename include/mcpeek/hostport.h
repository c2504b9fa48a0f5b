/* hostport: the one parser of "host", "host:port", "[v6]" and "[v6]:port".
 *
 * Used for listen/admin_listen and allowed_hosts (config.c, server.c), for the Host header
 * and absolute-form targets (access.c, client.c), and usable for a URL's authority. It
 * allocates nothing: the host it finds is a span of the input, without the brackets.
 */
#ifndef MCPEEK_HOSTPORT_H
#define MCPEEK_HOSTPORT_H

#include <stdbool.h>
#include <stddef.h>

struct hostport {
    const char *host; /* inside the parsed text, not NUL terminated; brackets removed */
    size_t host_len;
    unsigned port; /* 1..65535, or 0 when there was none */
    bool ipv6;     /* the host was bracketed */
};

/* The port must be present. */
#define HOSTPORT_NEED_PORT 1u
/* Names may only hold letters, digits, '.', '-' and '_', and a bracketed host must be an
 * IPv6 address (configuration). Without it any byte but ':', '[', ']', '@', '/', blanks and
 * controls is taken (request headers, compared against a list afterwards). */
#define HOSTPORT_STRICT 2u

/* Longest host accepted (a DNS name is at most 253 bytes, plus room for a final dot). */
#define HOSTPORT_HOST_MAX 255

/* Parses s[0..len). Returns NULL, or a short English reason why it is not such an address. */
const char *hostport_parse(const char *s, size_t len, unsigned flags, struct hostport *out);

/* True when `hp`'s host equals `name` (ASCII case-insensitive, `name` without brackets). */
bool hostport_host_is(const struct hostport *hp, const char *name);

#endif
