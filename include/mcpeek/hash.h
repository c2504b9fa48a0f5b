/* hash: the one string hash mcpeek uses for its tables (session map, metric labels).
 * FNV-1a: tiny and good enough for short ids and label values; the tables are bounded, so a
 * client choosing colliding keys only slows its own lookups. */
#ifndef MCPEEK_HASH_H
#define MCPEEK_HASH_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t hash_fnv1a(const char *s, size_t len)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

#endif
