/* hash: the string hashes mcpeek uses for its tables.
 *
 * SipHash-2-4 with a secret key for tables whose keys a client chooses and whose layout
 * matters (shard_table.c: the session map, the rate-limit buckets and the conversations; with
 * an unkeyed hash a client could aim every entry at one shard and one chain, as redis learnt
 * for its dicts). FNV-1a, tiny, where the table is small and bounded anyway (metric label
 * values) or a collision costs only the one who made it.
 */
#ifndef MCPEEK_HASH_H
#define MCPEEK_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_KEY_SIZE 16

/* SipHash-2-4 of data[0..len) under `key` (Aumasson and Bernstein, 2012). */
uint64_t hash_siphash(const unsigned char key[HASH_KEY_SIZE], const void *data, size_t len);

/* Fills `key` from the kernel's random source (getrandom); 0, or -1 when none is available. */
int hash_random_key(unsigned char key[HASH_KEY_SIZE]);

/* splitmix64's finaliser: spreads every input bit over the result (for values that were
 * combined by xor, or hashed by FNV-1a, whose low bits are weak). */
static inline uint64_t hash_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

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
