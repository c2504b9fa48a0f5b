/* hostport: "host[:port]" and "[v6][:port]" split into host and port, in one place.
 *
 * Before this file the listen parser, the config checker and the upstream URL parser each
 * had their own rules (one took "host:" as port 0, one accepted an unbracketed "::1:80").
 * The rules here are RFC 3986's authority minus userinfo: an IPv6 literal is bracketed, a
 * port is 1..65535 in at most five digits.
 */
#include "mcpeek/hostport.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

static bool hostport_name_byte(unsigned char c, bool strict)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
        c == '-' || c == '_')
        return true;
    if (strict)
        return false;
    return c > 0x20 && c < 0x7f && !strchr(":[]@/?#", c);
}

const char *hostport_parse(const char *s, size_t len, unsigned flags, struct hostport *out)
{
    bool strict = flags & HOSTPORT_STRICT;
    const char *rest;
    memset(out, 0, sizeof(*out));
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return "missing ']' after the IPv6 address";
        out->host = s + 1;
        out->host_len = (size_t)(close - s - 1);
        out->ipv6 = true;
        if (out->host_len == 0 || out->host_len > 45)
            return "not an IPv6 address inside [ ]";
        char text[46];
        struct in6_addr a6;
        memcpy(text, out->host, out->host_len);
        text[out->host_len] = '\0';
        if (strict && inet_pton(AF_INET6, text, &a6) != 1)
            return "not an IPv6 address inside [ ]";
        for (size_t i = 0; i < out->host_len && !strict; i++) {
            unsigned char c = (unsigned char)out->host[i];
            if (c == '\0' || !strchr("0123456789abcdefABCDEF:.", c))
                return "not an IPv6 address inside [ ]";
        }
        rest = close + 1;
    } else {
        const char *colon = memchr(s, ':', len);
        if (colon && memchr(colon + 1, ':', len - (size_t)(colon + 1 - s)))
            return "an IPv6 address needs brackets, like [::1]:8080";
        out->host = s;
        out->host_len = colon ? (size_t)(colon - s) : len;
        if (out->host_len == 0)
            return "missing host";
        for (size_t i = 0; i < out->host_len; i++)
            if (!hostport_name_byte((unsigned char)s[i], strict))
                return "not a valid host name or address";
        rest = s + out->host_len;
    }
    if (out->host_len > HOSTPORT_HOST_MAX)
        return "not a valid host name or address";
    if (rest == s + len)
        return flags & HOSTPORT_NEED_PORT ? "missing :PORT" : NULL;
    if (*rest != ':')
        return "unexpected text after the address";
    rest++;
    size_t n = (size_t)(s + len - rest);
    unsigned v = 0;
    if (n == 0)
        return "missing port number after ':'";
    if (n > 5)
        return "port must be 1..65535";
    for (size_t i = 0; i < n; i++) {
        if (rest[i] < '0' || rest[i] > '9')
            return "port must be a number";
        v = v * 10 + (unsigned)(rest[i] - '0');
    }
    if (v < 1 || v > 65535)
        return "port must be 1..65535";
    out->port = v;
    return NULL;
}

bool hostport_host_is(const struct hostport *hp, const char *name)
{
    size_t n = strlen(name);
    return hp->host_len == n && strncasecmp(hp->host, name, n) == 0;
}
